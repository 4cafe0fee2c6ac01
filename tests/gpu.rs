//! The CUDA kernels against the CPU path. Needs no GStreamer, so it runs on a GPU machine
//! without it: `cargo test --no-default-features --test gpu`.
//!
//! - NVRTC compiles every kernel (no GPU needed): runs wherever libnvrtc (CUDA 13 or 12) is found
//!   (the `nvidia-cuda-nvrtc` wheel that `scripts/setup.sh` installs into `.venv`,
//!   `SAPIENS_NVRTC_LIB=/path/libnvrtc.so.13`, or the loader's path), else skips saying why.
//! - Kernel results equal the CPU stages: run where a CUDA device is, else skip saying why (the
//!   same comparisons run without a GPU in src/testkit/kernels/emulator.rs, on the kernels built for
//!   the host).
//! - The colour conversion's CPU twin equals OpenCV's `cvtColor`: runs everywhere.

mod common;

use sapiens_stream::cuda::{self, Gpu};
use sapiens_stream::engine::device::ComputeStream;
use sapiens_stream::engine::onnx::{OnnxEngine, OnnxOptions};
use sapiens_stream::engine::{Engine, Execution, probe, runtime};
use sapiens_stream::frame::{FrameGeometry, HostFrame, SourceLayout, YuvToRgb, yuv420_to_rgb};
use sapiens_stream::frame::{ImageView, PixelFormat};
use sapiens_stream::pipeline::infer::device::{
    BatchResults, DenseRequest, DeviceInference, FrameRequest, FrameResults, Paint, Persons,
    PoseRequest,
};
use sapiens_stream::preprocess::{Normalization, PoseCrop, StretchPlan};
use sapiens_stream::tasks::detect::{DetectorOptions, PersonDetector};
use sapiens_stream::tasks::pose::decode::{HeatmapPeak, decode_dark_udp};
use sapiens_stream::tasks::pose::{self, PersonBox};
use sapiens_stream::tasks::{
    INPUT_HEIGHT, INPUT_LEN, INPUT_WIDTH, OutputLayout, Task, dense, flip, keypoint_sets, seg,
    validate_model,
};

use sapiens_stream::testkit::kernel_inputs::test_bytes;
use sapiens_stream::testkit::kernels::{self, KernelBackend, device::DeviceKernels};

/// Runs a kernel check of testkit::kernels on the device, or says why `test` skips (the same
/// checks run on the kernels built for the host in src/testkit/kernels/emulator.rs).
fn on_the_device(test: &str, check: fn(&DeviceKernels)) {
    if let Some(gpu) = gpu(test) {
        check(&DeviceKernels::new(gpu));
    }
}

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
        ("pose", &["blur_maxima", "refine_peaks"][..]),
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

fn geometry(layout: SourceLayout, width: usize, height: usize) -> FrameGeometry {
    match layout {
        SourceLayout::Nv12 | SourceLayout::I420 => FrameGeometry::yuv420(width, height, layout),
        _ => FrameGeometry::packed(width, height, layout),
    }
}

#[test]
fn stretch_equals_the_cpu_path_for_every_layout() {
    on_the_device(
        "stretch_equals_the_cpu_path_for_every_layout",
        kernels::stretch_equals_the_cpu_path,
    );
}

#[test]
fn detector_letterbox_equals_the_cpu_path_for_every_layout() {
    on_the_device(
        "detector_letterbox_equals_the_cpu_path_for_every_layout",
        kernels::detector_letterbox_equals_the_cpu_path,
    );
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
    on_the_device(
        "rgba_conversion_equals_the_cpu_path",
        kernels::rgba_conversion_equals_the_cpu_path,
    );
}

#[test]
fn batched_crops_equal_the_cpu_path() {
    on_the_device(
        "batched_crops_equal_the_cpu_path",
        kernels::batched_crops_equal_the_cpu_path,
    );
}

#[test]
fn segmentation_class_maps_equal_the_cpu_path() {
    on_the_device(
        "segmentation_class_maps_equal_the_cpu_path",
        kernels::segmentation_class_maps_equal_the_cpu_path,
    );
}

