//! The decode stage: frames from the source, timed and counted, into the first link.

use std::sync::Arc;
use std::time::Instant;

use super::links::Handoff;
use crate::error::{Error, Result};
use crate::frame::Frame;
use crate::metrics::{Metrics, StageStats};
use crate::source::{FrameSource, StopSignal};

/// What a stage hands back when it ends: frames it counted (when it counts them) and its timings.
pub(super) type StageOutcome = Result<(u64, Vec<StageStats>)>;

/// Waits for a stage's thread; a panic in it becomes an error.
pub(super) fn join_stage(thread: std::thread::JoinHandle<StageOutcome>) -> StageOutcome {
    thread
        .join()
        .unwrap_or_else(|_| Err(Error::Gstreamer("a pipeline stage panicked".into())))
}

pub(super) fn decode_stage(
    mut source: Box<dyn FrameSource>,
    max_frames: Option<u64>,
    stop: &StopSignal,
    out: Handoff<Frame>,
    metrics: &Arc<Metrics>,
) -> StageOutcome {
    let mut stats = StageStats::new("decode").reporting_to(metrics);
    let mut count = 0;
    while max_frames.is_none_or(|m| count < m) && !stop.is_set() {
        let start = Instant::now();
        let Some(frame) = source.next_frame()? else {
            break;
        };
        stats.record(start.elapsed());
        metrics.frame_in(frame.stream_id);
        count += 1;
        if !out.send(frame) {
            break;
        }
    }
    Ok((count, vec![stats]))
}
