//! Outputs that take frames: the overlay video, written to a file (appsrc -> x264 -> MP4/MKV),
//! served over RTSP or pushed to an RTSP server ([`rtsp`]), and the step-by-step dumps (`--dump`)
//! that let anyone compare this pipeline with the official Python one.

pub mod rtsp;

use std::path::{Path, PathBuf};
use std::time::Duration;

use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;
use gstreamer_video as gst_video;
use npyz::WriterBuilder;

use crate::error::{Error, Result};
use crate::frame::Frame;
use crate::tasks::Task;

use rtsp::{RtspPush, RtspServer, RtspUrl};

/// What an overlay video output needs to know before the first frame.
#[derive(Clone, Debug)]
pub struct VideoSinkOptions {
    pub width: usize,
    pub height: usize,
    pub preset: VideoPreset,
}

/// x264's speed preset for the overlay video: each step slower gives a smaller file at the
/// same quality (quantizer 23).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum VideoPreset {
    /// The cheapest: about 30% less encoder time than superfast, files about 20% larger.
    Ultrafast,
    #[default]
    Superfast,
    Veryfast,
    Faster,
    Fast,
    Medium,
}

impl VideoPreset {
    /// The name x264enc's `speed-preset` takes.
    fn x264_name(self) -> &'static str {
        match self {
            Self::Ultrafast => "ultrafast",
            Self::Superfast => "superfast",
            Self::Veryfast => "veryfast",
            Self::Faster => "faster",
            Self::Fast => "fast",
            Self::Medium => "medium",
        }
    }
}

/// What `--output` names.
#[derive(Clone, Debug, PartialEq)]
pub enum OutputSpec {
    /// H.264 in MP4 or MKV, by the file's extension.
    File(PathBuf),
    /// `rtsp://` with a local host: served here, to any number of clients.
    RtspServe(RtspUrl),
    /// `rtsp://` with another host: pushed (RECORD) to that server.
    RtspPush(RtspUrl),
}

impl OutputSpec {
    pub fn parse(output: &str) -> Result<Self> {
        if output.starts_with("rtsp://") {
            let url = RtspUrl::parse(output).map_err(|message| Error::Output {
                path: PathBuf::from(output),
                message,
            })?;
            return Ok(if url.is_local() {
                OutputSpec::RtspServe(url)
            } else {
                OutputSpec::RtspPush(url)
            });
        }
        if let Some((scheme, _)) = output.split_once("://") {
            return Err(Error::Output {
                path: PathBuf::from(output),
                message: format!(
                    "unsupported output '{scheme}://' (a .mp4/.mkv file or rtsp://HOST:PORT/PATH)"
                ),
            });
        }
        Ok(OutputSpec::File(PathBuf::from(output)))
    }

    /// Has `{name}`, to be filled in per stream.
    pub fn has_placeholder(&self) -> bool {
        self.to_string().contains("{name}")
    }

    /// The output of the stream `name`: `{name}` filled in.
    pub fn for_stream(&self, name: &str) -> OutputSpec {
        if !self.has_placeholder() {
            return self.clone();
        }
        OutputSpec::parse(&self.to_string().replace("{name}", name))
            .expect("a stream name ([A-Za-z0-9_-]+) keeps a valid output valid")
    }
}

impl std::fmt::Display for OutputSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OutputSpec::File(path) => write!(f, "{}", path.display()),
            OutputSpec::RtspServe(url) | OutputSpec::RtspPush(url) => write!(f, "{url}"),
        }
    }
}

/// One overlay video output; the pipeline feeds every output the same frames.
pub enum VideoOutput {
    File(VideoSink),
    RtspServe(RtspServer),
    RtspPush(RtspPush),
}

