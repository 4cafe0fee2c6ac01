//! The latest video frame for browser viewers, served as MJPEG.
//!
//! The pipeline hands every frame to [`FrameHub::publish_frame`]. With nobody watching that is
//! one atomic load; with viewers it copies at most `max_fps` frames a second into a one-frame
//! slot (the newest frame replaces one not yet encoded), and an encoder task on the network
//! runtime turns the slot into a JPEG (the `image` crate's encoder, on a blocking thread) that
//! every viewer shares. The pipeline never waits for an encoder or a viewer.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use image::ExtendedColorType;
use image::codecs::jpeg::JpegEncoder;
use tokio::sync::{Notify, watch};

use crate::preprocess::ImageView;

/// Frames per second encoded for viewers at most.
pub const DEFAULT_VIDEO_FPS: f64 = 15.0;
const JPEG_QUALITY: u8 = 80;

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A tightly packed RGB frame.
#[derive(Default)]
struct RgbFrame {
    pixels: Vec<u8>,
    width: usize,
    height: usize,
}

impl RgbFrame {
    /// Copies `view` in, reusing the allocation. False when the view's buffer is too short.
    fn copy_from(&mut self, view: &ImageView) -> bool {
        let bytes_per_pixel = view.format.bytes_per_pixel();
        let row_len = view.width * bytes_per_pixel;
        let needed = view.height.saturating_sub(1) * view.stride + row_len;
        if view.width == 0 || view.height == 0 || view.stride < row_len || view.data.len() < needed
        {
            return false;
        }
        let [r, g, b] = view.format.rgb_offsets();
        self.pixels.clear();
        self.pixels.reserve(view.width * view.height * 3);
        for row in view.data.chunks(view.stride).take(view.height) {
            for pixel in row[..row_len].chunks_exact(bytes_per_pixel) {
                self.pixels
                    .extend_from_slice(&[pixel[r], pixel[g], pixel[b]]);
            }
        }
        self.width = view.width;
        self.height = view.height;
        true
    }

    fn encode_jpeg(&self) -> image::ImageResult<Bytes> {
        let mut jpeg = Vec::new();
        JpegEncoder::new_with_quality(&mut jpeg, JPEG_QUALITY).encode(
            &self.pixels,
            self.width as u32,
            self.height as u32,
            ExtendedColorType::Rgb8,
        )?;
        Ok(jpeg.into())
    }
}

/// The newest frame waiting for the encoder.
#[derive(Default)]
struct Slot {
    frame: RgbFrame,
    fresh: bool,
}

/// Latest-frame-wins video for viewers; see the module docs.
pub struct FrameHub {
    min_interval: Duration,
    watchers: AtomicUsize,
    last_accepted: Mutex<Option<Instant>>,
    slot: Mutex<Slot>,
    slot_filled: Notify,
    jpeg: watch::Sender<Option<Bytes>>,
    encoded: AtomicU64,
}

impl FrameHub {
    /// A hub that encodes at most `max_fps` frames a second.
    pub fn new(max_fps: f64) -> Self {
        FrameHub {
            min_interval: Duration::from_secs_f64(1.0 / max_fps.max(0.1)),
            watchers: AtomicUsize::new(0),
            last_accepted: Mutex::new(None),
            slot: Mutex::new(Slot::default()),
            slot_filled: Notify::new(),
            jpeg: watch::Sender::new(None),
            encoded: AtomicU64::new(0),
        }
    }

    /// Offers a frame to the viewers: returns at once when nobody watches or the last frame
    /// taken is younger than the frame interval; otherwise copies it for the encoder.
    pub fn publish_frame(&self, view: &ImageView) {
        if self.watchers.load(Ordering::Relaxed) == 0 {
            return;
        }
        let now = Instant::now();
        {
            let mut last = lock(&self.last_accepted);
            if last.is_some_and(|t| now.duration_since(t) < self.min_interval) {
                return;
            }
            *last = Some(now);
        }
        let mut slot = lock(&self.slot);
        if !slot.frame.copy_from(view) {
            tracing::warn!(
                width = view.width,
                height = view.height,
                stride = view.stride,
                len = view.data.len(),
                "frame buffer too short for its size; not shown to viewers"
            );
            return;
        }
        slot.fresh = true;
        drop(slot);
        self.slot_filled.notify_one();
    }

