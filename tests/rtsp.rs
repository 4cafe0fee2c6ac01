//! Live inputs and RTSP outputs with real processes: the simulated camera is `sapiens-stream`
//! itself serving its overlay over RTSP (gst-rtsp-server); a second `sapiens-stream` reads it while
//! the test kills and restarts the camera; gst-launch's rtspsrc is a second client; the push output
//! RECORDs to a gst-rtsp-server started by the test. Also: files and test patterns that loop, and
//! file outputs of live runs (timestamps with gaps).

mod common;

use std::fs::File;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::cli::{make_clip, probe};
use common::mqtt::{Broker, Subscriber};
use common::process::{PATIENCE, Sapiens, complete_lines, free_port, http_get, wait_for};
use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;
use gstreamer_rtsp_server as rtsp_server;
use gstreamer_rtsp_server::prelude::*;
use sapiens_stream::frame::Frame;
use sapiens_stream::sink::rtsp::{RtspPush, RtspUrl};
use sapiens_stream::sink::{VideoPreset, VideoSinkOptions};
use sapiens_stream::source::{
    self, InputSpec, SourceOptions, StatusListener, StopSignal, StreamStatus,
};
use serde_json::Value;

const CAMERA: &str = "test://ball?width=320&height=240&fps=15";
/// How long a camera stays off before it is restarted.
const OUTAGE: Duration = Duration::from_secs(5);
/// RSS growth allowed over two reconnects.
const RSS_GROWTH_LIMIT_KB: u64 = 30 * 1024;

fn read_complete_results(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap();
    assert!(
        text.ends_with('\n'),
        "the results file ends in the middle of a line"
    );
    text.lines()
        .map(|l| serde_json::from_str(l).expect("a complete JSON line"))
        .collect()
}

/// The complete lines of a results file still being written (its tail may be half a line).
fn results_so_far(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let complete = &text[..text.rfind('\n').map_or(0, |end| end + 1)];
    complete
        .lines()
        .map(|l| serde_json::from_str(l).expect("a complete JSON line"))
        .collect()
}

fn strictly_increasing(values: &[u64]) -> bool {
    values.windows(2).all(|w| w[0] < w[1])
}

/// A WebSocket client of the viewer reading on a thread of its own: every message, in order.
struct WsReader {
    received: Arc<Mutex<Vec<Value>>>,
    done: Arc<AtomicBool>,
}

impl WsReader {
    fn connect(http_port: &str) -> Self {
        let url = format!("ws://127.0.0.1:{http_port}/ws");
        let (mut socket, _) = tungstenite::connect(url.as_str()).expect("WebSocket to the viewer");
        let received = Arc::new(Mutex::new(Vec::new()));
        let done = Arc::new(AtomicBool::new(false));
        let (sink, finished) = (Arc::clone(&received), Arc::clone(&done));
        std::thread::spawn(move || {
            while let Ok(message) = socket.read() {
                if let tungstenite::Message::Text(text) = message {
                    let value = serde_json::from_str(text.as_str()).expect("JSON message");
                    sink.lock().unwrap().push(value);
                }
            }
            finished.store(true, Ordering::Relaxed);
        });
        WsReader { received, done }
    }

    fn messages(&self) -> Vec<Value> {
        self.received.lock().unwrap().clone()
    }
}

const STATUS_SCHEMA: &str = "sapiens-stream/status";

/// The stream status messages among `messages`, as (status, reconnects), checking each one's
/// shape against the documented schema on the way.
fn statuses(messages: &[Value]) -> Vec<(String, u64)> {
    messages
        .iter()
        .filter(|m| m["schema"] == STATUS_SCHEMA)
        .map(|m| {
            assert_eq!((&m["version"], &m["stream"]), (&1.into(), &0.into()), "{m}");
            assert!(
                m["unix_ns"].as_u64().unwrap() > 1_700_000_000_000_000_000,
                "{m}"
            );
            let status = m["status"].as_str().unwrap().to_owned();
            match status.as_str() {
                "down" => assert!(!m["reason"].as_str().unwrap().is_empty(), "{m}"),
                "up" => assert!(m.get("reason").is_none(), "{m}"),
                other => panic!("status {other}"),
            }
            (status, m["reconnects"].as_u64().unwrap())
        })
        .collect()
}

