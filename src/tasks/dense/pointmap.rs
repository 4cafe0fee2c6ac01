//! Sapiens2 pointmap post-processing (the official `vis_pointmap.py`): the model's canonical
//! point map divided by its scale gives metric camera-frame points (x right, y down, z forward,
//! metres); the padding of the input comes off, the points are resized to the frame, and z is
//! the frame's depth. Point clouds are written as binary PLY.

use std::io::{BufWriter, Write};
use std::path::Path;

use super::{crop_planes, output_error, resize_planar};
use crate::error::Result;
use crate::preprocess::letterbox::Letterbox;
use crate::tasks::{INPUT_WIDTH, OutputLayout};

/// The model's scale and what it says of the camera.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PointmapScale {
    /// Metric points are the canonical map divided by this.
    pub scale: f32,
    /// Horizontal focal length in frame pixels: the canonical focal (the input's width, 768
    /// pixels) over the scale is the focal in input pixels, which the letterbox scaled.
    pub focal_length_px: f32,
}

/// Metric points at frame size into `points` (x, y, z planes of `frame_w x frame_h`) from a
/// pointmap model's output (x, y, z and the scale plane at the model's resolution) for a frame
/// fitted into the input by `letterbox`. `scratch` holds the cropped map between the steps.
/// A scale that is not a positive number gives every point NaN and a NaN focal length.
///
/// # Panics
/// If `raw` does not hold one item of `layout`, or `layout` is not a pointmap's.
pub fn metric_points(
    raw: &[f32],
    layout: OutputLayout,
    letterbox: &Letterbox,
    (frame_w, frame_h): (usize, usize),
    scratch: &mut Vec<f32>,
    points: &mut Vec<f32>,
) -> PointmapScale {
    assert!(layout.is_pointmap(), "not a pointmap layout: {layout:?}");
    assert_eq!(raw.len(), layout.item_len(), "pointmap output size");
    let plane = layout.height * layout.width;
    let scale = raw[3 * plane];
    if !(scale > 0.0 && scale.is_finite()) {
        // No metric points: every depth and point of the frame is missing, not behind the
        // camera or at infinity (a trained model's scale is positive; random weights' may not).
        points.clear();
        points.resize(3 * frame_w * frame_h, f32::NAN);
        return PointmapScale {
            scale,
            focal_length_px: f32::NAN,
        };
    }
    crop_planes(
        &raw[..3 * plane],
        (3, layout.height, layout.width),
        letterbox,
        scratch,
    );
    for value in scratch.iter_mut() {
        *value /= scale;
    }
    points.resize(3 * frame_w * frame_h, 0.0);
    resize_planar(
        scratch,
        3,
        letterbox.resized_h,
        letterbox.resized_w,
        frame_w,
        frame_h,
        points,
    );
    PointmapScale {
        scale,
        focal_length_px: (INPUT_WIDTH as f64 / f64::from(scale) / letterbox.scale_x) as f32,
    }
}

