//! ONNX Runtime on device memory. On a GPU the model's input and output stay on the device: the
//! preprocess kernels write the input, the decode kernels read the output, and ONNX Runtime runs
//! on the kernels' CUDA stream without synchronising at the end of a run, so a frame is one chain
//! of asynchronous work with one synchronisation (when its results are read back).
//!
//! The tensors are allocated by ONNX Runtime (its CUDA allocator) and bound once per batch size
//! with an [`IoBinding`]: ONNX Runtime then neither copies nor re-allocates them, and our kernels
//! reach them through their device pointers ([`DeviceBatch::input_ptr`]).

use std::sync::Arc;

use cudarc::driver::CudaStream;
use ort::memory::{AllocationDevice, Allocator, AllocatorType, MemoryInfo, MemoryType};
use ort::session::{IoBinding, RunOptions, Session};
use ort::value::Tensor;

use crate::error::{Error, Result};

/// The CUDA stream ONNX Runtime runs on, shared with the kernels. The engine holds it so the
/// stream outlives the session (the execution provider keeps its raw handle).
#[derive(Clone)]
pub struct ComputeStream(pub Arc<CudaStream>);

impl std::fmt::Debug for ComputeStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ComputeStream({:p})", self.0.cu_stream())
    }
}

impl ComputeStream {
    /// The raw handle, as the execution providers take it.
    pub(crate) fn raw(&self) -> *mut () {
        self.0.cu_stream().cast()
    }
}

/// ONNX Runtime's name for the memory of CUDA device `device`, or for host memory (`None`).
pub(crate) fn memory_info(device: Option<usize>) -> ort::Result<MemoryInfo<'static>> {
    let (kind, id) = match device {
        Some(device) => (AllocationDevice::CUDA, device as i32),
        None => (AllocationDevice::CPU, 0),
    };
    MemoryInfo::new(kind, id, AllocatorType::Device, MemoryType::Default)
}

/// One batch size's input and output tensors in device memory, bound to the session.
pub struct DeviceBatch {
    items: usize,
    input: Tensor<f32>,
    output: Tensor<f32>,
    binding: IoBinding,
}

impl DeviceBatch {
    pub fn items(&self) -> usize {
        self.items
    }

    /// The input's device address and length in values (items x 3 x H x W), for the kernels.
    pub fn input_ptr(&mut self) -> (u64, usize) {
        let len = element_count(&self.input);
        (self.input.data_ptr_mut() as u64, len)
    }

    /// The output's device address and length in values, for the kernels.
    pub fn output_ptr(&mut self) -> (u64, usize) {
        let len = element_count(&self.output);
        (self.output.data_ptr_mut() as u64, len)
    }
}

fn element_count(tensor: &Tensor<f32>) -> usize {
    tensor
        .shape()
        .iter()
        .map(|&d| usize::try_from(d).unwrap_or(0))
        .product()
}

/// An engine whose model runs on device buffers that the kernels share.
pub trait DeviceEngine {
    /// Allocates and binds the tensors of a batch of `items`.
    fn device_batch(&self, items: usize) -> Result<DeviceBatch>;

    /// Queues one run of the model on the compute stream, `batch`'s input to its output.
    fn run_device(&mut self, batch: &DeviceBatch) -> Result<()>;
}

/// A session that runs on device buffers, on the compute stream it was created with.
pub struct DeviceSession {
    allocator: Allocator,
    run_options: RunOptions,
    input_name: String,
    output_name: String,
    /// Item shapes without the batch dimension.
    input_item: Vec<usize>,
    output_item: Vec<usize>,
    model: String,
}

impl DeviceSession {
    /// Prepares device runs of `session`, whose CUDA or TensorRT provider runs on `device`.
    pub fn new(
        session: &Session,
        device: usize,
        (input_name, input_item): (&str, &[usize]),
        (output_name, output_item): (&str, &[usize]),
        model: &str,
    ) -> Result<Self> {
        let error = |e: ort::Error| Error::Execution(format!("device memory for {model}: {e}"));
        let memory = memory_info(Some(device)).map_err(error)?;
        let allocator = Allocator::new(session, memory).map_err(error)?;
        let mut run_options = RunOptions::new().map_err(error)?;
        // The kernels that read the output follow on the same stream: no need to wait here.
        run_options.disable_device_sync().map_err(error)?;
        Ok(DeviceSession {
            allocator,
            run_options,
            input_name: input_name.to_owned(),
            output_name: output_name.to_owned(),
            input_item: input_item.to_vec(),
            output_item: output_item.to_vec(),
            model: model.to_owned(),
        })
    }

    /// Allocates and binds the tensors of a batch of `items`.
    pub fn batch(&self, session: &Session, items: usize) -> Result<DeviceBatch> {
        let error = |e: ort::Error| Error::Inference {
            model: self.model.clone(),
            message: format!("allocating device tensors for {items} items: {e}"),
        };
        let shape = |item: &[usize]| {
            let mut shape = vec![items];
            shape.extend_from_slice(item);
            shape
        };
        let input = Tensor::<f32>::new(&self.allocator, shape(&self.input_item)).map_err(error)?;
        let mut output =
            Tensor::<f32>::new(&self.allocator, shape(&self.output_item)).map_err(error)?;
        let mut binding = session.create_binding().map_err(error)?;
        binding
            .bind_input(self.input_name.as_str(), &input)
            .map_err(error)?;
        binding
            .bind_output(self.output_name.as_str(), &mut output)
            .map_err(error)?;
        Ok(DeviceBatch {
            items,
            input,
            output,
            binding,
        })
    }

    /// Queues one run of the model on the compute stream: `batch`'s input to its output.
    pub fn run(&self, session: &mut Session, batch: &DeviceBatch) -> Result<()> {
        session
            .run_binding_with_options(&batch.binding, &self.run_options)
            .map(drop)
            .map_err(|e| Error::Inference {
                model: self.model.clone(),
                message: e.to_string(),
            })
    }
}