/// After every `up` status, some frame result follows (frames continue after a reconnect).
fn frames_follow_each_up(messages: &[Value]) -> bool {
    let ups: Vec<usize> = (0..messages.len())
        .filter(|&i| messages[i]["schema"] == STATUS_SCHEMA && messages[i]["status"] == "up")
        .collect();
    !ups.is_empty()
        && ups.iter().all(|&up| {
            messages[up + 1..]
                .iter()
                .take_while(|m| m["schema"] != STATUS_SCHEMA)
                .any(|m| m["schema"] == "sapiens-stream/result")
        })
}

fn metrics(http_port: &str) -> String {
    http_get(http_port, "/metrics")
}

#[test]
fn camera_that_drops_and_returns_twice_is_followed() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let port = free_port();
    let url = format!("rtsp://127.0.0.1:{port}/cam");
    let results = d.join("results.jsonl");
    let http_port = free_port().to_string();
    let broker = Broker::start();
    let mqtt_url = broker.url("cam");
    let stream_topic = "cam/stream";
    let mqtt_live = Subscriber::start(broker.port, "live", &[stream_topic, "cam"]);

    let mut camera = Sapiens::camera(d, "camera-1", port, CAMERA, &[]);
    let viewer = Sapiens::start(
        d,
        "viewer",
        &[
            "--input",
            &url,
            "--rtsp-transport",
            "tcp",
            "--reconnect-max-delay",
            "1",
            "--results",
            results.to_str().unwrap(),
            "--http",
            &http_port,
            "--mqtt",
            &mqtt_url,
        ],
    );
    wait_for("first results", || {
        viewer.assert_running();
        complete_lines(&results) >= 5
    });
    let websocket = WsReader::connect(&http_port);
    assert!(
        metrics(&http_port).contains("sapiens_stream_up{stream=\"stream0\"} 1\n"),
        "the stream is up once opened"
    );
    let rss_before = viewer.rss_kb();

    for round in 1..=2 {
        camera.kill_hard();
        let killed = Instant::now();
        wait_for("the viewer to report the stream down", || {
            viewer.count_in_log("stream 0 down") == round
        });
        // Published while down: on the WebSocket, in the file, retained on MQTT, in the metrics.
        let down = ("down".to_owned(), round as u64 - 1);
        wait_for("down on the WebSocket", || {
            statuses(&websocket.messages()).last() == Some(&down)
        });
        wait_for("down in the results file", || {
            statuses(&results_so_far(&results)).last() == Some(&down)
        });
        let late = Subscriber::start(broker.port, &format!("late-{round}"), &[stream_topic]);
        let retained: Value = serde_json::from_slice(&late.collect(stream_topic, 1).0[0]).unwrap();
        assert_eq!(
            statuses(&[retained]),
            vec![down.clone()],
            "retained on MQTT"
        );
        let late_ws = WsReader::connect(&http_port);
        wait_for("the current status for a new WebSocket client", || {
            !late_ws.messages().is_empty()
        });
        assert_eq!(statuses(&late_ws.messages()[..1]), vec![down.clone()]);
        assert!(metrics(&http_port).contains("sapiens_stream_up{stream=\"stream0\"} 0\n"));

        std::thread::sleep(OUTAGE.saturating_sub(killed.elapsed()));
        viewer.assert_running();
        assert_eq!(
            viewer.count_in_log("stream 0 up"),
            round - 1,
            "up while the camera is off"
        );

        camera = Sapiens::camera(d, &format!("camera-{}", round + 1), port, CAMERA, &[]);
        let before = complete_lines(&results);
        wait_for("the viewer to report the stream up and resume", || {
            viewer.count_in_log("stream 0 up") == round && complete_lines(&results) >= before + 5
        });
        wait_for("frames after up on the WebSocket", || {
            statuses(&websocket.messages()).len() == 2 * round
                && frames_follow_each_up(&websocket.messages())
        });
        assert!(metrics(&http_port).contains("sapiens_stream_up{stream=\"stream0\"} 1\n"));
    }
    let rss_after = viewer.rss_kb();
    eprintln!("viewer RSS: {rss_before} kB before the reconnects, {rss_after} kB after two");
    assert!(
        rss_after < rss_before + RSS_GROWTH_LIMIT_KB,
        "RSS grew from {rss_before} kB to {rss_after} kB over two reconnects"
    );
    let metrics = metrics(&http_port);
    assert!(
        metrics.contains("sapiens_reconnects_total{stream=\"stream0\"} 2"),
        "{metrics}"
    );

    let status = viewer.terminate();
    let log = std::fs::read_to_string(d.join("viewer.stderr")).unwrap();
    assert!(
        status.success(),
        "viewer exit {status:?} after SIGTERM; log:\n{log}"
    );
    assert_eq!(log.matches("stream 0 down").count(), 2, "log:\n{log}");
    assert_eq!(log.matches("stream 0 up").count(), 2, "log:\n{log}");
    assert!(
        log.contains("reconnecting in 0.5 s"),
        "backoff starts at 0.5 s; log:\n{log}"
    );

    // The same changes, in order, everywhere; frame results after each `up`.
    let expected = [
        ("down".to_owned(), 0),
        ("up".to_owned(), 1),
        ("down".to_owned(), 1),
        ("up".to_owned(), 2),
    ];
    let lines = read_complete_results(&results);
    assert_eq!(statuses(&lines), expected, "results file");
    assert!(frames_follow_each_up(&lines), "results file");
    wait_for("the WebSocket to close", || {
        websocket.done.load(Ordering::Relaxed)
    });
    assert_eq!(statuses(&websocket.messages()), expected, "WebSocket");
    // MQTT: the start-up clear of an earlier run's retained status (empty), then the changes.
    let mut received = mqtt_live.drain();
    let first_status = received.iter().position(|(topic, _)| topic == stream_topic);
    let (_, clear) = received.remove(first_status.expect("a stream status on MQTT"));
    assert!(clear.is_empty(), "first {stream_topic} message: {clear:?}");
    let mqtt: Vec<Value> = received
        .iter()
        .map(|(_, payload)| serde_json::from_slice(payload).unwrap())
        .collect();
    assert_eq!(statuses(&mqtt), expected, "MQTT {stream_topic}");
    assert!(frames_follow_each_up(&mqtt), "MQTT results after up");

    let frame_lines: Vec<&Value> = lines
        .iter()
        .filter(|l| l["schema"] == "sapiens-stream/result")
        .collect();
    let frames: Vec<u64> = frame_lines
        .iter()
        .map(|l| l["frame"].as_u64().unwrap())
        .collect();
    let pts: Vec<u64> = frame_lines
        .iter()
        .map(|l| l["pts_ns"].as_u64().unwrap())
        .collect();
    assert!(strictly_increasing(&frames), "frame indexes: {frames:?}");
    assert!(strictly_increasing(&pts), "PTS: {pts:?}");
    // The outages show on the timeline as pauses at least as long as the camera was off.
    let pauses = pts
        .windows(2)
        .filter(|w| w[1] - w[0] >= OUTAGE.as_nanos() as u64 - 1_000_000_000)
        .count();
    assert!(
        pauses >= 2,
        "expected two pauses of about {OUTAGE:?} in the PTS: {pts:?}"
    );
    assert!(
        frame_lines
            .iter()
            .all(|l| l["width"] == 320 && l["height"] == 240)
    );
    camera.kill_hard();
}

