//! Drawing into 4:2:0 frames (NV12, I420) in their own planes, so a video output re-encodes
//! them without converting to RGB and back. Every overlay pixel is a colour, converted with the
//! stream's matrix and range, and a weight: luma is blended pixel by pixel, each chroma sample
//! with the mean over its 2x2 block. Blending is linear and YUV an affine map of RGB, so this is
//! what blending in RGB and then subsampling the block gives, up to rounding.

use std::ops::Range;

use rayon::prelude::*;
use tiny_skia::{Pixmap, PixmapMut, Transform};

use super::text::{Banner, label_scale};
use super::tracks::{TrackMark, draw_mark, mark_extent};
use super::{DrawableRegion, PoseStyle, RenderError, draw_person};
use crate::frame::{FrameGeometry, RgbToYuv, SourceLayout};
use crate::tasks::dense::{depth_level, inferno, normal_level};

/// One overlay pixel: its colour in the frame's YUV and its weight, 0 (the frame as it is) to
/// 256 (the colour alone).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Tint {
    yuv: [u8; 3],
    weight: u16,
}

/// Full weight: the overlay colour replaces the pixel.
const OPAQUE: u16 = 256;

/// The chroma of a 4:2:0 frame: one interleaved U/V plane (NV12) or a U and a V plane (I420).
enum Chroma<'a> {
    Interleaved(&'a mut [u8]),
    Planar(&'a mut [u8], &'a mut [u8]),
}

/// The chroma samples of one block row.
enum ChromaRow<'a> {
    Interleaved(&'a mut [u8]),
    Planar(&'a mut [u8], &'a mut [u8]),
}

impl ChromaRow<'_> {
    fn sample(&mut self, column: usize) -> (&mut u8, &mut u8) {
        match self {
            ChromaRow::Interleaved(row) => {
                let (u, v) = row[2 * column..].split_at_mut(1);
                (&mut u[0], &mut v[0])
            }
            ChromaRow::Planar(u, v) => (&mut u[column], &mut v[column]),
        }
    }
}

/// A rectangle of the frame on even coordinates, so that it holds whole chroma blocks (its far
/// edges may be the frame's odd ones).
#[derive(Clone, Debug, PartialEq, Eq)]
struct Area {
    rows: Range<usize>,
    columns: Range<usize>,
}

/// A 4:2:0 frame's planes, writable, with the colour conversion of its stream.
pub struct Yuv420Canvas<'a> {
    width: usize,
    height: usize,
    luma: &'a mut [u8],
    luma_stride: usize,
    chroma: Chroma<'a>,
    chroma_stride: usize,
    colours: RgbToYuv,
}

impl<'a> Yuv420Canvas<'a> {
    /// The planes of an NV12 or I420 frame of `geometry` in `bytes`, which must hold them one
    /// after the other (Y, then UV or U then V), as decoders lay them out.
    pub fn new(bytes: &'a mut [u8], geometry: &FrameGeometry) -> Result<Self, RenderError> {
        geometry
            .validate(bytes.len())
            .map_err(RenderError::Layout)?;
        let FrameGeometry {
            width,
            height,
            stride,
            chroma,
            chroma_stride,
            ..
        } = *geometry;
        let (rows, half_width) = (height.div_ceil(2), width.div_ceil(2));
        let luma_end = (height - 1) * stride + width;
        let out_of_order = || {
            RenderError::Layout(format!(
                "{:?} planes at {chroma:?} overlap or are out of order",
                geometry.layout
            ))
        };
        if chroma[0] < luma_end {
            return Err(out_of_order());
        }
        let (luma, rest) = bytes.split_at_mut(chroma[0]);
        let chroma = match geometry.layout {
            SourceLayout::Nv12 => Chroma::Interleaved(rest),
            SourceLayout::I420 => {
                let u_end = (rows - 1) * chroma_stride + half_width;
                let v_start = chroma[1].checked_sub(chroma[0]).ok_or_else(out_of_order)?;
                if v_start < u_end {
                    return Err(out_of_order());
                }
                let (u, v) = rest.split_at_mut(v_start);
                Chroma::Planar(u, v)
            }
            other => {
                return Err(RenderError::Layout(format!(
                    "{other:?} is not a 4:2:0 layout"
                )));
            }
        };
        Ok(Self {
            width,
            height,
            luma,
            luma_stride: stride,
            chroma,
            chroma_stride,
            colours: RgbToYuv::inverse_of(&geometry.yuv),
        })
    }

