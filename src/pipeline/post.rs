//! The post stage: heatmaps to keypoints, logits to class maps, depth and normals to their
//! maps and files, the overlay drawn, and the frame's result.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::UNIX_EPOCH;

use crossbeam_channel::{Receiver, Sender};

use crate::error::{Error, Result};
use crate::frame::{Frame, FrameCopies};
use crate::metrics::{Metrics, StageStats};
use crate::preprocess::letterbox::{Letterbox, SAPIENS2_PADDING};
use crate::publish::frame_hub::FrameHub;
use crate::publish::{
    DepthSummary, FrameResult, NormalsSummary, POINTMAP_VERSION, PointmapSummary, SCHEMA_NAME,
    SCHEMA_VERSION, SegmentationSummary, StreamId,
};
use crate::render::Banner;
use crate::render::tracks::TrackMark;
use crate::render::{self, Canvas, PoseStyle};
use crate::tasks::dense::pointmap::{self, PointmapScale};
use crate::tasks::keypoint_sets;
use crate::tasks::pose::decode::HeatmapPeak;
use crate::tasks::pose::{self, Person};
use crate::tasks::track::{TrackEvent, TrackEventKind, Tracker, TrackerOptions};
use crate::tasks::{self, OutputLayout, dense, seg};

/// Units of a Sapiens2 pointmap model's depth and points.
const METRES: &str = "m";

use super::config::{SegUpsample, View};
use super::decode::StageOutcome;
use super::links::Pool;
use super::models::ModelSummary;
use super::stream::RunShared;
use super::track_crops::TrackFeedback;
use super::work::{Delivery, DenseOutput, Done, PoseOutput, SegOutput, Work};

#[derive(Clone)]
pub(super) struct PostOptions {
    pub(super) threshold: f32,
    pub(super) seg_upsample: SegUpsample,
    pub(super) draw: bool,
    pub(super) view: View,
    pub(super) dense_dir: Option<PathBuf>,
    pub(super) mask_classes: Vec<u8>,
    /// `--pointcloud-dir`: a PLY per frame from a pointmap model.
    pub(super) pointcloud_dir: Option<PathBuf>,
    /// Persons tracked across frames; `None`: every frame alone.
    pub(super) tracking: Option<TrackerOptions>,
    /// The stream's video for browser viewers.
    pub(super) frame_hub: Option<Arc<FrameHub>>,
}

/// Frame-size maps the post stage reuses from frame to frame.
#[derive(Default)]
struct DenseMaps {
    class_map: Vec<u8>,
    depth: Vec<f32>,
    depth_normalised: Vec<f32>,
    normals: Vec<f32>,
    /// A pointmap model's metric points (x, y, z planes).
    points: Vec<f32>,
    /// A padded model's output with the padding taken off.
    cropped: Vec<f32>,
}

/// What the post stage made of one frame's outputs.
struct FrameOutputs {
    persons: Option<Vec<Person>>,
    segmentation: Option<SegmentationSummary>,
    depth: Option<DepthSummary>,
    normals: Option<NormalsSummary>,
    pointmap: Option<PointmapSummary>,
}

pub(super) fn post_stage(
    (inferred, out): (Receiver<Work>, Sender<Delivery>),
    stream: &StreamId,
    shared: &RunShared,
    (options, pool): (&PostOptions, &Pool),
    feedback: Option<TrackFeedback>,
) -> StageOutcome {
    let (summary, metrics, frame_hub) = (&shared.summary, &shared.metrics, &options.frame_hub);
    let mut stage = PostStage {
        stream,
        summary,
        options,
        pool,
        stats: PostStats::new(metrics),
        peaks: Vec::new(),
        maps: DenseMaps::default(),
        tracking: None,
        banner: None,
        copies: FrameCopies::default(),
        feedback,
        metrics: Arc::clone(metrics),
    };
    for mut work in inferred {
        let (result, track_events) = stage.process(&mut work, frame_hub.as_deref())?;
        let done = Done {
            frame: work.frame,
            result,
            track_events,
        };
        if out.send(Delivery::Frame(Box::new(done))).is_err() {
            return Ok((0, stage.stats.ran()));
        }
    }
    if let Some(tracking) = &mut stage.tracking {
        // The deliver stage gone means it failed; it reports why.
        let _ = out.send(Delivery::TracksEnded {
            track_events: tracking.tracker.finish(),
        });
    }
    Ok((0, stage.stats.ran()))
}

