//! Model inputs made on the device from a frame in device memory: the stretch (dense tasks) and
//! batched UDP crops (pose, one crop per person, each written into its batch slot), planar RGB,
//! normalised, `f32` or `f16`. The tap tables are the CPU path's ([`crate::preprocess`]), so the
//! values before normalisation equal the CPU's; YUV frames are converted per sample in the 20-bit
//! fixed point of OpenCV's `cvtColor(COLOR_YUV2RGB_NV12 / _I420)`, with the matrix and range
//! the stream declares ([`YuvToRgb`]; [`crate::frame::yuv420_to_rgb`] is the CPU twin).

use cudarc::driver::{CudaSlice, DeviceRepr, LaunchConfig, PushKernelArg};

use crate::cuda::{Gpu, cuda_error, grid_2d};
use crate::error::{Error, Result};
use crate::frame::{FrameGeometry, SourceLayout, YuvToRgb};
use crate::preprocess::letterbox::LetterboxPlan;
use crate::preprocess::{Normalization, PoseCrop, StretchPlan, Tap, warp_taps};

/// `FrameLayout` in preprocess.cu.
#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct FrameLayout {
    layout: i32,
    stride: i32,
    chroma0: i64,
    chroma1: i64,
    chroma_stride: i32,
    yuv: YuvToRgb,
}

// SAFETY: plain old data with the kernel's C layout.
unsafe impl DeviceRepr for FrameLayout {}

// SAFETY: plain old data with the kernel's C layout (`YuvToRgb` in preprocess.cu).
unsafe impl DeviceRepr for YuvToRgb {}

impl FrameLayout {
    fn of(geometry: &FrameGeometry) -> Self {
        FrameLayout {
            layout: layout_code(geometry.layout),
            stride: geometry.stride as i32,
            chroma0: geometry.chroma[0] as i64,
            chroma1: geometry.chroma[1] as i64,
            chroma_stride: geometry.chroma_stride as i32,
            yuv: geometry.yuv,
        }
    }
}

/// The kernel's `LAYOUT_*` code.
fn layout_code(layout: SourceLayout) -> i32 {
    match layout {
        SourceLayout::Rgb => 0,
        SourceLayout::Bgr => 1,
        SourceLayout::Rgbx => 2,
        SourceLayout::Bgrx => 3,
        SourceLayout::Nv12 => 4,
        SourceLayout::I420 => 5,
    }
}

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
pub(crate) struct DeviceNormalisation {
    mean: [f32; 3],
    std: [f32; 3],
}

// SAFETY: plain old data with the kernel's C layout.
unsafe impl DeviceRepr for DeviceNormalisation {}

/// Which fixed-point arithmetic the kernel applies (`ARITHMETIC_*` in preprocess.cu).
#[derive(Clone, Copy)]
pub(crate) enum Arithmetic {
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

/// A person detector's letterbox on the device, for frames of one size: the stretch taps into
/// the resized rectangle, uploaded once, and where that rectangle sits in the input.
pub struct DeviceLetterbox {
    columns: CudaSlice<DeviceTap>,
    rows: CudaSlice<DeviceTap>,
    frame: (usize, usize),
    input: (usize, usize),
    placement: Placement,
    norm: Normalization,
}

impl DeviceLetterbox {
    pub fn upload(gpu: &Gpu, plan: &LetterboxPlan) -> Result<Self> {
        let (columns, rows) = plan.stretch.taps();
        Ok(DeviceLetterbox {
            columns: upload_taps(gpu, columns)?,
            rows: upload_taps(gpu, rows)?,
            frame: (plan.frame_w, plan.frame_h),
            input: (plan.input_w, plan.input_h),
            placement: Placement::of(plan),
            norm: plan.norm,
        })
    }

    /// Whether this was uploaded for `plan` (same frame, input and placement).
    pub fn is_for(&self, plan: &LetterboxPlan) -> bool {
        self.frame == (plan.frame_w, plan.frame_h)
            && self.input == (plan.input_w, plan.input_h)
            && self.placement == Placement::of(plan)
    }

    /// Letterboxes `frame` into `out` (the detector's 1 x 3 x H x W input), on the GPU's stream.
    pub fn run(
        &self,
        gpu: &Gpu,
        frame: &CudaSlice<u8>,
        geometry: &FrameGeometry,
        out: &mut CudaSlice<f32>,
    ) -> Result<()> {
        if (geometry.width, geometry.height) != self.frame {
            return Err(Error::Cuda(format!(
                "letterbox planned for {}x{} frames, got {}x{}",
                self.frame.0, self.frame.1, geometry.width, geometry.height
            )));
        }
        let args = LetterboxArgs::new(
            geometry,
            frame.len(),
            self.placement,
            self.input,
            &self.norm,
            out.len(),
        )?;
        let function = gpu.function("preprocess", "letterbox_f32")?;
        let mut launch = gpu.stream().launch_builder(&function);
        launch
            .arg(frame)
            .arg(&args.layout)
            .arg(&self.columns)
            .arg(&self.rows)
            .arg(&args.placement)
            .arg(&args.width)
            .arg(&args.height)
            .arg(&args.norm)
            .arg(out);
        // SAFETY: the arguments match the kernel; `LetterboxArgs::new` checked the buffers, the
        // taps (the CPU plan's, clamped inside the frame) cover the placement's rectangle.
        unsafe { launch.launch(args.config) }.map_err(cuda_error("launching letterbox_f32"))?;
        Ok(())
    }
}

/// `Placement` in preprocess.cu.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Placement {
    left: i32,
    top: i32,
    resized_w: i32,
    resized_h: i32,
    blue_first: i32,
    pad: [f32; 3],
}

