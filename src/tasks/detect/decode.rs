//! A detector's outputs to person boxes in frame pixels: the layout recognised from the
//! declared outputs, the person rows above the threshold, mapped back through the letterbox,
//! clipped, and merged by NMS.

use super::DetectorOptions;
use crate::engine::graph::{ElementType, HostTensor, TensorSpec};
use crate::preprocess::letterbox::Letterbox;
use crate::tasks::pose::PersonBox;

/// COCO's person class, the first class of both detector families.
const PERSON_CLASS: i64 = 0;
/// At most this many persons per frame survive NMS.
const MAX_PERSONS: usize = 100;
/// Input side used when the model declares a dynamic height or width.
const FALLBACK_INPUT_SIDE: usize = 640;

/// Which outputs hold what, once the layout is recognised.
#[derive(Clone, Copy, Debug)]
pub(super) enum OutputPlan {
    RtmDet { dets: usize, labels: usize },
    Yolo,
}

/// The persons of a run's outputs in frame pixels, after the threshold and NMS.
pub(super) fn persons_in_frame(
    plan: OutputPlan,
    outputs: &[HostTensor],
    options: &DetectorOptions,
    letterbox: &Letterbox,
    (frame_w, frame_h): (usize, usize),
) -> std::result::Result<Vec<PersonBox>, String> {
    let threshold = options.score_threshold;
    let candidates = match plan {
        OutputPlan::RtmDet { dets, labels } => {
            rtmdet_persons(&outputs[dets], &outputs[labels], threshold)
        }
        OutputPlan::Yolo => yolo_persons(&outputs[0], threshold),
    }?;
    let in_frame = candidates
        .into_iter()
        .filter_map(|person| box_in_frame(person, letterbox, frame_w, frame_h))
        .collect();
    Ok(non_maximum_suppression(in_frame, options.nms_iou))
}

/// What a refused model is expected to look like.
const EXPECTED_LAYOUTS: &str = "expected RTMDet as exported by mmdeploy ('dets' float32 (1, N, 5) and 'labels' int64 (1, N)) or ultralytics YOLO v8/v11 (one float32 output (1, 4 + classes, anchors))";

pub(super) fn recognise_outputs(outputs: &[TensorSpec]) -> std::result::Result<OutputPlan, String> {
    let tensor = |spec: &TensorSpec| spec.element.zip(spec.shape.clone());
    let is_dets = |spec: &TensorSpec| {
        tensor(spec)
            .is_some_and(|(ty, s)| ty == ElementType::F32 && s.len() == 3 && s[2] == Some(5))
    };
    let is_labels = |spec: &TensorSpec| {
        tensor(spec).is_some_and(|(ty, s)| {
            matches!(ty, ElementType::I64 | ElementType::I32) && s.len() == 2
        })
    };
    // ultralytics' one-class models have 5 channels; more channels than anchors means a
    // transposed or NMS-included export, which this reader would misread.
    let is_yolo = |spec: &TensorSpec| {
        tensor(spec).is_some_and(|(ty, s)| {
            ty == ElementType::F32
                && s.len() == 3
                && s[1].is_some_and(|channels| {
                    channels >= 5 && s[2].is_none_or(|anchors| channels < anchors)
                })
        })
    };
    if outputs.len() == 2 {
        for (dets, labels) in [(0, 1), (1, 0)] {
            if is_dets(&outputs[dets]) && is_labels(&outputs[labels]) {
                return Ok(OutputPlan::RtmDet { dets, labels });
            }
        }
    }
    if let [only] = outputs
        && is_yolo(only)
    {
        return Ok(OutputPlan::Yolo);
    }
    let found: Vec<String> = outputs
        .iter()
        .map(|o| format!("'{}' {}", o.name, o.value_type))
        .collect();
    Err(format!(
        "not a person detector this program reads: outputs {}; {EXPECTED_LAYOUTS}",
        found.join(", ")
    ))
}

