//! Structured results: the versioned per-frame JSON schema, the [`Publisher`] trait every output
//! of results implements, and the JSON-lines writer. [`osc`] and [`mqtt`] stream results to apps;
//! [`server`] is the network side: the WebSocket results stream ([`results_hub`]), the browser
//! view and its video ([`frame_hub`]), metrics and health over HTTP.

pub mod frame_hub;
pub mod mqtt;
pub mod osc;
pub mod results_hub;
pub mod server;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::error::{Error, Result};
use crate::tasks::pose::Person;
use crate::tasks::track::{TrackEvent, TrackEventKind};

pub const SCHEMA_NAME: &str = "sapiens-stream/result";
/// Bumped on any change a consumer could notice; documented in the README.
pub const SCHEMA_VERSION: u32 = 1;

/// `schema` of the message that says a live input went down or came back ([`StreamStatusMessage`]).
/// Results keep [`SCHEMA_NAME`]: consumers tell the two apart by `schema`.
pub const STATUS_SCHEMA: &str = "sapiens-stream/status";
/// Version of the [`STATUS_SCHEMA`] message, bumped on any change a consumer could notice.
pub const STATUS_VERSION: u32 = 1;
/// Schema name of a track event message.
pub const TRACK_SCHEMA: &str = "sapiens-stream/track";
/// Version of the [`TRACK_SCHEMA`] message, bumped on any change a consumer could notice.
pub const TRACK_VERSION: u32 = 1;

/// One processed frame, as published.
#[derive(Clone, Debug, Serialize)]
pub struct FrameResult {
    pub schema: &'static str,
    pub version: u32,
    /// The stream's index: its place among the inputs, streams added later after them.
    pub stream: u32,
    pub stream_name: String,
    pub frame: u64,
    pub pts_ns: Option<u64>,
    /// Wall-clock time the frame was decoded, nanoseconds since the Unix epoch.
    pub capture_unix_ns: u64,
    pub width: usize,
    pub height: usize,
    /// Task name -> model id (file stem).
    pub models: BTreeMap<&'static str, String>,
    /// True when any model has random weights: the values are then not real results.
    pub random_weights: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keypoint_set: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub persons: Option<Vec<Person>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub segmentation: Option<SegmentationSummary>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub depth: Option<DepthSummary>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub normals: Option<NormalsSummary>,
    /// A Sapiens2 pointmap model's frame (see [`PointmapSummary`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pointmap: Option<PointmapSummary>,
}

/// Version of the [`PointmapSummary`] entry, bumped on any change a consumer could notice.
pub const POINTMAP_VERSION: u32 = 1;

/// Per-frame Sapiens2 point map: camera-frame points in metres (x right, y down, z forward, as
/// OpenCV), their z being the frame's `depth`.
#[derive(Clone, Debug, Serialize)]
pub struct PointmapSummary {
    pub version: u32,
    pub units: &'static str,
    /// The model's scale: metric points are its canonical map divided by it.
    pub scale: f32,
    /// The horizontal focal length in frame pixels the scale implies (the model's canonical
    /// focal of 768 input pixels over the scale, back to the frame).
    pub focal_length_px: f32,
    /// `--pointcloud-dir`: the frame's points as binary PLY (persons only with a seg model).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pointcloud_file: Option<String>,
    /// Points in that file.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub points: Option<usize>,
}

/// Per-frame segmentation summary; the full-size class map itself is drawn, not inlined.
#[derive(Clone, Debug, Serialize)]
pub struct SegmentationSummary {
    pub class_set: String,
    /// Frame pixels per class, in the class set's order.
    pub class_pixels: Vec<u64>,
    /// `--dense-dir`: the class map, 8-bit PNG, pixel = class index.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub class_map_file: Option<String>,
    /// `--mask-classes`: the union of those classes, 8-bit PNG, 0 or 255.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mask_file: Option<String>,
    /// A small copy of the class map, for clients that draw it (the browser view).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mask: Option<ClassMask>,
}

/// Per-frame relative depth (smaller is nearer; not metric).
#[derive(Clone, Debug, Serialize)]
pub struct DepthSummary {
    /// True when min/max (and the drawing) cover the person foreground only.
    pub foreground_only: bool,
    pub min: Option<f32>,
    pub max: Option<f32>,
    /// `--dense-dir`: depth at frame size as 16-bit PNG.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    /// How the PNG's values map back: depth = offset + value * scale.
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub encoding: Option<crate::tasks::dense::DepthEncoding>,
    /// `m` for a Sapiens2 pointmap model's metric depth (its PNG in millimetres); absent for
    /// the first family's relative depth.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub units: Option<&'static str>,
}