#[test]
fn pose_decode_equals_the_cpu_path() {
    on_the_device(
        "pose_decode_equals_the_cpu_path",
        kernels::pose_decode_equals_the_cpu_path,
    );
}

#[test]
fn class_overlay_equals_the_cpu_path() {
    on_the_device(
        "class_overlay_equals_the_cpu_path",
        kernels::class_overlay_equals_the_cpu_path,
    );
}

#[test]
fn flip_test_kernels_equal_the_cpu_path() {
    on_the_device(
        "flip_test_kernels_equal_the_cpu_path",
        kernels::flip_test_kernels_equal_the_cpu_path,
    );
}

#[test]
fn depth_kernels_equal_the_cpu_path() {
    on_the_device(
        "depth_kernels_equal_the_cpu_path",
        kernels::depth_kernels_equal_the_cpu_path,
    );
}

#[test]
fn normal_kernels_equal_the_cpu_path() {
    on_the_device(
        "normal_kernels_equal_the_cpu_path",
        kernels::normal_kernels_equal_the_cpu_path,
    );
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
                persons: Persons::Crops(vec![&crops]),
            }),
            seg: Some((dense_request(&mut seg_engine, seg_layout), false)),
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
            persons: Persons::Crops(vec![crops]),
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
        // The conversion alone first, so a difference below is the drawing's, not the colour's.
        let converted =
            KernelBackend::frame_to_rgba(&DeviceKernels::new(gpu.clone()), &yuv, &geometry);
        assert_rgba_equal(&converted, &rgba, width, &format!("{layout:?} conversion"));
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
        // The same model inputs, bit for bit; but two runs of the CUDA provider on one input
        // may differ in the last bits (split reductions), so a near-tie between random logits
        // may flip a class pixel, and with it a drawn one (seen on the H200: 1 run in 3).
        assert_eq!(from_yuv.peaks.len(), from_rgba.peaks.len());
        for (k, (a, b)) in from_yuv.peaks.iter().zip(&from_rgba.peaks).enumerate() {
            assert!(
                (a.x - b.x).abs() < 1e-3 && (a.y - b.y).abs() < 1e-3,
                "{layout:?} keypoint {k}: {a:?} vs {b:?}"
            );
        }
        let (yuv_map, rgba_map) = (from_yuv.class_map.unwrap(), from_rgba.class_map.unwrap());
        let differing = yuv_map
            .iter()
            .zip(&rgba_map)
            .filter(|(a, b)| a != b)
            .count();
        assert!(
            differing * 1000 <= yuv_map.len(),
            "{layout:?}: {differing} class pixels differ"
        );
        let (drawn_yuv, drawn_rgba) = (from_yuv.painted.unwrap(), from_rgba.painted.unwrap());
        assert_eq!(drawn_yuv.stride, 4 * width);
        if differing == 0 {
            assert_rgba_equal(
                &drawn_yuv.rgba,
                &drawn_rgba.rgba,
                width,
                &format!("{layout:?} drawn frames"),
            );
        } else {
            let share = differing_pixels(&drawn_yuv.rgba, &drawn_rgba.rgba);
            assert!(share <= 0.001, "{layout:?} drawn frames: {share}");
        }
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
            let given = run(Persons::Crops(vec![&crops]));
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
        max_batch: 2,
    }
}

/// A dense model's output for `input` through host buffers on the same session.
fn host_output(engine: &mut OnnxEngine, input: &[f32]) -> Vec<f32> {
    let mut output = Vec::new();
    engine.run(input, 1, &mut output).unwrap();
    output
}

/// Values equal within `relative` of the map's largest magnitude, NaN equal to NaN: the two runs
/// of a model may take other cuBLAS / cuDNN kernels (TF32 included), which round differently,
/// so a value near zero is compared at the map's scale, not at its own.
fn assert_near(got: &[f32], expected: &[f32], relative: f32, what: &str) {
    assert_eq!(got.len(), expected.len(), "{what}: length");
    let largest = expected
        .iter()
        .filter(|e| e.is_finite())
        .fold(0.0f32, |m, e| m.max(e.abs()));
    for (i, (g, e)) in got.iter().zip(expected).enumerate() {
        let close = (g - e).abs() <= relative * largest || (g.is_nan() && e.is_nan());
        assert!(
            close,
            "{what} at {i}: {g} vs {e} (largest magnitude {largest})"
        );
    }
}