#[test]
fn two_clients_at_once_and_nobody_watching_never_stall_the_camera() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let port = free_port();
    let url = format!("rtsp://127.0.0.1:{port}/cam");
    let camera_results = d.join("camera.jsonl");
    let viewer_results = d.join("viewer.jsonl");

    let recording = d.join("camera.mp4");
    let camera = Sapiens::camera(
        d,
        "camera",
        port,
        CAMERA,
        &[
            "--results",
            camera_results.to_str().unwrap(),
            "--output",
            recording.to_str().unwrap(),
        ],
    );
    // Nobody watches yet: the camera's pipeline runs all the same.
    let at_start = complete_lines(&camera_results);
    wait_for("the camera to process frames with no client", || {
        complete_lines(&camera_results) >= at_start + 5
    });

    let viewer = Sapiens::start(
        d,
        "viewer",
        &[
            "--input",
            &url,
            "--rtsp-transport",
            "tcp",
            "--results",
            viewer_results.to_str().unwrap(),
        ],
    );
    wait_for("the first client's results", || {
        viewer.assert_running();
        complete_lines(&viewer_results) >= 3
    });
    // A second client, over UDP, decodes 20 frames of the right size while the first one reads.
    let viewer_before = complete_lines(&viewer_results);
    let second = Command::new("timeout")
        .arg(PATIENCE.as_secs().to_string())
        .args(["gst-launch-1.0", "-v", "rtspsrc"])
        .arg(format!("location={url}"))
        .args([
            "protocols=udp",
            "!",
            "rtph264depay",
            "!",
            "h264parse",
            "!",
            "avdec_h264",
            "!",
            "videoconvert",
            "!",
        ])
        .args([
            "video/x-raw,width=320,height=240",
            "!",
            "fakesink",
            "silent=false",
            "num-buffers=20",
        ])
        .output()
        .unwrap();
    // (Its exit status is not the measure: rtspsrc may report an error while tearing down.)
    let decoded = String::from_utf8_lossy(&second.stdout)
        .matches("fakesink0: last-message = chain")
        .count();
    assert_eq!(
        decoded,
        20,
        "second client: {}",
        String::from_utf8_lossy(&second.stderr)
    );
    wait_for("the first client to keep receiving", || {
        complete_lines(&viewer_results) > viewer_before
    });
    assert_eq!(
        camera.count_in_log("RTSP client connected"),
        2,
        "{}",
        camera.log()
    );

    // Both leave; the camera goes on.
    viewer.kill_hard();
    wait_for("both clients to be gone", || {
        camera.count_in_log("RTSP client left") == 2
    });
    let after_clients = complete_lines(&camera_results);
    wait_for("the camera to go on after its clients left", || {
        complete_lines(&camera_results) >= after_clients + 5
    });
    // A client still watching when the camera stops is told the stream ended.
    let said_path = d.join("last-client.out");
    let mut last_client = Command::new("timeout")
        .arg(PATIENCE.as_secs().to_string())
        .args(["gst-launch-1.0", "-v", "rtspsrc"])
        .arg(format!("location={url}"))
        .args([
            "protocols=udp",
            "!",
            "rtph264depay",
            "!",
            "avdec_h264",
            "!",
            "fakesink",
            "silent=false",
        ])
        .stdout(File::create(&said_path).unwrap())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let said = || std::fs::read_to_string(&said_path).unwrap_or_default();
    wait_for("the last client to decode frames", || {
        said().contains("fakesink0: last-message = chain")
    });
    let status = camera.terminate();
    assert!(status.success(), "camera exit {status:?} after SIGTERM");
    last_client.wait().unwrap();
    assert!(
        said().contains("Got EOS"),
        "the last client was not told the stream ended:\n{}\ncamera:\n{}",
        said()
            .lines()
            .filter(|l| !l.contains("last-message"))
            .collect::<Vec<_>>()
            .join("\n"),
        std::fs::read_to_string(d.join("camera.stderr")).unwrap()
    );

    // The file output beside the RTSP one got every processed frame, and is finalised
    // (probed independently, with OpenCV's FFmpeg backend).
    let probe = probe(&recording);
    assert_eq!(
        (probe["width"].as_u64(), probe["height"].as_u64()),
        (Some(320), Some(240)),
        "{probe}"
    );
    assert_eq!(
        probe["frames"].as_u64(),
        Some(complete_lines(&camera_results) as u64),
        "frames in the MP4 vs results"
    );
}

