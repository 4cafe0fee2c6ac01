//! Model inputs made on the device from a frame in device memory: the stretch (dense tasks) and
//! batched UDP crops (pose, one crop per person, each written into its batch slot), planar RGB,
//! normalised, `f32` or `f16`. The tap tables are the CPU path's ([`crate::preprocess`]), so the
//! values before normalisation equal the CPU's; YUV frames are converted per sample in the 20-bit
//! fixed point of OpenCV's `cvtColor(COLOR_YUV2RGB_NV12 / _I420)`, with the matrix and range
//! the stream declares ([`YuvToRgb`]; [`yuv420_to_rgb`] is the CPU twin).

use cudarc::driver::{CudaSlice, DeviceRepr, LaunchConfig, PushKernelArg};

use super::{Gpu, cuda_error, grid_2d};
use crate::error::{Error, Result};
use crate::preprocess::{
    ImageView, Normalization, PixelFormat, PoseCrop, StretchPlan, Tap, warp_taps,
};
use crate::tasks::detect::LetterboxPlan;

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
    /// The packed pixel format of a packed layout; `None` for the 4:2:0 layouts.
    fn packed_format(self) -> Option<PixelFormat> {
        match self {
            Self::Rgb => Some(PixelFormat::Rgb),
            Self::Bgr => Some(PixelFormat::Bgr),
            Self::Rgbx => Some(PixelFormat::Rgba),
            Self::Bgrx => Some(PixelFormat::Bgra),
            Self::Nv12 | Self::I420 => None,
        }
    }

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
    /// How YUV samples become RGB (unused for packed layouts).
    pub yuv: YuvToRgb,
}

impl FrameGeometry {
    /// A packed RGB/BGR(x) frame without padding.
    pub fn packed(width: usize, height: usize, layout: SourceLayout) -> Self {
        let bytes = layout
            .packed_format()
            .map_or(1, PixelFormat::bytes_per_pixel);
        FrameGeometry {
            width,
            height,
            layout,
            stride: width * bytes,
            chroma: [0; 2],
            chroma_stride: 0,
            yuv: YuvToRgb::BT601_LIMITED,
        }
    }

    /// An NV12 or I420 frame without padding, BT.601 limited range; odd sizes round the
    /// chroma planes up.
    pub fn yuv420(width: usize, height: usize, layout: SourceLayout) -> Self {
        let luma = width * height;
        let half_width = width.div_ceil(2);
        let (chroma, chroma_stride) = match layout {
            SourceLayout::Nv12 => ([luma, 0], 2 * half_width),
            _ => ([luma, luma + half_width * height.div_ceil(2)], half_width),
        };
        FrameGeometry {
            width,
            height,
            layout,
            stride: width,
            chroma,
            chroma_stride,
            yuv: YuvToRgb::BT601_LIMITED,
        }
    }

    /// Each plane's byte offset, rows, bytes per row and bytes of pixels per row.
    fn planes(&self) -> Vec<[usize; 4]> {
        if let Some(format) = self.layout.packed_format() {
            let row = format.bytes_per_pixel() * self.width;
            return vec![[0, self.height, self.stride, row]];
        }
        let (rows, half_width) = (self.height.div_ceil(2), self.width.div_ceil(2));
        match self.layout {
            SourceLayout::Nv12 => vec![
                [0, self.height, self.stride, self.width],
                [self.chroma[0], rows, self.chroma_stride, 2 * half_width],
            ],
            _ => vec![
                [0, self.height, self.stride, self.width],
                [self.chroma[0], rows, self.chroma_stride, half_width],
                [self.chroma[1], rows, self.chroma_stride, half_width],
            ],
        }
    }

    /// Bytes the frame's buffer holds with every row padded to its stride.
    pub fn len(&self) -> usize {
        let end = |[offset, rows, stride, _]: [usize; 4]| offset + rows * stride;
        self.planes().into_iter().map(end).max().unwrap_or(0)
    }

    /// Bytes a buffer must hold at least: [`Self::len`] without the padding of the last row,
    /// which decoders may leave out.
    pub fn min_len(&self) -> usize {
        let end = |[offset, rows, stride, row]: [usize; 4]| match rows {
            0 => offset,
            rows => offset + (rows - 1) * stride + row,
        };
        self.planes().into_iter().map(end).max().unwrap_or(0)
    }

