//! The `sapiens-stream` command line.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use sapiens_stream::engine::onnx::{OnnxEngine, OnnxOptions};
use sapiens_stream::engine::probe::Capabilities;
use sapiens_stream::engine::{DeviceChoice, EngineChoice, ExecutionChoice, runtime, select};
use sapiens_stream::pipeline::{
    self, ModelPaths, PersonSource, PipelineConfig, PublishTargets, Scheduling, SegUpsample, View,
};
use sapiens_stream::publish::mqtt::{MqttConfig, MqttQos};
use sapiens_stream::publish::server::{NetworkOptions, listen_address};
use sapiens_stream::sink::OutputSpec;
use sapiens_stream::source::{
    InputSpec, Reconnect, ReconnectOptions, RtspTransport, SourceOptions,
};
use sapiens_stream::tasks::dense;
use sapiens_stream::tasks::detect::DetectorOptions;
use sapiens_stream::zoo;
use serde::{Deserialize, Serialize};

#[derive(Parser)]
#[command(
    version,
    about = "Run Meta's Sapiens models (pose, body-part segmentation) on video"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
// Parsed once per process: boxing `RunArgs` would buy nothing.
#[allow(clippy::large_enum_variant)]
enum Command {
    /// Process a video, stream, webcam, test pattern or images.
    Run(RunArgs),
    /// Check GStreamer, ONNX Runtime, CUDA, NVRTC and TensorRT; exit 0 when the requested
    /// --engine/--device can run here, 1 when not.
    Doctor(DoctorArgs),
    /// The official Sapiens checkpoints, and what an ONNX model file is.
    #[command(subcommand)]
    Models(ModelsCommand),
}

#[derive(clap::Args)]
struct DoctorArgs {
    /// auto, tensorrt, cuda or cpu.
    #[arg(long, default_value = "auto", value_parser = str::parse::<EngineChoice>)]
    engine: EngineChoice,
    /// auto, cpu, cuda or cuda:N.
    #[arg(long, default_value = "auto", value_parser = str::parse::<DeviceChoice>)]
    device: DeviceChoice,
    /// ONNX Runtime library (libonnxruntime.so).
    #[arg(long)]
    ort_lib: Option<PathBuf>,
}

#[derive(Subcommand)]
enum ModelsCommand {
    /// List the official checkpoints: task, size, published accuracy, where to download them.
    List,
    /// Describe an ONNX model: inputs, outputs, task, opset, size, metadata, whether `run` takes it.
    Inspect {
        /// ONNX model file (weights in `FILE.data` beside it are counted too).
        file: PathBuf,
        /// ONNX Runtime library (libonnxruntime.so); otherwise ORT_DYLIB_PATH, the project's .venv, the system.
        #[arg(long)]
        ort_lib: Option<PathBuf>,
    },
    /// Build a model's TensorRT engine into engines/cache/ ahead of time (the first run would).
    BuildEngine(BuildEngineArgs),
}

#[derive(clap::Args)]
struct BuildEngineArgs {
    /// The ONNX model.
    model: PathBuf,
    /// Largest batch the engine takes (as `run --max-batch`; use 1 for segmentation models).
    #[arg(long, default_value_t = 8)]
    max_batch: usize,
    /// cuda or cuda:N.
    #[arg(long, default_value = "cuda:0", value_parser = str::parse::<DeviceChoice>)]
    device: DeviceChoice,
    /// ONNX Runtime library (libonnxruntime.so).
    #[arg(long)]
    ort_lib: Option<PathBuf>,
}

#[derive(Clone, Copy, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
enum SegUpsampleArg {
    /// Bilinear upsample of the logits, then argmax (as the official pipeline).
    Bilinear,
    /// Argmax at model resolution, then nearest upsample (cheaper, coarser edges).
    Nearest,
}

#[derive(Clone, Copy, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
enum ViewArg {
    /// Depth if a depth model runs, else normals if a normal model runs, else the frame.
    Auto,
    /// The frame with body-part colours.
    Frame,
    /// Coloured depth.
    Depth,
    /// Surface normals as RGB.
    Normal,
}

#[derive(Clone, Copy, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
enum ModeArg {
    /// Newest frame wins, older frames are dropped before inference (cameras, RTSP, test patterns).
    Live,
    /// Every frame, with backpressure to the decoder (files, images).
    Offline,
}