#[test]
fn unreachable_rtsp_input_is_retried_until_stopped() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("rtsp://127.0.0.1:{}/nobody", free_port());
    let viewer = Sapiens::start(
        dir.path(),
        "viewer",
        &["--input", &url, "--reconnect-max-delay", "1"],
    );
    wait_for("three failed attempts", || {
        viewer.count_in_log("stream 0: still down") >= 2
    });
    let log = viewer.log();
    assert_eq!(
        log.matches("stream 0 down").count(),
        1,
        "one Down, then retries: {log}"
    );
    for delay in ["reconnecting in 0.5 s", "reconnecting in 1.0 s"] {
        assert!(log.contains(delay), "{delay}: {log}");
    }
    assert!(
        !log.contains("reconnecting in 2.0 s"),
        "the delay is capped at 1 s: {log}"
    );
    // Stopping while waiting for the camera ends at once, with one clear line.
    let stopped = Instant::now();
    let status = viewer.terminate();
    assert!(
        stopped.elapsed() < Duration::from_secs(5),
        "took {:?} to stop",
        stopped.elapsed()
    );
    assert!(!status.success());
    let log = std::fs::read_to_string(dir.path().join("viewer.stderr")).unwrap();
    assert!(
        log.contains(&format!(
            "error: input {url}: stopped before the first frame arrived"
        )),
        "{log}"
    );
}

