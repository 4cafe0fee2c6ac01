//! Model inputs made on the device from a frame in device memory: the stretch (dense tasks) and
//! batched UDP crops (pose, one crop per person, each written into its batch slot), planar RGB,
//! normalised, `f32` or `f16`. The tap tables are the CPU path's ([`crate::preprocess`]), so the
//! values before normalisation equal the CPU's; YUV frames are converted per sample as OpenCV's
//! `cvtColor(COLOR_YUV2RGB_NV12 / _I420)` does ([`yuv420_to_rgb`] is the CPU twin).

use cudarc::driver::{CudaSlice, DeviceRepr, LaunchConfig, PushKernelArg};

use super::{Gpu, cuda_error, grid_2d};
use crate::error::{Error, Result};
use crate::preprocess::{Normalization, PoseCrop, StretchPlan, Tap, warp_taps};

/// How a frame's bytes are laid out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SourceLayout {
    Rgb,
    Bgr,
    /// RGBA or RGBx: the fourth byte is ignored.
    Rgbx,
    /// BGRA or BGRx.
    Bgrx,
    /// Y plane, then interleaved U/V at half resolution.
    Nv12,
    /// Y plane, then U, then V, each at half resolution.
    I420,
}

impl SourceLayout {
    /// The kernel's `LAYOUT_*` code.
    fn code(self) -> i32 {
        match self {
            Self::Rgb => 0,
            Self::Bgr => 1,
            Self::Rgbx => 2,
            Self::Bgrx => 3,
            Self::Nv12 => 4,
            Self::I420 => 5,
        }
    }
}

/// A frame's geometry: size, layout and where its planes start in its buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameGeometry {
    pub width: usize,
    pub height: usize,
    pub layout: SourceLayout,
    /// Bytes per row of the packed image or of the Y plane.
    pub stride: usize,
    /// Byte offsets of the chroma planes (UV for NV12; U and V for I420).
    pub chroma: [usize; 2],
    pub chroma_stride: usize,
}

impl FrameGeometry {
    /// A packed RGB/BGR(x) frame without padding.
    pub fn packed(width: usize, height: usize, layout: SourceLayout) -> Self {
        let bytes = if matches!(layout, SourceLayout::Rgb | SourceLayout::Bgr) {
            3
        } else {
            4
        };
        FrameGeometry {
            width,
            height,
            layout,
            stride: width * bytes,
            chroma: [0; 2],
            chroma_stride: 0,
        }
    }

    /// An NV12 or I420 frame without padding (even width and height).
    pub fn yuv420(width: usize, height: usize, layout: SourceLayout) -> Self {
        let luma = width * height;
        let (chroma, chroma_stride) = match layout {
            SourceLayout::Nv12 => ([luma, 0], width),
            _ => ([luma, luma + luma / 4], width / 2),
        };
        FrameGeometry {
            width,
            height,
            layout,
            stride: width,
            chroma,
            chroma_stride,
        }
    }

    /// Bytes the frame's buffer must hold.
    pub fn len(&self) -> usize {
        match self.layout {
            SourceLayout::Nv12 => self.chroma[0] + self.height.div_ceil(2) * self.chroma_stride,
            SourceLayout::I420 => self.chroma[1] + self.height.div_ceil(2) * self.chroma_stride,
            _ => self.height * self.stride,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.width == 0 || self.height == 0
    }

    fn device_layout(&self) -> FrameLayout {
        FrameLayout {
            layout: self.layout.code(),
            stride: self.stride as i32,
            chroma0: self.chroma[0] as i64,
            chroma1: self.chroma[1] as i64,
            chroma_stride: self.chroma_stride as i32,
        }
    }
}

/// `FrameLayout` in preprocess.cu.
#[repr(C)]
#[derive(Clone, Copy)]
pub(super) struct FrameLayout {
    layout: i32,
    stride: i32,
    chroma0: i64,
    chroma1: i64,
    chroma_stride: i32,
}

// SAFETY: plain old data with the kernel's C layout.
unsafe impl DeviceRepr for FrameLayout {}

/// `Tap` in preprocess.cu.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct DeviceTap {
    i0: i32,
    i1: i32,
    w0: i32,
    w1: i32,
}

// SAFETY: plain old data with the kernel's C layout.
unsafe impl DeviceRepr for DeviceTap {}

impl From<&Tap> for DeviceTap {
    fn from(tap: &Tap) -> Self {
        DeviceTap {
            i0: tap.i0 as i32,
            i1: tap.i1 as i32,
            w0: i32::from(tap.w0),
            w1: i32::from(tap.w1),
        }
    }
}

