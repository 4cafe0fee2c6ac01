//! A batch of frames' work on the GPU, as one chain of asynchronous steps on one stream: each
//! frame goes up once (through a pinned buffer), the model inputs are made on the device (one
//! UDP crop per person, written into its batch slot; the stretch for the dense tasks), ONNX
//! Runtime runs on the same stream with its inputs and outputs in device memory, heatmaps are
//! flip-merged and decoded on the device, logits become a class map there, and only the peaks,
//! the class maps and the small dense maps come back, into pinned buffers, with one
//! synchronisation per batch. The frames of a batch may come from different streams, of
//! different sizes and layouts: their persons share the pose calls and the frames share the
//! dense models' calls, as nvstreammux's batches share nvinfer's.

use std::mem::ManuallyDrop;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cudarc::driver::{CudaSlice, CudaStream, DeviceRepr, PinnedHostSlice, ValidAsZeroBits};

use crate::cuda::{Gpu, cuda_error};
use crate::engine::device::{DeviceBatch, DeviceEngine};
use crate::error::{Error, Result};
use crate::frame::{FrameGeometry, HostFrame, PaintedFrame, SourceLayout};
use crate::preprocess::cuda::{DeviceLetterbox, DeviceStretch, frame_to_rgba, warp_crops};
use crate::preprocess::{Normalization, PoseCrop, StretchPlan};
use crate::render::cuda::blend_class_map;
use crate::tasks::dense::DepthRange;
use crate::tasks::dense::cuda::{self as dense, RangeBuffers};
use crate::tasks::detect::PersonDetector;
use crate::tasks::flip::cuda as flip;
use crate::tasks::keypoint_sets::class_set;
use crate::tasks::pose::PersonBox;
use crate::tasks::pose::cuda::{DevicePeak, queue_decode};
use crate::tasks::pose::decode::HeatmapPeak;
use crate::tasks::seg::cuda::{SegShape, argmax_nearest, upsample_argmax};
use crate::tasks::{INPUT_HEIGHT, INPUT_WIDTH, OutputLayout, Task};

/// The pose model of a batch, with one crop per person.
pub struct PoseRequest<'a> {
    pub engine: &'a mut dyn DeviceEngine,
    pub layout: OutputLayout,
    /// Items per model call.
    pub max_batch: usize,
    /// The keypoint set's flip indices, for the flip test.
    pub flip_indices: Option<&'a [usize]>,
    pub persons: Persons<'a>,
}

/// Where the persons of the frames come from.
pub enum Persons<'a> {
    /// Known boxes, as their crops: one list per frame, in the order of the frames.
    Crops(Vec<&'a [PoseCrop]>),
    /// A detector on the GPU ([`PersonDetector::load_on_gpu`]), run on each uploaded frame
    /// first; its boxes come back in [`FrameResults::boxes`].
    Detect(&'a mut PersonDetector),
}

/// A dense model (it sees each whole frame, stretched).
pub struct DenseRequest<'a> {
    pub engine: &'a mut dyn DeviceEngine,
    pub layout: OutputLayout,
    /// Frames per model call.
    pub max_batch: usize,
}

/// What to run on each frame of a batch.
pub struct FrameRequest<'a> {
    pub pose: Option<PoseRequest<'a>>,
    /// The segmentation model, and whether its class map is upsampled nearest (else bilinear).
    pub seg: Option<(DenseRequest<'a>, bool)>,
    pub depth: Option<DenseRequest<'a>>,
    pub normal: Option<DenseRequest<'a>>,
    /// Read the frame-size depth and normal maps back (`--dense-dir` writes them).
    pub dense_maps: bool,
    /// Draw this view into the frame on the device and read the drawn frame back, as RGBA
    /// (converted on the device when the frame is in another layout).
    pub paint: Option<Paint>,
}

/// What the device draws into the frame for the overlay video (the skeletons are drawn on the
/// CPU, over it). With a class map, depth and normals colour the persons only.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Paint {
    /// Inferno depth, nearest brightest (the class overlay when no depth model ran).
    Depth,
    /// Normals as RGB (the class overlay when no normal model ran).
    Normals,
    /// The body-part colours blended in at half strength, when a seg model ran.
    Classes,
}

/// Depth or normals of one frame, post-processed on the device.
#[derive(Debug, Default)]
pub struct DenseResult {
    /// Depth's foreground (or whole-frame) range; `None` for normals and when no pixel counts.
    pub range: Option<DepthRange>,
    /// The frame-size map (depth; or unit normals, 3 planes), when asked for.
    pub map: Option<Vec<f32>>,
}

/// What comes back from the device for one frame.
#[derive(Default)]
pub struct FrameResults {
    /// The persons a detector found ([`Persons::Detect`]), by decreasing score, and how long
    /// finding them took (the detector's run ends in a synchronisation).
    pub boxes: Option<(Vec<PersonBox>, Duration)>,
    /// One peak per keypoint per person, persons in crop order.
    pub peaks: Vec<HeatmapPeak>,
    /// The frame-size class map.
    pub class_map: Option<Vec<u8>>,
    pub depth: Option<DenseResult>,
    pub normals: Option<DenseResult>,
    /// The frame as RGBA with the requested view drawn in; for an RGBA frame only when there
    /// was something to draw.
    pub painted: Option<PaintedFrame>,
}

/// What comes back for a batch of frames.
pub struct BatchResults {
    /// Each frame's results, in the order of the frames.
    pub frames: Vec<FrameResults>,
    /// Each model call that ran, with its inputs (crops or frames), in the order they ran.
    pub calls: Vec<(Task, usize)>,
}

