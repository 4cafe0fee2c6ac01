//! Preprocessing: a frame to the planar RGB `f32` input of a Sapiens model. Here the plans (tap
//! tables) that both backends run; `cpu` runs them on packed 8-bit frames, [`cuda`] on the
//! device from any frame layout.
//!
//! Two operations follow the input contract of `docs/SAPIENS.md`:
//! - [`StretchPlan`] stretches the whole frame to the model input (dense tasks), as
//!   `cv2.resize(..., INTER_LINEAR)` does;
//! - [`warp_crop`] warps one person crop with the UDP matrix (pose), as
//!   `cv2.warpAffine(..., INTER_LINEAR, BORDER_CONSTANT, 0)` does.
//!
//! Both reproduce OpenCV's 8-bit fixed-point arithmetic (coefficient rounding, the 1/32 pixel
//! coordinate grid of `warpAffine`, the rounding shifts), so the values before normalisation equal
//! OpenCV's `u8` output (bit-exact against opencv-python 4.14 in `tests/preprocess.rs`), and the
//! normalisation is a true `(x - mean) / std`. Both are separable: a horizontal pass turns each
//! source row it needs into three planar integer rows, a vertical pass blends two of them and
//! writes the normalised `f32` values. Output rows are split into bands that run on rayon workers.

mod cpu;
pub mod cuda;
pub mod letterbox;

use self::cpu::{ResizeArithmetic, WarpArithmetic, run_separable};
use crate::frame::HostFrame;

/// Per-channel `(x - mean) / std`, RGB order, on the 0..255 scale.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Normalization {
    /// Subtracted first, per channel (R, G, B).
    pub mean: [f32; 3],
    /// Divided by next, per channel (R, G, B).
    pub std: [f32; 3],
}

impl Normalization {
    /// The Sapiens training normalisation.
    pub const SAPIENS: Self = Self {
        mean: [123.675, 116.28, 103.53],
        std: [58.395, 57.12, 57.375],
    };
    /// No normalisation: the raw 0..255 values, for tests and dumps.
    pub const IDENTITY: Self = Self {
        mean: [0.0; 3],
        std: [1.0; 3],
    };
}

/// Person box -> the Sapiens top-down crop: centre and size after the 1.25 padding and the aspect
/// fix (docs/SAPIENS.md, pose step 2). `f32` like the official codec's `float32` centre and scale.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PoseCrop {
    /// Crop centre, x, in frame pixels.
    pub cx: f32,
    /// Crop centre, y, in frame pixels.
    pub cy: f32,
    /// Crop width in frame pixels.
    pub w: f32,
    /// Crop height in frame pixels.
    pub h: f32,
}

/// Box padding of the Sapiens pose pipeline.
const BOX_PADDING: f32 = 1.25;

impl PoseCrop {
    /// The crop for the box `(x1, y1)-(x2, y2)` and a model input of `input_w x input_h`: the box
    /// is padded by 1.25, then the shorter side grows until `w / h = input_w / input_h`.
    pub fn from_box(x1: f32, y1: f32, x2: f32, y2: f32, input_w: usize, input_h: usize) -> Self {
        let aspect = input_w as f32 / input_h as f32;
        let mut w = (x2 - x1) * BOX_PADDING;
        let mut h = (y2 - y1) * BOX_PADDING;
        if w > h * aspect {
            h = w / aspect;
        } else {
            w = h * aspect;
        }
        Self {
            cx: (x1 + x2) * 0.5,
            cy: (y1 + y2) * 0.5,
            w,
            h,
        }
    }

    /// The UDP affine matrix that maps frame pixels to crop pixels of an `input_w x input_h`
    /// input (docs/SAPIENS.md, pose step 3): `sx = (input_w - 1) / w`, `sy = (input_h - 1) / h`,
    /// `[[sx, 0, sx (w/2 - cx)], [0, sy, sy (h/2 - cy)]]`.
    pub fn udp_matrix(&self, input_w: usize, input_h: usize) -> [[f64; 3]; 2] {
        let (w, h) = (f64::from(self.w), f64::from(self.h));
        let sx = (input_w as f64 - 1.0) / w;
        let sy = (input_h as f64 - 1.0) / h;
        [
            [sx, 0.0, sx * (w / 2.0 - f64::from(self.cx))],
            [0.0, sy, sy * (h / 2.0 - f64::from(self.cy))],
        ]
    }
}

