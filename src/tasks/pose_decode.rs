//! DARK-UDP decode of pose heatmaps, as mmpose's `UDPHeatmap.decode`
//! (`get_heatmap_maximum` + `refine_keypoints_dark_udp`).
//!
//! The refinement only reads the blurred map at the 3x3 neighbourhood of the integer argmax and
//! the blurred map's global maximum (for the rescale). Blurring is a convex combination of the
//! original (plus zeros beyond the edge), so a tile's blurred values cannot exceed the maximum of
//! the original around it; tiles whose bound stays below the best blurred value found so far are
//! never blurred. The result is the full-blur result, at a small fraction of the work.

use rayon::prelude::*;
use std::cell::RefCell;

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
/// Tile side for the blur bounds; at least `BLUR_RADIUS` so a tile's blur window lies within
/// its 3x3 tile neighbourhood (or beyond the map edge).
const TILE: usize = 8;
/// A tile plus the blur window on both sides.
const SPAN: usize = TILE + 2 * BLUR_RADIUS;
const LOG_FLOOR: f32 = 1e-3;
const LOG_CEIL: f32 = 50.0;
/// mmpose adds `np.finfo(np.float32).eps * I` to the Hessian, then inverts in float64.
const HESSIAN_EPS: f64 = f32::EPSILON as f64;
/// Relative slack on a tile's bound so float rounding in the blur (a few ulp) cannot make a
/// skipped tile hold the true maximum.
const ROUNDING_SLACK: f32 = 1e-5;

