//! Depth and surface normals on the device, as [`crate::tasks::dense`]: the model's maps resized
//! to the frame, depth normalised over the person foreground and coloured with inferno, normals
//! made unit length and coloured, straight into the RGBA frame.

use cudarc::driver::{CudaSlice, LaunchArgs, LaunchConfig, PushKernelArg};

use crate::cuda::{Gpu, cuda_error, grid_2d};
use crate::error::{Error, Result};
use crate::tasks::dense::{DepthRange, inferno};
use crate::tasks::seg::cuda::upload_linear_taps;

/// Threads per block of the range reduction, and its blocks in the first pass.
pub(crate) const RANGE_THREADS: u32 = 256;
pub(crate) const RANGE_BLOCKS: u32 = 128;

/// A null `const unsigned char*` for the kernels: no class map.
static NO_CLASSES: u64 = 0;

/// Pushes the optional class map, or null.
fn push_classes<'a>(launch: &mut LaunchArgs<'a>, classes: Option<&'a CudaSlice<u8>>) {
    match classes {
        Some(classes) => launch.arg(classes),
        None => launch.arg(&NO_CLASSES),
    };
}

/// Resizes `channels` planar maps of `in_h x in_w` on the device to `out_w x out_h` (bilinear,
/// half-pixel centres, as [`crate::tasks::dense::resize_planar`]).
pub fn resize_planar(
    gpu: &Gpu,
    maps: &CudaSlice<f32>,
    (channels, in_h, in_w): (usize, usize, usize),
    (out_w, out_h): (usize, usize),
    out: &mut CudaSlice<f32>,
) -> Result<()> {
    if [channels, in_h, in_w, out_w, out_h].contains(&0)
        || maps.len() < channels * in_h * in_w
        || out.len() < channels * out_h * out_w
    {
        return Err(Error::Cuda(format!(
            "resize of {channels} x {in_h} x {in_w} to {out_w} x {out_h}: buffers hold {} and {}",
            maps.len(),
            out.len()
        )));
    }
    let columns = upload_linear_taps(gpu, in_w, out_w)?;
    let rows = upload_linear_taps(gpu, in_h, out_h)?;
    let function = gpu.function("dense", "resize_planar")?;
    let [c, ih, iw, ow, oh] = [channels, in_h, in_w, out_w, out_h].map(|v| v as i32);
    let mut launch = gpu.stream().launch_builder(&function);
    launch
        .arg(maps)
        .arg(&c)
        .arg(&ih)
        .arg(&iw)
        .arg(&columns)
        .arg(&rows)
        .arg(&ow)
        .arg(&oh)
        .arg(out);
    // SAFETY: arguments match the kernel; sizes checked, taps clamped to the source maps.
    unsafe { launch.launch(grid_2d(out_w, out_h, channels)) }
        .map_err(cuda_error("launching resize_planar"))?;
    Ok(())
}

/// Scratch of the range reduction and its result: (min, max), NaN when no pixel counts.
pub struct RangeBuffers {
    partials: CudaSlice<f32>,
    range: CudaSlice<f32>,
}

impl RangeBuffers {
    pub fn new(gpu: &Gpu) -> Result<Self> {
        let alloc = |len| {
            gpu.stream()
                .alloc_zeros::<f32>(len)
                .map_err(cuda_error("allocating range buffers"))
        };
        Ok(RangeBuffers {
            partials: alloc(2 * RANGE_BLOCKS as usize)?,
            range: alloc(2)?,
        })
    }

    /// The device-side (min, max) the last [`value_range`] wrote.
    pub fn range(&self) -> &CudaSlice<f32> {
        &self.range
    }

    /// Reads the range back (waits for the stream).
    pub fn read(&self, gpu: &Gpu) -> Result<Option<DepthRange>> {
        let range = gpu
            .stream()
            .clone_dtoh(&self.range)
            .map_err(cuda_error("reading the depth range"))?;
        Ok((range[0] <= range[1]).then_some(DepthRange {
            min: range[0],
            max: range[1],
        }))
    }
}

/// Min and max of `values` over the pixels whose class is > 0 (every pixel without a class
/// map), NaN left out, into `buffers`: two passes, no host round trip.
pub fn value_range(
    gpu: &Gpu,
    values: &CudaSlice<f32>,
    classes: Option<&CudaSlice<u8>>,
    count: usize,
    buffers: &mut RangeBuffers,
) -> Result<()> {
    if values.len() < count || classes.is_some_and(|c| c.len() < count) {
        return Err(Error::Cuda(format!(
            "range over {count} values: buffers too small"
        )));
    }
    let function = gpu.function("dense", "value_range")?;
    let pass = |input: &CudaSlice<f32>,
                classes: Option<&CudaSlice<u8>>,
                count: i64,
                blocks: u32,
                out: &mut CudaSlice<f32>|
     -> Result<()> {
        let mut launch = gpu.stream().launch_builder(&function);
        launch.arg(input);
        push_classes(&mut launch, classes);
        launch.arg(&count).arg(out);
        let config = LaunchConfig {
            grid_dim: (blocks, 1, 1),
            block_dim: (RANGE_THREADS, 1, 1),
            shared_mem_bytes: 2 * 4 * RANGE_THREADS,
        };
        // SAFETY: arguments match the kernel; `out` holds 2 values per block, `input` and
        // `classes` hold `count` values (checked above).
        unsafe { launch.launch(config) }.map_err(cuda_error("launching value_range"))?;
        Ok(())
    };
    pass(
        values,
        classes,
        count as i64,
        RANGE_BLOCKS,
        &mut buffers.partials,
    )?;
    let partials = 2 * i64::from(RANGE_BLOCKS);
    pass(&buffers.partials, None, partials, 1, &mut buffers.range)
}

