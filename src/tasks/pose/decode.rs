//! DARK-UDP decode of pose heatmaps, as mmpose's `UDPHeatmap.decode`
//! (`get_heatmap_maximum` + `refine_keypoints_dark_udp`).
//!
//! The refinement only reads the blurred map at the 3x3 neighbourhood of the integer argmax and
//! the blurred map's global maximum (for the rescale). The blur is a convex combination of the
//! original and of the zeros beyond the edge, so a blurred value above a positive `b` needs an
//! original pixel above `b` within the blur radius. Starting from `b` = the blurred value next
//! to the argmax, only the pixels within reach of such hot pixels are blurred: the result is the
//! full-blur result at a small fraction of the work.
//!
//! Flat or noisy maps have hot pixels everywhere. There the exact maximum is skipped when the
//! log clip cannot depend on it: the rescale then only shifts the log-map by a constant, which
//! the Newton step ignores up to float rounding.

use rayon::prelude::*;
use std::cell::RefCell;
use std::ops::Range;

/// A heatmap maximum refined to sub-pixel precision, in heatmap pixel coordinates.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct HeatmapPeak {
    pub x: f32,
    pub y: f32,
    /// The heatmap maximum; `<= 0` means invalid, and then `x = y = -1` (mmpose convention).
    pub score: f32,
}

impl HeatmapPeak {
    fn invalid(score: f32) -> Self {
        Self {
            x: -1.0,
            y: -1.0,
            score,
        }
    }
}

/// Side of the Gaussian blur kernel (mmpose's `blur_kernel_size` for Sapiens).
pub const BLUR_KERNEL: usize = 11;
const BLUR_RADIUS: usize = BLUR_KERNEL / 2;
/// Side of the tiles whose maxima locate the argmax and the hot pixels, and width of the
/// column strips the blur runs on (a fixed-size array the compiler vectorises).
const TILE: usize = 8;
/// The input columns of one strip: the strip plus the blur radius on both sides.
const SEGMENT: usize = TILE + 2 * BLUR_RADIUS;
const LOG_FLOOR: f32 = 1e-3;
const LOG_CEIL: f32 = 50.0;
/// mmpose adds `np.finfo(np.float32).eps * I` to the Hessian, then inverts in float64.
const HESSIAN_EPS: f64 = f32::EPSILON as f64;
/// A strip plan covering at most 1 / this of the map is small enough to blur even when the
/// Newton step does not need the exact blurred maximum.
const SMALL_PLAN_SHARE: usize = 16;
/// Relative slack on the hot-pixel threshold, so float rounding in the blur (a few ulp) cannot
/// let a skipped pixel hold the true maximum.
const ROUNDING_SLACK: f32 = 1e-5;

pub(crate) type BlurKernel = [f32; BLUR_KERNEL];
/// One row of a column strip.
type StripRow = [f32; TILE];

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

/// Decodes `channels` heatmaps of `height` x `width` (contiguous C x H x W, one person) with
/// DARK-UDP. `out` is cleared and receives one peak per channel.
///
/// # Panics
/// If `heatmaps.len() != channels * height * width`.
pub fn decode_dark_udp(
    heatmaps: &[f32],
    channels: usize,
    height: usize,
    width: usize,
    out: &mut Vec<HeatmapPeak>,
) {
    let plane = height * width;
    assert_eq!(
        heatmaps.len(),
        channels * plane,
        "heatmaps must hold {channels} x {height} x {width} values"
    );
    out.clear();
    if plane == 0 {
        out.resize(channels, HeatmapPeak::invalid(f32::NEG_INFINITY));
        return;
    }
    let kernel = opencv_gaussian_kernel();
    out.par_extend(heatmaps.par_chunks_exact(plane).map(|data| {
        let map = Heatmap {
            data,
            width,
            height,
        };
        SCRATCH.with_borrow_mut(|scratch| decode_channel(map, &kernel, scratch))
    }));
}

/// OpenCV's `getGaussianKernel(11, 0, CV_32F)`: taps rounded to f32, normalised in f64.
pub(crate) fn opencv_gaussian_kernel() -> BlurKernel {
    let n = BLUR_KERNEL as f64;
    let sigma = ((n - 1.0) * 0.5 - 1.0) * 0.3 + 0.8;
    let scale = -0.5 / (sigma * sigma);
    let mut taps = [0.0f32; BLUR_KERNEL];
    for (i, tap) in taps.iter_mut().enumerate() {
        let offset = i as f64 - (n - 1.0) * 0.5;
        *tap = (scale * offset * offset).exp() as f32;
    }
    let inv_sum = 1.0 / taps.iter().map(|&t| f64::from(t)).sum::<f64>();
    taps.map(|t| (f64::from(t) * inv_sum) as f32)
}

#[derive(Clone, Copy)]
struct Heatmap<'a> {
    data: &'a [f32],
    width: usize,
    height: usize,
}

