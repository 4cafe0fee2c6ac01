//! Frames for the GPU path: the source hands NV12/I420 over as the decoder made them, with the
//! strides, plane offsets and colour conversion (matrix, range) their caps declare, and the
//! kernels' colour conversion (its CPU twin here) reads them as GStreamer's own converter
//! does. The reference is `videoconvert` in a separate gst-launch-1.0 process, with chroma
//! resampling off (each 2x2 block shares its chroma sample, as in OpenCV and our kernels), to
//! 16-bit RGBA: its 8-bit path is itself off by up to 2 levels (it makes white Y=235 253).

mod common;

use std::path::Path;
use std::process::Command;

use sapiens_stream::frame::Frame;
use sapiens_stream::frame::{SourceLayout, YuvToRgb};
use sapiens_stream::source::{self, InputSpec, SourceOptions};

/// GStreamer's 16-bit path is within about 1.3 levels of the exact formula, ours (20-bit fixed
/// point) within 0.5; at a few sharp colour edges of compressed HD video they part further. A
/// wrong matrix or range is off by 7 to 40 levels on a quarter or more of the values of colour
/// bars, a wrong stride or plane offset by more.
const P99_LEVELS: u8 = 2;
const MEAN_LEVELS: f64 = 1.0;

const BT709_LIMITED: (f64, f64, bool) = (0.2126, 0.0722, false);
const BT601_FULL: (f64, f64, bool) = (0.299, 0.114, true);

fn gst_launch(args: &[String]) {
    let status = Command::new("gst-launch-1.0")
        .arg("-q")
        .args(args)
        .status()
        .expect("gst-launch-1.0 (scripts/setup.sh installs it)");
    assert!(status.success(), "gst-launch-1.0 {}", args.join(" "));
}

fn words(text: &str) -> Vec<String> {
    text.split_whitespace().map(str::to_owned).collect()
}

/// SMPTE colour bars, encoded by GStreamer's tools: saturated colours that tell matrices apart.
fn write_clip(path: &Path, encode: &str, (width, height): (u32, u32), frames: u32) {
    let mut args = words(&format!(
        "videotestsrc pattern=smpte num-buffers={frames} ! \
         video/x-raw,format=I420,width={width},height={height},framerate=25/1 ! {encode}"
    ));
    args.push(format!("location={}", path.display()));
    gst_launch(&args);
}

/// Every frame of `source` (gst-launch words) as packed RGB, converted by `videoconvert` to
/// 16 bits a channel and rounded to 8.
fn reference_rgb(source: &str, dir: &Path, (width, height): (usize, usize)) -> Vec<Vec<u8>> {
    let out = dir.join("reference.rgba64");
    let mut args = words(&format!(
        "{source} ! videoconvert chroma-mode=none dither=none ! \
         video/x-raw,format=RGBA64_LE ! filesink"
    ));
    args.push(format!("location={}", out.display()));
    gst_launch(&args);
    let bytes = std::fs::read(&out).unwrap();
    let to_8_bits = |v: &[u8]| ((u32::from(u16::from_le_bytes([v[0], v[1]])) + 128) / 257) as u8;
    bytes
        .chunks(width * height * 8)
        .map(|frame| {
            frame
                .chunks_exact(8)
                .flat_map(|pixel| pixel[..6].chunks_exact(2).map(to_8_bits))
                .collect()
        })
        .collect()
}

fn frames(input: &str, yuv_frames: bool) -> Vec<Frame> {
    let options = SourceOptions {
        yuv_frames,
        ..SourceOptions::default()
    };
    let mut source = source::open(&InputSpec::parse(input).unwrap(), &options).unwrap();
    std::iter::from_fn(|| source.next_frame().unwrap()).collect()
}

/// How far two RGB images are apart, in levels.
struct Differences {
    max: u8,
    /// 99 % of the values are this close or closer.
    p99: u8,
    mean: f64,
}

