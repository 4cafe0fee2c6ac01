//! Tracking and smoothing against references no one here wrote: the One Euro filter of its
//! authors (`oneeurofilter`), and on synthetic sequences with known identities the ByteTrack of
//! the `trackers` package, both scored by motmetrics (tests/reference/tracking_reference.py).

mod common;

use common::{path_arg, run_reference};
use sapiens_stream::tasks::pose::Person;
use sapiens_stream::tasks::track::one_euro::{OneEuroFilter, OneEuroParams};
use sapiens_stream::tasks::track::{Tracker, TrackerOptions};
use serde_json::{Value, json};

/// Uniform noise in [-1, 1) from a fixed seed (xorshift), so runs repeat.
fn noise(seed: &mut u64) -> f64 {
    *seed ^= *seed << 13;
    *seed ^= *seed >> 7;
    *seed ^= *seed << 17;
    (*seed >> 11) as f64 / (1u64 << 52) as f64 - 1.0
}

#[test]
fn one_euro_equals_the_authors_implementation_on_irregular_steps() {
    let dir = tempfile::tempdir().unwrap();
    let mut seed = 0x2545_F491_4F6C_DD1D;
    // Irregular time steps (10 to 50 ms), a repeated timestamp, a moving and jittering value.
    let mut time = 1.0;
    let mut samples = Vec::new();
    for i in 0..400 {
        time += if i == 200 {
            0.0
        } else {
            0.03 + 0.02 * noise(&mut seed)
        };
        let value =
            50.0 * (time * 1.7).sin() + 3.0 * noise(&mut seed) + if i > 300 { 40.0 } else { 0.0 };
        samples.push([time, value]);
    }
    for params in [[1.0, 0.007, 1.0], [0.3, 2.5, 0.7], [4.0, 0.0, 2.0]] {
        let spec = dir.path().join("samples.json");
        let body = json!({"params": params, "rate": 30.0, "samples": samples});
        std::fs::write(&spec, body.to_string()).unwrap();
        let expected: Vec<f64> = serde_json::from_str(&run_reference(
            "tracking_reference.py",
            &["one-euro", path_arg(&spec)],
        ))
        .unwrap();
        let mut filter = OneEuroFilter::new(
            OneEuroParams::checked(params[0], params[1], params[2]).unwrap(),
            30.0,
        );
        for (&[t, x], want) in samples.iter().zip(&expected) {
            let got = filter.filter(x, t);
            assert!(
                (got - want).abs() <= 1e-6,
                "{params:?} at t = {t}: {got} against {want}"
            );
        }
    }
}

/// Runs our tracker over every sequence's detections, at its defaults.
fn track_sequences(sequences: &Value) -> Value {
    let mut out = serde_json::Map::new();
    for (name, sequence) in sequences.as_object().unwrap() {
        let mut tracker = Tracker::new(TrackerOptions::default(), 720);
        let frames: Vec<Value> = sequence["detections"]
            .as_array()
            .unwrap()
            .iter()
            .zip(sequence["keypoints"].as_array().unwrap())
            .enumerate()
            .map(|(k, (detections, keypoints))| {
                let mut persons: Vec<Person> = detections
                    .as_array()
                    .unwrap()
                    .iter()
                    .zip(keypoints.as_array().unwrap())
                    .map(|(d, points)| {
                        let v: Vec<f32> = serde_json::from_value(d.clone()).unwrap();
                        Person {
                            bbox: [v[0], v[1], v[2], v[3]],
                            score: v[4],
                            track_id: None,
                            keypoints: serde_json::from_value(points.clone()).unwrap(),
                            keypoints_raw: None,
                        }
                    })
                    .collect();
                tracker.update(1.0 + k as f64 / 30.0, &mut persons);
                let tracked: Vec<Value> = persons
                    .iter()
                    .filter_map(|p| {
                        p.track_id
                            .map(|id| json!([p.bbox[0], p.bbox[1], p.bbox[2], p.bbox[3], id]))
                    })
                    .collect();
                Value::Array(tracked)
            })
            .collect();
        out.insert(name.clone(), Value::Array(frames));
    }
    Value::Object(out)
}

