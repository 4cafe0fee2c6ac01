//! The second phase of a run: the shared inference stage on its thread, each stream on its own
//! threads (see `stream`), until every stream has ended or the run is stopped; then every output
//! is finished and the run reported.

use std::sync::{Arc, Mutex, PoisonError};
use std::thread;
use std::time::Instant;

use crossbeam_channel::unbounded;

use super::build::Started;
use super::config::PipelineConfig;
use super::decode::join_stage;
use super::deliver::CAPTURE_TO_PUBLISH;
use super::infer::{Batching, Inference, inference_stage, paint_for};
use super::models::ModelSummary;
use super::post::PostOptions;
use super::stream::{RunShared, StreamOutcome};
use super::streams::Streams;
use crate::error::{Error, Result};
use crate::metrics::{ModelCalls, RunReport, StageStats, StreamReport};
use crate::tasks::dense;
use crate::tasks::keypoint_sets::class_set;

impl Started<'_> {
    /// Starts the inference stage and the streams, waits for them, finishes the outputs.
    pub(super) fn run(self) -> Result<RunReport> {
        let Started {
            config,
            metrics,
            models,
            summary,
            persons,
            yuv_frames,
            publishers,
            server,
            dumper,
            progress,
        } = self;
        let started = Instant::now();
        let (inference, post) = frame_options(config, &summary)?;
        let batching = Batching {
            max_batch: models.batch,
            timeout: config.batch_timeout,
        };
        let (joining, joined) = unbounded();
        let inputs_on_device = models.device.is_some();
        let dense_inputs = models.dense_inputs();
        let stop = config.stop.clone();
        let inference_thread = thread::Builder::new()
            .name("inference".into())
            .spawn(move || {
                let outcome = inference_stage(joined, models, inference, batching, dumper);
                // Without inference no stream can go on: stop them all (live sources would
                // otherwise keep capturing and dropping), and the run ends with this error.
                if outcome.is_err() {
                    stop.store(true, std::sync::atomic::Ordering::Relaxed);
                }
                outcome
            })
            .map_err(|e| Error::io("starting the inference thread", e))?;
        let shared = Arc::new(RunShared {
            config: config.clone(),
            metrics,
            summary,
            persons,
            yuv_frames,
            inputs_on_device,
            dense_inputs,
            publishers: Arc::new(Mutex::new(publishers)),
            frame_hubs: server.as_ref().map(|s| s.frames().clone()),
            post,
            progress,
        });
        let streams = Arc::new(Streams::new(shared.clone(), joining));
        let opened = config.streams.iter().try_for_each(|spec| {
            streams
                .start(spec)
                .map(drop)
                .map_err(|refused| refused.into_error(&spec.name))
        });
        if opened.is_ok() {
            let expected = streams.expected_frames(config.max_frames);
            if let (Some(bar), Some(total)) = (&shared.progress, expected) {
                bar.set_length(total);
            }
            if let Some(server) = &server {
                server.control_streams(streams.clone());
            }
            streams.wait(&config.stop, config.streams.is_empty());
        }
        let outcomes = streams.close();
        let inferred = join_stage(inference_thread);
        let shared_publishers = std::mem::take(
            &mut *shared
                .publishers
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        );
        let finished = shared_publishers
            .into_iter()
            .try_for_each(|publisher| publisher.finish());
        if let Some(server) = server {
            server.shutdown();
        }
        if let Some(bar) = &shared.progress {
            bar.finish_and_clear();
        }
        opened?;
        let (_, inference_stages) = inferred?;
        finished?;
        let model_calls = shared.metrics.model_calls();
        report(outcomes, inference_stages, model_calls, started)
    }
}

/// The run's report, the streams' figures added up; the first stream error, if any.
fn report(
    outcomes: Vec<StreamOutcome>,
    inference_stages: Vec<StageStats>,
    model_calls: Vec<ModelCalls>,
    started: Instant,
) -> Result<RunReport> {
    let mut report = RunReport {
        frames_in: 0,
        frames_out: 0,
        frames_dropped: 0,
        elapsed: started.elapsed(),
        stages: Vec::new(),
        streams: Vec::new(),
        model_calls,
    };
    let mut first_error = None;
    let mut stream_stages = Vec::new();
    for outcome in outcomes {
        report.frames_in += outcome.frames_in;
        report.frames_out += outcome.frames_out;
        report.frames_dropped += outcome.dropped;
        if let Some(error) = outcome.error {
            first_error.get_or_insert(error);
        }
        let mut latency = StageStats::new(CAPTURE_TO_PUBLISH);
        for stats in outcome
            .stages
            .iter()
            .filter(|s| s.name == CAPTURE_TO_PUBLISH)
        {
            latency.merge(stats);
        }
        report.streams.push(StreamReport {
            name: outcome.name,
            frames_in: outcome.frames_in,
            frames_out: outcome.frames_out,
            frames_dropped: outcome.dropped,
            latency,
        });
        stream_stages.extend(outcome.stages);
    }
    if let Some(error) = first_error {
        return Err(error);
    }
    // The stages in a frame's order: decode and prepare, the models, post and deliver.
    let (before, after): (Vec<_>, Vec<_>) = stream_stages
        .into_iter()
        .partition(|s| matches!(s.name, "decode" | "detect" | "preprocess"));
    for stats in before.into_iter().chain(inference_stages).chain(after) {
        merge_stage(&mut report.stages, stats);
    }
    Ok(report)
}

/// Adds a stage's figures to the one of that name, or lists it.
fn merge_stage(stages: &mut Vec<StageStats>, stats: StageStats) {
    match stages.iter_mut().find(|s| s.name == stats.name) {
        Some(existing) => existing.merge(&stats),
        None => stages.push(stats),
    }
}

/// How the inference and post stages treat each frame; the GPU paints the overlay when any
/// stream may have a video output.
fn frame_options(
    config: &PipelineConfig,
    summary: &ModelSummary,
) -> Result<(Inference, PostOptions)> {
    let view = config.view.resolve(&config.models);
    let any_video = !config.outputs.is_empty()
        || config.network.http.is_some()
        || config.streams.iter().any(|s| s.outputs.is_some());
    let inference = Inference {
        flip_test: config.flip_test,
        seg_upsample: config.seg_upsample,
        dense_maps: config.dense_dir.is_some(),
        paint: any_video.then(|| paint_for(view)),
    };
    let post = PostOptions {
        threshold: config.keypoint_threshold,
        seg_upsample: config.seg_upsample,
        draw: false,
        view,
        dense_dir: config.dense_dir.clone(),
        mask_classes: match summary.seg_layout {
            Some(layout) if !config.mask_classes.is_empty() => {
                let set = class_set(layout.channels).expect("a checked seg model has a class set");
                dense::mask_class_indices(&config.mask_classes, set)?
            }
            _ => Vec::new(),
        },
        pointcloud_dir: match &config.pointcloud_dir {
            Some(_) if !summary.depth_layout.is_some_and(|l| l.is_pointmap()) => {
                return Err(Error::InvalidArgument {
                    argument: "--pointcloud-dir",
                    reason:
                        "the depth model is not a Sapiens2 pointmap model, which point clouds need"
                            .into(),
                });
            }
            dir => dir.clone(),
        },
        tracking: config.tracking,
        frame_hub: None,
    };
    Ok((inference, post))
}
