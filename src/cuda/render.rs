//! The class-map overlay on the device, as [`crate::render::blend_class_map`].

use cudarc::driver::{CudaSlice, PushKernelArg};

use super::{Gpu, cuda_error, grid_2d};
use crate::error::{Error, Result};

/// Blends the palette colour of each pixel's class into an RGBA frame on the device:
/// `(v * (256 - w) + colour * w + 128) >> 8` with `w = round(alpha * 256)`; class 0 and classes
/// beyond the palette stay untouched.
#[allow(clippy::too_many_arguments)]
pub fn blend_class_map(
    gpu: &Gpu,
    frame: &mut CudaSlice<u8>,
    (width, height, stride): (usize, usize, usize),
    class_map: &CudaSlice<u8>,
    palette: &[[u8; 3]],
    alpha: f32,
) -> Result<()> {
    if stride < width * 4
        || (height > 0 && frame.len() < (height - 1) * stride + width * 4)
        || class_map.len() < width * height
    {
        return Err(Error::Cuda(format!(
            "frame or class map too small for {width}x{height} with stride {stride}"
        )));
    }
    if width == 0 || height == 0 {
        return Ok(());
    }
    let palette: Vec<u8> = palette.iter().take(256).flatten().copied().collect();
    let palette_len = (palette.len() / 3) as i32;
    let palette = gpu
        .stream()
        .clone_htod(&palette)
        .map_err(cuda_error("uploading the palette"))?;
    let weight = (alpha.clamp(0.0, 1.0) * 256.0).round() as i32;
    let [w, h, s] = [width, height, stride].map(|v| v as i32);
    let function = gpu.function("render", "blend_class_map")?;
    let mut launch = gpu.stream().launch_builder(&function);
    launch
        .arg(frame)
        .arg(&w)
        .arg(&h)
        .arg(&s)
        .arg(class_map)
        .arg(&palette)
        .arg(&palette_len)
        .arg(&weight);
    // SAFETY: arguments match the kernel; sizes checked above.
    unsafe { launch.launch(grid_2d(width, height, 1)) }
        .map_err(cuda_error("launching blend_class_map"))?;
    Ok(())
}
