//! Many streams in one process, with the real binary: four offline inputs give each stream the
//! results of a run of its own, in fewer pose calls than crops; four live streams (two RTSP
//! cameras served by `sapiens-stream` itself, a test pattern, a file) keep their pace while a
//! camera is lost and come back with it; streams added and removed over HTTP; settings that
//! several streams cannot share refused in one line.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::cli::{assert_clean_failure, assert_success, make_clip, probe, read_results, sapiens};
use common::path_arg;
use common::process::{PATIENCE, Sapiens, free_port, http_get, wait_for};
use sapiens_stream::source::{self, InputSpec, RtspTransport, SourceOptions};
use serde_json::Value;

const POSE: &str = "pose17";

fn pose_model() -> String {
    common::cli::model(POSE).display().to_string()
}

/// Each stream's keypoints, frame by frame, from a results file.
fn keypoints_by_stream(results: &[Value]) -> BTreeMap<String, Vec<Vec<f64>>> {
    let mut streams: BTreeMap<String, Vec<Vec<f64>>> = BTreeMap::new();
    for result in results
        .iter()
        .filter(|r| r["schema"] == "sapiens-stream/result")
    {
        let name = result["stream_name"].as_str().unwrap().to_owned();
        let values = result["persons"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|p| p["keypoints"].as_array().unwrap().clone())
            .flat_map(|k| [k[0].as_f64().unwrap(), k[1].as_f64().unwrap()])
            .collect();
        streams.entry(name).or_default().push(values);
    }
    streams
}

/// The `frames` column of a stage in the run report printed at the end.
fn stage_frames(stderr: &str, stage: &str) -> u64 {
    let line = stderr
        .lines()
        .find(|l| l.starts_with(stage))
        .unwrap_or_else(|| panic!("no {stage} line in:\n{stderr}"));
    line.split_whitespace().last().unwrap().parse().unwrap()
}

/// The run report's calls of `model` and the inputs they took.
fn model_calls(stderr: &str, model: &str) -> (u64, u64) {
    let line = stderr
        .lines()
        .skip_while(|l| !l.starts_with("model "))
        .find(|l| l.split_whitespace().next() == Some(model))
        .unwrap_or_else(|| panic!("no calls of {model} in:\n{stderr}"));
    let numbers: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .take(2)
        .map(|n| n.parse().unwrap())
        .collect();
    (numbers[0], numbers[1])
}

#[test]
fn offline_streams_match_runs_of_their_own_in_fewer_pose_calls() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    make_clip(&d.join("a.mp4"), 9, 320, 240);
    make_clip(&d.join("b.mp4"), 7, 256, 192);
    let smpte = "test://smpte?width=288&height=216&fps=30&frames=8";
    let gradient = "test://gradient?width=200&height=150&fps=30&frames=6";
    let inputs = [
        ("a", "a.mp4"),
        ("b", "b.mp4"),
        ("c", smpte),
        ("d", gradient),
    ];
    let model = pose_model();

    let mut alone = BTreeMap::new();
    for (name, input) in inputs {
        let results = format!("{name}-alone.jsonl");
        let output = sapiens(
            d,
            &[
                "run",
                "--input",
                input,
                "--mode",
                "offline",
                "--pose-model",
                &model,
                "--results",
                &results,
                "--no-progress",
            ],
        );
        assert_success(&output);
        let mut streams = keypoints_by_stream(&read_results(&d.join(&results)));
        alone.insert(name, streams.remove("stream0").unwrap());
    }

    std::fs::create_dir(d.join("out")).unwrap();
    let named: Vec<String> = inputs.iter().map(|(n, i)| format!("{n}={i}")).collect();
    let mut args = vec!["run", "--mode", "offline", "--pose-model", &model];
    for input in &named {
        args.extend(["--input", input]);
    }
    args.extend([
        "--results",
        "all.jsonl",
        "--output",
        "out/{name}.mp4",
        "--batch-timeout-ms",
        "200",
        "--max-batch",
        "8",
        "--no-progress",
    ]);
    let output = sapiens(d, &args);
    assert_success(&output);
    let results = read_results(&d.join("all.jsonl"));
    for result in &results {
        let index = inputs
            .iter()
            .position(|(n, _)| result["stream_name"] == *n)
            .expect("a stream name of the inputs");
        assert_eq!(result["stream"], index, "indexes follow the inputs");
    }
    let together = keypoints_by_stream(&results);
    for (name, frames) in &alone {
        let shared = &together[*name];
        assert_eq!(shared.len(), frames.len(), "stream {name}: every frame");
        let worst = frames
            .iter()
            .zip(shared)
            .flat_map(|(a, b)| a.iter().zip(b).map(|(x, y)| (x - y).abs()))
            .fold(0.0, f64::max);
        assert!(
            worst <= 1e-4,
            "stream {name}: keypoints differ by {worst} px"
        );
        let video = probe(&d.join("out").join(format!("{name}.mp4")));
        assert_eq!(video["frames"], frames.len(), "stream {name}'s own video");
    }
    // One whole-frame person per frame: as many crops as frames, in fewer calls.
    let stderr = String::from_utf8_lossy(&output.stderr);
    let (calls, crops) = model_calls(&stderr, "pose");
    assert_eq!(crops, 30);
    assert_eq!(stage_frames(&stderr, "pose infer"), calls);
    assert!(
        calls < crops,
        "{calls} pose calls for {crops} crops:\n{stderr}"
    );
}

