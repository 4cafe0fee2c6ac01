//! Still images and folders of images, decoded with the `image` crate, one RGBA frame each.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use gstreamer as gst;

use super::spec::{IMAGE_EXTENSIONS, has_image_extension};
use super::{FrameSource, InputSpec, SourceInfo, SourceOptions, describe};
use crate::error::{Error, Result};
use crate::frame::Frame;

pub(super) fn list_images(dir: &Path) -> Result<Vec<PathBuf>> {
    let entries = std::fs::read_dir(dir)
        .map_err(|e| Error::io(format!("reading folder {}", dir.display()), e))?;
    let mut paths: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file() && has_image_extension(p))
        .collect();
    paths.sort();
    if paths.is_empty() {
        return Err(Error::InputInvalid {
            input: dir.display().to_string(),
            reason: format!("folder holds no images ({})", IMAGE_EXTENSIONS.join(", ")),
        });
    }
    Ok(paths)
}

/// Still images, one frame each, timed at `image_fps`.
pub(super) struct ImageSource {
    paths: Vec<PathBuf>,
    next: usize,
    info: SourceInfo,
    stream_id: u32,
    frame_ns: u64,
    first: Option<Frame>,
}

impl ImageSource {
    pub(super) fn new(
        paths: Vec<PathBuf>,
        spec: &InputSpec,
        options: &SourceOptions,
    ) -> Result<Self> {
        let mut source = ImageSource {
            info: SourceInfo {
                width: 0,
                height: 0,
                framerate: Some((options.image_fps as i32, 1)),
                expected_frames: Some(paths.len() as u64),
            },
            paths,
            next: 0,
            stream_id: options.stream_id,
            frame_ns: 1_000_000_000 / u64::from(options.image_fps.max(1)),
            first: None,
        };
        let first = source.decode_next()?.ok_or_else(|| Error::InputInvalid {
            input: describe(spec),
            reason: "no images".into(),
        })?;
        source.info.width = first.width();
        source.info.height = first.height();
        source.first = Some(first);
        Ok(source)
    }

    fn decode_next(&mut self) -> Result<Option<Frame>> {
        let Some(path) = self.paths.get(self.next) else {
            return Ok(None);
        };
        let image = image::open(path)
            .map_err(|e| Error::InputInvalid {
                input: path.display().to_string(),
                reason: format!("cannot decode image: {e}"),
            })?
            .to_rgba8();
        let (width, height) = (image.width() as usize, image.height() as usize);
        let index = self.next as u64;
        self.next += 1;
        Ok(Some(Frame {
            stream_id: self.stream_id,
            index,
            pts_ns: Some(index * self.frame_ns),
            duration_ns: Some(self.frame_ns),
            capture_time: SystemTime::now(),
            geometry: Frame::rgba_geometry(width, height, width * 4),
            buffer: gst::Buffer::from_mut_slice(image.into_raw()),
            caps: Frame::rgba_caps(width, height, self.info.framerate.unwrap_or((0, 1))),
        }))
    }
}

impl FrameSource for ImageSource {
    fn info(&self) -> &SourceInfo {
        &self.info
    }

    fn next_frame(&mut self) -> Result<Option<Frame>> {
        if let Some(first) = self.first.take() {
            return Ok(Some(first));
        }
        self.decode_next()
    }
}
