//! Video through GStreamer: a pipeline built element by element, frames pulled from its
//! appsink, and the connection rebuilt when the stream fails, stalls or ends.

use std::time::{Duration, Instant, SystemTime};

use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;
use gstreamer_video as gst_video;

use super::reconnect::{Backoff, Rebase, Timeline};
use super::{
    FrameSource, InputSpec, Reconnect, RtspTransport, SourceInfo, SourceOptions, StopSignal,
    StreamStatus, describe,
};
use crate::error::{Error, Result};
use crate::frame::{Frame, FrameGeometry, SourceLayout, YuvToRgb};

/// A video source read through GStreamer. Its pipeline lives in a [`Decoder`]; when the stream
/// fails, stalls or ends and the source reconnects (or loops), that decoder is set to Null and
/// dropped and a new one is built, so nothing accumulates across reconnects. Frame indexes keep
/// counting and PTS keep increasing across rebuilds (see [`Timeline`]).
pub(super) struct GstSource {
    spec: InputSpec,
    options: SourceOptions,
    input: String,
    info: SourceInfo,
    /// The frame size of the first connection: later pipelines scale to it, so the stages
    /// downstream keep their plans even when a camera comes back at another resolution.
    size: Option<(usize, usize)>,
    connection: Connection,
    reconnects: bool,
    backoff: Backoff,
    timeline: Timeline,
    next_index: u64,
    pending: Option<gst::Sample>,
}

const PULL_POLL: Duration = Duration::from_millis(100);

/// Where the connection to the input stands, as fallbacksrc's `Status` keeps it.
enum Connection {
    /// No pipeline: at the start, or when a looping file ends; the next one starts at once.
    Idle,
    /// A pipeline that has not delivered a frame yet; during an outage, the outage it may end.
    Connecting {
        decoder: Decoder,
        outage: Option<Outage>,
    },
    /// Frames arrive.
    Up { decoder: Decoder },
    /// The stream failed (a `Down` was published); the next attempt waits out the backoff.
    Down(Outage),
}

/// A stream that went down: since when, and how many reconnects were tried since.
#[derive(Clone, Copy, Debug)]
struct Outage {
    since: Instant,
    attempts: u32,
}

impl Connection {
    fn decoder(&self) -> Option<&Decoder> {
        match self {
            Connection::Connecting { decoder, .. } | Connection::Up { decoder } => Some(decoder),
            Connection::Idle | Connection::Down(_) => None,
        }
    }
}

impl GstSource {
    pub(super) fn open(spec: &InputSpec, options: &SourceOptions) -> Result<Self> {
        let reconnect = &options.reconnect;
        let mut source = GstSource {
            spec: spec.clone(),
            options: options.clone(),
            input: describe(spec),
            info: SourceInfo {
                width: 0,
                height: 0,
                framerate: None,
                expected_frames: None,
            },
            size: None,
            connection: Connection::Idle,
            reconnects: match reconnect.policy {
                Reconnect::Auto => spec.reconnects_by_default(),
                Reconnect::Always => true,
                Reconnect::Never => false,
            },
            backoff: Backoff::new(reconnect.initial_delay, reconnect.max_delay),
            timeline: Timeline::default(),
            next_index: 0,
            pending: None,
        };
        let first = match source.next_sample()? {
            Some(sample) => sample,
            None if source.stopped() => {
                return Err(source.decode_error("stopped before the first frame arrived"));
            }
            None => return Err(source.decode_error("the input holds no video frames")),
        };
        source.describe_stream(&first)?;
        source.pending = Some(first);
        Ok(source)
    }

    fn decode_error(&self, message: &str) -> Error {
        Error::Decode {
            input: self.input.clone(),
            message: message.to_owned(),
        }
    }

    /// The raw-video layout the decoder's caps give this sample.
    fn video_info(&self, sample: &gst::Sample) -> Result<gst_video::VideoInfo> {
        let caps = sample
            .caps()
            .ok_or_else(|| self.decode_error("decoder gave a frame without caps"))?;
        gst_video::VideoInfo::from_caps(caps)
            .map_err(|_| self.decode_error("decoder gave a frame with caps that are not raw video"))
    }

    fn stopped(&self) -> bool {
        self.options.stop.is_set()
    }

