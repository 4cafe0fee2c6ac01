//! The CPU execution of the preprocessing plans: OpenCV's 8-bit fixed-point bilinear arithmetic,
//! a horizontal pass into planar integer rows and a vertical pass that blends two of them and
//! writes normalised `f32`, over bands of output rows on rayon workers.

use std::cell::RefCell;
use std::ops::Range;

use rayon::prelude::*;

use super::{Normalization, Tap};
use crate::frame::{FrameRow, HostFrame, PixelFormat, YuvRowConverter, word_rgb};

/// OpenCV's integer bilinear arithmetic for 8-bit images; one implementation per operation.
/// Weights and intermediates fit in 16 bits, which halves the row buffers.
pub(super) trait FixedPointBilinear {
    /// Blends two source bytes of one row into an intermediate.
    fn horizontal(p0: u8, p1: u8, w0: i16, w1: i16) -> i16;
    /// Blends two intermediates of adjacent rows into the final 0..=255 value.
    fn vertical(h0: i16, h1: i16, w0: i16, w1: i16) -> f32;
}

/// `cv::resize` INTER_LINEAR on `u8`: 11-bit coefficients, and the vertical pass of its SIMD
/// `VResizeLinearVec_32s8u` (16-bit multiply-high after a 4-bit pre-shift, rounding shift by 2).
pub(super) struct ResizeArithmetic;

impl FixedPointBilinear for ResizeArithmetic {
    #[inline(always)]
    fn horizontal(p0: u8, p1: u8, w0: i16, w1: i16) -> i16 {
        // OpenCV keeps the full sum but shifts it by 4 before the 16-bit vertical multiply;
        // 255 * 2048 >> 4 fits in i16.
        ((i32::from(p0) * i32::from(w0) + i32::from(p1) * i32::from(w1)) >> 4) as i16
    }

    #[inline(always)]
    fn vertical(h0: i16, h1: i16, w0: i16, w1: i16) -> f32 {
        let high = |h: i16, w: i16| (i32::from(h) * i32::from(w)) >> 16;
        ((high(h0, w0) + high(h1, w1) + 2) >> 2).clamp(0, 255) as f32
    }
}

/// `cv::warpAffine` INTER_LINEAR on `u8`: weights on the 1/32 pixel grid. OpenCV's 15-bit 2-D
/// table entries are `32 (32 - a)(32 - b)` etc., so one rounding shift by 10 at the end is exact.
pub(super) struct WarpArithmetic;

impl FixedPointBilinear for WarpArithmetic {
    #[inline(always)]
    fn horizontal(p0: u8, p1: u8, w0: i16, w1: i16) -> i16 {
        // At most 255 * 32.
        i16::from(p0) * w0 + i16::from(p1) * w1
    }

    #[inline(always)]
    fn vertical(h0: i16, h1: i16, w0: i16, w1: i16) -> f32 {
        let sum = i32::from(h0) * i32::from(w0) + i32::from(h1) * i32::from(w1);
        ((sum + 512) >> 10) as f32
    }
}

/// Output bands per rayon thread: enough to balance uneven bands (rows outside the frame are
/// cheap), few enough that the two rows each band computes first stay negligible.
const BANDS_PER_THREAD: usize = 4;

/// Converts the pixels of `columns` of a packed row to RGB words (`frame::word_rgb`).
type PackedWords = fn(&[u8], Range<usize>, &mut [u32]);

/// The conversion for a pixel format, monomorphised so the channel offsets are constants.
fn packed_words_for(format: PixelFormat) -> PackedWords {
    match format {
        PixelFormat::Rgb => packed_words::<3, false>,
        PixelFormat::Rgba => packed_words::<4, false>,
        PixelFormat::Bgr => packed_words::<3, true>,
        PixelFormat::Bgra => packed_words::<4, true>,
    }
}