#[test]
fn settings_several_streams_cannot_share_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let model = pose_model();
    let pattern = "test://ball?width=64&height=48&frames=2";
    let two = |extra: &[&str]| {
        let mut args = vec![
            "run",
            "--pose-model",
            &model,
            "--input",
            pattern,
            "--input",
            pattern,
        ];
        args.extend(extra);
        sapiens(d, &args)
    };
    assert_clean_failure(&two(&["--output", "out.mp4"]), &["out.mp4", "{name}"]);
    assert_clean_failure(&two(&["--dump", "dump"]), &["--dump", "one --input"]);
    let same_name = sapiens(
        d,
        &[
            "run",
            "--pose-model",
            &model,
            "--input",
            "x=test://ball",
            "--input",
            "x=test://snow",
        ],
    );
    assert_clean_failure(&same_name, &["x", "two streams have this name"]);
    assert_clean_failure(
        &sapiens(d, &["run", "--pose-model", &model]),
        &["--input", "--http"],
    );
}

/// A JSON request to the run's HTTP server with the token; the status and body.
fn request(method: &str, url: &str, body: Option<&str>) -> (u16, String) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(PATIENCE))
        .build()
        .into();
    let auth = format!("Bearer {TOKEN}");
    let response = match (method, body) {
        ("GET", _) => agent.get(url).header("Authorization", &auth).call(),
        ("DELETE", _) => agent.delete(url).header("Authorization", &auth).call(),
        (_, body) => agent
            .post(url)
            .header("Authorization", &auth)
            .header("Content-Type", "application/json")
            .send(body.unwrap_or_default()),
    };
    let mut response = response.unwrap_or_else(|e| panic!("{method} {url}: {e}"));
    let status = response.status().as_u16();
    (status, response.body_mut().read_to_string().unwrap())
}

const TOKEN: &str = "streams-T0ken";

fn unix_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

/// Result lines of a stream in a results file still being written.
fn frames_of(results: &Path, name: &str) -> Vec<Value> {
    std::fs::read_to_string(results)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|r| r["schema"] == "sapiens-stream/result" && r["stream_name"] == name)
        .collect()
}

