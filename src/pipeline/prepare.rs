//! The preprocess stage: finds the persons and makes the model inputs on the host (unless the
//! GPU makes them from the frame itself).

use std::sync::Arc;

use crossbeam_channel::Receiver;

use crate::error::Error;
use crate::frame::Frame;
use crate::metrics::{Metrics, StageStats};
use crate::preprocess::letterbox::LetterboxInput;
use crate::preprocess::{Normalization, StretchPlan};
use crate::tasks::INPUT_LEN;
use crate::tasks::pose::{self, PersonBox};

use super::decode::StageOutcome;
use super::links::{Handoff, Pool, RemoteOutage};
use super::models::{DenseInputs, PersonFinder};
use super::track_crops::TrackCrops;
use super::work::Work;

/// What the preprocess stage needs: where persons come from and how inputs are made.
pub(super) struct Preparation {
    pub(super) metrics: Arc<Metrics>,
    pub(super) pool: Pool,
    pub(super) stretch: StretchPlan,
    /// `None` when no pose model runs.
    pub(super) persons: Option<PersonFinder>,
    pub(super) dense: DenseInputs,
    /// Makes the padded input of Sapiens2 normal and pointmap models, when one runs.
    pub(super) padding: Option<LetterboxInput>,
    /// The GPU makes the model inputs from the frame itself.
    pub(super) inputs_on_device: bool,
    /// Crops from the tracks between detector runs (`--detect-every`).
    pub(super) track_crops: Option<TrackCrops>,
    /// Leading frames whose tensors `--dump` writes: on a GPU they take the host path (over the
    /// same sessions), so the tensors the model saw are at hand.
    pub(super) dumped_frames: u64,
}

pub(super) fn preprocess_stage(
    frames: Receiver<Frame>,
    out: Handoff<Work>,
    mut prep: Preparation,
) -> StageOutcome {
    let mut detect_stats = StageStats::new("detect").reporting_to(&prep.metrics);
    let mut stats = StageStats::new("preprocess").reporting_to(&prep.metrics);
    let norm = Normalization::SAPIENS;
    let mut outage = RemoteOutage::new(&prep.metrics);
    for frame in frames {
        // Only a detector on this thread is timed as `detect`: the GPU's reports from the
        // inference stage, and boxes that are given cost nothing to find.
        let found = match prep.persons.as_mut() {
            Some(finder @ PersonFinder::Detector(_)) => {
                // Between detector runs (`--detect-every`) the tracks give the crops.
                let tracked = prep
                    .track_crops
                    .as_mut()
                    .and_then(|crops| crops.boxes(frame.index, frame.stream_seconds()));
                match tracked {
                    Some(mut boxes) => {
                        boxes.retain(PersonBox::is_croppable);
                        Ok(boxes)
                    }
                    None => detect_stats.time(|| finder.boxes(&frame)),
                }
            }
            Some(finder) => finder.boxes(&frame),
            None => Ok(Vec::new()),
        };
        let boxes = match found {
            Ok(boxes) => {
                outage.answered();
                boxes
            }
            // Live: a frame the detector's server did not answer for is dropped.
            Err(Error::RemoteUnavailable { model, message }) => {
                outage.unanswered(&model, &message, "detect", 1);
                out.count_drop();
                continue;
            }
            Err(error) => return Err(error),
        };
        let work = stats.time(|| {
            let on_host = !prep.inputs_on_device || frame.index < prep.dumped_frames;
            let pose_input = (on_host && prep.persons.is_some()).then(|| {
                let mut input = prep.pool.get(boxes.len() * INPUT_LEN);
                frame.with_host_frame(|f| pose::prepare_crops(*f, &boxes, &mut input, &norm));
                input
            });
            let dense_input = (on_host && prep.dense.stretched).then(|| {
                let mut input = prep.pool.get(INPUT_LEN);
                frame.with_host_frame(|f| prep.stretch.run(*f, &mut input, &norm));
                input
            });
            let padded_input = prep.padding.as_mut().filter(|_| on_host).map(|padding| {
                let mut input = prep.pool.get(INPUT_LEN);
                frame.with_host_frame(|f| padding.prepare_into(*f, &mut input));
                input
            });
            Work {
                pose_input,
                dense_input,
                padded_input,
                ..Work::new(frame, boxes)
            }
        });
        if !out.send(work) {
            break;
        }
    }
    let detected = matches!(prep.persons, Some(PersonFinder::Detector(_)));
    let stats = if detected {
        vec![detect_stats, stats]
    } else {
        vec![stats]
    };
    Ok((0, stats))
}
