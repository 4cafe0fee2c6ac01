//! People over time: a ByteTrack-style multi-object tracker on the person boxes, keypoint
//! similarity (OKS) added where boxes overlap, and One Euro smoothing of each track's keypoints.
//!
//! Per frame: every track's Kalman state is moved to the frame's time; tracks unseen for longer
//! than the maximum age end; detections at or above the high score are matched to all tracks,
//! then those between the low and the high score to the tracks still unmatched (so a person
//! whose detection weakens behind an occluder keeps the track); unmatched high-score detections
//! start tentative tracks, confirmed (and given an ID) after [`TrackerOptions::confirm_hits`]
//! hits in a row. IDs are unique in a run and never reused. Time comes from the stream's
//! timestamps, so dropped frames and frame-rate changes do not shorten or stretch an age.

mod assign;
pub mod kalman;
pub mod one_euro;

use self::assign::assign;
use self::kalman::{BoxFilter, bbox_of, xyah_of};
use self::one_euro::{OneEuroFilter, OneEuroParams};
use super::pose::{Person, PersonBox};

/// Keypoints at or above this score count for the similarity and are smoothed.
const VALID_KEYPOINT_SCORE: f32 = 0.3;
/// OKS needs this many keypoints valid in both the track and the detection.
const MIN_SHARED_KEYPOINTS: usize = 3;
/// OKS's per-keypoint falloff, one for every keypoint set (COCO's range over the body is
/// 0.025 to 0.107; the whole-body and Goliath sets have no published values).
const OKS_KAPPA: f64 = 0.08;
/// ByteTrack's second stage matches low-score detections at this IoU or more.
const LOW_SCORE_MIN_IOU: f32 = 0.5;
/// A box made from keypoints extends this fraction of their extent on each side (the joints lie
/// inside the body's outline).
const KEYPOINT_BOX_PADDING: f32 = 0.1;

/// How the tracker associates and keeps tracks.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TrackerOptions {
    /// Detections at or above this score are matched first, and may start tracks.
    pub high_score: f32,
    /// Detections below this score are ignored.
    pub low_score: f32,
    /// An unmatched detection starts a track at or above this score.
    pub new_track_score: f32,
    /// Least similarity (IoU, or IoU and OKS averaged) of a first-stage match.
    pub min_similarity: f32,
    /// Hits in a row that confirm a track.
    pub confirm_hits: u32,
    /// Seconds a track unseen is kept, to pick its ID up again.
    pub max_age_s: f64,
    /// One Euro smoothing of the keypoints; `None`: keypoints as decoded.
    pub smoothing: Option<OneEuroParams>,
}

impl Default for TrackerOptions {
    /// ByteTrack's published settings (track threshold 0.5, new tracks 0.6, match cost 0.8, a
    /// 30-frame buffer at 30 fps), confirmed after two hits.
    fn default() -> Self {
        TrackerOptions {
            high_score: 0.5,
            low_score: 0.1,
            new_track_score: 0.6,
            min_similarity: 0.2,
            confirm_hits: 2,
            max_age_s: 1.0,
            smoothing: None,
        }
    }
}

/// What happened to a track, for analytics that need not diff frames.
#[derive(Clone, Debug, PartialEq)]
pub struct TrackEvent {
    pub kind: TrackEventKind,
    pub track_id: u64,
    /// Stream time (seconds) of the track's first and last detection.
    pub first_seen_s: f64,
    pub last_seen_s: f64,
    /// Frames the track was detected in.
    pub frames: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TrackEventKind {
    /// Seen often enough to be given its ID.
    Confirmed,
    /// Unseen for longer than the maximum age (or the stream ended): the ID will not return.
    Lost,
}

struct Track {
    /// Given at confirmation.
    id: Option<u64>,
    filter: BoxFilter,
    /// Stream time the filter has been moved to.
    time: f64,
    hits: u32,
    first_seen: f64,
    last_seen: f64,
    frames: u64,
    /// The last detection's keypoints and box centre, to predict the keypoints.
    keypoints: Vec<[f32; 3]>,
    centre: [f64; 2],
    /// Missed at least one frame since its last detection.
    missed: bool,
    smoother: Vec<Option<[OneEuroFilter; 2]>>,
    /// The last detection's box and score.
    bbox: [f32; 4],
    score: f32,
}

impl Track {
    fn event(&self, kind: TrackEventKind) -> Option<TrackEvent> {
        Some(TrackEvent {
            kind,
            track_id: self.id?,
            first_seen_s: self.first_seen,
            last_seen_s: self.last_seen,
            frames: self.frames,
        })
    }

