//! The pipeline: source -> preprocess -> inference -> postprocess -> sinks, each stage on its own
//! thread, joined by bounded channels. Offline mode: every frame is processed and a full channel
//! blocks the stage before it, down to the decoder. Live mode: the newest frame wins; a frame still
//! waiting when a newer one arrives is dropped (and counted) before inference, so latency stays
//! bounded however slow the models are. Large buffers (model inputs and outputs) circulate through
//! pools instead of being allocated per frame.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant, UNIX_EPOCH};

use crossbeam_channel::{Receiver, Sender, TrySendError, bounded};

use crate::cuda::Gpu;
use crate::cuda::inference::{
    DenseRequest, DenseResult, DeviceInference, FrameRequest, Paint, PaintedFrame, Persons,
    PoseRequest,
};
use crate::engine::device::ComputeStream;
use crate::engine::onnx::{OnnxEngine, OnnxOptions};
use crate::engine::probe::Capabilities;
use crate::engine::{Engine, ExecutionChoice, runtime};
use crate::error::{Error, Result};
use crate::frame::Frame;
use crate::metrics::{Metrics, RunReport, StageStats};
use crate::preprocess::{Normalization, StretchPlan};
use crate::publish::frame_hub::FrameHub;
use crate::publish::mqtt::{MqttConfig, MqttPublisher};
use crate::publish::osc::OscPublisher;
use crate::publish::server::{NetworkOptions, NetworkServer};
use crate::publish::{
    DepthSummary, FrameResult, NormalsSummary, Published, Publisher, ResultsWriter, SCHEMA_NAME,
    SCHEMA_VERSION, SegmentationSummary,
};
use crate::render::{self, PoseStyle};
use crate::sink::{Dumper, OutputSpec, VideoOutput, VideoSinkOptions};
use crate::source::{self, FrameSource, InputSpec, SourceOptions, StatusListener, StreamStatus};
use crate::tasks::detect::{BoxesFile, DetectorOptions, PersonDetector};
use crate::tasks::keypoint_sets::{self, KeypointSet};
use crate::tasks::pose::{self, Person, PersonBox};
use crate::tasks::pose_decode::HeatmapPeak;
use crate::tasks::{
    INPUT_HEIGHT, INPUT_LEN, INPUT_WIDTH, OutputLayout, Task, dense, flip, seg, validate_model,
};

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
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
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
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
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
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
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
    /// No detector: the whole frame is one person (SAPIENS.md step 1).
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

/// Finds the persons of a frame; lives on the preprocess thread.
enum PersonFinder {
    WholeFrame,
    Detector(Box<PersonDetector>),
    File(BoxesFile),
    /// The detector runs on the GPU, in the inference stage, on the frame it has uploaded.
    OnGpu,
}

impl PersonFinder {
    fn open(source: &PersonSource, ort_lib: Option<&std::path::Path>) -> Result<Self> {
        Ok(match source {
            PersonSource::WholeFrame => PersonFinder::WholeFrame,
            PersonSource::Detector { model, options } => {
                let environment = runtime::environment(ort_lib)?;
                let detector = PersonDetector::load(model, environment, options)?;
                tracing::info!(model = %model.display(), layout = ?detector.layout(), "person detector loaded");
                PersonFinder::Detector(Box::new(detector))
            }
            PersonSource::BoxesFile(path) => PersonFinder::File(BoxesFile::load(path)?),
        })
    }

