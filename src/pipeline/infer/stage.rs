//! The inference stage's loop: each frame's models on the GPU when the frame's inputs were
//! left to it, else through host buffers.

use std::time::Duration;

use crossbeam_channel::{Receiver, Sender};

use super::device::{DenseRequest, FrameRequest, Paint, Persons, PoseRequest};
use super::host::{dump_tensors, run_batched, run_pose};
use crate::error::Result;
use crate::metrics::{Metrics, StageStats};
use crate::pipeline::config::{SegUpsample, View};
use crate::pipeline::decode::StageOutcome;
use crate::pipeline::links::Pool;
use crate::pipeline::models::{Models, TaskModel};
use crate::pipeline::work::{DenseOutput, PoseOutput, SegOutput, Work};
use crate::sink::Dumper;
use crate::tasks::Task;
use crate::tasks::keypoint_sets;
use crate::tasks::pose::PersonBox;

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
    gpu_frame: StageStats,
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
            gpu_frame: stats("gpu frame"),
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
            self.gpu_frame,
            self.detect,
        ]
        .into_iter()
        .filter(|s| s.count() > 0)
        .collect()
    }
}

pub(in crate::pipeline) fn inference_stage(
    prepared: Receiver<Work>,
    out: Sender<Work>,
    mut models: Models,
    inference: Inference,
    (input_pool, output_pool): (&Pool, &Pool),
    dumper: Option<&Dumper>,
) -> StageOutcome {
    let metrics = [&models.pose, &models.seg, &models.depth, &models.normal]
        .into_iter()
        .flatten()
        .map(|m| m.metrics.clone())
        .next()
        .expect("a run has at least one model");
    let mut stats = InferenceStats::new(&metrics);
    for mut work in prepared {
        let index = work.frame.index;
        let dump = dumper.filter(|d| d.wants(index));
        if let Some(dumper) = dump {
            dumper.frame_png(&work.frame)?;
        }
        let inputs_on_host = work.pose_input.is_some() || work.dense_input.is_some();
        if models.device.is_some() && !inputs_on_host {
            let detection = stats
                .gpu_frame
                .time(|| infer_on_device(&mut work, &mut models, inference))?;
            if let Some(detection) = detection {
                stats.detect.record(detection);
            }
        } else {
            infer_on_host(
                &mut work,
                &mut models,
                &mut stats,
                inference.flip_test,
                (input_pool, output_pool),
                dump,
            )?;
        }
        if out.send(work).is_err() {
            break;
        }
    }
    Ok((0, stats.ran()))
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
    if let (Some(model), Some(input)) = (models.pose.as_mut(), work.pose_input.take()) {
        let persons = work.boxes.len();
        let mut heatmaps = output_pool.get(0);
        stats.pose.time(|| {
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
        work.pose = Some(PoseOutput::Heatmaps(heatmaps));
    }
    if let Some(input) = work.dense_input.take() {
        let dense = [
            (Task::Seg, models.seg.as_mut(), &mut stats.seg),
            (Task::Depth, models.depth.as_mut(), &mut stats.depth),
            (Task::Normal, models.normal.as_mut(), &mut stats.normal),
        ];
        for (task, model, stats) in dense {
            let Some(model) = model else { continue };
            let mut output = output_pool.get(0);
            stats.time(|| run_batched(model, &input, 1, &mut output))?;
            if let Some(dumper) = dump {
                dump_tensors(dumper, index, task, model.layout, &input, &output)?;
            }
            work.set_dense_output(task, output);
        }
        input_pool.put(input);
    }
    Ok(())
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
    work.pose = models
        .pose
        .is_some()
        .then_some(PoseOutput::Peaks(results.peaks));
    work.seg = results.class_map.map(SegOutput::ClassMap);
    work.depth = results.depth.map(DenseOutput::Device);
    work.normals = results.normals.map(DenseOutput::Device);
    work.painted = results.painted;
    Ok(results.boxes.map(|(boxes, took)| {
        work.boxes = boxes;
        took
    }))
}