    fn whole(&self) -> Area {
        Area {
            rows: 0..self.height,
            columns: 0..self.width,
        }
    }

    /// Blends each pixel's class colour in with weight `alpha`, as
    /// [`super::blend_class_map`] does in RGBA (background and classes without a colour are
    /// left as they are).
    ///
    /// # Panics
    /// If the class map does not hold the frame's pixels.
    pub fn blend_class_map(&mut self, class_map: &[u8], palette: &[[u8; 3]], alpha: f32) {
        assert_eq!(class_map.len(), self.width * self.height, "class map size");
        let weight = (alpha.clamp(0.0, 1.0) * 256.0).round() as u16;
        let mut tints = [Tint::default(); 256];
        for (tint, &colour) in tints.iter_mut().zip(palette).skip(1) {
            *tint = Tint {
                yuv: self.colours.convert(colour),
                weight,
            };
        }
        let width = self.width;
        self.composite(self.whole(), |y, columns, out| {
            let classes = &class_map[y * width..][columns];
            for (tint, &class) in out.iter_mut().zip(classes) {
                *tint = tints[usize::from(class)];
            }
        });
    }

    /// Colours normalised depth with inferno, as [`crate::tasks::dense::draw_depth`] does in
    /// RGBA; with a class map, background pixels are left as they are.
    ///
    /// # Panics
    /// If `normalised` or `foreground` does not hold the frame's pixels.
    pub fn draw_depth(&mut self, normalised: &[f32], foreground: Option<&[u8]>) {
        assert_eq!(normalised.len(), self.width * self.height, "depth size");
        let colours = &self.colours;
        let levels: Vec<[u8; 3]> = inferno().iter().map(|&c| colours.convert(c)).collect();
        self.paint_foreground(foreground, |index| {
            levels[usize::from(depth_level(normalised[index]))]
        });
    }

    /// Colours unit normals (3 x H x W) as [`crate::tasks::dense::draw_normals`] does in RGBA;
    /// with a class map, background pixels are left as they are.
    ///
    /// # Panics
    /// If `normals` or `foreground` does not hold the frame's pixels.
    pub fn draw_normals(&mut self, normals: &[f32], foreground: Option<&[u8]>) {
        let plane = self.width * self.height;
        assert_eq!(normals.len(), 3 * plane, "normals size");
        let colours = self.colours;
        self.paint_foreground(foreground, |index| {
            colours.convert([0, 1, 2].map(|axis| normal_level(normals[axis * plane + index])))
        });
    }

    /// Replaces every foreground pixel (every pixel without a class map) with `colour(index)`.
    fn paint_foreground(
        &mut self,
        foreground: Option<&[u8]>,
        colour: impl Fn(usize) -> [u8; 3] + Sync,
    ) {
        if let Some(classes) = foreground {
            assert_eq!(classes.len(), self.width * self.height, "class map size");
        }
        let width = self.width;
        self.composite(self.whole(), |y, columns, out| {
            for (tint, x) in out.iter_mut().zip(columns) {
                let index = y * width + x;
                if foreground.is_none_or(|classes| classes[index] > 0) {
                    *tint = Tint {
                        yuv: colour(index),
                        weight: OPAQUE,
                    };
                }
            }
        });
    }

    /// Draws the skeletons as [`super::draw_pose`] does in RGBA: rendered with tiny-skia into a
    /// transparent layer over the area they cover, then blended in by the layer's coverage.
    pub fn draw_pose(
        &mut self,
        persons: &[&[[f32; 3]]],
        style: &PoseStyle,
    ) -> Result<(), RenderError> {
        let region = DrawableRegion::around(self.width, self.height);
        let visible = persons
            .iter()
            .flat_map(|person| person.iter())
            .filter(|&&[x, y, score]| score > style.threshold && region.contains(x, y));
        let (mut low, mut high) = ([f32::MAX; 2], [f32::MIN; 2]);
        for &[x, y, _] in visible {
            low = [low[0].min(x), low[1].min(y)];
            high = [high[0].max(x), high[1].max(y)];
        }
        // Anti-aliasing reaches a pixel past the stroke and the dot.
        let reach = style.radius.max(style.thickness) + 2.0;
        let bounds = [
            low[0] - reach,
            low[1] - reach,
            high[0] + reach,
            high[1] + reach,
        ];
        self.draw_layer(bounds, |pixmap, shift| {
            for person in persons {
                draw_person(pixmap, person, style, &region, shift);
            }
        })
    }

