//! Top-down pose: person boxes become UDP crops in batch slots, heatmaps become keypoints in
//! frame pixels (docs/SAPIENS.md steps 1-4).

pub mod cuda;
pub mod decode;

use serde::Serialize;

use self::decode::{HeatmapPeak, decode_dark_udp};
use super::{INPUT_HEIGHT, INPUT_LEN, INPUT_WIDTH, OutputLayout};
use crate::frame::HostFrame;
use crate::preprocess::{Normalization, PoseCrop, warp_crop};

/// A person box in frame pixels, with its detector score.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PersonBox {
    pub x1: f32,
    pub y1: f32,
    pub x2: f32,
    pub y2: f32,
    pub score: f32,
}

impl PersonBox {
    /// Without a detector the whole frame is one person (docs/SAPIENS.md step 1).
    pub fn whole_frame(width: usize, height: usize) -> Self {
        PersonBox {
            x1: 0.0,
            y1: 0.0,
            x2: width as f32,
            y2: height as f32,
            score: 1.0,
        }
    }

    /// At least a pixel wide and high: smaller boxes are left out, their crop would be empty.
    pub fn is_croppable(&self) -> bool {
        self.x2 - self.x1 >= 1.0 && self.y2 - self.y1 >= 1.0
    }

    pub fn crop(&self) -> PoseCrop {
        PoseCrop::from_box(
            self.x1,
            self.y1,
            self.x2,
            self.y2,
            INPUT_WIDTH,
            INPUT_HEIGHT,
        )
    }
}

/// One person's pose in frame pixels, as published.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Person {
    pub bbox: [f32; 4],
    pub score: f32,
    /// Stable identity across frames once a tracker assigns one.
    pub track_id: Option<u64>,
    /// `[x, y, score]` per keypoint in the model's order; a keypoint with score <= 0 is invalid
    /// and has x = y = -1. Smoothed when smoothing is on.
    pub keypoints: Vec<[f32; 3]>,
    /// With smoothing: the keypoints as decoded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keypoints_raw: Option<Vec<[f32; 3]>>,
}

/// Warps each box's crop into consecutive batch slots of `input` (one slot per box), from a
/// frame of any layout.
pub fn prepare_crops<'a>(
    frame: impl Into<HostFrame<'a>>,
    boxes: &[PersonBox],
    input: &mut [f32],
    norm: &Normalization,
) {
    let frame = frame.into();
    for (person, slot) in boxes.iter().zip(input.chunks_exact_mut(INPUT_LEN)) {
        warp_crop(frame, &person.crop(), slot, INPUT_WIDTH, INPUT_HEIGHT, norm);
    }
}

/// Decodes a batch of heatmaps (one item per box) into persons; `peaks` is reused scratch.
pub fn decode_persons(
    heatmaps: &[f32],
    layout: OutputLayout,
    boxes: &[PersonBox],
    peaks: &mut Vec<HeatmapPeak>,
) -> Vec<Person> {
    boxes
        .iter()
        .zip(heatmaps.chunks_exact(layout.item_len()))
        .map(|(person, maps)| {
            decode_dark_udp(maps, layout.channels, layout.height, layout.width, peaks);
            person_from_peaks(person, peaks, layout)
        })
        .collect()
}

/// Persons from peaks decoded elsewhere (on the GPU): `layout.channels` peaks per box, in order.
pub fn persons_from_peaks(
    peaks: &[HeatmapPeak],
    layout: OutputLayout,
    boxes: &[PersonBox],
) -> Vec<Person> {
    boxes
        .iter()
        .zip(peaks.chunks_exact(layout.channels))
        .map(|(person, peaks)| person_from_peaks(person, peaks, layout))
        .collect()
}

fn person_from_peaks(person: &PersonBox, peaks: &[HeatmapPeak], layout: OutputLayout) -> Person {
    let crop = person.crop();
    Person {
        bbox: [person.x1, person.y1, person.x2, person.y2],
        score: person.score,
        track_id: None,
        keypoints: peaks.iter().map(|p| to_frame(p, layout, &crop)).collect(),
        keypoints_raw: None,
    }
}