impl DepthSummary {
    pub fn new(range: Option<crate::tasks::dense::DepthRange>, foreground_only: bool) -> Self {
        DepthSummary {
            foreground_only,
            min: range.as_ref().map(|r| r.min),
            max: range.as_ref().map(|r| r.max),
            file: None,
            encoding: None,
            units: None,
        }
    }
}

/// Per-frame surface normals.
#[derive(Clone, Debug, Default, Serialize)]
pub struct NormalsSummary {
    /// `--dense-dir`: unit normals at frame size as 8-bit RGB PNG, value = (n + 1) / 2 * 255.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
}

/// A class map made small enough to publish with every frame.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ClassMask {
    pub width: usize,
    pub height: usize,
    /// Row-major run-length code: class, run length, class, run length, ...
    pub rle: Vec<u32>,
}

impl ClassMask {
    /// Samples a `width` x `height` class map (row-major) at the nearest pixel so that the
    /// longer side is at most `max_side`, then run-length codes it.
    pub fn from_class_map(class_map: &[u8], width: usize, height: usize, max_side: usize) -> Self {
        assert_eq!(
            class_map.len(),
            width * height,
            "class map does not hold {width} x {height} pixels"
        );
        let scale = (max_side.max(1) as f64 / width.max(height).max(1) as f64).min(1.0);
        let (mask_width, mask_height) = (
            ((width as f64 * scale).round() as usize).max(1),
            ((height as f64 * scale).round() as usize).max(1),
        );
        // Centre of each mask pixel, mapped back to the frame.
        let source = |i: usize, mask_len: usize, len: usize| {
            ((i * 2 + 1) * len / (mask_len * 2)).min(len - 1)
        };
        let columns: Vec<usize> = (0..mask_width)
            .map(|x| source(x, mask_width, width))
            .collect();
        let mut rle = Vec::new();
        let mut run: Option<(u8, u32)> = None;
        for y in 0..mask_height {
            let row = &class_map[source(y, mask_height, height) * width..][..width];
            for &x in &columns {
                let class = row[x];
                run = match run {
                    Some((current, length)) if current == class => Some((current, length + 1)),
                    Some((current, length)) => {
                        rle.extend([current as u32, length]);
                        Some((class, 1))
                    }
                    None => Some((class, 1)),
                };
            }
        }
        if let Some((class, length)) = run {
            rle.extend([class as u32, length]);
        }
        ClassMask {
            width: mask_width,
            height: mask_height,
            rle,
        }
    }
}

/// Whether a live input delivers frames.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StreamState {
    /// Failed, stalled, ended or unreachable; the source is reconnecting with backoff.
    Down,
    /// Delivers frames again after being down.
    Up,
}

/// A live input went down or came back, as published next to the results (documented in the
/// README, "Stream status"). Sent once per change; a stream that never went down sends none.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct StreamStatusMessage {
    pub schema: &'static str,
    pub version: u32,
    pub stream: u32,
    pub stream_name: String,
    pub status: StreamState,
    /// Why the stream is down; absent with `up`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Wall-clock time of the change, nanoseconds since the Unix epoch.
    pub unix_ns: u64,
    /// Times this stream came back so far (an `up` counts itself).
    pub reconnects: u64,
}

/// A stream as messages name it: its index and its name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamId {
    pub index: u32,
    pub name: String,
}

impl StreamId {
    pub fn new(index: u32, name: &str) -> Self {
        StreamId {
            index,
            name: name.to_owned(),
        }
    }
}

impl StreamStatusMessage {
    pub fn down(stream: &StreamId, reason: &str, reconnects: u64, at: SystemTime) -> Self {
        Self::new(
            stream,
            StreamState::Down,
            Some(reason.to_owned()),
            reconnects,
            at,
        )
    }

    pub fn up(stream: &StreamId, reconnects: u64, at: SystemTime) -> Self {
        Self::new(stream, StreamState::Up, None, reconnects, at)
    }

    fn new(
        stream: &StreamId,
        status: StreamState,
        reason: Option<String>,
        reconnects: u64,
        at: SystemTime,
    ) -> Self {
        StreamStatusMessage {
            schema: STATUS_SCHEMA,
            version: STATUS_VERSION,
            stream: stream.index,
            stream_name: stream.name.clone(),
            status,
            reason,
            unix_ns: at
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64),
            reconnects,
        }
    }
}

