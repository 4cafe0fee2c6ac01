//! ONNX Runtime through `ort`, on the CPU execution provider.

use std::collections::BTreeMap;
use std::path::Path;

use ort::session::Session;
use ort::session::builder::GraphOptimizationLevel;
use ort::value::{TensorRef, ValueType};

use super::{DeclaredShape, Engine, ModelInfo};
use crate::error::{Error, Result};

pub struct OnnxEngine {
    session: Session,
    info: ModelInfo,
    /// Item shape without the batch dimension, for building input tensors.
    input_item: Vec<usize>,
}

#[derive(Clone, Debug, Default)]
pub struct OnnxOptions {
    /// Intra-op threads; 0 lets ONNX Runtime use every core.
    pub threads: usize,
}

impl OnnxEngine {
    pub fn load(
        path: &Path,
        environment: &ort::environment::Environment,
        options: &OnnxOptions,
    ) -> Result<Self> {
        let model_error = |reason: String| Error::Model {
            path: path.to_owned(),
            reason,
        };
        if !path.is_file() {
            return Err(model_error("no such file".into()));
        }
        let session = Session::builder(environment)
            .and_then(|b| {
                b.with_optimization_level(GraphOptimizationLevel::All)
                    .map_err(Into::into)
            })
            .and_then(|b| b.with_intra_threads(options.threads).map_err(Into::into))
            .and_then(|mut b| b.commit_from_file(path))
            .map_err(|e| {
                model_error(format!(
                    "not a model ONNX Runtime can load: {}",
                    first_line(&e.to_string())
                ))
            })?;
        let info = describe(path, &session).map_err(model_error)?;
        let input_item = info.input_shape[1..]
            .iter()
            .map(|d| {
                d.ok_or_else(|| {
                    model_error(format!(
                        "input '{}' has a dynamic non-batch dimension",
                        info.input_name
                    ))
                })
            })
            .collect::<Result<Vec<usize>>>()?;
        Ok(OnnxEngine {
            session,
            info,
            input_item,
        })
    }

    /// The ONNX Runtime session, for tools that describe the model beyond [`ModelInfo`].
    pub fn session(&self) -> &Session {
        &self.session
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
}

fn first_line(message: &str) -> &str {
    message.lines().next().unwrap_or(message)
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

pub(crate) fn read_metadata(session: &Session) -> BTreeMap<String, String> {
    let Ok(metadata) = session.metadata() else {
        return BTreeMap::new();
    };
    let keys = metadata.custom_keys().unwrap_or_default();
    keys.into_iter()
        .filter_map(|key| metadata.custom(&key).map(|value| (key, value)))
        .collect()
}