/// The post stage's settings and what it reuses from frame to frame.
struct PostStage<'a> {
    stream: &'a StreamId,
    summary: &'a ModelSummary,
    options: &'a PostOptions,
    /// Where the host outputs go back once read.
    pool: &'a Pool,
    stats: PostStats,
    peaks: Vec<HeatmapPeak>,
    maps: DenseMaps,
    /// The stream's tracker, made at its first frame (it needs the frame's size).
    tracking: Option<Tracking>,
    banner: Option<Banner>,
    /// Where frames still shared are copied before they are drawn on.
    copies: FrameCopies,
    /// Where the tracks go back to the preprocess stage (`--detect-every`).
    feedback: Option<TrackFeedback>,
    metrics: Arc<Metrics>,
}

impl PostStage<'_> {
    /// The frame's outputs made into its result, and the track events it brought; its files
    /// written and its overlay drawn.
    fn process(
        &mut self,
        work: &mut Work,
        frame_hub: Option<&FrameHub>,
    ) -> Result<(FrameResult, Vec<TrackEvent>)> {
        let mut persons = self.persons(work);
        let track_events = match (&mut persons, self.options.tracking) {
            (Some(persons), Some(options)) => {
                let tracking = self
                    .tracking
                    .get_or_insert_with(|| Tracking::new(options, &work.frame));
                let events = tracking.update(&work.frame, persons);
                let confirmed = events
                    .iter()
                    .filter(|e| e.kind == TrackEventKind::Confirmed)
                    .count();
                let held = tracking.tracker.confirmed();
                self.metrics.tracks(work.frame.stream_id, held, confirmed);
                if let Some(feedback) = &self.feedback {
                    feedback.publish(work.frame.index, tracking.tracker.tracked(), &events);
                }
                events
            }
            _ => Vec::new(),
        };
        let segmentation = self.segmentation(work);
        let foreground = segmentation.is_some();
        let (depth, pointmap) = self.depth(work, foreground);
        let mut outputs = FrameOutputs {
            persons,
            segmentation,
            depth,
            normals: self.normals(work),
            pointmap,
        };
        let options = self.options;
        if let Some(dir) = &options.dense_dir {
            let (frame, maps) = (&work.frame, &self.maps);
            self.stats.dense_files.time(|| {
                write_dense_files(dir, frame, maps, &options.mask_classes, &mut outputs)
            })?;
        }
        if let (Some(dir), Some(pointmap)) = (&options.pointcloud_dir, outputs.pointmap.as_mut()) {
            let (frame, maps) = (&work.frame, &self.maps);
            let classes = foreground.then_some(&maps.class_map[..]);
            self.stats
                .dense_files
                .time(|| write_pointcloud(dir, frame, &maps.points, classes, pointmap))?;
        }
        // Browsers draw the overlay themselves: they get the frame as decoded.
        if let Some(hub) = frame_hub {
            work.frame
                .with_host_frame(|frame| hub.publish_frame(*frame));
        }
        if options.draw {
            let painted = work.painted.take();
            let view_drawn = painted.is_some();
            if let Some(painted) = painted {
                work.frame.replace_with_painted(painted);
            }
            self.fit_banner(work.frame.width(), work.frame.height());
            let banner = self.banner.as_ref();
            let (frame, maps, summary) = (&mut work.frame, &self.maps, self.summary);
            let copies = &mut self.copies;
            self.stats.render.time(|| {
                draw(
                    (frame, copies),
                    view_drawn,
                    &outputs,
                    (maps, banner),
                    summary,
                    options,
                )
            })?;
        }
        Ok((
            frame_result(&work.frame, self.stream, self.summary, outputs),
            track_events,
        ))
    }

    /// Makes the random-weights banner for frames of this size, when a model has random
    /// weights and the size is new (a reconnected camera may change it).
    fn fit_banner(&mut self, width: usize, height: usize) {
        let fits = self.banner.as_ref().map(Banner::frame_size) == Some((width, height));
        if self.summary.random_weights && !fits {
            self.banner = Banner::new(RANDOM_WEIGHTS_BANNER, width, height);
        }
    }

    /// Keypoints from host heatmaps, or from the GPU's peaks.
    fn persons(&mut self, work: &mut Work) -> Option<Vec<Person>> {
        let layout = self.summary.pose_layout?;
        match work.pose.take()? {
            PoseOutput::Heatmaps(heatmaps) => {
                let (boxes, peaks) = (&work.boxes, &mut self.peaks);
                let persons = self
                    .stats
                    .pose_decode
                    .time(|| pose::decode_persons(&heatmaps, layout, boxes, peaks));
                self.pool.put(heatmaps);
                Some(persons)
            }
            PoseOutput::Peaks(decoded) => {
                Some(pose::persons_from_peaks(&decoded, layout, &work.boxes))
            }
        }
    }

    /// The frame-size class map, from host logits or as the GPU made it, summarised.
    fn segmentation(&mut self, work: &mut Work) -> Option<SegmentationSummary> {
        let (width, height) = (work.frame.width(), work.frame.height());
        match (work.seg.take()?, self.summary.seg_layout) {
            (SegOutput::Logits(logits), Some(layout)) => {
                let (upsample, maps) = (self.options.seg_upsample, &mut self.maps);
                let summary = self
                    .stats
                    .seg_post
                    .time(|| class_map(&logits, layout, width, height, upsample, maps));
                self.pool.put(logits);
                Some(summary)
            }
            (SegOutput::ClassMap(class_map), Some(layout)) => {
                self.maps.class_map = class_map;
                Some(summarise_classes(&self.maps.class_map, layout))
            }
            (SegOutput::ClassMap(_), None) => None,
            (SegOutput::Logits(_), None) => None,
        }
    }

    /// The frame-size depth map and its range, over the persons when `foreground`; from a
    /// pointmap model, metric, with the frame's points.
    fn depth(
        &mut self,
        work: &mut Work,
        foreground: bool,
    ) -> (Option<DepthSummary>, Option<PointmapSummary>) {
        let (width, height) = (work.frame.width(), work.frame.height());
        let Some(output) = work.depth.take() else {
            return (None, None);
        };
        match (output, self.summary.depth_layout) {
            (DenseOutput::Raw(raw), Some(layout)) if layout.is_pointmap() => {
                let maps = &mut self.maps;
                let (range, scale) = self
                    .stats
                    .dense_post
                    .time(|| pointmap_depth(&raw, layout, width, height, foreground, maps));
                self.pool.put(raw);
                let depth = DepthSummary {
                    units: Some(METRES),
                    ..DepthSummary::new(range, foreground)
                };
                let pointmap = PointmapSummary {
                    version: POINTMAP_VERSION,
                    units: METRES,
                    scale: scale.scale,
                    focal_length_px: scale.focal_length_px,
                    pointcloud_file: None,
                    points: None,
                };
                (Some(depth), Some(pointmap))
            }
            (DenseOutput::Raw(raw), Some(layout)) => {
                let maps = &mut self.maps;
                let range = self
                    .stats
                    .dense_post
                    .time(|| depth_map(&raw, layout, width, height, foreground, maps));
                self.pool.put(raw);
                (Some(DepthSummary::new(range, foreground)), None)
            }
            (DenseOutput::Device(result), _) => {
                if let Some(map) = result.map {
                    self.maps.depth = map;
                }
                (Some(DepthSummary::new(result.range, foreground)), None)
            }
            (DenseOutput::Raw(_), None) => (None, None),
        }
    }

    /// The frame-size unit normals.
    fn normals(&mut self, work: &mut Work) -> Option<NormalsSummary> {
        let (width, height) = (work.frame.width(), work.frame.height());
        match (work.normals.take()?, self.summary.normal_layout) {
            (DenseOutput::Raw(raw), Some(layout)) => {
                let maps = &mut self.maps;
                self.stats
                    .dense_post
                    .time(|| normal_map(&raw, layout, width, height, maps));
                self.pool.put(raw);
                Some(NormalsSummary::default())
            }
            (DenseOutput::Device(result), _) => {
                if let Some(map) = result.map {
                    self.maps.normals = map;
                }
                Some(NormalsSummary::default())
            }
            (DenseOutput::Raw(_), None) => None,
        }
    }
}

