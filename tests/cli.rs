//! End to end through the `sapiens-stream` binary: real GStreamer decoding and encoding, real
//! ONNX Runtime, the project's random-weight tiny models; checked against OpenCV/NumPy
//! references and an independent video probe.

mod common;

use std::path::Path;
use std::process::Command;

use common::cli::{
    assert_clean_failure, assert_success, make_clip, model, probe, read_results, run_with_timeout,
    sapiens, write_png,
};
use serde_json::Value;

const MEAN: [f32; 3] = [123.675, 116.28, 103.53];
const STD: [f32; 3] = [58.395, 57.12, 57.375];

/// The dumped model input, un-normalised back to 0..255, beside OpenCV's on the dumped frame.
fn check_input_against_opencv(dump: &Path, task: &str, reference_args: &[&str]) {
    let frame = image::open(dump.join("frame_000000.png"))
        .unwrap()
        .to_rgb8();
    let frame_npy = dump.join("frame.npy");
    common::write_npy_u8(
        &frame_npy,
        &[frame.height() as u64, frame.width() as u64, 3],
        frame.as_raw(),
    );
    let reference = dump.join(format!("{task}_reference.npy"));
    let mut args = vec![reference_args[0], frame_npy.to_str().unwrap()];
    args.extend_from_slice(&reference_args[1..]);
    args.push(reference.to_str().unwrap());
    common::run_reference("preprocess_reference.py", &args);
    let (_, expected) = common::read_npy_f32(&reference);
    let (shape, input) = common::read_npy_f32(&dump.join(format!("frame_000000_{task}_input.npy")));
    assert_eq!(shape, [1, 3, 1024, 768]);
    let plane = 1024 * 768;
    let (mut max, mut sum) = (0f32, 0f64);
    for (i, (&ours, &theirs)) in input.iter().zip(&expected).enumerate() {
        let c = i / plane;
        let diff = (ours * STD[c] + MEAN[c] - theirs).abs();
        max = max.max(diff);
        sum += diff as f64;
    }
    let mean = sum / input.len() as f64;
    assert!(
        max <= 1.0 && mean <= 0.1,
        "{task} input vs OpenCV: max {max}, mean {mean}"
    );
}

/// The dumped heatmaps, decoded by the NumPy reference and mapped to the frame per docs/SAPIENS.md,
/// must equal the published keypoints.
fn check_keypoints_against_reference(dump: &Path, person: &Value, width: f32, height: f32) {
    let (shape, heatmaps) = common::read_npy_f32(&dump.join("frame_000000_pose_output.npy"));
    let (k, h, w) = (shape[1], shape[2] as f32, shape[3] as f32);
    let maps = dump.join("maps.npy");
    common::write_npy_f32(&maps, &shape[1..], &heatmaps);
    let decoded = dump.join("decoded.npy");
    common::run_reference(
        "decode_reference.py",
        &[maps.to_str().unwrap(), decoded.to_str().unwrap()],
    );
    let (_, peaks) = common::read_npy_f32(&decoded);
    // Whole-frame box, padded 1.25 and fixed to aspect 0.75.
    let (mut cw, mut ch) = (width * 1.25, height * 1.25);
    if cw > 0.75 * ch {
        ch = cw / 0.75
    } else {
        cw = 0.75 * ch
    }
    let (cx, cy) = (width / 2.0, height / 2.0);
    let keypoints = person["keypoints"].as_array().unwrap();
    assert_eq!(keypoints.len() as u64, k);
    for (i, kp) in keypoints.iter().enumerate() {
        let (px, py, score) = (peaks[i * 3], peaks[i * 3 + 1], peaks[i * 3 + 2]);
        let x = px / (w - 1.0) * cw + cx - cw / 2.0;
        let y = py / (h - 1.0) * ch + cy - ch / 2.0;
        let got: Vec<f32> = kp
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap() as f32)
            .collect();
        assert!(
            (got[2] - score).abs() < 1e-6,
            "keypoint {i} score {} vs {score}",
            got[2]
        );
        if score > 0.0 {
            assert!(
                (got[0] - x).abs() < 0.02 && (got[1] - y).abs() < 0.02,
                "keypoint {i}: {got:?} vs ({x}, {y})"
            );
        }
    }
}

