//! Scheduling and shutdown through the binary: live mode drops stale frames and keeps latency
//! bounded, offline mode processes every frame, SIGINT finalises every output.

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::process::{Command, Stdio};

use common::cli::{command, make_clip, model};
use std::time::{Duration, Instant};

use serde_json::Value;

/// The end-of-run report: frame counts and each stage's p99 in milliseconds.
struct Report {
    frames_in: u64,
    frames_out: u64,
    dropped: u64,
    p99_ms: HashMap<String, f64>,
}

fn parse_report(stderr: &str) -> Report {
    let counts = stderr
        .lines()
        .find(|l| l.starts_with("frames in "))
        .unwrap_or_else(|| panic!("no report in:\n{stderr}"));
    let numbers: Vec<u64> = counts
        .split(|c: char| !c.is_ascii_digit() && c != '.')
        .filter_map(|t| t.parse().ok())
        .collect();
    let mut p99_ms = HashMap::new();
    let table = stderr
        .lines()
        .skip_while(|l| !l.starts_with("stage"))
        .skip(1)
        // The model calls and stream tables follow the stages.
        .take_while(|l| !l.starts_with("model ") && !l.starts_with("stream "));
    for row in table {
        let fields: Vec<&str> = row.split_whitespace().collect();
        if fields.len() < 5 {
            continue;
        }
        let name = fields[..fields.len() - 4].join(" ");
        p99_ms.insert(name, fields[fields.len() - 2].parse().unwrap());
    }
    Report {
        frames_in: numbers[0],
        frames_out: numbers[1],
        dropped: numbers[2],
        p99_ms,
    }
}

fn results(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).expect("complete JSON line"))
        .collect()
}

#[test]
fn live_drops_stale_frames_and_offline_keeps_every_frame() {
    let dir = tempfile::tempdir().unwrap();
    let clip = dir.path().join("clip.mp4");
    make_clip(&clip, 40, 320, 240);
    let (pose, seg) = (model("pose17"), model("seg"));
    let base = [
        "run",
        "--input",
        clip.to_str().unwrap(),
        "--pose-model",
        pose.to_str().unwrap(),
        "--seg-model",
        seg.to_str().unwrap(),
    ];

    let live_results = dir.path().join("live.jsonl");
    let live = command(&base)
        .args([
            "--mode",
            "live",
            "--results",
            live_results.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&live.stderr);
    assert!(live.status.success(), "{stderr}");
    let report = parse_report(&stderr);
    // The file plays in real time at 25 fps; two tiny models on a CPU are slower than that.
    assert_eq!(report.frames_in, 40);
    assert!(report.dropped > 0, "live mode dropped nothing:\n{stderr}");
    assert_eq!(report.frames_out + report.dropped, report.frames_in);
    let frames: Vec<u64> = results(&live_results)
        .iter()
        .map(|l| l["frame"].as_u64().unwrap())
        .collect();
    assert_eq!(frames.len() as u64, report.frames_out);
    assert!(frames.windows(2).all(|w| w[0] < w[1]), "{frames:?}");
    // Waiting adds at most one inference and one frame interval to the work itself.
    let work: f64 = [
        "preprocess",
        "pose infer",
        "seg infer",
        "pose decode",
        "seg post",
        "sink",
    ]
    .iter()
    .map(|s| report.p99_ms[*s])
    .sum();
    let inference = report.p99_ms["pose infer"] + report.p99_ms["seg infer"];
    let bound = work + inference + 40.0 + report.p99_ms["decode"];
    let latency = report.p99_ms["capture->out"];
    assert!(
        latency <= bound * 1.25 + 50.0,
        "capture-to-output p99 {latency} ms over {bound} ms:\n{stderr}"
    );

    let offline_results = dir.path().join("offline.jsonl");
    let offline = command(&base)
        .args([
            "--mode",
            "offline",
            "--results",
            offline_results.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&offline.stderr);
    assert!(offline.status.success(), "{stderr}");
    let report = parse_report(&stderr);
    assert_eq!(
        (report.frames_in, report.frames_out, report.dropped),
        (40, 40, 0)
    );
    let frames: Vec<u64> = results(&offline_results)
        .iter()
        .map(|l| l["frame"].as_u64().unwrap())
        .collect();
    assert_eq!(frames, (0..40).collect::<Vec<u64>>());
}

#[test]
fn sigint_mid_file_finalises_video_and_results() {
    let dir = tempfile::tempdir().unwrap();
    let clip = dir.path().join("long.mp4");
    make_clip(&clip, 500, 320, 240);
    let (output, results_path) = (dir.path().join("out.mp4"), dir.path().join("r.jsonl"));
    let child = command(&[
        "run",
        "--input",
        clip.to_str().unwrap(),
        "--pose-model",
        model("pose17").to_str().unwrap(),
        "--mode",
        "offline",
        "--output",
        output.to_str().unwrap(),
        "--results",
        results_path.to_str().unwrap(),
    ])
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    // Results are buffered: wait until the encoder has written something, then interrupt.
    let deadline = Instant::now() + Duration::from_secs(120);
    while std::fs::metadata(&output).map_or(0, |m| m.len()) == 0 {
        assert!(Instant::now() < deadline, "no output after 120 s");
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(500));
    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let finished = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&finished.stderr);
    assert!(finished.status.success(), "{stderr}");

    let lines = results(&results_path);
    assert!(
        !lines.is_empty() && lines.len() < 500,
        "stopped after {} of 500 frames",
        lines.len()
    );
    let probe: Value = serde_json::from_str(&common::run_reference(
        "video_probe.py",
        &[output.to_str().unwrap()],
    ))
    .unwrap();
    assert_eq!(
        probe["frames"].as_u64().unwrap(),
        lines.len() as u64,
        "every encoded frame has its result line"
    );
    let report = parse_report(&stderr);
    assert_eq!(report.frames_out, lines.len() as u64);
}

/// The running pipeline serves /health, /ready and /metrics with its own counters, and SIGTERM
/// ends it cleanly.
#[test]
fn http_server_reports_the_running_pipeline() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = command(&[
        "run",
        "--input",
        "test://ball?width=160&height=120&fps=20",
        "--pose-model",
        model("pose17").to_str().unwrap(),
        "--http",
        &port.to_string(),
    ])
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    let get = |path: &str| -> Option<(u16, String)> {
        let mut response = ureq::get(&format!("http://127.0.0.1:{port}{path}"))
            .config()
            .http_status_as_error(false)
            .build()
            .call()
            .ok()?;
        let status = response.status().as_u16();
        Some((status, response.body_mut().read_to_string().ok()?))
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while get("/ready").map(|(s, _)| s) != Some(200) {
        assert!(Instant::now() < deadline, "never ready");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(get("/health").map(|(s, _)| s), Some(200));
    let (_, metrics) = get("/metrics").unwrap();
    let frames_out: f64 = metrics
        .lines()
        .find(|l| l.starts_with("sapiens_frames_out_total"))
        .and_then(|l| l.split_whitespace().last()?.parse().ok())
        .unwrap_or_else(|| panic!("no frames_out in:\n{metrics}"));
    assert!(frames_out >= 1.0);
    assert!(
        metrics.contains("sapiens_stage_latency_seconds_count{stage=\"pose infer\"}"),
        "{metrics}"
    );
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let finished = child.wait_with_output().unwrap();
    assert!(
        finished.status.success(),
        "{}",
        String::from_utf8_lossy(&finished.stderr)
    );
}
