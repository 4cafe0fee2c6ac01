//! The pipeline: source -> preprocess -> inference -> postprocess -> sinks, each stage on its own
//! thread, joined by bounded channels. Offline mode: every frame is processed and a full channel
//! blocks the stage before it, down to the decoder. Live mode: the newest frame wins; a frame still
//! waiting when a newer one arrives is dropped (and counted) before inference, so latency stays
//! bounded however slow the models are. Large buffers (model inputs and outputs) circulate through
//! pools instead of being allocated per frame.
//!
//! A run has two phases. `build` opens everything from the [`PipelineConfig`] (`config`):
//! models (`models`), persons, source, outputs, publishers. `run` then wires the stages with
//! `links` and runs them, in a frame's order: `decode`, `prepare` (persons, host inputs),
//! [`infer`] (the models, on the GPU or through host buffers), `post` (decoding, maps, drawing,
//! the result) and `deliver` (publishers and video outputs). `work` is what travels between them.
//!
//! Without GStreamer only [`infer::device`], the GPU plan of a frame, is built.

#[cfg(feature = "gstreamer")]
mod build;
#[cfg(feature = "gstreamer")]
mod config;
#[cfg(feature = "gstreamer")]
mod decode;
#[cfg(feature = "gstreamer")]
mod deliver;
pub mod infer;
#[cfg(feature = "gstreamer")]
mod links;
#[cfg(feature = "gstreamer")]
mod models;
#[cfg(feature = "gstreamer")]
mod post;
#[cfg(feature = "gstreamer")]
mod prepare;
#[cfg(feature = "gstreamer")]
mod run;
#[cfg(feature = "gstreamer")]
mod stream;
#[cfg(feature = "gstreamer")]
mod streams;
#[cfg(feature = "gstreamer")]
mod track_crops;
#[cfg(feature = "gstreamer")]
mod work;

#[cfg(feature = "gstreamer")]
pub use config::{
    ModelPaths, NAME_PLACEHOLDER, PersonSource, PipelineConfig, PublishTargets, RemoteSettings,
    Scheduling, SegUpsample, Smoothing, StreamSpec, View, is_stream_name,
};

/// Runs the whole job and reports what it did.
#[cfg(feature = "gstreamer")]
pub fn run(config: &PipelineConfig) -> crate::Result<crate::metrics::RunReport> {
    build::Started::start(config)?.run()
}
