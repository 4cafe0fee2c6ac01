//! Depth and normal post-processing and the `--dense-dir` file writers against an independent
//! NumPy / OpenCV reference (`tests/reference/dense_reference.py`): bilinear resize against
//! `cv2.resize`, depth normalisation and the inferno colours against `cv2.applyColorMap`, normal
//! renormalisation, and every PNG read back by OpenCV.

mod common;

use std::path::Path;

use common::{max_abs_diff, path_arg};
use sapiens_stream::Error;
use sapiens_stream::tasks::dense::{
    DepthRange, class_mask, draw_depth, draw_normals, mask_class_indices, normalise_depth,
    normalise_normals, parse_mask_classes, resize_planar, write_class_map_png, write_depth_png,
    write_mask_png, write_normals_png,
};
use sapiens_stream::tasks::keypoint_sets::class_set;
use sapiens_stream::testkit::synthetic::XorShift;

/// Rust vs OpenCV resize, relative to the maps' value range (measured: about 2e-7).
const RESIZE_TOLERANCE: f32 = 1e-5;
/// Rust vs NumPy normalisation and renormalisation (a few float32 ulp).
const VALUE_TOLERANCE: f32 = 1e-6;

/// C x H x W maps, each a sum of random low-frequency sinusoids plus an offset, like a model's
/// smooth output (with a little noise, so neighbouring samples differ).
fn smooth_maps(channels: usize, height: usize, width: usize, seed: u64) -> Vec<f32> {
    let mut rng = XorShift(seed);
    let mut maps = Vec::with_capacity(channels * height * width);
    for _ in 0..channels {
        let offset = rng.range(-2.0, 2.0);
        let waves: Vec<[f32; 4]> = (0..3)
            .map(|_| {
                [
                    rng.range(0.5, 2.0),
                    rng.range(0.5, 4.0) * std::f32::consts::TAU / width as f32,
                    rng.range(0.5, 4.0) * std::f32::consts::TAU / height as f32,
                    rng.range(0.0, std::f32::consts::TAU),
                ]
            })
            .collect();
        for y in 0..height {
            for x in 0..width {
                let wave: f32 = waves
                    .iter()
                    .map(|&[amp, fx, fy, phase]| {
                        amp * (fx * x as f32 + phase).sin() * (fy * y as f32).cos()
                    })
                    .sum();
                maps.push(offset + wave + rng.range(-0.05, 0.05));
            }
        }
    }
    maps
}

/// A class map with a person-like ellipse of body-part classes 1..=27 on background 0, and a
/// foreground column at the right edge (so runs of foreground pixels end at the row end).
fn person_classes(width: usize, height: usize) -> Vec<u8> {
    let (cx, cy) = (width as f32 * 0.45, height as f32 * 0.55);
    let (rx, ry) = (width as f32 * 0.2, height as f32 * 0.4);
    let mut classes = Vec::with_capacity(width * height);
    for y in 0..height {
        for x in 0..width {
            let (dx, dy) = ((x as f32 - cx) / rx, (y as f32 - cy) / ry);
            let inside = dx * dx + dy * dy <= 1.0 || x == width - 1;
            classes.push(if inside {
                1 + ((x / 7 + y / 5) % 27) as u8
            } else {
                0
            });
        }
    }
    classes
}

fn value_span(values: &[f32]) -> f32 {
    let (lo, hi) = values
        .iter()
        .fold((f32::MAX, f32::MIN), |(lo, hi), &v| (lo.min(v), hi.max(v)));
    hi - lo
}

