//! The subcommands besides `run`: `doctor` and `models`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Subcommand;
use sapiens_stream::engine::onnx::{OnnxEngine, OnnxOptions};
use sapiens_stream::engine::probe::Capabilities;
use sapiens_stream::engine::triton::repository::{RepositoryOptions, write_repository};
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
    /// Models on Triton servers to check (triton://HOST:PORT/MODEL[/VERSION]): the server's
    /// health and version, the model's readiness, config and task.
    #[arg(value_name = "TRITON_URL")]
    remote: Vec<String>,
}

#[derive(Subcommand)]
pub enum ModelsCommand {
    /// List the official checkpoints: task, size, published accuracy, where to download them.
    List,
    /// Describe an ONNX model, or one on a Triton server: inputs, outputs, task, metadata,
    /// whether `run` takes it (for Triton also the server's health and the model's config).
    Inspect {
        /// ONNX model file (weights in `FILE.data` beside it are counted too), or
        /// triton://HOST:PORT/MODEL[/VERSION].
        file: PathBuf,
        /// ONNX Runtime library (libonnxruntime.so); otherwise ORT_DYLIB_PATH, the project's .venv, the system.
        #[arg(long)]
        ort_lib: Option<PathBuf>,
    },
    /// Build a model's TensorRT engine into engines/cache/ ahead of time (the first run would).
    BuildEngine(BuildEngineArgs),
    /// Write a Triton model repository for the official Triton container: OUT_DIR/NAME/
    /// config.pbtxt and OUT_DIR/NAME/1/model.onnx per model (NAME: the file stem).
    TritonRepo(TritonRepoArgs),
}

#[derive(clap::Args)]
pub struct TritonRepoArgs {
    /// The repository folder (made if missing).
    out_dir: PathBuf,
    /// ONNX models (Sapiens task models and person detectors).
    #[arg(required = true)]
    models: Vec<PathBuf>,
    /// The largest batch Triton's dynamic batcher makes, 1 to 256.
    #[arg(long, default_value_t = 8, value_parser = checks::parser(checks::max_batch))]
    max_batch: usize,
    /// How long the batcher holds a request for others to join it, in microseconds.
    #[arg(long, default_value_t = 2000)]
    queue_delay_us: u64,
    /// Model instances per GPU.
    #[arg(long, default_value_t = 1, value_parser = checks::parser(checks::instances))]
    instances: usize,
    /// Run the models through ONNX Runtime's TensorRT accelerator in fp16 on Triton's GPUs.
    #[arg(long)]
    tensorrt_fp16: bool,
    /// ONNX Runtime library (libonnxruntime.so), to read the models.
    #[arg(long)]
    ort_lib: Option<PathBuf>,
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
    let diagnosis = sapiens_stream::doctor::diagnose(choice, args.ort_lib.as_deref(), &args.remote);
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
        ModelsCommand::TritonRepo(args) => triton_repo(&args)?,
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

fn triton_repo(args: &TritonRepoArgs) -> anyhow::Result<()> {
    let environment = runtime::environment(args.ort_lib.as_deref())?;
    let options = RepositoryOptions {
        max_batch: args.max_batch,
        queue_delay_us: args.queue_delay_us,
        instances: args.instances,
        tensorrt_fp16: args.tensorrt_fp16,
    };
    for folder in write_repository(&args.out_dir, &args.models, &options, environment)? {
        println!("{}", folder.display());
    }
    Ok(())
}