fn differences(rgb: &[u8], reference: &[u8]) -> Differences {
    assert_eq!(rgb.len(), reference.len(), "pixel counts");
    let mut diffs: Vec<u8> = rgb
        .iter()
        .zip(reference)
        .map(|(a, b)| a.abs_diff(*b))
        .collect();
    let mean = diffs.iter().map(|&d| f64::from(d)).sum::<f64>() / diffs.len() as f64;
    diffs.sort_unstable();
    Differences {
        max: diffs.last().copied().unwrap_or(0),
        p99: diffs[diffs.len() * 99 / 100],
        mean,
    }
}

struct Case {
    name: &'static str,
    /// What `--input` names.
    input: String,
    /// The same frames for gst-launch-1.0, before the reference's converter.
    reference_source: String,
    size: (usize, usize),
    layout: SourceLayout,
    yuv: YuvToRgb,
}

fn check(case: &Case, dir: &Path) {
    let decoded = frames(&case.input, true);
    let reference = reference_rgb(&case.reference_source, dir, case.size);
    assert_eq!(decoded.len(), reference.len(), "{}: frame count", case.name);
    for (index, (frame, expected)) in decoded.iter().zip(&reference).enumerate() {
        let g = frame.geometry;
        assert_eq!((g.width, g.height), case.size, "{}", case.name);
        assert_eq!(g.layout, case.layout, "{}: frames as decoded", case.name);
        assert_eq!(g.yuv, case.yuv, "{}: the caps' colorimetry", case.name);
        let d = differences(&frame.to_rgb(), expected);
        let line = format!(
            "{} frame {index}: max {}, p99 {}, mean {:.3} levels from videoconvert",
            case.name, d.max, d.p99, d.mean
        );
        eprintln!("{line}");
        assert!(d.p99 <= P99_LEVELS && d.mean <= MEAN_LEVELS, "{line}");
    }
}

#[test]
fn decoded_frames_keep_their_layout_and_colours() {
    let dir = tempfile::tempdir().unwrap();
    let weights = |(kr, kb, full)| YuvToRgb::from_weights(kr, kb, full);
    let h264 = "x264enc speed-preset=ultrafast ! h264parse ! mp4mux ! filesink";
    let clip = |name: &str, encode: &str, size: (u32, u32)| {
        let path = dir.path().join(name);
        write_clip(&path, encode, size, 4);
        path.display().to_string()
    };
    let sd = clip("sd.mp4", h264, (320, 240));
    let hd = clip("hd.mp4", h264, (1280, 720));
    let mjpeg = clip("webcam.avi", "jpegenc ! avimux ! filesink", (320, 240));
    let decode = |path: &str| format!("filesrc location={path} ! decodebin");
    let cases = [
        Case {
            name: "H.264 SD",
            input: sd.clone(),
            reference_source: decode(&sd),
            size: (320, 240),
            layout: SourceLayout::I420,
            yuv: YuvToRgb::BT601_LIMITED,
        },
        Case {
            name: "H.264 HD",
            input: hd.clone(),
            reference_source: decode(&hd),
            size: (1280, 720),
            layout: SourceLayout::I420,
            yuv: weights(BT709_LIMITED),
        },
        Case {
            name: "MJPEG (as webcams send)",
            input: mjpeg.clone(),
            reference_source: decode(&mjpeg),
            size: (320, 240),
            layout: SourceLayout::I420,
            yuv: weights(BT601_FULL),
        },
        Case {
            // Odd sizes: padded rows, chroma planes rounded up.
            name: "test pattern 321x241",
            input: "test://smpte?width=321&height=241&fps=25&frames=3".into(),
            reference_source: "videotestsrc pattern=smpte num-buffers=3 ! \
                video/x-raw,format=I420,width=321,height=241,framerate=25/1"
                .into(),
            size: (321, 241),
            layout: SourceLayout::I420,
            yuv: YuvToRgb::BT601_LIMITED,
        },
    ];
    for case in &cases {
        check(case, dir.path());
    }
}

#[test]
fn the_cpu_path_still_gets_rgba() {
    for frame in frames("test://smpte?width=321&height=241&fps=25&frames=2", false) {
        assert!(frame.is_rgba());
        assert!(frame.geometry.stride >= 321 * 4);
    }
}