    /// Boxes by decreasing score; boxes too small to crop are left out.
    fn boxes(&mut self, frame: &Frame) -> Result<Vec<PersonBox>> {
        let mut boxes = match self {
            PersonFinder::WholeFrame => {
                vec![PersonBox::whole_frame(frame.width(), frame.height())]
            }
            PersonFinder::Detector(detector) => frame.with_view(|view| detector.detect(view))?,
            PersonFinder::File(file) => file.boxes_for(frame.index),
            PersonFinder::OnGpu => Vec::new(),
        };
        boxes.retain(PersonBox::is_croppable);
        Ok(boxes)
    }
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

/// A model loaded for one task, with its checked output layout.
struct TaskModel {
    engine: Box<dyn Engine>,
    layout: OutputLayout,
    /// Items per call: the model's fixed batch size if it has one, else `--max-batch`.
    max_batch: usize,
    metrics: Arc<Metrics>,
}

/// The models of one run, one per task given.
struct Models {
    pose: Option<TaskModel>,
    seg: Option<TaskModel>,
    depth: Option<TaskModel>,
    normal: Option<TaskModel>,
    /// The person detector, when it runs on the GPU (it then reads the uploaded frame).
    detector: Option<PersonDetector>,
    /// On a GPU with its kernels: model inputs made, and outputs decoded, on the device. Last,
    /// so it drops after the engines: its bound batches hold their sessions' last references.
    device: Option<DeviceInference>,
}

impl Models {
    fn by_task(&self) -> [(Task, Option<&TaskModel>); 4] {
        [
            (Task::Pose, self.pose.as_ref()),
            (Task::Seg, self.seg.as_ref()),
            (Task::Depth, self.depth.as_ref()),
            (Task::Normal, self.normal.as_ref()),
        ]
    }

