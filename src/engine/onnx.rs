//! ONNX Runtime through `ort`: the CPU execution provider, or the CUDA or TensorRT provider on a
//! CUDA device (see [`super::select`] for which).

use std::path::{Path, PathBuf};
use std::time::Instant;

use ort::ep::{self, ExecutionProviderDispatch};
use ort::session::Session;
use ort::session::builder::{GraphOptimizationLevel, SessionBuilder};
use ort::value::{TensorRef, ValueType};

use super::device::{ComputeStream, DeviceBatch, DeviceEngine, DeviceSession};
use super::graph::{GraphDescription, read_metadata};
use super::session::{first_line, open_session};
use super::tensorrt::{self, CacheKey, ShapeProfile, TensorRtOptions};
use super::{DeclaredShape, Engine, Execution, ModelInfo, probe};
use crate::error::{Error, Result};

// Field order is drop order: the device allocator goes before the session it came from, and
// the stream the session runs on after it.
pub struct OnnxEngine {
    /// Device runs (inputs and outputs in device memory).
    device: Option<DeviceSession>,
    session: Session,
    info: ModelInfo,
    /// Item shape without the batch dimension, for building input tensors.
    input_item: Vec<usize>,
    /// Held, never read: the execution provider runs on this stream's raw handle.
    _compute_stream: Option<ComputeStream>,
}

#[derive(Clone, Debug, Default)]
pub struct OnnxOptions {
    /// Intra-op threads; 0 lets ONNX Runtime use every core.
    pub threads: usize,
    /// Which execution provider runs the model, on which device.
    pub execution: Execution,
    /// The largest batch the model will be given (TensorRT builds its engine for 1 to this).
    pub max_batch: usize,
    pub tensorrt: TensorRtOptions,
    /// On a GPU: run on this stream, the kernels' own, with inputs and outputs in device memory.
    pub compute_stream: Option<ComputeStream>,
}

impl OnnxEngine {
    pub fn load(
        path: &Path,
        environment: &ort::environment::Environment,
        options: &OnnxOptions,
    ) -> Result<Self> {
        let model_error = Error::model(path);
        // A missing file fails in `open_session`, the TensorRT provider's `declared_input` first.
        let providers = execution_providers(path, environment, options)?;
        let started = Instant::now();
        let building = providers
            .engine_cache
            .as_ref()
            .filter(|cache| !cache.existed)
            .map(|_| build_spinner(path));
        // Every fusion, but not the NCHWc layout of `All`: on Sapiens' ViT and deconvolution
        // heads it gains nothing at 0.3B and costs light models its reorders (benches/README.md).
        let session = open_session(
            path,
            environment,
            GraphOptimizationLevel::Level2,
            options.threads,
            |builder| register(builder, &providers, options.execution),
        );
        if let Some(spinner) = building {
            spinner.finish_and_clear();
        }
        let session = session?;
        if let Some(cache) = &providers.engine_cache {
            let verb = if cache.existed {
                "loaded from"
            } else {
                "built into"
            };
            tracing::info!(
                seconds = started.elapsed().as_secs_f32(),
                "TensorRT engine {verb} {}",
                cache.folder.display()
            );
        }
        let mut info = describe(path, &session).map_err(&model_error)?;
        info.provider = provider_name(options.execution);
        if matches!(options.execution, Execution::TensorRt { .. }) && info.has_fused_attention() {
            tracing::warn!(
                model = %path.display(),
                "its attention is ONNX Runtime's fused com.microsoft op, which TensorRT cannot run: \
                 each block goes back to the CUDA provider between TensorRT parts; for \
                 --engine tensorrt export without --fused-attention"
            );
        }
        let input_item = static_item(&info.input_shape, &info.input_name).map_err(&model_error)?;
        let device = match (options.execution.device(), &options.compute_stream) {
            (Some(device), Some(_)) => {
                let output_item =
                    static_item(&info.output_shape, &info.output_name).map_err(&model_error)?;
                let session = DeviceSession::new(
                    &session,
                    device,
                    (&info.input_name, &input_item),
                    (&info.output_name, &output_item),
                    &info.id,
                )?;
                Some(session)
            }
            _ => None,
        };
        Ok(OnnxEngine {
            device,
            session,
            info,
            input_item,
            _compute_stream: options.compute_stream.clone(),
        })
    }

    /// What the model declares, beyond [`ModelInfo`]: for tools that describe it.
    pub fn graph(&self) -> GraphDescription {
        super::graph::describe_session(&self.session)
    }
}

impl Engine for OnnxEngine {
    fn info(&self) -> &ModelInfo {
        &self.info
    }

