//! The CUDA kernels against the CPU path. Needs no GStreamer, so it runs on a GPU machine
//! without it: `cargo test --no-default-features --test gpu`.
//!
//! - NVRTC compiles every kernel (no GPU needed): runs wherever libnvrtc (CUDA 13 or 12) is found
//!   (the `nvidia-cuda-nvrtc` wheel that `scripts/setup.sh` installs into `.venv`,
//!   `SAPIENS_NVRTC_LIB=/path/libnvrtc.so.13`, or the loader's path), else skips saying why.
//! - Kernel results equal the CPU stages: run where a CUDA device is, else skip saying why (the
//!   same comparisons run without a GPU in src/cuda/host_emulation.rs, on the kernels built for
//!   the host).
//! - The colour conversion's CPU twin equals OpenCV's `cvtColor`: runs everywhere.

mod common;

use cudarc::driver::CudaSlice;
use sapiens_stream::cuda::{self, Gpu};
use sapiens_stream::engine::device::ComputeStream;
use sapiens_stream::engine::onnx::{OnnxEngine, OnnxOptions};
use sapiens_stream::engine::{Engine, Execution, probe, runtime};
use sapiens_stream::frame::{FrameGeometry, HostFrame, SourceLayout, YuvToRgb, yuv420_to_rgb};
use sapiens_stream::frame::{ImageView, PixelFormat};
use sapiens_stream::pipeline::infer::device::{
    DenseRequest, DeviceInference, FrameRequest, FrameResults, Paint, Persons, PoseRequest,
};
use sapiens_stream::preprocess::cuda::{DeviceLetterbox, DeviceStretch, frame_to_rgba, warp_crops};
use sapiens_stream::preprocess::{Normalization, PoseCrop, StretchPlan, warp_crop};
use sapiens_stream::tasks::detect::{
    DetectorLayout, DetectorOptions, LetterboxInput, LetterboxPlan, PersonDetector,
};
use sapiens_stream::tasks::pose::decode::{HeatmapPeak, decode_dark_udp};
use sapiens_stream::tasks::pose::{self, PersonBox};
use sapiens_stream::tasks::{
    INPUT_HEIGHT, INPUT_LEN, INPUT_WIDTH, OutputLayout, Task, dense, flip, keypoint_sets, seg,
    validate_model,
};

use sapiens_stream::testkit::kernel_inputs::{
    Noise, edge_case_heatmaps, random_logits, test_bytes, tied_logits_with_nans,
};

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
        (
            "preprocess",
            &[
                "preprocess_f32",
                "preprocess_f16",
                "frame_to_rgba",
                "letterbox_f32",
            ][..],
        ),
        ("flip", &["mirror_rows", "merge_flipped"][..]),
        (
            "seg",
            &["upsample_argmax", "argmax_classes", "nearest_upsample"][..],
        ),
        ("pose", &["blur_rows", "blur_columns", "refine_peaks"][..]),
        ("render", &["blend_class_map"][..]),
        (
            "dense",
            &[
                "resize_planar",
                "value_range",
                "normalise_depth",
                "draw_depth",
                "normalise_normals",
                "draw_normals",
            ][..],
        ),
    ];
    assert_eq!(
        cuda::SOURCES.len(),
        expected.len(),
        "a kernel source without checks"
    );
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
fn detector_letterbox_equals_the_cpu_path_for_every_layout() {
    let Some(gpu) = gpu("detector_letterbox_equals_the_cpu_path_for_every_layout") else {
        return;
    };
    // 16:9 into a square RTMDet input (padding below), portrait into a YOLO one (left and
    // right).
    let cases = [
        (DetectorLayout::RtmDet, (640, 360), (320, 320)),
        (DetectorLayout::Yolo, (270, 480), (320, 256)),
    ];
    for ((detector, (width, height), input), layout) in cases
        .into_iter()
        .flat_map(|case| LAYOUTS.map(|layout| (case, layout)))
    {
        let geometry = geometry(layout, width, height);
        let frame = test_bytes(geometry.len(), 5);
        let (rgb, format) = cpu_rgb(&frame, &geometry);
        let mut cpu = LetterboxInput::new(detector, input.0, input.1);
        cpu.prepare(&ImageView::packed(&rgb, width, height, format));
        let plan = LetterboxPlan::new(detector, (width, height), input);
        let letterbox = DeviceLetterbox::upload(&gpu, &plan).unwrap();
        let device_frame = gpu.stream().clone_htod(&frame).unwrap();
        let mut out: CudaSlice<f32> = gpu.stream().alloc_zeros(cpu.tensor().len()).unwrap();
        letterbox
            .run(&gpu, &device_frame, &geometry, &mut out)
            .unwrap();
        let out = gpu.stream().clone_dtoh(&out).unwrap();
        // Same taps, same arithmetic, same division: equal values.
        let differing = out.iter().zip(cpu.tensor()).position(|(a, b)| a != b);
        assert!(
            differing.is_none(),
            "{detector:?} {layout:?}: value {differing:?} differs from the CPU's"
        );
    }
}

