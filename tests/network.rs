//! The network side against real servers on 127.0.0.1 and real clients: tungstenite WebSocket
//! clients, ureq HTTP requests, the Prometheus project's OpenMetrics parser, headless Chromium.
//! The pipeline is not involved: the tests drive the hubs the pipeline would feed.

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use sapiens_stream::frame::{ImageView, PixelFormat};
use sapiens_stream::metrics::Metrics;
use sapiens_stream::publish::server::{
    NetworkOptions, NetworkServer, StreamControl, StreamControlError, StreamEntry, StreamRequest,
};
use sapiens_stream::publish::{
    ClassMask, FrameResult, Published, Publisher, SCHEMA_NAME, SCHEMA_VERSION, SegmentationSummary,
};
use sapiens_stream::render::tracks::track_colour;
use sapiens_stream::tasks::pose::Person;
use serde_json::Value;
use tungstenite::client::IntoClientRequest;
use tungstenite::{Message, WebSocket};

const LOCALHOST: &str = "127.0.0.1:0";

fn start(http: bool, ws: bool, token: Option<&str>) -> (NetworkServer, Arc<Metrics>) {
    let metrics = Arc::new(Metrics::new());
    let options = NetworkOptions {
        http: http.then(|| LOCALHOST.parse().unwrap()),
        ws: ws.then(|| LOCALHOST.parse().unwrap()),
        token: token.map(str::to_owned),
        ..NetworkOptions::default()
    };
    let server =
        NetworkServer::start(&options, Arc::clone(&metrics)).expect("servers start on free ports");
    (server, metrics)
}

/// A result as the pipeline serializes it: one person with `keypoints` ([x, y, score]).
fn frame_result(
    frame: u64,
    keypoint_set: &str,
    keypoints: Vec<[f32; 3]>,
    width: usize,
    height: usize,
) -> FrameResult {
    let capture = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    FrameResult {
        schema: SCHEMA_NAME,
        version: SCHEMA_VERSION,
        stream: 0,
        stream_name: "stream0".into(),
        frame,
        pts_ns: Some(frame * 33_333_333),
        capture_unix_ns: capture.as_nanos() as u64,
        width,
        height,
        models: BTreeMap::from([("pose", "sapiens_tiny_pose".to_owned())]),
        random_weights: false,
        keypoint_set: Some(keypoint_set.to_owned()),
        persons: Some(vec![Person {
            bbox: [0.0, 0.0, width as f32, height as f32],
            score: 1.0,
            track_id: None,
            keypoints_raw: None,
            keypoints,
        }]),
        segmentation: None,
        depth: None,
        normals: None,
        pointmap: None,
    }
}

/// A Goliath-308 result (about 8 KB of JSON, as a real one).
fn large_result(frame: u64) -> String {
    let keypoints = (0..308)
        .map(|k| {
            [
                (k * 3 % 1920) as f32 + 0.123,
                (k * 7 % 1080) as f32 + 0.456,
                0.5 + (k % 50) as f32 / 100.0,
            ]
        })
        .collect();
    let result = frame_result(frame, "goliath308", keypoints, 1920, 1080);
    serde_json::to_string(&result).unwrap()
}

/// WebSocket client over a plain TCP stream; `Err(status)` when the upgrade is refused.
fn ws_connect(
    address: SocketAddr,
    path_and_query: &str,
    bearer: Option<&str>,
) -> Result<WebSocket<TcpStream>, u16> {
    let mut request = format!("ws://{address}{path_and_query}")
        .into_client_request()
        .unwrap();
    if let Some(token) = bearer {
        request
            .headers_mut()
            .insert("Authorization", format!("Bearer {token}").parse().unwrap());
    }
    let stream = TcpStream::connect(address).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    match tungstenite::client(request, stream) {
        Ok((socket, _)) => Ok(socket),
        Err(tungstenite::HandshakeError::Failure(tungstenite::Error::Http(response))) => {
            Err(response.status().as_u16())
        }
        Err(e) => panic!("WebSocket handshake with {address}: {e}"),
    }
}

/// What a client read: results (by frame index) and drop reports, in arrival order.
#[derive(Debug, PartialEq)]
enum Received {
    Frame(u64),
    Dropped(u64),
}

