//! `models triton-repo`: a Triton model repository for the official Triton container, one
//! folder per ONNX model: `config.pbtxt` (ONNX Runtime backend, dynamic batching, GPU instances,
//! the ONNX metadata as parameters so the program still knows a random-weights model) and
//! `1/model.onnx` with its external weights beside it.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use crate::engine::DeclaredShape;
use crate::engine::graph::{GraphDescription, TensorSpec, describe_file};
use crate::engine::runtime::Environment;
use crate::error::{Error, Result};

/// How the models are served.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RepositoryOptions {
    /// The largest batch the dynamic batcher makes (models with a batch dimension).
    pub max_batch: usize,
    /// How long the batcher holds a request for others to join it.
    pub queue_delay_us: u64,
    /// Model instances per GPU.
    pub instances: usize,
    /// ONNX Runtime's TensorRT accelerator in fp16 on Triton's GPUs.
    pub tensorrt_fp16: bool,
}

impl Default for RepositoryOptions {
    fn default() -> Self {
        RepositoryOptions {
            max_batch: 8,
            queue_delay_us: 2000,
            instances: 1,
            tensorrt_fp16: false,
        }
    }
}

/// Writes `out/NAME/config.pbtxt` and `out/NAME/1/model.onnx` for each model (NAME: the file
/// stem); the folders written, in order.
pub fn write_repository(
    out: &Path,
    models: &[PathBuf],
    options: &RepositoryOptions,
    environment: &Environment,
) -> Result<Vec<PathBuf>> {
    let mut written = Vec::new();
    for model in models {
        let name = model_name(model)?;
        if written.iter().any(|w: &PathBuf| w.ends_with(&name)) {
            return Err(Error::model(model)(format!(
                "a second model named '{name}' (names are the file stems)"
            )));
        }
        let graph = describe_file(model, environment)?;
        let config = model_config(&name, &graph, options).map_err(Error::model(model))?;
        let folder = out.join(&name);
        let version = folder.join("1");
        std::fs::create_dir_all(&version)
            .map_err(|e| Error::io(format!("creating {}", version.display()), e))?;
        std::fs::write(folder.join("config.pbtxt"), config)
            .map_err(|e| Error::io(format!("writing {}/config.pbtxt", folder.display()), e))?;
        copy(model, &version.join("model.onnx"))?;
        // The graph names its external weights by their file name: kept as it is.
        let mut data_name = model.file_name().unwrap_or_default().to_owned();
        data_name.push(".data");
        let data = model.with_file_name(&data_name);
        if data.is_file() {
            copy(&data, &version.join(&data_name))?;
        }
        written.push(folder);
    }
    Ok(written)
}

fn copy(from: &Path, to: &Path) -> Result<()> {
    std::fs::copy(from, to)
        .map(drop)
        .map_err(|e| Error::io(format!("copying {} to {}", from.display(), to.display()), e))
}

/// The file stem, as Triton takes model names.
fn model_name(model: &Path) -> Result<String> {
    let name = model
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or_default()
        .to_owned();
    let valid = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if valid {
        Ok(name)
    } else {
        Err(Error::model(model)(
            "its file stem is not a Triton model name ([A-Za-z0-9._-]+)".into(),
        ))
    }
}

/// `config.pbtxt` in protobuf's text format (Triton's `ModelConfig`).
fn model_config(
    name: &str,
    graph: &GraphDescription,
    options: &RepositoryOptions,
) -> std::result::Result<String, String> {
    let [input] = &graph.inputs[..] else {
        return Err(format!("expected 1 input, found {}", graph.inputs.len()));
    };
    // A dynamic batch dimension lets Triton's batcher join requests; a fixed one (an export for
    // batch 1) is served as it is, without batching.
    let batched = input.shape.as_ref().and_then(|s| s.first().copied()) == Some(None);
    let mut text = String::new();
    let _ = writeln!(text, "# Written by `sapiens-stream models triton-repo`.");
    let _ = writeln!(text, "name: \"{name}\"");
    let _ = writeln!(text, "platform: \"onnxruntime_onnx\"");
    let max_batch = if batched { options.max_batch } else { 0 };
    let _ = writeln!(text, "max_batch_size: {max_batch}");
    write_tensors(&mut text, "input", &graph.inputs, batched)?;
    write_tensors(&mut text, "output", &graph.outputs, batched)?;
    if batched {
        let _ = writeln!(
            text,
            "dynamic_batching {{\n  max_queue_delay_microseconds: {}\n}}",
            options.queue_delay_us
        );
    }
    let _ = writeln!(
        text,
        "instance_group [\n  {{\n    count: {}\n    kind: KIND_GPU\n  }}\n]",
        options.instances
    );
    if options.tensorrt_fp16 {
        text.push_str(concat!(
            "optimization {\n",
            "  execution_accelerators {\n",
            "    gpu_execution_accelerator: [\n",
            "      {\n",
            "        name: \"tensorrt\"\n",
            "        parameters { key: \"precision_mode\" value: \"FP16\" }\n",
            "        parameters { key: \"max_workspace_size_bytes\" value: \"4294967296\" }\n",
            "      }\n",
            "    ]\n",
            "  }\n",
            "}\n",
        ));
    }
    for (key, value) in &graph.metadata {
        let _ = writeln!(
            text,
            "parameters {{\n  key: \"{}\"\n  value {{ string_value: \"{}\" }}\n}}",
            escape(key),
            escape(value)
        );
    }
    Ok(text)
}

fn write_tensors(
    text: &mut String,
    field: &str,
    tensors: &[TensorSpec],
    batched: bool,
) -> std::result::Result<(), String> {
    let _ = writeln!(text, "{field} [");
    for (i, tensor) in tensors.iter().enumerate() {
        let data_type = data_type(tensor)?;
        let shape: &DeclaredShape = tensor
            .shape
            .as_ref()
            .ok_or_else(|| format!("'{}' is not a tensor", tensor.name))?;
        let dims: Vec<String> = shape
            .iter()
            .skip(usize::from(batched))
            .map(|d| d.map_or_else(|| "-1".to_owned(), |d| d.to_string()))
            .collect();
        let comma = if i + 1 < tensors.len() { "," } else { "" };
        let _ = writeln!(
            text,
            "  {{\n    name: \"{}\"\n    data_type: {data_type}\n    dims: [ {} ]\n  }}{comma}",
            escape(&tensor.name),
            dims.join(", ")
        );
    }
    let _ = writeln!(text, "]");
    Ok(())
}

/// Triton's data type for ONNX Runtime's element type words.
fn data_type(tensor: &TensorSpec) -> std::result::Result<&'static str, String> {
    Ok(match tensor.type_name.as_str() {
        "f32" => "TYPE_FP32",
        "f16" => "TYPE_FP16",
        "i64" => "TYPE_INT64",
        "i32" => "TYPE_INT32",
        "u8" => "TYPE_UINT8",
        other => {
            return Err(format!(
                "tensor '{}' is {other}, which the repository does not serve",
                tensor.name
            ));
        }
    })
}

/// A string for protobuf's text format.
fn escape(text: &str) -> String {
    text.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}
