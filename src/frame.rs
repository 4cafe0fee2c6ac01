//! The frame that travels through the pipeline (the design's frame contract).

use std::time::SystemTime;

use crate::preprocess::{ImageView, PixelFormat};

/// One decoded video frame, packed RGBA in host memory, owned by its GStreamer buffer so the
/// decoder's memory reaches the encoder without a copy unless the overlay needs one.
pub struct Frame {
    pub stream_id: u32,
    /// 0-based index among the frames the source delivered.
    pub index: u64,
    pub pts_ns: Option<u64>,
    pub duration_ns: Option<u64>,
    /// Wall-clock time the frame left the decoder.
    pub capture_time: SystemTime,
    pub width: usize,
    pub height: usize,
    /// Bytes per row.
    pub stride: usize,
    pub buffer: gstreamer::Buffer,
}

/// Pixel format of every frame the sources deliver.
pub const FRAME_FORMAT: PixelFormat = PixelFormat::Rgba;

impl Frame {
    /// Runs `f` over the frame's pixels.
    pub fn with_view<R>(&self, f: impl FnOnce(&ImageView) -> R) -> R {
        let map = self
            .buffer
            .map_readable()
            .expect("frame buffers from our sources are always readable");
        f(&ImageView {
            data: map.as_slice(),
            width: self.width,
            height: self.height,
            stride: self.stride,
            format: FRAME_FORMAT,
        })
    }

    /// Runs `f` over the frame's pixels, writable; copies the buffer only if it is shared.
    pub fn with_pixels_mut<R>(&mut self, f: impl FnOnce(&mut [u8]) -> R) -> R {
        let buffer = self.buffer.make_mut();
        let mut map = buffer
            .map_writable()
            .expect("a buffer made writable maps writable");
        f(map.as_mut_slice())
    }

    /// Tightly packed RGB copy (for dumps).
    pub fn to_rgb(&self) -> Vec<u8> {
        self.with_view(|view| {
            let mut rgb = Vec::with_capacity(view.width * view.height * 3);
            for row in view.data.chunks(view.stride).take(view.height) {
                for px in row[..view.width * 4].chunks_exact(4) {
                    rgb.extend_from_slice(&px[..3]);
                }
            }
            rgb
        })
    }
}
