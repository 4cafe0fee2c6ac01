//! What a source needs to outlive its GStreamer pipeline: when to rebuild it (policy, backoff),
//! who hears about it (status events), and timestamps that keep increasing across rebuilds.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Whether a source rebuilds its pipeline when the stream fails, stalls or ends.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Reconnect {
    /// Cameras (RTSP, webcams) reconnect; files, images and test patterns do not.
    #[default]
    Auto,
    /// Every video input reconnects (e.g. an HTTP camera).
    Always,
    /// Fail fast: the first error, stall or missing first frame ends the run.
    Never,
}

#[derive(Clone, Debug)]
pub struct ReconnectOptions {
    pub policy: Reconnect,
    /// Wait before the first retry; doubled after each failed one.
    pub initial_delay: Duration,
    /// The longest wait between two retries.
    pub max_delay: Duration,
    /// A connected stream that delivers no frame for this long is down (watchdog).
    pub stall_timeout: Duration,
}

impl Default for ReconnectOptions {
    fn default() -> Self {
        ReconnectOptions {
            policy: Reconnect::Auto,
            initial_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(30),
            stall_timeout: Duration::from_secs(5),
        }
    }
}

/// A stream's state changes, as published to the listener in [`super::SourceOptions`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StreamStatus {
    /// The stream failed, stalled, ended or never answered; the source is retrying.
    Down { reason: String },
    /// A stream that was down delivers frames again (one `Up` per successful reconnect).
    Up,
}

/// Called with the stream id and its new status, on the thread that reads the source.
#[derive(Clone)]
pub struct StatusListener(Arc<StatusFn>);

type StatusFn = dyn Fn(u32, &StreamStatus) + Send + Sync;

impl StatusListener {
    pub fn new(listener: impl Fn(u32, &StreamStatus) + Send + Sync + 'static) -> Self {
        StatusListener(Arc::new(listener))
    }

    pub fn notify(&self, stream_id: u32, status: &StreamStatus) {
        (self.0)(stream_id, status)
    }
}

impl fmt::Debug for StatusListener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("StatusListener")
    }
}

/// Exponential backoff between reconnect attempts: initial, 2x, 4x, ... capped at the maximum.
#[derive(Clone, Debug)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    pub fn new(initial: Duration, max: Duration) -> Self {
        let initial = initial.min(max);
        Backoff {
            initial,
            max,
            next: initial,
        }
    }

    /// The wait before the next attempt; each call doubles the one after.
    pub fn next_delay(&mut self) -> Duration {
        let delay = self.next;
        self.next = (self.next * 2).min(self.max);
        delay
    }

    /// After a success the next failure starts again from the initial delay.
    pub fn reset(&mut self) {
        self.next = self.initial;
    }
}

/// Maps the PTS of successive pipelines onto one increasing timeline. Each rebuilt pipeline starts
/// its timestamps near zero again; its first frame is placed one frame duration after the last
/// frame handed out (a loop), or after a reconnect by the wall-clock time that passed in between
/// (at least one frame duration), so that an encoder downstream sees the outage as a pause, never
/// as time running backwards.
#[derive(Clone, Debug, Default)]
pub struct Timeline {
    offset_ns: i128,
    last: Option<LastFrame>,
    rebase: Option<Rebase>,
}

/// How the next pipeline's timestamps join the previous ones.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rebase {
    /// Right after the last frame: the input starts again (a loop).
    Continue,
    /// After the time that really passed: the stream was down.
    WallClock,
}

#[derive(Clone, Copy, Debug)]
struct LastFrame {
    pts_ns: u64,
    duration_ns: u64,
    at: Instant,
}

impl Timeline {
    /// The next frame comes from a new pipeline.
    pub fn restart(&mut self, rebase: Rebase) {
        self.rebase = Some(rebase);
    }

