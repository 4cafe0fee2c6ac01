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
use std::time::{Instant, UNIX_EPOCH};

use crossbeam_channel::{Receiver, Sender, TrySendError, bounded};

use crate::engine::onnx::{OnnxEngine, OnnxOptions};
use crate::engine::probe::Capabilities;
use crate::engine::{Engine, ExecutionChoice, runtime};
use crate::error::{Error, Result};
use crate::frame::Frame;
use crate::metrics::{RunReport, StageStats};
use crate::preprocess::{Normalization, StretchPlan};
use crate::publish::{FrameResult, ResultsWriter, SCHEMA_NAME, SCHEMA_VERSION, SegmentationSummary};
use crate::render::{self, PoseStyle};
use crate::sink::{Dumper, VideoSink, VideoSinkOptions};
use crate::source::{self, FrameSource, InputSpec, SourceOptions};
use crate::tasks::keypoint_sets::{self, KeypointSet};
use crate::tasks::pose::{self, Person, PersonBox};
use crate::tasks::{INPUT_HEIGHT, INPUT_LEN, INPUT_WIDTH, OutputLayout, Task, seg, validate_model};

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

#[derive(Clone, Debug)]
pub struct PipelineConfig {
    pub input: InputSpec,
    pub scheduling: Scheduling,
    /// Set (by a signal handler) to stop taking frames; frames in flight are finished and every
    /// output is flushed and finalised.
    pub stop: Arc<AtomicBool>,
    pub models: ModelPaths,
    /// Overlay video file; `None` writes no video.
    pub output: Option<PathBuf>,
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
}

/// Everything the post-processing needs to know about the models, shared with the sink.
struct ModelSummary {
    ids: std::collections::BTreeMap<&'static str, String>,
    random_weights: bool,
    keypoint_set: Option<&'static KeypointSet>,
    pose_layout: Option<OutputLayout>,
    seg_layout: Option<OutputLayout>,
}

/// A frame on its way through the stages, gathering its tensors.
struct Work {
    frame: Frame,
    boxes: Vec<PersonBox>,
    pose_input: Option<Vec<f32>>,
    dense_input: Option<Vec<f32>>,
    heatmaps: Option<Vec<f32>>,
    logits: Option<Vec<f32>>,
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
    send: Sender<T>,
    /// The sender's own view of the queue, to take out the stale item; `None` when blocking.
    stale: Option<Receiver<T>>,
    dropped: Arc<AtomicU64>,
}

impl<T> Handoff<T> {
    fn blocking(capacity: usize, dropped: Arc<AtomicU64>) -> (Self, Receiver<T>) {
        let (send, receive) = bounded(capacity);
        (Handoff { send, stale: None, dropped }, receive)
    }

    fn latest_wins(dropped: Arc<AtomicU64>) -> (Self, Receiver<T>) {
        let (send, receive) = bounded(1);
        let stale = Some(receive.clone());
        (Handoff { send, stale, dropped }, receive)
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
                    }
                    item = back;
                }
            }
        }
    }
}

/// Live: the decoder's newest frame waits for preprocessing, which hands over only when inference
/// is free (a rendezvous), so a frame waits at most one inference. Offline: backpressure throughout.
fn stage_links(scheduling: Scheduling, dropped: &Arc<AtomicU64>) -> ((Handoff<Frame>, Receiver<Frame>), (Handoff<Work>, Receiver<Work>)) {
    match scheduling {
        Scheduling::Live => (Handoff::latest_wins(dropped.clone()), Handoff::blocking(0, dropped.clone())),
        Scheduling::Offline => (
            Handoff::blocking(CHANNEL_DEPTH, dropped.clone()),
            Handoff::blocking(CHANNEL_DEPTH, dropped.clone()),
        ),
    }
}

