//! The CUDA kernels against the CPU path. Needs no GStreamer, so it runs on a GPU machine
//! without it: `cargo test --no-default-features --test gpu`.
//!
//! - NVRTC compiles every kernel (no GPU needed): runs wherever libnvrtc is found
//!   (`SAPIENS_NVRTC_LIB=/path/libnvrtc.so.12`, or on the loader's path), else skips saying why.
//! - Kernel results equal the CPU stages: run where a CUDA device is, else skip saying why (the
//!   same comparisons run without a GPU in src/cuda/host_emulation.rs, on the kernels built for
//!   the host).
//! - The colour conversion's CPU twin equals OpenCV's `cvtColor`: runs everywhere.

mod common;
#[path = "common/kernel_inputs.rs"]
mod kernel_inputs;

use cudarc::driver::CudaSlice;
use sapiens_stream::cuda::preprocess::{
    DeviceStretch, FrameGeometry, SourceLayout, warp_crops, yuv420_to_rgb,
};
use sapiens_stream::cuda::{self, Gpu};
use sapiens_stream::engine::probe;
use sapiens_stream::preprocess::{
    ImageView, Normalization, PixelFormat, PoseCrop, StretchPlan, warp_crop,
};
use sapiens_stream::tasks::pose_decode::{HeatmapPeak, decode_dark_udp};
use sapiens_stream::tasks::seg;

use kernel_inputs::{edge_case_heatmaps, random_logits, test_bytes, tied_logits_with_nans};

/// The task's tolerance before normalisation, on the 0..255 scale.
const PREPROCESS_TOLERANCE: f32 = 0.5;

/// The GPU, or `None` after printing why these tests skip.
fn gpu(test: &str) -> Option<Gpu> {
    match Gpu::open(0) {
        Ok(gpu) => Some(gpu),
        Err(e) => {
            eprintln!("SKIPPED {test}: no usable CUDA device: {e}");
            None
        }
    }
}

#[test]
fn every_kernel_compiles_with_nvrtc() {
    if let Err(reason) = probe::nvrtc() {
        // Probing must explain, never panic; compiling must then fail the same clean way.
        let error = cuda::compile("preprocess", cuda::SOURCES[0].1).expect_err("no NVRTC, no PTX");
        assert!(error.to_string().contains("NVRTC"), "{error}");
        eprintln!("SKIPPED every_kernel_compiles_with_nvrtc: {reason}");
        return;
    }
    let expected = [
        ("preprocess", &["preprocess_f32", "preprocess_f16"][..]),
        (
            "seg",
            &["upsample_argmax", "argmax_classes", "nearest_upsample"][..],
        ),
        ("pose", &["blur_rows", "blur_columns", "refine_peaks"][..]),
        ("render", &["blend_class_map"][..]),
    ];
    for ((name, source), (expected_name, entries)) in cuda::SOURCES.iter().zip(expected) {
        assert_eq!(*name, expected_name);
        let ptx = cuda::compile(name, source).unwrap_or_else(|e| panic!("{e}"));
        let text = ptx.to_src();
        for entry in entries {
            assert!(
                text.contains(&format!(".entry {entry}(")),
                "{name}.cu: no kernel {entry} in the PTX"
            );
        }
        eprintln!(
            "{name}.cu: compiled, {} bytes of PTX, kernels {}",
            text.len(),
            entries.join(", ")
        );
    }
}

fn run_reference_yuv(frame: &[u8], width: usize, height: usize, layout: &str) -> Vec<u8> {
    let dir = tempfile::tempdir().expect("temp dir");
    let input = dir.path().join("in.npy");
    let output = dir.path().join("out.npy");
    common::write_npy_u8(&input, &[(height * 3 / 2) as u64, width as u64], frame);
    common::run_reference(
        "yuv_reference.py",
        &[input.to_str().unwrap(), layout, output.to_str().unwrap()],
    );
    common::read_npy_u8(&output).1
}

#[test]
fn yuv_conversion_equals_opencv() {
    let (width, height) = (98, 62);
    let frame = test_bytes(width * height * 3 / 2, 11);
    for (layout, name) in [(SourceLayout::Nv12, "nv12"), (SourceLayout::I420, "i420")] {
        let geometry = FrameGeometry::yuv420(width, height, layout);
        assert_eq!(geometry.len(), frame.len());
        assert_eq!(
            yuv420_to_rgb(&frame, &geometry),
            run_reference_yuv(&frame, width, height, name),
            "{name}"
        );
    }
}

/// The CPU path's input for a frame of any layout: YUV converted first, then the CPU stage.
fn cpu_rgb(frame: &[u8], geometry: &FrameGeometry) -> (Vec<u8>, PixelFormat) {
    match geometry.layout {
        SourceLayout::Nv12 | SourceLayout::I420 => {
            (yuv420_to_rgb(frame, geometry), PixelFormat::Rgb)
        }
        SourceLayout::Rgb => (frame.to_vec(), PixelFormat::Rgb),
        SourceLayout::Bgr => (frame.to_vec(), PixelFormat::Bgr),
        SourceLayout::Rgbx => (frame.to_vec(), PixelFormat::Rgba),
        SourceLayout::Bgrx => (frame.to_vec(), PixelFormat::Bgra),
    }
}