#[test]
fn tracker_is_at_least_as_good_as_bytetrack_from_the_trackers_package() {
    let dir = tempfile::tempdir().unwrap();
    let sequences_path = dir.path().join("sequences.json");
    run_reference(
        "tracking_reference.py",
        &["sequences", path_arg(&sequences_path)],
    );
    let sequences: Value =
        serde_json::from_str(&std::fs::read_to_string(&sequences_path).unwrap()).unwrap();
    let ours_path = dir.path().join("ours.json");
    std::fs::write(&ours_path, track_sequences(&sequences).to_string()).unwrap();
    let table: Value = serde_json::from_str(&run_reference(
        "tracking_reference.py",
        &["score", path_arg(&sequences_path), path_arg(&ours_path)],
    ))
    .unwrap();
    eprintln!("{table}");
    assert_eq!(table.as_object().unwrap().len(), 4);
    for (name, scores) in table.as_object().unwrap() {
        let (ours, peer) = (&scores["ours"], &scores["peer"]);
        let idf1 = |s: &Value| s["idf1"].as_f64().unwrap();
        let switches = |s: &Value| s["id_switches"].as_u64().unwrap();
        assert!(
            idf1(ours) >= idf1(peer) - 1e-9,
            "{name}: IDF1 {ours} against the peer's {peer}"
        );
        assert!(
            switches(ours) <= switches(peer),
            "{name}: ID switches {ours} against {peer}"
        );
    }
}

/// One keypoint of a tracked person at 720p and 30 fps, through the tracker with smoothing at
/// the defaults: its smoothed and raw values, and the truth.
fn smoothed_keypoint(truth: impl Fn(f64) -> f64, frames: usize, seed: &mut u64) -> Vec<[f64; 3]> {
    let options = TrackerOptions {
        smoothing: Some(OneEuroParams::WEBCAM),
        ..TrackerOptions::default()
    };
    let mut tracker = Tracker::new(options, 720);
    (0..frames)
        .map(|k| {
            let t = k as f64 / 30.0;
            let raw = truth(t) + 4.0 * noise(seed);
            let mut persons = [Person {
                bbox: [500.0, 200.0, 700.0, 650.0],
                score: 0.9,
                track_id: None,
                keypoints: vec![[raw as f32, 300.0, 0.9]],
                keypoints_raw: None,
            }];
            tracker.update(t, &mut persons);
            [f64::from(persons[0].keypoints[0][0]), raw, truth(t)]
        })
        .collect()
}

#[test]
fn smoothing_halves_the_jitter_and_follows_a_quick_move_within_a_few_frames() {
    let mut seed = 0x1234_5678_9ABC_DEF1;
    // A person swaying slowly (15 px at 0.1 Hz), keypoints jittering by up to 4 px.
    let sway = |t: f64| 600.0 + 15.0 * (2.0 * std::f64::consts::PI * 0.1 * t).sin();
    let samples = smoothed_keypoint(sway, 600, &mut seed);
    let rms = |column: usize| {
        let settled = &samples[30..];
        (settled
            .iter()
            .map(|s| (s[column] - s[2]).powi(2))
            .sum::<f64>()
            / settled.len() as f64)
            .sqrt()
    };
    let (smoothed, raw) = (rms(0), rms(1));
    eprintln!("RMS error against the truth: raw {raw:.2} px, smoothed {smoothed:.2} px");
    assert!(
        smoothed <= 0.5 * raw,
        "smoothed {smoothed} against raw {raw}"
    );
    // A 100 px step (a quick move of the hand): within 5 px of the new place after at most
    // 6 frames (0.2 s).
    let step = |t: f64| if t < 2.0 { 600.0 } else { 700.0 };
    let samples = smoothed_keypoint(step, 120, &mut seed);
    let settled = (60..120).find(|&k| {
        samples[k..]
            .iter()
            .all(|s| (s[0] - 700.0).abs() <= 5.0 + 4.0)
    });
    let lag = settled.unwrap() - 60;
    eprintln!("frames after the step until within 5 px (+ the 4 px jitter): {lag}");
    assert!(lag <= 6, "lag {lag} frames");
}

