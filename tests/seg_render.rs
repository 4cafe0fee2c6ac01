//! Segmentation post-processing against an independent OpenCV reference
//! (`tests/reference/seg_reference.py`), and the frame drawing in `render`.

mod common;

use sapiens_stream::render::{PoseStyle, RenderError, blend_class_map, draw_pose};
use sapiens_stream::tasks::seg::{argmax_nearest, upsample_argmax};
use sapiens_stream::testkit::synthetic::XorShift;

/// C x H x W logits, each class a sum of a few random low-frequency 2-D sinusoids, so that the
/// argmax forms regions with boundaries (and near-ties only along them).
fn smooth_logits(classes: usize, height: usize, width: usize, seed: u64) -> Vec<f32> {
    let mut rng = XorShift(seed);
    let mut logits = Vec::with_capacity(classes * height * width);
    for _ in 0..classes {
        let waves: Vec<[f64; 5]> = (0..3)
            .map(|_| {
                [
                    rng.range_f64(0.5, 2.0),
                    rng.range_f64(0.3, 3.0) * std::f64::consts::TAU / width as f64,
                    rng.range_f64(0.3, 3.0) * std::f64::consts::TAU / height as f64,
                    rng.range_f64(0.0, std::f64::consts::TAU),
                    rng.range_f64(0.0, std::f64::consts::TAU),
                ]
            })
            .collect();
        for y in 0..height {
            for x in 0..width {
                let value: f64 = waves
                    .iter()
                    .map(|&[amp, fx, fy, px, py]| {
                        amp * (fx * x as f64 + px).sin() * (fy * y as f64 + py).cos()
                    })
                    .sum();
                logits.push(value as f32);
            }
        }
    }
    logits
}

/// One class's logit at an output pixel, straight from the OpenCV `INTER_LINEAR` definition in
/// f64 (half-pixel centres, clamped to the edge).
fn interpolated_logit(
    logits: &[f32],
    (in_h, in_w): (usize, usize),
    class: usize,
    (x, y): (usize, usize),
    (out_w, out_h): (usize, usize),
) -> f64 {
    let taps = |dst: usize, in_len: usize, out_len: usize| {
        let pos = (dst as f64 + 0.5) * in_len as f64 / out_len as f64 - 0.5;
        let pos = pos.clamp(0.0, (in_len - 1) as f64);
        let lo = pos.floor() as usize;
        (lo, (lo + 1).min(in_len - 1), pos - lo as f64)
    };
    let (x0, x1, fx) = taps(x, in_w, out_w);
    let (y0, y1, fy) = taps(y, in_h, out_h);
    let at = |yy: usize, xx: usize| f64::from(logits[(class * in_h + yy) * in_w + xx]);
    let top = at(y0, x0) * (1.0 - fx) + at(y0, x1) * fx;
    let bottom = at(y1, x0) * (1.0 - fx) + at(y1, x1) * fx;
    top * (1.0 - fy) + bottom * fy
}

/// The signature `upsample_argmax` and `argmax_nearest` share.
type SegResample = fn(&[f32], usize, usize, usize, usize, usize, &mut [u8]);

struct SegCase {
    classes: usize,
    in_h: usize,
    in_w: usize,
    out_w: usize,
    out_h: usize,
    seed: u64,
}

impl SegCase {
    fn logits(&self) -> Vec<f32> {
        smooth_logits(self.classes, self.in_h, self.in_w, self.seed)
    }

    /// The OpenCV reference's class map for these logits.
    fn reference(&self, logits: &[f32], nearest: bool) -> Vec<u8> {
        let dir = tempfile::tempdir().unwrap();
        let logits_path = dir.path().join("logits.npy");
        let out_path = dir.path().join("classes.npy");
        let shape = [self.classes, self.in_h, self.in_w].map(|d| d as u64);
        common::write_npy_f32(&logits_path, &shape, logits);
        let (out_w, out_h) = (self.out_w.to_string(), self.out_h.to_string());
        let mut args = vec![
            logits_path.to_str().unwrap(),
            &out_w,
            &out_h,
            out_path.to_str().unwrap(),
        ];
        if nearest {
            args.push("--nearest");
        }
        common::run_reference("seg_reference.py", &args);
        let (shape, classes) = common::read_npy_u8(&out_path);
        assert_eq!(shape, [self.out_h as u64, self.out_w as u64]);
        classes
    }

