//! The model zoo: the official Sapiens checkpoints listed in `engines/manifest.json` (built into
//! the binary), and `models inspect`, which says what an ONNX file is and whether `run` takes it.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use serde::{Deserialize, Deserializer};

use crate::engine::graph::{self, GraphDescription, TensorSpec};
use crate::engine::onnx::{OnnxEngine, OnnxOptions};
use crate::engine::triton::{self, TritonUrl};
use crate::engine::{Engine, ModelInfo, runtime};
use crate::error::{Error, Result};
use crate::tasks::{self, Family, OutputLayout, Task, keypoint_sets};

/// Every task, in the order `inspect` tries them.
const TASKS: [Task; 4] = [Task::Pose, Task::Seg, Task::Depth, Task::Normal];

const METADATA_TASK: &str = "sapiens_stream.task";
const METADATA_SOURCE: &str = "sapiens_stream.source";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub schema: u32,
    pub about: String,
    pub licence: String,
    pub input: InputContract,
    pub models: Vec<Checkpoint>,
    pub sapiens2: Sapiens2Checkpoints,
    pub detector: Detector,
}

/// The Sapiens2 task checkpoints (safetensors), under their own licence.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sapiens2Checkpoints {
    pub about: String,
    pub licence: String,
    pub licence_url: String,
    /// What the licence allows and forbids, in short.
    pub licence_terms: String,
    pub models: Vec<Checkpoint>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InputContract {
    pub layout: String,
    pub colour: String,
    pub height: usize,
    pub width: usize,
    pub mean: [f32; 3],
    pub std: [f32; 3],
    pub note: String,
}

/// One official checkpoint.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Checkpoint {
    #[serde(deserialize_with = "task_by_name")]
    pub task: Task,
    /// Backbone size: 0.3b, 0.6b, 1b or 2b; Sapiens2 0.4b, 0.8b, 1b or 5b.
    pub size: String,
    pub keypoints: Option<usize>,
    pub classes: Option<usize>,
    /// Output per image: channels, height, width.
    pub output: [usize; 3],
    /// The official file name: TorchScript (`*_torchscript.pt2`), or Sapiens2 safetensors.
    pub file: String,
    /// Hugging Face repository (`spaces/...` for a Space).
    pub repo: String,
    /// Path inside the repository, when the file is not at its top level.
    pub path: Option<String>,
    pub download_gb: Option<f32>,
    pub published: Option<PublishedAccuracy>,
    /// What could not be confirmed, or differs from the official README.
    pub note: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublishedAccuracy {
    pub metric: String,
    pub value: f32,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Detector {
    pub name: String,
    pub checkpoint: String,
    pub onnx: String,
    pub url: String,
    pub input: DetectorInput,
    pub outputs: String,
    pub keep: DetectorKeep,
    pub licence: String,
    pub note: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DetectorInput {
    pub layout: String,
    pub colour: String,
    pub height: usize,
    pub width: usize,
    pub letterbox_pad: u8,
    pub mean: [f32; 3],
    pub std: [f32; 3],
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DetectorKeep {
    pub score_above: f32,
    pub nms_iou: f32,
}

/// Sapiens2's pointmap models take the place of depth models (`--depth-model`).
const POINTMAP_TASK: &str = "pointmap";

fn task_by_name<'de, D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Task, D::Error> {
    let name = String::deserialize(deserializer)?;
    if name == POINTMAP_TASK {
        return Ok(Task::Depth);
    }
    TASKS
        .into_iter()
        .find(|task| task.name() == name)
        .ok_or_else(|| serde::de::Error::custom(format!("unknown task '{name}'")))
}

impl Checkpoint {
    pub fn download_url(&self) -> String {
        let path = self.path.as_deref().unwrap_or(&self.file);
        format!("https://huggingface.co/{}/resolve/main/{path}", self.repo)
    }

    /// The checkpoint's name without the TorchScript or safetensors suffix: what the exported
    /// ONNX file is called.
    pub fn stem(&self) -> &str {
        ["_torchscript.pt2", ".safetensors"]
            .iter()
            .find_map(|suffix| self.file.strip_suffix(suffix))
            .unwrap_or(&self.file)
    }

    /// The model's kind as its family names it: a task, or `pointmap` for Sapiens2's depth.
    pub fn kind(&self) -> &'static str {
        match self.task {
            Task::Depth if self.output[0] == tasks::POINTMAP_CHANNELS => POINTMAP_TASK,
            task => task.name(),
        }
    }

    fn outputs_label(&self) -> String {
        match (self.task, self.keypoints, self.classes) {
            (Task::Pose, Some(k), _) => format!("{k} keypoints"),
            (Task::Seg, _, Some(c)) => format!("{c} classes"),
            (Task::Depth, ..) if self.kind() == POINTMAP_TASK => "metric point map".into(),
            (Task::Depth, ..) => "relative depth".into(),
            (Task::Normal, ..) => "surface normals".into(),
            _ => format!("{:?}", self.output),
        }
    }
}

/// The manifest shipped in the binary.
pub fn manifest() -> &'static Manifest {
    static MANIFEST: OnceLock<Manifest> = OnceLock::new();
    MANIFEST.get_or_init(|| {
        serde_json::from_str(include_str!("../engines/manifest.json"))
            .expect("engines/manifest.json is valid JSON of the expected layout")
    })
}