/// [`PackedWords`] for pixels of `BPP` bytes, blue first when `BGR`.
fn packed_words<const BPP: usize, const BGR: bool>(
    row: &[u8],
    columns: Range<usize>,
    words: &mut [u32],
) {
    let pixels = &row[columns.start * BPP..columns.end * BPP];
    for (word, pixel) in words.iter_mut().zip(pixels.chunks_exact(BPP)) {
        *word = packed_word::<BGR>(pixel);
    }
}

/// A packed pixel's RGB word; four-byte pixels in one load.
#[inline(always)]
fn packed_word<const BGR: bool>(pixel: &[u8]) -> u32 {
    let word = match *pixel {
        [first, second, third, fourth] => u32::from_le_bytes([first, second, third, fourth]),
        [first, second, third] => u32::from_le_bytes([first, second, third, 0]),
        _ => unreachable!("packed pixels have three or four bytes"),
    };
    // Blue first: swap the outer two of the low three bytes.
    let word = if BGR { word.swap_bytes() >> 8 } else { word };
    word & 0x00ff_ffff
}

/// The words at `sources` of a converted row.
fn gather_words(words: &[u32], sources: &[usize], gathered: &mut [u32]) {
    for (word, &i) in gathered.iter_mut().zip(sources) {
        *word = words[i];
    }
}

/// Blends each tap's two RGB words (`frame::word_rgb`), gathered side by side beforehand so that
/// the arithmetic runs over contiguous lanes.
#[multiversion::multiversion(targets("x86_64+avx2", "x86_64+sse4.1"))]
fn blend_words<K: FixedPointBilinear>(
    [first, second]: [&[u32]; 2],
    [first_weights, second_weights]: [&[i16]; 2],
    [red, green, blue]: [&mut [i16]; 3],
) {
    let words = first.iter().zip(second);
    let weights = first_weights.iter().zip(second_weights);
    let planes = red.iter_mut().zip(green.iter_mut()).zip(blue.iter_mut());
    for (((&p0, &p1), (&w0, &w1)), ((red, green), blue)) in words.zip(weights).zip(planes) {
        let (p0, p1) = (word_rgb(p0), word_rgb(p1));
        *red = K::horizontal(p0[0], p1[0], w0, w1);
        *green = K::horizontal(p0[1], p1[1], w0, w1);
        *blue = K::horizontal(p0[2], p1[2], w0, w1);
    }
}

/// How the run of a source row the taps read becomes RGB words: YUV converted in SIMD lanes, or
/// packed pixels copied a word each (the channels put in order).
enum RowReader {
    Yuv(YuvRowConverter),
    Packed(PackedWords),
}

/// What the horizontal pass needs of a frame: how its rows are read, the source columns the taps
/// read (from an even one, so that a 4:2:0 run starts on a chroma sample), and the taps as
/// columns: each one's two sources within that run, and its two weights.
struct TapColumns {
    reader: RowReader,
    columns: Range<usize>,
    sources: [Vec<usize>; 2],
    weights: [Vec<i16>; 2],
}

impl TapColumns {
    fn new(reader: RowReader, taps: &[Tap]) -> Self {
        let first = taps.iter().map(|t| t.i0.min(t.i1)).min().unwrap_or(0);
        let end = taps.iter().map(|t| t.i0.max(t.i1) + 1).max().unwrap_or(0);
        let start = first / 2 * 2;
        TapColumns {
            reader,
            columns: start..end.max(first),
            sources: [
                taps.iter().map(|t| t.i0 - start).collect(),
                taps.iter().map(|t| t.i1 - start).collect(),
            ],
            weights: [
                taps.iter().map(|t| t.w0).collect(),
                taps.iter().map(|t| t.w1).collect(),
            ],
        }
    }

