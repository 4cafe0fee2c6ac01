//! Body-part segmentation post-processing: per-class logits at the model's resolution
//! (C x H x W, contiguous) to one class index per frame pixel.
//!
//! Both functions match OpenCV (`cv2.resize` per class, then `np.argmax` over classes) and
//! PyTorch `F.interpolate(mode="bilinear", align_corners=False)`; ties go to the lowest class.

use rayon::prelude::*;

/// Output rows per rayon task: large enough that consecutive rows reuse the resampled source
/// rows, small enough to balance the load.
const ROWS_PER_TASK: usize = 8;

/// Bilinear upsample (PyTorch `align_corners=False` = OpenCV `INTER_LINEAR`: half-pixel centres,
/// edge clamp) of `classes` logit maps of `in_h` x `in_w` (contiguous C x H x W) to
/// `out_w` x `out_h`, then argmax over classes per pixel (first max wins, like `np.argmax`).
/// Downsampling uses the same formula (no area averaging), as OpenCV and PyTorch do.
///
/// # Panics
/// If a size is zero, `classes > 256`, or the slices do not match the sizes.
pub fn upsample_argmax(
    logits: &[f32],
    classes: usize,
    in_h: usize,
    in_w: usize,
    out_w: usize,
    out_h: usize,
    out: &mut [u8],
) {
    let maps = LogitMaps::new(logits, classes, in_h, in_w);
    assert_output(out, out_w, out_h);
    let cols = linear_taps(in_w, out_w);
    let rows = linear_taps(in_h, out_h);
    out.par_chunks_mut(out_w * ROWS_PER_TASK)
        .enumerate()
        .for_each_init(
            || BilinearScratch::new(classes, out_w),
            |scratch, (task, chunk)| {
                let first_row = task * ROWS_PER_TASK;
                for (out_row, y_tap) in chunk.chunks_mut(out_w).zip(&rows[first_row..]) {
                    scratch.load_rows(&maps, &cols, y_tap);
                    scratch.argmax_row(y_tap, out_row);
                }
            },
        );
}

/// The cheaper variant: argmax at the model's resolution, then nearest-neighbour upsample
/// (`cv2.INTER_NEAREST`: src = floor(dst * in / out), with OpenCV's floating-point rounding).
///
/// # Panics
/// If a size is zero, `classes > 256`, or the slices do not match the sizes.
pub fn argmax_nearest(
    logits: &[f32],
    classes: usize,
    in_h: usize,
    in_w: usize,
    out_w: usize,
    out_h: usize,
    out: &mut [u8],
) {
    let maps = LogitMaps::new(logits, classes, in_h, in_w);
    assert_output(out, out_w, out_h);
    let low_res = argmax_at_input_resolution(&maps);
    let src_cols = nearest_sources(in_w, out_w);
    let src_rows = nearest_sources(in_h, out_h);
    out.par_chunks_mut(out_w)
        .zip(src_rows.par_iter())
        .for_each(|(out_row, &src_row)| {
            let low_row = &low_res[src_row * in_w..][..in_w];
            for (dst, &src_col) in out_row.iter_mut().zip(&src_cols) {
                *dst = low_row[src_col];
            }
        });
}

/// Logit maps, C x H x W, validated against their sizes.
struct LogitMaps<'a> {
    data: &'a [f32],
    classes: usize,
    height: usize,
    width: usize,
}

impl<'a> LogitMaps<'a> {
    fn new(data: &'a [f32], classes: usize, height: usize, width: usize) -> Self {
        assert!(
            (1..=256).contains(&classes),
            "{classes} classes do not fit a u8 class map"
        );
        assert!(
            height > 0 && width > 0,
            "empty logit maps ({width} x {height})"
        );
        assert_eq!(
            data.len(),
            classes * height * width,
            "logits do not hold {classes} x {height} x {width} values"
        );
        Self {
            data,
            classes,
            height,
            width,
        }
    }

    fn row(&self, class: usize, y: usize) -> &'a [f32] {
        &self.data[(class * self.height + y) * self.width..][..self.width]
    }
}

