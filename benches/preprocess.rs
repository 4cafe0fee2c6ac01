//! CPU preprocessing: 1080p frame -> 3 x 1024 x 768 normalised `f32` (stretch and pose crop).
//!
//! Run: `cargo bench --bench preprocess`. The OpenCV figure to compare with (cv2.resize +
//! normalise + planar, same machine, same session):
//! `.venv/bin/python tests/reference/preprocess_reference.py --bench`.

use criterion::{Criterion, criterion_group, criterion_main};
use sapiens_stream::frame::{ImageView, PixelFormat};
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
}

fn crop(c: &mut Criterion) {
    let data = frame(PixelFormat::Rgba);
    let view = ImageView::packed(&data, FRAME_W, FRAME_H, PixelFormat::Rgba);
    // A standing person a little taller than half the frame.
    let crop = PoseCrop::from_box(820.0, 300.0, 1100.0, 1000.0, INPUT_W, INPUT_H);
    let mut input = vec![0.0_f32; 3 * INPUT_W * INPUT_H];
    c.bench_function("warp_crop_to_768x1024", |b| {
        b.iter(|| {
            warp_crop(
                &view,
                &crop,
                &mut input,
                INPUT_W,
                INPUT_H,
                &Normalization::SAPIENS,
            )
        })
    });
}

criterion_group!(benches, stretch, crop);
criterion_main!(benches);
