//! Drawing model results onto video frames in place, in the frame's own layout: RGBA8 (rows
//! `stride` bytes apart, alpha left at 255) or 4:2:0 YUV ([`yuv`]); pose skeletons with
//! tiny-skia, segmentation and dense views in plain integer math. [`Canvas`] takes either.

pub mod cuda;
mod text;
pub mod tracks;
pub mod yuv;

use rayon::prelude::*;
use tiny_skia::{FillRule, LineCap, Paint, PathBuilder, Pixmap, PixmapMut, Stroke, Transform};

use crate::frame::{FrameGeometry, SourceLayout};
use crate::tasks::dense;
pub use text::Banner;
use text::label_scale;
use tracks::{TrackMark, draw_mark};
use yuv::Yuv420Canvas;

/// Frame side (longer one) at which a style's radius and thickness apply unscaled.
const REFERENCE_SIDE: f32 = 1024.0;
/// Smallest keypoint radius in pixels: smaller dots vanish on small frames.
const MIN_RADIUS: f32 = 2.0;
/// Smallest link thickness in pixels: thinner anti-aliased lines fade to a faint tint.
const MIN_THICKNESS: f32 = 1.5;

#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error("stride of {stride} bytes is less than a row of {width} RGBA pixels")]
    StrideTooSmall { stride: usize, width: usize },
    #[error(
        "frame buffer of {len} bytes is too small for {width} x {height} RGBA at stride {stride}"
    )]
    FrameTooSmall {
        len: usize,
        width: usize,
        height: usize,
        stride: usize,
    },
    #[error("frame size {width} x {height} is too large to draw on")]
    FrameTooLarge { width: usize, height: usize },
    #[error("cannot draw on this frame: {0}")]
    Layout(String),
}

/// A frame's pixels to draw on, in the frame's own layout.
pub enum Canvas<'a> {
    Rgba(RgbaCanvas<'a>),
    Yuv420(Yuv420Canvas<'a>),
}

/// Packed RGBA(x) pixels, rows `stride` bytes apart, checked to hold the frame.
pub struct RgbaCanvas<'a> {
    pixels: &'a mut [u8],
    width: usize,
    height: usize,
    stride: usize,
}

impl<'a> Canvas<'a> {
    /// The frame of `geometry` in `bytes`: packed RGBA(x), NV12 or I420.
    pub fn new(bytes: &'a mut [u8], geometry: &FrameGeometry) -> Result<Self, RenderError> {
        let (width, height, stride) = (geometry.width, geometry.height, geometry.stride);
        match geometry.layout {
            SourceLayout::Rgbx => {
                check_frame(bytes.len(), width, height, stride)?;
                Ok(Canvas::Rgba(RgbaCanvas {
                    pixels: bytes,
                    width,
                    height,
                    stride,
                }))
            }
            SourceLayout::Nv12 | SourceLayout::I420 => {
                Ok(Canvas::Yuv420(Yuv420Canvas::new(bytes, geometry)?))
            }
            other => Err(RenderError::Layout(format!(
                "drawing on {other:?} frames is not supported"
            ))),
        }
    }

    /// See [`blend_class_map`].
    pub fn blend_class_map(&mut self, class_map: &[u8], palette: &[[u8; 3]], alpha: f32) {
        match self {
            Canvas::Rgba(c) => blend_class_map(
                c.pixels, c.width, c.height, c.stride, class_map, palette, alpha,
            ),
            Canvas::Yuv420(canvas) => canvas.blend_class_map(class_map, palette, alpha),
        }
    }

    /// See [`dense::draw_depth`].
    pub fn draw_depth(&mut self, normalised: &[f32], foreground: Option<&[u8]>) {
        match self {
            Canvas::Rgba(c) => dense::draw_depth(
                c.pixels, c.width, c.height, c.stride, normalised, foreground,
            ),
            Canvas::Yuv420(canvas) => canvas.draw_depth(normalised, foreground),
        }
    }

    /// See [`dense::draw_normals`].
    pub fn draw_normals(&mut self, normals: &[f32], foreground: Option<&[u8]>) {
        match self {
            Canvas::Rgba(c) => {
                dense::draw_normals(c.pixels, c.width, c.height, c.stride, normals, foreground)
            }
            Canvas::Yuv420(canvas) => canvas.draw_normals(normals, foreground),
        }
    }