/// Runs the whole job and reports what it did.
pub fn run(config: &PipelineConfig) -> Result<RunReport> {
    check_outputs(config)?;
    let (pose_model, seg_model) = load_models(config)?;
    let summary = summarize(&pose_model, &seg_model);
    if summary.random_weights {
        tracing::warn!("a model has random weights (generated for tests): its outputs are not real results");
    }
    let source = source::open(&config.input, &config.source)?;
    let info = source.info().clone();
    let video = match &config.output {
        Some(path) => Some(VideoSink::open(&VideoSinkOptions {
            path: path.clone(),
            width: info.width,
            height: info.height,
            framerate: info.framerate,
            banner: summary.random_weights.then(|| RANDOM_WEIGHTS_BANNER.to_owned()),
        })?),
        None => None,
    };
    let results = config.results.as_deref().map(ResultsWriter::create).transpose()?;
    let dumper = config.dump.as_ref().map(|(dir, n)| Dumper::create(dir, *n)).transpose()?;
    let progress = progress_bar(config, info.expected_frames);
    let started = Instant::now();

    let dropped = Arc::new(AtomicU64::new(0));
    let ((frames_tx, frames_rx), (prepared_tx, prepared_rx)) = stage_links(config.scheduling, &dropped);
    let (inferred_tx, inferred_rx) = bounded(CHANNEL_DEPTH);
    let (done_tx, done_rx) = bounded(CHANNEL_DEPTH);
    let input_pool = Pool::new(2 * CHANNEL_DEPTH + 2);
    let output_pool = Pool::new(2 * CHANNEL_DEPTH + 2);
    let stretch = StretchPlan::new(info.width, info.height, INPUT_WIDTH, INPUT_HEIGHT);
    let needs_dense = seg_model.is_some();
    let needs_pose = pose_model.is_some();
    let draw = video.is_some();
    let max_frames = config.max_frames;
    let stop = &config.stop;

    thread::scope(|scope| {
        let source_thread = scope.spawn(move || source_stage(source, max_frames, stop, frames_tx));
        let pool = input_pool.clone();
        let preprocess_thread =
            scope.spawn(move || preprocess_stage(frames_rx, prepared_tx, &pool, &stretch, needs_pose, needs_dense));
        let (in_pool, out_pool) = (input_pool.clone(), output_pool.clone());
        let dumper = dumper.as_ref();
        let max_batch = config.max_batch.max(1);
        let inference_thread = scope.spawn(move || {
            inference_stage(prepared_rx, inferred_tx, pose_model, seg_model, max_batch, &in_pool, &out_pool, dumper)
        });
        let summary = &summary;
        let post = PostOptions {
            threshold: config.keypoint_threshold,
            seg_upsample: config.seg_upsample,
            draw,
        };
        let pool = output_pool.clone();
        let post_thread = scope.spawn(move || post_stage(inferred_rx, done_tx, summary, &post, &pool));
        let sink_result = sink_stage(done_rx, video, results, progress.as_ref());
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

fn join(handle: thread::ScopedJoinHandle<'_, StageOutcome>) -> StageOutcome {
    handle
        .join()
        .unwrap_or_else(|_| Err(Error::Gstreamer("a pipeline stage panicked".into())))
}

fn check_outputs(config: &PipelineConfig) -> Result<()> {
    let targets = [config.output.as_ref(), config.results.as_ref()];
    for path in targets.into_iter().flatten().filter(|p| p.as_os_str() != "-") {
        let parent = path.parent().filter(|p| !p.as_os_str().is_empty());
        if parent.is_some_and(|p| !p.is_dir()) {
            return Err(Error::Output {
                path: path.clone(),
                message: "its folder does not exist".into(),
            });
        }
    }
    if config.models.depth.is_some() || config.models.normal.is_some() {
        return Err(Error::InputInvalid {
            input: "--depth-model/--normal-model".into(),
            reason: "depth and surface-normal models are not supported yet".into(),
        });
    }
    if config.models.pose.is_none() && config.models.seg.is_none() {
        return Err(Error::InputInvalid {
            input: "models".into(),
            reason: "give at least one of --pose-model, --seg-model".into(),
        });
    }
    Ok(())
}

fn load_models(config: &PipelineConfig) -> Result<(Option<TaskModel>, Option<TaskModel>)> {
    let environment = runtime::environment(config.ort_lib.as_deref())?;
    let selection = crate::engine::select(config.execution, || Capabilities::probe(config.ort_lib.as_deref()))?;
    tracing::info!("{}", selection.describe(config.execution));
    let load = |task: Task, path: &Option<PathBuf>| -> Result<Option<TaskModel>> {
        let Some(path) = path else { return Ok(None) };
        let options = OnnxOptions {
            threads: config.threads,
            execution: selection.execution,
            // Dense tasks run one frame at a time.
            max_batch: if task == Task::Pose { config.max_batch } else { 1 },
            ..OnnxOptions::default()
        };
        let engine = OnnxEngine::load(path, environment, &options)?;
        let layout = validate_model(task, engine.info())?;
        tracing::info!(task = task.name(), model = %path.display(), provider = %engine.info().provider, "model loaded");
        Ok(Some(TaskModel {
            engine: Box::new(engine),
            layout,
        }))
    };
    Ok((load(Task::Pose, &config.models.pose)?, load(Task::Seg, &config.models.seg)?))
}

fn summarize(pose: &Option<TaskModel>, seg: &Option<TaskModel>) -> ModelSummary {
    let mut ids = std::collections::BTreeMap::new();
    let mut random_weights = false;
    for (task, model) in [(Task::Pose, pose), (Task::Seg, seg)] {
        if let Some(model) = model {
            ids.insert(task.name(), model.engine.info().id.clone());
            random_weights |= model.engine.info().has_random_weights();
        }
    }
    ModelSummary {
        ids,
        random_weights,
        keypoint_set: pose.as_ref().and_then(|m| keypoint_sets::keypoint_set(m.layout.channels)),
        pose_layout: pose.as_ref().map(|m| m.layout),
        seg_layout: seg.as_ref().map(|m| m.layout),
    }
}

fn progress_bar(config: &PipelineConfig, expected: Option<u64>) -> Option<indicatif::ProgressBar> {
    if !config.progress || !std::io::stderr().is_terminal() {
        return None;
    }
    let total = config.max_frames.map_or(expected, |m| Some(expected.map_or(m, |e| e.min(m))));
    let bar = total.map_or_else(indicatif::ProgressBar::no_length, indicatif::ProgressBar::new);
    let template = "{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} frames {per_sec} ETA {eta}";
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
) -> StageOutcome {
    let mut stats = StageStats::new("decode");
    let mut count = 0;
    while max_frames.is_none_or(|m| count < m) && !stop.load(Ordering::Relaxed) {
        let start = Instant::now();
        let Some(frame) = source.next_frame()? else { break };
        stats.record(start.elapsed());
        count += 1;
        if !out.send(frame) {
            break;
        }
    }
    Ok((count, vec![stats]))
}

fn preprocess_stage(
    frames: Receiver<Frame>,
    out: Handoff<Work>,
    pool: &Pool,
    stretch: &StretchPlan,
    needs_pose: bool,
    needs_dense: bool,
) -> StageOutcome {
    let mut stats = StageStats::new("preprocess");
    let norm = Normalization::SAPIENS;
    for frame in frames {
        let work = stats.time(|| {
            let boxes = vec![PersonBox::whole_frame(frame.width, frame.height)];
            let pose_input = needs_pose.then(|| {
                let mut input = pool.get(boxes.len() * INPUT_LEN);
                frame.with_view(|view| pose::prepare_crops(view, &boxes, &mut input, &norm));
                input
            });
            let dense_input = needs_dense.then(|| {
                let mut input = pool.get(INPUT_LEN);
                frame.with_view(|view| stretch.run(view, &mut input, &norm));
                input
            });
            Work {
                frame,
                boxes,
                pose_input,
                dense_input,
                heatmaps: None,
                logits: None,
            }
        });
        if !out.send(work) {
            break;
        }
    }
    Ok((0, vec![stats]))
}

#[allow(clippy::too_many_arguments)]
fn inference_stage(
    prepared: Receiver<Work>,
    out: Sender<Work>,
    mut pose_model: Option<TaskModel>,
    mut seg_model: Option<TaskModel>,
    max_batch: usize,
    input_pool: &Pool,
    output_pool: &Pool,
    dumper: Option<&Dumper>,
) -> StageOutcome {
    let mut pose_stats = StageStats::new("pose infer");
    let mut seg_stats = StageStats::new("seg infer");
    for mut work in prepared {
        let dump = dumper.filter(|d| d.wants(work.frame.index));
        if let Some(dumper) = dump {
            dumper.frame_png(&work.frame)?;
        }
        if let (Some(model), Some(input)) = (pose_model.as_mut(), work.pose_input.take()) {
            let mut heatmaps = output_pool.get(0);
            pose_stats.time(|| run_batched(model, &input, work.boxes.len(), max_batch, &mut heatmaps))?;
            if let Some(dumper) = dump {
                dump_tensors(dumper, &work, Task::Pose, model.layout, &input, &heatmaps)?;
            }
            input_pool.put(input);
            work.heatmaps = Some(heatmaps);
        }
        if let (Some(model), Some(input)) = (seg_model.as_mut(), work.dense_input.take()) {
            let mut logits = output_pool.get(0);
            seg_stats.time(|| run_batched(model, &input, 1, 1, &mut logits))?;
            if let Some(dumper) = dump {
                dump_tensors(dumper, &work, Task::Seg, model.layout, &input, &logits)?;
            }
            input_pool.put(input);
            work.logits = Some(logits);
        }
        if out.send(work).is_err() {
            break;
        }
    }
    let stats = [pose_stats, seg_stats].into_iter().filter(|s| s.count() > 0).collect();
    Ok((0, stats))
}

/// Runs `items` inputs through the model at most `max_batch` at a time, appending the outputs.
fn run_batched(model: &mut TaskModel, input: &[f32], items: usize, max_batch: usize, output: &mut Vec<f32>) -> Result<()> {
    output.clear();
    for (chunk_index, chunk) in input[..items * INPUT_LEN].chunks(max_batch * INPUT_LEN).enumerate() {
        let batch = chunk.len() / INPUT_LEN;
        let before = output.len();
        model.engine.run(chunk, batch, output)?;
        let expected = batch * model.layout.item_len();
        if output.len() - before != expected {
            return Err(Error::Inference {
                model: model.engine.info().id.clone(),
                message: format!("batch {chunk_index}: output has {} values, expected {expected}", output.len() - before),
            });
        }
    }
    Ok(())
}

fn dump_tensors(dumper: &Dumper, work: &Work, task: Task, layout: OutputLayout, input: &[f32], output: &[f32]) -> Result<()> {
    let items = output.len() / layout.item_len();
    let index = work.frame.index;
    dumper.tensor(index, task, "input", &[items, 3, INPUT_HEIGHT, INPUT_WIDTH], &input[..items * INPUT_LEN])?;
    dumper.tensor(index, task, "output", &[items, layout.channels, layout.height, layout.width], output)
}

struct PostOptions {
    threshold: f32,
    seg_upsample: SegUpsample,
    draw: bool,
}

fn post_stage(
    inferred: Receiver<Work>,
    out: Sender<Done>,
    summary: &ModelSummary,
    options: &PostOptions,
    pool: &Pool,
) -> StageOutcome {
    let mut decode_stats = StageStats::new("pose decode");
    let mut seg_stats = StageStats::new("seg post");
    let mut render_stats = StageStats::new("render");
    let mut peaks = Vec::new();
    let mut class_map = Vec::new();
    let parts = keypoint_sets::body_parts();
    for mut work in inferred {
        let (width, height) = (work.frame.width, work.frame.height);
        let persons = match (work.heatmaps.take(), summary.pose_layout) {
            (Some(heatmaps), Some(layout)) => {
                let persons = decode_stats.time(|| pose::decode_persons(&heatmaps, layout, &work.boxes, &mut peaks));
                pool.put(heatmaps);
                Some(persons)
            }
            _ => None,
        };
        let segmentation = work.logits.take().zip(summary.seg_layout).map(|(logits, layout)| {
            class_map.resize(width * height, 0);
            let (c, h, w) = (layout.channels, layout.height, layout.width);
            seg_stats.time(|| match options.seg_upsample {
                SegUpsample::Bilinear => seg::upsample_argmax(&logits, c, h, w, width, height, &mut class_map),
                SegUpsample::Nearest => seg::argmax_nearest(&logits, c, h, w, width, height, &mut class_map),
            });
            pool.put(logits);
            SegmentationSummary {
                class_set: parts.name.clone(),
                class_pixels: count_classes(&class_map, parts.classes.len()),
            }
        });
        if options.draw {
            render_stats.time(|| draw(&mut work.frame, persons.as_deref(), segmentation.is_some().then_some(&class_map[..]), summary, options))?;
        }
        let result = frame_result(&work.frame, summary, persons, segmentation);
        if out.send(Done { frame: work.frame, result }).is_err() {
            break;
        }
    }
    let stats = [decode_stats, seg_stats, render_stats].into_iter().filter(|s| s.count() > 0).collect();
    Ok((0, stats))
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

fn draw(frame: &mut Frame, persons: Option<&[Person]>, class_map: Option<&[u8]>, summary: &ModelSummary, options: &PostOptions) -> Result<()> {
    let (width, height, stride) = (frame.width, frame.height, frame.stride);
    frame.with_pixels_mut(|pixels| {
        if let Some(class_map) = class_map {
            render::blend_class_map(pixels, width, height, stride, class_map, &keypoint_sets::body_parts().palette, 0.5);
        }
        if let (Some(persons), Some(set)) = (persons, summary.keypoint_set) {
            let style = PoseStyle {
                skeleton: &set.skeleton,
                link_colors: &set.link_colors,
                keypoint_colors: &set.keypoint_colors,
                threshold: options.threshold,
                radius: 4.0,
                thickness: 2.0,
            }
            .scaled_for(width, height);
            let keypoints: Vec<&[[f32; 3]]> = persons.iter().map(|p| p.keypoints.as_slice()).collect();
            render::draw_pose(pixels, width, height, stride, &keypoints, &style).map_err(|e| Error::Render(e.to_string()))?;
        }
        Ok(())
    })
}

fn frame_result(frame: &Frame, summary: &ModelSummary, persons: Option<Vec<Person>>, segmentation: Option<SegmentationSummary>) -> FrameResult {
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
        width: frame.width,
        height: frame.height,
        models: summary.ids.clone(),
        random_weights: summary.random_weights,
        keypoint_set: persons.as_ref().and(summary.keypoint_set).map(|s| s.name.clone()),
        persons,
        segmentation,
    }
}

fn sink_stage(
    done: Receiver<Done>,
    mut video: Option<VideoSink>,
    mut results: Option<ResultsWriter>,
    progress: Option<&indicatif::ProgressBar>,
) -> StageOutcome {
    let mut stats = StageStats::new("sink");
    let mut latency = StageStats::new(CAPTURE_TO_PUBLISH);
    let mut count = 0;
    for Done { frame, result } in done {
        let start = Instant::now();
        let captured = frame.capture_time;
        if let Some(results) = results.as_mut() {
            results.write(&result)?;
        }
        if let Some(video) = video.as_mut() {
            video.push(frame)?;
        }
        stats.record(start.elapsed());
        latency.record(captured.elapsed().unwrap_or_default());
        count += 1;
        if let Some(bar) = progress {
            bar.inc(1);
        }
    }
    if let Some(bar) = progress {
        bar.finish_and_clear();
    }
    if let Some(results) = results {
        results.finish()?;
    }
    if let Some(video) = video {
        video.finish()?;
    }
    Ok((count, vec![stats, latency]))
}
