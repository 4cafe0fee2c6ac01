//! Deterministic inputs for the kernel tests, shared by `tests/gpu.rs` (the kernels on a GPU)
//! and `src/cuda/host_emulation.rs` (the same kernels on the CPU), so both compare on the same
//! kind of data. Only std here: the file is a module of both crates.

/// xorshift64: deterministic test data without a dependency.
pub struct Noise(pub u64);

impl Noise {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    pub fn byte(&mut self) -> u8 {
        (self.next() >> 56) as u8
    }

    pub fn unit(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 24) as f32
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
