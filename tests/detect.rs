//! Person detection (src/tasks/detect.rs): constant-output RTMDet and YOLO models made by
//! `tests/reference/make_detectors.py` return known boxes in their input pixels, and the boxes
//! must come back in frame pixels where the letterbox arithmetic, worked out here from the two
//! pipelines' definitions, puts them; the letterboxed input itself is checked against OpenCV
//! (`tests/reference/letterbox_reference.py`); `--boxes` files are parsed and refused as they should.

mod common;

use std::path::{Path, PathBuf};

use sapiens_stream::Error;
use sapiens_stream::engine::runtime;
use sapiens_stream::frame::{ImageView, PixelFormat};
use sapiens_stream::preprocess::letterbox::LetterboxInput;
use sapiens_stream::tasks::detect::{BoxesFile, DetectorLayout, DetectorOptions, PersonDetector};
use sapiens_stream::tasks::pose::PersonBox;

/// A box the constant models return, in the model's input pixels.
#[derive(Clone, Copy, Debug)]
struct ModelBox {
    corners: [f64; 4],
    score: f32,
    class: u32,
}

const fn model_box(x1: f64, y1: f64, x2: f64, y2: f64, score: f32, class: u32) -> ModelBox {
    ModelBox {
        corners: [x1, y1, x2, y2],
        score,
        class,
    }
}

/// Inside every input used here (640 x 640 and 640 wide x 384 high) and mostly inside the region
/// the frame fills: `PERSON_B` starts in the top padding of a 16:9 frame in a 640 x 640 YOLO
/// input, and `PERSON_A` ends a pixel below a 1281 x 719 frame in RTMDet's, so clipping counts.
const PERSON_A: ModelBox = model_box(200.0, 150.0, 320.0, 360.0, 0.9, 0);
const PERSON_B: ModelBox = model_box(330.0, 100.0, 440.0, 300.0, 0.75, 0);
/// A near copy of `PERSON_A` with a lower score: NMS must drop it.
const PERSON_A_DUPLICATE: ModelBox = model_box(205.0, 155.0, 325.0, 362.0, 0.6, 0);
/// Class 2 (car) with a high score; in the YOLO model its person score is 0.4, above the threshold.
const CAR: ModelBox = model_box(250.0, 200.0, 300.0, 300.0, 0.95, 2);
const FAINT_PERSON: ModelBox = model_box(400.0, 150.0, 450.0, 220.0, 0.1, 0);

/// Shuffled, so that the order of the output is the detector's doing.
const MODEL_BOXES: [ModelBox; 5] = [FAINT_PERSON, PERSON_B, CAR, PERSON_A_DUPLICATE, PERSON_A];

/// Frames: 16:9 (padding above and below for YOLO), portrait (padding left and right) and an odd
/// size whose scaled sides need rounding.
const FRAME_SIZES: [(usize, usize); 3] = [(1920, 1080), (600, 800), (1281, 719)];

/// The models of a test, generated in a temporary folder.
struct Models {
    dir: tempfile::TempDir,
}

