//! Depth and surface-normal post-processing (docs/SAPIENS.md, "Dense-task post-processing"): upsample
//! the model's maps to the frame, normalise them, draw them onto the frame, and write the files of
//! `--dense-dir` (class map, depth, normals and class masks as PNG).
//!
//! Maps are planar f32 (C x H x W, row-major); class maps are one byte per pixel, class 0 being
//! the background. Drawing follows the official demos (`vis_depth.py`, `vis_normal.py`) except
//! that background pixels keep the video frame instead of a flat grey or black.

pub mod cuda;
pub mod pointmap;

use std::ops::Range;
use std::path::Path;
use std::sync::OnceLock;

use image::{ExtendedColorType, ImageBuffer, ImageFormat, Luma};
use rayon::prelude::*;
use serde::Serialize;

use crate::error::{Error, Result};
use crate::preprocess::letterbox::Letterbox;
use crate::render::check_frame;
use crate::tasks::keypoint_sets::{ClassSet, class_set};
use crate::tasks::seg::{LinearTap, linear_taps};

/// Output rows per rayon task: enough that consecutive rows reuse the resampled source rows.
const ROWS_PER_TASK: usize = 8;
/// Values per rayon task in the per-pixel passes.
const VALUES_PER_TASK: usize = 1 << 14;
/// Added to a normal's length before dividing, as the official demo does.
const NORMAL_EPS: f32 = 1e-5;
/// Sapiens2's demo divides normals by their length clamped to at least this.
const SAPIENS2_NORMAL_MIN_LENGTH: f32 = 1e-8;
/// Millimetres per metre: Sapiens2 depth PNGs hold millimetres.
const MILLIMETRES_PER_METRE: f32 = 1000.0;
/// Largest 16-bit PNG sample.
const DEPTH_LEVELS: f32 = u16::MAX as f32;

/// Bilinear resize (PyTorch `F.interpolate(mode="bilinear", align_corners=False)` = OpenCV
/// `INTER_LINEAR`: half-pixel centres, edge clamp) of `channels` planar maps of `in_h` x `in_w`
/// to `out_w` x `out_h`, written to `out` (C x out_h x out_w). Downsampling uses the same formula,
/// without area averaging, as PyTorch does (OpenCV switches to `INTER_AREA` for an exact 2x
/// downscale).
///
/// # Panics
/// If a size is zero or the slices do not match the sizes.
pub fn resize_planar(
    maps: &[f32],
    channels: usize,
    in_h: usize,
    in_w: usize,
    out_w: usize,
    out_h: usize,
    out: &mut [f32],
) {
    assert!(
        channels > 0 && in_h > 0 && in_w > 0 && out_w > 0 && out_h > 0,
        "empty resize: {channels} x {in_h} x {in_w} to {out_w} x {out_h}"
    );
    assert_eq!(
        maps.len(),
        channels * in_h * in_w,
        "maps do not hold {channels} x {in_h} x {in_w} values"
    );
    assert_eq!(
        out.len(),
        channels * out_h * out_w,
        "output does not hold {channels} x {out_h} x {out_w} values"
    );
    let cols = linear_taps(in_w, out_w);
    let rows = linear_taps(in_h, out_h);
    for (src, dst) in maps
        .chunks_exact(in_h * in_w)
        .zip(out.chunks_exact_mut(out_h * out_w))
    {
        dst.par_chunks_mut(out_w * ROWS_PER_TASK)
            .enumerate()
            .for_each_init(
                || RowPair::new(out_w),
                |pair, (task, chunk)| {
                    let first_row = task * ROWS_PER_TASK;
                    for (out_row, y_tap) in chunk.chunks_mut(out_w).zip(&rows[first_row..]) {
                        pair.load(src, in_w, &cols, y_tap);
                        pair.blend(y_tap, out_row);
                    }
                },
            );
    }
}

/// The two source rows of the current output row, already resampled to the output width.
struct RowPair {
    upper: ResampledRow,
    lower: ResampledRow,
}

struct ResampledRow {
    src_row: Option<usize>,
    values: Vec<f32>,
}