impl VideoOutput {
    pub fn open(spec: &OutputSpec, options: &VideoSinkOptions) -> Result<Self> {
        gst::init().map_err(|e| Error::Gstreamer(e.to_string()))?;
        Ok(match spec {
            OutputSpec::File(path) => VideoOutput::File(VideoSink::open(path, options)?),
            OutputSpec::RtspServe(url) => VideoOutput::RtspServe(RtspServer::open(url, options)?),
            OutputSpec::RtspPush(url) => VideoOutput::RtspPush(RtspPush::open(url, options)?),
        })
    }

    /// Files take every frame (backpressure); RTSP outputs never block and drop what nobody takes.
    pub fn push(&mut self, frame: &mut Frame) -> Result<()> {
        match self {
            VideoOutput::File(sink) => sink.push(frame),
            VideoOutput::RtspServe(server) => {
                server.push(frame);
                Ok(())
            }
            VideoOutput::RtspPush(push) => push.push(frame),
        }
    }

    /// Ends the stream: files are finalised, RTSP clients are told and disconnected.
    pub fn finish(self) -> Result<()> {
        match self {
            VideoOutput::File(sink) => sink.finish(),
            VideoOutput::RtspServe(server) => {
                server.finish();
                Ok(())
            }
            VideoOutput::RtspPush(push) => push.finish(),
        }
    }
}

/// H.264 in MP4 or MKV, chosen by the file's extension.
pub struct VideoSink {
    pipeline: gst::Pipeline,
    appsrc: gst_app::AppSrc,
    path: PathBuf,
}

const FINISH_TIMEOUT: Duration = Duration::from_secs(60);

impl VideoSink {
    pub fn open(path: &Path, options: &VideoSinkOptions) -> Result<Self> {
        gst::init().map_err(|e| Error::Gstreamer(e.to_string()))?;
        let fail = |message: String| Error::Output {
            path: path.to_owned(),
            message,
        };
        let muxer = muxer_for(path).map_err(fail)?;
        let (pipeline, appsrc) = build_file_pipeline(path, options, muxer).map_err(fail)?;
        let sink = VideoSink {
            pipeline,
            appsrc,
            path: path.to_owned(),
        };
        sink.pipeline.set_state(gst::State::Playing).map_err(|_| {
            sink.bus_error()
                .unwrap_or_else(|| sink.error("cannot start the encoder"))
        })?;
        Ok(sink)
    }

    fn error(&self, message: &str) -> Error {
        Error::Output {
            path: self.path.clone(),
            message: message.to_owned(),
        }
    }

    fn bus_error(&self) -> Option<Error> {
        posted_error(&self.pipeline).map(|message| self.error(&message))
    }

    /// Hands the frame to the encoder with the frame's own timestamps.
    pub fn push(&mut self, frame: &mut Frame) -> Result<()> {
        let sample = frame_sample(frame, Timing::Frame);
        self.appsrc.push_sample(&sample).map_err(|flow| {
            self.bus_error()
                .unwrap_or_else(|| self.error(&format!("encoder refused a frame: {flow:?}")))
        })?;
        Ok(())
    }

    /// Sends end-of-stream and waits until the muxer has finalised the file.
    pub fn finish(self) -> Result<()> {
        self.appsrc
            .end_of_stream()
            .map_err(|flow| self.error(&format!("cannot end the stream: {flow:?}")))?;
        let bus = self
            .pipeline
            .bus()
            .ok_or_else(|| self.error("encoder pipeline has no bus"))?;
        let message = bus.timed_pop_filtered(
            gst::ClockTime::from_seconds(FINISH_TIMEOUT.as_secs()),
            &[gst::MessageType::Eos, gst::MessageType::Error],
        );
        let result = match message.as_ref().map(|m| m.view()) {
            Some(gst::MessageView::Eos(_)) => Ok(()),
            Some(gst::MessageView::Error(err)) => Err(self.error(&err.error().to_string())),
            _ => Err(self.error("the encoder did not finish within a minute")),
        };
        let _ = self.pipeline.set_state(gst::State::Null);
        result
    }
}

impl Drop for VideoSink {
    fn drop(&mut self) {
        let _ = self.pipeline.set_state(gst::State::Null);
    }
}