    /// Our class map from `upsample_argmax` or `argmax_nearest` (they take the same arguments).
    fn class_map(&self, logits: &[f32], resample: SegResample) -> Vec<u8> {
        let mut out = vec![0u8; self.out_w * self.out_h];
        resample(
            logits,
            self.classes,
            self.in_h,
            self.in_w,
            self.out_w,
            self.out_h,
            &mut out,
        );
        out
    }

    /// Bilinear path: >= 99.9 % agreement, and every disagreement is a near-tie.
    fn check_bilinear(&self) {
        let logits = self.logits();
        let ours = self.class_map(&logits, upsample_argmax);
        let reference = self.reference(&logits, false);
        let mut differing = 0usize;
        for (i, (&a, &b)) in ours.iter().zip(&reference).enumerate() {
            if a == b {
                continue;
            }
            differing += 1;
            let pixel = (i % self.out_w, i / self.out_w);
            let logit = |class: u8| {
                interpolated_logit(
                    &logits,
                    (self.in_h, self.in_w),
                    usize::from(class),
                    pixel,
                    (self.out_w, self.out_h),
                )
            };
            let gap = (logit(a) - logit(b)).abs();
            assert!(
                gap < 1e-4,
                "pixel {pixel:?}: ours {a}, reference {b}, logit gap {gap}"
            );
        }
        let agreement = 1.0 - differing as f64 / ours.len() as f64;
        assert!(
            agreement >= 0.999,
            "agreement {agreement} ({differing} pixels differ)"
        );
        let distinct = (0..self.classes as u8).filter(|c| ours.contains(c)).count();
        assert!(
            distinct >= 5,
            "logits too flat: only {distinct} classes win"
        );
    }

    /// Nearest path: identical to the reference.
    fn check_nearest(&self) {
        let logits = self.logits();
        let ours = self.class_map(&logits, argmax_nearest);
        let reference = self.reference(&logits, true);
        let differing = ours.iter().zip(&reference).filter(|(a, b)| a != b).count();
        assert_eq!(differing, 0, "{differing} pixels differ from OpenCV");
    }
}

const SMALL: SegCase = SegCase {
    classes: 28,
    in_h: 64,
    in_w: 48,
    out_w: 320,
    out_h: 240,
    seed: 1,
};
const FULL: SegCase = SegCase {
    classes: 28,
    in_h: 512,
    in_w: 384,
    out_w: 1920,
    out_h: 1080,
    seed: 2,
};
const DOWNSAMPLE: SegCase = SegCase {
    classes: 28,
    in_h: 512,
    in_w: 384,
    out_w: 250,
    out_h: 170,
    seed: 3,
};
/// More than `RUN` (8) output columns per source column: runs are split.
const LARGE_RATIO: SegCase = SegCase {
    classes: 8,
    in_h: 12,
    in_w: 16,
    out_w: 320,
    out_h: 240,
    seed: 5,
};
/// Sizes where OpenCV's nearest mapping differs from the exact integer floor(dst * in / out).
const ODD_SIZES: SegCase = SegCase {
    classes: 5,
    in_h: 6,
    in_w: 4,
    out_w: 98,
    out_h: 34,
    seed: 4,
};

#[test]
fn seg_bilinear_small_matches_opencv() {
    SMALL.check_bilinear();
}

#[test]
fn seg_bilinear_full_matches_opencv() {
    FULL.check_bilinear();
}

#[test]
fn seg_bilinear_downsample_matches_opencv() {
    DOWNSAMPLE.check_bilinear();
}

#[test]
fn seg_bilinear_large_ratio_matches_opencv() {
    LARGE_RATIO.check_bilinear();
}

