//! The overlay drawn into a frame's own NV12/I420 planes against the overlay drawn in RGBA and
//! converted back with GStreamer, as the encoder did before frames stayed as decoded. The
//! frames, the RGBA conversions and the conversions back are GStreamer's (`videotestsrc`,
//! `videoconvert` in gst-launch-1.0), independent of the code under test.
//!
//! The converter runs without chroma resampling or dithering, so that its round trip of the
//! undrawn frame (4:2:0 -> RGBA -> 4:2:0; the `ball` pattern, inside the RGB gamut) loses only
//! rounding, and what remains is the overlay's own difference, stated as a PSNR per plane kind.

use std::path::Path;
use std::process::Command;

use sapiens_stream::frame::{FrameGeometry, SourceLayout, YuvToRgb};
use sapiens_stream::render::tracks::TrackMark;
use sapiens_stream::render::{Banner, Canvas, PoseStyle};
use sapiens_stream::tasks::keypoint_sets;

const WIDTH: usize = 320;
const HEIGHT: usize = 240;
/// GStreamer's round trip of the undrawn frame (about 61 dB: rounding only).
const MIN_ROUND_TRIP_DB: f64 = 50.0;
/// Luma is blended per pixel either way: rounding apart, the same (measured 50 to 59 dB).
const MIN_LUMA_DB: f64 = 45.0;
/// Chroma differs where the overlay's edges cross a 2x2 block: the YUV overlay takes the
/// block's mean, GStreamer's converter one of its pixels (measured 31 to 39 dB on these
/// overlays; U and V swapped or left undrawn: under 20 dB).
const MIN_CHROMA_DB: f64 = 28.0;

fn gst_launch(pipeline: &str, output: &Path) {
    let mut args: Vec<String> = pipeline.split_whitespace().map(str::to_owned).collect();
    args.push(format!("location={}", output.display()));
    // A pipeline that cannot negotiate may wait forever: `timeout` ends it.
    let status = Command::new("timeout")
        .args(["60", "gst-launch-1.0", "-q"])
        .args(&args)
        .status()
        .expect("gst-launch-1.0 (scripts/setup.sh installs it)");
    assert!(status.success(), "gst-launch-1.0 {pipeline}");
}

/// A 4:2:0 layout and a colorimetry, as GStreamer names them.
struct Case {
    layout: SourceLayout,
    format: &'static str,
    colorimetry: &'static str,
    yuv: YuvToRgb,
}

impl Case {
    /// Raw-video caps of `format`, with the case's colorimetry when it is YUV.
    fn caps(&self, format: &str) -> String {
        format!(
            "video/x-raw,format={format},width={WIDTH},height={HEIGHT},framerate=25/1{}",
            self.colorimetry_of(format)
        )
    }

    fn colorimetry_of(&self, format: &str) -> String {
        match format {
            "RGBA" => String::new(),
            _ => format!(",colorimetry={}", self.colorimetry),
        }
    }

    /// One frame of SMPTE bars in the case's layout and colorimetry.
    fn frame(&self, dir: &Path) -> Vec<u8> {
        let path = dir.join("frame.yuv");
        gst_launch(
            &format!(
                "videotestsrc pattern=ball num-buffers=1 ! {} ! filesink",
                self.caps(self.format)
            ),
            &path,
        );
        std::fs::read(path).unwrap()
    }

    /// `bytes` of format `from` converted by videoconvert to format `to`.
    fn convert(&self, bytes: &[u8], from: &str, to: &str, dir: &Path) -> Vec<u8> {
        let (input, output) = (
            dir.join(format!("in.{from}")),
            dir.join(format!("out.{to}")),
        );
        std::fs::write(&input, bytes).unwrap();
        gst_launch(
            &format!(
                "filesrc location={} ! rawvideoparse use-sink-caps=false format={} width={WIDTH} \
                 height={HEIGHT} ! capssetter replace=false caps={} ! videoconvert chroma-mode=none dither=none ! {} ! filesink",
                input.display(),
                from.to_ascii_lowercase(),
                self.caps(from),
                self.caps(to)
            ),
            &output,
        );
        std::fs::read(output).unwrap()
    }

    fn geometry(&self) -> FrameGeometry {
        FrameGeometry {
            yuv: self.yuv,
            ..FrameGeometry::yuv420(WIDTH, HEIGHT, self.layout)
        }
    }
}

