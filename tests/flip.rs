//! The pose flip test: the merge against a NumPy reference with mmpose semantics
//! (`tests/reference/flip_reference.py`), on synthetic heatmaps of a perfectly mirror-equivariant
//! model, and end to end with the tiny pose model against ONNX Runtime's Python API.

mod common;

use sapiens_stream::engine::Engine;
use sapiens_stream::engine::onnx::{OnnxEngine, OnnxOptions};
use sapiens_stream::engine::runtime::environment;
use sapiens_stream::tasks::flip::{merge_flipped_heatmaps, mirror_batch};
use sapiens_stream::tasks::keypoint_sets::keypoint_set;
use sapiens_stream::tasks::pose::decode::{HeatmapPeak, decode_dark_udp};
use sapiens_stream::tasks::{INPUT_HEIGHT, INPUT_LEN, INPUT_WIDTH};

use common::{max_abs_diff, path_arg};
use sapiens_stream::testkit::synthetic::{XorShift, gaussian_map};

const HEATMAP_HEIGHT: usize = 256;
const HEATMAP_WIDTH: usize = 192;

fn coco17_flip_indices() -> &'static [usize] {
    &keypoint_set(17).unwrap().flip_indices
}

fn indices_arg(indices: &[usize]) -> String {
    indices
        .iter()
        .map(|k| k.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

#[test]
fn mirror_batch_reverses_every_row() {
    let (items, channels, height, width) = (2, 3, 4, 5);
    let input: Vec<f32> = (0..items * channels * height * width)
        .map(|v| v as f32)
        .collect();
    let mut mirrored = vec![0.0f32; input.len()];
    mirror_batch(&input, items, channels, height, width, &mut mirrored);
    for (row_in, row_out) in input.chunks(width).zip(mirrored.chunks(width)) {
        let reversed: Vec<f32> = row_in.iter().rev().copied().collect();
        assert_eq!(row_out, reversed);
    }
}

#[test]
fn merge_matches_numpy_with_mmpose_semantics() {
    let (items, height, width) = (2, 16, 12);
    let flip_indices = coco17_flip_indices();
    let len = items * flip_indices.len() * height * width;
    let mut rng = XorShift(1);
    let plain: Vec<f32> = (0..len).map(|_| rng.range(-0.2, 1.0)).collect();
    let mirrored: Vec<f32> = (0..len).map(|_| rng.range(-0.2, 1.0)).collect();
    let mut merged = plain.clone();
    merge_flipped_heatmaps(&mut merged, &mirrored, items, flip_indices, height, width);

    let dir = tempfile::tempdir().unwrap();
    let [plain_path, mirrored_path, out_path] =
        ["plain.npy", "mirrored.npy", "merged.npy"].map(|name| dir.path().join(name));
    let shape = [items, flip_indices.len(), height, width].map(|d| d as u64);
    common::write_npy_f32(&plain_path, &shape, &plain);
    common::write_npy_f32(&mirrored_path, &shape, &mirrored);
    common::run_reference(
        "flip_reference.py",
        &[
            "merge",
            path_arg(&plain_path),
            path_arg(&mirrored_path),
            &indices_arg(flip_indices),
            path_arg(&out_path),
        ],
    );
    let (out_shape, reference) = common::read_npy_f32(&out_path);
    assert_eq!(out_shape, shape);
    let diff = max_abs_diff(&merged, &reference);
    assert!(diff <= 1e-6, "merged heatmaps differ from NumPy by {diff}");
}

/// Heatmaps with one Gaussian peak per keypoint (sigma 2, as the UDP codec's targets).
fn gaussian_heatmaps(centres: &[(f32, f32)]) -> Vec<f32> {
    centres
        .iter()
        .flat_map(|&centre| gaussian_map(HEATMAP_WIDTH, HEATMAP_HEIGHT, centre, 2.0, 0.9))
        .collect()
}

/// What a perfectly mirror-equivariant model outputs for the mirrored crop: channel k shows
/// keypoint `flip_indices[k]` of the plain crop, mirrored.
fn equivariant_mirror(plain: &[f32], flip_indices: &[usize]) -> Vec<f32> {
    let plane = HEATMAP_HEIGHT * HEATMAP_WIDTH;
    let mut mirrored = Vec::with_capacity(plain.len());
    for &source in flip_indices {
        for row in plain[source * plane..][..plane].chunks(HEATMAP_WIDTH) {
            mirrored.extend(row.iter().rev());
        }
    }
    mirrored
}

fn decode(heatmaps: &[f32], channels: usize) -> Vec<HeatmapPeak> {
    let mut peaks = Vec::new();
    decode_dark_udp(
        heatmaps,
        channels,
        HEATMAP_HEIGHT,
        HEATMAP_WIDTH,
        &mut peaks,
    );
    peaks
}

#[test]
fn equivariant_model_merges_to_its_plain_heatmaps_with_left_and_right_swapped() {
    let set = keypoint_set(17).unwrap();
    let flip_indices = coco17_flip_indices();
    let mut rng = XorShift(2);
    let centres: Vec<(f32, f32)> = (0..17)
        .map(|_| (rng.range(20.0, 172.0), rng.range(20.0, 236.0)))
        .collect();
    let plain = gaussian_heatmaps(&centres);
    let mirrored = equivariant_mirror(&plain, flip_indices);

    let plain_peaks = decode(&plain, 17);
    let mirrored_peaks = decode(&mirrored, 17);
    let left_wrist = set.names.iter().position(|n| n == "left_wrist").unwrap();
    let right_wrist = set.names.iter().position(|n| n == "right_wrist").unwrap();
    assert_eq!(flip_indices[left_wrist], right_wrist);
    for (k, peak) in mirrored_peaks.iter().enumerate() {
        let source = plain_peaks[flip_indices[k]];
        let mirrored_x = (HEATMAP_WIDTH - 1) as f32 - source.x;
        assert!(
            (peak.x - mirrored_x).abs() < 1e-3 && (peak.y - source.y).abs() < 1e-3,
            "{} in the mirror at ({}, {}), expected ({mirrored_x}, {})",
            set.names[k],
            peak.x,
            peak.y,
            source.y
        );
    }

    let mut merged = plain.clone();
    merge_flipped_heatmaps(
        &mut merged,
        &mirrored,
        1,
        flip_indices,
        HEATMAP_HEIGHT,
        HEATMAP_WIDTH,
    );
    let diff = max_abs_diff(&merged, &plain);
    assert!(diff <= 1e-6, "merged differs from plain by {diff}");
    for (merged_peak, plain_peak) in decode(&merged, 17).iter().zip(&plain_peaks) {
        assert!(
            (merged_peak.x - plain_peak.x).abs() < 1e-4
                && (merged_peak.y - plain_peak.y).abs() < 1e-4
        );
    }
}

/// Smooth crops in the model's normalised input range, `items` of them.
fn smooth_crops(items: usize, seed: u64) -> Vec<f32> {
    let mut rng = XorShift(seed);
    let mut input = Vec::with_capacity(items * INPUT_LEN);
    for _ in 0..items * 3 {
        let (fx, fy, phase) = (
            rng.range(0.005, 0.03),
            rng.range(0.005, 0.03),
            rng.range(0.0, 6.3),
        );
        for y in 0..INPUT_HEIGHT {
            for x in 0..INPUT_WIDTH {
                input.push(
                    1.5 * (fx * x as f32 + phase).sin() * (fy * y as f32).cos()
                        + rng.range(-0.1, 0.1),
                );
            }
        }
    }
    input
}

#[test]
fn tiny_pose_model_flip_test_matches_onnxruntime_python() {
    let model = common::repo_root().join("engines/models/sapiens_tiny_pose17.onnx");
    assert!(
        model.exists(),
        "{} missing: run scripts/setup.sh",
        model.display()
    );
    let mut engine =
        OnnxEngine::load(&model, environment(None).unwrap(), &OnnxOptions::default()).unwrap();
    let items = 2;
    let flip_indices = coco17_flip_indices();

    // One batch: the plain crops, then their mirrors.
    let crops = smooth_crops(items, 3);
    let mut batch = crops.clone();
    batch.resize(2 * crops.len(), 0.0);
    mirror_batch(
        &crops,
        items,
        3,
        INPUT_HEIGHT,
        INPUT_WIDTH,
        &mut batch[crops.len()..],
    );
    let mut heatmaps = Vec::new();
    engine.run(&batch, 2 * items, &mut heatmaps).unwrap();
    let half = heatmaps.len() / 2;
    let (plain, mirrored) = heatmaps.split_at_mut(half);
    let unmerged = plain.to_vec();
    merge_flipped_heatmaps(
        plain,
        mirrored,
        items,
        flip_indices,
        HEATMAP_HEIGHT,
        HEATMAP_WIDTH,
    );

    let dir = tempfile::tempdir().unwrap();
    let (input_path, out_path) = (dir.path().join("crops.npy"), dir.path().join("merged.npy"));
    let shape = [items, 3, INPUT_HEIGHT, INPUT_WIDTH].map(|d| d as u64);
    common::write_npy_f32(&input_path, &shape, &crops);
    common::run_reference(
        "flip_reference.py",
        &[
            "model",
            path_arg(&model),
            path_arg(&input_path),
            &indices_arg(flip_indices),
            path_arg(&out_path),
        ],
    );
    let (out_shape, reference) = common::read_npy_f32(&out_path);
    assert_eq!(
        out_shape,
        [items, 17, HEATMAP_HEIGHT, HEATMAP_WIDTH].map(|d| d as u64)
    );

    let magnitude = reference.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    let diff = max_abs_diff(plain, &reference);
    // Batched and one-at-a-time runs may sum in a different order.
    assert!(
        diff <= 1e-4 * magnitude,
        "merged heatmaps differ by {diff} (magnitude {magnitude})"
    );
    // Random weights are not mirror-equivariant, so the merge must have changed the heatmaps.
    let change = max_abs_diff(plain, &unmerged);
    assert!(
        change > 0.05 * magnitude,
        "the merge changed the heatmaps by only {change}"
    );
}