    /// The last keypoints moved with the box since they were seen.
    fn predicted_keypoints(&self) -> impl Iterator<Item = [f64; 3]> + '_ {
        let [x, y, ..] = self.filter.xyah();
        let (dx, dy) = (x - self.centre[0], y - self.centre[1]);
        self.keypoints
            .iter()
            .map(move |&[kx, ky, s]| [f64::from(kx) + dx, f64::from(ky) + dy, f64::from(s)])
    }
}

/// The tracks of one stream.
pub struct Tracker {
    options: TrackerOptions,
    tracks: Vec<Track>,
    next_id: u64,
    /// Coordinates are smoothed in units of this length (the frame height), so the smoothing
    /// parameters mean the same at any resolution.
    smoothing_scale: f64,
}

impl Tracker {
    pub fn new(options: TrackerOptions, frame_height: usize) -> Self {
        Tracker {
            options,
            tracks: Vec::new(),
            next_id: 1,
            smoothing_scale: frame_height.max(1) as f64,
        }
    }

    /// Tracks the persons of the frame at `time` (seconds of stream time): sets their
    /// `track_id` (confirmed tracks only) and, with smoothing, their smoothed `keypoints` (the
    /// decoded ones kept in `keypoints_raw`, on every person). Returns the tracks confirmed and lost.
    pub fn update(&mut self, time: f64, persons: &mut [Person]) -> Vec<TrackEvent> {
        let mut events = Vec::new();
        for track in &mut self.tracks {
            track.filter.predict(time - track.time);
            track.time = time.max(track.time);
        }
        let max_age = self.options.max_age_s;
        self.tracks.retain(|track| {
            let alive = time - track.last_seen <= max_age;
            if !alive {
                events.extend(track.event(TrackEventKind::Lost));
            }
            alive
        });

        let options = self.options;
        let (high, low): (Vec<usize>, Vec<usize>) = (0..persons.len())
            .filter(|&i| persons[i].score >= options.low_score)
            .partition(|&i| persons[i].score >= options.high_score);
        let all_tracks: Vec<usize> = (0..self.tracks.len()).collect();
        let first = self.match_stage(&all_tracks, &high, persons, options.min_similarity, true);
        let unmatched_tracks: Vec<usize> = all_tracks
            .iter()
            .copied()
            .filter(|t| !first.iter().any(|&(m, _)| m == *t))
            .filter(|&t| self.tracks[t].id.is_some())
            .collect();
        let second = self.match_stage(&unmatched_tracks, &low, persons, LOW_SCORE_MIN_IOU, false);

        let matched: Vec<(usize, usize)> = first.into_iter().chain(second).collect();
        for &(t, p) in &matched {
            events.extend(self.hit(t, time, &mut persons[p]));
        }
        let mut index = 0;
        self.tracks.retain_mut(|track| {
            let was_matched = matched.iter().any(|&(t, _)| t == index);
            index += 1;
            if !was_matched {
                track.missed = true;
            }
            // A tentative track must be seen in every frame until it is confirmed.
            was_matched || track.id.is_some()
        });
        for &p in &high {
            let taken = matched.iter().any(|&(_, m)| m == p);
            if !taken && persons[p].score >= options.new_track_score {
                events.extend(self.start(time, &mut persons[p]));
            }
        }
        if options.smoothing.is_some() {
            // Persons without a confirmed track are not smoothed: raw and published agree.
            for person in persons.iter_mut().filter(|p| p.keypoints_raw.is_none()) {
                person.keypoints_raw = Some(person.keypoints.clone());
            }
        }
        events
    }