/// The GPU side of the pipeline: kernels, stream, and the buffers reused batch after batch.
pub struct DeviceInference {
    /// Frames' places in a batch, kept with their buffers for frames of the same size.
    slots: Vec<FrameSlot>,
    /// Batches run so far.
    batches: u64,
    /// The detector's bound input as the letterbox kernel writes it, with its address.
    detector_input: Option<(u64, BorrowedSlice<f32>)>,
    pose: BatchCache,
    pose_mirrored: BatchCache,
    seg: BatchCache,
    depth: BatchCache,
    normal: BatchCache,
    flip_indices: Option<CudaSlice<i32>>,
    decode_partials: Option<CudaSlice<u64>>,
    peaks: Option<Readback<DevicePeak>>,
    /// Last, so it drops last: the bound batches keep ONNX Runtime sessions alive, and those
    /// run on this GPU's stream until they go.
    gpu: Gpu,
}

/// How many frame slots are kept at most: enough for the sizes of many streams (a 1080p NV12
/// slot holds about 6 MB of pinned and device memory, more with dense models); a batch larger
/// than this takes as many as it has frames.
const MAX_FRAME_SLOTS: usize = 16;

/// One frame's place in a batch: its upload and what is made of it, kept for the next frame of
/// the same size that takes this place.
#[derive(Default)]
struct FrameSlot {
    /// The batch that last used this slot (see [`DeviceInference::assign_slots`]).
    used: u64,
    frame: Option<FrameUpload>,
    stretch: Option<DeviceStretch>,
    letterbox: Option<DeviceLetterbox>,
    class_map: Option<Readback<u8>>,
    dense: Option<DenseBuffers>,
}

impl DeviceInference {
    pub fn new(gpu: Gpu) -> Self {
        DeviceInference {
            slots: Vec::new(),
            batches: 0,
            detector_input: None,
            pose: BatchCache::default(),
            pose_mirrored: BatchCache::default(),
            seg: BatchCache::default(),
            depth: BatchCache::default(),
            normal: BatchCache::default(),
            flip_indices: None,
            decode_partials: None,
            peaks: None,
            gpu,
        }
    }

    /// Runs every requested model on one frame and reads the results back.
    pub fn run(&mut self, frame: &HostFrame, request: FrameRequest) -> Result<FrameResults> {
        let mut results = self.run_batch(std::slice::from_ref(frame), request)?;
        Ok(results.frames.pop().expect("one result per frame"))
    }

    /// Runs every requested model on a batch of frames and reads the results back.
    pub fn run_batch(
        &mut self,
        frames: &[HostFrame],
        request: FrameRequest,
    ) -> Result<BatchResults> {
        let geometries: Vec<FrameGeometry> = frames.iter().map(|f| f.geometry).collect();
        self.assign_slots(&geometries);
        for (slot, frame) in self.slots.iter_mut().zip(frames) {
            slot.upload(&self.gpu, frame)?;
        }
        let mut results: Vec<FrameResults> =
            frames.iter().map(|_| FrameResults::default()).collect();
        let mut calls = Vec::new();
        let peak_counts = match request.pose {
            Some(pose) => self.queue_pose(&geometries, pose, &mut results, &mut calls)?,
            None => vec![0; frames.len()],
        };
        let dense = [
            request.seg.as_ref().map(|(r, _)| r.layout),
            request.depth.as_ref().map(|r| r.layout),
            request.normal.as_ref().map(|r| r.layout),
        ];
        let has_seg = dense[0].is_some();
        let slots = &mut self.slots[..frames.len()];
        for (slot, geometry) in slots.iter_mut().zip(&geometries) {
            if dense.iter().any(Option::is_some) {
                slot.ensure_stretch(&self.gpu, geometry)?;
            }
            if has_seg {
                Readback::ensure(&mut slot.class_map, &self.gpu, geometry.pixels())?;
            }
            if dense[1].is_some() || dense[2].is_some() {
                DenseBuffers::ensure(&mut slot.dense, &self.gpu, geometry)?;
            }
        }
        if let Some((seg, nearest)) = request.seg {
            self.queue_seg(&geometries, seg, nearest, &mut calls)?;
        }
        if let Some(depth) = request.depth {
            self.queue_depth(&geometries, depth, has_seg, request.dense_maps, &mut calls)?;
        }
        if let Some(normal) = request.normal {
            self.queue_normals(&geometries, normal, request.dense_maps, &mut calls)?;
        }
        let mut painted = vec![false; frames.len()];
        if let Some(paint) = request.paint {
            for (slot, drawn) in self.slots.iter_mut().zip(&mut painted) {
                *drawn = slot.queue_paint(&self.gpu, paint, has_seg, dense)?;
            }
        }
        // The one synchronisation of the batch: everything above was queued on this stream.
        self.gpu
            .stream()
            .synchronize()
            .map_err(cuda_error("waiting for the frames"))?;
        self.read_peaks(&peak_counts, &mut results)?;
        let read = ReadBack {
            dense,
            dense_maps: request.dense_maps,
        };
        for (((slot, frame), result), painted) in
            self.slots.iter().zip(frames).zip(&mut results).zip(painted)
        {
            slot.read_back(read, result)?;
            if painted {
                result.painted = Some(slot.painted_frame(frame.data.len())?);
            }
        }
        Ok(BatchResults {
            frames: results,
            calls,
        })
    }

