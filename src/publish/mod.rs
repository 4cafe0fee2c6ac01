//! Structured results: the versioned per-frame JSON schema and the JSON-lines writer.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

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
