//! The frame that travels through the pipeline (the frame contract of docs/DESIGN.md).

use std::time::SystemTime;

use super::{FrameGeometry, HostFrame, PaintedFrame, SourceLayout};

/// One decoded video frame in host memory, owned by its GStreamer buffer so the decoder's
/// memory reaches the encoder without a copy unless the overlay needs one. NV12/I420 as the
/// decoder gave it (converted while it is resized, on the GPU or the CPU), or packed RGBA when
/// the overlay is drawn on the CPU.
pub struct Frame {
    pub stream_id: u32,
    /// 0-based index among the frames the source delivered.
    pub index: u64,
    pub pts_ns: Option<u64>,
    pub duration_ns: Option<u64>,
    /// Wall-clock time the frame left the decoder.
    pub capture_time: SystemTime,
    /// Size, layout, strides and plane offsets of the pixels in `buffer`.
    pub geometry: FrameGeometry,
    pub buffer: gstreamer::Buffer,
    /// What `buffer` holds, for the GStreamer elements it goes to (the encoders): the
    /// decoder's caps, with their colorimetry, or [`Frame::rgba_caps`] for frames made here.
    pub caps: gstreamer::Caps,
}

/// A frame's buffer mapped for reading ([`Frame::mapped`]).
pub struct MappedFrame<'a> {
    map: gstreamer::BufferMap<'a, gstreamer::buffer::Readable>,
    geometry: FrameGeometry,
}

impl MappedFrame<'_> {
    /// The mapped bytes with their geometry.
    pub fn host_frame(&self) -> HostFrame<'_> {
        HostFrame {
            data: self.map.as_slice(),
            geometry: self.geometry,
        }
    }
}

impl Frame {
    /// A packed RGBA frame with rows of `stride` bytes.
    pub fn rgba_geometry(width: usize, height: usize, stride: usize) -> FrameGeometry {
        FrameGeometry {
            stride,
            ..FrameGeometry::packed(width, height, SourceLayout::Rgbx)
        }
    }

    /// Caps of packed RGBA frames, at `framerate` frames per second (0/1: unknown).
    pub fn rgba_caps(width: usize, height: usize, framerate: (i32, i32)) -> gstreamer::Caps {
        gstreamer_video::VideoCapsBuilder::new()
            .format(gstreamer_video::VideoFormat::Rgba)
            .width(width as i32)
            .height(height as i32)
            .framerate(gstreamer::Fraction::new(framerate.0, framerate.1))
            .build()
    }

    /// The frame's time on the stream's clock, in seconds: its timestamp, else the wall-clock
    /// time it was decoded.
    pub fn stream_seconds(&self) -> f64 {
        match self.pts_ns {
            Some(ns) => ns as f64 * 1e-9,
            None => self
                .capture_time
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64()),
        }
    }

    pub fn width(&self) -> usize {
        self.geometry.width
    }

    pub fn height(&self) -> usize {
        self.geometry.height
    }

    pub fn is_rgba(&self) -> bool {
        self.geometry.layout == SourceLayout::Rgbx
    }

    /// Runs `f` over the frame's bytes in whatever layout they are.
    pub fn with_host_frame<R>(&self, f: impl FnOnce(&HostFrame) -> R) -> R {
        f(&self.mapped().host_frame())
    }

    /// The frame's bytes, readable while the map lives: for a batch of frames at once.
    pub fn mapped(&self) -> MappedFrame<'_> {
        MappedFrame {
            map: self.map(),
            geometry: self.geometry,
        }
    }

    fn map(&self) -> gstreamer::BufferMap<'_, gstreamer::buffer::Readable> {
        self.buffer
            .map_readable()
            .expect("frame buffers from our sources are always readable")
    }

    /// Runs `f` over the frame's bytes, writable, in whatever layout they are; copies the
    /// buffer only if it is shared.
    pub fn with_bytes_mut<R>(&mut self, f: impl FnOnce(&mut [u8], &FrameGeometry) -> R) -> R {
        let buffer = self.buffer.make_mut();
        let mut map = buffer
            .map_writable()
            .expect("a buffer made writable maps writable");
        f(map.as_mut_slice(), &self.geometry)
    }

    /// Takes the pixels the GPU drew (RGBA) in place of the frame's own.
    pub fn replace_with_painted(&mut self, painted: PaintedFrame) {
        let (width, height) = (self.width(), self.height());
        let framerate = self
            .caps
            .structure(0)
            .and_then(|s| s.get::<gstreamer::Fraction>("framerate").ok())
            .map_or((0, 1), |rate| (rate.numer(), rate.denom()));
        self.caps = Self::rgba_caps(width, height, framerate);
        self.geometry = Self::rgba_geometry(width, height, painted.stride);
        let mut buffer = gstreamer::Buffer::from_mut_slice(painted.rgba);
        if painted.stride != 4 * width {
            // Rows padded like the decoder's: say so, as the caps alone mean packed rows.
            gstreamer_video::VideoMeta::add_full(
                buffer.make_mut(),
                gstreamer_video::VideoFrameFlags::empty(),
                gstreamer_video::VideoFormat::Rgba,
                width as u32,
                height as u32,
                &[0],
                &[painted.stride as i32],
            )
            .expect("a stride of at least a row of RGBA pixels is a valid video meta");
        }
        self.buffer = buffer;
    }

    /// Tightly packed RGB copy (for dumps).
    pub fn to_rgb(&self) -> Vec<u8> {
        self.with_host_frame(|frame| frame.to_rgb())
    }
}