    /// Orders the slots so that the frames of the batch take the first ones, each where a frame
    /// of its size and layout was last (its buffers and plans stay); a frame of a size no slot
    /// holds takes an empty slot, a new one (up to [`MAX_FRAME_SLOTS`]), or the slot used
    /// longest ago, so streams of several sizes keep their buffers across batches.
    fn assign_slots(&mut self, geometries: &[FrameGeometry]) {
        self.batches += 1;
        let held: Vec<HeldSlot> = self
            .slots
            .iter()
            .map(|slot| HeldSlot {
                geometry: slot.frame.as_ref().map(|f| f.geometry),
                used: slot.used,
            })
            .collect();
        let chosen = choose_slots(&held, geometries, MAX_FRAME_SLOTS);
        let needed = chosen.iter().max().map_or(0, |&i| i + 1);
        self.slots
            .resize_with(needed.max(self.slots.len()), FrameSlot::default);
        move_to_front(&mut self.slots, chosen);
        for slot in &mut self.slots[..geometries.len()] {
            slot.used = self.batches;
        }
    }

    /// The peaks of every person read back (after the batch's synchronisation), each frame's
    /// `peak_counts` to its results.
    fn read_peaks(&self, peak_counts: &[usize], results: &mut [FrameResults]) -> Result<()> {
        let total = peak_counts.iter().sum();
        if total == 0 {
            return Ok(());
        }
        let peaks = self.peaks.as_ref().expect("queued with the pose");
        let mut all = peaks.host(total)?.iter().map(HeatmapPeak::from);
        for (result, &count) in results.iter_mut().zip(peak_counts) {
            result.peaks.extend(all.by_ref().take(count));
        }
        Ok(())
    }

    /// Finds the persons (when asked to), then crops, runs (with the flip test if asked) and
    /// decodes every person of every frame, in calls of up to `max_batch` crops; returns how
    /// many peaks (persons x keypoints) of each frame are on their way back.
    fn queue_pose(
        &mut self,
        geometries: &[FrameGeometry],
        pose: PoseRequest,
        results: &mut [FrameResults],
        calls: &mut Vec<(Task, usize)>,
    ) -> Result<Vec<usize>> {
        let PoseRequest {
            engine,
            layout,
            max_batch,
            flip_indices,
            persons,
        } = pose;
        let crops = self.batch_crops(geometries, persons, results)?;
        let keypoints = layout.channels;
        let mut peak_counts = vec![0; geometries.len()];
        for &(frame, _) in &crops {
            peak_counts[frame] += keypoints;
        }
        if crops.is_empty() {
            return Ok(peak_counts);
        }
        let peaks = Readback::ensure(&mut self.peaks, &self.gpu, crops.len() * keypoints)?;
        if let Some(indices) = flip_indices
            && self
                .flip_indices
                .as_ref()
                .is_none_or(|d| d.len() != indices.len())
        {
            self.flip_indices = Some(flip::upload_flip_indices(&self.gpu, indices)?);
        }
        let step = max_batch.max(1);
        for (chunk_index, chunk) in crops.chunks(step).enumerate() {
            let items = chunk.len();
            let batch = self.pose.get(&self.gpu, &*engine, items)?;
            let mut first = 0;
            // The crops of one frame, side by side in the batch, in one launch.
            for run in chunk.chunk_by(|a, b| a.0 == b.0) {
                let frame = self.slots[run[0].0].uploaded();
                let run_crops: Vec<PoseCrop> = run.iter().map(|&(_, crop)| crop).collect();
                warp_crops(
                    &self.gpu,
                    &frame.device,
                    &frame.geometry,
                    &run_crops,
                    (INPUT_WIDTH, INPUT_HEIGHT),
                    &Normalization::SAPIENS,
                    &mut batch.input_items(&self.gpu, first, run.len()),
                )?;
                first += run.len();
            }
            engine.run_device(&batch.batch)?;
            calls.push((Task::Pose, items));
            if let Some(indices) = &self.flip_indices
                && flip_indices.is_some()
            {
                let mirrored = self.pose_mirrored.get(&self.gpu, &*engine, items)?;
                let input_shape = (items, 3, INPUT_HEIGHT, INPUT_WIDTH);
                flip::mirror_batch(&self.gpu, &batch.input, input_shape, &mut mirrored.input)?;
                engine.run_device(&mirrored.batch)?;
                calls.push((Task::Pose, items));
                flip::merge_flipped_heatmaps(
                    &self.gpu,
                    &mut batch.output,
                    &mirrored.output,
                    items,
                    indices,
                    (layout.height, layout.width),
                )?;
            }
            let first = chunk_index * step * keypoints;
            queue_decode(
                &self.gpu,
                &batch.output,
                (items * keypoints, layout.height, layout.width),
                &mut self.decode_partials,
                peaks.device.slice_mut(first..first + items * keypoints),
            )?;
        }
        peaks.queue_download(&self.gpu, crops.len() * keypoints)?;
        Ok(peak_counts)
    }

    /// Every person of the batch, as (frame, crop), frame by frame: the known crops, or the
    /// detector's boxes (kept in each frame's results).
    fn batch_crops(
        &mut self,
        geometries: &[FrameGeometry],
        persons: Persons,
        results: &mut [FrameResults],
    ) -> Result<Vec<(usize, PoseCrop)>> {
        let mut crops = Vec::new();
        match persons {
            Persons::Crops(lists) => {
                if lists.len() != geometries.len() {
                    return Err(Error::Cuda(format!(
                        "{} frames, but crops for {}",
                        geometries.len(),
                        lists.len()
                    )));
                }
                for (frame, list) in lists.into_iter().enumerate() {
                    crops.extend(list.iter().map(|&crop| (frame, crop)));
                }
            }
            Persons::Detect(detector) => {
                // The uploads done first, so that each frame's detection time is its own.
                self.gpu
                    .stream()
                    .synchronize()
                    .map_err(cuda_error("waiting for the frames' upload"))?;
                for (frame, result) in results.iter_mut().enumerate() {
                    let started = Instant::now();
                    let boxes = self.detect(frame, detector)?;
                    crops.extend(boxes.iter().map(|b| (frame, b.crop())));
                    result.boxes = Some((boxes, started.elapsed()));
                }
            }
        }
        Ok(crops)
    }

