//! `run`'s flags as clap and a preset (TOML) read them, and the preset merged under the flags.

use std::path::{Path, PathBuf};

use anyhow::Context;
use sapiens_stream::engine::{DeviceChoice, EngineChoice};
use sapiens_stream::pipeline::{Scheduling, SegUpsample, Smoothing, View};
use sapiens_stream::sink::VideoPreset;
use sapiens_stream::source::{Reconnect, RtspTransport};
use serde::{Deserialize, Deserializer};

use super::checks::{self, preset_value};

/// `run`'s options. A `--config` TOML file may set any of them (same names, kebab-case); flags
/// given on the command line win. Defaults apply to what neither sets.
#[derive(clap::Args, Default, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct RunArgs {
    /// Pipeline preset (TOML, e.g. pipelines/file-batch.toml); command-line flags override it.
    #[arg(long)]
    #[serde(skip)]
    pub config: Option<PathBuf>,
    /// Video file, URI (file://, rtsp://, http(s)://), webcam (`webcam`, v4l2:///dev/videoN),
    /// test pattern (test://ball?width=640&height=480&fps=30&frames=90), image or folder of images.
    /// `NAME=INPUT` names the stream ([A-Za-z0-9_-]+); repeat for several streams in one process
    /// (unnamed ones are stream0, stream1, ...).
    #[arg(long, short)]
    #[serde(default, deserialize_with = "one_or_many")]
    pub input: Vec<String>,
    /// A preset's streams, each with settings of its own (`[[streams]]` tables).
    #[arg(skip)]
    #[serde(default)]
    pub streams: Vec<PresetStream>,
    /// live: newest frame wins (default for cameras, RTSP, test patterns); offline: every frame (files, images).
    #[arg(long, value_enum)]
    pub mode: Option<Scheduling>,
    /// Sapiens pose model (ONNX; 17, 133 or 308 keypoints).
    #[arg(long)]
    pub pose_model: Option<PathBuf>,
    /// Person detector (ONNX: RTMDet as exported by mmdeploy, or Ultralytics YOLO v8/v11) for top-down
    /// pose; without one (and without --boxes) the whole frame is one person.
    #[arg(long, conflicts_with = "boxes")]
    pub detector: Option<PathBuf>,
    /// Person boxes per frame from a JSON-lines file: {"frame": i, "boxes": [[x1,y1,x2,y2,score], ...]}.
    #[arg(long)]
    pub boxes: Option<PathBuf>,
    /// Detector score threshold, 0 to 1 [default: 0.3].
    #[arg(long, value_parser = checks::parser(checks::unit_interval))]
    pub detector_threshold: Option<f32>,
    /// IoU (0 to 1) above which overlapping person boxes are merged [default: 0.3].
    #[arg(long, value_parser = checks::parser(checks::unit_interval))]
    pub nms_iou: Option<f32>,
    /// Track persons across frames: a `track_id` per person, track events (implied by --smooth
    /// and --detect-every).
    #[arg(long)]
    #[serde(default)]
    pub track: bool,
    /// Seconds (stream time) a track unseen is kept to pick its ID up again [default: 1].
    #[arg(long, value_parser = checks::parser(checks::seconds))]
    pub track_max_age: Option<f64>,
    /// Run the detector on every N-th frame only (and whenever tracking needs it); the frames
    /// between crop each track from its last keypoints (needs --detector; implies --track).
    #[arg(long, value_parser = checks::parser(checks::frames))]
    pub detect_every: Option<u64>,
    /// Keypoint smoothing per track: none, or one-euro (the One Euro filter) [default: none].
    #[arg(long, value_enum)]
    pub smooth: Option<Smoothing>,
    /// One Euro: cutoff (Hz) of a still keypoint; lower removes more jitter [default: 1].
    #[arg(long, value_parser = checks::parser(checks::hertz))]
    pub smooth_min_cutoff: Option<f64>,
    /// One Euro: how fast the cutoff rises with speed (per frame height per second); higher
    /// lags less [default: 10].
    #[arg(long, value_parser = checks::parser(checks::non_negative))]
    pub smooth_beta: Option<f64>,
    /// One Euro: cutoff (Hz) of the speed's own filter [default: 1].
    #[arg(long, value_parser = checks::parser(checks::hertz))]
    pub smooth_d_cutoff: Option<f64>,
    /// Also run the mirrored person crops and average the heatmaps (the published accuracy's mode).
    #[arg(long)]
    #[serde(default)]
    pub flip_test: bool,
    /// Sapiens body-part segmentation model (ONNX; 28 classes, Sapiens2 29).
    #[arg(long)]
    pub seg_model: Option<PathBuf>,
    /// Sapiens depth model, or Sapiens2 pointmap model (metric depth, point clouds) (ONNX).
    #[arg(long)]
    pub depth_model: Option<PathBuf>,
    /// Sapiens or Sapiens2 surface-normal model (ONNX).
    #[arg(long)]
    pub normal_model: Option<PathBuf>,
    /// Overlay video: H.264 in MP4 (or MKV by extension), or rtsp://HOST:PORT/PATH (a host of
    /// this machine serves the stream, any other host receives it by RTSP RECORD); repeat for
    /// several outputs; `none` (default) for no video.
    #[arg(long, short)]
    #[serde(default, deserialize_with = "one_or_many")]
    pub output: Vec<String>,
    /// The overlay video encoder's (x264) speed preset: ultrafast is the cheapest, each step
    /// slower makes smaller files [default: superfast].
    #[arg(long, value_enum)]
    pub video_preset: Option<VideoPreset>,
    /// What the overlay shows under the skeletons [default: auto: depth, else normals, else the frame].
    #[arg(long, value_enum)]
    pub view: Option<View>,
    /// Folder for per-frame dense outputs: class map (8-bit PNG), depth (16-bit PNG, scale in the
    /// results; millimetres from a Sapiens2 pointmap model), normals (8-bit RGB PNG), mask.
    #[arg(long)]
    pub dense_dir: Option<PathBuf>,
    /// Folder for a point cloud per frame (binary PLY, metres, coloured from the frame) from a
    /// Sapiens2 pointmap model given as --depth-model; persons only when a seg model runs.
    #[arg(long)]
    pub pointcloud_dir: Option<PathBuf>,
    /// Body-part classes (e.g. Upper_Clothing,Lower_Clothing) whose union is written per frame as a
    /// binary mask PNG into --dense-dir.
    #[arg(long)]
    pub mask_classes: Option<String>,
    /// Serve the browser view (live video, keypoints and masks drawn in the page), /ws, /video.mjpeg,
    /// /metrics (Prometheus), /health and /ready: PORT or HOST:PORT.
    #[arg(long)]
    pub http: Option<String>,
    /// Serve the results over WebSocket only: PORT or HOST:PORT.
    #[arg(long)]
    pub ws: Option<String>,
    /// Require `Authorization: Bearer TOKEN` (or `?token=TOKEN`) on HTTP and WebSocket.
    #[arg(long)]
    pub token: Option<String>,
    /// Address servers bind when --http/--ws give only a port [default: 127.0.0.1].
    #[arg(long)]
    pub bind: Option<std::net::IpAddr>,
    /// Publish each result over OSC/UDP to host:port (TouchDesigner, Max, Unity; layout in the README).
    #[arg(long)]
    pub osc: Option<String>,
    /// Publish each result's JSON to an MQTT broker: mqtt://host[:port]/topic.
    #[arg(long)]
    pub mqtt: Option<String>,
    /// MQTT quality of service, 0 or 1 [default: 0].
    #[arg(long, value_parser = checks::parser(checks::mqtt_qos))]
    pub mqtt_qos: Option<u8>,
    /// MQTT client id [default: sapiens-stream-PID]; set it for a service using QoS 1.
    #[arg(long)]
    pub mqtt_client_id: Option<String>,
    /// Results as JSON lines, one object per frame; `-` for stdout.
    #[arg(long)]
    pub results: Option<PathBuf>,
    /// Folder for step-by-step dumps: frame PNG, model inputs and raw outputs as .npy.
    #[arg(long)]
    pub dump: Option<PathBuf>,
    /// How many leading frames to dump [default: 1].
    #[arg(long, value_parser = checks::parser(checks::frames))]
    pub dump_frames: Option<u64>,
    /// Keypoints scoring below this (0 to 1) are not drawn [default: 0.3].
    #[arg(long, value_parser = checks::parser(checks::unit_interval))]
    pub keypoint_threshold: Option<f32>,
    /// How segmentation logits reach frame size [default: bilinear].
    #[arg(long, value_enum)]
    pub seg_upsample: Option<SegUpsample>,
    /// Person crops per pose inference call (frames per dense call), over every stream, 1 to 256
    /// [default: 8 on a GPU or with every model on Triton, 1 on the CPU].
    #[arg(long, value_parser = checks::parser(checks::max_batch))]
    pub max_batch: Option<usize>,
    /// Once a batch has a frame, how long it waits for the other streams' frames, in
    /// milliseconds, 0 to 1000 [default: 10].
    #[arg(long, value_parser = checks::parser(checks::batch_timeout_ms))]
    pub batch_timeout_ms: Option<u64>,
    /// Models given as triton://HOST:PORT/MODEL: offline, how long a request is retried while
    /// the server does not answer before the run ends, in seconds [default: 60].
    #[arg(long, value_parser = checks::parser(checks::seconds))]
    pub remote_timeout: Option<f64>,
    /// Models on Triton: a request not answered by then has failed, in seconds [default: 10].
    #[arg(long, value_parser = checks::parser(checks::seconds))]
    pub remote_deadline: Option<f64>,
    /// Models on Triton: tensors through system shared memory instead of the request (the
    /// server on this host).
    #[arg(long)]
    #[serde(default)]
    pub triton_shm: bool,
    /// Stop after this many frames.
    #[arg(long, value_parser = checks::parser(checks::frames))]
    pub max_frames: Option<u64>,
    /// ONNX Runtime library (libonnxruntime.so); otherwise ORT_DYLIB_PATH, the project's .venv, the system.
    #[arg(long)]
    pub ort_lib: Option<PathBuf>,
    /// What runs the models: auto (TensorRT, then CUDA, then CPU, whichever can run), tensorrt,
    /// cuda or cpu [default: auto].
    #[arg(long, value_parser = str::parse::<EngineChoice>)]
    #[serde(default, deserialize_with = "from_str")]
    pub engine: Option<EngineChoice>,
    /// Where the models run: auto, cpu, cuda or cuda:N [default: auto].
    #[arg(long, value_parser = str::parse::<DeviceChoice>)]
    #[serde(default, deserialize_with = "from_str")]
    pub device: Option<DeviceChoice>,
    /// ONNX Runtime threads, 0 to 256 (0: every core) [default: 0].
    #[arg(long, value_parser = checks::parser(checks::threads))]
    pub threads: Option<usize>,
    /// Frame rate given to still images [default: 25].
    #[arg(long, value_parser = checks::parser(checks::image_fps))]
    pub image_fps: Option<u32>,
    /// RTSP input transport [default: UDP, falling back to TCP].
    #[arg(long, value_enum)]
    pub rtsp_transport: Option<RtspTransport>,
    /// When a video input fails, stalls or ends: auto (default) reconnects cameras (RTSP,
    /// webcams), always reconnects any video input, never fails at the first error.
    #[arg(long, value_enum)]
    pub reconnect: Option<Reconnect>,
    /// Longest wait between reconnect attempts, in seconds (the wait doubles from 0.5 s) [default: 30].
    #[arg(long, value_parser = checks::parser(checks::seconds))]
    pub reconnect_max_delay: Option<f64>,
    /// Start a file or bounded test pattern again when it ends.
    #[arg(long = "loop")]
    #[serde(default, rename = "loop")]
    pub loop_input: bool,
    /// No progress bar.
    #[arg(long)]
    #[serde(default)]
    pub no_progress: bool,
}