    /// Ends every confirmed track (the stream is over).
    pub fn finish(&mut self) -> Vec<TrackEvent> {
        self.tracks
            .drain(..)
            .filter_map(|track| track.event(TrackEventKind::Lost))
            .collect()
    }

    /// Confirmed tracks still held (seen within the maximum age).
    pub fn confirmed(&self) -> usize {
        self.tracks.iter().filter(|t| t.id.is_some()).count()
    }

    /// The confirmed tracks seen in the last frame, as the next frames may crop them.
    pub fn tracked(&self) -> Vec<TrackedPerson> {
        self.tracks
            .iter()
            .filter(|t| t.id.is_some() && !t.missed)
            .map(|t| TrackedPerson {
                bbox: keypoint_box(&t.keypoints).unwrap_or(t.bbox),
                score: t.score,
                keypoint_score: mean_score(&t.keypoints),
                velocity: t.filter.centre_velocity(),
                time: t.last_seen,
            })
            .collect()
    }

    /// Gated assignment of `tracks` to `detections` (indices into `self.tracks`, `persons`).
    fn match_stage(
        &self,
        tracks: &[usize],
        detections: &[usize],
        persons: &[Person],
        min: f32,
        with_keypoints: bool,
    ) -> Vec<(usize, usize)> {
        let similarity: Vec<f32> = tracks
            .iter()
            .flat_map(|&t| {
                detections
                    .iter()
                    .map(move |&p| self.similarity(&self.tracks[t], &persons[p], with_keypoints))
            })
            .collect();
        assign(&similarity, tracks.len(), detections.len(), min)
            .into_iter()
            .map(|(r, c)| (tracks[r], detections[c]))
            .collect()
    }

    fn similarity(&self, track: &Track, person: &Person, with_keypoints: bool) -> f32 {
        let predicted = bbox_of(track.filter.xyah());
        let iou = iou(predicted, person.bbox);
        if !with_keypoints || iou <= 0.0 {
            return iou;
        }
        match oks(track.predicted_keypoints(), &person.keypoints, person.bbox) {
            Some(oks) => (iou + oks as f32) / 2.0,
            None => iou,
        }
    }

    /// A track's detection in this frame.
    fn hit(&mut self, t: usize, time: f64, person: &mut Person) -> Option<TrackEvent> {
        let track = &mut self.tracks[t];
        track.filter.update(xyah_of(person.bbox));
        if track.missed {
            // Back after a gap: its keypoints start afresh.
            track.smoother.clear();
            track.hits = 0;
        }
        track.hits += 1;
        track.missed = false;
        track.last_seen = time;
        track.frames += 1;
        let event = self.confirm_when_due(t);
        self.observe(t, time, person);
        event
    }

    /// Gives track `t` its ID once it has been seen often enough.
    fn confirm_when_due(&mut self, t: usize) -> Option<TrackEvent> {
        let track = &mut self.tracks[t];
        if track.id.is_some() || track.hits < self.options.confirm_hits {
            return None;
        }
        track.id = Some(self.next_id);
        self.next_id += 1;
        self.tracks[t].event(TrackEventKind::Confirmed)
    }

    /// A new tentative track from an unmatched detection.
    fn start(&mut self, time: f64, person: &mut Person) -> Option<TrackEvent> {
        let measured = xyah_of(person.bbox);
        self.tracks.push(Track {
            id: None,
            filter: BoxFilter::new(measured),
            time,
            hits: 1,
            first_seen: time,
            last_seen: time,
            frames: 1,
            keypoints: Vec::new(),
            centre: [measured[0], measured[1]],
            missed: false,
            smoother: Vec::new(),
            bbox: person.bbox,
            score: person.score,
        });
        let t = self.tracks.len() - 1;
        let event = self.confirm_when_due(t);
        self.observe(t, time, person);
        event
    }