fn assert_close(gpu: &[f32], cpu: &[f32], what: &str) {
    assert_eq!(gpu.len(), cpu.len());
    let worst = gpu
        .iter()
        .zip(cpu)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    assert!(
        worst <= PREPROCESS_TOLERANCE,
        "{what}: largest difference {worst} (of 255)"
    );
}

const LAYOUTS: [SourceLayout; 6] = [
    SourceLayout::Rgb,
    SourceLayout::Bgr,
    SourceLayout::Rgbx,
    SourceLayout::Bgrx,
    SourceLayout::Nv12,
    SourceLayout::I420,
];

fn geometry(layout: SourceLayout, width: usize, height: usize) -> FrameGeometry {
    match layout {
        SourceLayout::Nv12 | SourceLayout::I420 => FrameGeometry::yuv420(width, height, layout),
        _ => FrameGeometry::packed(width, height, layout),
    }
}

#[test]
fn stretch_equals_the_cpu_path_for_every_layout() {
    let Some(gpu) = gpu("stretch_equals_the_cpu_path_for_every_layout") else {
        return;
    };
    let (width, height, out_w, out_h) = (640, 360, 192, 256);
    let plan = StretchPlan::new(width, height, out_w, out_h);
    let stretch = DeviceStretch::upload(&gpu, &plan, width, height).unwrap();
    for layout in LAYOUTS {
        let geometry = geometry(layout, width, height);
        let frame = test_bytes(geometry.len(), 3);
        let (rgb, format) = cpu_rgb(&frame, &geometry);
        let mut expected = vec![0.0; 3 * out_w * out_h];
        plan.run(
            &ImageView::packed(&rgb, width, height, format),
            &mut expected,
            &Normalization::IDENTITY,
        );
        let device_frame = gpu.stream().clone_htod(&frame).unwrap();
        let mut out: CudaSlice<f32> = gpu.stream().alloc_zeros(expected.len()).unwrap();
        stretch
            .run(
                &gpu,
                &device_frame,
                &geometry,
                &Normalization::IDENTITY,
                &mut out,
            )
            .unwrap();
        assert_close(
            &gpu.stream().clone_dtoh(&out).unwrap(),
            &expected,
            &format!("{layout:?}"),
        );
    }
}

#[test]
fn normalised_f16_stretch_equals_the_cpu_path() {
    let Some(gpu) = gpu("normalised_f16_stretch_equals_the_cpu_path") else {
        return;
    };
    let (width, height, out_w, out_h) = (1920, 1080, 768, 1024);
    let plan = StretchPlan::new(width, height, out_w, out_h);
    let stretch = DeviceStretch::upload(&gpu, &plan, width, height).unwrap();
    let geometry = FrameGeometry::yuv420(width, height, SourceLayout::Nv12);
    let frame = test_bytes(geometry.len(), 5);
    let (rgb, format) = cpu_rgb(&frame, &geometry);
    let norm = Normalization::SAPIENS;
    let mut expected = vec![0.0; 3 * out_w * out_h];
    plan.run(
        &ImageView::packed(&rgb, width, height, format),
        &mut expected,
        &norm,
    );
    let device_frame = gpu.stream().clone_htod(&frame).unwrap();
    let mut out: CudaSlice<half::f16> = gpu.stream().alloc_zeros(expected.len()).unwrap();
    stretch
        .run(&gpu, &device_frame, &geometry, &norm, &mut out)
        .unwrap();
    let got = gpu.stream().clone_dtoh(&out).unwrap();
    for (g, e) in got.iter().zip(&expected) {
        assert_eq!(
            *g,
            half::f16::from_f32(*e),
            "f16 must be the f32 value rounded to nearest"
        );
    }
}