fn read_one(socket: &mut WebSocket<TcpStream>) -> Received {
    loop {
        match socket.read().expect("the server keeps the WebSocket open") {
            Message::Text(text) => {
                let message: Value = serde_json::from_str(text.as_str()).unwrap();
                return match message["schema"].as_str() {
                    Some(SCHEMA_NAME) => Received::Frame(message["frame"].as_u64().unwrap()),
                    Some("sapiens-stream/dropped") => {
                        assert_eq!(message["version"], 1);
                        Received::Dropped(message["count"].as_u64().unwrap())
                    }
                    other => panic!("unexpected message schema {other:?}"),
                };
            }
            Message::Ping(_) | Message::Pong(_) => {}
            other => panic!("unexpected WebSocket message {other:?}"),
        }
    }
}

/// Reads until frame `last` arrived.
fn read_until(socket: &mut WebSocket<TcpStream>, last: u64) -> Vec<Received> {
    let mut received = Vec::new();
    loop {
        let item = read_one(socket);
        let done = item == Received::Frame(last);
        received.push(item);
        if done {
            return received;
        }
    }
}

#[test]
fn a_slow_websocket_client_loses_its_oldest_messages_and_slows_nobody() {
    // The test scaled down: 300 results at 100 per second (3 s) while one client reads
    // nothing for 3.5 s and another reads normally.
    const MESSAGES: u64 = 300;
    const INTERVAL: Duration = Duration::from_millis(10);
    let (server, metrics) = start(false, true, None);
    let address = server.ws_address().unwrap();
    let mut normal = ws_connect(address, "/", None).unwrap();
    let mut slow = ws_connect(address, "/", None).unwrap();
    assert_eq!(server.results().client_count(), 2);

    let normal_reader = thread::spawn(move || read_until(&mut normal, MESSAGES - 1));
    let hub = Arc::clone(server.results());
    let messages: Vec<String> = (0..MESSAGES).map(large_result).collect();
    let started = Instant::now();
    let mut longest_publish = Duration::ZERO;
    let mut in_publish = Duration::ZERO;
    for (index, message) in messages.into_iter().enumerate() {
        let due = started + INTERVAL * index as u32;
        thread::sleep(due.saturating_duration_since(Instant::now()));
        let before = Instant::now();
        hub.publish(&message);
        let took = before.elapsed();
        longest_publish = longest_publish.max(took);
        in_publish += took;
    }
    let publishing = started.elapsed();
    let schedule = INTERVAL * (MESSAGES - 1) as u32;
    println!(
        "publishing took {publishing:?} for a {schedule:?} schedule; {in_publish:?} inside publish, \
         longest call {longest_publish:?}"
    );
    // A publish that waited for the slow client would wait until it reads, seconds later; the
    // margins only absorb a loaded machine's scheduling.
    assert!(
        longest_publish < Duration::from_millis(100),
        "a publish call took {longest_publish:?}"
    );
    assert!(
        in_publish < Duration::from_millis(300),
        "publish calls took {in_publish:?} in all"
    );
    assert!(
        publishing < schedule + Duration::from_millis(300),
        "publishing fell behind its schedule: {publishing:?}"
    );

    let normal_received = normal_reader.join().unwrap();
    let expected: Vec<Received> = (0..MESSAGES).map(Received::Frame).collect();
    assert_eq!(
        normal_received, expected,
        "the normal client gets every message, in order"
    );

    thread::sleep(Duration::from_millis(500));
    let slow_received = read_until(&mut slow, MESSAGES - 1);
    // Every message is either received or counted in a drop report placed where the gap is.
    let mut next_frame = 0;
    let mut dropped = 0;
    for item in &slow_received {
        match *item {
            Received::Dropped(count) => {
                assert!(count > 0);
                next_frame += count;
                dropped += count;
            }
            Received::Frame(frame) => {
                assert_eq!(
                    frame, next_frame,
                    "a gap without a drop report: {slow_received:?}"
                );
                next_frame += 1;
            }
        }
    }
    let frames = slow_received
        .iter()
        .filter(|item| matches!(item, Received::Frame(_)))
        .count() as u64;
    println!("slow client: {frames} received, {dropped} dropped");
    assert!(
        dropped > 0,
        "the slow client lost nothing: {slow_received:?}"
    );
    assert_eq!(frames + dropped, MESSAGES);
    // The newest results survive: the last queue-full are all there, at the end.
    let queue = NetworkOptions::default().client_queue as u64;
    let tail: Vec<Received> = (MESSAGES - queue..MESSAGES).map(Received::Frame).collect();
    assert_eq!(
        slow_received[slow_received.len() - queue as usize..],
        tail[..]
    );
    assert!(
        metrics.encode().contains(&format!(
            "sapiens_publisher_drops_total{{publisher=\"websocket\"}} {dropped}"
        )),
        "{}",
        metrics.encode()
    );
    server.shutdown();
}

