//! OSC over UDP (`--osc host:port`), for TouchDesigner, Max, Pure Data, Unity and other
//! prototyping tools.
//!
//! # Address layout
//!
//! Each processed frame goes out as one or more OSC bundles, one bundle per UDP datagram of at
//! most [`MAX_DATAGRAM`] bytes (a message is never split; the first bundle of a frame starts with
//! `/sapiens/frame`). Bundles carry the time tag "immediately". Integers are `i` (int32), text is
//! `s`, every other value is `f` (float32).
//!
//! | address | arguments | meaning |
//! | --- | --- | --- |
//! | `/sapiens/frame` | `i frame, i width, i height, i persons` | frame index (wraps at 2^31), frame size in pixels, number of persons in this frame |
//! | `/sapiens/person/<p>/bbox` | `f x1, f y1, f x2, f y2, f score` | person box in pixels and its detector score |
//! | `/sapiens/person/<p>/track` | `i id` | the person's track ID (with `--track` or `--smooth`, once the track is confirmed) |
//! | `/sapiens/person/<p>/kp/<k>` | `f x, f y, f score` | keypoint `k` in pixels |
//! | `/sapiens/person/<p>/kpn/<k>` | `f x, f y, f score` | keypoint `k` normalised: `x / width`, `y / height`, 0..1 |
//! | `/sapiens/person/<p>/<name>` | `f x, f y, f score` | the same normalised keypoint by name, e.g. `/sapiens/person/0/left_wrist` |
//! | `/sapiens/segmentation` | one `f` per class | fraction of the frame's pixels in each body-part class, in class-set order |
//! | `/sapiens/status` | `i up, i reconnects, s reason` | a live input went down (`up` 0, `reason` why) or came back (`up` 1, `reason` empty); `reconnects`: times it came back so far. Sent once per change, in a bundle of its own |
//! | `/sapiens/track` | `s event, i id, f first_seen, f last_seen, i frames` | a track `confirmed` or `lost` (stream seconds of its first and last detection, frames it was seen in), in a bundle of its own |
//!
//! `p` numbers the persons of a frame from 0 (highest detection score first, so a person's `p`
//! changes from frame to frame); to follow one person, find the `p` whose
//! `/sapiens/person/<p>/track` is its ID in each frame's bundles and read that `p`'s addresses.
//! `k` is the keypoint's index in the model's keypoint set (COCO 17, COCO-WholeBody 133 or Goliath 308; names from `assets/keypoints_*.json`). A keypoint with
//! score <= 0 is invalid and has x = y = -1 in both forms. Receivers keep the last value of an
//! address, so a person who left the frame keeps its values: use the person count of
//! `/sapiens/frame` to hide them. Frames of stream `s` > 0 use the root `/sapiens/stream/<s>`
//! instead of `/sapiens`.
//!
//! Sizes: a 17-keypoint person and its frame fit in one datagram (about 2.8 KB); a 308-keypoint
//! person takes about 53 KB, 7 datagrams. UDP is lossy by design: a send that fails (no route,
//! full socket buffer) drops that frame and is counted, never fatal, and a receiver that starts
//! late or restarts simply picks up the next frame.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, ToSocketAddrs, UdpSocket};
use std::sync::Arc;

use rosc::{OscBundle, OscMessage, OscPacket, OscTime, OscType, encoder};
use tracing::{info, warn};

use super::{
    FrameResult, Published, PublishedStatus, PublishedTrack, Publisher, StreamState,
    StreamStatusMessage, TrackMessage,
};
use crate::error::{Error, Result};
use crate::metrics::PublisherCounters;
use crate::tasks::keypoint_sets::keypoint_set;
use crate::tasks::track::TrackEventKind;

/// Largest datagram sent: within the default receive buffers of Max, Pure Data and
/// TouchDesigner, and far below the 64 KB UDP limit.
pub const MAX_DATAGRAM: usize = 8192;
/// `#bundle\0` and the 8-byte time tag.
const BUNDLE_HEADER_LEN: usize = 16;
/// Each bundle element is preceded by its 4-byte length.
const ELEMENT_LEN_PREFIX: usize = 4;
/// The OSC time tag that means "process on arrival".
const IMMEDIATELY: OscTime = OscTime {
    seconds: 0,
    fractional: 1,
};

