//! Publishers against real peers: OSC datagrams received on a UDP socket and decoded with rosc,
//! MQTT through a real mosquitto broker that the tests start, stop and restart.

mod common;

use std::collections::BTreeMap;
use std::net::{TcpListener, UdpSocket};
use std::path::Path;
use std::thread;
use std::time::{Duration, Instant, UNIX_EPOCH};

use common::mqtt::{Broker, Message, Seen, Subscriber};
use rosc::{OscPacket, OscTime, OscType};
use sapiens_stream::publish::mqtt::{MqttConfig, MqttPublisher, MqttQos};
use sapiens_stream::publish::osc::{MAX_DATAGRAM, OscPublisher};
use sapiens_stream::publish::{
    FrameResult, Published, PublishedStatus, PublishedTrack, Publisher, ResultsWriter, SCHEMA_NAME,
    SCHEMA_VERSION, SegmentationSummary, StreamId, StreamStatusMessage, TrackMessage,
};
use sapiens_stream::tasks::pose::Person;
use sapiens_stream::tasks::track::{TrackEvent, TrackEventKind};

const WIDTH: usize = 640;
const HEIGHT: usize = 480;

/// A deterministic person with `keypoints` keypoints; every fifth is invalid (score <= 0).
fn person(keypoints: usize, seed: u32) -> Person {
    let mut state = seed.wrapping_mul(2_654_435_761).wrapping_add(12345);
    let mut next = move || {
        state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
        (state >> 8) as f32 / (1 << 24) as f32
    };
    Person {
        bbox: [10.5, 20.25, 300.0, 470.75],
        score: 0.875,
        track_id: None,
        keypoints_raw: None,
        keypoints: (0..keypoints)
            .map(|k| {
                let (x, y, score) = (next() * WIDTH as f32, next() * HEIGHT as f32, next());
                if k % 5 == 4 {
                    [-1.0, -1.0, 0.0]
                } else {
                    [x, y, score]
                }
            })
            .collect(),
    }
}

fn frame_result(frame: u64, stream: u32, persons: Vec<Person>) -> FrameResult {
    FrameResult {
        schema: SCHEMA_NAME,
        version: SCHEMA_VERSION,
        stream,
        stream_name: format!("stream{stream}"),
        frame,
        pts_ns: Some(frame * 33_333_333),
        capture_unix_ns: 1_700_000_000_000_000_000 + frame,
        width: WIDTH,
        height: HEIGHT,
        models: BTreeMap::from([("pose", "sapiens_tiny_pose17".to_string())]),
        random_weights: true,
        keypoint_set: Some("coco17".into()),
        persons: Some(persons),
        segmentation: None,
        depth: None,
        normals: None,
        pointmap: None,
    }
}

fn keypoint_names(asset: &str) -> Vec<String> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("assets")
        .join(asset);
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    json["names"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_str().unwrap().to_string())
        .collect()
}

fn floats(values: &[f32]) -> Vec<OscType> {
    values.iter().map(|&v| OscType::Float(v)).collect()
}

/// The documented layout, written out independently of the publisher.
fn expected_osc(
    result: &FrameResult,
    root: &str,
    names: &[Vec<String>],
) -> Vec<(String, Vec<OscType>)> {
    let persons = result.persons.as_deref().unwrap();
    let mut expected = vec![(
        format!("{root}/frame"),
        vec![
            OscType::Int(result.frame as i32),
            OscType::Int(WIDTH as i32),
            OscType::Int(HEIGHT as i32),
            OscType::Int(persons.len() as i32),
        ],
    )];
    for (p, (person, names)) in persons.iter().zip(names).enumerate() {
        let [x1, y1, x2, y2] = person.bbox;
        expected.push((
            format!("{root}/person/{p}/bbox"),
            floats(&[x1, y1, x2, y2, person.score]),
        ));
        for (k, &[x, y, score]) in person.keypoints.iter().enumerate() {
            let normalised = if score > 0.0 {
                [x / WIDTH as f32, y / HEIGHT as f32, score]
            } else {
                [-1.0, -1.0, score]
            };
            expected.push((format!("{root}/person/{p}/kp/{k}"), floats(&[x, y, score])));
            expected.push((format!("{root}/person/{p}/kpn/{k}"), floats(&normalised)));
            expected.push((
                format!("{root}/person/{p}/{}", names[k]),
                floats(&normalised),
            ));
        }
    }
    if let Some(segmentation) = &result.segmentation {
        let total = (WIDTH * HEIGHT) as f64;
        let fractions: Vec<f32> = segmentation
            .class_pixels
            .iter()
            .map(|&n| (n as f64 / total) as f32)
            .collect();
        expected.push((format!("{root}/segmentation"), floats(&fractions)));
    }
    expected
}