impl ResampledRow {
    fn resample(&mut self, src: &[f32], in_w: usize, cols: &[LinearTap], src_row: usize) {
        let row = &src[src_row * in_w..][..in_w];
        for (d, tap) in self.values.iter_mut().zip(cols) {
            *d = row[tap.lo] * tap.w_lo + row[tap.hi] * tap.w_hi;
        }
        self.src_row = Some(src_row);
    }
}

impl RowPair {
    fn new(out_w: usize) -> Self {
        let row = || ResampledRow {
            src_row: None,
            values: vec![0.0; out_w],
        };
        Self {
            upper: row(),
            lower: row(),
        }
    }

    /// Makes `upper` / `lower` hold source rows `y_tap.lo` / `y_tap.hi`; when upsampling, the
    /// previous output row's lower row is usually this one's upper row, so it is swapped in.
    fn load(&mut self, src: &[f32], in_w: usize, cols: &[LinearTap], y_tap: &LinearTap) {
        if self.upper.src_row != Some(y_tap.lo) {
            if self.lower.src_row == Some(y_tap.lo) {
                std::mem::swap(&mut self.upper, &mut self.lower);
            } else {
                self.upper.resample(src, in_w, cols, y_tap.lo);
            }
        }
        if self.lower.src_row != Some(y_tap.hi) {
            self.lower.resample(src, in_w, cols, y_tap.hi);
        }
    }

    fn blend(&self, y_tap: &LinearTap, out_row: &mut [f32]) {
        for ((d, &u), &l) in out_row
            .iter_mut()
            .zip(&self.upper.values)
            .zip(&self.lower.values)
        {
            *d = u * y_tap.w_lo + l * y_tap.w_hi;
        }
    }
}

/// The depth values a normalisation maps to 0 (`min`) and 1 (`max`).
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct DepthRange {
    pub min: f32,
    pub max: f32,
}

/// Normalises frame-size depth to 0..1 over the foreground (pixels whose class in `foreground`
/// is > 0), or over every pixel when there is no class map: (d - min) / (max - min), so 0 is the
/// nearest foreground point (Sapiens depth is smaller for nearer points). Background pixels get 0;
/// NaN depths are left out of the range. Returns the range used, or `None` when no pixel counts
/// (then `normalised` is all 0). A flat range normalises to 0 everywhere.
///
/// # Panics
/// If `foreground` or `normalised` differs in length from `depth`.
pub fn normalise_depth(
    depth: &[f32],
    foreground: Option<&[u8]>,
    normalised: &mut [f32],
) -> Option<DepthRange> {
    assert_eq!(normalised.len(), depth.len(), "normalised depth size");
    let Some(range) = value_range(depth, foreground) else {
        normalised.fill(0.0);
        return None;
    };
    let span = range.max - range.min;
    let inv_span = if span > 0.0 { 1.0 / span } else { 0.0 };
    let chunks = normalised
        .par_chunks_mut(VALUES_PER_TASK)
        .zip(depth.par_chunks(VALUES_PER_TASK));
    match foreground {
        Some(classes) => {
            chunks
                .zip(classes.par_chunks(VALUES_PER_TASK))
                .for_each(|((out, depth), classes)| {
                    for ((n, &d), &class) in out.iter_mut().zip(depth).zip(classes) {
                        let scaled = (d - range.min) * inv_span;
                        *n = if class > 0 { scaled } else { 0.0 };
                    }
                })
        }
        None => chunks.for_each(|(out, depth)| {
            for (n, &d) in out.iter_mut().zip(depth) {
                *n = (d - range.min) * inv_span;
            }
        }),
    }
    Some(range)
}