    fn describe_stream(&mut self, sample: &gst::Sample) -> Result<()> {
        let video = self.video_info(sample)?;
        self.info.width = video.width() as usize;
        self.info.height = video.height() as usize;
        self.size = Some((self.info.width, self.info.height));
        let fps = video.fps();
        self.info.framerate = (fps.numer() > 0).then_some((fps.numer(), fps.denom()));
        self.info.expected_frames = match &self.spec {
            _ if self.options.loop_input => None,
            InputSpec::Test(t) => t.frames.map(u64::from),
            _ => self.estimate_frames(),
        };
        Ok(())
    }

    fn estimate_frames(&self) -> Option<u64> {
        let duration = self
            .connection
            .decoder()?
            .pipeline
            .query_duration::<gst::ClockTime>()?;
        let (n, d) = self.info.framerate?;
        Some((duration.nseconds() as f64 * n as f64 / d as f64 / 1e9).round() as u64)
    }

    /// The next decoded sample, rebuilding the pipeline when the stream fails, stalls or ends
    /// and the source reconnects or loops; `None` at the end of the input or once stopped.
    fn next_sample(&mut self) -> Result<Option<gst::Sample>> {
        loop {
            if self.stopped() {
                return Ok(None);
            }
            let (decoder, connected) = match &self.connection {
                Connection::Idle | Connection::Down(_) => {
                    self.start_decoder()?;
                    continue;
                }
                Connection::Connecting { decoder, .. } => (decoder, false),
                Connection::Up { decoder } => (decoder, true),
            };
            let stall_timeout = self.options.reconnect.stall_timeout;
            let deadline = match (
                connected,
                self.reconnects || self.spec.reconnects_by_default(),
            ) {
                (false, _) => Some(Instant::now() + self.options.first_frame_timeout),
                (true, true) => Some(Instant::now() + stall_timeout),
                (true, false) => None,
            };
            let reason = match decoder.pull(deadline, &self.options.stop) {
                Pulled::Sample(sample) => {
                    self.came_up();
                    return Ok(Some(sample));
                }
                Pulled::Stopped => return Ok(None),
                Pulled::Eos if self.options.loop_input && connected => {
                    // Loop: a fresh pipeline starts the input again (no status event).
                    self.connection = Connection::Idle;
                    continue;
                }
                Pulled::Eos if !self.reconnects => return Ok(None),
                Pulled::Eos => "end of stream".to_owned(),
                Pulled::TimedOut if connected => {
                    format!("no frame for {} s", stall_timeout.as_secs_f64())
                }
                Pulled::TimedOut => {
                    "no video frame arrived in time (unreachable or silent source)".to_owned()
                }
                Pulled::Failed(reason) => reason,
            };
            if !self.reconnects {
                return Err(self.decode_error(&reason));
            }
            self.went_down(reason);
        }
    }

    /// Builds and starts a new pipeline; while the stream is down, after the backoff delay.
    fn start_decoder(&mut self) -> Result<()> {
        let outage = match &mut self.connection {
            Connection::Down(outage) => {
                let delay = self.backoff.next_delay();
                tracing::info!(
                    "stream {}: reconnecting in {:.1} s",
                    self.options.stream_id,
                    delay.as_secs_f64()
                );
                if !sleep_unless_stopped(delay, &self.options.stop) {
                    return Ok(());
                }
                outage.attempts += 1;
                Some(*outage)
            }
            _ => None,
        };
        self.timeline.restart(match outage {
            Some(_) => Rebase::WallClock,
            None => Rebase::Continue,
        });
        let pipeline = build_decode_pipeline(&self.spec, &self.options, self.size)
            .map_err(|message| self.decode_error(&message))?;
        match Decoder::start(pipeline) {
            Ok(decoder) => self.connection = Connection::Connecting { decoder, outage },
            Err(reason) if self.reconnects => self.went_down(reason),
            Err(reason) => return Err(self.decode_error(&reason)),
        }
        Ok(())
    }