    /// Letterboxes the uploaded frame in `slot` into the detector's bound input and runs it;
    /// its boxes by decreasing score, those too small to crop left out.
    fn detect(&mut self, slot: usize, detector: &mut PersonDetector) -> Result<Vec<PersonBox>> {
        let geometry = self.slots[slot].uploaded().geometry;
        let plan = detector.letterbox_plan(geometry.width, geometry.height);
        let slot = &mut self.slots[slot];
        if slot.letterbox.as_ref().is_none_or(|l| !l.is_for(plan)) {
            slot.letterbox = Some(DeviceLetterbox::upload(&self.gpu, plan)?);
        }
        let (address, len) = detector
            .bound_input()
            .ok_or_else(|| Error::Cuda("the person detector was not loaded on the GPU".into()))?;
        if self
            .detector_input
            .as_ref()
            .is_none_or(|(cached, view)| (*cached, view.len()) != (address, len))
        {
            // SAFETY: the bound input is an ONNX Runtime allocation of `len` values on this GPU,
            // owned by the detector; the view is used only while a detector's bound input is at
            // this address, that is while that allocation lives.
            let view = unsafe { BorrowedSlice::new(self.gpu.stream(), address, len) };
            self.detector_input = Some((address, view));
        }
        let (_, input) = self.detector_input.as_mut().expect("made above");
        let letterbox = slot.letterbox.as_ref().expect("uploaded above");
        letterbox.run(&self.gpu, &slot.uploaded().device, &geometry, input)?;
        let mut boxes = detector.detect_bound(geometry.width, geometry.height)?;
        boxes.retain(PersonBox::is_croppable);
        Ok(boxes)
    }

    /// Runs the seg model on every frame and makes each frame's class map.
    fn queue_seg(
        &mut self,
        geometries: &[FrameGeometry],
        mut request: DenseRequest,
        nearest: bool,
        calls: &mut Vec<(Task, usize)>,
    ) -> Result<()> {
        let layout = request.layout;
        let post = |gpu: &Gpu, slot: &mut FrameSlot, logits: &CudaSlice<f32>| {
            let geometry = slot.uploaded().geometry;
            let shape = SegShape {
                classes: layout.channels,
                in_h: layout.height,
                in_w: layout.width,
                out_w: geometry.width,
                out_h: geometry.height,
            };
            let class_map = slot
                .class_map
                .as_mut()
                .expect("allocated for the seg model");
            if nearest {
                argmax_nearest(gpu, logits, shape, &mut class_map.device)?;
            } else {
                upsample_argmax(gpu, logits, shape, &mut class_map.device)?;
            }
            class_map.queue_download(gpu, geometry.pixels())
        };
        let dense = DenseCall {
            gpu: &self.gpu,
            task: Task::Seg,
            frames: geometries.len(),
        };
        dense.queue(&mut self.slots, &mut self.seg, &mut request, calls, post)
    }

    /// Runs the depth model, resizes its output to each frame, normalises it over the persons
    /// (the class map, when a seg model ran) and queues the range's (and the map's) download.
    fn queue_depth(
        &mut self,
        geometries: &[FrameGeometry],
        mut request: DenseRequest,
        foreground: bool,
        map_to_host: bool,
        calls: &mut Vec<(Task, usize)>,
    ) -> Result<()> {
        let layout = request.layout;
        let post = |gpu: &Gpu, slot: &mut FrameSlot, raw: &CudaSlice<f32>| {
            let geometry = slot.uploaded().geometry;
            let classes = foreground
                .then(|| slot.class_map.as_ref().map(|c| &c.device))
                .flatten();
            let buffers = slot.dense.as_mut().expect("allocated for the dense models");
            let size = (geometry.width, geometry.height);
            let shape = (1, layout.height, layout.width);
            dense::resize_planar(gpu, raw, shape, size, &mut buffers.depth)?;
            let pixels = geometry.pixels();
            dense::value_range(gpu, &buffers.depth, classes, pixels, &mut buffers.range)?;
            dense::normalise_depth(
                gpu,
                &buffers.depth,
                classes,
                buffers.range.range(),
                &mut buffers.normalised,
            )?;
            let stream = gpu.stream();
            stream
                .memcpy_dtoh(buffers.range.range(), &mut buffers.range_host)
                .map_err(cuda_error("reading the depth range"))?;
            if map_to_host {
                let host = pinned_slot(&mut buffers.depth_host, gpu, pixels)?;
                stream
                    .memcpy_dtoh(&buffers.depth, host)
                    .map_err(cuda_error("reading depth"))?;
            }
            Ok(())
        };
        let dense = DenseCall {
            gpu: &self.gpu,
            task: Task::Depth,
            frames: geometries.len(),
        };
        dense.queue(&mut self.slots, &mut self.depth, &mut request, calls, post)
    }

    /// Runs the normal model, resizes its output to each frame and makes the normals unit
    /// length; queues the maps' download when asked.
    fn queue_normals(
        &mut self,
        geometries: &[FrameGeometry],
        mut request: DenseRequest,
        map_to_host: bool,
        calls: &mut Vec<(Task, usize)>,
    ) -> Result<()> {
        let layout = request.layout;
        let post = |gpu: &Gpu, slot: &mut FrameSlot, raw: &CudaSlice<f32>| {
            let geometry = slot.uploaded().geometry;
            let buffers = slot.dense.as_mut().expect("allocated for the dense models");
            let size = (geometry.width, geometry.height);
            let shape = (3, layout.height, layout.width);
            dense::resize_planar(gpu, raw, shape, size, &mut buffers.normals)?;
            dense::normalise_normals(gpu, &mut buffers.normals)?;
            if map_to_host {
                let len = 3 * geometry.pixels();
                let host = pinned_slot(&mut buffers.normals_host, gpu, len)?;
                gpu.stream()
                    .memcpy_dtoh(&buffers.normals, host)
                    .map_err(cuda_error("reading normals"))?;
            }
            Ok(())
        };
        let dense = DenseCall {
            gpu: &self.gpu,
            task: Task::Normal,
            frames: geometries.len(),
        };
        dense.queue(&mut self.slots, &mut self.normal, &mut request, calls, post)
    }
}