/// Min and max over the pixels whose class is > 0 (all pixels without a class map), NaN left out.
fn value_range(values: &[f32], foreground: Option<&[u8]>) -> Option<DepthRange> {
    // `f32::min`/`max` ignore a NaN operand, which leaves NaN depths out.
    let widen = |(lo, hi): (f32, f32), v: f32| (lo.min(v), hi.max(v));
    let empty = (f32::INFINITY, f32::NEG_INFINITY);
    let merge = |a: (f32, f32), b: (f32, f32)| (a.0.min(b.0), a.1.max(b.1));
    let chunks = values.par_chunks(VALUES_PER_TASK);
    let (min, max) = match foreground {
        Some(classes) => {
            assert_eq!(classes.len(), values.len(), "class map size");
            chunks
                .zip(classes.par_chunks(VALUES_PER_TASK))
                .map(|(values, classes)| {
                    values
                        .iter()
                        .zip(classes)
                        .filter(|(_, class)| **class > 0)
                        .fold(empty, |r, (&v, _)| widen(r, v))
                })
                .reduce(|| empty, merge)
        }
        None => chunks
            .map(|values| values.iter().fold(empty, |r, &v| widen(r, v)))
            .reduce(|| empty, merge),
    };
    (min <= max).then_some(DepthRange { min, max })
}

/// Colours normalised depth into the RGBA frame with matplotlib's "inferno" colormap (the one the
/// official demo uses through OpenCV), nearest points brightest: level = trunc((1 - n) * 255),
/// as the demo's `astype(np.uint8)`. With a class map, background pixels are left untouched.
/// Alpha is left as it is.
///
/// # Panics
/// If the frame, `normalised` or `foreground` does not match the sizes.
pub fn draw_depth(
    frame: &mut [u8],
    width: usize,
    height: usize,
    stride: usize,
    normalised: &[f32],
    foreground: Option<&[u8]>,
) {
    assert_eq!(normalised.len(), width * height, "normalised depth size");
    let colormap = inferno();
    paint_foreground(
        frame,
        width,
        height,
        stride,
        foreground,
        |y, x_range, pixels| {
            let row = &normalised[y * width..][x_range];
            for (px, &n) in pixels.chunks_exact_mut(4).zip(row) {
                px[..3].copy_from_slice(&colormap[usize::from(depth_level(n))]);
            }
        },
    );
}

/// The inferno level of a normalised depth, nearest brightest: trunc((1 - n) * 255), as the
/// demo's `astype(np.uint8)` (the saturating cast clamps what lies outside 0..=1).
pub(crate) fn depth_level(normalised: f32) -> u8 {
    ((1.0 - normalised) * 255.0) as u8
}

/// Inferno as 256 levels (0 = black, 255 = pale yellow).
pub(crate) fn inferno() -> &'static [[u8; 3]; 256] {
    static LEVELS: OnceLock<[[u8; 3]; 256]> = OnceLock::new();
    LEVELS.get_or_init(|| {
        std::array::from_fn(|level| {
            let c = colorous::INFERNO.eval_rational(level, 256);
            [c.r, c.g, c.b]
        })
    })
}

/// Divides each normal of a frame-size 3 x H x W map by its length (+ 1e-5), in place, as the
/// first family's demo does.
///
/// # Panics
/// If the length is not a multiple of 3.
pub fn normalise_normals(normals: &mut [f32]) {
    scale_normals(normals, |length| 1.0 / (length + NORMAL_EPS));
}

/// Divides each normal of a 3 x H x W map by its length, at least 1e-8, in place, as the Sapiens2
/// demo does (at the model's resolution, before the padding is taken off and the map resized).
///
/// # Panics
/// If the length is not a multiple of 3.
pub fn normalise_normals_clamped(normals: &mut [f32]) {
    scale_normals(normals, |length| {
        1.0 / length.max(SAPIENS2_NORMAL_MIN_LENGTH)
    });
}

/// Multiplies each normal by `factor(its length)`.
fn scale_normals(normals: &mut [f32], factor: impl Fn(f32) -> f32 + Sync) {
    assert_eq!(normals.len() % 3, 0, "normals must be 3 planes");
    let plane = normals.len() / 3;
    let (xs, rest) = normals.split_at_mut(plane);
    let (ys, zs) = rest.split_at_mut(plane);
    xs.par_chunks_mut(VALUES_PER_TASK)
        .zip(ys.par_chunks_mut(VALUES_PER_TASK))
        .zip(zs.par_chunks_mut(VALUES_PER_TASK))
        .for_each(|((xs, ys), zs)| {
            for ((x, y), z) in xs.iter_mut().zip(ys.iter_mut()).zip(zs.iter_mut()) {
                let inv = factor((*x * *x + *y * *y + *z * *z).sqrt());
                *x *= inv;
                *y *= inv;
                *z *= inv;
            }
        });
}

