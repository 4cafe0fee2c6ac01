//! Person boxes for top-down pose (docs/SAPIENS.md pose step 1): from an ONNX detector (RTMDet as
//! exported by mmdeploy, or ultralytics YOLO v8/v11), or from a JSON-lines file of boxes.
//!
//! Each detector is fed the way its own inference pipeline feeds it: RTMDet like mmdet's test
//! pipeline (keep-ratio resize, padding at the bottom/right, BGR, ImageNet mean/std), YOLO like
//! ultralytics' `LetterBox` (centred padding, RGB, `x / 255`). Both pad with 114.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use ort::memory::{Allocator, MemoryInfo};
use ort::session::builder::{GraphOptimizationLevel, SessionBuilder};
use ort::session::{IoBinding, Session, SessionOutputs};
use ort::value::{DynValue, Outlet, Tensor, TensorElementType, TensorRef, ValueType};
use serde::Deserialize;

use super::pose::PersonBox;
use crate::engine::device::{ComputeStream, memory_info};
use crate::engine::onnx::{open_session, register_cuda};
use crate::error::{Error, Result};
use crate::frame::ImageView;
use crate::preprocess::{Normalization, StretchPlan};

/// COCO's person class, the first class of both detector families.
const PERSON_CLASS: i64 = 0;
/// At most this many persons per frame survive NMS.
const MAX_PERSONS: usize = 100;
/// Letterbox padding value of both mmdet and ultralytics, on the 0..255 scale.
const PAD_VALUE: f32 = 114.0;
/// Input side used when the model declares a dynamic height or width.
const FALLBACK_INPUT_SIDE: usize = 640;

/// mmdet's RTMDet normalisation (BGR mean [103.53, 116.28, 123.675], std [57.375, 57.12,
/// 58.395]), written in the R, G, B order [`Normalization`] holds.
const RTMDET_NORMALIZATION: Normalization = Normalization {
    mean: [123.675, 116.28, 103.53],
    std: [58.395, 57.12, 57.375],
};
/// ultralytics: `x / 255`.
const YOLO_NORMALIZATION: Normalization = Normalization {
    mean: [0.0; 3],
    std: [255.0; 3],
};

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DetectorOptions {
    /// A box is kept when its person score is above this.
    pub score_threshold: f32,
    /// Of two persons overlapping by more than this IoU, the lower-scored one is dropped.
    pub nms_iou: f32,
    /// Intra-op threads; 0 lets ONNX Runtime use every core.
    pub threads: usize,
}

impl Default for DetectorOptions {
    /// The values of the official Sapiens pose demo (docs/SAPIENS.md).
    fn default() -> Self {
        DetectorOptions {
            score_threshold: 0.3,
            nms_iou: 0.3,
            threads: 0,
        }
    }
}

/// The detector families this module reads, recognised from the model's outputs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DetectorLayout {
    /// mmdeploy's export: `dets` (1, N, 5) = x1, y1, x2, y2, score and `labels` (1, N).
    RtmDet,
    /// ultralytics' export: one (1, 4 + classes, anchors) output of cx, cy, w, h and class scores.
    Yolo,
}

impl DetectorLayout {
    fn normalization(self) -> Normalization {
        match self {
            DetectorLayout::RtmDet => RTMDET_NORMALIZATION,
            DetectorLayout::Yolo => YOLO_NORMALIZATION,
        }
    }

    /// mmdet's RTMDet takes the image as OpenCV reads it, blue first.
    fn blue_first(self) -> bool {
        self == DetectorLayout::RtmDet
    }
}

/// Where a frame lands inside the detector input, and the way back.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Letterbox {
    /// Size of the resized frame inside the input.
    pub resized_w: usize,
    pub resized_h: usize,
    /// Padding columns left of, and rows above, the resized frame.
    pub left: usize,
    pub top: usize,
    /// Input pixels per frame pixel, per axis, as the layout's own pipeline maps boxes back.
    pub scale_x: f64,
    pub scale_y: f64,
}