/// The table `sapiens-stream models list` prints.
pub fn list_report() -> String {
    let manifest = manifest();
    let input = &manifest.input;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Official Sapiens checkpoints (TorchScript, licence {}). Export one to ONNX with engines/export_onnx.py.",
        manifest.licence
    );
    let _ = writeln!(
        out,
        "Model input: {} {}, 1x3x{}x{} float, (x - mean) / std with mean {:?}, std {:?}.\n",
        input.colour, input.layout, input.height, input.width, input.mean, input.std
    );
    write_checkpoints(&mut out, &manifest.models);
    let sapiens2 = &manifest.sapiens2;
    let _ = writeln!(
        out,
        "\nSapiens2 checkpoints (safetensors, licence: {}, {}). Export one to ONNX with engines/export_onnx.py.",
        sapiens2.licence, sapiens2.licence_url
    );
    let _ = writeln!(out, "Licence: {}\n", sapiens2.licence_terms);
    write_checkpoints(&mut out, &sapiens2.models);
    let detector = &manifest.detector;
    let _ = writeln!(
        out,
        "\nPerson detector for top-down pose: {}",
        detector.name
    );
    let _ = writeln!(
        out,
        "  {} ({} inside): {}",
        detector.checkpoint, detector.onnx, detector.url
    );
    let _ = writeln!(
        out,
        "  input {} {} {}x{}, letterbox pad {}, mean {:?}, std {:?}; outputs {}; keep score > {}, NMS IoU {}",
        detector.input.colour,
        detector.input.layout,
        detector.input.height,
        detector.input.width,
        detector.input.letterbox_pad,
        detector.input.mean,
        detector.input.std,
        detector.outputs,
        detector.keep.score_above,
        detector.keep.nms_iou
    );
    let _ = writeln!(out, "  licence: {}", detector.licence);
    out
}