fn check_resize(
    channels: usize,
    (in_h, in_w): (usize, usize),
    (out_w, out_h): (usize, usize),
    seed: u64,
) {
    let maps = smooth_maps(channels, in_h, in_w, seed);
    let mut ours = vec![0.0f32; channels * out_h * out_w];
    resize_planar(&maps, channels, in_h, in_w, out_w, out_h, &mut ours);

    let dir = tempfile::tempdir().unwrap();
    let (maps_path, out_path) = (dir.path().join("maps.npy"), dir.path().join("resized.npy"));
    common::write_npy_f32(
        &maps_path,
        &[channels as u64, in_h as u64, in_w as u64],
        &maps,
    );
    let (w, h) = (out_w.to_string(), out_h.to_string());
    common::run_reference(
        "dense_reference.py",
        &["resize", path_arg(&maps_path), &w, &h, path_arg(&out_path)],
    );
    let (shape, reference) = common::read_npy_f32(&out_path);
    assert_eq!(shape, [channels as u64, out_h as u64, out_w as u64]);

    let tolerance = RESIZE_TOLERANCE * value_span(&maps);
    let diff = max_abs_diff(&ours, &reference);
    assert!(
        diff <= tolerance,
        "{channels} x {in_h} x {in_w} -> {out_w} x {out_h}: max diff {diff} > {tolerance}"
    );
}

#[test]
fn resize_upsample_matches_opencv() {
    check_resize(3, (64, 48), (200, 150), 1);
}

#[test]
fn resize_downsample_matches_opencv() {
    // Not an integer factor: OpenCV switches to area averaging for exact 2x.
    check_resize(3, (64, 48), (37, 29), 2);
}

#[test]
fn resize_model_depth_to_1080p_matches_opencv() {
    check_resize(1, (1024, 768), (1920, 1080), 3);
}

#[test]
fn resize_single_sample_fills_the_output() {
    let mut out = vec![0.0f32; 2 * 4 * 5];
    resize_planar(&[1.5, -2.0], 2, 1, 1, 5, 4, &mut out);
    assert!(out[..20].iter().all(|&v| v == 1.5) && out[20..].iter().all(|&v| v == -2.0));
}

/// The reference's normalised depth, inferno colours (RGB per pixel) and range.
struct DepthReference {
    normalised: Vec<f32>,
    colours: Vec<u8>,
    range: DepthRange,
}

fn depth_reference(
    depth: &[f32],
    classes: Option<&[u8]>,
    width: usize,
    height: usize,
) -> DepthReference {
    let dir = tempfile::tempdir().unwrap();
    let depth_path = dir.path().join("depth.npy");
    let classes_path = dir.path().join("classes.npy");
    let normalised_path = dir.path().join("normalised.npy");
    let colours_path = dir.path().join("colours.npy");
    let shape = [height as u64, width as u64];
    common::write_npy_f32(&depth_path, &shape, depth);
    if let Some(classes) = classes {
        common::write_npy_u8(&classes_path, &shape, classes);
    }
    let classes_arg = if classes.is_some() {
        path_arg(&classes_path)
    } else {
        "-"
    };
    let printed = common::run_reference(
        "dense_reference.py",
        &[
            "depth",
            path_arg(&depth_path),
            classes_arg,
            path_arg(&normalised_path),
            path_arg(&colours_path),
        ],
    );
    let value = |key: &str| -> f32 {
        let field = printed
            .split_whitespace()
            .find_map(|f| f.strip_prefix(key))
            .unwrap();
        field
            .trim_start_matches("np.float32(")
            .trim_end_matches(')')
            .parse()
            .unwrap()
    };
    let range = DepthRange {
        min: value("min="),
        max: value("max="),
    };
    let (_, normalised) = common::read_npy_f32(&normalised_path);
    let (colour_shape, colours) = common::read_npy_u8(&colours_path);
    assert_eq!(colour_shape, [height as u64, width as u64, 3]);
    DepthReference {
        normalised,
        colours,
        range,
    }
}

/// Model depth (1 x 64 x 48) upsampled to an odd frame size, as the pipeline does.
fn frame_depth(width: usize, height: usize, seed: u64) -> Vec<f32> {
    let model = smooth_maps(1, 64, 48, seed);
    let mut depth = vec![0.0f32; width * height];
    resize_planar(&model, 1, 64, 48, width, height, &mut depth);
    depth
}