    /// Viewers connected now.
    pub fn watcher_count(&self) -> usize {
        self.watchers.load(Ordering::Relaxed)
    }

    /// JPEG frames encoded so far.
    pub fn encoded_frames(&self) -> u64 {
        self.encoded.load(Ordering::Relaxed)
    }

    /// A viewer: frames are encoded while at least one exists.
    pub fn watch(self: &Arc<Self>) -> VideoWatcher {
        self.watchers.fetch_add(1, Ordering::Relaxed);
        VideoWatcher {
            hub: Arc::clone(self),
            jpegs: self.jpeg.subscribe(),
        }
    }

    /// Encodes each frame left in the slot; runs until aborted. `scratch` and the slot's frame
    /// swap places, so steady state allocates nothing.
    pub(crate) async fn run_encoder(self: Arc<Self>) {
        let mut scratch = RgbFrame::default();
        loop {
            self.slot_filled.notified().await;
            {
                let mut slot = lock(&self.slot);
                if !std::mem::take(&mut slot.fresh) {
                    continue;
                }
                std::mem::swap(&mut slot.frame, &mut scratch);
            }
            let encoding = tokio::task::spawn_blocking(move || {
                let jpeg = scratch.encode_jpeg();
                (jpeg, scratch)
            });
            let Ok((jpeg, frame)) = encoding.await else {
                return;
            };
            scratch = frame;
            match jpeg {
                Ok(jpeg) => {
                    self.jpeg.send_replace(Some(jpeg));
                    self.encoded.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => tracing::warn!("encoding a frame for viewers: {e}"),
            }
        }
    }
}

/// One viewer's stream of JPEG frames; stops counting as a viewer when dropped.
pub struct VideoWatcher {
    hub: Arc<FrameHub>,
    jpegs: watch::Receiver<Option<Bytes>>,
}

impl VideoWatcher {
    /// The next JPEG encoded after the previous one this viewer got (frames it was too slow
    /// for are skipped).
    pub async fn next(&mut self) -> Option<Bytes> {
        loop {
            self.jpegs.changed().await.ok()?;
            if let Some(jpeg) = self.jpegs.borrow_and_update().clone() {
                return Some(jpeg);
            }
        }
    }
}

impl Drop for VideoWatcher {
    fn drop(&mut self) {
        self.hub.watchers.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::preprocess::PixelFormat;

    #[test]
    fn copies_rows_without_padding_in_rgb_order() {
        // 2x2 BGRA with 4 bytes of padding per row.
        let data = [
            1, 2, 3, 0, 4, 5, 6, 0, 9, 9, 9, 9, //
            7, 8, 9, 0, 10, 11, 12, 0,
        ];
        let view = ImageView {
            data: &data,
            width: 2,
            height: 2,
            stride: 12,
            format: PixelFormat::Bgra,
        };
        let mut frame = RgbFrame::default();
        assert!(frame.copy_from(&view));
        assert_eq!(frame.pixels, [3, 2, 1, 6, 5, 4, 9, 8, 7, 12, 11, 10]);
        let short = ImageView {
            data: &data[..19],
            ..view
        };
        assert!(!frame.copy_from(&short));
    }

    #[test]
    fn without_viewers_nothing_is_copied() {
        let hub = Arc::new(FrameHub::new(1000.0));
        let pixels = vec![7u8; 8 * 4 * 4];
        let view = ImageView::packed(&pixels, 8, 4, PixelFormat::Rgba);
        hub.publish_frame(&view);
        assert!(!lock(&hub.slot).fresh);
        let watcher = hub.watch();
        hub.publish_frame(&view);
        assert!(lock(&hub.slot).fresh);
        assert_eq!(lock(&hub.slot).frame.pixels.len(), 8 * 4 * 3);
        drop(watcher);
        assert_eq!(hub.watcher_count(), 0);
    }
}
