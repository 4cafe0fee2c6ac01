//! The inference stage's loop: each frame's models on the GPU when the frame's inputs were
//! left to it, else through host buffers.

use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::Receiver;

use super::device::{BatchResults, DenseRequest, FrameRequest, Paint, Persons, PoseRequest};
use super::gather::{Entry, Gatherer};
use super::host::{dump_tensors, run_batched, run_pose};
use crate::error::{Error, Result};
use crate::frame::{HostFrame, MappedFrame};
use crate::metrics::{Metrics, StageStats};
use crate::pipeline::config::{SegUpsample, View};
use crate::pipeline::decode::StageOutcome;
use crate::pipeline::links::{Pool, RemoteOutage, StreamPort};
use crate::pipeline::models::{Models, TaskModel};
use crate::pipeline::work::{DenseOutput, PoseOutput, SegOutput, Work};
use crate::sink::Dumper;
use crate::tasks::keypoint_sets;
use crate::tasks::pose::PersonBox;
use crate::tasks::{INPUT_LEN, Task};

/// How the models run on each frame.
#[derive(Clone, Copy)]
pub(in crate::pipeline) struct Inference {
    pub(in crate::pipeline) flip_test: bool,
    pub(in crate::pipeline) seg_upsample: SegUpsample,
    /// `--dense-dir`: frame-size depth and normals are needed on the host.
    pub(in crate::pipeline) dense_maps: bool,
    /// What the GPU draws for the overlay video, when there is one.
    pub(in crate::pipeline) paint: Option<Paint>,
}

/// The view as the GPU draws it.
pub(in crate::pipeline) fn paint_for(view: View) -> Paint {
    match view {
        View::Depth => Paint::Depth,
        View::Normal => Paint::Normals,
        View::Auto | View::Frame => Paint::Classes,
    }
}

/// The stage's timings, in the order the run report lists them.
struct InferenceStats {
    pose: StageStats,
    seg: StageStats,
    depth: StageStats,
    normal: StageStats,
    /// A batch of frames on the GPU, from upload to results.
    gpu_batch: StageStats,
    detect: StageStats,
}

impl InferenceStats {
    fn new(metrics: &std::sync::Arc<Metrics>) -> Self {
        let stats = |name| StageStats::new(name).reporting_to(metrics);
        InferenceStats {
            pose: stats("pose infer"),
            seg: stats("seg infer"),
            depth: stats("depth infer"),
            normal: stats("normal infer"),
            gpu_batch: stats("gpu batch"),
            detect: stats("detect"),
        }
    }

    /// The timings of what ran.
    fn ran(self) -> Vec<StageStats> {
        [
            self.pose,
            self.seg,
            self.depth,
            self.normal,
            self.gpu_batch,
            self.detect,
        ]
        .into_iter()
        .filter(|s| s.count() > 0)
        .collect()
    }
}

/// How batches are made across streams.
#[derive(Clone, Copy)]
pub(in crate::pipeline) struct Batching {
    /// Inputs per batch (crops, or frames for the dense models).
    pub(in crate::pipeline) max_batch: usize,
    /// How long a batch with a frame waits for the other streams'.
    pub(in crate::pipeline) timeout: Duration,
}

/// The shared stage: batches of the streams' frames (see [`Gatherer`]) through the models,
/// each frame then handed on to its stream's post stage.
pub(in crate::pipeline) fn inference_stage(
    joining: Receiver<StreamPort>,
    mut models: Models,
    inference: Inference,
    batching: Batching,
    dumper: Option<Dumper>,
) -> StageOutcome {
    let metrics = [&models.pose, &models.seg, &models.depth, &models.normal]
        .into_iter()
        .flatten()
        .map(|m| m.metrics.clone())
        .next()
        .expect("a run has at least one model");
    let mut stats = InferenceStats::new(&metrics);
    let mut gatherer = Gatherer::new(joining, batching.max_batch, batching.timeout);
    let mut scratch = Scratch::default();
    let mut outage = RemoteOutage::new(&metrics);
    while let Some(mut batch) = gatherer.next_batch() {
        let mut stage = StageState {
            metrics: &metrics,
            models: &mut models,
            stats: &mut stats,
            scratch: &mut scratch,
            dumper: dumper.as_ref(),
        };
        match infer_batch(&mut batch, &gatherer, &mut stage, inference) {
            Ok(()) => {
                outage.answered();
                gatherer.dispatch(batch);
            }
            // Live: the frames whose model's server did not answer are dropped, the run goes on.
            Err(Error::RemoteUnavailable { model, message }) => {
                outage.unanswered(&model, &message, models.task_of(&model), batch.len());
                for entry in &batch {
                    gatherer.port_of(entry.port_index()).drops.count();
                }
            }
            Err(error) => return Err(error),
        }
    }
    Ok((0, stats.ran()))
}