/// Sends every frame's results as OSC bundles to one UDP address.
pub struct OscPublisher {
    socket: UdpSocket,
    target: SocketAddr,
    counters: Arc<PublisherCounters>,
    failing: bool,
}

impl OscPublisher {
    /// Resolves `target` (`host:port`) and binds a non-blocking socket on an ephemeral local port.
    pub fn connect(target: &str) -> Result<Self> {
        let target = resolve(target)?;
        let local: SocketAddr = match target {
            SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
            SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
        };
        let socket =
            UdpSocket::bind(local).map_err(|e| Error::io("binding a UDP socket for OSC", e))?;
        socket
            .set_nonblocking(true)
            .map_err(|e| Error::io("making the OSC socket non-blocking", e))?;
        Ok(OscPublisher {
            socket,
            target,
            counters: Arc::default(),
            failing: false,
        })
    }

    /// The resolved destination.
    pub fn target(&self) -> SocketAddr {
        self.target
    }

    pub fn counters(&self) -> Arc<PublisherCounters> {
        Arc::clone(&self.counters)
    }

    /// Sends one message's datagrams; a failure drops the message and is counted, never fatal.
    fn send(&mut self, datagrams: Vec<Vec<u8>>) {
        self.counters.count_published();
        // Unconnected send_to: a receiver that is not running yet is not an error (no ICMP feedback).
        let mut failure = None;
        for datagram in datagrams {
            if let Err(e) = self.socket.send_to(&datagram, self.target) {
                failure = Some(e);
            }
        }
        match failure {
            Some(e) => {
                self.counters.count_dropped();
                if !self.failing {
                    warn!(
                        "OSC to {}: sending failed ({e}); frames are dropped until it works again",
                        self.target
                    );
                    self.failing = true;
                }
            }
            None if self.failing => {
                info!("OSC to {}: sending works again", self.target);
                self.failing = false;
            }
            None => {}
        }
    }
}

impl Publisher for OscPublisher {
    fn name(&self) -> &'static str {
        "osc"
    }

    fn publish(&mut self, frame: &Published) -> Result<()> {
        self.send(frame_datagrams(frame.result));
        Ok(())
    }

    fn publish_status(&mut self, status: &PublishedStatus) -> Result<()> {
        self.send(vec![status_datagram(status.message)]);
        Ok(())
    }

    fn publish_track(&mut self, track: &PublishedTrack) -> Result<()> {
        self.send(vec![track_datagram(track.message)]);
        Ok(())
    }

    fn finish(self: Box<Self>) -> Result<()> {
        Ok(())
    }
}

/// `host:port` -> socket address, preferring IPv4: most OSC receivers listen on 0.0.0.0, which
/// `localhost` resolved to `::1` would miss.
pub fn resolve(target: &str) -> Result<SocketAddr> {
    let error = |message: String| Error::Publish {
        target: format!("OSC {target}"),
        message,
    };
    let addresses: Vec<SocketAddr> = target
        .to_socket_addrs()
        .map_err(|e| error(format!("{e}; expected host:port, e.g. 127.0.0.1:9000")))?
        .collect();
    addresses
        .iter()
        .find(|a| a.is_ipv4())
        .or(addresses.first())
        .copied()
        .ok_or_else(|| error("the host name resolves to no address".into()))
}

/// The frame's OSC messages packed greedily into bundles of at most [`MAX_DATAGRAM`] bytes.
pub fn frame_datagrams(result: &FrameResult) -> Vec<Vec<u8>> {
    let mut datagrams = Vec::new();
    let mut bundle = Vec::new();
    let mut bundle_len = BUNDLE_HEADER_LEN;
    let mut scratch = Vec::new();
    for message in frame_messages(result) {
        let message = OscPacket::Message(message);
        scratch.clear();
        let Ok(message_len) = encoder::encode_into(&message, &mut scratch);
        let element_len = ELEMENT_LEN_PREFIX + message_len;
        if !bundle.is_empty() && bundle_len + element_len > MAX_DATAGRAM {
            datagrams.push(encode_bundle(std::mem::take(&mut bundle)));
            bundle_len = BUNDLE_HEADER_LEN;
        }
        bundle.push(message);
        bundle_len += element_len;
    }
    datagrams.push(encode_bundle(bundle));
    datagrams
}