/// What [`choose_slots`] knows of a slot: the size and layout of its buffers, and its last use.
#[derive(Clone, Copy, Debug)]
struct HeldSlot {
    geometry: Option<FrameGeometry>,
    used: u64,
}

/// The slot each frame takes: one that holds its geometry, else an empty one, else a new one
/// (an index past `held`) while there are fewer than `max_slots`, else the one used longest
/// ago. No two frames take the same slot.
fn choose_slots(held: &[HeldSlot], geometries: &[FrameGeometry], max_slots: usize) -> Vec<usize> {
    let mut taken = vec![false; held.len()];
    let mut chosen: Vec<Option<usize>> = geometries
        .iter()
        .map(|geometry| {
            let found = (0..held.len())
                .find(|&i| !taken[i] && held[i].geometry.as_ref() == Some(geometry))?;
            taken[found] = true;
            Some(found)
        })
        .collect();
    let mut slots = held.len();
    for choice in chosen.iter_mut().filter(|c| c.is_none()) {
        let best = (0..held.len())
            .filter(|&i| !taken[i])
            .min_by_key(|&i| (held[i].geometry.is_some(), held[i].used));
        let slot = match best {
            Some(i) if held[i].geometry.is_none() || slots >= max_slots => {
                taken[i] = true;
                i
            }
            _ => {
                slots += 1;
                slots - 1
            }
        };
        *choice = Some(slot);
    }
    chosen.into_iter().flatten().collect()
}

/// Moves `items[chosen[k]]` to place `k` for every `k` (the `chosen` indices are distinct), by
/// swaps, so the items not chosen stay in `items` behind them.
fn move_to_front<T>(items: &mut [T], mut chosen: Vec<usize>) {
    for place in 0..chosen.len() {
        let from = chosen[place];
        if from != place {
            items.swap(place, from);
            // A later choice of the item that was at `place` now finds it at `from`.
            if let Some(later) = chosen[place + 1..].iter_mut().find(|c| **c == place) {
                *later = from;
            }
        }
    }
}

/// One dense model over the first `frames` slots.
struct DenseCall<'a> {
    gpu: &'a Gpu,
    task: Task,
    frames: usize,
}

impl DenseCall<'_> {
    /// Stretches the frames into the model's batches, up to its `max_batch` frames a call, runs
    /// it, and hands each frame's output to `post` (which queues what is made of it).
    fn queue(
        &self,
        slots: &mut [FrameSlot],
        cache: &mut BatchCache,
        request: &mut DenseRequest,
        calls: &mut Vec<(Task, usize)>,
        mut post: impl FnMut(&Gpu, &mut FrameSlot, &CudaSlice<f32>) -> Result<()>,
    ) -> Result<()> {
        let gpu = self.gpu;
        for chunk in slots[..self.frames].chunks_mut(request.max_batch.max(1)) {
            let batch = cache.get(gpu, &*request.engine, chunk.len())?;
            for (item, slot) in chunk.iter().enumerate() {
                let frame = slot.uploaded();
                let stretch = slot.stretch.as_ref().ok_or_else(|| {
                    Error::Cuda("dense models need a stretch plan for the frame".into())
                })?;
                stretch.run(
                    gpu,
                    &frame.device,
                    &frame.geometry,
                    &Normalization::SAPIENS,
                    &mut batch.input_items(gpu, item, 1),
                )?;
            }
            request.engine.run_device(&batch.batch)?;
            calls.push((self.task, chunk.len()));
            for (item, slot) in chunk.iter_mut().enumerate() {
                post(gpu, slot, &batch.output_items(gpu, item, 1))?;
            }
        }
        Ok(())
    }
}

/// What a frame's slot reads back after the batch's synchronisation.
#[derive(Clone, Copy)]
struct ReadBack {
    /// The seg, depth and normal models' layouts, for those that ran.
    dense: [Option<OutputLayout>; 3],
    dense_maps: bool,
}

impl FrameSlot {
    /// Copies the frame into the pinned staging buffer and queues its upload.
    fn upload(&mut self, gpu: &Gpu, frame: &HostFrame) -> Result<()> {
        let geometry = frame.geometry;
        geometry.validate(frame.data.len()).map_err(Error::Cuda)?;
        let copied = frame.data.len().min(geometry.len());
        if self.frame.as_ref().is_none_or(|f| f.geometry != geometry) {
            self.frame = Some(FrameUpload::new(gpu, geometry)?);
            // A new frame size needs new plans.
            self.stretch = None;
            self.letterbox = None;
        }
        let upload = self.frame.as_mut().expect("allocated above");
        upload
            .staging
            .as_mut_slice()
            .map_err(cuda_error("waiting for the staging buffer"))?[..copied]
            .copy_from_slice(&frame.data[..copied]);
        gpu.stream()
            .memcpy_htod(&upload.staging, &mut upload.device)
            .map_err(cuda_error("uploading the frame"))
    }

    /// The frame uploaded into this slot for the batch.
    fn uploaded(&self) -> &FrameUpload {
        self.frame.as_ref().expect("uploaded first")
    }

