//! Still images and folders of images, decoded with the `image` crate, one RGBA frame each.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;
use std::time::SystemTime;

use gstreamer as gst;
use image::RgbaImage;

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

/// Still images, one frame each, timed at `image_fps`, decoded a few ahead on threads of their
/// own: a 1080p image takes the `image` crate about 20 ms, more than a GPU frame.
pub(super) struct ImageSource {
    paths: Vec<PathBuf>,
    /// Index of the next image to hand out.
    next: usize,
    /// The images after `next` being decoded, in order.
    ahead: VecDeque<JoinHandle<Result<RgbaImage>>>,
    /// Images decoded at once.
    parallel: usize,
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
        let parallel = std::thread::available_parallelism().map_or(1, |n| n.get().min(4));
        let mut source = ImageSource {
            info: SourceInfo {
                width: 0,
                height: 0,
                framerate: Some((options.image_fps as i32, 1)),
                expected_frames: Some(paths.len() as u64),
            },
            paths,
            next: 0,
            ahead: VecDeque::new(),
            parallel,
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
        let started = self.next + self.ahead.len();
        for path in self
            .paths
            .iter()
            .skip(started)
            .take(self.parallel - self.ahead.len())
        {
            let path = path.clone();
            let decoding = std::thread::Builder::new()
                .name("image decode".into())
                .spawn(move || decode_image(&path))
                .map_err(|e| Error::io("starting an image decoder thread", e))?;
            self.ahead.push_back(decoding);
        }
        let Some(decoding) = self.ahead.pop_front() else {
            return Ok(None);
        };
        let image = decoding.join().map_err(|_| Error::InputInvalid {
            input: self.paths[self.next].display().to_string(),
            reason: "the image decoder failed".into(),
        })??;
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

fn decode_image(path: &Path) -> Result<RgbaImage> {
    image::open(path)
        .map(image::DynamicImage::into_rgba8)
        .map_err(|e| Error::InputInvalid {
            input: path.display().to_string(),
            reason: format!("cannot decode image: {e}"),
        })
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
