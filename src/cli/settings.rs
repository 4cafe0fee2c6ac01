//! The settings the pipeline runs with, built once from `run`'s flags (after the preset merge):
//! every default in one place, every choice resolved.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use anyhow::Context;
use sapiens_stream::engine::ExecutionChoice;
use sapiens_stream::pipeline::{
    ModelPaths, PersonSource, PipelineConfig, PublishTargets, RemoteSettings, Scheduling,
    Smoothing, StreamSpec,
};
use sapiens_stream::publish::mqtt::{MqttConfig, MqttQos};
use sapiens_stream::publish::server::{NetworkOptions, listen_address};
use sapiens_stream::sink::OutputSpec;
use sapiens_stream::source::{InputSpec, ReconnectOptions, SourceOptions};
use sapiens_stream::tasks::dense;
use sapiens_stream::tasks::detect::DetectorOptions;
use sapiens_stream::tasks::track::TrackerOptions;
use sapiens_stream::tasks::track::one_euro::OneEuroParams;

use super::run_args::RunArgs;

/// The values of the flags that neither the command line nor a preset set.
mod defaults {
    pub const DETECTOR_THRESHOLD: f32 = 0.3;
    pub const NMS_IOU: f32 = 0.3;
    /// Every core.
    pub const THREADS: usize = 0;
    pub const DUMP_FRAMES: u64 = 1;
    pub const KEYPOINT_THRESHOLD: f32 = 0.3;
    /// nvstreammux's advice is a frame interval; a tenth of a 10 fps camera's costs little
    /// latency and catches frames that are a moment behind.
    pub const BATCH_TIMEOUT_MS: u64 = 10;
    pub const IMAGE_FPS: u32 = 25;
    pub const BIND: std::net::IpAddr = std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);
}

impl TryFrom<RunArgs> for PipelineConfig {
    type Error = anyhow::Error;

    fn try_from(args: RunArgs) -> anyhow::Result<Self> {
        let streams = streams(&args)?;
        let threads = args.threads.unwrap_or(defaults::THREADS);
        let tracking = tracking(&args)?;
        let remote = remote_settings(&args);
        Ok(PipelineConfig {
            streams,
            stop: Arc::new(AtomicBool::new(false)),
            models: ModelPaths {
                pose: args.pose_model,
                seg: args.seg_model,
                depth: args.depth_model,
                normal: args.normal_model,
            },
            outputs: outputs(&args.output)?,
            video_preset: args.video_preset.unwrap_or_default(),
            results: args.results,
            dump: args
                .dump
                .map(|dir| (dir, args.dump_frames.unwrap_or(defaults::DUMP_FRAMES))),
            ort_lib: args.ort_lib,
            execution: ExecutionChoice {
                engine: args.engine.unwrap_or_default(),
                device: args.device.unwrap_or_default(),
            },
            threads,
            keypoint_threshold: args
                .keypoint_threshold
                .unwrap_or(defaults::KEYPOINT_THRESHOLD),
            seg_upsample: args.seg_upsample.unwrap_or_default(),
            publish: PublishTargets {
                osc: args.osc,
                mqtt: args
                    .mqtt
                    .as_deref()
                    .map(|url| mqtt_config(url, args.mqtt_qos, args.mqtt_client_id))
                    .transpose()?,
            },
            network: network_options(
                args.http.as_deref(),
                args.ws.as_deref(),
                args.token,
                args.bind.unwrap_or(defaults::BIND),
            )?,
            persons: persons(
                (args.detector, args.boxes),
                args.detector_threshold,
                args.nms_iou,
                threads,
            )?,
            flip_test: args.flip_test,
            tracking,
            detect_every: args.detect_every,
            view: args.view.unwrap_or_default(),
            mask_classes: args
                .mask_classes
                .as_deref()
                .map(dense::parse_mask_classes)
                .transpose()?
                .unwrap_or_default(),
            dense_dir: args.dense_dir,
            pointcloud_dir: args.pointcloud_dir,
            max_batch: args.max_batch,
            batch_timeout: Duration::from_millis(
                args.batch_timeout_ms.unwrap_or(defaults::BATCH_TIMEOUT_MS),
            ),
            remote,
            max_frames: args.max_frames,
            progress: !args.no_progress,
            source: SourceOptions {
                image_fps: args.image_fps.unwrap_or(defaults::IMAGE_FPS),
                rtsp_transport: args.rtsp_transport,
                reconnect: ReconnectOptions {
                    policy: args.reconnect.unwrap_or_default(),
                    max_delay: args.reconnect_max_delay.map_or(
                        ReconnectOptions::default().max_delay,
                        Duration::from_secs_f64,
                    ),
                    ..ReconnectOptions::default()
                },
                loop_input: args.loop_input,
                ..SourceOptions::default()
            },
        })
    }
}

