//! Sapiens2 against an independent NumPy / OpenCV reference (`tests/reference/sapiens2_reference.py`,
//! written from the official test pipeline and demos): the kept-aspect, zero-padded input of
//! normal and pointmap models, the padding taken off their outputs, metric points, millimetre
//! depth files and point clouds; then the whole CLI with tiny Sapiens2 models of every task,
//! its dumped tensors run through the same reference, and what only Sapiens2 supports refused
//! for first-family models.

mod common;

use std::path::Path;

use common::cli::{self, assert_clean_failure, assert_success, sapiens};
use common::path_arg;
use sapiens_stream::frame::{ImageView, PixelFormat};
use sapiens_stream::preprocess::letterbox::{Fit, Letterbox, LetterboxInput, SAPIENS2_PADDING};
use sapiens_stream::tasks::dense::pointmap::{metric_points, write_ply};
use sapiens_stream::tasks::dense::{padded_normals, write_depth_mm_png};
use sapiens_stream::tasks::{Family, INPUT_HEIGHT, INPUT_WIDTH, OutputLayout, POINTMAP_CHANNELS};
use sapiens_stream::testkit::synthetic::XorShift;
use serde_json::Value;

/// Frame sizes: landscape and portrait video, odd sizes, one that fills the input exactly, and
/// one smaller than the input (upscaled).
const FRAME_SIZES: [(usize, usize); 6] = [
    (1280, 720),
    (720, 1280),
    (777, 333),
    (333, 777),
    (768, 1024),
    (300, 200),
];
/// Rust vs NumPy post-processing, relative to the largest value (float32 vs float64 rounding).
const MAP_TOLERANCE: f32 = 1e-5;

fn test_frame(width: usize, height: usize, seed: u64) -> Vec<u8> {
    let mut rng = XorShift(seed);
    (0..height * width)
        .flat_map(|i| {
            let (x, y) = (i % width, i / width);
            let noise = (rng.next_u64() % 24) as usize;
            [
                ((x * 255 / width + noise) % 256) as u8,
                ((y * 255 / height + noise) % 256) as u8,
                (((x ^ y) + noise) % 256) as u8,
            ]
        })
        .collect()
}

/// `channels` planes of 1024 x 768 smooth values (low-frequency waves plus an offset).
fn smooth_maps(channels: usize, seed: u64) -> Vec<f32> {
    let mut rng = XorShift(seed);
    let mut maps = Vec::with_capacity(channels * INPUT_HEIGHT * INPUT_WIDTH);
    for _ in 0..channels {
        let (offset, amplitude) = (rng.range(-1.0, 3.0), rng.range(0.5, 2.0));
        let (fx, fy) = (rng.range(1.0, 6.0), rng.range(1.0, 6.0));
        for y in 0..INPUT_HEIGHT {
            for x in 0..INPUT_WIDTH {
                let phase =
                    fx * x as f32 / INPUT_WIDTH as f32 + fy * y as f32 / INPUT_HEIGHT as f32;
                maps.push(offset + amplitude * (phase * std::f32::consts::TAU).sin());
            }
        }
    }
    maps
}

fn reference(command: &str, source: &Path, (w, h): (usize, usize), out: &Path) -> Value {
    let printed = common::run_reference(
        "sapiens2_reference.py",
        &[
            command,
            path_arg(source),
            &w.to_string(),
            &h.to_string(),
            path_arg(out),
        ],
    );
    serde_json::from_str(&printed).unwrap()
}

fn relative_max_diff(actual: &[f32], expected: &[f32]) -> f32 {
    let largest = expected.iter().fold(0f32, |m, v| m.max(v.abs()));
    common::max_abs_diff(actual, expected) / largest
}

fn padding_of(w: usize, h: usize) -> Letterbox {
    Letterbox::new(Fit::CentredTruncated, w, h, INPUT_WIDTH, INPUT_HEIGHT)
}