/// The error an element of `pipeline` has posted on its bus, if any (without waiting).
fn posted_error(pipeline: &gst::Pipeline) -> Option<String> {
    let message = pipeline.bus()?.pop_filtered(&[gst::MessageType::Error])?;
    match message.view() {
        gst::MessageView::Error(err) => Some(err.error().to_string()),
        _ => None,
    }
}

fn muxer_for(path: &Path) -> std::result::Result<&'static str, String> {
    let extension = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    match extension.as_deref() {
        Some("mp4" | "m4v" | "mov") => Ok("mp4mux"),
        Some("mkv") => Ok("matroskamux"),
        _ => Err("unsupported video container: use a .mp4 or .mkv file name, an rtsp:// URL, or --output none".into()),
    }
}

fn make(factory: &str) -> std::result::Result<gst::Element, String> {
    gst::ElementFactory::make(factory)
        .build()
        .map_err(|_| format!("GStreamer element '{factory}' is missing: install the GStreamer plugins (scripts/setup.sh)"))
}

/// How the encoder is tuned for where its stream goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Delivery {
    /// A file: every frame, quality first.
    File,
    /// A network stream: no frame reordering or lookahead, and frequent key frames so that a
    /// client joining mid-stream starts within a second or two.
    Live,
}

/// Frames a file output queues before the pipeline waits for its encoder.
const FILE_QUEUE_FRAMES: u64 = 4;

/// A key frame at least this often on live streams.
const LIVE_KEYFRAME_INTERVAL: u32 = 30;

/// Whose clock a frame pushed to an encoder is timed by.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Timing {
    /// The frame's own timestamps (files).
    Frame,
    /// None: the appsrc stamps the frame on arrival (live streams).
    Arrival,
}

/// The frame as the encoder takes it, timed for this output, with its caps, so the encoder reads
/// whatever layout it comes in (the decoder's NV12/I420 with its colorimetry, or RGBA) and
/// converts only if it must.
/// - A file gets the frame's own buffer with its timestamps set in place (a new buffer over the
///   same memory only if another output holds it already). A copy here would share the memory,
///   and a pool whose buffer comes back with shared memory drops it instead of reusing it.
/// - A live stream gets a buffer of its own over the same memory: its appsrc stamps buffers on
///   arrival, on its own thread.
fn frame_sample(frame: &mut Frame, timing: Timing) -> gst::Sample {
    let buffer = match timing {
        Timing::Frame => {
            let pts = frame.pts_ns.map(gst::ClockTime::from_nseconds);
            let duration = frame.duration_ns.map(gst::ClockTime::from_nseconds);
            set_times(frame.buffer.make_mut(), pts, duration);
            frame.buffer.clone()
        }
        Timing::Arrival => {
            let mut unstamped = frame.buffer.copy();
            set_times(unstamped.make_mut(), None, None);
            unstamped
        }
    };
    gst::Sample::builder()
        .buffer(&buffer)
        .caps(&frame.caps)
        .build()
}

/// The times an encoder reads from a raw frame; it makes the decode timestamps itself.
fn set_times(
    buffer: &mut gst::BufferRef,
    pts: Option<gst::ClockTime>,
    duration: Option<gst::ClockTime>,
) {
    buffer.set_pts(pts);
    buffer.set_dts(gst::ClockTime::NONE);
    buffer.set_duration(duration);
}

/// The appsrc frames enter by, as samples that carry their caps. Files block the pipeline when
/// the encoder falls behind; live streams never block: they timestamp frames on arrival and
/// drop the oldest when full.
fn frame_appsrc(delivery: Delivery) -> gst_app::AppSrc {
    let builder = gst_app::AppSrc::builder().format(gst::Format::Time);
    match delivery {
        // Bounded in frames, whatever their layout's size (no byte bound: the default, 200 kB,
        // is less than one 1080p frame).
        Delivery::File => builder
            .block(true)
            .max_bytes(0)
            .max_buffers(FILE_QUEUE_FRAMES)
            .build(),
        Delivery::Live => builder
            .is_live(true)
            .do_timestamp(true)
            .block(false)
            .max_bytes(0)
            .max_buffers(2)
            .leaky_type(gst_app::AppLeakyType::Downstream)
            .build(),
    }
}