/// A message beside the results (a status change, a track event) as every publisher sees it:
/// the message and its JSON, serialized once.
pub struct PublishedMessage<'a, T> {
    pub message: &'a T,
    pub json: Arc<str>,
}

impl<'a, T: Serialize> PublishedMessage<'a, T> {
    pub fn new(message: &'a T) -> Self {
        let json = serde_json::to_string(message)
            .expect("status and track messages always serialize: string keys, finite numbers");
        PublishedMessage {
            message,
            json: json.into(),
        }
    }
}

/// A status change as every publisher sees it.
pub type PublishedStatus<'a> = PublishedMessage<'a, StreamStatusMessage>;

/// A track confirmed or lost, as published next to the results (documented in the README,
/// "Track events").
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TrackMessage {
    pub schema: &'static str,
    pub version: u32,
    pub stream: u32,
    pub stream_name: String,
    pub event: TrackEventKind,
    pub track_id: u64,
    /// Stream time (seconds) of the track's first and last detection.
    pub first_seen_s: f64,
    pub last_seen_s: f64,
    /// Frames the track was detected in.
    pub frames: u64,
}

impl TrackMessage {
    pub fn new(stream: &StreamId, event: &TrackEvent) -> Self {
        TrackMessage {
            schema: TRACK_SCHEMA,
            version: TRACK_VERSION,
            stream: stream.index,
            stream_name: stream.name.clone(),
            event: event.kind,
            track_id: event.track_id,
            first_seen_s: event.first_seen_s,
            last_seen_s: event.last_seen_s,
            frames: event.frames,
        }
    }
}

/// A track event as every publisher sees it.
pub type PublishedTrack<'a> = PublishedMessage<'a, TrackMessage>;

/// One processed frame as every publisher sees it: the structured result and its JSON, serialized
/// once (shared, so a publisher that fans out to many clients need not copy it).
pub struct Published<'a> {
    pub result: &'a FrameResult,
    pub json: Arc<str>,
}

impl<'a> Published<'a> {
    pub fn new(result: &'a FrameResult) -> Self {
        let json = serde_json::to_string(result)
            .expect("a FrameResult always serializes: string keys, no fallible fields");
        Published {
            result,
            json: json.into(),
        }
    }
}

/// A destination for results. `publish` is called once per frame from the pipeline's sink thread
/// and must not block on the network: a publisher that cannot keep up drops and counts.
pub trait Publisher: Send {
    /// Short name for logs and metrics, e.g. "mqtt".
    fn name(&self) -> &'static str;
    fn publish(&mut self, frame: &Published) -> Result<()>;
    /// A live input went down or came back. Called on the same thread as `publish`, in order
    /// with the frames, and just as rare to block: never on the network.
    fn publish_status(&mut self, status: &PublishedStatus) -> Result<()>;
    /// A track was confirmed or lost; called on the same thread, just before the result of the
    /// frame it happened at.
    fn publish_track(&mut self, track: &PublishedTrack) -> Result<()>;
    /// Flushes what is queued (bounded wait for network publishers) and closes.
    fn finish(self: Box<Self>) -> Result<()>;
}

/// Writes one JSON object per line to a file, or to stdout for `-`.
pub struct ResultsWriter {
    out: Box<dyn Write + Send>,
    target: PathBuf,
}

impl ResultsWriter {
    pub fn create(target: &Path) -> Result<Self> {
        let out: Box<dyn Write + Send> = if target == Path::new("-") {
            Box::new(std::io::BufWriter::new(std::io::stdout()))
        } else {
            let file = std::fs::File::create(target).map_err(|e| Error::Output {
                path: target.to_owned(),
                message: e.to_string(),
            })?;
            Box::new(std::io::BufWriter::new(file))
        };
        Ok(ResultsWriter {
            out,
            target: target.to_owned(),
        })
    }

    fn error(&self, e: impl std::fmt::Display) -> Error {
        Error::Output {
            path: self.target.clone(),
            message: e.to_string(),
        }
    }

    pub fn finish(mut self) -> Result<()> {
        self.out.flush().map_err(|e| self.error(e))
    }
}

