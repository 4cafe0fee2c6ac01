//! What a run is asked to do: the pipeline's settings, as the command line or a library user
//! builds them, and the checks that need nothing opened.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use crate::engine::ExecutionChoice;
use crate::error::{Error, Result};
use crate::publish::mqtt::MqttConfig;
use crate::publish::server::NetworkOptions;
use crate::sink::{OutputSpec, VideoPreset};
use crate::source::{InputSpec, Reconnect, SourceOptions};
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

/// What `{name}` in an output or results path stands for: the stream's name.
pub const NAME_PLACEHOLDER: &str = "{name}";

/// One input of a run: its source and what it does not share with the other streams.
#[derive(Clone, Debug)]
pub struct StreamSpec {
    /// `[A-Za-z0-9_-]+`; `stream<index>` when the input is not named.
    pub name: String,
    pub input: InputSpec,
    pub scheduling: Scheduling,
    /// This stream's video outputs, in place of the run's.
    pub outputs: Option<Vec<OutputSpec>>,
    /// This stream's reconnect policy, in place of the run's.
    pub reconnect: Option<Reconnect>,
}

impl StreamSpec {
    /// `NAME=INPUT` or `INPUT` (named `stream<index>`); `mode` or the input's default scheduling.
    pub fn parse(text: &str, index: usize, mode: Option<Scheduling>) -> Result<Self> {
        let (name, input) = match text.split_once('=') {
            Some((name, input)) if is_stream_name(name) => (name.to_owned(), input),
            _ => (format!("stream{index}"), text),
        };
        let input = InputSpec::parse(input)?;
        Ok(StreamSpec {
            name,
            scheduling: mode.unwrap_or_else(|| Scheduling::default_for(&input)),
            input,
            outputs: None,
            reconnect: None,
        })
    }
}

/// A stream name: `[A-Za-z0-9_-]+`, so it fits in paths, URLs, topics and labels as it is.
pub fn is_stream_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// A well-formed stream name, else why not.
pub(super) fn check_stream_name(name: &str) -> Result<()> {
    if is_stream_name(name) {
        return Ok(());
    }
    Err(invalid(
        &format!("name {name:?}"),
        "a stream name is made of letters, digits, '_' and '-'",
    ))
}

/// Two streams under one name.
pub(super) fn name_in_use(name: &str) -> Error {
    invalid(name, "two streams have this name")
}

/// `template` with every `{name}` replaced by the stream's name.
pub fn for_stream(template: &str, name: &str) -> String {
    template.replace(NAME_PLACEHOLDER, name)
}

#[derive(Clone, Debug)]
pub struct PipelineConfig {
    /// The inputs, each a stream of its own; none only when the HTTP server can add them.
    pub streams: Vec<StreamSpec>,
    /// Set (by a signal handler) to stop taking frames; frames in flight are finished and every
    /// output is flushed and finalised.
    pub stop: Arc<AtomicBool>,
    pub models: ModelPaths,
    /// Overlay video outputs (files, RTSP) of every stream that has none of its own; `{name}`
    /// in a path makes one per stream. None: no video.
    pub outputs: Vec<OutputSpec>,
    /// The overlay video encoder's speed preset.
    pub video_preset: VideoPreset,
    /// JSON-lines results file, `-` for stdout; with `{name}` in the path, one per stream.
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
    /// Per-frame point clouds as PLY files, from a Sapiens2 pointmap model.
    pub pointcloud_dir: Option<PathBuf>,
    /// Body-part class names whose union is written as a mask per frame (needs `dense_dir`);
    /// their indices come from the seg model's class set.
    pub mask_classes: Vec<String>,
    /// Person crops per pose inference call (frames per dense call), over every stream; `None`:
    /// 8 on a GPU, 1 on the CPU, where a larger batch runs no faster and holds activations for
    /// every input at once (`benches/README.md`, issue 13).
    pub max_batch: Option<usize>,
    /// How long a batch waits for the other streams' frames once it has one.
    pub batch_timeout: Duration,
    /// How models on a Triton server are reached.
    pub remote: RemoteSettings,
    pub max_frames: Option<u64>,
    /// Show a progress bar when stderr is a terminal.
    pub progress: bool,
    pub source: SourceOptions,
}

/// `--remote-timeout`, `--remote-deadline`, `--triton-shm`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RemoteSettings {
    /// Offline: how long a request is retried while the server does not answer.
    pub timeout: Duration,
    /// A request not answered by then has failed.
    pub deadline: Duration,
    pub shared_memory: bool,
}

impl Default for RemoteSettings {
    fn default() -> Self {
        let options = crate::engine::triton::RemoteOptions::default();
        RemoteSettings {
            timeout: options.retry_for.unwrap_or(Duration::from_secs(60)),
            deadline: options.deadline,
            shared_memory: false,
        }
    }
}