impl Models {
    /// `models`: (name, layout, input [height, width] or None for dynamic).
    fn make(models: &[(&str, &str, Option<[usize; 2]>)]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let boxes: Vec<Vec<f64>> = MODEL_BOXES
            .iter()
            .map(|b| {
                let mut row = b.corners.to_vec();
                row.extend([f64::from(b.score), f64::from(b.class)]);
                row
            })
            .collect();
        let spec: Vec<serde_json::Value> = models
            .iter()
            .map(|(name, layout, input)| serde_json::json!({"name": name, "layout": layout, "input": input, "boxes": boxes}))
            .collect();
        let spec = serde_json::to_string(&spec).unwrap();
        common::run_reference("make_detectors.py", &[dir.path().to_str().unwrap(), &spec]);
        Models { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(format!("{name}.onnx"))
    }
}

fn load(path: &Path, options: &DetectorOptions) -> sapiens_stream::Result<PersonDetector> {
    let environment = runtime::environment(None).expect("ONNX Runtime from the project's .venv");
    PersonDetector::load(path, environment, options)
}

fn detect(detector: &mut PersonDetector, width: usize, height: usize) -> Vec<PersonBox> {
    let frame = vec![90_u8; width * height * 3];
    let view = ImageView::packed(&frame, width, height, PixelFormat::Rgb);
    detector.detect(&view).unwrap()
}

/// Where a box in input pixels lands in a `frame_w x frame_h` frame, clipped to the frame:
/// - mmdet: mmcv rescales by `min(W / w, H / h)` with sides `int(side * scale + 0.5)`, pads at the
///   bottom/right, and divides boxes by the per-axis factor `new side / side`;
/// - ultralytics: gain `min(W / w, H / h)`, sides `round(side * gain)`, padding
///   `round((W - new_w) / 2 - 0.1)` before the image; boxes lose the padding, then the gain.
fn expected_in_frame(
    layout: &str,
    b: &ModelBox,
    frame: (usize, usize),
    input: (usize, usize),
) -> [f64; 4] {
    let (fw, fh) = (frame.0 as f64, frame.1 as f64);
    let (iw, ih) = (input.0 as f64, input.1 as f64);
    let gain = (iw / fw).min(ih / fh);
    let (scale_x, scale_y, left, top) = if layout == "rtmdet" {
        let (new_w, new_h) = ((fw * gain + 0.5).floor(), (fh * gain + 0.5).floor());
        (new_w / fw, new_h / fh, 0.0, 0.0)
    } else {
        let (new_w, new_h) = ((fw * gain).round_ties_even(), (fh * gain).round_ties_even());
        let before = |pad: f64| (pad / 2.0 - 0.1).round_ties_even();
        (gain, gain, before(iw - new_w), before(ih - new_h))
    };
    let [x1, y1, x2, y2] = b.corners;
    let x = |v: f64| ((v - left) / scale_x).clamp(0.0, fw);
    let y = |v: f64| ((v - top) / scale_y).clamp(0.0, fh);
    [x(x1), y(y1), x(x2), y(y2)]
}

fn assert_persons(found: &[PersonBox], expected: &[(ModelBox, [f64; 4])], context: &str) {
    let summary = format!("{context}: found {found:?}, expected {expected:?}");
    assert_eq!(found.len(), expected.len(), "{summary}");
    for (person, (model, corners)) in found.iter().zip(expected) {
        assert_eq!(person.score, model.score, "{summary}");
        let got = [person.x1, person.y1, person.x2, person.y2];
        for (g, e) in got.iter().zip(corners) {
            assert!((f64::from(*g) - e).abs() <= 1.0, "{summary}");
        }
    }
}

/// Runs `layout`'s model on every frame size and expects exactly persons A then B.
fn check_boxes_land_in_frame(layout: &str, model: &Path, input: (usize, usize)) {
    let mut detector = load(model, &DetectorOptions::default()).unwrap();
    for (w, h) in FRAME_SIZES {
        let found = detect(&mut detector, w, h);
        let expected =
            [PERSON_A, PERSON_B].map(|b| (b, expected_in_frame(layout, &b, (w, h), input)));
        assert_persons(
            &found,
            &expected,
            &format!("{layout} {}x{} input, {w}x{h} frame", input.0, input.1),
        );
    }
}

#[test]
fn rtmdet_boxes_land_in_frame_pixels() {
    let models = Models::make(&[
        ("rtmdet", "rtmdet", Some([640, 640])),
        ("rtmdet_dynamic", "rtmdet", None),
    ]);
    let detector = load(&models.path("rtmdet"), &DetectorOptions::default()).unwrap();
    assert_eq!(detector.layout(), DetectorLayout::RtmDet);
    check_boxes_land_in_frame("rtmdet", &models.path("rtmdet"), (640, 640));
    // A dynamic height and width fall back to 640 x 640.
    check_boxes_land_in_frame("rtmdet", &models.path("rtmdet_dynamic"), (640, 640));
}

#[test]
fn yolo_boxes_land_in_frame_pixels() {
    let models = Models::make(&[
        ("yolo", "yolo", Some([640, 640])),
        ("yolo_wide", "yolo", Some([384, 640])),
    ]);
    let detector = load(&models.path("yolo"), &DetectorOptions::default()).unwrap();
    assert_eq!(detector.layout(), DetectorLayout::Yolo);
    check_boxes_land_in_frame("yolo", &models.path("yolo"), (640, 640));
    // A 640 wide x 384 high input: the input size comes from the model.
    check_boxes_land_in_frame("yolo", &models.path("yolo_wide"), (640, 384));
}

#[test]
fn options_set_the_score_threshold_and_the_nms_overlap() {
    let models = Models::make(&[("yolo", "yolo", Some([640, 640]))]);
    let (frame, input) = ((1920, 1080), (640, 640));
    let expect = |boxes: &[ModelBox]| -> Vec<(ModelBox, [f64; 4])> {
        boxes
            .iter()
            .map(|b| (*b, expected_in_frame("yolo", b, frame, input)))
            .collect()
    };

    let low_threshold = DetectorOptions {
        score_threshold: 0.05,
        ..DetectorOptions::default()
    };
    let found = detect(
        &mut load(&models.path("yolo"), &low_threshold).unwrap(),
        frame.0,
        frame.1,
    );
    assert_persons(
        &found,
        &expect(&[PERSON_A, PERSON_B, FAINT_PERSON]),
        "threshold 0.05",
    );

    let loose_nms = DetectorOptions {
        nms_iou: 0.95,
        ..DetectorOptions::default()
    };
    let found = detect(
        &mut load(&models.path("yolo"), &loose_nms).unwrap(),
        frame.0,
        frame.1,
    );
    assert_persons(
        &found,
        &expect(&[PERSON_A, PERSON_B, PERSON_A_DUPLICATE]),
        "NMS IoU 0.95",
    );
}

#[test]
fn a_model_of_another_layout_is_refused() {
    let models = Models::make(&[("yolo_nms", "yolo_nms", Some([640, 640]))]);
    let path = models.path("yolo_nms");
    let Err(error) = load(&path, &DetectorOptions::default()) else {
        panic!("a (1, 300, 6) output was accepted");
    };
    assert!(matches!(error, Error::Model { .. }), "{error:?}");
    let message = error.to_string();
    assert_eq!(message.lines().count(), 1, "{message}");
    for part in [
        path.to_str().unwrap(),
        "'output0'",
        "(1, 300, 6)",
        "RTMDet",
        "'dets'",
        "'labels'",
        "YOLO",
        "(1, 4 + classes, anchors)",
    ] {
        assert!(message.contains(part), "{part:?} missing from: {message}");
    }
}

#[test]
fn a_file_that_is_not_a_model_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.onnx");
    let error = load(&missing, &DetectorOptions::default())
        .err()
        .unwrap()
        .to_string();
    assert!(
        error.contains("missing.onnx") && error.contains("no such file"),
        "{error}"
    );

