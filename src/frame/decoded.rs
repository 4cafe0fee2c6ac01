//! The frame that travels through the pipeline (the frame contract of docs/DESIGN.md).

use std::time::SystemTime;

use gstreamer::prelude::*;

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

/// Recycled buffers for the frames that must be copied before they are drawn on. GStreamer's
/// own copy takes fresh memory, which the kernel zeroes page by page on first touch: at 1080p
/// that costs about as much as the copy itself.
#[derive(Default)]
pub struct FrameCopies {
    /// The size of the frames copied last, with the pool for it (`None`: GStreamer could not
    /// make one, remembered so it is not tried again every frame).
    pool: Option<(usize, Option<gstreamer::BufferPool>)>,
}

impl FrameCopies {
    /// `buffer`'s bytes, timestamps, flags and metadata in a buffer of the pool; `None` if the
    /// pool cannot give one.
    fn copy_of(&mut self, buffer: &gstreamer::Buffer) -> Option<gstreamer::Buffer> {
        let mut copy = self.pool_for(buffer.size())?.acquire_buffer(None).ok()?;
        let target = copy.make_mut();
        let metadata = gstreamer::BufferCopyFlags::FLAGS
            | gstreamer::BufferCopyFlags::TIMESTAMPS
            | gstreamer::BufferCopyFlags::META;
        buffer.copy_into(target, metadata, ..).ok()?;
        // GStreamer copies the video meta (plane offsets and strides) only along with the
        // memory, as the meta is tagged as describing it.
        if let Some(meta) = buffer.meta::<gstreamer_video::VideoMeta>() {
            let whole = gstreamer::meta::MetaTransformCopy::new(..);
            meta.transform(target, &whole).ok()?;
        }
        let source = buffer.map_readable().ok()?;
        target
            .map_writable()
            .ok()?
            .as_mut_slice()
            .copy_from_slice(source.as_slice());
        Some(copy)
    }

    /// The pool for buffers of `size` bytes, made when the size is new (a reconnected source
    /// may change it).
    fn pool_for(&mut self, size: usize) -> Option<&gstreamer::BufferPool> {
        if self.pool.as_ref().is_none_or(|(pooled, _)| *pooled != size) {
            let pool = sized_pool(size);
            if pool.is_none() {
                tracing::debug!(
                    size,
                    "no buffer pool for frame copies: they take fresh memory"
                );
            }
            self.pool = Some((size, pool));
        }
        self.pool.as_ref().and_then(|(_, pool)| pool.as_ref())
    }
}

/// An active pool of `size`-byte buffers, as many as are asked for.
fn sized_pool(size: usize) -> Option<gstreamer::BufferPool> {
    let pool = gstreamer::BufferPool::new();
    let mut config = pool.config();
    config.set_params(None, u32::try_from(size).ok()?, 0, 0);
    pool.set_config(config).ok()?;
    pool.set_active(true).ok()?;
    Some(pool)
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

    /// Runs `f` over the frame's bytes, writable, in whatever layout they are. A frame whose
    /// memory another reference still holds (about 40 % of decoded frames reach the overlay so)
    /// is first copied into a buffer from `copies`, or into fresh memory if the pool fails.
    pub fn with_bytes_mut<R>(
        &mut self,
        copies: &mut FrameCopies,
        f: impl FnOnce(&mut [u8], &FrameGeometry) -> R,
    ) -> R {
        let shared = !(self.buffer.is_writable() && self.buffer.is_all_memory_writable());
        if shared && let Some(copy) = copies.copy_of(&self.buffer) {
            self.buffer = copy;
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    const WIDTH: usize = 16;
    const HEIGHT: usize = 8;
    /// Rows padded past the pixels, as decoders pad them.
    const STRIDE: usize = 4 * WIDTH + 64;

    /// An RGBA frame with padded rows that a video meta describes, as a decoder hands them out.
    fn padded_frame() -> Frame {
        gstreamer::init().expect("GStreamer initialises");
        let bytes: Vec<u8> = (0..STRIDE * HEIGHT).map(|i| (i % 251) as u8).collect();
        let mut buffer = gstreamer::Buffer::from_mut_slice(bytes);
        let buffer_ref = buffer.make_mut();
        buffer_ref.set_pts(gstreamer::ClockTime::from_mseconds(40));
        gstreamer_video::VideoMeta::add_full(
            buffer_ref,
            gstreamer_video::VideoFrameFlags::empty(),
            gstreamer_video::VideoFormat::Rgba,
            WIDTH as u32,
            HEIGHT as u32,
            &[0],
            &[STRIDE as i32],
        )
        .expect("a valid video meta");
        Frame {
            stream_id: 0,
            index: 0,
            pts_ns: Some(40_000_000),
            duration_ns: None,
            capture_time: SystemTime::now(),
            geometry: Frame::rgba_geometry(WIDTH, HEIGHT, STRIDE),
            buffer,
            caps: Frame::rgba_caps(WIDTH, HEIGHT, (25, 1)),
        }
    }

    fn bytes(buffer: &gstreamer::Buffer) -> Vec<u8> {
        buffer.map_readable().expect("readable").to_vec()
    }

    fn address(frame: &Frame) -> usize {
        frame.buffer.map_readable().expect("readable").as_ptr() as usize
    }

    #[test]
    fn a_shared_frame_is_drawn_on_a_copy_and_the_other_holder_keeps_its_pixels() {
        let mut frame = padded_frame();
        let other = frame.buffer.clone();
        let original = bytes(&other);
        let mut copies = FrameCopies::default();
        frame.with_bytes_mut(&mut copies, |pixels, _| {
            assert_eq!(pixels, &original[..], "the copy starts as the frame");
            pixels.fill(7);
        });
        assert_eq!(bytes(&other), original, "the other holder's pixels");
        assert!(
            bytes(&frame.buffer).iter().all(|&b| b == 7),
            "the drawn copy"
        );
        assert_eq!(frame.buffer.pts(), other.pts());
        let meta = frame
            .buffer
            .meta::<gstreamer_video::VideoMeta>()
            .expect("the copy keeps the video meta");
        assert_eq!(meta.stride()[0], STRIDE as i32);
    }

    #[test]
    fn copies_reuse_the_memory_of_copies_already_dropped() {
        let mut copies = FrameCopies::default();
        let mut copy = || {
            let mut frame = padded_frame();
            let _decoder_reference = frame.buffer.clone();
            frame.with_bytes_mut(&mut copies, |_, _| ());
            let video_metas = frame
                .buffer
                .iter_meta::<gstreamer_video::VideoMeta>()
                .count();
            (address(&frame), video_metas)
        };
        let (first, _) = copy();
        // Memory of the same size taken meanwhile: had the first copy's memory gone back to
        // the allocator, this buffer would now hold it.
        let _squatter = gstreamer::Buffer::with_size(STRIDE * HEIGHT).expect("allocates");
        let (second, video_metas) = copy();
        assert_eq!(
            second, first,
            "the second copy is in the first one's memory"
        );
        assert_eq!(
            video_metas, 1,
            "the pool took the first copy's video meta off"
        );
    }

    #[test]
    fn a_frame_no_one_else_holds_is_drawn_in_place() {
        let mut frame = padded_frame();
        let before = address(&frame);
        frame.with_bytes_mut(&mut FrameCopies::default(), |pixels, _| pixels.fill(7));
        assert_eq!(address(&frame), before);
        assert!(bytes(&frame.buffer).iter().all(|&b| b == 7));
    }
}