    /// See [`draw_pose`].
    pub fn draw_pose(
        &mut self,
        persons: &[&[[f32; 3]]],
        style: &PoseStyle,
    ) -> Result<(), RenderError> {
        match self {
            Canvas::Rgba(c) => draw_pose(c.pixels, c.width, c.height, c.stride, persons, style),
            Canvas::Yuv420(canvas) => canvas.draw_pose(persons, style),
        }
    }

    /// Each tracked person's box in its track's colour, its ID written above it.
    pub fn draw_tracks(&mut self, marks: &[TrackMark]) -> Result<(), RenderError> {
        match self {
            Canvas::Rgba(c) => {
                let scale = label_scale(c.width.max(c.height));
                with_pixmap(c.pixels, c.width, c.height, c.stride, |pixmap| {
                    for mark in marks {
                        draw_mark(pixmap, mark, scale, Transform::identity());
                    }
                })
            }
            Canvas::Yuv420(canvas) => canvas.draw_tracks(marks),
        }
    }

    /// See [`Banner`].
    pub fn draw_banner(&mut self, banner: &Banner) -> Result<(), RenderError> {
        match self {
            Canvas::Rgba(c) => with_pixmap(c.pixels, c.width, c.height, c.stride, |pixmap| {
                banner.draw(pixmap)
            }),
            Canvas::Yuv420(canvas) => {
                canvas.draw_banner(banner);
                Ok(())
            }
        }
    }
}

/// How to draw a keypoint set: the set's skeleton and colours (RGB) from its JSON, the score
/// threshold, and the keypoint radius and link thickness in pixels.
#[derive(Clone, Copy, Debug)]
pub struct PoseStyle<'a> {
    pub skeleton: &'a [[usize; 2]],
    pub link_colors: &'a [[u8; 3]],
    pub keypoint_colors: &'a [[u8; 3]],
    pub threshold: f32,
    pub radius: f32,
    pub thickness: f32,
}

impl<'a> PoseStyle<'a> {
    /// The official look: threshold 0.3, radius 4 and thickness 2 for a frame of about 1k pixels
    /// (use [`PoseStyle::scaled_for`] to fit the actual frame).
    pub fn new(
        skeleton: &'a [[usize; 2]],
        link_colors: &'a [[u8; 3]],
        keypoint_colors: &'a [[u8; 3]],
    ) -> Self {
        Self {
            skeleton,
            link_colors,
            keypoint_colors,
            threshold: 0.3,
            radius: 4.0,
            thickness: 2.0,
        }
    }
}

impl PoseStyle<'_> {
    /// Scales radius and thickness, given for a frame whose longer side is 1024 px, to a
    /// `width` x `height` frame (x3.75 at 4K), with a floor that keeps them visible on small
    /// frames.
    pub fn scaled_for(self, width: usize, height: usize) -> Self {
        let scale = width.max(height) as f32 / REFERENCE_SIDE;
        Self {
            radius: (self.radius * scale).max(MIN_RADIUS),
            thickness: (self.thickness * scale).max(MIN_THICKNESS),
            ..self
        }
    }
}

/// Draws each person's skeleton links (both ends above threshold) then keypoints (score above
/// threshold), anti-aliased, in the style's colours. `persons[i]` is a slice of `[x, y, score]`
/// in frame pixels. Keypoints with non-finite coordinates or more than a frame size outside the
/// frame are skipped, as are links without a colour and keypoints without one.
pub fn draw_pose(
    frame: &mut [u8],
    width: usize,
    height: usize,
    stride: usize,
    persons: &[&[[f32; 3]]],
    style: &PoseStyle,
) -> Result<(), RenderError> {
    check_frame(frame.len(), width, height, stride)?;
    if width == 0 || height == 0 || persons.is_empty() {
        return Ok(());
    }
    let region = DrawableRegion::around(width, height);
    with_pixmap(frame, width, height, stride, |pixmap| {
        for person in persons {
            draw_person(pixmap, person, style, &region, Transform::identity());
        }
    })
}

