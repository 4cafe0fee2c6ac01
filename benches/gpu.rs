//! CUDA kernels, microseconds per frame: preprocess of a 1920x1080 NV12 frame to the
//! 1x3x1024x768 f16 model input, and the DARK-UDP decode of 308 heatmaps of 256x192 (with its
//! peaks buffer allocated and read back), each timed twice: launched and waited for, and between
//! CUDA events recorded around the call (the GPU's time plus any gap while the host submits,
//! and for the decode its allocation and readback); beside them what a synchronisation alone
//! costs, and the person detector's letterbox of the same frame into a 640x640 YOLO input.
//! Targets on an H100/H200 (issue 16): 20 us and 50 us.
//!
//! Then a pose model per frame, one person in a 1920x1080 frame, side by side: the device path
//! (frame up once, crop, model, decode on the GPU, peaks back) from an RGBA and from an NV12
//! frame, and the host path on the same CUDA session (CPU crop, input and heatmaps across the
//! bus, CPU decode). The model is
//! `SAPIENS_BENCH_POSE_MODEL`, else `engines/models/sapiens_0.3b_pose308.onnx` if generated, else
//! the tiny one; ONNX Runtime with the CUDA provider comes from `ORT_DYLIB_PATH`.
//!
//! Needs no GStreamer: `cargo bench --no-default-features --bench gpu`. Without a CUDA device it
//! prints why and exits 0.

use std::path::PathBuf;

use criterion::Criterion;
use cudarc::driver::CudaSlice;
use sapiens_stream::cuda::Gpu;
use sapiens_stream::engine::device::ComputeStream;
use sapiens_stream::engine::onnx::{OnnxEngine, OnnxOptions};
use sapiens_stream::engine::{Engine, Execution, runtime};
use sapiens_stream::frame::{FrameGeometry, HostFrame, SourceLayout};
use sapiens_stream::frame::{ImageView, PixelFormat};
use sapiens_stream::pipeline::infer::device::{
    DeviceInference, FrameRequest, Persons, PoseRequest,
};
use sapiens_stream::preprocess::cuda::{DeviceLetterbox, DeviceStretch};
use sapiens_stream::preprocess::letterbox::LetterboxPlan;
use sapiens_stream::preprocess::{Normalization, StretchPlan};
use sapiens_stream::tasks::detect::DetectorLayout;
use sapiens_stream::tasks::pose::decode::HeatmapPeak;
use sapiens_stream::tasks::pose::{self, PersonBox};
use sapiens_stream::tasks::{INPUT_LEN, Task, validate_model};

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
    synchronize(&gpu, &mut criterion);
    preprocess(&gpu, &mut criterion);
    letterbox(&gpu, &mut criterion);
    decode(&gpu, &mut criterion);
    pose_frames(&gpu, &mut criterion);
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
    let mut run = || {
        stretch
            .run(
                gpu,
                &device_frame,
                &geometry,
                &Normalization::SAPIENS,
                &mut out,
            )
            .expect("stretch");
    };
    criterion.bench_function("cuda preprocess 1920x1080 nv12 -> 1x3x1024x768 f16", |b| {
        b.iter(|| {
            run();
            gpu.stream().synchronize().expect("sync");
        })
    });
    bench_device_time(
        gpu,
        criterion,
        "cuda preprocess 1920x1080 nv12 -> 1x3x1024x768 f16, GPU time",
        run,
    );
}

/// What a stream synchronisation alone costs: the floor under every launch-and-wait figure.
fn synchronize(gpu: &Gpu, criterion: &mut Criterion) {
    criterion.bench_function("cuda stream synchronize, nothing queued", |b| {
        b.iter(|| gpu.stream().synchronize().expect("sync"))
    });
}

/// `work`'s time between CUDA events recorded before and after it: what the GPU spends on it,
/// plus any gap while the host submits it (and, when `work` waits, the wait's own tail).
fn bench_device_time(gpu: &Gpu, criterion: &mut Criterion, name: &str, mut work: impl FnMut()) {
    let timed = Some(cudarc::driver::sys::CUevent_flags::CU_EVENT_DEFAULT);
    criterion.bench_function(name, |b| {
        b.iter_custom(|iters| {
            let mut total = 0.0f64;
            for _ in 0..iters {
                let start = gpu.stream().record_event(timed).expect("event");
                work();
                let end = gpu.stream().record_event(timed).expect("event");
                total += f64::from(start.elapsed_ms(&end).expect("elapsed"));
            }
            std::time::Duration::from_secs_f64(total / 1e3)
        })
    });
}