    fn ensure_stretch(&mut self, gpu: &Gpu, geometry: &FrameGeometry) -> Result<()> {
        if self.stretch.is_none() {
            let (width, height) = (geometry.width, geometry.height);
            let plan = StretchPlan::new(width, height, INPUT_WIDTH, INPUT_HEIGHT);
            self.stretch = Some(DeviceStretch::upload(gpu, &plan, width, height)?);
        }
        Ok(())
    }

    /// The class map and the dense results read back (after the batch's synchronisation).
    fn read_back(&self, read: ReadBack, results: &mut FrameResults) -> Result<()> {
        let pixels = self.uploaded().geometry.pixels();
        if read.dense[0].is_some() {
            let class_map = self.class_map.as_ref().expect("queued with the seg model");
            results.class_map = Some(class_map.host(pixels)?.to_vec());
        }
        let Some(buffers) = &self.dense else {
            return Ok(());
        };
        if read.dense[1].is_some() {
            results.depth = Some(DenseResult {
                range: buffers.range()?,
                map: read
                    .dense_maps
                    .then(|| read_pinned(&buffers.depth_host, pixels))
                    .transpose()?,
            });
        }
        if read.dense[2].is_some() {
            results.normals = Some(DenseResult {
                range: None,
                map: read
                    .dense_maps
                    .then(|| read_pinned(&buffers.normals_host, 3 * pixels))
                    .transpose()?,
            });
        }
        Ok(())
    }

    /// The drawn frame read back (after the batch's synchronisation); an RGBA frame as long as
    /// its own bytes were (`frame_len`).
    fn painted_frame(&self, frame_len: usize) -> Result<PaintedFrame> {
        let upload = self.uploaded();
        let drawn = upload.painted.as_ref().expect("queued with the paint");
        let drawn = drawn
            .as_slice()
            .map_err(cuda_error("reading the drawn frame"))?;
        let geometry = &upload.geometry;
        Ok(if geometry.layout == SourceLayout::Rgbx {
            PaintedFrame {
                rgba: drawn[..frame_len.min(drawn.len())].to_vec(),
                stride: geometry.stride,
            }
        } else {
            PaintedFrame {
                rgba: drawn.to_vec(),
                stride: 4 * geometry.width,
            }
        })
    }

    /// Draws the view into the uploaded frame (after every kernel that reads it; a frame in
    /// another layout is converted to RGBA first) and queues the drawn frame's download; false
    /// when an RGBA frame has nothing to draw.
    fn queue_paint(
        &mut self,
        gpu: &Gpu,
        paint: Paint,
        has_seg: bool,
        dense: [Option<OutputLayout>; 3],
    ) -> Result<bool> {
        let classes = has_seg
            .then(|| self.class_map.as_ref().map(|c| &c.device))
            .flatten();
        let view_drawn = match (paint, &self.dense) {
            (Paint::Depth, Some(_)) => dense[1].is_some(),
            (Paint::Normals, Some(_)) => dense[2].is_some(),
            _ => false,
        };
        let upload = self.frame.as_mut().expect("uploaded first");
        let geometry = upload.geometry;
        let in_place = geometry.layout == SourceLayout::Rgbx;
        if in_place && !view_drawn && classes.is_none() {
            return Ok(false);
        }
        let (canvas, size) = if in_place {
            let size = (geometry.width, geometry.height, geometry.stride);
            (&mut upload.device, size)
        } else {
            let len = 4 * geometry.pixels();
            if upload.rgba.as_ref().is_none_or(|r| r.len() != len) {
                let rgba = gpu
                    .stream()
                    .alloc_zeros::<u8>(len)
                    .map_err(cuda_error("allocating the RGBA frame"))?;
                upload.rgba = Some(rgba);
            }
            let rgba = upload.rgba.as_mut().expect("allocated above");
            frame_to_rgba(gpu, &upload.device, &geometry, rgba)?;
            (rgba, (geometry.width, geometry.height, 4 * geometry.width))
        };
        match (paint, &self.dense) {
            (Paint::Depth, Some(buffers)) if view_drawn => {
                dense::draw_depth(gpu, canvas, size, &buffers.normalised, classes)?
            }
            (Paint::Normals, Some(buffers)) if view_drawn => {
                dense::draw_normals(gpu, canvas, size, &buffers.normals, classes)?
            }
            _ => {
                if let (Some(classes), Some(seg)) = (classes, dense[0]) {
                    let palette = &class_set(seg.channels)
                        .expect("a checked seg model has a known class set")
                        .palette;
                    blend_class_map(gpu, canvas, size, classes, palette, 0.5)?;
                }
            }
        }
        let len = canvas.len();
        let host = pinned_slot(&mut upload.painted, gpu, len)?;
        gpu.stream()
            .memcpy_dtoh(canvas, host)
            .map_err(cuda_error("reading the drawn frame"))?;
        Ok(true)
    }
}

/// The staging and device buffers of frames of one geometry.
struct FrameUpload {
    geometry: FrameGeometry,
    staging: PinnedHostSlice<u8>,
    device: CudaSlice<u8>,
    /// The frame converted to RGBA, when it comes in another layout and is drawn on.
    rgba: Option<CudaSlice<u8>>,
    /// The frame with the view drawn in, read back.
    painted: Option<PinnedHostSlice<u8>>,
}

impl FrameUpload {
    fn new(gpu: &Gpu, geometry: FrameGeometry) -> Result<Self> {
        let len = geometry.len();
        // SAFETY: the staging buffer is written whole before every upload.
        let staging = unsafe {
            gpu.context()
                .alloc_pinned::<u8>(len)
                .map_err(cuda_error("allocating pinned memory"))?
        };
        let device = gpu
            .stream()
            .alloc_zeros::<u8>(len)
            .map_err(cuda_error("allocating the frame"))?;
        Ok(FrameUpload {
            geometry,
            staging,
            device,
            rgba: None,
            painted: None,
        })
    }
}

