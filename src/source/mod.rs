//! Sources: everything a user can name with `--input` becomes a stream of [`Frame`]s: NV12/I420
//! as the decoder gives them (`yuv_frames`), with the colour matrix and range their caps
//! declare, so no colour conversion precedes the resize that converts each sample; or RGBA when
//! something draws on the frame on the CPU.
//! Video goes through a GStreamer pipeline built element by element (never from a parsed
//! description, so no user string is ever interpreted as pipeline syntax) and leaves through an
//! appsink; still images and folders of images are decoded with the `image` crate.
//!
//! Cameras fail and come back. A video source rebuilds its pipeline when the stream errors,
//! stalls (no frame for `stall_timeout`) or ends, with exponential backoff between attempts, and
//! tells a [`StatusListener`] when the stream goes down and when it is back; the first connection
//! is retried the same way, so a service can start before its camera. `--reconnect never` fails
//! fast instead. Frame indexes and timestamps continue across rebuilds.

mod gst;
mod images;
mod reconnect;
mod spec;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::error::{Error, Result};
use crate::frame::Frame;

pub use reconnect::{Reconnect, ReconnectOptions, StatusListener, StreamStatus};
pub use spec::{InputSpec, TestPattern};

use gst::GstSource;
use images::{ImageSource, list_images};

/// What is known about a source once it delivered its first frame.
#[derive(Clone, Debug)]
pub struct SourceInfo {
    pub width: usize,
    pub height: usize,
    /// Frames per second as a fraction; `None` for variable-rate sources.
    pub framerate: Option<(i32, i32)>,
    /// Expected number of frames, when the source knows it (files, images, bounded test sources).
    pub expected_frames: Option<u64>,
}

/// A source of frames; `next_frame` returns `Ok(None)` at the end of the stream.
pub trait FrameSource: Send {
    fn info(&self) -> &SourceInfo;
    fn next_frame(&mut self) -> Result<Option<Frame>>;
}

/// Opens the source and waits for its first frame, so that errors (missing codec, unreachable
/// server, not a video) surface here with a clear message.
pub fn open(spec: &InputSpec, options: &SourceOptions) -> Result<Box<dyn FrameSource>> {
    // Frames of every source live in GStreamer buffers.
    gstreamer::init().map_err(|e| Error::Gstreamer(e.to_string()))?;
    match spec {
        InputSpec::Image(path) => Ok(Box::new(ImageSource::new(
            vec![path.clone()],
            spec,
            options,
        )?)),
        InputSpec::ImageFolder(dir) => Ok(Box::new(ImageSource::new(
            list_images(dir)?,
            spec,
            options,
        )?)),
        _ => Ok(Box::new(GstSource::open(spec, options)?)),
    }
}

/// Flags that stop a source once any is set: a run's, a stream's own.
#[derive(Clone, Debug, Default)]
pub struct StopSignal(Vec<Arc<AtomicBool>>);

impl StopSignal {
    pub fn new(flag: Arc<AtomicBool>) -> Self {
        StopSignal(vec![flag])
    }

    /// Also stops once `flag` is set.
    pub fn or(mut self, flag: Arc<AtomicBool>) -> Self {
        self.0.push(flag);
        self
    }

    pub fn is_set(&self) -> bool {
        self.0.iter().any(|flag| flag.load(Ordering::Relaxed))
    }
}

#[derive(Clone, Debug)]
pub struct SourceOptions {
    pub stream_id: u32,
    /// How long each connection (or pipeline start) may take to deliver its first frame.
    pub first_frame_timeout: Duration,
    /// Frame rate given to still images (they carry none).
    pub image_fps: u32,
    /// Deliver frames at their own pace, as a camera would (live scheduling of files and test
    /// patterns), instead of as fast as they decode.
    pub real_time: bool,
    /// RTSP lower transport; `None`: rtspsrc's default (UDP, falling back to TCP).
    pub rtsp_transport: Option<RtspTransport>,
    pub reconnect: ReconnectOptions,
    /// Start a file or bounded test pattern again at its end (a fresh pipeline each time).
    pub loop_input: bool,
    /// Once set, waits for frames or reconnects end and `next_frame` returns `Ok(None)`.
    pub stop: StopSignal,
    /// Video frames may come as NV12 or I420, as decoded (other layouts are converted to one
    /// of those rather than to RGBA); still images stay RGBA.
    pub yuv_frames: bool,
    /// Told when a stream goes down and when it is back.
    pub status: Option<StatusListener>,
}

/// `--rtsp-transport`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RtspTransport {
    Tcp,
    Udp,
}

impl RtspTransport {
    /// The value of rtspsrc's `protocols` flags.
    fn protocols(self) -> &'static str {
        match self {
            RtspTransport::Tcp => "tcp",
            RtspTransport::Udp => "udp",
        }
    }
}

impl Default for SourceOptions {
    fn default() -> Self {
        SourceOptions {
            stream_id: 0,
            first_frame_timeout: Duration::from_secs(20),
            image_fps: 25,
            real_time: false,
            rtsp_transport: None,
            reconnect: ReconnectOptions::default(),
            loop_input: false,
            stop: StopSignal::default(),
            yuv_frames: false,
            status: None,
        }
    }
}

/// The input as messages and listings name it.
pub fn describe(spec: &InputSpec) -> String {
    match spec {
        InputSpec::File(p)
        | InputSpec::Image(p)
        | InputSpec::ImageFolder(p)
        | InputSpec::Webcam(p) => p.display().to_string(),
        InputSpec::Uri(u) => u.clone(),
        InputSpec::Test(t) => format!("test://{}", t.pattern),
    }
}
