//! The Triton engine against a real Triton Inference Server (tests/common/triton.rs): results
//! through it equal the local engine's, over gRPC and through shared memory; a server killed
//! mid-run costs a live run the frames it did not answer for and an offline run nothing (or, when
//! it never comes back, one error line); an unreachable server at start is one error line; the
//! requests of several runs share the server's dynamic batches.

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::cli::{
    assert_clean_failure, assert_success, command, model, read_results, run_to_end, sapiens,
};
use common::path_arg;
use common::process::{PATIENCE, Sapiens, free_port, http_get};
use common::triton::TritonServer;
use serde_json::{Value, json};

/// A few frames of videotestsrc's moving ball, every one of them (offline).
const FRAMES: &str = "test://ball?width=320&height=240&frames=3";
const SUCCESS: &str = "nv_inference_request_success";

/// One server for the tests that only run models on it: the four tasks, a detector, and a second
/// pose model whose counters only the batching test moves.
struct Shared {
    server: TritonServer,
    detector: PathBuf,
}

fn shared() -> &'static Shared {
    static SHARED: OnceLock<Shared> = OnceLock::new();
    SHARED.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        // Boxes in the detector's 640x640 input, where a 320x240 frame is scaled by 2: two
        // persons, and one under the score threshold.
        let spec = json!([{
            "name": "rtmdet",
            "layout": "rtmdet",
            "input": [640, 640],
            "boxes": [
                [100.0, 80.0, 300.0, 400.0, 0.9, 0],
                [330.0, 160.0, 500.0, 460.0, 0.75, 0],
                [50.0, 50.0, 90.0, 90.0, 0.1, 0]
            ]
        }]);
        common::run_reference(
            "make_detectors.py",
            &[path_arg(dir.path()), &spec.to_string()],
        );
        let detector = dir.path().join("rtmdet.onnx");
        let (pose, seg, depth, normal) = (
            model("pose17"),
            model("seg"),
            model("depth"),
            model("normal"),
        );
        let server = TritonServer::start_in(
            dir,
            &[
                ("pose", &pose),
                ("seg", &seg),
                ("depth", &depth),
                ("normal", &normal),
                ("detector", &detector),
                ("pose_batching", &pose),
            ],
        );
        Shared { server, detector }
    })
}

/// Runs `sapiens-stream ARGS` in `dir`: its process id (to find what it left behind) and output.
fn run_in(dir: &Path, args: &[&str]) -> (u32, Output) {
    let mut run = command(args);
    run.current_dir(dir);
    run_to_end(run, dir, PATIENCE)
}

/// The frame results of a results file (status lines left out).
fn frame_results(path: &Path) -> Vec<Value> {
    read_results(path)
        .into_iter()
        .filter(|r| r["schema"] == "sapiens-stream/result")
        .collect()
}

/// `remote` says what `local` says: numbers within 1e-4 (keypoints in pixels, scores, depth
/// range), the rest identical; only the model names and the capture time may differ.
fn assert_same(local: &Value, remote: &Value, at: &str) {
    match (local, remote) {
        (Value::Object(a), Value::Object(b)) => {
            let keys = |o: &serde_json::Map<String, Value>| o.keys().cloned().collect::<Vec<_>>();
            assert_eq!(keys(a), keys(b), "{at}");
            for (key, value) in a {
                if key != "models" && key != "capture_unix_ns" {
                    assert_same(value, &b[key], &format!("{at}.{key}"));
                }
            }
        }
        (Value::Array(a), Value::Array(b)) => {
            assert_eq!(a.len(), b.len(), "{at}: {local} vs {remote}");
            for (i, (x, y)) in a.iter().zip(b).enumerate() {
                assert_same(x, y, &format!("{at}[{i}]"));
            }
        }
        (Value::Number(x), Value::Number(y)) if x.is_f64() || y.is_f64() => {
            let (x, y) = (x.as_f64().unwrap(), y.as_f64().unwrap());
            assert!(
                (x - y).abs() <= 1e-4,
                "{at}: {x} locally, {y} through Triton"
            );
        }
        _ => assert_eq!(local, remote, "{at}"),
    }
}

