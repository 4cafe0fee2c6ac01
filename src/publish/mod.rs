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
use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

use crate::error::{Error, Result};
use crate::tasks::pose::Person;

pub const SCHEMA_NAME: &str = "sapiens-stream/result";
/// Bumped on any change a consumer could notice; documented in the README.
pub const SCHEMA_VERSION: u32 = 1;

/// One processed frame, as published.
#[derive(Clone, Debug, Serialize)]
pub struct FrameResult {
    pub schema: &'static str,
    pub version: u32,
    pub stream: u32,
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
}

/// Per-frame segmentation summary; the class map itself is drawn, not inlined.
#[derive(Clone, Debug, Serialize)]
pub struct SegmentationSummary {
    pub class_set: String,
    /// Frame pixels per class, in the class set's order.
    pub class_pixels: Vec<u64>,
}

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
    /// Flushes what is queued (bounded wait for network publishers) and closes.
    fn finish(self: Box<Self>) -> Result<()>;
}

/// What a network publisher did, counted in frames; shared with the metrics exporter.
#[derive(Debug, Default)]
pub struct PublisherCounters {
    published: AtomicU64,
    dropped: AtomicU64,
    reconnects: AtomicU64,
}

impl PublisherCounters {
    /// Frames handed to the publisher.
    pub fn published(&self) -> u64 {
        self.published.load(Ordering::Relaxed)
    }

    /// Frames lost before leaving this process: queue overflow, send errors.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Connections re-established after a loss.
    pub fn reconnects(&self) -> u64 {
        self.reconnects.load(Ordering::Relaxed)
    }

    fn count_published(&self) {
        self.published.fetch_add(1, Ordering::Relaxed);
    }

    fn count_dropped(&self) {
        self.count_dropped_many(1);
    }

    fn count_dropped_many(&self, frames: u64) {
        self.dropped.fetch_add(frames, Ordering::Relaxed);
    }

    fn count_reconnect(&self) {
        self.reconnects.fetch_add(1, Ordering::Relaxed);
    }
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

    pub fn write(&mut self, result: &FrameResult) -> Result<()> {
        serde_json::to_writer(&mut self.out, result).map_err(|e| self.error(e))?;
        self.out.write_all(b"\n").map_err(|e| self.error(e))
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

    fn finish(self: Box<Self>) -> Result<()> {
        ResultsWriter::finish(*self)
    }
}