impl Letterbox {
    /// The fit of a `frame_w x frame_h` frame into an `input_w x input_h` input: the largest
    /// scale at which it fits, `min(input_w / frame_w, input_h / frame_h)`.
    pub fn new(
        layout: DetectorLayout,
        frame_w: usize,
        frame_h: usize,
        input_w: usize,
        input_h: usize,
    ) -> Self {
        let scale = (input_w as f64 / frame_w as f64).min(input_h as f64 / frame_h as f64);
        // A sliver frame still keeps one row or column.
        let fit =
            |len: usize, rounded: fn(f64) -> f64| (rounded(len as f64 * scale) as usize).max(1);
        match layout {
            // mmcv's `imrescale` (the same scale for square inputs, the usual export) rounds half
            // up (`int(x + 0.5)`), and mmdet maps boxes back with the per-axis scale it got.
            DetectorLayout::RtmDet => {
                let round_half_up = |x: f64| (x + 0.5).floor();
                let (resized_w, resized_h) =
                    (fit(frame_w, round_half_up), fit(frame_h, round_half_up));
                Letterbox {
                    resized_w,
                    resized_h,
                    left: 0,
                    top: 0,
                    scale_x: resized_w as f64 / frame_w as f64,
                    scale_y: resized_h as f64 / frame_h as f64,
                }
            }
            // ultralytics rounds with Python's `round` (half to even), splits the padding as
            // `round(d / 2 - 0.1)` before and the rest after (the floor of half before), and
            // maps boxes back with the single gain.
            DetectorLayout::Yolo => {
                let (resized_w, resized_h) = (
                    fit(frame_w, f64::round_ties_even),
                    fit(frame_h, f64::round_ties_even),
                );
                Letterbox {
                    resized_w,
                    resized_h,
                    left: (input_w - resized_w) / 2,
                    top: (input_h - resized_h) / 2,
                    scale_x: scale,
                    scale_y: scale,
                }
            }
        }
    }

    /// Input pixels -> frame pixels.
    pub fn to_frame(&self, x: f32, y: f32) -> (f32, f32) {
        (
            ((f64::from(x) - self.left as f64) / self.scale_x) as f32,
            ((f64::from(y) - self.top as f64) / self.scale_y) as f32,
        )
    }
}

/// How frames of one size become a detector's input: the fit, the resize taps, the channel
/// order and the normalisation (with the padding's value). The frames of a stream share one;
/// the CPU letterbox and the device's (`crate::preprocess::cuda::DeviceLetterbox`) run it.
#[derive(Debug)]
pub struct LetterboxPlan {
    pub frame_w: usize,
    pub frame_h: usize,
    pub input_w: usize,
    pub input_h: usize,
    pub letterbox: Letterbox,
    /// Frame -> the resized rectangle.
    pub stretch: StretchPlan,
    pub norm: Normalization,
    /// The normalised padding per R, G, B channel.
    pub pad: [f32; 3],
    /// The input's planes go B, G, R (mmdet).
    pub blue_first: bool,
}

impl LetterboxPlan {
    pub fn new(
        layout: DetectorLayout,
        (frame_w, frame_h): (usize, usize),
        (input_w, input_h): (usize, usize),
    ) -> Self {
        let letterbox = Letterbox::new(layout, frame_w, frame_h, input_w, input_h);
        let norm = layout.normalization();
        LetterboxPlan {
            frame_w,
            frame_h,
            input_w,
            input_h,
            letterbox,
            stretch: StretchPlan::new(frame_w, frame_h, letterbox.resized_w, letterbox.resized_h),
            norm,
            pad: std::array::from_fn(|c| (PAD_VALUE - norm.mean[c]) / norm.std[c]),
            blue_first: layout.blue_first(),
        }
    }

    /// The input plane that holds R, G or B (`rgb_channel` 0, 1, 2).
    pub fn plane_of(&self, rgb_channel: usize) -> usize {
        if self.blue_first {
            2 - rgb_channel
        } else {
            rgb_channel
        }
    }
}

/// Builds a detector's 1 x 3 x H x W input from frames, reusing its buffers frame after frame.
#[derive(Debug)]
pub struct LetterboxInput {
    layout: DetectorLayout,
    input_w: usize,
    input_h: usize,
    plan: Option<LetterboxPlan>,
    /// The resized frame alone, planar R, G, B, normalised.
    resized: Vec<f32>,
    tensor: Vec<f32>,
}

impl LetterboxInput {
    pub fn new(layout: DetectorLayout, input_w: usize, input_h: usize) -> Self {
        LetterboxInput {
            layout,
            input_w,
            input_h,
            plan: None,
            resized: Vec::new(),
            tensor: vec![0.0; 3 * input_w * input_h],
        }
    }

