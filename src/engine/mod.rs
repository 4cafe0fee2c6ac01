//! Inference engines. The pipeline talks to the [`Engine`] trait only, so ONNX Runtime on the CPU
//! today and the CUDA/TensorRT providers or a direct TensorRT binding later plug in the same way.

pub mod onnx;
pub mod runtime;

use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::error::Result;

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
}

/// Runs one model on batches of NCHW f32 inputs.
pub trait Engine: Send {
    fn info(&self) -> &ModelInfo;

    /// Runs `batch` items laid out contiguously in `input` and appends the first output, batch
    /// first and contiguous, to `output`.
    fn run(&mut self, input: &[f32], batch: usize, output: &mut Vec<f32>) -> Result<()>;
}
