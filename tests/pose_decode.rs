//! The Rust DARK-UDP decode against the independent NumPy + OpenCV reference
//! (`tests/reference/decode_reference.py`), and against known sub-pixel peak positions.

mod common;

use sapiens_stream::tasks::pose::decode::{HeatmapPeak, decode_dark_udp};
use sapiens_stream::testkit::synthetic::{XorShift, gaussian_map};

const WIDTH: usize = 192;
const HEIGHT: usize = 256;
/// Peaks at least this far from the edge decode without zero-padding bias.
const INTERIOR_MARGIN: f32 = 10.0;
/// Rust vs NumPy on peaked maps (measured: 1.5e-5, one float32 ulp at x ~ 100).
const POSITION_TOLERANCE: f32 = 1e-3;
/// Rust vs NumPy on pure noise. The Hessian there is nearly singular, so float32 rounding in
/// the blur and the log moves the step: OpenCV's own blur against an exactly rounded one moves
/// it by up to 0.17 px over 300 noise maps (Rust against OpenCV: 0.17 px too).
const NOISE_POSITION_TOLERANCE: f32 = 0.25;

/// One synthetic channel, where it must decode if that is known, and how closely Rust and
/// NumPy must agree on it.
struct Channel {
    map: Vec<f32>,
    known_peak: Option<(f32, f32)>,
    position_tolerance: f32,
}

impl Channel {
    fn new(map: Vec<f32>) -> Self {
        Self {
            map,
            known_peak: None,
            position_tolerance: POSITION_TOLERANCE,
        }
    }

    fn clean_peak(centre: (f32, f32), sigma: f32, amplitude: f32) -> Self {
        Self {
            known_peak: is_interior(centre).then_some(centre),
            ..Self::new(gaussian(centre, sigma, amplitude))
        }
    }
}

fn gaussian(centre: (f32, f32), sigma: f32, amplitude: f32) -> Vec<f32> {
    gaussian_map(WIDTH, HEIGHT, centre, sigma, amplitude)
}

fn with_noise(mut map: Vec<f32>, rng: &mut XorShift, amplitude: f32) -> Vec<f32> {
    map.iter_mut()
        .for_each(|v| *v += rng.range(-amplitude, amplitude));
    map
}

fn is_interior((x, y): (f32, f32)) -> bool {
    (INTERIOR_MARGIN..WIDTH as f32 - INTERIOR_MARGIN).contains(&x)
        && (INTERIOR_MARGIN..HEIGHT as f32 - INTERIOR_MARGIN).contains(&y)
}

/// The fixed cases first (the known peak, borders and corners, all-negative, pure noise),
/// then clean and noisy (+-0.02) peaks at random sub-pixel positions.
fn channels(count: usize, seed: u64) -> Vec<Channel> {
    let mut rng = XorShift(seed);
    let edges = [
        (0.0, 255.0),
        (191.0, 0.0),
        (0.0, 0.0),
        (191.0, 255.0),
        (0.0, 128.4),
        (100.6, 0.0),
        (191.0, 77.7),
        (45.2, 255.0),
    ];
    let mut out = vec![Channel::clean_peak((57.3, 101.8), 2.0, 1.0)];
    out.extend(edges.map(|centre| Channel::clean_peak(centre, 2.0, 1.0)));
    let negative = gaussian((57.3, 101.8), 2.0, 1.0)
        .iter()
        .map(|v| v - 1.5)
        .collect();
    out.push(Channel::new(negative));
    out.push(Channel {
        position_tolerance: NOISE_POSITION_TOLERANCE,
        ..Channel::new(with_noise(vec![0.5; WIDTH * HEIGHT], &mut rng, 0.5))
    });
    while out.len() < count {
        let centre = (
            rng.range(INTERIOR_MARGIN, WIDTH as f32 - INTERIOR_MARGIN),
            rng.range(INTERIOR_MARGIN, HEIGHT as f32 - INTERIOR_MARGIN),
        );
        let (sigma, amplitude) = (rng.range(1.5, 3.0), rng.range(0.2, 1.0));
        let clean = Channel::clean_peak(centre, sigma, amplitude);
        out.push(if out.len() % 2 == 0 {
            clean
        } else {
            Channel::new(with_noise(clean.map, &mut rng, 0.02))
        });
    }
    out.truncate(count);
    out
}

/// (K, 3) rows [x, y, score] from the Python reference.
fn reference_decode(heatmaps: &[f32], count: usize) -> Vec<[f32; 3]> {
    let dir = tempfile::tempdir().expect("temporary folder");
    let (input, output) = (
        dir.path().join("heatmaps.npy"),
        dir.path().join("peaks.npy"),
    );
    let shape = [count as u64, HEIGHT as u64, WIDTH as u64];
    common::write_npy_f32(&input, &shape, heatmaps);
    let paths = [
        input.to_str().expect("UTF-8 path"),
        output.to_str().expect("UTF-8 path"),
    ];
    common::run_reference("decode_reference.py", &paths);
    let (shape, values) = common::read_npy_f32(&output);
    assert_eq!(shape, [count as u64, 3]);
    values.chunks_exact(3).map(|r| [r[0], r[1], r[2]]).collect()
}

fn check_against_reference(count: usize, seed: u64) {
    let channels = channels(count, seed);
    let heatmaps: Vec<f32> = channels
        .iter()
        .flat_map(|c| c.map.iter().copied())
        .collect();
    let mut peaks: Vec<HeatmapPeak> = Vec::new();
    decode_dark_udp(&heatmaps, count, HEIGHT, WIDTH, &mut peaks);
    let reference = reference_decode(&heatmaps, count);
    assert_eq!(peaks.len(), count);
    for (k, ((peak, [x, y, score]), channel)) in
        peaks.iter().zip(&reference).zip(&channels).enumerate()
    {
        let context = format!("channel {k} of {count}: rust {peak:?}, numpy [{x}, {y}, {score}]");
        assert!(peak.x.is_finite() && peak.y.is_finite(), "{context}");
        assert_eq!(peak.score > 0.0, *score > 0.0, "validity, {context}");
        assert!((peak.score - score).abs() <= 1e-6, "score, {context}");
        let tolerance = channel.position_tolerance;
        assert!(
            (peak.x - x).abs() <= tolerance && (peak.y - y).abs() <= tolerance,
            "position, {context}"
        );
        if let Some((cx, cy)) = channel.known_peak {
            assert!(
                (peak.x - cx).abs() < 0.05 && (peak.y - cy).abs() < 0.05,
                "known ({cx}, {cy}), {context}"
            );
        }
    }
}

#[test]
fn coco_17_channels_match_numpy_reference() {
    check_against_reference(17, 0x5EED_0017);
}

#[test]
fn goliath_308_channels_match_numpy_reference() {
    check_against_reference(308, 0x5EED_0308);
}

#[test]
fn invalid_channel_is_reported_at_minus_one() {
    let map: Vec<f32> = gaussian((57.3, 101.8), 2.0, 1.0)
        .iter()
        .map(|v| v - 1.5)
        .collect();
    let mut peaks = Vec::new();
    decode_dark_udp(&map, 1, HEIGHT, WIDTH, &mut peaks);
    assert_eq!((peaks[0].x, peaks[0].y), (-1.0, -1.0));
    assert!(peaks[0].score <= 0.0);
}