/// One table row per checkpoint with its download URL under it, then the notes.
fn write_checkpoints(out: &mut String, models: &[Checkpoint]) {
    let mut notes: Vec<&str> = Vec::new();
    let mut rows = vec![
        [
            "TASK",
            "SIZE",
            "OUTPUT",
            "PUBLISHED",
            "DOWNLOAD",
            "CHECKPOINT",
        ]
        .map(String::from),
    ];
    let mut urls = Vec::new();
    for model in models {
        let mut file = model.file.clone();
        if let Some(note) = &model.note {
            let number = match notes.iter().position(|n| n == note) {
                Some(i) => i + 1,
                None => {
                    notes.push(note);
                    notes.len()
                }
            };
            file.push_str(&format!(" [{number}]"));
        }
        rows.push([
            model.kind().to_owned(),
            model.size.clone(),
            model.outputs_label(),
            model
                .published
                .as_ref()
                .map_or_else(|| "-".into(), |p| format!("{} {:.1}", p.metric, p.value)),
            model
                .download_gb
                .map_or_else(|| "-".into(), |gb| format!("{gb:.2} GB")),
            file,
        ]);
        urls.push(model.download_url());
    }
    let widths: Vec<usize> = (0..6)
        .map(|c| rows.iter().map(|r| r[c].len()).max().unwrap_or(0))
        .collect();
    for (i, row) in rows.iter().enumerate() {
        let cells: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, &w)| format!("{cell:<w$}"))
            .collect();
        let _ = writeln!(out, "{}", cells.join("  ").trim_end());
        if i > 0 {
            let _ = writeln!(out, "{:indent$}{}", "", urls[i - 1], indent = widths[0] + 2);
        }
    }
    if !notes.is_empty() {
        out.push('\n');
        for (i, note) in notes.iter().enumerate() {
            let _ = writeln!(out, "[{}] {note}", i + 1);
        }
    }
}

/// How `run` treats a model: loaded as it loads models, or refused and why.
enum Admission<'a> {
    Accepted(&'a ModelInfo),
    Refused(String),
}

/// What `sapiens-stream models inspect FILE` prints: the graph's inputs and outputs, the task it
/// fits, and whether `run` would load it, by the same checks `run` makes.
pub fn inspect_report(path: &Path, ort_lib: Option<&Path>) -> Result<String> {
    if let Some(url) = TritonUrl::of_path(path)? {
        return Ok(remote_report(&url, REMOTE_DEADLINE)?.text);
    }
    if !path.is_file() {
        return Err(Error::Model {
            path: path.to_owned(),
            reason: "no such file".into(),
        });
    }
    let environment = runtime::environment(ort_lib)?;
    match OnnxEngine::load(path, environment, &OnnxOptions::default()) {
        Ok(engine) => Ok(render(
            path,
            &engine.graph(),
            Admission::Accepted(engine.info()),
        )),
        Err(refusal) => {
            // `run` refuses it; describe it anyway if ONNX Runtime can open it at all.
            let Ok(graph) = graph::describe_file(path, environment) else {
                return Err(refusal);
            };
            let reason = match refusal {
                Error::Model { reason, .. } => reason,
                other => other.to_string(),
            };
            Ok(render(path, &graph, Admission::Refused(reason)))
        }
    }
}

fn render(path: &Path, graph: &GraphDescription, admission: Admission) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "model     {}", path.display());
    let _ = writeln!(out, "file      {}", file_size_report(path));
    let opset = graph.opset.as_deref().unwrap_or("unknown");
    let _ = writeln!(out, "opset     {opset} (ai.onnx)");
    if let Some(producer) = &graph.producer {
        let _ = writeln!(out, "producer  {producer}");
    }
    write_tensors(&mut out, "inputs", &graph.inputs);
    write_tensors(&mut out, "outputs", &graph.outputs);
    let metadata = &graph.metadata;

    let shapes = match &admission {
        Admission::Accepted(info) => Some((*info).clone()),
        Admission::Refused(_) => {
            shapes_only(path, &graph.inputs, &graph.outputs).map(|info| ModelInfo {
                metadata: metadata.clone(),
                ..info
            })
        }
    };
    let fitted = shapes.as_ref().and_then(fitting_task);
    let _ = writeln!(
        out,
        "task      {}",
        task_report(fitted.as_ref(), shapes.as_ref())
    );
    if let Some((_, layout)) = &fitted {
        let _ = writeln!(out, "family    {}", family_report(layout.family));
    }
    if let (Some((task, _)), Some(declared)) = (&fitted, metadata.get(METADATA_TASK))
        && declared != task.name()
    {
        let _ = writeln!(
            out,
            "WARNING   the metadata says task '{declared}' but the shapes fit '{}'",
            task.name()
        );
    }
    if let Some(checkpoint) = metadata
        .get(METADATA_SOURCE)
        .and_then(|s| find_checkpoint(s))
    {
        let published = checkpoint.published.as_ref().map_or_else(String::new, |p| {
            format!(", published {} {:.1}", p.metric, p.value)
        });
        let family = match checkpoint.file.ends_with(".safetensors") {
            true => "Sapiens2",
            false => "Sapiens",
        };
        let _ = writeln!(
            out,
            "official  {family} {} {} ({}){published}",
            checkpoint.size,
            checkpoint.kind(),
            checkpoint.file
        );
    }
    let run_line = match (&admission, &fitted) {
        (Admission::Accepted(_), Some((task, _))) => {
            format!("accepted: `run --{}-model {}`", task.name(), path.display())
        }
        (Admission::Accepted(_), None) => "refused: not a Sapiens task model".into(),
        (Admission::Refused(reason), _) => format!("refused: {reason}"),
    };
    let _ = writeln!(out, "run       {run_line}");
    write_metadata(&mut out, metadata);
    out
}

