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

    /// This conversion's terms by sample value, for converting whole rows.
    pub(crate) fn tables(&self) -> YuvTables {
        let table = |term: &dyn Fn(u8) -> i32| std::array::from_fn(|value| term(value as u8));
        let chroma = |value: u8| i32::from(value) - 128;
        YuvTables {
            luma: table(&|y| (i32::from(y) - self.luma_offset).max(0) * self.luma),
            red_v: table(&|v| self.chroma_terms(128, v)[0]),
            green_u: table(&|u| self.u_to_g * chroma(u)),
            green_v: table(&|v| self.chroma_terms(128, v)[1]),
            blue_u: table(&|u| self.chroma_terms(u, 128)[2]),
        }
    }
}

/// A [`YuvToRgb`]'s products by table, the final shift's clamp by table too: the same
/// integers as [`YuvToRgb::convert`] without a multiplication or a branch per pixel.
pub(crate) struct YuvTables {
    luma: [i32; 256],
    /// The rounding half is in the red, green and blue terms of `v`, `v` and `u`.
    red_v: [i32; 256],
    green_u: [i32; 256],
    green_v: [i32; 256],
    blue_u: [i32; 256],
}

/// `(sum >> YUV_SHIFT).clamp(0, 255)` for the shifted sums of any 8-bit sample, by
/// `(shifted + CLAMP_OFFSET) & CLAMP_MASK` (the mask makes the index provably in bounds).
const CLAMP_OFFSET: i32 = 1024;
const CLAMP_MASK: usize = 4095;
static CLAMP: [u8; CLAMP_MASK + 1] = {
    let mut table = [0_u8; CLAMP_MASK + 1];
    let mut index = 0;
    while index <= CLAMP_MASK {
        let shifted = index as i32 - CLAMP_OFFSET;
        table[index] = if shifted < 0 {
            0
        } else if shifted > 255 {
            255
        } else {
            shifted as u8
        };
        index += 1;
    }
    table
};

impl YuvTables {
    /// A run of pixels that share chroma samples in pairs (a 4:2:0 row from an even column):
    /// `luma[i]` takes the `i / 2`-th `(u, v)` of `chroma`, and `rgb` gets three bytes a pixel.
    pub(crate) fn convert_row(
        &self,
        luma: &[u8],
        mut chroma: impl Iterator<Item = (u8, u8)>,
        rgb: &mut [u8],
    ) {
        let mut pairs = luma.chunks_exact(2);
        let mut outputs = rgb.chunks_exact_mut(6);
        for ((pair, out), (u, v)) in (&mut pairs).zip(&mut outputs).zip(&mut chroma) {
            let terms = self.chroma_terms(u, v);
            out[..3].copy_from_slice(&self.with_terms(pair[0], terms));
            out[3..].copy_from_slice(&self.with_terms(pair[1], terms));
        }
        if let ([y], Some((u, v))) = (pairs.remainder(), chroma.next()) {
            let out = outputs.into_remainder();
            out.copy_from_slice(&self.with_terms(*y, self.chroma_terms(u, v)));
        }
    }

    /// One sample's RGB: [`YuvToRgb::convert`]'s result.
    #[inline(always)]
    pub(crate) fn rgb(&self, y: u8, u: u8, v: u8) -> [u8; 3] {
        self.with_terms(y, self.chroma_terms(u, v))
    }

    #[inline(always)]
    fn chroma_terms(&self, u: u8, v: u8) -> [i32; 3] {
        let (u, v) = (usize::from(u), usize::from(v));
        [
            self.red_v[v],
            self.green_u[u] + self.green_v[v],
            self.blue_u[u],
        ]
    }

    #[inline(always)]
    fn with_terms(&self, y: u8, terms: [i32; 3]) -> [u8; 3] {
        let luma = self.luma[usize::from(y)];
        terms.map(|term| {
            let shifted = (luma + term) >> YUV_SHIFT;
            CLAMP[(shifted + CLAMP_OFFSET) as usize & CLAMP_MASK]
        })
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

    #[test]
    fn row_tables_give_the_per_sample_conversion() {
        // Every luma value with chroma on a grid that includes both extremes, for both common
        // matrices and both ranges; pairs of pixels share a chroma sample, a last odd one too.
        let chroma: Vec<u8> = (0..=255).step_by(5).collect();
        for conversion in [
            YuvToRgb::BT601_LIMITED,
            YuvToRgb::from_weights(0.2126, 0.0722, false),
            YuvToRgb::from_weights(0.2126, 0.0722, true),
            YuvToRgb::from_weights(0.299, 0.114, true),
        ] {
            let tables = conversion.tables();
            let luma: Vec<u8> = (0..=255).chain([7]).collect();
            let mut rgb = vec![0; 3 * luma.len()];
            for &u in &chroma {
                for &v in &chroma {
                    let samples = std::iter::repeat_n((u, v), luma.len().div_ceil(2));
                    tables.convert_row(&luma, samples, &mut rgb);
                    for (pixel, &y) in rgb.chunks_exact(3).zip(&luma) {
                        assert_eq!(
                            pixel,
                            conversion.convert(y, u, v),
                            "{conversion:?} {y} {u} {v}"
                        );
                    }
                }
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
        let matrices = [
            YuvToRgb::BT601_LIMITED,
            YuvToRgb::from_weights(0.2126, 0.0722, false),
            YuvToRgb::from_weights(0.2126, 0.0722, true),
            YuvToRgb::from_weights(0.299, 0.114, true),
        ];
        for forward in matrices {
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