/// A gst-rtsp-server in RECORD mode that decodes what it receives and counts the frames.
struct RecordServer {
    main_loop: gst::glib::MainLoop,
    thread: Option<std::thread::JoinHandle<()>>,
    frames: Arc<AtomicU64>,
    size: Arc<Mutex<Option<(i32, i32)>>>,
}

impl RecordServer {
    fn start(port: u16) -> Self {
        gst::init().unwrap();
        let server = rtsp_server::RTSPServer::new();
        server.set_address("127.0.0.1");
        server.set_service(&port.to_string());
        let factory = rtsp_server::RTSPMediaFactory::new();
        factory.set_transport_mode(rtsp_server::RTSPTransportMode::RECORD);
        factory.set_launch("( rtph264depay name=depay0 ! h264parse ! avdec_h264 ! appsink name=frames sync=false )");
        let frames = Arc::new(AtomicU64::new(0));
        let size = Arc::new(Mutex::new(None));
        let (counter, seen) = (frames.clone(), size.clone());
        factory.connect_media_configure(move |_, media| {
            let bin = media.element().downcast::<gst::Bin>().unwrap();
            let appsink = bin
                .by_name("frames")
                .unwrap()
                .downcast::<gst_app::AppSink>()
                .unwrap();
            let (counter, seen) = (counter.clone(), seen.clone());
            appsink.set_callbacks(
                gst_app::AppSinkCallbacks::builder()
                    .new_sample(move |sink| {
                        let sample = sink.pull_sample().map_err(|_| gst::FlowError::Eos)?;
                        let caps = sample.caps().unwrap().structure(0).unwrap().to_owned();
                        *seen.lock().unwrap() =
                            Some((caps.get("width").unwrap(), caps.get("height").unwrap()));
                        counter.fetch_add(1, Ordering::Relaxed);
                        Ok(gst::FlowSuccess::Ok)
                    })
                    .build(),
            );
        });
        server.mount_points().unwrap().add_factory("/rec", factory);
        let context = gst::glib::MainContext::new();
        server.attach(Some(&context)).unwrap();
        let main_loop = gst::glib::MainLoop::new(Some(&context), false);
        let looping = main_loop.clone();
        let thread = std::thread::spawn(move || looping.run());
        RecordServer {
            main_loop,
            thread: Some(thread),
            frames,
            size,
        }
    }
}