/// appsrc -> videoconvert -> videoscale to even size -> x264enc -> h264parse;
/// NV12 and I420 frames of even size pass the converter and the scaler untouched.
fn encoder_chain(
    appsrc: &gst_app::AppSrc,
    options: &VideoSinkOptions,
    delivery: Delivery,
) -> std::result::Result<Vec<gst::Element>, String> {
    let mut chain: Vec<gst::Element> = vec![appsrc.clone().upcast()];
    let convert = make("videoconvert")?;
    convert.set_property("n-threads", 0u32);
    chain.push(convert);
    // x264 needs even dimensions in 4:2:0.
    chain.push(make("videoscale")?);
    let even = make("capsfilter")?;
    even.set_property(
        "caps",
        gst_video::VideoCapsBuilder::new()
            .format_list([gst_video::VideoFormat::I420, gst_video::VideoFormat::Nv12])
            .width((options.width as i32 & !1).max(2))
            .height((options.height as i32 & !1).max(2))
            .build(),
    );
    chain.push(even);
    let encoder = make("x264enc")?;
    encoder.set_property_from_str("speed-preset", options.preset.x264_name());
    encoder.set_property_from_str("pass", "qual");
    encoder.set_property("quantizer", 23u32);
    // No B-frames: live runs drop frames, and with reordered frames around such a gap mp4mux
    // writes an edit list that ends before the last frame, which players then never show.
    encoder.set_property("bframes", 0u32);
    if delivery == Delivery::Live {
        encoder.set_property_from_str("tune", "zerolatency");
        encoder.set_property("key-int-max", LIVE_KEYFRAME_INTERVAL);
    }
    chain.push(encoder);
    chain.push(make("h264parse")?);
    Ok(chain)
}

/// The encoder chain -> mux -> filesink
fn build_file_pipeline(
    path: &Path,
    options: &VideoSinkOptions,
    muxer: &str,
) -> std::result::Result<(gst::Pipeline, gst_app::AppSrc), String> {
    let appsrc = frame_appsrc(Delivery::File);
    let mut chain = encoder_chain(&appsrc, options, Delivery::File)?;
    chain.push(make(muxer)?);
    let filesink = make("filesink")?;
    filesink.set_property("location", path.to_string_lossy().as_ref());
    chain.push(filesink);
    let pipeline = gst::Pipeline::new();
    pipeline.add_many(&chain).map_err(|e| e.to_string())?;
    gst::Element::link_many(&chain).map_err(|e| e.to_string())?;
    Ok((pipeline, appsrc))
}

/// `--dump DIR --dump-frames N`: the decoded frame as PNG and each task's exact model input and
/// raw output as NumPy files, for the first N frames.
pub struct Dumper {
    dir: PathBuf,
    frames: u64,
}

impl Dumper {
    pub fn create(dir: &Path, frames: u64) -> Result<Self> {
        std::fs::create_dir_all(dir)
            .map_err(|e| Error::io(format!("creating dump folder {}", dir.display()), e))?;
        Ok(Dumper {
            dir: dir.to_owned(),
            frames,
        })
    }

    pub fn wants(&self, frame_index: u64) -> bool {
        frame_index < self.frames
    }

    pub fn frame_png(&self, frame: &Frame) -> Result<()> {
        let path = self.dir.join(format!("frame_{:06}.png", frame.index));
        image::save_buffer(
            &path,
            &frame.to_rgb(),
            frame.width() as u32,
            frame.height() as u32,
            image::ExtendedColorType::Rgb8,
        )
        .map_err(|e| Error::Output {
            path,
            message: e.to_string(),
        })
    }