#[test]
fn streams_are_added_and_removed_over_http() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let port = free_port().to_string();
    let results = d.join("results.jsonl");
    let run = Sapiens::start(
        d,
        "service",
        &[
            "--http",
            &port,
            "--token",
            TOKEN,
            "--results",
            path_arg(&results),
        ],
    );
    let url = |path: &str| format!("http://127.0.0.1:{port}{path}");
    wait_for("the server", || {
        run.assert_running();
        ureq::get(&url("/health")).call().is_ok()
    });
    assert_eq!(request("GET", &url("/streams"), None), (200, "[]".into()));
    let unauthorised = ureq::get(&url("/streams")).call();
    assert!(matches!(unauthorised, Err(ureq::Error::StatusCode(401))));

    let video = d.join("cam1.mp4");
    let cam1 = format!(
        r#"{{"name":"cam1","input":"test://ball?width=160&height=120&fps=15","output":"{}"}}"#,
        video.display()
    );
    let (status, body) = request("POST", &url("/streams"), Some(&cam1));
    assert_eq!(status, 201, "{body}");
    let entry: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (entry["name"].as_str(), entry["stream"].as_u64()),
        (Some("cam1"), Some(0))
    );
    assert_eq!(request("POST", &url("/streams"), Some(&cam1)).0, 409);
    for bad in [
        r#"{"name":"a b","input":"test://ball"}"#,
        r#"{"name":"missing","input":"/nonexistent/clip.mp4"}"#,
        r#"{"name":"x","input":"test://ball","colour":"red"}"#,
        "not json",
    ] {
        let (status, body) = request("POST", &url("/streams"), Some(bad));
        assert_eq!(status, 400, "{bad}: {body}");
        assert_eq!(body.trim_end().lines().count(), 1, "one line: {body}");
    }
    let cam2 = r#"{"name":"cam2","input":"test://smpte?width=160&height=120&fps=15"}"#;
    let (status, body) = request("POST", &url("/streams"), Some(cam2));
    assert_eq!(status, 201, "{body}");
    wait_for("results of both streams", || {
        run.assert_running();
        frames_of(&results, "cam1").len() >= 3 && frames_of(&results, "cam2").len() >= 3
    });
    let followed = format!("ws://127.0.0.1:{port}/ws?stream=cam2&token={TOKEN}");
    let (mut socket, _) = tungstenite::connect(followed.as_str()).unwrap();
    for _ in 0..4 {
        let message: Value =
            serde_json::from_str(socket.read().unwrap().to_text().unwrap()).unwrap();
        assert_eq!(message["stream_name"], "cam2", "?stream=cam2: {message}");
    }
    drop(socket);
    let (status, body) = request("GET", &url("/streams"), None);
    assert_eq!(status, 200);
    let listed: Vec<Value> = serde_json::from_str(&body).unwrap();
    let names: Vec<_> = listed.iter().map(|s| s["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["cam1", "cam2"]);
    assert!(
        listed
            .iter()
            .all(|s| s["up"] == true && s["frames"].as_u64() > Some(0))
    );

    assert_eq!(request("DELETE", &url("/streams/cam1"), None).0, 204);
    let removed_at = unix_ns();
    assert_eq!(request("DELETE", &url("/streams/cam1"), None).0, 404);
    let finalised = probe(&video);
    assert!(finalised["frames"].as_u64() > Some(0), "{finalised}");
    let cam2_before = frames_of(&results, "cam2").len();
    wait_for("cam2 to go on", || {
        run.assert_running();
        frames_of(&results, "cam2").len() > cam2_before + 3
    });
    let (_, body) = request("GET", &url("/streams"), None);
    let listed: Vec<Value> = serde_json::from_str(&body).unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["name"], "cam2");

    let status = run.terminate();
    assert!(status.success(), "exit {status:?}");
    let cam1_frames = frames_of(&results, "cam1");
    assert!(
        cam1_frames
            .iter()
            .all(|r| r["capture_unix_ns"].as_u64().unwrap() < removed_at),
        "no cam1 frame captured after it was removed"
    );
}

/// `sapiens_frames_out_total` per stream.
fn frames_out(port: &str) -> BTreeMap<String, f64> {
    http_get(port, "/metrics")
        .lines()
        .filter_map(|l| l.strip_prefix("sapiens_frames_out_total{stream=\""))
        .filter_map(|rest| rest.split_once("\"} "))
        .map(|(name, value)| (name.to_owned(), value.parse().unwrap()))
        .collect()
}

/// Frames per second of each stream over `window`.
fn rates(port: &str, window: Duration) -> BTreeMap<String, f64> {
    let before = frames_out(port);
    let start = Instant::now();
    std::thread::sleep(window);
    let after = frames_out(port);
    let seconds = start.elapsed().as_secs_f64();
    after
        .into_iter()
        .map(|(name, n)| {
            let rate = (n - before.get(&name).copied().unwrap_or(0.0)) / seconds;
            (name, rate)
        })
        .collect()
}

/// A camera: `sapiens-stream` serving a test pattern through the model on RTSP.
fn camera(dir: &Path, name: &str, port: u16) -> Sapiens {
    let pattern = "test://ball?width=160&height=120&fps=10";
    Sapiens::camera(dir, name, port, pattern, &["--threads", "1"])
}