/// How long `models inspect` and `doctor` wait for a Triton server's answers.
pub const REMOTE_DEADLINE: std::time::Duration = std::time::Duration::from_secs(5);

/// What the Triton server says about a model, as `models inspect` and `doctor` print it.
pub struct RemoteReport {
    pub text: String,
    /// The server is ready and `run` takes the model.
    pub runnable: bool,
}

/// The server's health and version, the model's readiness and config, its tensors and the
/// task it fits, by the checks `run` makes; an unreachable server or unknown model is an error.
pub fn remote_report(url: &TritonUrl, deadline: std::time::Duration) -> Result<RemoteReport> {
    let remote = triton::describe(url, deadline)?;
    let mut out = String::new();
    let yes_no = |b: bool| if b { "yes" } else { "NO" };
    let _ = writeln!(out, "model     {url}");
    let _ = writeln!(
        out,
        "server    {} {} at {}: live {}, ready {}",
        remote.server_name,
        remote.server_version,
        url.address,
        yes_no(remote.server_live),
        yes_no(remote.server_ready)
    );
    let versions = match remote.versions.is_empty() {
        true => "none".to_owned(),
        false => remote.versions.join(", "),
    };
    let _ = writeln!(
        out,
        "state     ready {}; platform {}; versions {versions}",
        yes_no(remote.model_ready),
        remote.platform
    );
    let batching = match remote.dynamic_batching {
        Some(delay) => format!("dynamic batching, queue delay {delay} us"),
        None => "no dynamic batching".to_owned(),
    };
    let instances: Vec<String> = remote
        .instance_groups
        .iter()
        .map(|(kind, count)| format!("{count} on {kind}"))
        .collect();
    let _ = writeln!(
        out,
        "config    max batch {}; {batching}; instances {}",
        remote.max_batch_size,
        if instances.is_empty() {
            "server default".to_owned()
        } else {
            instances.join(", ")
        }
    );
    write_tensors(&mut out, "inputs", &remote.inputs);
    write_tensors(&mut out, "outputs", &remote.outputs);
    let shapes = (remote.inputs.len() == 1)
        .then(|| shapes_only(Path::new(&url.to_string()), &remote.inputs, &remote.outputs))
        .flatten();
    let fitted = shapes.as_ref().and_then(fitting_task);
    let _ = writeln!(
        out,
        "task      {}",
        task_report(fitted.as_ref(), shapes.as_ref())
    );
    let runnable = remote.server_ready && remote.model_ready && fitted.is_some();
    let run_line = match &fitted {
        Some((task, _)) if runnable => format!("accepted: `run --{}-model {url}`", task.name()),
        Some(_) => "refused: the server or the model is not ready".to_owned(),
        None => "refused as a task model (a person detector is given with --detector)".to_owned(),
    };
    let _ = writeln!(out, "run       {run_line}");
    let metadata: BTreeMap<String, String> = remote
        .parameters
        .iter()
        .filter(|(key, _)| key.starts_with("sapiens_stream.") || key.starts_with("sapiens."))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    write_metadata(&mut out, &metadata);
    Ok(RemoteReport {
        text: out,
        runnable,
    })
}

