//! Body-part segmentation post-processing: per-class logits at the model's resolution
//! (C x H x W, contiguous) to one class index per frame pixel.
//!
//! Both functions match OpenCV (`cv2.resize` per class, then `np.argmax` over classes) and
//! PyTorch `F.interpolate(mode="bilinear", align_corners=False)`; ties go to the lowest class.
//! NaN logits never win (`np.argmax` would pick them).

pub mod cuda;

use rayon::prelude::*;

/// Output pixels whose running max / argmax stay in registers while the classes are scanned.
const LANES: usize = 16;
/// Longest run of output columns resampled as one vector (see `ColumnRuns`).
const RUN: usize = 8;
/// Rayon tasks per thread: each task starts its row reuse afresh, so not too many, but enough to
/// even out the load.
const TASKS_PER_THREAD: usize = 4;

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
    let cols = ColumnRuns::new(in_w, out_w);
    let rows = linear_taps(in_h, out_h);
    for_each_row_band(out, out_w, &rows, |band, y_taps| {
        let mut scratch = BilinearScratch::new(classes, out_w);
        for (out_row, y_tap) in band.chunks_mut(out_w).zip(y_taps) {
            scratch.load_rows(&maps, &cols, y_tap);
            scratch.argmax_row(y_tap, out_row);
        }
    });
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
    for_each_row_band(out, out_w, &src_rows, |band, src_rows| {
        nearest_rows(band, src_rows, &low_res[..], in_w, &src_cols);
    });
}

/// Runs `fill` in parallel on bands of whole rows of `out` (`out_w` wide), each band with its
/// rows' entries of `per_row` (one entry per output row).
fn for_each_row_band<T: Sync>(
    out: &mut [u8],
    out_w: usize,
    per_row: &[T],
    fill: impl Fn(&mut [u8], &[T]) + Sync + Send,
) {
    let rows_per_band = per_row
        .len()
        .div_ceil(rayon::current_num_threads() * TASKS_PER_THREAD);
    out.par_chunks_mut(out_w * rows_per_band)
        .zip(per_row.par_chunks(rows_per_band))
        .for_each(|(band, rows)| fill(band, rows));
}

