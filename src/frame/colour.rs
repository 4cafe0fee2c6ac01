//! YUV to RGB with the stream's matrix and range, in the fixed point the kernels use.

/// YUV -> RGB in 20-bit fixed point, as OpenCV's `cvtColor` computes it:
/// `c = clamp((max(0, y - luma_offset) * luma + chroma terms + 2^19) >> 20)`, with `u` and
/// `v` centred on 128. The same struct is the kernel's `YuvToRgb` (src/preprocess/preprocess.cu).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct YuvToRgb {
    pub luma_offset: i32,
    pub luma: i32,
    pub v_to_r: i32,
    pub u_to_g: i32,
    pub v_to_g: i32,
    pub u_to_b: i32,
}

const YUV_SHIFT: i32 = 20;

impl YuvToRgb {
    /// BT.601 limited range with OpenCV's own coefficients (`COLOR_YUV2RGB_NV12`): what the
    /// OpenCV-based official pipeline sees, and what most SD video and unlabelled streams are.
    pub const BT601_LIMITED: Self = YuvToRgb {
        luma_offset: 16,
        luma: 1_220_542,
        v_to_r: 1_673_527,
        u_to_g: -409_993,
        v_to_g: -852_492,
        u_to_b: 2_116_026,
    };

    /// The conversion for a matrix given by its luma weights `kr` and `kb` (BT.709: 0.2126,
    /// 0.0722), for limited (16-235, 16-240) or full range. BT.601 limited range is
    /// [`Self::BT601_LIMITED`], OpenCV's rounding of these values.
    pub fn from_weights(kr: f64, kb: f64, full_range: bool) -> Self {
        let (luma_offset, luma_scale, chroma_scale) = if full_range {
            (0, 1.0, 1.0)
        } else {
            (16, 255.0 / 219.0, 255.0 / 224.0)
        };
        let kg = 1.0 - kr - kb;
        let fixed = |value: f64| (value * f64::from(1 << YUV_SHIFT)).round() as i32;
        YuvToRgb {
            luma_offset,
            luma: fixed(luma_scale),
            v_to_r: fixed(2.0 * (1.0 - kr) * chroma_scale),
            u_to_g: fixed(-2.0 * kb * (1.0 - kb) / kg * chroma_scale),
            v_to_g: fixed(-2.0 * kr * (1.0 - kr) / kg * chroma_scale),
            u_to_b: fixed(2.0 * (1.0 - kb) * chroma_scale),
        }
    }

    /// One sample's RGB (the kernel's `yuv_to_rgb`).
    pub fn convert(&self, y: u8, u: u8, v: u8) -> [u8; 3] {
        self.with_luma(y, self.chroma_terms(u, v))
    }

    /// The red, green and blue terms of one chroma sample, rounding half included: computed
    /// once for the pixels that share it.
    #[inline(always)]
    pub fn chroma_terms(&self, u: u8, v: u8) -> [i32; 3] {
        const HALF: i32 = 1 << (YUV_SHIFT - 1);
        let (u, v) = (i32::from(u) - 128, i32::from(v) - 128);
        [
            self.v_to_r * v + HALF,
            self.v_to_g * v + self.u_to_g * u + HALF,
            self.u_to_b * u + HALF,
        ]
    }

    /// The RGB of a luma sample with its chroma's [`Self::chroma_terms`].
    #[inline(always)]
    pub fn with_luma(&self, y: u8, chroma_terms: [i32; 3]) -> [u8; 3] {
        let luma = (i32::from(y) - self.luma_offset).max(0) * self.luma;
        chroma_terms.map(|term| ((luma + term) >> YUV_SHIFT).clamp(0, 255) as u8)
    }

