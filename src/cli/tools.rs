//! The subcommands besides `run`: `doctor` and `models`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Subcommand;
use sapiens_stream::engine::onnx::{OnnxEngine, OnnxOptions};
use sapiens_stream::engine::probe::Capabilities;
use sapiens_stream::engine::{DeviceChoice, EngineChoice, ExecutionChoice, runtime, select};
use sapiens_stream::zoo;

use super::checks;

#[derive(clap::Args)]
pub struct DoctorArgs {
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
pub enum ModelsCommand {
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
pub struct BuildEngineArgs {
    /// The ONNX model.
    model: PathBuf,
    /// Largest batch the engine takes, 1 to 256 (as `run --max-batch`; use 1 for segmentation models).
    #[arg(long, default_value_t = 8, value_parser = checks::parser(checks::max_batch))]
    max_batch: usize,
    /// cuda or cuda:N.
    #[arg(long, default_value = "cuda:0", value_parser = str::parse::<DeviceChoice>)]
    device: DeviceChoice,
    /// ONNX Runtime library (libonnxruntime.so).
    #[arg(long)]
    ort_lib: Option<PathBuf>,
}

/// Exit 0 when the requested engine and device can run here, 1 when not.
pub fn doctor(args: &DoctorArgs) -> ExitCode {
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

pub fn models(command: ModelsCommand) -> anyhow::Result<()> {
    match command {
        ModelsCommand::List => print!("{}", zoo::list_report()),
        ModelsCommand::Inspect { file, ort_lib } => {
            print!("{}", zoo::inspect_report(&file, ort_lib.as_deref())?);
        }
        ModelsCommand::BuildEngine(args) => build_engine(&args)?,
    }
    Ok(())
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
