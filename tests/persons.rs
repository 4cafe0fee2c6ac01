//! Top-down pose with several persons, end to end through the binary: detector boxes through the
//! letterbox and back, boxes from a file with the crop checked against OpenCV, and batching.

mod common;

use std::path::Path;

use common::cli::{assert_success, model, read_results, sapiens, write_png};
use serde_json::{Value, json};

const MEAN: [f32; 3] = [123.675, 116.28, 103.53];
const STD: [f32; 3] = [58.395, 57.12, 57.375];

fn bbox(person: &Value) -> Vec<f64> {
    person["bbox"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect()
}

fn keypoints(person: &Value) -> Vec<[f64; 3]> {
    person["keypoints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| {
            let k: Vec<f64> = k
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64().unwrap())
                .collect();
            [k[0], k[1], k[2]]
        })
        .collect()
}

/// Runs the 17-keypoint pose model on `frame.png` in `dir`, persons from `boxes.jsonl` there.
fn pose_with_boxes_file(dir: &Path, flags: &[&str]) {
    let pose = model("pose17");
    let mut args = vec![
        "run",
        "--input",
        "frame.png",
        "--boxes",
        "boxes.jsonl",
        "--pose-model",
        pose.to_str().unwrap(),
    ];
    args.extend_from_slice(flags);
    assert_success(&sapiens(dir, &args));
}

/// Constant detectors (two persons, a car, a faint person, in 640x640 input pixels) on a 1280x720
/// frame: scale 0.5; RTMDet pads bottom/right, YOLO centres the image (140 px above).
#[test]
fn detector_persons_come_back_in_frame_pixels() {
    let dir = tempfile::tempdir().unwrap();
    let boxes = json!([
        [200.0, 150.0, 320.0, 360.0, 0.9, 0],
        [330.0, 200.0, 440.0, 400.0, 0.75, 0],
        [250.0, 200.0, 300.0, 300.0, 0.95, 2],
        [400.0, 150.0, 450.0, 220.0, 0.1, 0]
    ]);
    let spec = json!([
        {"name": "rtmdet", "layout": "rtmdet", "input": [640, 640], "boxes": boxes},
        {"name": "yolo", "layout": "yolo", "input": [640, 640], "boxes": boxes}
    ]);
    common::run_reference(
        "make_detectors.py",
        &[dir.path().to_str().unwrap(), &spec.to_string()],
    );
    write_png(&dir.path().join("frame.png"), 1280, 720, 3);
    for (layout, top) in [("rtmdet", 0.0), ("yolo", 140.0)] {
        let results = format!("{layout}.jsonl");
        let detector = dir.path().join(format!("{layout}.onnx"));
        let run = sapiens(
            dir.path(),
            &[
                "run",
                "--input",
                "frame.png",
                "--detector",
                detector.to_str().unwrap(),
                "--pose-model",
                model("pose17").to_str().unwrap(),
                "--results",
                &results,
            ],
        );
        assert_success(&run);
        let line = &read_results(&dir.path().join(&results))[0];
        let persons = line["persons"].as_array().unwrap();
        assert_eq!(persons.len(), 2, "{layout}: {persons:?}");
        let expected = [
            [400.0, 300.0 - 2.0 * top, 640.0, 720.0 - 2.0 * top],
            [660.0, 400.0 - 2.0 * top, 880.0, 800.0 - 2.0 * top],
        ];
        for ((person, want), score) in persons.iter().zip(expected).zip([0.9, 0.75]) {
            let got = bbox(person);
            let want: [f64; 4] = [
                want[0],
                want[1].clamp(0.0, 720.0),
                want[2],
                want[3].clamp(0.0, 720.0),
            ];
            for (g, w) in got.iter().zip(want) {
                assert!(
                    (g - w).abs() <= 1.0,
                    "{layout}: box {got:?}, expected {want:?}"
                );
            }
            assert!((person["score"].as_f64().unwrap() - score).abs() < 1e-6);
            assert_eq!(keypoints(person).len(), 17);
        }
    }
}

