//! CUDA kernels, microseconds per frame: preprocess of a 1920x1080 NV12 frame to the
//! 1x3x1024x768 f16 model input, and the DARK-UDP decode of 308 heatmaps of 256x192.
//! Targets on an H100: <= 50 us and <= 100 us.
//!
//! Needs no GStreamer: `cargo bench --no-default-features --bench gpu`. Without a CUDA device it
//! prints why and exits 0.

use criterion::Criterion;
use cudarc::driver::CudaSlice;
use sapiens_stream::cuda::Gpu;
use sapiens_stream::cuda::preprocess::{DeviceStretch, FrameGeometry, SourceLayout};
use sapiens_stream::preprocess::{Normalization, StretchPlan};
use sapiens_stream::tasks::pose_decode::HeatmapPeak;

const FRAME: (usize, usize) = (1920, 1080);
const INPUT: (usize, usize) = (768, 1024);
const HEATMAPS: (usize, usize, usize) = (308, 256, 192);

fn main() {
    let gpu = match Gpu::open(0) {
        Ok(gpu) => gpu,
        Err(e) => {
            println!("gpu bench skipped: no usable CUDA device: {e}");
            return;
        }
    };
    let mut criterion = Criterion::default().configure_from_args();
    preprocess(&gpu, &mut criterion);
    decode(&gpu, &mut criterion);
    criterion.final_summary();
}

fn preprocess(gpu: &Gpu, criterion: &mut Criterion) {
    let (width, height) = FRAME;
    let geometry = FrameGeometry::yuv420(width, height, SourceLayout::Nv12);
    let frame: Vec<u8> = (0..geometry.len()).map(|i| (i * 7 % 251) as u8).collect();
    let device_frame = gpu.stream().clone_htod(&frame).expect("upload");
    let plan = StretchPlan::new(width, height, INPUT.0, INPUT.1);
    let stretch = DeviceStretch::upload(gpu, &plan, width, height).expect("taps");
    let mut out: CudaSlice<half::f16> = gpu
        .stream()
        .alloc_zeros(3 * INPUT.0 * INPUT.1)
        .expect("alloc");
    criterion.bench_function("cuda preprocess 1920x1080 nv12 -> 1x3x1024x768 f16", |b| {
        b.iter(|| {
            stretch
                .run(
                    gpu,
                    &device_frame,
                    &geometry,
                    &Normalization::SAPIENS,
                    &mut out,
                )
                .expect("stretch");
            gpu.stream().synchronize().expect("sync");
        })
    });
}

fn decode(gpu: &Gpu, criterion: &mut Criterion) {
    let (maps, h, w) = HEATMAPS;
    let data: Vec<f32> = (0..maps * h * w)
        .map(|i| {
            let (k, x, y) = (i / (h * w), (i % w) as f32, (i / w % h) as f32);
            let (cx, cy) = ((k * 37 % w) as f32, (k * 53 % h) as f32);
            (-((x - cx).powi(2) + (y - cy).powi(2)) / 8.0).exp()
        })
        .collect();
    let heatmaps = gpu.stream().clone_htod(&data).expect("upload");
    let (mut scratch, mut peaks) = (None, Vec::<HeatmapPeak>::new());
    criterion.bench_function("cuda dark-udp decode 308x256x192", |b| {
        b.iter(|| {
            sapiens_stream::cuda::pose::decode_dark_udp(
                gpu,
                &heatmaps,
                HEATMAPS,
                &mut scratch,
                &mut peaks,
            )
            .expect("decode")
        })
    });
}