fn http_agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .into()
}

/// Status and body of a GET.
fn get(url: &str, bearer: Option<&str>) -> (u16, String) {
    let mut request = http_agent().get(url);
    if let Some(token) = bearer {
        request = request.header("Authorization", format!("Bearer {token}"));
    }
    let mut response = request.call().unwrap_or_else(|e| panic!("GET {url}: {e}"));
    let status = response.status().as_u16();
    (status, response.body_mut().read_to_string().unwrap())
}

#[test]
fn a_token_guards_http_and_websocket() {
    const TOKEN: &str = "s3cret-T0ken";
    let (server, _metrics) = start(true, true, Some(TOKEN));
    let http = server.http_address().unwrap();
    let ws = server.ws_address().unwrap();
    for path in [
        "/",
        "/metrics",
        "/video.mjpeg",
        "/keypoints/coco17.json",
        "/classes/goliath_parts28.json",
    ] {
        let url = format!("http://{http}{path}");
        assert_eq!(get(&url, None).0, 401, "{path} without a token");
        assert_eq!(get(&url, Some("wrong")).0, 401, "{path} with a wrong token");
        assert_eq!(
            get(&format!("{url}?token=wrong"), None).0,
            401,
            "{path} with a wrong token"
        );
    }
    for path in [
        "/",
        "/metrics",
        "/keypoints/coco17.json",
        "/classes/goliath_parts28.json",
    ] {
        let url = format!("http://{http}{path}");
        assert_eq!(
            get(&url, Some(TOKEN)).0,
            200,
            "{path} with the token in the header"
        );
        assert_eq!(
            get(&format!("{url}?token={TOKEN}"), None).0,
            200,
            "{path} with the token in the query"
        );
    }
    let (_, page) = get(&format!("http://{http}/?token={TOKEN}"), None);
    assert!(page.contains("<canvas"), "{page}");
    // Probes need no token and reveal nothing.
    assert_eq!(get(&format!("http://{http}/health"), None).0, 200);

    for (address, path) in [(http, "/ws"), (ws, "/"), (ws, "/ws")] {
        assert_eq!(
            ws_connect(address, path, None).err(),
            Some(401),
            "{address}{path} without a token"
        );
        assert_eq!(ws_connect(address, path, Some("wrong")).err(), Some(401));
        assert_eq!(
            ws_connect(address, &format!("{path}?token=nope"), None).err(),
            Some(401)
        );
    }
    let mut clients = vec![
        ws_connect(http, "/ws", Some(TOKEN)).unwrap(),
        ws_connect(ws, "/", Some(TOKEN)).unwrap(),
        ws_connect(ws, &format!("/?token={TOKEN}"), None).unwrap(),
        ws_connect(http, &format!("/ws?token={TOKEN}"), None).unwrap(),
    ];
    server.results().publish(&large_result(42));
    for client in &mut clients {
        assert_eq!(read_one(client), Received::Frame(42));
    }
    server.shutdown();
}

#[test]
fn without_a_token_browsers_of_other_origins_are_refused() {
    let (server, _metrics) = start(true, false, None);
    let http = server.http_address().unwrap();
    let connect = |origin: &str| {
        let mut request = format!("ws://{http}/ws").into_client_request().unwrap();
        request
            .headers_mut()
            .insert("Origin", origin.parse().unwrap());
        let stream = TcpStream::connect(http).unwrap();
        match tungstenite::client(request, stream) {
            Ok(_) => 101,
            Err(tungstenite::HandshakeError::Failure(tungstenite::Error::Http(response))) => {
                response.status().as_u16()
            }
            Err(e) => panic!("{e}"),
        }
    };
    assert_eq!(connect(&format!("http://{http}")), 101);
    assert_eq!(connect("https://example.com"), 403);
    server.shutdown();
}