/// The dumped pose input for an off-centre box past the frame edge equals OpenCV's warpAffine with
/// the UDP matrix, and the decoded keypoints fall inside that crop.
#[test]
fn boxes_file_crop_matches_opencv() {
    let dir = tempfile::tempdir().unwrap();
    write_png(&dir.path().join("frame.png"), 320, 240, 1);
    let (x1, y1, x2, y2) = (-40.0, 30.0, 150.0, 260.0);
    std::fs::write(
        dir.path().join("boxes.jsonl"),
        format!("{{\"frame\": 0, \"boxes\": [[{x1}, {y1}, {x2}, {y2}, 0.8]]}}\n"),
    )
    .unwrap();
    pose_with_boxes_file(dir.path(), &["--results", "r.jsonl", "--dump", "dump"]);

    let frame = image::open(dir.path().join("dump/frame_000000.png"))
        .unwrap()
        .to_rgb8();
    let frame_npy = dir.path().join("frame.npy");
    common::write_npy_u8(&frame_npy, &[240, 320, 3], frame.as_raw());
    let reference = dir.path().join("crop.npy");
    let coords = [x1, y1, x2, y2].map(|v: f64| v.to_string());
    let mut args = vec!["crop", frame_npy.to_str().unwrap()];
    args.extend(coords.iter().map(String::as_str));
    args.extend(["768", "1024", reference.to_str().unwrap()]);
    common::run_reference("preprocess_reference.py", &args);
    let (_, expected) = common::read_npy_f32(&reference);
    let (shape, input) = common::read_npy_f32(&dir.path().join("dump/frame_000000_pose_input.npy"));
    assert_eq!(shape, [1, 3, 1024, 768]);
    let plane = 1024 * 768;
    let (mut max, mut sum) = (0f32, 0f64);
    for (i, (&ours, &theirs)) in input.iter().zip(&expected).enumerate() {
        let diff = (ours * STD[i / plane] + MEAN[i / plane] - theirs).abs();
        max = max.max(diff);
        sum += f64::from(diff);
    }
    let mean = sum / input.len() as f64;
    assert!(
        max <= 1.0 && mean <= 0.1,
        "crop vs OpenCV: max {max}, mean {mean}"
    );

    let person = &read_results(&dir.path().join("r.jsonl"))[0]["persons"][0];
    assert_eq!(bbox(person), [x1, y1, x2, y2]);
    assert!((person["score"].as_f64().unwrap() - 0.8).abs() < 1e-6);
    // The crop: centre of the box, size * 1.25 with the aspect fixed to 3:4.
    let (cx, cy) = ((x1 + x2) / 2.0, (y1 + y2) / 2.0);
    let (mut w, mut h) = ((x2 - x1) * 1.25, (y2 - y1) * 1.25);
    if w > 0.75 * h {
        h = w / 0.75
    } else {
        w = 0.75 * h
    }
    for [x, y, score] in keypoints(person).into_iter().filter(|k| k[2] > 0.0) {
        assert!(
            (x - cx).abs() <= w / 2.0 + 1e-3 && (y - cy).abs() <= h / 2.0 + 1e-3,
            "({x}, {y}, {score}) outside the crop"
        );
    }
}

/// 11 persons with --max-batch 4 (calls of 4, 4, 3) give the same 11 results as one at a time.
#[test]
fn batched_persons_equal_one_by_one() {
    let dir = tempfile::tempdir().unwrap();
    write_png(&dir.path().join("frame.png"), 640, 480, 2);
    let boxes: Vec<Value> = (0..11)
        .map(|i| {
            let x = 20.0 + 50.0 * f64::from(i);
            json!([
                x,
                40.0 + 10.0 * f64::from(i),
                x + 60.0,
                300.0 + 5.0 * f64::from(i),
                1.0 - 0.05 * f64::from(i)
            ])
        })
        .collect();
    std::fs::write(
        dir.path().join("boxes.jsonl"),
        json!({"frame": 0, "boxes": boxes}).to_string(),
    )
    .unwrap();
    let run_with = |batch: &str| -> Vec<Value> {
        let results = format!("batch{batch}.jsonl");
        pose_with_boxes_file(dir.path(), &["--max-batch", batch, "--results", &results]);
        read_results(&dir.path().join(results))[0]["persons"]
            .as_array()
            .unwrap()
            .clone()
    };
    let (batched, single) = (run_with("4"), run_with("1"));
    assert_eq!(batched.len(), 11);
    assert_eq!(single.len(), 11);
    for (i, (a, b)) in batched.iter().zip(&single).enumerate() {
        assert_eq!(bbox(a), bbox(b), "person {i} order");
        for (ka, kb) in keypoints(a).iter().zip(keypoints(b)) {
            assert!(
                (ka[0] - kb[0]).abs() < 1e-2
                    && (ka[1] - kb[1]).abs() < 1e-2
                    && (ka[2] - kb[2]).abs() < 1e-4,
                "person {i}: {ka:?} vs {kb:?}"
            );
        }
    }
    let scores: Vec<f64> = batched
        .iter()
        .map(|p| p["score"].as_f64().unwrap())
        .collect();
    assert!(
        scores.windows(2).all(|w| w[0] >= w[1]),
        "persons in score order: {scores:?}"
    );
}