/// Our padded input against the reference's, on the 0..255 scale (as the detector letterbox).
fn assert_input_matches(context: &str, ours: &[f32], theirs: &[f32]) {
    const STD: [f32; 3] = [58.395, 57.12, 57.375];
    let plane = INPUT_HEIGHT * INPUT_WIDTH;
    let (mut max_diff, mut sum_diff) = (0f32, 0f64);
    for (i, (a, b)) in ours.iter().zip(theirs).enumerate() {
        let diff = (a - b).abs() * STD[i / plane];
        max_diff = max_diff.max(diff);
        sum_diff += f64::from(diff);
    }
    let mean_diff = sum_diff / theirs.len() as f64;
    assert!(max_diff <= 1.0, "{context}: max abs diff {max_diff}");
    assert!(mean_diff <= 0.01, "{context}: mean abs diff {mean_diff}");
}

#[test]
fn padded_input_matches_the_official_resize_and_pad() {
    let dir = tempfile::tempdir().unwrap();
    let mut input = LetterboxInput::new(SAPIENS2_PADDING, INPUT_WIDTH, INPUT_HEIGHT);
    for (seed, (w, h)) in FRAME_SIZES.into_iter().enumerate() {
        let rgb = test_frame(w, h, seed as u64);
        let (frame, out) = (dir.path().join("frame.npy"), dir.path().join("input.npy"));
        common::write_npy_u8(&frame, &[h as u64, w as u64, 3], &rgb);
        let padding = reference("pad", &frame, (w, h), &out);
        let (shape, expected) = common::read_npy_f32(&out);
        assert_eq!(shape, [3, INPUT_HEIGHT as u64, INPUT_WIDTH as u64]);

        let letterbox = input.prepare(&ImageView::packed(&rgb, w, h, PixelFormat::Rgb));
        assert_eq!(letterbox, padding_of(w, h));
        let sides = [
            letterbox.left,
            INPUT_WIDTH - letterbox.left - letterbox.resized_w,
            letterbox.top,
            INPUT_HEIGHT - letterbox.top - letterbox.resized_h,
        ];
        let expected_sides =
            ["left", "right", "top", "bottom"].map(|k| padding[k].as_u64().unwrap());
        assert_eq!(sides.map(|s| s as u64), expected_sides, "{w}x{h}");
        assert_input_matches(&format!("{w}x{h}"), input.tensor(), &expected);
    }
}

#[test]
fn normals_lose_the_padding_like_the_official_demo() {
    let dir = tempfile::tempdir().unwrap();
    let raw = smooth_maps(3, 7);
    let source = dir.path().join("normals.npy");
    common::write_npy_f32(&source, &[3, INPUT_HEIGHT as u64, INPUT_WIDTH as u64], &raw);
    for (w, h) in FRAME_SIZES {
        let out = dir.path().join("expected.npy");
        reference("normals", &source, (w, h), &out);
        let (shape, expected) = common::read_npy_f32(&out);
        assert_eq!(shape, [3, h as u64, w as u64]);
        let (mut scratch, mut normals) = (Vec::new(), vec![0f32; 3 * w * h]);
        let size = (INPUT_HEIGHT, INPUT_WIDTH);
        padded_normals(
            &raw,
            size,
            &padding_of(w, h),
            (w, h),
            &mut scratch,
            &mut normals,
        );
        let diff = relative_max_diff(&normals, &expected);
        assert!(diff <= MAP_TOLERANCE, "{w}x{h}: relative diff {diff}");
    }
}

fn pointmap_layout() -> OutputLayout {
    OutputLayout {
        channels: POINTMAP_CHANNELS,
        height: INPUT_HEIGHT,
        width: INPUT_WIDTH,
        family: Family::Sapiens2,
    }
}

/// The depth PNG holds round(z * 1000) clamped to 16 bits: check it against the reference z.
fn assert_depth_png_in_mm(path: &Path, reference_z: &[f32], slack_mm: f32) {
    let levels = image::open(path).unwrap().into_luma16().into_raw();
    assert_eq!(levels.len(), reference_z.len());
    for (i, (&level, &z)) in levels.iter().zip(reference_z).enumerate() {
        let expected = (z * 1000.0).round().clamp(0.0, 65535.0);
        assert!(
            (f32::from(level) - expected).abs() <= slack_mm,
            "pixel {i}: {level} mm, reference {expected} mm"
        );
    }
}