/// `/metrics` parsed by the Prometheus project's parser: (name, labels) -> value.
fn scrape(address: SocketAddr) -> BTreeMap<(String, BTreeMap<String, String>), f64> {
    let (status, text) = get(&format!("http://{address}/metrics"), None);
    assert_eq!(status, 200);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("metrics.txt");
    std::fs::write(&path, &text).unwrap();
    let parsed = common::run_reference("parse_openmetrics.py", &[path.to_str().unwrap()]);
    let samples: Vec<Value> = serde_json::from_str(&parsed).unwrap();
    samples
        .into_iter()
        .map(|sample| {
            let labels = serde_json::from_value(sample["labels"].clone()).unwrap();
            let key = (sample["name"].as_str().unwrap().to_owned(), labels);
            (key, sample["value"].as_f64().unwrap())
        })
        .collect()
}

fn label(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn metrics_health_and_readiness() {
    let (server, metrics) = start(true, false, None);
    let http = server.http_address().unwrap();
    assert_eq!(
        get(&format!("http://{http}/health"), None),
        (200, "ok\n".to_owned())
    );
    assert_eq!(get(&format!("http://{http}/ready"), None).0, 503);

    let before = scrape(http);
    let value = |scrape: &BTreeMap<_, f64>, name: &str, labels: &[(&str, &str)]| {
        scrape.get(&(name.to_owned(), label(labels))).copied()
    };
    assert_eq!(
        value(
            &before,
            "sapiens_capture_to_publish_seconds_count",
            &[("stream", "stream0")]
        ),
        None
    );
    assert_eq!(
        value(&before, "sapiens_frames_in_total", &[("stream", "stream0")]),
        None
    );
    metrics.name_stream(1, "door");

    for _ in 0..3 {
        metrics.frame_in(0);
    }
    metrics.frame_in(1);
    metrics.frame_dropped(0);
    metrics.frame_out(0);
    metrics.frame_out(0);
    metrics.reconnect(1);
    metrics.stage_latency("preprocess", Duration::from_millis(3));
    metrics.stage_latency("preprocess", Duration::from_millis(5));
    metrics.stage_latency("pose infer", Duration::from_millis(40));
    metrics.capture_to_publish(0, Duration::from_millis(70));
    metrics.batch_size("pose", 3);
    metrics.publisher_drops("mqtt", 2);
    assert_eq!(get(&format!("http://{http}/ready"), None).0, 200);

    let after = scrape(http);
    let expect = |name: &str, labels: &[(&str, &str)], expected: f64| {
        let found = value(&after, name, labels);
        assert!(
            found.is_some_and(|v| (v - expected).abs() < 1e-9),
            "{name}{labels:?}: {found:?}, expected {expected}"
        );
    };
    expect("sapiens_frames_in_total", &[("stream", "stream0")], 3.0);
    expect("sapiens_frames_in_total", &[("stream", "door")], 1.0);
    expect(
        "sapiens_frames_dropped_total",
        &[("stream", "stream0")],
        1.0,
    );
    expect("sapiens_frames_out_total", &[("stream", "stream0")], 2.0);
    expect("sapiens_reconnects_total", &[("stream", "door")], 1.0);
    expect(
        "sapiens_publisher_drops_total",
        &[("publisher", "mqtt")],
        2.0,
    );
    expect(
        "sapiens_stage_latency_seconds_count",
        &[("stage", "preprocess")],
        2.0,
    );
    expect(
        "sapiens_stage_latency_seconds_sum",
        &[("stage", "preprocess")],
        0.008,
    );
    // 3 and 5 ms against buckets doubling from 0.25 ms: both above 2 ms, both within 8 ms.
    expect(
        "sapiens_stage_latency_seconds_bucket",
        &[("stage", "preprocess"), ("le", "0.002")],
        0.0,
    );
    expect(
        "sapiens_stage_latency_seconds_bucket",
        &[("stage", "preprocess"), ("le", "0.004")],
        1.0,
    );
    expect(
        "sapiens_stage_latency_seconds_bucket",
        &[("stage", "preprocess"), ("le", "0.008")],
        2.0,
    );
    expect(
        "sapiens_stage_latency_seconds_count",
        &[("stage", "pose infer")],
        1.0,
    );
    let stream0 = [("stream", "stream0")];
    expect("sapiens_capture_to_publish_seconds_count", &stream0, 1.0);
    expect("sapiens_capture_to_publish_seconds_sum", &stream0, 0.07);
    let pose = |le| [("model", "pose"), ("le", le)];
    expect("sapiens_inference_batch_size_bucket", &pose("2.0"), 0.0);
    expect("sapiens_inference_batch_size_bucket", &pose("4.0"), 1.0);
    server.shutdown();
}

/// A solid-colour RGBA frame.
fn solid_frame(width: usize, height: usize, colour: [u8; 3]) -> Vec<u8> {
    [colour[0], colour[1], colour[2], 255].repeat(width * height)
}

/// Reads one part of a `multipart/x-mixed-replace` stream whose boundary was already read.
fn read_part(reader: &mut impl BufRead) -> Vec<u8> {
    let mut length = None;
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some(value) = line.strip_prefix("Content-Length: ") {
            length = Some(value.parse::<usize>().unwrap());
        }
    }
    let mut jpeg = vec![0; length.expect("every part has a Content-Length")];
    reader.read_exact(&mut jpeg).unwrap();
    let mut boundary = String::new();
    reader.read_line(&mut boundary).unwrap(); // the part's CRLF
    boundary.clear();
    reader.read_line(&mut boundary).unwrap();
    assert_eq!(boundary, "--frame\r\n");
    jpeg
}

