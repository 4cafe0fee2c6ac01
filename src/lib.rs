//! sapiens-stream: Meta's Sapiens human-vision models on live and recorded video.
//!
//! A frame's path, one module per stage: [`source`] decodes it, [`preprocess`] makes the model
//! inputs, [`engine`] runs the models, [`tasks`] turns outputs into keypoints and class maps,
//! [`render`] draws them, [`sink`] encodes the overlay video, [`publish`] writes the results, and
//! [`metrics`] times every stage. [`pipeline`] wires them on their own threads. [`frame`] is
//! the frame every stage sees. Each stage that runs on the GPU too keeps its CUDA side beside
//! its CPU side (`preprocess::cuda`, `tasks::pose::cuda`, `render::cuda`, ...).

/// The CUDA context, NVRTC compilation and launch helpers the stages' kernels share.
pub mod cuda;
/// `sapiens-stream doctor`: what this machine can run.
#[cfg(feature = "gstreamer")]
pub mod doctor;
pub mod engine;
pub mod error;
pub mod frame;
pub mod metrics;
pub mod pipeline;
pub mod preprocess;
pub mod publish;
pub mod render;
#[cfg(feature = "gstreamer")]
pub mod sink;
#[cfg(feature = "gstreamer")]
pub mod source;
pub mod tasks;
pub mod zoo;

pub use error::{Error, Result};
#[cfg(any(test, feature = "testkit"))]
pub mod testkit;