/// One 8-bit level of a unit normal component: round((n + 1) / 2 * 255), clamped to 0..=255.
pub(crate) fn normal_level(n: f32) -> u8 {
    // `+ 0.5` then the saturating cast rounds the non-negative values and clamps the rest.
    ((n + 1.0) * 0.5 * 255.0 + 0.5) as u8
}

/// Draws unit normals (3 x H x W, frame size) as colours: (n + 1) / 2 with x -> R, y -> G,
/// z -> B, rounded to 8 bits. With a class map, background pixels are left untouched. Alpha is
/// left as it is.
///
/// # Panics
/// If the frame, `normals` or `foreground` does not match the sizes.
pub fn draw_normals(
    frame: &mut [u8],
    width: usize,
    height: usize,
    stride: usize,
    normals: &[f32],
    foreground: Option<&[u8]>,
) {
    let plane = width * height;
    assert_eq!(normals.len(), 3 * plane, "normals size");
    paint_foreground(
        frame,
        width,
        height,
        stride,
        foreground,
        |y, x_range, pixels| {
            let row = |axis: usize| &normals[axis * plane + y * width..][x_range.clone()];
            let (xs, ys, zs) = (row(0), row(1), row(2));
            for (((px, &x), &y), &z) in pixels.chunks_exact_mut(4).zip(xs).zip(ys).zip(zs) {
                px[..3].copy_from_slice(&[normal_level(x), normal_level(y), normal_level(z)]);
            }
        },
    );
}

/// Calls `paint(y, x_range, pixels)` for every run of foreground pixels (class > 0; the whole
/// row without a class map) of every frame row, `pixels` being the run's RGBA bytes.
fn paint_foreground(
    frame: &mut [u8],
    width: usize,
    height: usize,
    stride: usize,
    foreground: Option<&[u8]>,
    paint: impl Fn(usize, Range<usize>, &mut [u8]) + Sync,
) {
    if let Err(e) = check_frame(frame.len(), width, height, stride) {
        panic!("drawing a dense map: {e}");
    }
    if let Some(classes) = foreground {
        assert_eq!(classes.len(), width * height, "class map size");
    }
    if width == 0 || height == 0 {
        return;
    }
    frame
        .par_chunks_mut(stride)
        .take(height)
        .enumerate()
        .for_each(|(y, row)| {
            let row = &mut row[..width * 4];
            let Some(classes) = foreground else {
                paint(y, 0..width, row);
                return;
            };
            let classes = &classes[y * width..][..width];
            let mut x = 0;
            while let Some(start) = classes[x..].iter().position(|&c| c > 0).map(|i| x + i) {
                let end = classes[start..]
                    .iter()
                    .position(|&c| c == 0)
                    .map_or(width, |i| start + i);
                paint(y, start..end, &mut row[start * 4..end * 4]);
                x = end;
            }
        });
}

/// How a 16-bit depth PNG maps back to depth: depth = offset + value * scale.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct DepthEncoding {
    pub scale: f32,
    pub offset: f32,
}

/// Writes a class map as an 8-bit grayscale PNG, pixel = class index.
pub fn write_class_map_png(
    path: &Path,
    class_map: &[u8],
    width: usize,
    height: usize,
) -> Result<()> {
    check_plane(path, class_map.len(), 1, width, height)?;
    write_png(path, class_map, width, height, ExtendedColorType::L8)
}

/// Writes a binary mask (0 / 255) as an 8-bit grayscale PNG.
pub fn write_mask_png(path: &Path, mask: &[u8], width: usize, height: usize) -> Result<()> {
    check_plane(path, mask.len(), 1, width, height)?;
    write_png(path, mask, width, height, ExtendedColorType::L8)
}