/// Receives datagrams until `count` messages came; returns them and the datagram sizes.
fn receive_osc(socket: &UdpSocket, count: usize) -> (Vec<(String, Vec<OscType>)>, Vec<usize>) {
    let mut messages = Vec::new();
    let mut sizes = Vec::new();
    let mut buffer = vec![0u8; 65536];
    while messages.len() < count {
        let (len, _) = socket.recv_from(&mut buffer).unwrap_or_else(|e| {
            panic!("got {} of {count} OSC messages, then: {e}", messages.len())
        });
        sizes.push(len);
        let (rest, packet) = rosc::decoder::decode_udp(&buffer[..len]).unwrap();
        assert!(rest.is_empty(), "trailing bytes after the bundle");
        let OscPacket::Bundle(bundle) = packet else {
            panic!("expected a bundle, got {packet:?}")
        };
        assert_eq!(
            bundle.timetag,
            OscTime {
                seconds: 0,
                fractional: 1
            },
            "time tag 'immediately'"
        );
        for element in bundle.content {
            let OscPacket::Message(message) = element else {
                panic!("nested bundle")
            };
            messages.push((message.addr, message.args));
        }
    }
    (messages, sizes)
}

#[test]
fn osc_delivers_the_documented_layout_in_bounded_datagrams() {
    let receiver = UdpSocket::bind("127.0.0.1:0").unwrap();
    receiver
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut publisher = OscPublisher::connect(&receiver.local_addr().unwrap().to_string()).unwrap();
    let counters = publisher.counters();
    let names = [
        keypoint_names("keypoints_coco17.json"),
        keypoint_names("keypoints_goliath308.json"),
    ];

    let mut result = frame_result(7, 0, vec![person(17, 1), person(308, 2)]);
    let class_pixels: Vec<u64> = (0..28).map(|c| c * 1000 + 7).collect();
    result.segmentation = Some(SegmentationSummary {
        class_set: "goliath_parts28".into(),
        class_pixels,
        class_map_file: None,
        mask_file: None,
        mask: None,
    });
    let expected = expected_osc(&result, "/sapiens", &names);
    publisher.publish(&Published::new(&result)).unwrap();
    let (messages, sizes) = receive_osc(&receiver, expected.len());
    assert_eq!(messages.len(), expected.len());
    for (got, want) in messages.iter().zip(&expected) {
        assert_eq!(got, want);
    }
    assert!(
        sizes.iter().all(|&s| s <= MAX_DATAGRAM),
        "datagram sizes {sizes:?}"
    );
    assert!(
        sizes.len() >= 6,
        "a 308-keypoint person is split over several datagrams: {sizes:?}"
    );
    println!("OSC datagrams for frame + 17-kp person + 308-kp person + segmentation: {sizes:?}");

    // Another stream: its own root; a 17-keypoint person and the frame fit in one datagram.
    let result = frame_result(8, 3, vec![person(17, 3)]);
    let expected = expected_osc(&result, "/sapiens/stream/3", &names[..1]);
    publisher.publish(&Published::new(&result)).unwrap();
    let (messages, sizes) = receive_osc(&receiver, expected.len());
    assert_eq!(messages, expected);
    assert_eq!(sizes.len(), 1, "{sizes:?}");
    println!("OSC datagram for frame + 17-kp person: {sizes:?}");
    assert_eq!((counters.published(), counters.dropped()), (2, 0));
    Box::new(publisher).finish().unwrap();
}