fn letterbox(gpu: &Gpu, criterion: &mut Criterion) {
    let (width, height) = FRAME;
    let geometry = FrameGeometry::yuv420(width, height, SourceLayout::Nv12);
    let frame: Vec<u8> = (0..geometry.len()).map(|i| (i * 7 % 251) as u8).collect();
    let device_frame = gpu.stream().clone_htod(&frame).expect("upload");
    let plan = LetterboxPlan::new(DetectorLayout::Yolo, FRAME, (640, 640));
    let letterbox = DeviceLetterbox::upload(gpu, &plan).expect("taps");
    let mut out: CudaSlice<f32> = gpu.stream().alloc_zeros(3 * 640 * 640).expect("alloc");
    criterion.bench_function("cuda letterbox 1920x1080 nv12 -> 1x3x640x640 f32", |b| {
        b.iter(|| {
            letterbox
                .run(gpu, &device_frame, &geometry, &mut out)
                .expect("letterbox");
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
    let mut run = || {
        sapiens_stream::tasks::pose::cuda::decode_dark_udp(
            gpu,
            &heatmaps,
            HEATMAPS,
            &mut scratch,
            &mut peaks,
        )
        .expect("decode")
    };
    criterion.bench_function("cuda dark-udp decode 308x256x192", |b| b.iter(&mut run));
    bench_device_time(
        gpu,
        criterion,
        "cuda dark-udp decode 308x256x192, GPU time",
        run,
    );
}

fn pose_model() -> PathBuf {
    let models = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("engines/models");
    std::env::var_os("SAPIENS_BENCH_POSE_MODEL")
        .map(PathBuf::from)
        .or_else(|| Some(models.join("sapiens_0.3b_pose308.onnx")).filter(|p| p.is_file()))
        .unwrap_or_else(|| models.join("sapiens_tiny_pose308.onnx"))
}

fn pose_frames(gpu: &Gpu, criterion: &mut Criterion) {
    let path = pose_model();
    let options = OnnxOptions {
        execution: Execution::Cuda { device: 0 },
        max_batch: 1,
        compute_stream: Some(ComputeStream(gpu.stream().clone())),
        ..OnnxOptions::default()
    };
    let loaded = runtime::environment(None)
        .and_then(|environment| OnnxEngine::load(&path, environment, &options));
    let mut engine = match loaded {
        Ok(engine) => engine,
        Err(e) => {
            println!("pose frame bench skipped: {e}");
            return;
        }
    };
    let layout = validate_model(Task::Pose, engine.info()).expect("a pose model");
    let model = engine.info().id.clone();
    let (width, height) = FRAME;
    let frame: Vec<u8> = (0..width * height * 4)
        .map(|i| (i * 7 % 251) as u8)
        .collect();
    let view = ImageView::packed(&frame, width, height, PixelFormat::Rgba);
    let person = PersonBox {
        x1: 700.0,
        y1: 100.0,
        x2: 1200.0,
        y2: 1000.0,
        score: 1.0,
    };
    let crops = [person.crop()];
    let mut device = DeviceInference::new(gpu.clone());
    // The decoder's own NV12 (what the pipeline uploads when nothing needs RGBA on the CPU)
    // beside RGBA: 1.5 bytes a pixel up the bus instead of 4.
    let nv12_geometry = FrameGeometry::yuv420(width, height, SourceLayout::Nv12);
    let nv12: Vec<u8> = (0..nv12_geometry.len())
        .map(|i| (i * 7 % 251) as u8)
        .collect();
    let frames = [
        ("rgba", HostFrame::from(&view)),
        (
            "nv12",
            HostFrame {
                data: &nv12,
                geometry: nv12_geometry,
            },
        ),
    ];
    for (name, host_frame) in frames {
        let label = format!("device path, one person, {name} frame, {model}");
        criterion.bench_function(&label, |b| {
            b.iter(|| {
                let request = FrameRequest {
                    pose: Some(PoseRequest {
                        engine: engine.device().expect("loaded with a compute stream"),
                        layout,
                        max_batch: 1,
                        flip_indices: None,
                        persons: Persons::Crops(vec![&crops]),
                    }),
                    seg: None,
                    depth: None,
                    normal: None,
                    dense_maps: false,
                    paint: None,
                };
                device.run(&host_frame, request).expect("device frame")
            })
        });
    }
    let (mut input, mut heatmaps, mut peaks) = (vec![0.0; INPUT_LEN], Vec::new(), Vec::new());
    criterion.bench_function(&format!("host path, one person, {model}"), |b| {
        b.iter(|| {
            pose::prepare_crops(&view, &[person], &mut input, &Normalization::SAPIENS);
            heatmaps.clear();
            engine.run(&input, 1, &mut heatmaps).expect("host run");
            pose::decode_persons(&heatmaps, layout, &[person], &mut peaks)
        })
    });
}
