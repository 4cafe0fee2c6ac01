//! The second phase of a run: the stages on their own threads, joined by links, until the
//! source ends or the run is stopped; then every output is finished and the run reported.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::Instant;

use crossbeam_channel::bounded;

use super::build::Started;
use super::config::{PipelineConfig, Scheduling};
use super::decode::{StageOutcome, decode_stage};
use super::deliver::deliver_stage;
use super::infer::{Inference, inference_stage, paint_for};
use super::links::{CHANNEL_DEPTH, Pool, stage_links};
use super::models::PersonFinder;
use super::post::{PostOptions, post_stage};
use super::prepare::{Preparation, preprocess_stage};
use super::track_crops::{TrackCrops, TrackFeedback};
use crate::error::{Error, Result};
use crate::metrics::RunReport;
use crate::preprocess::StretchPlan;
use crate::tasks::{INPUT_HEIGHT, INPUT_WIDTH};

impl Started<'_> {
    /// Runs the stages: decode, prepare and infer on their threads, post on its own, deliver
    /// on this one.
    pub(super) fn run(self) -> Result<RunReport> {
        let Started {
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
        } = self;
        let started = Instant::now();
        let info = source.info().clone();
        let frame_hub = server.as_ref().map(|s| s.frames().clone());
        let dropped = Arc::new(AtomicU64::new(0));
        let ((frames_tx, frames_rx), (prepared_tx, prepared_rx)) =
            stage_links(config.scheduling, &dropped, &metrics);
        let (inferred_tx, inferred_rx) = bounded(CHANNEL_DEPTH);
        let (done_tx, done_rx) = bounded(CHANNEL_DEPTH);
        let input_pool = Pool::new(2 * CHANNEL_DEPTH + 2);
        let output_pool = Pool::new(2 * CHANNEL_DEPTH + 2);
        let (track_crops, feedback) = track_crops(config, &persons);
        let preparation = Preparation {
            metrics: metrics.clone(),
            pool: input_pool.clone(),
            stretch: StretchPlan::new(info.width, info.height, INPUT_WIDTH, INPUT_HEIGHT),
            persons,
            track_crops,
            needs_dense: models.needs_dense_input(),
            inputs_on_device: models.device.is_some(),
            dumped_frames: config.dump.as_ref().map_or(0, |(_, frames)| *frames),
        };
        let (inference, post) = frame_options(config, !videos.is_empty());

        thread::scope(|scope| {
            let metrics = &metrics;
            let (max_frames, stop) = (config.max_frames, &config.stop);
            let decode_thread =
                scope.spawn(move || decode_stage(source, max_frames, stop, frames_tx, metrics));
            let preprocess_thread =
                scope.spawn(move || preprocess_stage(frames_rx, prepared_tx, preparation));
            let pools = (&input_pool, &output_pool);
            let dumper = dumper.as_ref();
            let inference_thread = scope.spawn(move || {
                inference_stage(prepared_rx, inferred_tx, models, inference, pools, dumper)
            });
            let (summary, post, pool) = (&summary, &post, &output_pool);
            let post_thread = scope.spawn(move || {
                post_stage(
                    (inferred_rx, done_tx),
                    summary,
                    post,
                    pool,
                    frame_hub,
                    feedback,
                    metrics,
                )
            });
            let delivered = deliver_stage(
                (done_rx, statuses),
                videos,
                publishers,
                progress.as_ref(),
                metrics,
            );
            let [decoded, prepared, inferred, posted] = [
                decode_thread,
                preprocess_thread,
                inference_thread,
                post_thread,
            ]
            .map(join);
            let (frames_in, mut stages) = decoded?;
            for outcome in [prepared, inferred, posted] {
                stages.extend(outcome?.1);
            }
            if let Some(server) = server {
                server.shutdown();
            }
            let (frames_out, deliver_stats) = delivered?;
            stages.extend(deliver_stats);
            Ok(RunReport {
                frames_in,
                frames_out,
                frames_dropped: dropped.load(Ordering::Relaxed),
                elapsed: started.elapsed(),
                stages,
            })
        })
    }
}

/// The two ends of `--detect-every`'s loop, when it applies: tracking on, a detector on the
/// host (a detector on the GPU runs on every frame).
fn track_crops(
    config: &PipelineConfig,
    persons: &Option<PersonFinder>,
) -> (Option<TrackCrops>, Option<TrackFeedback>) {
    let detector_on_host = matches!(persons, Some(PersonFinder::Detector(_)));
    match config.detect_every {
        Some(every) if every > 1 && detector_on_host && config.tracking.is_some() => {
            let wait = config.scheduling == Scheduling::Offline;
            let (crops, feedback) = TrackCrops::new(every, wait);
            (Some(crops), Some(feedback))
        }
        _ => (None, None),
    }
}

/// How the inference and post stages treat each frame; `draw` when a video output takes the
/// overlay.
fn frame_options(config: &PipelineConfig, draw: bool) -> (Inference, PostOptions) {
    let view = config.view.resolve(&config.models);
    let inference = Inference {
        flip_test: config.flip_test,
        seg_upsample: config.seg_upsample,
        dense_maps: config.dense_dir.is_some(),
        paint: draw.then(|| paint_for(view)),
    };
    let post = PostOptions {
        threshold: config.keypoint_threshold,
        seg_upsample: config.seg_upsample,
        draw,
        view,
        dense_dir: config.dense_dir.clone(),
        mask_classes: config.mask_classes.clone(),
        tracking: config.tracking,
    };
    (inference, post)
}

fn join(handle: thread::ScopedJoinHandle<'_, StageOutcome>) -> StageOutcome {
    handle
        .join()
        .unwrap_or_else(|_| Err(Error::Gstreamer("a pipeline stage panicked".into())))
}
