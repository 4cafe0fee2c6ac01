//! The class-map overlay on the device, as [`crate::render::blend_class_map`].

use cudarc::driver::{CudaSlice, LaunchConfig, PushKernelArg};

use crate::cuda::{Gpu, cuda_error, grid_2d};
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
    let Some(args) = BlendArgs::new(
        frame.len(),
        (width, height, stride),
        class_map.len(),
        palette,
        alpha,
    )?
    else {
        return Ok(());
    };
    let palette = gpu
        .stream()
        .clone_htod(&args.palette)
        .map_err(cuda_error("uploading the palette"))?;
    let [w, h, s] = args.sizes;
    let function = gpu.function("render", "blend_class_map")?;
    let mut launch = gpu.stream().launch_builder(&function);
    launch
        .arg(frame)
        .arg(&w)
        .arg(&h)
        .arg(&s)
        .arg(class_map)
        .arg(&palette)
        .arg(&args.palette_len)
        .arg(&args.weight);
    // SAFETY: arguments match the kernel; sizes checked by `BlendArgs::new`.
    unsafe { launch.launch(args.config) }.map_err(cuda_error("launching blend_class_map"))?;
    Ok(())
}

/// The blend kernel's arguments besides the frame and the class map, and its launch shape, made
/// once for the device and its host emulation.
pub(crate) struct BlendArgs {
    /// Width, height and stride.
    pub(crate) sizes: [i32; 3],
    /// RGB triplets, at most 256.
    pub(crate) palette: Vec<u8>,
    pub(crate) palette_len: i32,
    /// `round(alpha * 256)`.
    pub(crate) weight: i32,
    pub(crate) config: LaunchConfig,
}

impl BlendArgs {
    /// Checks the sizes against a frame of `frame_len` bytes and a class map of `class_map_len`;
    /// `None` for an empty frame (nothing to launch).
    pub(crate) fn new(
        frame_len: usize,
        (width, height, stride): (usize, usize, usize),
        class_map_len: usize,
        palette: &[[u8; 3]],
        alpha: f32,
    ) -> Result<Option<Self>> {
        if stride < width * 4
            || (height > 0 && frame_len < (height - 1) * stride + width * 4)
            || class_map_len < width * height
        {
            return Err(Error::Cuda(format!(
                "frame or class map too small for {width}x{height} with stride {stride}"
            )));
        }
        if width == 0 || height == 0 {
            return Ok(None);
        }
        let palette: Vec<u8> = palette.iter().take(256).flatten().copied().collect();
        Ok(Some(BlendArgs {
            sizes: [width, height, stride].map(|v| v as i32),
            palette_len: (palette.len() / 3) as i32,
            palette,
            weight: (alpha.clamp(0.0, 1.0) * 256.0).round() as i32,
            config: grid_2d(width, height, 1),
        }))
    }
}
