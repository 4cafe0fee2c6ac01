//! The first phase of a run: everything opened before the first frame (models, persons,
//! source, outputs, publishers, servers), held in [`Started`] until the run ends. As a
//! gst-plugins-rs element keeps its `State` apart from its `Settings`, this is the state of a
//! run, apart from the [`PipelineConfig`] it was built from.

use std::io::IsTerminal;
use std::sync::Arc;

use super::config::PipelineConfig;
use super::models::{ModelSummary, Models, PersonFinder, load_models, summarize};
use crate::error::Result;
use crate::metrics::Metrics;
use crate::publish::mqtt::{MqttConfig, MqttPublisher};
use crate::publish::osc::OscPublisher;
use crate::publish::server::{NetworkOptions, NetworkServer};
use crate::publish::{Publisher, ResultsWriter};
use crate::sink::Dumper;

/// A run between start and stop: what the stages will own once they run. Streams open in
/// `run`, each on its own.
pub(super) struct Started<'c> {
    pub(super) config: &'c PipelineConfig,
    pub(super) metrics: Arc<Metrics>,
    pub(super) models: Models,
    pub(super) summary: ModelSummary,
    /// `None` when no pose model runs.
    pub(super) persons: Option<PersonFinder>,
    /// Frames stay as decoded (NV12/I420).
    pub(super) yuv_frames: bool,
    /// Publishers every stream shares.
    pub(super) publishers: Vec<Box<dyn Publisher>>,
    pub(super) server: Option<NetworkServer>,
    pub(super) dumper: Option<Dumper>,
    pub(super) progress: Option<indicatif::ProgressBar>,
}

impl<'c> Started<'c> {
    /// Opens everything in the order a failure is cheapest to report: the models first (the
    /// slowest to load and the likeliest to be wrong), then the outputs.
    pub(super) fn start(config: &'c PipelineConfig) -> Result<Self> {
        config.check()?;
        let metrics = Arc::new(Metrics::new());
        let models = load_models(config, &metrics)?;
        let summary = summarize(&models);
        if summary.random_weights {
            tracing::warn!(
                "a model has random weights (generated for tests): its outputs are not real results"
            );
        }
        let persons = match (&models.pose, &models.detector) {
            (Some(_), Some(_)) => Some(PersonFinder::OnGpu),
            (Some(_), None) => Some(PersonFinder::open(config)?),
            (None, _) => None,
        };
        let yuv_frames = yuv_frames(config, &models);
        let mut publishers = open_publishers(config, &metrics)?;
        let server = start_network(&config.network, &metrics, &mut publishers)?;
        let dumper = config
            .dump
            .as_ref()
            .map(|(dir, n)| Dumper::create(dir, *n))
            .transpose()?;
        Ok(Started {
            config,
            metrics,
            models,
            summary,
            persons,
            yuv_frames,
            publishers,
            server,
            dumper,
            progress: progress_bar(config),
        })
    }
}

/// Whether frames stay as decoded (NV12/I420), converted where they are read; says which.
fn yuv_frames(config: &PipelineConfig, models: &Models) -> bool {
    let on_gpu = models.device.is_some();
    match (on_gpu, config.rgba_needed_by(on_gpu)) {
        (true, None) => {
            tracing::info!("frames go to the GPU as decoded (NV12/I420), converted there");
            true
        }
        (false, None) => {
            tracing::info!(
                "frames stay as decoded (NV12/I420): converted as they are resized, drawn on in their own planes"
            );
            true
        }
        (_, Some(reason)) => {
            tracing::info!("frames are converted to RGBA on the CPU: {reason} reads them");
            false
        }
    }
}

/// Starts the HTTP/WebSocket servers when asked for; their results stream joins the publishers.
fn start_network(
    options: &NetworkOptions,
    metrics: &Arc<Metrics>,
    publishers: &mut Vec<Box<dyn Publisher>>,
) -> Result<Option<NetworkServer>> {
    if options.http.is_none() && options.ws.is_none() {
        return Ok(None);
    }
    let server = NetworkServer::start(options, metrics.clone())?;
    if let Some(address) = server.http_address() {
        tracing::info!("browser view, /metrics and /health on http://{address}/");
    }
    if let Some(address) = server.ws_address() {
        tracing::info!("results over WebSocket on ws://{address}/");
    }
    publishers.push(Box::new(server.results().publisher()));
    Ok(Some(server))
}

/// The results file, then the network publishers, each opened before the first frame.
fn open_publishers(config: &PipelineConfig, metrics: &Metrics) -> Result<Vec<Box<dyn Publisher>>> {
    let mut publishers: Vec<Box<dyn Publisher>> = Vec::new();
    if let Some(path) = config.shared_results() {
        publishers.push(Box::new(ResultsWriter::create(path)?));
    }
    if let Some(target) = &config.publish.osc {
        let osc = OscPublisher::connect(target)?;
        metrics.track_publisher("osc", osc.counters());
        publishers.push(Box::new(osc));
    }
    if let Some(mqtt) = &config.publish.mqtt {
        let mqtt = MqttConfig {
            per_stream: config.splits_per_stream(),
            ..mqtt.clone()
        };
        let mqtt = MqttPublisher::start(&mqtt)?;
        metrics.track_publisher("mqtt", mqtt.counters());
        publishers.push(Box::new(mqtt));
    }
    Ok(publishers)
}

/// A bar without a length yet: it is set once the streams are open.
fn progress_bar(config: &PipelineConfig) -> Option<indicatif::ProgressBar> {
    if !config.progress || !std::io::stderr().is_terminal() {
        return None;
    }
    let bar = indicatif::ProgressBar::no_length();
    let template =
        "{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} frames {per_sec} ETA {eta}";
    if let Ok(style) = indicatif::ProgressStyle::with_template(template) {
        bar.set_style(style);
    }
    Some(bar)
}