impl Publisher for ResultsWriter {
    fn name(&self) -> &'static str {
        "results"
    }

    fn publish(&mut self, frame: &Published) -> Result<()> {
        self.out
            .write_all(frame.json.as_bytes())
            .map_err(|e| self.error(e))?;
        self.out.write_all(b"\n").map_err(|e| self.error(e))
    }

    fn publish_status(&mut self, status: &PublishedStatus) -> Result<()> {
        self.out
            .write_all(status.json.as_bytes())
            .and_then(|()| self.out.write_all(b"\n"))
            // While a stream is down no frame lines follow to push this one out of the buffer.
            .and_then(|()| self.out.flush())
            .map_err(|e| self.error(e))
    }

    fn publish_track(&mut self, track: &PublishedTrack) -> Result<()> {
        self.out
            .write_all(track.json.as_bytes())
            .and_then(|()| self.out.write_all(b"\n"))
            .map_err(|e| self.error(e))
    }

    fn finish(self: Box<Self>) -> Result<()> {
        ResultsWriter::finish(*self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::{Metrics, PublisherCounters};

    #[test]
    fn tracked_publisher_counters_reach_the_metrics() {
        let metrics = Metrics::new();
        let counters = Arc::new(PublisherCounters::default());
        counters.count_dropped_many(3);
        metrics.track_publisher("mqtt", Arc::clone(&counters));
        let text = metrics.encode();
        assert!(
            text.contains("sapiens_publisher_drops_total{publisher=\"mqtt\"} 3"),
            "{text}"
        );
        assert!(
            text.contains("sapiens_publisher_reconnects_total{publisher=\"mqtt\"} 0"),
            "{text}"
        );
        counters.count_dropped();
        counters.count_reconnect();
        let text = metrics.encode();
        assert!(
            text.contains("sapiens_publisher_drops_total{publisher=\"mqtt\"} 4"),
            "{text}"
        );
        assert!(
            text.contains("sapiens_publisher_reconnects_total{publisher=\"mqtt\"} 1"),
            "{text}"
        );
    }

    #[test]
    fn status_messages_follow_the_documented_schema() {
        let at = UNIX_EPOCH + std::time::Duration::from_nanos(1_795_256_905_210_704_214);
        let down = StreamStatusMessage::down(&StreamId::new(0, "stream0"), "end of stream", 1, at);
        let json = PublishedStatus::new(&down).json;
        // Field order and presence as in the README's "Stream status" example.
        assert_eq!(
            &*json,
            r#"{"schema":"sapiens-stream/status","version":1,"stream":0,"stream_name":"stream0","status":"down","reason":"end of stream","unix_ns":1795256905210704214,"reconnects":1}"#
        );
        let up = StreamStatusMessage::up(&StreamId::new(2, "door"), 2, at);
        assert_eq!(
            &*PublishedStatus::new(&up).json,
            r#"{"schema":"sapiens-stream/status","version":1,"stream":2,"stream_name":"door","status":"up","unix_ns":1795256905210704214,"reconnects":2}"#
        );
        // Told apart from results by `schema` alone.
        assert_ne!(STATUS_SCHEMA, SCHEMA_NAME);
    }

    #[test]
    fn results_writer_flushes_status_lines_between_frame_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("results.jsonl");
        let mut writer = ResultsWriter::create(&path).unwrap();
        let down = StreamStatusMessage::down(
            &StreamId::new(0, "stream0"),
            "no frame for 5 s",
            0,
            UNIX_EPOCH,
        );
        writer.publish_status(&PublishedStatus::new(&down)).unwrap();
        // Readable at once, without a frame after it or `finish`.
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text, format!("{}\n", serde_json::to_string(&down).unwrap()));
        writer.finish().unwrap();
    }

    #[test]
    fn class_masks_sample_the_nearest_pixel_and_run_length_code() {
        let (width, height) = (64, 48);
        let class_map: Vec<u8> = (0..width * height)
            .map(|i| ((i % width / 8 + i / width / 8) % 28) as u8)
            .collect();
        let mask = ClassMask::from_class_map(&class_map, width, height, 32);
        assert_eq!((mask.width, mask.height), (32, 24));
        let decoded: Vec<u8> = mask
            .rle
            .chunks_exact(2)
            .flat_map(|run| std::iter::repeat_n(run[0] as u8, run[1] as usize))
            .collect();
        // Halving: mask pixel (x, y) covers frame pixels 2x..2x+2, its centre falls in 2x + 1.
        let expected: Vec<u8> = (0..24)
            .flat_map(|y| (0..32).map(move |x| (y, x)))
            .map(|(y, x)| class_map[(2 * y + 1) * width + 2 * x + 1])
            .collect();
        assert_eq!(decoded, expected);
        let small = ClassMask::from_class_map(&[3, 3, 5, 5], 2, 2, 256);
        assert_eq!(
            (small.width, small.height, small.rle),
            (2, 2, vec![3, 2, 5, 2])
        );
    }
}