/// One output position of a separable bilinear pass: two source indices (pixels or rows) and
/// their fixed-point weights.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Tap {
    pub(crate) i0: usize,
    pub(crate) i1: usize,
    pub(crate) w0: i16,
    pub(crate) w1: i16,
}

/// `cv::resize` coefficient scale (`INTER_RESIZE_COEF_SCALE`).
const RESIZE_COEF_SCALE: f32 = 2048.0;

/// Source position of output index `d` as `cv::resize` computes it in `f32`:
/// `(d + 0.5) * scale - 0.5`, split into floor and fraction.
fn resize_source_position(d: usize, scale: f64) -> (i64, f32) {
    let position = ((d as f64 + 0.5) * scale - 0.5) as f32;
    let floor = position.floor();
    (floor as i64, position - floor)
}

/// The two 11-bit coefficients of a fraction, each rounded on its own as OpenCV does.
fn resize_coefficients(fraction: f32) -> (i16, i16) {
    (
        ((1.0 - fraction) * RESIZE_COEF_SCALE).round_ties_even() as i16,
        (fraction * RESIZE_COEF_SCALE).round_ties_even() as i16,
    )
}

/// `cv::resize` scale: the inverse of `dst / src`, computed in that order.
fn resize_scale(src_len: usize, dst_len: usize) -> f64 {
    1.0 / (dst_len as f64 / src_len as f64)
}

/// Horizontal `cv::resize` taps: past either edge the fraction is dropped and the edge pixel taken.
fn resize_column_taps(src_w: usize, dst_w: usize) -> Vec<Tap> {
    let scale = resize_scale(src_w, dst_w);
    let last = src_w as i64 - 1;
    (0..dst_w)
        .map(|d| {
            let (mut sx, mut fraction) = resize_source_position(d, scale);
            if sx < 0 {
                (sx, fraction) = (0, 0.0);
            }
            if sx >= last {
                (sx, fraction) = (last, 0.0);
            }
            let (w0, w1) = resize_coefficients(fraction);
            Tap {
                i0: sx as usize,
                i1: (sx + 1).min(last) as usize,
                w0,
                w1,
            }
        })
        .collect()
}

/// Vertical `cv::resize` taps: rows are clamped to the image but, unlike columns, the
/// coefficients are kept (this changes the rounding on the edge rows).
fn resize_row_taps(src_h: usize, dst_h: usize) -> Vec<Tap> {
    let scale = resize_scale(src_h, dst_h);
    let last = src_h as i64 - 1;
    (0..dst_h)
        .map(|d| {
            let (sy, fraction) = resize_source_position(d, scale);
            let (w0, w1) = resize_coefficients(fraction);
            Tap {
                i0: sy.clamp(0, last) as usize,
                i1: (sy + 1).clamp(0, last) as usize,
                w0,
                w1,
            }
        })
        .collect()
}

/// `warpAffine` fixed-point constants: coordinates carry `AB_BITS` fraction bits, sampling
/// positions `INTER_BITS`, and `ROUND_DELTA` rounds the former to the latter.
const AB_BITS: u32 = 10;
const INTER_BITS: u32 = 5;
const AB_SCALE: f64 = (1 << AB_BITS) as f64;
const ROUND_DELTA: i64 = 1 << (AB_BITS - INTER_BITS - 1);
const INTER_TAB_SIZE: i64 = 1 << INTER_BITS;

/// `saturate_cast<int>(double)`: round half to even, saturating.
fn round_to_int(value: f64) -> i64 {
    i64::from(value.round_ties_even() as i32)
}