/// What the stage keeps from batch to batch.
struct StageState<'a> {
    /// Where the device path's batch sizes go (the host path's engines report their own).
    metrics: &'a Arc<Metrics>,
    models: &'a mut Models,
    stats: &'a mut InferenceStats,
    scratch: &'a mut Scratch,
    dumper: Option<&'a Dumper>,
}

/// Every frame of a batch through the models: on the GPU where its inputs were left to it,
/// else through host buffers (one frame alone, or all of them in shared calls).
fn infer_batch(
    batch: &mut [Entry],
    gatherer: &Gatherer,
    stage: &mut StageState,
    inference: Inference,
) -> Result<()> {
    let mut on_device = Vec::new();
    let mut on_host = Vec::new();
    for entry in batch.iter_mut() {
        let work = &mut entry.work;
        if let Some(dumper) = stage.dumper.filter(|d| d.wants(work.frame.index)) {
            dumper.frame_png(&work.frame)?;
        }
        let inputs_on_host =
            work.pose_input.is_some() || work.dense_input.is_some() || work.padded_input.is_some();
        if stage.models.device.is_some() && !inputs_on_host {
            on_device.push(&mut entry.work);
        } else {
            on_host.push(entry);
        }
    }
    if !on_device.is_empty() {
        infer_on_device(&mut on_device, stage, inference)?;
    }
    let mut frames: Vec<_> = on_host
        .into_iter()
        .map(|entry| {
            let port = gatherer.port_of(entry.port_index());
            (&mut entry.work, port)
        })
        .collect();
    if let [(work, port)] = &mut frames[..] {
        let dump = stage.dumper.filter(|d| d.wants(work.frame.index));
        let pools = (&port.input_pool, &port.output_pool);
        infer_on_host(
            work,
            stage.models,
            stage.stats,
            inference.flip_test,
            pools,
            dump,
        )
    } else if !frames.is_empty() {
        infer_batch_on_host(
            &mut frames,
            stage.models,
            stage.stats,
            inference.flip_test,
            stage.scratch,
        )
    } else {
        Ok(())
    }
}

/// The batched calls' inputs and outputs, kept from batch to batch.
#[derive(Default)]
struct Scratch {
    pose_input: Vec<f32>,
    pose_output: Vec<f32>,
    dense_input: Vec<f32>,
    padded_input: Vec<f32>,
    /// Seg, depth, normal.
    dense_outputs: [Vec<f32>; 3],
}

/// Frames of several streams through host buffers in shared calls: every crop in one pose
/// call (in chunks of the model's batch), the frames in one call per dense model; each frame's
/// outputs copied into its own stream's buffers.
fn infer_batch_on_host(
    frames: &mut [(&mut Work, &StreamPort)],
    models: &mut Models,
    stats: &mut InferenceStats,
    flip_test: bool,
    scratch: &mut Scratch,
) -> Result<()> {
    let together = models.all_remote();
    let persons = gather_inputs(frames, &mut scratch.pose_input, |w| w.pose_input.take());
    let stretched = gather_inputs(frames, &mut scratch.dense_input, |w| w.dense_input.take());
    let padded = gather_inputs(frames, &mut scratch.padded_input, |w| w.padded_input.take());
    let total: usize = persons.iter().flatten().sum();
    // Every frame brings each whole-frame input the models take.
    let counts = if padded.iter().any(Option::is_some) {
        padded
    } else {
        stretched
    };
    let items: usize = counts.iter().flatten().sum();
    let (input_pool, output_pool) = (&frames[0].1.input_pool, &frames[0].1.output_pool);
    let mut jobs: Vec<Job> = Vec::new();
    if let Some(model) = models.pose.as_mut() {
        let (input, output, stats) = (
            &scratch.pose_input,
            &mut scratch.pose_output,
            &mut stats.pose,
        );
        jobs.push(Box::new(move || {
            stats.time(|| {
                run_pose(
                    model,
                    input,
                    total,
                    flip_test,
                    input_pool,
                    output_pool,
                    output,
                )
            })
        }));
    }
    let [seg_output, depth_output, normal_output] = &mut scratch.dense_outputs;
    let dense = [
        (models.seg.as_mut(), &mut stats.seg, seg_output),
        (models.depth.as_mut(), &mut stats.depth, depth_output),
        (models.normal.as_mut(), &mut stats.normal, normal_output),
    ];
    for (model, stats, output) in dense {
        let Some(model) = model.filter(|_| items > 0) else {
            continue;
        };
        let input = match model.layout.takes_padded_input() {
            true => &scratch.padded_input,
            false => &scratch.dense_input,
        };
        jobs.push(Box::new(move || {
            stats.time(|| run_batched(model, input, items, output))
        }));
    }
    run_jobs(jobs, together)?;
    if let Some(model) = models.pose.as_ref() {
        let item = model.layout.item_len();
        scatter_outputs(
            frames,
            &persons,
            item,
            &scratch.pose_output,
            |work, heatmaps| work.pose = Some(PoseOutput::Heatmaps(heatmaps)),
        );
    }
    let dense = [
        (Task::Seg, models.seg.as_ref()),
        (Task::Depth, models.depth.as_ref()),
        (Task::Normal, models.normal.as_ref()),
    ];
    for ((task, model), output) in dense.into_iter().zip(&scratch.dense_outputs) {
        let Some(model) = model.filter(|_| items > 0) else {
            continue;
        };
        let item = model.layout.item_len();
        scatter_outputs(frames, &counts, item, output, |work, output| {
            work.set_dense_output(task, output)
        });
    }
    Ok(())
}

