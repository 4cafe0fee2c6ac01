//! The first phase of a run: everything opened before the first frame (models, persons,
//! source, outputs, publishers, servers), held in [`Started`] until the run ends. As a
//! gst-plugins-rs element keeps its `State` apart from its `Settings`, this is the state of a
//! run, apart from the [`PipelineConfig`] it was built from.

use std::io::IsTerminal;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crossbeam_channel::{Receiver, Sender, TrySendError, bounded};

use super::config::PipelineConfig;
use super::models::{ModelSummary, Models, PersonFinder, load_models, summarize};
use crate::error::Result;
use crate::metrics::Metrics;
use crate::publish::mqtt::MqttPublisher;
use crate::publish::osc::OscPublisher;
use crate::publish::server::{NetworkOptions, NetworkServer};
use crate::publish::{Publisher, ResultsWriter, StreamStatusMessage};
use crate::sink::{Dumper, VideoOutput, VideoSinkOptions};
use crate::source::{self, FrameSource, SourceOptions, StatusListener, StreamStatus};

const RANDOM_WEIGHTS_BANNER: &str = "RANDOM-WEIGHT TEST MODEL - NOT A REAL RESULT";

/// A run between start and stop: what the stages will own once they run.
pub(super) struct Started<'c> {
    pub(super) config: &'c PipelineConfig,
    pub(super) metrics: Arc<Metrics>,
    pub(super) models: Models,
    pub(super) summary: ModelSummary,
    /// `None` when no pose model runs.
    pub(super) persons: Option<PersonFinder>,
    pub(super) source: Box<dyn FrameSource>,
    /// The source's status changes, for the sink thread to publish between frames.
    pub(super) statuses: Receiver<StreamStatusMessage>,
    pub(super) videos: Vec<VideoOutput>,
    pub(super) publishers: Vec<Box<dyn Publisher>>,
    pub(super) server: Option<NetworkServer>,
    pub(super) dumper: Option<Dumper>,
    pub(super) progress: Option<indicatif::ProgressBar>,
}

impl<'c> Started<'c> {
    /// Opens everything in the order a failure is cheapest to report: the models first (the
    /// slowest to load and the likeliest to be wrong), then the source, then the outputs.
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
            (Some(_), None) => Some(PersonFinder::open(
                &config.persons,
                config.ort_lib.as_deref(),
            )?),
            (None, _) => None,
        };
        // Status changes wait here for the sink thread, which publishes them between frames;
        // also those of a first connection that is retried inside `source::open`.
        let (status_tx, statuses) = bounded(STATUS_QUEUE);
        let source_options = SourceOptions {
            stop: Some(config.stop.clone()),
            status: Some(status_listener(metrics.clone(), status_tx)),
            yuv_frames: yuv_frames(config, &models),
            ..config.source.clone()
        };
        let source = source::open(&config.input, &source_options)?;
        metrics.stream_up(source_options.stream_id, true);
        let info = source.info().clone();
        let stream = VideoSinkOptions {
            width: info.width,
            height: info.height,
            banner: summary
                .random_weights
                .then(|| RANDOM_WEIGHTS_BANNER.to_owned()),
            preset: config.video_preset,
        };
        let videos = config
            .outputs
            .iter()
            .map(|spec| VideoOutput::open(spec, &stream))
            .collect::<Result<Vec<_>>>()?;
        let mut publishers = open_publishers(config, &metrics)?;
        let server = start_network(&config.network, &metrics, &mut publishers)?;
        let dumper = config
            .dump
            .as_ref()
            .map(|(dir, n)| Dumper::create(dir, *n))
            .transpose()?;
        let progress = progress_bar(config, info.expected_frames);
        Ok(Started {
            config,
            metrics,
            models,
            summary,
            persons,
            source,
            statuses,
            videos,
            publishers,
            server,
            dumper,
            progress,
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

/// Status changes queued for the sink thread: a few per outage, the backoff spaces them.
const STATUS_QUEUE: usize = 64;

/// Hears the source's status changes on its own thread: counts them in the metrics and queues
/// the message for the publishers, never waiting (a full queue drops the change and says so).
fn status_listener(metrics: Arc<Metrics>, queue: Sender<StreamStatusMessage>) -> StatusListener {
    let reconnects = AtomicU64::new(0);
    StatusListener::new(move |stream, status| {
        let now = std::time::SystemTime::now();
        let message = match status {
            StreamStatus::Down { reason } => {
                metrics.stream_up(stream, false);
                let reconnects = reconnects.load(Ordering::Relaxed);
                StreamStatusMessage::down(stream, reason, reconnects, now)
            }
            StreamStatus::Up => {
                metrics.stream_up(stream, true);
                metrics.reconnect(stream);
                let reconnects = reconnects.fetch_add(1, Ordering::Relaxed) + 1;
                StreamStatusMessage::up(stream, reconnects, now)
            }
        };
        // Disconnected: the run is over and nothing publishes any more.
        if let Err(TrySendError::Full(_)) = queue.try_send(message) {
            tracing::warn!("stream {stream}: status change not published: the queue is full");
        }
    })
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
    if let Some(path) = &config.results {
        publishers.push(Box::new(ResultsWriter::create(path)?));
    }
    if let Some(target) = &config.publish.osc {
        let osc = OscPublisher::connect(target)?;
        metrics.track_publisher("osc", osc.counters());
        publishers.push(Box::new(osc));
    }
    if let Some(mqtt) = &config.publish.mqtt {
        let mqtt = MqttPublisher::start(mqtt)?;
        metrics.track_publisher("mqtt", mqtt.counters());
        publishers.push(Box::new(mqtt));
    }
    Ok(publishers)
}

fn progress_bar(config: &PipelineConfig, expected: Option<u64>) -> Option<indicatif::ProgressBar> {
    if !config.progress || !std::io::stderr().is_terminal() {
        return None;
    }
    let total = config
        .max_frames
        .map_or(expected, |m| Some(expected.map_or(m, |e| e.min(m))));
    let bar = total.map_or_else(
        indicatif::ProgressBar::no_length,
        indicatif::ProgressBar::new,
    );
    let template =
        "{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} frames {per_sec} ETA {eta}";
    if let Ok(style) = indicatif::ProgressStyle::with_template(template) {
        bar.set_style(style);
    }
    Some(bar)
}
