//! Tracked persons on the overlay: each box outlined in its track's own colour, with the ID
//! written above it (8x8 bitmap glyphs, scaled with the frame).

use tiny_skia::{PathBuilder, PixmapMut, Rect, Stroke, Transform};

use super::paint;
use super::text::{draw_plate, plate_size};

/// A tracked person as drawn: its ID and box in frame pixels.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TrackMark {
    pub id: u64,
    pub bbox: [f32; 4],
}

/// A colour per ID, hues a golden ratio apart so that consecutive IDs differ most; bright and
/// saturated to stand out on video.
pub fn track_colour(id: u64) -> [u8; 3] {
    let hue = (id as f64 * 0.618_033_988_749_895).fract() * 6.0;
    let (sector, within) = (hue.floor() as u8, hue.fract());
    let (high, low) = (255.0, 40.0);
    let rising = low + (high - low) * within;
    let falling = high - (high - low) * within;
    let [r, g, b] = match sector {
        0 => [high, rising, low],
        1 => [falling, high, low],
        2 => [low, high, rising],
        3 => [low, falling, high],
        4 => [rising, low, high],
        _ => [high, low, falling],
    };
    [r, g, b].map(|c| c.round() as u8)
}

/// The frame area a mark may touch: its box, its outline's width and its label above.
pub(super) fn mark_extent(mark: &TrackMark, scale: f32) -> [f32; 4] {
    let [x1, y1, x2, y2] = mark.bbox;
    let (label_width, label_height) = plate_size(&label_text(mark.id), scale);
    let reach = scale + 2.0;
    [
        x1 - reach,
        y1 - label_height - reach,
        x2.max(x1 + label_width) + reach,
        y2 + reach,
    ]
}

fn label_text(id: u64) -> String {
    id.to_string()
}

/// Outlines the box and writes the ID on a dark plate just above its top-left corner.
pub(super) fn draw_mark(
    pixmap: &mut PixmapMut,
    mark: &TrackMark,
    scale: f32,
    transform: Transform,
) {
    let colour = track_colour(mark.id);
    let [x1, y1, x2, y2] = mark.bbox;
    if let Some(rect) = Rect::from_ltrb(x1, y1, x2, y2) {
        let stroke = Stroke {
            width: scale.max(1.5),
            ..Stroke::default()
        };
        pixmap.stroke_path(
            &PathBuilder::from_rect(rect),
            &paint(&colour),
            &stroke,
            transform,
            None,
        );
    }
    let text = label_text(mark.id);
    let (_, height) = plate_size(&text, scale);
    draw_plate(pixmap, &text, (x1, y1 - height), scale, colour, transform);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consecutive_ids_get_clearly_different_colours() {
        let distance = |a: [u8; 3], b: [u8; 3]| {
            a.iter()
                .zip(b)
                .map(|(&x, y)| (i32::from(x) - i32::from(y)).abs())
                .max()
                .unwrap()
        };
        for id in 1..200 {
            assert!(
                distance(track_colour(id), track_colour(id + 1)) >= 60,
                "{id}"
            );
        }
    }
}