    /// This conversion in the form that converts whole rows in SIMD lanes.
    pub(crate) fn row_converter(&self) -> YuvRowConverter {
        let offset = i16::try_from(self.luma_offset).expect("a luma offset is an 8-bit level");
        YuvRowConverter {
            luma_offset: offset,
            luma: SplitCoefficient::new(self.luma),
            v_to_r: SplitCoefficient::new(self.v_to_r),
            u_to_g: SplitCoefficient::new(self.u_to_g),
            v_to_g: SplitCoefficient::new(self.v_to_g),
            u_to_b: SplitCoefficient::new(self.u_to_b),
        }
    }
}

/// A 20-bit coefficient as `high * 2^11 + low`, both halves 16-bit: the product with an 8-bit
/// sample is then two 16 x 16-bit multiplies, which SIMD units do eight or sixteen at a time
/// (`pmaddwd`), where a 32-bit multiply is slow or scalar. The sum is the same integer.
#[derive(Clone, Copy, Debug)]
struct SplitCoefficient {
    high: i16,
    low: i16,
}

const LOW_BITS: i32 = 11;

impl SplitCoefficient {
    fn new(coefficient: i32) -> Self {
        let high = coefficient >> LOW_BITS;
        SplitCoefficient {
            high: i16::try_from(high).expect("a YUV coefficient is below 2^26"),
            low: (coefficient & ((1 << LOW_BITS) - 1)) as i16,
        }
    }

    #[inline(always)]
    fn times(self, sample: i16) -> i32 {
        let sample = i32::from(sample);
        ((sample * i32::from(self.high)) << LOW_BITS) + sample * i32::from(self.low)
    }
}

/// [`YuvToRgb`] over runs of a 4:2:0 row: the same integers as [`YuvToRgb::convert`], computed
/// in SIMD lanes (AVX2 or SSE4.1 chosen at run time, plain x86-64 otherwise).
#[derive(Clone, Copy, Debug)]
pub(crate) struct YuvRowConverter {
    luma_offset: i16,
    luma: SplitCoefficient,
    v_to_r: SplitCoefficient,
    u_to_g: SplitCoefficient,
    v_to_g: SplitCoefficient,
    u_to_b: SplitCoefficient,
}

/// Pixels converted per step of [`YuvRowConverter::convert_packed`]'s scratch.
const PACKED_CHUNK: usize = 128;

/// A converted pixel as one word: red in the low byte, then green and blue, the top byte zero.
pub(crate) fn word_rgb(word: u32) -> [u8; 3] {
    let [red, green, blue, _] = word.to_le_bytes();
    [red, green, blue]
}

/// The chroma samples of a 4:2:0 row as stored, from the one its first pixel pair shares.
#[derive(Clone, Copy, Debug)]
pub(crate) enum ChromaRow<'a> {
    /// NV12: U and V alternating in one plane.
    Interleaved(&'a [u8]),
    /// I420: U and V in planes of their own.
    Planar { u: &'a [u8], v: &'a [u8] },
}

impl<'a> ChromaRow<'a> {
    /// The samples after the first `pairs`.
    pub(crate) fn skip_pairs(self, pairs: usize) -> Self {
        match self {
            ChromaRow::Interleaved(uv) => ChromaRow::Interleaved(&uv[2 * pairs..]),
            ChromaRow::Planar { u, v } => ChromaRow::Planar {
                u: &u[pairs..],
                v: &v[pairs..],
            },
        }
    }

    /// The `pair`-th `(u, v)` sample.
    fn sample(self, pair: usize) -> (u8, u8) {
        match self {
            ChromaRow::Interleaved(uv) => (uv[2 * pair], uv[2 * pair + 1]),
            ChromaRow::Planar { u, v } => (u[pair], v[pair]),
        }
    }
}