/// The stage's timings, in the order the run report lists them.
struct PostStats {
    pose_decode: StageStats,
    seg_post: StageStats,
    /// Depth and normals.
    dense_post: StageStats,
    dense_files: StageStats,
    render: StageStats,
}

impl PostStats {
    fn new(metrics: &Arc<Metrics>) -> Self {
        let stats = |name| StageStats::new(name).reporting_to(metrics);
        PostStats {
            pose_decode: stats("pose decode"),
            seg_post: stats("seg post"),
            dense_post: stats("dense post"),
            dense_files: stats("dense files"),
            render: stats("render"),
        }
    }

    /// The timings of what ran.
    fn ran(self) -> Vec<StageStats> {
        [
            self.pose_decode,
            self.seg_post,
            self.dense_post,
            self.dense_files,
            self.render,
        ]
        .into_iter()
        .filter(|s| s.count() > 0)
        .collect()
    }
}

/// Logits to a frame-size class map in `maps.class_map`, summarised.
fn class_map(
    logits: &[f32],
    layout: OutputLayout,
    width: usize,
    height: usize,
    upsample: SegUpsample,
    maps: &mut DenseMaps,
) -> SegmentationSummary {
    maps.class_map.resize(width * height, 0);
    let (c, h, w) = (layout.channels, layout.height, layout.width);
    match upsample {
        SegUpsample::Bilinear => {
            seg::upsample_argmax(logits, c, h, w, width, height, &mut maps.class_map)
        }
        SegUpsample::Nearest => {
            seg::argmax_nearest(logits, c, h, w, width, height, &mut maps.class_map)
        }
    }
    summarise_classes(&maps.class_map, layout)
}