#[test]
fn mjpeg_video_is_encoded_only_for_viewers_and_at_most_at_its_rate() {
    const COLOUR: [u8; 3] = [200, 40, 90];
    let (server, _metrics) = start(true, false, None);
    let http = server.http_address().unwrap();
    let frames = server.frames().hub("stream0");
    let pixels = solid_frame(320, 240, COLOUR);
    let view = ImageView::packed(&pixels, 320, 240, PixelFormat::Rgba);
    for _ in 0..50 {
        frames.publish_frame(&view);
    }
    thread::sleep(Duration::from_millis(100));
    assert_eq!(
        frames.encoded_frames(),
        0,
        "nobody watches: nothing is encoded"
    );

    let response = http_agent()
        .get(&format!("http://{http}/video.mjpeg"))
        .call()
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["content-type"],
        "multipart/x-mixed-replace; boundary=frame"
    );
    let mut reader = BufReader::new(response.into_body().into_reader());
    let mut opening = String::new();
    reader.read_line(&mut opening).unwrap();
    assert_eq!(opening, "--frame\r\n");
    assert_eq!(frames.watcher_count(), 1);

    let publishing = Arc::new(AtomicBool::new(true));
    let publisher = {
        let (frames, publishing) = (Arc::clone(&frames), Arc::clone(&publishing));
        thread::spawn(move || {
            let view = ImageView::packed(&pixels, 320, 240, PixelFormat::Rgba);
            let started = Instant::now();
            let mut offered = 0;
            while publishing.load(Ordering::Relaxed) {
                frames.publish_frame(&view);
                offered += 1;
                thread::sleep(Duration::from_millis(5));
            }
            (offered, started.elapsed())
        })
    };
    let jpeg = read_part(&mut reader);
    let image = image::load_from_memory_with_format(&jpeg, image::ImageFormat::Jpeg)
        .unwrap()
        .to_rgb8();
    assert_eq!(image.dimensions(), (320, 240));
    for pixel in image.pixels() {
        for (got, want) in pixel.0.iter().zip(COLOUR) {
            assert!(
                got.abs_diff(want) <= 3,
                "JPEG pixel {:?}, frame colour {COLOUR:?}",
                pixel.0
            );
        }
    }
    thread::sleep(Duration::from_millis(1500));
    publishing.store(false, Ordering::Relaxed);
    let (offered, elapsed) = publisher.join().unwrap();
    let encoded = frames.encoded_frames();
    let limit = elapsed.as_secs_f64() * NetworkOptions::default().video_fps + 2.0;
    println!("{offered} frames offered in {elapsed:?}, {encoded} encoded");
    assert!(
        encoded >= 5 && (encoded as f64) <= limit,
        "{encoded} encoded, limit {limit}"
    );
    drop(reader);
    let deadline = Instant::now() + Duration::from_secs(5);
    while frames.watcher_count() > 0 && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(
        frames.watcher_count(),
        0,
        "a viewer that left stops counting"
    );
    server.shutdown();
}

