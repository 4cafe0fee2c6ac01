//! The latest video frame for browser viewers, served as MJPEG.
//!
//! The pipeline hands every frame to [`FrameHub::publish_frame`]. With nobody watching that is
//! one atomic load; with viewers it copies the bytes of at most `max_fps` frames a second into a
//! one-frame slot (the newest frame replaces one not yet encoded), and an encoder task on the
//! network runtime turns the slot into RGB (from whatever layout the frame has) and a JPEG (the
//! `image` crate's encoder), on a blocking thread, that every viewer shares. The pipeline never
//! waits for an encoder or a viewer, nor converts a frame for one.
//!
//! Each stream has a hub of its own ([`FrameHubs`]), made when the stream or a viewer first asks.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use image::ExtendedColorType;
use image::codecs::jpeg::JpegEncoder;
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;

use crate::frame::{FrameGeometry, HostFrame};

/// Frames per second encoded for viewers at most.
pub const DEFAULT_VIDEO_FPS: f64 = 15.0;
const JPEG_QUALITY: u8 = 80;

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A frame's bytes as the pipeline had them, and its RGB once converted for the encoder.
#[derive(Default)]
struct HubFrame {
    bytes: Vec<u8>,
    geometry: Option<FrameGeometry>,
    rgb: Vec<u8>,
}

impl HubFrame {
    /// Copies `frame`'s bytes in, reusing the allocation. False when its buffer does not hold
    /// its geometry.
    fn copy_from(&mut self, frame: &HostFrame) -> bool {
        let geometry = frame.geometry;
        if geometry.validate(frame.data.len()).is_err() {
            return false;
        }
        self.bytes.clear();
        self.bytes
            .extend_from_slice(&frame.data[..frame.data.len().min(geometry.len())]);
        self.geometry = Some(geometry);
        true
    }

    /// Tightly packed RGB of the frame copied in last.
    fn converted_rgb(&mut self) -> &[u8] {
        if let Some(geometry) = self.geometry {
            let frame = HostFrame {
                data: &self.bytes,
                geometry,
            };
            frame.to_rgb_into(&mut self.rgb);
        }
        &self.rgb
    }

    fn encode_jpeg(&mut self) -> image::ImageResult<Bytes> {
        let (width, height) = self.geometry.map_or((0, 0), |g| (g.width, g.height));
        let mut jpeg = Vec::new();
        JpegEncoder::new_with_quality(&mut jpeg, JPEG_QUALITY).encode(
            self.converted_rgb(),
            width as u32,
            height as u32,
            ExtendedColorType::Rgb8,
        )?;
        Ok(jpeg.into())
    }
}

/// The newest frame waiting for the encoder.
#[derive(Default)]
struct Slot {
    frame: HubFrame,
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
    pub fn publish_frame<'a>(&self, frame: impl Into<HostFrame<'a>>) {
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
        let frame = frame.into();
        let mut slot = lock(&self.slot);
        if !slot.frame.copy_from(&frame) {
            tracing::warn!(
                geometry = ?frame.geometry,
                len = frame.data.len(),
                "frame buffer does not hold its geometry; not shown to viewers"
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
        let mut scratch = HubFrame::default();
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

/// The hub of each stream, by name, each with its encoder task on the network runtime.
pub struct FrameHubs {
    max_fps: f64,
    runtime: tokio::runtime::Handle,
    hubs: Mutex<Vec<StreamHub>>,
}

struct StreamHub {
    stream: String,
    hub: Arc<FrameHub>,
    encoder: JoinHandle<()>,
}

impl FrameHubs {
    pub(crate) fn new(max_fps: f64, runtime: tokio::runtime::Handle) -> Self {
        FrameHubs {
            max_fps,
            runtime,
            hubs: Mutex::new(Vec::new()),
        }
    }

    /// The hub of stream `name`, made (and its encoder started) the first time.
    pub fn hub(&self, name: &str) -> Arc<FrameHub> {
        let mut hubs = lock(&self.hubs);
        if let Some(known) = hubs.iter().find(|h| h.stream == name) {
            return Arc::clone(&known.hub);
        }
        let hub = Arc::new(FrameHub::new(self.max_fps));
        let encoder = self.runtime.spawn(Arc::clone(&hub).run_encoder());
        hubs.push(StreamHub {
            stream: name.to_owned(),
            hub: Arc::clone(&hub),
            encoder,
        });
        hub
    }

    /// The first stream's hub (the only one of a run of one stream); `stream0`'s before any.
    pub fn first(&self) -> Arc<FrameHub> {
        let first = lock(&self.hubs).first().map(|h| Arc::clone(&h.hub));
        first.unwrap_or_else(|| self.hub("stream0"))
    }

    pub(crate) fn stop_encoders(&self) {
        for hub in lock(&self.hubs).iter() {
            hub.encoder.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::SourceLayout;
    use crate::frame::{ImageView, PixelFormat};

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
        let mut frame = HubFrame::default();
        assert!(frame.copy_from(&HostFrame::from(&view)));
        assert_eq!(
            frame.converted_rgb(),
            [3, 2, 1, 6, 5, 4, 9, 8, 7, 12, 11, 10]
        );
        let short = ImageView {
            data: &data[..19],
            ..view
        };
        assert!(!frame.copy_from(&HostFrame::from(&short)));
    }

    #[test]
    fn yuv_frames_are_converted_for_the_encoder_not_on_the_way_in() {
        // 4x2 I420: Y 16 (black) on the left half, 235 (white) on the right; neutral chroma.
        let data = [
            16, 16, 235, 235, 16, 16, 235, 235, // Y
            128, 128, // U
            128, 128, // V
        ];
        let geometry = FrameGeometry::yuv420(4, 2, SourceLayout::I420);
        let mut frame = HubFrame::default();
        assert!(frame.copy_from(&HostFrame {
            data: &data,
            geometry
        }));
        assert_eq!(frame.bytes, data, "the hub copies the frame as it is");
        let black_white = [[0u8; 3], [0; 3], [255; 3], [255; 3]].concat();
        assert_eq!(
            frame.converted_rgb(),
            [&black_white[..], &black_white[..]].concat()
        );
        assert!(!frame.copy_from(&HostFrame {
            data: &data[..11],
            geometry
        }));
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
        assert_eq!(lock(&hub.slot).frame.bytes.len(), 8 * 4 * 4);
        drop(watcher);
        assert_eq!(hub.watcher_count(), 0);
    }
}