    /// The plan for `frame_w x frame_h` frames, made when the size changes.
    pub fn plan(&mut self, frame_w: usize, frame_h: usize) -> &LetterboxPlan {
        let (layout, input) = (self.layout, (self.input_w, self.input_h));
        let plan = match self.plan.take() {
            Some(plan) if (plan.frame_w, plan.frame_h) == (frame_w, frame_h) => plan,
            _ => LetterboxPlan::new(layout, (frame_w, frame_h), input),
        };
        self.plan.insert(plan)
    }

    /// Letterboxes `view` into [`Self::tensor`] (bilinear resize with `cv2.resize` INTER_LINEAR
    /// values, padding 114, the layout's channel order and normalisation) and returns the fit.
    pub fn prepare(&mut self, view: &ImageView) -> Letterbox {
        let (input_w, input_h) = (self.input_w, self.input_h);
        self.plan(view.width, view.height);
        let plan = self.plan.as_ref().expect("made above");
        let letterbox = plan.letterbox;
        self.resized
            .resize(3 * letterbox.resized_w * letterbox.resized_h, 0.0);
        plan.stretch.run(view, &mut self.resized, &plan.norm);
        let plane_len = input_w * input_h;
        let resized_planes = self
            .resized
            .chunks_exact(letterbox.resized_w * letterbox.resized_h);
        for (rgb_channel, plane) in resized_planes.enumerate() {
            let out = &mut self.tensor[plan.plane_of(rgb_channel) * plane_len..][..plane_len];
            out.fill(plan.pad[rgb_channel]);
            let out_rows = out.chunks_exact_mut(input_w).skip(letterbox.top);
            for (out_row, row) in out_rows.zip(plane.chunks_exact(letterbox.resized_w)) {
                out_row[letterbox.left..][..letterbox.resized_w].copy_from_slice(row);
            }
        }
        letterbox
    }

    /// The input of the last [`Self::prepare`]: planar, in the layout's channel order.
    pub fn tensor(&self) -> &[f32] {
        &self.tensor
    }
}

/// Which outputs hold what, once the layout is recognised.
#[derive(Clone, Copy, Debug)]
enum OutputPlan {
    RtmDet {
        dets: usize,
        labels: usize,
        labels_type: TensorElementType,
    },
    Yolo,
}

/// An ONNX person detector. On the CPU it takes a frame and letterboxes it itself; on a GPU
/// ([`Self::load_on_gpu`]) its input is a tensor in device memory that the letterbox kernel
/// writes (`crate::pipeline::infer::device`), and only its outputs come back to the host.
// Field order is drop order: the binding and its input before the session, the stream the
// session runs on after it.
pub struct PersonDetector {
    bound: Option<BoundIo>,
    session: Session,
    model_id: String,
    input_name: String,
    outputs: OutputPlan,
    input: LetterboxInput,
    options: DetectorOptions,
    /// Held, never read: the CUDA provider runs on this stream's raw handle.
    _compute_stream: Option<ComputeStream>,
}

/// The input bound in memory the caller writes, the outputs bound to host memory.
struct BoundIo {
    binding: IoBinding,
    input: Tensor<f32>,
}

impl PersonDetector {
    /// A detector on the CPU.
    pub fn load(
        path: &Path,
        environment: &ort::environment::Environment,
        options: &DetectorOptions,
    ) -> Result<Self> {
        Self::open(path, environment, options, Ok, None)
    }

    /// A detector on CUDA device `device`, on the kernels' `stream`, its input bound in device
    /// memory ([`Self::bound_input`]).
    pub fn load_on_gpu(
        path: &Path,
        environment: &ort::environment::Environment,
        options: &DetectorOptions,
        device: usize,
        stream: &ComputeStream,
    ) -> Result<Self> {
        let register = |builder| register_cuda(builder, device, Some(stream));
        let mut detector = Self::open(path, environment, options, register, Some(stream.clone()))?;
        let memory = memory_info(Some(device))
            .map_err(|e| Error::Execution(format!("CUDA memory for the detector: {e}")))?;
        detector.bind(memory)?;
        Ok(detector)
    }