/// Reads a binary PLY of x, y, z floats and r, g, b bytes.
fn read_ply(path: &Path) -> Vec<([f32; 3], [u8; 3])> {
    let bytes = std::fs::read(path).unwrap();
    let end = bytes
        .windows(11)
        .position(|w| w == b"end_header\n")
        .unwrap()
        + 11;
    let header = std::str::from_utf8(&bytes[..end]).unwrap();
    let count: usize = header
        .lines()
        .find_map(|l| l.strip_prefix("element vertex "))
        .unwrap()
        .parse()
        .unwrap();
    let body = &bytes[end..];
    assert_eq!(body.len(), count * 15, "PLY body size");
    body.chunks_exact(15)
        .map(|v| {
            let float = |at: usize| f32::from_le_bytes(v[at..at + 4].try_into().unwrap());
            ([float(0), float(4), float(8)], [v[12], v[13], v[14]])
        })
        .collect()
}

/// The cloud holds the reference's points at the foreground pixels, in pixel order, with the
/// frame's colours.
fn assert_cloud_matches(
    path: &Path,
    reference: &[f32],
    (rgb, foreground): (&[u8], &[u8]),
    tolerance: f32,
) {
    let pixels = foreground.len();
    let cloud = read_ply(path);
    let kept: Vec<usize> = (0..pixels).filter(|&i| foreground[i] > 0).collect();
    assert_eq!(cloud.len(), kept.len(), "points");
    let largest = reference.iter().fold(0f32, |m, v| m.max(v.abs()));
    for (&(point, colour), &i) in cloud.iter().zip(&kept) {
        for (axis, value) in point.into_iter().enumerate() {
            let want = reference[axis * pixels + i];
            assert!(
                (value - want).abs() <= tolerance * largest,
                "pixel {i} axis {axis}: {value} vs {want}"
            );
        }
        assert_eq!(
            colour,
            [rgb[3 * i], rgb[3 * i + 1], rgb[3 * i + 2]],
            "pixel {i}"
        );
    }
}

#[test]
fn pointmap_gives_metric_depth_and_clouds_like_the_official_demo() {
    let dir = tempfile::tempdir().unwrap();
    let mut raw = smooth_maps(3, 11);
    raw.extend(std::iter::repeat_n(0.37f32, INPUT_HEIGHT * INPUT_WIDTH));
    let source = dir.path().join("pointmap.npy");
    common::write_npy_f32(&source, &[4, INPUT_HEIGHT as u64, INPUT_WIDTH as u64], &raw);
    for (seed, (w, h)) in FRAME_SIZES.into_iter().enumerate() {
        let out = dir.path().join("expected.npy");
        let printed = reference("pointmap", &source, (w, h), &out);
        let (_, expected) = common::read_npy_f32(&out);
        let (mut scratch, mut points) = (Vec::new(), Vec::new());
        let letterbox = padding_of(w, h);
        let scale = metric_points(
            &raw,
            pointmap_layout(),
            &letterbox,
            (w, h),
            &mut scratch,
            &mut points,
        );
        assert_eq!(f64::from(scale.scale), printed["scale"].as_f64().unwrap());
        let focal = printed["focal_length_px"].as_f64().unwrap();
        assert!(
            (f64::from(scale.focal_length_px) / focal - 1.0).abs() < 1e-6,
            "{w}x{h}"
        );
        let diff = relative_max_diff(&points, &expected);
        assert!(diff <= MAP_TOLERANCE, "{w}x{h}: relative diff {diff}");

        let pixels = w * h;
        let depth_png = dir.path().join("depth.png");
        let encoding = write_depth_mm_png(&depth_png, &points[2 * pixels..], w, h).unwrap();
        assert_eq!((encoding.scale, encoding.offset), (0.001, 0.0));
        assert_depth_png_in_mm(&depth_png, &expected[2 * pixels..], 1.0);

        let rgb = test_frame(w, h, seed as u64);
        let foreground: Vec<u8> = (0..pixels).map(|i| u8::from(i % 3 != 0)).collect();
        let cloud = dir.path().join("cloud.ply");
        let count = write_ply(&cloud, &points, &rgb, (w, h), Some(&foreground)).unwrap();
        assert_eq!(count, foreground.iter().filter(|&&c| c > 0).count());
        assert_cloud_matches(&cloud, &expected, (&rgb, &foreground), MAP_TOLERANCE);
    }
}