#[test]
fn shutdown_flushes_what_was_published_then_closes() {
    let (server, _metrics) = start(false, true, None);
    let mut client = ws_connect(server.ws_address().unwrap(), "/", None).unwrap();
    for frame in 0..20 {
        server.results().publish(&large_result(frame));
    }
    server.shutdown();
    let expected: Vec<Received> = (0..20).map(Received::Frame).collect();
    assert_eq!(read_until(&mut client, 19), expected);
    match client.read() {
        Ok(Message::Close(Some(frame))) => assert_eq!(u16::from(frame.code), 1001),
        other => panic!("expected a close frame, got {other:?}"),
    }
}

#[test]
fn a_busy_address_is_a_clear_error() {
    let (server, _metrics) = start(true, false, None);
    let taken = server.http_address().unwrap();
    let options = NetworkOptions {
        http: Some(taken),
        ..NetworkOptions::default()
    };
    let error = NetworkServer::start(&options, Arc::new(Metrics::new()))
        .err()
        .unwrap()
        .to_string();
    assert!(
        error.starts_with(&format!("HTTP server on {taken}: "))
            && error.to_lowercase().contains("in use"),
        "{error}"
    );
    assert!(!error.contains('\n'));
    server.shutdown();
}

/// Chromium from Debian's `chromium` package.
fn chromium() -> &'static str {
    let found = Command::new("chromium")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success());
    assert!(
        found,
        "the browser-view test needs Chromium (`chromium` on PATH): run scripts/setup.sh, which installs Debian's chromium package"
    );
    "chromium"
}

fn screenshot(url: &str, out: &Path) {
    let profile = tempfile::tempdir().unwrap();
    let mut child = Command::new(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
            "--force-device-scale-factor=1",
            "--window-size=800,600",
            "--virtual-time-budget=5000",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(format!("--screenshot={}", out.display()))
        .arg(url)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("chromium starts");
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("headless Chromium did not finish within 60 s");
        }
        thread::sleep(Duration::from_millis(100));
    }
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert!(out.exists(), "Chromium wrote no screenshot:\n{stderr}");
}

