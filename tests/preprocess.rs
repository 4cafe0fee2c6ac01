//! Stretch and pose-crop preprocessing against OpenCV (`tests/reference/preprocess_reference.py`)
//! on procedural frames with sharp edges, gradients, stripes and noise.

mod common;

use std::path::Path;

use sapiens_stream::frame::{ImageView, PixelFormat};
use sapiens_stream::preprocess::{Normalization, PoseCrop, StretchPlan, warp_crop};
use sapiens_stream::testkit::kernel_inputs::Noise;

const INPUT_W: usize = 768;
const INPUT_H: usize = 1024;

/// Tolerances of the task, on the 0..255 scale before normalisation.
const MAX_ABS_DIFF: f32 = 1.0;
const MEAN_ABS_DIFF: f64 = 0.1;

/// One pixel of the test frame: gradients and a checker on the left, one-pixel stripes and noise
/// in the middle, noise on the right, a solid rectangle and a diagonal edge that inverts colours.
fn frame_pixel(x: usize, y: usize, w: usize, h: usize, noise: &mut Noise) -> [u8; 3] {
    let mut rgb = if x < w / 3 {
        let checker = ((x / 3 + y / 5) % 2 * 255) as u8;
        [(x * 255 / w) as u8, (y * 255 / h) as u8, checker]
    } else if x < 2 * w / 3 {
        let stripe = if x.is_multiple_of(2) { 255 } else { 0 };
        let band = if (y / 2).is_multiple_of(2) { 200 } else { 30 };
        [stripe, band, noise.byte()]
    } else {
        [noise.byte(), noise.byte(), noise.byte()]
    };
    if (3 * w / 5..4 * w / 5).contains(&x) && (h / 5..h / 2).contains(&y) {
        rgb = [250, 10, 128];
    }
    if x + 2 * y < w / 2 {
        rgb = rgb.map(|v| 255 - v);
    }
    rgb
}

/// The test frame, packed RGB, row after row.
fn test_frame(w: usize, h: usize) -> Vec<u8> {
    let mut noise = Noise(0x9E37_79B9_7F4A_7C15 ^ (w * h) as u64);
    (0..h)
        .flat_map(|y| (0..w).map(move |x| (x, y)))
        .flat_map(|(x, y)| frame_pixel(x, y, w, h, &mut noise))
        .collect()
}

/// The frame in another pixel format, with `padding` extra bytes at the end of every row;
/// alpha and padding hold junk that must be ignored.
fn repack(rgb: &[u8], w: usize, format: PixelFormat, padding: usize) -> (Vec<u8>, usize) {
    let bpp = format.bytes_per_pixel();
    let stride = w * bpp + padding;
    let offsets = format.rgb_offsets();
    let mut out = Vec::with_capacity(rgb.len() / 3 / w * stride);
    for row in rgb.chunks_exact(w * 3) {
        for pixel in row.chunks_exact(3) {
            let mut packed = [0x5A_u8; 4];
            for (c, &offset) in offsets.iter().enumerate() {
                packed[offset] = pixel[c];
            }
            out.extend_from_slice(&packed[..bpp]);
        }
        out.resize(out.len() + padding, 0xA5);
    }
    (out, stride)
}

fn write_frame(dir: &Path, rgb: &[u8], w: usize, h: usize) -> String {
    let path = dir.join("frame.npy");
    common::write_npy_u8(&path, &[h as u64, w as u64, 3], rgb);
    path.display().to_string()
}

/// Runs one reference command (its last argument is the output path) and returns the output.
fn opencv(dir: &Path, args: &[String]) -> Vec<f32> {
    let out = dir.join("reference.npy");
    let mut all: Vec<&str> = args.iter().map(String::as_str).collect();
    let out_arg = out.display().to_string();
    all.push(&out_arg);
    common::run_reference("preprocess_reference.py", &all);
    let (shape, values) = common::read_npy_f32(&out);
    assert_eq!(shape, [3, INPUT_H as u64, INPUT_W as u64]);
    values
}

fn opencv_stretch(dir: &Path, rgb: &[u8], w: usize, h: usize) -> Vec<f32> {
    let frame = write_frame(dir, rgb, w, h);
    let args = [
        "stretch",
        &frame,
        &INPUT_W.to_string(),
        &INPUT_H.to_string(),
    ];
    opencv(dir, &args.map(String::from))
}

fn opencv_crop(dir: &Path, rgb: &[u8], w: usize, h: usize, bbox: [f32; 4]) -> Vec<f32> {
    let frame = write_frame(dir, rgb, w, h);
    let mut args = vec!["crop".to_string(), frame];
    args.extend(bbox.iter().map(f32::to_string));
    args.extend([INPUT_W.to_string(), INPUT_H.to_string()]);
    opencv(dir, &args)
}

fn rust_stretch(data: &[u8], w: usize, h: usize, stride: usize, format: PixelFormat) -> Vec<f32> {
    let view = ImageView {
        data,
        width: w,
        height: h,
        stride,
        format,
    };
    let mut out = vec![f32::NAN; 3 * INPUT_W * INPUT_H];
    StretchPlan::new(w, h, INPUT_W, INPUT_H).run(&view, &mut out, &Normalization::IDENTITY);
    out
}