impl YuvRowConverter {
    /// A run of pixels from an even column into [`word_rgb`] words; pixels `2 i` and `2 i + 1`
    /// share `chroma`'s `i`-th sample. One word a pixel keeps the lanes 32-bit all the way and
    /// lets a reader fetch a pixel with one load.
    pub(crate) fn convert_words(&self, luma: &[u8], chroma: ChromaRow, words: &mut [u32]) {
        let pairs = luma.len() / 2;
        let (whole, words) = (&luma[..2 * pairs], &mut words[..luma.len()]);
        let (paired, last) = words.split_at_mut(2 * pairs);
        // Exact lengths everywhere, so the loops carry no bounds checks and vectorise.
        match chroma {
            ChromaRow::Interleaved(uv) => {
                convert_interleaved(self, whole, &uv[..2 * pairs], paired)
            }
            ChromaRow::Planar { u, v } => {
                convert_planar(self, whole, &u[..pairs], &v[..pairs], paired)
            }
        }
        if let [word] = last {
            let (u, v) = chroma.sample(pairs);
            *word = self.word(luma[2 * pairs], self.chroma_terms(u, v));
        }
    }

    /// [`Self::convert_words`] into packed RGB, three bytes a pixel.
    pub(crate) fn convert_packed(&self, luma: &[u8], chroma: ChromaRow, rgb: &mut [u8]) {
        let mut words = [0_u32; PACKED_CHUNK];
        let chunks = luma
            .chunks(PACKED_CHUNK)
            .zip(rgb.chunks_mut(3 * PACKED_CHUNK));
        for (index, (luma, rgb)) in chunks.enumerate() {
            let chroma = chroma.skip_pairs(index * PACKED_CHUNK / 2);
            self.convert_words(luma, chroma, &mut words);
            for (pixel, &word) in rgb.chunks_exact_mut(3).zip(words.iter()) {
                pixel.copy_from_slice(&word_rgb(word));
            }
        }
    }

    /// One pixel's word from its luma sample and its chroma's [`Self::chroma_terms`].
    #[inline(always)]
    fn word(&self, y: u8, chroma_terms: [i32; 3]) -> u32 {
        let luma = self.luma.times((i16::from(y) - self.luma_offset).max(0));
        let [red, green, blue] = chroma_terms.map(|term| (luma + term) >> YUV_SHIFT);
        let channel = |sum: i32| sum.clamp(0, 255) as u32;
        channel(red) | channel(green) << 8 | channel(blue) << 16
    }

    /// The red, green and blue terms of a chroma sample, the rounding half included.
    #[inline(always)]
    fn chroma_terms(&self, u: u8, v: u8) -> [i32; 3] {
        const HALF: i32 = 1 << (YUV_SHIFT - 1);
        let (u, v) = (i16::from(u) - 128, i16::from(v) - 128);
        [
            self.v_to_r.times(v) + HALF,
            self.u_to_g.times(u) + self.v_to_g.times(v) + HALF,
            self.u_to_b.times(u) + HALF,
        ]
    }
}

/// The pixel pairs of an NV12 run.
#[multiversion::multiversion(targets("x86_64+avx2", "x86_64+sse4.1"))]
fn convert_interleaved(converter: &YuvRowConverter, luma: &[u8], uv: &[u8], words: &mut [u32]) {
    let pairs = luma.chunks_exact(2).zip(uv.chunks_exact(2));
    for ((luma, uv), words) in pairs.zip(words.chunks_exact_mut(2)) {
        let terms = converter.chroma_terms(uv[0], uv[1]);
        words[0] = converter.word(luma[0], terms);
        words[1] = converter.word(luma[1], terms);
    }
}

/// The pixel pairs of an I420 run.
#[multiversion::multiversion(targets("x86_64+avx2", "x86_64+sse4.1"))]
fn convert_planar(converter: &YuvRowConverter, luma: &[u8], u: &[u8], v: &[u8], words: &mut [u32]) {
    let pairs = luma.chunks_exact(2).zip(u.iter().zip(v));
    for ((luma, (&u, &v)), words) in pairs.zip(words.chunks_exact_mut(2)) {
        let terms = converter.chroma_terms(u, v);
        words[0] = converter.word(luma[0], terms);
        words[1] = converter.word(luma[1], terms);
    }
}

impl Default for YuvToRgb {
    fn default() -> Self {
        Self::BT601_LIMITED
    }
}

