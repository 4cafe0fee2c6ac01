//! One stream of a run: its source, its own outputs and the threads that are its alone
//! (decode, preprocess, post, deliver). Between preprocess and post its frames go through the
//! inference stage every stream shares, joined through a [`StreamPort`].

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::{self, JoinHandle};

use crossbeam_channel::{Sender, TrySendError, bounded};

use super::config::{PipelineConfig, Scheduling, StreamSpec};
use super::decode::{StageOutcome, decode_stage, join_stage};
use super::deliver::{Delivering, SharedPublishers, StreamPublishers, deliver_stage};
use super::links::{CHANNEL_DEPTH, Drops, Pool, StreamPort, stage_links};
use super::models::{DenseInputs, ModelSummary, PersonFinder};
use super::post::{PostOptions, post_stage};
use super::prepare::{Preparation, preprocess_stage};
use super::track_crops::{TrackCrops, TrackFeedback};
use crate::error::{Error, Result};
use crate::metrics::{Metrics, StageStats};
use crate::preprocess::StretchPlan;
use crate::preprocess::letterbox::{LetterboxInput, SAPIENS2_PADDING};
use crate::publish::frame_hub::FrameHubs;
use crate::publish::{Publisher, ResultsWriter, StreamId, StreamStatusMessage};
use crate::sink::{VideoOutput, VideoSinkOptions};
use crate::source::{self, SourceOptions, StatusListener, StopSignal, StreamStatus};
use crate::tasks::{INPUT_HEIGHT, INPUT_WIDTH};

/// Status changes queued for the deliver thread: a few per outage, the backoff spaces them.
const STATUS_QUEUE: usize = 64;

/// What every stream of a run shares; each stream starts from it.
pub(super) struct RunShared {
    pub(super) config: PipelineConfig,
    pub(super) metrics: Arc<Metrics>,
    pub(super) summary: ModelSummary,
    /// `None` when no pose model runs.
    pub(super) persons: Option<PersonFinder>,
    /// Frames stay as decoded (NV12/I420).
    pub(super) yuv_frames: bool,
    /// The GPU makes the model inputs from the frame itself.
    pub(super) inputs_on_device: bool,
    pub(super) dense_inputs: DenseInputs,
    pub(super) publishers: SharedPublishers,
    pub(super) frame_hubs: Option<Arc<FrameHubs>>,
    pub(super) post: PostOptions,
    pub(super) progress: Option<indicatif::ProgressBar>,
}

/// What a stream has done so far, for `/streams`.
#[derive(Default)]
pub(super) struct StreamCounters {
    pub(super) up: AtomicBool,
    pub(super) frames: AtomicU64,
    pub(super) dropped: Arc<AtomicU64>,
}

/// A running stream.
pub(super) struct StreamHandle {
    pub(super) id: StreamId,
    /// The input as listed.
    pub(super) input: String,
    pub(super) counters: Arc<StreamCounters>,
    pub(super) expected_frames: Option<u64>,
    stop: Arc<AtomicBool>,
    /// Decode, preprocess, post, deliver.
    threads: Vec<JoinHandle<StageOutcome>>,
}

/// What a stream did, once its threads are over.
pub(super) struct StreamOutcome {
    pub(super) name: String,
    pub(super) frames_in: u64,
    pub(super) frames_out: u64,
    pub(super) dropped: u64,
    pub(super) stages: Vec<StageStats>,
    pub(super) error: Option<Error>,
}