    /// Converts the run of `row` the taps read to RGB words once, gathers each tap's two side by
    /// side, then blends them.
    fn horizontal_pass<K: FixedPointBilinear>(&self, row: FrameRow, out: [&mut [i16]; 3]) {
        CONVERTED_ROW.with_borrow_mut(|ConvertedRow { words, gathered }| {
            for gathered in gathered.iter_mut() {
                gathered.resize(self.sources[0].len(), 0);
            }
            words.resize(self.columns.len(), 0);
            match (&self.reader, row) {
                (RowReader::Yuv(converter), FrameRow::Yuv420(row)) => {
                    row.convert_words(converter, self.columns.clone(), words)
                }
                (RowReader::Packed(convert), FrameRow::Packed(row)) => {
                    convert(row, self.columns.clone(), words)
                }
                _ => unreachable!("a frame's rows are read as its layout says"),
            }
            for (gathered, sources) in gathered.iter_mut().zip(&self.sources) {
                gather_words(words, sources, gathered);
            }
            let [first, second] = gathered;
            let [first_weights, second_weights] = &self.weights;
            blend_words::<K>([first, second], [first_weights, second_weights], out);
        });
    }
}

/// Vertical pass of one channel of one output row, normalised. A true division, not a
/// multiplication by `1 / std`, so the values equal NumPy's `(x - mean) / std` bit for bit.
/// Compiled for wider lanes too: the baseline x86-64 target has no 32-bit vector multiply.
#[multiversion::multiversion(targets("x86_64+avx2", "x86_64+sse4.1"))]
fn vertical_pass<K: FixedPointBilinear>(
    upper: &[i16],
    lower: &[i16],
    row: &Tap,
    mean: f32,
    std: f32,
    out: &mut [f32],
) {
    for ((value, &h0), &h1) in out.iter_mut().zip(upper).zip(lower) {
        *value = (K::vertical(h0, h1, row.w0, row.w1) - mean) / std;
    }
}

/// The two most recent horizontal-pass rows of one worker, tagged with their source row, so
/// consecutive output rows reuse them.
#[derive(Default)]
struct RowPair {
    rows: [Vec<i16>; 2],
    sources: [Option<usize>; 2],
}

impl RowPair {
    /// Forgets the previous contents and sizes the rows, zeroed (allocates only when they
    /// grow): the columns a horizontal pass leaves out are those whose taps lie outside.
    fn reset(&mut self, len: usize) {
        for row in &mut self.rows {
            row.clear();
            row.resize(len, 0);
        }
        self.sources = [None; 2];
    }

    /// The horizontal-pass rows of sources `first` and `second`, computing only missing ones.
    fn fetch(
        &mut self,
        first: usize,
        second: usize,
        compute: &impl Fn(usize, &mut [i16]),
    ) -> (&[i16], &[i16]) {
        if self.sources[0] != Some(first) {
            if self.sources[1] == Some(first) {
                self.rows.swap(0, 1);
                self.sources.swap(0, 1);
            } else {
                compute(first, &mut self.rows[0]);
                self.sources[0] = Some(first);
            }
        }
        if self.sources[1] != Some(second) {
            compute(second, &mut self.rows[1]);
            self.sources[1] = Some(second);
        }
        (&self.rows[0], &self.rows[1])
    }
}

/// The run of a source row the taps read, as RGB words, and each tap's two words gathered from it.
#[derive(Default)]
struct ConvertedRow {
    words: Vec<u32>,
    gathered: [Vec<u32>; 2],
}

thread_local! {
    /// Per-thread row buffers, so a call allocates nothing once each worker has run once.
    static ROW_PAIR: RefCell<RowPair> = RefCell::new(RowPair::default());
    /// Per-thread RGB words of the source row being read, and their gathers.
    static CONVERTED_ROW: RefCell<ConvertedRow> = RefCell::default();
}