/// The CPU's RGB of a frame with an opaque alpha byte: what `frame_to_rgba` must write.
fn cpu_rgba(frame: &[u8], geometry: FrameGeometry) -> Vec<u8> {
    let rgb = HostFrame {
        data: frame,
        geometry,
    }
    .to_rgb();
    rgb.chunks_exact(3)
        .flat_map(|p| [p[0], p[1], p[2], 255])
        .collect()
}

#[test]
fn rgba_conversion_equals_the_cpu_path() {
    let Some(gpu) = gpu("rgba_conversion_equals_the_cpu_path") else {
        return;
    };
    let (width, height) = (321, 181);
    let bt709_full = YuvToRgb::from_weights(0.2126, 0.0722, true);
    for layout in LAYOUTS {
        for yuv in [YuvToRgb::BT601_LIMITED, bt709_full] {
            let geometry = FrameGeometry {
                yuv,
                ..geometry(layout, width, height)
            };
            let frame = test_bytes(geometry.len(), 7);
            let device_frame = gpu.stream().clone_htod(&frame).unwrap();
            let mut rgba = gpu.stream().alloc_zeros::<u8>(4 * width * height).unwrap();
            frame_to_rgba(&gpu, &device_frame, &geometry, &mut rgba).unwrap();
            assert!(
                gpu.stream().clone_dtoh(&rgba).unwrap() == cpu_rgba(&frame, geometry),
                "{layout:?} {yuv:?}"
            );
        }
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
    let shape = sapiens_stream::tasks::seg::cuda::SegShape {
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
        sapiens_stream::tasks::seg::cuda::upsample_argmax(&gpu, &device_logits, shape, &mut out)
            .unwrap();
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
        sapiens_stream::tasks::seg::cuda::argmax_nearest(&gpu, &device_logits, shape, &mut out)
            .unwrap();
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
    sapiens_stream::tasks::pose::cuda::decode_dark_udp(
        &gpu,
        &device,
        (maps, h, w),
        &mut scratch,
        &mut got,
    )
    .unwrap();
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
    sapiens_stream::render::cuda::blend_class_map(
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

#[test]
fn flip_test_kernels_equal_the_cpu_path() {
    let Some(gpu) = gpu("flip_test_kernels_equal_the_cpu_path") else {
        return;
    };
    let (items, channels, h, w) = (2, 17, 24, 19);
    let len = items * channels * h * w;
    let mut noise = Noise(51);
    let plain: Vec<f32> = (0..len).map(|_| noise.unit() * 2.0 - 0.5).collect();
    let mirrored: Vec<f32> = (0..len).map(|_| noise.unit()).collect();
    let mut expected = vec![0.0; len];
    flip::mirror_batch(&plain, items, channels, h, w, &mut expected);
    let device_plain = gpu.stream().clone_htod(&plain).unwrap();
    let mut out = gpu.stream().alloc_zeros::<f32>(len).unwrap();
    sapiens_stream::tasks::flip::cuda::mirror_batch(
        &gpu,
        &device_plain,
        (items, channels, h, w),
        &mut out,
    )
    .unwrap();
    assert_eq!(gpu.stream().clone_dtoh(&out).unwrap(), expected, "mirror");

    let set = sapiens_stream::tasks::keypoint_sets::keypoint_set(channels).unwrap();
    let mut merged = plain.clone();
    flip::merge_flipped_heatmaps(&mut merged, &mirrored, items, &set.flip_indices, h, w);
    let indices =
        sapiens_stream::tasks::flip::cuda::upload_flip_indices(&gpu, &set.flip_indices).unwrap();
    let mut device_merged = gpu.stream().clone_htod(&plain).unwrap();
    let device_mirrored = gpu.stream().clone_htod(&mirrored).unwrap();
    sapiens_stream::tasks::flip::cuda::merge_flipped_heatmaps(
        &gpu,
        &mut device_merged,
        &device_mirrored,
        items,
        &indices,
        (h, w),
    )
    .unwrap();
    assert_eq!(
        gpu.stream().clone_dtoh(&device_merged).unwrap(),
        merged,
        "merge"
    );
}

/// A depth map with a NaN and a class map with background, person and an empty corner.
fn depth_and_classes(h: usize, w: usize) -> (Vec<f32>, Vec<u8>) {
    let mut noise = Noise(61);
    let mut depth: Vec<f32> = (0..h * w).map(|_| 1.0 + noise.unit() * 3.0).collect();
    depth[w + 1] = f32::NAN;
    let classes = (0..h * w)
        .map(|i| {
            if (i % w) < w / 3 {
                0
            } else {
                (i % 27) as u8 + 1
            }
        })
        .collect();
    (depth, classes)
}

#[test]
fn depth_kernels_equal_the_cpu_path() {
    let Some(gpu) = gpu("depth_kernels_equal_the_cpu_path") else {
        return;
    };
    let (in_h, in_w, out_w, out_h) = (32, 24, 101, 77);
    let (raw, _) = depth_and_classes(in_h, in_w);
    let (_, classes) = depth_and_classes(out_h, out_w);
    let pixels = out_w * out_h;
    let mut resized = vec![0.0; pixels];
    dense::resize_planar(&raw, 1, in_h, in_w, out_w, out_h, &mut resized);
    let device_raw = gpu.stream().clone_htod(&raw).unwrap();
    let mut device_resized = gpu.stream().alloc_zeros::<f32>(pixels).unwrap();
    sapiens_stream::tasks::dense::cuda::resize_planar(
        &gpu,
        &device_raw,
        (1, in_h, in_w),
        (out_w, out_h),
        &mut device_resized,
    )
    .unwrap();
    let got = gpu.stream().clone_dtoh(&device_resized).unwrap();
    for (i, (g, e)) in got.iter().zip(&resized).enumerate() {
        assert!(
            g == e || (g.is_nan() && e.is_nan()),
            "resize at {i}: {g} vs {e}"
        );
    }
    let device_classes = gpu.stream().clone_htod(&classes).unwrap();
    let (stride, mut frame) = (out_w * 4 + 8, test_bytes(out_h * (out_w * 4 + 8), 71));
    let mut device_frame = gpu.stream().clone_htod(&frame).unwrap();
    let mut buffers = sapiens_stream::tasks::dense::cuda::RangeBuffers::new(&gpu).unwrap();
    for foreground in [Some(&classes[..]), None] {
        let device_foreground = foreground.map(|_| &device_classes);
        let mut normalised = vec![0.0; pixels];
        let range = dense::normalise_depth(&resized, foreground, &mut normalised);
        sapiens_stream::tasks::dense::cuda::value_range(
            &gpu,
            &device_resized,
            device_foreground,
            pixels,
            &mut buffers,
        )
        .unwrap();
        assert_eq!(
            buffers.read(&gpu).unwrap(),
            range,
            "range, foreground {}",
            foreground.is_some()
        );
        let mut device_normalised = gpu.stream().alloc_zeros::<f32>(pixels).unwrap();
        sapiens_stream::tasks::dense::cuda::normalise_depth(
            &gpu,
            &device_resized,
            device_foreground,
            buffers.range(),
            &mut device_normalised,
        )
        .unwrap();
        let got = gpu.stream().clone_dtoh(&device_normalised).unwrap();
        for (i, (g, e)) in got.iter().zip(&normalised).enumerate() {
            assert!(
                g == e || (g.is_nan() && e.is_nan()),
                "normalised at {i}: {g} vs {e}"
            );
        }
        dense::draw_depth(&mut frame, out_w, out_h, stride, &normalised, foreground);
        sapiens_stream::tasks::dense::cuda::draw_depth(
            &gpu,
            &mut device_frame,
            (out_w, out_h, stride),
            &device_normalised,
            device_foreground,
        )
        .unwrap();
        assert_eq!(
            gpu.stream().clone_dtoh(&device_frame).unwrap(),
            frame,
            "depth colours"
        );
    }
    // No foreground pixel: no range, and all zero.
    let background = gpu.stream().alloc_zeros::<u8>(pixels).unwrap();
    sapiens_stream::tasks::dense::cuda::value_range(
        &gpu,
        &device_resized,
        Some(&background),
        pixels,
        &mut buffers,
    )
    .unwrap();
    assert_eq!(buffers.read(&gpu).unwrap(), None);
}

#[test]
fn normal_kernels_equal_the_cpu_path() {
    let Some(gpu) = gpu("normal_kernels_equal_the_cpu_path") else {
        return;
    };
    let (in_h, in_w, out_w, out_h) = (16, 12, 67, 45);
    let mut noise = Noise(81);
    let raw: Vec<f32> = (0..3 * in_h * in_w)
        .map(|_| noise.unit() * 2.0 - 1.0)
        .collect();
    let pixels = out_w * out_h;
    let mut normals = vec![0.0; 3 * pixels];
    dense::resize_planar(&raw, 3, in_h, in_w, out_w, out_h, &mut normals);
    dense::normalise_normals(&mut normals);
    let device_raw = gpu.stream().clone_htod(&raw).unwrap();
    let mut device_normals = gpu.stream().alloc_zeros::<f32>(3 * pixels).unwrap();
    sapiens_stream::tasks::dense::cuda::resize_planar(
        &gpu,
        &device_raw,
        (3, in_h, in_w),
        (out_w, out_h),
        &mut device_normals,
    )
    .unwrap();
    sapiens_stream::tasks::dense::cuda::normalise_normals(&gpu, &mut device_normals).unwrap();
    assert_eq!(
        gpu.stream().clone_dtoh(&device_normals).unwrap(),
        normals,
        "unit normals"
    );
    let (_, classes) = depth_and_classes(out_h, out_w);
    let device_classes = gpu.stream().clone_htod(&classes).unwrap();
    let stride = out_w * 4;
    let mut frame = test_bytes(out_h * stride, 83);
    let mut device_frame = gpu.stream().clone_htod(&frame).unwrap();
    for foreground in [Some(&classes[..]), None] {
        dense::draw_normals(&mut frame, out_w, out_h, stride, &normals, foreground);
        sapiens_stream::tasks::dense::cuda::draw_normals(
            &gpu,
            &mut device_frame,
            (out_w, out_h, stride),
            &device_normals,
            foreground.map(|_| &device_classes),
        )
        .unwrap();
        assert_eq!(
            gpu.stream().clone_dtoh(&device_frame).unwrap(),
            frame,
            "normal colours"
        );
    }
}

/// The project's tiny model for `task`, loaded on CUDA with the GPU's stream, or `None` after
/// printing why the test skips (no model generated, no CUDA execution provider).
fn device_engine(gpu: &Gpu, task: &str, test: &str) -> Option<OnnxEngine> {
    let path = common::repo_root().join(format!("engines/models/sapiens_tiny_{task}.onnx"));
    let environment = match runtime::environment(None) {
        Ok(environment) => environment,
        Err(e) => {
            eprintln!("SKIPPED {test}: {e}");
            return None;
        }
    };
    let options = OnnxOptions {
        execution: Execution::Cuda { device: 0 },
        max_batch: 2,
        compute_stream: Some(ComputeStream(gpu.stream().clone())),
        ..OnnxOptions::default()
    };
    match OnnxEngine::load(&path, environment, &options) {
        Ok(engine) => Some(engine),
        Err(e) => {
            eprintln!("SKIPPED {test}: {e}");
            None
        }
    }
}

/// The GPU with the tiny pose17 and seg models on its stream, or `None` after printing why
/// `test` skips.
fn pose_and_seg_on_the_device(test: &str) -> Option<(Gpu, OnnxEngine, OnnxEngine)> {
    let gpu = gpu(test)?;
    let pose = device_engine(&gpu, "pose17", test)?;
    let seg = device_engine(&gpu, "seg", test)?;
    Some((gpu, pose, seg))
}

/// Persons of different sizes, one past the frame's edge.
fn person_boxes() -> Vec<PersonBox> {
    [
        [10.0, 20.0, 110.0, 230.0],
        [150.0, 5.0, 300.0, 200.0],
        [250.0, 100.0, 360.0, 260.0],
    ]
    .iter()
    .map(|&[x1, y1, x2, y2]| PersonBox {
        x1,
        y1,
        x2,
        y2,
        score: 0.9,
    })
    .collect()
}

/// The host path on the same CUDA session: CPU crops, the model through host buffers, the CPU
/// decode (and flip merge).
fn host_peaks(
    engine: &mut OnnxEngine,
    view: &ImageView,
    boxes: &[PersonBox],
    flip_indices: Option<&[usize]>,
) -> Vec<HeatmapPeak> {
    let layout = validate_model(Task::Pose, engine.info()).unwrap();
    let mut input = vec![0.0; boxes.len() * INPUT_LEN];
    pose::prepare_crops(view, boxes, &mut input, &Normalization::SAPIENS);
    let mut heatmaps = Vec::new();
    for chunk in input.chunks(2 * INPUT_LEN) {
        engine
            .run(chunk, chunk.len() / INPUT_LEN, &mut heatmaps)
            .unwrap();
    }
    if let Some(indices) = flip_indices {
        let mut mirrored_input = vec![0.0; input.len()];
        flip::mirror_batch(
            &input,
            boxes.len(),
            3,
            INPUT_HEIGHT,
            INPUT_WIDTH,
            &mut mirrored_input,
        );
        let mut mirrored = Vec::new();
        for chunk in mirrored_input.chunks(2 * INPUT_LEN) {
            engine
                .run(chunk, chunk.len() / INPUT_LEN, &mut mirrored)
                .unwrap();
        }
        flip::merge_flipped_heatmaps(
            &mut heatmaps,
            &mirrored,
            boxes.len(),
            indices,
            layout.height,
            layout.width,
        );
    }
    let mut all = Vec::new();
    let mut peaks = Vec::new();
    for maps in heatmaps.chunks(layout.item_len()) {
        decode_dark_udp(
            maps,
            layout.channels,
            layout.height,
            layout.width,
            &mut peaks,
        );
        all.extend_from_slice(&peaks);
    }
    all
}

#[test]
fn frames_on_the_device_equal_the_host_path() {
    let Some((gpu, mut pose_engine, mut seg_engine)) =
        pose_and_seg_on_the_device("frames_on_the_device_equal_the_host_path")
    else {
        return;
    };
    let (width, height) = (352, 240);
    let frame = test_bytes(width * height * 4, 91);
    let view = ImageView::packed(&frame, width, height, PixelFormat::Rgba);
    let boxes = person_boxes();
    let crops: Vec<_> = boxes.iter().map(PersonBox::crop).collect();
    let pose_layout = validate_model(Task::Pose, pose_engine.info()).unwrap();
    let seg_layout = validate_model(Task::Seg, seg_engine.info()).unwrap();
    let flip_indices = &keypoint_sets::keypoint_set(17).unwrap().flip_indices[..];
    let mut device = DeviceInference::new(gpu.clone());
    for flip_test in [false, true] {
        let flip = flip_test.then_some(flip_indices);
        let expected = host_peaks(&mut pose_engine, &view, &boxes, flip);
        let request = FrameRequest {
            pose: Some(PoseRequest {
                engine: pose_engine.device().expect("loaded with a compute stream"),
                layout: pose_layout,
                max_batch: 2,
                flip_indices: flip,
                persons: Persons::Crops(&crops),
            }),
            seg: Some((
                DenseRequest {
                    engine: seg_engine.device().expect("loaded with a compute stream"),
                    layout: seg_layout,
                },
                false,
            )),
            depth: None,
            normal: None,
            dense_maps: false,
            paint: None,
        };
        let results = device.run(&HostFrame::from(&view), request).unwrap();
        assert_eq!(results.peaks.len(), expected.len());
        for (k, (g, e)) in results.peaks.iter().zip(&expected).enumerate() {
            // Same session, inputs equal to 0.5/255: the heatmaps differ by float noise only.
            let close = (g.score - e.score).abs() <= 1e-4 * e.score.abs().max(1.0)
                && (g.x - e.x).abs() < 0.05
                && (g.y - e.y).abs() < 0.05;
            assert!(close, "flip {flip_test}, keypoint {k}: {g:?} vs {e:?}");
        }
        // The class map from the same seg session through host buffers.
        let mut input = vec![0.0; INPUT_LEN];
        StretchPlan::new(width, height, INPUT_WIDTH, INPUT_HEIGHT).run(
            &view,
            &mut input,
            &Normalization::SAPIENS,
        );
        let mut logits = Vec::new();
        seg_engine.run(&input, 1, &mut logits).unwrap();
        let mut expected_map = vec![0u8; width * height];
        let (c, h, w) = (seg_layout.channels, seg_layout.height, seg_layout.width);
        seg::upsample_argmax(&logits, c, h, w, width, height, &mut expected_map);
        let class_map = results.class_map.expect("seg was asked for");
        let differing = class_map
            .iter()
            .zip(&expected_map)
            .filter(|(a, b)| a != b)
            .count();
        // Near-ties between random logits may flip with float noise, nothing more.
        assert!(
            differing * 1000 <= class_map.len(),
            "{differing} of {} class pixels differ",
            class_map.len()
        );
    }
}

/// Pose and seg of one frame on the device, with the class overlay drawn.
fn device_frame_results(
    device: &mut DeviceInference,
    pose_engine: &mut OnnxEngine,
    seg_engine: &mut OnnxEngine,
    frame: &HostFrame,
    crops: &[PoseCrop],
) -> FrameResults {
    let pose_layout = validate_model(Task::Pose, pose_engine.info()).unwrap();
    let seg_layout = validate_model(Task::Seg, seg_engine.info()).unwrap();
    let request = FrameRequest {
        pose: Some(PoseRequest {
            engine: pose_engine.device().expect("loaded with a compute stream"),
            layout: pose_layout,
            max_batch: 2,
            flip_indices: None,
            persons: Persons::Crops(crops),
        }),
        seg: Some((dense_request(seg_engine, seg_layout), false)),
        depth: None,
        normal: None,
        dense_maps: false,
        paint: Some(Paint::Classes),
    };
    device.run(frame, request).unwrap()
}

#[test]
fn yuv_frames_on_the_device_equal_their_rgba_conversion() {
    let Some((gpu, mut pose_engine, mut seg_engine)) =
        pose_and_seg_on_the_device("yuv_frames_on_the_device_equal_their_rgba_conversion")
    else {
        return;
    };
    let (width, height) = (352, 240);
    let crops: Vec<_> = person_boxes().iter().map(PersonBox::crop).collect();
    let mut device = DeviceInference::new(gpu.clone());
    let bt709_limited = YuvToRgb::from_weights(0.2126, 0.0722, false);
    for layout in [SourceLayout::Nv12, SourceLayout::I420] {
        let geometry = FrameGeometry {
            yuv: bt709_limited,
            ..geometry(layout, width, height)
        };
        let yuv = test_bytes(geometry.len(), 93);
        let rgba = cpu_rgba(&yuv, geometry);
        let rgba_view = ImageView::packed(&rgba, width, height, PixelFormat::Rgba);
        let frames = [
            HostFrame {
                data: &yuv,
                geometry,
            },
            HostFrame::from(&rgba_view),
        ];
        let [from_yuv, from_rgba] = frames.map(|frame| {
            device_frame_results(
                &mut device,
                &mut pose_engine,
                &mut seg_engine,
                &frame,
                &crops,
            )
        });
        // The same model inputs, bit for bit: the same outputs.
        assert_eq!(from_yuv.peaks.len(), from_rgba.peaks.len());
        for (k, (a, b)) in from_yuv.peaks.iter().zip(&from_rgba.peaks).enumerate() {
            assert!(
                (a.x - b.x).abs() < 1e-3 && (a.y - b.y).abs() < 1e-3,
                "{layout:?} keypoint {k}: {a:?} vs {b:?}"
            );
        }
        assert!(from_yuv.class_map == from_rgba.class_map, "{layout:?}");
        let (drawn_yuv, drawn_rgba) = (from_yuv.painted.unwrap(), from_rgba.painted.unwrap());
        assert_eq!(drawn_yuv.stride, 4 * width);
        assert!(
            drawn_yuv.rgba == drawn_rgba.rgba,
            "{layout:?}: drawn frames"
        );
    }
}

/// Detectors of both layouts (320x320 inputs) whose two persons move with the mean of their
/// input, so that a run on another input finds other boxes; (name, path) each.
fn input_sensitive_detectors(dir: &std::path::Path) -> Vec<(&'static str, std::path::PathBuf)> {
    let layouts = ["rtmdet", "yolo"];
    let spec: Vec<_> = layouts
        .iter()
        .map(|layout| {
            serde_json::json!({
                "name": layout,
                "layout": layout,
                "input": [320, 320],
                "boxes": [[40, 30, 140, 250, 0.9, 0], [180, 60, 290, 300, 0.8, 0]],
                "input_gain": 0.05,
            })
        })
        .collect();
    let spec = serde_json::to_string(&spec).unwrap();
    common::run_reference("make_detectors.py", &[common::path_arg(dir), &spec]);
    layouts
        .iter()
        .map(|layout| (*layout, dir.join(format!("{layout}.onnx"))))
        .collect()
}

#[test]
fn a_detector_on_the_device_finds_what_it_finds_on_the_cpu() {
    let test = "a_detector_on_the_device_finds_what_it_finds_on_the_cpu";
    let Some(gpu) = gpu(test) else { return };
    let Some(mut pose_engine) = device_engine(&gpu, "pose17", test) else {
        return;
    };
    let pose_layout = validate_model(Task::Pose, pose_engine.info()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let environment = runtime::environment(None).unwrap();
    let options = DetectorOptions::default();
    let stream = ComputeStream(gpu.stream().clone());
    let (width, height) = (480, 270);
    let mut device = DeviceInference::new(gpu.clone());
    for (name, model) in input_sensitive_detectors(dir.path()) {
        let mut on_cpu = PersonDetector::load(&model, environment, &options).unwrap();
        let mut on_gpu =
            PersonDetector::load_on_gpu(&model, environment, &options, 0, &stream).unwrap();
        for layout in [SourceLayout::Rgbx, SourceLayout::Nv12] {
            let geometry = geometry(layout, width, height);
            let bytes = test_bytes(geometry.len(), 97);
            let frame = HostFrame {
                data: &bytes,
                geometry,
            };
            let rgb = frame.to_rgb();
            let view = ImageView::packed(&rgb, width, height, PixelFormat::Rgb);
            let expected = on_cpu.detect(&view).unwrap();
            assert_eq!(expected.len(), 2, "{name} {layout:?}: {expected:?}");
            let mut run = |persons| {
                let request = FrameRequest {
                    pose: Some(PoseRequest {
                        engine: pose_engine.device().expect("loaded with a compute stream"),
                        layout: pose_layout,
                        max_batch: 2,
                        flip_indices: None,
                        persons,
                    }),
                    seg: None,
                    depth: None,
                    normal: None,
                    dense_maps: false,
                    paint: None,
                };
                device.run(&frame, request).unwrap()
            };
            let detected = run(Persons::Detect(&mut on_gpu));
            let (boxes, _) = detected.boxes.expect("a detector ran");
            // The letterbox is the CPU's bit for bit; the detector's mean may sum in another
            // order on the GPU.
            assert_eq!(boxes.len(), expected.len(), "{name} {layout:?}");
            for (found, cpu) in boxes.iter().zip(&expected) {
                let corners = |b: &PersonBox| [b.x1, b.y1, b.x2, b.y2, b.score];
                let close = corners(found)
                    .iter()
                    .zip(corners(cpu))
                    .all(|(a, b)| (a - b).abs() < 1e-3);
                assert!(close, "{name} {layout:?}: {found:?} vs {cpu:?}");
            }
            let crops: Vec<_> = boxes.iter().map(PersonBox::crop).collect();
            let given = run(Persons::Crops(&crops));
            assert!(given.boxes.is_none());
            assert_eq!(detected.peaks.len(), 2 * pose_layout.channels);
            for (k, (a, b)) in detected.peaks.iter().zip(&given.peaks).enumerate() {
                assert!(
                    a.x == b.x && a.y == b.y && a.score == b.score,
                    "{name} {layout:?} keypoint {k}: {a:?} vs {b:?}"
                );
            }
        }
    }
}

fn dense_request(engine: &mut OnnxEngine, layout: OutputLayout) -> DenseRequest<'_> {
    DenseRequest {
        engine: engine.device().expect("loaded with a compute stream"),
        layout,
    }
}

/// A dense model's output for `input` through host buffers on the same session.
fn host_output(engine: &mut OnnxEngine, input: &[f32]) -> Vec<f32> {
    let mut output = Vec::new();
    engine.run(input, 1, &mut output).unwrap();
    output
}

/// Values equal within `relative` of their magnitude (at least 1e-6), NaN equal to NaN.
fn assert_near(got: &[f32], expected: &[f32], relative: f32, what: &str) {
    assert_eq!(got.len(), expected.len(), "{what}: length");
    for (i, (g, e)) in got.iter().zip(expected).enumerate() {
        let close = (g - e).abs() <= relative * e.abs().max(1e-6) || (g.is_nan() && e.is_nan());
        assert!(close, "{what} at {i}: {g} vs {e}");
    }
}

/// Fraction of RGBA pixels whose colour differs.
fn differing_pixels(a: &[u8], b: &[u8]) -> f64 {
    let differ = a
        .chunks_exact(4)
        .zip(b.chunks_exact(4))
        .filter(|(x, y)| x[..3] != y[..3])
        .count();
    differ as f64 / (a.len() / 4) as f64
}

#[test]
fn dense_frames_on_the_device_equal_the_host_path() {
    let test = "dense_frames_on_the_device_equal_the_host_path";
    let Some(gpu) = gpu(test) else { return };
    let engines = ["seg", "depth", "normal"].map(|task| device_engine(&gpu, task, test));
    let [
        Some(mut seg_engine),
        Some(mut depth_engine),
        Some(mut normal_engine),
    ] = engines
    else {
        return;
    };
    let (width, height) = (320, 200);
    let frame = test_bytes(width * height * 4, 97);
    let view = ImageView::packed(&frame, width, height, PixelFormat::Rgba);
    let layout = |engine: &OnnxEngine, task| validate_model(task, engine.info()).unwrap();
    let seg_layout = layout(&seg_engine, Task::Seg);
    let depth_layout = layout(&depth_engine, Task::Depth);
    let normal_layout = layout(&normal_engine, Task::Normal);

    // The host path on the same sessions.
    let mut input = vec![0.0; INPUT_LEN];
    StretchPlan::new(width, height, INPUT_WIDTH, INPUT_HEIGHT).run(
        &view,
        &mut input,
        &Normalization::SAPIENS,
    );
    let pixels = width * height;
    let logits = host_output(&mut seg_engine, &input);
    let mut class_map = vec![0u8; pixels];
    let (c, h, w) = (seg_layout.channels, seg_layout.height, seg_layout.width);
    seg::upsample_argmax(&logits, c, h, w, width, height, &mut class_map);
    let raw_depth = host_output(&mut depth_engine, &input);
    let mut depth = vec![0.0; pixels];
    let (h, w) = (depth_layout.height, depth_layout.width);
    dense::resize_planar(&raw_depth, 1, h, w, width, height, &mut depth);
    let mut normalised = vec![0.0; pixels];
    let range = dense::normalise_depth(&depth, Some(&class_map), &mut normalised).unwrap();
    let raw_normals = host_output(&mut normal_engine, &input);
    let mut normals = vec![0.0; 3 * pixels];
    let (h, w) = (normal_layout.height, normal_layout.width);
    dense::resize_planar(&raw_normals, 3, h, w, width, height, &mut normals);
    dense::normalise_normals(&mut normals);

    let mut device = DeviceInference::new(gpu.clone());
    for paint in [Paint::Depth, Paint::Normals, Paint::Classes] {
        let request = FrameRequest {
            pose: None,
            seg: Some((dense_request(&mut seg_engine, seg_layout), false)),
            depth: Some(dense_request(&mut depth_engine, depth_layout)),
            normal: Some(dense_request(&mut normal_engine, normal_layout)),
            dense_maps: true,
            paint: Some(paint),
        };
        let results = device.run(&HostFrame::from(&view), request).unwrap();
        let device_classes = results.class_map.expect("seg was asked for");
        let differing = device_classes
            .iter()
            .zip(&class_map)
            .filter(|(a, b)| a != b)
            .count();
        // Near-ties between random logits may flip with float noise, nothing more.
        assert!(
            differing * 1000 <= pixels,
            "{differing} class pixels differ"
        );
        let device_depth = results.depth.expect("depth was asked for");
        let device_range = device_depth.range.expect("the persons have depth");
        // The range is over the device's class map: its few flipped pixels may move it a little.
        assert!(
            (device_range.min - range.min).abs() <= 1e-3 * range.min.abs().max(1.0)
                && (device_range.max - range.max).abs() <= 1e-3 * range.max.abs().max(1.0),
            "{device_range:?} vs {range:?}"
        );
        assert_near(
            &device_depth.map.expect("maps were asked for"),
            &depth,
            1e-4,
            "depth",
        );
        let device_normals = results.normals.expect("normals were asked for");
        let normals_map = device_normals.map.expect("maps were asked for");
        assert_near(&normals_map, &normals, 1e-3, "normals");

        let mut expected = frame.clone();
        match paint {
            Paint::Depth => dense::draw_depth(
                &mut expected,
                width,
                height,
                width * 4,
                &normalised,
                Some(&class_map),
            ),
            Paint::Normals => dense::draw_normals(
                &mut expected,
                width,
                height,
                width * 4,
                &normals,
                Some(&class_map),
            ),
            Paint::Classes => sapiens_stream::render::blend_class_map(
                &mut expected,
                width,
                height,
                width * 4,
                &class_map,
                &keypoint_sets::body_parts().palette,
                0.5,
            ),
        }
        let painted = results.painted.expect("a view was asked for");
        let share = differing_pixels(&painted.rgba, &expected);
        assert!(
            share <= 0.005,
            "{paint:?}: {:.3}% of pixels differ",
            share * 100.0
        );
    }
}