    fn open(
        path: &Path,
        environment: &ort::environment::Environment,
        options: &DetectorOptions,
        register_providers: impl FnOnce(SessionBuilder) -> Result<SessionBuilder>,
        compute_stream: Option<ComputeStream>,
    ) -> Result<Self> {
        let model_error = Error::model(path);
        let session = open_session(
            path,
            environment,
            GraphOptimizationLevel::All,
            options.threads,
            register_providers,
        )?;
        let outputs = recognise_outputs(session.outputs()).map_err(model_error)?;
        let (input_name, input_w, input_h) = image_input(session.inputs()).map_err(model_error)?;
        let layout = match outputs {
            OutputPlan::RtmDet { .. } => DetectorLayout::RtmDet,
            OutputPlan::Yolo => DetectorLayout::Yolo,
        };
        Ok(PersonDetector {
            bound: None,
            session,
            model_id: path
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default(),
            input_name,
            outputs,
            input: LetterboxInput::new(layout, input_w, input_h),
            options: *options,
            _compute_stream: compute_stream,
        })
    }

    /// Binds the input to a tensor allocated in `memory` and every output to host memory, in
    /// the session's output order (which [`OutputPlan`] indexes).
    fn bind(&mut self, memory: MemoryInfo) -> Result<()> {
        let error = |e: ort::Error| Error::Execution(format!("binding {}: {e}", self.model_id));
        let allocator = Allocator::new(&self.session, memory).map_err(error)?;
        let shape = [1, 3, self.input.input_h, self.input.input_w];
        let input = Tensor::<f32>::new(&allocator, shape).map_err(error)?;
        let host = memory_info(None).map_err(error)?;
        let mut binding = self.session.create_binding().map_err(error)?;
        binding
            .bind_input(self.input_name.as_str(), &input)
            .map_err(error)?;
        for output in self.session.outputs() {
            binding
                .bind_output_to_device(output.name(), &host)
                .map_err(error)?;
        }
        self.bound = Some(BoundIo { binding, input });
        Ok(())
    }

    pub fn layout(&self) -> DetectorLayout {
        self.input.layout
    }

    /// How `frame_w x frame_h` frames become this detector's input.
    pub fn letterbox_plan(&mut self, frame_w: usize, frame_h: usize) -> &LetterboxPlan {
        self.input.plan(frame_w, frame_h)
    }

    /// The bound input's address and length in values (1 x 3 x H x W), for the letterbox
    /// kernel; `None` on the CPU.
    pub fn bound_input(&mut self) -> Option<(u64, usize)> {
        let bound = self.bound.as_mut()?;
        let len = 3 * self.input.input_w * self.input.input_h;
        Some((bound.input.data_ptr_mut() as u64, len))
    }

    /// Person boxes in frame pixels from a frame the caller letterboxed into the bound input
    /// (with [`Self::letterbox_plan`]`(frame_w, frame_h)`; on a GPU, on the detector's stream):
    /// sorted by score (highest first), clipped to the frame.
    pub fn detect_bound(&mut self, frame_w: usize, frame_h: usize) -> Result<Vec<PersonBox>> {
        let letterbox = self.input.plan(frame_w, frame_h).letterbox;
        let bound = self.bound.as_ref().ok_or_else(|| Error::Inference {
            model: self.model_id.clone(),
            message: "the detector's input is not bound".into(),
        })?;
        let outputs = self
            .session
            .run_binding(&bound.binding)
            .map_err(|e| inference_error(&self.model_id, e.to_string()))?;
        persons_in_frame(
            self.outputs,
            &outputs,
            &self.options,
            &letterbox,
            (frame_w, frame_h),
        )
        .map_err(|message| inference_error(&self.model_id, message))
    }

    /// Person boxes in frame pixels, sorted by score (highest first), clipped to the frame.
    pub fn detect(&mut self, view: &ImageView) -> Result<Vec<PersonBox>> {
        let letterbox = self.input.prepare(view);
        let shape = [1, 3, self.input.input_h, self.input.input_w];
        let tensor = TensorRef::from_array_view((shape, self.input.tensor()))
            .map_err(|e| inference_error(&self.model_id, e.to_string()))?;
        let outputs = self
            .session
            .run(ort::inputs![self.input_name.as_str() => tensor])
            .map_err(|e| inference_error(&self.model_id, e.to_string()))?;
        let frame = (view.width, view.height);
        persons_in_frame(self.outputs, &outputs, &self.options, &letterbox, frame)
            .map_err(|message| inference_error(&self.model_id, message))
    }
}

fn inference_error(model: &str, message: String) -> Error {
    Error::Inference {
        model: model.to_owned(),
        message,
    }
}