/// `run`'s options. A `--config` TOML file may set any of them (same names, kebab-case); flags
/// given on the command line win. Defaults apply to what neither sets.
#[derive(clap::Args, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
struct RunArgs {
    /// Pipeline preset (TOML, e.g. pipelines/file-batch.toml); command-line flags override it.
    #[arg(long)]
    #[serde(skip)]
    config: Option<PathBuf>,
    /// Video file, URI (file://, rtsp://, http(s)://), webcam (`webcam`, v4l2:///dev/videoN),
    /// test pattern (test://ball?width=640&height=480&fps=30&frames=90), image or folder of images.
    #[arg(long, short)]
    #[serde(skip_serializing_if = "Option::is_none")]
    input: Option<String>,
    /// live: newest frame wins (default for cameras, RTSP, test patterns); offline: every frame (files, images).
    #[arg(long, value_enum)]
    #[serde(skip_serializing_if = "Option::is_none")]
    mode: Option<ModeArg>,
    /// Sapiens pose model (ONNX; 17, 133 or 308 keypoints).
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pose_model: Option<PathBuf>,
    /// Person detector (ONNX: RTMDet as exported by mmdeploy, or Ultralytics YOLO v8/v11) for top-down
    /// pose; without one (and without --boxes) the whole frame is one person.
    #[arg(long, conflicts_with = "boxes")]
    #[serde(skip_serializing_if = "Option::is_none")]
    detector: Option<PathBuf>,
    /// Person boxes per frame from a JSON-lines file: {"frame": i, "boxes": [[x1,y1,x2,y2,score], ...]}.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    boxes: Option<PathBuf>,
    /// Detector score threshold [default: 0.3].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    detector_threshold: Option<f32>,
    /// IoU above which overlapping person boxes are merged [default: 0.3].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    nms_iou: Option<f32>,
    /// Also run the mirrored person crops and average the heatmaps (the published accuracy's mode).
    #[arg(long)]
    #[serde(default)]
    flip_test: bool,
    /// Sapiens body-part segmentation model (ONNX; 28 classes).
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    seg_model: Option<PathBuf>,
    /// Sapiens depth model (ONNX).
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    depth_model: Option<PathBuf>,
    /// Sapiens surface-normal model (ONNX).
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    normal_model: Option<PathBuf>,
    /// Overlay video: H.264 in MP4 (or MKV by extension), or rtsp://HOST:PORT/PATH (a host of
    /// this machine serves the stream, any other host receives it by RTSP RECORD); repeat for
    /// several outputs; `none` (default) for no video.
    #[arg(long, short)]
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "one_or_many"
    )]
    output: Vec<String>,
    /// What the overlay shows under the skeletons [default: auto: depth, else normals, else the frame].
    #[arg(long, value_enum)]
    #[serde(skip_serializing_if = "Option::is_none")]
    view: Option<ViewArg>,
    /// Folder for per-frame dense outputs: class map (8-bit PNG), depth (16-bit PNG, scale in the
    /// results), normals (8-bit RGB PNG), mask.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    dense_dir: Option<PathBuf>,
    /// Body-part classes (e.g. Upper_Clothing,Lower_Clothing) whose union is written per frame as a
    /// binary mask PNG into --dense-dir.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    mask_classes: Option<String>,
    /// Serve the browser view (live video, keypoints and masks drawn in the page), /ws, /video.mjpeg,
    /// /metrics (Prometheus), /health and /ready: PORT or HOST:PORT.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    http: Option<String>,
    /// Serve the results over WebSocket only: PORT or HOST:PORT.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    ws: Option<String>,
    /// Require `Authorization: Bearer TOKEN` (or `?token=TOKEN`) on HTTP and WebSocket.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    token: Option<String>,
    /// Address servers bind when --http/--ws give only a port [default: 127.0.0.1].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    bind: Option<std::net::IpAddr>,
    /// Publish each result over OSC/UDP to host:port (TouchDesigner, Max, Unity; layout in the README).
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    osc: Option<String>,
    /// Publish each result's JSON to an MQTT broker: mqtt://host[:port]/topic.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    mqtt: Option<String>,
    /// MQTT quality of service, 0 or 1 [default: 0].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    mqtt_qos: Option<u8>,
    /// MQTT client id [default: sapiens-stream-PID]; set it for a service using QoS 1.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    mqtt_client_id: Option<String>,
    /// Results as JSON lines, one object per frame; `-` for stdout.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    results: Option<PathBuf>,
    /// Folder for step-by-step dumps: frame PNG, model inputs and raw outputs as .npy.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    dump: Option<PathBuf>,
    /// How many leading frames to dump [default: 1].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    dump_frames: Option<u64>,
    /// Keypoints scoring below this are not drawn [default: 0.3].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    keypoint_threshold: Option<f32>,
    /// How segmentation logits reach frame size [default: bilinear].
    #[arg(long, value_enum)]
    #[serde(skip_serializing_if = "Option::is_none")]
    seg_upsample: Option<SegUpsampleArg>,
    /// Person crops per pose inference call [default: 8].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    max_batch: Option<usize>,
    /// Stop after this many frames.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    max_frames: Option<u64>,
    /// ONNX Runtime library (libonnxruntime.so); otherwise ORT_DYLIB_PATH, the project's .venv, the system.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    ort_lib: Option<PathBuf>,
    /// What runs the models: auto (TensorRT, then CUDA, then CPU, whichever can run), tensorrt,
    /// cuda or cpu [default: auto].
    #[arg(long, value_parser = str::parse::<EngineChoice>)]
    #[serde(
        skip_serializing_if = "Option::is_none",
        default,
        with = "display_fromstr"
    )]
    engine: Option<EngineChoice>,
    /// Where the models run: auto, cpu, cuda or cuda:N [default: auto].
    #[arg(long, value_parser = str::parse::<DeviceChoice>)]
    #[serde(
        skip_serializing_if = "Option::is_none",
        default,
        with = "display_fromstr"
    )]
    device: Option<DeviceChoice>,
    /// ONNX Runtime threads (0: every core) [default: 0].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    threads: Option<usize>,
    /// Frame rate given to still images [default: 25].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    image_fps: Option<u32>,
    /// RTSP input transport [default: UDP, falling back to TCP].
    #[arg(long, value_enum)]
    #[serde(skip_serializing_if = "Option::is_none")]
    rtsp_transport: Option<RtspTransportArg>,
    /// When a video input fails, stalls or ends: auto (default) reconnects cameras (RTSP,
    /// webcams), always reconnects any video input, never fails at the first error.
    #[arg(long, value_enum)]
    #[serde(skip_serializing_if = "Option::is_none")]
    reconnect: Option<ReconnectArg>,
    /// Longest wait between reconnect attempts, in seconds (the wait doubles from 0.5 s) [default: 30].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    reconnect_max_delay: Option<f64>,
    /// Start a file or bounded test pattern again when it ends.
    #[arg(long = "loop")]
    #[serde(default, rename = "loop")]
    loop_input: bool,
    /// No progress bar.
    #[arg(long)]
    #[serde(default)]
    no_progress: bool,
}