impl RunArgs {
    /// The preset of `--config`, if any, under the command line's values: a flag given wins, a
    /// flag left off keeps the preset's value.
    pub fn merged_with_preset(self) -> anyhow::Result<RunArgs> {
        match self.config.clone() {
            Some(path) => Ok(self.over(read_preset(&path)?)),
            None => Ok(self),
        }
    }

    fn over(self, preset: RunArgs) -> RunArgs {
        RunArgs {
            config: self.config,
            // Inputs on the command line replace the preset's, its streams included.
            streams: if self.input.is_empty() {
                preset.streams
            } else {
                self.streams
            },
            input: if self.input.is_empty() {
                preset.input
            } else {
                self.input
            },
            mode: self.mode.or(preset.mode),
            pose_model: self.pose_model.or(preset.pose_model),
            detector: self.detector.or(preset.detector),
            boxes: self.boxes.or(preset.boxes),
            detector_threshold: self.detector_threshold.or(preset.detector_threshold),
            nms_iou: self.nms_iou.or(preset.nms_iou),
            // A switch left off (false) cannot clear a preset's true.
            flip_test: self.flip_test || preset.flip_test,
            track: self.track || preset.track,
            track_max_age: self.track_max_age.or(preset.track_max_age),
            detect_every: self.detect_every.or(preset.detect_every),
            smooth: self.smooth.or(preset.smooth),
            smooth_min_cutoff: self.smooth_min_cutoff.or(preset.smooth_min_cutoff),
            smooth_beta: self.smooth_beta.or(preset.smooth_beta),
            smooth_d_cutoff: self.smooth_d_cutoff.or(preset.smooth_d_cutoff),
            seg_model: self.seg_model.or(preset.seg_model),
            depth_model: self.depth_model.or(preset.depth_model),
            normal_model: self.normal_model.or(preset.normal_model),
            output: if self.output.is_empty() {
                preset.output
            } else {
                self.output
            },
            video_preset: self.video_preset.or(preset.video_preset),
            view: self.view.or(preset.view),
            dense_dir: self.dense_dir.or(preset.dense_dir),
            pointcloud_dir: self.pointcloud_dir.or(preset.pointcloud_dir),
            mask_classes: self.mask_classes.or(preset.mask_classes),
            http: self.http.or(preset.http),
            ws: self.ws.or(preset.ws),
            token: self.token.or(preset.token),
            bind: self.bind.or(preset.bind),
            osc: self.osc.or(preset.osc),
            mqtt: self.mqtt.or(preset.mqtt),
            mqtt_qos: self.mqtt_qos.or(preset.mqtt_qos),
            mqtt_client_id: self.mqtt_client_id.or(preset.mqtt_client_id),
            results: self.results.or(preset.results),
            dump: self.dump.or(preset.dump),
            dump_frames: self.dump_frames.or(preset.dump_frames),
            keypoint_threshold: self.keypoint_threshold.or(preset.keypoint_threshold),
            seg_upsample: self.seg_upsample.or(preset.seg_upsample),
            max_batch: self.max_batch.or(preset.max_batch),
            batch_timeout_ms: self.batch_timeout_ms.or(preset.batch_timeout_ms),
            remote_timeout: self.remote_timeout.or(preset.remote_timeout),
            remote_deadline: self.remote_deadline.or(preset.remote_deadline),
            triton_shm: self.triton_shm || preset.triton_shm,
            max_frames: self.max_frames.or(preset.max_frames),
            ort_lib: self.ort_lib.or(preset.ort_lib),
            engine: self.engine.or(preset.engine),
            device: self.device.or(preset.device),
            threads: self.threads.or(preset.threads),
            image_fps: self.image_fps.or(preset.image_fps),
            rtsp_transport: self.rtsp_transport.or(preset.rtsp_transport),
            reconnect: self.reconnect.or(preset.reconnect),
            reconnect_max_delay: self.reconnect_max_delay.or(preset.reconnect_max_delay),
            loop_input: self.loop_input || preset.loop_input,
            no_progress: self.no_progress || preset.no_progress,
        }
    }