    fn went_down(&mut self, reason: String) {
        let stream = self.options.stream_id;
        // Dropping the decoder sets its pipeline to Null and frees it.
        let outage = match std::mem::replace(&mut self.connection, Connection::Idle) {
            Connection::Down(outage)
            | Connection::Connecting {
                outage: Some(outage),
                ..
            } => {
                tracing::info!("stream {stream}: still down: {reason}");
                outage
            }
            Connection::Idle
            | Connection::Connecting { outage: None, .. }
            | Connection::Up { .. } => {
                tracing::warn!("stream {stream} down: {reason}");
                self.notify(&StreamStatus::Down { reason });
                Outage {
                    since: Instant::now(),
                    attempts: 0,
                }
            }
        };
        self.connection = Connection::Down(outage);
    }

    /// A frame arrived: the connection is up, and an outage it ends is over.
    fn came_up(&mut self) {
        self.connection = match std::mem::replace(&mut self.connection, Connection::Idle) {
            Connection::Connecting { decoder, outage } => {
                if let Some(outage) = outage {
                    self.backoff.reset();
                    tracing::info!(
                        "stream {} up after {:.1} s and {} attempts",
                        self.options.stream_id,
                        outage.since.elapsed().as_secs_f64(),
                        outage.attempts
                    );
                    self.notify(&StreamStatus::Up);
                }
                Connection::Up { decoder }
            }
            other => other,
        };
    }

    fn notify(&self, status: &StreamStatus) {
        if let Some(listener) = &self.options.status {
            listener.notify(self.options.stream_id, status);
        }
    }

    fn frame_from_sample(&mut self, sample: gst::Sample) -> Result<Frame> {
        let buffer = sample
            .buffer_owned()
            .ok_or_else(|| self.decode_error("decoder gave a sample without a buffer"))?;
        let video = self.video_info(&sample)?;
        let caps = sample
            .caps_owned()
            .ok_or_else(|| self.decode_error("decoder gave a frame without caps"))?;
        let geometry = frame_geometry(&video, buffer.meta::<gst_video::VideoMeta>().as_deref())
            .and_then(|g| g.validate(buffer.size()).map(|()| g))
            .map_err(|e| self.decode_error(&e))?;
        let index = self.next_index;
        self.next_index += 1;
        let duration_ns = buffer.duration().map(|t| t.nseconds());
        let pts_ns = self.timeline.map(
            buffer.pts().map(|t| t.nseconds()),
            duration_ns,
            Instant::now(),
        );
        Ok(Frame {
            stream_id: self.options.stream_id,
            index,
            pts_ns,
            duration_ns,
            capture_time: SystemTime::now(),
            geometry,
            buffer,
            caps,
        })
    }
}

impl FrameSource for GstSource {
    fn info(&self) -> &SourceInfo {
        &self.info
    }

    fn next_frame(&mut self) -> Result<Option<Frame>> {
        let sample = match self.pending.take() {
            Some(sample) => Some(sample),
            None => self.next_sample()?,
        };
        sample.map(|s| self.frame_from_sample(s)).transpose()
    }
}

/// Sleeps, unless told to stop; false when stopped.
fn sleep_unless_stopped(duration: Duration, stop: &StopSignal) -> bool {
    let deadline = Instant::now() + duration;
    loop {
        if stop.is_set() {
            return false;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return true;
        }
        std::thread::sleep(left.min(Duration::from_millis(50)));
    }
}

/// What waiting for a sample ended with.
enum Pulled {
    Sample(gst::Sample),
    Eos,
    Stopped,
    TimedOut,
    Failed(String),
}

/// One running decode pipeline; set to Null when dropped.
struct Decoder {
    pipeline: gst::Pipeline,
    appsink: gst_app::AppSink,
}

impl Decoder {
    fn start(
        (pipeline, appsink): (gst::Pipeline, gst_app::AppSink),
    ) -> std::result::Result<Self, String> {
        let decoder = Decoder { pipeline, appsink };
        if decoder.pipeline.set_state(gst::State::Playing).is_err() {
            return Err(decoder
                .bus_error()
                .unwrap_or_else(|| "cannot start the pipeline".to_owned()));
        }
        Ok(decoder)
    }