/// Alpha-blends the palette colour of each pixel's class into the frame:
/// out = (1 - alpha) * frame + alpha * palette\[class\]; class 0 (background) and classes beyond
/// the palette are left untouched. `class_map` is `width` x `height`, row-major.
///
/// # Panics
/// If the frame or the class map does not match the sizes.
pub fn blend_class_map(
    frame: &mut [u8],
    width: usize,
    height: usize,
    stride: usize,
    class_map: &[u8],
    palette: &[[u8; 3]],
    alpha: f32,
) {
    if let Err(e) = check_frame(frame.len(), width, height, stride) {
        panic!("blend_class_map: {e}");
    }
    assert_eq!(
        class_map.len(),
        width * height,
        "class map does not hold {width} x {height} pixels"
    );
    if width == 0 || height == 0 {
        return;
    }
    let blend = ClassBlend::new(palette, alpha);
    frame
        .par_chunks_mut(stride)
        .zip(class_map.par_chunks(width))
        .for_each(|(row, classes)| blend.blend_row(&mut row[..width * 4], classes));
}

/// The last row may end right after its pixels (no padding after it).
pub(crate) fn check_frame(
    len: usize,
    width: usize,
    height: usize,
    stride: usize,
) -> Result<(), RenderError> {
    if stride < width * 4 {
        return Err(RenderError::StrideTooSmall { stride, width });
    }
    let needed = match height {
        0 => 0,
        _ => (height - 1) * stride + width * 4,
    };
    if len < needed {
        return Err(RenderError::FrameTooSmall {
            len,
            width,
            height,
            stride,
        });
    }
    Ok(())
}

/// Runs `draw` on a tiny-skia view of the frame: borrowed when rows are packed, else a packed
/// copy that is written back afterwards.
fn with_pixmap(
    frame: &mut [u8],
    width: usize,
    height: usize,
    stride: usize,
    draw: impl FnOnce(&mut PixmapMut),
) -> Result<(), RenderError> {
    let too_large = RenderError::FrameTooLarge { width, height };
    let (Ok(w), Ok(h)) = (u32::try_from(width), u32::try_from(height)) else {
        return Err(too_large);
    };
    let row_bytes = width * 4;
    if stride == row_bytes {
        let mut pixmap =
            PixmapMut::from_bytes(&mut frame[..row_bytes * height], w, h).ok_or(too_large)?;
        draw(&mut pixmap);
        return Ok(());
    }
    let mut packed = Pixmap::new(w, h).ok_or(too_large)?;
    for (dst, src) in packed
        .data_mut()
        .chunks_exact_mut(row_bytes)
        .zip(frame.chunks(stride))
    {
        dst.copy_from_slice(&src[..row_bytes]);
    }
    draw(&mut packed.as_mut());
    for (src, dst) in packed
        .data()
        .chunks_exact(row_bytes)
        .zip(frame.chunks_mut(stride))
    {
        dst[..row_bytes].copy_from_slice(src);
    }
    Ok(())
}

/// Where keypoints may lie and still be drawn: the frame plus a frame-sized margin, which keeps
/// wild coordinates away from the rasteriser.
struct DrawableRegion {
    min: f32,
    max_x: f32,
    max_y: f32,
}

impl DrawableRegion {
    fn around(width: usize, height: usize) -> Self {
        let margin = width.max(height) as f32;
        Self {
            min: -margin,
            max_x: width as f32 + margin,
            max_y: height as f32 + margin,
        }
    }

    fn contains(&self, x: f32, y: f32) -> bool {
        (self.min..=self.max_x).contains(&x) && (self.min..=self.max_y).contains(&y)
    }
}