    /// A preset's numbers through the same checks as the flags'.
    fn check(&self) -> Result<(), String> {
        preset_value(
            "detector-threshold",
            self.detector_threshold,
            checks::unit_interval,
        )?;
        preset_value("nms-iou", self.nms_iou, checks::unit_interval)?;
        preset_value("mqtt-qos", self.mqtt_qos, checks::mqtt_qos)?;
        preset_value("dump-frames", self.dump_frames, checks::frames)?;
        preset_value(
            "keypoint-threshold",
            self.keypoint_threshold,
            checks::unit_interval,
        )?;
        preset_value("max-batch", self.max_batch, checks::max_batch)?;
        preset_value(
            "batch-timeout-ms",
            self.batch_timeout_ms,
            checks::batch_timeout_ms,
        )?;
        preset_value("track-max-age", self.track_max_age, checks::seconds)?;
        preset_value("detect-every", self.detect_every, checks::frames)?;
        preset_value("smooth-min-cutoff", self.smooth_min_cutoff, checks::hertz)?;
        preset_value("smooth-beta", self.smooth_beta, checks::non_negative)?;
        preset_value("smooth-d-cutoff", self.smooth_d_cutoff, checks::hertz)?;
        preset_value("remote-timeout", self.remote_timeout, checks::seconds)?;
        preset_value("remote-deadline", self.remote_deadline, checks::seconds)?;
        preset_value("max-frames", self.max_frames, checks::frames)?;
        preset_value("threads", self.threads, checks::threads)?;
        preset_value("image-fps", self.image_fps, checks::image_fps)?;
        preset_value(
            "reconnect-max-delay",
            self.reconnect_max_delay,
            checks::seconds,
        )
    }
}

