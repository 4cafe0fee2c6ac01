//! The pipeline: source -> preprocess -> inference -> postprocess -> sinks, each stage on its own
//! thread, joined by bounded channels. Offline mode: every frame is processed and a full channel
//! blocks the stage before it, down to the decoder. Live mode: the newest frame wins; a frame still
//! waiting when a newer one arrives is dropped (and counted) before inference, so latency stays
//! bounded however slow the models are. Large buffers (model inputs and outputs) circulate through
//! pools instead of being allocated per frame.
//!
//! Here: the configuration, the wiring (links, threads, publishers) and the source and sink
//! stages. The stages between, in a frame's order: `prepare` (persons, host inputs),
//! `infer` (the models, on the GPU or through host buffers), `post` (decoding, maps,
//! drawing, the result); `models` loads what they run.

mod infer;
mod models;
mod post;
mod prepare;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::Instant;

use crossbeam_channel::{Receiver, Sender, TrySendError, bounded};

use crate::cuda::inference::DenseResult;
use crate::engine::ExecutionChoice;
use crate::error::{Error, Result};
use crate::frame::Frame;
use crate::frame::PaintedFrame;
use crate::metrics::{Metrics, RunReport, StageStats};
use crate::preprocess::StretchPlan;
use crate::publish::mqtt::{MqttConfig, MqttPublisher};
use crate::publish::osc::OscPublisher;
use crate::publish::server::{NetworkOptions, NetworkServer};
use crate::publish::{FrameResult, Published, Publisher, ResultsWriter};
use crate::sink::{Dumper, OutputSpec, VideoOutput, VideoSinkOptions};
use crate::source::{self, FrameSource, InputSpec, SourceOptions, StatusListener, StreamStatus};
use crate::tasks::detect::DetectorOptions;
use crate::tasks::pose::PersonBox;
use crate::tasks::pose::decode::HeatmapPeak;
use crate::tasks::{INPUT_HEIGHT, INPUT_WIDTH};

use infer::{Inference, inference_stage, paint_for};
use models::{PersonFinder, load_models, summarize};
use post::{PostOptions, post_stage};
use prepare::{Preparation, preprocess_stage};

/// Frames waiting between two stages; small, so latency and memory stay bounded.
const CHANNEL_DEPTH: usize = 2;
/// Name of the end-to-end latency line in the report: decoded to published.
pub const CAPTURE_TO_PUBLISH: &str = "capture->out";
const RANDOM_WEIGHTS_BANNER: &str = "RANDOM-WEIGHT TEST MODEL - NOT A REAL RESULT";

#[derive(Clone, Debug, Default)]
pub struct ModelPaths {
    pub pose: Option<PathBuf>,
    pub seg: Option<PathBuf>,
    pub depth: Option<PathBuf>,
    pub normal: Option<PathBuf>,
}

/// How segmentation logits reach frame size.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SegUpsample {
    /// Bilinear upsample of the logits, then argmax (as the official pipeline).
    #[default]
    Bilinear,
    /// Argmax at model resolution, then nearest upsample: cheaper, coarser boundaries.
    Nearest,
}

/// Where results go besides `--results`.
#[derive(Clone, Debug, Default)]
pub struct PublishTargets {
    /// OSC over UDP, `host:port`.
    pub osc: Option<String>,
    pub mqtt: Option<MqttConfig>,
}

/// What the overlay video shows under the skeletons.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum View {
    /// Depth if a depth model runs, else normals if a normal model runs, else the frame.
    #[default]
    Auto,
    /// The frame, with the body-part colours blended in when a seg model runs.
    Frame,
    /// Depth coloured (inferno, near is bright), on the persons only when a seg model runs.
    Depth,
    /// Surface normals as RGB, on the persons only when a seg model runs.
    Normal,
}

impl View {
    fn resolve(self, models: &ModelPaths) -> View {
        match self {
            View::Auto if models.depth.is_some() => View::Depth,
            View::Auto if models.normal.is_some() => View::Normal,
            View::Auto => View::Frame,
            chosen => chosen,
        }
    }
}

/// How frames are scheduled when the models are slower than the source.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Scheduling {
    /// Newest frame wins; older frames are dropped before inference; sources run in real time.
    Live,
    /// Every frame, with backpressure down to the decoder.
    Offline,
}

impl Scheduling {
    /// Live for cameras, RTSP and test patterns; offline for files and images.
    pub fn default_for(input: &InputSpec) -> Self {
        match input {
            InputSpec::Webcam(_) | InputSpec::Test(_) => Scheduling::Live,
            InputSpec::Uri(uri) if uri.starts_with("rtsp") => Scheduling::Live,
            _ => Scheduling::Offline,
        }
    }
}