    /// Checks that a buffer of `data_len` bytes holds such a frame: a size, rows no longer
    /// than their strides, every plane inside.
    pub fn validate(&self, data_len: usize) -> std::result::Result<(), String> {
        if self.is_empty() {
            return Err(format!("empty frame ({}x{})", self.width, self.height));
        }
        if let Some([_, _, stride, row]) = self.planes().into_iter().find(|p| p[2] < p[3]) {
            return Err(format!(
                "{:?} rows of {row} bytes do not fit a stride of {stride}",
                self.layout
            ));
        }
        if data_len < self.min_len() {
            return Err(format!(
                "{}x{} {:?} needs {} bytes, the buffer holds {data_len}",
                self.width,
                self.height,
                self.layout,
                self.min_len()
            ));
        }
        Ok(())
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
            yuv: self.yuv,
        }
    }
}

/// A frame's bytes in host memory, and where its pixels are in them.
#[derive(Clone, Copy, Debug)]
pub struct HostFrame<'a> {
    pub data: &'a [u8],
    pub geometry: FrameGeometry,
}

impl<'a> From<&ImageView<'a>> for HostFrame<'a> {
    fn from(view: &ImageView<'a>) -> Self {
        let layout = match view.format {
            PixelFormat::Rgb => SourceLayout::Rgb,
            PixelFormat::Bgr => SourceLayout::Bgr,
            PixelFormat::Rgba => SourceLayout::Rgbx,
            PixelFormat::Bgra => SourceLayout::Bgrx,
        };
        HostFrame {
            data: view.data,
            geometry: FrameGeometry {
                stride: view.stride,
                ..FrameGeometry::packed(view.width, view.height, layout)
            },
        }
    }
}

impl HostFrame<'_> {
    /// Tightly packed RGB, whatever the layout (YUV converted as the kernels do).
    pub fn to_rgb(&self) -> Vec<u8> {
        let mut rgb = Vec::new();
        self.to_rgb_into(&mut rgb);
        rgb
    }

    /// [`Self::to_rgb`] into `rgb`, reusing its allocation.
    pub fn to_rgb_into(&self, rgb: &mut Vec<u8>) {
        let g = &self.geometry;
        rgb.clear();
        rgb.reserve(g.width * g.height * 3);
        let Some(format) = g.layout.packed_format() else {
            return yuv420_to_rgb_into(self.data, g, rgb);
        };
        let (bytes, [r, gr, b]) = (format.bytes_per_pixel(), format.rgb_offsets());
        for row in self.data.chunks(g.stride).take(g.height) {
            for pixel in row[..bytes * g.width].chunks_exact(bytes) {
                rgb.extend_from_slice(&[pixel[r], pixel[gr], pixel[b]]);
            }
        }
    }
}

/// YUV -> RGB in 20-bit fixed point, as OpenCV's `cvtColor` computes it:
/// `c = clamp((max(0, y - luma_offset) * luma + chroma terms + 2^19) >> 20)`, with `u` and
/// `v` centred on 128. The same struct is the kernel's `YuvToRgb` (preprocess.cu).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct YuvToRgb {
    pub luma_offset: i32,
    pub luma: i32,
    pub v_to_r: i32,
    pub u_to_g: i32,
    pub v_to_g: i32,
    pub u_to_b: i32,
}

// SAFETY: plain old data with the kernel's C layout.
unsafe impl DeviceRepr for YuvToRgb {}

const YUV_SHIFT: i32 = 20;

impl YuvToRgb {
    /// BT.601 limited range with OpenCV's own coefficients (`COLOR_YUV2RGB_NV12`): what the
    /// OpenCV-based official pipeline sees, and what most SD video and unlabelled streams are.
    pub const BT601_LIMITED: Self = YuvToRgb {
        luma_offset: 16,
        luma: 1_220_542,
        v_to_r: 1_673_527,
        u_to_g: -409_993,
        v_to_g: -852_492,
        u_to_b: 2_116_026,
    };

    /// The conversion for a matrix given by its luma weights `kr` and `kb` (BT.709: 0.2126,
    /// 0.0722), for limited (16-235, 16-240) or full range. BT.601 limited range is
    /// [`Self::BT601_LIMITED`], OpenCV's rounding of these values.
    pub fn from_weights(kr: f64, kb: f64, full_range: bool) -> Self {
        let (luma_offset, luma_scale, chroma_scale) = if full_range {
            (0, 1.0, 1.0)
        } else {
            (16, 255.0 / 219.0, 255.0 / 224.0)
        };
        let kg = 1.0 - kr - kb;
        let fixed = |value: f64| (value * f64::from(1 << YUV_SHIFT)).round() as i32;
        YuvToRgb {
            luma_offset,
            luma: fixed(luma_scale),
            v_to_r: fixed(2.0 * (1.0 - kr) * chroma_scale),
            u_to_g: fixed(-2.0 * kb * (1.0 - kb) / kg * chroma_scale),
            v_to_g: fixed(-2.0 * kr * (1.0 - kr) / kg * chroma_scale),
            u_to_b: fixed(2.0 * (1.0 - kb) * chroma_scale),
        }
    }