    let junk = dir.path().join("junk.onnx");
    std::fs::write(&junk, b"not a model").unwrap();
    let error = load(&junk, &DetectorOptions::default())
        .err()
        .unwrap()
        .to_string();
    assert!(
        error.contains("junk.onnx") && error.lines().count() == 1,
        "{error}"
    );
}

/// A frame with gradients, stripes, a checker and noise, packed RGB.
fn test_frame(w: usize, h: usize) -> Vec<u8> {
    let mut state = 0x2545_F491_4F6C_DD1D_u64 ^ (w * h) as u64;
    let mut noise = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state >> 56) as u8
    };
    let mut frame = Vec::with_capacity(w * h * 3);
    for y in 0..h {
        for x in 0..w {
            let pixel = if x < w / 2 {
                [
                    (x * 255 / w) as u8,
                    (y * 255 / h) as u8,
                    ((x / 4 + y / 3) % 2 * 255) as u8,
                ]
            } else if y < h / 2 {
                [
                    if x % 2 == 0 { 250 } else { 5 },
                    noise(),
                    (y % 7 * 36) as u8,
                ]
            } else {
                [noise(), noise(), noise()]
            };
            frame.extend(pixel);
        }
    }
    frame
}

/// The frame as blue, green, red, alpha with a junk alpha.
fn to_bgra(rgb: &[u8]) -> Vec<u8> {
    rgb.chunks_exact(3)
        .flat_map(|p| [p[2], p[1], p[0], 0x5A])
        .collect()
}