/// Pinned host memory the CPU reads (not write-combined, which is slow to read).
fn pinned<T: DeviceRepr + ValidAsZeroBits>(gpu: &Gpu, len: usize) -> Result<PinnedHostSlice<T>> {
    // SAFETY: only read after a download into it has completed.
    unsafe {
        gpu.context()
            .alloc_pinned_with_flags::<T>(len.max(1), 0)
            .map_err(cuda_error("allocating pinned memory"))
    }
}

/// The first `len` values of a pinned buffer a download filled.
fn read_pinned(buffer: &Option<PinnedHostSlice<f32>>, len: usize) -> Result<Vec<f32>> {
    let buffer = buffer.as_ref().expect("filled by a queued download");
    let values = buffer.as_slice().map_err(cuda_error("reading back"))?;
    Ok(values[..len].to_vec())
}

/// The pinned buffer in `slot`, (re)allocated to hold exactly `len` values.
fn pinned_slot<'a, T: DeviceRepr + ValidAsZeroBits>(
    slot: &'a mut Option<PinnedHostSlice<T>>,
    gpu: &Gpu,
    len: usize,
) -> Result<&'a mut PinnedHostSlice<T>> {
    if slot.as_ref().is_none_or(|s| s.len() != len.max(1)) {
        *slot = Some(pinned(gpu, len)?);
    }
    Ok(slot.as_mut().expect("allocated above"))
}

/// Frame-size depth and normal maps on the device, and what is read back of them.
struct DenseBuffers {
    pixels: usize,
    depth: CudaSlice<f32>,
    normalised: CudaSlice<f32>,
    normals: CudaSlice<f32>,
    range: RangeBuffers,
    range_host: PinnedHostSlice<f32>,
    depth_host: Option<PinnedHostSlice<f32>>,
    normals_host: Option<PinnedHostSlice<f32>>,
}

impl DenseBuffers {
    fn ensure(slot: &mut Option<Self>, gpu: &Gpu, geometry: &FrameGeometry) -> Result<()> {
        let pixels = geometry.width * geometry.height;
        if slot.as_ref().is_some_and(|b| b.pixels == pixels) {
            return Ok(());
        }
        let alloc = |len| {
            gpu.stream()
                .alloc_zeros::<f32>(len)
                .map_err(cuda_error("allocating dense maps"))
        };
        *slot = Some(DenseBuffers {
            pixels,
            depth: alloc(pixels)?,
            normalised: alloc(pixels)?,
            normals: alloc(3 * pixels)?,
            range: RangeBuffers::new(gpu)?,
            range_host: pinned(gpu, 2)?,
            depth_host: None,
            normals_host: None,
        });
        Ok(())
    }

    /// The depth range read back (after the frame's synchronisation).
    fn range(&self) -> Result<Option<DepthRange>> {
        let range = self
            .range_host
            .as_slice()
            .map_err(cuda_error("reading the depth range"))?;
        Ok((range[0] <= range[1]).then_some(DepthRange {
            min: range[0],
            max: range[1],
        }))
    }
}

/// A device buffer and the pinned host buffer it is read back into.
struct Readback<T> {
    device: CudaSlice<T>,
    host: PinnedHostSlice<T>,
}

impl<T: DeviceRepr + ValidAsZeroBits> Readback<T> {
    /// Makes sure `slot` holds at least `len` values.
    fn ensure<'a>(slot: &'a mut Option<Self>, gpu: &Gpu, len: usize) -> Result<&'a mut Self> {
        if slot.as_ref().is_none_or(|r| r.device.len() < len) {
            let device = gpu
                .stream()
                .alloc_zeros::<T>(len.max(1))
                .map_err(cuda_error("allocating results"))?;
            *slot = Some(Readback {
                device,
                host: pinned(gpu, len)?,
            });
        }
        Ok(slot.as_mut().expect("allocated above"))
    }

    fn queue_download(&mut self, gpu: &Gpu, len: usize) -> Result<()> {
        gpu.stream()
            .memcpy_dtoh(&self.device.slice(..len), &mut self.host)
            .map_err(cuda_error("reading results back"))
    }

    /// The first `len` values read back (waits for the download).
    fn host(&self, len: usize) -> Result<&[T]> {
        let values = self.host.as_slice().map_err(cuda_error("reading back"))?;
        Ok(&values[..len])
    }
}

/// A batch's tensors, seen by the kernels as cudarc slices over ONNX Runtime's memory.
struct BoundBatch {
    input: BorrowedSlice<f32>,
    output: BorrowedSlice<f32>,
    /// The tensors' device addresses.
    addresses: (u64, u64),
    batch: DeviceBatch,
}

impl BoundBatch {
    /// Items `first..first + count` of the input, as a slice of their own.
    fn input_items(&self, gpu: &Gpu, first: usize, count: usize) -> BorrowedSlice<f32> {
        self.items(gpu, (self.addresses.0, self.input.len()), first, count)
    }

    /// Items `first..first + count` of the output, as a slice of their own.
    fn output_items(&self, gpu: &Gpu, first: usize, count: usize) -> BorrowedSlice<f32> {
        self.items(gpu, (self.addresses.1, self.output.len()), first, count)
    }

    fn items(
        &self,
        gpu: &Gpu,
        (address, len): (u64, usize),
        first: usize,
        count: usize,
    ) -> BorrowedSlice<f32> {
        let items = self.batch.items();
        assert!(
            first + count <= items,
            "items {first}+{count} of a batch of {items}"
        );
        let item = len / items;
        let offset = (first * item * std::mem::size_of::<f32>()) as u64;
        // SAFETY: a part of one of the batch's tensors, which outlive the view (it is used only
        // by the kernels queued while the batch is borrowed).
        unsafe { BorrowedSlice::new(gpu.stream(), address + offset, count * item) }
    }
}