/// A frame of random opaque-ish pixels with `padding` bytes after each row.
fn random_frame(width: usize, height: usize, padding: usize, seed: u64) -> (Vec<u8>, usize) {
    let stride = width * 4 + padding;
    let mut rng = XorShift(seed);
    (
        (0..stride * height).map(|_| rng.next_u64() as u8).collect(),
        stride,
    )
}

/// Foreground pixels carry a colour within the tolerance of `expected(i)` = (colour, tolerance);
/// all other bytes (background pixels, alpha, row padding) are unchanged.
fn check_painted(
    frame: &[u8],
    original: &[u8],
    (width, height, stride): (usize, usize, usize),
    foreground: Option<&[u8]>,
    expected: impl Fn(usize) -> ([u8; 3], u8),
) {
    for y in 0..height {
        for x in 0..width {
            let i = y * width + x;
            let at = y * stride + x * 4;
            let painted = foreground.is_none_or(|c| c[i] > 0);
            if painted {
                let (want, tolerance) = expected(i);
                let got = &frame[at..at + 3];
                let close = got
                    .iter()
                    .zip(want)
                    .all(|(&g, w)| g.abs_diff(w) <= tolerance);
                assert!(
                    close,
                    "pixel ({x}, {y}): {got:?}, expected {want:?} within {tolerance}"
                );
                assert_eq!(frame[at + 3], original[at + 3], "alpha at ({x}, {y})");
            } else {
                assert_eq!(
                    frame[at..at + 4],
                    original[at..at + 4],
                    "background pixel ({x}, {y})"
                );
            }
        }
        let padding = y * stride + width * 4..(y + 1) * stride;
        assert_eq!(frame[padding.clone()], original[padding]);
    }
}

fn check_depth(foreground: bool) {
    let (width, height) = (203, 117);
    let depth = frame_depth(width, height, 4);
    let classes = person_classes(width, height);
    let classes = foreground.then_some(classes.as_slice());

    let mut normalised = vec![0.0f32; width * height];
    let range = normalise_depth(&depth, classes, &mut normalised).unwrap();
    let reference = depth_reference(&depth, classes, width, height);
    assert_eq!(range, reference.range);
    let diff = max_abs_diff(&normalised, &reference.normalised);
    assert!(
        diff <= VALUE_TOLERANCE,
        "normalised depth differs by {diff}"
    );

    let (mut frame, stride) = random_frame(width, height, 12, 5);
    let original = frame.clone();
    draw_depth(&mut frame, width, height, stride, &normalised, classes);
    // colorous samples matplotlib's inferno table through a B-spline, OpenCV takes the table
    // itself: 1 level apart at most. Where (1 - n) * 255 is within float rounding of an integer,
    // the level itself may differ by one, and adjacent inferno levels differ by up to 5.
    let colour = |i: usize| {
        let level = (1.0 - reference.normalised[i]) * 255.0;
        let on_boundary = (level - level.round()).abs() < 1e-3;
        let rgb = [0, 1, 2].map(|c| reference.colours[i * 3 + c]);
        (rgb, if on_boundary { 5 } else { 1 })
    };
    check_painted(&frame, &original, (width, height, stride), classes, colour);
}

#[test]
fn depth_over_the_foreground_matches_numpy_and_opencv_colours() {
    check_depth(true);
}

#[test]
fn depth_over_the_whole_frame_matches_numpy_and_opencv_colours() {
    check_depth(false);
}

#[test]
fn nearest_depth_is_brightest() {
    let depth = [1.0f32, 2.0, 3.0, 10.0];
    let classes = [1u8, 1, 1, 0];
    let mut normalised = [0.0f32; 4];
    let range = normalise_depth(&depth, Some(&classes), &mut normalised).unwrap();
    assert_eq!(range, DepthRange { min: 1.0, max: 3.0 });
    assert_eq!(normalised, [0.0, 0.5, 1.0, 0.0]);
    let mut frame = [7u8; 16];
    draw_depth(&mut frame, 4, 1, 16, &normalised, Some(&classes));
    let brightness = |px: usize| {
        frame[px * 4..px * 4 + 3]
            .iter()
            .map(|&c| u32::from(c))
            .sum::<u32>()
    };
    assert!(brightness(0) > brightness(1) && brightness(1) > brightness(2));
    assert_eq!(frame[12..], [7; 4]);
}

