//! A model with one image input and any outputs, read back whole: for models that are not one
//! f32 batch in and one out, such as the person detectors. On a GPU its input can be bound in
//! device memory, for a kernel to write, with its outputs bound to host memory.

use std::path::Path;

use ort::memory::{Allocator, MemoryInfo};
use ort::session::builder::GraphOptimizationLevel;
use ort::session::{IoBinding, Session};
use ort::value::{Tensor, TensorRef};

use super::device::{ComputeStream, memory_info};
use super::graph::{HostTensor, TensorSpec, read_outputs, tensor_spec};
use super::onnx::register_cuda;
use super::runtime::Environment;
use super::session::open_session;
use crate::error::{Error, Result};

// Field order is drop order: the binding and its input before the session, the stream the
// session runs on after it.
pub struct MultiOutputModel {
    bound: Option<BoundInput>,
    session: Session,
    id: String,
    inputs: Vec<TensorSpec>,
    outputs: Vec<TensorSpec>,
    /// The CUDA device it runs on; `None` on the CPU.
    device: Option<usize>,
    /// Held, never read: the CUDA provider runs on this stream's raw handle.
    _compute_stream: Option<ComputeStream>,
}

/// The input bound in memory the caller writes, every output bound to host memory.
struct BoundInput {
    binding: IoBinding,
    input: Tensor<f32>,
    /// Values in the input.
    len: usize,
}

impl MultiOutputModel {
    /// The model at `path` on the CPU, fully optimised, with `threads` intra-op threads (0:
    /// every core).
    pub fn load(path: &Path, environment: &Environment, threads: usize) -> Result<Self> {
        let session = open_session(path, environment, GraphOptimizationLevel::All, threads, Ok)?;
        Ok(Self::new(path, session, None, None))
    }

    /// The model on CUDA device `device`, on the kernels' `stream`.
    pub fn load_on_gpu(
        path: &Path,
        environment: &Environment,
        threads: usize,
        device: usize,
        stream: &ComputeStream,
    ) -> Result<Self> {
        let register = |builder| register_cuda(builder, device, Some(stream));
        let session = open_session(
            path,
            environment,
            GraphOptimizationLevel::All,
            threads,
            register,
        )?;
        Ok(Self::new(path, session, Some(device), Some(stream.clone())))
    }

    fn new(
        path: &Path,
        session: Session,
        device: Option<usize>,
        compute_stream: Option<ComputeStream>,
    ) -> Self {
        MultiOutputModel {
            bound: None,
            id: path
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default(),
            inputs: session.inputs().iter().map(tensor_spec).collect(),
            outputs: session.outputs().iter().map(tensor_spec).collect(),
            session,
            device,
            _compute_stream: compute_stream,
        }
    }

    /// The model's identifier for messages: its file stem.
    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn inputs(&self) -> &[TensorSpec] {
        &self.inputs
    }

    pub fn outputs(&self) -> &[TensorSpec] {
        &self.outputs
    }

    /// Runs the first input on `values` of `shape` (NCHW); every output, in declared order.
    pub fn run(&mut self, values: &[f32], shape: [usize; 4]) -> Result<Vec<HostTensor>> {
        let tensor = TensorRef::from_array_view((shape, values))
            .map_err(|e| self.inference_error(e.to_string()))?;
        let outputs = self
            .session
            .run(ort::inputs![self.inputs[0].name.as_str() => tensor])
            .map_err(|e| inference_error(&self.id, e.to_string()))?;
        read_outputs(&outputs).map_err(|message| inference_error(&self.id, message))
    }

    /// Binds the first input to a tensor of `shape` in the model's memory (the GPU's, or the
    /// host's on the CPU) and every output to host memory, for [`Self::run_bound`].
    pub fn bind_input(&mut self, shape: [usize; 4]) -> Result<()> {
        let id = self.id.clone();
        let error = move |e: ort::Error| Error::Execution(format!("binding {id}: {e}"));
        let memory: MemoryInfo = memory_info(self.device).map_err(&error)?;
        let allocator = Allocator::new(&self.session, memory).map_err(&error)?;
        let input = Tensor::<f32>::new(&allocator, shape).map_err(&error)?;
        let host = memory_info(None).map_err(&error)?;
        let mut binding = self.session.create_binding().map_err(&error)?;
        binding
            .bind_input(self.inputs[0].name.as_str(), &input)
            .map_err(&error)?;
        for output in &self.outputs {
            binding
                .bind_output_to_device(output.name.as_str(), &host)
                .map_err(&error)?;
        }
        self.bound = Some(BoundInput {
            binding,
            input,
            len: shape.iter().product(),
        });
        Ok(())
    }

    /// The bound input's address and length in values, for a kernel to write; `None` when
    /// nothing is bound.
    pub fn bound_input(&mut self) -> Option<(u64, usize)> {
        let bound = self.bound.as_mut()?;
        Some((bound.input.data_ptr_mut() as u64, bound.len))
    }

    /// The bound input's values, when it is in host memory (a model loaded on the CPU).
    pub fn bound_host_input(&mut self) -> Option<&mut [f32]> {
        if self.device.is_some() {
            return None;
        }
        Some(self.bound.as_mut()?.input.extract_tensor_mut().1)
    }

    /// Runs on the bound input as it was last written; every output, in declared order.
    pub fn run_bound(&mut self) -> Result<Vec<HostTensor>> {
        let bound = self
            .bound
            .as_ref()
            .ok_or_else(|| self.inference_error("the model's input is not bound".into()))?;
        let outputs = self
            .session
            .run_binding(&bound.binding)
            .map_err(|e| inference_error(&self.id, e.to_string()))?;
        read_outputs(&outputs).map_err(|message| inference_error(&self.id, message))
    }

    fn inference_error(&self, message: String) -> Error {
        inference_error(&self.id, message)
    }
}

fn inference_error(model: &str, message: String) -> Error {
    Error::Inference {
        model: model.to_owned(),
        message,
    }
}