/// `Normalisation` in preprocess.cu.
#[repr(C)]
#[derive(Clone, Copy)]
pub(super) struct DeviceNormalisation {
    mean: [f32; 3],
    std: [f32; 3],
}

// SAFETY: plain old data with the kernel's C layout.
unsafe impl DeviceRepr for DeviceNormalisation {}

/// Which fixed-point arithmetic the kernel applies (`ARITHMETIC_*` in preprocess.cu).
#[derive(Clone, Copy)]
pub(super) enum Arithmetic {
    Resize = 0,
    Warp = 1,
}

/// An output element type the kernels write.
pub trait InputElement: DeviceRepr {
    const KERNEL: &'static str;
}

impl InputElement for f32 {
    const KERNEL: &'static str = "preprocess_f32";
}

/// Half precision, as its bits (what TensorRT fp16 engines take).
impl InputElement for half::f16 {
    const KERNEL: &'static str = "preprocess_f16";
}

/// A stretch plan's taps on the device, reused frame after frame.
pub struct DeviceStretch {
    columns: CudaSlice<DeviceTap>,
    rows: CudaSlice<DeviceTap>,
    source: (usize, usize),
}

impl DeviceStretch {
    pub fn upload(gpu: &Gpu, plan: &StretchPlan, src_w: usize, src_h: usize) -> Result<Self> {
        let (columns, rows) = plan.taps();
        Ok(DeviceStretch {
            columns: upload_taps(gpu, columns)?,
            rows: upload_taps(gpu, rows)?,
            source: (src_w, src_h),
        })
    }

    /// Stretches `frame` into `out` (3 x dst_h x dst_w), on the GPU's stream.
    pub fn run<T: InputElement>(
        &self,
        gpu: &Gpu,
        frame: &CudaSlice<u8>,
        geometry: &FrameGeometry,
        norm: &Normalization,
        out: &mut CudaSlice<T>,
    ) -> Result<()> {
        if (geometry.width, geometry.height) != self.source {
            return Err(Error::Cuda(format!(
                "stretch planned for {}x{} frames, got {}x{}",
                self.source.0, self.source.1, geometry.width, geometry.height
            )));
        }
        let size = (self.columns.len(), self.rows.len());
        launch_bilinear(
            gpu,
            frame,
            geometry,
            (&self.columns, &self.rows),
            Arithmetic::Resize,
            size,
            1,
            norm,
            out,
        )
    }
}

/// Warps one UDP crop per person into consecutive slots of `out` (items x 3 x dst_h x dst_w).
#[allow(clippy::too_many_arguments)]
pub fn warp_crops<T: InputElement>(
    gpu: &Gpu,
    frame: &CudaSlice<u8>,
    geometry: &FrameGeometry,
    crops: &[PoseCrop],
    (dst_w, dst_h): (usize, usize),
    norm: &Normalization,
    out: &mut CudaSlice<T>,
) -> Result<()> {
    if crops.is_empty() {
        return Ok(());
    }
    let (columns, rows) = crop_taps(geometry, crops, (dst_w, dst_h))?;
    let columns = gpu
        .stream()
        .clone_htod(&columns)
        .map_err(cuda_error("uploading crop taps"))?;
    let rows = gpu
        .stream()
        .clone_htod(&rows)
        .map_err(cuda_error("uploading crop taps"))?;
    launch_bilinear(
        gpu,
        frame,
        geometry,
        (&columns, &rows),
        Arithmetic::Warp,
        (dst_w, dst_h),
        crops.len(),
        norm,
        out,
    )
}

/// The column and row taps of every crop, one after another (the kernel's `blockIdx.z` picks).
pub(super) fn crop_taps(
    geometry: &FrameGeometry,
    crops: &[PoseCrop],
    (dst_w, dst_h): (usize, usize),
) -> Result<(Vec<DeviceTap>, Vec<DeviceTap>)> {
    let mut columns = Vec::with_capacity(crops.len() * dst_w);
    let mut rows = Vec::with_capacity(crops.len() * dst_h);
    for crop in crops {
        let positive = |v: f32| v.is_finite() && v > 0.0;
        if !(positive(crop.w) && positive(crop.h)) {
            return Err(Error::Cuda(format!(
                "crop must have a positive size: {crop:?}"
            )));
        }
        let (c, r) = warp_taps(geometry.width, geometry.height, crop, dst_w, dst_h);
        columns.extend(c.iter().map(DeviceTap::from));
        rows.extend(r.iter().map(DeviceTap::from));
    }
    Ok((columns, rows))
}

fn upload_taps(gpu: &Gpu, taps: &[Tap]) -> Result<CudaSlice<DeviceTap>> {
    gpu.stream()
        .clone_htod(&device_taps(taps))
        .map_err(cuda_error("uploading taps"))
}