/// The persons of a run's outputs in frame pixels, after the threshold and NMS.
fn persons_in_frame(
    plan: OutputPlan,
    outputs: &SessionOutputs,
    options: &DetectorOptions,
    letterbox: &Letterbox,
    (frame_w, frame_h): (usize, usize),
) -> std::result::Result<Vec<PersonBox>, String> {
    let threshold = options.score_threshold;
    let candidates = match plan {
        OutputPlan::RtmDet {
            dets,
            labels,
            labels_type,
        } => rtmdet_persons(&outputs[dets], &outputs[labels], labels_type, threshold),
        OutputPlan::Yolo => yolo_persons(&outputs[0], threshold),
    }?;
    let in_frame = candidates
        .into_iter()
        .filter_map(|person| box_in_frame(person, letterbox, frame_w, frame_h))
        .collect();
    Ok(non_maximum_suppression(in_frame, options.nms_iou))
}

/// What a refused model is expected to look like.
const EXPECTED_LAYOUTS: &str = "expected RTMDet as exported by mmdeploy ('dets' float32 (1, N, 5) and 'labels' int64 (1, N)) or ultralytics YOLO v8/v11 (one float32 output (1, 4 + classes, anchors))";

fn recognise_outputs(outputs: &[Outlet]) -> std::result::Result<OutputPlan, String> {
    let tensor = |outlet: &Outlet| match outlet.dtype() {
        ValueType::Tensor { ty, shape, .. } => Some((*ty, shape.to_vec())),
        _ => None,
    };
    let is_dets = |outlet: &Outlet| {
        tensor(outlet)
            .is_some_and(|(ty, s)| ty == TensorElementType::Float32 && s.len() == 3 && s[2] == 5)
    };
    let labels_type = |outlet: &Outlet| {
        tensor(outlet)
            .filter(|(ty, s)| {
                matches!(ty, TensorElementType::Int64 | TensorElementType::Int32) && s.len() == 2
            })
            .map(|(ty, _)| ty)
    };
    // ultralytics' one-class models have 5 channels; more channels than anchors means a
    // transposed or NMS-included export, which this reader would misread.
    let is_yolo = |outlet: &Outlet| {
        tensor(outlet).is_some_and(|(ty, s)| {
            ty == TensorElementType::Float32
                && s.len() == 3
                && s[1] >= 5
                && (s[2] < 0 || s[1] < s[2])
        })
    };
    if outputs.len() == 2 {
        for (dets, labels) in [(0, 1), (1, 0)] {
            if let (true, Some(labels_type)) =
                (is_dets(&outputs[dets]), labels_type(&outputs[labels]))
            {
                return Ok(OutputPlan::RtmDet {
                    dets,
                    labels,
                    labels_type,
                });
            }
        }
    }
    if let [only] = outputs
        && is_yolo(only)
    {
        return Ok(OutputPlan::Yolo);
    }
    let found: Vec<String> = outputs
        .iter()
        .map(|o| format!("'{}' {}", o.name(), o.dtype()))
        .collect();
    Err(format!(
        "not a person detector this program reads: outputs {}; {EXPECTED_LAYOUTS}",
        found.join(", ")
    ))
}

/// The image input's name and size (width, height); dynamic sides fall back to 640.
fn image_input(inputs: &[Outlet]) -> std::result::Result<(String, usize, usize), String> {
    let [input] = inputs else {
        return Err(format!(
            "a person detector has one image input, this model has {}",
            inputs.len()
        ));
    };
    let shape = match input.dtype() {
        ValueType::Tensor {
            ty: TensorElementType::Float32,
            shape,
            ..
        } if shape.len() == 4 && matches!(shape[1], -1 | 3) => shape,
        other => {
            return Err(format!(
                "input '{}' is {other}, expected float32 (1, 3, H, W)",
                input.name()
            ));
        }
    };
    let side = |d: i64| {
        usize::try_from(d)
            .ok()
            .filter(|&d| d > 0)
            .unwrap_or(FALLBACK_INPUT_SIDE)
    };
    Ok((input.name().to_owned(), side(shape[3]), side(shape[2])))
}

