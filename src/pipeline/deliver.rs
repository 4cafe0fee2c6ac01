//! The deliver stage, on the calling thread: each result to every publisher and each frame to
//! every video output, the source's status changes in between, then every output finished.

use std::sync::Arc;
use std::time::Instant;

use crossbeam_channel::Receiver;

use super::decode::StageOutcome;
use super::work::{Delivery, Done};
use crate::error::Result;
use crate::metrics::{Metrics, StageStats};
use crate::publish::{
    Published, PublishedStatus, PublishedTrack, Publisher, StreamStatusMessage, TrackMessage,
};
use crate::sink::VideoOutput;
use crate::tasks::track::TrackEvent;

/// Name of the end-to-end latency line in the report: decoded to published.
const CAPTURE_TO_PUBLISH: &str = "capture->out";

/// Hands a stream status change to every publisher, on the sink thread.
fn publish_status(
    publishers: &mut [Box<dyn Publisher>],
    status: &StreamStatusMessage,
) -> Result<()> {
    let published = PublishedStatus::new(status);
    publishers
        .iter_mut()
        .try_for_each(|publisher| publisher.publish_status(&published))
}

/// Hands track events to every publisher, on the sink thread.
fn publish_tracks(
    publishers: &mut [Box<dyn Publisher>],
    stream: u32,
    events: &[TrackEvent],
) -> Result<()> {
    for event in events {
        let message = TrackMessage::new(stream, event);
        let published = PublishedTrack::new(&message);
        for publisher in publishers.iter_mut() {
            publisher.publish_track(&published)?;
        }
    }
    Ok(())
}

/// Frames, and stream status changes in between.
pub(super) fn deliver_stage(
    (done, statuses): (Receiver<Delivery>, Receiver<StreamStatusMessage>),
    mut videos: Vec<VideoOutput>,
    mut publishers: Vec<Box<dyn Publisher>>,
    progress: Option<&indicatif::ProgressBar>,
    metrics: &Arc<Metrics>,
) -> StageOutcome {
    let mut stats = StageStats::new("sink").reporting_to(metrics);
    let mut latency = StageStats::new(CAPTURE_TO_PUBLISH);
    let mut count = 0;
    let mut deliver = |publishers: &mut Vec<Box<dyn Publisher>>, done: Done| -> Result<()> {
        let Done {
            frame,
            result,
            track_events,
        } = done;
        // A status sent before this frame left the source goes first: an `up` precedes the
        // first frame after it.
        for status in statuses.try_iter() {
            publish_status(publishers, &status)?;
        }
        let start = Instant::now();
        publish_tracks(publishers, result.stream, &track_events)?;
        let captured = frame.capture_time;
        let published = Published::new(&result);
        for publisher in publishers.iter_mut() {
            publisher.publish(&published)?;
        }
        for video in &mut videos {
            video.push(&frame)?;
        }
        stats.record(start.elapsed());
        let elapsed = captured.elapsed().unwrap_or_default();
        latency.record(elapsed);
        metrics.capture_to_publish(elapsed);
        metrics.frame_out(result.stream);
        count += 1;
        if let Some(bar) = progress {
            bar.inc(1);
        }
        Ok(())
    };
    // On a failure, stop taking frames but still finalise every output below.
    let delivered = (|| {
        let mut waiting = statuses.clone();
        loop {
            crossbeam_channel::select! {
                recv(done) -> item => match item {
                    Ok(Delivery::Frame(item)) => deliver(&mut publishers, *item)?,
                    Ok(Delivery::TracksEnded { stream, track_events }) => {
                        publish_tracks(&mut publishers, stream, &track_events)?
                    }
                    Err(_) => break,
                },
                recv(waiting) -> status => match status {
                    Ok(status) => publish_status(&mut publishers, &status)?,
                    // Senders live as long as the source; statuses left are taken below.
                    Err(_) => waiting = crossbeam_channel::never(),
                },
            }
        }
        statuses
            .try_iter()
            .try_for_each(|status| publish_status(&mut publishers, &status))
    })();
    drop(done);
    if let Some(bar) = progress {
        bar.finish_and_clear();
    }
    let finished = [
        videos.into_iter().try_for_each(VideoOutput::finish),
        publishers.into_iter().try_for_each(|p| p.finish()),
    ];
    delivered?;
    finished.into_iter().collect::<Result<()>>()?;
    Ok((count, vec![stats, latency]))
}