fn summarise_classes(class_map: &[u8], layout: OutputLayout) -> SegmentationSummary {
    let parts = seg_classes(layout);
    SegmentationSummary {
        class_set: parts.name.clone(),
        class_pixels: count_classes(class_map, parts.classes.len()),
        class_map_file: None,
        mask_file: None,
        mask: None,
    }
}

/// Depth at frame size, normalised over the person foreground when a class map exists.
fn depth_map(
    raw: &[f32],
    layout: OutputLayout,
    width: usize,
    height: usize,
    foreground: bool,
    maps: &mut DenseMaps,
) -> Option<dense::DepthRange> {
    maps.depth.resize(width * height, 0.0);
    maps.depth_normalised.resize(width * height, 0.0);
    dense::resize_planar(
        raw,
        1,
        layout.height,
        layout.width,
        width,
        height,
        &mut maps.depth,
    );
    let mask = foreground.then_some(&maps.class_map[..]);
    dense::normalise_depth(&maps.depth, mask, &mut maps.depth_normalised)
}

/// A pointmap model's metric points at frame size, their z as the depth map normalised over
/// the person foreground when a class map exists; the range and the model's scale.
fn pointmap_depth(
    raw: &[f32],
    layout: OutputLayout,
    width: usize,
    height: usize,
    foreground: bool,
    maps: &mut DenseMaps,
) -> (Option<dense::DepthRange>, PointmapScale) {
    let letterbox = padding_of(width, height);
    let scale = pointmap::metric_points(
        raw,
        layout,
        &letterbox,
        (width, height),
        &mut maps.cropped,
        &mut maps.points,
    );
    let pixels = width * height;
    maps.depth.clear();
    maps.depth.extend_from_slice(&maps.points[2 * pixels..]);
    maps.depth_normalised.resize(pixels, 0.0);
    let mask = foreground.then_some(&maps.class_map[..]);
    let range = dense::normalise_depth(&maps.depth, mask, &mut maps.depth_normalised);
    (range, scale)
}

/// Where a frame lies in the padded input of Sapiens2 normal and pointmap models.
fn padding_of(width: usize, height: usize) -> Letterbox {
    Letterbox::new(
        SAPIENS2_PADDING.fit,
        width,
        height,
        tasks::INPUT_WIDTH,
        tasks::INPUT_HEIGHT,
    )
}