#[test]
fn osc_send_errors_are_counted_not_fatal() {
    // A broadcast address without SO_BROADCAST: every send fails with "permission denied".
    let mut publisher = OscPublisher::connect("255.255.255.255:9").unwrap();
    let result = frame_result(0, 0, vec![person(17, 1)]);
    for _ in 0..3 {
        publisher.publish(&Published::new(&result)).unwrap();
    }
    assert_eq!(
        (
            publisher.counters().published(),
            publisher.counters().dropped()
        ),
        (3, 3)
    );

    for (target, reason) in [
        ("localhost", "expected host:port"),
        ("127.0.0.1:notaport", "expected host:port"),
    ] {
        let message = OscPublisher::connect(target).err().unwrap().to_string();
        assert!(
            message.contains(reason) && message.contains(target),
            "{message}"
        );
    }
    assert!(
        OscPublisher::connect("localhost:9000")
            .unwrap()
            .target()
            .is_ipv4(),
        "localhost prefers IPv4"
    );
}

#[test]
fn results_writer_is_a_publisher() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("results.jsonl");
    let mut writer: Box<dyn Publisher> = Box::new(ResultsWriter::create(&path).unwrap());
    let results: Vec<FrameResult> = (0..3)
        .map(|i| frame_result(i, 0, vec![person(17, i as u32)]))
        .collect();
    for result in &results {
        writer.publish(&Published::new(result)).unwrap();
    }
    writer.finish().unwrap();
    let lines: Vec<String> = std::fs::read_to_string(&path)
        .unwrap()
        .lines()
        .map(String::from)
        .collect();
    let expected: Vec<String> = results
        .iter()
        .map(|r| serde_json::to_string(r).unwrap())
        .collect();
    assert_eq!(lines, expected);
}

// ---------------------------------------------------------------------------------------------
// MQTT

fn results(frames: std::ops::Range<u64>) -> Vec<FrameResult> {
    // Every tenth frame has a 308-keypoint person too: about 10 KB of JSON, over rumqttc's
    // default packet limit.
    frames
        .map(|i| {
            let mut persons = vec![person(17, i as u32)];
            if i % 10 == 0 {
                persons.push(person(308, i as u32));
            }
            frame_result(i, 0, persons)
        })
        .collect()
}

fn json(result: &FrameResult) -> Vec<u8> {
    serde_json::to_vec(result).unwrap()
}

fn frame_index(payload: &[u8]) -> u64 {
    serde_json::from_slice::<serde_json::Value>(payload).unwrap()["frame"]
        .as_u64()
        .unwrap()
}

fn config(broker: &Broker, topic: &str, qos: MqttQos) -> MqttConfig {
    let mut config = MqttConfig::from_url(&broker.url(topic)).unwrap();
    config.qos = qos;
    config.client_id = format!("publisher-{topic}");
    config
}

fn status_values(messages: &[Message], status_topic: &str) -> Vec<String> {
    messages
        .iter()
        .filter(|(topic, _)| topic == status_topic)
        .map(|(_, payload)| String::from_utf8(payload.clone()).unwrap())
        .collect()
}

#[test]
fn mqtt_delivers_every_result_in_order_at_qos_0_and_1() {
    let broker = Broker::start();
    for (qos, topic) in [
        (MqttQos::AtLeastOnce, "cam/qos1"),
        (MqttQos::AtMostOnce, "cam/qos0"),
    ] {
        let config = config(&broker, topic, qos);
        let status_topic = config.status_topic();
        let subscriber = Subscriber::start(
            broker.port,
            &format!("sub-{topic}"),
            &[topic, &status_topic],
        );
        let mut publisher = MqttPublisher::start(&config).unwrap();
        let counters = publisher.counters();
        let sent = results(0..120);
        for result in &sent {
            publisher.publish(&Published::new(result)).unwrap();
        }
        let (received, mut others) = subscriber.collect(topic, sent.len());
        assert!(
            received.len() == sent.len() && received.iter().zip(&sent).all(|(r, s)| *r == json(s)),
            "{qos:?}: results differ"
        );
        Box::new(publisher).finish().unwrap();
        assert_eq!(
            (
                counters.published(),
                counters.dropped(),
                counters.reconnects()
            ),
            (120, 0, 0)
        );

        // `offline` arrives after the last result; a late subscriber finds it retained.
        while status_values(&others, &status_topic)
            .last()
            .map(String::as_str)
            != Some("offline")
        {
            if let Seen::Message { topic, payload } = subscriber.next() {
                others.push((topic, payload));
            }
        }
        assert_eq!(status_values(&others, &status_topic), ["online", "offline"]);
        let late = Subscriber::start(broker.port, &format!("late-{topic}"), &[&status_topic]);
        assert_eq!(late.collect(&status_topic, 1).0, [b"offline".to_vec()]);
    }
}

