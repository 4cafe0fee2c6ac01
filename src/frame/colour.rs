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
        const HALF: i32 = 1 << (YUV_SHIFT - 1);
        let (u, v) = (i32::from(u) - 128, i32::from(v) - 128);
        let luma = (i32::from(y) - self.luma_offset).max(0) * self.luma;
        let channel = |chroma: i32| ((luma + HALF + chroma) >> YUV_SHIFT).clamp(0, 255) as u8;
        [
            channel(self.v_to_r * v),
            channel(self.v_to_g * v + self.u_to_g * u),
            channel(self.u_to_b * u),
        ]
    }
}

impl Default for YuvToRgb {
    fn default() -> Self {
        Self::BT601_LIMITED
    }
}