    /// Writes `DIR/frame_NNNNNN_<task>_<kind>.npy` (kind: input or output).
    pub fn tensor(
        &self,
        frame_index: u64,
        task: Task,
        kind: &str,
        shape: &[usize],
        data: &[f32],
    ) -> Result<()> {
        let path = self
            .dir
            .join(format!("frame_{frame_index:06}_{}_{kind}.npy", task.name()));
        write_npy(&path, shape, data)
            .map_err(|e| Error::io(format!("writing {}", path.display()), e))
    }
}

fn write_npy(path: &Path, shape: &[usize], data: &[f32]) -> std::io::Result<()> {
    let file = std::io::BufWriter::new(std::fs::File::create(path)?);
    let shape: Vec<u64> = shape.iter().map(|&d| d as u64).collect();
    let mut writer = npyz::WriteOptions::<f32>::new()
        .default_dtype()
        .shape(&shape)
        .writer(file)
        .begin_nd()?;
    writer.extend(data.iter().copied())?;
    writer.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small RGBA frame at 40 ms.
    fn frame_at_40_ms() -> Frame {
        gst::init().expect("GStreamer initialises");
        Frame {
            stream_id: 0,
            index: 1,
            pts_ns: Some(40_000_000),
            duration_ns: Some(40_000_000),
            capture_time: std::time::SystemTime::now(),
            geometry: Frame::rgba_geometry(4, 2, 16),
            buffer: gst::Buffer::from_mut_slice(vec![9u8; 32]),
            caps: Frame::rgba_caps(4, 2, (25, 1)),
        }
    }

    fn memory_address(buffer: &gst::BufferRef) -> usize {
        buffer.map_readable().expect("readable").as_ptr() as usize
    }

    #[test]
    fn a_file_takes_the_frames_own_buffer_and_a_live_stream_one_of_its_own() {
        let mut frame = frame_at_40_ms();
        let at_40_ms = Some(gst::ClockTime::from_mseconds(40));
        let file = frame_sample(&mut frame, Timing::Frame);
        let file_buffer = file.buffer().expect("a buffer");
        assert_eq!(
            file_buffer.as_ptr(),
            frame.buffer.as_ptr(),
            "the frame's own buffer"
        );
        assert_eq!(file_buffer.pts(), at_40_ms);
        let live = frame_sample(&mut frame, Timing::Arrival);
        let live_buffer = live.buffer().expect("a buffer");
        assert_ne!(
            live_buffer.as_ptr(),
            file_buffer.as_ptr(),
            "a buffer of its own"
        );
        assert_eq!(live_buffer.pts(), None, "the live appsrc stamps it");
        assert_eq!(file_buffer.pts(), at_40_ms, "the file's timestamps stay");
        assert_eq!(
            memory_address(live_buffer),
            memory_address(file_buffer),
            "the pixels are not copied"
        );
    }

    #[test]
    fn outputs_are_files_served_or_pushed_streams() {
        assert_eq!(
            OutputSpec::parse("out.mp4").unwrap(),
            OutputSpec::File("out.mp4".into())
        );
        let served = OutputSpec::parse("rtsp://0.0.0.0:8554/live").unwrap();
        assert!(matches!(served, OutputSpec::RtspServe(u) if u.port == 8554));
        let served = OutputSpec::parse("rtsp://localhost:8554/live").unwrap();
        assert!(matches!(served, OutputSpec::RtspServe(_)));
        // TEST-NET-1 (RFC 5737) is never this machine.
        let pushed = OutputSpec::parse("rtsp://192.0.2.7:8554/in").unwrap();
        assert!(matches!(pushed, OutputSpec::RtspPush(u) if u.path == "/in"));
        let error = OutputSpec::parse("srt://0.0.0.0:9000")
            .unwrap_err()
            .to_string();
        assert!(error.contains("unsupported output 'srt://'"), "{error}");
        assert!(OutputSpec::parse("rtsp://0.0.0.0:8554").is_err());
    }
}
