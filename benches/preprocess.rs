//! CPU preprocessing: 1080p frame -> 3 x 1024 x 768 normalised `f32` (stretch and pose crop).
//!
//! Run: `cargo bench --bench preprocess`. The OpenCV figure to compare with (cv2.resize +
//! normalise + planar, same machine, same session):
//! `.venv/bin/python tests/reference/preprocess_reference.py --bench`.

use criterion::{Criterion, criterion_group, criterion_main};
use sapiens_stream::frame::{FrameGeometry, HostFrame, ImageView, PixelFormat, SourceLayout};
use sapiens_stream::preprocess::{Normalization, PoseCrop, StretchPlan, warp_crop};

const FRAME_W: usize = 1920;
const FRAME_H: usize = 1080;
const INPUT_W: usize = 768;
const INPUT_H: usize = 1024;

/// A 1080p frame of noise (the content does not change the work done).
fn frame(format: PixelFormat) -> Vec<u8> {
    let mut state = 0x2545_F491_4F6C_DD1D_u64;
    (0..FRAME_W * FRAME_H * format.bytes_per_pixel())
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 56) as u8
        })
        .collect()
}

/// A 1080p NV12 frame of noise.
fn nv12_frame() -> Vec<u8> {
    let mut data = frame(PixelFormat::Rgb);
    data.truncate(FRAME_W * FRAME_H * 3 / 2);
    data
}

fn bench_stretch(c: &mut Criterion, name: &str, format: PixelFormat) {
    let data = frame(format);
    let view = ImageView::packed(&data, FRAME_W, FRAME_H, format);
    let plan = StretchPlan::new(FRAME_W, FRAME_H, INPUT_W, INPUT_H);
    let mut input = vec![0.0_f32; 3 * INPUT_W * INPUT_H];
    c.bench_function(name, |b| {
        b.iter(|| plan.run(&view, &mut input, &Normalization::SAPIENS))
    });
}

fn stretch(c: &mut Criterion) {
    bench_stretch(c, "stretch_1920x1080_rgba_to_768x1024", PixelFormat::Rgba);
    bench_stretch(c, "stretch_1920x1080_rgb_to_768x1024", PixelFormat::Rgb);
    let data = nv12_frame();
    let geometry = FrameGeometry::yuv420(FRAME_W, FRAME_H, SourceLayout::Nv12);
    let plan = StretchPlan::new(FRAME_W, FRAME_H, INPUT_W, INPUT_H);
    let mut input = vec![0.0_f32; 3 * INPUT_W * INPUT_H];
    c.bench_function("stretch_1920x1080_nv12_to_768x1024", |b| {
        b.iter(|| {
            plan.run(
                HostFrame {
                    data: &data,
                    geometry,
                },
                &mut input,
                &Normalization::SAPIENS,
            )
        })
    });
}

fn bench_crop<'a>(
    c: &mut Criterion,
    name: &str,
    src: impl Into<HostFrame<'a>> + Copy,
    crop: PoseCrop,
) {
    let mut input = vec![0.0_f32; 3 * INPUT_W * INPUT_H];
    c.bench_function(name, |b| {
        b.iter(|| {
            warp_crop(
                src,
                &crop,
                &mut input,
                INPUT_W,
                INPUT_H,
                &Normalization::SAPIENS,
            )
        })
    });
}

fn crop(c: &mut Criterion) {
    // A standing person a little taller than half the frame.
    let person = PoseCrop::from_box(820.0, 300.0, 1100.0, 1000.0, INPUT_W, INPUT_H);
    let data = frame(PixelFormat::Rgba);
    let view = ImageView::packed(&data, FRAME_W, FRAME_H, PixelFormat::Rgba);
    bench_crop(c, "warp_crop_rgba_to_768x1024", &view, person);
    // The frame as a decoder gives it: NV12, converted as the crop reads it.
    let data = nv12_frame();
    let nv12 = HostFrame {
        data: &data,
        geometry: FrameGeometry::yuv420(FRAME_W, FRAME_H, SourceLayout::Nv12),
    };
    bench_crop(c, "warp_crop_nv12_to_768x1024", nv12, person);
    // The whole frame as one person (no detector): a 3x downscale, two thirds beyond the frame.
    let whole = PoseCrop::from_box(0.0, 0.0, FRAME_W as f32, FRAME_H as f32, INPUT_W, INPUT_H);
    bench_crop(c, "warp_crop_nv12_whole_frame_to_768x1024", nv12, whole);
}

/// The whole-frame conversion the browser view and `--dump` use.
fn convert(c: &mut Criterion) {
    let data = nv12_frame();
    let geometry = FrameGeometry::yuv420(FRAME_W, FRAME_H, SourceLayout::Nv12);
    c.bench_function("nv12_to_rgb_1920x1080", |b| {
        b.iter(|| sapiens_stream::frame::yuv420_to_rgb(&data, &geometry))
    });
}

criterion_group!(benches, stretch, crop, convert);
criterion_main!(benches);