/// A `[[streams]]` table of a preset: one input and what it does not share with the others.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct PresetStream {
    pub name: String,
    pub input: String,
    /// This stream's video outputs, in place of the run's.
    #[serde(default, deserialize_with = "one_or_many_optional")]
    pub output: Option<Vec<String>>,
    pub mode: Option<Scheduling>,
    pub reconnect: Option<Reconnect>,
}

fn read_preset(path: &Path) -> anyhow::Result<RunArgs> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("config {}", path.display()))?;
    let preset: RunArgs = toml::from_str(&text)
        .map_err(|e| anyhow::anyhow!("config {}: {}", path.display(), e.message()))?;
    preset
        .check()
        .map_err(|reason| anyhow::anyhow!("config {}: {reason}", path.display()))?;
    Ok(preset)
}

/// `output = "a.mp4"` or `output = ["a.mp4", "rtsp://0.0.0.0:8554/live"]` in a preset.
fn one_or_many<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(match OneOrMany::deserialize(deserializer)? {
        OneOrMany::One(output) => vec![output],
        OneOrMany::Many(outputs) => outputs,
    })
}

/// `output` of a `[[streams]]` table: absent, one, or many.
fn one_or_many_optional<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Vec<String>>, D::Error> {
    one_or_many(deserializer).map(Some)
}