#[test]
fn video_end_to_end_matches_references() {
    let dir = tempfile::tempdir().unwrap();
    let (input, output, results, dump) = (
        dir.path().join("in.mp4"),
        dir.path().join("out.mp4"),
        dir.path().join("r.jsonl"),
        dir.path().join("dump"),
    );
    make_clip(&input, 12, 320, 240);
    let run = sapiens(
        dir.path(),
        &[
            // Relative to the working directory, as users type it.
            "run",
            "--input",
            "in.mp4",
            "--pose-model",
            model("pose17").to_str().unwrap(),
            "--seg-model",
            model("seg").to_str().unwrap(),
            "--output",
            output.to_str().unwrap(),
            "--results",
            results.to_str().unwrap(),
            "--dump",
            dump.to_str().unwrap(),
            "--dump-frames",
            "1",
        ],
    );
    assert_success(&run);

    let (source, encoded) = (probe(&input), probe(&output));
    assert_eq!(source["frames"], 12);
    assert_eq!(encoded["frames"], source["frames"]);
    assert_eq!(
        (&encoded["width"], &encoded["height"]),
        (&source["width"], &source["height"])
    );
    for (a, b) in encoded["pts_ms"]
        .as_array()
        .unwrap()
        .iter()
        .zip(source["pts_ms"].as_array().unwrap())
    {
        assert!(
            (a.as_f64().unwrap() - b.as_f64().unwrap()).abs() < 1.0,
            "timestamps differ: {a} vs {b}"
        );
    }

    let lines = read_results(&results);
    assert_eq!(lines.len(), 12);
    for (i, line) in lines.iter().enumerate() {
        assert_eq!(line["schema"], "sapiens-stream/result");
        assert_eq!(line["version"], 1);
        assert_eq!(line["frame"], i as u64);
        assert_eq!(line["pts_ns"], i as u64 * 40_000_000);
        assert_eq!(
            (line["width"].as_u64(), line["height"].as_u64()),
            (Some(320), Some(240))
        );
        assert_eq!(line["random_weights"], true);
        assert_eq!(line["keypoint_set"], "coco17");
        let persons = line["persons"].as_array().unwrap();
        assert_eq!(persons.len(), 1);
        assert_eq!(
            persons[0]["bbox"],
            serde_json::json!([0.0, 0.0, 320.0, 240.0])
        );
        assert_eq!(persons[0]["keypoints"].as_array().unwrap().len(), 17);
        let pixels = line["segmentation"]["class_pixels"].as_array().unwrap();
        assert_eq!(pixels.len(), 28);
        assert_eq!(
            pixels.iter().map(|p| p.as_u64().unwrap()).sum::<u64>(),
            320 * 240
        );
    }

    assert!(
        !dump.join("frame_000001.png").exists(),
        "only one frame was asked for"
    );
    check_input_against_opencv(
        &dump,
        "pose",
        &["crop", "0", "0", "320", "240", "768", "1024"],
    );
    check_input_against_opencv(&dump, "seg", &["stretch", "768", "1024"]);
    check_keypoints_against_reference(&dump, &lines[0]["persons"][0], 320.0, 240.0);
    let (seg_shape, _) = common::read_npy_f32(&dump.join("frame_000000_seg_output.npy"));
    assert_eq!(seg_shape, [1, 28, 512, 384]);
}

#[test]
fn larger_keypoint_sets_and_test_source() {
    let dir = tempfile::tempdir().unwrap();
    for (name, set, count) in [
        ("pose308", "goliath308", 308),
        ("pose133", "coco_wholebody133", 133),
    ] {
        let results = dir.path().join(format!("{name}.jsonl"));
        let run = sapiens(
            dir.path(),
            &[
                "run",
                "--input",
                "test://smpte?width=192&height=256&frames=2",
                "--mode",
                "offline",
                "--pose-model",
                model(name).to_str().unwrap(),
                "--results",
                results.to_str().unwrap(),
            ],
        );
        assert_success(&run);
        let lines = read_results(&results);
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[1]["keypoint_set"], set);
        assert_eq!(
            lines[1]["persons"][0]["keypoints"]
                .as_array()
                .unwrap()
                .len(),
            count
        );
        assert!(lines[1].get("segmentation").is_none());
    }
}

