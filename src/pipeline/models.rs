//! The models of a run: loaded per task, checked, with the GPU side when there is one, and
//! where the persons of a frame come from.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};

use crate::cuda::Gpu;
use crate::engine::device::ComputeStream;
use crate::engine::onnx::{OnnxEngine, OnnxOptions};
use crate::engine::probe::Capabilities;
use crate::engine::triton::{TritonEngine, TritonUrl};
use crate::engine::{Engine, Execution, Selection, runtime};
use crate::error::{Error, Result};
use crate::frame::Frame;
use crate::metrics::Metrics;
use crate::pipeline::infer::device::DeviceInference;
use crate::tasks::detect::{BoxesFile, PersonDetector};
use crate::tasks::keypoint_sets::{self, KeypointSet};
use crate::tasks::pose::PersonBox;
use crate::tasks::{OutputLayout, Task, validate_model};

use super::config::{PersonSource, PipelineConfig};

/// Finds the persons of a frame, on each stream's preprocess thread; one detector serves them
/// all, a call at a time.
#[derive(Clone)]
pub(super) enum PersonFinder {
    WholeFrame,
    Detector(Arc<Mutex<PersonDetector>>),
    File(Arc<BoxesFile>),
    /// The detector runs on the GPU, in the inference stage, on the frame it has uploaded.
    OnGpu,
}

impl PersonFinder {
    pub(super) fn open(config: &PipelineConfig) -> Result<Self> {
        let ort_lib = config.ort_lib.as_deref();
        Ok(match &config.persons {
            PersonSource::WholeFrame => PersonFinder::WholeFrame,
            PersonSource::Detector { model, options } if TritonUrl::is_url(model) => {
                let url = TritonUrl::of_path(model)?.expect("a triton:// URL");
                let detector = PersonDetector::connect(&url, config.remote_options(), options)?;
                tracing::info!(model = %url, layout = ?detector.layout(), "person detector on Triton");
                PersonFinder::Detector(Arc::new(Mutex::new(detector)))
            }
            PersonSource::Detector { model, options } => {
                let environment = runtime::environment(ort_lib)?;
                let detector = PersonDetector::load(model, environment, options)?;
                tracing::info!(model = %model.display(), layout = ?detector.layout(), "person detector loaded");
                PersonFinder::Detector(Arc::new(Mutex::new(detector)))
            }
            PersonSource::BoxesFile(path) => PersonFinder::File(Arc::new(BoxesFile::load(path)?)),
        })
    }

    /// Boxes by decreasing score; boxes too small to crop are left out.
    pub(super) fn boxes(&mut self, frame: &Frame) -> Result<Vec<PersonBox>> {
        let mut boxes = match self {
            PersonFinder::WholeFrame => {
                vec![PersonBox::whole_frame(frame.width(), frame.height())]
            }
            PersonFinder::Detector(detector) => {
                let mut detector = detector.lock().unwrap_or_else(PoisonError::into_inner);
                frame.with_host_frame(|f| detector.detect(*f))?
            }
            PersonFinder::File(file) => file.boxes_for(frame.index),
            PersonFinder::OnGpu => Vec::new(),
        };
        boxes.retain(PersonBox::is_croppable);
        Ok(boxes)
    }
}

/// A model loaded for one task, with its checked output layout.
pub(super) struct TaskModel {
    pub(super) task: Task,
    pub(super) engine: Box<dyn Engine>,
    pub(super) layout: OutputLayout,
    /// Items per call: the model's fixed batch size if it has one, else `--max-batch`.
    pub(super) max_batch: usize,
    pub(super) metrics: Arc<Metrics>,
}

/// The models of one run, one per task given.
pub(super) struct Models {
    pub(super) pose: Option<TaskModel>,
    pub(super) seg: Option<TaskModel>,
    pub(super) depth: Option<TaskModel>,
    pub(super) normal: Option<TaskModel>,
    /// The person detector, when it runs on the GPU (it then reads the uploaded frame).
    pub(super) detector: Option<PersonDetector>,
    /// On a GPU with its kernels: model inputs made, and outputs decoded, on the device. Last,
    /// so it drops after the engines: its bound batches hold their sessions' last references.
    pub(super) device: Option<DeviceInference>,
    /// Inputs per batch over the streams (`--max-batch`, or the device's default).
    pub(super) batch: usize,
}