    /// Outlines each tracked box in its track's colour and writes its ID above it.
    pub fn draw_tracks(&mut self, marks: &[TrackMark]) -> Result<(), RenderError> {
        let scale = label_scale(self.width.max(self.height));
        let bounds = marks
            .iter()
            .map(|mark| mark_extent(mark, scale))
            .reduce(|a, b| {
                [
                    a[0].min(b[0]),
                    a[1].min(b[1]),
                    a[2].max(b[2]),
                    a[3].max(b[3]),
                ]
            });
        let Some(bounds) = bounds else {
            return Ok(());
        };
        self.draw_layer(bounds, |pixmap, shift| {
            for mark in marks {
                draw_mark(pixmap, mark, scale, shift);
            }
        })
    }

    /// See [`super::Canvas::draw_banner`].
    pub fn draw_banner(&mut self, banner: &Banner) {
        let (x, y) = banner.origin();
        self.blend_layer(banner.layer(), (x as usize, y as usize));
    }

    /// Draws with tiny-skia onto a transparent layer over `bounds` (frame pixels, clipped to
    /// the frame and widened to whole chroma blocks), then blends the layer into the planes.
    fn draw_layer(
        &mut self,
        bounds: [f32; 4],
        draw: impl FnOnce(&mut PixmapMut, Transform),
    ) -> Result<(), RenderError> {
        let Some(area) = self.block_area(bounds) else {
            return Ok(());
        };
        let (layer_width, layer_height) = (area.columns.len(), area.rows.len());
        let mut layer = Pixmap::new(layer_width as u32, layer_height as u32).ok_or(
            RenderError::FrameTooLarge {
                width: self.width,
                height: self.height,
            },
        )?;
        let origin = (area.columns.start, area.rows.start);
        let shift = Transform::from_translate(-(origin.0 as f32), -(origin.1 as f32));
        draw(&mut layer.as_mut(), shift);
        self.blend_layer(&layer, origin);
        Ok(())
    }

    /// The frame area over `bounds` (frame pixels), clipped to the frame and widened to whole
    /// chroma blocks; `None` when it is empty.
    fn block_area(&self, bounds: [f32; 4]) -> Option<Area> {
        let span = |low: f32, high: f32, size: usize| {
            let start = (low.floor().max(0.0) as usize).min(size) & !1;
            let end = (high.ceil().max(0.0) as usize)
                .next_multiple_of(2)
                .min(size);
            (start < end).then_some(start..end)
        };
        Some(Area {
            columns: span(bounds[0], bounds[2], self.width)?,
            rows: span(bounds[1], bounds[3], self.height)?,
        })
    }

    /// Blends `layer`, its top-left corner at `origin` in the frame, into the planes; what
    /// the layer leaves out of a chroma block it touches counts as transparent.
    fn blend_layer(&mut self, layer: &Pixmap, origin: (usize, usize)) {
        let (layer_width, layer_height) = (layer.width() as usize, layer.height() as usize);
        let bounds = [
            origin.0,
            origin.1,
            origin.0 + layer_width,
            origin.1 + layer_height,
        ]
        .map(|v| v as f32);
        let Some(area) = self.block_area(bounds) else {
            return;
        };
        let (colours, pixels) = (self.colours, layer.pixels());
        self.composite(area, |y, columns, out| {
            let Some(layer_y) = y.checked_sub(origin.1).filter(|&ly| ly < layer_height) else {
                return;
            };
            let row = &pixels[layer_y * layer_width..][..layer_width];
            for (x, tint) in columns.zip(out.iter_mut()) {
                let Some(pixel) = x.checked_sub(origin.0).and_then(|lx| row.get(lx)) else {
                    continue;
                };
                let coverage = pixel.alpha();
                if coverage > 0 {
                    let colour = pixel.demultiply();
                    *tint = Tint {
                        yuv: colours.convert([colour.red(), colour.green(), colour.blue()]),
                        weight: ((u16::from(coverage) * OPAQUE + 127) / 255),
                    };
                }
            }
        });
    }