fn cases() -> Vec<Case> {
    let bt709 = YuvToRgb::from_weights(0.2126, 0.0722, false);
    vec![
        Case {
            layout: SourceLayout::I420,
            format: "I420",
            colorimetry: "bt601",
            yuv: YuvToRgb::BT601_LIMITED,
        },
        Case {
            layout: SourceLayout::Nv12,
            format: "NV12",
            colorimetry: "bt601",
            yuv: YuvToRgb::BT601_LIMITED,
        },
        Case {
            layout: SourceLayout::I420,
            format: "I420",
            colorimetry: "bt709",
            yuv: bt709,
        },
        Case {
            layout: SourceLayout::Nv12,
            format: "NV12",
            colorimetry: "bt709",
            yuv: bt709,
        },
    ]
}

/// An overlay to draw, on either canvas.
#[derive(Clone, Copy, Debug)]
enum Overlay {
    Classes,
    Depth,
    Normals,
    Pose,
    Tracks,
    Banner,
}

/// Classes in bands and discs, so that class edges cross chroma blocks at every phase.
fn class_map() -> Vec<u8> {
    (0..WIDTH * HEIGHT)
        .map(|i| {
            let (x, y) = ((i % WIDTH) as f32, (i / WIDTH) as f32);
            let disc = (x - 160.0).hypot(y - 120.0) < 70.0;
            match (disc, (x as usize / 23 + y as usize / 17) % 5) {
                (false, 0) => 0,
                (false, band) => band as u8 * 5,
                (true, _) => 1 + (x as usize / 9) as u8 % 27,
            }
        })
        .collect()
}

fn depth() -> Vec<f32> {
    (0..WIDTH * HEIGHT)
        .map(|i| ((i % WIDTH) as f32 / WIDTH as f32 + (i / WIDTH) as f32 / HEIGHT as f32) / 2.0)
        .collect()
}

fn normals() -> Vec<f32> {
    let plane = WIDTH * HEIGHT;
    let mut normals = vec![0.0f32; 3 * plane];
    for i in 0..plane {
        let (x, y) = ((i % WIDTH) as f32 / 50.0, (i / WIDTH) as f32 / 40.0);
        let n = [x.sin(), y.cos(), 0.5];
        let length = n.iter().map(|v| v * v).sum::<f32>().sqrt();
        for axis in 0..3 {
            normals[axis * plane + i] = n[axis] / length;
        }
    }
    normals
}

fn person() -> Vec<[f32; 3]> {
    vec![
        [60.0, 40.0, 0.9],
        [100.5, 90.25, 0.9],
        [170.0, 95.0, 0.8],
        [230.75, 180.5, 0.95],
        [121.0, 201.0, 0.9],
        [300.0, 30.0, 0.1],
    ]
}

fn draw(canvas: &mut Canvas, overlay: Overlay) {
    let classes = class_map();
    let parts = keypoint_sets::class_set(28).unwrap();
    match overlay {
        Overlay::Classes => canvas.blend_class_map(&classes, &parts.palette, 0.5),
        Overlay::Depth => canvas.draw_depth(&depth(), Some(&classes)),
        Overlay::Normals => canvas.draw_normals(&normals(), Some(&classes)),
        Overlay::Tracks => {
            // Boxes at odd and even places, labels of one and three digits.
            let marks = [
                TrackMark {
                    id: 7,
                    bbox: [31.0, 40.0, 150.0, 201.0],
                },
                TrackMark {
                    id: 123,
                    bbox: [170.5, 25.5, 290.0, 230.0],
                },
            ];
            canvas.draw_tracks(&marks).unwrap();
        }
        Overlay::Banner => {
            let banner = Banner::new("RANDOM-WEIGHT TEST MODEL", WIDTH, HEIGHT).unwrap();
            canvas.draw_banner(&banner).unwrap();
        }
        Overlay::Pose => {
            let skeleton = [[0, 1], [1, 2], [2, 3], [1, 4], [4, 5]];
            let links = [
                [255, 0, 0],
                [0, 255, 0],
                [0, 0, 255],
                [255, 255, 0],
                [255, 0, 255],
            ];
            let points = [[0, 255, 255]; 6];
            let style = PoseStyle {
                radius: 5.0,
                thickness: 3.0,
                ..PoseStyle::new(&skeleton, &links, &points)
            };
            let person = person();
            canvas.draw_pose(&[&person[..]], &style).unwrap();
        }
    }
}