impl Models {
    pub(super) fn by_task(&self) -> [(Task, Option<&TaskModel>); 4] {
        [
            (Task::Pose, self.pose.as_ref()),
            (Task::Seg, self.seg.as_ref()),
            (Task::Depth, self.depth.as_ref()),
            (Task::Normal, self.normal.as_ref()),
        ]
    }

    /// Every model runs on a remote server (whose requests may be in flight together).
    pub(super) fn all_remote(&self) -> bool {
        self.by_task()
            .into_iter()
            .filter_map(|(_, model)| model)
            .all(|m| m.engine.is_remote())
    }

    /// The task of the model at `path` (a remote model's URL), for the error counters.
    pub(super) fn task_of(&self, path: &str) -> &'static str {
        self.by_task()
            .into_iter()
            .find(|(_, model)| model.is_some_and(|m| m.engine.info().path.as_os_str() == path))
            .map_or("detect", |(task, _)| task.name())
    }

    /// Which whole-frame inputs the dense models take.
    pub(super) fn dense_inputs(&self) -> DenseInputs {
        let takes = |model: &Option<TaskModel>, padded: bool| {
            model
                .as_ref()
                .is_some_and(|m| m.layout.takes_padded_input() == padded)
        };
        let dense = [&self.seg, &self.depth, &self.normal];
        DenseInputs {
            stretched: dense.iter().any(|m| takes(m, false)),
            padded: dense.iter().any(|m| takes(m, true)),
        }
    }
}

/// The whole-frame inputs a frame needs: stretched to the model input (the first family's dense
/// models, Sapiens2 seg), and kept in aspect with padding (Sapiens2 normal and pointmap).
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct DenseInputs {
    pub(super) stretched: bool,
    pub(super) padded: bool,
}

/// Everything the post-processing needs to know about the models, shared with the sink.
pub(super) struct ModelSummary {
    pub(super) ids: std::collections::BTreeMap<&'static str, String>,
    pub(super) random_weights: bool,
    pub(super) keypoint_set: Option<&'static KeypointSet>,
    pub(super) pose_layout: Option<OutputLayout>,
    pub(super) seg_layout: Option<OutputLayout>,
    pub(super) depth_layout: Option<OutputLayout>,
    pub(super) normal_layout: Option<OutputLayout>,
}

/// `--max-batch` unless given: a GPU runs a batch in about the time of one input.
const GPU_BATCH: usize = 8;
/// On the CPU a batch takes as long as its inputs one by one, and holds the activations of
/// every input at once (about 200 MB each for the tiny pose model).
const CPU_BATCH: usize = 1;

pub(super) fn load_models(config: &PipelineConfig, metrics: &Arc<Metrics>) -> Result<Models> {
    let environment = runtime::environment(config.ort_lib.as_deref())?;
    let remote = every_model_remote(config);
    let selection = if remote {
        tracing::info!("every model runs on Triton: no local engine");
        Selection {
            execution: Execution::Cpu,
            passed_over: Vec::new(),
        }
    } else {
        let selection = crate::engine::select(config.execution, || {
            Capabilities::probe(config.ort_lib.as_deref())
        })?;
        tracing::info!("{}", selection.describe(config.execution));
        selection
    };
    let on_gpu = selection.execution.device().is_some();
    // Triton's GPUs run a batch in about the time of one input, as a local GPU does.
    let batch = config.max_batch.unwrap_or(if on_gpu || remote {
        GPU_BATCH
    } else {
        CPU_BATCH
    });
    let gpu = selection.execution.device().and_then(open_kernels);
    let compute_stream = gpu.as_ref().map(|g| ComputeStream(g.stream().clone()));
    let load = |task: Task, path: &Option<PathBuf>| -> Result<Option<TaskModel>> {
        let Some(path) = path else { return Ok(None) };
        if let Some(url) = TritonUrl::of_path(path)? {
            let engine = TritonEngine::connect(&url, config.remote_options())?;
            return task_model(task, Box::new(engine), batch, metrics).map(Some);
        }
        let options = OnnxOptions {
            threads: config.threads,
            execution: selection.execution,
            // Dense tasks run one frame at a time, unless frames of several streams batch.
            max_batch: if task == Task::Pose || config.many_streams() {
                batch
            } else {
                1
            },
            compute_stream: compute_stream.clone(),
            ..OnnxOptions::default()
        };
        let engine = OnnxEngine::load(path, environment, &options)?;
        task_model(task, Box::new(engine), batch, metrics).map(Some)
    };
    let pose = load(Task::Pose, &config.models.pose)?;
    let detector = match (&pose, &config.persons, &compute_stream) {
        (Some(_), PersonSource::Detector { model, options }, Some(stream))
            if config.dump.is_none() && !TritonUrl::is_url(model) =>
        {
            let device = stream.0.context().ordinal();
            let detector =
                PersonDetector::load_on_gpu(model, environment, options, device, stream)?;
            tracing::info!(model = %model.display(), layout = ?detector.layout(), "person detector loaded on cuda:{device}: frames are letterboxed on the GPU");
            Some(detector)
        }
        _ => None,
    };
    let depth = load(Task::Depth, &config.models.depth)?;
    let normal = load(Task::Normal, &config.models.normal)?;
    if gpu.is_some() {
        refuse_padded_on_gpu([&depth, &normal])?;
    }
    Ok(Models {
        pose,
        seg: load(Task::Seg, &config.models.seg)?,
        depth,
        normal,
        detector,
        device: gpu.map(DeviceInference::new),
        batch,
    })
}