/// Where the person boxes for top-down pose come from.
#[derive(Clone, Debug, Default)]
pub enum PersonSource {
    /// No detector: the whole frame is one person (docs/SAPIENS.md step 1).
    #[default]
    WholeFrame,
    /// An ONNX person detector (RTMDet or YOLO layout).
    Detector {
        model: PathBuf,
        options: DetectorOptions,
    },
    /// Boxes from a JSON-lines file, per frame index.
    BoxesFile(PathBuf),
}

#[derive(Clone, Debug)]
pub struct PipelineConfig {
    pub input: InputSpec,
    pub scheduling: Scheduling,
    /// Set (by a signal handler) to stop taking frames; frames in flight are finished and every
    /// output is flushed and finalised.
    pub stop: Arc<AtomicBool>,
    pub models: ModelPaths,
    /// Overlay video outputs (files, RTSP), all fed the same frames; none: no video.
    pub outputs: Vec<OutputSpec>,
    /// JSON-lines results file, `-` for stdout.
    pub results: Option<PathBuf>,
    /// Folder and number of leading frames to dump.
    pub dump: Option<(PathBuf, u64)>,
    pub ort_lib: Option<PathBuf>,
    /// `--engine` and `--device`: what runs the models.
    pub execution: ExecutionChoice,
    /// ONNX Runtime intra-op threads; 0 for every core.
    pub threads: usize,
    pub keypoint_threshold: f32,
    pub seg_upsample: SegUpsample,
    /// Network publishers besides the results file.
    pub publish: PublishTargets,
    /// HTTP (browser view, /metrics, /health) and WebSocket servers; none when both are unset.
    pub network: NetworkOptions,
    /// Where person boxes come from for top-down pose.
    pub persons: PersonSource,
    /// Also run the mirrored crops and average (the accuracy mode of the published numbers).
    pub flip_test: bool,
    pub view: View,
    /// Per-frame dense outputs as PNG files (class map, depth, normals, mask).
    pub dense_dir: Option<PathBuf>,
    /// Body-part classes whose union is written as a mask per frame (needs `dense_dir`).
    pub mask_classes: Vec<u8>,
    /// Person crops per pose inference call.
    pub max_batch: usize,
    pub max_frames: Option<u64>,
    /// Show a progress bar when stderr is a terminal.
    pub progress: bool,
    pub source: SourceOptions,
}

/// A frame on its way through the stages, gathering its tensors.
struct Work {
    frame: Frame,
    boxes: Vec<PersonBox>,
    pose_input: Option<Vec<f32>>,
    dense_input: Option<Vec<f32>>,
    heatmaps: Option<Vec<f32>>,
    /// Keypoints decoded on the GPU instead of `heatmaps`, one set per box.
    peaks: Option<Vec<HeatmapPeak>>,
    logits: Option<Vec<f32>>,
    /// The frame-size class map made on the GPU instead of `logits`.
    class_map: Option<Vec<u8>>,
    /// Depth and normals post-processed on the GPU instead of `depth` and `normals`.
    device_depth: Option<DenseResult>,
    device_normals: Option<DenseResult>,
    /// The frame with its view drawn in on the GPU (as RGBA), for the overlay.
    painted: Option<PaintedFrame>,
    depth: Option<Vec<f32>>,
    normals: Option<Vec<f32>>,
}

/// A processed frame for the sinks.
struct Done {
    frame: Frame,
    result: FrameResult,
}

/// Recycles large f32 buffers between stages.
#[derive(Clone)]
struct Pool {
    give: Sender<Vec<f32>>,
    take: Receiver<Vec<f32>>,
}

impl Pool {
    fn new(capacity: usize) -> Self {
        let (give, take) = bounded(capacity);
        Pool { give, take }
    }

    /// A buffer of `len` elements; its contents are stale and must be overwritten.
    fn get(&self, len: usize) -> Vec<f32> {
        let mut buffer = self.take.try_recv().unwrap_or_default();
        buffer.resize(len, 0.0);
        buffer
    }

    fn put(&self, mut buffer: Vec<f32>) {
        buffer.clear();
        let _ = self.give.try_send(buffer);
    }
}

/// The link between two stages: blocking (backpressure), or latest-wins, where a full link drops
/// its oldest item to make room so the consumer always gets the newest.
struct Handoff<T> {
    metrics: Arc<Metrics>,
    send: Sender<T>,
    /// The sender's own view of the queue, to take out the stale item; `None` when blocking.
    stale: Option<Receiver<T>>,
    dropped: Arc<AtomicU64>,
}