impl Heatmap<'_> {
    fn row(&self, y: usize) -> &[f32] {
        &self.data[y * self.width..(y + 1) * self.width]
    }
}

/// Per-thread buffers, reused across channels.
#[derive(Default)]
struct Scratch {
    tiles: TileMaxima,
    /// For each strip of `TILE` columns, the rows whose blur may hold the maximum.
    strip_rows: Vec<Range<usize>>,
    strip: StripBlur,
}

fn decode_channel(map: Heatmap, kernel: &BlurKernel, scratch: &mut Scratch) -> HeatmapPeak {
    let score = scratch.tiles.compute(map);
    if !is_positive(score) {
        return HeatmapPeak::invalid(score);
    }
    let Some((x, y)) = scratch.tiles.first_position_of(map, score) else {
        return HeatmapPeak::invalid(score);
    };
    let (dx, dy) = newton_offset(map, (x, y), score, kernel, scratch).unwrap_or((0.0, 0.0));
    // mmpose subtracts a float64 offset from float32 keypoints.
    HeatmapPeak {
        x: (x as f64 - dx) as f32,
        y: (y as f64 - dy) as f32,
        score,
    }
}

/// The Newton offset of mmpose's `refine_keypoints_dark_udp` at the integer maximum `peak`;
/// `None` when the step is undefined (blurred map not positive, singular Hessian, non-finite).
fn newton_offset(
    map: Heatmap,
    peak: (usize, usize),
    score: f32,
    kernel: &BlurKernel,
    scratch: &mut Scratch,
) -> Option<(f64, f64)> {
    let around = Rect::around(map, peak);
    let rows = scratch
        .strip
        .run(map, around.x0, around.y0..around.y1, kernel);
    let seed = strip_max(rows, around.x1 - around.x0);
    // Replicate padding: offsets past the edge read the edge pixel.
    let blurred_at = |dx: usize, dy: usize| {
        let px = (peak.0 + dx).saturating_sub(1).min(map.width - 1);
        let py = (peak.1 + dy).saturating_sub(1).min(map.height - 1);
        rows[py - around.y0][px - around.x0]
    };
    let blurred = [0, 1, 2].map(|dy| [0, 1, 2].map(|dx| blurred_at(dx, dy)));
    let clip_matters = clip_may_apply(&blurred, seed, score);
    let blurred_max = rescale_maximum(map, kernel, scratch, seed, clip_matters);
    if !is_positive(blurred_max) {
        return None;
    }
    // float32 like `heatmaps[k] *= origin_max / np.max(heatmaps[k])`.
    let scale = score / blurred_max;
    let log = blurred.map(|row| row.map(|v| (v * scale).clamp(LOG_FLOOR, LOG_CEIL).ln()));
    newton_step(&log)
}

/// One Newton step on the log-map `log[dy][dx]` (3x3 around the peak); returns `H^-1 g`.
fn newton_step(log: &[[f32; 3]; 3]) -> Option<(f64, f64)> {
    let centre = log[1][1];
    let (x_plus, x_minus) = (log[1][2], log[1][0]);
    let (y_plus, y_minus) = (log[2][1], log[0][1]);
    // Same float32 operation order as mmpose.
    let gx = 0.5 * (x_plus - x_minus);
    let gy = 0.5 * (y_plus - y_minus);
    let hxx = x_plus - 2.0 * centre + x_minus;
    let hyy = y_plus - 2.0 * centre + y_minus;
    let hxy = 0.5 * (log[2][2] - x_plus - y_plus + centre + centre - x_minus - y_minus + log[0][0]);
    let (a, b, d) = (
        f64::from(hxx) + HESSIAN_EPS,
        f64::from(hxy),
        f64::from(hyy) + HESSIAN_EPS,
    );
    let det = a * d - b * b;
    if det == 0.0 {
        return None;
    }
    let (gx, gy) = (f64::from(gx), f64::from(gy));
    let offset = ((d * gx - b * gy) / det, (a * gy - b * gx) / det);
    (offset.0.is_finite() && offset.1.is_finite()).then_some(offset)
}

/// Whether clipping the rescaled neighbourhood to `[LOG_FLOOR, LOG_CEIL]` can depend on the
/// blurred maximum. That maximum lies between `seed` (a blurred value) and `score` (a blur
/// never exceeds the positive maximum of its input), so the rescale lies between 1 and
/// `score / seed`. The Newton step reads differences of the log-map: it ignores the rescale
/// when no value is clipped, and when every value is floored at both ends of that range.
fn clip_may_apply(blurred: &[[f32; 3]; 3], seed: f32, score: f32) -> bool {
    let ceil_safe = score <= LOG_CEIL * (1.0 - ROUNDING_SLACK);
    if !ceil_safe || !is_positive(seed) {
        return true;
    }
    let mut values = blurred.iter().flatten();
    let never_floored = |&v: &f32| v >= LOG_FLOOR * (1.0 + ROUNDING_SLACK);
    // `v * (score / seed) < LOG_FLOOR`, multiplied out so a tiny seed cannot overflow.
    let always_floored = |&v: &f32| v * score * (1.0 + ROUNDING_SLACK) < LOG_FLOOR * seed;
    !(values.clone().all(never_floored) || values.all(always_floored))
}