/// RTMDet rows above the threshold labelled person, in input pixels.
fn rtmdet_persons(
    dets: &DynValue,
    labels: &DynValue,
    labels_type: TensorElementType,
    threshold: f32,
) -> std::result::Result<Vec<PersonBox>, String> {
    let (_, dets) = dets
        .try_extract_tensor::<f32>()
        .map_err(|e| e.to_string())?;
    let labels: Vec<i64> = if labels_type == TensorElementType::Int32 {
        let (_, labels) = labels
            .try_extract_tensor::<i32>()
            .map_err(|e| e.to_string())?;
        labels.iter().map(|&l| i64::from(l)).collect()
    } else {
        let (_, labels) = labels
            .try_extract_tensor::<i64>()
            .map_err(|e| e.to_string())?;
        labels.to_vec()
    };
    if dets.len() != 5 * labels.len() {
        return Err(format!(
            "{} detections but {} labels",
            dets.len() / 5,
            labels.len()
        ));
    }
    Ok(dets
        .chunks_exact(5)
        .zip(labels)
        .filter(|(det, label)| *label == PERSON_CLASS && det[4] > threshold)
        .map(|(det, _)| PersonBox {
            x1: det[0],
            y1: det[1],
            x2: det[2],
            y2: det[3],
            score: det[4],
        })
        .collect())
}

/// YOLO anchors whose best class is person with a score above the threshold, in input pixels.
fn yolo_persons(output: &DynValue, threshold: f32) -> std::result::Result<Vec<PersonBox>, String> {
    let (shape, values) = output
        .try_extract_tensor::<f32>()
        .map_err(|e| e.to_string())?;
    let &[1, channels @ 5..=i64::MAX, anchors] = &shape[..] else {
        return Err(format!(
            "output shape {:?}, expected (1, 4 + classes, anchors)",
            &shape[..]
        ));
    };
    let (channels, anchors) = (channels as usize, anchors as usize);
    let row = |c: usize| &values[c * anchors..][..anchors];
    let (cx, cy, w, h) = (row(0), row(1), row(2), row(3));
    let persons = (0..anchors).filter_map(|a| {
        let person_score = row(4)[a];
        // ultralytics' argmax keeps the first of equal scores, so only a higher class beats person.
        let best_is_person = || (5..channels).all(|c| row(c)[a] <= person_score);
        (person_score > threshold && best_is_person()).then(|| PersonBox {
            x1: cx[a] - w[a] / 2.0,
            y1: cy[a] - h[a] / 2.0,
            x2: cx[a] + w[a] / 2.0,
            y2: cy[a] + h[a] / 2.0,
            score: person_score,
        })
    });
    Ok(persons.collect())
}

/// Input pixels -> frame pixels, clipped to the frame; `None` when nothing of the box is inside.
fn box_in_frame(
    person: PersonBox,
    letterbox: &Letterbox,
    frame_w: usize,
    frame_h: usize,
) -> Option<PersonBox> {
    let (x1, y1) = letterbox.to_frame(person.x1, person.y1);
    let (x2, y2) = letterbox.to_frame(person.x2, person.y2);
    let clip_x = |x: f32| x.clamp(0.0, frame_w as f32);
    let clip_y = |y: f32| y.clamp(0.0, frame_h as f32);
    let clipped = PersonBox {
        x1: clip_x(x1),
        y1: clip_y(y1),
        x2: clip_x(x2),
        y2: clip_y(y2),
        score: person.score,
    };
    // Also drops NaN coordinates, which a pose crop cannot take.
    (clipped.x2 > clipped.x1 && clipped.y2 > clipped.y1).then_some(clipped)
}

fn area(b: &PersonBox) -> f32 {
    (b.x2 - b.x1) * (b.y2 - b.y1)
}

fn iou(a: &PersonBox, b: &PersonBox) -> f32 {
    let w = a.x2.min(b.x2) - a.x1.max(b.x1);
    let h = a.y2.min(b.y2) - a.y1.max(b.y1);
    if w <= 0.0 || h <= 0.0 {
        return 0.0;
    }
    let intersection = w * h;
    intersection / (area(a) + area(b) - intersection)
}

/// Greedy NMS: highest score first, a box is dropped when it overlaps a kept one by more than
/// `max_iou`; at most [`MAX_PERSONS`] are kept, sorted by score.
fn non_maximum_suppression(mut boxes: Vec<PersonBox>, max_iou: f32) -> Vec<PersonBox> {
    sort_by_score(&mut boxes);
    let mut kept: Vec<PersonBox> = Vec::new();
    for candidate in boxes {
        if kept.len() == MAX_PERSONS {
            break;
        }
        if kept.iter().all(|k| iou(k, &candidate) <= max_iou) {
            kept.push(candidate);
        }
    }
    kept
}