/// Each frame's results in `remote` equal those in `local`.
fn assert_same_frames(local: &[Value], remote: &[Value]) {
    assert_eq!(
        local.len(),
        remote.len(),
        "frames locally and through Triton"
    );
    for (l, r) in local.iter().zip(remote) {
        assert_same(l, r, &format!("frame {}", l["frame"]));
    }
}

/// The largest difference of two images' samples.
fn max_sample_diff(a: &[u16], b: &[u16]) -> u16 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| x.abs_diff(*y)).max().unwrap()
}

/// A frame's dense files (class map, depth, normals) in `remote_dir` equal those in `local_dir`:
/// the class map exactly, depth and normals within one step of their encodings.
fn assert_same_dense_files(local_dir: &Path, remote_dir: &Path, result: &Value) {
    let open = |dir: &Path, file: &Value| {
        let path = dir.join(file.as_str().expect("a file name"));
        image::open(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    };
    let frame = &result["frame"];
    let class_map = &result["segmentation"]["class_map_file"];
    let (a, b) = (
        open(local_dir, class_map).into_luma8(),
        open(remote_dir, class_map).into_luma8(),
    );
    assert_eq!(a.dimensions(), (320, 240));
    assert!(a == b, "frame {frame}: class maps differ");
    let depth = &result["depth"]["file"];
    let (a, b) = (
        open(local_dir, depth).into_luma16(),
        open(remote_dir, depth).into_luma16(),
    );
    let diff = max_sample_diff(a.as_raw(), b.as_raw());
    assert!(diff <= 1, "frame {frame}: depth differs by {diff} steps");
    let normals = &result["normals"]["file"];
    let widen = |image: image::DynamicImage| -> Vec<u16> {
        image
            .into_rgb8()
            .as_raw()
            .iter()
            .map(|&v| v.into())
            .collect()
    };
    let (a, b) = (
        widen(open(local_dir, normals)),
        widen(open(remote_dir, normals)),
    );
    let diff = max_sample_diff(&a, &b);
    assert!(diff <= 1, "frame {frame}: normals differ by {diff} steps");
}

/// Pose (persons from the detector), seg, depth and normal on [`FRAMES`], locally and on the
/// shared server with `extra` flags: the same results and dense files.
fn assert_triton_equals_local(extra: &[&str]) {
    let shared = shared();
    let server = &shared.server;
    let dir = tempfile::tempdir().unwrap();
    let detector = shared.detector.display().to_string();
    let local_models = [
        model("pose17").display().to_string(),
        detector,
        model("seg").display().to_string(),
        model("depth").display().to_string(),
        model("normal").display().to_string(),
    ];
    let remote_models = ["pose", "detector", "seg", "depth", "normal"].map(|m| server.url(m));
    let run = |name: &str, models: &[String; 5], extra: &[&str]| -> (u32, Vec<Value>) {
        let cwd = dir.path().join(name);
        std::fs::create_dir(&cwd).unwrap();
        let mut args = vec!["run", "--input", FRAMES, "--mode", "offline"];
        let flags = [
            "--pose-model",
            "--detector",
            "--seg-model",
            "--depth-model",
            "--normal-model",
        ];
        for (flag, model) in flags.iter().zip(models) {
            args.extend([*flag, model.as_str()]);
        }
        args.extend([
            "--dense-dir",
            "dense",
            "--results",
            "r.jsonl",
            "--no-progress",
        ]);
        args.extend(extra);
        let (pid, output) = run_in(&cwd, &args);
        assert_success(&output);
        (pid, frame_results(&cwd.join("r.jsonl")))
    };
    let (_, local) = run("local", &local_models, &[]);
    let (pid, remote) = run("remote", &remote_models, extra);

    assert_eq!(local.len(), 3, "every frame");
    for result in &local {
        // The detector's two persons, each with its keypoints: something to compare.
        let persons = result["persons"].as_array().unwrap();
        assert_eq!(persons.len(), 2, "{result}");
        assert!(
            persons
                .iter()
                .all(|p| p["keypoints"].as_array().unwrap().len() == 17)
        );
    }
    assert_same_frames(&local, &remote);
    for result in &remote {
        // The models are the server's, by their names there.
        assert_eq!(
            result["models"],
            json!({"depth": "depth", "normal": "normal", "pose": "pose", "seg": "seg"})
        );
        assert_same_dense_files(
            &dir.path().join("local"),
            &dir.path().join("remote"),
            result,
        );
    }
    // --triton-shm: the regions are unregistered and removed when the run ends.
    let prefix = format!("sapiens_{pid}_");
    let left: Vec<_> = std::fs::read_dir("/dev/shm")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|name| name.starts_with(&prefix))
        .collect();
    assert!(left.is_empty(), "shared memory left behind: {left:?}");
}