#[test]
fn seg_nearest_matches_opencv_exactly() {
    for case in [&SMALL, &FULL, &DOWNSAMPLE, &LARGE_RATIO, &ODD_SIZES] {
        case.check_nearest();
    }
}

#[test]
fn blend_class_map_matches_the_per_pixel_formula() {
    let (width, height) = (37, 23);
    let stride = width * 4 + 12;
    let mut rng = XorShift(6);
    let mut frame: Vec<u8> = (0..stride * height).map(|_| rng.next_u64() as u8).collect();
    let original = frame.clone();
    // Classes beyond the 28-colour palette must stay untouched like the background.
    let class_map: Vec<u8> = (0..width * height)
        .map(|_| (rng.next_u64() % 31) as u8)
        .collect();
    let palette: Vec<[u8; 3]> = (0..28)
        .map(|_| [0; 3].map(|_: u8| rng.next_u64() as u8))
        .collect();
    for alpha in [0.0f32, 0.37, 0.5, 1.0] {
        frame.copy_from_slice(&original);
        blend_class_map(
            &mut frame, width, height, stride, &class_map, &palette, alpha,
        );
        for y in 0..height {
            for x in 0..width {
                let class = usize::from(class_map[y * width + x]);
                let at = y * stride + x * 4;
                for ch in 0..4 {
                    let before = f32::from(original[at + ch]);
                    let expected = match palette.get(class) {
                        Some(color) if class > 0 && ch < 3 => {
                            (1.0 - alpha) * before + alpha * f32::from(color[ch])
                        }
                        _ => before,
                    };
                    let got = f32::from(frame[at + ch]);
                    assert!(
                        (got - expected.round()).abs() <= 1.0,
                        "alpha {alpha}, pixel ({x}, {y}) channel {ch}: {got} vs {expected}"
                    );
                }
            }
            let padding = y * stride + width * 4..(y + 1) * stride;
            assert_eq!(frame[padding.clone()], original[padding]);
        }
    }
}

/// The coco17 keypoint set from the project's assets.
struct KeypointSet {
    skeleton: Vec<[usize; 2]>,
    link_colors: Vec<[u8; 3]>,
    keypoint_colors: Vec<[u8; 3]>,
}

fn load_coco17() -> KeypointSet {
    let path = common::repo_root().join("assets/keypoints_coco17.json");
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let field = |name: &str| json[name].clone();
    KeypointSet {
        skeleton: serde_json::from_value(field("skeleton")).unwrap(),
        link_colors: serde_json::from_value(field("skeleton_colors_rgb")).unwrap(),
        keypoint_colors: serde_json::from_value(field("keypoint_colors_rgb")).unwrap(),
    }
}

const LEFT_EAR: usize = 3;
const LEFT_HIP: usize = 11;
const LEFT_KNEE: usize = 13;

/// A standing person on a 320 x 240 frame, keypoints at pixel centres; the left ear is scored
/// below the threshold.
fn coco17_person() -> Vec<[f32; 3]> {
    let mut person: Vec<[f32; 3]> = [
        (160, 40),  // nose
        (166, 34),  // left eye
        (154, 34),  // right eye
        (174, 38),  // left ear
        (146, 38),  // right ear
        (190, 70),  // left shoulder
        (130, 70),  // right shoulder
        (206, 110), // left elbow
        (114, 110), // right elbow
        (210, 146), // left wrist
        (110, 146), // right wrist
        (180, 140), // left hip
        (140, 140), // right hip
        (186, 180), // left knee
        (134, 180), // right knee
        (188, 220), // left ankle
        (132, 220), // right ankle
    ]
    .iter()
    .map(|&(x, y)| [x as f32 + 0.5, y as f32 + 0.5, 0.9])
    .collect();
    person[LEFT_EAR][2] = 0.1;
    person
}

fn black_frame(width: usize, height: usize) -> Vec<u8> {
    [0, 0, 0, 255].repeat(width * height)
}