/// Highest score first; ties keep their order.
fn sort_by_score(boxes: &mut [PersonBox]) {
    boxes.sort_by(|a, b| b.score.total_cmp(&a.score));
}

/// Person boxes read from a JSON-lines file (`--boxes`), one line per frame:
/// `{"frame": 12, "boxes": [[x1, y1, x2, y2, score], ...]}` in frame pixels, score optional
/// (1.0). `frame` is the 0-based index of the decoded frame; frames without a line have no persons.
#[derive(Clone, Debug, Default)]
pub struct BoxesFile {
    frames: HashMap<u64, Vec<PersonBox>>,
}

#[derive(Deserialize)]
struct BoxesLine {
    frame: u64,
    boxes: Vec<Vec<f32>>,
}

impl BoxesFile {
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::io(format!("reading boxes file {}", path.display()), e))?;
        let mut frames = HashMap::new();
        let lines = text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty());
        for (index, line) in lines {
            let line_error = |reason: String| Error::BoxesFile {
                path: PathBuf::from(path),
                line: index + 1,
                reason,
            };
            let (frame, boxes) = parse_line(line).map_err(line_error)?;
            if frames.insert(frame, boxes).is_some() {
                return Err(line_error(format!("frame {frame} already has a line")));
            }
        }
        Ok(BoxesFile { frames })
    }

    /// The boxes of frame `frame_index`, highest score first; none for a frame without a line.
    pub fn boxes_for(&self, frame_index: u64) -> Vec<PersonBox> {
        self.frames.get(&frame_index).cloned().unwrap_or_default()
    }
}

fn parse_line(line: &str) -> std::result::Result<(u64, Vec<PersonBox>), String> {
    let parsed: BoxesLine = serde_json::from_str(line).map_err(|e| {
        // serde_json counts lines within the one line it was given: keep only the column.
        let message = e.to_string();
        let message = message.rsplit_once(" at line ").map_or(message.as_str(), |(m, _)| m);
        format!("column {}: {message}; expected {{\"frame\": N, \"boxes\": [[x1, y1, x2, y2, score], ...]}}", e.column())
    })?;
    let mut boxes = parsed
        .boxes
        .iter()
        .map(|b| parse_box(b))
        .collect::<std::result::Result<Vec<_>, _>>()?;
    sort_by_score(&mut boxes);
    Ok((parsed.frame, boxes))
}

