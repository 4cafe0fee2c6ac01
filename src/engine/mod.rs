//! Inference engines. The pipeline talks to the [`Engine`] trait only, so ONNX Runtime on the CPU,
//! its CUDA and TensorRT execution providers, or a direct TensorRT binding later plug in the same
//! way. [`ExecutionChoice`] is what the user asked for (`--engine`, `--device`); [`select`] turns it
//! into an [`Execution`] by what [`probe::Capabilities`] found on this machine.

pub mod device;
pub mod graph;
pub mod multi_output;
pub mod onnx;
pub mod probe;
pub mod runtime;
mod session;
pub mod tensorrt;
pub mod triton;

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use crate::error::{Error, Result};
use probe::Capabilities;

/// A tensor's dimensions as the model declares them; `None` for a dynamic dimension.
pub type DeclaredShape = Vec<Option<usize>>;

/// What a loaded model declares about itself.
#[derive(Clone, Debug)]
pub struct ModelInfo {
    pub path: PathBuf,
    /// Short identifier for results: the file stem.
    pub id: String,
    pub input_name: String,
    pub input_shape: DeclaredShape,
    pub output_name: String,
    pub output_shape: DeclaredShape,
    /// The model's ONNX metadata properties.
    pub metadata: BTreeMap<String, String>,
    /// Which runtime and execution provider runs it, for logs and results.
    pub provider: String,
}

impl ModelInfo {
    /// Models made by `engines/generate_models.py` say so; their outputs are not real results.
    pub fn has_random_weights(&self) -> bool {
        self.metadata
            .get("sapiens_stream.random_weights")
            .is_some_and(|v| v == "true")
    }

    /// Written with `--fused-attention` (engines/fuse_attention.py): ONNX Runtime's fused
    /// com.microsoft attention op, for its CUDA and CPU providers.
    pub fn has_fused_attention(&self) -> bool {
        self.metadata
            .get("sapiens_stream.attention")
            .is_some_and(|v| v.starts_with("com.microsoft."))
    }
}

/// Runs one model on batches of NCHW f32 inputs.
pub trait Engine: Send {
    fn info(&self) -> &ModelInfo;

    /// Runs `batch` items laid out contiguously in `input` and appends the first output, batch
    /// first and contiguous, to `output`.
    fn run(&mut self, input: &[f32], batch: usize, output: &mut Vec<f32>) -> Result<()>;

    /// The model runs on another process or machine (its calls wait on the network).
    fn is_remote(&self) -> bool {
        false
    }

    /// The engine's device side, when it runs on the GPU stream the kernels use.
    fn device(&mut self) -> Option<&mut dyn device::DeviceEngine> {
        None
    }
}

/// `--engine`: which ONNX Runtime execution provider runs the models.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum EngineChoice {
    /// TensorRT, then CUDA, then CPU: the first that can run here.
    #[default]
    Auto,
    TensorRt,
    Cuda,
    Cpu,
}

/// `--device`: where the models run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DeviceChoice {
    /// The first CUDA device when a GPU engine is picked, else the CPU.
    #[default]
    Auto,
    Cpu,
    /// A CUDA device by ordinal (`cuda` is `cuda:0`).
    Cuda(usize),
}

impl FromStr for EngineChoice {
    type Err = String;

    fn from_str(text: &str) -> std::result::Result<Self, String> {
        match text {
            "auto" => Ok(Self::Auto),
            "tensorrt" => Ok(Self::TensorRt),
            "cuda" => Ok(Self::Cuda),
            "cpu" => Ok(Self::Cpu),
            _ => Err(format!(
                "unknown engine '{text}' (auto, tensorrt, cuda, cpu)"
            )),
        }
    }
}

impl FromStr for DeviceChoice {
    type Err = String;

    fn from_str(text: &str) -> std::result::Result<Self, String> {
        match text {
            "auto" => Ok(Self::Auto),
            "cpu" => Ok(Self::Cpu),
            "cuda" => Ok(Self::Cuda(0)),
            _ => text
                .strip_prefix("cuda:")
                .and_then(|n| n.parse().ok())
                .map(Self::Cuda)
                .ok_or_else(|| format!("unknown device '{text}' (auto, cpu, cuda, cuda:N)")),
        }
    }
}

impl fmt::Display for EngineChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Auto => "auto",
            Self::TensorRt => "tensorrt",
            Self::Cuda => "cuda",
            Self::Cpu => "cpu",
        })
    }
}

impl fmt::Display for DeviceChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Auto => f.write_str("auto"),
            Self::Cpu => f.write_str("cpu"),
            Self::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}

/// What the user asked for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ExecutionChoice {
    pub engine: EngineChoice,
    pub device: DeviceChoice,
}

/// What runs the models, once chosen.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Execution {
    #[default]
    Cpu,
    /// ONNX Runtime's CUDA execution provider on a device.
    Cuda { device: usize },
    /// ONNX Runtime's TensorRT execution provider on a device (CUDA for the nodes TensorRT lacks).
    TensorRt { device: usize },
}

