//! What a run is asked to do: the pipeline's settings, as the command line or a library user
//! builds them, and the checks that need nothing opened.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use crate::engine::ExecutionChoice;
use crate::error::{Error, Result};
use crate::publish::mqtt::MqttConfig;
use crate::publish::server::NetworkOptions;
use crate::sink::{OutputSpec, VideoPreset};
use crate::source::{InputSpec, SourceOptions};
use crate::tasks::detect::DetectorOptions;
use crate::tasks::track::TrackerOptions;

#[derive(Clone, Debug, Default)]
pub struct ModelPaths {
    pub pose: Option<PathBuf>,
    pub seg: Option<PathBuf>,
    pub depth: Option<PathBuf>,
    pub normal: Option<PathBuf>,
}

/// How segmentation logits reach frame size.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SegUpsample {
    /// Bilinear upsample of the logits, then argmax (as the official pipeline).
    #[default]
    Bilinear,
    /// Argmax at model resolution, then nearest upsample: cheaper, coarser boundaries.
    Nearest,
}

/// Where results go besides `--results`.
#[derive(Clone, Debug, Default)]
pub struct PublishTargets {
    /// OSC over UDP, `host:port`.
    pub osc: Option<String>,
    pub mqtt: Option<MqttConfig>,
}

/// How each track's keypoints are smoothed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Smoothing {
    /// As decoded.
    #[default]
    None,
    /// The One Euro filter (Casiez et al., CHI 2012) on the stream's timestamps.
    OneEuro,
}

/// What the overlay video shows under the skeletons.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum View {
    /// Depth if a depth model runs, else normals if a normal model runs, else the frame.
    #[default]
    Auto,
    /// The frame, with the body-part colours blended in when a seg model runs.
    Frame,
    /// Depth coloured (inferno, near is bright), on the persons only when a seg model runs.
    Depth,
    /// Surface normals as RGB, on the persons only when a seg model runs.
    Normal,
}

impl View {
    pub(super) fn resolve(self, models: &ModelPaths) -> View {
        match self {
            View::Auto if models.depth.is_some() => View::Depth,
            View::Auto if models.normal.is_some() => View::Normal,
            View::Auto => View::Frame,
            chosen => chosen,
        }
    }
}

/// How frames are scheduled when the models are slower than the source.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
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

/// Where the person boxes for top-down pose come from.
#[derive(Clone, Debug, Default)]
pub enum PersonSource {
    /// No detector: the whole frame is one person (docs/SAPIENS.md step 1).
    #[default]
    WholeFrame,
    /// An ONNX person detector (RTMDet or YOLO layout).
    Detector {
        model: PathBuf,
        options: DetectorOptions,
    },
    /// Boxes from a JSON-lines file, per frame index.
    BoxesFile(PathBuf),
}

#[derive(Clone, Debug)]
pub struct PipelineConfig {
    pub input: InputSpec,
    pub scheduling: Scheduling,
    /// Set (by a signal handler) to stop taking frames; frames in flight are finished and every
    /// output is flushed and finalised.
    pub stop: Arc<AtomicBool>,
    pub models: ModelPaths,
    /// Overlay video outputs (files, RTSP), all fed the same frames; none: no video.
    pub outputs: Vec<OutputSpec>,
    /// The overlay video encoder's speed preset.
    pub video_preset: VideoPreset,
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
    /// Network publishers besides the results file.
    pub publish: PublishTargets,
    /// HTTP (browser view, /metrics, /health) and WebSocket servers; none when both are unset.
    pub network: NetworkOptions,
    /// Where person boxes come from for top-down pose.
    pub persons: PersonSource,
    /// Also run the mirrored crops and average (the accuracy mode of the published numbers).
    pub flip_test: bool,
    /// Persons tracked across frames (and their keypoints smoothed); `None`: every frame alone.
    pub tracking: Option<TrackerOptions>,
    /// The detector runs on every n-th frame only (and when tracking needs it); the frames
    /// between crop each track from its keypoints. `None` or 1: every frame.
    pub detect_every: Option<u64>,
    pub view: View,
    /// Per-frame dense outputs as PNG files (class map, depth, normals, mask).
    pub dense_dir: Option<PathBuf>,
    /// Body-part classes whose union is written as a mask per frame (needs `dense_dir`).
    pub mask_classes: Vec<u8>,
    /// Person crops per pose inference call.
    pub max_batch: usize,
    pub max_frames: Option<u64>,
    /// Show a progress bar when stderr is a terminal.
    pub progress: bool,
    pub source: SourceOptions,
}

impl PipelineConfig {
    /// What can be checked before anything opens: output folders, at least one model, the
    /// options that need another; creates the dense-output folder.
    pub(super) fn check(&self) -> Result<()> {
        let files = self.outputs.iter().filter_map(|spec| match spec {
            OutputSpec::File(path) => Some(path),
            _ => None,
        });
        for path in files
            .chain(self.results.as_ref())
            .filter(|p| p.as_os_str() != "-")
        {
            let parent = path.parent().filter(|p| !p.as_os_str().is_empty());
            if parent.is_some_and(|p| !p.is_dir()) {
                return Err(Error::Output {
                    path: path.clone(),
                    message: "its folder does not exist".into(),
                });
            }
        }
        let models = &self.models;
        let invalid = |input: &str, reason: &str| Error::InputInvalid {
            input: input.into(),
            reason: reason.into(),
        };
        if [&models.pose, &models.seg, &models.depth, &models.normal]
            .iter()
            .all(|m| m.is_none())
        {
            return Err(invalid(
                "models",
                "give at least one of --pose-model, --seg-model, --depth-model, --normal-model",
            ));
        }
        if !self.mask_classes.is_empty() && (models.seg.is_none() || self.dense_dir.is_none()) {
            return Err(invalid(
                "--mask-classes",
                "needs --seg-model and --dense-dir",
            ));
        }
        if let Some(dir) = &self.dense_dir {
            std::fs::create_dir_all(dir)
                .map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
        }
        Ok(())
    }

    /// What reads a frame's pixels as RGBA, and so has the source convert them; `None` when
    /// frames may stay as decoded. On the CPU nothing does: the preprocessing and the detector
    /// convert the rows they read, and the overlay is drawn into the frame's own planes. On the
    /// GPU, which prepares every frame, detects the persons, converts the colours as it resizes
    /// and draws the overlay on an RGBA copy it makes itself, only `--dump`'s host path does.
    pub(super) fn rgba_needed_by(&self, on_gpu: bool) -> Option<&'static str> {
        (on_gpu && self.dump.is_some()).then_some("--dump")
    }
}