fn parse_box(values: &[f32]) -> std::result::Result<PersonBox, String> {
    let (x1, y1, x2, y2, score) = match *values {
        [x1, y1, x2, y2] => (x1, y1, x2, y2, 1.0),
        [x1, y1, x2, y2, score] => (x1, y1, x2, y2, score),
        _ => {
            return Err(format!(
                "box {values:?} has {} numbers, expected [x1, y1, x2, y2] or [x1, y1, x2, y2, score]",
                values.len()
            ));
        }
    };
    if !(x2 > x1 && y2 > y1) {
        return Err(format!(
            "box {values:?} is empty: it needs x2 > x1 and y2 > y1"
        ));
    }
    Ok(PersonBox {
        x1,
        y1,
        x2,
        y2,
        score,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::PixelFormat;

    /// A CPU detector of `layout` whose boxes (two persons) move with the mean of its input.
    fn input_sensitive_detector(dir: &Path, layout: &str) -> PersonDetector {
        let spec = serde_json::json!([{
            "name": layout,
            "layout": layout,
            "input": [320, 320],
            "boxes": [[40, 30, 140, 250, 0.9, 0], [180, 60, 290, 300, 0.8, 0]],
            "input_gain": 0.05,
        }]);
        // The project's Python, as tests/common finds it.
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let python = std::env::var_os("SAPIENS_PYTHON")
            .map_or_else(|| root.join(".venv/bin/python"), PathBuf::from);
        let made = std::process::Command::new(python)
            .arg(root.join("tests/reference/make_detectors.py"))
            .args([dir.as_os_str(), spec.to_string().as_ref()])
            .status()
            .unwrap();
        assert!(made.success(), "make_detectors.py failed");
        let environment = crate::engine::runtime::environment(None).unwrap();
        let path = dir.join(format!("{layout}.onnx"));
        PersonDetector::load(&path, environment, &DetectorOptions::default()).unwrap()
    }

    /// What a GPU detector does with device memory, on the CPU: the input bound to a tensor the
    /// caller fills, every output bound to host memory and read back in the session's order.
    #[test]
    fn a_bound_run_finds_what_a_frame_run_finds() {
        let dir = tempfile::tempdir().unwrap();
        let (width, height) = (480, 270);
        let frame: Vec<u8> = (0..width * height * 3)
            .map(|i| (i * 7 % 251) as u8)
            .collect();
        let view = ImageView::packed(&frame, width, height, PixelFormat::Rgb);
        for layout in ["rtmdet", "yolo"] {
            let mut detector = input_sensitive_detector(dir.path(), layout);
            let expected = detector.detect(&view).unwrap();
            assert_eq!(expected.len(), 2, "{layout}: {expected:?}");

            detector.bind(memory_info(None).unwrap()).unwrap();
            let bound = &mut detector.bound.as_mut().unwrap().input;
            let (_, values) = bound.extract_tensor_mut();
            values.fill(0.0);
            let unfilled = detector.detect_bound(width, height).unwrap();
            assert_ne!(unfilled, expected, "{layout}: the input changes the boxes");

            detector.input.prepare(&view);
            let letterboxed = detector.input.tensor().to_vec();
            let bound = &mut detector.bound.as_mut().unwrap().input;
            bound.extract_tensor_mut().1.copy_from_slice(&letterboxed);
            let found = detector.detect_bound(width, height).unwrap();
            assert_eq!(found, expected, "{layout}");
        }
    }

    fn person(x1: f32, y1: f32, x2: f32, y2: f32, score: f32) -> PersonBox {
        PersonBox {
            x1,
            y1,
            x2,
            y2,
            score,
        }
    }

    #[test]
    fn iou_of_known_overlaps() {
        let a = person(0.0, 0.0, 10.0, 10.0, 1.0);
        assert_eq!(iou(&a, &person(5.0, 0.0, 15.0, 10.0, 1.0)), 50.0 / 150.0);
        assert_eq!(iou(&a, &a), 1.0);
        assert_eq!(iou(&a, &person(10.0, 0.0, 20.0, 10.0, 1.0)), 0.0);
    }

    #[test]
    fn nms_keeps_the_best_of_each_overlapping_group_in_score_order() {
        let boxes = vec![
            person(1.0, 0.0, 11.0, 10.0, 0.8), // IoU 9/11 with the first: dropped
            person(20.0, 20.0, 30.0, 30.0, 0.7), // apart: kept
            person(0.0, 0.0, 10.0, 10.0, 0.9),
            person(5.0, 0.0, 15.0, 10.0, 0.6), // IoU 1/3 with the first: kept at 0.5, dropped at 0.3
        ];
        let scores = |kept: Vec<PersonBox>| kept.iter().map(|b| b.score).collect::<Vec<_>>();
        assert_eq!(
            scores(non_maximum_suppression(boxes.clone(), 0.5)),
            [0.9, 0.7, 0.6]
        );
        assert_eq!(scores(non_maximum_suppression(boxes, 0.3)), [0.9, 0.7]);
    }

    #[test]
    fn nms_keeps_at_most_max_persons() {
        let boxes = (0..150)
            .map(|i| person(i as f32 * 20.0, 0.0, i as f32 * 20.0 + 10.0, 10.0, 0.5))
            .collect();
        assert_eq!(non_maximum_suppression(boxes, 0.3).len(), MAX_PERSONS);
    }

    #[test]
    fn boxes_outside_the_frame_are_clipped_or_dropped() {
        let letterbox = Letterbox::new(DetectorLayout::Yolo, 100, 50, 200, 200);
        // Scale 2, 50 rows of padding above.
        assert_eq!(
            (letterbox.top, letterbox.left, letterbox.scale_x),
            (50, 0, 2.0)
        );
        let clipped = box_in_frame(person(-10.0, 40.0, 100.0, 100.0, 0.5), &letterbox, 100, 50);
        assert_eq!(clipped, Some(person(0.0, 0.0, 50.0, 25.0, 0.5)));
        assert_eq!(
            box_in_frame(person(0.0, 0.0, 100.0, 40.0, 0.5), &letterbox, 100, 50),
            None
        );
    }
}