/// Writes frame-size depth as a 16-bit grayscale PNG spanning the frame's depth range (NaN
/// depths left out of the range, written as 0): value = round((depth - offset) / scale), with
/// offset = min and scale = (max - min) / 65535, so a value comes back within scale / 2. A flat
/// (or all-NaN) map is written as zeros with scale 0.
pub fn write_depth_png(
    path: &Path,
    depth: &[f32],
    width: usize,
    height: usize,
) -> Result<DepthEncoding> {
    check_plane(path, depth.len(), 1, width, height)?;
    let encoding = match value_range(depth, None) {
        Some(range) => DepthEncoding {
            scale: (range.max - range.min) / DEPTH_LEVELS,
            offset: range.min,
        },
        None => DepthEncoding {
            scale: 0.0,
            offset: 0.0,
        },
    };
    let inv_scale = if encoding.scale > 0.0 {
        1.0 / encoding.scale
    } else {
        0.0
    };
    write_depth_levels(path, depth, (width, height), encoding.offset, inv_scale)?;
    Ok(encoding)
}

/// Writes round((depth - offset) * inv_scale) as a 16-bit PNG; the saturating cast sends NaN to
/// 0 and clamps to 0..=65535.
fn write_depth_levels(
    path: &Path,
    depth: &[f32],
    (width, height): (usize, usize),
    offset: f32,
    inv_scale: f32,
) -> Result<()> {
    let levels: Vec<u16> = depth
        .par_iter()
        .map(|&d| ((d - offset) * inv_scale + 0.5) as u16)
        .collect();
    let (w, h) = png_size(path, width, height)?;
    let image = ImageBuffer::<Luma<u16>, _>::from_raw(w, h, levels)
        .expect("the level buffer holds width x height samples");
    image
        .save_with_format(path, ImageFormat::Png)
        .map_err(|e| output_error(path, e))
}

/// Writes metric depth (metres, frame size) as a 16-bit grayscale PNG of millimetres:
/// value = round(depth * 1000), clamped to 0..=65535 (65.5 m), NaN written as 0.
pub fn write_depth_mm_png(
    path: &Path,
    depth: &[f32],
    width: usize,
    height: usize,
) -> Result<DepthEncoding> {
    check_plane(path, depth.len(), 1, width, height)?;
    write_depth_levels(path, depth, (width, height), 0.0, MILLIMETRES_PER_METRE)?;
    Ok(DepthEncoding {
        scale: 1.0 / MILLIMETRES_PER_METRE,
        offset: 0.0,
    })
}

/// Copies the rectangle of `channels` planar maps (C x in_h x in_w) that holds the frame,
/// `resized_w x resized_h` at (`left`, `top`), into `out`: the padding of a padded model input
/// taken off its output.
///
/// # Panics
/// If the rectangle does not lie inside the maps or the sizes do not match.
pub fn crop_planes(
    maps: &[f32],
    (channels, in_h, in_w): (usize, usize, usize),
    letterbox: &Letterbox,
    out: &mut Vec<f32>,
) {
    let (left, top, w, h) = (
        letterbox.left,
        letterbox.top,
        letterbox.resized_w,
        letterbox.resized_h,
    );
    assert!(left + w <= in_w && top + h <= in_h, "crop outside the maps");
    assert_eq!(maps.len(), channels * in_h * in_w, "maps size");
    out.clear();
    for plane in maps.chunks_exact(in_h * in_w) {
        for row in plane.chunks_exact(in_w).skip(top).take(h) {
            out.extend_from_slice(&row[left..left + w]);
        }
    }
}

/// A Sapiens2 normal model's output (3 x `maps_size`, for a frame fitted into the input by
/// `letterbox`) to unit normals at frame size in `normals`, as its demo does: each normal divided
/// by its length (at least 1e-8), the padding taken off, then the bilinear resize, without
/// making them unit again. `scratch` holds the map between the steps.
///
/// # Panics
/// If the sizes do not match.
pub fn padded_normals(
    raw: &[f32],
    (height, width): (usize, usize),
    letterbox: &Letterbox,
    (frame_w, frame_h): (usize, usize),
    scratch: &mut Vec<f32>,
    normals: &mut [f32],
) {
    // Per pixel, so cropping first gives the same and normalises fewer pixels.
    crop_planes(raw, (3, height, width), letterbox, scratch);
    normalise_normals_clamped(scratch);
    resize_planar(
        scratch,
        3,
        letterbox.resized_h,
        letterbox.resized_w,
        frame_w,
        frame_h,
        normals,
    );
}

