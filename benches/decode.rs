//! DARK-UDP heatmap decode: 308 (Goliath) and 17 (COCO) heatmaps of 256 x 192, each one
//! sigma-2 Gaussian peak plus low noise, like real model output.
//!
//! `cargo bench --bench decode`; the NumPy + OpenCV reference on the same kind of maps, beside it:
//! `.venv/bin/python tests/reference/decode_reference.py --bench` (prints
//! `numpy_dark_udp_308_ms=...`).

use criterion::{Criterion, criterion_group, criterion_main};
use sapiens_stream::tasks::pose::decode::decode_dark_udp;
use std::hint::black_box;

const HEIGHT: usize = 256;
const WIDTH: usize = 192;

use sapiens_stream::testkit::synthetic::{XorShift, gaussian_map};

fn heatmaps(channels: usize) -> Vec<f32> {
    let mut rng = XorShift(0x0DEC_0DE5);
    let mut maps = Vec::with_capacity(channels * HEIGHT * WIDTH);
    for _ in 0..channels {
        let cx = rng.range(5.0, WIDTH as f32 - 5.0);
        let cy = rng.range(5.0, HEIGHT as f32 - 5.0);
        let amplitude = rng.range(0.3, 1.0);
        let peak = gaussian_map(WIDTH, HEIGHT, (cx, cy), 2.0, amplitude);
        maps.extend(peak.into_iter().map(|v| v + rng.range(-0.017, 0.017)));
    }
    maps
}

fn bench_decode(c: &mut Criterion) {
    for (name, channels) in [("dark_udp_308x256x192", 308), ("dark_udp_17x256x192", 17)] {
        let maps = heatmaps(channels);
        let mut peaks = Vec::with_capacity(channels);
        c.bench_function(name, |b| {
            b.iter(|| decode_dark_udp(black_box(&maps), channels, HEIGHT, WIDTH, &mut peaks));
        });
        black_box(&peaks);
    }
}

criterion_group!(benches, bench_decode);
criterion_main!(benches);