    fn needs_dense_input(&self) -> bool {
        self.seg.is_some() || self.depth.is_some() || self.normal.is_some()
    }
}

/// Everything the post-processing needs to know about the models, shared with the sink.
struct ModelSummary {
    ids: std::collections::BTreeMap<&'static str, String>,
    random_weights: bool,
    keypoint_set: Option<&'static KeypointSet>,
    pose_layout: Option<OutputLayout>,
    seg_layout: Option<OutputLayout>,
    depth_layout: Option<OutputLayout>,
    normal_layout: Option<OutputLayout>,
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

fn load_models(config: &PipelineConfig, metrics: &Arc<Metrics>) -> Result<Models> {
    let environment = runtime::environment(config.ort_lib.as_deref())?;
    let selection = crate::engine::select(config.execution, || {
        Capabilities::probe(config.ort_lib.as_deref())
    })?;
    tracing::info!("{}", selection.describe(config.execution));
    let gpu = selection.execution.device().and_then(open_kernels);
    let compute_stream = gpu.as_ref().map(|g| ComputeStream(g.stream().clone()));
    let load = |task: Task, path: &Option<PathBuf>| -> Result<Option<TaskModel>> {
        let Some(path) = path else { return Ok(None) };
        let options = OnnxOptions {
            threads: config.threads,
            execution: selection.execution,
            // Dense tasks run one frame at a time.
            max_batch: if task == Task::Pose {
                config.max_batch
            } else {
                1
            },
            compute_stream: compute_stream.clone(),
            ..OnnxOptions::default()
        };
        let engine = OnnxEngine::load(path, environment, &options)?;
        let layout = validate_model(task, engine.info())?;
        tracing::info!(task = task.name(), model = %path.display(), provider = %engine.info().provider, "model loaded");
        let max_batch = engine.info().input_shape[0].unwrap_or(config.max_batch.max(1));
        Ok(Some(TaskModel {
            engine: Box::new(engine),
            layout,
            max_batch,
            metrics: metrics.clone(),
        }))
    };
    let pose = load(Task::Pose, &config.models.pose)?;
    let detector = match (&pose, &config.persons, &compute_stream) {
        (Some(_), PersonSource::Detector { model, options }, Some(stream))
            if config.dump.is_none() =>
        {
            let device = stream.0.context().ordinal();
            let detector =
                PersonDetector::load_on_gpu(model, environment, options, device, stream)?;
            tracing::info!(model = %model.display(), layout = ?detector.layout(), "person detector loaded on cuda:{device}: frames are letterboxed on the GPU");
            Some(detector)
        }
        _ => None,
    };
    Ok(Models {
        pose,
        seg: load(Task::Seg, &config.models.seg)?,
        depth: load(Task::Depth, &config.models.depth)?,
        normal: load(Task::Normal, &config.models.normal)?,
        detector,
        device: gpu.map(DeviceInference::new),
    })
}

/// The CUDA kernels on `device`; without them (no NVRTC, say) the models still run on the GPU,
/// but frames are prepared and outputs decoded on the CPU, and the tensors cross the bus.
fn open_kernels(device: usize) -> Option<Gpu> {
    match Gpu::open(device) {
        Ok(gpu) => {
            tracing::info!(
                "CUDA kernels on cuda:{device}: model inputs and outputs stay on the GPU"
            );
            Some(gpu)
        }
        Err(e) => {
            tracing::warn!(
                "CUDA kernels unavailable ({e}): frames are prepared and outputs decoded on the CPU"
            );
            None
        }
    }
}

fn summarize(models: &Models) -> ModelSummary {
    let mut ids = std::collections::BTreeMap::new();
    let mut random_weights = false;
    for (task, model) in models.by_task() {
        if let Some(model) = model {
            ids.insert(task.name(), model.engine.info().id.clone());
            random_weights |= model.engine.info().has_random_weights();
        }
    }
    ModelSummary {
        ids,
        random_weights,
        keypoint_set: models
            .pose
            .as_ref()
            .and_then(|m| keypoint_sets::keypoint_set(m.layout.channels)),
        pose_layout: models.pose.as_ref().map(|m| m.layout),
        seg_layout: models.seg.as_ref().map(|m| m.layout),
        depth_layout: models.depth.as_ref().map(|m| m.layout),
        normal_layout: models.normal.as_ref().map(|m| m.layout),
    }
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

/// What the preprocess stage needs: where persons come from and how inputs are made.
struct Preparation {
    metrics: Arc<Metrics>,
    pool: Pool,
    stretch: StretchPlan,
    /// `None` when no pose model runs.
    persons: Option<PersonFinder>,
    needs_dense: bool,
    /// The GPU makes the model inputs from the frame itself.
    inputs_on_device: bool,
    /// Leading frames whose tensors `--dump` writes: on a GPU they take the host path (over the
    /// same sessions), so the tensors the model saw are at hand.
    dumped_frames: u64,
}

fn preprocess_stage(
    frames: Receiver<Frame>,
    out: Handoff<Work>,
    mut prep: Preparation,
) -> StageOutcome {
    let mut detect_stats = StageStats::new("detect").reporting_to(&prep.metrics);
    let mut stats = StageStats::new("preprocess").reporting_to(&prep.metrics);
    let norm = Normalization::SAPIENS;
    for frame in frames {
        let boxes = match prep.persons.as_mut() {
            Some(finder) => detect_stats.time(|| finder.boxes(&frame))?,
            None => Vec::new(),
        };
        let work = stats.time(|| {
            let on_host = !prep.inputs_on_device || frame.index < prep.dumped_frames;
            let pose_input = (on_host && prep.persons.is_some()).then(|| {
                let mut input = prep.pool.get(boxes.len() * INPUT_LEN);
                frame.with_view(|view| pose::prepare_crops(view, &boxes, &mut input, &norm));
                input
            });
            let dense_input = (on_host && prep.needs_dense).then(|| {
                let mut input = prep.pool.get(INPUT_LEN);
                frame.with_view(|view| prep.stretch.run(view, &mut input, &norm));
                input
            });
            Work {
                frame,
                boxes,
                pose_input,
                dense_input,
                heatmaps: None,
                peaks: None,
                logits: None,
                class_map: None,
                device_depth: None,
                device_normals: None,
                painted: None,
                depth: None,
                normals: None,
            }
        });
        if !out.send(work) {
            break;
        }
    }
    let detected = matches!(prep.persons, Some(PersonFinder::Detector(_)));
    let stats = if detected {
        vec![detect_stats, stats]
    } else {
        vec![stats]
    };
    Ok((0, stats))
}

/// How the models run on each frame.
#[derive(Clone, Copy)]
struct Inference {
    flip_test: bool,
    seg_upsample: SegUpsample,
    /// `--dense-dir`: frame-size depth and normals are needed on the host.
    dense_maps: bool,
    /// What the GPU draws for the overlay video, when there is one.
    paint: Option<Paint>,
}

/// The view as the GPU draws it.
fn paint_for(view: View) -> Paint {
    match view {
        View::Depth => Paint::Depth,
        View::Normal => Paint::Normals,
        View::Auto | View::Frame => Paint::Classes,
    }
}

fn inference_stage(
    prepared: Receiver<Work>,
    out: Sender<Work>,
    mut models: Models,
    inference: Inference,
    (input_pool, output_pool): (&Pool, &Pool),
    dumper: Option<&Dumper>,
) -> StageOutcome {
    let flip_test = inference.flip_test;
    let metrics = [&models.pose, &models.seg, &models.depth, &models.normal]
        .into_iter()
        .flatten()
        .map(|m| m.metrics.clone())
        .next()
        .expect("a run has at least one model");
    let mut stats: Vec<StageStats> = [
        "pose infer",
        "seg infer",
        "depth infer",
        "normal infer",
        "gpu frame",
        "detect",
    ]
    .into_iter()
    .map(|name| StageStats::new(name).reporting_to(&metrics))
    .collect();
    for mut work in prepared {
        let index = work.frame.index;
        let dump = dumper.filter(|d| d.wants(index));
        if let Some(dumper) = dump {
            dumper.frame_png(&work.frame)?;
        }
        let inputs_on_host = work.pose_input.is_some() || work.dense_input.is_some();
        if models.device.is_some() && !inputs_on_host {
            let detection = stats[4].time(|| infer_on_device(&mut work, &mut models, inference))?;
            if let Some(detection) = detection {
                stats[5].record(detection);
            }
            if out.send(work).is_err() {
                break;
            }
            continue;
        }
        if let (Some(model), Some(input)) = (models.pose.as_mut(), work.pose_input.take()) {
            let persons = work.boxes.len();
            let mut heatmaps = output_pool.get(0);
            stats[0].time(|| {
                run_pose(
                    model,
                    &input,
                    persons,
                    flip_test,
                    input_pool,
                    output_pool,
                    &mut heatmaps,
                )
            })?;
            if let Some(dumper) = dump {
                dump_tensors(dumper, index, Task::Pose, model.layout, &input, &heatmaps)?;
            }
            input_pool.put(input);
            work.heatmaps = Some(heatmaps);
        }
        if let Some(input) = work.dense_input.take() {
            let dense = [
                (Task::Seg, models.seg.as_mut(), &mut work.logits),
                (Task::Depth, models.depth.as_mut(), &mut work.depth),
                (Task::Normal, models.normal.as_mut(), &mut work.normals),
            ];
            for ((task, model, slot), stats) in dense.into_iter().zip(&mut stats[1..]) {
                let Some(model) = model else { continue };
                let mut output = output_pool.get(0);
                stats.time(|| run_batched(model, &input, 1, &mut output))?;
                if let Some(dumper) = dump {
                    dump_tensors(dumper, index, task, model.layout, &input, &output)?;
                }
                *slot = Some(output);
            }
            input_pool.put(input);
        }
        if out.send(work).is_err() {
            break;
        }
    }
    Ok((0, stats.into_iter().filter(|s| s.count() > 0).collect()))
}

/// A dense model for the GPU path, if it runs there.
fn dense_request(model: &mut Option<TaskModel>) -> Option<DenseRequest<'_>> {
    model.as_mut().and_then(|m| {
        let layout = m.layout;
        m.engine
            .device()
            .map(|engine| DenseRequest { engine, layout })
    })
}

/// Every model of a frame on the GPU, from the uploaded frame to peaks and a class map; the
/// time the GPU detector took, when it ran.
fn infer_on_device(
    work: &mut Work,
    models: &mut Models,
    inference: Inference,
) -> Result<Option<Duration>> {
    let crops: Vec<_> = work.boxes.iter().map(PersonBox::crop).collect();
    let pose = models.pose.as_mut().and_then(|m| {
        let (layout, max_batch) = (m.layout, m.max_batch);
        let flip_indices = inference
            .flip_test
            .then(|| keypoint_sets::keypoint_set(layout.channels))
            .flatten()
            .map(|set| &set.flip_indices[..]);
        m.engine.device().map(|engine| PoseRequest {
            engine,
            layout,
            max_batch,
            flip_indices,
            persons: match models.detector.as_mut() {
                Some(detector) => Persons::Detect(detector),
                None => Persons::Crops(&crops),
            },
        })
    });
    let request = FrameRequest {
        pose,
        seg: dense_request(&mut models.seg)
            .map(|seg| (seg, inference.seg_upsample == SegUpsample::Nearest)),
        depth: dense_request(&mut models.depth),
        normal: dense_request(&mut models.normal),
        dense_maps: inference.dense_maps,
        paint: inference.paint,
    };
    let device = models.device.as_mut().expect("called on the GPU path");
    let results = work
        .frame
        .with_host_frame(|frame| device.run(frame, request))?;
    work.peaks = models.pose.is_some().then_some(results.peaks);
    work.class_map = results.class_map;
    work.device_depth = results.depth;
    work.device_normals = results.normals;
    work.painted = results.painted;
    Ok(results.boxes.map(|(boxes, took)| {
        work.boxes = boxes;
        took
    }))
}

/// Pose for every person; with the flip test, also on the mirrored crops, merged back (SAPIENS.md).
fn run_pose(
    model: &mut TaskModel,
    input: &[f32],
    persons: usize,
    flip_test: bool,
    input_pool: &Pool,
    output_pool: &Pool,
    heatmaps: &mut Vec<f32>,
) -> Result<()> {
    run_batched(model, input, persons, heatmaps)?;
    if !flip_test || persons == 0 {
        return Ok(());
    }
    let flip_indices = &keypoint_sets::keypoint_set(model.layout.channels)
        .expect("validated pose models have a known keypoint set")
        .flip_indices;
    let mut mirrored_input = input_pool.get(persons * INPUT_LEN);
    flip::mirror_batch(
        input,
        persons,
        3,
        INPUT_HEIGHT,
        INPUT_WIDTH,
        &mut mirrored_input,
    );
    let mut mirrored = output_pool.get(0);
    run_batched(model, &mirrored_input, persons, &mut mirrored)?;
    let layout = model.layout;
    flip::merge_flipped_heatmaps(
        heatmaps,
        &mirrored,
        persons,
        flip_indices,
        layout.height,
        layout.width,
    );
    input_pool.put(mirrored_input);
    output_pool.put(mirrored);
    Ok(())
}

/// Runs `items` inputs through the model at most `max_batch` at a time, appending the outputs.
fn run_batched(
    model: &mut TaskModel,
    input: &[f32],
    items: usize,
    output: &mut Vec<f32>,
) -> Result<()> {
    output.clear();
    for (chunk_index, chunk) in input[..items * INPUT_LEN]
        .chunks(model.max_batch * INPUT_LEN)
        .enumerate()
    {
        let batch = chunk.len() / INPUT_LEN;
        model.metrics.batch_size(batch);
        let before = output.len();
        model.engine.run(chunk, batch, output)?;
        let expected = batch * model.layout.item_len();
        if output.len() - before != expected {
            return Err(Error::Inference {
                model: model.engine.info().id.clone(),
                message: format!(
                    "batch {chunk_index}: output has {} values, expected {expected}",
                    output.len() - before
                ),
            });
        }
    }
    Ok(())
}

fn dump_tensors(
    dumper: &Dumper,
    index: u64,
    task: Task,
    layout: OutputLayout,
    input: &[f32],
    output: &[f32],
) -> Result<()> {
    let items = output.len() / layout.item_len();
    dumper.tensor(
        index,
        task,
        "input",
        &[items, 3, INPUT_HEIGHT, INPUT_WIDTH],
        &input[..items * INPUT_LEN],
    )?;
    dumper.tensor(
        index,
        task,
        "output",
        &[items, layout.channels, layout.height, layout.width],
        output,
    )
}

struct PostOptions {
    threshold: f32,
    seg_upsample: SegUpsample,
    draw: bool,
    view: View,
    dense_dir: Option<PathBuf>,
    mask_classes: Vec<u8>,
}

/// Frame-size maps the post stage reuses from frame to frame.
#[derive(Default)]
struct DenseMaps {
    class_map: Vec<u8>,
    depth: Vec<f32>,
    depth_normalised: Vec<f32>,
    normals: Vec<f32>,
}

/// What the post stage made of one frame's outputs.
struct FrameOutputs {
    persons: Option<Vec<Person>>,
    segmentation: Option<SegmentationSummary>,
    depth: Option<DepthSummary>,
    normals: Option<NormalsSummary>,
}

fn post_stage(
    inferred: Receiver<Work>,
    out: Sender<Done>,
    summary: &ModelSummary,
    options: &PostOptions,
    pool: &Pool,
    frame_hub: Option<Arc<FrameHub>>,
    metrics: &Arc<Metrics>,
) -> StageOutcome {
    let mut stats: Vec<StageStats> = [
        "pose decode",
        "seg post",
        "dense post",
        "dense files",
        "render",
    ]
    .into_iter()
    .map(|name| StageStats::new(name).reporting_to(metrics))
    .collect();
    let mut peaks = Vec::new();
    let mut maps = DenseMaps::default();
    for mut work in inferred {
        let (width, height) = (work.frame.width(), work.frame.height());
        let persons = match (work.heatmaps.take(), work.peaks.take(), summary.pose_layout) {
            (Some(heatmaps), _, Some(layout)) => {
                let persons = stats[0]
                    .time(|| pose::decode_persons(&heatmaps, layout, &work.boxes, &mut peaks));
                pool.put(heatmaps);
                Some(persons)
            }
            (None, Some(decoded), Some(layout)) => {
                Some(pose::persons_from_peaks(&decoded, layout, &work.boxes))
            }
            _ => None,
        };
        let device_classes = work.class_map.take().map(|class_map| {
            maps.class_map = class_map;
            summarise_classes(&maps.class_map)
        });
        let segmentation = work
            .logits
            .take()
            .zip(summary.seg_layout)
            .map(|(logits, layout)| {
                let class_map = stats[1].time(|| {
                    class_map(
                        &logits,
                        layout,
                        width,
                        height,
                        options.seg_upsample,
                        &mut maps,
                    )
                });
                pool.put(logits);
                class_map
            })
            .or(device_classes);
        let foreground = segmentation.is_some();
        let depth = work
            .depth
            .take()
            .zip(summary.depth_layout)
            .map(|(raw, layout)| {
                let range =
                    stats[2].time(|| depth_map(&raw, layout, width, height, foreground, &mut maps));
                pool.put(raw);
                DepthSummary::new(range, foreground)
            })
            .or_else(|| {
                let result = work.device_depth.take()?;
                if let Some(map) = result.map {
                    maps.depth = map;
                }
                Some(DepthSummary::new(result.range, foreground))
            });
        let normals = work
            .normals
            .take()
            .zip(summary.normal_layout)
            .map(|(raw, layout)| {
                stats[2].time(|| normal_map(&raw, layout, width, height, &mut maps));
                pool.put(raw);
                NormalsSummary::default()
            })
            .or_else(|| {
                let result = work.device_normals.take()?;
                if let Some(map) = result.map {
                    maps.normals = map;
                }
                Some(NormalsSummary::default())
            });
        let mut outputs = FrameOutputs {
            persons,
            segmentation,
            depth,
            normals,
        };
        if let Some(dir) = &options.dense_dir {
            stats[3].time(|| {
                write_dense_files(dir, &work.frame, &maps, &options.mask_classes, &mut outputs)
            })?;
        }
        // Browsers draw the overlay themselves: they get the frame as decoded.
        if let Some(hub) = &frame_hub {
            work.frame
                .with_host_frame(|frame| hub.publish_frame(*frame));
        }
        if options.draw {
            let painted = work.painted.take();
            let view_drawn = painted.is_some();
            if let Some(painted) = painted {
                work.frame.replace_with_painted(painted);
            }
            stats[4].time(|| {
                draw(
                    &mut work.frame,
                    view_drawn,
                    &outputs,
                    &maps,
                    summary,
                    options,
                )
            })?;
        }
        let result = frame_result(&work.frame, summary, outputs);
        if out
            .send(Done {
                frame: work.frame,
                result,
            })
            .is_err()
        {
            break;
        }
    }
    Ok((0, stats.into_iter().filter(|s| s.count() > 0).collect()))
}

/// Logits to a frame-size class map in `maps.class_map`, summarised.
fn class_map(
    logits: &[f32],
    layout: OutputLayout,
    width: usize,
    height: usize,
    upsample: SegUpsample,
    maps: &mut DenseMaps,
) -> SegmentationSummary {
    maps.class_map.resize(width * height, 0);
    let (c, h, w) = (layout.channels, layout.height, layout.width);
    match upsample {
        SegUpsample::Bilinear => {
            seg::upsample_argmax(logits, c, h, w, width, height, &mut maps.class_map)
        }
        SegUpsample::Nearest => {
            seg::argmax_nearest(logits, c, h, w, width, height, &mut maps.class_map)
        }
    }
    summarise_classes(&maps.class_map)
}

fn summarise_classes(class_map: &[u8]) -> SegmentationSummary {
    let parts = keypoint_sets::body_parts();
    SegmentationSummary {
        class_set: parts.name.clone(),
        class_pixels: count_classes(class_map, parts.classes.len()),
        class_map_file: None,
        mask_file: None,
        mask: None,
    }
}

/// Depth at frame size, normalised over the person foreground when a class map exists.
fn depth_map(
    raw: &[f32],
    layout: OutputLayout,
    width: usize,
    height: usize,
    foreground: bool,
    maps: &mut DenseMaps,
) -> Option<dense::DepthRange> {
    maps.depth.resize(width * height, 0.0);
    maps.depth_normalised.resize(width * height, 0.0);
    dense::resize_planar(
        raw,
        1,
        layout.height,
        layout.width,
        width,
        height,
        &mut maps.depth,
    );
    let mask = foreground.then_some(&maps.class_map[..]);
    dense::normalise_depth(&maps.depth, mask, &mut maps.depth_normalised)
}

/// Surface normals at frame size, unit length.
fn normal_map(
    raw: &[f32],
    layout: OutputLayout,
    width: usize,
    height: usize,
    maps: &mut DenseMaps,
) {
    maps.normals.resize(3 * width * height, 0.0);
    dense::resize_planar(
        raw,
        3,
        layout.height,
        layout.width,
        width,
        height,
        &mut maps.normals,
    );
    dense::normalise_normals(&mut maps.normals);
}

/// `--dense-dir`: class map, depth, normals and mask as PNGs named after the frame.
fn write_dense_files(
    dir: &std::path::Path,
    frame: &Frame,
    maps: &DenseMaps,
    mask_classes: &[u8],
    outputs: &mut FrameOutputs,
) -> Result<()> {
    let (width, height) = (frame.width(), frame.height());
    let name = |kind: &str| dir.join(format!("frame_{:06}_{kind}.png", frame.index));
    let label = |path: &std::path::Path| path.display().to_string();
    if let Some(segmentation) = outputs.segmentation.as_mut() {
        let path = name("seg");
        dense::write_class_map_png(&path, &maps.class_map, width, height)?;
        segmentation.class_map_file = Some(label(&path));
        if !mask_classes.is_empty() {
            let mut mask = vec![0u8; width * height];
            dense::class_mask(&maps.class_map, mask_classes, &mut mask);
            let path = name("mask");
            dense::write_mask_png(&path, &mask, width, height)?;
            segmentation.mask_file = Some(label(&path));
        }
    }
    if let Some(depth) = outputs.depth.as_mut() {
        let path = name("depth");
        let encoding = dense::write_depth_png(&path, &maps.depth, width, height)?;
        depth.file = Some(label(&path));
        depth.encoding = Some(encoding);
    }
    if let Some(normals) = outputs.normals.as_mut() {
        let path = name("normal");
        dense::write_normals_png(&path, &maps.normals, width, height)?;
        normals.file = Some(label(&path));
    }
    Ok(())
}

fn count_classes(class_map: &[u8], classes: usize) -> Vec<u64> {
    let mut counts = vec![0u64; classes];
    for &class in class_map {
        if let Some(count) = counts.get_mut(class as usize) {
            *count += 1;
        }
    }
    counts
}

/// Draws the overlay: the chosen view (frame with class colours, depth or normals) unless the GPU
/// drew it already (`view_drawn`), then the skeletons.
fn draw(
    frame: &mut Frame,
    view_drawn: bool,
    outputs: &FrameOutputs,
    maps: &DenseMaps,
    summary: &ModelSummary,
    options: &PostOptions,
) -> Result<()> {
    if !frame.is_rgba() {
        return Err(Error::Render(format!(
            "frame {} came back from the GPU undrawn, as {:?}",
            frame.index, frame.geometry.layout
        )));
    }
    let (width, height, stride) = (frame.width(), frame.height(), frame.geometry.stride);
    let foreground = outputs
        .segmentation
        .is_some()
        .then_some(&maps.class_map[..]);
    frame.with_pixels_mut(|pixels| {
        let pixels_of_frame = width * height;
        match options.view {
            _ if view_drawn => {}
            View::Depth
                if outputs.depth.is_some() && maps.depth_normalised.len() == pixels_of_frame =>
            {
                dense::draw_depth(
                    pixels,
                    width,
                    height,
                    stride,
                    &maps.depth_normalised,
                    foreground,
                )
            }
            View::Normal
                if outputs.normals.is_some() && maps.normals.len() == 3 * pixels_of_frame =>
            {
                dense::draw_normals(pixels, width, height, stride, &maps.normals, foreground)
            }
            _ => {
                if let Some(class_map) = foreground {
                    render::blend_class_map(
                        pixels,
                        width,
                        height,
                        stride,
                        class_map,
                        &keypoint_sets::body_parts().palette,
                        0.5,
                    );
                }
            }
        }
        if let (Some(persons), Some(set)) = (outputs.persons.as_deref(), summary.keypoint_set) {
            let style = PoseStyle {
                skeleton: &set.skeleton,
                link_colors: &set.link_colors,
                keypoint_colors: &set.keypoint_colors,
                threshold: options.threshold,
                radius: 4.0,
                thickness: 2.0,
            }
            .scaled_for(width, height);
            let keypoints: Vec<&[[f32; 3]]> =
                persons.iter().map(|p| p.keypoints.as_slice()).collect();
            render::draw_pose(pixels, width, height, stride, &keypoints, &style)
                .map_err(|e| Error::Render(e.to_string()))?;
        }
        Ok(())
    })
}

fn frame_result(frame: &Frame, summary: &ModelSummary, outputs: FrameOutputs) -> FrameResult {
    let FrameOutputs {
        persons,
        segmentation,
        depth,
        normals,
    } = outputs;
    FrameResult {
        schema: SCHEMA_NAME,
        version: SCHEMA_VERSION,
        stream: frame.stream_id,
        frame: frame.index,
        pts_ns: frame.pts_ns,
        capture_unix_ns: frame
            .capture_time
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64),
        width: frame.width(),
        height: frame.height(),
        models: summary.ids.clone(),
        random_weights: summary.random_weights,
        keypoint_set: persons
            .as_ref()
            .and(summary.keypoint_set)
            .map(|s| s.name.clone()),
        persons,
        segmentation,
        depth,
        normals,
    }
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