/// Writes unit normals (3 x H x W) as an 8-bit RGB PNG, value = round((n + 1) / 2 * 255).
pub fn write_normals_png(path: &Path, normals: &[f32], width: usize, height: usize) -> Result<()> {
    check_plane(path, normals.len(), 3, width, height)?;
    let plane = width * height;
    let mut rgb = vec![0u8; 3 * plane];
    rgb.par_chunks_exact_mut(3).enumerate().for_each(|(i, px)| {
        for (axis, level) in px.iter_mut().enumerate() {
            *level = normal_level(normals[axis * plane + i]);
        }
    });
    write_png(path, &rgb, width, height, ExtendedColorType::Rgb8)
}

/// Sets `mask` to 255 where the pixel's class is one of `classes`, else 0.
///
/// # Panics
/// If `mask` and `class_map` differ in length.
pub fn class_mask(class_map: &[u8], classes: &[u8], mask: &mut [u8]) {
    assert_eq!(mask.len(), class_map.len(), "mask size");
    let mut selected = [0u8; 256];
    for &class in classes {
        selected[usize::from(class)] = 255;
    }
    mask.par_iter_mut()
        .zip(class_map)
        .for_each(|(m, &class)| *m = selected[usize::from(class)]);
}

/// Parses `--mask-classes`: comma-separated body-part class names (as in
/// `assets/seg_goliath_parts28.json` or, for Sapiens2, `..._parts29.json`, e.g.
/// `Upper_Clothing,Lower_Clothing`; case does not matter) to the sets' spelling, in the order
/// given, without repeats. [`mask_class_indices`] maps them into the seg model's set.
pub fn parse_mask_classes(list: &str) -> Result<Vec<String>> {
    // The Sapiens2 set holds every first-family name, and Eyeglass.
    let names = &class_set(29).expect("the 29-class set ships").classes;
    let mut chosen: Vec<String> = Vec::new();
    for name in list.split(',').map(str::trim) {
        if name.is_empty() {
            return Err(invalid_mask_classes(format!(
                "empty class name in '{list}'; give names separated by commas, e.g. Upper_Clothing,Lower_Clothing"
            )));
        }
        let found = names
            .iter()
            .find(|n| *n == name)
            .or_else(|| names.iter().find(|n| n.eq_ignore_ascii_case(name)));
        let Some(found) = found else {
            return Err(invalid_mask_classes(format!(
                "unknown body-part class '{name}'; valid names: {}",
                names.join(", ")
            )));
        };
        if !chosen.contains(found) {
            chosen.push(found.clone());
        }
    }
    Ok(chosen)
}

/// The indices of the parsed `--mask-classes` names in the seg model's class set.
pub fn mask_class_indices(names: &[String], set: &ClassSet) -> Result<Vec<u8>> {
    names
        .iter()
        .map(|name| {
            let index = set.classes.iter().position(|n| n == name).ok_or_else(|| {
                invalid_mask_classes(format!(
                    "the seg model's classes ({}) have no '{name}'",
                    set.name
                ))
            })?;
            Ok(u8::try_from(index).expect("a class set fits a u8"))
        })
        .collect()
}

fn invalid_mask_classes(reason: String) -> Error {
    Error::InvalidArgument {
        argument: "--mask-classes",
        reason,
    }
}

fn output_error(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::Output {
        path: path.to_owned(),
        message: e.to_string(),
    }
}

/// A map of `len` values must hold `channels` x `height` x `width` of them.
fn check_plane(
    path: &Path,
    len: usize,
    channels: usize,
    width: usize,
    height: usize,
) -> Result<()> {
    if len != channels * width * height {
        return Err(output_error(
            path,
            format!("{len} values do not make a {channels} x {height} x {width} map"),
        ));
    }
    Ok(())
}