/// The output -> source map of an affine matrix without rotation or shear, inverted with the
/// same double arithmetic as `cv::warpAffine` (which inverts the matrix it is given).
#[derive(Clone, Copy, Debug)]
struct AxisAlignedInverse {
    scale_x: f64,
    offset_x: f64,
    scale_y: f64,
    offset_y: f64,
}

impl AxisAlignedInverse {
    fn of(m: &[[f64; 3]; 2]) -> Self {
        assert!(
            m[0][1] == 0.0 && m[1][0] == 0.0,
            "only axis-aligned matrices are separable: {m:?}"
        );
        let inverse_det = 1.0 / (m[0][0] * m[1][1] - m[0][1] * m[1][0]);
        let scale_x = m[1][1] * inverse_det;
        let scale_y = m[0][0] * inverse_det;
        // The zero off-diagonal terms add exact zeros to OpenCV's offsets, so they are left out.
        Self {
            scale_x,
            offset_x: -scale_x * m[0][2],
            scale_y,
            offset_y: -scale_y * m[1][2],
        }
    }

    /// Source x of output column `x` in 1/32 pixels: `warpAffine` rounds the row start and the
    /// per-column step separately to 1/1024 pixel, then to the 1/32 grid.
    fn column_position(&self, x: usize) -> i64 {
        let row_start = round_to_int(self.offset_x * AB_SCALE) + ROUND_DELTA;
        let step = round_to_int(self.scale_x * x as f64 * AB_SCALE);
        (row_start + step) >> (AB_BITS - INTER_BITS)
    }

    /// Source y of output row `y` in 1/32 pixels.
    fn row_position(&self, y: usize) -> i64 {
        let row_start = round_to_int((self.scale_y * y as f64 + self.offset_y) * AB_SCALE);
        (row_start + ROUND_DELTA) >> (AB_BITS - INTER_BITS)
    }
}

/// Tap for a position on the 1/32 grid with BORDER_CONSTANT 0: a neighbour outside the source
/// gets weight 0 (its index is clamped only to stay in bounds).
fn warp_tap(position: i64, src_len: usize) -> Tap {
    let index = position >> INTER_BITS;
    let fraction = (position & (INTER_TAB_SIZE - 1)) as i16;
    let last = src_len as i64 - 1;
    let inside = |i: i64| (0..=last).contains(&i);
    Tap {
        i0: index.clamp(0, last) as usize,
        i1: (index + 1).clamp(0, last) as usize,
        w0: if inside(index) {
            INTER_TAB_SIZE as i16 - fraction
        } else {
            0
        },
        w1: if inside(index + 1) { fraction } else { 0 },
    }
}

/// Precomputed tables for stretching a fixed source size to a fixed model input size; reused
/// frame after frame.
#[derive(Clone, Debug)]
pub struct StretchPlan {
    src_w: usize,
    src_h: usize,
    columns: Vec<Tap>,
    rows: Vec<Tap>,
}

impl StretchPlan {
    /// Tables for `src_w x src_h` -> `dst_w x dst_h`.
    ///
    /// # Panics
    /// When a size is zero.
    pub fn new(src_w: usize, src_h: usize, dst_w: usize, dst_h: usize) -> Self {
        assert!(
            src_w > 0 && src_h > 0 && dst_w > 0 && dst_h > 0,
            "stretch sizes must be positive: {src_w}x{src_h} -> {dst_w}x{dst_h}"
        );
        Self {
            src_w,
            src_h,
            columns: resize_column_taps(src_w, dst_w),
            rows: resize_row_taps(src_h, dst_h),
        }
    }

    /// Bilinear resize with `cv2.resize` INTER_LINEAR semantics (half-pixel centres, no
    /// antialias, edge clamp), written as planar RGB `f32` NCHW slot `(x - mean) / std`;
    /// `dst.len() == 3 * dst_w * dst_h`. Before normalisation the values equal OpenCV's.
    ///
    /// # Panics
    /// When `src` is not `src_w x src_h`, its buffer is too short, or `dst` has the wrong length.
    pub fn run<'a>(&self, src: impl Into<HostFrame<'a>>, dst: &mut [f32], norm: &Normalization) {
        let src = src.into();
        let (width, height) = (src.geometry.width, src.geometry.height);
        assert!(
            width == self.src_w && height == self.src_h,
            "plan is for {}x{} frames, got {}x{}",
            self.src_w,
            self.src_h,
            width,
            height
        );
        run_separable::<ResizeArithmetic>(&src, &self.columns, &self.rows, dst, norm);
    }

    /// Column and row taps, for the CUDA kernel that reproduces this plan.
    pub(crate) fn taps(&self) -> (&[Tap], &[Tap]) {
        (&self.columns, &self.rows)
    }
}