/// The image input's size (width, height); dynamic sides fall back to 640.
pub(super) fn image_input(inputs: &[TensorSpec]) -> std::result::Result<(usize, usize), String> {
    let [input] = inputs else {
        return Err(format!(
            "a person detector has one image input, this model has {}",
            inputs.len()
        ));
    };
    let shape = match (input.element, &input.shape) {
        (Some(ElementType::F32), Some(shape))
            if shape.len() == 4 && matches!(shape[1], None | Some(3)) =>
        {
            shape
        }
        _ => {
            return Err(format!(
                "input '{}' is {}, expected float32 (1, 3, H, W)",
                input.name, input.value_type
            ));
        }
    };
    let side = |d: Option<usize>| d.filter(|&d| d > 0).unwrap_or(FALLBACK_INPUT_SIDE);
    Ok((side(shape[3]), side(shape[2])))
}

/// RTMDet rows above the threshold labelled person, in input pixels.
fn rtmdet_persons(
    dets: &HostTensor,
    labels: &HostTensor,
    threshold: f32,
) -> std::result::Result<Vec<PersonBox>, String> {
    let HostTensor::F32 { values: dets, .. } = dets else {
        return Err("'dets' is not float32".into());
    };
    let HostTensor::I64 { values: labels, .. } = labels else {
        return Err("'labels' are not integers".into());
    };
    if dets.len() != 5 * labels.len() {
        return Err(format!(
            "{} detections but {} labels",
            dets.len() / 5,
            labels.len()
        ));
    }
    Ok(dets
        .chunks_exact(5)
        .zip(labels)
        .filter(|(det, label)| **label == PERSON_CLASS && det[4] > threshold)
        .map(|(det, _)| PersonBox {
            x1: det[0],
            y1: det[1],
            x2: det[2],
            y2: det[3],
            score: det[4],
        })
        .collect())
}

/// YOLO anchors whose best class is person with a score above the threshold, in input pixels.
fn yolo_persons(
    output: &HostTensor,
    threshold: f32,
) -> std::result::Result<Vec<PersonBox>, String> {
    let HostTensor::F32 { shape, values } = output else {
        return Err("the output is not float32".into());
    };
    let &[1, channels @ 5..=i64::MAX, anchors] = &shape[..] else {
        return Err(format!(
            "output shape {:?}, expected (1, 4 + classes, anchors)",
            &shape[..]
        ));
    };
    let (channels, anchors) = (channels as usize, anchors as usize);
    let row = |c: usize| &values[c * anchors..][..anchors];
    let (cx, cy, w, h) = (row(0), row(1), row(2), row(3));
    let persons = (0..anchors).filter_map(|a| {
        let person_score = row(4)[a];
        // ultralytics' argmax keeps the first of equal scores, so only a higher class beats person.
        let best_is_person = || (5..channels).all(|c| row(c)[a] <= person_score);
        (person_score > threshold && best_is_person()).then(|| PersonBox {
            x1: cx[a] - w[a] / 2.0,
            y1: cy[a] - h[a] / 2.0,
            x2: cx[a] + w[a] / 2.0,
            y2: cy[a] + h[a] / 2.0,
            score: person_score,
        })
    });
    Ok(persons.collect())
}

/// Input pixels -> frame pixels, clipped to the frame; `None` when nothing of the box is inside.
fn box_in_frame(
    person: PersonBox,
    letterbox: &Letterbox,
    frame_w: usize,
    frame_h: usize,
) -> Option<PersonBox> {
    let (x1, y1) = letterbox.to_frame(person.x1, person.y1);
    let (x2, y2) = letterbox.to_frame(person.x2, person.y2);
    let clip_x = |x: f32| x.clamp(0.0, frame_w as f32);
    let clip_y = |y: f32| y.clamp(0.0, frame_h as f32);
    let clipped = PersonBox {
        x1: clip_x(x1),
        y1: clip_y(y1),
        x2: clip_x(x2),
        y2: clip_y(y2),
        score: person.score,
    };
    // Also drops NaN coordinates, which a pose crop cannot take.
    (clipped.x2 > clipped.x1 && clipped.y2 > clipped.y1).then_some(clipped)
}