/// Equal RGBA frames, or a failure naming how many pixels differ and the first of them.
fn assert_rgba_equal(got: &[u8], expected: &[u8], width: usize, what: &str) {
    assert_eq!(got.len(), expected.len(), "{what}: lengths");
    let first = got
        .chunks_exact(4)
        .zip(expected.chunks_exact(4))
        .position(|(a, b)| a != b);
    if let Some(at) = first {
        panic!(
            "{what}: {:.4} of the pixels differ; the first at ({}, {}): {:?} vs {:?}",
            differing_pixels(got, expected),
            at % width,
            at / width,
            &got[4 * at..4 * at + 4],
            &expected[4 * at..4 * at + 4]
        );
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
        // TF32 (the CUDA provider's default) rounds to 11 bits: on the H200 a depth value moved
        // by 2.4e-4 of the map's largest between the two paths.
        assert_near(
            &device_depth.map.expect("maps were asked for"),
            &depth,
            1e-3,
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
                &keypoint_sets::class_set(28).unwrap().palette,
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

/// The four dense and pose models of the batch test, on the device.
struct BatchModels {
    pose: OnnxEngine,
    seg: OnnxEngine,
    depth: OnnxEngine,
    normal: OnnxEngine,
}

impl BatchModels {
    /// Every model on `frames` (each with its crops), pose `pose_batch` crops a call and the
    /// dense models `dense_batch` frames a call, with the flip test and the class overlay.
    fn run(
        &mut self,
        device: &mut DeviceInference,
        frames: &[HostFrame],
        crops: &[Vec<PoseCrop>],
        (pose_batch, dense_batch): (usize, usize),
    ) -> BatchResults {
        let pose_layout = validate_model(Task::Pose, self.pose.info()).unwrap();
        fn dense(engine: &mut OnnxEngine, task: Task, max_batch: usize) -> DenseRequest<'_> {
            let layout = validate_model(task, engine.info()).unwrap();
            DenseRequest {
                max_batch,
                ..dense_request(engine, layout)
            }
        }
        let request = FrameRequest {
            pose: Some(PoseRequest {
                engine: self.pose.device().expect("loaded with a compute stream"),
                layout: pose_layout,
                max_batch: pose_batch,
                flip_indices: Some(&keypoint_sets::keypoint_set(17).unwrap().flip_indices),
                persons: Persons::Crops(crops.iter().map(Vec::as_slice).collect()),
            }),
            seg: Some((dense(&mut self.seg, Task::Seg, dense_batch), false)),
            depth: Some(dense(&mut self.depth, Task::Depth, dense_batch)),
            normal: Some(dense(&mut self.normal, Task::Normal, dense_batch)),
            dense_maps: true,
            paint: Some(Paint::Classes),
        };
        device.run_batch(frames, request).unwrap()
    }
}

/// Frames of several streams in one batch (sizes, layouts and person counts mixed, a frame
/// without persons among them, crops of one call from several frames) give each frame what it
/// gets alone, in fewer model calls than inputs.
#[test]
fn a_batch_of_frames_equals_each_frame_alone() {
    let test = "a_batch_of_frames_equals_each_frame_alone";
    let Some(gpu) = gpu(test) else { return };
    let engines = ["pose17", "seg", "depth", "normal"].map(|task| device_engine(&gpu, task, test));
    let [Some(pose), Some(seg), Some(depth), Some(normal)] = engines else {
        return;
    };
    let mut models = BatchModels {
        pose,
        seg,
        depth,
        normal,
    };
    let boxes = person_boxes();
    let streams = [
        (SourceLayout::Rgbx, (352, 240), 3),
        (SourceLayout::Nv12, (320, 200), 0),
        (SourceLayout::I420, (352, 240), 1),
        (SourceLayout::Rgbx, (320, 200), 2),
    ];
    let bytes: Vec<(Vec<u8>, FrameGeometry)> = streams
        .iter()
        .enumerate()
        .map(|(seed, &(layout, (width, height), _))| {
            let geometry = geometry(layout, width, height);
            (test_bytes(geometry.len(), 101 + seed as u64), geometry)
        })
        .collect();
    let frames: Vec<HostFrame> = bytes
        .iter()
        .map(|(data, geometry)| HostFrame {
            data,
            geometry: *geometry,
        })
        .collect();
    let crops: Vec<Vec<PoseCrop>> = streams
        .iter()
        .map(|&(_, _, persons)| boxes[..persons].iter().map(PersonBox::crop).collect())
        .collect();
    let mut device = DeviceInference::new(gpu.clone());
    let alone: Vec<FrameResults> = frames
        .iter()
        .zip(&crops)
        .map(|(frame, crops)| {
            let one = std::slice::from_ref(frame);
            let mut results = models.run(&mut device, one, std::slice::from_ref(crops), (1, 1));
            results.frames.pop().unwrap()
        })
        .collect();
    // Six crops in calls of four: the second call holds the last frame's two crops, the first
    // call crops of three frames. Four frames in dense calls of three.
    let batched = models.run(&mut device, &frames, &crops, (4, 3));
    let calls = |task| -> Vec<usize> {
        batched
            .calls
            .iter()
            .filter(|(t, _)| *t == task)
            .map(|&(_, items)| items)
            .collect()
    };
    // Each pose call twice: the crops, then their mirror images.
    assert_eq!(calls(Task::Pose), [4, 4, 2, 2]);
    for task in [Task::Seg, Task::Depth, Task::Normal] {
        assert_eq!(calls(task), [3, 1], "{task:?}");
    }
    assert_eq!(batched.frames.len(), frames.len());
    for (index, (got, expected)) in batched.frames.iter().zip(&alone).enumerate() {
        let what = |part: &str| format!("frame {index} {:?}: {part}", streams[index].0);
        assert_eq!(got.peaks.len(), 17 * streams[index].2, "{}", what("peaks"));
        for (k, (g, e)) in got.peaks.iter().zip(&expected.peaks).enumerate() {
            // Calls of other sizes take other cuBLAS / cuDNN kernels, in TF32 (the CUDA
            // provider's default), which round differently: on the H200 a score moved by 1.1e-4
            // and, on these near-flat random heatmaps, a refined position by 0.13 px. A crop in
            // the wrong place or of the wrong frame gives another heatmap altogether.
            let close = (g.score - e.score).abs() <= 1e-3 * e.score.abs().max(1.0)
                && (g.x - e.x).abs() < 0.5
                && (g.y - e.y).abs() < 0.5;
            assert!(close, "{}: {g:?} vs {e:?}", what(&format!("keypoint {k}")));
        }
        let (got_map, expected_map) = (got.class_map.as_ref(), expected.class_map.as_ref());
        let (got_map, expected_map) = (got_map.unwrap(), expected_map.unwrap());
        let differing = got_map
            .iter()
            .zip(expected_map)
            .filter(|(a, b)| a != b)
            .count();
        assert!(differing * 1000 <= got_map.len(), "{}", what("class map"));
        let maps = |r: &FrameResults| {
            let depth = r.depth.as_ref().and_then(|d| d.map.clone()).unwrap();
            let normals = r.normals.as_ref().and_then(|d| d.map.clone()).unwrap();
            (depth, normals)
        };
        let ((got_depth, got_normals), (depth, normals)) = (maps(got), maps(expected));
        assert_near(&got_depth, &depth, 1e-4, &what("depth"));
        assert_near(&got_normals, &normals, 1e-3, &what("normals"));
        let (got_drawn, drawn) = (got.painted.as_ref(), expected.painted.as_ref());
        let share = differing_pixels(&got_drawn.unwrap().rgba, &drawn.unwrap().rgba);
        assert!(share <= 0.001, "{}: {share}", what("drawn frame"));
    }
}