fn png_size(path: &Path, width: usize, height: usize) -> Result<(u32, u32)> {
    match (u32::try_from(width), u32::try_from(height)) {
        (Ok(w), Ok(h)) if w > 0 && h > 0 => Ok((w, h)),
        _ => Err(output_error(
            path,
            format!("cannot write a {width} x {height} PNG"),
        )),
    }
}

fn write_png(
    path: &Path,
    data: &[u8],
    width: usize,
    height: usize,
    color: ExtendedColorType,
) -> Result<()> {
    let (w, h) = png_size(path, width, height)?;
    image::save_buffer_with_format(path, data, w, h, color, ImageFormat::Png)
        .map_err(|e| output_error(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inferno_runs_from_black_to_pale_yellow() {
        let levels = inferno();
        assert!(levels[0].iter().all(|&c| c < 8));
        let [r, g, b] = levels[255];
        assert!(
            r > 240 && g > 240 && b > 140 && b < 180,
            "{:?}",
            levels[255]
        );
    }

    #[test]
    fn normal_levels_round_and_clamp() {
        assert_eq!(normal_level(-1.0), 0);
        assert_eq!(normal_level(1.0), 255);
        assert_eq!(normal_level(0.0), 128); // 127.5 rounds up
        assert_eq!(normal_level(-2.0), 0);
        assert_eq!(normal_level(f32::NAN), 0);
    }

    #[test]
    fn empty_foreground_gives_no_range() {
        let depth = [1.0f32, 2.0, 3.0];
        let mut normalised = [9.0f32; 3];
        assert_eq!(
            normalise_depth(&depth, Some(&[0, 0, 0]), &mut normalised),
            None
        );
        assert_eq!(normalised, [0.0; 3]);
    }

    #[test]
    fn flat_depth_normalises_to_zero() {
        let depth = [2.5f32; 4];
        let mut normalised = [9.0f32; 4];
        let range = normalise_depth(&depth, None, &mut normalised);
        assert_eq!(range, Some(DepthRange { min: 2.5, max: 2.5 }));
        assert_eq!(normalised, [0.0; 4]);
    }

    #[test]
    fn nan_depth_is_left_out_of_the_range() {
        let depth = [f32::NAN, 1.0, 3.0];
        let mut normalised = [0.0f32; 3];
        let range = normalise_depth(&depth, None, &mut normalised);
        assert_eq!(range, Some(DepthRange { min: 1.0, max: 3.0 }));
        assert_eq!(normalised[1..], [0.0, 1.0]);
    }

    #[test]
    fn unknown_mask_class_lists_the_valid_names() {
        let err = parse_mask_classes("Torso,Shirt").unwrap_err().to_string();
        assert!(
            err.starts_with("--mask-classes: unknown body-part class 'Shirt'"),
            "{err}"
        );
        assert!(
            err.contains("Upper_Clothing") && err.contains("Background"),
            "{err}"
        );
        assert!(parse_mask_classes("").is_err());
    }

    #[test]
    fn mask_class_names_match_exactly_or_ignoring_case() {
        let names = parse_mask_classes(" torso , TORSO,Hair").unwrap();
        assert_eq!(names, ["Torso", "Hair"]);
        let clothing = parse_mask_classes("Upper_Clothing,Lower_Clothing").unwrap();
        let first = class_set(28).unwrap();
        let second = class_set(29).unwrap();
        assert_eq!(mask_class_indices(&clothing, first).unwrap(), [22, 12]);
        // Sapiens2's Eyeglass at index 2 moves the later classes one on.
        assert_eq!(mask_class_indices(&clothing, second).unwrap(), [23, 13]);
        assert_eq!(mask_class_indices(&names, first).unwrap(), [21, 3]);
    }

    #[test]
    fn eyeglass_needs_a_sapiens2_seg_model() {
        let names = parse_mask_classes("eyeglass").unwrap();
        assert_eq!(
            mask_class_indices(&names, class_set(29).unwrap()).unwrap(),
            [2]
        );
        let err = mask_class_indices(&names, class_set(28).unwrap())
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "--mask-classes: the seg model's classes (goliath_parts28) have no 'Eyeglass'"
        );
    }
}
