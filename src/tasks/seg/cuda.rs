//! Segmentation logits on the device to a class map: bilinear upsample then argmax, or argmax
//! then nearest upsample, with the CPU path's taps ([`crate::tasks::seg`]).

use cudarc::driver::{CudaSlice, DeviceRepr, PushKernelArg};

use crate::cuda::{Gpu, cuda_error, grid_2d};
use crate::error::{Error, Result};
use crate::tasks::seg::{linear_taps, nearest_sources};

/// `LinearTap` in seg.cu and dense.cu.
#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct DeviceLinearTap {
    lo: i32,
    hi: i32,
    w_lo: f32,
    w_hi: f32,
}

// SAFETY: plain old data with the kernel's C layout.
unsafe impl DeviceRepr for DeviceLinearTap {}

/// The logits' shape (classes x height x width) and the class map's size.
#[derive(Clone, Copy, Debug)]
pub struct SegShape {
    pub classes: usize,
    pub in_h: usize,
    pub in_w: usize,
    pub out_w: usize,
    pub out_h: usize,
}

impl SegShape {
    /// Checks the shape against buffers of `logits` and `out` values; the kernels' sizes,
    /// `[classes, in_h, in_w, out_w, out_h]`.
    pub(crate) fn check(&self, logits: usize, out: usize) -> Result<[i32; 5]> {
        let sizes = [self.classes, self.in_h, self.in_w, self.out_w, self.out_h];
        if sizes.contains(&0) || self.classes > 256 {
            return Err(Error::Cuda(format!("bad segmentation shape {self:?}")));
        }
        if logits < self.classes * self.in_h * self.in_w || out < self.out_w * self.out_h {
            return Err(Error::Cuda(format!("buffers too small for {self:?}")));
        }
        Ok(sizes.map(|v| v as i32))
    }
}

/// The CPU path's bilinear taps of one axis, as the kernel reads them.
pub(crate) fn device_linear_taps(in_len: usize, out_len: usize) -> Vec<DeviceLinearTap> {
    linear_taps(in_len, out_len)
        .iter()
        .map(|t| DeviceLinearTap {
            lo: t.lo as i32,
            hi: t.hi as i32,
            w_lo: t.w_lo,
            w_hi: t.w_hi,
        })
        .collect()
}

/// The CPU path's bilinear taps from `in_len` to `out_len` samples, on the device.
pub(crate) fn upload_linear_taps(
    gpu: &Gpu,
    in_len: usize,
    out_len: usize,
) -> Result<CudaSlice<DeviceLinearTap>> {
    gpu.stream()
        .clone_htod(&device_linear_taps(in_len, out_len))
        .map_err(cuda_error("uploading taps"))
}

/// The CPU path's nearest source indices of one axis, as the kernel reads them.
pub(crate) fn device_nearest_sources(in_len: usize, out_len: usize) -> Vec<i32> {
    nearest_sources(in_len, out_len)
        .into_iter()
        .map(|i| i as i32)
        .collect()
}

/// Bilinear upsample of every class, then argmax (ties to the lowest class).
pub fn upsample_argmax(
    gpu: &Gpu,
    logits: &CudaSlice<f32>,
    shape: SegShape,
    out: &mut CudaSlice<u8>,
) -> Result<()> {
    let [classes, in_h, in_w, out_w, out_h] = shape.check(logits.len(), out.len())?;
    let columns = upload_linear_taps(gpu, shape.in_w, shape.out_w)?;
    let rows = upload_linear_taps(gpu, shape.in_h, shape.out_h)?;
    let function = gpu.function("seg", "upsample_argmax")?;
    let mut launch = gpu.stream().launch_builder(&function);
    launch
        .arg(logits)
        .arg(&classes)
        .arg(&in_h)
        .arg(&in_w)
        .arg(&columns)
        .arg(&rows)
        .arg(&out_w)
        .arg(&out_h)
        .arg(out);
    // SAFETY: arguments match the kernel; sizes checked, taps clamped to the logit maps.
    unsafe { launch.launch(grid_2d(shape.out_w, shape.out_h, 1)) }
        .map_err(cuda_error("launching upsample_argmax"))?;
    Ok(())
}

/// Argmax at the logits' resolution, then nearest upsample with OpenCV's source indices.
pub fn argmax_nearest(
    gpu: &Gpu,
    logits: &CudaSlice<f32>,
    shape: SegShape,
    out: &mut CudaSlice<u8>,
) -> Result<()> {
    let [classes, in_h, in_w, out_w, out_h] = shape.check(logits.len(), out.len())?;
    let stream = gpu.stream();
    let mut low = stream
        .alloc_zeros::<u8>(shape.in_h * shape.in_w)
        .map_err(cuda_error("allocating"))?;
    let src_columns = stream
        .clone_htod(&device_nearest_sources(shape.in_w, shape.out_w))
        .map_err(cuda_error("uploading"))?;
    let src_rows = stream
        .clone_htod(&device_nearest_sources(shape.in_h, shape.out_h))
        .map_err(cuda_error("uploading"))?;
    let argmax = gpu.function("seg", "argmax_classes")?;
    let mut launch = stream.launch_builder(&argmax);
    launch
        .arg(logits)
        .arg(&classes)
        .arg(&in_h)
        .arg(&in_w)
        .arg(&mut low);
    // SAFETY: arguments match the kernel; sizes checked.
    unsafe { launch.launch(grid_2d(shape.in_w, shape.in_h, 1)) }
        .map_err(cuda_error("launching argmax_classes"))?;
    let nearest = gpu.function("seg", "nearest_upsample")?;
    let mut launch = stream.launch_builder(&nearest);
    launch
        .arg(&low)
        .arg(&in_w)
        .arg(&src_columns)
        .arg(&src_rows)
        .arg(&out_w)
        .arg(&out_h)
        .arg(out);
    // SAFETY: arguments match the kernel; source indices are clamped to the low-resolution map.
    unsafe { launch.launch(grid_2d(shape.out_w, shape.out_h, 1)) }
        .map_err(cuda_error("launching nearest_upsample"))?;
    Ok(())
}
