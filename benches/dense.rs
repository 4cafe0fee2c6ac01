//! Depth and normal post-processing at 1080p: upsample the model output to the frame, normalise,
//! draw. Run with `cargo bench --bench dense`. The OpenCV + NumPy figures for the same work
//! (`cv2.resize` INTER_LINEAR, NumPy normalisation, `cv2.applyColorMap` / level rounding) come
//! from `.venv/bin/python tests/reference/dense_reference.py --bench`; run both on one machine.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use sapiens_stream::tasks::dense::{
    draw_depth, draw_normals, normalise_depth, normalise_normals, resize_planar,
};

const OUT_W: usize = 1920;
const OUT_H: usize = 1080;

/// Smooth C x H x W maps, like a model's dense output.
fn smooth_maps(channels: usize, height: usize, width: usize) -> Vec<f32> {
    let mut maps = Vec::with_capacity(channels * height * width);
    for c in 0..channels {
        let (fx, fy) = (0.011 + c as f32 * 0.004, 0.007 + c as f32 * 0.003);
        for y in 0..height {
            for x in 0..width {
                maps.push(1.0 + c as f32 + (x as f32 * fx).sin() * (y as f32 * fy).cos());
            }
        }
    }
    maps
}

/// A person-sized foreground (class 1) in the middle of the frame, background 0 elsewhere.
fn foreground() -> Vec<u8> {
    (0..OUT_W * OUT_H)
        .map(|i| {
            let (x, y) = (i % OUT_W, i / OUT_W);
            u8::from((660..1260).contains(&x) && (90..1080).contains(&y))
        })
        .collect()
}

fn depth(c: &mut Criterion) {
    let model = smooth_maps(1, 1024, 768);
    let classes = foreground();
    let mut depth = vec![0.0f32; OUT_W * OUT_H];
    let mut normalised = vec![0.0f32; OUT_W * OUT_H];
    let mut frame = vec![128u8; OUT_W * OUT_H * 4];
    c.bench_function("depth_resize_1x1024x768_to_1920x1080", |b| {
        b.iter(|| resize_planar(black_box(&model), 1, 1024, 768, OUT_W, OUT_H, &mut depth))
    });
    for (name, mask) in [
        ("whole_frame", None),
        ("foreground", Some(classes.as_slice())),
    ] {
        c.bench_function(&format!("depth_normalise_draw_1920x1080_{name}"), |b| {
            b.iter(|| {
                normalise_depth(black_box(&depth), mask, &mut normalised);
                draw_depth(&mut frame, OUT_W, OUT_H, OUT_W * 4, &normalised, mask);
            })
        });
    }
    c.bench_function("depth_total_1x1024x768_to_1920x1080", |b| {
        b.iter(|| {
            resize_planar(black_box(&model), 1, 1024, 768, OUT_W, OUT_H, &mut depth);
            normalise_depth(&depth, None, &mut normalised);
            draw_depth(&mut frame, OUT_W, OUT_H, OUT_W * 4, &normalised, None);
        })
    });
}

fn normals(c: &mut Criterion) {
    let model = smooth_maps(3, 512, 384);
    let mut normals = vec![0.0f32; 3 * OUT_W * OUT_H];
    let mut frame = vec![128u8; OUT_W * OUT_H * 4];
    c.bench_function("normal_resize_3x512x384_to_1920x1080", |b| {
        b.iter(|| resize_planar(black_box(&model), 3, 512, 384, OUT_W, OUT_H, &mut normals))
    });
    c.bench_function("normal_total_3x512x384_to_1920x1080", |b| {
        b.iter(|| {
            resize_planar(black_box(&model), 3, 512, 384, OUT_W, OUT_H, &mut normals);
            normalise_normals(&mut normals);
            draw_normals(&mut frame, OUT_W, OUT_H, OUT_W * 4, &normals, None);
        })
    });
}

criterion_group!(benches, depth, normals);
criterion_main!(benches);