/// The blurred map's maximum, for the rescale, given `seed`, a value the blurred map takes.
/// Exact where the strip plan is small or the clip matters; otherwise `seed` (module doc).
fn rescale_maximum(
    map: Heatmap,
    kernel: &BlurKernel,
    scratch: &mut Scratch,
    seed: f32,
    clip_matters: bool,
) -> f32 {
    let threshold = seed - seed.abs() * ROUNDING_SLACK;
    let budget = if clip_matters {
        usize::MAX
    } else {
        small_plan_budget(map, &scratch.tiles)
    };
    if plan_strips(
        map,
        &scratch.tiles,
        threshold,
        budget,
        &mut scratch.strip_rows,
    ) {
        blur_planned_strips(map, kernel, scratch, seed)
    } else {
        seed
    }
}

/// How many strip rows a small plan may cover.
fn small_plan_budget(map: Heatmap, tiles: &TileMaxima) -> usize {
    map.height * tiles.columns / SMALL_PLAN_SHARE
}

/// The maximum of `seed` and of the blur over the planned strips.
fn blur_planned_strips(map: Heatmap, kernel: &BlurKernel, scratch: &mut Scratch, seed: f32) -> f32 {
    let Scratch {
        strip_rows, strip, ..
    } = scratch;
    let mut best = seed;
    for (tx, rows) in strip_rows.iter().enumerate() {
        if !rows.is_empty() {
            let x0 = tx * TILE;
            let blurred = strip.run(map, x0, rows.clone(), kernel);
            best = max_ignoring_nan(best, strip_max(blurred, TILE.min(map.width - x0)));
        }
    }
    best
}

/// Plans, for each strip of `TILE` columns, the rows whose blurred value may reach `threshold`:
/// those within the blur radius of an original pixel at least `threshold`. With
/// `threshold <= 0`, every row: zero padding lifts the blur near the edge up to 0. Returns
/// false, the plan unfinished, once it covers more than `budget` strip rows.
fn plan_strips(
    map: Heatmap,
    tiles: &TileMaxima,
    threshold: f32,
    budget: usize,
    strip_rows: &mut Vec<Range<usize>>,
) -> bool {
    strip_rows.clear();
    if !is_positive(threshold) {
        strip_rows.resize(tiles.columns, 0..map.height);
        return map.height * tiles.columns <= budget;
    }
    strip_rows.resize(tiles.columns, 0..0);
    let mut planned = 0;
    for hot_tile in tiles.at_least(threshold) {
        let Some(hot) = Rect::tile(map, hot_tile).bounds_at_least(map, threshold) else {
            continue;
        };
        let reach = hot.dilated(map, BLUR_RADIUS);
        for rows in &mut strip_rows[reach.x0 / TILE..=(reach.x1 - 1) / TILE] {
            let grown = hull(rows, reach.y0..reach.y1);
            planned += grown.len() - rows.len();
            *rows = grown;
        }
        if planned > budget {
            return false;
        }
    }
    true
}

fn hull(a: &Range<usize>, b: Range<usize>) -> Range<usize> {
    if a.is_empty() {
        b
    } else {
        a.start.min(b.start)..a.end.max(b.end)
    }
}

/// Per-tile maxima of the original map.
#[derive(Default)]
struct TileMaxima {
    values: Vec<f32>,
    columns: usize,
    rows: usize,
    column_max: Vec<f32>,
}

impl TileMaxima {
    /// Fills the tile maxima of `map` and returns its global maximum (NaNs ignored).
    fn compute(&mut self, map: Heatmap) -> f32 {
        self.columns = map.width.div_ceil(TILE);
        self.rows = map.height.div_ceil(TILE);
        self.values.clear();
        self.column_max.resize(map.width, f32::NEG_INFINITY);
        for band in map.data.chunks(TILE * map.width) {
            fill_column_max(&mut self.column_max, band, map.width);
            self.values
                .extend(self.column_max.chunks(TILE).map(slice_max));
        }
        slice_max(&self.values)
    }

    fn get(&self, tile_x: usize, tile_y: usize) -> f32 {
        self.values[tile_y * self.columns + tile_x]
    }

    /// The first (row-major, as `np.argmax`) pixel equal to `value`.
    fn first_position_of(&self, map: Heatmap, value: f32) -> Option<(usize, usize)> {
        let band_rows =
            (0..self.rows).filter(|&ty| (0..self.columns).any(|tx| self.get(tx, ty) == value));
        band_rows
            .flat_map(|ty| ty * TILE..((ty + 1) * TILE).min(map.height))
            .find_map(|y| map.row(y).iter().position(|&v| v == value).map(|x| (x, y)))
    }