#[test]
fn letterbox_input_matches_opencv() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("rtmdet", DetectorLayout::RtmDet, (1920, 1080), (640, 640)),
        ("rtmdet", DetectorLayout::RtmDet, (601, 799), (640, 640)),
        ("yolo", DetectorLayout::Yolo, (1281, 719), (640, 640)),
        ("yolo", DetectorLayout::Yolo, (600, 800), (640, 384)),
        // Upscaling a small frame.
        ("yolo", DetectorLayout::Yolo, (320, 250), (640, 640)),
    ];
    for (name, layout, (w, h), (input_w, input_h)) in cases {
        let rgb = test_frame(w, h);
        let image = dir.path().join("frame.npy");
        let reference = dir.path().join("reference.npy");
        common::write_npy_u8(&image, &[h as u64, w as u64, 3], &rgb);
        let printed = common::run_reference(
            "letterbox_reference.py",
            &[
                image.to_str().unwrap(),
                name,
                &input_w.to_string(),
                &input_h.to_string(),
                reference.to_str().unwrap(),
            ],
        );
        let std: Vec<f32> = serde_json::from_value(
            serde_json::from_str::<serde_json::Value>(&printed).unwrap()["std"].clone(),
        )
        .unwrap();
        let (shape, expected) = common::read_npy_f32(&reference);
        assert_eq!(shape, [3, input_h as u64, input_w as u64]);

        let bgra = to_bgra(&rgb);
        let views = [
            ImageView::packed(&rgb, w, h, PixelFormat::Rgb),
            ImageView::packed(&bgra, w, h, PixelFormat::Bgra),
        ];
        let mut input = LetterboxInput::new(layout, input_w, input_h);
        for view in views {
            input.prepare(&view);
            let plane_len = input_w * input_h;
            let (mut max_diff, mut sum_diff) = (0.0_f32, 0.0_f64);
            for (i, (ours, theirs)) in input.tensor().iter().zip(&expected).enumerate() {
                let diff = (ours - theirs).abs() * std[i / plane_len];
                max_diff = max_diff.max(diff);
                sum_diff += f64::from(diff);
            }
            let mean_diff = sum_diff / expected.len() as f64;
            let context = format!("{name} {w}x{h} {:?} -> {input_w}x{input_h}", view.format);
            assert!(
                max_diff <= 1.0,
                "{context}: max abs diff {max_diff} on the 0..255 scale"
            );
            assert!(mean_diff <= 0.01, "{context}: mean abs diff {mean_diff}");
            eprintln!(
                "{context}: max abs diff {max_diff:.2e}, mean {mean_diff:.2e} (0..255 scale)"
            );
        }
    }
}

fn write_boxes(text: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("boxes.jsonl");
    std::fs::write(&path, text).unwrap();
    (dir, path)
}

fn person(x1: f32, y1: f32, x2: f32, y2: f32, score: f32) -> PersonBox {
    PersonBox {
        x1,
        y1,
        x2,
        y2,
        score,
    }
}

#[test]
fn boxes_file_gives_each_frame_its_boxes_by_score() {
    let (_dir, path) = write_boxes(concat!(
        "{\"frame\": 0, \"boxes\": [[10, 20, 110, 220, 0.5], [300.5, 40, 400, 240.25, 0.875]]}\n",
        "\n",
        "{\"frame\": 2, \"boxes\": [[1, 2, 3, 4]], \"source\": \"hand-labelled\"}\n",
        "{\"frame\": 5, \"boxes\": []}\n",
    ));
    let file = BoxesFile::load(&path).unwrap();
    assert_eq!(
        file.boxes_for(0),
        [
            person(300.5, 40.0, 400.0, 240.25, 0.875),
            person(10.0, 20.0, 110.0, 220.0, 0.5)
        ]
    );
    assert_eq!(file.boxes_for(2), [person(1.0, 2.0, 3.0, 4.0, 1.0)]);
    for frame in [1, 3, 5, 1_000_000] {
        assert!(file.boxes_for(frame).is_empty(), "frame {frame}");
    }
}

#[test]
fn malformed_boxes_lines_are_refused_with_their_line_number() {
    let good = "{\"frame\": 0, \"boxes\": [[0, 0, 10, 10]]}\n";
    let cases = [
        ("{\"frame\": 1, \"boxes\": [[0, 0, 10, 10]}", "line 2"),
        ("{\"frame\": -1, \"boxes\": []}", "line 2"),
        ("{\"boxes\": [[0, 0, 10, 10]]}", "frame"),
        ("{\"frame\": 1, \"boxes\": [[0, 0, 10]]}", "3 numbers"),
        ("{\"frame\": 1, \"boxes\": [[0, 0, 10, \"a\"]]}", "line 2"),
        ("{\"frame\": 1, \"boxes\": [[10, 0, 5, 10, 0.9]]}", "empty"),
        (
            "{\"frame\": 0, \"boxes\": [[0, 0, 10, 10]]}",
            "frame 0 already",
        ),
    ];
    for (line, part) in cases {
        let (_dir, path) = write_boxes(&format!("{good}{line}\n"));
        let error = BoxesFile::load(&path)
            .err()
            .unwrap_or_else(|| panic!("{line} was accepted"));
        assert!(
            matches!(error, Error::BoxesFile { line: 2, .. }),
            "{line}: {error:?}"
        );
        let message = error.to_string();
        let named = message.contains(path.to_str().unwrap())
            && message.contains("line 2")
            && message.contains(part);
        assert!(named && message.lines().count() == 1, "{line}: {message}");
    }
    let error = BoxesFile::load(Path::new("/nonexistent/boxes.jsonl"))
        .err()
        .unwrap()
        .to_string();
    assert!(error.contains("/nonexistent/boxes.jsonl"), "{error}");
}