    fn run(&mut self, input: &[f32], batch: usize, output: &mut Vec<f32>) -> Result<()> {
        let inference_error = |message: String| Error::Inference {
            model: self.info.id.clone(),
            message,
        };
        let mut shape = vec![batch];
        shape.extend_from_slice(&self.input_item);
        let tensor = TensorRef::from_array_view((shape, input))
            .map_err(|e| inference_error(e.to_string()))?;
        let outputs = self
            .session
            .run(ort::inputs![self.info.input_name.as_str() => tensor])
            .map_err(|e| inference_error(e.to_string()))?;
        let (_, data) = outputs[0]
            .try_extract_tensor::<f32>()
            .map_err(|e| inference_error(e.to_string()))?;
        // One copy: ONNX Runtime owns its output buffers, the decoders read pooled ones.
        output.extend_from_slice(data);
        Ok(())
    }

    fn device(&mut self) -> Option<&mut dyn DeviceEngine> {
        match self.device {
            Some(_) => Some(self),
            None => None,
        }
    }
}

impl DeviceEngine for OnnxEngine {
    fn device_batch(&self, items: usize) -> Result<DeviceBatch> {
        let device = self
            .device
            .as_ref()
            .expect("device() hands out device engines only");
        device.batch(&self.session, items)
    }

    fn run_device(&mut self, batch: &DeviceBatch) -> Result<()> {
        let device = self
            .device
            .as_ref()
            .expect("device() hands out device engines only");
        device.run(&mut self.session, batch)
    }
}

/// A declared shape without its batch dimension, every dimension fixed.
fn static_item(shape: &DeclaredShape, name: &str) -> std::result::Result<Vec<usize>, String> {
    shape[1..]
        .iter()
        .map(|d| d.ok_or_else(|| format!("'{name}' has a dynamic non-batch dimension")))
        .collect()
}

/// A spinner with the elapsed time while TensorRT builds an engine (minutes, silently), on a
/// terminal only.
fn build_spinner(path: &Path) -> indicatif::ProgressBar {
    let spinner = indicatif::ProgressBar::with_draw_target(
        None,
        indicatif::ProgressDrawTarget::stderr_with_hz(4),
    );
    if let Ok(style) = indicatif::ProgressStyle::with_template("{spinner} {msg} {elapsed}") {
        spinner.set_style(style);
    }
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    spinner.set_message(format!("building the TensorRT engine for {name}"));
    spinner.enable_steady_tick(std::time::Duration::from_millis(250));
    spinner
}

/// The execution providers to register, and the TensorRT engine cache they use.
struct Providers {
    list: Vec<ExecutionProviderDispatch>,
    engine_cache: Option<EngineCache>,
}

struct EngineCache {
    folder: PathBuf,
    /// Whether an engine was already there (a load, not a build).
    existed: bool,
}

fn execution_providers(
    path: &Path,
    environment: &ort::environment::Environment,
    options: &OnnxOptions,
) -> Result<Providers> {
    let cuda = |device| cuda_provider(device, options.compute_stream.as_ref());
    match options.execution {
        Execution::Cpu => Ok(Providers {
            list: Vec::new(),
            engine_cache: None,
        }),
        Execution::Cuda { device } => Ok(Providers {
            list: vec![cuda(device)],
            engine_cache: None,
        }),
        Execution::TensorRt { device } => {
            let (provider, cache) = tensorrt_provider(path, environment, options, device)?;
            // TensorRT hands the nodes it cannot run to CUDA, not to the CPU.
            Ok(Providers {
                list: vec![provider, cuda(device)],
                engine_cache: Some(cache),
            })
        }
    }
}

/// The CUDA provider on `device`, on `stream` when given: the session that uses it must keep
/// the stream alive as long as itself.
fn cuda_provider(device: usize, stream: Option<&ComputeStream>) -> ExecutionProviderDispatch {
    let provider = ep::CUDA::default().with_device_id(device as i32);
    let provider = match stream {
        // SAFETY: the caller keeps the stream alive as long as the session (`OnnxEngine` and
        // `PersonDetector` hold it).
        Some(stream) => unsafe { provider.with_compute_stream(stream.raw()) },
        None => provider,
    };
    provider.build().error_on_failure()
}

/// Registers the CUDA provider on `device` (see [`cuda_provider`]).
pub(crate) fn register_cuda(
    builder: SessionBuilder,
    device: usize,
    stream: Option<&ComputeStream>,
) -> Result<SessionBuilder> {
    let providers = Providers {
        list: vec![cuda_provider(device, stream)],
        engine_cache: None,
    };
    register(builder, &providers, Execution::Cuda { device })
}