#[test]
fn video_preset_reaches_the_encoder() {
    // x264's ultrafast has no CABAC nor 8x8 transform: the stream is Constrained Baseline
    // (profile_idc 66); the default superfast uses both: High (100).
    let dir = tempfile::tempdir().unwrap();
    let pose = model("pose17");
    for (preset, profile_idc) in [(None, 100), (Some("ultrafast"), 66)] {
        let output = dir
            .path()
            .join(format!("{}.mp4", preset.unwrap_or("default")));
        let mut args = vec![
            "run",
            "--input",
            "test://ball?width=160&height=120&frames=3",
            "--mode",
            "offline",
            "--pose-model",
            pose.to_str().unwrap(),
            "--output",
            output.to_str().unwrap(),
        ];
        args.extend(preset.map(|p| ["--video-preset", p]).into_iter().flatten());
        assert_success(&sapiens(dir.path(), &args));
        let probed = probe(&output);
        assert_eq!(probed["frames"], 3);
        assert_eq!(probed["h264_profile_idc"], profile_idc, "{preset:?}");
    }
}

#[test]
fn mkv_output_and_nearest_seg() {
    let dir = tempfile::tempdir().unwrap();
    let output = dir.path().join("out.mkv");
    let run = sapiens(
        dir.path(),
        &[
            "run",
            "--input",
            "test://ball?width=160&height=120&frames=3",
            "--mode",
            "offline",
            "--seg-model",
            model("seg").to_str().unwrap(),
            "--seg-upsample",
            "nearest",
            "--output",
            output.to_str().unwrap(),
        ],
    );
    assert_success(&run);
    assert_eq!(probe(&output)["frames"], 3);
}

#[test]
fn still_image_and_folder_of_images() {
    let dir = tempfile::tempdir().unwrap();
    let still = dir.path().join("still.png");
    write_png(&still, 300, 200, 0);
    let (results, output) = (dir.path().join("still.jsonl"), dir.path().join("still.mp4"));
    let run = sapiens(
        dir.path(),
        &[
            "run",
            "--input",
            "still.png",
            "--pose-model",
            model("pose17").to_str().unwrap(),
            "--results",
            results.to_str().unwrap(),
            "--output",
            output.to_str().unwrap(),
        ],
    );
    assert_success(&run);
    let lines = read_results(&results);
    assert_eq!(lines.len(), 1);
    assert_eq!(
        (lines[0]["width"].as_u64(), lines[0]["height"].as_u64()),
        (Some(300), Some(200))
    );
    assert_eq!(probe(&output)["frames"], 1);

    let folder = dir.path().join("images");
    std::fs::create_dir(&folder).unwrap();
    for i in 0..3 {
        write_png(&folder.join(format!("img_{i}.png")), 200, 150, i);
    }
    std::fs::write(folder.join("notes.txt"), "not an image").unwrap();
    let results = dir.path().join("folder.jsonl");
    let run = sapiens(
        dir.path(),
        &[
            "run",
            "--input",
            folder.to_str().unwrap(),
            "--pose-model",
            model("pose17").to_str().unwrap(),
            "--results",
            results.to_str().unwrap(),
        ],
    );
    assert_success(&run);
    let frames: Vec<u64> = read_results(&results)
        .iter()
        .map(|l| l["frame"].as_u64().unwrap())
        .collect();
    assert_eq!(frames, [0, 1, 2]);
}