#[test]
fn a_lost_camera_does_not_slow_the_other_streams() {
    const WINDOW: Duration = Duration::from_secs(8);
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    make_clip(&d.join("clip.mp4"), 50, 160, 120);
    let (port1, port2) = (free_port(), free_port());
    let mut cam1 = camera(d, "cam1", port1);
    let _cam2 = camera(d, "cam2", port2);
    let http = free_port().to_string();
    let inputs = [
        format!("cam1=rtsp://127.0.0.1:{port1}/cam"),
        format!("cam2=rtsp://127.0.0.1:{port2}/cam"),
        "pattern=test://ball?width=160&height=120&fps=10".to_owned(),
        format!("clip={}", d.join("clip.mp4").display()),
    ];
    let mut args = vec![
        "--mode",
        "live",
        "--loop",
        "--rtsp-transport",
        "tcp",
        "--reconnect-max-delay",
        "1",
        "--http",
        &http,
    ];
    for input in &inputs {
        args.extend(["--input", input]);
    }
    let viewer = Sapiens::start(d, "viewer", &args);
    wait_for("every stream's results", || {
        viewer.assert_running();
        ureq::get(&format!("http://127.0.0.1:{http}/metrics"))
            .call()
            .is_ok()
            && frames_out(&http).values().filter(|n| **n >= 5.0).count() == 4
    });
    let before = rates(&http, WINDOW);

    cam1.kill_hard();
    wait_for("cam1 down", || viewer.count_in_log("stream 0 down") == 1);
    let during = rates(&http, WINDOW);
    for name in ["cam2", "pattern", "clip"] {
        assert!(
            during[name] >= 0.9 * before[name],
            "{name}: {:.2} fps with cam1 down, {:.2} before",
            during[name],
            before[name]
        );
    }
    assert!(during["cam1"] < 0.5, "cam1 is down: {during:?}");

    cam1 = camera(d, "cam1-again", port1);
    let resumed_from = frames_out(&http)["cam1"];
    wait_for("cam1 to resume", || {
        viewer.assert_running();
        frames_out(&http)["cam1"] >= resumed_from + 5.0
    });
    eprintln!("fps before {before:?}, with cam1 down {during:?}");
    drop(cam1);
    let status = viewer.terminate();
    assert!(
        status.success(),
        "viewer exit {status:?}:\n{}",
        viewer_log(d)
    );
}

fn viewer_log(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("viewer.stderr")).unwrap_or_default()
}

#[test]
fn streams_serve_their_overlays_on_one_rtsp_port() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let port = free_port();
    let output = format!("rtsp://127.0.0.1:{port}/{{name}}");
    let run = Sapiens::start(
        d,
        "server",
        &[
            "--input",
            "a=test://ball?width=160&height=120&fps=10",
            "--input",
            "b=test://smpte?width=192&height=144&fps=10",
            "--output",
            &output,
        ],
    );
    wait_for("both streams served", || {
        run.assert_running();
        run.count_in_log("serving the overlay video on") == 2
    });
    for (name, width, height) in [("a", 160, 120), ("b", 192, 144)] {
        let url = format!("rtsp://127.0.0.1:{port}/{name}");
        let options = SourceOptions {
            rtsp_transport: Some(RtspTransport::Tcp),
            ..SourceOptions::default()
        };
        let mut source = source::open(&InputSpec::Uri(url.clone()), &options)
            .unwrap_or_else(|e| panic!("{url}: {e}"));
        let frame = source.next_frame().unwrap().expect("a frame");
        assert_eq!((frame.width(), frame.height()), (width, height), "{url}");
    }
    let status = run.terminate();
    assert!(status.success(), "exit {status:?}");
}

#[test]
fn a_stream_that_ends_ends_alone() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let port = free_port();
    let cam = camera(d, "cam", port);
    let http = free_port().to_string();
    let camera_input = format!("cam=rtsp://127.0.0.1:{port}/cam");
    let viewer = Sapiens::start(
        d,
        "viewer",
        &[
            "--input",
            &camera_input,
            "--input",
            "pattern=test://ball?width=160&height=120&fps=10",
            "--reconnect",
            "never",
            "--rtsp-transport",
            "tcp",
            "--http",
            &http,
        ],
    );
    let listed = || -> Vec<String> {
        let streams: Vec<Value> = serde_json::from_str(&http_get(&http, "/streams")).unwrap();
        streams
            .iter()
            .map(|s| s["name"].as_str().unwrap().to_owned())
            .collect()
    };
    wait_for("both streams' results", || {
        viewer.assert_running();
        ureq::get(&format!("http://127.0.0.1:{http}/metrics"))
            .call()
            .is_ok()
            && frames_out(&http).values().filter(|n| **n >= 3.0).count() == 2
    });
    // Its camera gone and no reconnecting: the stream ends, the run goes on with the other.
    cam.kill_hard();
    wait_for("the camera's stream to end", || {
        viewer.assert_running();
        listed() == ["pattern"]
    });
    let before = frames_out(&http)["pattern"];
    wait_for("the pattern to go on", || {
        viewer.assert_running();
        frames_out(&http)["pattern"] >= before + 10.0
    });
    let status = viewer.terminate();
    assert!(status.success(), "exit {status:?}:\n{}", viewer_log(d));
}
