//! Post-processing benchmarks: segmentation upsample + argmax, overlay blending, pose drawing.
//!
//! Run with `cargo bench --bench postprocess`. The OpenCV figure to compare the seg upsample
//! with (28 x `cv2.resize` INTER_LINEAR + `np.argmax`, same sizes) comes from
//! `.venv/bin/python tests/reference/seg_reference.py --bench`; run both on the same machine.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use sapiens_stream::render::{PoseStyle, blend_class_map, draw_pose};
use sapiens_stream::tasks::seg::{argmax_nearest, upsample_argmax};

const CLASSES: usize = 28;
const IN_H: usize = 512;
const IN_W: usize = 384;
const OUT_W: usize = 1920;
const OUT_H: usize = 1080;

/// Smooth logits whose argmax forms regions, like a real seg output (C x H x W).
fn seg_logits() -> Vec<f32> {
    let mut logits = Vec::with_capacity(CLASSES * IN_H * IN_W);
    for class in 0..CLASSES {
        let (fx, fy) = (0.01 + class as f32 * 0.003, 0.013 + class as f32 * 0.002);
        for y in 0..IN_H {
            for x in 0..IN_W {
                logits.push((x as f32 * fx + class as f32).sin() * (y as f32 * fy).cos());
            }
        }
    }
    logits
}

fn seg(c: &mut Criterion) {
    let logits = seg_logits();
    let mut out = vec![0u8; OUT_W * OUT_H];
    c.bench_function("seg_upsample_argmax_28x512x384_to_1920x1080", |b| {
        b.iter(|| {
            upsample_argmax(
                black_box(&logits),
                CLASSES,
                IN_H,
                IN_W,
                OUT_W,
                OUT_H,
                &mut out,
            )
        })
    });
    c.bench_function("seg_argmax_nearest_28x512x384_to_1920x1080", |b| {
        b.iter(|| {
            argmax_nearest(
                black_box(&logits),
                CLASSES,
                IN_H,
                IN_W,
                OUT_W,
                OUT_H,
                &mut out,
            )
        })
    });
}

fn blend(c: &mut Criterion) {
    let (width, height) = (1920, 1080);
    let palette: Vec<[u8; 3]> = (0..CLASSES as u8)
        .map(|i| [i * 9, 255 - i * 9, i * 5])
        .collect();
    // Regions of all classes, background included.
    let class_map: Vec<u8> = (0..width * height)
        .map(|i| (((i % width) / 64 + (i / width) / 64) % CLASSES) as u8)
        .collect();
    let mut frame = vec![128u8; width * height * 4];
    c.bench_function("blend_class_map_1920x1080", |b| {
        b.iter(|| {
            blend_class_map(
                &mut frame,
                width,
                height,
                width * 4,
                black_box(&class_map),
                &palette,
                0.5,
            )
        })
    });
}

/// Goliath-308 skeleton and colours from the project's assets.
struct Goliath {
    skeleton: Vec<[usize; 2]>,
    link_colors: Vec<[u8; 3]>,
    keypoint_colors: Vec<[u8; 3]>,
}

fn load_goliath() -> Goliath {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/assets/keypoints_goliath308.json"
    );
    let text = std::fs::read_to_string(path).expect("read keypoints_goliath308.json");
    let json: serde_json::Value = serde_json::from_str(&text).expect("parse goliath json");
    let field = |name: &str| json[name].clone();
    Goliath {
        skeleton: serde_json::from_value(field("skeleton")).expect("skeleton"),
        link_colors: serde_json::from_value(field("skeleton_colors_rgb")).expect("link colours"),
        keypoint_colors: serde_json::from_value(field("keypoint_colors_rgb"))
            .expect("keypoint colours"),
    }
}

/// A person-sized layout at 1080p: keypoints scattered over the body, the face ones (70..) over
/// the head, then each link's second end pulled to 60 px from its first (bone-like lengths).
fn goliath_person(skeleton: &[[usize; 2]], keypoints: usize) -> Vec<[f32; 3]> {
    let mut person: Vec<[f32; 3]> = (0..keypoints)
        .map(|i| {
            // R2 low-discrepancy sequence: even cover, no pattern.
            let (u, v) = (
                (i as f32 * 0.754_877_7).fract(),
                (i as f32 * 0.569_840_3).fract(),
            );
            match i {
                0..70 => [760.0 + 400.0 * u, 300.0 + 700.0 * v, 0.9],
                _ => [880.0 + 160.0 * u, 80.0 + 200.0 * v, 0.9],
            }
        })
        .collect();
    for (k, &[a, b]) in skeleton.iter().enumerate() {
        let angle = k as f32 * 2.4;
        person[b][0] = person[a][0] + 60.0 * angle.cos();
        person[b][1] = person[a][1] + 60.0 * angle.sin();
    }
    person
}

fn pose(c: &mut Criterion) {
    let (width, height) = (1920, 1080);
    let set = load_goliath();
    let style = PoseStyle::new(&set.skeleton, &set.link_colors, &set.keypoint_colors)
        .scaled_for(width, height);
    let person = goliath_person(&set.skeleton, set.keypoint_colors.len());
    let mut frame = [0u8, 0, 0, 255].repeat(width * height);
    c.bench_function("draw_pose_308", |b| {
        b.iter(|| {
            draw_pose(
                &mut frame,
                width,
                height,
                width * 4,
                &[black_box(&person)],
                &style,
            )
        })
    });
}

criterion_group!(benches, seg, blend, pose);
criterion_main!(benches);
