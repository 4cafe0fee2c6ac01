//! The CUDA side shared by every stage: the device context and stream, NVRTC compilation of
//! the kernel sources (at run time, so no CUDA toolkit at build time) and launch helpers. Each
//! kernel lives beside the CPU code it reproduces: `preprocess/preprocess.cu` (model inputs from
//! any frame layout), `tasks/seg/seg.cu` (logits to a class map), `tasks/pose/pose.cu` (heatmaps
//! to keypoints), `tasks/flip/flip.cu`, `tasks/dense/dense.cu` and `render/render.cu`, with a
//! Rust wrapper in the `cuda.rs` next to it. Each is tested against its CPU stage by the checks
//! of `testkit::kernels`: on a device in tests/gpu.rs, and on the host, built with the system
//! C++ compiler, in `testkit::kernels::emulator`.
//! The GPU plan of a whole frame is the device side of the inference stage,
//! [`crate::pipeline::infer::device`].
//!
//! The driver and NVRTC libraries are probed before cudarc touches them (cudarc panics when a
//! library is missing), so a machine without a GPU gets an error, never a panic.

use std::sync::Arc;

use cudarc::driver::{CudaContext, CudaFunction, CudaModule, CudaStream};
use cudarc::nvrtc::{CompileOptions, Ptx};

use crate::engine::probe;
use crate::error::{Error, Result};

/// Every kernel source, by module name.
pub const SOURCES: [(&str, &str); 6] = [
    ("preprocess", include_str!("../preprocess/preprocess.cu")),
    ("flip", include_str!("../tasks/flip/flip.cu")),
    ("seg", include_str!("../tasks/seg/seg.cu")),
    ("pose", include_str!("../tasks/pose/pose.cu")),
    ("render", include_str!("../render/render.cu")),
    ("dense", include_str!("../tasks/dense/dense.cu")),
];

/// Compiles one kernel source to PTX. No GPU needed: NVRTC is only a compiler.
///
/// `--fmad=false`: the CPU path rounds every multiply and add on its own, and the kernels must
/// round the same way.
pub fn compile(name: &str, source: &str) -> Result<Ptx> {
    probe::nvrtc().map_err(Error::Cuda)?;
    let options = CompileOptions {
        fmad: Some(false),
        name: Some(format!("{name}.cu")),
        ..CompileOptions::default()
    };
    cudarc::nvrtc::compile_ptx_with_opts(source, options)
        .map_err(|e| Error::Cuda(format!("compiling {name}.cu: {e}")))
}

/// A CUDA device with our kernels loaded and the stream they run on.
#[derive(Clone)]
pub struct Gpu {
    context: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    modules: Vec<(&'static str, Arc<CudaModule>)>,
}

impl Gpu {
    /// Opens CUDA device `device`, compiles and loads every kernel, and makes a stream.
    pub fn open(device: usize) -> Result<Self> {
        probe::cuda_device_name(device).map_err(Error::Cuda)?;
        let context = CudaContext::new(device).map_err(cuda_error("opening the device"))?;
        let stream = context
            .new_stream()
            .map_err(cuda_error("creating a stream"))?;
        let modules = SOURCES
            .iter()
            .map(|&(name, source)| {
                let module = context
                    .load_module(compile(name, source)?)
                    .map_err(cuda_error("loading kernels"))?;
                Ok((name, module))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Gpu {
            context,
            stream,
            modules,
        })
    }

    pub fn context(&self) -> &Arc<CudaContext> {
        &self.context
    }

    /// The stream every kernel here runs on, in order.
    pub fn stream(&self) -> &Arc<CudaStream> {
        &self.stream
    }

    pub(crate) fn function(&self, module: &str, name: &str) -> Result<CudaFunction> {
        let (_, loaded) = self
            .modules
            .iter()
            .find(|(m, _)| *m == module)
            .ok_or_else(|| Error::Cuda(format!("no kernel module {module}")))?;
        loaded
            .load_function(name)
            .map_err(cuda_error("finding a kernel"))
    }
}

/// Maps a cudarc error to ours with what was being done.
pub(crate) fn cuda_error<E: std::fmt::Display>(doing: &'static str) -> impl Fn(E) -> Error {
    move |e| Error::Cuda(format!("{doing}: {e}"))
}

/// A 2-D launch over `width x height x depth` threads in 16x16 blocks.
pub(crate) fn grid_2d(width: usize, height: usize, depth: usize) -> cudarc::driver::LaunchConfig {
    const SIDE: u32 = 16;
    cudarc::driver::LaunchConfig {
        grid_dim: (
            (width as u32).div_ceil(SIDE),
            (height as u32).div_ceil(SIDE),
            depth as u32,
        ),
        block_dim: (SIDE, SIDE, 1),
        shared_mem_bytes: 0,
    }
}