impl<T> Handoff<T> {
    fn blocking(
        capacity: usize,
        dropped: Arc<AtomicU64>,
        metrics: Arc<Metrics>,
    ) -> (Self, Receiver<T>) {
        let (send, receive) = bounded(capacity);
        (
            Handoff {
                metrics,
                send,
                stale: None,
                dropped,
            },
            receive,
        )
    }

    fn latest_wins(dropped: Arc<AtomicU64>, metrics: Arc<Metrics>) -> (Self, Receiver<T>) {
        let (send, receive) = bounded(1);
        let stale = Some(receive.clone());
        (
            Handoff {
                metrics,
                send,
                stale,
                dropped,
            },
            receive,
        )
    }

    /// False once the consumer has gone.
    fn send(&self, item: T) -> bool {
        let Some(stale) = &self.stale else {
            return self.send.send(item).is_ok();
        };
        let mut item = item;
        loop {
            match self.send.try_send(item) {
                Ok(()) => return true,
                Err(TrySendError::Disconnected(_)) => return false,
                Err(TrySendError::Full(back)) => {
                    if stale.try_recv().is_ok() {
                        self.dropped.fetch_add(1, Ordering::Relaxed);
                        self.metrics.frame_dropped(0);
                    }
                    item = back;
                }
            }
        }
    }
}

/// Live: the decoder's newest frame waits for preprocessing, which hands over only when inference
/// is free (a rendezvous), so a frame waits at most one inference. Offline: backpressure throughout.
type Link<T> = (Handoff<T>, Receiver<T>);

fn stage_links(
    scheduling: Scheduling,
    dropped: &Arc<AtomicU64>,
    metrics: &Arc<Metrics>,
) -> (Link<Frame>, Link<Work>) {
    let (d, m) = (dropped, metrics);
    match scheduling {
        Scheduling::Live => (
            Handoff::latest_wins(d.clone(), m.clone()),
            Handoff::blocking(0, d.clone(), m.clone()),
        ),
        Scheduling::Offline => (
            Handoff::blocking(CHANNEL_DEPTH, d.clone(), m.clone()),
            Handoff::blocking(CHANNEL_DEPTH, d.clone(), m.clone()),
        ),
    }
}

