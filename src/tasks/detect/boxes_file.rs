//! `--boxes`: person boxes per frame from a JSON-lines file.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::decode::sort_by_score;
use crate::error::{Error, Result};
use crate::tasks::pose::PersonBox;

/// Person boxes read from a JSON-lines file (`--boxes`), one line per frame:
/// `{"frame": 12, "boxes": [[x1, y1, x2, y2, score], ...]}` in frame pixels, score optional
/// (1.0). `frame` is the 0-based index of the decoded frame; frames without a line have no persons.
#[derive(Clone, Debug, Default)]
pub struct BoxesFile {
    frames: HashMap<u64, Vec<PersonBox>>,
}

#[derive(Deserialize)]
struct BoxesLine {
    frame: u64,
    boxes: Vec<Vec<f32>>,
}

impl BoxesFile {
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::io(format!("reading boxes file {}", path.display()), e))?;
        let mut frames = HashMap::new();
        let lines = text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty());
        for (index, line) in lines {
            let line_error = |reason: String| Error::BoxesFile {
                path: PathBuf::from(path),
                line: index + 1,
                reason,
            };
            let (frame, boxes) = parse_line(line).map_err(line_error)?;
            if frames.insert(frame, boxes).is_some() {
                return Err(line_error(format!("frame {frame} already has a line")));
            }
        }
        Ok(BoxesFile { frames })
    }

    /// The boxes of frame `frame_index`, highest score first; none for a frame without a line.
    pub fn boxes_for(&self, frame_index: u64) -> Vec<PersonBox> {
        self.frames.get(&frame_index).cloned().unwrap_or_default()
    }
}

fn parse_line(line: &str) -> std::result::Result<(u64, Vec<PersonBox>), String> {
    let parsed: BoxesLine = serde_json::from_str(line).map_err(|e| {
        // serde_json counts lines within the one line it was given: keep only the column.
        let message = e.to_string();
        let message = message.rsplit_once(" at line ").map_or(message.as_str(), |(m, _)| m);
        format!("column {}: {message}; expected {{\"frame\": N, \"boxes\": [[x1, y1, x2, y2, score], ...]}}", e.column())
    })?;
    let mut boxes = parsed
        .boxes
        .iter()
        .map(|b| parse_box(b))
        .collect::<std::result::Result<Vec<_>, _>>()?;
    sort_by_score(&mut boxes);
    Ok((parsed.frame, boxes))
}

fn parse_box(values: &[f32]) -> std::result::Result<PersonBox, String> {
    let (x1, y1, x2, y2, score) = match *values {
        [x1, y1, x2, y2] => (x1, y1, x2, y2, 1.0),
        [x1, y1, x2, y2, score] => (x1, y1, x2, y2, score),
        _ => {
            return Err(format!(
                "box {values:?} has {} numbers, expected [x1, y1, x2, y2] or [x1, y1, x2, y2, score]",
                values.len()
            ));
        }
    };
    if !(x2 > x1 && y2 > y1) {
        return Err(format!(
            "box {values:?} is empty: it needs x2 > x1 and y2 > y1"
        ));
    }
    Ok(PersonBox {
        x1,
        y1,
        x2,
        y2,
        score,
    })
}
