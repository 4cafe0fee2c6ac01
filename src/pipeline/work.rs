//! What travels between the stages: a frame gathering its inputs and each task's output, then
//! the frame with its result.

use crate::frame::{Frame, PaintedFrame};
use crate::pipeline::infer::device::DenseResult;
use crate::publish::FrameResult;
use crate::tasks::Task;
use crate::tasks::pose::PersonBox;
use crate::tasks::pose::decode::HeatmapPeak;
use crate::tasks::track::TrackEvent;

/// A frame on its way through the stages, gathering its tensors.
pub(super) struct Work {
    pub(super) frame: Frame,
    pub(super) boxes: Vec<PersonBox>,
    /// The pose crops, when made on the host (the GPU makes its own from the frame).
    pub(super) pose_input: Option<Vec<f32>>,
    /// The stretched frame for the dense models, when made on the host.
    pub(super) dense_input: Option<Vec<f32>>,
    /// The frame kept in aspect and padded, for Sapiens2 normal and pointmap models.
    pub(super) padded_input: Option<Vec<f32>>,
    pub(super) pose: Option<PoseOutput>,
    pub(super) seg: Option<SegOutput>,
    pub(super) depth: Option<DenseOutput>,
    pub(super) normals: Option<DenseOutput>,
    /// The frame with its view drawn in on the GPU (as RGBA), for the overlay.
    pub(super) painted: Option<PaintedFrame>,
}

/// The pose model's output for the frame's boxes.
pub(super) enum PoseOutput {
    /// Heatmaps in host memory, for the post stage to decode.
    Heatmaps(Vec<f32>),
    /// Keypoints decoded on the GPU, one set per box.
    Peaks(Vec<HeatmapPeak>),
}

/// The segmentation model's output.
pub(super) enum SegOutput {
    /// Logits in host memory, for the post stage to upsample and argmax.
    Logits(Vec<f32>),
    /// The frame-size class map made on the GPU.
    ClassMap(Vec<u8>),
}

/// A depth or normal model's output.
pub(super) enum DenseOutput {
    /// The raw output in host memory, for the post stage.
    Raw(Vec<f32>),
    /// Post-processed on the GPU.
    Device(DenseResult),
}

impl Work {
    pub(super) fn new(frame: Frame, boxes: Vec<PersonBox>) -> Self {
        Work {
            frame,
            boxes,
            pose_input: None,
            dense_input: None,
            padded_input: None,
            pose: None,
            seg: None,
            depth: None,
            normals: None,
            painted: None,
        }
    }

    /// The inputs the frame brings to a batch: its crops, or the one frame of the dense models.
    pub(super) fn batch_inputs(&self) -> usize {
        self.boxes.len().max(1)
    }

    /// Keeps a dense model's raw host output as its task's.
    pub(super) fn set_dense_output(&mut self, task: Task, output: Vec<f32>) {
        match task {
            Task::Seg => self.seg = Some(SegOutput::Logits(output)),
            Task::Depth => self.depth = Some(DenseOutput::Raw(output)),
            Task::Normal => self.normals = Some(DenseOutput::Raw(output)),
            Task::Pose => unreachable!("pose is not a dense task"),
        }
    }
}

/// What the post stage hands the deliver stage.
pub(super) enum Delivery {
    Frame(Box<Done>),
    /// The input ended: the tracks still held are lost.
    TracksEnded {
        track_events: Vec<TrackEvent>,
    },
}

/// A processed frame for the sinks.
pub(super) struct Done {
    pub(super) frame: Frame,
    pub(super) result: FrameResult,
    /// Tracks confirmed or lost at this frame.
    pub(super) track_events: Vec<TrackEvent>,
}