#[test]
fn the_browser_view_shows_the_video_and_draws_keypoints_mask_and_tracks() {
    const TOKEN: &str = "view-token";
    const WIDTH: usize = 320;
    const HEIGHT: usize = 240;
    const VIDEO: [u8; 3] = [40, 60, 160];
    let set: Value = serde_json::from_str(include_str!("../assets/keypoints_coco17.json")).unwrap();
    let colour = |key: &str, index: usize| -> [u8; 3] {
        serde_json::from_value(set[key][index].clone()).unwrap()
    };
    // Shoulders and hips of one person (COCO indices), the rest not detected.
    let placed: [(usize, [f32; 2]); 4] = [
        (5, [100.0, 70.0]),
        (6, [220.0, 70.0]),
        (11, [110.0, 180.0]),
        (12, [210.0, 180.0]),
    ];
    let mut keypoints = vec![[-1.0, -1.0, 0.0]; 17];
    for (index, [x, y]) in placed {
        keypoints[index] = [x, y, 0.9];
    }
    let hips_link = set["skeleton"]
        .as_array()
        .unwrap()
        .iter()
        .position(|link| link == &serde_json::json!([11, 12]))
        .unwrap();
    // A rectangle of upper clothing at the bottom right, published at half resolution.
    const CLOTHING: u8 = 22;
    let (mask_x, mask_y) = (240..310, 150..230);
    let class_map: Vec<u8> = (0..WIDTH * HEIGHT)
        .map(|i| {
            let inside = mask_x.contains(&(i % WIDTH)) && mask_y.contains(&(i / WIDTH));
            if inside { CLOTHING } else { 0 }
        })
        .collect();
    let parts: Value =
        serde_json::from_str(include_str!("../assets/seg_goliath_parts28.json")).unwrap();
    let clothing: [u8; 3] =
        serde_json::from_value(parts["palette_rgb"][CLOTHING as usize].clone()).unwrap();
    let mut result = frame_result(0, "coco17", keypoints, WIDTH, HEIGHT);
    // A tracked person: its box in its track's colour.
    const TRACK: u64 = 7;
    if let Some(person) = result.persons.as_mut().and_then(|p| p.first_mut()) {
        person.bbox = [60.0, 40.0, 260.0, 225.0];
        person.track_id = Some(TRACK);
    }
    result.segmentation = Some(SegmentationSummary {
        class_set: parts["name"].as_str().unwrap().to_owned(),
        class_pixels: Vec::new(),
        class_map_file: None,
        mask_file: None,
        mask: Some(ClassMask::from_class_map(
            &class_map,
            WIDTH,
            HEIGHT,
            WIDTH / 2,
        )),
    });

    let (server, _metrics) = start(true, false, Some(TOKEN));
    let http = server.http_address().unwrap();
    let running = Arc::new(AtomicBool::new(true));
    let publisher = {
        let (mut results, frames, running) = (
            Box::new(server.results().publisher()) as Box<dyn Publisher>,
            server.frames().hub("stream0"),
            Arc::clone(&running),
        );
        thread::spawn(move || {
            let pixels = solid_frame(WIDTH, HEIGHT, VIDEO);
            let view = ImageView::packed(&pixels, WIDTH, HEIGHT, PixelFormat::Rgba);
            let mut frame = 0;
            while running.load(Ordering::Relaxed) {
                frames.publish_frame(&view);
                result.frame = frame;
                // The way the pipeline publishes: through the Publisher trait.
                results.publish(&Published::new(&result)).unwrap();
                frame += 1;
                thread::sleep(Duration::from_millis(40));
            }
        })
    };
    let dir = tempfile::tempdir().unwrap();
    let shot = dir.path().join("view.png");
    screenshot(&format!("http://{http}/?token={TOKEN}"), &shot);
    running.store(false, Ordering::Relaxed);
    publisher.join().unwrap();
    server.shutdown();
    if let Some(keep) = std::env::var_os("SAPIENS_KEEP_SCREENSHOT") {
        std::fs::copy(&shot, keep).unwrap();
    }

    let image = image::open(&shot).unwrap().to_rgb8();
    assert_eq!(image.dimensions(), (800, 600));
    let near = |x: u32, y: u32, want: [u8; 3], what: &str| {
        let got = image.get_pixel(x, y).0;
        assert!(
            got.iter().zip(want).all(|(g, w)| g.abs_diff(w) <= 8),
            "{what} at ({x}, {y}): {got:?}, expected {want:?}"
        );
    };
    // The video at its natural size at the top left, the page's black background around it.
    near(20, 20, VIDEO, "video");
    near(300, 20, VIDEO, "video");
    near(20, 220, VIDEO, "video");
    near(20, 120, VIDEO, "video");
    near(
        WIDTH as u32 + 20,
        100,
        [0, 0, 0],
        "background right of the video",
    );
    near(
        100,
        HEIGHT as u32 + 20,
        [0, 0, 0],
        "background below the video",
    );
    // Keypoints in their set's colours where the results put them, and the hips' link.
    for (index, [x, y]) in placed {
        near(
            x as u32,
            y as u32,
            colour("keypoint_colors_rgb", index),
            &format!("keypoint {index}"),
        );
    }
    near(
        160,
        180,
        colour("skeleton_colors_rgb", hips_link),
        "link 11-12",
    );
    // The mask, half transparent over the video: 128/255 of the class colour.
    let blend: [u8; 3] = std::array::from_fn(|c| {
        (VIDEO[c] as f32 + (clothing[c] as f32 - VIDEO[c] as f32) * 128.0 / 255.0).round() as u8
    });
    near(60, 130, track_colour(TRACK), "tracked box, left edge");
    near(160, 225, track_colour(TRACK), "tracked box, bottom edge");
    near(275, 190, blend, "mask");
    near(245, 155, blend, "mask corner");
    near(235, 190, VIDEO, "left of the mask");
}