/// One model's calls for a batch, on borrowed inputs, outputs and timings.
type Job<'a> = Box<dyn FnOnce() -> Result<()> + Send + 'a>;

/// Runs the jobs one after another; or, when `together` (every model remote), each on a thread
/// of its own, so the requests of all the models are in flight at once and the round trips
/// overlap. Locally they would only compete for the same cores.
fn run_jobs(jobs: Vec<Job>, together: bool) -> Result<()> {
    if !together || jobs.len() < 2 {
        return jobs.into_iter().try_for_each(|job| job());
    }
    std::thread::scope(|scope| {
        let running: Vec<_> = jobs.into_iter().map(|job| scope.spawn(job)).collect();
        running.into_iter().try_for_each(|thread| {
            thread
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
    })
}

/// Each frame's input (`take`n from it) appended to `batch`, the buffer back to its pool; the
/// items each frame brought, `None` for a frame without this input.
fn gather_inputs(
    frames: &mut [(&mut Work, &StreamPort)],
    batch: &mut Vec<f32>,
    take: impl Fn(&mut Work) -> Option<Vec<f32>>,
) -> Vec<Option<usize>> {
    batch.clear();
    frames
        .iter_mut()
        .map(|(work, port)| {
            let input = take(work)?;
            let items = input.len() / INPUT_LEN;
            batch.extend_from_slice(&input[..items * INPUT_LEN]);
            port.input_pool.put(input);
            Some(items)
        })
        .collect()
}

/// The batch's output split back: each frame's items, `item` values each, copied into a buffer
/// of its stream's pool and handed to `keep`.
fn scatter_outputs(
    frames: &mut [(&mut Work, &StreamPort)],
    items: &[Option<usize>],
    item: usize,
    output: &[f32],
    keep: impl Fn(&mut Work, Vec<f32>),
) {
    let mut offset = 0;
    for ((work, port), count) in frames.iter_mut().zip(items) {
        let Some(count) = count else { continue };
        let len = count * item;
        let mut own = port.output_pool.get(len);
        own.copy_from_slice(&output[offset..offset + len]);
        offset += len;
        keep(work, own);
    }
}

/// Every model of a frame through host buffers: the inputs go back to their pool, the outputs
/// go on with the frame.
fn infer_on_host(
    work: &mut Work,
    models: &mut Models,
    stats: &mut InferenceStats,
    flip_test: bool,
    (input_pool, output_pool): (&Pool, &Pool),
    dump: Option<&Dumper>,
) -> Result<()> {
    let index = work.frame.index;
    let together = models.all_remote();
    let persons = work.boxes.len();
    let pose_input = work.pose_input.take();
    let dense_input = work.dense_input.take();
    let padded_input = work.padded_input.take();
    // The whole-frame input each dense model takes.
    let input_of = |model: &TaskModel| match model.layout.takes_padded_input() {
        true => padded_input.as_deref(),
        false => dense_input.as_deref(),
    };
    // An output buffer for each model that runs on this frame.
    let mut heatmaps = (models.pose.is_some() && pose_input.is_some()).then(|| output_pool.get(0));
    let dense_output = |model: &Option<TaskModel>| {
        model
            .as_ref()
            .and_then(input_of)
            .map(|_| output_pool.get(0))
    };
    let mut dense_outputs = [
        dense_output(&models.seg),
        dense_output(&models.depth),
        dense_output(&models.normal),
    ];
    let mut jobs: Vec<Job> = Vec::new();
    if let (Some(model), Some(input), Some(heatmaps)) = (
        models.pose.as_mut(),
        pose_input.as_deref(),
        heatmaps.as_mut(),
    ) {
        let stats = &mut stats.pose;
        jobs.push(Box::new(move || {
            stats.time(|| {
                run_pose(
                    model,
                    input,
                    persons,
                    flip_test,
                    input_pool,
                    output_pool,
                    heatmaps,
                )
            })
        }));
    }
    let [seg_output, depth_output, normal_output] = &mut dense_outputs;
    let dense = [
        (models.seg.as_mut(), &mut stats.seg, seg_output),
        (models.depth.as_mut(), &mut stats.depth, depth_output),
        (models.normal.as_mut(), &mut stats.normal, normal_output),
    ];
    for (model, stats, output) in dense {
        let (Some(model), Some(output)) = (model, output.as_mut()) else {
            continue;
        };
        let Some(input) = input_of(model) else {
            continue;
        };
        jobs.push(Box::new(move || {
            stats.time(|| run_batched(model, input, 1, output))
        }));
    }
    run_jobs(jobs, together)?;
    if let (Some(model), Some(input), Some(heatmaps)) = (models.pose.as_ref(), pose_input, heatmaps)
    {
        if let Some(dumper) = dump {
            dump_tensors(dumper, index, Task::Pose, model.layout, &input, &heatmaps)?;
        }
        input_pool.put(input);
        work.pose = Some(PoseOutput::Heatmaps(heatmaps));
    }
    let dense = [
        (Task::Seg, models.seg.as_ref()),
        (Task::Depth, models.depth.as_ref()),
        (Task::Normal, models.normal.as_ref()),
    ];
    for ((task, model), output) in dense.into_iter().zip(dense_outputs) {
        let (Some(model), Some(output)) = (model, output) else {
            continue;
        };
        let Some(input) = input_of(model) else {
            continue;
        };
        if let Some(dumper) = dump {
            dump_tensors(dumper, index, task, model.layout, input, &output)?;
        }
        work.set_dense_output(task, output);
    }
    for input in [dense_input, padded_input].into_iter().flatten() {
        input_pool.put(input);
    }
    Ok(())
}

/// A dense model for the GPU path, if it runs there.
fn dense_request(model: &mut Option<TaskModel>) -> Option<DenseRequest<'_>> {
    model.as_mut().and_then(|m| {
        let (layout, max_batch) = (m.layout, m.max_batch);
        m.engine.device().map(|engine| DenseRequest {
            engine,
            layout,
            max_batch,
        })
    })
}

/// The frames of a batch on the GPU, together: every person of every frame in shared pose calls,
/// the frames in shared calls of each dense model, from the uploaded frames to peaks and class
/// maps; each frame's results go with it, and the sizes of the calls to the metrics.
fn infer_on_device(
    works: &mut [&mut Work],
    stage: &mut StageState,
    inference: Inference,
) -> Result<()> {
    let crops: Vec<Vec<_>> = works
        .iter()
        .map(|w| w.boxes.iter().map(PersonBox::crop).collect())
        .collect();
    let models = &mut *stage.models;
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
                None => Persons::Crops(crops.iter().map(Vec::as_slice).collect()),
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
    let mapped: Vec<MappedFrame> = works.iter().map(|w| w.frame.mapped()).collect();
    let frames: Vec<HostFrame> = mapped.iter().map(MappedFrame::host_frame).collect();
    let BatchResults {
        frames: results,
        calls,
    } = stage
        .stats
        .gpu_batch
        .time(|| device.run_batch(&frames, request))?;
    drop(frames);
    drop(mapped);
    for (task, items) in calls {
        stage.metrics.batch_size(task.name(), items);
    }
    let has_pose = models.pose.is_some();
    for (work, results) in works.iter_mut().zip(results) {
        work.pose = has_pose.then_some(PoseOutput::Peaks(results.peaks));
        work.seg = results.class_map.map(SegOutput::ClassMap);
        work.depth = results.depth.map(DenseOutput::Device);
        work.normals = results.normals.map(DenseOutput::Device);
        work.painted = results.painted;
        if let Some((boxes, took)) = results.boxes {
            work.boxes = boxes;
            stage.stats.detect.record(took);
        }
    }
    Ok(())
}
