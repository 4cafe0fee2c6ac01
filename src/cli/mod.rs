//! The command line, apart from the wiring: clap's view of the flags ([`run_args`] for `run`,
//! [`tools`] for the rest), a preset merged under them, the values checked where they are parsed
//! ([`checks`]), and the pipeline's settings built once from them ([`settings`]).

mod checks;
mod run_args;
mod settings;
mod tools;

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use clap::{Parser, Subcommand};
use sapiens_stream::pipeline::{self, PipelineConfig};

use run_args::RunArgs;
use tools::{DoctorArgs, ModelsCommand};

#[derive(Parser)]
#[command(
    version,
    about = "Run Meta's Sapiens models (pose, body-part segmentation) on video"
)]
pub struct Cli {
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

impl Cli {
    pub fn execute(self) -> anyhow::Result<ExitCode> {
        match self.command {
            Command::Run(args) => run(args).map(|()| ExitCode::SUCCESS),
            Command::Doctor(args) => Ok(tools::doctor(&args)),
            Command::Models(command) => tools::models(command).map(|()| ExitCode::SUCCESS),
        }
    }
}

fn run(args: RunArgs) -> anyhow::Result<()> {
    let config = PipelineConfig::try_from(args.merged_with_preset()?)?;
    stop_on_signals(&config.stop)?;
    let report = pipeline::run(&config)?;
    eprint!("{}", report.summary());
    Ok(())
}

/// First SIGINT/SIGTERM: stop taking frames and finish cleanly. Second: exit at once.
fn stop_on_signals(stop: &Arc<AtomicBool>) -> anyhow::Result<()> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    for signal in [SIGINT, SIGTERM] {
        signal_hook::flag::register_conditional_shutdown(signal, 130, stop.clone())?;
        signal_hook::flag::register(signal, stop.clone())?;
    }
    Ok(())
}