impl StreamHandle {
    /// Opens the stream's source (waiting for its first frame) and outputs, joins it to the
    /// inference stage and starts its threads.
    pub(super) fn start(
        shared: &Arc<RunShared>,
        spec: &StreamSpec,
        index: u32,
        joining: &Sender<StreamPort>,
    ) -> Result<Self> {
        let (config, metrics) = (&shared.config, &shared.metrics);
        let id = StreamId::new(index, &spec.name);
        metrics.name_stream(index, &spec.name);
        let counters = Arc::new(StreamCounters::default());
        let stop = Arc::new(AtomicBool::new(false));
        // The run's stop reaches a stream still opening, before the run waits on its streams.
        let stop_signal = StopSignal::new(config.stop.clone()).or(stop.clone());
        let (status_tx, statuses) = bounded(STATUS_QUEUE);
        let mut reconnect = config.source.reconnect.clone();
        reconnect.policy = spec.reconnect.unwrap_or(reconnect.policy);
        let source_options = SourceOptions {
            stream_id: index,
            stop: stop_signal.clone(),
            status: Some(status_listener(&id, metrics, &counters, status_tx)),
            yuv_frames: shared.yuv_frames,
            real_time: spec.scheduling == Scheduling::Live,
            reconnect,
            ..config.source.clone()
        };
        let source = source::open(&spec.input, &source_options)?;
        metrics.stream_up(index, true);
        counters.up.store(true, Ordering::Relaxed);
        let info = source.info().clone();
        let video_options = VideoSinkOptions {
            width: info.width,
            height: info.height,
            preset: config.video_preset,
        };
        let videos = config
            .outputs_of(spec)
            .iter()
            .map(|output| VideoOutput::open(output, &video_options))
            .collect::<Result<Vec<_>>>()?;
        let own: Vec<Box<dyn Publisher>> = match config.results_of(&spec.name) {
            Some(path) => vec![Box::new(ResultsWriter::create(&path)?)],
            None => Vec::new(),
        };
        let post = PostOptions {
            draw: !videos.is_empty(),
            dense_dir: dense_dir(config, &spec.name)?,
            frame_hub: shared.frame_hubs.as_ref().map(|hubs| hubs.hub(&spec.name)),
            ..shared.post.clone()
        };

        let drops = Drops {
            stream: index,
            dropped: counters.dropped.clone(),
            metrics: metrics.clone(),
        };
        let ((frames_tx, frames_rx), (prepared_tx, prepared_rx)) =
            stage_links(spec.scheduling, &drops);
        let (inferred_tx, inferred_rx) = bounded(CHANNEL_DEPTH);
        let (done_tx, done_rx) = bounded(CHANNEL_DEPTH);
        let (input_pool, output_pool) = (Pool::new(POOLED), Pool::new(POOLED));
        let persons = shared.persons.clone();
        let (track_crops, feedback) = track_crops(config, spec.scheduling, &persons);
        let preparation = Preparation {
            metrics: metrics.clone(),
            pool: input_pool.clone(),
            stretch: StretchPlan::new(info.width, info.height, INPUT_WIDTH, INPUT_HEIGHT),
            persons,
            track_crops,
            dense: shared.dense_inputs,
            padding: shared
                .dense_inputs
                .padded
                .then(|| LetterboxInput::new(SAPIENS2_PADDING, INPUT_WIDTH, INPUT_HEIGHT)),
            inputs_on_device: shared.inputs_on_device,
            dumped_frames: config.dump.as_ref().map_or(0, |(_, frames)| *frames),
        };
        joining
            .send(StreamPort {
                prepared: prepared_rx,
                inferred: inferred_tx,
                input_pool,
                output_pool: output_pool.clone(),
                drops: drops.clone(),
            })
            .map_err(|_| run_ending(&spec.name))?;

        let name = &spec.name;
        let max_frames = config.max_frames;
        let mut threads = Vec::new();
        let (source_stop, decode_metrics) = (stop_signal, metrics.clone());
        threads.push(spawn(name, "decode", move || {
            decode_stage(source, max_frames, &source_stop, frames_tx, &decode_metrics)
        })?);
        threads.push(spawn(name, "prepare", move || {
            preprocess_stage(frames_rx, prepared_tx, preparation)
        })?);
        let (post_shared, post_id) = (shared.clone(), id.clone());
        threads.push(spawn(name, "post", move || {
            let links = (inferred_rx, done_tx);
            post_stage(
                links,
                &post_id,
                &post_shared,
                (&post, &output_pool),
                feedback,
            )
        })?);
        let (deliver_shared, deliver_id) = (shared.clone(), id.clone());
        let deliver_counters = counters.clone();
        threads.push(spawn(name, "deliver", move || {
            let shared = &deliver_shared;
            let delivering = Delivering {
                stream: &deliver_id,
                videos,
                publishers: StreamPublishers {
                    own,
                    shared: shared.publishers.clone(),
                },
                progress: shared.progress.as_ref(),
                metrics: &shared.metrics,
                frames: &deliver_counters.frames,
            };
            deliver_stage((done_rx, statuses), delivering)
        })?);
        Ok(StreamHandle {
            id,
            input: source::describe(&spec.input),
            counters,
            expected_frames: info.expected_frames,
            stop,
            threads,
        })
    }

