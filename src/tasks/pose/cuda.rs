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

/// Threads per map in the peak kernel: a power of two, at least the 9 of the neighbourhood.
const REFINE_THREADS: u32 = 32;
/// `TILE`, `STRIP`, `RADIUS`, `HALO` and `STAGED_STRIDE` in pose.cu: blurred values per tile
/// side, values per thread in each pass, the blur's radius, rows staged per tile, floats per
/// staged row.
const TILE: usize = 32;
const STRIP: usize = 4;
const RADIUS: usize = 5;
const HALO: usize = TILE + 2 * RADIUS;
const STAGED_STRIDE: usize = 44;
/// `blur_maxima`'s block: a column of the tile per thread in x, a strip of rows per thread in y.
const BLUR_BLOCK: (u32, u32, u32) = (TILE as u32, (TILE / STRIP) as u32, 1);
/// Dynamic shared memory of `blur_maxima`: the staged map, the row pass and one key per thread.
const BLUR_SHARED_BYTES: u32 =
    ((HALO * STAGED_STRIDE + HALO * TILE) * 4 + TILE * (TILE / STRIP) * 8) as u32;

/// The decode kernels' arguments besides the buffers, and their launch shapes, made once for
/// the device and its host emulation.
pub(crate) struct DecodeArgs {
    pub(crate) width: i32,
    pub(crate) height: i32,
    /// Keys in the partials buffer: two per tile of every map.
    pub(crate) partials: usize,
    pub(crate) taps: BlurTaps,
    /// One block per tile of every map.
    pub(crate) blur: LaunchConfig,
    /// One block per map.
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
        // The kernels index a map's values with 32-bit integers.
        if height * width > i32::MAX as usize {
            return Err(Error::Cuda(format!(
                "heatmaps of {height} x {width} are too large to decode on the device"
            )));
        }
        let tiles = width.div_ceil(TILE) * height.div_ceil(TILE);
        Ok(DecodeArgs {
            width: width as i32,
            height: height as i32,
            partials: 2 * maps * tiles,
            taps: BlurTaps(opencv_gaussian_kernel()),
            blur: LaunchConfig {
                grid_dim: ((maps * tiles) as u32, 1, 1),
                block_dim: BLUR_BLOCK,
                shared_mem_bytes: BLUR_SHARED_BYTES,
            },
            refine: LaunchConfig {
                grid_dim: (maps as u32, 1, 1),
                block_dim: (REFINE_THREADS, 1, 1),
                shared_mem_bytes: 2 * 8 * REFINE_THREADS + 9 * 4,
            },
        })
    }
}

/// Decodes `maps` heatmaps of `height x width` (contiguous) into `out`, one peak per map.
/// `scratch` holds the tiles' partial maxima (resized as needed, reused between calls).
pub fn decode_dark_udp(
    gpu: &Gpu,
    heatmaps: &CudaSlice<f32>,
    (maps, height, width): (usize, usize, usize),
    scratch: &mut Option<CudaSlice<u64>>,
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
    scratch: &mut Option<CudaSlice<u64>>,
    mut peaks: CudaViewMut<'_, DevicePeak>,
) -> Result<()> {
    let args = DecodeArgs::new(heatmaps.len(), (maps, height, width))?;
    if peaks.len() < maps {
        return Err(Error::Cuda(format!(
            "{} peaks for {maps} heatmaps",
            peaks.len()
        )));
    }
    let stream = gpu.stream();
    if scratch.as_ref().is_none_or(|p| p.len() < args.partials) {
        *scratch = Some(
            stream
                .alloc_zeros::<u64>(args.partials)
                .map_err(cuda_error("allocating the decode's partial maxima"))?,
        );
    }
    let partials = scratch.as_mut().expect("allocated above");
    let function = gpu.function("pose", "blur_maxima")?;
    let mut launch = stream.launch_builder(&function);
    launch
        .arg(heatmaps)
        .arg(&args.width)
        .arg(&args.height)
        .arg(&args.taps)
        .arg(&mut *partials);
    // SAFETY: arguments match the kernel; the grid's blocks are the tiles of the maps
    // `DecodeArgs::new` checked against the heatmaps, and `partials` holds two keys per block.
    unsafe { launch.launch(args.blur) }.map_err(cuda_error("launching blur_maxima"))?;
    let function = gpu.function("pose", "refine_peaks")?;
    let mut launch = stream.launch_builder(&function);
    launch
        .arg(heatmaps)
        .arg(&*partials)
        .arg(&args.width)
        .arg(&args.height)
        .arg(&args.taps)
        .arg(&mut peaks);
    // SAFETY: arguments match the kernel; one block per map, one peak per block.
    unsafe { launch.launch(args.refine) }.map_err(cuda_error("launching refine_peaks"))?;
    Ok(())
}