/// Runs the whole job and reports what it did.
pub fn run(config: &PipelineConfig) -> Result<RunReport> {
    check_outputs(config)?;
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
    // Status changes wait here for the sink thread, which publishes them between frames; also
    // those of a first connection that is retried inside `source::open`.
    let (status_tx, status_rx) = bounded(STATUS_QUEUE);
    let yuv_frames = match (&models.device, rgba_needed_by(config)) {
        (Some(_), None) => {
            tracing::info!("frames go to the GPU as decoded (NV12/I420), converted there");
            true
        }
        (Some(_), Some(reason)) => {
            tracing::info!("frames are converted to RGBA on the CPU: {reason} reads them");
            false
        }
        (None, _) => false,
    };
    let source_options = SourceOptions {
        stop: Some(config.stop.clone()),
        status: Some(status_listener(metrics.clone(), status_tx)),
        yuv_frames,
        ..config.source.clone()
    };
    let source = source::open(&config.input, &source_options)?;
    metrics.stream_up(source_options.stream_id, true);
    let info = source.info().clone();
    let stream = VideoSinkOptions {
        width: info.width,
        height: info.height,
        framerate: info.framerate,
        banner: summary
            .random_weights
            .then(|| RANDOM_WEIGHTS_BANNER.to_owned()),
    };
    let videos = config
        .outputs
        .iter()
        .map(|spec| VideoOutput::open(spec, &stream))
        .collect::<Result<Vec<_>>>()?;
    let mut publishers = open_publishers(config, &metrics)?;
    let server = start_network(&config.network, &metrics, &mut publishers)?;
    let frame_hub = server.as_ref().map(|s| s.frames().clone());
    let dumper = config
        .dump
        .as_ref()
        .map(|(dir, n)| Dumper::create(dir, *n))
        .transpose()?;
    let progress = progress_bar(config, info.expected_frames);
    let started = Instant::now();

    let dropped = Arc::new(AtomicU64::new(0));
    let ((frames_tx, frames_rx), (prepared_tx, prepared_rx)) =
        stage_links(config.scheduling, &dropped, &metrics);
    let (inferred_tx, inferred_rx) = bounded(CHANNEL_DEPTH);
    let (done_tx, done_rx) = bounded(CHANNEL_DEPTH);
    let input_pool = Pool::new(2 * CHANNEL_DEPTH + 2);
    let output_pool = Pool::new(2 * CHANNEL_DEPTH + 2);
    let stretch = StretchPlan::new(info.width, info.height, INPUT_WIDTH, INPUT_HEIGHT);
    let preparation = Preparation {
        metrics: metrics.clone(),
        pool: input_pool.clone(),
        stretch,
        persons,
        needs_dense: models.needs_dense_input(),
        inputs_on_device: models.device.is_some(),
        dumped_frames: config.dump.as_ref().map_or(0, |(_, frames)| *frames),
    };
    let draw = !videos.is_empty();
    let flip_test = config.flip_test;
    let seg_upsample = config.seg_upsample;
    let max_frames = config.max_frames;
    let stop = &config.stop;

    thread::scope(|scope| {
        let stage_metrics = &metrics;
        let source_thread =
            scope.spawn(move || source_stage(source, max_frames, stop, frames_tx, stage_metrics));
        let preprocess_thread =
            scope.spawn(move || preprocess_stage(frames_rx, prepared_tx, preparation));
        let (in_pool, out_pool) = (input_pool.clone(), output_pool.clone());
        let dumper = dumper.as_ref();
        let inference_thread = scope.spawn(move || {
            inference_stage(
                prepared_rx,
                inferred_tx,
                models,
                Inference {
                    flip_test,
                    seg_upsample,
                    dense_maps: config.dense_dir.is_some(),
                    paint: draw.then(|| paint_for(config.view.resolve(&config.models))),
                },
                (&in_pool, &out_pool),
                dumper,
            )
        });
        let summary = &summary;
        let post = PostOptions {
            threshold: config.keypoint_threshold,
            seg_upsample: config.seg_upsample,
            draw,
            view: config.view.resolve(&config.models),
            dense_dir: config.dense_dir.clone(),
            mask_classes: config.mask_classes.clone(),
        };
        let pool = output_pool.clone();
        let post_thread = scope.spawn(move || {
            post_stage(
                inferred_rx,
                done_tx,
                summary,
                &post,
                &pool,
                frame_hub,
                stage_metrics,
            )
        });
        let sink_result = sink_stage(
            (done_rx, status_rx),
            videos,
            publishers,
            progress.as_ref(),
            &metrics,
        );
        let outcome = [
            join(source_thread),
            join(preprocess_thread),
            join(inference_thread),
            join(post_thread),
        ];
        let mut stages = Vec::new();
        let mut frames_in = 0;
        for (index, result) in outcome.into_iter().enumerate() {
            let (count, stats) = result?;
            if index == 0 {
                frames_in = count;
            }
            stages.extend(stats);
        }
        if let Some(server) = server {
            server.shutdown();
        }
        let (frames_out, sink_stats) = sink_result?;
        stages.extend(sink_stats);
        Ok(RunReport {
            frames_in,
            frames_out,
            frames_dropped: dropped.load(Ordering::Relaxed),
            elapsed: started.elapsed(),
            stages,
        })
    })
}

type StageOutcome = Result<(u64, Vec<StageStats>)>;

/// What reads a frame's pixels on the CPU before the GPU has drawn it, and so needs them as
/// RGBA; `None` when the GPU may take frames as decoded (it prepares every frame, detects the
/// persons, converts the colours as it resizes, and draws the overlay on an RGBA copy it makes
/// itself).
fn rgba_needed_by(config: &PipelineConfig) -> Option<&'static str> {
    config.dump.as_ref().map(|_| "--dump")
}

/// Hands a stream status change to every publisher, on the sink thread.
fn publish_status(
    publishers: &mut [Box<dyn Publisher>],
    status: &crate::publish::StreamStatusMessage,
) -> Result<()> {
    let published = crate::publish::PublishedStatus::new(status);
    publishers
        .iter_mut()
        .try_for_each(|publisher| publisher.publish_status(&published))
}

/// Status changes queued for the sink thread: a few per outage, the backoff spaces them.
const STATUS_QUEUE: usize = 64;

