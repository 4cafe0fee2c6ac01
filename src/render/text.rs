//! Text on the overlay: 8x8 bitmap glyphs on a dark plate, for track IDs and for the banner
//! that marks a video made with a random-weight model.

use tiny_skia::{FillRule, Paint, PathBuilder, Pixmap, PixmapMut, PixmapPaint, Rect, Transform};

/// Glyph side in font pixels.
const GLYPH: usize = 8;
/// The banner's ink: a warning yellow that stands out on the dark plate.
const BANNER_INK: [u8; 3] = [255, 214, 0];

/// Pixels per font pixel of labels, and the width of lines drawn with them, for a frame whose
/// longer side is `side`.
pub(super) fn label_scale(side: usize) -> f32 {
    (side as f32 / 480.0).ceil().max(1.0)
}

/// Width and height of the plate behind `text`: the glyphs with a font pixel's margin.
pub(super) fn plate_size(text: &str, scale: f32) -> (f32, f32) {
    let unit = GLYPH as f32 * scale;
    (
        unit * text.chars().count() as f32 + 2.0 * scale,
        unit + 2.0 * scale,
    )
}

/// One line of text in a frame's top-left corner, drawn once and laid on every frame: what a
/// video made with a random-weight model says.
pub struct Banner {
    layer: Pixmap,
    /// The layer's top-left corner in the frame.
    origin: (i32, i32),
    frame_size: (usize, usize),
}

impl Banner {
    /// `text` for frames of `width` x `height`: half a label's scale, so the line fits across
    /// a frame of any size (glyphs of about 16 pixels on 1080p, 8 on VGA); `None` when it
    /// cannot be drawn at all.
    pub fn new(text: &str, width: usize, height: usize) -> Option<Self> {
        let scale = (label_scale(width.max(height)) / 2.0).ceil();
        let (plate_width, plate_height) = plate_size(text, scale);
        let mut layer = Pixmap::new(plate_width as u32, plate_height as u32)?;
        let identity = Transform::identity();
        draw_plate(
            &mut layer.as_mut(),
            text,
            (0.0, 0.0),
            scale,
            BANNER_INK,
            identity,
        );
        let margin = 2 * scale as i32;
        Some(Self {
            layer,
            origin: (margin, margin),
            frame_size: (width, height),
        })
    }

    /// The frame size it was made for.
    pub fn frame_size(&self) -> (usize, usize) {
        self.frame_size
    }

    /// The banner as drawn, its corner at [`Self::origin`].
    pub(super) fn layer(&self) -> &Pixmap {
        &self.layer
    }

    /// Where the layer's top-left corner goes in the frame.
    pub(super) fn origin(&self) -> (i32, i32) {
        self.origin
    }

    /// Lays the banner on `pixmap`, a view of the whole frame.
    pub(super) fn draw(&self, pixmap: &mut PixmapMut) {
        let (x, y) = self.origin;
        let paint = PixmapPaint::default();
        let identity = Transform::identity();
        pixmap.draw_pixmap(x, y, self.layer.as_ref(), &paint, identity, None);
    }
}

/// `text` in `ink` on a dark plate whose top-left corner is `(left, top)`, in whole pixels:
/// glyph dots are not anti-aliased, and a half-pixel edge would round either way. Characters
/// beyond ASCII are left blank.
pub(super) fn draw_plate(
    pixmap: &mut PixmapMut,
    text: &str,
    (left, top): (f32, f32),
    scale: f32,
    ink: [u8; 3],
    transform: Transform,
) {
    let (left, top) = (left.round(), top.round());
    let (width, height) = plate_size(text, scale);
    if let Some(plate) = Rect::from_xywh(left, top, width, height) {
        let mut dark = Paint::default();
        dark.set_color_rgba8(0, 0, 0, 200);
        pixmap.fill_rect(plate, &dark, transform, None);
    }
    // Every dot in one path, filled once: a rect fill per dot costs more than the dot.
    let mut dots = PathBuilder::new();
    for (index, character) in text.chars().enumerate() {
        let Some(glyph) = font8x8::legacy::BASIC_LEGACY.get(character as usize) else {
            continue;
        };
        let origin_x = left + scale + (index * GLYPH) as f32 * scale;
        for (row, bits) in glyph.iter().enumerate() {
            for column in (0..GLYPH).filter(|c| bits >> c & 1 == 1) {
                let x = origin_x + column as f32 * scale;
                let y = top + scale + row as f32 * scale;
                if let Some(dot) = Rect::from_xywh(x, y, scale, scale) {
                    dots.push_rect(dot);
                }
            }
        }
    }
    if let Some(path) = dots.finish() {
        let mut paint = Paint::default();
        paint.set_color_rgba8(ink[0], ink[1], ink[2], 255);
        paint.anti_alias = false;
        pixmap.fill_path(&path, &paint, FillRule::Winding, transform, None);
    }
}