/// Writes the points (x, y, z planes of `width x height`) whose pixel is in the foreground (a
/// class above 0; every pixel without a class map) and whose coordinates are finite, as binary
/// little-endian PLY: float x, y, z in metres and uchar red, green, blue from `rgb` (the frame,
/// 3 bytes a pixel). Returns the number of points.
///
/// # Panics
/// If `points`, `rgb` or `foreground` does not match the size.
pub fn write_ply(
    path: &Path,
    points: &[f32],
    rgb: &[u8],
    (width, height): (usize, usize),
    foreground: Option<&[u8]>,
) -> Result<usize> {
    let pixels = width * height;
    assert_eq!(points.len(), 3 * pixels, "points size");
    assert_eq!(rgb.len(), 3 * pixels, "colour size");
    let (xs, rest) = points.split_at(pixels);
    let (ys, zs) = rest.split_at(pixels);
    let kept: Vec<usize> = (0..pixels)
        .filter(|&i| foreground.is_none_or(|classes| classes[i] > 0))
        .filter(|&i| xs[i].is_finite() && ys[i].is_finite() && zs[i].is_finite())
        .collect();
    let write = || -> std::io::Result<()> {
        let mut out = BufWriter::new(std::fs::File::create(path)?);
        write!(
            out,
            "ply\nformat binary_little_endian 1.0\n\
             comment sapiens-stream Sapiens2 pointmap: metres, camera frame (x right, y down, z forward)\n\
             element vertex {}\n\
             property float x\nproperty float y\nproperty float z\n\
             property uchar red\nproperty uchar green\nproperty uchar blue\nend_header\n",
            kept.len()
        )?;
        for &i in &kept {
            for value in [xs[i], ys[i], zs[i]] {
                out.write_all(&value.to_le_bytes())?;
            }
            out.write_all(&rgb[3 * i..3 * i + 3])?;
        }
        out.flush()
    };
    write().map_err(|e| output_error(path, e))?;
    Ok(kept.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::preprocess::letterbox::Fit;
    use crate::tasks::{Family, INPUT_HEIGHT, POINTMAP_CHANNELS};

    fn layout() -> OutputLayout {
        OutputLayout {
            channels: POINTMAP_CHANNELS,
            height: INPUT_HEIGHT,
            width: INPUT_WIDTH,
            family: Family::Sapiens2,
        }
    }

    /// The letterbox of a 1920x1080 frame: its 64x36 stand-in's points come out.
    fn full_hd() -> Letterbox {
        Letterbox::new(Fit::CentredTruncated, 1920, 1080, INPUT_WIDTH, INPUT_HEIGHT)
    }

    /// `metric_points` of `raw` for [`full_hd`] at 64x36, into a buffer holding stale values.
    fn points_of(raw: &[f32]) -> (PointmapScale, Vec<f32>) {
        let (mut scratch, mut points) = (Vec::new(), vec![7.0; 5]);
        let scale = metric_points(
            raw,
            layout(),
            &full_hd(),
            (64, 36),
            &mut scratch,
            &mut points,
        );
        (scale, points)
    }

    /// A flat plane at 2 m, canonical values scaled by 0.5: the frame gets z = 4 m everywhere
    /// the frame is, whatever the padding held.
    #[test]
    fn map_over_scale_without_the_padding() {
        let plane = INPUT_HEIGHT * INPUT_WIDTH;
        let letterbox = full_hd();
        let mut raw = vec![0.0f32; layout().item_len()];
        raw[3 * plane..].fill(0.5);
        for y in 0..INPUT_HEIGHT {
            let inside = (letterbox.top..letterbox.top + letterbox.resized_h).contains(&y);
            raw[2 * plane + y * INPUT_WIDTH..][..INPUT_WIDTH].fill(if inside { 2.0 } else { 99.0 });
        }
        let (scale, points) = points_of(&raw);
        assert_eq!(scale.scale, 0.5);
        // 768 input pixels over 0.5, at 0.4 input pixels per frame pixel.
        assert!((scale.focal_length_px - 3840.0).abs() < 1e-2, "{scale:?}");
        assert!(points[2 * 64 * 36..].iter().all(|&z| z == 4.0));
    }

    #[test]
    fn a_scale_that_is_not_positive_gives_no_points() {
        let plane = INPUT_HEIGHT * INPUT_WIDTH;
        for bad in [0.0, -0.5, f32::NAN, f32::INFINITY] {
            let mut raw = vec![1.0f32; layout().item_len()];
            raw[3 * plane..].fill(bad);
            let (scale, points) = points_of(&raw);
            assert_eq!(points.len(), 3 * 64 * 36, "scale {bad}");
            assert!(points.iter().all(|p| p.is_nan()), "scale {bad}");
            assert!(scale.focal_length_px.is_nan(), "scale {bad}");
        }
    }

    #[test]
    fn ply_holds_the_foreground_points_with_their_colours() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cloud.ply");
        let points = [
            1.0,
            2.0,
            3.0,
            4.0,
            5.0,
            6.0,
            7.0,
            f32::NAN,
            9.0,
            10.0,
            11.0,
            12.0,
        ];
        let rgb: Vec<u8> = (0..12).collect();
        let foreground = [1, 0, 1, 1];
        let count = write_ply(&path, &points, &rgb, (2, 2), Some(&foreground)).unwrap();
        // Pixel 1 is background, pixel 3 has a NaN y.
        assert_eq!(count, 2);
        let bytes = std::fs::read(&path).unwrap();
        let header_end = bytes
            .windows(11)
            .position(|w| w == b"end_header\n")
            .unwrap()
            + 11;
        let header = std::str::from_utf8(&bytes[..header_end]).unwrap();
        assert!(header.contains("element vertex 2\n"), "{header}");
        let body = &bytes[header_end..];
        assert_eq!(body.len(), 2 * 15);
        let float = |at: usize| f32::from_le_bytes(body[at..at + 4].try_into().unwrap());
        assert_eq!([float(0), float(4), float(8)], [1.0, 5.0, 9.0]);
        assert_eq!(&body[12..15], &[0, 1, 2]);
        assert_eq!([float(15), float(19), float(23)], [3.0, 7.0, 11.0]);
        assert_eq!(&body[27..30], &[6, 7, 8]);
    }
}
