//! The inference stage: every model of a frame, on the GPU (one chain of device work) or
//! through host buffers.

use std::time::Duration;

use crossbeam_channel::{Receiver, Sender};

use crate::cuda::inference::{DenseRequest, FrameRequest, Paint, Persons, PoseRequest};
use crate::error::{Error, Result};
use crate::metrics::StageStats;
use crate::sink::Dumper;
use crate::tasks::keypoint_sets;
use crate::tasks::pose::PersonBox;
use crate::tasks::{INPUT_HEIGHT, INPUT_LEN, INPUT_WIDTH, OutputLayout, Task, flip};

use super::models::{Models, TaskModel};
use super::{Pool, SegUpsample, StageOutcome, View, Work};

/// How the models run on each frame.
#[derive(Clone, Copy)]
pub(super) struct Inference {
    pub(super) flip_test: bool,
    pub(super) seg_upsample: SegUpsample,
    /// `--dense-dir`: frame-size depth and normals are needed on the host.
    pub(super) dense_maps: bool,
    /// What the GPU draws for the overlay video, when there is one.
    pub(super) paint: Option<Paint>,
}

/// The view as the GPU draws it.
pub(super) fn paint_for(view: View) -> Paint {
    match view {
        View::Depth => Paint::Depth,
        View::Normal => Paint::Normals,
        View::Auto | View::Frame => Paint::Classes,
    }
}

pub(super) fn inference_stage(
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

/// Pose for every person; with the flip test, also on the mirrored crops, merged back (docs/SAPIENS.md).
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
