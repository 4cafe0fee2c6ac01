//! What `--input` names: a file, a URI, a webcam, a test pattern, an image or a folder of images.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

pub(super) const IMAGE_EXTENSIONS: &[&str] = &["png", "jpg", "jpeg", "bmp", "webp", "tif", "tiff"];
const TEST_PATTERNS: &[&str] = &[
    "smpte",
    "snow",
    "black",
    "white",
    "red",
    "green",
    "blue",
    "checkers-1",
    "checkers-2",
    "checkers-4",
    "checkers-8",
    "circular",
    "blink",
    "smpte75",
    "zone-plate",
    "gamut",
    "chroma-zone-plate",
    "solid-color",
    "ball",
    "smpte100",
    "bar",
    "pinwheel",
    "spokes",
    "gradient",
    "colors",
];

/// What `--input` names.
#[derive(Clone, Debug, PartialEq)]
pub enum InputSpec {
    File(PathBuf),
    Uri(String),
    Webcam(PathBuf),
    Test(TestPattern),
    Image(PathBuf),
    ImageFolder(PathBuf),
}

/// `test://PATTERN?width=W&height=H&fps=F&frames=N`: GStreamer's videotestsrc.
#[derive(Clone, Debug, PartialEq)]
pub struct TestPattern {
    pub pattern: String,
    pub width: u32,
    pub height: u32,
    pub fps: u32,
    pub frames: Option<u32>,
}

impl InputSpec {
    pub fn parse(input: &str) -> Result<Self> {
        if input == "webcam" {
            return Ok(InputSpec::Webcam(PathBuf::from("/dev/video0")));
        }
        if let Some(device) = input.strip_prefix("v4l2://") {
            let device = if device.is_empty() {
                "/dev/video0"
            } else {
                device
            };
            return Ok(InputSpec::Webcam(PathBuf::from(device)));
        }
        if let Some(rest) = input.strip_prefix("test://") {
            return TestPattern::parse(rest).map(InputSpec::Test);
        }
        if let Some(path) = input.strip_prefix("file://") {
            return Self::from_path(Path::new(path));
        }
        if input.contains("://") {
            return Ok(InputSpec::Uri(input.to_owned()));
        }
        Self::from_path(Path::new(input))
    }

    fn from_path(path: &Path) -> Result<Self> {
        if !path.exists() {
            return Err(Error::InputMissing(path.to_owned()));
        }
        if path.is_dir() {
            return Ok(InputSpec::ImageFolder(path.to_owned()));
        }
        if has_image_extension(path) {
            return Ok(InputSpec::Image(path.to_owned()));
        }
        Ok(InputSpec::File(path.to_owned()))
    }

    /// Cameras: webcams and RTSP streams, which reconnect unless told otherwise.
    pub fn reconnects_by_default(&self) -> bool {
        match self {
            InputSpec::Webcam(_) => true,
            InputSpec::Uri(uri) => uri
                .split_once("://")
                .is_some_and(|(scheme, _)| scheme.starts_with("rtsp")),
            _ => false,
        }
    }
}

impl TestPattern {
    fn parse(rest: &str) -> Result<Self> {
        let invalid = |reason: String| Error::InputInvalid {
            input: format!("test://{rest}"),
            reason,
        };
        let (pattern, query) = rest.split_once('?').unwrap_or((rest, ""));
        let pattern = if pattern.is_empty() { "smpte" } else { pattern };
        if !TEST_PATTERNS.contains(&pattern) {
            return Err(invalid(format!(
                "unknown test pattern '{pattern}' (one of: {})",
                TEST_PATTERNS.join(", ")
            )));
        }
        let mut spec = TestPattern {
            pattern: pattern.to_owned(),
            width: 640,
            height: 480,
            fps: 30,
            frames: None,
        };
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair
                .split_once('=')
                .ok_or_else(|| invalid(format!("'{pair}' is not key=value")))?;
            let number: u32 = value.parse().ok().filter(|n| *n > 0).ok_or_else(|| {
                invalid(format!("{key} must be a positive integer, not '{value}'"))
            })?;
            match key {
                "width" => spec.width = number,
                "height" => spec.height = number,
                "fps" => spec.fps = number,
                "frames" => spec.frames = Some(number),
                _ => {
                    return Err(invalid(format!(
                        "unknown parameter '{key}' (width, height, fps, frames)"
                    )));
                }
            }
        }
        Ok(spec)
    }
}

pub(super) fn has_image_extension(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| IMAGE_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_test_uri() {
        let spec = InputSpec::parse("test://ball?width=320&height=240&fps=10&frames=5").unwrap();
        assert_eq!(
            spec,
            InputSpec::Test(TestPattern {
                pattern: "ball".into(),
                width: 320,
                height: 240,
                fps: 10,
                frames: Some(5)
            })
        );
    }

    #[test]
    fn rejects_unknown_pattern_and_parameters() {
        assert!(InputSpec::parse("test://nonsense").is_err());
        assert!(InputSpec::parse("test://ball?width=0").is_err());
        assert!(InputSpec::parse("test://ball?depth=3").is_err());
    }

    #[test]
    fn webcam_and_uris() {
        assert_eq!(
            InputSpec::parse("webcam").unwrap(),
            InputSpec::Webcam("/dev/video0".into())
        );
        assert_eq!(
            InputSpec::parse("v4l2:///dev/video2").unwrap(),
            InputSpec::Webcam("/dev/video2".into())
        );
        assert_eq!(
            InputSpec::parse("rtsp://cam.local/stream").unwrap(),
            InputSpec::Uri("rtsp://cam.local/stream".into())
        );
        assert!(matches!(
            InputSpec::parse("/no/such/file.mp4"),
            Err(Error::InputMissing(_))
        ));
    }

    #[test]
    fn cameras_reconnect_by_default_files_and_patterns_do_not() {
        for camera in [
            "webcam",
            "rtsp://cam.local/stream",
            "rtspt://cam.local/stream",
        ] {
            assert!(
                InputSpec::parse(camera).unwrap().reconnects_by_default(),
                "{camera}"
            );
        }
        for other in ["test://ball", "http://host/clip.mp4"] {
            assert!(
                !InputSpec::parse(other).unwrap().reconnects_by_default(),
                "{other}"
            );
        }
    }
}