/// Surface normals at frame size, unit length. A Sapiens2 model's are made unit at its own
/// resolution, then the padding comes off and they are resized, as its demo does.
fn normal_map(
    raw: &[f32],
    layout: OutputLayout,
    width: usize,
    height: usize,
    maps: &mut DenseMaps,
) {
    maps.normals.resize(3 * width * height, 0.0);
    if layout.takes_padded_input() {
        let letterbox = padding_of(width, height);
        let (maps_size, frame) = ((layout.height, layout.width), (width, height));
        dense::padded_normals(
            raw,
            maps_size,
            &letterbox,
            frame,
            &mut maps.cropped,
            &mut maps.normals,
        );
        return;
    }
    dense::resize_planar(
        raw,
        3,
        layout.height,
        layout.width,
        width,
        height,
        &mut maps.normals,
    );
    dense::normalise_normals(&mut maps.normals);
}

/// `--dense-dir`: class map, depth, normals and mask as PNGs named after the frame.
fn write_dense_files(
    dir: &std::path::Path,
    frame: &Frame,
    maps: &DenseMaps,
    mask_classes: &[u8],
    outputs: &mut FrameOutputs,
) -> Result<()> {
    let (width, height) = (frame.width(), frame.height());
    let name = |kind: &str| dir.join(format!("frame_{:06}_{kind}.png", frame.index));
    let label = |path: &std::path::Path| path.display().to_string();
    if let Some(segmentation) = outputs.segmentation.as_mut() {
        let path = name("seg");
        dense::write_class_map_png(&path, &maps.class_map, width, height)?;
        segmentation.class_map_file = Some(label(&path));
        if !mask_classes.is_empty() {
            let mut mask = vec![0u8; width * height];
            dense::class_mask(&maps.class_map, mask_classes, &mut mask);
            let path = name("mask");
            dense::write_mask_png(&path, &mask, width, height)?;
            segmentation.mask_file = Some(label(&path));
        }
    }
    if let Some(depth) = outputs.depth.as_mut() {
        let path = name("depth");
        let encoding = match depth.units {
            Some(METRES) => dense::write_depth_mm_png(&path, &maps.depth, width, height)?,
            _ => dense::write_depth_png(&path, &maps.depth, width, height)?,
        };
        depth.file = Some(label(&path));
        depth.encoding = Some(encoding);
    }
    if let Some(normals) = outputs.normals.as_mut() {
        let path = name("normal");
        dense::write_normals_png(&path, &maps.normals, width, height)?;
        normals.file = Some(label(&path));
    }
    Ok(())
}

/// The class set of a checked seg model (28 or 29 classes).
fn seg_classes(layout: OutputLayout) -> &'static keypoint_sets::ClassSet {
    keypoint_sets::class_set(layout.channels).expect("a checked seg model has a known class set")
}

/// `--pointcloud-dir`: the frame's points as PLY, coloured from the frame, persons only when
/// a class map exists.
fn write_pointcloud(
    dir: &std::path::Path,
    frame: &Frame,
    points: &[f32],
    foreground: Option<&[u8]>,
    pointmap: &mut PointmapSummary,
) -> Result<()> {
    let path = dir.join(format!("frame_{:06}.ply", frame.index));
    let size = (frame.width(), frame.height());
    let count = pointmap::write_ply(&path, points, &frame.to_rgb(), size, foreground)?;
    pointmap.pointcloud_file = Some(path.display().to_string());
    pointmap.points = Some(count);
    Ok(())
}

fn count_classes(class_map: &[u8], classes: usize) -> Vec<u64> {
    let mut counts = vec![0u64; classes];
    for &class in class_map {
        if let Some(count) = counts.get_mut(class as usize) {
            *count += 1;
        }
    }
    counts
}

/// What every frame of a video made with a random-weight model says.
const RANDOM_WEIGHTS_BANNER: &str = "RANDOM-WEIGHT TEST MODEL - NOT A REAL RESULT";