/// Model normals (3 x 32 x 24) upsampled to the frame; one frame pixel set to the zero vector.
fn frame_normals(width: usize, height: usize) -> Vec<f32> {
    let model = smooth_maps(3, 32, 24, 6);
    let mut normals = vec![0.0f32; 3 * width * height];
    resize_planar(&model, 3, 32, 24, width, height, &mut normals);
    for axis in 0..3 {
        normals[axis * width * height] = 0.0;
    }
    normals
}

#[test]
fn normals_renormalise_like_numpy_and_draw_as_rgb() {
    let (width, height) = (151, 89);
    let plane = width * height;
    let raw = frame_normals(width, height);
    let mut unit = raw.clone();
    normalise_normals(&mut unit);

    let dir = tempfile::tempdir().unwrap();
    let (raw_path, unit_path, levels_path) = (
        dir.path().join("raw.npy"),
        dir.path().join("unit.npy"),
        dir.path().join("levels.npy"),
    );
    common::write_npy_f32(&raw_path, &[3, height as u64, width as u64], &raw);
    common::run_reference(
        "dense_reference.py",
        &[
            "normals",
            path_arg(&raw_path),
            path_arg(&unit_path),
            path_arg(&levels_path),
        ],
    );
    let (_, reference) = common::read_npy_f32(&unit_path);
    let diff = max_abs_diff(&unit, &reference);
    assert!(diff <= VALUE_TOLERANCE, "unit normals differ by {diff}");

    let mut unit_length = 0;
    for i in 0..plane {
        let raw_norm = (0..3)
            .map(|a| raw[a * plane + i].powi(2))
            .sum::<f32>()
            .sqrt();
        let norm = (0..3)
            .map(|a| unit[a * plane + i].powi(2))
            .sum::<f32>()
            .sqrt();
        if raw_norm == 0.0 {
            assert_eq!(norm, 0.0, "the zero vector stays zero");
        } else if raw_norm > 0.1 {
            unit_length += 1;
            assert!((norm - 1.0).abs() <= 1e-4, "pixel {i}: |n| = {norm}");
        }
    }
    assert!(
        unit_length > plane * 9 / 10,
        "too few well-defined normals: {unit_length}"
    );

    let (_, levels) = common::read_npy_u8(&levels_path);
    let classes = person_classes(width, height);
    let (mut frame, stride) = random_frame(width, height, 4, 7);
    let original = frame.clone();
    draw_normals(&mut frame, width, height, stride, &unit, Some(&classes));
    // Rounding (n + 1) / 2 * 255 in float32 and float64 may differ at a half level.
    let colour = |i: usize| ([0, 1, 2].map(|c| levels[i * 3 + c]), 1);
    check_painted(
        &frame,
        &original,
        (width, height, stride),
        Some(&classes),
        colour,
    );
}

fn read_png_u8(png: &Path) -> (Vec<u64>, Vec<u8>) {
    let out = png.with_extension("npy");
    common::run_reference(
        "dense_reference.py",
        &["read-png", path_arg(png), path_arg(&out)],
    );
    common::read_npy_u8(&out)
}