#[test]
fn batched_crops_equal_the_cpu_path() {
    let Some(gpu) = gpu("batched_crops_equal_the_cpu_path") else {
        return;
    };
    let (width, height, out_w, out_h) = (640, 480, 192, 256);
    let crops = [
        PoseCrop::from_box(100.0, 50.0, 300.0, 450.0, out_w, out_h),
        PoseCrop::from_box(-40.0, 300.0, 120.0, 520.0, out_w, out_h),
        PoseCrop::from_box(500.0, 10.0, 700.0, 200.0, out_w, out_h),
    ];
    for layout in [SourceLayout::Rgbx, SourceLayout::Nv12] {
        let geometry = geometry(layout, width, height);
        let frame = test_bytes(geometry.len(), 9);
        let (rgb, format) = cpu_rgb(&frame, &geometry);
        let slot = 3 * out_w * out_h;
        let mut expected = vec![0.0; crops.len() * slot];
        for (crop, out) in crops.iter().zip(expected.chunks_mut(slot)) {
            warp_crop(
                &ImageView::packed(&rgb, width, height, format),
                crop,
                out,
                out_w,
                out_h,
                &Normalization::IDENTITY,
            );
        }
        let device_frame = gpu.stream().clone_htod(&frame).unwrap();
        let mut out: CudaSlice<f32> = gpu.stream().alloc_zeros(expected.len()).unwrap();
        warp_crops(
            &gpu,
            &device_frame,
            &geometry,
            &crops,
            (out_w, out_h),
            &Normalization::IDENTITY,
            &mut out,
        )
        .unwrap();
        assert_close(
            &gpu.stream().clone_dtoh(&out).unwrap(),
            &expected,
            &format!("{layout:?} crops"),
        );
    }
}

#[test]
fn segmentation_class_maps_equal_the_cpu_path() {
    let Some(gpu) = gpu("segmentation_class_maps_equal_the_cpu_path") else {
        return;
    };
    let shape = cuda::seg::SegShape {
        classes: 28,
        in_h: 64,
        in_w: 48,
        out_w: 333,
        out_h: 250,
    };
    let random = random_logits(shape.classes, shape.in_h, shape.in_w);
    let tied = tied_logits_with_nans(shape.classes, shape.in_h, shape.in_w);
    for (logits, what) in [(random, "random"), (tied, "ties and NaNs")] {
        let device_logits = gpu.stream().clone_htod(&logits).unwrap();
        let mut expected = vec![0u8; shape.out_w * shape.out_h];
        let mut out = gpu.stream().alloc_zeros::<u8>(expected.len()).unwrap();
        seg::upsample_argmax(
            &logits,
            shape.classes,
            shape.in_h,
            shape.in_w,
            shape.out_w,
            shape.out_h,
            &mut expected,
        );
        cuda::seg::upsample_argmax(&gpu, &device_logits, shape, &mut out).unwrap();
        assert_eq!(
            gpu.stream().clone_dtoh(&out).unwrap(),
            expected,
            "bilinear + argmax, {what}"
        );
        seg::argmax_nearest(
            &logits,
            shape.classes,
            shape.in_h,
            shape.in_w,
            shape.out_w,
            shape.out_h,
            &mut expected,
        );
        cuda::seg::argmax_nearest(&gpu, &device_logits, shape, &mut out).unwrap();
        assert_eq!(
            gpu.stream().clone_dtoh(&out).unwrap(),
            expected,
            "argmax + nearest, {what}"
        );
    }
}

#[test]
fn pose_decode_equals_the_cpu_path() {
    let Some(gpu) = gpu("pose_decode_equals_the_cpu_path") else {
        return;
    };
    let (maps, h, w) = (308, 256, 192);
    let data = edge_case_heatmaps(maps, h, w);
    let mut expected = Vec::new();
    decode_dark_udp(&data, maps, h, w, &mut expected);
    let device = gpu.stream().clone_htod(&data).unwrap();
    let (mut scratch, mut got) = (None, Vec::<HeatmapPeak>::new());
    cuda::pose::decode_dark_udp(&gpu, &device, (maps, h, w), &mut scratch, &mut got).unwrap();
    for (k, (g, e)) in got.iter().zip(&expected).enumerate() {
        assert_eq!(g.score, e.score, "map {k}: score");
        // The log differs by an ulp between the GPU's logf and the CPU's ln.
        assert!(
            (g.x - e.x).abs() < 1e-3 && (g.y - e.y).abs() < 1e-3,
            "map {k}: {g:?} vs {e:?}"
        );
    }
}

#[test]
fn class_overlay_equals_the_cpu_path() {
    let Some(gpu) = gpu("class_overlay_equals_the_cpu_path") else {
        return;
    };
    let (width, height, stride) = (101, 37, 101 * 4 + 12);
    let mut frame = test_bytes(height * stride, 41);
    let classes: Vec<u8> = test_bytes(width * height, 43)
        .iter()
        .map(|b| b % 30)
        .collect();
    let palette: Vec<[u8; 3]> = (0..28u8).map(|i| [i * 9, 255 - i * 7, i * 3]).collect();
    let device_classes = gpu.stream().clone_htod(&classes).unwrap();
    let mut device_frame = gpu.stream().clone_htod(&frame).unwrap();
    cuda::render::blend_class_map(
        &gpu,
        &mut device_frame,
        (width, height, stride),
        &device_classes,
        &palette,
        0.5,
    )
    .unwrap();
    sapiens_stream::render::blend_class_map(
        &mut frame, width, height, stride, &classes, &palette, 0.5,
    );
    assert_eq!(gpu.stream().clone_dtoh(&device_frame).unwrap(), frame);
}