fn assert_output(out: &[u8], out_w: usize, out_h: usize) {
    assert!(out_w > 0 && out_h > 0, "empty output ({out_w} x {out_h})");
    assert_eq!(
        out.len(),
        out_w * out_h,
        "output does not hold {out_w} x {out_h} pixels"
    );
}

/// The two source samples of one output coordinate and their weights.
#[derive(Clone, Copy)]
struct LinearTap {
    lo: usize,
    hi: usize,
    w_lo: f32,
    w_hi: f32,
}

/// OpenCV's `INTER_LINEAR` coordinate map: src = (dst + 0.5) * in / out - 0.5, taps clamped to
/// the edge (where a tap falls outside, the edge sample takes the full weight).
fn linear_taps(in_len: usize, out_len: usize) -> Vec<LinearTap> {
    let scale = 1.0 / (out_len as f64 / in_len as f64);
    (0..out_len)
        .map(|dst| {
            let pos = ((dst as f64 + 0.5) * scale - 0.5) as f32;
            let floor = pos.floor();
            let (lo, frac) = if floor < 0.0 {
                (0, 0.0)
            } else if floor as usize >= in_len - 1 {
                (in_len - 1, 0.0)
            } else {
                (floor as usize, pos - floor)
            };
            LinearTap {
                lo,
                hi: (lo + 1).min(in_len - 1),
                w_lo: 1.0 - frac,
                w_hi: frac,
            }
        })
        .collect()
}

/// OpenCV's `INTER_NEAREST` map: floor(dst * (1 / (out / in))) in f64, which differs from the
/// exact integer floor(dst * in / out) for some sizes (e.g. 2 -> 98).
fn nearest_sources(in_len: usize, out_len: usize) -> Vec<usize> {
    let scale = 1.0 / (out_len as f64 / in_len as f64);
    (0..out_len)
        .map(|dst| ((dst as f64 * scale).floor() as usize).min(in_len - 1))
        .collect()
}

/// Per-task buffers of the bilinear path: the two source rows of the current output row, already
/// resampled horizontally for every class, and the running max / argmax of the output row.
struct BilinearScratch {
    upper: ResampledRow,
    lower: ResampledRow,
    best: Vec<f32>,
    best_class: Vec<u32>,
}

/// One source row resampled to the output width, for all classes (C x out_w).
struct ResampledRow {
    src_row: Option<usize>,
    values: Vec<f32>,
}

impl BilinearScratch {
    fn new(classes: usize, out_w: usize) -> Self {
        let row = || ResampledRow {
            src_row: None,
            values: vec![0.0; classes * out_w],
        };
        Self {
            upper: row(),
            lower: row(),
            best: vec![0.0; out_w],
            best_class: vec![0; out_w],
        }
    }

    /// Makes `upper` / `lower` hold source rows `y_tap.lo` / `y_tap.hi`; when upsampling, the
    /// previous output row's lower row is usually this one's upper row, so it is swapped in.
    fn load_rows(&mut self, maps: &LogitMaps, cols: &[LinearTap], y_tap: &LinearTap) {
        if self.upper.src_row != Some(y_tap.lo) {
            if self.lower.src_row == Some(y_tap.lo) {
                std::mem::swap(&mut self.upper, &mut self.lower);
            } else {
                self.upper.resample(maps, cols, y_tap.lo);
            }
        }
        if self.lower.src_row != Some(y_tap.hi) {
            self.lower.resample(maps, cols, y_tap.hi);
        }
    }

    /// Blends the two loaded rows vertically class by class, keeping the running argmax.
    fn argmax_row(&mut self, y_tap: &LinearTap, out_row: &mut [u8]) {
        let out_w = out_row.len();
        self.best.fill(f32::NEG_INFINITY);
        self.best_class.fill(0);
        let classes = self.upper.values.chunks_exact(out_w);
        for (class, (upper, lower)) in classes
            .zip(self.lower.values.chunks_exact(out_w))
            .enumerate()
        {
            fold_max_blend(
                &mut self.best,
                &mut self.best_class,
                class as u32,
                (upper, y_tap.w_lo),
                (lower, y_tap.w_hi),
            );
        }
        for (dst, &class) in out_row.iter_mut().zip(&self.best_class) {
            *dst = class as u8;
        }
    }
}