/// `output = "a.mp4"` or `output = ["a.mp4", "rtsp://0.0.0.0:8554/live"]` in a preset.
fn one_or_many<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Vec<String>, D::Error> {
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

#[derive(Clone, Copy, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
enum RtspTransportArg {
    Tcp,
    Udp,
}

#[derive(Clone, Copy, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
enum ReconnectArg {
    Auto,
    Always,
    Never,
}

impl RunArgs {
    fn reconnect_options(&self) -> anyhow::Result<ReconnectOptions> {
        let defaults = ReconnectOptions::default();
        let max_delay = match self.reconnect_max_delay {
            Some(seconds) => Duration::try_from_secs_f64(seconds)
                .ok()
                .filter(|d| !d.is_zero())
                .with_context(|| {
                    format!(
                        "--reconnect-max-delay must be a positive number of seconds, not {seconds}"
                    )
                })?,
            None => defaults.max_delay,
        };
        Ok(ReconnectOptions {
            policy: match self.reconnect {
                Some(ReconnectArg::Always) => Reconnect::Always,
                Some(ReconnectArg::Never) => Reconnect::Never,
                Some(ReconnectArg::Auto) | None => Reconnect::Auto,
            },
            max_delay,
            ..defaults
        })
    }
}

impl RunArgs {
    /// The preset's values under the command line's.
    fn merged_with_config(self) -> anyhow::Result<RunArgs> {
        let Some(path) = self.config.clone() else {
            return Ok(self);
        };
        let mut merged = read_preset(&path)?;
        let overrides = serde_json::to_value(&self)?;
        let serde_json::Value::Object(overrides) = overrides else {
            unreachable!("RunArgs serializes to an object")
        };
        for (key, value) in overrides {
            // A flag left off (false) must not clear a preset's true.
            if value != serde_json::Value::Bool(false) {
                merged.insert(key, value);
            }
        }
        Ok(serde_json::from_value(serde_json::Value::Object(merged))?)
    }
}

fn read_preset(path: &Path) -> anyhow::Result<serde_json::Map<String, serde_json::Value>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("config {}", path.display()))?;
    let preset: RunArgs = toml::from_str(&text)
        .map_err(|e| anyhow::anyhow!("config {}: {}", path.display(), e.message()))?;
    match serde_json::to_value(preset)? {
        serde_json::Value::Object(map) => Ok(map),
        _ => unreachable!("RunArgs serializes to an object"),
    }
}