impl Execution {
    /// The CUDA device it runs on, if any.
    pub fn device(self) -> Option<usize> {
        match self {
            Self::Cpu => None,
            Self::Cuda { device } | Self::TensorRt { device } => Some(device),
        }
    }
}

impl fmt::Display for Execution {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Cpu => f.write_str("cpu"),
            Self::Cuda { device } => write!(f, "cuda on cuda:{device}"),
            Self::TensorRt { device } => write!(f, "tensorrt on cuda:{device}"),
        }
    }
}

/// The outcome of [`select`]: what runs, and why each engine tried before it could not.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Selection {
    pub execution: Execution,
    /// (engine, reason) for every engine `auto` passed over, in the order tried.
    pub passed_over: Vec<(EngineChoice, String)>,
}

impl Selection {
    /// One line for the start-up log.
    pub fn describe(&self, choice: ExecutionChoice) -> String {
        let mut line = format!(
            "engine {} (asked: --engine {} --device {})",
            self.execution, choice.engine, choice.device
        );
        for (engine, reason) in &self.passed_over {
            line.push_str(&format!("; not {engine}: {reason}"));
        }
        line
    }
}

/// Picks what runs the models. An explicit engine or device that cannot run is an error naming
/// what is missing; only `auto` moves on, and it records why. `probe` runs only when a GPU engine
/// is a candidate (probing loads the CUDA libraries, which takes a while).
pub fn select(choice: ExecutionChoice, probe: impl FnOnce() -> Capabilities) -> Result<Selection> {
    let unavailable = |what: String, reasons: Vec<String>| {
        Error::Execution(format!("{what} cannot run here: {}", reasons.join("; ")))
    };
    let device = match choice.device {
        DeviceChoice::Cuda(n) => Some(n),
        DeviceChoice::Auto => None,
        DeviceChoice::Cpu => {
            return match choice.engine {
                EngineChoice::Auto | EngineChoice::Cpu => Ok(Selection {
                    execution: Execution::Cpu,
                    passed_over: Vec::new(),
                }),
                gpu => Err(Error::Execution(format!(
                    "--engine {gpu} needs a CUDA device, not --device cpu"
                ))),
            };
        }
    };
    if choice.engine == EngineChoice::Cpu && device.is_none() {
        return Ok(Selection {
            execution: Execution::Cpu,
            passed_over: Vec::new(),
        });
    }
    let capabilities = probe();
    let on = device.unwrap_or(0);
    let tensorrt = || capabilities.tensorrt_blockers(on);
    let cuda = || capabilities.cuda_blockers(on);
    match choice.engine {
        EngineChoice::Cpu => Err(Error::Execution(format!(
            "--engine cpu does not run on --device {}",
            choice.device
        ))),
        EngineChoice::TensorRt => match tensorrt() {
            blockers if blockers.is_empty() => Ok(Selection {
                execution: Execution::TensorRt { device: on },
                passed_over: Vec::new(),
            }),
            blockers => Err(unavailable(
                format!("--engine tensorrt on cuda:{on}"),
                blockers,
            )),
        },
        EngineChoice::Cuda => match cuda() {
            blockers if blockers.is_empty() => Ok(Selection {
                execution: Execution::Cuda { device: on },
                passed_over: Vec::new(),
            }),
            blockers => Err(unavailable(format!("--engine cuda on cuda:{on}"), blockers)),
        },
        EngineChoice::Auto => {
            let mut passed_over = Vec::new();
            // TensorRT needs everything CUDA needs; those reasons are given once, under cuda.
            let cuda_blockers = cuda();
            let mut tensorrt_blockers: Vec<String> = tensorrt()
                .into_iter()
                .filter(|b| !cuda_blockers.contains(b))
                .collect();
            if tensorrt_blockers.is_empty() && !cuda_blockers.is_empty() {
                tensorrt_blockers.push("needs CUDA, which cannot run (below)".into());
            }
            let candidates = [
                (
                    EngineChoice::TensorRt,
                    tensorrt_blockers,
                    Execution::TensorRt { device: on },
                ),
                (
                    EngineChoice::Cuda,
                    cuda_blockers,
                    Execution::Cuda { device: on },
                ),
            ];
            for (engine, blockers, execution) in candidates {
                if blockers.is_empty() {
                    return Ok(Selection {
                        execution,
                        passed_over,
                    });
                }
                passed_over.push((engine, blockers.join("; ")));
            }
            if device.is_some() {
                let reasons = passed_over
                    .into_iter()
                    .map(|(e, r)| format!("{e}: {r}"))
                    .collect();
                return Err(unavailable(format!("--device cuda:{on}"), reasons));
            }
            Ok(Selection {
                execution: Execution::Cpu,
                passed_over,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::probe::{CudaDriver, LoadedLibrary, OnnxRuntimeInfo};
    use super::*;

    fn found() -> probe::LibraryProbe {
        Ok(LoadedLibrary {
            location: "lib.so".into(),
            version: None,
        })
    }

    /// A machine with one GPU, the GPU build of ONNX Runtime, and every library.
    fn gpu_machine() -> Capabilities {
        Capabilities {
            onnx_runtime: Ok(OnnxRuntimeInfo {
                library: "libonnxruntime.so".into(),
                build: "test".into(),
                providers: vec![
                    "TensorrtExecutionProvider",
                    "CUDAExecutionProvider",
                    "CPUExecutionProvider",
                ],
            }),
            cuda: Ok(CudaDriver {
                version: 12040,
                devices: vec!["NVIDIA H100".into()],
            }),
            cuda_provider_libraries: probe::CUDA_PROVIDER_LIBRARIES
                .iter()
                .map(|&n| (n.to_owned(), found()))
                .collect(),
            tensorrt: found(),
            nvrtc: found(),
        }
    }

    /// This machine's kind: CPU-only ONNX Runtime, no driver.
    fn cpu_machine() -> Capabilities {
        Capabilities {
            onnx_runtime: Ok(OnnxRuntimeInfo {
                library: "libonnxruntime.so".into(),
                build: "test".into(),
                providers: vec!["CPUExecutionProvider"],
            }),
            cuda: Err("libcuda.so.1 (the NVIDIA driver) not found".into()),
            cuda_provider_libraries: probe::CUDA_PROVIDER_LIBRARIES
                .iter()
                .map(|&n| (n.to_owned(), Err("absent".into())))
                .collect(),
            tensorrt: Err("TensorRT (libnvinfer.so.10) not found".into()),
            nvrtc: Err("absent".into()),
        }
    }

    fn choice(engine: &str, device: &str) -> ExecutionChoice {
        ExecutionChoice {
            engine: engine.parse().unwrap(),
            device: device.parse().unwrap(),
        }
    }

    #[test]
    fn parses_engines_and_devices() {
        assert_eq!("cuda:3".parse(), Ok(DeviceChoice::Cuda(3)));
        assert_eq!("cuda".parse(), Ok(DeviceChoice::Cuda(0)));
        assert!(
            "cuda:x"
                .parse::<DeviceChoice>()
                .unwrap_err()
                .contains("cuda:N")
        );
        assert_eq!("tensorrt".parse(), Ok(EngineChoice::TensorRt));
        assert!(
            "gpu"
                .parse::<EngineChoice>()
                .unwrap_err()
                .contains("auto, tensorrt, cuda, cpu")
        );
    }

    #[test]
    fn auto_prefers_tensorrt_then_cuda_then_cpu() {
        let auto = choice("auto", "auto");
        assert_eq!(
            select(auto, gpu_machine).unwrap().execution,
            Execution::TensorRt { device: 0 }
        );
        let no_tensorrt = || Capabilities {
            tensorrt: Err("TensorRT missing".into()),
            ..gpu_machine()
        };
        let picked = select(auto, no_tensorrt).unwrap();
        assert_eq!(picked.execution, Execution::Cuda { device: 0 });
        assert_eq!(
            picked.passed_over,
            vec![(EngineChoice::TensorRt, "TensorRT missing".to_owned())]
        );
        let picked = select(auto, cpu_machine).unwrap();
        assert_eq!(picked.execution, Execution::Cpu);
        let reasons: Vec<_> = picked.passed_over.iter().map(|(e, _)| *e).collect();
        assert_eq!(reasons, [EngineChoice::TensorRt, EngineChoice::Cuda]);
        assert!(
            picked.passed_over[1]
                .1
                .contains("has no CUDAExecutionProvider"),
            "{:?}",
            picked.passed_over
        );
        assert!(
            picked.describe(auto).contains("not cuda: "),
            "{}",
            picked.describe(auto)
        );
    }

    #[test]
    fn explicit_choices_that_cannot_run_are_errors() {
        let error = select(choice("cuda", "auto"), cpu_machine)
            .unwrap_err()
            .to_string();
        assert!(
            error.starts_with("--engine cuda on cuda:0 cannot run here: "),
            "{error}"
        );
        assert!(
            error.contains("libcuda.so.1") && error.contains("libcudnn.so.9"),
            "{error}"
        );
        assert!(!error.contains('\n'));
        let error = select(choice("auto", "cuda:1"), gpu_machine)
            .unwrap_err()
            .to_string();
        assert!(error.contains("no CUDA device cuda:1 (1 found)"), "{error}");
        assert!(
            select(choice("tensorrt", "cpu"), gpu_machine)
                .unwrap_err()
                .to_string()
                .contains("needs a CUDA device")
        );
        assert!(select(choice("cpu", "cuda:0"), gpu_machine).is_err());
        assert_eq!(
            select(choice("cuda", "cuda:0"), gpu_machine)
                .unwrap()
                .execution,
            Execution::Cuda { device: 0 }
        );
    }

    #[test]
    fn cpu_needs_no_probe() {
        let never = || -> Capabilities { panic!("probed for a CPU choice") };
        assert_eq!(
            select(choice("cpu", "auto"), never).unwrap().execution,
            Execution::Cpu
        );
        assert_eq!(
            select(choice("auto", "cpu"), never).unwrap().execution,
            Execution::Cpu
        );
    }
}
