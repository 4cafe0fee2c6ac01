//! Deterministic synthetic data for tests and benches: a small PRNG and Gaussian heatmap peaks.

/// xorshift64*, so the data need no random-number crate.
pub struct XorShift(pub u64);

impl XorShift {
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in [lo, hi), from 24 random bits (an f32's precision).
    pub fn range(&mut self, lo: f32, hi: f32) -> f32 {
        let unit = (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32;
        lo + (hi - lo) * unit
    }

    /// Uniform in [lo, hi), from 53 random bits (an f64's precision).
    pub fn range_f64(&mut self, lo: f64, hi: f64) -> f64 {
        let unit = (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        lo + (hi - lo) * unit
    }
}

/// Adds `amplitude * exp(-d² / 2 sigma²)` around `(cx, cy)` to a map `width` samples wide.
pub fn add_gaussian(
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

/// A `width` x `height` heatmap holding one Gaussian peak (see [`add_gaussian`]).
pub fn gaussian_map(
    width: usize,
    height: usize,
    centre: (f32, f32),
    sigma: f32,
    amplitude: f32,
) -> Vec<f32> {
    let mut map = vec![0.0; width * height];
    add_gaussian(&mut map, width, centre, sigma, amplitude);
    map
}