    /// Keeps the detection's keypoints for the next similarity, smooths them when asked, and
    /// labels the person with the track's ID.
    fn observe(&mut self, t: usize, time: f64, person: &mut Person) {
        let scale = self.smoothing_scale;
        let smoothing = self.options.smoothing;
        let track = &mut self.tracks[t];
        let [x, y, ..] = xyah_of(person.bbox);
        track.centre = [x, y];
        track.keypoints.clone_from(&person.keypoints);
        track.bbox = person.bbox;
        track.score = person.score;
        person.track_id = track.id;
        if let (Some(params), Some(_)) = (smoothing, track.id) {
            smooth(&mut track.smoother, params, scale, time, person);
        }
    }
}

/// A confirmed track at its last detection: where the frames that follow may crop it, as
/// MediaPipe crops from the previous frame's landmarks instead of detecting again.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TrackedPerson {
    /// The box around its valid keypoints, padded (the detection's box when too few are valid).
    pub bbox: [f32; 4],
    /// Its last detection's score.
    pub score: f32,
    /// Its keypoints' mean score.
    pub keypoint_score: f32,
    /// Its box centre's velocity, pixels per second.
    pub velocity: [f64; 2],
    /// Stream time of that detection.
    pub time: f64,
}

impl TrackedPerson {
    /// The person's box moved by its velocity to `time`.
    pub fn box_at(&self, time: f64) -> PersonBox {
        let dt = (time - self.time).max(0.0);
        let [dx, dy] = self.velocity.map(|v| (v * dt) as f32);
        let [x1, y1, x2, y2] = self.bbox;
        PersonBox {
            x1: x1 + dx,
            y1: y1 + dy,
            x2: x2 + dx,
            y2: y2 + dy,
            score: self.score,
        }
    }
}

/// The box around the valid keypoints, padded; `None` with fewer than three valid.
fn keypoint_box(keypoints: &[[f32; 3]]) -> Option<[f32; 4]> {
    let valid: Vec<&[f32; 3]> = keypoints
        .iter()
        .filter(|k| k[2] >= VALID_KEYPOINT_SCORE)
        .collect();
    if valid.len() < MIN_SHARED_KEYPOINTS {
        return None;
    }
    let (mut low, mut high) = ([f32::MAX; 2], [f32::MIN; 2]);
    for [x, y, _] in valid {
        low = [low[0].min(*x), low[1].min(*y)];
        high = [high[0].max(*x), high[1].max(*y)];
    }
    let pad = [0, 1].map(|axis| (high[axis] - low[axis]) * KEYPOINT_BOX_PADDING);
    Some([
        low[0] - pad[0],
        low[1] - pad[1],
        high[0] + pad[0],
        high[1] + pad[1],
    ])
}

fn mean_score(keypoints: &[[f32; 3]]) -> f32 {
    if keypoints.is_empty() {
        return 0.0;
    }
    keypoints.iter().map(|k| k[2].max(0.0)).sum::<f32>() / keypoints.len() as f32
}

/// Filters each valid keypoint of `person` with its own pair of One Euro filters (created at
/// its first valid sample); invalid and low-score keypoints stay as decoded and leave their
/// filters untouched.
fn smooth(
    filters: &mut Vec<Option<[OneEuroFilter; 2]>>,
    params: OneEuroParams,
    scale: f64,
    time: f64,
    person: &mut Person,
) {
    filters.resize(person.keypoints.len(), None);
    let raw = person.keypoints.clone();
    for (keypoint, filter) in person.keypoints.iter_mut().zip(filters.iter_mut()) {
        if keypoint[2] < VALID_KEYPOINT_SCORE {
            continue;
        }
        let [fx, fy] = filter.get_or_insert_with(|| [OneEuroFilter::new(params, 30.0); 2]);
        keypoint[0] = (fx.filter(f64::from(keypoint[0]) / scale, time) * scale) as f32;
        keypoint[1] = (fy.filter(f64::from(keypoint[1]) / scale, time) * scale) as f32;
    }
    person.keypoints_raw = Some(raw);
}