fn rust_crop(view: &ImageView, bbox: [f32; 4], norm: &Normalization) -> Vec<f32> {
    let [x1, y1, x2, y2] = bbox;
    let crop = PoseCrop::from_box(x1, y1, x2, y2, INPUT_W, INPUT_H);
    let mut out = vec![f32::NAN; 3 * INPUT_W * INPUT_H];
    warp_crop(view, &crop, &mut out, INPUT_W, INPUT_H, norm);
    out
}

/// Asserts the task's tolerances and prints the measured differences.
fn assert_matches(case: &str, actual: &[f32], expected: &[f32]) {
    assert_eq!(actual.len(), expected.len(), "{case}: length");
    let diffs = actual.iter().zip(expected).map(|(a, e)| (a - e).abs());
    let max = diffs.clone().fold(0.0_f32, f32::max);
    let mean = diffs.map(f64::from).sum::<f64>() / actual.len() as f64;
    println!("{case}: max abs diff {max}, mean abs diff {mean:.6}");
    assert!(
        max <= MAX_ABS_DIFF,
        "{case}: max abs diff {max} (NaN = unwritten)"
    );
    assert!(mean <= MEAN_ABS_DIFF, "{case}: mean abs diff {mean}");
}

#[test]
fn stretch_full_hd_rgb_and_padded_rgba_match_opencv() {
    let dir = tempfile::tempdir().unwrap();
    let (w, h) = (1920, 1080);
    let rgb = test_frame(w, h);
    let expected = opencv_stretch(dir.path(), &rgb, w, h);
    let from_rgb = rust_stretch(&rgb, w, h, w * 3, PixelFormat::Rgb);
    assert_matches("stretch 1920x1080 rgb", &from_rgb, &expected);
    let (rgba, stride) = repack(&rgb, w, PixelFormat::Rgba, 64);
    let from_rgba = rust_stretch(&rgba, w, h, stride, PixelFormat::Rgba);
    assert_matches("stretch 1920x1080 rgba padded", &from_rgba, &expected);
}

#[test]
fn stretch_upscaling_small_bgr_frame_matches_opencv() {
    let dir = tempfile::tempdir().unwrap();
    let (w, h) = (160, 90);
    let rgb = test_frame(w, h);
    let expected = opencv_stretch(dir.path(), &rgb, w, h);
    let (bgr, stride) = repack(&rgb, w, PixelFormat::Bgr, 5);
    let actual = rust_stretch(&bgr, w, h, stride, PixelFormat::Bgr);
    assert_matches("stretch 160x90 bgr padded (upscale)", &actual, &expected);
}

/// Compares the crop of `bbox` on a `w x h` frame, read as `format` with row padding.
fn check_crop(case: &str, w: usize, h: usize, bbox: [f32; 4], format: PixelFormat) {
    let dir = tempfile::tempdir().unwrap();
    let rgb = test_frame(w, h);
    let expected = opencv_crop(dir.path(), &rgb, w, h, bbox);
    let (data, stride) = repack(&rgb, w, format, 12);
    let view = ImageView {
        data: &data,
        width: w,
        height: h,
        stride,
        format,
    };
    let actual = rust_crop(&view, bbox, &Normalization::IDENTITY);
    assert_matches(case, &actual, &expected);
}

#[test]
fn crop_centred_box_matches_opencv() {
    let bbox = [220.0, 40.0, 420.0, 330.0];
    check_crop("crop centred 640x360", 640, 360, bbox, PixelFormat::Rgb);
}

#[test]
fn crop_full_hd_person_matches_opencv() {
    let bbox = [812.4, 96.7, 1105.2, 1003.9];
    check_crop("crop 1920x1080 rgba", 1920, 1080, bbox, PixelFormat::Rgba);
}

#[test]
fn crop_past_the_frame_edge_matches_opencv() {
    let bbox = [-100.0, 50.0, 300.0, 500.0];
    check_crop("crop past edge 640x360", 640, 360, bbox, PixelFormat::Bgra);
}

#[test]
fn crop_tiny_box_matches_opencv() {
    let bbox = [300.3, 150.7, 312.9, 170.2];
    check_crop("crop tiny box 640x360", 640, 360, bbox, PixelFormat::Bgr);
}

#[test]
fn sapiens_normalisation_is_identity_minus_mean_over_std() {
    let (w, h) = (640, 360);
    let rgb = test_frame(w, h);
    let view = ImageView::packed(&rgb, w, h, PixelFormat::Rgb);
    let bbox = [-100.0, 50.0, 300.0, 500.0];
    let raw = rust_crop(&view, bbox, &Normalization::IDENTITY);
    let normalised = rust_crop(&view, bbox, &Normalization::SAPIENS);
    let Normalization { mean, std } = Normalization::SAPIENS;
    let plane = INPUT_W * INPUT_H;
    for (i, (&x, &n)) in raw.iter().zip(&normalised).enumerate() {
        let c = i / plane;
        assert_eq!(n, (x - mean[c]) / std[c], "value {i}");
    }
}

#[test]
fn every_pixel_format_gives_the_same_input() {
    let (w, h) = (331, 187);
    let rgb = test_frame(w, h);
    let reference = rust_stretch(&rgb, w, h, w * 3, PixelFormat::Rgb);
    for format in [PixelFormat::Rgba, PixelFormat::Bgr, PixelFormat::Bgra] {
        let (data, stride) = repack(&rgb, w, format, 7);
        assert_eq!(
            rust_stretch(&data, w, h, stride, format),
            reference,
            "{format:?}"
        );
    }
}