fn area(b: &PersonBox) -> f32 {
    (b.x2 - b.x1) * (b.y2 - b.y1)
}

fn iou(a: &PersonBox, b: &PersonBox) -> f32 {
    let w = a.x2.min(b.x2) - a.x1.max(b.x1);
    let h = a.y2.min(b.y2) - a.y1.max(b.y1);
    if w <= 0.0 || h <= 0.0 {
        return 0.0;
    }
    let intersection = w * h;
    intersection / (area(a) + area(b) - intersection)
}

/// Greedy NMS: highest score first, a box is dropped when it overlaps a kept one by more than
/// `max_iou`; at most [`MAX_PERSONS`] are kept, sorted by score.
fn non_maximum_suppression(mut boxes: Vec<PersonBox>, max_iou: f32) -> Vec<PersonBox> {
    sort_by_score(&mut boxes);
    let mut kept: Vec<PersonBox> = Vec::new();
    for candidate in boxes {
        if kept.len() == MAX_PERSONS {
            break;
        }
        if kept.iter().all(|k| iou(k, &candidate) <= max_iou) {
            kept.push(candidate);
        }
    }
    kept
}

/// Highest score first; ties keep their order.
pub(super) fn sort_by_score(boxes: &mut [PersonBox]) {
    boxes.sort_by(|a, b| b.score.total_cmp(&a.score));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::preprocess::letterbox::Fit;

    fn person(x1: f32, y1: f32, x2: f32, y2: f32, score: f32) -> PersonBox {
        PersonBox {
            x1,
            y1,
            x2,
            y2,
            score,
        }
    }

    #[test]
    fn iou_of_known_overlaps() {
        let a = person(0.0, 0.0, 10.0, 10.0, 1.0);
        assert_eq!(iou(&a, &person(5.0, 0.0, 15.0, 10.0, 1.0)), 50.0 / 150.0);
        assert_eq!(iou(&a, &a), 1.0);
        assert_eq!(iou(&a, &person(10.0, 0.0, 20.0, 10.0, 1.0)), 0.0);
    }

    #[test]
    fn nms_keeps_the_best_of_each_overlapping_group_in_score_order() {
        let boxes = vec![
            person(1.0, 0.0, 11.0, 10.0, 0.8), // IoU 9/11 with the first: dropped
            person(20.0, 20.0, 30.0, 30.0, 0.7), // apart: kept
            person(0.0, 0.0, 10.0, 10.0, 0.9),
            person(5.0, 0.0, 15.0, 10.0, 0.6), // IoU 1/3 with the first: kept at 0.5, dropped at 0.3
        ];
        let scores = |kept: Vec<PersonBox>| kept.iter().map(|b| b.score).collect::<Vec<_>>();
        assert_eq!(
            scores(non_maximum_suppression(boxes.clone(), 0.5)),
            [0.9, 0.7, 0.6]
        );
        assert_eq!(scores(non_maximum_suppression(boxes, 0.3)), [0.9, 0.7]);
    }

    #[test]
    fn nms_keeps_at_most_max_persons() {
        let boxes = (0..150)
            .map(|i| person(i as f32 * 20.0, 0.0, i as f32 * 20.0 + 10.0, 10.0, 0.5))
            .collect();
        assert_eq!(non_maximum_suppression(boxes, 0.3).len(), MAX_PERSONS);
    }

    #[test]
    fn boxes_outside_the_frame_are_clipped_or_dropped() {
        let letterbox = Letterbox::new(Fit::Centred, 100, 50, 200, 200);
        // Scale 2, 50 rows of padding above.
        assert_eq!(
            (letterbox.top, letterbox.left, letterbox.scale_x),
            (50, 0, 2.0)
        );
        let clipped = box_in_frame(person(-10.0, 40.0, 100.0, 100.0, 0.5), &letterbox, 100, 50);
        assert_eq!(clipped, Some(person(0.0, 0.0, 50.0, 25.0, 0.5)));
        assert_eq!(
            box_in_frame(person(0.0, 0.0, 100.0, 40.0, 0.5), &letterbox, 100, 50),
            None
        );
    }
}