/// Draws the overlay into the frame in its own layout: the chosen view (frame with class
/// colours, depth or normals) unless the GPU drew it already (`view_drawn`), then the skeletons,
/// then the random-weights banner.
fn draw(
    (frame, copies): (&mut Frame, &mut FrameCopies),
    view_drawn: bool,
    outputs: &FrameOutputs,
    (maps, banner): (&DenseMaps, Option<&Banner>),
    summary: &ModelSummary,
    options: &PostOptions,
) -> Result<()> {
    let (width, height) = (frame.width(), frame.height());
    let foreground = outputs
        .segmentation
        .is_some()
        .then_some(&maps.class_map[..]);
    let render_error = |e: render::RenderError| Error::Render(e.to_string());
    frame.with_bytes_mut(copies, |bytes, geometry| {
        let mut canvas = Canvas::new(bytes, geometry).map_err(render_error)?;
        let pixels_of_frame = width * height;
        match options.view {
            _ if view_drawn => {}
            View::Depth
                if outputs.depth.is_some() && maps.depth_normalised.len() == pixels_of_frame =>
            {
                canvas.draw_depth(&maps.depth_normalised, foreground)
            }
            View::Normal
                if outputs.normals.is_some() && maps.normals.len() == 3 * pixels_of_frame =>
            {
                canvas.draw_normals(&maps.normals, foreground)
            }
            _ => {
                if let (Some(class_map), Some(layout)) = (foreground, summary.seg_layout) {
                    canvas.blend_class_map(class_map, &seg_classes(layout).palette, 0.5);
                }
            }
        }
        if let (Some(persons), Some(set)) = (outputs.persons.as_deref(), summary.keypoint_set) {
            let style = PoseStyle {
                skeleton: &set.skeleton,
                link_colors: &set.link_colors,
                keypoint_colors: &set.keypoint_colors,
                threshold: options.threshold,
                radius: 4.0,
                thickness: 2.0,
            }
            .scaled_for(width, height);
            let keypoints: Vec<&[[f32; 3]]> =
                persons.iter().map(|p| p.keypoints.as_slice()).collect();
            canvas.draw_pose(&keypoints, &style).map_err(render_error)?;
            let marks: Vec<TrackMark> = persons
                .iter()
                .filter_map(|p| p.track_id.map(|id| TrackMark { id, bbox: p.bbox }))
                .collect();
            canvas.draw_tracks(&marks).map_err(render_error)?;
        }
        if let Some(banner) = banner {
            canvas.draw_banner(banner).map_err(render_error)?;
        }
        Ok(())
    })
}

/// A stream's tracker on the stream's clock: the frame's timestamp, else the time it was
/// decoded. A clock that goes back (a reconnected or looped input) ends every track; the IDs
/// go on from where they were.
struct Tracking {
    tracker: Tracker,
    last_time: Option<f64>,
}

impl Tracking {
    fn new(options: TrackerOptions, frame: &Frame) -> Self {
        Tracking {
            tracker: Tracker::new(options, frame.height()),
            last_time: None,
        }
    }

    fn update(&mut self, frame: &Frame, persons: &mut [Person]) -> Vec<TrackEvent> {
        let time = frame.stream_seconds();
        let mut events = Vec::new();
        if self.last_time.is_some_and(|last| time < last) {
            events = self.tracker.finish();
        }
        self.last_time = Some(time);
        events.extend(self.tracker.update(time, persons));
        events
    }
}

fn frame_result(
    frame: &Frame,
    stream: &StreamId,
    summary: &ModelSummary,
    outputs: FrameOutputs,
) -> FrameResult {
    let FrameOutputs {
        persons,
        segmentation,
        depth,
        normals,
        pointmap,
    } = outputs;
    FrameResult {
        schema: SCHEMA_NAME,
        version: SCHEMA_VERSION,
        stream: frame.stream_id,
        stream_name: stream.name.clone(),
        frame: frame.index,
        pts_ns: frame.pts_ns,
        capture_unix_ns: frame
            .capture_time
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64),
        width: frame.width(),
        height: frame.height(),
        models: summary.ids.clone(),
        random_weights: summary.random_weights,
        keypoint_set: persons
            .as_ref()
            .and(summary.keypoint_set)
            .map(|s| s.name.clone()),
        persons,
        segmentation,
        depth,
        normals,
        pointmap,
    }
}