/// The GPU kernels make stretched inputs only, and know neither the point map nor the
/// padding to take off: Sapiens2 normal and pointmap models run on the CPU path for now.
fn refuse_padded_on_gpu(models: [&Option<TaskModel>; 2]) -> Result<()> {
    match models.into_iter().flatten().find(|m| m.layout.takes_padded_input()) {
        Some(model) => Err(Error::model(&model.engine.info().path)(
            "is a Sapiens2 normal or pointmap model, whose padded input and post-processing have no GPU kernels yet: run it with --device cpu".into(),
        )),
        None => Ok(()),
    }
}

/// Every model given, the detector too, is a triton:// URL.
fn every_model_remote(config: &PipelineConfig) -> bool {
    let models = &config.models;
    let detector = match &config.persons {
        PersonSource::Detector { model, .. } => Some(model),
        _ => None,
    };
    [&models.pose, &models.seg, &models.depth, &models.normal]
        .into_iter()
        .flatten()
        .chain(detector)
        .all(|path| TritonUrl::is_url(path))
}

/// A loaded engine checked against its task.
fn task_model(
    task: Task,
    engine: Box<dyn Engine>,
    batch: usize,
    metrics: &Arc<Metrics>,
) -> Result<TaskModel> {
    let layout = validate_model(task, engine.info())?;
    let info = engine.info();
    tracing::info!(task = task.name(), model = %info.path.display(), provider = %info.provider, "model loaded");
    let max_batch = info.input_shape[0].unwrap_or(batch.max(1));
    Ok(TaskModel {
        task,
        engine,
        layout,
        max_batch,
        metrics: metrics.clone(),
    })
}

/// The CUDA kernels on `device`; without them (no NVRTC, say) the models still run on the GPU,
/// but frames are prepared and outputs decoded on the CPU, and the tensors cross the bus.
fn open_kernels(device: usize) -> Option<Gpu> {
    match Gpu::open(device) {
        Ok(gpu) => {
            tracing::info!(
                "CUDA kernels on cuda:{device}: model inputs and outputs stay on the GPU"
            );
            Some(gpu)
        }
        Err(e) => {
            tracing::warn!(
                "CUDA kernels unavailable ({e}): frames are prepared and outputs decoded on the CPU"
            );
            None
        }
    }
}

pub(super) fn summarize(models: &Models) -> ModelSummary {
    let mut ids = std::collections::BTreeMap::new();
    let mut random_weights = false;
    for (task, model) in models.by_task() {
        if let Some(model) = model {
            ids.insert(task.name(), model.engine.info().id.clone());
            random_weights |= model.engine.info().has_random_weights();
        }
    }
    ModelSummary {
        ids,
        random_weights,
        keypoint_set: models
            .pose
            .as_ref()
            .and_then(|m| keypoint_sets::keypoint_set(m.layout.channels)),
        pose_layout: models.pose.as_ref().map(|m| m.layout),
        seg_layout: models.seg.as_ref().map(|m| m.layout),
        depth_layout: models.depth.as_ref().map(|m| m.layout),
        normal_layout: models.normal.as_ref().map(|m| m.layout),
    }
}