/// RGB -> YUV with the matrix and range of a [`YuvToRgb`] (its exact inverse, rounded), for
/// drawing colours into YUV frames: `y = luma_offset + row_y . rgb`, `u`, `v` centred on 128,
/// in 16-bit fixed point, rounded and clamped to 0..=255.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RgbToYuv {
    rows: [[i32; 3]; 3],
    /// Each output's offset in fixed point, with the rounding half added.
    offsets: [i32; 3],
}

const RGB_SHIFT: i32 = 16;

impl RgbToYuv {
    /// The inverse of `forward`: `forward.convert(inverse.convert(rgb))` is `rgb` up to the
    /// 8-bit rounding of YUV.
    pub fn inverse_of(forward: &YuvToRgb) -> Self {
        let real = |value: i32| f64::from(value) / f64::from(1 << YUV_SHIFT);
        let luma = real(forward.luma);
        // rgb = matrix . (y - luma_offset, u - 128, v - 128)
        let matrix = [
            [luma, 0.0, real(forward.v_to_r)],
            [luma, real(forward.u_to_g), real(forward.v_to_g)],
            [luma, real(forward.u_to_b), 0.0],
        ];
        let fixed = |value: f64| (value * f64::from(1 << RGB_SHIFT)).round() as i32;
        let half = 1 << (RGB_SHIFT - 1);
        RgbToYuv {
            rows: invert(matrix).map(|row| row.map(fixed)),
            offsets: [forward.luma_offset, 128, 128].map(|offset| (offset << RGB_SHIFT) + half),
        }
    }

    /// One colour's YUV.
    pub fn convert(&self, rgb: [u8; 3]) -> [u8; 3] {
        let rgb = rgb.map(i32::from);
        std::array::from_fn(|channel| {
            let row = self.rows[channel];
            let sum = row[0] * rgb[0] + row[1] * rgb[1] + row[2] * rgb[2] + self.offsets[channel];
            (sum >> RGB_SHIFT).clamp(0, 255) as u8
        })
    }
}

