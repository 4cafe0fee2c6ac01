//! sapiens-stream: Meta's Sapiens human-vision models on live and recorded video.
//!
//! A frame's path, one module per stage: [`source`] decodes it, [`preprocess`] makes the model
//! inputs, [`engine`] runs the models, [`tasks`] turns outputs into keypoints and class maps,
//! [`render`] draws them, [`sink`] encodes the overlay video, [`publish`] writes the results, and
//! [`metrics`] times every stage. [`pipeline`] wires them on their own threads.

/// The GPU twins of the CPU stages (CUDA kernels, compiled at run time).
pub mod cuda;
/// `sapiens-stream doctor`: what this machine can run.
#[cfg(feature = "gstreamer")]
pub mod doctor;
pub mod engine;
pub mod error;
#[cfg(feature = "gstreamer")]
pub mod frame;
pub mod metrics;
pub mod models;
#[cfg(feature = "gstreamer")]
pub mod pipeline;
pub mod preprocess;
pub mod publish;
pub mod render;
#[cfg(feature = "gstreamer")]
pub mod sink;
#[cfg(feature = "gstreamer")]
pub mod source;
pub mod tasks;

pub use error::{Error, Result};

/// The integration tests' synthetic data, for the unit tests too.
#[cfg(test)]
#[path = "../tests/common/synthetic.rs"]
mod synthetic;