/// The bound batches of one model, by item count, the most recently used last: the full batch
/// and the partial ones that batches of streams and persons come in.
#[derive(Default)]
struct BatchCache {
    batches: Vec<BoundBatch>,
}

/// Item counts a [`BatchCache`] keeps bound. A batch's calls use at most two (full chunks, then
/// the rest), so the least recently used one never belongs to the batch being queued.
const CACHED_BATCH_SIZES: usize = 3;

impl BatchCache {
    fn get(
        &mut self,
        gpu: &Gpu,
        engine: &dyn DeviceEngine,
        items: usize,
    ) -> Result<&mut BoundBatch> {
        let index = match self.batches.iter().position(|b| b.batch.items() == items) {
            Some(index) => {
                let used = self.batches.remove(index);
                self.batches.push(used);
                self.batches.len() - 1
            }
            None => {
                if self.batches.len() >= CACHED_BATCH_SIZES {
                    self.batches.remove(0);
                }
                let mut batch = engine.device_batch(items)?;
                let (input, input_len) = batch.input_ptr();
                let (output, output_len) = batch.output_ptr();
                // SAFETY: both pointers are ONNX Runtime allocations of these lengths on the
                // stream's device, owned by `batch`, which is dropped after the views.
                let bound = unsafe {
                    BoundBatch {
                        input: BorrowedSlice::new(gpu.stream(), input, input_len),
                        output: BorrowedSlice::new(gpu.stream(), output, output_len),
                        addresses: (input, output),
                        batch,
                    }
                };
                self.batches.push(bound);
                self.batches.len() - 1
            }
        };
        Ok(&mut self.batches[index])
    }
}

/// Device memory owned by someone else (ONNX Runtime), seen as a cudarc slice so the kernels
/// can take it; never freed by cudarc.
struct BorrowedSlice<T> {
    slice: ManuallyDrop<CudaSlice<T>>,
}

impl<T> BorrowedSlice<T> {
    /// # Safety
    /// `ptr` must address `len` values of `T` on the stream's device, valid while this lives.
    unsafe fn new(stream: &Arc<CudaStream>, ptr: u64, len: usize) -> Self {
        // SAFETY: as the caller promises; the slice is leaked, not freed, on drop.
        let slice = unsafe { stream.upgrade_device_ptr::<T>(ptr, len) };
        BorrowedSlice {
            slice: ManuallyDrop::new(slice),
        }
    }
}

impl<T> std::ops::Deref for BorrowedSlice<T> {
    type Target = CudaSlice<T>;

    fn deref(&self) -> &CudaSlice<T> {
        &self.slice
    }
}

impl<T> std::ops::DerefMut for BorrowedSlice<T> {
    fn deref_mut(&mut self) -> &mut CudaSlice<T> {
        &mut self.slice
    }
}

impl<T> Drop for BorrowedSlice<T> {
    fn drop(&mut self) {
        // SAFETY: taken once, here; the memory stays with its owner.
        unsafe { ManuallyDrop::take(&mut self.slice) }.leak();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn geometry(width: usize) -> FrameGeometry {
        FrameGeometry::yuv420(width, 240, SourceLayout::Nv12)
    }

    fn held(slots: &[(Option<usize>, u64)]) -> Vec<HeldSlot> {
        slots
            .iter()
            .map(|&(width, used)| HeldSlot {
                geometry: width.map(geometry),
                used,
            })
            .collect()
    }

    fn frames(widths: &[usize]) -> Vec<FrameGeometry> {
        widths.iter().map(|&w| geometry(w)).collect()
    }

    #[test]
    fn frames_take_the_slots_that_hold_their_size_wherever_they_are() {
        let slots = held(&[(Some(320), 1), (Some(640), 1)]);
        assert_eq!(choose_slots(&slots, &frames(&[640, 320]), 16), [1, 0]);
        // A new size does not take a slot another frame of the batch fits.
        assert_eq!(choose_slots(&slots, &frames(&[800, 320]), 16), [2, 0]);
        // Two frames of one size: the second gets a slot of its own.
        assert_eq!(choose_slots(&slots, &frames(&[320, 320]), 16), [0, 2]);
    }

    #[test]
    fn a_new_size_takes_an_empty_slot_then_a_new_one_then_the_oldest() {
        let with_empty = held(&[(Some(320), 1), (None, 0)]);
        assert_eq!(choose_slots(&with_empty, &frames(&[800]), 16), [1]);
        let full = held(&[(Some(320), 5), (Some(640), 3)]);
        assert_eq!(choose_slots(&full, &frames(&[800]), 16), [2]);
        assert_eq!(choose_slots(&full, &frames(&[800]), 2), [1]);
        assert_eq!(choose_slots(&full, &frames(&[800, 1024]), 2), [1, 0]);
        // A batch larger than the limit still gets a slot per frame.
        assert_eq!(choose_slots(&full, &frames(&[1, 2, 3]), 2), [1, 0, 2]);
    }

    #[test]
    fn chosen_items_move_to_the_front_in_order() {
        let cases: [&[usize]; 5] = [&[2, 0], &[1, 0], &[3, 2, 1, 0], &[0, 3], &[4, 1, 3]];
        for chosen in cases {
            let mut items: Vec<usize> = (0..5).collect();
            move_to_front(&mut items, chosen.to_vec());
            assert_eq!(&items[..chosen.len()], chosen, "{chosen:?}");
            let mut all = items.clone();
            all.sort_unstable();
            assert_eq!(
                all,
                (0..5).collect::<Vec<_>>(),
                "{chosen:?}: every item kept"
            );
        }
    }
}