impl PipelineConfig {
    /// How models on a Triton server behave when it does not answer: retried while every
    /// stream is offline (no frame may be lost), failing the frame at once when one is live.
    pub(super) fn remote_options(&self) -> crate::engine::triton::RemoteOptions {
        let live = self
            .streams
            .iter()
            .any(|s| s.scheduling == Scheduling::Live);
        crate::engine::triton::RemoteOptions {
            deadline: self.remote.deadline,
            retry_for: (!live).then_some(self.remote.timeout),
            shared_memory: self.remote.shared_memory,
        }
    }

    /// What can be checked before anything opens: the streams, output folders, at least one
    /// model, the options that need another; creates the dense-output folder.
    pub(super) fn check(&self) -> Result<()> {
        self.check_streams()?;
        for stream in &self.streams {
            let files = self
                .outputs_of(stream)
                .into_iter()
                .filter_map(|spec| match spec {
                    OutputSpec::File(path) => Some(path),
                    _ => None,
                });
            let results = self.results_of(&stream.name);
            for path in files.chain(results).filter(|p| p.as_os_str() != "-") {
                let parent = path.parent().filter(|p| !p.as_os_str().is_empty());
                if parent.is_some_and(|p| !p.is_dir()) {
                    return Err(Error::Output {
                        path: path.clone(),
                        message: "its folder does not exist".into(),
                    });
                }
            }
        }
        let models = &self.models;
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
        if self.pointcloud_dir.is_some() && models.depth.is_none() {
            return Err(invalid(
                "--pointcloud-dir",
                "needs --depth-model with a Sapiens2 pointmap model",
            ));
        }
        for dir in [&self.dense_dir, &self.pointcloud_dir]
            .into_iter()
            .flatten()
        {
            std::fs::create_dir_all(dir)
                .map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
        }
        Ok(())
    }

    /// Names unique and well formed; what only one stream can use given to one only.
    fn check_streams(&self) -> Result<()> {
        if self.streams.is_empty() && self.network.http.is_none() {
            return Err(invalid(
                "--input",
                "give an input (or --http, to add streams while running)",
            ));
        }
        let mut names = std::collections::HashSet::new();
        for stream in &self.streams {
            check_stream_name(&stream.name)?;
            if !names.insert(&stream.name) {
                return Err(name_in_use(&stream.name));
            }
        }
        if self.streams.len() < 2 {
            return Ok(());
        }
        let shared = self.outputs.iter().find(|spec| !spec.has_placeholder());
        if let Some(spec) = shared.filter(|_| self.streams.iter().any(|s| s.outputs.is_none())) {
            return Err(invalid(
                &format!("--output {spec}"),
                "several streams cannot share one video: put {name} in the path",
            ));
        }
        if self.dump.is_some() {
            return Err(invalid("--dump", "dumps one stream: give one --input"));
        }
        if matches!(self.persons, PersonSource::BoxesFile(_)) {
            return Err(invalid("--boxes", "boxes one stream: give one --input"));
        }
        Ok(())
    }

    /// Several streams, now or later (the HTTP server can add them): each stream's own
    /// files then go in folders or names of their own.
    pub(super) fn many_streams(&self) -> bool {
        self.streams.len() > 1 || self.network.http.is_some()
    }

    /// Whether files and topics every stream shares are split per stream (dense-output
    /// folders, MQTT topics): with any number of streams but one, so a run of one stream names
    /// them as it always did.
    pub(super) fn splits_per_stream(&self) -> bool {
        self.streams.len() != 1
    }

    /// A stream's video outputs: its own, else the run's (with `{name}` filled in). A stream
    /// added while running takes only the run's outputs made per stream by `{name}`.
    pub(super) fn outputs_of(&self, stream: &StreamSpec) -> Vec<OutputSpec> {
        stream.outputs.clone().unwrap_or_else(|| {
            let added = !self.streams.iter().any(|s| s.name == stream.name);
            self.outputs
                .iter()
                .filter(|spec| !added || spec.has_placeholder())
                .map(|spec| spec.for_stream(&stream.name))
                .collect()
        })
    }

    /// A stream's own results file, when `--results` has `{name}`.
    pub(super) fn results_of(&self, name: &str) -> Option<PathBuf> {
        let path = self.results.as_ref()?.to_str()?;
        path.contains(NAME_PLACEHOLDER)
            .then(|| PathBuf::from(for_stream(path, name)))
    }

    /// The one results file every stream writes to, when `--results` has no `{name}`.
    pub(super) fn shared_results(&self) -> Option<&PathBuf> {
        self.results
            .as_ref()
            .filter(|p| !p.to_string_lossy().contains(NAME_PLACEHOLDER))
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

fn invalid(input: &str, reason: &str) -> Error {
    Error::InputInvalid {
        input: input.into(),
        reason: reason.into(),
    }
}