/// The TensorRT provider: fp16 by default, the batch profile, and the engine and timing caches
/// in the folder of this model, GPU, TensorRT version and profile.
fn tensorrt_provider(
    path: &Path,
    environment: &ort::environment::Environment,
    options: &OnnxOptions,
    device: usize,
) -> Result<(ExecutionProviderDispatch, EngineCache)> {
    let model_error = Error::model(path);
    let (input_name, item) = declared_input(path, environment)?;
    let profile = ShapeProfile::up_to(options.max_batch);
    let [min, opt, max] = profile.shapes(&input_name, &item);
    let gpu = probe::cuda_device_name(device).map_err(Error::Execution)?;
    let tensorrt_version = probe::tensorrt_version()
        .map(|(major, minor, patch)| format!("{major}.{minor}.{patch}"))
        .ok_or_else(|| {
            Error::Execution(format!(
                "TensorRT ({}) cannot be loaded",
                probe::TENSORRT_LIBRARY
            ))
        })?;
    let key = CacheKey {
        model_sha256: tensorrt::file_sha256(path)
            .map_err(|e| model_error(format!("cannot read: {e}")))?,
        gpu,
        tensorrt_version,
        fp16: options.tensorrt.fp16,
        profile: [min.as_str(), opt.as_str(), max.as_str()].join(","),
    };
    let folder = key.folder(&options.tensorrt.cache_root, path);
    std::fs::create_dir_all(&folder)
        .map_err(|e| Error::io(format!("creating the engine cache {}", folder.display()), e))?;
    std::fs::write(folder.join("key.txt"), key.describe())
        .map_err(|e| Error::io(format!("writing {}/key.txt", folder.display()), e))?;
    let existed = tensorrt::holds_engine(&folder);
    if !existed {
        tracing::info!(model = %path.display(), cache = %folder.display(), "building a TensorRT engine for batches {min} to {max}: this can take minutes, later starts load it");
    }
    let folder_text = folder.display().to_string();
    let mut provider = ep::TensorRT::default();
    if let Some(stream) = &options.compute_stream {
        // SAFETY: the engine keeps the stream alive as long as its session (`OnnxEngine::device`).
        provider = unsafe { provider.with_compute_stream(stream.raw()) };
    }
    let provider = provider
        .with_device_id(device as i32)
        .with_fp16(options.tensorrt.fp16)
        .with_engine_cache(true)
        .with_engine_cache_path(&folder_text)
        .with_timing_cache(true)
        .with_timing_cache_path(&folder_text)
        .with_profile_min_shapes(min)
        .with_profile_opt_shapes(opt)
        .with_profile_max_shapes(max)
        .build()
        .error_on_failure();
    Ok((provider, EngineCache { folder, existed }))
}

/// The model's input name and item shape, read through a CPU session without optimisation
/// (TensorRT's profile must name the input before the real session is made).
fn declared_input(
    path: &Path,
    environment: &ort::environment::Environment,
) -> Result<(String, Vec<usize>)> {
    let model_error = Error::model(path);
    let session = open_session(path, environment, GraphOptimizationLevel::Disable, 0, Ok)?;
    let info = describe(path, &session).map_err(&model_error)?;
    let item = static_item(&info.input_shape, &info.input_name).map_err(model_error)?;
    Ok((info.input_name, item))
}

fn register(
    builder: SessionBuilder,
    providers: &Providers,
    execution: Execution,
) -> Result<SessionBuilder> {
    if providers.list.is_empty() {
        return Ok(builder);
    }
    builder
        .with_execution_providers(&providers.list)
        .map_err(|e| {
            Error::Execution(format!(
                "{execution} cannot start: {}",
                first_line(&e.to_string())
            ))
        })
}

fn provider_name(execution: Execution) -> String {
    match execution {
        Execution::Cpu => "onnxruntime-cpu".into(),
        Execution::Cuda { device } => format!("onnxruntime-cuda:{device}"),
        Execution::TensorRt { device } => format!("onnxruntime-tensorrt:{device}"),
    }
}

fn describe(path: &Path, session: &Session) -> std::result::Result<ModelInfo, String> {
    let [input] = session.inputs() else {
        return Err(format!(
            "expected 1 input, found {}",
            session.inputs().len()
        ));
    };
    let Some(output) = session.outputs().first() else {
        return Err("the model has no outputs".into());
    };
    let input_shape = float_tensor_shape(input.dtype())
        .ok_or_else(|| format!("input '{}' is not a float32 tensor", input.name()))?;
    let output_shape = float_tensor_shape(output.dtype())
        .ok_or_else(|| format!("output '{}' is not a float32 tensor", output.name()))?;
    Ok(ModelInfo {
        path: path.to_owned(),
        id: path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default(),
        input_name: input.name().to_owned(),
        input_shape,
        output_name: output.name().to_owned(),
        output_shape,
        metadata: read_metadata(session),
        provider: "onnxruntime-cpu".into(),
    })
}

fn float_tensor_shape(ty: &ValueType) -> Option<DeclaredShape> {
    match ty {
        ValueType::Tensor { ty, shape, .. } if *ty == ort::value::TensorElementType::Float32 => {
            Some(shape.iter().map(|&d| usize::try_from(d).ok()).collect())
        }
        _ => None,
    }
}
