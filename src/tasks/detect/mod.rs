//! Person boxes for top-down pose (docs/SAPIENS.md pose step 1): from an ONNX detector (RTMDet as
//! exported by mmdeploy, or ultralytics YOLO v8/v11), or from a JSON-lines file of boxes.
//!
//! Each detector is fed the way its own inference pipeline feeds it: RTMDet like mmdet's test
//! pipeline (keep-ratio resize, padding at the bottom/right, BGR, ImageNet mean/std), YOLO like
//! ultralytics' `LetterBox` (centred padding, RGB, `x / 255`). Both pad with 114.

mod boxes_file;
mod decode;

use std::path::Path;

use crate::engine::device::ComputeStream;
use crate::engine::graph::TensorSpec;
use crate::engine::multi_output::MultiOutputModel;
use crate::engine::runtime::Environment;
use crate::engine::triton::{RemoteModel, RemoteOptions, TritonUrl};
use crate::error::{Error, Result};
use crate::frame::HostFrame;
use crate::preprocess::Normalization;
use crate::preprocess::letterbox::{Fit, LetterboxInput, LetterboxPlan, LetterboxStyle};
use crate::tasks::pose::PersonBox;

pub use boxes_file::BoxesFile;
use decode::{OutputPlan, image_input, persons_in_frame, recognise_outputs};

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

/// Each family is fed the way its own pipeline feeds it.
impl From<DetectorLayout> for LetterboxStyle {
    fn from(layout: DetectorLayout) -> Self {
        match layout {
            // mmdet's RTMDet takes the image as OpenCV reads it, blue first.
            DetectorLayout::RtmDet => LetterboxStyle {
                fit: Fit::TopLeft,
                norm: RTMDET_NORMALIZATION,
                blue_first: true,
            },
            DetectorLayout::Yolo => LetterboxStyle {
                fit: Fit::Centred,
                norm: YOLO_NORMALIZATION,
                blue_first: false,
            },
        }
    }
}

/// An ONNX person detector. On the CPU it takes a frame and letterboxes it itself; on a GPU
/// ([`Self::load_on_gpu`]) its input is a tensor in device memory that the letterbox kernel
/// writes (`crate::pipeline::infer::device`), and only its outputs come back to the host.
pub struct PersonDetector {
    model: DetectorModel,
    layout: DetectorLayout,
    outputs: OutputPlan,
    input: LetterboxInput,
    options: DetectorOptions,
}

impl PersonDetector {
    /// A detector on the CPU.
    pub fn load(path: &Path, environment: &Environment, options: &DetectorOptions) -> Result<Self> {
        let model = MultiOutputModel::load(path, environment, options.threads)?;
        Self::recognise(path, DetectorModel::Local(model), options)
    }

    /// A detector on a Triton server; frames are letterboxed here and sent.
    pub fn connect(
        url: &TritonUrl,
        remote: RemoteOptions,
        options: &DetectorOptions,
    ) -> Result<Self> {
        let model = RemoteModel::connect(url, remote)?;
        Self::recognise(
            Path::new(&url.to_string()),
            DetectorModel::Remote(model),
            options,
        )
    }

    /// A detector on CUDA device `device`, on the kernels' `stream`, its input bound in device
    /// memory ([`Self::bound_input`]).
    pub fn load_on_gpu(
        path: &Path,
        environment: &Environment,
        options: &DetectorOptions,
        device: usize,
        stream: &ComputeStream,
    ) -> Result<Self> {
        let model =
            MultiOutputModel::load_on_gpu(path, environment, options.threads, device, stream)?;
        let mut detector = Self::recognise(path, DetectorModel::Local(model), options)?;
        detector.bind()?;
        Ok(detector)
    }

    /// The detector family from the model's outputs, the input size from its input.
    fn recognise(path: &Path, model: DetectorModel, options: &DetectorOptions) -> Result<Self> {
        let model_error = Error::model(path);
        let outputs = recognise_outputs(&model.outputs()).map_err(model_error)?;
        let (input_w, input_h) = image_input(&model.inputs()).map_err(model_error)?;
        let layout = match outputs {
            OutputPlan::RtmDet { .. } => DetectorLayout::RtmDet,
            OutputPlan::Yolo => DetectorLayout::Yolo,
        };
        Ok(PersonDetector {
            model,
            layout,
            outputs,
            input: LetterboxInput::new(layout, input_w, input_h),
            options: *options,
        })
    }