    /// Waits for the next sample, watching the bus so that errors end the wait.
    fn pull(&self, deadline: Option<Instant>, stop: &StopSignal) -> Pulled {
        loop {
            let poll = gst::ClockTime::from_mseconds(PULL_POLL.as_millis() as u64);
            if let Some(sample) = self.appsink.try_pull_sample(poll) {
                return Pulled::Sample(sample);
            }
            if let Some(error) = self.bus_error() {
                return Pulled::Failed(error);
            }
            if self.appsink.is_eos() {
                return Pulled::Eos;
            }
            if stop.is_set() {
                return Pulled::Stopped;
            }
            if deadline.is_some_and(|d| Instant::now() > d) {
                return Pulled::TimedOut;
            }
        }
    }

    fn bus_error(&self) -> Option<String> {
        let bus = self.pipeline.bus()?;
        while let Some(message) = bus.pop_filtered(&[gst::MessageType::Error]) {
            if let gst::MessageView::Error(err) = message.view() {
                return Some(error_line(err));
            }
        }
        None
    }
}

impl Drop for Decoder {
    fn drop(&mut self) {
        let _ = self.pipeline.set_state(gst::State::Null);
    }
}

/// One line from a GStreamer error: the message, and the element that raised it.
fn error_line(err: &gst::message::Error) -> String {
    let origin = err
        .src()
        .map(|s| format!(" (from {})", s.name()))
        .unwrap_or_default();
    format!("{}{origin}", err.error())
}

fn make(factory: &str) -> Result<gst::Element, String> {
    gst::ElementFactory::make(factory)
        .build()
        .map_err(|_| format!("GStreamer element '{factory}' is missing: install the GStreamer plugins (scripts/setup.sh)"))
}

/// Where a decoded frame's pixels are: the planes' strides and offsets from the buffer's video
/// meta when it has one, else from its caps; the colour conversion its caps declare.
fn frame_geometry(
    video: &gst_video::VideoInfo,
    meta: Option<&gst_video::VideoMeta>,
) -> std::result::Result<FrameGeometry, String> {
    let layout = match video.format() {
        gst_video::VideoFormat::Rgba => SourceLayout::Rgbx,
        gst_video::VideoFormat::Nv12 => SourceLayout::Nv12,
        gst_video::VideoFormat::I420 => SourceLayout::I420,
        other => {
            return Err(format!(
                "decoder gave {other:?} frames, not RGBA, NV12 or I420"
            ));
        }
    };
    let (offsets, strides) = match meta {
        Some(meta) => (meta.offset(), meta.stride()),
        None => (video.offset(), video.stride()),
    };
    let stride = |plane: usize| {
        let value = strides.get(plane).copied().unwrap_or(0);
        usize::try_from(value).map_err(|_| format!("plane {plane} has a negative stride"))
    };
    let offset = |plane: usize| offsets.get(plane).copied().unwrap_or(0);
    if offset(0) != 0 {
        return Err(format!("the first plane starts at byte {}", offset(0)));
    }
    let yuv = layout != SourceLayout::Rgbx;
    Ok(FrameGeometry {
        width: video.width() as usize,
        height: video.height() as usize,
        layout,
        stride: stride(0)?,
        chroma: if yuv { [offset(1), offset(2)] } else { [0; 2] },
        chroma_stride: if yuv { stride(1)? } else { 0 },
        yuv: yuv_to_rgb(&video.colorimetry()),
    })
}

/// The conversion a stream's colorimetry asks for; unknown matrix or range: BT.601 limited,
/// as OpenCV (and so the official pipeline) assumes.
fn yuv_to_rgb(colorimetry: &gst_video::VideoColorimetry) -> YuvToRgb {
    use gst_video::{VideoColorMatrix as Matrix, VideoColorRange as Range};
    let full_range = colorimetry.range() == Range::Range0_255;
    match colorimetry.matrix() {
        Matrix::Bt601 | Matrix::Unknown | Matrix::Rgb if !full_range => YuvToRgb::BT601_LIMITED,
        Matrix::Unknown | Matrix::Rgb => YuvToRgb::from_weights(0.299, 0.114, full_range),
        matrix => match matrix.kr_kb() {
            Ok((kr, kb)) => YuvToRgb::from_weights(kr, kb, full_range),
            Err(_) => YuvToRgb::from_weights(0.299, 0.114, full_range),
        },
    }
}