    /// Tiles holding a value of at least `threshold`, as (column, row).
    fn at_least(&self, threshold: f32) -> impl Iterator<Item = (usize, usize)> + '_ {
        let hot = self
            .values
            .iter()
            .enumerate()
            .filter(move |&(_, &v)| v >= threshold);
        hot.map(|(t, _)| (t % self.columns, t / self.columns))
    }
}

/// Column maxima of the band's rows. Element-wise over whole rows it vectorises and reads
/// memory strictly in order (measured faster than keeping several rows in flight).
fn fill_column_max(column_max: &mut [f32], band: &[f32], width: usize) {
    column_max.fill(f32::NEG_INFINITY);
    for row in band.chunks_exact(width) {
        for (m, &v) in column_max.iter_mut().zip(row) {
            *m = max_ignoring_nan(*m, v);
        }
    }
}

/// False for NaN too, so NaN maps count as invalid.
fn is_positive(value: f32) -> bool {
    value > 0.0
}

fn max_ignoring_nan(a: f32, b: f32) -> f32 {
    if b > a { b } else { a }
}

fn slice_max(values: &[f32]) -> f32 {
    values
        .iter()
        .copied()
        .fold(f32::NEG_INFINITY, max_ignoring_nan)
}

/// The maximum over the first `lanes` columns of a blurred strip.
fn strip_max(rows: &[StripRow], lanes: usize) -> f32 {
    let row_maxima = rows.iter().map(|row| slice_max(&row[..lanes]));
    row_maxima.fold(f32::NEG_INFINITY, max_ignoring_nan)
}

/// Pixels `x0..x1` x `y0..y1` of the map.
#[derive(Clone, Copy, Debug)]
struct Rect {
    x0: usize,
    y0: usize,
    x1: usize,
    y1: usize,
}

impl Rect {
    /// The 3x3 neighbourhood of `(x, y)`, cut at the map edge.
    fn around(map: Heatmap, (x, y): (usize, usize)) -> Self {
        Self {
            x0: x.saturating_sub(1),
            y0: y.saturating_sub(1),
            x1: (x + 2).min(map.width),
            y1: (y + 2).min(map.height),
        }
    }

    fn tile(map: Heatmap, (tx, ty): (usize, usize)) -> Self {
        Self {
            x0: tx * TILE,
            y0: ty * TILE,
            x1: ((tx + 1) * TILE).min(map.width),
            y1: ((ty + 1) * TILE).min(map.height),
        }
    }

    fn dilated(self, map: Heatmap, by: usize) -> Self {
        Self {
            x0: self.x0.saturating_sub(by),
            y0: self.y0.saturating_sub(by),
            x1: (self.x1 + by).min(map.width),
            y1: (self.y1 + by).min(map.height),
        }
    }

    /// The bounding box of the pixels in `self` that are at least `threshold`.
    fn bounds_at_least(self, map: Heatmap, threshold: f32) -> Option<Rect> {
        let mut bounds: Option<Rect> = None;
        for y in self.y0..self.y1 {
            let row = &map.row(y)[self.x0..self.x1];
            let Some(first) = row.iter().position(|&v| v >= threshold) else {
                continue;
            };
            let last = row.iter().rposition(|&v| v >= threshold).unwrap_or(first);
            let span = Rect {
                x0: self.x0 + first,
                y0: y,
                x1: self.x0 + last + 1,
                y1: y + 1,
            };
            bounds = Some(bounds.map_or(span, |b| b.union(span)));
        }
        bounds
    }

    fn union(self, other: Rect) -> Rect {
        Self {
            x0: self.x0.min(other.x0),
            y0: self.y0.min(other.y0),
            x1: self.x1.max(other.x1),
            y1: self.y1.max(other.y1),
        }
    }
}

/// Buffers for blurring one column strip.
#[derive(Default)]
struct StripBlur {
    row_pass: Vec<StripRow>,
    rows: Vec<StripRow>,
}

impl StripBlur {
    /// The zero-padded blur at `rows` of the columns `x0 .. x0 + TILE` (lanes past the map edge
    /// are no pixels). Separable, rows then columns as OpenCV; every output sums its taps in
    /// kernel order, so all strips (and a plain full-map blur) round identically.
    fn run(
        &mut self,
        map: Heatmap,
        x0: usize,
        rows: Range<usize>,
        kernel: &BlurKernel,
    ) -> &[StripRow] {
        self.row_pass.clear();
        // Input row y + BLUR_RADIUS feeds output row y; rows beyond the edge are zero padding.
        let inputs = rows.start..rows.end + 2 * BLUR_RADIUS;
        self.row_pass.extend(inputs.map(|padded_y| {
            match padded_y
                .checked_sub(BLUR_RADIUS)
                .filter(|&y| y < map.height)
            {
                Some(y) => convolve(&padded_segment(map.row(y), x0), kernel),
                None => [0.0; TILE],
            }
        }));
        self.rows.clear();
        let columns = self.row_pass.windows(BLUR_KERNEL);
        self.rows
            .extend(columns.map(|window| weighted_sum(window, kernel)));
        &self.rows
    }
}