    /// Asks the stream to stop taking frames; the frames in flight are finished.
    pub(super) fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }

    /// True once every thread of the stream is over.
    pub(super) fn is_finished(&self) -> bool {
        self.threads.iter().all(JoinHandle::is_finished)
    }

    /// Waits for the stream's threads; what it did, and its first error.
    pub(super) fn join(self) -> StreamOutcome {
        let mut outcome = StreamOutcome {
            name: self.id.name.clone(),
            frames_in: 0,
            frames_out: 0,
            dropped: self.counters.dropped.load(Ordering::Relaxed),
            stages: Vec::new(),
            error: None,
        };
        let last = self.threads.len() - 1;
        for (position, thread) in self.threads.into_iter().enumerate() {
            match join_stage(thread) {
                Ok((frames, stages)) => {
                    match position {
                        0 => outcome.frames_in = frames,
                        p if p == last => outcome.frames_out = frames,
                        _ => {}
                    }
                    outcome.stages.extend(stages);
                }
                Err(error) => {
                    outcome.error.get_or_insert(error);
                }
            }
        }
        outcome
    }
}

/// Why a stream cannot start once the run's inference stage is gone.
pub(super) fn run_ending(name: &str) -> Error {
    Error::InputInvalid {
        input: name.into(),
        reason: "the run is ending: no stream can start".into(),
    }
}

/// Buffers kept per stream and pool: what can be in flight between its stages.
const POOLED: usize = 2 * CHANNEL_DEPTH + 2;

fn spawn(
    stream: &str,
    stage: &str,
    run: impl FnOnce() -> StageOutcome + Send + 'static,
) -> Result<JoinHandle<StageOutcome>> {
    thread::Builder::new()
        .name(format!("{stream}-{stage}"))
        .spawn(run)
        .map_err(|e| Error::io(format!("starting stream {stream}'s {stage} thread"), e))
}

/// `--dense-dir`, in a folder per stream when a run has several.
fn dense_dir(config: &PipelineConfig, name: &str) -> Result<Option<PathBuf>> {
    let Some(dir) = &config.dense_dir else {
        return Ok(None);
    };
    if !config.splits_per_stream() {
        return Ok(Some(dir.clone()));
    }
    let dir = dir.join(name);
    std::fs::create_dir_all(&dir)
        .map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
    Ok(Some(dir))
}

/// The two ends of `--detect-every`'s loop, when it applies: tracking on, a detector on the
/// host (a detector on the GPU runs on every frame).
fn track_crops(
    config: &PipelineConfig,
    scheduling: Scheduling,
    persons: &Option<PersonFinder>,
) -> (Option<TrackCrops>, Option<TrackFeedback>) {
    let detector_on_host = matches!(persons, Some(PersonFinder::Detector(_)));
    match config.detect_every {
        Some(every) if every > 1 && detector_on_host && config.tracking.is_some() => {
            let wait = scheduling == Scheduling::Offline;
            let (crops, feedback) = TrackCrops::new(every, wait);
            (Some(crops), Some(feedback))
        }
        _ => (None, None),
    }
}

/// Hears the source's status changes on its own thread: counts them in the metrics and queues
/// the message for the deliver thread, never waiting (a full queue drops the change and says so).
fn status_listener(
    id: &StreamId,
    metrics: &Arc<Metrics>,
    counters: &Arc<StreamCounters>,
    queue: Sender<StreamStatusMessage>,
) -> StatusListener {
    let reconnects = AtomicU64::new(0);
    let (id, metrics, counters) = (id.clone(), metrics.clone(), counters.clone());
    StatusListener::new(move |stream, status| {
        let now = std::time::SystemTime::now();
        let message = match status {
            StreamStatus::Down { reason } => {
                metrics.stream_up(stream, false);
                counters.up.store(false, Ordering::Relaxed);
                let reconnects = reconnects.load(Ordering::Relaxed);
                StreamStatusMessage::down(&id, reason, reconnects, now)
            }
            StreamStatus::Up => {
                metrics.stream_up(stream, true);
                counters.up.store(true, Ordering::Relaxed);
                metrics.reconnect(stream);
                let reconnects = reconnects.fetch_add(1, Ordering::Relaxed) + 1;
                StreamStatusMessage::up(&id, reconnects, now)
            }
        };
        // Disconnected: the stream is over and nothing publishes any more.
        if let Err(TrySendError::Full(_)) = queue.try_send(message) {
            tracing::warn!(
                "stream {}: status change not published: the queue is full",
                id.name
            );
        }
    })
}