#[test]
fn mqtt_survives_a_broker_restart_without_blocking_the_caller() {
    let topic = "cam/restart";
    let mut broker = Broker::start();
    let mut config = config(&broker, topic, MqttQos::AtLeastOnce);
    config.queue_capacity = 32;
    config.max_reconnect_delay = Duration::from_millis(400);
    let status_topic = config.status_topic();
    let subscriber = Subscriber::start(broker.port, "sub-restart", &[topic, &status_topic]);
    let mut publisher = MqttPublisher::start(&config).unwrap();
    let counters = publisher.counters();

    let before = results(0..20);
    for result in &before {
        publisher.publish(&Published::new(result)).unwrap();
    }
    let (mut received, _) = subscriber.collect(topic, before.len());
    assert!(received.iter().zip(&before).all(|(r, s)| *r == json(s)));

    // The broker is away for 2.5 s while frames keep coming at 50 per second.
    broker.stop();
    let outage = results(20..145);
    let mut slowest = Duration::ZERO;
    for result in &outage {
        let start = Instant::now();
        publisher.publish(&Published::new(result)).unwrap();
        slowest = slowest.max(start.elapsed());
        thread::sleep(Duration::from_millis(20));
    }
    assert!(
        slowest < Duration::from_millis(50),
        "publish blocked for {slowest:?} while the broker was away"
    );
    assert!(
        counters.dropped() > 0,
        "the bounded queue overflowed during the outage"
    );

    broker.resume();
    let deadline = Instant::now() + Duration::from_secs(10);
    while counters.reconnects() < 1 {
        assert!(Instant::now() < deadline, "the publisher did not reconnect");
        thread::sleep(Duration::from_millis(20));
    }
    subscriber.wait_subscribed();
    let after = results(145..185);
    for result in &after {
        publisher.publish(&Published::new(result)).unwrap();
        thread::sleep(Duration::from_millis(20));
    }
    // Whatever of the outage made it arrives first, in order; then every result sent after.
    let mut tail = Vec::new();
    while tail.len() < after.len() {
        let (mut more, _) = subscriber.collect(topic, 1);
        let payload = more.pop().unwrap();
        if frame_index(&payload) >= 145 {
            tail.push(payload.clone());
        }
        received.push(payload);
    }
    assert!(
        tail.iter().zip(&after).all(|(r, s)| *r == json(s)),
        "results after the restart differ"
    );
    let indexes: Vec<u64> = received.iter().map(|p| frame_index(p)).collect();
    assert!(
        indexes.windows(2).all(|w| w[0] < w[1]),
        "out of order or repeated: {indexes:?}"
    );
    Box::new(publisher).finish().unwrap();
    // While the outage's backlog drains, a result sent after the restart may still find the
    // queue full and push out the oldest waiting one: drops are of outage results only, as
    // every result before the outage and after the restart arrived.
    assert_eq!(counters.reconnects(), 1);
    assert!(
        counters.dropped() <= outage.len() as u64,
        "{} dropped, more than the {} results of the outage",
        counters.dropped(),
        outage.len()
    );
    println!(
        "broker restart: {} published, {} dropped, {} received, slowest publish {slowest:?}",
        counters.published(),
        counters.dropped(),
        indexes.len()
    );
}

#[test]
fn mqtt_shutdown_wait_is_bounded_when_the_broker_is_away() {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut config = MqttConfig::from_url(&format!("mqtt://127.0.0.1:{port}/nobody")).unwrap();
    config.flush_timeout = Duration::from_millis(800);
    let mut publisher = MqttPublisher::start(&config).unwrap();
    for result in &results(0..3) {
        publisher.publish(&Published::new(result)).unwrap();
    }
    let start = Instant::now();
    let message = Box::new(publisher).finish().unwrap_err().to_string();
    let waited = start.elapsed();
    assert!(
        message.contains("the broker did not take the last results"),
        "{message}"
    );
    assert!(
        waited >= Duration::from_millis(800) && waited < Duration::from_secs(2),
        "waited {waited:?}"
    );
}