#[test]
fn bad_inputs_fail_with_one_clear_line() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let pose = model("pose17");
    let pose = pose.to_str().unwrap();
    let seg = model("seg");
    let clip = d.join("clip.mp4");
    make_clip(&clip, 2, 64, 48);
    let clip = clip.to_str().unwrap();

    let text = d.join("notes.mp4");
    std::fs::write(&text, "this is not a video, just text\n".repeat(100)).unwrap();
    let text = text.to_str().unwrap();
    let audio = d.join("audio.ogg");
    let status = Command::new("gst-launch-1.0")
        .args([
            "-q",
            "audiotestsrc",
            "num-buffers=20",
            "!",
            "vorbisenc",
            "!",
            "oggmux",
            "!",
            "filesink",
        ])
        .arg(format!("location={}", audio.display()))
        .status()
        .unwrap();
    assert!(status.success());
    let audio = audio.to_str().unwrap();
    let fake_model = d.join("fake.onnx");
    std::fs::write(&fake_model, "definitely not protobuf").unwrap();
    let fake_model = fake_model.to_str().unwrap();
    let avi = d.join("o.avi");
    let avi = avi.to_str().unwrap();

    // (input, pose model, further flags, what the one error line says)
    let cases: [(&str, &str, &[&str], &[&str]); 11] = [
        (
            "/no/such/clip.mp4",
            pose,
            &[],
            &["/no/such/clip.mp4", "no such file"],
        ),
        (text, pose, &[], &["notes.mp4"]),
        (audio, pose, &[], &["no video stream"]),
        // Cameras are retried until they answer (tests/rtsp.rs); `--reconnect never` fails fast.
        (
            "rtsp://127.0.0.1:9/none",
            pose,
            &["--reconnect", "never"],
            &["rtsp://127.0.0.1:9/none"],
        ),
        (
            clip,
            fake_model,
            &[],
            &["fake.onnx", "not a model ONNX Runtime can load"],
        ),
        (
            clip,
            seg.to_str().unwrap(),
            &[],
            &[
                "pose task",
                "expected (N, 17|133|308, 256, 192)",
                "found (N, 28, 512, 384)",
            ],
        ),
        (
            clip,
            "/no/model.onnx",
            &[],
            &["/no/model.onnx", "no such file"],
        ),
        (
            clip,
            pose,
            &["--output", "/no/dir/out.mp4"],
            &["/no/dir/out.mp4", "folder does not exist"],
        ),
        (clip, pose, &["--output", avi], &[".mp4 or .mkv"]),
        (
            clip,
            pose,
            &["--ort-lib", "/no/libonnxruntime.so"],
            &["--ort-lib /no/libonnxruntime.so", "no such file"],
        ),
        (
            clip,
            pose,
            &["--ort-lib", text],
            &["cannot load ONNX Runtime"],
        ),
    ];
    for (input, pose_model, flags, expected) in cases {
        let mut args = vec!["run", "--input", input, "--pose-model", pose_model];
        args.extend_from_slice(flags);
        assert_clean_failure(&sapiens(d, &args), expected);
    }

    let mut command = Command::new(env!("CARGO_BIN_EXE_sapiens-stream"));
    command
        .args(["run", "--input", clip, "--pose-model", pose])
        .env("ORT_DYLIB_PATH", "/no/lib.so");
    assert_clean_failure(
        &run_with_timeout(command, d),
        &["ORT_DYLIB_PATH=/no/lib.so"],
    );
}

/// A copy of the binary far from the project, with no environment pointing at ONNX Runtime.
#[test]
fn onnx_runtime_not_found_says_where_it_looked() {
    let dir = tempfile::tempdir().unwrap();
    let binary = dir.path().join("sapiens-stream");
    std::fs::copy(env!("CARGO_BIN_EXE_sapiens-stream"), &binary).unwrap();
    let clip = dir.path().join("clip.mp4");
    make_clip(&clip, 2, 64, 48);
    let mut command = Command::new(&binary);
    command
        .args([
            "run",
            "--input",
            clip.to_str().unwrap(),
            "--pose-model",
            model("pose17").to_str().unwrap(),
        ])
        .current_dir(dir.path())
        .env_remove("ORT_DYLIB_PATH")
        .env_remove("VIRTUAL_ENV")
        .env("LD_LIBRARY_PATH", "");
    let output = run_with_timeout(command, dir.path());
    assert_clean_failure(
        &output,
        &[
            "libonnxruntime.so",
            "not found",
            "ORT_DYLIB_PATH (unset)",
            "scripts/setup.sh",
        ],
    );
}