#[test]
fn results_through_triton_equal_the_local_engine() {
    assert_triton_equals_local(&[]);
}

#[test]
fn results_through_triton_shared_memory_equal_the_local_engine() {
    assert_triton_equals_local(&["--triton-shm"]);
}

/// Four runs at once against one server: their pose requests run in fewer executions, the
/// server's dynamic batcher putting requests of different runs together.
#[test]
fn concurrent_runs_share_the_servers_dynamic_batches() {
    const RUNS: usize = 4;
    const EACH: usize = 8;
    let server = &shared().server;
    let url = server.url("pose_batching");
    let dir = tempfile::tempdir().unwrap();
    let input = format!("test://ball?width=160&height=120&frames={EACH}");
    let runs: Vec<_> = (0..RUNS)
        .map(|i| {
            let cwd = dir.path().join(format!("run{i}"));
            std::fs::create_dir(&cwd).unwrap();
            let args = [
                "run",
                "--input",
                &input,
                "--mode",
                "offline",
                "--pose-model",
                &url,
                "--results",
                "r.jsonl",
                "--no-progress",
            ]
            .map(str::to_owned);
            std::thread::spawn(move || {
                let args: Vec<&str> = args.iter().map(String::as_str).collect();
                assert_success(&sapiens(&cwd, &args));
                frame_results(&cwd.join("r.jsonl")).len()
            })
        })
        .collect();
    for run in runs {
        assert_eq!(run.join().unwrap(), EACH, "every frame of each run");
    }
    // Every frame's one whole-frame crop ran once; requests of several runs ran together.
    let items = server.counter("nv_inference_count", "pose_batching");
    let requests = server.counter(SUCCESS, "pose_batching");
    let executions = server.counter("nv_inference_exec_count", "pose_batching");
    assert_eq!(items, (RUNS * EACH) as f64);
    assert!(
        executions < requests,
        "{requests} requests in {executions} executions: no batching"
    );
}

/// Nothing listens on the port: one error line naming the model and the server, no panic.
#[test]
fn an_unreachable_server_at_start_is_one_error_line() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let url = format!("triton://127.0.0.1:{port}/pose");
    let output = sapiens(
        dir.path(),
        &[
            "run",
            "--input",
            "test://ball?width=64&height=48&frames=2",
            "--pose-model",
            &url,
        ],
    );
    assert_clean_failure(&output, &[]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let line = stderr.lines().find(|l| l.starts_with("error")).unwrap();
    let expected = format!("error: model {url}: Triton server at 127.0.0.1:{port} unreachable");
    assert!(line.starts_with(&expected), "{line}");
}

fn unix_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