fn read_png_u8(path: &Path) -> Vec<u8> {
    image::open(path).unwrap().into_luma8().into_raw()
}

/// The four tiny Sapiens2 models on a 16:9 clip: the results, the files, and frame 0's dumped
/// tensors through the reference.
#[test]
fn cli_runs_tiny_sapiens2_models_of_every_task() {
    let dir = tempfile::tempdir().unwrap();
    let (w, h) = (320usize, 180usize);
    let clip = dir.path().join("clip.mp4");
    cli::make_clip(&clip, 2, w as u32, h as u32);
    let models = ["pose308", "seg", "normal", "pointmap"].map(cli::sapiens2_model);
    let output = sapiens(
        dir.path(),
        &[
            "run",
            "-i",
            path_arg(&clip),
            "--pose-model",
            path_arg(&models[0]),
            "--seg-model",
            path_arg(&models[1]),
            "--normal-model",
            path_arg(&models[2]),
            "--depth-model",
            path_arg(&models[3]),
            "--dense-dir",
            "dense",
            "--pointcloud-dir",
            "clouds",
            "--mask-classes",
            "Eyeglass,torso",
            "--dump",
            "dump",
            "--results",
            "results.jsonl",
        ],
    );
    assert_success(&output);
    let results = cli::read_results(&dir.path().join("results.jsonl"));
    assert_eq!(results.len(), 2);
    for result in &results {
        assert_eq!(result["random_weights"], true);
        assert_eq!(result["keypoint_set"], "goliath308");
        assert_eq!(
            result["persons"][0]["keypoints"].as_array().unwrap().len(),
            308
        );
        let segmentation = &result["segmentation"];
        assert_eq!(segmentation["class_set"], "goliath_parts29");
        let counts: Vec<u64> =
            serde_json::from_value(segmentation["class_pixels"].clone()).unwrap();
        assert_eq!(
            (counts.len(), counts.iter().sum::<u64>()),
            (29, (w * h) as u64)
        );
        assert_eq!(result["depth"]["units"], "m");
        assert_eq!(result["depth"]["scale"], 0.001);
        assert_eq!(result["pointmap"]["version"], 1);
        assert_eq!(result["pointmap"]["units"], "m");
    }

    // Frame 0 through the reference, from what the models saw and gave.
    let first = &results[0];
    // The files as the results name them, relative to the run's folder.
    let file = |name: &Value| dir.path().join(name.as_str().unwrap());
    let dump = dir.path().join("dump");
    let frame_png = dump.join("frame_000000.png");
    let input = dir.path().join("padded.npy");
    reference("pad", &frame_png, (w, h), &input);
    let (_, expected_input) = common::read_npy_f32(&input);
    for task in ["depth", "normal"] {
        let (shape, seen) =
            common::read_npy_f32(&dump.join(format!("frame_000000_{task}_input.npy")));
        assert_eq!(shape, [1, 3, INPUT_HEIGHT as u64, INPUT_WIDTH as u64]);
        assert_input_matches(task, &seen, &expected_input);
    }
    let classes = read_png_u8(&file(&first["segmentation"]["class_map_file"]));
    let mask = read_png_u8(&file(&first["segmentation"]["mask_file"]));
    let expected_mask: Vec<u8> = classes
        .iter()
        .map(|&c| if c == 2 || c == 22 { 255 } else { 0 })
        .collect();
    assert_eq!(mask, expected_mask, "mask of Eyeglass (2) and Torso (22)");

    let points = dir.path().join("points.npy");
    let printed = reference(
        "pointmap",
        &dump.join("frame_000000_depth_output.npy"),
        (w, h),
        &points,
    );
    let (_, expected_points) = common::read_npy_f32(&points);
    let pointmap = &first["pointmap"];
    assert_eq!(
        pointmap["scale"].as_f64().unwrap() as f32,
        printed["scale"].as_f64().unwrap() as f32
    );
    let depth_png = &file(&first["depth"]["file"]);
    assert_depth_png_in_mm(depth_png, &expected_points[2 * w * h..], 2.0);
    let rgb = image::open(&frame_png).unwrap().into_rgb8().into_raw();
    let cloud = &file(&pointmap["pointcloud_file"]);
    // Random weights put points some 100 m out (a scale near 0.01): float32 rounding.
    assert_cloud_matches(cloud, &expected_points, (&rgb, &classes), 1e-4);
    assert_eq!(
        pointmap["points"].as_u64().unwrap() as usize,
        classes.iter().filter(|&&c| c > 0).count()
    );

    let normals = dir.path().join("normals.npy");
    reference(
        "normals",
        &dump.join("frame_000000_normal_output.npy"),
        (w, h),
        &normals,
    );
    let (_, expected_normals) = common::read_npy_f32(&normals);
    let png = image::open(file(&first["normals"]["file"]))
        .unwrap()
        .into_rgb8();
    for (i, px) in png.pixels().enumerate() {
        for axis in 0..3 {
            let want = (expected_normals[axis * w * h + i] + 1.0) / 2.0 * 255.0;
            let level = f32::from(px.0[axis]);
            assert!(
                (level - want.clamp(0.0, 255.0)).abs() <= 1.0,
                "pixel {i} axis {axis}: {level} vs {want}"
            );
        }
    }
}