impl ResampledRow {
    fn resample(&mut self, maps: &LogitMaps, cols: &[LinearTap], src_row: usize) {
        let out_w = cols.len();
        for (class, dst) in self.values.chunks_exact_mut(out_w).enumerate() {
            let src = maps.row(class, src_row);
            for (d, tap) in dst.iter_mut().zip(cols) {
                *d = src[tap.lo] * tap.w_lo + src[tap.hi] * tap.w_hi;
            }
        }
        self.src_row = Some(src_row);
    }
}

/// Running argmax update with the values `upper * w_upper + lower * w_lower`; strict `>` keeps
/// the first maximum. Branch-free so that it vectorises.
fn fold_max_blend(
    best: &mut [f32],
    best_class: &mut [u32],
    class: u32,
    (upper, w_upper): (&[f32], f32),
    (lower, w_lower): (&[f32], f32),
) {
    for (((b, c), &u), &l) in best
        .iter_mut()
        .zip(best_class.iter_mut())
        .zip(upper)
        .zip(lower)
    {
        let v = u * w_upper + l * w_lower;
        let greater = v > *b;
        *b = if greater { v } else { *b };
        *c = if greater { class } else { *c };
    }
}

/// Running argmax update with the values of `row`; strict `>` keeps the first maximum.
fn fold_max(best: &mut [f32], best_class: &mut [u32], class: u32, row: &[f32]) {
    for ((b, c), &v) in best.iter_mut().zip(best_class.iter_mut()).zip(row) {
        let greater = v > *b;
        *b = if greater { v } else { *b };
        *c = if greater { class } else { *c };
    }
}

/// The class map at the logits' own resolution (H x W).
fn argmax_at_input_resolution(maps: &LogitMaps) -> Vec<u8> {
    let mut class_map = vec![0u8; maps.height * maps.width];
    class_map
        .par_chunks_mut(maps.width)
        .enumerate()
        .for_each_init(
            || (vec![0.0f32; maps.width], vec![0u32; maps.width]),
            |(best, best_class), (y, out_row)| {
                best.fill(f32::NEG_INFINITY);
                best_class.fill(0);
                for class in 0..maps.classes {
                    fold_max(best, best_class, class as u32, maps.row(class, y));
                }
                for (dst, &class) in out_row.iter_mut().zip(best_class.iter()) {
                    *dst = class as u8;
                }
            },
        );
    class_map
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn linear_taps_match_opencv_for_2x_upsample() {
        let taps = linear_taps(2, 4);
        let got: Vec<_> = taps.iter().map(|t| (t.lo, t.hi, t.w_hi)).collect();
        assert_eq!(
            got,
            vec![(0, 1, 0.0), (0, 1, 0.25), (0, 1, 0.75), (1, 1, 0.0)]
        );
    }

    #[test]
    fn nearest_sources_follow_opencv_rounding() {
        // 49 * 2 / 98 = 1 exactly, but OpenCV's f64 product 49 * (1 / 49) rounds below 1.
        assert_eq!(nearest_sources(2, 98)[49], 0);
        assert_eq!(nearest_sources(4, 2), vec![0, 2]);
    }

    #[test]
    fn ties_go_to_the_first_class() {
        let logits = vec![1.0f32; 3 * 2 * 2];
        let mut out = vec![9u8; 5 * 3];
        upsample_argmax(&logits, 3, 2, 2, 5, 3, &mut out);
        assert!(out.iter().all(|&c| c == 0));
        argmax_nearest(&logits, 3, 2, 2, 5, 3, &mut out);
        assert!(out.iter().all(|&c| c == 0));
    }

    #[test]
    fn single_pixel_input_fills_the_output() {
        let logits = [0.0f32, 2.0, 1.0];
        let mut out = vec![0u8; 7 * 4];
        upsample_argmax(&logits, 3, 1, 1, 7, 4, &mut out);
        assert!(out.iter().all(|&c| c == 1));
    }
}