    /// Blends the tints `tint_row(y, columns, tints)` gives for each row of `area` into the
    /// planes, block row by block row in parallel.
    fn composite(
        &mut self,
        area: Area,
        tint_row: impl Fn(usize, Range<usize>, &mut [Tint]) + Sync,
    ) {
        let blocks = area.rows.start / 2..area.rows.end.div_ceil(2);
        let (height, luma_stride) = (self.height, self.luma_stride);
        let chroma_rows: Vec<ChromaRow> = match &mut self.chroma {
            Chroma::Interleaved(uv) => in_blocks(uv.chunks_mut(self.chroma_stride), &blocks)
                .map(ChromaRow::Interleaved)
                .collect(),
            Chroma::Planar(u, v) => in_blocks(u.chunks_mut(self.chroma_stride), &blocks)
                .zip(in_blocks(v.chunks_mut(self.chroma_stride), &blocks))
                .map(|(u, v)| ChromaRow::Planar(u, v))
                .collect(),
        };
        let rows: Vec<_> = blocks
            .clone()
            .zip(in_blocks(self.luma.chunks_mut(2 * luma_stride), &blocks).zip(chroma_rows))
            .collect();
        let columns = area.columns;
        let new_tints = || vec![Tint::default(); 2 * columns.len()];
        let blend_block = |tints: &mut Vec<Tint>, (block, (luma, mut chroma)): BlockRow| {
            let rows_here = (height - 2 * block).min(2);
            let (above, below) = tints.split_at_mut(columns.len());
            for (pair_row, tints) in [above, below].into_iter().take(rows_here).enumerate() {
                tints.fill(Tint::default());
                tint_row(2 * block + pair_row, columns.clone(), tints);
                let luma = &mut luma[pair_row * luma_stride + columns.start..][..columns.len()];
                for (sample, tint) in luma.iter_mut().zip(tints.iter()) {
                    *sample = mix(*sample, tint.yuv[0], tint.weight);
                }
            }
            blend_chroma(
                &tints[..rows_here * columns.len()],
                columns.clone(),
                &mut chroma,
            );
        };
        // A small area (a banner, a label) costs less than handing it to the pool's workers,
        // which may be busy with the next frame's preprocessing.
        if rows.len() * columns.len() < PARALLEL_AREA {
            let mut tints = new_tints();
            rows.into_iter()
                .for_each(|row| blend_block(&mut tints, row));
        } else {
            rows.into_par_iter().for_each_init(new_tints, blend_block);
        }
    }
}

/// Block rows times columns from which compositing runs on the thread pool.
const PARALLEL_AREA: usize = 64 * 1024;

/// A block row as compositing takes it: its index, its two luma rows and its chroma row.
type BlockRow<'a> = (usize, (&'a mut [u8], ChromaRow<'a>));

/// The rows (luma pairs or chroma rows) of the block rows `blocks`.
fn in_blocks<I: Iterator>(rows: I, blocks: &Range<usize>) -> impl Iterator<Item = I::Item> {
    rows.skip(blocks.start).take(blocks.len())
}

/// `(frame * (256 - weight) + colour * weight + 128) >> 8`, the RGBA blend's rounding.
fn mix(frame: u8, colour: u8, weight: u16) -> u8 {
    let weight = u32::from(weight);
    ((u32::from(frame) * (256 - weight) + u32::from(colour) * weight + 128) >> 8) as u8
}

/// Each chroma sample of the block row blended with its block's tints (one or two rows of
/// `columns`): the mean of what each pixel's blend would give,
/// `(c * (256 n - sum w) + sum w c_i + 128 n) / 256 n` over the block's `n` pixels.
fn blend_chroma(tints: &[Tint], columns: Range<usize>, chroma: &mut ChromaRow) {
    let row_len = columns.len();
    for start in (0..row_len).step_by(2) {
        let (mut pixels, mut weights, mut sums) = (0u32, 0u32, [0u32; 2]);
        for row in tints.chunks(row_len) {
            for tint in &row[start..(start + 2).min(row_len)] {
                let weight = u32::from(tint.weight);
                pixels += 1;
                weights += weight;
                sums[0] += weight * u32::from(tint.yuv[1]);
                sums[1] += weight * u32::from(tint.yuv[2]);
            }
        }
        if weights == 0 {
            continue;
        }
        let whole = u32::from(OPAQUE) * pixels;
        let (u, v) = chroma.sample((columns.start + start) / 2);
        for (sample, sum) in [u, v].into_iter().zip(sums) {
            *sample = ((u32::from(*sample) * (whole - weights) + sum + whole / 2) / whole) as u8;
        }
    }
}