/// `--input`s, then a preset's `[[streams]]`, in that order (their indexes).
fn streams(args: &RunArgs) -> anyhow::Result<Vec<StreamSpec>> {
    let given = args.input.iter().enumerate();
    let mut streams = given
        .map(|(index, text)| StreamSpec::parse(text, index, args.mode))
        .collect::<Result<Vec<_>, _>>()?;
    for preset in &args.streams {
        let input =
            InputSpec::parse(&preset.input).with_context(|| format!("stream {}", preset.name))?;
        streams.push(StreamSpec {
            name: preset.name.clone(),
            scheduling: preset
                .mode
                .or(args.mode)
                .unwrap_or_else(|| Scheduling::default_for(&input)),
            outputs: preset.output.as_deref().map(outputs).transpose()?,
            reconnect: preset.reconnect,
            input,
        });
    }
    Ok(streams)
}

/// `--output`s; `none` writes no video.
fn outputs(outputs: &[String]) -> anyhow::Result<Vec<OutputSpec>> {
    Ok(outputs
        .iter()
        .filter(|o| *o != "none")
        .map(|o| OutputSpec::parse(o))
        .collect::<Result<Vec<_>, _>>()?)
}

/// `--detector` (with its thresholds) or `--boxes`, else the whole frame.
fn remote_settings(args: &RunArgs) -> RemoteSettings {
    let defaults = RemoteSettings::default();
    RemoteSettings {
        timeout: args
            .remote_timeout
            .map_or(defaults.timeout, Duration::from_secs_f64),
        deadline: args
            .remote_deadline
            .map_or(defaults.deadline, Duration::from_secs_f64),
        shared_memory: args.triton_shm,
    }
}

fn persons(
    (detector, boxes): (Option<PathBuf>, Option<PathBuf>),
    score_threshold: Option<f32>,
    nms_iou: Option<f32>,
    threads: usize,
) -> anyhow::Result<PersonSource> {
    Ok(match (detector, boxes) {
        (Some(_), Some(_)) => anyhow::bail!("--detector and --boxes exclude each other: give one"),
        (Some(model), None) => PersonSource::Detector {
            model,
            options: DetectorOptions {
                score_threshold: score_threshold.unwrap_or(defaults::DETECTOR_THRESHOLD),
                nms_iou: nms_iou.unwrap_or(defaults::NMS_IOU),
                threads,
            },
        },
        (None, Some(path)) => PersonSource::BoxesFile(path),
        (None, None) => PersonSource::WholeFrame,
    })
}

fn network_options(
    http: Option<&str>,
    ws: Option<&str>,
    token: Option<String>,
    host: std::net::IpAddr,
) -> anyhow::Result<NetworkOptions> {
    Ok(NetworkOptions {
        http: http
            .map(|spec| listen_address("--http", spec, host))
            .transpose()?,
        ws: ws
            .map(|spec| listen_address("--ws", spec, host))
            .transpose()?,
        token,
        ..NetworkOptions::default()
    })
}

fn mqtt_config(
    url: &str,
    qos: Option<u8>,
    client_id: Option<String>,
) -> anyhow::Result<MqttConfig> {
    let mut config = MqttConfig::from_url(url)?;
    if let Some(level) = qos {
        config.qos = MqttQos::from_level(level)?;
    }
    if let Some(id) = client_id {
        config.client_id = id;
    }
    Ok(config)
}

/// The tracker's options when --track or smoothing asks for one.
fn tracking(args: &RunArgs) -> anyhow::Result<Option<TrackerOptions>> {
    let smoothing = match args.smooth.unwrap_or_default() {
        Smoothing::None => None,
        Smoothing::OneEuro => {
            let defaults = OneEuroParams::WEBCAM;
            Some(
                OneEuroParams::checked(
                    args.smooth_min_cutoff.unwrap_or(defaults.min_cutoff),
                    args.smooth_beta.unwrap_or(defaults.beta),
                    args.smooth_d_cutoff.unwrap_or(defaults.d_cutoff),
                )
                .map_err(|reason| anyhow::anyhow!("--smooth one-euro: {reason}"))?,
            )
        }
    };
    let detect_every = args.detect_every.is_some_and(|n| n > 1);
    if detect_every && args.detector.is_none() {
        anyhow::bail!(
            "--detect-every needs --detector (boxes from a file or the whole frame cost nothing to find)"
        );
    }
    let defaults = TrackerOptions::default();
    Ok(
        (args.track || smoothing.is_some() || detect_every).then(|| TrackerOptions {
            max_age_s: args.track_max_age.unwrap_or(defaults.max_age_s),
            smoothing,
            ..defaults
        }),
    )
}