/// The separable skeleton shared by stretch and warp: bands of output rows in parallel, each
/// band walking its rows with a [`RowPair`] cache.
pub(super) fn run_separable<K: FixedPointBilinear>(
    src: &HostFrame,
    columns: &[Tap],
    rows: &[Tap],
    dst: &mut [f32],
    norm: &Normalization,
) {
    src.check();
    let (dst_w, dst_h) = (columns.len(), rows.len());
    assert!(dst_w > 0 && dst_h > 0, "output size must be positive");
    let plane_len = dst_w * dst_h;
    assert_eq!(
        dst.len(),
        3 * plane_len,
        "output slot must hold 3 x {dst_h} x {dst_w} values"
    );
    let reader = match src.geometry.layout.packed_format() {
        Some(format) => RowReader::Packed(packed_words_for(format)),
        None => RowReader::Yuv(src.geometry.yuv.row_converter()),
    };
    // Only the columns whose taps reach into the frame are computed; the others stay zero.
    let active = weighted_span(columns);
    let taps = TapColumns::new(reader, &columns[active.clone()]);
    let horizontal = |y: usize, out: &mut [i16]| {
        let (red, rest) = out.split_at_mut(dst_w);
        let (green, blue) = rest.split_at_mut(dst_w);
        let [red, green, blue] = [red, green, blue].map(|plane| &mut plane[active.clone()]);
        taps.horizontal_pass::<K>(src.row(y), [red, green, blue]);
    };
    // What a pixel outside the frame becomes: its zero, normalised as any other value.
    let outside: [f32; 3] =
        std::array::from_fn(|c| (K::vertical(0, 0, 0, 0) - norm.mean[c]) / norm.std[c]);
    let band_rows = dst_h
        .div_ceil(rayon::current_num_threads() * BANDS_PER_THREAD)
        .max(1);
    let band_len = band_rows * dst_w;

    let (red, rest) = dst.split_at_mut(plane_len);
    let (green, blue) = rest.split_at_mut(plane_len);
    red.par_chunks_mut(band_len)
        .zip(green.par_chunks_mut(band_len))
        .zip(blue.par_chunks_mut(band_len))
        .enumerate()
        .for_each(|(band, ((red, green), blue))| {
            let band_taps = rows.iter().skip(band * band_rows);
            ROW_PAIR.with_borrow_mut(|pair| {
                pair.reset(3 * dst_w);
                let out_rows = red
                    .chunks_exact_mut(dst_w)
                    .zip(green.chunks_exact_mut(dst_w))
                    .zip(blue.chunks_exact_mut(dst_w));
                for (tap, ((r, g), b)) in band_taps.zip(out_rows) {
                    if is_outside(tap) {
                        [r, g, b]
                            .into_iter()
                            .zip(outside)
                            .for_each(|(out, v)| out.fill(v));
                        continue;
                    }
                    let channels = [r, g, b].into_iter().zip(outside).enumerate();
                    let (upper, lower) = pair.fetch(tap.i0, tap.i1, &horizontal);
                    let planes = upper.chunks_exact(dst_w).zip(lower.chunks_exact(dst_w));
                    for ((h0, h1), (c, (out, value))) in planes.zip(channels) {
                        out[..active.start].fill(value);
                        out[active.end..].fill(value);
                        let (h0, h1) = (&h0[active.clone()], &h1[active.clone()]);
                        let out = &mut out[active.clone()];
                        vertical_pass::<K>(h0, h1, tap, norm.mean[c], norm.std[c], out);
                    }
                }
            });
        });
}

/// A tap that reads no source pixel (both weights zero: beyond the frame's edge).
fn is_outside(tap: &Tap) -> bool {
    tap.w0 == 0 && tap.w1 == 0
}

/// The taps from the first to the last that read a source pixel (those beyond the frame's
/// edges lie on either side of them).
fn weighted_span(taps: &[Tap]) -> Range<usize> {
    let start = taps.iter().position(|t| !is_outside(t)).unwrap_or(0);
    let end = taps
        .iter()
        .rposition(|t| !is_outside(t))
        .map_or(start, |i| i + 1);
    start..end
}