/// Hears the source's status changes on its own thread: counts them in the metrics and queues
/// the message for the publishers, never waiting (a full queue drops the change and says so).
fn status_listener(
    metrics: Arc<Metrics>,
    queue: Sender<crate::publish::StreamStatusMessage>,
) -> StatusListener {
    use crate::publish::StreamStatusMessage;
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

fn join(handle: thread::ScopedJoinHandle<'_, StageOutcome>) -> StageOutcome {
    handle
        .join()
        .unwrap_or_else(|_| Err(Error::Gstreamer("a pipeline stage panicked".into())))
}

fn check_outputs(config: &PipelineConfig) -> Result<()> {
    let files = config.outputs.iter().filter_map(|spec| match spec {
        OutputSpec::File(path) => Some(path),
        _ => None,
    });
    for path in files
        .chain(config.results.as_ref())
        .filter(|p| p.as_os_str() != "-")
    {
        let parent = path.parent().filter(|p| !p.as_os_str().is_empty());
        if parent.is_some_and(|p| !p.is_dir()) {
            return Err(Error::Output {
                path: path.clone(),
                message: "its folder does not exist".into(),
            });
        }
    }
    let models = &config.models;
    let invalid = |input: &str, reason: &str| Error::InputInvalid {
        input: input.into(),
        reason: reason.into(),
    };
    if [&models.pose, &models.seg, &models.depth, &models.normal]
        .iter()
        .all(|m| m.is_none())
    {
        return Err(invalid(
            "models",
            "give at least one of --pose-model, --seg-model, --depth-model, --normal-model",
        ));
    }
    if !config.mask_classes.is_empty() && (models.seg.is_none() || config.dense_dir.is_none()) {
        return Err(invalid(
            "--mask-classes",
            "needs --seg-model and --dense-dir",
        ));
    }
    if let Some(dir) = &config.dense_dir {
        std::fs::create_dir_all(dir)
            .map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
    }
    Ok(())
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

fn source_stage(
    mut source: Box<dyn FrameSource>,
    max_frames: Option<u64>,
    stop: &AtomicBool,
    out: Handoff<Frame>,
    metrics: &Arc<Metrics>,
) -> StageOutcome {
    let mut stats = StageStats::new("decode").reporting_to(metrics);
    let mut count = 0;
    while max_frames.is_none_or(|m| count < m) && !stop.load(Ordering::Relaxed) {
        let start = Instant::now();
        let Some(frame) = source.next_frame()? else {
            break;
        };
        stats.record(start.elapsed());
        metrics.frame_in(frame.stream_id);
        count += 1;
        if !out.send(frame) {
            break;
        }
    }
    Ok((count, vec![stats]))
}

/// Frames, and stream status changes in between.
fn sink_stage(
    (done, statuses): (
        Receiver<Done>,
        Receiver<crate::publish::StreamStatusMessage>,
    ),
    mut videos: Vec<VideoOutput>,
    mut publishers: Vec<Box<dyn Publisher>>,
    progress: Option<&indicatif::ProgressBar>,
    metrics: &Arc<Metrics>,
) -> StageOutcome {
    let mut stats = StageStats::new("sink").reporting_to(metrics);
    let mut latency = StageStats::new(CAPTURE_TO_PUBLISH);
    let mut count = 0;
    let mut deliver = |publishers: &mut Vec<Box<dyn Publisher>>, done: Done| -> Result<()> {
        let Done { frame, result } = done;
        // A status sent before this frame left the source goes first: an `up` precedes the
        // first frame after it.
        for status in statuses.try_iter() {
            publish_status(publishers, &status)?;
        }
        let start = Instant::now();
        let captured = frame.capture_time;
        let published = Published::new(&result);
        for publisher in publishers.iter_mut() {
            publisher.publish(&published)?;
        }
        for video in &mut videos {
            video.push(&frame)?;
        }
        stats.record(start.elapsed());
        let elapsed = captured.elapsed().unwrap_or_default();
        latency.record(elapsed);
        metrics.capture_to_publish(elapsed);
        metrics.frame_out(result.stream);
        count += 1;
        if let Some(bar) = progress {
            bar.inc(1);
        }
        Ok(())
    };
    // On a failure, stop taking frames but still finalise every output below.
    let delivered = (|| {
        let mut waiting = statuses.clone();
        loop {
            crossbeam_channel::select! {
                recv(done) -> item => match item {
                    Ok(item) => deliver(&mut publishers, item)?,
                    Err(_) => break,
                },
                recv(waiting) -> status => match status {
                    Ok(status) => publish_status(&mut publishers, &status)?,
                    // Senders live as long as the source; statuses left are taken below.
                    Err(_) => waiting = crossbeam_channel::never(),
                },
            }
        }
        statuses
            .try_iter()
            .try_for_each(|status| publish_status(&mut publishers, &status))
    })();
    drop(done);
    if let Some(bar) = progress {
        bar.finish_and_clear();
    }
    let finished = [
        videos.into_iter().try_for_each(VideoOutput::finish),
        publishers.into_iter().try_for_each(|p| p.finish()),
    ];
    delivered?;
    finished.into_iter().collect::<Result<()>>()?;
    Ok((count, vec![stats, latency]))
}