/// Input and output shapes for the task checks, whatever the element types.
fn shapes_only(path: &Path, inputs: &[TensorSpec], outputs: &[TensorSpec]) -> Option<ModelInfo> {
    let (input, output) = (inputs.first()?, outputs.first()?);
    Some(ModelInfo {
        path: path.to_owned(),
        id: String::new(),
        input_name: input.name.clone(),
        input_shape: input.shape.clone()?,
        output_name: output.name.clone(),
        output_shape: output.shape.clone()?,
        metadata: BTreeMap::new(),
        provider: String::new(),
    })
}

/// The task whose contract the model meets; tasks differ in output shape, so at most one fits.
fn fitting_task(info: &ModelInfo) -> Option<(Task, OutputLayout)> {
    TASKS.into_iter().find_map(|task| {
        tasks::validate_model(task, info)
            .ok()
            .map(|layout| (task, layout))
    })
}

/// The family line of `models inspect`: which generation, and under which licence its official
/// weights come.
fn family_report(family: Family) -> String {
    let manifest = manifest();
    match family {
        Family::Sapiens => format!(
            "Sapiens (first family; official weights {})",
            manifest.licence
        ),
        Family::Sapiens2 => format!(
            "Sapiens2 (official weights under the {}: {})",
            manifest.sapiens2.licence, manifest.sapiens2.licence_url
        ),
    }
}

fn task_report(fitted: Option<&(Task, OutputLayout)>, shapes: Option<&ModelInfo>) -> String {
    match fitted {
        Some((Task::Pose, layout)) => {
            let set = keypoint_sets::keypoint_set(layout.channels)
                .map_or("unknown set", |s| s.name.as_str());
            format!("pose, {} keypoints ({set})", layout.channels)
        }
        Some((Task::Seg, layout)) => {
            let set = keypoint_sets::class_set(layout.channels).map_or("unknown set", |s| &s.name);
            format!("seg, {} classes ({set})", layout.channels)
        }
        Some((Task::Depth, layout)) if layout.is_pointmap() => format!(
            "pointmap (as depth), x, y, z and scale planes at {}x{}",
            layout.height, layout.width
        ),
        Some((task, layout)) => format!(
            "{}, {} channel(s) at {}x{}",
            task.name(),
            layout.channels,
            layout.height,
            layout.width
        ),
        None if shapes.is_some() => format!(
            "not a Sapiens task model (Sapiens models take (N, 3, {}, {}) and give pose (N, 17|133|308, 256, 192), seg (N, 28, 512, 384), depth (N, 1, 1024, 768) or normal (N, 3, 512, 384); Sapiens2 seg (N, 29, 1024, 768), pointmap (N, 4, 1024, 768) or normal (N, 3, 1024, 768))",
            tasks::INPUT_HEIGHT,
            tasks::INPUT_WIDTH
        ),
        None => "not a Sapiens task model (its first input or output is not a tensor)".into(),
    }
}

fn write_tensors(out: &mut String, label: &str, tensors: &[TensorSpec]) {
    for (i, tensor) in tensors.iter().enumerate() {
        let heading = if i == 0 { label } else { "" };
        let _ = writeln!(
            out,
            "{heading:<9} {}  {}",
            tensor.name,
            describe_type(tensor)
        );
    }
}

/// `f32 (N, 3, 1024, 768)`: element type, then the shape with N for a dynamic dimension.
fn describe_type(tensor: &TensorSpec) -> String {
    match &tensor.shape {
        Some(shape) => {
            let dims: Vec<String> = shape
                .iter()
                .map(|d| d.map_or_else(|| "N".to_owned(), |d| d.to_string()))
                .collect();
            format!("{} ({})", tensor.type_name, dims.join(", "))
        }
        None => tensor.value_type.clone(),
    }
}

