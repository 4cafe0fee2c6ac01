//! The deliver stage, a thread per stream: each result to every publisher (the stream's own and
//! those every stream shares) and each frame to the stream's video outputs, the source's status
//! changes in between; then the stream's own outputs finished.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use crossbeam_channel::Receiver;

use super::decode::StageOutcome;
use super::work::{Delivery, Done};
use crate::error::Result;
use crate::metrics::{Metrics, StageStats};
use crate::publish::{
    Published, PublishedStatus, PublishedTrack, Publisher, StreamId, StreamStatusMessage,
    TrackMessage,
};
use crate::sink::VideoOutput;
use crate::tasks::track::TrackEvent;

/// Name of the end-to-end latency line in the report: decoded to published.
pub(super) const CAPTURE_TO_PUBLISH: &str = "capture->out";

/// Publishers shared by every stream of a run (one results file, the network ones).
pub(super) type SharedPublishers = Arc<Mutex<Vec<Box<dyn Publisher>>>>;

/// The publishers of one stream: its own, then the shared ones.
pub(super) struct StreamPublishers {
    pub(super) own: Vec<Box<dyn Publisher>>,
    pub(super) shared: SharedPublishers,
}

impl StreamPublishers {
    fn each(&mut self, mut publish: impl FnMut(&mut dyn Publisher) -> Result<()>) -> Result<()> {
        for publisher in &mut self.own {
            publish(publisher.as_mut())?;
        }
        let mut shared = self.shared.lock().unwrap_or_else(PoisonError::into_inner);
        shared.iter_mut().try_for_each(|p| publish(p.as_mut()))
    }

    fn status(&mut self, status: &StreamStatusMessage) -> Result<()> {
        let published = PublishedStatus::new(status);
        self.each(|publisher| publisher.publish_status(&published))
    }

    fn tracks(&mut self, stream: &StreamId, events: &[TrackEvent]) -> Result<()> {
        for event in events {
            let message = TrackMessage::new(stream, event);
            let published = PublishedTrack::new(&message);
            self.each(|publisher| publisher.publish_track(&published))?;
        }
        Ok(())
    }
}

/// What the deliver stage of a stream holds.
pub(super) struct Delivering<'a> {
    pub(super) stream: &'a StreamId,
    pub(super) videos: Vec<VideoOutput>,
    pub(super) publishers: StreamPublishers,
    pub(super) progress: Option<&'a indicatif::ProgressBar>,
    pub(super) metrics: &'a Arc<Metrics>,
    /// Frames delivered so far, for `/streams`.
    pub(super) frames: &'a AtomicU64,
}

/// Frames, and stream status changes in between.
pub(super) fn deliver_stage(
    (done, statuses): (Receiver<Delivery>, Receiver<StreamStatusMessage>),
    delivering: Delivering,
) -> StageOutcome {
    let Delivering {
        stream,
        mut videos,
        mut publishers,
        progress,
        metrics,
        frames,
    } = delivering;
    let mut stats = StageStats::new("sink").reporting_to(metrics);
    let mut latency = StageStats::new(CAPTURE_TO_PUBLISH);
    let mut count = 0;
    let mut deliver = |publishers: &mut StreamPublishers, done: Done| -> Result<()> {
        let Done {
            mut frame,
            result,
            track_events,
        } = done;
        // A status sent before this frame left the source goes first: an `up` precedes the
        // first frame after it.
        for status in statuses.try_iter() {
            publishers.status(&status)?;
        }
        let start = Instant::now();
        publishers.tracks(stream, &track_events)?;
        let captured = frame.capture_time;
        let published = Published::new(&result);
        publishers.each(|publisher| publisher.publish(&published))?;
        for video in &mut videos {
            video.push(&mut frame)?;
        }
        stats.record(start.elapsed());
        let elapsed = captured.elapsed().unwrap_or_default();
        latency.record(elapsed);
        metrics.capture_to_publish(stream.index, elapsed);
        metrics.frame_out(stream.index);
        count += 1;
        frames.fetch_add(1, Ordering::Relaxed);
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
                    Ok(Delivery::TracksEnded { track_events }) => {
                        publishers.tracks(stream, &track_events)?
                    }
                    Err(_) => break,
                },
                recv(waiting) -> status => match status {
                    Ok(status) => publishers.status(&status)?,
                    // Senders live as long as the source; statuses left are taken below.
                    Err(_) => waiting = crossbeam_channel::never(),
                },
            }
        }
        statuses
            .try_iter()
            .try_for_each(|status| publishers.status(&status))
    })();
    drop(done);
    let finished = [
        videos.into_iter().try_for_each(VideoOutput::finish),
        publishers.own.into_iter().try_for_each(|p| p.finish()),
    ];
    delivered?;
    finished.into_iter().collect::<Result<()>>()?;
    Ok((count, vec![stats, latency]))
}