/// `row[x0 - BLUR_RADIUS .. x0 - BLUR_RADIUS + SEGMENT]`, zero outside the row.
fn padded_segment(row: &[f32], x0: usize) -> [f32; SEGMENT] {
    let mut segment = [0.0f32; SEGMENT];
    let leading_zeros = BLUR_RADIUS.saturating_sub(x0);
    let start = x0 + leading_zeros - BLUR_RADIUS;
    let end = (x0 + SEGMENT - BLUR_RADIUS).min(row.len());
    segment[leading_zeros..leading_zeros + (end - start)].copy_from_slice(&row[start..end]);
    segment
}

fn convolve(segment: &[f32; SEGMENT], kernel: &BlurKernel) -> StripRow {
    let mut acc = [0.0f32; TILE];
    for (k, &w) in kernel.iter().enumerate() {
        for (a, &v) in acc.iter_mut().zip(&segment[k..k + TILE]) {
            *a += w * v;
        }
    }
    acc
}

fn weighted_sum(rows: &[StripRow], kernel: &BlurKernel) -> StripRow {
    let mut acc = [0.0f32; TILE];
    for (row, &w) in rows.iter().zip(kernel) {
        for (a, &v) in acc.iter_mut().zip(row) {
            *a += w * v;
        }
    }
    acc
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::synthetic::{self, XorShift, add_gaussian};

    const WIDTH: usize = 192;
    const HEIGHT: usize = 256;

    fn gaussian_map(centre: (f32, f32), sigma: f32) -> Vec<f32> {
        synthetic::gaussian_map(WIDTH, HEIGHT, centre, sigma, 1.0)
    }

    fn decode(map: &[f32], channels: usize, height: usize, width: usize) -> Vec<HeatmapPeak> {
        let mut out = Vec::new();
        decode_dark_udp(map, channels, height, width, &mut out);
        out
    }

    /// The zero-padded separable blur over the whole map, taps summed in kernel order.
    fn full_blur(map: &[f32], width: usize, height: usize) -> Vec<f32> {
        let kernel = opencv_gaussian_kernel();
        let at = |data: &[f32], x: isize, y: isize| {
            let inside = (0..width as isize).contains(&x) && (0..height as isize).contains(&y);
            if inside {
                data[y as usize * width + x as usize]
            } else {
                0.0
            }
        };
        let pass = |data: &[f32], step: (isize, isize)| {
            let mut out = vec![0.0f32; data.len()];
            for (i, o) in out.iter_mut().enumerate() {
                let (x, y) = ((i % width) as isize, (i / width) as isize);
                for (k, &w) in kernel.iter().enumerate() {
                    let offset = k as isize - BLUR_RADIUS as isize;
                    *o += w * at(data, x + offset * step.0, y + offset * step.1);
                }
            }
            out
        };
        pass(&pass(map, (1, 0)), (0, 1))
    }

    /// mmpose's algorithm without any pruning.
    fn slow_decode(map: &[f32], width: usize, height: usize) -> HeatmapPeak {
        let (mut best, mut score) = (0, f32::NEG_INFINITY);
        for (i, &v) in map.iter().enumerate() {
            if v > score {
                (best, score) = (i, v);
            }
        }
        if score <= 0.0 {
            return HeatmapPeak::invalid(score);
        }
        let (x, y) = (best % width, best / width);
        let blurred = full_blur(map, width, height);
        let blurred_max = blurred.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let integer = HeatmapPeak {
            x: x as f32,
            y: y as f32,
            score,
        };
        if blurred_max <= 0.0 {
            return integer;
        }
        let scale = score / blurred_max;
        let log_at = |dx: isize, dy: isize| {
            let px = (x as isize + dx).clamp(0, width as isize - 1) as usize;
            let py = (y as isize + dy).clamp(0, height as isize - 1) as usize;
            (blurred[py * width + px] * scale)
                .clamp(LOG_FLOOR, LOG_CEIL)
                .ln()
        };
        let log = [-1, 0, 1].map(|dy| [-1, 0, 1].map(|dx| log_at(dx, dy)));
        match newton_step(&log) {
            Some((dx, dy)) => HeatmapPeak {
                x: (x as f64 - dx) as f32,
                y: (y as f64 - dy) as f32,
                score,
            },
            None => integer,
        }
    }

    #[test]
    fn kernel_matches_opencv() {
        let kernel = opencv_gaussian_kernel();
        // cv2.getGaussianKernel(11, 0, ktype=cv2.CV_32F)[:6], OpenCV 4.14
        let opencv = [
            0.008_812_229,
            0.027_143_577,
            0.065_114_06,
            0.121_649_07,
            0.176_998_36,
            0.200_565_41,
        ];
        for (i, &expected) in opencv.iter().enumerate() {
            assert_eq!(kernel[i], expected, "tap {i}");
            assert_eq!(kernel[i], kernel[BLUR_KERNEL - 1 - i], "tap {i}");
        }
    }

    #[test]
    fn gaussian_peak_decodes_to_sub_pixel_position() {
        let peaks = decode(&gaussian_map((57.3, 101.8), 2.0), 1, HEIGHT, WIDTH);
        let peak = peaks[0];
        assert!((peak.x - 57.3).abs() < 0.05, "{peak:?}");
        assert!((peak.y - 101.8).abs() < 0.05, "{peak:?}");
        assert!(peak.score > 0.9 && peak.score <= 1.0, "{peak:?}");
    }

    #[test]
    fn border_peaks_stay_finite() {
        let centres = [
            (0.0, 255.0),
            (191.0, 0.0),
            (0.0, 0.0),
            (191.0, 255.0),
            (0.4, 120.6),
            (100.0, 254.7),
        ];
        let maps: Vec<f32> = centres.iter().flat_map(|&c| gaussian_map(c, 2.0)).collect();
        for (peak, centre) in decode(&maps, centres.len(), HEIGHT, WIDTH)
            .iter()
            .zip(centres)
        {
            assert!(
                peak.score > 0.0 && peak.x.is_finite() && peak.y.is_finite(),
                "{peak:?}"
            );
            assert!(
                (peak.x - centre.0).abs() < 2.0 && (peak.y - centre.1).abs() < 2.0,
                "{peak:?} vs {centre:?}"
            );
        }
    }

    #[test]
    fn all_negative_map_is_invalid() {
        let mut map = gaussian_map((57.3, 101.8), 2.0);
        map.iter_mut().for_each(|v| *v -= 1.5);
        let peak = decode(&map, 1, HEIGHT, WIDTH)[0];
        assert!(peak.score <= 0.0);
        assert_eq!((peak.x, peak.y), (-1.0, -1.0));
    }

    #[test]
    fn non_positive_blur_keeps_integer_location() {
        // A lone positive pixel among strongly negative ones blurs to a negative map.
        let mut map = vec![-1.0f32; 20 * 30];
        map[7 * 20 + 11] = 0.5;
        let peak = decode(&map, 1, 30, 20)[0];
        assert_eq!(
            peak,
            HeatmapPeak {
                x: 11.0,
                y: 7.0,
                score: 0.5
            }
        );
    }

    #[test]
    fn nan_and_tiny_maps_give_finite_peaks() {
        let mut map = gaussian_map((57.3, 101.8), 2.0);
        map[101 * WIDTH + 58] = f32::NAN;
        map[3] = f32::NAN;
        let peak = decode(&map, 1, HEIGHT, WIDTH)[0];
        assert!(
            peak.x.is_finite() && peak.y.is_finite() && peak.score > 0.0,
            "{peak:?}"
        );
        for (height, width) in [(1, 1), (1, 5), (4, 1), (2, 3)] {
            let map: Vec<f32> = (0..height * width).map(|i| 1.0 + i as f32).collect();
            let peak = decode(&map, 1, height, width)[0];
            assert!(
                peak.x.is_finite() && peak.y.is_finite(),
                "{height}x{width}: {peak:?}"
            );
        }
        assert_eq!(decode(&[], 2, 0, 7).len(), 2);
    }

    #[test]
    fn argmax_ties_take_the_first_in_row_major_order() {
        let mut map = vec![0.0f32; 40 * 40];
        map[30 * 40 + 2] = 1.0; // lower row, left tile
        map[20 * 40 + 35] = 1.0; // upper row, right tile: first in row-major order
        let peak = decode(&map, 1, 40, 40)[0];
        assert_eq!((peak.x.round(), peak.y.round()), (35.0, 20.0));
    }

    /// Maps where the blurred maximum lies far from the argmax (a narrow spike beside a broad,
    /// lower hill), on awkward sizes, with noise and negative offsets.
    fn random_map(rng: &mut XorShift, width: usize, height: usize) -> Vec<f32> {
        let offset = rng.range(-0.3, 0.05);
        let mut map: Vec<f32> = (0..width * height)
            .map(|_| offset + rng.range(0.0, 0.05))
            .collect();
        // (sigma range, amplitude range): narrow spike, broad hill, something in between.
        let shapes = [
            ((0.3, 0.8), (1.0, 1.0)),
            ((3.0, 9.0), (0.4, 0.9)),
            ((1.0, 3.0), (0.1, 0.9)),
        ];
        for ((sigma_lo, sigma_hi), (amp_lo, amp_hi)) in shapes {
            let centre = (
                rng.range(-3.0, width as f32 + 3.0),
                rng.range(-3.0, height as f32 + 3.0),
            );
            let (sigma, amplitude) = (rng.range(sigma_lo, sigma_hi), rng.range(amp_lo, amp_hi));
            add_gaussian(&mut map, width, centre, sigma, amplitude);
        }
        map
    }

    #[test]
    fn pruned_blur_matches_full_blur() {
        let sizes = [(WIDTH, HEIGHT), (48, 64), (37, 29), (9, 13), (6, 3)];
        for seed in 1..=12u64 {
            let mut rng = XorShift(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
            for &(width, height) in &sizes {
                let channels = 3;
                let maps: Vec<f32> = (0..channels)
                    .flat_map(|_| random_map(&mut rng, width, height))
                    .collect();
                let fast = decode(&maps, channels, height, width);
                for (c, peak) in fast.iter().enumerate() {
                    let plane = &maps[c * width * height..(c + 1) * width * height];
                    let slow = slow_decode(plane, width, height);
                    let context =
                        format!("seed {seed}, {width}x{height}, channel {c}: {peak:?} vs {slow:?}");
                    assert_eq!(peak.score, slow.score, "{context}");
                    assert!(
                        (peak.x - slow.x).abs() <= 1e-4 && (peak.y - slow.y).abs() <= 1e-4,
                        "{context}"
                    );
                }
            }
        }
    }

    /// Fills the tile maxima and returns the blurred maximum next to the argmax.
    fn seed_of(map: Heatmap, scratch: &mut Scratch) -> f32 {
        let score = scratch.tiles.compute(map);
        let peak = scratch
            .tiles
            .first_position_of(map, score)
            .expect("finite map");
        let around = Rect::around(map, peak);
        let near = scratch.strip.run(
            map,
            around.x0,
            around.y0..around.y1,
            &opencv_gaussian_kernel(),
        );
        strip_max(near, around.x1 - around.x0)
    }

    fn pruned_blur_maximum(data: &[f32], width: usize, height: usize) -> f32 {
        let map = Heatmap {
            data,
            width,
            height,
        };
        let mut scratch = Scratch::default();
        let seed = seed_of(map, &mut scratch);
        let threshold = seed - seed.abs() * ROUNDING_SLACK;
        plan_strips(
            map,
            &scratch.tiles,
            threshold,
            usize::MAX,
            &mut scratch.strip_rows,
        );
        blur_planned_strips(map, &opencv_gaussian_kernel(), &mut scratch, seed)
    }

    #[test]
    fn pruned_blur_maximum_equals_full_blur_maximum() {
        // The maximum sits in an empty tile, at (16, 16) beside an L of ones, far from the
        // argmax, a spike.
        let (width, height) = (40, 40);
        let mut corner = vec![0.0f32; width * height];
        for (x, y) in [(15, 15), (16, 15), (17, 15), (15, 16), (15, 17)] {
            corner[y * width + x] = 1.0;
        }
        corner[30 * width + 5] = 2.0;
        let mut maps = vec![(corner, width, height)];
        let mut rng = XorShift(7);
        for (width, height) in [(WIDTH, HEIGHT), (37, 29), (9, 13)] {
            maps.push((random_map(&mut rng, width, height), width, height));
            // Negative everywhere: zero padding makes the edges the blurred maximum.
            let negative = (0..width * height).map(|_| rng.range(-0.5, -0.2)).collect();
            maps.push((negative, width, height));
        }
        for (map, width, height) in &maps {
            let full = full_blur(map, *width, *height);
            let full_max = full.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            assert_eq!(
                pruned_blur_maximum(map, *width, *height),
                full_max,
                "{width}x{height}"
            );
        }
    }

    #[test]
    fn strip_plan_covers_the_blur_reach_of_every_hot_pixel() {
        let mut rng = XorShift(11);
        let mut scratch = Scratch::default();
        for (width, height) in [(WIDTH, HEIGHT), (37, 29), (9, 13)] {
            let data = random_map(&mut rng, width, height);
            let map = Heatmap {
                data: &data,
                width,
                height,
            };
            scratch.tiles.compute(map);
            let threshold = rng.range(0.2, 0.8);
            plan_strips(
                map,
                &scratch.tiles,
                threshold,
                usize::MAX,
                &mut scratch.strip_rows,
            );
            for (x, y) in (0..height).flat_map(|y| (0..width).map(move |x| (x, y))) {
                let pixel = Rect {
                    x0: x,
                    y0: y,
                    x1: x + 1,
                    y1: y + 1,
                };
                let window = pixel.dilated(map, BLUR_RADIUS);
                let reached = (window.y0..window.y1).any(|wy| {
                    map.row(wy)[window.x0..window.x1]
                        .iter()
                        .any(|&v| v >= threshold)
                });
                let planned = scratch.strip_rows[x / TILE].contains(&y);
                assert!(planned || !reached, "{width}x{height}: ({x}, {y}) missed");
            }
        }
    }

    /// Whether the strip plan for `map` is too large for the exact blurred maximum.
    fn plan_is_large(data: &[f32], width: usize, height: usize) -> bool {
        let map = Heatmap {
            data,
            width,
            height,
        };
        let mut scratch = Scratch::default();
        let seed = seed_of(map, &mut scratch);
        let budget = small_plan_budget(map, &scratch.tiles);
        !plan_strips(map, &scratch.tiles, seed, budget, &mut scratch.strip_rows)
    }

    #[test]
    fn flat_noisy_maps_skip_the_blurred_maximum_within_rounding() {
        let mut rng = XorShift(5);
        for _ in 0..6 {
            let mut map: Vec<f32> = (0..WIDTH * HEIGHT)
                .map(|_| 0.3 + rng.range(0.0, 0.02))
                .collect();
            let centre = (rng.range(30.0, 160.0), rng.range(30.0, 220.0));
            add_gaussian(&mut map, WIDTH, centre, 30.0, 0.01);
            assert!(plan_is_large(&map, WIDTH, HEIGHT));
            let (fast, slow) = (
                decode(&map, 1, HEIGHT, WIDTH)[0],
                slow_decode(&map, WIDTH, HEIGHT),
            );
            assert_eq!(fast.score, slow.score);
            // Noise-only curvature makes the step ill-conditioned: rounding-level changes in
            // the log-map move it (median 1e-3 px; OpenCV's own rounding against an exact blur
            // moves it by up to 0.13 px on such maps).
            assert!(
                (fast.x - slow.x).abs() < 0.25 && (fast.y - slow.y).abs() < 0.25,
                "{fast:?} vs {slow:?}"
            );
        }
    }

    #[test]
    fn clipped_neighbourhood_keeps_the_exact_blurred_maximum() {
        // A spike in a negative moat blurs to about nothing, beside a plateau: the clip at
        // LOG_FLOOR then depends on the plateau's blurred maximum.
        let (width, height) = (64, 64);
        let mut map = vec![0.4f32; width * height];
        for y in 15..26 {
            map[y * width + 15..y * width + 26].fill(-0.04);
        }
        map[20 * width + 21] = 1.0;
        let blurred = full_blur(&map, width, height);
        let near = [19, 20, 21].map(|y| [20, 21, 22].map(|x| blurred[y * width + x]));
        let seed = near
            .iter()
            .flatten()
            .copied()
            .fold(f32::NEG_INFINITY, f32::max);
        assert!(clip_may_apply(&near, seed, 1.0) && plan_is_large(&map, width, height));
        assert_eq!(
            decode(&map, 1, height, width)[0],
            slow_decode(&map, width, height)
        );
    }

    #[test]
    fn neighbourhood_floored_at_any_rescale_skips_the_blurred_maximum() {
        // Like some of the null model's maps: flat, with a maximum under the log floor, so
        // the floor clips the whole neighbourhood whatever the rescale.
        let mut rng = XorShift(11);
        let map: Vec<f32> = (0..WIDTH * HEIGHT)
            .map(|_| 0.0005 + rng.range(0.0, 0.0003))
            .collect();
        let blurred = full_blur(&map, WIDTH, HEIGHT);
        let slow = slow_decode(&map, WIDTH, HEIGHT);
        let (x, y) = (slow.x as usize, slow.y as usize);
        let near = [y - 1, y, y + 1].map(|y| [x - 1, x, x + 1].map(|x| blurred[y * WIDTH + x]));
        let seed = near
            .iter()
            .flatten()
            .copied()
            .fold(f32::NEG_INFINITY, f32::max);
        assert!(!clip_may_apply(&near, seed, slow.score) && plan_is_large(&map, WIDTH, HEIGHT));
        assert_eq!(decode(&map, 1, HEIGHT, WIDTH)[0], slow);
    }

    #[test]
    fn spike_beside_broad_hill_needs_the_far_blur_maximum() {
        let mut map = vec![0.0f32; WIDTH * HEIGHT];
        add_gaussian(&mut map, WIDTH, (40.2, 50.7), 0.5, 1.0);
        add_gaussian(&mut map, WIDTH, (150.0, 200.0), 8.0, 0.8);
        let blurred = full_blur(&map, WIDTH, HEIGHT);
        let far_max = blurred.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        assert!(
            far_max > blurred[50 * WIDTH + 40] * 2.0,
            "the test needs the far hill to dominate"
        );
        let fast = decode(&map, 1, HEIGHT, WIDTH)[0];
        let slow = slow_decode(&map, WIDTH, HEIGHT);
        assert_eq!(fast, slow);
    }
}