/// `engine` / `device` in presets: the same words as on the command line.
fn from_str<'de, T, D>(deserializer: D) -> Result<Option<T>, D::Error>
where
    T: std::str::FromStr<Err = String>,
    D: Deserializer<'de>,
{
    Option::<String>::deserialize(deserializer)?
        .map(|text| text.parse().map_err(serde::de::Error::custom))
        .transpose()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn preset(text: &str) -> RunArgs {
        toml::from_str(text).unwrap()
    }

    #[test]
    fn flags_given_win_and_flags_left_off_keep_the_preset() {
        let stored = preset(
            "input = \"a.mp4\"\nthreads = 4\nflip-test = true\noutput = [\"x.mp4\", \"rtsp://0.0.0.0:8554/live\"]\nmode = \"live\"\n",
        );
        let flags = RunArgs {
            input: vec!["b.mp4".into()],
            max_batch: Some(2),
            ..RunArgs::default()
        };
        let merged = flags.over(stored);
        assert_eq!(merged.input, ["b.mp4"]);
        assert_eq!(merged.threads, Some(4));
        assert_eq!(merged.max_batch, Some(2));
        assert!(
            merged.flip_test,
            "a switch left off keeps the preset's true"
        );
        assert_eq!(merged.output, ["x.mp4", "rtsp://0.0.0.0:8554/live"]);
        assert_eq!(merged.mode, Some(Scheduling::Live));

        let flags = RunArgs {
            output: vec!["y.mp4".into()],
            ..RunArgs::default()
        };
        let merged = flags.over(preset("output = \"x.mp4\"\n"));
        assert_eq!(
            merged.output,
            ["y.mp4"],
            "outputs on the command line replace the preset's"
        );
    }

    #[test]
    fn preset_streams_and_inputs_on_the_command_line() {
        let stored = preset(
            "input = [\"a=x.mp4\"]\n[[streams]]\nname = \"door\"\ninput = \"rtsp://cam/1\"\noutput = \"door.mp4\"\nmode = \"live\"\nreconnect = \"always\"\n",
        );
        assert_eq!(stored.input, ["a=x.mp4"]);
        let door = &stored.streams[0];
        assert_eq!(
            (door.name.as_str(), door.input.as_str()),
            ("door", "rtsp://cam/1")
        );
        assert_eq!(door.output.as_deref(), Some(&["door.mp4".to_owned()][..]));
        assert_eq!(door.mode, Some(Scheduling::Live));
        assert_eq!(door.reconnect, Some(Reconnect::Always));
        let kept = RunArgs::default().over(preset("[[streams]]\nname = \"d\"\ninput = \"i\"\n"));
        assert_eq!(kept.streams.len(), 1, "no --input: the preset's streams");
        let flags = RunArgs {
            input: vec!["b.mp4".into()],
            ..RunArgs::default()
        };
        let replaced = flags.over(stored);
        assert_eq!(replaced.input, ["b.mp4"]);
        assert!(
            replaced.streams.is_empty(),
            "--input replaces the preset's streams"
        );
        assert!(
            toml::from_str::<RunArgs>("[[streams]]\nname = \"d\"\ninput = \"i\"\ncolour = 1\n")
                .is_err(),
            "unknown keys in a stream are refused"
        );
    }

    #[test]
    fn a_preset_value_out_of_range_names_its_key() {
        assert_eq!(
            preset("keypoint-threshold = 2.0\n").check(),
            Err("keypoint-threshold: must be a number from 0 to 1, not 2".into())
        );
        assert_eq!(preset("threads = 8\nmax-batch = 16\n").check(), Ok(()));
    }
}