#[test]
fn sapiens2_options_are_refused_with_first_family_models() {
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("frame.png");
    cli::write_png(&image, 64, 48, 1);
    let run = |args: &[&str]| {
        let mut all = vec!["run", "-i", path_arg(&image)];
        all.extend_from_slice(args);
        sapiens(dir.path(), &all)
    };
    let (seg, depth) = (cli::model("seg"), cli::model("depth"));
    let output = run(&[
        "--seg-model",
        path_arg(&seg),
        "--dense-dir",
        "d",
        "--mask-classes",
        "Eyeglass",
    ]);
    assert_clean_failure(&output, &["--mask-classes", "goliath_parts28", "Eyeglass"]);
    let output = run(&["--depth-model", path_arg(&depth), "--pointcloud-dir", "c"]);
    assert_clean_failure(
        &output,
        &["--pointcloud-dir", "not a Sapiens2 pointmap model"],
    );
    let output = run(&["--seg-model", path_arg(&seg), "--pointcloud-dir", "c"]);
    assert_clean_failure(&output, &["--pointcloud-dir", "needs --depth-model"]);
}

#[test]
fn models_inspect_reports_the_sapiens2_family() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            "pose308",
            "pose, 308 keypoints (goliath308)",
            "--pose-model",
        ),
        ("seg", "seg, 29 classes (goliath_parts29)", "--seg-model"),
        (
            "normal",
            "normal, 3 channel(s) at 1024x768",
            "--normal-model",
        ),
        (
            "pointmap",
            "pointmap (as depth), x, y, z and scale planes at 1024x768",
            "--depth-model",
        ),
    ];
    for (task, task_line, flag) in cases {
        let model = cli::sapiens2_model(task);
        let output = sapiens(dir.path(), &["models", "inspect", path_arg(&model)]);
        assert_success(&output);
        let report = String::from_utf8_lossy(&output.stdout);
        let field = |name: &str| {
            report
                .lines()
                .find_map(|l| l.strip_prefix(name).map(str::trim))
                .unwrap_or_else(|| panic!("no {name} line in:\n{report}"))
                .to_owned()
        };
        assert_eq!(field("task "), task_line);
        assert!(
            field("family ").starts_with("Sapiens2 (official weights under the Sapiens2 License"),
            "{report}"
        );
        assert!(
            field("run ").starts_with(&format!("accepted: `run {flag} ")),
            "{report}"
        );
    }
    let output = sapiens(
        dir.path(),
        &["models", "inspect", path_arg(&cli::model("seg"))],
    );
    assert!(String::from_utf8_lossy(&output.stdout).contains("family    Sapiens (first family"));
}
