//! The `sapiens-stream` command line.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use sapiens_stream::pipeline::{self, ModelPaths, PipelineConfig, SegUpsample};
use sapiens_stream::source::{InputSpec, SourceOptions};

#[derive(Parser)]
#[command(version, about = "Run Meta's Sapiens models (pose, body-part segmentation) on video")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Process a video, stream, webcam, test pattern or images.
    Run(RunArgs),
}

#[derive(Clone, Copy, ValueEnum)]
enum SegUpsampleArg {
    /// Bilinear upsample of the logits, then argmax (as the official pipeline).
    Bilinear,
    /// Argmax at model resolution, then nearest upsample (cheaper, coarser edges).
    Nearest,
}

#[derive(clap::Args)]
struct RunArgs {
    /// Video file, URI (file://, rtsp://, http(s)://), webcam (`webcam`, v4l2:///dev/videoN),
    /// test pattern (test://ball?width=640&height=480&fps=30&frames=90), image or folder of images.
    #[arg(long, short)]
    input: String,
    /// Sapiens pose model (ONNX; 17, 133 or 308 keypoints).
    #[arg(long)]
    pose_model: Option<PathBuf>,
    /// Sapiens body-part segmentation model (ONNX; 28 classes).
    #[arg(long)]
    seg_model: Option<PathBuf>,
    /// Sapiens depth model (ONNX).
    #[arg(long)]
    depth_model: Option<PathBuf>,
    /// Sapiens surface-normal model (ONNX).
    #[arg(long)]
    normal_model: Option<PathBuf>,
    /// Overlay video, H.264 in MP4 (or MKV by extension); `none` for no video.
    #[arg(long, short, default_value = "none")]
    output: String,
    /// Results as JSON lines, one object per frame; `-` for stdout.
    #[arg(long)]
    results: Option<PathBuf>,
    /// Folder for step-by-step dumps: frame PNG, model inputs and raw outputs as .npy.
    #[arg(long)]
    dump: Option<PathBuf>,
    /// How many leading frames to dump.
    #[arg(long, default_value_t = 1, requires = "dump")]
    dump_frames: u64,
    /// Keypoints scoring below this are not drawn.
    #[arg(long, default_value_t = 0.3)]
    keypoint_threshold: f32,
    /// How segmentation logits reach frame size.
    #[arg(long, value_enum, default_value = "bilinear")]
    seg_upsample: SegUpsampleArg,
    /// Person crops per pose inference call.
    #[arg(long, default_value_t = 8)]
    max_batch: usize,
    /// Stop after this many frames.
    #[arg(long)]
    max_frames: Option<u64>,
    /// ONNX Runtime library (libonnxruntime.so); otherwise ORT_DYLIB_PATH, the project's .venv, the system.
    #[arg(long)]
    ort_lib: Option<PathBuf>,
    /// ONNX Runtime threads (0: every core).
    #[arg(long, default_value_t = 0)]
    threads: usize,
    /// Frame rate given to still images.
    #[arg(long, default_value_t = 25)]
    image_fps: u32,
    /// No progress bar.
    #[arg(long)]
    no_progress: bool,
}

fn main() -> ExitCode {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("sapiens_stream=info,ort=warn,warn"));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_target(false).init();
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            // One line, whatever the cause chain holds.
            let message = format!("{error:#}").replace('\n', " ");
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Run(args) => run_pipeline(args),
    }
}

fn run_pipeline(args: RunArgs) -> anyhow::Result<()> {
    let config = PipelineConfig {
        input: InputSpec::parse(&args.input)?,
        models: ModelPaths {
            pose: args.pose_model,
            seg: args.seg_model,
            depth: args.depth_model,
            normal: args.normal_model,
        },
        output: (args.output != "none").then(|| PathBuf::from(&args.output)),
        results: args.results,
        dump: args.dump.map(|dir| (dir, args.dump_frames)),
        ort_lib: args.ort_lib,
        threads: args.threads,
        keypoint_threshold: args.keypoint_threshold,
        seg_upsample: match args.seg_upsample {
            SegUpsampleArg::Bilinear => SegUpsample::Bilinear,
            SegUpsampleArg::Nearest => SegUpsample::Nearest,
        },
        max_batch: args.max_batch,
        max_frames: args.max_frames,
        progress: !args.no_progress,
        source: SourceOptions {
            image_fps: args.image_fps,
            ..SourceOptions::default()
        },
    };
    let report = pipeline::run(&config)?;
    eprint!("{}", report.summary());
    Ok(())
}