/// PSNR of two 8-bit images, in dB.
fn psnr(a: &[u8], b: &[u8]) -> f64 {
    assert_eq!(a.len(), b.len());
    let squared: f64 = a
        .iter()
        .zip(b)
        .map(|(&x, &y)| (f64::from(x) - f64::from(y)).powi(2))
        .sum();
    let mse = squared / a.len() as f64;
    10.0 * (255.0 * 255.0 / mse.max(1e-10)).log10()
}

/// The overlay drawn on `frame` in YUV, and in RGBA then converted back by GStreamer.
fn both_ways(case: &Case, frame: &[u8], overlay: Overlay, dir: &Path) -> (Vec<u8>, Vec<u8>) {
    let mut yuv = frame.to_vec();
    draw(
        &mut Canvas::new(&mut yuv, &case.geometry()).unwrap(),
        overlay,
    );
    let mut rgba = case.convert(frame, case.format, "RGBA", dir);
    let rgba_geometry = FrameGeometry::packed(WIDTH, HEIGHT, SourceLayout::Rgbx);
    draw(
        &mut Canvas::new(&mut rgba, &rgba_geometry).unwrap(),
        overlay,
    );
    let back = case.convert(&rgba, "RGBA", case.format, dir);
    (yuv, back)
}

#[test]
fn yuv_overlay_matches_the_rgba_overlay_converted_by_gstreamer() {
    let dir = tempfile::tempdir().unwrap();
    for case in cases() {
        let frame = case.frame(dir.path());
        let round_trip = case.convert(
            &case.convert(&frame, case.format, "RGBA", dir.path()),
            "RGBA",
            case.format,
            dir.path(),
        );
        assert!(
            psnr(&frame, &round_trip) >= MIN_ROUND_TRIP_DB,
            "GStreamer's own round trip is lossy: the comparison would mean nothing"
        );
        for overlay in [
            Overlay::Classes,
            Overlay::Depth,
            Overlay::Normals,
            Overlay::Pose,
            Overlay::Tracks,
            Overlay::Banner,
        ] {
            let (yuv, rgba) = both_ways(&case, &frame, overlay, dir.path());
            assert_ne!(yuv, frame, "{overlay:?} drew nothing");
            let luma = WIDTH * HEIGHT;
            let (luma_db, chroma_db) = (
                psnr(&yuv[..luma], &rgba[..luma]),
                psnr(&yuv[luma..], &rgba[luma..]),
            );
            let what = format!("{} {} {overlay:?}", case.format, case.colorimetry);
            eprintln!("{what}: luma {luma_db:.1} dB, chroma {chroma_db:.1} dB");
            assert!(luma_db >= MIN_LUMA_DB, "{what}: luma {luma_db:.1} dB");
            assert!(
                chroma_db >= MIN_CHROMA_DB,
                "{what}: chroma {chroma_db:.1} dB"
            );
        }
    }
}

#[test]
fn luma_and_chroma_of_a_flat_overlay_are_the_colour_blended_exactly() {
    // A whole-frame class of one colour at alpha 0.5 over grey: every sample is the mean of the
    // frame's and the colour's, the colour's YUV being the matrix's (BT.601: red is 81/82, 90,
    // 240 in studio range).
    let case = &cases()[0];
    let geometry = case.geometry();
    let mut frame = vec![128u8; geometry.len()];
    let red = [[0, 0, 0], [255, 0, 0]];
    Canvas::new(&mut frame, &geometry).unwrap().blend_class_map(
        &vec![1u8; WIDTH * HEIGHT],
        &red,
        0.5,
    );
    let (luma, chroma) = frame.split_at(WIDTH * HEIGHT);
    let (u, v) = chroma.split_at(chroma.len() / 2);
    let near = |plane: &[u8], want: f64| plane.iter().all(|&s| (f64::from(s) - want).abs() <= 1.0);
    assert!(near(luma, (128.0 + 81.5) / 2.0), "luma {:?}", &luma[..4]);
    assert!(near(u, (128.0 + 90.0) / 2.0), "u {:?}", &u[..4]);
    assert!(near(v, (128.0 + 240.0) / 2.0), "v {:?}", &v[..4]);
}

#[test]
fn planes_out_of_order_are_refused() {
    let mut geometry = FrameGeometry::yuv420(8, 8, SourceLayout::I420);
    geometry.chroma = [10, 0];
    let mut bytes = vec![0u8; geometry.len() + 64];
    let error = Canvas::new(&mut bytes, &geometry)
        .err()
        .unwrap()
        .to_string();
    assert!(error.contains("overlap or are out of order"), "{error}");
}
