//! Deterministic inputs for the kernel tests, shared by `tests/gpu.rs` (the kernels on a GPU)
//! and `src/testkit/kernels/emulator.rs` (the same kernels on the CPU), so both compare on the same
//! kind of data.

/// xorshift64: deterministic test data without a dependency.
pub struct Noise(pub u64);

impl Noise {
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    pub fn byte(&mut self) -> u8 {
        (self.next_u64() >> 56) as u8
    }

    pub fn unit(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32
    }
}

/// A frame with gradients, stripes and noise, so every tap and rounding matters.
pub fn test_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut noise = Noise(seed);
    (0..len)
        .map(|i| ((i * 7 % 251) as u8).wrapping_add(noise.byte() / 8))
        .collect()
}

/// Logits uniform in -4..4.
pub fn random_logits(classes: usize, h: usize, w: usize) -> Vec<f32> {
    let mut noise = Noise(21);
    (0..classes * h * w)
        .map(|_| noise.unit() * 8.0 - 4.0)
        .collect()
}

/// `random_logits` rounded to integers, some NaN: ties must go to the lowest class, and NaN
/// never wins.
pub fn tied_logits_with_nans(classes: usize, h: usize, w: usize) -> Vec<f32> {
    let mut noise = Noise(5);
    random_logits(classes, h, w)
        .into_iter()
        .map(|v| {
            if noise.byte() < 8 {
                f32::NAN
            } else {
                v.round()
            }
        })
        .collect()
}

/// Gaussian blobs on noise, one per map, some near edges, one map flat zero (invalid).
pub fn heatmaps(maps: usize, h: usize, w: usize) -> Vec<f32> {
    let mut noise = Noise(33);
    let mut data = vec![0.0f32; maps * h * w];
    for (k, map) in data.chunks_mut(h * w).enumerate().skip(1) {
        let (cx, cy) = (noise.unit() * w as f32, noise.unit() * h as f32);
        let sigma = 2.0 + 3.0 * noise.unit();
        for (i, v) in map.iter_mut().enumerate() {
            let (x, y) = ((i % w) as f32, (i / w) as f32);
            let d2 = (x - cx).powi(2) + (y - cy).powi(2);
            *v = (-d2 / (2.0 * sigma * sigma)).exp() * (0.5 + k as f32 % 3.0) + 0.01 * noise.unit();
        }
    }
    data
}

/// `heatmaps` whose maps 1 to 9 are the decode's edge cases: peaks on a corner, on an edge and
/// next to one (the 3x3 neighbourhood is padded); all negative (invalid, the maximum as score);
/// a plateau (the first maximum in row-major order wins); NaN within the blur's reach of a peak
/// (the Newton step turns non-finite and is dropped) and NaN far from it (ignored); all NaN
/// (invalid, scored -inf); -0 and +0 alternating (equal: invalid, scored zero).
pub fn edge_case_heatmaps(maps: usize, h: usize, w: usize) -> Vec<f32> {
    assert!(
        maps >= 10 && h >= 32 && w >= 32,
        "too small for the edge cases"
    );
    let mut data = heatmaps(maps, h, w);
    let mut maps: Vec<&mut [f32]> = data.chunks_mut(h * w).collect();
    let mut noise = Noise(77);
    let mut blob = |map: &mut [f32], (cx, cy): (f32, f32)| {
        for (i, v) in map.iter_mut().enumerate() {
            let (x, y) = ((i % w) as f32, (i / w) as f32);
            let d2 = (x - cx).powi(2) + (y - cy).powi(2);
            *v = (-d2 / 18.0).exp() + 0.01 * noise.unit();
        }
    };
    blob(maps[1], (0.0, 0.0));
    blob(maps[2], ((w - 1) as f32, 20.3));
    blob(maps[3], (17.6, (h - 2) as f32));
    blob(maps[6], (20.0, 30.0));
    maps[6][30 * w + 26] = f32::NAN;
    blob(maps[7], (20.0, 30.0));
    maps[7][2 * w + w - 8] = f32::NAN;
    for v in maps[4].iter_mut() {
        *v = -1.0 - noise.unit();
    }
    maps[5].fill(0.25);
    maps[8].fill(f32::NAN);
    for (i, v) in maps[9].iter_mut().enumerate() {
        *v = if i % 2 == 0 { -0.0 } else { 0.0 };
    }
    data
}