/// Intersection over union of two `[x1, y1, x2, y2]` boxes.
pub fn iou(a: [f32; 4], b: [f32; 4]) -> f32 {
    let w = (a[2].min(b[2]) - a[0].max(b[0])).max(0.0);
    let h = (a[3].min(b[3]) - a[1].max(b[1])).max(0.0);
    let intersection = w * h;
    let area = |r: [f32; 4]| (r[2] - r[0]).max(0.0) * (r[3] - r[1]).max(0.0);
    let union = area(a) + area(b) - intersection;
    if union > 0.0 {
        intersection / union
    } else {
        0.0
    }
}

/// Object keypoint similarity of the keypoints valid in both, with the detection's box area
/// as the scale; `None` when fewer than [`MIN_SHARED_KEYPOINTS`] are.
fn oks(
    track: impl Iterator<Item = [f64; 3]>,
    detection: &[[f32; 3]],
    bbox: [f32; 4],
) -> Option<f64> {
    let area = f64::from((bbox[2] - bbox[0]) * (bbox[3] - bbox[1])).max(1.0);
    let valid = |score: f64| score >= f64::from(VALID_KEYPOINT_SCORE);
    let (sum, count) = track
        .zip(detection)
        .filter(|([_, _, ts], [_, _, ds])| valid(*ts) && valid(f64::from(*ds)))
        .map(|([tx, ty, _], &[dx, dy, _])| {
            let squared = (tx - f64::from(dx)).powi(2) + (ty - f64::from(dy)).powi(2);
            (-squared / (2.0 * area * OKS_KAPPA * OKS_KAPPA)).exp()
        })
        .fold((0.0, 0), |(sum, count), value| (sum + value, count + 1));
    (count >= MIN_SHARED_KEYPOINTS).then(|| sum / count as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn person(bbox: [f32; 4], score: f32) -> Person {
        Person {
            bbox,
            score,
            track_id: None,
            keypoints: Vec::new(),
            keypoints_raw: None,
        }
    }

    fn shifted(bbox: [f32; 4], dx: f32) -> [f32; 4] {
        [bbox[0] + dx, bbox[1], bbox[2] + dx, bbox[3]]
    }

    #[test]
    fn ids_are_given_at_confirmation_kept_and_never_reused() {
        let mut tracker = Tracker::new(TrackerOptions::default(), 720);
        let start = [100.0, 100.0, 200.0, 400.0];
        let mut ids = Vec::new();
        for frame in 0..10 {
            let mut persons = [person(shifted(start, 5.0 * frame as f32), 0.9)];
            let events = tracker.update(f64::from(frame) / 30.0, &mut persons);
            ids.push(persons[0].track_id);
            if frame == 1 {
                assert_eq!(events.len(), 1);
                assert_eq!(events[0].kind, TrackEventKind::Confirmed);
            }
        }
        assert_eq!(ids[0], None);
        assert!(ids[1..].iter().all(|id| *id == Some(1)), "{ids:?}");
        // Gone for longer than the maximum age: lost; a person there again gets a new ID.
        let events = tracker.update(2.0, &mut []);
        assert_eq!(events.len(), 1);
        assert_eq!(
            (events[0].kind, events[0].frames),
            (TrackEventKind::Lost, 10)
        );
        let mut persons = [person(start, 0.9)];
        tracker.update(2.1, &mut persons);
        tracker.update(2.13, &mut persons);
        assert_eq!(persons[0].track_id, Some(2));
        // Ended all at once (a stream's clock went back): the IDs still go on.
        assert_eq!(tracker.finish().len(), 1);
        tracker.update(0.0, &mut persons);
        tracker.update(0.04, &mut persons);
        assert_eq!(persons[0].track_id, Some(3));
    }

    #[test]
    fn a_short_gap_keeps_the_id_and_low_scores_keep_a_track_alive() {
        let mut tracker = Tracker::new(TrackerOptions::default(), 720);
        let start = [100.0, 100.0, 200.0, 400.0];
        let step = |frame: i32| shifted(start, 4.0 * frame as f32);
        for frame in 0..5 {
            tracker.update(f64::from(frame) / 30.0, &mut [person(step(frame), 0.9)]);
        }
        // Occluded for half a second (no detection), then a weak detection, then strong.
        for (frame, score) in [(20, 0.3), (21, 0.9)] {
            let mut persons = [person(step(frame), score)];
            tracker.update(f64::from(frame) / 30.0, &mut persons);
            assert_eq!(persons[0].track_id, Some(1), "frame {frame}");
        }
    }

    #[test]
    fn keypoint_similarity_tells_apart_overlapping_boxes() {
        // Two people standing close, boxes overlapping; in some frames the detector's boxes
        // drift towards each other's place (IoU alone would swap the IDs there), while each
        // person's keypoints stay where that person is.
        let keypoints = |x: f32| {
            (0..17)
                .map(|i| [x, 110.0 + 15.0 * i as f32, 0.9])
                .collect::<Vec<_>>()
        };
        let (a_box, b_box) = ([100.0, 100.0, 200.0, 400.0], [130.0, 100.0, 230.0, 400.0]);
        let (a_drifted, b_drifted) = ([125.0, 100.0, 225.0, 400.0], [105.0, 100.0, 205.0, 400.0]);
        let mut tracker = Tracker::new(TrackerOptions::default(), 720);
        let mut first_ids = None;
        for frame in 0..12 {
            let drifted = frame >= 4 && frame % 3 != 0;
            let (a, b) = if drifted {
                (a_drifted, b_drifted)
            } else {
                (a_box, b_box)
            };
            let mut persons = [person(a, 0.9), person(b, 0.9)];
            persons[0].keypoints = keypoints(150.0);
            persons[1].keypoints = keypoints(180.0);
            tracker.update(f64::from(frame) / 30.0, &mut persons);
            let ids = (persons[0].track_id, persons[1].track_id);
            if frame >= 1 {
                assert_eq!(*first_ids.get_or_insert(ids), ids, "frame {frame}");
            }
        }
        assert_ne!(first_ids.unwrap().0, first_ids.unwrap().1);
    }

    #[test]
    fn smoothing_keeps_the_raw_keypoints_and_skips_low_scores() {
        let options = TrackerOptions {
            smoothing: Some(OneEuroParams::checked(1.0, 0.0, 1.0).unwrap()),
            ..TrackerOptions::default()
        };
        let mut tracker = Tracker::new(options, 720);
        let bbox = [100.0, 100.0, 200.0, 400.0];
        let mut last = None;
        for frame in 0..4 {
            let mut persons = [person(bbox, 0.9)];
            let jitter = if frame % 2 == 0 { 2.0 } else { -2.0 };
            persons[0].keypoints = vec![[150.0 + jitter, 200.0, 0.9], [160.0 + jitter, 210.0, 0.1]];
            tracker.update(f64::from(frame) / 30.0, &mut persons);
            last = Some(persons[0].clone());
        }
        let person = last.unwrap();
        let raw = person.keypoints_raw.as_ref().unwrap();
        assert_eq!(raw[0], [148.0, 200.0, 0.9]);
        assert!(
            (person.keypoints[0][0] - 150.0).abs() < 2.0,
            "{:?}",
            person.keypoints
        );
        assert_eq!(person.keypoints[1], raw[1]);
    }

    #[test]
    fn iou_of_known_boxes() {
        assert_eq!(iou([0.0, 0.0, 2.0, 2.0], [1.0, 0.0, 3.0, 2.0]), 2.0 / 6.0);
        assert_eq!(iou([0.0, 0.0, 1.0, 1.0], [2.0, 2.0, 3.0, 3.0]), 0.0);
    }
}