fn encode_bundle(content: Vec<OscPacket>) -> Vec<u8> {
    let bundle = OscPacket::Bundle(OscBundle {
        timetag: IMMEDIATELY,
        content,
    });
    let mut bytes = Vec::new();
    let Ok(_) = encoder::encode_into(&bundle, &mut bytes);
    bytes
}

/// The root of a stream's addresses: `/sapiens`, or `/sapiens/stream/<s>` for stream s > 0.
fn root(stream: u32) -> String {
    match stream {
        0 => "/sapiens".to_string(),
        stream => format!("/sapiens/stream/{stream}"),
    }
}

/// `<root>/status` in a bundle of its own, as documented above.
pub fn status_datagram(message: &StreamStatusMessage) -> Vec<u8> {
    let up = i32::from(message.status == StreamState::Up);
    let reconnects = i32::try_from(message.reconnects).unwrap_or(i32::MAX);
    encode_bundle(vec![OscPacket::Message(OscMessage {
        addr: format!("{}/status", root(message.stream)),
        args: vec![
            OscType::Int(up),
            OscType::Int(reconnects),
            OscType::String(message.reason.clone().unwrap_or_default()),
        ],
    })])
}

/// `<root>/track` in a bundle of its own, as documented above.
pub fn track_datagram(message: &TrackMessage) -> Vec<u8> {
    let event = match message.event {
        TrackEventKind::Confirmed => "confirmed",
        TrackEventKind::Lost => "lost",
    };
    encode_bundle(vec![OscPacket::Message(OscMessage {
        addr: format!("{}/track", root(message.stream)),
        args: vec![
            OscType::String(event.into()),
            OscType::Int(i32::try_from(message.track_id).unwrap_or(i32::MAX)),
            OscType::Float(message.first_seen_s as f32),
            OscType::Float(message.last_seen_s as f32),
            OscType::Int(i32::try_from(message.frames).unwrap_or(i32::MAX)),
        ],
    })])
}

/// Every message of the layout documented above, in order: frame, then per person its box and
/// per keypoint the pixel, normalised and named forms, then the segmentation.
fn frame_messages(result: &FrameResult) -> Vec<OscMessage> {
    let root = root(result.stream);
    let persons = result.persons.as_deref().unwrap_or_default();
    let (width, height) = (result.width as f32, result.height as f32);
    let mut messages = vec![OscMessage {
        addr: format!("{root}/frame"),
        args: vec![
            OscType::Int((result.frame & i32::MAX as u64) as i32),
            OscType::Int(result.width as i32),
            OscType::Int(result.height as i32),
            OscType::Int(persons.len() as i32),
        ],
    }];
    for (p, person) in persons.iter().enumerate() {
        let person_root = format!("{root}/person/{p}");
        let [x1, y1, x2, y2] = person.bbox;
        messages.push(floats(
            format!("{person_root}/bbox"),
            &[x1, y1, x2, y2, person.score],
        ));
        if let Some(id) = person.track_id {
            messages.push(OscMessage {
                addr: format!("{person_root}/track"),
                args: vec![OscType::Int(i32::try_from(id).unwrap_or(i32::MAX))],
            });
        }
        let names = keypoint_set(person.keypoints.len()).map(|set| &set.names);
        for (k, &[x, y, score]) in person.keypoints.iter().enumerate() {
            let normalised = if score > 0.0 {
                [x / width, y / height, score]
            } else {
                [-1.0, -1.0, score]
            };
            messages.push(floats(format!("{person_root}/kp/{k}"), &[x, y, score]));
            messages.push(floats(format!("{person_root}/kpn/{k}"), &normalised));
            if let Some(names) = names {
                messages.push(floats(format!("{person_root}/{}", names[k]), &normalised));
            }
        }
    }
    if let Some(segmentation) = &result.segmentation {
        let frame_pixels = (result.width * result.height) as f64;
        let fractions: Vec<f32> = segmentation
            .class_pixels
            .iter()
            .map(|&pixels| (pixels as f64 / frame_pixels) as f32)
            .collect();
        messages.push(floats(format!("{root}/segmentation"), &fractions));
    }
    messages
}

fn floats(addr: String, values: &[f32]) -> OscMessage {
    OscMessage {
        addr,
        args: values.iter().map(|&v| OscType::Float(v)).collect(),
    }
}
