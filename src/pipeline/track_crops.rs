//! Tracking crops (`--detect-every N`): between detector runs, each confirmed track's crop for
//! the next frame comes from its keypoints in the last frame, moved by its velocity, as
//! MediaPipe does. The post stage, which tracks, hands the tracks back to the preprocess
//! stage; offline, the preprocess stage waits for the previous frame's tracks, so a run's
//! results do not depend on timing; live, it takes the newest it has.

use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};

use crate::tasks::pose::PersonBox;
use crate::tasks::track::{TrackEvent, TrackEventKind, TrackedPerson};

/// Below this mean keypoint score a track's keypoints are not trusted to crop it.
const MIN_KEYPOINT_SCORE: f32 = 0.3;

/// What the post stage last said of the tracks.
#[derive(Default)]
struct Feedback {
    people: Vec<TrackedPerson>,
    /// A track was lost since the detector last ran.
    lost: bool,
    /// The last frame the post stage tracked.
    frame: Option<u64>,
    /// The post stage is gone: nothing more will come.
    closed: bool,
}

#[derive(Default)]
struct Shared {
    feedback: Mutex<Feedback>,
    changed: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Feedback> {
        self.feedback.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The preprocess stage's side: whether a frame runs the detector, or the tracks' boxes.
pub(super) struct TrackCrops {
    every: u64,
    since_detection: u64,
    /// Wait for the previous frame's tracks (offline runs).
    wait: bool,
    shared: Arc<Shared>,
}

/// The post stage's side.
pub(super) struct TrackFeedback {
    shared: Arc<Shared>,
}

impl TrackCrops {
    pub(super) fn new(every: u64, wait: bool) -> (Self, TrackFeedback) {
        let shared = Arc::new(Shared::default());
        let crops = TrackCrops {
            every,
            since_detection: 0,
            wait,
            shared: Arc::clone(&shared),
        };
        (crops, TrackFeedback { shared })
    }

    /// The boxes of frame `index` at stream time `time` from the tracks, or `None` when the
    /// detector must run (and is taken to run): every `every`-th frame, with no confirmed
    /// track, after a track was lost, or when a track's keypoints score too low to crop by.
    pub(super) fn boxes(&mut self, index: u64, time: f64) -> Option<Vec<PersonBox>> {
        let due = self.since_detection + 1 >= self.every;
        let mut feedback = self.shared.lock();
        if !due && self.wait && index > 0 {
            let behind = |f: &Feedback| !f.closed && f.frame.is_none_or(|seen| seen + 1 < index);
            while behind(&feedback) {
                feedback = self
                    .shared
                    .changed
                    .wait(feedback)
                    .unwrap_or_else(PoisonError::into_inner);
            }
        }
        let trusted = feedback
            .people
            .iter()
            .all(|p| p.keypoint_score >= MIN_KEYPOINT_SCORE);
        if due || feedback.lost || feedback.people.is_empty() || !trusted {
            // The detector runs on this frame: the count starts again, losses are seen to.
            self.since_detection = 0;
            feedback.lost = false;
            return None;
        }
        self.since_detection += 1;
        Some(feedback.people.iter().map(|p| p.box_at(time)).collect())
    }
}

impl TrackFeedback {
    /// The tracks after frame `index`, and its events.
    pub(super) fn publish(&self, index: u64, people: Vec<TrackedPerson>, events: &[TrackEvent]) {
        let mut feedback = self.shared.lock();
        feedback.people = people;
        feedback.lost |= events.iter().any(|e| e.kind == TrackEventKind::Lost);
        feedback.frame = Some(index);
        drop(feedback);
        self.shared.changed.notify_all();
    }
}

impl Drop for TrackFeedback {
    fn drop(&mut self) {
        self.shared.lock().closed = true;
        self.shared.changed.notify_all();
    }
}
