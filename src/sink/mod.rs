//! Outputs that take frames: the overlay video (appsrc -> x264 -> MP4/MKV) and the step-by-step
//! dumps (`--dump`) that let anyone compare this pipeline with the official Python one.

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

/// What the overlay video needs to know before the first frame.
#[derive(Clone, Debug)]
pub struct VideoSinkOptions {
    pub path: PathBuf,
    pub width: usize,
    pub height: usize,
    pub framerate: Option<(i32, i32)>,
    /// Text burnt into every frame (said when a model has random weights).
    pub banner: Option<String>,
}

/// H.264 in MP4 or MKV, chosen by the file's extension.
pub struct VideoSink {
    pipeline: gst::Pipeline,
    appsrc: gst_app::AppSrc,
    path: PathBuf,
}

const FINISH_TIMEOUT: Duration = Duration::from_secs(60);

impl VideoSink {
    pub fn open(options: &VideoSinkOptions) -> Result<Self> {
        gst::init().map_err(|e| Error::Gstreamer(e.to_string()))?;
        let fail = |message: String| Error::Output {
            path: options.path.clone(),
            message,
        };
        let muxer = muxer_for(&options.path).map_err(fail)?;
        let (pipeline, appsrc) = build_encode_pipeline(options, muxer).map_err(fail)?;
        let sink = VideoSink {
            pipeline,
            appsrc,
            path: options.path.clone(),
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
        let message = self
            .pipeline
            .bus()?
            .pop_filtered(&[gst::MessageType::Error])?;
        match message.view() {
            gst::MessageView::Error(err) => Some(self.error(&err.error().to_string())),
            _ => None,
        }
    }

    /// Hands the frame's buffer to the encoder with the frame's own timestamps.
    pub fn push(&mut self, frame: Frame) -> Result<()> {
        let mut buffer = frame.buffer;
        {
            let buffer = buffer.make_mut();
            buffer.set_pts(frame.pts_ns.map(gst::ClockTime::from_nseconds));
            buffer.set_duration(frame.duration_ns.map(gst::ClockTime::from_nseconds));
        }
        self.appsrc.push_buffer(buffer).map_err(|flow| {
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

fn muxer_for(path: &Path) -> std::result::Result<&'static str, String> {
    let extension = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    match extension.as_deref() {
        Some("mp4" | "m4v" | "mov") => Ok("mp4mux"),
        Some("mkv") => Ok("matroskamux"),
        _ => Err(
            "unsupported video container: use a .mp4 or .mkv file name, or --output none".into(),
        ),
    }
}

fn make(factory: &str) -> std::result::Result<gst::Element, String> {
    gst::ElementFactory::make(factory)
        .build()
        .map_err(|_| format!("GStreamer element '{factory}' is missing: install the GStreamer plugins (scripts/setup.sh)"))
}

/// appsrc (RGBA) -> [textoverlay] -> videoconvert -> videoscale to even size -> x264enc -> h264parse -> mux -> filesink
fn build_encode_pipeline(
    options: &VideoSinkOptions,
    muxer: &str,
) -> std::result::Result<(gst::Pipeline, gst_app::AppSrc), String> {
    let (num, den) = options.framerate.unwrap_or((0, 1));
    let caps = gst_video::VideoCapsBuilder::new()
        .format(gst_video::VideoFormat::Rgba)
        .width(options.width as i32)
        .height(options.height as i32)
        .framerate(gst::Fraction::new(num, den))
        .build();
    let frame_bytes = (options.width * options.height * 4) as u64;
    let appsrc = gst_app::AppSrc::builder()
        .caps(&caps)
        .format(gst::Format::Time)
        .block(true)
        .max_bytes(frame_bytes * 4)
        .build();
    let pipeline = gst::Pipeline::new();
    let mut chain: Vec<gst::Element> = vec![appsrc.clone().upcast()];
    if let Some(text) = &options.banner {
        let overlay = make("textoverlay")?;
        overlay.set_property("text", text.as_str());
        overlay.set_property_from_str("valignment", "top");
        overlay.set_property_from_str("halignment", "left");
        overlay.set_property("shaded-background", true);
        overlay.set_property("font-desc", "Sans 12");
        chain.push(overlay);
    }
    let convert = make("videoconvert")?;
    convert.set_property("n-threads", 0u32);
    chain.push(convert);
    // x264 needs even dimensions in 4:2:0.
    chain.push(make("videoscale")?);
    let even = make("capsfilter")?;
    even.set_property(
        "caps",
        gst_video::VideoCapsBuilder::new()
            .format(gst_video::VideoFormat::I420)
            .width((options.width as i32 & !1).max(2))
            .height((options.height as i32 & !1).max(2))
            .build(),
    );
    chain.push(even);
    let encoder = make("x264enc")?;
    encoder.set_property_from_str("speed-preset", "superfast");
    encoder.set_property_from_str("pass", "qual");
    encoder.set_property("quantizer", 23u32);
    chain.push(encoder);
    chain.push(make("h264parse")?);
    chain.push(make(muxer)?);
    let filesink = make("filesink")?;
    filesink.set_property("location", options.path.to_string_lossy().as_ref());
    chain.push(filesink);
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
            frame.width as u32,
            frame.height as u32,
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