    /// Binds the input in the model's memory and every output to host memory.
    fn bind(&mut self) -> Result<()> {
        let shape = [1, 3, self.input.input_h, self.input.input_w];
        self.model.local().bind_input(shape)
    }

    pub fn layout(&self) -> DetectorLayout {
        self.layout
    }

    /// How `frame_w x frame_h` frames become this detector's input.
    pub fn letterbox_plan(&mut self, frame_w: usize, frame_h: usize) -> &LetterboxPlan {
        self.input.plan(frame_w, frame_h)
    }

    /// The bound input's address and length in values (1 x 3 x H x W), for the letterbox
    /// kernel; `None` on the CPU.
    pub fn bound_input(&mut self) -> Option<(u64, usize)> {
        match &mut self.model {
            DetectorModel::Local(model) => model.bound_input(),
            DetectorModel::Remote(_) => None,
        }
    }

    /// Person boxes in frame pixels from a frame the caller letterboxed into the bound input
    /// (with [`Self::letterbox_plan`]`(frame_w, frame_h)`; on a GPU, on the detector's stream):
    /// sorted by score (highest first), clipped to the frame.
    pub fn detect_bound(&mut self, frame_w: usize, frame_h: usize) -> Result<Vec<PersonBox>> {
        let letterbox = self.input.plan(frame_w, frame_h).letterbox;
        let outputs = self.model.local().run_bound()?;
        persons_in_frame(
            self.outputs,
            &outputs,
            &self.options,
            &letterbox,
            (frame_w, frame_h),
        )
        .map_err(|message| self.inference_error(message))
    }

    /// Person boxes in frame pixels of a frame of any layout, sorted by score (highest first),
    /// clipped to the frame.
    pub fn detect<'a>(&mut self, frame: impl Into<HostFrame<'a>>) -> Result<Vec<PersonBox>> {
        let frame = frame.into();
        let letterbox = self.input.prepare(frame);
        let shape = [1, 3, self.input.input_h, self.input.input_w];
        let outputs = match &mut self.model {
            DetectorModel::Local(model) => model.run(self.input.tensor(), shape)?,
            DetectorModel::Remote(model) => model.run(self.input.tensor(), &shape)?,
        };
        let size = (frame.geometry.width, frame.geometry.height);
        persons_in_frame(self.outputs, &outputs, &self.options, &letterbox, size)
            .map_err(|message| self.inference_error(message))
    }

    fn inference_error(&self, message: String) -> Error {
        Error::Inference {
            model: self.model.id(),
            message,
        }
    }
}

/// Where the detector runs: an ONNX Runtime session here, or a Triton server.
enum DetectorModel {
    Local(MultiOutputModel),
    Remote(RemoteModel),
}

impl DetectorModel {
    fn id(&self) -> String {
        match self {
            DetectorModel::Local(model) => model.id().to_owned(),
            DetectorModel::Remote(model) => model.url().to_string(),
        }
    }

    fn inputs(&self) -> Vec<TensorSpec> {
        match self {
            DetectorModel::Local(model) => model.inputs().to_vec(),
            DetectorModel::Remote(model) => model.inputs(),
        }
    }

    fn outputs(&self) -> Vec<TensorSpec> {
        match self {
            DetectorModel::Local(model) => model.outputs().to_vec(),
            DetectorModel::Remote(model) => model.outputs(),
        }
    }

    /// The local model: only a detector loaded on the GPU binds its input, and remote ones
    /// never are.
    fn local(&mut self) -> &mut MultiOutputModel {
        match self {
            DetectorModel::Local(model) => model,
            DetectorModel::Remote(_) => unreachable!("a Triton detector is not bound"),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::frame::{ImageView, PixelFormat};

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

            detector.bind().unwrap();
            let values = detector.model.local().bound_host_input().unwrap();
            values.fill(0.0);
            let unfilled = detector.detect_bound(width, height).unwrap();
            assert_ne!(unfilled, expected, "{layout}: the input changes the boxes");

            detector.input.prepare(&view);
            let letterboxed = detector.input.tensor().to_vec();
            let bound = detector.model.local().bound_host_input().unwrap();
            bound.copy_from_slice(&letterboxed);
            let found = detector.detect_bound(width, height).unwrap();
            assert_eq!(found, expected, "{layout}");
        }
    }
}