/// The inverse of an invertible 3x3 matrix (a YUV -> RGB matrix always is).
fn invert(m: [[f64; 3]; 3]) -> [[f64; 3]; 3] {
    let cofactor = |row: usize, column: usize| {
        let (r0, r1) = ((row + 1) % 3, (row + 2) % 3);
        let (c0, c1) = ((column + 1) % 3, (column + 2) % 3);
        m[r0][c0] * m[r1][c1] - m[r0][c1] * m[r1][c0]
    };
    let determinant: f64 = (0..3)
        .map(|column| m[0][column] * cofactor(0, column))
        .sum();
    // The inverse is the transposed cofactor matrix over the determinant.
    std::array::from_fn(|row| std::array::from_fn(|column| cofactor(column, row) / determinant))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// BT.601 limited range, BT.709 limited and full range, BT.601 full range.
    fn matrices() -> [YuvToRgb; 4] {
        [
            YuvToRgb::BT601_LIMITED,
            YuvToRgb::from_weights(0.2126, 0.0722, false),
            YuvToRgb::from_weights(0.2126, 0.0722, true),
            YuvToRgb::from_weights(0.299, 0.114, true),
        ]
    }

    /// A row holding every luma value twice, so each pixel pair shares one chroma sample.
    fn every_luma_in_pairs() -> Vec<u8> {
        (0..=255).flat_map(|y| [y, y]).collect()
    }

    #[test]
    fn word_rows_equal_the_per_sample_conversion_for_every_yuv_value() {
        // All 2^24 samples for each matrix: the split coefficients must never lose a bit.
        let luma = every_luma_in_pairs();
        let mut words = vec![0; luma.len()];
        for conversion in matrices() {
            let converter = conversion.row_converter();
            for u in 0..=255 {
                for v in 0..=255 {
                    let chroma = ChromaRow::Planar {
                        u: &[u; 256],
                        v: &[v; 256],
                    };
                    converter.convert_words(&luma, chroma, &mut words);
                    for (&word, &y) in words.iter().zip(&luma) {
                        let want = conversion.convert(y, u, v);
                        assert_eq!(word_rgb(word), want, "{conversion:?} {y} {u} {v}");
                    }
                }
            }
        }
    }

    #[test]
    fn interleaved_chroma_and_packed_rows_take_each_pixels_own_sample() {
        // NV12-style chroma (u and v alternating, `v` one byte in), different for every pair,
        // and an odd length so the last pixel has a sample of its own.
        let luma: Vec<u8> = (0..301).map(|x| (x * 37 % 256) as u8).collect();
        let pairs = luma.len().div_ceil(2);
        let uv: Vec<u8> = (0..2 * pairs).map(|i| (i * 101 % 256) as u8).collect();
        for conversion in matrices() {
            let converter = conversion.row_converter();
            let expected: Vec<[u8; 3]> = luma
                .iter()
                .enumerate()
                .map(|(x, &y)| conversion.convert(y, uv[x / 2 * 2], uv[x / 2 * 2 + 1]))
                .collect();
            let mut words = vec![u32::MAX; luma.len()];
            converter.convert_words(&luma, ChromaRow::Interleaved(&uv), &mut words);
            let mut packed = vec![0; 3 * luma.len()];
            converter.convert_packed(&luma, ChromaRow::Interleaved(&uv), &mut packed);
            for (x, want) in expected.iter().enumerate() {
                let word = u32::from_le_bytes([want[0], want[1], want[2], 0]);
                assert_eq!(words[x], word, "words {x}");
                assert_eq!(packed[3 * x..][..3], *want, "packed {x}");
            }
        }
    }

    #[test]
    fn rgb_to_yuv_is_the_textbook_bt601_studio_matrix() {
        // ITU-R BT.601 in 8 bits: Y = 16 + (65.481 R + 128.553 G + 24.966 B) / 255, and so on;
        // the inverse of OpenCV's decoding coefficients may round half a level the other way.
        let textbook = |[r, g, b]: [u8; 3]| {
            let (r, g, b) = (f64::from(r), f64::from(g), f64::from(b));
            [
                16.0 + (65.481 * r + 128.553 * g + 24.966 * b) / 255.0,
                128.0 + (-37.797 * r - 74.203 * g + 112.0 * b) / 255.0,
                128.0 + (112.0 * r - 93.786 * g - 18.214 * b) / 255.0,
            ]
        };
        let inverse = RgbToYuv::inverse_of(&YuvToRgb::BT601_LIMITED);
        assert_eq!(inverse.convert([0, 0, 0]), [16, 128, 128]);
        assert_eq!(inverse.convert([255, 255, 255]), [235, 128, 128]);
        for rgb in [
            [255, 0, 0],
            [0, 255, 0],
            [0, 0, 255],
            [255, 128, 0],
            [51, 153, 255],
        ] {
            let expected = textbook(rgb);
            for (got, want) in inverse.convert(rgb).into_iter().zip(expected) {
                assert!(
                    (f64::from(got) - want).abs() <= 1.0,
                    "{rgb:?}: {got} vs {want}"
                );
            }
        }
    }

    #[test]
    fn rgb_to_yuv_and_back_stays_within_the_yuv_rounding() {
        for forward in matrices() {
            let inverse = RgbToYuv::inverse_of(&forward);
            for rgb in (0..=255u8).step_by(15).flat_map(|r| {
                (0..=255u8)
                    .step_by(15)
                    .flat_map(move |g| (0..=255u8).step_by(15).map(move |b| [r, g, b]))
            }) {
                let [y, u, v] = inverse.convert(rgb);
                let back = forward.convert(y, u, v);
                for (a, b) in rgb.iter().zip(back) {
                    // Half a step of Y, U and V each, scaled by the matrix: at most 3 levels in
                    // limited range (219/224 steps for 255).
                    assert!(a.abs_diff(b) <= 3, "{forward:?}: {rgb:?} -> {back:?}");
                }
            }
        }
    }
}