// SAFETY: plain old data with the kernel's C layout.
unsafe impl DeviceRepr for Placement {}

impl Placement {
    pub(crate) fn of(plan: &LetterboxPlan) -> Self {
        let letterbox = &plan.letterbox;
        Placement {
            left: letterbox.left as i32,
            top: letterbox.top as i32,
            resized_w: letterbox.resized_w as i32,
            resized_h: letterbox.resized_h as i32,
            blue_first: i32::from(plan.blue_first),
            pad: plan.pad,
        }
    }
}

/// `letterbox_f32`'s arguments besides the buffers, and its launch shape.
pub(crate) struct LetterboxArgs {
    pub(crate) layout: FrameLayout,
    pub(crate) placement: Placement,
    pub(crate) width: i32,
    pub(crate) height: i32,
    pub(crate) norm: DeviceNormalisation,
    pub(crate) config: LaunchConfig,
}

impl LetterboxArgs {
    /// Checks a frame of `frame_len` bytes and an output of `out_len` values against the launch.
    pub(crate) fn new(
        geometry: &FrameGeometry,
        frame_len: usize,
        placement: Placement,
        (input_w, input_h): (usize, usize),
        norm: &Normalization,
        out_len: usize,
    ) -> Result<Self> {
        let inside = |start: i32, len: i32, side: usize| {
            start >= 0 && len > 0 && (start + len) as usize <= side
        };
        if geometry.is_empty()
            || frame_len < geometry.len()
            || out_len < 3 * input_w * input_h
            || !inside(placement.left, placement.resized_w, input_w)
            || !inside(placement.top, placement.resized_h, input_h)
        {
            return Err(Error::Cuda(format!(
                "frame of {frame_len} bytes (needs {}), input of {out_len} values (needs 3 x \
                 {input_h} x {input_w}) or {placement:?} do not fit {geometry:?}",
                geometry.len()
            )));
        }
        Ok(LetterboxArgs {
            layout: FrameLayout::of(geometry),
            placement,
            width: input_w as i32,
            height: input_h as i32,
            norm: DeviceNormalisation {
                mean: norm.mean,
                std: norm.std,
            },
            config: grid_2d(input_w, input_h, 1),
        })
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

/// Converts a frame of any layout into packed RGBA (`width x height x 4` bytes, alpha 255),
/// on the GPU's stream: the frame the overlay is drawn on when the decoder's is not RGBA.
pub fn frame_to_rgba(
    gpu: &Gpu,
    frame: &CudaSlice<u8>,
    geometry: &FrameGeometry,
    rgba: &mut CudaSlice<u8>,
) -> Result<()> {
    let args = RgbaArgs::new(geometry, frame.len(), rgba.len())?;
    let function = gpu.function("preprocess", "frame_to_rgba")?;
    let mut launch = gpu.stream().launch_builder(&function);
    launch
        .arg(frame)
        .arg(&args.layout)
        .arg(&args.width)
        .arg(&args.height)
        .arg(rgba);
    // SAFETY: the arguments match the kernel; `RgbaArgs::new` checked both buffers' sizes.
    unsafe { launch.launch(args.config) }.map_err(cuda_error("launching frame_to_rgba"))?;
    Ok(())
}

/// `frame_to_rgba`'s arguments besides the buffers, and its launch shape.
pub(crate) struct RgbaArgs {
    pub(crate) layout: FrameLayout,
    pub(crate) width: i32,
    pub(crate) height: i32,
    pub(crate) config: LaunchConfig,
}

impl RgbaArgs {
    /// Checks a frame of `frame_len` bytes and an output of `rgba_len` against the geometry.
    pub(crate) fn new(geometry: &FrameGeometry, frame_len: usize, rgba_len: usize) -> Result<Self> {
        let needed = 4 * geometry.width * geometry.height;
        if geometry.is_empty() || frame_len < geometry.len() || rgba_len < needed {
            return Err(Error::Cuda(format!(
                "frame of {frame_len} bytes (needs {}) or RGBA of {rgba_len} (needs {needed}) \
                 do not fit {geometry:?}",
                geometry.len()
            )));
        }
        Ok(RgbaArgs {
            layout: FrameLayout::of(geometry),
            width: geometry.width as i32,
            height: geometry.height as i32,
            config: grid_2d(geometry.width, geometry.height, 1),
        })
    }
}

/// The column and row taps of every crop, one after another (the kernel's `blockIdx.z` picks).
pub(crate) fn crop_taps(
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
pub(crate) fn device_taps(taps: &[Tap]) -> Vec<DeviceTap> {
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
pub(crate) struct BilinearArgs {
    pub(crate) layout: FrameLayout,
    pub(crate) arithmetic: i32,
    pub(crate) width: i32,
    pub(crate) height: i32,
    pub(crate) norm: DeviceNormalisation,
    pub(crate) config: LaunchConfig,
}

impl BilinearArgs {
    /// Checks the buffers' sizes (`frame_len` bytes, `out_len` values) against the launch.
    pub(crate) fn new(
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
            layout: FrameLayout::of(geometry),
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