/// The appsink's caps: RGBA, or (`yuv_frames`) the 4:2:0 layouts the GPU path reads, so that
/// videoconvert passes a decoder's NV12/I420 through untouched; at `size` when given.
fn frame_caps(options: &SourceOptions, size: Option<(usize, usize)>) -> gst::Caps {
    use gst_video::VideoFormat;
    let mut caps = if options.yuv_frames {
        gst_video::VideoCapsBuilder::new().format_list([VideoFormat::Nv12, VideoFormat::I420])
    } else {
        gst_video::VideoCapsBuilder::new().format(VideoFormat::Rgba)
    };
    if let Some((width, height)) = size {
        caps = caps.width(width as i32).height(height as i32);
    }
    caps.build()
}

/// source -> (decoder) -> videoconvert -> videoscale -> RGBA or NV12/I420 (at `size`, when
/// given) -> appsink
fn build_decode_pipeline(
    spec: &InputSpec,
    options: &SourceOptions,
    size: Option<(usize, usize)>,
) -> Result<(gst::Pipeline, gst_app::AppSink), String> {
    let pipeline = gst::Pipeline::new();
    let convert = make("videoconvert")?;
    convert.set_property("n-threads", 0u32);
    let scale = make("videoscale")?;
    let appsink = gst_app::AppSink::builder()
        .caps(&frame_caps(options, size))
        .max_buffers(4)
        .sync(options.real_time)
        .build();
    pipeline
        .add_many([&convert, &scale, appsink.upcast_ref()])
        .map_err(|e| e.to_string())?;
    gst::Element::link_many([&convert, &scale, appsink.upcast_ref()]).map_err(|e| e.to_string())?;
    match spec {
        InputSpec::File(path) => {
            let absolute = std::path::absolute(path).map_err(|e| e.to_string())?;
            let uri = gst::glib::filename_to_uri(absolute, None).map_err(|e| e.to_string())?;
            add_uridecodebin(&pipeline, &convert, uri.as_str(), None)?;
        }
        InputSpec::Uri(uri) => add_uridecodebin(&pipeline, &convert, uri, options.rtsp_transport)?,
        InputSpec::Webcam(device) => {
            let src = make("v4l2src")?;
            src.set_property("device", device.to_string_lossy().as_ref());
            let decode = make("decodebin")?;
            pipeline
                .add_many([&src, &decode])
                .map_err(|e| e.to_string())?;
            src.link(&decode).map_err(|e| e.to_string())?;
            link_decoded_video(&pipeline, &decode, &convert);
        }
        InputSpec::Test(test) => {
            let src = make("videotestsrc")?;
            src.set_property_from_str("pattern", &test.pattern);
            src.set_property("is-live", options.real_time);
            if let Some(frames) = test.frames {
                src.set_property("num-buffers", frames as i32);
            }
            let caps = gst_video::VideoCapsBuilder::new()
                .width(test.width as i32)
                .height(test.height as i32)
                .framerate(gst::Fraction::new(test.fps as i32, 1))
                .build();
            let filter = make("capsfilter")?;
            filter.set_property("caps", &caps);
            pipeline
                .add_many([&src, &filter])
                .map_err(|e| e.to_string())?;
            gst::Element::link_many([&src, &filter, &convert]).map_err(|e| e.to_string())?;
        }
        InputSpec::Image(_) | InputSpec::ImageFolder(_) => {
            unreachable!("images are decoded without GStreamer")
        }
    }
    Ok((pipeline, appsink))
}

/// rtspsrc's jitter buffer: its default (2 s) would add two seconds to every live frame's latency.
const RTSP_LATENCY_MS: u32 = 200;

fn add_uridecodebin(
    pipeline: &gst::Pipeline,
    convert: &gst::Element,
    uri: &str,
    rtsp_transport: Option<RtspTransport>,
) -> Result<(), String> {
    let decode = make("uridecodebin")?;
    decode.set_property("uri", uri);
    // uridecodebin creates the rtspsrc itself; this is where its settings can be given.
    decode.connect("source-setup", false, move |values| {
        let source = values.get(1).and_then(|v| v.get::<gst::Element>().ok())?;
        if source.factory().is_some_and(|f| f.name() == "rtspsrc") {
            source.set_property("latency", RTSP_LATENCY_MS);
            if let Some(transport) = rtsp_transport {
                source.set_property_from_str("protocols", transport.protocols());
            }
        }
        None
    });
    pipeline.add(&decode).map_err(|e| e.to_string())?;
    link_decoded_video(pipeline, &decode, convert);
    Ok(())
}