/// The run's side of `/streams` for a server started alone: two streams listed, nothing added.
struct TwoStreams;

impl StreamControl for TwoStreams {
    fn list(&self) -> Vec<StreamEntry> {
        ["left", "right"]
            .iter()
            .enumerate()
            .map(|(index, name)| StreamEntry {
                name: (*name).to_owned(),
                stream: index as u32,
                input: format!("test://{name}"),
                up: true,
                frames: 0,
                dropped: 0,
            })
            .collect()
    }

    fn add(&self, _: StreamRequest) -> Result<StreamEntry, StreamControlError> {
        Err(StreamControlError::Closed)
    }

    fn remove(&self, _: &str) -> Result<(), StreamControlError> {
        Err(StreamControlError::Closed)
    }
}

#[test]
fn the_browser_view_shows_every_stream_in_a_grid() {
    const WIDTH: usize = 320;
    const HEIGHT: usize = 240;
    let set: Value = serde_json::from_str(include_str!("../assets/keypoints_coco17.json")).unwrap();
    let nose: [u8; 3] = serde_json::from_value(set["keypoint_colors_rgb"][0].clone()).unwrap();
    let streams = [
        ("left", [30, 150, 60], [80.0, 60.0]),
        ("right", [150, 40, 40], [240.0, 180.0]),
    ];
    let (server, _metrics) = start(true, false, None);
    server.control_streams(Arc::new(TwoStreams));
    let http = server.http_address().unwrap();
    let running = Arc::new(AtomicBool::new(true));
    let publishers: Vec<_> = streams
        .iter()
        .enumerate()
        .map(|(index, &(name, colour, [x, y]))| {
            let mut keypoints = vec![[-1.0, -1.0, 0.0]; 17];
            keypoints[0] = [x, y, 0.9];
            let mut result = frame_result(0, "coco17", keypoints, WIDTH, HEIGHT);
            (result.stream, result.stream_name) = (index as u32, name.to_owned());
            let (frames, running) = (server.frames().hub(name), Arc::clone(&running));
            let mut results = Box::new(server.results().publisher()) as Box<dyn Publisher>;
            thread::spawn(move || {
                let pixels = solid_frame(WIDTH, HEIGHT, colour);
                let view = ImageView::packed(&pixels, WIDTH, HEIGHT, PixelFormat::Rgba);
                while running.load(Ordering::Relaxed) {
                    frames.publish_frame(&view);
                    results.publish(&Published::new(&result)).unwrap();
                    result.frame += 1;
                    thread::sleep(Duration::from_millis(40));
                }
            })
        })
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let shot = dir.path().join("grid.png");
    screenshot(&format!("http://{http}/"), &shot);
    running.store(false, Ordering::Relaxed);
    publishers.into_iter().for_each(|p| p.join().unwrap());
    server.shutdown();

    let image = image::open(&shot).unwrap().to_rgb8();
    let near = |x: f32, y: f32, want: [u8; 3], what: &str| {
        let got = image.get_pixel(x.round() as u32, y.round() as u32).0;
        assert!(
            got.iter().zip(want).all(|(g, w)| g.abs_diff(w) <= 8),
            "{what} at ({x}, {y}): {got:?}, expected {want:?}"
        );
    };
    // Two columns in an 800 px window: 4 px padding and gap, each video 394 px wide.
    let cell_width = (800.0 - 3.0 * 4.0) / 2.0;
    let scale = cell_width / WIDTH as f32;
    for (column, (name, colour, [x, y])) in streams.iter().enumerate() {
        let left = 4.0 + column as f32 * (cell_width + 4.0);
        near(
            left + 20.0,
            4.0 + 200.0 * scale,
            *colour,
            &format!("{name}'s video"),
        );
        near(
            left + x * scale,
            4.0 + y * scale,
            nose,
            &format!("{name}'s nose"),
        );
    }
}