/// Affine warp of the crop straight into a planar RGB `f32` slot of `dst_w x dst_h`, with
/// `cv2.warpAffine` INTER_LINEAR semantics and BORDER_CONSTANT 0 (pixels outside the frame are 0
/// before normalisation, as OpenCV then normalises). Before normalisation the values equal
/// OpenCV's, including its 1/32 pixel sampling grid.
///
/// # Panics
/// When the crop has no positive finite size, `src` is empty or too short, the output size is
/// zero, or `dst.len() != 3 * dst_w * dst_h`.
pub fn warp_crop<'a>(
    src: impl Into<HostFrame<'a>>,
    crop: &PoseCrop,
    dst: &mut [f32],
    dst_w: usize,
    dst_h: usize,
    norm: &Normalization,
) {
    let positive = |v: f32| v.is_finite() && v > 0.0;
    assert!(
        positive(crop.w) && positive(crop.h),
        "crop must have a positive size: {crop:?}"
    );
    let src = src.into();
    src.check();
    let (columns, rows) = warp_taps(src.geometry.width, src.geometry.height, crop, dst_w, dst_h);
    run_separable::<WarpArithmetic>(&src, &columns, &rows, dst, norm);
}

/// Column and row taps of the UDP warp of `crop` from a `src_w x src_h` frame.
pub(crate) fn warp_taps(
    src_w: usize,
    src_h: usize,
    crop: &PoseCrop,
    dst_w: usize,
    dst_h: usize,
) -> (Vec<Tap>, Vec<Tap>) {
    let inverse = AxisAlignedInverse::of(&crop.udp_matrix(dst_w, dst_h));
    let columns = (0..dst_w)
        .map(|x| warp_tap(inverse.column_position(x), src_w))
        .collect();
    let rows = (0..dst_h)
        .map(|y| warp_tap(inverse.row_position(y), src_h))
        .collect();
    (columns, rows)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::{ImageView, PixelFormat};

    fn assert_close(actual: f64, expected: f64) {
        assert!((actual - expected).abs() < 1e-9, "{actual} != {expected}");
    }

    #[test]
    fn tall_box_grows_in_width() {
        let crop = PoseCrop::from_box(100.0, 200.0, 300.0, 600.0, 768, 1024);
        assert_eq!(
            crop,
            PoseCrop {
                cx: 200.0,
                cy: 400.0,
                w: 375.0,
                h: 500.0
            }
        );
    }

    #[test]
    fn wide_box_grows_in_height() {
        let crop = PoseCrop::from_box(0.0, 0.0, 400.0, 100.0, 768, 1024);
        assert_eq!((crop.cx, crop.cy, crop.w), (200.0, 50.0, 500.0));
        assert!((crop.h - 500.0 / 0.75).abs() < 1e-3);
    }

    #[test]
    fn udp_matrix_maps_crop_corners_to_input_corners() {
        let crop = PoseCrop::from_box(100.0, 200.0, 300.0, 600.0, 768, 1024);
        let m = crop.udp_matrix(768, 1024);
        assert_close(m[0][0], 767.0 / 375.0);
        assert_close(m[1][1], 1023.0 / 500.0);
        assert_eq!((m[0][1], m[1][0]), (0.0, 0.0));
        // Left/top crop edge -> 0, right/bottom edge -> input size - 1.
        assert_close(m[0][0] * (200.0 - 187.5) + m[0][2], 0.0);
        assert_close(m[0][0] * (200.0 + 187.5) + m[0][2], 767.0);
        assert_close(m[1][1] * (400.0 - 250.0) + m[1][2], 0.0);
        assert_close(m[1][1] * (400.0 + 250.0) + m[1][2], 1023.0);
    }

    /// A small image whose values identify each pixel and channel.
    fn numbered_image(w: usize, h: usize) -> Vec<u8> {
        (0..w * h * 3).map(|i| (i * 7 % 251) as u8).collect()
    }

    fn planar(image: &[u8], w: usize, h: usize) -> Vec<f32> {
        (0..3)
            .flat_map(|c| (0..w * h).map(move |p| f32::from(image[p * 3 + c])))
            .collect()
    }

    #[test]
    fn same_size_stretch_is_exact_copy() {
        let (w, h) = (13, 9);
        let image = numbered_image(w, h);
        let mut out = vec![0.0; 3 * w * h];
        let view = ImageView::packed(&image, w, h, PixelFormat::Rgb);
        StretchPlan::new(w, h, w, h).run(&view, &mut out, &Normalization::IDENTITY);
        assert_eq!(out, planar(&image, w, h));
    }

    #[test]
    fn identity_udp_warp_is_exact_copy() {
        let (w, h) = (13, 9);
        let image = numbered_image(w, h);
        // sx = (w - 1) / crop.w = 1 and sx (crop.w / 2 - cx) = 0: the identity matrix.
        let crop = PoseCrop {
            cx: (w as f32 - 1.0) / 2.0,
            cy: (h as f32 - 1.0) / 2.0,
            w: w as f32 - 1.0,
            h: h as f32 - 1.0,
        };
        let mut out = vec![0.0; 3 * w * h];
        let view = ImageView::packed(&image, w, h, PixelFormat::Rgb);
        warp_crop(&view, &crop, &mut out, w, h, &Normalization::IDENTITY);
        assert_eq!(out, planar(&image, w, h));
    }

    #[test]
    fn warp_taps_zero_the_weights_outside_the_source() {
        // Position -1 + 8/32: left neighbour outside, right neighbour pixel 0.
        let tap = warp_tap(-32 + 8, 10);
        assert_eq!(
            tap,
            Tap {
                i0: 0,
                i1: 0,
                w0: 0,
                w1: 8
            }
        );
        let tap = warp_tap(9 * 32 + 8, 10);
        assert_eq!((tap.i0, tap.w0, tap.w1), (9, 24, 0));
    }

    /// A frame of any layout (YUV converted row by row inside the resize, padded planes,
    /// BT.709 full range, an odd size) resizes and crops exactly as its RGB conversion does.
    #[test]
    fn frames_of_every_layout_resize_and_crop_as_their_rgb_conversion() {
        use crate::frame::HostFrame;
        use crate::testkit::kernel_inputs::test_bytes;
        use crate::testkit::kernels::{cpu_view, every_layout};
        let (w, h, out_w, out_h) = (67, 41, 24, 32);
        let plan = StretchPlan::new(w, h, out_w, out_h);
        let crops = [
            PoseCrop::from_box(10.0, 5.0, 40.0, 38.0, out_w, out_h),
            PoseCrop::from_box(-6.0, 20.0, 20.0, 50.0, out_w, out_h),
        ];
        for geometry in every_layout(w, h) {
            let frame = test_bytes(geometry.len(), 13);
            let host = HostFrame {
                data: &frame,
                geometry,
            };
            let rgb = cpu_view(&frame, &geometry);
            for norm in [Normalization::IDENTITY, Normalization::SAPIENS] {
                let mut got = vec![0.0; 3 * out_w * out_h];
                let mut expected = got.clone();
                plan.run(host, &mut got, &norm);
                plan.run(&rgb.view(), &mut expected, &norm);
                assert_eq!(got, expected, "stretch of {geometry:?}");
                for crop in &crops {
                    warp_crop(host, crop, &mut got, out_w, out_h, &norm);
                    warp_crop(&rgb.view(), crop, &mut expected, out_w, out_h, &norm);
                    assert_eq!(got, expected, "{crop:?} of {geometry:?}");
                }
            }
        }
    }
}