/// Links the first decoded video pad to `convert`; other streams (audio, subtitles) go to a
/// fakesink so they never stall the pipeline. A source without video posts an error.
fn link_decoded_video(pipeline: &gst::Pipeline, decode: &gst::Element, convert: &gst::Element) {
    let pipeline_weak = pipeline.downgrade();
    let convert_weak = convert.downgrade();
    decode.connect_pad_added(move |_, pad| {
        let (Some(pipeline), Some(convert)) = (pipeline_weak.upgrade(), convert_weak.upgrade())
        else {
            return;
        };
        let is_video = pad
            .current_caps()
            .and_then(|c| c.structure(0).map(|s| s.name().starts_with("video/")))
            .unwrap_or(false);
        let sink = convert
            .static_pad("sink")
            .expect("videoconvert has a sink pad");
        if is_video && !sink.is_linked() {
            let _ = pad.link(&sink);
            return;
        }
        discard_stream(&pipeline, pad);
    });
    let convert_weak = convert.downgrade();
    decode.connect_no_more_pads(move |decode| {
        let linked = convert_weak
            .upgrade()
            .and_then(|c| c.static_pad("sink"))
            .is_some_and(|p| p.is_linked());
        if !linked {
            gst::element_error!(
                decode,
                gst::StreamError::WrongType,
                ("the input has no video stream")
            );
        }
    });
}

fn discard_stream(pipeline: &gst::Pipeline, pad: &gst::Pad) {
    let Ok(sink) = gst::ElementFactory::make("fakesink")
        .property("sync", false)
        .build()
    else {
        return;
    };
    if pipeline.add(&sink).is_ok() {
        let _ = sink.sync_state_with_parent();
        if let Some(sink_pad) = sink.static_pad("sink") {
            let _ = pad.link(&sink_pad);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_geometry_follows_the_caps_planes_and_colours() {
        gst::init().unwrap();
        let colorimetry: gst_video::VideoColorimetry = "bt709".parse().unwrap();
        for format in [gst_video::VideoFormat::Nv12, gst_video::VideoFormat::I420] {
            let video = gst_video::VideoInfo::builder(format, 321, 241)
                .colorimetry(&colorimetry)
                .build()
                .unwrap();
            let geometry = frame_geometry(&video, None).unwrap();
            assert_eq!((geometry.width, geometry.height), (321, 241));
            assert_eq!(geometry.stride, video.stride()[0] as usize);
            assert_eq!(geometry.chroma_stride, video.stride()[1] as usize);
            assert_eq!(geometry.chroma[0], video.offset()[1]);
            if format == gst_video::VideoFormat::I420 {
                assert_eq!(geometry.chroma[1], video.offset()[2]);
            }
            assert_eq!(geometry.len(), video.size(), "{format:?}");
            assert_eq!(geometry.yuv, YuvToRgb::from_weights(0.2126, 0.0722, false));
            geometry.validate(video.size()).unwrap();
        }
        let rgb = gst_video::VideoInfo::builder(gst_video::VideoFormat::Rgb, 8, 8)
            .build()
            .unwrap();
        assert!(frame_geometry(&rgb, None).is_err());
    }

    #[test]
    fn unknown_colours_are_bt601_limited_range_as_opencv_assumes() {
        let colorimetry = |text: &str| text.parse::<gst_video::VideoColorimetry>().unwrap();
        gst::init().unwrap();
        assert_eq!(yuv_to_rgb(&colorimetry("bt601")), YuvToRgb::BT601_LIMITED);
        assert_eq!(yuv_to_rgb(&colorimetry("0:0:0:0")), YuvToRgb::BT601_LIMITED);
        assert_eq!(
            yuv_to_rgb(&colorimetry("1:4:0:0")),
            YuvToRgb::from_weights(0.299, 0.114, true)
        );
        assert_eq!(
            yuv_to_rgb(&colorimetry("bt2020")),
            YuvToRgb::from_weights(0.2627, 0.0593, false)
        );
    }
}
