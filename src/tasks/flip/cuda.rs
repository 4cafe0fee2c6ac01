//! The flip test on the device, as [`crate::tasks::flip`]: mirrored crops in, merged heatmaps out,
//! so the mirrored heatmaps never leave the GPU either.

use cudarc::driver::{CudaSlice, LaunchConfig, PushKernelArg};

use crate::cuda::{Gpu, cuda_error};
use crate::error::{Error, Result};

/// Mirrors `items x channels x height x width` planar values left to right into `out`.
pub fn mirror_batch(
    gpu: &Gpu,
    input: &CudaSlice<f32>,
    (items, channels, height, width): (usize, usize, usize, usize),
    out: &mut CudaSlice<f32>,
) -> Result<()> {
    let len = items * channels * height * width;
    if input.len() < len || out.len() < len {
        return Err(Error::Cuda(format!(
            "mirror of {items} x {channels} x {height} x {width}: buffers hold {} and {}",
            input.len(),
            out.len()
        )));
    }
    if len == 0 {
        return Ok(());
    }
    let function = gpu.function("flip", "mirror_rows")?;
    let (rows, width) = ((items * channels * height) as i64, width as i32);
    let mut launch = gpu.stream().launch_builder(&function);
    launch.arg(input).arg(&rows).arg(&width).arg(out);
    // SAFETY: arguments match the kernel; both buffers hold `len` values.
    unsafe { launch.launch(LaunchConfig::for_num_elems(len as u32)) }
        .map_err(cuda_error("launching mirror_rows"))?;
    Ok(())
}

/// Averages each heatmap with its flip partner's mirrored map, in place in `plain`.
pub fn merge_flipped_heatmaps(
    gpu: &Gpu,
    plain: &mut CudaSlice<f32>,
    mirrored: &CudaSlice<f32>,
    items: usize,
    flip_indices: &CudaSlice<i32>,
    (height, width): (usize, usize),
) -> Result<()> {
    let channels = flip_indices.len();
    let len = items * channels * height * width;
    if plain.len() < len || mirrored.len() < len {
        return Err(Error::Cuda(format!(
            "flip merge of {items} x {channels} x {height} x {width}: buffers hold {} and {}",
            plain.len(),
            mirrored.len()
        )));
    }
    if len == 0 {
        return Ok(());
    }
    let function = gpu.function("flip", "merge_flipped")?;
    let [items, channels, height, width] = [items, channels, height, width].map(|v| v as i32);
    let mut launch = gpu.stream().launch_builder(&function);
    launch
        .arg(plain)
        .arg(mirrored)
        .arg(&items)
        .arg(&channels)
        .arg(flip_indices)
        .arg(&height)
        .arg(&width);
    // SAFETY: arguments match the kernel; both buffers hold `len` values and every flip index is
    // below `channels` (checked when the indices were uploaded).
    unsafe { launch.launch(LaunchConfig::for_num_elems(len as u32)) }
        .map_err(cuda_error("launching merge_flipped"))?;
    Ok(())
}

/// Uploads a keypoint set's flip indices, checking each names a channel.
pub fn upload_flip_indices(gpu: &Gpu, flip_indices: &[usize]) -> Result<CudaSlice<i32>> {
    let channels = flip_indices.len();
    if let Some(bad) = flip_indices.iter().find(|&&k| k >= channels) {
        return Err(Error::Cuda(format!(
            "flip index {bad} is not below {channels}"
        )));
    }
    let indices: Vec<i32> = flip_indices.iter().map(|&k| k as i32).collect();
    gpu.stream()
        .clone_htod(&indices)
        .map_err(cuda_error("uploading flip indices"))
}
