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
}

impl Frame {
    /// A packed RGBA frame with rows of `stride` bytes.
    pub fn rgba_geometry(width: usize, height: usize, stride: usize) -> FrameGeometry {
        FrameGeometry {
            stride,
            ..FrameGeometry::packed(width, height, SourceLayout::Rgbx)
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
        let map = self.map();
        f(&HostFrame {
            data: map.as_slice(),
            geometry: self.geometry,
        })
    }

    fn map(&self) -> gstreamer::BufferMap<'_, gstreamer::buffer::Readable> {
        self.buffer
            .map_readable()
            .expect("frame buffers from our sources are always readable")
    }

    /// Runs `f` over the frame's RGBA pixels, writable; copies the buffer only if it is shared.
    pub fn with_pixels_mut<R>(&mut self, f: impl FnOnce(&mut [u8]) -> R) -> R {
        assert!(self.is_rgba(), "only RGBA frames are drawn on");
        let buffer = self.buffer.make_mut();
        let mut map = buffer
            .map_writable()
            .expect("a buffer made writable maps writable");
        f(map.as_mut_slice())
    }

    /// Takes the pixels the GPU drew (RGBA) in place of the frame's own.
    pub fn replace_with_painted(&mut self, painted: PaintedFrame) {
        self.geometry = Self::rgba_geometry(self.width(), self.height(), painted.stride);
        self.buffer = gstreamer::Buffer::from_mut_slice(painted.rgba);
    }

    /// Tightly packed RGB copy (for dumps).
    pub fn to_rgb(&self) -> Vec<u8> {
        self.with_host_frame(|frame| frame.to_rgb())
    }
}
