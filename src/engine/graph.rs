//! What a model declares and what it gives back, in the engine's own types, so that code
//! outside the engine (the detector, `models inspect`) never names ONNX Runtime.

use std::collections::BTreeMap;
use std::path::Path;

use ort::session::builder::GraphOptimizationLevel;
use ort::session::{Session, SessionOutputs};
use ort::value::{DynValue, Outlet, TensorElementType, ValueType};

use super::DeclaredShape;
use super::runtime::Environment;
use super::session::open_session;
use crate::error::Result;

/// A model input or output as the graph declares it.
#[derive(Clone, Debug)]
pub struct TensorSpec {
    pub name: String,
    /// `None` for a value that is not a tensor.
    pub element: Option<ElementType>,
    /// `None` for a value that is not a tensor; a `None` dimension is dynamic.
    pub shape: Option<DeclaredShape>,
    /// ONNX Runtime's words for the element type (`f32`, `i64`), or for the whole value type
    /// when it is not a tensor, for reports.
    pub type_name: String,
    /// ONNX Runtime's words for the whole value type, for messages.
    pub value_type: String,
}

/// The element types the program reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ElementType {
    F32,
    I32,
    I64,
    Other,
}

/// A model output read back to the host.
#[derive(Clone, Debug, PartialEq)]
pub enum HostTensor {
    F32 {
        shape: Vec<i64>,
        values: Vec<f32>,
    },
    /// An int32 or int64 output, widened.
    I64 {
        shape: Vec<i64>,
        values: Vec<i64>,
    },
}

/// What a model file declares: for `models inspect`.
#[derive(Clone, Debug)]
pub struct GraphDescription {
    /// The ai.onnx opset.
    pub opset: Option<String>,
    pub producer: Option<String>,
    pub inputs: Vec<TensorSpec>,
    pub outputs: Vec<TensorSpec>,
    /// The model's ONNX metadata properties.
    pub metadata: BTreeMap<String, String>,
}

/// Describes a model file that ONNX Runtime can open, without optimising it or choosing an
/// execution provider (a model `run` refuses is described this way).
pub fn describe_file(path: &Path, environment: &Environment) -> Result<GraphDescription> {
    let session = open_session(path, environment, GraphOptimizationLevel::Disable, 0, Ok)?;
    Ok(describe_session(&session))
}

pub(crate) fn describe_session(session: &Session) -> GraphDescription {
    GraphDescription {
        opset: session.opset_for_domain("").map(|v| v.to_string()),
        producer: session
            .metadata()
            .ok()
            .and_then(|m| m.producer())
            .filter(|p| !p.is_empty()),
        inputs: session.inputs().iter().map(tensor_spec).collect(),
        outputs: session.outputs().iter().map(tensor_spec).collect(),
        metadata: read_metadata(session),
    }
}

pub(crate) fn tensor_spec(outlet: &Outlet) -> TensorSpec {
    let value_type = outlet.dtype().to_string();
    let (element, shape, type_name) = match outlet.dtype() {
        ValueType::Tensor { ty, shape, .. } => (
            Some(element_type(*ty)),
            Some(shape.iter().map(|&d| usize::try_from(d).ok()).collect()),
            ty.to_string(),
        ),
        _ => (None, None, value_type.clone()),
    };
    TensorSpec {
        name: outlet.name().to_owned(),
        element,
        shape,
        type_name,
        value_type,
    }
}

fn element_type(ty: TensorElementType) -> ElementType {
    match ty {
        TensorElementType::Float32 => ElementType::F32,
        TensorElementType::Int32 => ElementType::I32,
        TensorElementType::Int64 => ElementType::I64,
        _ => ElementType::Other,
    }
}

/// Every output of a run, in the session's output order.
pub(crate) fn read_outputs(
    outputs: &SessionOutputs,
) -> std::result::Result<Vec<HostTensor>, String> {
    (0..outputs.len())
        .map(|i| read_output(&outputs[i]))
        .collect()
}

fn read_output(value: &DynValue) -> std::result::Result<HostTensor, String> {
    let error = |e: ort::Error| e.to_string();
    match value.dtype() {
        ValueType::Tensor {
            ty: TensorElementType::Float32,
            ..
        } => {
            let (shape, values) = value.try_extract_tensor::<f32>().map_err(error)?;
            Ok(HostTensor::F32 {
                shape: shape.to_vec(),
                values: values.to_vec(),
            })
        }
        ValueType::Tensor {
            ty: TensorElementType::Int32,
            ..
        } => {
            let (shape, values) = value.try_extract_tensor::<i32>().map_err(error)?;
            Ok(HostTensor::I64 {
                shape: shape.to_vec(),
                values: values.iter().map(|&v| i64::from(v)).collect(),
            })
        }
        ValueType::Tensor {
            ty: TensorElementType::Int64,
            ..
        } => {
            let (shape, values) = value.try_extract_tensor::<i64>().map_err(error)?;
            Ok(HostTensor::I64 {
                shape: shape.to_vec(),
                values: values.to_vec(),
            })
        }
        other => Err(format!("an output is {other}, not float32 or integer")),
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