impl Drop for RecordServer {
    fn drop(&mut self) {
        self.main_loop.quit();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn ball_frames(count: usize, width: usize, height: usize) -> Vec<Frame> {
    (0..count)
        .map(|i| {
            let mut pixels = vec![0u8; width * height * 4];
            // A bright square that moves, on black.
            for y in 0..height / 4 {
                for x in 0..width / 4 {
                    let offset = ((y + i % (height / 2)) * width + x + i % (width / 2)) * 4;
                    pixels[offset..offset + 4].copy_from_slice(&[255, 255, 255, 255]);
                }
            }
            Frame {
                stream_id: 0,
                index: i as u64,
                pts_ns: Some(i as u64 * 66_666_666),
                duration_ns: Some(66_666_666),
                capture_time: std::time::SystemTime::now(),
                geometry: Frame::rgba_geometry(width, height, width * 4),
                buffer: gst::Buffer::from_mut_slice(pixels),
                caps: Frame::rgba_caps(width, height, (15, 1)),
            }
        })
        .collect()
}

#[test]
fn push_output_records_to_an_external_server() {
    // The push output is chosen for hosts that are not this machine; the test's server is local,
    // so the output is opened directly rather than through `--output`.
    let port = free_port();
    let server = RecordServer::start(port);
    let url = RtspUrl::parse(&format!("rtsp://127.0.0.1:{port}/rec")).unwrap();
    let options = VideoSinkOptions {
        width: 160,
        height: 120,
        preset: VideoPreset::default(),
    };
    let mut push = RtspPush::open(&url, &options).unwrap();
    for mut frame in ball_frames(45, 160, 120) {
        push.push(&mut frame).unwrap();
        std::thread::sleep(Duration::from_millis(66));
    }
    push.finish().unwrap();
    let received = server.frames.load(Ordering::Relaxed);
    assert!(received >= 30, "the server decoded {received} of 45 frames");
    assert_eq!(*server.size.lock().unwrap(), Some((160, 120)));
}

#[test]
fn push_output_to_a_closed_port_fails_with_one_clear_error() {
    let url = RtspUrl::parse(&format!("rtsp://127.0.0.1:{}/rec", free_port())).unwrap();
    let options = VideoSinkOptions {
        width: 64,
        height: 48,
        preset: VideoPreset::default(),
    };
    let error = match RtspPush::open(&url, &options) {
        Err(error) => error,
        Ok(mut push) => {
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                if let Err(error) = push.push(&mut ball_frames(1, 64, 48)[0]) {
                    break error;
                }
                assert!(
                    Instant::now() < deadline,
                    "pushing to a closed port never failed"
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    };
    let message = error.to_string();
    assert!(
        message.starts_with(&format!("output {}: ", url.url)),
        "{message}"
    );
    assert!(!message.contains('\n'), "{message}");
}

fn run_to_end(dir: &Path, args: &[&str]) -> String {
    let mut sapiens = Sapiens::start(dir, "run", args);
    let status = sapiens.wait_for_exit("after starting");
    assert!(status.success(), "exit {status:?}; log:\n{}", sapiens.log());
    sapiens.log()
}

#[test]
fn files_and_test_patterns_loop_with_continuous_indexes_and_timestamps() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let clip = d.join("clip.mp4");
    make_clip(&clip, 10, 160, 120);
    let results = d.join("loop.jsonl");
    let frame_ns = 40_000_000u64;

    // Offline: every frame of 2.5 passes over a 10-frame clip, timed as one 25 fps stream.
    run_to_end(
        d,
        &[
            "--input",
            clip.to_str().unwrap(),
            "--mode",
            "offline",
            "--loop",
            "--max-frames",
            "25",
            "--results",
            results.to_str().unwrap(),
        ],
    );
    let lines = read_complete_results(&results);
    let frames: Vec<u64> = lines.iter().map(|l| l["frame"].as_u64().unwrap()).collect();
    assert_eq!(frames, (0..25).collect::<Vec<u64>>());
    let pts: Vec<u64> = lines
        .iter()
        .map(|l| l["pts_ns"].as_u64().unwrap())
        .collect();
    for (i, frame_pts) in pts.iter().enumerate() {
        // The decoder's first PTS is not necessarily 0 (the encoder's delay).
        let expected = pts[0] + i as u64 * frame_ns;
        assert!(
            frame_pts.abs_diff(expected) <= 10,
            "frame {i}: PTS {frame_pts}, expected {expected}"
        );
    }

    // A bounded test pattern loops the same way.
    run_to_end(
        d,
        &[
            "--input",
            "test://ball?width=64&height=48&fps=10&frames=4",
            "--mode",
            "offline",
            "--loop",
            "--max-frames",
            "10",
            "--results",
            results.to_str().unwrap(),
        ],
    );
    let pts: Vec<u64> = read_complete_results(&results)
        .iter()
        .map(|l| l["pts_ns"].as_u64().unwrap())
        .collect();
    let expected: Vec<u64> = (0..10).map(|i| i * 100_000_000).collect();
    assert!(
        pts.iter().zip(&expected).all(|(p, e)| p.abs_diff(*e) <= 10) && pts.len() == 10,
        "{pts:?}"
    );

    // Live mode without --loop: the file's end ends the run cleanly.
    run_to_end(
        d,
        &[
            "--input",
            clip.to_str().unwrap(),
            "--mode",
            "live",
            "--results",
            results.to_str().unwrap(),
        ],
    );
    let lines = read_complete_results(&results);
    assert!(
        !lines.is_empty() && lines.len() <= 10,
        "{} results from a 10-frame clip",
        lines.len()
    );
}

#[test]
fn status_listener_hears_the_stream_go_down_and_stop_ends_the_wait() {
    let url = format!("rtsp://127.0.0.1:{}/nobody", free_port());
    let stop = Arc::new(AtomicBool::new(false));
    let events: Arc<Mutex<Vec<(u32, StreamStatus)>>> = Arc::default();
    let heard = events.clone();
    let options = SourceOptions {
        stream_id: 3,
        stop: StopSignal::new(stop.clone()),
        status: Some(StatusListener::new(move |stream, status| {
            heard.lock().unwrap().push((stream, status.clone()))
        })),
        ..SourceOptions::default()
    };
    let watcher = {
        let events = events.clone();
        std::thread::spawn(move || {
            let deadline = Instant::now() + PATIENCE;
            while events.lock().unwrap().is_empty() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            stop.store(true, Ordering::Relaxed);
            Instant::now()
        })
    };
    let error = match source::open(&InputSpec::parse(&url).unwrap(), &options) {
        Err(error) => error,
        Ok(_) => panic!("nobody serves {url}"),
    };
    let stopped_at = watcher.join().unwrap();
    assert!(
        stopped_at.elapsed() < Duration::from_secs(2),
        "open() took {:?} to notice the stop",
        stopped_at.elapsed()
    );
    assert_eq!(
        error.to_string(),
        format!("input {url}: stopped before the first frame arrived")
    );
    let events = events.lock().unwrap();
    assert_eq!(events.len(), 1, "{events:?}");
    assert!(
        matches!(&events[0], (3, StreamStatus::Down { reason }) if !reason.is_empty()),
        "{events:?}"
    );
}

#[test]
fn several_outputs_from_flags_and_from_presets() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let input = "test://ball?width=64&height=48&frames=6";
    let out = |name: &str| d.join(name).to_str().unwrap().to_owned();
    let frames_in = |name: &str| probe(&d.join(name))["frames"].as_u64();

    run_to_end(
        d,
        &[
            "--input",
            input,
            "--mode",
            "offline",
            "--output",
            &out("a.mp4"),
            "--output",
            &out("b.mkv"),
        ],
    );
    assert_eq!((frames_in("a.mp4"), frames_in("b.mkv")), (Some(6), Some(6)));

    // A preset names one output as a string, or several as a list.
    let preset = d.join("preset.toml");
    for (outputs, files) in [
        (format!("{:?}", out("c.mp4")), vec!["c.mp4"]),
        (
            format!("[{:?}, {:?}]", out("d.mp4"), out("e.mkv")),
            vec!["d.mp4", "e.mkv"],
        ),
    ] {
        let text = format!("input = {input:?}\nmode = \"offline\"\noutput = {outputs}\n");
        std::fs::write(&preset, text).unwrap();
        run_to_end(d, &["--config", preset.to_str().unwrap()]);
        for file in files {
            assert_eq!(frames_in(file), Some(6), "{file}");
        }
    }
}

#[test]
fn a_file_output_shows_every_frame_when_live_frames_were_dropped() {
    // Live runs drop frames: the timestamps the file gets have gaps, here near the end too.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gaps.mp4");
    let options = VideoSinkOptions {
        width: 160,
        height: 120,
        preset: VideoPreset::default(),
    };
    let mut sink = sapiens_stream::sink::VideoSink::open(&path, &options).unwrap();
    let mut kept: Vec<Frame> = ball_frames(90, 160, 120)
        .into_iter()
        .filter(|f| ![36, 44, 68, 71, 84, 88].contains(&f.index))
        .collect();
    for frame in &mut kept {
        sink.push(frame).unwrap();
    }
    sink.finish().unwrap();
    assert_eq!(probe(&path)["frames"].as_u64(), Some(kept.len() as u64));
}