    /// The frame's PTS on the continuous timeline; `now` is when the frame arrived.
    pub fn map(
        &mut self,
        pts_ns: Option<u64>,
        duration_ns: Option<u64>,
        now: Instant,
    ) -> Option<u64> {
        let pts = i128::from(pts_ns?);
        if let Some(rebase) = self.rebase.take()
            && let Some(last) = self.last
        {
            let waited = match rebase {
                Rebase::Continue => 0,
                Rebase::WallClock => now.saturating_duration_since(last.at).as_nanos(),
            };
            let gap = waited.max(u128::from(last.duration_ns));
            self.offset_ns = i128::from(last.pts_ns) + gap as i128 - pts;
        }
        let floor = self.last.map_or(0, |l| i128::from(l.pts_ns) + 1);
        let mapped = (pts + self.offset_ns).max(floor);
        let mapped = u64::try_from(mapped).unwrap_or(u64::MAX);
        self.last = Some(LastFrame {
            pts_ns: mapped,
            duration_ns: duration_ns.unwrap_or(1).max(1),
            at: now,
        });
        Some(mapped)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap_and_resets() {
        let mut backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(3));
        let delays: Vec<u128> = (0..6).map(|_| backoff.next_delay().as_millis()).collect();
        assert_eq!(delays, [500, 1000, 2000, 3000, 3000, 3000]);
        backoff.reset();
        assert_eq!(backoff.next_delay(), Duration::from_millis(500));
    }

    #[test]
    fn backoff_initial_above_cap_is_capped() {
        let mut backoff = Backoff::new(Duration::from_secs(10), Duration::from_secs(2));
        assert_eq!(backoff.next_delay(), Duration::from_secs(2));
        assert_eq!(backoff.next_delay(), Duration::from_secs(2));
    }

    #[test]
    fn timeline_passes_through_the_first_pipeline() {
        let mut timeline = Timeline::default();
        let t0 = Instant::now();
        let ms = 1_000_000;
        assert_eq!(
            timeline.map(Some(40 * ms), Some(40 * ms), t0),
            Some(40 * ms)
        );
        assert_eq!(
            timeline.map(Some(80 * ms), Some(40 * ms), t0),
            Some(80 * ms)
        );
        assert_eq!(timeline.map(None, None, t0), None);
    }

    #[test]
    fn timeline_continues_after_a_restart_by_the_time_that_passed() {
        let mut timeline = Timeline::default();
        let t0 = Instant::now();
        let ms = 1_000_000;
        timeline.map(Some(1000 * ms), Some(40 * ms), t0);
        timeline.restart(Rebase::WallClock);
        // A new pipeline starts again at 0, three seconds of wall time later.
        let after = timeline.map(Some(0), Some(40 * ms), t0 + Duration::from_secs(3));
        assert_eq!(after, Some(4000 * ms));
        assert_eq!(
            timeline.map(Some(40 * ms), Some(40 * ms), t0),
            Some(4040 * ms)
        );
    }

    #[test]
    fn timeline_restart_without_waiting_advances_one_frame() {
        let mut timeline = Timeline::default();
        let t0 = Instant::now();
        timeline.map(Some(960), Some(40), t0);
        timeline.restart(Rebase::WallClock);
        assert_eq!(timeline.map(Some(0), Some(40), t0), Some(1000));
    }

    #[test]
    fn timeline_loop_continues_one_frame_later_however_long_it_took() {
        let mut timeline = Timeline::default();
        let t0 = Instant::now();
        timeline.map(Some(960), Some(40), t0);
        timeline.restart(Rebase::Continue);
        assert_eq!(
            timeline.map(Some(0), Some(40), t0 + Duration::from_secs(2)),
            Some(1000)
        );
    }

    #[test]
    fn timeline_never_goes_backwards() {
        let mut timeline = Timeline::default();
        let t0 = Instant::now();
        timeline.map(Some(500), Some(10), t0);
        assert_eq!(timeline.map(Some(100), Some(10), t0), Some(501));
    }
}