/// Two people walking on a test pattern (boxes from a file at 25 fps): A for all 30 frames,
/// B gone after frame 9.
fn walking_boxes(dir: &std::path::Path) {
    let lines: Vec<String> = (0..30)
        .map(|k| {
            let x = 20.0 + 3.0 * k as f64;
            let mut boxes = vec![json!([x, 40.0, x + 60.0, 200.0, 0.9])];
            if k < 10 {
                boxes.push(json!([
                    400.0 - 2.0 * k as f64,
                    50.0,
                    460.0 - 2.0 * k as f64,
                    210.0,
                    0.8
                ]));
            }
            json!({"frame": k, "boxes": boxes}).to_string()
        })
        .collect();
    std::fs::write(dir.join("boxes.jsonl"), lines.join("\n")).unwrap();
}

#[test]
fn tracked_runs_publish_ids_raw_keypoints_and_track_events() {
    let dir = tempfile::tempdir().unwrap();
    walking_boxes(dir.path());
    let pose = common::cli::model("pose17");
    let run = common::cli::sapiens(
        dir.path(),
        &[
            "run",
            "--input",
            "test://ball?width=640&height=360&fps=25&frames=30",
            "--mode",
            "offline",
            "--pose-model",
            pose.to_str().unwrap(),
            "--boxes",
            "boxes.jsonl",
            "--smooth",
            "one-euro",
            "--track-max-age",
            "0.2",
            "--results",
            "r.jsonl",
            "--output",
            "out.mp4",
        ],
    );
    common::cli::assert_success(&run);
    let lines: Vec<Value> = std::fs::read_to_string(dir.path().join("r.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let schema = |l: &Value| l["schema"].as_str().unwrap().to_owned();
    let results: Vec<&Value> = lines
        .iter()
        .filter(|l| schema(l) == "sapiens-stream/result")
        .collect();
    let events: Vec<&Value> = lines
        .iter()
        .filter(|l| schema(l) == "sapiens-stream/track")
        .collect();
    assert_eq!(results.len(), 30);
    // Each person keeps one ID from its second frame (confirmed after two hits) on; the IDs
    // differ; every person has its raw keypoints beside the smoothed ones.
    let id_at = |frame: usize, x_min: f64| {
        results[frame]["persons"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| (p["bbox"][0].as_f64().unwrap() - x_min).abs() < 1.0)
            .map(|p| p["track_id"].clone())
            .unwrap()
    };
    assert!(id_at(0, 20.0).is_null());
    let (a, b) = (id_at(1, 23.0), id_at(1, 398.0));
    assert!(a.is_u64() && b.is_u64() && a != b, "{a} {b}");
    for k in 1..30 {
        assert_eq!(id_at(k, 20.0 + 3.0 * k as f64), a, "frame {k}");
    }
    for k in 1..10 {
        assert_eq!(id_at(k, 400.0 - 2.0 * k as f64), b, "frame {k}");
    }
    for person in results
        .iter()
        .flat_map(|r| r["persons"].as_array().unwrap())
    {
        let (kp, raw) = (&person["keypoints"], &person["keypoints_raw"]);
        assert_eq!(raw.as_array().map(Vec::len), Some(17), "{person}");
        assert_eq!(kp.as_array().map(Vec::len), Some(17));
    }
    // Events: both confirmed at frame 1 (stream time 0.04 s), B lost once unseen for more
    // than 0.2 s (last seen at frame 9, 0.36 s), with its 10 frames.
    let event = |kind: &str, id: &Value| {
        events
            .iter()
            .find(|e| e["event"] == kind && e["track_id"] == *id)
            .unwrap_or_else(|| panic!("no {kind} event for {id} in {events:?}"))
    };
    assert_eq!(event("confirmed", &a)["first_seen_s"], 0.0);
    let lost = event("lost", &b);
    assert_eq!(lost["frames"], 10);
    assert!((lost["last_seen_s"].as_f64().unwrap() - 0.36).abs() < 1e-6);
    assert_eq!(
        (lost["schema"].clone(), lost["version"].clone()),
        (json!("sapiens-stream/track"), json!(1))
    );
    // The lost event comes before the first frame past the age, after frame 9's result.
    let position = |wanted: &Value| lines.iter().position(|l| l == wanted).unwrap();
    let lost_at = position(lost);
    assert!(lost_at > position(results[9]) && lost_at < position(results[16]));
    // A's track, still held when the input ends, is lost after the last result.
    let end = event("lost", &a);
    assert_eq!(end["frames"], 30);
    assert!(position(end) > position(results[29]));
    assert_eq!(
        common::cli::probe(&dir.path().join("out.mp4"))["frames"],
        30
    );
}

/// The `frames` column of a stage's line in the run report (stderr).
fn report_frames(stderr: &str, stage: &str) -> u64 {
    stderr
        .lines()
        .find_map(|line| {
            let mut fields = line.split_whitespace();
            (fields.next() == Some(stage)).then(|| fields.last().unwrap().parse().unwrap())
        })
        .unwrap_or_else(|| panic!("no `{stage}` line in the report:\n{stderr}"))
}

#[test]
fn tracking_crops_spare_the_detector_and_keep_the_keypoints() {
    // A person of four coloured discs walking; a synthetic detector that boxes the bright pixels
    // and a synthetic pose model that finds each disc wherever the crop puts it (so keypoints do
    // not depend on the crop, as a real model's joints do not).
    let dir = tempfile::tempdir().unwrap();
    run_reference("make_tracking_scene.py", &[path_arg(dir.path()), "30"]);
    let run = |extra: &[&str], results: &str| {
        let mut args = vec![
            "run",
            "--input",
            "frames",
            "--image-fps",
            "25",
            "--detector",
            "blob_yolo.onnx",
            "--pose-model",
            "colour_pose17.onnx",
            "--results",
            results,
        ];
        args.extend_from_slice(extra);
        let output = common::cli::sapiens(dir.path(), &args);
        common::cli::assert_success(&output);
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        let persons: Vec<Value> = std::fs::read_to_string(dir.path().join(results))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap())
            .filter(|l| l["schema"] == "sapiens-stream/result")
            .map(|l| l["persons"].clone())
            .collect();
        (report_frames(&stderr, "detect"), persons)
    };
    let (every_detections, every) = run(&["--track"], "every.jsonl");
    let (sparse_detections, sparse) = run(&["--detect-every", "5"], "five.jsonl");
    assert_eq!(every_detections, 30);
    // Frames 0 and 1 confirm the track, then one frame in five: 6, 11, 16, 21, 26.
    assert_eq!(sparse_detections, 7);
    assert_eq!((every.len(), sparse.len()), (30, 30));
    let mut worst = 0.0_f64;
    for (k, (a, b)) in every.iter().zip(&sparse).enumerate() {
        let one = |persons: &Value| persons.as_array().map(Vec::len) == Some(1);
        assert!(one(a) && one(b), "frame {k}: {a} {b}");
        let (a, b) = (&a[0], &b[0]);
        for (p, q) in a["keypoints"]
            .as_array()
            .unwrap()
            .iter()
            .zip(b["keypoints"].as_array().unwrap())
        {
            let (p, q): ([f64; 3], [f64; 3]) = (
                serde_json::from_value(p.clone()).unwrap(),
                serde_json::from_value(q.clone()).unwrap(),
            );
            assert!(p[2] > 0.3 && q[2] > 0.3, "frame {k}: {p:?} {q:?}");
            worst = worst.max((p[0] - q[0]).abs().max((p[1] - q[1]).abs()));
        }
        if k >= 1 {
            assert_eq!(b["track_id"], 1, "frame {k}");
        }
    }
    eprintln!("keypoints with --detect-every 5: at most {worst:.3} px from the every-frame run");
    assert!(worst <= 1.0, "{worst} px");
}