/// A stretch plan's (or any) taps as the kernel reads them.
pub(super) fn device_taps(taps: &[Tap]) -> Vec<DeviceTap> {
    taps.iter().map(DeviceTap::from).collect()
}

#[allow(clippy::too_many_arguments)]
fn launch_bilinear<T: InputElement>(
    gpu: &Gpu,
    frame: &CudaSlice<u8>,
    geometry: &FrameGeometry,
    (columns, rows): (&CudaSlice<DeviceTap>, &CudaSlice<DeviceTap>),
    arithmetic: Arithmetic,
    (dst_w, dst_h): (usize, usize),
    items: usize,
    norm: &Normalization,
    out: &mut CudaSlice<T>,
) -> Result<()> {
    let args = BilinearArgs::new(
        geometry,
        frame.len(),
        arithmetic,
        (dst_w, dst_h),
        items,
        norm,
        out.len(),
    )?;
    let function = gpu.function("preprocess", T::KERNEL)?;
    let mut launch = gpu.stream().launch_builder(&function);
    launch
        .arg(frame)
        .arg(&args.layout)
        .arg(columns)
        .arg(rows)
        .arg(&args.arithmetic)
        .arg(&args.width)
        .arg(&args.height)
        .arg(&args.norm)
        .arg(out);
    // SAFETY: the argument list matches the kernel's signature, and the sizes were checked by
    // `BilinearArgs::new`: every tap indexes inside the frame (the CPU tap code clamps them) and
    // every write lands in `out`.
    unsafe { launch.launch(args.config) }.map_err(cuda_error("launching preprocess"))?;
    Ok(())
}

/// The preprocess kernels' arguments besides the buffers, and their launch shape, made once for
/// the device and its host emulation.
pub(super) struct BilinearArgs {
    pub(super) layout: FrameLayout,
    pub(super) arithmetic: i32,
    pub(super) width: i32,
    pub(super) height: i32,
    pub(super) norm: DeviceNormalisation,
    pub(super) config: LaunchConfig,
}

impl BilinearArgs {
    /// Checks the buffers' sizes (`frame_len` bytes, `out_len` values) against the launch.
    pub(super) fn new(
        geometry: &FrameGeometry,
        frame_len: usize,
        arithmetic: Arithmetic,
        (dst_w, dst_h): (usize, usize),
        items: usize,
        norm: &Normalization,
        out_len: usize,
    ) -> Result<Self> {
        if geometry.is_empty() || frame_len < geometry.len() {
            return Err(Error::Cuda(format!(
                "frame buffer holds {frame_len} bytes, its geometry needs {}",
                geometry.len()
            )));
        }
        if out_len < items * 3 * dst_w * dst_h {
            return Err(Error::Cuda(format!(
                "output holds {out_len} values, {items} x 3 x {dst_h} x {dst_w} needed"
            )));
        }
        Ok(BilinearArgs {
            layout: geometry.device_layout(),
            arithmetic: arithmetic as i32,
            width: dst_w as i32,
            height: dst_h as i32,
            norm: DeviceNormalisation {
                mean: norm.mean,
                std: norm.std,
            },
            config: grid_2d(dst_w, dst_h, items),
        })
    }
}

/// OpenCV's `cvtColor(COLOR_YUV2RGB_NV12 / _I420)` on the CPU (BT.601 limited range, 20-bit
/// fixed point, chroma shared by each 2x2 block): the kernels' colour conversion, as packed RGB.
pub fn yuv420_to_rgb(data: &[u8], geometry: &FrameGeometry) -> Vec<u8> {
    const SHIFT: i32 = 20;
    const HALF: i32 = 1 << (SHIFT - 1);
    let mut rgb = Vec::with_capacity(geometry.width * geometry.height * 3);
    for y in 0..geometry.height {
        for x in 0..geometry.width {
            let luma = i32::from(data[y * geometry.stride + x]);
            let (u, v) = match geometry.layout {
                SourceLayout::Nv12 => {
                    let at = geometry.chroma[0] + y / 2 * geometry.chroma_stride + x / 2 * 2;
                    (data[at], data[at + 1])
                }
                _ => {
                    let at = y / 2 * geometry.chroma_stride + x / 2;
                    (data[geometry.chroma[0] + at], data[geometry.chroma[1] + at])
                }
            };
            let (u, v) = (i32::from(u) - 128, i32::from(v) - 128);
            let luma = (luma - 16).max(0) * 1_220_542;
            let channel = |chroma: i32| ((luma + HALF + chroma) >> SHIFT).clamp(0, 255) as u8;
            rgb.extend([
                channel(1_673_527 * v),
                channel(-852_492 * v - 409_993 * u),
                channel(2_116_026 * u),
            ]);
        }
    }
    rgb
}