#[test]
fn mqtt_stream_status_is_retained_and_cleared_by_the_next_run() {
    let broker = Broker::start();
    let topic = "cam/stream-status";
    let config = config(&broker, topic, MqttQos::AtMostOnce);
    let (stream_topic, status_topic) = (config.stream_topic(), config.status_topic());
    let live = Subscriber::start(broker.port, "sub-stream", &[&stream_topic]);
    let mut publisher = MqttPublisher::start(&config).unwrap();
    let at = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    let stream = StreamId::new(0, "stream0");
    let down = StreamStatusMessage::down(&stream, "no frame for 5 s", 0, at);
    let up = StreamStatusMessage::up(&stream, 1, at);
    let json = |message: &StreamStatusMessage| serde_json::to_vec(message).unwrap();

    // Whatever a run left retained is cleared (an empty retained message) before the first change.
    publisher
        .publish_status(&PublishedStatus::new(&down))
        .unwrap();
    assert_eq!(live.collect(&stream_topic, 2).0, [Vec::new(), json(&down)]);
    // Retained: a subscriber that arrives during the outage learns of it at once.
    let during = Subscriber::start(broker.port, "late-during", &[&stream_topic]);
    assert_eq!(during.collect(&stream_topic, 1).0, [json(&down)]);
    publisher
        .publish_status(&PublishedStatus::new(&up))
        .unwrap();
    assert_eq!(live.collect(&stream_topic, 1).0, [json(&up)]);
    assert_eq!(during.collect(&stream_topic, 1).0, [json(&up)]);
    Box::new(publisher).finish().unwrap();
    let after = Subscriber::start(broker.port, "late-after", &[&stream_topic]);
    assert_eq!(after.collect(&stream_topic, 1).0, [json(&up)]);

    // The next run starts with no retained status; `<topic>/status` is unaffected.
    let next = MqttPublisher::start(&config).unwrap();
    assert_eq!(live.collect(&stream_topic, 1).0, [Vec::<u8>::new()]);
    // Retained messages come in the order of the filters: a stream status would precede `online`.
    let fresh = Subscriber::start(broker.port, "late-next", &[&stream_topic, &status_topic]);
    let (status, others) = fresh.collect(&status_topic, 1);
    assert_eq!((status, others), (vec![b"online".to_vec()], vec![]));
    Box::new(next).finish().unwrap();
}

#[test]
fn osc_status_messages_follow_the_documented_layout() {
    let receiver = UdpSocket::bind("127.0.0.1:0").unwrap();
    receiver
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let target = receiver.local_addr().unwrap().to_string();
    let mut publisher = OscPublisher::connect(&target).unwrap();
    let at = UNIX_EPOCH;
    for message in [
        StreamStatusMessage::down(&StreamId::new(0, "stream0"), "end of stream", 0, at),
        StreamStatusMessage::up(&StreamId::new(0, "stream0"), 1, at),
        StreamStatusMessage::down(&StreamId::new(3, "door"), "no frame for 5 s", 7, at),
    ] {
        publisher
            .publish_status(&PublishedStatus::new(&message))
            .unwrap();
    }
    let mut buffer = vec![0; MAX_DATAGRAM];
    let mut received = Vec::new();
    for _ in 0..3 {
        let (len, _) = receiver.recv_from(&mut buffer).unwrap();
        let (_, packet) = rosc::decoder::decode_udp(&buffer[..len]).unwrap();
        let OscPacket::Bundle(bundle) = packet else {
            panic!("expected a bundle: {packet:?}")
        };
        assert_eq!(bundle.content.len(), 1, "one message per status bundle");
        let OscPacket::Message(message) = &bundle.content[0] else {
            panic!("expected a message in the bundle")
        };
        received.push((message.addr.clone(), message.args.clone()));
    }
    let s = |text: &str| OscType::String(text.to_owned());
    assert_eq!(
        received,
        [
            (
                "/sapiens/status".to_owned(),
                vec![OscType::Int(0), OscType::Int(0), s("end of stream")]
            ),
            (
                "/sapiens/status".to_owned(),
                vec![OscType::Int(1), OscType::Int(1), s("")]
            ),
            (
                "/sapiens/stream/3/status".to_owned(),
                vec![OscType::Int(0), OscType::Int(7), s("no frame for 5 s")]
            ),
        ]
    );
}

fn track_messages() -> [TrackMessage; 2] {
    let event = |kind, track_id, frames| TrackEvent {
        kind,
        track_id,
        first_seen_s: 1.5,
        last_seen_s: 4.25,
        frames,
    };
    [
        TrackMessage::new(
            &StreamId::new(0, "stream0"),
            &event(TrackEventKind::Confirmed, 3, 2),
        ),
        TrackMessage::new(
            &StreamId::new(2, "door"),
            &event(TrackEventKind::Lost, 4, 77),
        ),
    ]
}