fn pixel(frame: &[u8], width: usize, (x, y): (f32, f32)) -> [u8; 4] {
    let at = (y as usize * width + x as usize) * 4;
    [frame[at], frame[at + 1], frame[at + 2], frame[at + 3]]
}

fn assert_color_near(got: [u8; 4], rgb: [u8; 3], what: &str) {
    let close = got[..3].iter().zip(rgb).all(|(&g, e)| g.abs_diff(e) <= 3);
    assert!(close && got[3] == 255, "{what}: {got:?}, expected {rgb:?}");
}

#[test]
fn draw_pose_paints_keypoints_and_links_in_their_colours() {
    let (width, height) = (320, 240);
    let set = load_coco17();
    let style = PoseStyle::new(&set.skeleton, &set.link_colors, &set.keypoint_colors)
        .scaled_for(width, height);
    let person = coco17_person();
    let mut frame = black_frame(width, height);
    draw_pose(&mut frame, width, height, width * 4, &[&person], &style).unwrap();

    for (index, kp) in person.iter().enumerate().filter(|(i, _)| *i != LEFT_EAR) {
        let got = pixel(&frame, width, (kp[0], kp[1]));
        assert_color_near(
            got,
            set.keypoint_colors[index],
            &format!("keypoint {index}"),
        );
    }
    let hip_knee = set
        .skeleton
        .iter()
        .position(|&link| link == [LEFT_KNEE, LEFT_HIP])
        .unwrap();
    let (hip, knee) = (person[LEFT_HIP], person[LEFT_KNEE]);
    let midpoint = ((hip[0] + knee[0]) / 2.0, (hip[1] + knee[1]) / 2.0);
    assert_color_near(
        pixel(&frame, width, midpoint),
        set.link_colors[hip_knee],
        "left hip-knee link midpoint",
    );
    let ear = person[LEFT_EAR];
    assert_eq!(pixel(&frame, width, (ear[0], ear[1])), [0, 0, 0, 255]);

    // Nothing outside the person's box, grown by the keypoint radius and a pixel.
    let grow = style.radius + 1.0;
    let visible = person.iter().filter(|kp| kp[2] > style.threshold);
    let (x_min, x_max, y_min, y_max) = visible.fold(
        (f32::MAX, f32::MIN, f32::MAX, f32::MIN),
        |(x0, x1, y0, y1), kp| (x0.min(kp[0]), x1.max(kp[0]), y0.min(kp[1]), y1.max(kp[1])),
    );
    for y in 0..height {
        for x in 0..width {
            let (fx, fy) = (x as f32 + 0.5, y as f32 + 0.5);
            let inside = (x_min - grow..=x_max + grow).contains(&fx)
                && (y_min - grow..=y_max + grow).contains(&fy);
            if !inside {
                assert_eq!(pixel(&frame, width, (fx, fy)), [0, 0, 0, 255], "({x}, {y})");
            }
        }
    }
}

#[test]
fn draw_pose_skips_non_finite_and_far_off_keypoints() {
    let (width, height) = (64, 48);
    let skeleton = [[0, 1], [1, 2], [0, 2]];
    let colors = [[255u8, 255, 255]; 3];
    let style = PoseStyle::new(&skeleton, &colors, &colors);
    let person = [
        [f32::NAN, 10.0, 1.0],
        [f32::INFINITY, 20.0, 1.0],
        [1e9, -1e9, 1.0],
    ];
    let mut frame = black_frame(width, height);
    draw_pose(&mut frame, width, height, width * 4, &[&person], &style).unwrap();
    assert_eq!(frame, black_frame(width, height));
}

#[test]
fn draw_pose_rejects_a_bad_frame_buffer() {
    let style = PoseStyle::new(&[], &[], &[]);
    let mut frame = black_frame(10, 10);
    let small = draw_pose(&mut frame, 10, 11, 40, &[], &style);
    assert!(matches!(small, Err(RenderError::FrameTooSmall { .. })));
    let narrow = draw_pose(&mut frame, 10, 10, 36, &[], &style);
    assert!(matches!(narrow, Err(RenderError::StrideTooSmall { .. })));
}