/// Heatmap pixels -> crop pixels (UDP: the last heatmap pixel is the last input pixel) -> frame pixels.
fn to_frame(peak: &HeatmapPeak, layout: OutputLayout, crop: &PoseCrop) -> [f32; 3] {
    if peak.score <= 0.0 {
        return [-1.0, -1.0, peak.score];
    }
    let x_in = peak.x / (layout.width - 1) as f32 * INPUT_WIDTH as f32;
    let y_in = peak.y / (layout.height - 1) as f32 * INPUT_HEIGHT as f32;
    let x = x_in / INPUT_WIDTH as f32 * crop.w + crop.cx - crop.w / 2.0;
    let y = y_in / INPUT_HEIGHT as f32 * crop.h + crop.cy - crop.h / 2.0;
    [x, y, peak.score]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tasks::Family;
    use crate::testkit::synthetic::add_gaussian;

    #[test]
    fn peaks_decoded_elsewhere_give_the_same_persons() {
        let layout = OutputLayout {
            channels: 17,
            height: 64,
            width: 48,
            family: Family::Sapiens,
        };
        let boxes = [
            PersonBox {
                x1: 10.0,
                y1: 20.0,
                x2: 110.0,
                y2: 250.0,
                score: 0.9,
            },
            PersonBox {
                x1: 300.0,
                y1: 40.0,
                x2: 420.0,
                y2: 200.0,
                score: 0.7,
            },
        ];
        let plane = layout.height * layout.width;
        let mut heatmaps = vec![0.0; boxes.len() * layout.item_len()];
        for (k, map) in heatmaps.chunks_mut(plane).enumerate() {
            let centre = ((k * 7 % 40) as f32 + 3.5, (k * 11 % 55) as f32 + 4.25);
            add_gaussian(map, layout.width, centre, 2.0, 0.5 + (k % 3) as f32);
        }
        let mut scratch = Vec::new();
        let expected = decode_persons(&heatmaps, layout, &boxes, &mut scratch);
        let mut peaks = Vec::new();
        for maps in heatmaps.chunks(layout.item_len()) {
            decode_dark_udp(
                maps,
                layout.channels,
                layout.height,
                layout.width,
                &mut scratch,
            );
            peaks.extend_from_slice(&scratch);
        }
        let persons = persons_from_peaks(&peaks, layout, &boxes);
        assert_eq!(persons.len(), 2);
        for (got, want) in persons.iter().zip(&expected) {
            assert_eq!(got.bbox, want.bbox);
            assert_eq!(got.keypoints, want.keypoints);
        }
        // One peak short: the last person cannot be made, rather than made wrong.
        assert_eq!(
            persons_from_peaks(&peaks[..peaks.len() - 1], layout, &boxes).len(),
            1
        );
    }

    #[test]
    fn heatmap_corners_map_to_crop_corners() {
        let layout = OutputLayout {
            channels: 1,
            height: 256,
            width: 192,
            family: Family::Sapiens,
        };
        let crop = PoseCrop {
            cx: 500.0,
            cy: 300.0,
            w: 300.0,
            h: 400.0,
        };
        let top_left = to_frame(
            &HeatmapPeak {
                x: 0.0,
                y: 0.0,
                score: 0.9,
            },
            layout,
            &crop,
        );
        assert_eq!(top_left, [350.0, 100.0, 0.9]);
        let bottom_right = to_frame(
            &HeatmapPeak {
                x: 191.0,
                y: 255.0,
                score: 0.5,
            },
            layout,
            &crop,
        );
        assert!((bottom_right[0] - 650.0).abs() < 1e-3 && (bottom_right[1] - 500.0).abs() < 1e-3);
        let invalid = to_frame(
            &HeatmapPeak {
                x: -1.0,
                y: -1.0,
                score: -0.2,
            },
            layout,
            &crop,
        );
        assert_eq!(invalid, [-1.0, -1.0, -0.2]);
    }
}