#[test]
fn png_files_read_back_with_opencv() {
    let (width, height) = (203, 117);
    let plane = width * height;
    let dir = tempfile::tempdir().unwrap();
    let classes = person_classes(width, height);

    let class_png = dir.path().join("classes.png");
    write_class_map_png(&class_png, &classes, width, height).unwrap();
    let (shape, read) = read_png_u8(&class_png);
    assert_eq!(shape, [height as u64, width as u64]);
    assert_eq!(read, classes, "class map");

    let depth = frame_depth(width, height, 8);
    let depth_png = dir.path().join("depth.png");
    let encoding = write_depth_png(&depth_png, &depth, width, height).unwrap();
    let recovered_path = dir.path().join("recovered.npy");
    let (scale, offset) = (encoding.scale.to_string(), encoding.offset.to_string());
    common::run_reference(
        "dense_reference.py",
        &[
            "depth-png",
            path_arg(&depth_png),
            &scale,
            &offset,
            path_arg(&recovered_path),
        ],
    );
    let (shape, recovered) = common::read_npy_f32(&recovered_path);
    assert_eq!(shape, [height as u64, width as u64]);
    assert!(encoding.scale > 0.0);
    // Half a level, plus float32 rounding of depth, offset and scale.
    let tolerance =
        encoding.scale * 0.5 + 4.0 * f32::EPSILON * value_span(&depth).max(encoding.offset.abs());
    let diff = max_abs_diff(&recovered, &depth);
    assert!(
        diff <= tolerance,
        "depth recovered within {diff} > {tolerance}"
    );

    let mut normals = frame_normals(width, height);
    normalise_normals(&mut normals);
    let normals_png = dir.path().join("normals.png");
    write_normals_png(&normals_png, &normals, width, height).unwrap();
    let (shape, read) = read_png_u8(&normals_png);
    assert_eq!(shape, [height as u64, width as u64, 3]);
    for (i, px) in read.chunks_exact(3).enumerate() {
        for (axis, &level) in px.iter().enumerate() {
            let want = (normals[axis * plane + i] + 1.0) / 2.0 * 255.0;
            assert!(
                (f32::from(level) - want).abs() <= 1.0,
                "pixel {i} axis {axis}: {level} vs {want}"
            );
        }
    }

    let names = parse_mask_classes("Upper_Clothing,lower_clothing,Torso").unwrap();
    let selected = mask_class_indices(&names, class_set(28).unwrap()).unwrap();
    let mut mask = vec![0u8; plane];
    class_mask(&classes, &selected, &mut mask);
    let (classes_path, union_path) = (dir.path().join("classes.npy"), dir.path().join("union.npy"));
    common::write_npy_u8(&classes_path, &[height as u64, width as u64], &classes);
    common::run_reference(
        "dense_reference.py",
        &[
            "mask",
            path_arg(&classes_path),
            "22,12,21",
            path_arg(&union_path),
        ],
    );
    let (_, union) = common::read_npy_u8(&union_path);
    assert_eq!(mask, union, "mask of Upper_Clothing, Lower_Clothing, Torso");
    assert!(mask.contains(&255) && mask.contains(&0));
    let mask_png = dir.path().join("mask.png");
    write_mask_png(&mask_png, &mask, width, height).unwrap();
    let (shape, read) = read_png_u8(&mask_png);
    assert_eq!(shape, [height as u64, width as u64]);
    assert_eq!(read, mask);
}

#[test]
fn flat_depth_png_is_zero_with_zero_scale() {
    let dir = tempfile::tempdir().unwrap();
    let png = dir.path().join("flat.png");
    let encoding = write_depth_png(&png, &[3.25; 6], 3, 2).unwrap();
    assert_eq!((encoding.scale, encoding.offset), (0.0, 3.25));
    let json = serde_json::to_value(encoding).unwrap();
    assert_eq!(json, serde_json::json!({"scale": 0.0, "offset": 3.25}));
}

#[test]
fn writers_report_bad_paths_and_sizes() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-such-dir/classes.png");
    let err = write_class_map_png(&missing, &[0; 6], 3, 2).unwrap_err();
    assert!(
        matches!(&err, Error::Output { path, .. } if *path == missing),
        "{err}"
    );

    let png = dir.path().join("normals.png");
    let err = write_normals_png(&png, &[0.0; 17], 3, 2).unwrap_err();
    assert!(
        err.to_string()
            .contains("17 values do not make a 3 x 2 x 3 map"),
        "{err}"
    );
    assert!(!png.exists());
    let err = write_depth_png(&png, &[], 0, 0).unwrap_err();
    assert!(
        err.to_string().contains("cannot write a 0 x 0 PNG"),
        "{err}"
    );
}