#[test]
fn mqtt_track_events_go_to_their_topic_in_order() {
    let broker = Broker::start();
    let config = config(&broker, "cam/tracks", MqttQos::AtMostOnce);
    let track_topic = config.track_topic();
    let subscriber = Subscriber::start(broker.port, "sub-tracks", &[&track_topic]);
    let mut publisher = MqttPublisher::start(&config).unwrap();
    let messages = track_messages();
    for message in &messages {
        publisher
            .publish_track(&PublishedTrack::new(message))
            .unwrap();
    }
    let (payloads, others) = subscriber.collect(&track_topic, 2);
    assert!(others.is_empty(), "{others:?}");
    let received: Vec<serde_json::Value> = payloads
        .iter()
        .map(|p| serde_json::from_slice(p).unwrap())
        .collect();
    assert_eq!(
        received[0],
        serde_json::json!({"schema": "sapiens-stream/track", "version": 1, "stream": 0,
            "stream_name": "stream0", "event": "confirmed", "track_id": 3, "first_seen_s": 1.5, "last_seen_s": 4.25, "frames": 2})
    );
    assert_eq!(
        (received[1]["event"].clone(), received[1]["stream"].clone()),
        ("lost".into(), 2.into())
    );
    Box::new(publisher).finish().unwrap();
}

#[test]
fn osc_track_events_follow_the_documented_layout() {
    let receiver = UdpSocket::bind("127.0.0.1:0").unwrap();
    receiver
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut publisher = OscPublisher::connect(&receiver.local_addr().unwrap().to_string()).unwrap();
    for message in &track_messages() {
        publisher
            .publish_track(&PublishedTrack::new(message))
            .unwrap();
    }
    let (received, _) = receive_osc(&receiver, 2);
    let s = |text: &str| OscType::String(text.to_owned());
    assert_eq!(
        received,
        [
            (
                "/sapiens/track".to_owned(),
                vec![
                    s("confirmed"),
                    OscType::Int(3),
                    OscType::Float(1.5),
                    OscType::Float(4.25),
                    OscType::Int(2)
                ]
            ),
            (
                "/sapiens/stream/2/track".to_owned(),
                vec![
                    s("lost"),
                    OscType::Int(4),
                    OscType::Float(1.5),
                    OscType::Float(4.25),
                    OscType::Int(77)
                ]
            ),
        ]
    );
}

#[test]
fn mqtt_streams_have_topics_of_their_own() {
    let broker = Broker::start();
    let config = MqttConfig {
        per_stream: true,
        ..config(&broker, "site", MqttQos::AtLeastOnce)
    };
    let subscriber = Subscriber::start(broker.port, "sub-site", &["site/#"]);
    let mut publisher = MqttPublisher::start(&config).unwrap();
    let door = StreamId::new(1, "door");
    let at = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    let down = StreamStatusMessage::down(&door, "no frame for 5 s", 0, at);
    publisher
        .publish_status(&PublishedStatus::new(&down))
        .unwrap();
    let mut results = Vec::new();
    for (index, stream) in [(0, "hall"), (1, "door"), (0, "hall")] {
        let mut result = frame_result(results.len() as u64, index, Vec::new());
        result.stream_name = stream.to_owned();
        publisher.publish(&Published::new(&result)).unwrap();
        results.push(result);
    }
    Box::new(publisher).finish().unwrap();

    // `offline` comes last, after everything the publisher queued.
    let (_, others) = subscriber.collect("site/status", 2);
    let on = |topic: &str| -> Vec<Vec<u8>> {
        others
            .iter()
            .filter(|(t, _)| t == topic)
            .map(|(_, payload)| payload.clone())
            .collect()
    };
    assert_eq!(
        on("site/door/stream"),
        [Vec::new(), serde_json::to_vec(&down).unwrap()],
        "the stream's retained status cleared before its first"
    );
    assert_eq!(on("site/hall/stream"), [Vec::<u8>::new()]);
    assert_eq!(on("site/hall"), [json(&results[0]), json(&results[2])]);
    assert_eq!(on("site/door"), [json(&results[1])]);
    assert!(on("site/stream").is_empty(), "no shared stream topic");
}