/// The metadata, and a warning when it marks random weights.
fn write_metadata(out: &mut String, metadata: &BTreeMap<String, String>) {
    if metadata.is_empty() {
        let _ = writeln!(out, "metadata  none");
    }
    for (i, (key, value)) in metadata.iter().enumerate() {
        let heading = if i == 0 { "metadata" } else { "" };
        let _ = writeln!(out, "{heading:<9} {key} = {value}");
    }
    if metadata
        .get("sapiens_stream.random_weights")
        .is_some_and(|v| v == "true")
    {
        let _ = writeln!(
            out,
            "WARNING   RANDOM WEIGHTS: a test model from engines/generate_models.py; its outputs are noise, not results"
        );
    }
}

/// The model file's size, plus the external-data file beside it when there is one.
fn file_size_report(path: &Path) -> String {
    let model = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    let data_path = external_data_path(path);
    match std::fs::metadata(&data_path) {
        Ok(data) => {
            let total = model + data.len();
            format!(
                "{}, {total} bytes (graph {} + external data {} in {})",
                human_bytes(total),
                human_bytes(model),
                human_bytes(data.len()),
                data_path
                    .file_name()
                    .map(|n| n.to_string_lossy())
                    .unwrap_or_default()
            )
        }
        Err(_) => format!("{}, {model} bytes", human_bytes(model)),
    }
}

/// `model.onnx` keeps its external weights in `model.onnx.data`, as the project's scripts write them.
fn external_data_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_owned();
    name.push(".data");
    path.with_file_name(name)
}

fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// The manifest entry an exported model came from, by its recorded source checkpoint name.
fn find_checkpoint(source: &str) -> Option<&'static Checkpoint> {
    let name = Path::new(source).file_name()?.to_str()?;
    let manifest = manifest();
    manifest
        .models
        .iter()
        .chain(&manifest.sapiens2.models)
        .find(|m| m.file == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info_for(output: [usize; 3]) -> ModelInfo {
        ModelInfo {
            path: PathBuf::from("manifest.onnx"),
            id: String::new(),
            input_name: "input".into(),
            input_shape: vec![None, Some(3), Some(1024), Some(768)],
            output_name: "output".into(),
            output_shape: vec![None, Some(output[0]), Some(output[1]), Some(output[2])],
            metadata: BTreeMap::new(),
            provider: String::new(),
        }
    }

    /// Every entry's output is what `run` demands of its task, and names the set it decodes with;
    /// Sapiens2 entries are recognised as Sapiens2 (pose by the exporter's metadata).
    #[test]
    fn manifest_entries_meet_their_task_contracts() {
        let manifest = manifest();
        assert_eq!(
            (manifest.input.height, manifest.input.width),
            (tasks::INPUT_HEIGHT, tasks::INPUT_WIDTH)
        );
        let families = [
            (&manifest.models, Family::Sapiens),
            (&manifest.sapiens2.models, Family::Sapiens2),
        ];
        for (model, family) in families
            .iter()
            .flat_map(|(models, family)| models.iter().map(move |m| (m, *family)))
        {
            let mut info = info_for(model.output);
            if family == Family::Sapiens2 {
                info.metadata
                    .insert(tasks::METADATA_FAMILY.into(), "sapiens2".into());
            }
            let layout = tasks::validate_model(model.task, &info)
                .unwrap_or_else(|e| panic!("{}: {e}", model.file));
            assert_eq!(layout.family, family, "{}", model.file);
            assert_eq!(
                fitting_task(&info).map(|(t, _)| t),
                Some(model.task),
                "{}",
                model.file
            );
            match model.task {
                Task::Pose => {
                    assert_eq!(model.keypoints, Some(layout.channels), "{}", model.file);
                    assert!(keypoint_sets::keypoint_set(layout.channels).is_some());
                }
                Task::Seg => assert_eq!(
                    model.classes,
                    keypoint_sets::class_set(layout.channels).map(|s| s.classes.len())
                ),
                Task::Depth | Task::Normal => {
                    assert!(model.keypoints.is_none() && model.classes.is_none())
                }
            }
        }
    }

    #[test]
    fn manifest_names_follow_the_official_pattern() {
        let manifest = manifest();
        assert_eq!(manifest.licence, "CC-BY-NC-4.0");
        let mut seen = std::collections::HashSet::new();
        for model in &manifest.models {
            assert!(
                ["0.3b", "0.6b", "1b", "2b"].contains(&model.size.as_str()),
                "{}",
                model.size
            );
            assert!(
                model.file.starts_with(&format!("sapiens_{}_", model.size)),
                "{}",
                model.file
            );
            assert!(model.file.ends_with("_torchscript.pt2"), "{}", model.file);
            assert!(model.stem().len() < model.file.len());
            if let Some(path) = &model.path {
                assert!(
                    path.ends_with(&model.file),
                    "{path} does not end in {}",
                    model.file
                );
            }
            assert!(seen.insert(&model.file), "{} listed twice", model.file);
        }
        // Sizes and tasks the official README publishes.
        for (task, count) in [
            (Task::Pose, 11),
            (Task::Seg, 4),
            (Task::Depth, 4),
            (Task::Normal, 4),
        ] {
            assert_eq!(
                manifest.models.iter().filter(|m| m.task == task).count(),
                count,
                "{task:?}"
            );
        }
    }

    #[test]
    fn published_figures_match_the_reference() {
        let figure = |file: &str| {
            find_checkpoint(file)
                .and_then(|m| m.published.as_ref())
                .map(|p| p.value)
        };
        assert_eq!(
            figure("sapiens_0.3b_coco_best_coco_AP_796_torchscript.pt2"),
            Some(79.6)
        );
        assert_eq!(
            figure("sapiens_2b_coco_wholebody_best_coco_wholebody_AP_745_torchscript.pt2"),
            Some(74.4)
        );
        assert_eq!(
            figure("sapiens_1b_goliath_best_goliath_AP_640_torchscript.pt2"),
            Some(63.9)
        );
        assert_eq!(
            figure(
                "/some/dir/sapiens_0.6b_goliath_best_goliath_mIoU_7777_epoch_178_torchscript.pt2"
            ),
            Some(77.8)
        );
        assert_eq!(
            figure("sapiens_0.3b_render_people_epoch_100_torchscript.pt2"),
            None
        );
        assert!(find_checkpoint("unknown.pt2").is_none());
    }

    #[test]
    fn sapiens2_names_follow_the_model_zoo() {
        let sapiens2 = &manifest().sapiens2;
        assert_eq!(sapiens2.models.len(), 16, "4 tasks x 4 sizes");
        for model in &sapiens2.models {
            let (size, kind) = (&model.size, model.kind());
            assert!(
                ["0.4b", "0.8b", "1b", "5b"].contains(&size.as_str()),
                "{size}"
            );
            assert_eq!(model.file, format!("sapiens2_{size}_{kind}.safetensors"));
            assert_eq!(model.repo, format!("facebook/sapiens2-{kind}-{size}"));
            assert_eq!(model.stem(), format!("sapiens2_{size}_{kind}"));
        }
        let kinds: std::collections::BTreeSet<&str> =
            sapiens2.models.iter().map(Checkpoint::kind).collect();
        assert_eq!(kinds, ["normal", "pointmap", "pose", "seg"].into());
        for forbidden in ["surveillance", "biometric"] {
            assert!(sapiens2.licence_terms.contains(forbidden), "{forbidden}");
        }
    }

    #[test]
    fn list_report_has_every_checkpoint_and_url() {
        let report = list_report();
        assert!(report.contains("Sapiens2 License"), "{report}");
        for model in manifest().models.iter().chain(&manifest().sapiens2.models) {
            assert!(report.contains(&model.file), "{}", model.file);
            assert!(report.contains(&model.download_url()), "{}", model.file);
        }
        assert!(report.contains("https://huggingface.co/facebook/sapiens-seg-0.3b-torchscript/resolve/main/sapiens_0.3b_goliath_best_goliath_mIoU_7673_epoch_194_torchscript.pt2"));
        assert!(report.contains(&manifest().detector.url));
    }

    #[test]
    fn byte_sizes_read_naturally() {
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(3 * 1024 * 1024 * 1024), "3.0 GiB");
        assert_eq!(
            external_data_path(Path::new("/m/a.onnx")),
            PathBuf::from("/m/a.onnx.data")
        );
    }
}