/// (d - min) / (max - min) over the foreground, 0 elsewhere (and everywhere when the range is
/// empty or flat), as [`crate::tasks::dense::normalise_depth`].
pub fn normalise_depth(
    gpu: &Gpu,
    depth: &CudaSlice<f32>,
    classes: Option<&CudaSlice<u8>>,
    range: &CudaSlice<f32>,
    out: &mut CudaSlice<f32>,
) -> Result<()> {
    let count = depth.len();
    if out.len() < count || classes.is_some_and(|c| c.len() < count) || range.len() < 2 {
        return Err(Error::Cuda(format!(
            "depth normalisation of {count} values: buffers too small"
        )));
    }
    let function = gpu.function("dense", "normalise_depth")?;
    let mut launch = gpu.stream().launch_builder(&function);
    launch.arg(depth);
    push_classes(&mut launch, classes);
    let count = count as i64;
    launch.arg(&count).arg(range).arg(out);
    // SAFETY: arguments match the kernel; every buffer holds `count` values, `range` two.
    unsafe { launch.launch(LaunchConfig::for_num_elems(count as u32)) }
        .map_err(cuda_error("launching normalise_depth"))?;
    Ok(())
}

/// Checks an RGBA frame of `width x height` with `stride` fits in `frame`.
fn check_frame(
    frame: &CudaSlice<u8>,
    (width, height, stride): (usize, usize, usize),
) -> Result<()> {
    if stride < width * 4 || (height > 0 && frame.len() < (height - 1) * stride + width * 4) {
        return Err(Error::Cuda(format!(
            "frame of {} bytes too small for {width}x{height} with stride {stride}",
            frame.len()
        )));
    }
    Ok(())
}

/// Colours normalised depth into the RGBA frame with inferno, nearest brightest, as
/// [`crate::tasks::dense::draw_depth`].
pub fn draw_depth(
    gpu: &Gpu,
    frame: &mut CudaSlice<u8>,
    size: (usize, usize, usize),
    normalised: &CudaSlice<f32>,
    classes: Option<&CudaSlice<u8>>,
) -> Result<()> {
    let (width, height, stride) = size;
    check_frame(frame, size)?;
    let pixels = width * height;
    if normalised.len() < pixels || classes.is_some_and(|c| c.len() < pixels) {
        return Err(Error::Cuda(
            "depth or class map smaller than the frame".into(),
        ));
    }
    let colormap: Vec<u8> = inferno().iter().flatten().copied().collect();
    let colormap = gpu
        .stream()
        .clone_htod(&colormap)
        .map_err(cuda_error("uploading the colormap"))?;
    let function = gpu.function("dense", "draw_depth")?;
    let [w, h, s] = [width, height, stride].map(|v| v as i32);
    let mut launch = gpu.stream().launch_builder(&function);
    launch.arg(frame).arg(&w).arg(&h).arg(&s).arg(normalised);
    push_classes(&mut launch, classes);
    launch.arg(&colormap);
    // SAFETY: arguments match the kernel; sizes checked, levels are 0..=255 of a 256-entry map.
    unsafe { launch.launch(grid_2d(width, height, 1)) }
        .map_err(cuda_error("launching draw_depth"))?;
    Ok(())
}

/// Makes every normal of a 3 x H x W map unit length (+ 1e-5), in place, as
/// [`crate::tasks::dense::normalise_normals`].
pub fn normalise_normals(gpu: &Gpu, normals: &mut CudaSlice<f32>) -> Result<()> {
    if !normals.len().is_multiple_of(3) {
        return Err(Error::Cuda("normals must be 3 planes".into()));
    }
    let plane = (normals.len() / 3) as i64;
    let function = gpu.function("dense", "normalise_normals")?;
    let mut launch = gpu.stream().launch_builder(&function);
    launch.arg(normals).arg(&plane);
    // SAFETY: arguments match the kernel; the buffer holds 3 planes of `plane` values.
    unsafe { launch.launch(LaunchConfig::for_num_elems(plane as u32)) }
        .map_err(cuda_error("launching normalise_normals"))?;
    Ok(())
}

/// Draws unit normals (frame size) as colours into the RGBA frame, as
/// [`crate::tasks::dense::draw_normals`].
pub fn draw_normals(
    gpu: &Gpu,
    frame: &mut CudaSlice<u8>,
    size: (usize, usize, usize),
    normals: &CudaSlice<f32>,
    classes: Option<&CudaSlice<u8>>,
) -> Result<()> {
    let (width, height, stride) = size;
    check_frame(frame, size)?;
    let pixels = width * height;
    if normals.len() < 3 * pixels || classes.is_some_and(|c| c.len() < pixels) {
        return Err(Error::Cuda(
            "normals or class map smaller than the frame".into(),
        ));
    }
    let function = gpu.function("dense", "draw_normals")?;
    let [w, h, s] = [width, height, stride].map(|v| v as i32);
    let mut launch = gpu.stream().launch_builder(&function);
    launch.arg(frame).arg(&w).arg(&h).arg(&s).arg(normals);
    push_classes(&mut launch, classes);
    // SAFETY: arguments match the kernel; sizes checked above.
    unsafe { launch.launch(grid_2d(width, height, 1)) }
        .map_err(cuda_error("launching draw_normals"))?;
    Ok(())
}
