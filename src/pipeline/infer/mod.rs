//! The inference stage: every model of a frame, on the GPU ([`device`], the GPU plan of a frame:
//! one chain of device work from the uploaded frame to keypoints, class map and drawn overlay)
//! or through host buffers (`host`). `stage` runs one or the other per frame.

pub mod device;
#[cfg(feature = "gstreamer")]
mod gather;
#[cfg(feature = "gstreamer")]
mod host;
#[cfg(feature = "gstreamer")]
mod stage;

#[cfg(feature = "gstreamer")]
pub(super) use stage::{Batching, Inference, inference_stage, paint_for};