/// Fills output rows from the low-resolution class map; a row with the same source row as the
/// one before it is copied rather than gathered again.
fn nearest_rows(
    chunk: &mut [u8],
    src_rows: &[usize],
    low_res: &[u8],
    in_w: usize,
    src_cols: &[usize],
) {
    let out_w = src_cols.len();
    for (row, &src_row) in src_rows.iter().enumerate() {
        let (done, todo) = chunk.split_at_mut(row * out_w);
        let out_row = &mut todo[..out_w];
        if row > 0 && src_rows[row - 1] == src_row {
            out_row.copy_from_slice(&done[(row - 1) * out_w..]);
        } else {
            let low_row = &low_res[src_row * in_w..][..in_w];
            for (dst, &src_col) in out_row.iter_mut().zip(src_cols) {
                *dst = low_row[src_col];
            }
        }
    }
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
pub(crate) struct LinearTap {
    pub(crate) lo: usize,
    pub(crate) hi: usize,
    pub(crate) w_lo: f32,
    pub(crate) w_hi: f32,
}

/// OpenCV's `INTER_LINEAR` coordinate map: src = (dst + 0.5) * in / out - 0.5, taps clamped to
/// the edge (where a tap falls outside, the edge sample takes the full weight).
pub(crate) fn linear_taps(in_len: usize, out_len: usize) -> Vec<LinearTap> {
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
pub(crate) fn nearest_sources(in_len: usize, out_len: usize) -> Vec<usize> {
    let scale = 1.0 / (out_len as f64 / in_len as f64);
    (0..out_len)
        .map(|dst| ((dst as f64 * scale).floor() as usize).min(in_len - 1))
        .collect()
}

/// The horizontal half of the bilinear map, as runs of at most `RUN` output columns that share
/// their two source columns: resampling a row then reads two source values per run and writes
/// `RUN` values at once (a vector operation), the next run overwriting the surplus.
struct ColumnRuns {
    runs: Vec<ColumnRun>,
}

struct ColumnRun {
    lo: usize,
    hi: usize,
    start: usize,
    /// Weights of the run's columns, zero past its end.
    w_lo: [f32; RUN],
    w_hi: [f32; RUN],
}

impl ColumnRuns {
    fn new(in_w: usize, out_w: usize) -> Self {
        let mut runs: Vec<ColumnRun> = Vec::new();
        for (x, tap) in linear_taps(in_w, out_w).into_iter().enumerate() {
            let run = match runs.last_mut() {
                Some(run) if (run.lo, run.hi) == (tap.lo, tap.hi) && x - run.start < RUN => run,
                _ => {
                    runs.push(ColumnRun {
                        lo: tap.lo,
                        hi: tap.hi,
                        start: x,
                        w_lo: [0.0; RUN],
                        w_hi: [0.0; RUN],
                    });
                    let last = runs.len() - 1;
                    &mut runs[last]
                }
            };
            run.w_lo[x - run.start] = tap.w_lo;
            run.w_hi[x - run.start] = tap.w_hi;
        }
        Self { runs }
    }
}

/// Per-task buffers of the bilinear path: the two source rows of the current output row,
/// already resampled horizontally for every class.
struct BilinearScratch {
    upper: ResampledRow,
    lower: ResampledRow,
}

/// One source row resampled to the output width for all classes: C rows of `blocks` blocks of
/// `LANES` values, padded past the output width for the last run's surplus.
struct ResampledRow {
    src_row: Option<usize>,
    blocks: usize,
    values: Vec<[f32; LANES]>,
}

impl BilinearScratch {
    fn new(classes: usize, out_w: usize) -> Self {
        let blocks = (out_w + RUN).div_ceil(LANES);
        let row = || ResampledRow {
            src_row: None,
            blocks,
            values: vec![[0.0; LANES]; classes * blocks],
        };
        Self {
            upper: row(),
            lower: row(),
        }
    }

    /// Makes `upper` / `lower` hold source rows `y_tap.lo` / `y_tap.hi`; when upsampling, the
    /// previous output row's lower row is usually this one's upper row, so it is swapped in.
    fn load_rows(&mut self, maps: &LogitMaps, cols: &ColumnRuns, y_tap: &LinearTap) {
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

    /// Blends the two loaded rows vertically and takes the argmax, `LANES` pixels at a time
    /// with the running max in registers (strict `>` keeps the first maximum).
    fn argmax_row(&self, y_tap: &LinearTap, out_row: &mut [u8]) {
        let blocks = self.upper.blocks;
        let classes = self.upper.values.len() / blocks;
        for (block, out_block) in out_row.chunks_mut(LANES).enumerate() {
            let mut best = [f32::NEG_INFINITY; LANES];
            let mut best_class = [0u8; LANES];
            for class in 0..classes {
                let upper = &self.upper.values[class * blocks + block];
                let lower = &self.lower.values[class * blocks + block];
                for lane in 0..LANES {
                    let value = upper[lane] * y_tap.w_lo + lower[lane] * y_tap.w_hi;
                    if value > best[lane] {
                        best[lane] = value;
                        best_class[lane] = class as u8;
                    }
                }
            }
            out_block.copy_from_slice(&best_class[..out_block.len()]);
        }
    }
}

impl ResampledRow {
    fn resample(&mut self, maps: &LogitMaps, cols: &ColumnRuns, src_row: usize) {
        let padded_width = self.blocks * LANES;
        let rows = self
            .values
            .as_flattened_mut()
            .chunks_exact_mut(padded_width);
        for (class, dst) in rows.enumerate() {
            let src = maps.row(class, src_row);
            for run in &cols.runs {
                let (a, b) = (src[run.lo], src[run.hi]);
                // A fixed-size array, so that the run compiles to vector operations.
                let values: [f32; RUN] = std::array::from_fn(|i| a * run.w_lo[i] + b * run.w_hi[i]);
                dst[run.start..run.start + RUN].copy_from_slice(&values);
            }
        }
        self.src_row = Some(src_row);
    }
}

/// Running argmax update with the values of `row`; strict `>` keeps the first maximum.
fn fold_max(best: &mut [f32], best_class: &mut [u32], class: u32, row: &[f32]) {
    for ((b, c), &v) in best.iter_mut().zip(best_class.iter_mut()).zip(row) {
        // Masks rather than `if`: conditional stores would keep the loop from vectorising.
        let mask = u32::from(v > *b).wrapping_neg();
        *b = f32::from_bits((v.to_bits() & mask) | (b.to_bits() & !mask));
        *c = (class & mask) | (*c & !mask);
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