/// `--engine` / `--device` in presets: the same words as on the command line.
mod display_fromstr {
    use std::fmt::Display;
    use std::str::FromStr;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<T: Display, S: Serializer>(
        value: &Option<T>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        match value {
            Some(value) => serializer.collect_str(value),
            None => serializer.serialize_none(),
        }
    }

    pub fn deserialize<'de, T: FromStr<Err = String>, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<T>, D::Error> {
        Option::<String>::deserialize(deserializer)?
            .map(|text| text.parse().map_err(serde::de::Error::custom))
            .transpose()
    }
}

fn main() -> ExitCode {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new("sapiens_stream=info,ort=warn,warn")
    });
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
    match run(Cli::parse()) {
        Ok(code) => code,
        Err(error) => {
            // One line, whatever the cause chain holds.
            let message = format!("{error:#}").replace('\n', " ");
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Run(args) => run_pipeline(args.merged_with_config()?).map(|()| ExitCode::SUCCESS),
        Command::Doctor(args) => Ok(doctor(&args)),
        Command::Models(ModelsCommand::BuildEngine(args)) => {
            build_engine(&args).map(|()| ExitCode::SUCCESS)
        }
        Command::Models(ModelsCommand::List) => {
            print!("{}", zoo::list_report());
            Ok(ExitCode::SUCCESS)
        }
        Command::Models(ModelsCommand::Inspect { file, ort_lib }) => {
            print!("{}", zoo::inspect_report(&file, ort_lib.as_deref())?);
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn doctor(args: &DoctorArgs) -> ExitCode {
    let choice = ExecutionChoice {
        engine: args.engine,
        device: args.device,
    };
    let diagnosis = sapiens_stream::doctor::diagnose(choice, args.ort_lib.as_deref());
    for line in &diagnosis.lines {
        println!("{line}");
    }
    if diagnosis.can_run {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn build_engine(args: &BuildEngineArgs) -> anyhow::Result<()> {
    let choice = ExecutionChoice {
        engine: EngineChoice::TensorRt,
        device: args.device,
    };
    let selection = select(choice, || Capabilities::probe(args.ort_lib.as_deref()))?;
    let environment = runtime::environment(args.ort_lib.as_deref())?;
    let options = OnnxOptions {
        execution: selection.execution,
        max_batch: args.max_batch,
        ..OnnxOptions::default()
    };
    let started = std::time::Instant::now();
    OnnxEngine::load(&args.model, environment, &options)?;
    eprintln!(
        "TensorRT engine for {} ready in {:.1} s",
        args.model.display(),
        started.elapsed().as_secs_f32()
    );
    Ok(())
}

/// First SIGINT/SIGTERM: stop taking frames and finish cleanly. Second: exit at once.
fn stop_on_signals() -> anyhow::Result<Arc<AtomicBool>> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [SIGINT, SIGTERM] {
        signal_hook::flag::register_conditional_shutdown(signal, 130, stop.clone())?;
        signal_hook::flag::register(signal, stop.clone())?;
    }
    Ok(stop)
}

fn network_options(
    http: Option<&str>,
    ws: Option<&str>,
    token: Option<String>,
    bind: Option<std::net::IpAddr>,
) -> anyhow::Result<NetworkOptions> {
    let host = bind.unwrap_or(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST));
    Ok(NetworkOptions {
        http: http
            .map(|spec| listen_address("--http", spec, host))
            .transpose()?,
        ws: ws
            .map(|spec| listen_address("--ws", spec, host))
            .transpose()?,
        token,
        ..NetworkOptions::default()
    })
}

fn mqtt_config(
    url: &str,
    qos: Option<u8>,
    client_id: Option<String>,
) -> anyhow::Result<MqttConfig> {
    let mut config = MqttConfig::from_url(url)?;
    if let Some(level) = qos {
        config.qos = MqttQos::from_level(level)?;
    }
    if let Some(id) = client_id {
        config.client_id = id;
    }
    Ok(config)
}

fn run_pipeline(args: RunArgs) -> anyhow::Result<()> {
    let input = InputSpec::parse(
        args.input
            .as_deref()
            .context("--input is required (or `input` in --config)")?,
    )?;
    let scheduling = match args.mode {
        Some(ModeArg::Live) => Scheduling::Live,
        Some(ModeArg::Offline) => Scheduling::Offline,
        None => Scheduling::default_for(&input),
    };
    let outputs = args
        .output
        .iter()
        .filter(|o| *o != "none")
        .map(|o| OutputSpec::parse(o))
        .collect::<Result<Vec<_>, _>>()?;
    let reconnect = args.reconnect_options()?;
    let persons = match (args.detector, args.boxes) {
        (Some(_), Some(_)) => anyhow::bail!("--detector and --boxes exclude each other: give one"),
        (Some(model), None) => PersonSource::Detector {
            model,
            options: DetectorOptions {
                score_threshold: args.detector_threshold.unwrap_or(0.3),
                nms_iou: args.nms_iou.unwrap_or(0.3),
                threads: args.threads.unwrap_or(0),
            },
        },
        (None, Some(path)) => PersonSource::BoxesFile(path),
        (None, None) => PersonSource::WholeFrame,
    };
    let config = PipelineConfig {
        scheduling,
        stop: stop_on_signals()?,
        models: ModelPaths {
            pose: args.pose_model,
            seg: args.seg_model,
            depth: args.depth_model,
            normal: args.normal_model,
        },
        outputs,
        results: args.results,
        dump: args.dump.map(|dir| (dir, args.dump_frames.unwrap_or(1))),
        ort_lib: args.ort_lib,
        execution: ExecutionChoice {
            engine: args.engine.unwrap_or_default(),
            device: args.device.unwrap_or_default(),
        },
        threads: args.threads.unwrap_or(0),
        keypoint_threshold: args.keypoint_threshold.unwrap_or(0.3),
        seg_upsample: match args.seg_upsample {
            Some(SegUpsampleArg::Nearest) => SegUpsample::Nearest,
            _ => SegUpsample::Bilinear,
        },
        publish: PublishTargets {
            osc: args.osc,
            mqtt: args
                .mqtt
                .as_deref()
                .map(|url| mqtt_config(url, args.mqtt_qos, args.mqtt_client_id))
                .transpose()?,
        },
        network: network_options(
            args.http.as_deref(),
            args.ws.as_deref(),
            args.token,
            args.bind,
        )?,
        persons,
        flip_test: args.flip_test,
        view: match args.view {
            None | Some(ViewArg::Auto) => View::Auto,
            Some(ViewArg::Frame) => View::Frame,
            Some(ViewArg::Depth) => View::Depth,
            Some(ViewArg::Normal) => View::Normal,
        },
        mask_classes: args
            .mask_classes
            .as_deref()
            .map(dense::parse_mask_classes)
            .transpose()?
            .unwrap_or_default(),
        dense_dir: args.dense_dir,
        max_batch: args.max_batch.unwrap_or(8),
        max_frames: args.max_frames,
        progress: !args.no_progress,
        source: SourceOptions {
            image_fps: args.image_fps.unwrap_or(25),
            real_time: scheduling == Scheduling::Live,
            rtsp_transport: args.rtsp_transport.map(|t| match t {
                RtspTransportArg::Tcp => RtspTransport::Tcp,
                RtspTransportArg::Udp => RtspTransport::Udp,
            }),
            reconnect,
            loop_input: args.loop_input,
            ..SourceOptions::default()
        },
        input,
    };
    let report = pipeline::run(&config)?;
    eprint!("{}", report.summary());
    Ok(())
}