    /// One sample's RGB (the kernel's `yuv_to_rgb`).
    pub fn convert(&self, y: u8, u: u8, v: u8) -> [u8; 3] {
        const HALF: i32 = 1 << (YUV_SHIFT - 1);
        let (u, v) = (i32::from(u) - 128, i32::from(v) - 128);
        let luma = (i32::from(y) - self.luma_offset).max(0) * self.luma;
        let channel = |chroma: i32| ((luma + HALF + chroma) >> YUV_SHIFT).clamp(0, 255) as u8;
        [
            channel(self.v_to_r * v),
            channel(self.v_to_g * v + self.u_to_g * u),
            channel(self.u_to_b * u),
        ]
    }
}

impl Default for YuvToRgb {
    fn default() -> Self {
        Self::BT601_LIMITED
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
    yuv: YuvToRgb,
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
pub(super) struct Placement {
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
    pub(super) fn of(plan: &LetterboxPlan) -> Self {
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
pub(super) struct LetterboxArgs {
    pub(super) layout: FrameLayout,
    pub(super) placement: Placement,
    pub(super) width: i32,
    pub(super) height: i32,
    pub(super) norm: DeviceNormalisation,
    pub(super) config: LaunchConfig,
}

impl LetterboxArgs {
    /// Checks a frame of `frame_len` bytes and an output of `out_len` values against the launch.
    pub(super) fn new(
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
            layout: geometry.device_layout(),
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
pub(super) struct RgbaArgs {
    pub(super) layout: FrameLayout,
    pub(super) width: i32,
    pub(super) height: i32,
    pub(super) config: LaunchConfig,
}

impl RgbaArgs {
    /// Checks a frame of `frame_len` bytes and an output of `rgba_len` against the geometry.
    pub(super) fn new(geometry: &FrameGeometry, frame_len: usize, rgba_len: usize) -> Result<Self> {
        let needed = 4 * geometry.width * geometry.height;
        if geometry.is_empty() || frame_len < geometry.len() || rgba_len < needed {
            return Err(Error::Cuda(format!(
                "frame of {frame_len} bytes (needs {}) or RGBA of {rgba_len} (needs {needed}) \
                 do not fit {geometry:?}",
                geometry.len()
            )));
        }
        Ok(RgbaArgs {
            layout: geometry.device_layout(),
            width: geometry.width as i32,
            height: geometry.height as i32,
            config: grid_2d(geometry.width, geometry.height, 1),
        })
    }
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

/// YUV 4:2:0 to packed RGB on the CPU, each 2x2 block sharing its chroma sample, with the
/// frame's [`YuvToRgb`] (for BT.601 limited range: OpenCV's `cvtColor(COLOR_YUV2RGB_NV12 /
/// _I420)`): the kernels' colour conversion.
pub fn yuv420_to_rgb(data: &[u8], geometry: &FrameGeometry) -> Vec<u8> {
    let mut rgb = Vec::with_capacity(geometry.width * geometry.height * 3);
    yuv420_to_rgb_into(data, geometry, &mut rgb);
    rgb
}

fn yuv420_to_rgb_into(data: &[u8], geometry: &FrameGeometry, rgb: &mut Vec<u8>) {
    for y in 0..geometry.height {
        let luma = &data[y * geometry.stride..][..geometry.width];
        let chroma_row = y / 2 * geometry.chroma_stride;
        for (x, &luma) in luma.iter().enumerate() {
            let (u, v) = match geometry.layout {
                SourceLayout::Nv12 => {
                    let at = geometry.chroma[0] + chroma_row + x / 2 * 2;
                    (data[at], data[at + 1])
                }
                _ => {
                    let at = chroma_row + x / 2;
                    (data[geometry.chroma[0] + at], data[geometry.chroma[1] + at])
                }
            };
            rgb.extend(geometry.yuv.convert(luma, u, v));
        }
    }
}