/// One person's links then keypoints, in frame coordinates mapped by `transform` onto `pixmap`.
fn draw_person(
    pixmap: &mut PixmapMut,
    keypoints: &[[f32; 3]],
    style: &PoseStyle,
    region: &DrawableRegion,
    transform: Transform,
) {
    let visible = |index: usize| {
        keypoints
            .get(index)
            .filter(|&&[x, y, score]| score > style.threshold && region.contains(x, y))
    };
    let stroke = Stroke {
        width: style.thickness,
        line_cap: LineCap::Round,
        ..Stroke::default()
    };
    for (&[a, b], color) in style.skeleton.iter().zip(style.link_colors) {
        if let (Some(from), Some(to)) = (visible(a), visible(b))
            && let Some(line) = line_path(from, to)
        {
            pixmap.stroke_path(&line, &paint(color), &stroke, transform, None);
        }
    }
    for (index, color) in style.keypoint_colors.iter().enumerate() {
        if let Some(&[x, y, _]) = visible(index)
            && let Some(dot) = PathBuilder::from_circle(x, y, style.radius)
        {
            let paint = paint(color);
            pixmap.fill_path(&dot, &paint, FillRule::Winding, transform, None);
        }
    }
}

fn line_path(from: &[f32; 3], to: &[f32; 3]) -> Option<tiny_skia::Path> {
    let mut builder = PathBuilder::new();
    builder.move_to(from[0], from[1]);
    builder.line_to(to[0], to[1]);
    builder.finish()
}

fn paint(&[r, g, b]: &[u8; 3]) -> Paint<'static> {
    let mut paint = Paint {
        anti_alias: true,
        ..Paint::default()
    };
    paint.set_color_rgba8(r, g, b, 255);
    paint
}

/// Per-class blend factors in 8-bit fixed point: out = (frame * keep + add + 128) >> 8, with
/// keep = 256 - a and add = palette * a for a = round(alpha * 256); keep = 256, add = 0 leaves the
/// pixel as it is (background and classes without a colour).
struct ClassBlend {
    entries: [BlendEntry; 256],
}

#[derive(Clone, Copy)]
struct BlendEntry {
    keep: u16,
    add: [u16; 3],
}

impl ClassBlend {
    fn new(palette: &[[u8; 3]], alpha: f32) -> Self {
        let weight = (alpha.clamp(0.0, 1.0) * 256.0).round() as u16;
        let untouched = BlendEntry {
            keep: 256,
            add: [0; 3],
        };
        let mut entries = [untouched; 256];
        for (entry, color) in entries.iter_mut().zip(palette).skip(1) {
            *entry = BlendEntry {
                keep: 256 - weight,
                add: color.map(|c| u16::from(c) * weight),
            };
        }
        Self { entries }
    }

    fn blend_row(&self, row: &mut [u8], classes: &[u8]) {
        for (pixel, &class) in row.chunks_exact_mut(4).zip(classes) {
            let entry = &self.entries[usize::from(class)];
            for (value, add) in pixel.iter_mut().zip(entry.add) {
                // At most 255 * 256 + 128: fits u16.
                *value = ((u16::from(*value) * entry.keep + add + 128) >> 8) as u8;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_frame_accepts_an_unpadded_last_row() {
        assert!(check_frame(2 * 48 + 40, 10, 3, 48).is_ok());
        assert!(matches!(
            check_frame(2 * 48 + 39, 10, 3, 48),
            Err(RenderError::FrameTooSmall { .. })
        ));
        assert!(matches!(
            check_frame(1000, 10, 3, 36),
            Err(RenderError::StrideTooSmall { .. })
        ));
    }

    #[test]
    fn scaled_style_stays_visible_and_grows_with_the_frame() {
        let style = PoseStyle::new(&[], &[], &[]);
        let small = style.scaled_for(320, 240);
        assert_eq!((small.radius, small.thickness), (MIN_RADIUS, MIN_THICKNESS));
        let uhd = style.scaled_for(3840, 2160);
        assert_eq!((uhd.radius, uhd.thickness), (15.0, 7.5));
    }

    #[test]
    fn padded_rows_are_drawn_and_padding_is_kept() {
        let (width, height, stride) = (8, 6, 40);
        let mut frame = vec![7u8; stride * height];
        let person = [[4.0f32, 3.0, 1.0]];
        let colors = [[200u8, 100, 50]];
        let style = PoseStyle::new(&[], &[], &colors);
        draw_pose(&mut frame, width, height, stride, &[&person], &style).unwrap();
        assert_eq!(&frame[3 * stride + 3 * 4..][..3], &[200, 100, 50]);
        assert!(frame.chunks(stride).all(|row| row[32..] == [7; 8]));
    }
}