#[test]
fn config_preset_with_flags_overriding() {
    let dir = tempfile::tempdir().unwrap();
    let preset = dir.path().join("preset.toml");
    std::fs::write(
        &preset,
        format!(
            "input = \"test://ball?width=64&height=48&frames=2\"\nmode = \"offline\"\npose-model = \"{}\"\nresults = \"from_preset.jsonl\"\n",
            model("pose17").display()
        ),
    )
    .unwrap();
    let run = sapiens(
        dir.path(),
        &[
            "run",
            "--config",
            preset.to_str().unwrap(),
            "--results",
            "from_flag.jsonl",
        ],
    );
    assert_success(&run);
    assert!(!dir.path().join("from_preset.jsonl").exists());
    assert_eq!(read_results(&dir.path().join("from_flag.jsonl")).len(), 2);

    std::fs::write(&preset, "input = \"test://ball\"\nposemodel = \"x.onnx\"\n").unwrap();
    let bad = sapiens(dir.path(), &["run", "--config", preset.to_str().unwrap()]);
    assert_clean_failure(&bad, &["preset.toml", "posemodel"]);
}

/// Numbers outside their range are refused before anything starts, on the command line and in
/// a preset alike, naming the flag and what it accepts; an OS error is said once.
#[test]
fn out_of_range_values_are_refused_where_they_are_parsed() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let pose = model("pose17");
    let pose = pose.to_str().unwrap();
    let input = "test://ball?width=64&height=48&frames=1";
    let cases: [(&[&str], &[&str]); 14] = [
        (
            &["--threads", "100000"],
            &["--threads", "0 (every core) to 256"],
        ),
        (&["--max-batch", "0"], &["--max-batch", "1 to 256"]),
        (
            &["--keypoint-threshold", "nan"],
            &["--keypoint-threshold", "0 to 1"],
        ),
        (
            &["--detector-threshold", "1.5"],
            &["--detector-threshold", "0 to 1"],
        ),
        (&["--nms-iou=-0.1"], &["--nms-iou", "0 to 1"]),
        (&["--image-fps", "0"], &["--image-fps", "1 to 1000"]),
        (&["--mqtt-qos", "2"], &["--mqtt-qos", "0 or 1"]),
        (
            &["--reconnect-max-delay", "0"],
            &["--reconnect-max-delay", "positive"],
        ),
        (&["--track-max-age=-1"], &["--track-max-age", "positive"]),
        (
            &["--smooth-min-cutoff", "0"],
            &["--smooth-min-cutoff", "positive number of Hz"],
        ),
        (&["--smooth-beta", "inf"], &["--smooth-beta", ">= 0"]),
        (&["--smooth", "kalman"], &["--smooth", "kalman"]),
        (&["--detect-every", "0"], &["--detect-every"]),
        (
            &["--detect-every", "5"],
            &["--detect-every needs --detector"],
        ),
    ];
    for (flags, expected) in cases {
        let mut args = vec!["run", "--input", input, "--pose-model", pose];
        args.extend_from_slice(flags);
        assert_clean_failure(&sapiens(d, &args), expected);
    }

    let preset = d.join("preset.toml");
    std::fs::write(&preset, "max-batch = 0\nthreads = 4\n").unwrap();
    let run = sapiens(
        d,
        &[
            "run",
            "--config",
            preset.to_str().unwrap(),
            "--input",
            input,
            "--pose-model",
            pose,
        ],
    );
    assert_clean_failure(&run, &["preset.toml", "max-batch", "1 to 256, not 0"]);

    let run = sapiens(
        d,
        &[
            "run",
            "--input",
            input,
            "--pose-model",
            pose,
            "--dense-dir",
            "/proc/x",
        ],
    );
    assert_clean_failure(&run, &["/proc/x"]);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert_eq!(stderr.matches("os error").count(), 1, "{stderr}");
}

/// Every shipped preset parses (the options exist and have the right types).
#[test]
fn shipped_presets_are_valid() {
    let presets = common::repo_root().join("pipelines");
    for entry in std::fs::read_dir(&presets).unwrap() {
        let path = entry.unwrap().path();
        let dir = tempfile::tempdir().unwrap();
        // A missing model is reported after the preset was read and merged.
        let run = sapiens(
            dir.path(),
            &[
                "run",
                "--config",
                path.to_str().unwrap(),
                "--input",
                "/no/such/input.mp4",
            ],
        );
        assert_clean_failure(&run, &["/no/such/input.mp4"]);
    }
}