/// Waits up to `limit` for `done` while `run` keeps running; fails with its log.
fn wait_on(run: &Sapiens, what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        run.assert_running();
        assert!(
            Instant::now() < deadline,
            "waited {limit:?} for {what}; the run's log:\n{}",
            run.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A series' value on the run's /metrics, 0 before it exists.
fn run_metric(port: u16, series: &str) -> f64 {
    let metrics = http_get(&port.to_string(), "/metrics");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .map_or(0.0, |v| v.trim().parse().unwrap())
}

/// The status of the run's /ready; `None` before its HTTP server listens.
fn ready_status(port: u16) -> Option<u16> {
    let response = ureq::get(&format!("http://127.0.0.1:{port}/ready"))
        .config()
        .http_status_as_error(false)
        .build()
        .call();
    Some(response.ok()?.status().as_u16())
}

/// A live run keeps going while its server is down: the frames it did not answer for are dropped
/// and counted, /ready is 503; once the server is back on the same port results come again.
#[test]
fn a_live_run_drops_frames_while_the_server_is_down_and_resumes_after_its_restart() {
    const ERRORS: &str = "sapiens_inference_errors_total{model=\"pose\"}";
    const OUT: &str = "sapiens_frames_out_total{stream=\"stream0\"}";
    const DROPPED: &str = "sapiens_frames_dropped_total{stream=\"stream0\"}";
    let mut server = TritonServer::start(&[("pose", &model("pose17"))]);
    let dir = tempfile::tempdir().unwrap();
    let results = dir.path().join("live.jsonl");
    let port = free_port();
    let run = Sapiens::run(
        dir.path(),
        "live",
        &[
            "--input",
            "test://ball?width=160&height=120&fps=10",
            "--pose-model",
            &server.url("pose"),
            // A request in flight when the server dies fails within 2 s.
            "--remote-deadline",
            "2",
            "--http",
            &port.to_string(),
            "--results",
            path_arg(&results),
            "--no-progress",
        ],
    );
    // Each takes seconds when all is well.
    let limit = Duration::from_secs(30);
    wait_on(&run, "results, and /ready 200", limit, || {
        ready_status(port) == Some(200) && run_metric(port, OUT) >= 3.0
    });
    assert_eq!(run_metric(port, ERRORS), 0.0);

    server.kill();
    wait_on(&run, "failed frames counted, /ready 503", limit, || {
        run_metric(port, ERRORS) > 0.0 && ready_status(port) == Some(503)
    });
    let down_seen = unix_ns();
    let (failed, published) = (run_metric(port, ERRORS), run_metric(port, OUT));
    // The run goes on: the frames that follow fail too, and none is published.
    wait_on(&run, "more failed frames", limit, || {
        run_metric(port, ERRORS) >= failed + 5.0
    });
    assert_eq!(run_metric(port, OUT), published, "published while down");
    assert_eq!(ready_status(port), Some(503));

    // Nothing can answer before the new server starts.
    let restarting = unix_ns();
    server.restart();
    wait_on(&run, "results after the restart, /ready 200", limit, || {
        run_metric(port, OUT) > published && ready_status(port) == Some(200)
    });
    let (errors, dropped) = (run_metric(port, ERRORS), run_metric(port, DROPPED));
    assert!(
        dropped >= errors,
        "{errors} failed frames, {dropped} dropped"
    );
    let log = run.log();
    let status = run.terminate();
    assert!(status.success(), "{status}:\n{log}");

    let frames = frame_results(&results);
    let numbers: Vec<u64> = frames
        .iter()
        .map(|r| r["frame"].as_u64().unwrap())
        .collect();
    assert!(numbers.windows(2).all(|w| w[0] < w[1]), "{numbers:?}");
    let captured: Vec<u64> = frames
        .iter()
        .map(|r| r["capture_unix_ns"].as_u64().unwrap())
        .collect();
    assert!(
        !captured
            .iter()
            .any(|&t| (down_seen..restarting).contains(&t)),
        "a frame captured while the server was down has results"
    );
    assert!(
        captured.iter().any(|&t| t > restarting),
        "no results for frames captured after the restart"
    );
}

/// An offline run's pose through `url`, with `extra` flags, as a child process.
fn offline_run(dir: &Path, name: &str, input: &str, url: &str, extra: &[&str]) -> Sapiens {
    let results = dir.join(format!("{name}.jsonl"));
    let mut args = vec![
        "--input",
        input,
        "--mode",
        "offline",
        "--pose-model",
        url,
        "--results",
        path_arg(&results),
        "--no-progress",
    ];
    args.extend(extra);
    Sapiens::run(dir, name, &args)
}

/// Offline, a server killed mid-run and started again within --remote-timeout costs no frame:
/// every frame has results, the same as the local engine's.
#[test]
fn an_offline_run_loses_no_frame_to_a_server_restart() {
    assert_offline_run_survives_a_restart(&[]);
}

/// The same through shared memory: the restarted server has forgotten the regions, which are
/// registered again.
#[test]
fn an_offline_run_through_shared_memory_loses_no_frame_to_a_server_restart() {
    assert_offline_run_survives_a_restart(&["--triton-shm"]);
}

fn assert_offline_run_survives_a_restart(transport: &[&str]) {
    const INPUT: &str = "test://ball?width=160&height=120&frames=40";
    let mut server = TritonServer::start(&[("pose", &model("pose17"))]);
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut local = offline_run(d, "local", INPUT, path_arg(&model("pose17")), &[]);
    assert!(
        local.wait_for_exit("of the local run").success(),
        "{}",
        local.log()
    );

    // A request in flight when the server dies fails within 3 s, and is retried.
    let mut extra = vec!["--remote-deadline", "3"];
    extra.extend(transport);
    let mut run = offline_run(d, "remote", INPUT, &server.url("pose"), &extra);
    wait_on(
        &run,
        "5 frames through the server",
        Duration::from_secs(60),
        || server.counter(SUCCESS, "pose") >= 5.0,
    );
    server.kill();
    run.assert_running();
    server.restart();
    let status = run.wait_for_exit("after the server's restart");
    assert!(status.success(), "{status}:\n{}", run.log());
    assert!(
        server.counter(SUCCESS, "pose") > 0.0,
        "no frame went through the restarted server"
    );

    let remote = frame_results(&d.join("remote.jsonl"));
    let numbers: Vec<u64> = remote
        .iter()
        .map(|r| r["frame"].as_u64().unwrap())
        .collect();
    assert_eq!(numbers, (0..40).collect::<Vec<u64>>());
    assert_same_frames(&frame_results(&d.join("local.jsonl")), &remote);
}

/// Offline, a server that does not come back within --remote-timeout ends the run: exit status
/// not 0, one error line saying so, and the results of the frames done before.
#[test]
fn an_offline_run_whose_server_never_returns_ends_with_one_error_line() {
    const FRAMES_IN: u64 = 40;
    let input = format!("test://ball?width=160&height=120&frames={FRAMES_IN}");
    let mut server = TritonServer::start(&[("pose", &model("pose17"))]);
    let url = server.url("pose");
    let dir = tempfile::tempdir().unwrap();
    let video = dir.path().join("remote.mp4");
    let extra = [
        "--remote-timeout",
        "3",
        "--remote-deadline",
        "2",
        "--output",
        path_arg(&video),
    ];
    let mut run = offline_run(dir.path(), "remote", &input, &url, &extra);
    wait_on(
        &run,
        "5 frames through the server",
        Duration::from_secs(60),
        || server.counter(SUCCESS, "pose") >= 5.0,
    );
    let answered = server.counter(SUCCESS, "pose") as usize;
    server.kill();
    let killed = Instant::now();
    let status = run.wait_for_exit("after the server was killed");
    let waited = killed.elapsed();

    let log = run.log();
    assert!(!status.success(), "the run succeeded:\n{log}");
    assert!(!log.contains("panicked"), "{log}");
    let errors: Vec<&str> = log.lines().filter(|l| l.starts_with("error")).collect();
    assert_eq!(errors.len(), 1, "one error line:\n{log}");
    for needle in [url.as_str(), "--remote-timeout"] {
        assert!(
            errors[0].contains(needle),
            "'{needle}' not in: {}",
            errors[0]
        );
    }
    assert!(
        waited >= Duration::from_secs(3),
        "gave up {waited:?} after the server died, before --remote-timeout"
    );

    // The frames the server answered, in order from the first, and no more than were read.
    let results = frame_results(&dir.path().join("remote.jsonl"));
    let numbers: Vec<u64> = results
        .iter()
        .map(|r| r["frame"].as_u64().unwrap())
        .collect();
    assert!(
        results.len() >= answered,
        "{answered} answered, results {numbers:?}"
    );
    assert_eq!(numbers, (0..numbers.len() as u64).collect::<Vec<_>>());
    assert!((numbers.len() as u64) < FRAMES_IN);
    // The overlay video was finalised: a playable file with a frame for every result.
    let probe: Value = serde_json::from_str(&common::run_reference(
        "video_probe.py",
        &[path_arg(&video)],
    ))
    .unwrap();
    assert_eq!(
        probe["frames"].as_u64(),
        Some(numbers.len() as u64),
        "{probe}"
    );
}

/// `models inspect` and `doctor` on a URL report what the server says: its version and health,
/// the model's readiness, config (batching as the server runs it) and task; `doctor` fails when
/// one of the models given cannot run.
#[test]
fn inspect_and_doctor_report_the_server_and_the_model() {
    let server = &shared().server;
    let dir = tempfile::tempdir().unwrap();
    let url = server.url("seg");
    let output = sapiens(dir.path(), &["models", "inspect", &url]);
    assert_success(&output);
    let report = String::from_utf8_lossy(&output.stdout).into_owned();
    let field = |label: &str| {
        report
            .lines()
            .find_map(|line| line.strip_prefix(label).map(str::trim))
            .unwrap_or_else(|| panic!("no '{label}' line in:\n{report}"))
            .to_owned()
    };
    let server_line = field("server");
    assert!(server_line.starts_with("triton 2."), "{server_line}");
    assert!(
        server_line.ends_with("live yes, ready yes"),
        "{server_line}"
    );
    assert_eq!(field("state"), "ready yes; platform python; versions 1");
    // What tests/common/triton.rs starts the server with.
    assert_eq!(
        field("config"),
        "max batch 8; dynamic batching, queue delay 2000 us; instances 1 on cpu"
    );
    assert_eq!(field("inputs"), "input  FP32 (N, 3, 1024, 768)");
    assert_eq!(field("outputs"), "output  FP32 (N, 28, 512, 384)");
    assert_eq!(field("task"), "seg, 28 classes (goliath_parts28)");
    assert_eq!(field("run"), format!("accepted: `run --seg-model {url}`"));
    assert!(
        report.contains("sapiens_stream.random_weights = true"),
        "{report}"
    );

    let detector = sapiens(dir.path(), &["models", "inspect", &server.url("detector")]);
    let detector = String::from_utf8_lossy(&detector.stdout).into_owned();
    // The three boxes the shared server's detector was made with, and mmdeploy's padding row.
    assert!(detector.contains("dets  FP32 (N, 4, 5)"), "{detector}");
    assert!(detector.contains("labels  INT64 (N, 4)"), "{detector}");
    assert!(
        detector.contains("run       refused as a task model"),
        "{detector}"
    );

    let healthy = sapiens(dir.path(), &["doctor", &server.url("pose")]);
    assert_success(&healthy);
    let text = String::from_utf8_lossy(&healthy.stdout).into_owned();
    assert!(
        text.contains(&format!("Triton model {}:", server.url("pose"))),
        "{text}"
    );
    assert!(
        text.contains("task      pose, 17 keypoints (coco17)"),
        "{text}"
    );
    let missing = format!("triton://127.0.0.1:{}/pose", free_port());
    let unhealthy = sapiens(dir.path(), &["doctor", &server.url("pose"), &missing]);
    assert!(!unhealthy.status.success());
    let text = String::from_utf8_lossy(&unhealthy.stdout).into_owned();
    assert!(
        text.contains(&format!(
            "Triton model {missing}: CANNOT RUN: model {missing}: Triton server at"
        )),
        "{text}"
    );
    let unknown = sapiens(dir.path(), &["doctor", &server.url("nope")]);
    let text = String::from_utf8_lossy(&unknown.stdout).into_owned();
    assert!(
        !unknown.status.success() && text.contains("does not serve model 'nope'"),
        "{text}"
    );
}