type BlurKernel = [f32; BLUR_KERNEL];
type Block = [[f32; TILE]; TILE];

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
fn opencv_gaussian_kernel() -> BlurKernel {
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

fn decode_channel(map: Heatmap, kernel: &BlurKernel, scratch: &mut Scratch) -> HeatmapPeak {
    let score = scratch.tiles.compute(map);
    // `!(> 0)` so an all-NaN map is invalid too.
    if !(score > 0.0) {
        return HeatmapPeak::invalid(score);
    }
    let Some((x, y)) = scratch.tiles.first_position_of(map, score) else {
        return HeatmapPeak::invalid(score);
    };
    let (dx, dy) = newton_offset(map, x, y, score, kernel, scratch).unwrap_or((0.0, 0.0));
    // mmpose subtracts a float64 offset from float32 keypoints.
    HeatmapPeak {
        x: (x as f64 - dx) as f32,
        y: (y as f64 - dy) as f32,
        score,
    }
}

/// Per-thread buffers, reused across channels.
#[derive(Default)]
struct Scratch {
    tiles: TileMaxima,
    /// Tiles already blurred by `blurred_maximum`.
    blurred: Vec<bool>,
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
            // Column maxima first: a sequential element-wise max over rows vectorises and
            // streams memory at full bandwidth.
            self.column_max.fill(f32::NEG_INFINITY);
            for row in band.chunks_exact(map.width) {
                for (m, &v) in self.column_max.iter_mut().zip(row) {
                    *m = max_ignoring_nan(*m, v);
                }
            }
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

    /// Tiles holding a value of at least `threshold`, as (column, row); all tiles when
    /// `threshold <= 0`, since zero padding lifts the blur near the edge up to 0.
    fn hot_tiles(&self, threshold: f32) -> impl Iterator<Item = (usize, usize)> + '_ {
        let columns = self.columns;
        let hot = self
            .values
            .iter()
            .map(move |&v| threshold <= 0.0 || v >= threshold);
        hot.enumerate()
            .filter(|&(_, hot)| hot)
            .map(move |(t, _)| (t % columns, t / columns))
    }

    /// The tile and its 8 neighbours, as (column, row).
    fn neighbourhood(&self, (tx, ty): (usize, usize)) -> impl Iterator<Item = (usize, usize)> {
        let columns = tx.saturating_sub(1)..(tx + 2).min(self.columns);
        let rows = ty.saturating_sub(1)..(ty + 2).min(self.rows);
        rows.flat_map(move |y| columns.clone().map(move |x| (x, y)))
    }
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

/// The Newton offset of mmpose's `refine_keypoints_dark_udp` at integer `(x, y)`; `None` when
/// the step is undefined (blurred map not positive, singular Hessian, non-finite values).
fn newton_offset(
    map: Heatmap,
    x: usize,
    y: usize,
    score: f32,
    kernel: &BlurKernel,
    scratch: &mut Scratch,
) -> Option<(f64, f64)> {
    let around = Region::around(map, x, y);
    let near = blur_region(map, around, kernel);
    let blurred_max = blurred_maximum(map, kernel, scratch, around.max_of(&near));
    if !(blurred_max > 0.0) {
        return None;
    }
    // float32 like `heatmaps[k] *= origin_max / np.max(heatmaps[k])`.
    let scale = score / blurred_max;
    let log_at = |dx: usize, dy: usize| {
        // Replicate padding: offsets past the edge read the edge pixel.
        let px = (x + dx).saturating_sub(1).min(map.width - 1) - around.x0;
        let py = (y + dy).saturating_sub(1).min(map.height - 1) - around.y0;
        (near[py][px] * scale).clamp(LOG_FLOOR, LOG_CEIL).ln()
    };
    let log = [0, 1, 2].map(|dy| [0, 1, 2].map(|dx| log_at(dx, dy)));
    newton_step(&log)
}

/// The global maximum of the blurred map, blurring only tiles that may exceed `seed` (a value
/// the blurred map actually takes).
fn blurred_maximum(map: Heatmap, kernel: &BlurKernel, scratch: &mut Scratch, seed: f32) -> f32 {
    let Scratch { tiles, blurred } = scratch;
    blurred.clear();
    blurred.resize(tiles.values.len(), false);
    // A blurred value above a positive `seed` needs an original value above it within the blur
    // radius, i.e. in a 3x3 tile neighbourhood; the slack covers float rounding in the blur.
    let threshold = seed - seed.abs() * ROUNDING_SLACK;
    let mut best = seed;
    for hot in tiles.hot_tiles(threshold) {
        for (tx, ty) in tiles.neighbourhood(hot) {
            let done = &mut blurred[ty * tiles.columns + tx];
            if !std::mem::replace(done, true) {
                let region = Region::clipped(map, tx * TILE, ty * TILE, TILE);
                best = max_ignoring_nan(best, region.max_of(&blur_region(map, region, kernel)));
            }
        }
    }
    best
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

/// A rectangle of at most `TILE` x `TILE` pixels inside the map.
#[derive(Clone, Copy, Debug)]
struct Region {
    x0: usize,
    y0: usize,
    width: usize,
    height: usize,
}

impl Region {
    /// The 3x3 neighbourhood of `(x, y)`, cut at the map edge.
    fn around(map: Heatmap, x: usize, y: usize) -> Self {
        let (x0, y0) = (x.saturating_sub(1), y.saturating_sub(1));
        Self {
            x0,
            y0,
            width: (x + 2).min(map.width) - x0,
            height: (y + 2).min(map.height) - y0,
        }
    }

    fn clipped(map: Heatmap, x0: usize, y0: usize, side: usize) -> Self {
        Self {
            x0,
            y0,
            width: side.min(map.width - x0),
            height: side.min(map.height - y0),
        }
    }

    fn max_of(&self, block: &Block) -> f32 {
        let rows = block[..self.height].iter();
        rows.map(|row| slice_max(&row[..self.width]))
            .fold(f32::NEG_INFINITY, max_ignoring_nan)
    }
}

/// The zero-padded Gaussian blur of the map over `region`, separable: rows then columns, as
/// OpenCV; every output sums its taps in kernel order so all paths round identically.
fn blur_region(map: Heatmap, region: Region, kernel: &BlurKernel) -> Block {
    let mut row_pass = [[0.0f32; TILE]; SPAN];
    let window_rows = row_pass.iter_mut().take(region.height + 2 * BLUR_RADIUS);
    for (r, out) in window_rows.enumerate() {
        // Rows beyond the edge are zero padding and stay zero.
        if let Some(y) = (region.y0 + r)
            .checked_sub(BLUR_RADIUS)
            .filter(|&y| y < map.height)
        {
            *out = convolve(&padded_segment(map.row(y), region.x0), kernel);
        }
    }
    let mut block = [[0.0f32; TILE]; TILE];
    for (j, out) in block.iter_mut().enumerate().take(region.height) {
        *out = weighted_sum(&row_pass[j..j + BLUR_KERNEL], kernel);
    }
    block
}

/// `row[x0 - BLUR_RADIUS .. x0 - BLUR_RADIUS + SPAN]`, zero outside the row.
fn padded_segment(row: &[f32], x0: usize) -> [f32; SPAN] {
    let mut segment = [0.0f32; SPAN];
    let leading_zeros = BLUR_RADIUS.saturating_sub(x0);
    let start = x0 + leading_zeros - BLUR_RADIUS;
    let end = (x0 + SPAN - BLUR_RADIUS).min(row.len());
    segment[leading_zeros..leading_zeros + (end - start)].copy_from_slice(&row[start..end]);
    segment
}

fn convolve(segment: &[f32; SPAN], kernel: &BlurKernel) -> [f32; TILE] {
    let mut acc = [0.0f32; TILE];
    for (k, &w) in kernel.iter().enumerate() {
        for (a, &v) in acc.iter_mut().zip(&segment[k..k + TILE]) {
            *a += w * v;
        }
    }
    acc
}

fn weighted_sum(rows: &[[f32; TILE]], kernel: &BlurKernel) -> [f32; TILE] {
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

    const WIDTH: usize = 192;
    const HEIGHT: usize = 256;

    /// xorshift64*: enough randomness for test maps without a dependency.
    struct XorShift(u64);

    impl XorShift {
        fn next_f32(&mut self) -> f32 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 40) as f32 / (1u64 << 24) as f32
        }

        fn range(&mut self, lo: f32, hi: f32) -> f32 {
            lo + (hi - lo) * self.next_f32()
        }
    }

    fn add_gaussian(
        map: &mut [f32],
        width: usize,
        (cx, cy): (f32, f32),
        sigma: f32,
        amplitude: f32,
    ) {
        for (i, v) in map.iter_mut().enumerate() {
            let (dx, dy) = ((i % width) as f32 - cx, (i / width) as f32 - cy);
            *v += amplitude * (-(dx * dx + dy * dy) / (2.0 * sigma * sigma)).exp();
        }
    }

    fn gaussian_map(centre: (f32, f32), sigma: f32) -> Vec<f32> {
        let mut map = vec![0.0; WIDTH * HEIGHT];
        add_gaussian(&mut map, WIDTH, centre, sigma, 1.0);
        map
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

    fn pruned_blur_maximum(data: &[f32], width: usize, height: usize) -> f32 {
        let map = Heatmap {
            data,
            width,
            height,
        };
        let kernel = opencv_gaussian_kernel();
        let mut scratch = Scratch::default();
        let score = scratch.tiles.compute(map);
        let (x, y) = scratch
            .tiles
            .first_position_of(map, score)
            .expect("finite map");
        let around = Region::around(map, x, y);
        let seed = around.max_of(&blur_region(map, around, &kernel));
        blurred_maximum(map, &kernel, &mut scratch, seed)
    }

    #[test]
    fn pruned_blur_maximum_equals_full_blur_maximum() {
        // The maximum sits at the corner of an empty tile, (16, 16), beside an L of ones, while
        // the argmax is a spike elsewhere: only the tile-neighbourhood bound finds it.
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
