//! DARK-UDP decode of pose heatmaps on the device: 308 heatmaps of 256x192 per person (60 MB)
//! stay on the GPU and only the peaks come back. Same results as
//! [`crate::tasks::pose::decode::decode_dark_udp`] up to float rounding of the log.

use cudarc::driver::{CudaSlice, CudaViewMut, DeviceRepr, LaunchConfig, PushKernelArg};

use crate::cuda::{Gpu, cuda_error};
use crate::error::{Error, Result};
use crate::tasks::pose::decode::{HeatmapPeak, opencv_gaussian_kernel};

/// `Kernel` in pose.cu.
#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct BlurTaps([f32; 11]);

// SAFETY: plain old data with the kernel's C layout.
unsafe impl DeviceRepr for BlurTaps {}

/// `Peak` in pose.cu: a heatmap peak as the kernels write it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct DevicePeak {
    x: f32,
    y: f32,
    score: f32,
}

// SAFETY: plain old data with the kernel's C layout.
unsafe impl DeviceRepr for DevicePeak {}
// SAFETY: all-zero bits are valid floats.
unsafe impl cudarc::driver::ValidAsZeroBits for DevicePeak {}

impl From<&DevicePeak> for HeatmapPeak {
    fn from(p: &DevicePeak) -> Self {
        HeatmapPeak {
            x: p.x,
            y: p.y,
            score: p.score,
        }
    }
}

/// Threads per map in the peak kernel.
const REDUCE_THREADS: u32 = 256;

/// The decode kernels' arguments besides the buffers, and their launch shapes, made once for
/// the device and its host emulation.
pub(crate) struct DecodeArgs {
    pub(crate) width: i32,
    pub(crate) height: i32,
    /// Values in all the maps.
    pub(crate) count: i64,
    pub(crate) taps: BlurTaps,
    /// Both blur passes: one thread per value.
    pub(crate) blur: LaunchConfig,
    /// One block per map, shared memory for 3 arrays of the block size.
    pub(crate) refine: LaunchConfig,
}

impl DecodeArgs {
    /// Checks `maps x height x width` against heatmaps of `len` values.
    pub(crate) fn new(len: usize, (maps, height, width): (usize, usize, usize)) -> Result<Self> {
        let count = maps * height * width;
        if count == 0 || len < count {
            return Err(Error::Cuda(format!(
                "heatmaps hold {len} values, {maps} x {height} x {width} needed"
            )));
        }
        Ok(DecodeArgs {
            width: width as i32,
            height: height as i32,
            count: count as i64,
            taps: BlurTaps(opencv_gaussian_kernel()),
            blur: LaunchConfig::for_num_elems(count as u32),
            refine: LaunchConfig {
                grid_dim: (maps as u32, 1, 1),
                block_dim: (REDUCE_THREADS, 1, 1),
                shared_mem_bytes: 3 * 4 * REDUCE_THREADS,
            },
        })
    }
}

/// Decodes `maps` heatmaps of `height x width` (contiguous) into `out`, one peak per map.
/// `scratch` holds the blur's two passes (resized as needed, reused between calls).
pub fn decode_dark_udp(
    gpu: &Gpu,
    heatmaps: &CudaSlice<f32>,
    (maps, height, width): (usize, usize, usize),
    scratch: &mut Option<(CudaSlice<f32>, CudaSlice<f32>)>,
    out: &mut Vec<HeatmapPeak>,
) -> Result<()> {
    let mut peaks = gpu
        .stream()
        .alloc_zeros::<DevicePeak>(maps.max(1))
        .map_err(cuda_error("allocating peaks"))?;
    queue_decode(
        gpu,
        heatmaps,
        (maps, height, width),
        scratch,
        peaks.slice_mut(..),
    )?;
    let peaks = gpu
        .stream()
        .clone_dtoh(&peaks)
        .map_err(cuda_error("reading peaks"))?;
    out.clear();
    out.extend(peaks.iter().take(maps).map(HeatmapPeak::from));
    Ok(())
}

/// Queues the decode of `maps` heatmaps into `peaks` (one per map) on the GPU's stream, without
/// waiting: the pipeline reads all of a frame's peaks back at once.
pub(crate) fn queue_decode(
    gpu: &Gpu,
    heatmaps: &CudaSlice<f32>,
    (maps, height, width): (usize, usize, usize),
    scratch: &mut Option<(CudaSlice<f32>, CudaSlice<f32>)>,
    mut peaks: CudaViewMut<'_, DevicePeak>,
) -> Result<()> {
    let args = DecodeArgs::new(heatmaps.len(), (maps, height, width))?;
    if peaks.len() < maps {
        return Err(Error::Cuda(format!(
            "{} peaks for {maps} heatmaps",
            peaks.len()
        )));
    }
    let count = maps * height * width;
    let stream = gpu.stream();
    if scratch.as_ref().is_none_or(|(a, _)| a.len() < count) {
        let alloc = || {
            stream
                .alloc_zeros::<f32>(count)
                .map_err(cuda_error("allocating blur buffers"))
        };
        *scratch = Some((alloc()?, alloc()?));
    }
    let Some((rows, blurred)) = scratch.as_mut() else {
        unreachable!("allocated above")
    };
    let blur_pass =
        |name: &str, input: &CudaSlice<f32>, output: &mut CudaSlice<f32>| -> Result<()> {
            let function = gpu.function("pose", name)?;
            let mut launch = stream.launch_builder(&function);
            launch
                .arg(input)
                .arg(&args.width)
                .arg(&args.height)
                .arg(&args.count)
                .arg(&args.taps)
                .arg(output);
            // SAFETY: arguments match the kernel; every index is below `count`, which both buffers hold.
            unsafe { launch.launch(args.blur) }.map_err(cuda_error("launching the blur"))?;
            Ok(())
        };
    blur_pass("blur_rows", heatmaps, rows)?;
    blur_pass("blur_columns", rows, blurred)?;
    let function = gpu.function("pose", "refine_peaks")?;
    let mut launch = stream.launch_builder(&function);
    launch
        .arg(heatmaps)
        .arg(&*blurred)
        .arg(&args.width)
        .arg(&args.height)
        .arg(&mut peaks);
    // SAFETY: arguments match the kernel; one block per map, shared memory for 3 arrays of the block size.
    unsafe { launch.launch(args.refine) }.map_err(cuda_error("launching refine_peaks"))?;
    Ok(())
}
