//! One frame's work on the GPU, as one chain of asynchronous steps on one stream: the frame goes
//! up once (through a pinned buffer), the model inputs are made on the device (one UDP crop per
//! person, written into its batch slot; the stretch for the dense tasks), ONNX Runtime runs on
//! the same stream with its inputs and outputs in device memory, heatmaps are flip-merged and
//! decoded on the device, logits become a class map there, and only the peaks, the class map
//! and the small dense maps come back, into pinned buffers, with one synchronisation per frame.

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
use crate::tasks::{INPUT_HEIGHT, INPUT_WIDTH, OutputLayout};

/// The pose model of a frame, with one crop per person.
pub struct PoseRequest<'a> {
    pub engine: &'a mut dyn DeviceEngine,
    pub layout: OutputLayout,
    /// Items per model call.
    pub max_batch: usize,
    /// The keypoint set's flip indices, for the flip test.
    pub flip_indices: Option<&'a [usize]>,
    pub persons: Persons<'a>,
}

/// Where the persons of a frame come from.
pub enum Persons<'a> {
    /// Known boxes, as their crops.
    Crops(&'a [PoseCrop]),
    /// A detector on the GPU ([`PersonDetector::load_on_gpu`]), run on the uploaded frame first;
    /// its boxes come back in [`FrameResults::boxes`].
    Detect(&'a mut PersonDetector),
}

/// A dense model of a frame (it sees the whole frame, stretched).
pub struct DenseRequest<'a> {
    pub engine: &'a mut dyn DeviceEngine,
    pub layout: OutputLayout,
}

/// What to run on one frame.
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

/// The GPU side of the pipeline: kernels, stream, and the buffers reused frame after frame.
pub struct DeviceInference {
    frame: Option<FrameUpload>,
    stretch: Option<DeviceStretch>,
    letterbox: Option<DeviceLetterbox>,
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
    class_map: Option<Readback<u8>>,
    dense: Option<DenseBuffers>,
    /// Last, so it drops last: the bound batches keep ONNX Runtime sessions alive, and those
    /// run on this GPU's stream until they go.
    gpu: Gpu,
}

impl DeviceInference {
    pub fn new(gpu: Gpu) -> Self {
        DeviceInference {
            frame: None,
            stretch: None,
            letterbox: None,
            detector_input: None,
            pose: BatchCache::default(),
            pose_mirrored: BatchCache::default(),
            seg: BatchCache::default(),
            depth: BatchCache::default(),
            normal: BatchCache::default(),
            flip_indices: None,
            decode_partials: None,
            peaks: None,
            class_map: None,
            dense: None,
            gpu,
        }
    }

    /// Runs every requested model on `frame` and reads the results back.
    pub fn run(&mut self, frame: &HostFrame, request: FrameRequest) -> Result<FrameResults> {
        let geometry = self.upload(frame)?;
        let (width, height) = (geometry.width, geometry.height);
        let mut results = FrameResults::default();
        let peak_count = match request.pose {
            Some(pose) => self.queue_pose(&geometry, pose, &mut results)?,
            None => 0,
        };
        let dense = [
            request.seg.as_ref().map(|(r, _)| r.layout),
            request.depth.as_ref().map(|r| r.layout),
            request.normal.as_ref().map(|r| r.layout),
        ];
        if dense.iter().any(Option::is_some) && self.stretch.is_none() {
            let plan = StretchPlan::new(width, height, INPUT_WIDTH, INPUT_HEIGHT);
            self.stretch = Some(DeviceStretch::upload(&self.gpu, &plan, width, height)?);
        }
        if let Some((seg, nearest)) = request.seg {
            self.queue_seg(&geometry, seg, nearest)?;
        }
        let has_seg = dense[0].is_some();
        if request.depth.is_some() || request.normal.is_some() {
            DenseBuffers::ensure(&mut self.dense, &self.gpu, &geometry)?;
        }
        if let Some(depth) = request.depth {
            self.queue_depth(&geometry, depth, has_seg, request.dense_maps)?;
        }
        if let Some(normal) = request.normal {
            self.queue_normals(&geometry, normal, request.dense_maps)?;
        }
        let painted = match request.paint {
            Some(paint) => self.queue_paint(&geometry, paint, has_seg, dense)?,
            None => false,
        };
        // The one synchronisation of the frame: everything above was queued on this stream.
        self.gpu
            .stream()
            .synchronize()
            .map_err(cuda_error("waiting for the frame"))?;
        if peak_count > 0 {
            let peaks = self.peaks.as_ref().expect("queued with the pose");
            results
                .peaks
                .extend(peaks.host(peak_count)?.iter().map(HeatmapPeak::from));
        }
        let pixels = width * height;
        if has_seg {
            let class_map = self.class_map.as_ref().expect("queued with the seg model");
            results.class_map = Some(class_map.host(pixels)?.to_vec());
        }
        if let Some(buffers) = &self.dense {
            let maps = request.dense_maps;
            if dense[1].is_some() {
                results.depth = Some(DenseResult {
                    range: buffers.range()?,
                    map: maps
                        .then(|| read_pinned(&buffers.depth_host, pixels))
                        .transpose()?,
                });
            }
            if dense[2].is_some() {
                results.normals = Some(DenseResult {
                    range: None,
                    map: maps
                        .then(|| read_pinned(&buffers.normals_host, 3 * pixels))
                        .transpose()?,
                });
            }
        }
        if painted {
            results.painted = Some(self.painted_frame(frame.data.len())?);
        }
        Ok(results)
    }

    /// Copies the frame into the pinned staging buffer and queues its upload.
    fn upload(&mut self, frame: &HostFrame) -> Result<FrameGeometry> {
        let geometry = frame.geometry;
        geometry.validate(frame.data.len()).map_err(Error::Cuda)?;
        let copied = frame.data.len().min(geometry.len());
        if self.frame.as_ref().is_none_or(|f| f.geometry != geometry) {
            self.frame = Some(FrameUpload::new(&self.gpu, geometry)?);
            // A new frame size needs a new stretch plan.
            self.stretch = None;
        }
        let upload = self.frame.as_mut().expect("allocated above");
        upload
            .staging
            .as_mut_slice()
            .map_err(cuda_error("waiting for the staging buffer"))?[..copied]
            .copy_from_slice(&frame.data[..copied]);
        self.gpu
            .stream()
            .memcpy_htod(&upload.staging, &mut upload.device)
            .map_err(cuda_error("uploading the frame"))?;
        Ok(geometry)
    }

    /// The drawn frame read back (after the frame's synchronisation); an RGBA frame as long as
    /// its own bytes were (`frame_len`).
    fn painted_frame(&self, frame_len: usize) -> Result<PaintedFrame> {
        let upload = self.frame.as_ref().expect("uploaded first");
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

    /// Finds the persons (when asked to), then crops, runs (with the flip test if asked) and
    /// decodes every person; returns how many peaks (persons x keypoints) are on their way back.
    fn queue_pose(
        &mut self,
        geometry: &FrameGeometry,
        pose: PoseRequest,
        results: &mut FrameResults,
    ) -> Result<usize> {
        let PoseRequest {
            engine,
            layout,
            max_batch,
            flip_indices,
            persons,
        } = pose;
        let detected: Vec<PoseCrop>;
        let crops = match persons {
            Persons::Crops(crops) => crops,
            Persons::Detect(detector) => {
                let started = Instant::now();
                let boxes = self.detect(geometry, detector)?;
                detected = boxes.iter().map(PersonBox::crop).collect();
                results.boxes = Some((boxes, started.elapsed()));
                &detected
            }
        };
        let persons = crops.len();
        if persons == 0 {
            return Ok(0);
        }
        let keypoints = layout.channels;
        let peaks = Readback::ensure(&mut self.peaks, &self.gpu, persons * keypoints)?;
        if let Some(indices) = flip_indices
            && self
                .flip_indices
                .as_ref()
                .is_none_or(|d| d.len() != indices.len())
        {
            self.flip_indices = Some(flip::upload_flip_indices(&self.gpu, indices)?);
        }
        let frame = &self.frame.as_ref().expect("uploaded first").device;
        let norm = Normalization::SAPIENS;
        for (chunk_index, chunk) in crops.chunks(max_batch.max(1)).enumerate() {
            let items = chunk.len();
            let batch = self.pose.get(&self.gpu, &*engine, items)?;
            warp_crops(
                &self.gpu,
                frame,
                geometry,
                chunk,
                (INPUT_WIDTH, INPUT_HEIGHT),
                &norm,
                &mut batch.input,
            )?;
            engine.run_device(&batch.batch)?;
            if let Some(indices) = &self.flip_indices
                && flip_indices.is_some()
            {
                let mirrored = self.pose_mirrored.get(&self.gpu, &*engine, items)?;
                let input_shape = (items, 3, INPUT_HEIGHT, INPUT_WIDTH);
                flip::mirror_batch(&self.gpu, &batch.input, input_shape, &mut mirrored.input)?;
                engine.run_device(&mirrored.batch)?;
                flip::merge_flipped_heatmaps(
                    &self.gpu,
                    &mut batch.output,
                    &mirrored.output,
                    items,
                    indices,
                    (layout.height, layout.width),
                )?;
            }
            let first = chunk_index * max_batch.max(1) * keypoints;
            queue_decode(
                &self.gpu,
                &batch.output,
                (items * keypoints, layout.height, layout.width),
                &mut self.decode_partials,
                peaks.device.slice_mut(first..first + items * keypoints),
            )?;
        }
        peaks.queue_download(&self.gpu, persons * keypoints)?;
        Ok(persons * keypoints)
    }

    /// Letterboxes the uploaded frame into the detector's bound input and runs it; its boxes
    /// by decreasing score, those too small to crop left out.
    fn detect(
        &mut self,
        geometry: &FrameGeometry,
        detector: &mut PersonDetector,
    ) -> Result<Vec<PersonBox>> {
        let plan = detector.letterbox_plan(geometry.width, geometry.height);
        if self.letterbox.as_ref().is_none_or(|l| !l.is_for(plan)) {
            self.letterbox = Some(DeviceLetterbox::upload(&self.gpu, plan)?);
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
        let frame = &self.frame.as_ref().expect("uploaded first").device;
        let letterbox = self.letterbox.as_ref().expect("uploaded above");
        letterbox.run(&self.gpu, frame, geometry, input)?;
        let mut boxes = detector.detect_bound(geometry.width, geometry.height)?;
        boxes.retain(PersonBox::is_croppable);
        Ok(boxes)
    }

    fn queue_seg(
        &mut self,
        geometry: &FrameGeometry,
        mut request: DenseRequest,
        nearest: bool,
    ) -> Result<()> {
        let frame_pixels = geometry.width * geometry.height;
        Readback::ensure(&mut self.class_map, &self.gpu, frame_pixels)?;
        let layout = request.layout;
        let shape = SegShape {
            classes: layout.channels,
            in_h: layout.height,
            in_w: layout.width,
            out_w: geometry.width,
            out_h: geometry.height,
        };
        let inputs = dense_inputs(&self.gpu, &self.frame, &self.stretch)?;
        let logits = &queue_dense(inputs, &mut self.seg, geometry, &mut request)?.output;
        let class_map = self.class_map.as_mut().expect("allocated above");
        if nearest {
            argmax_nearest(&self.gpu, logits, shape, &mut class_map.device)?;
        } else {
            upsample_argmax(&self.gpu, logits, shape, &mut class_map.device)?;
        }
        class_map.queue_download(&self.gpu, frame_pixels)
    }

    /// Runs the depth model, resizes its output to the frame, normalises it over the persons
    /// (the class map, when a seg model ran) and queues the range's (and the map's) download.
    fn queue_depth(
        &mut self,
        geometry: &FrameGeometry,
        mut request: DenseRequest,
        foreground: bool,
        map_to_host: bool,
    ) -> Result<()> {
        let layout = request.layout;
        let inputs = dense_inputs(&self.gpu, &self.frame, &self.stretch)?;
        let raw = &queue_dense(inputs, &mut self.depth, geometry, &mut request)?.output;
        let buffers = self.dense.as_mut().expect("allocated for the dense models");
        let size = (geometry.width, geometry.height);
        let shape = (1, layout.height, layout.width);
        dense::resize_planar(&self.gpu, raw, shape, size, &mut buffers.depth)?;
        let classes = foreground
            .then(|| self.class_map.as_ref().map(|c| &c.device))
            .flatten();
        let pixels = geometry.width * geometry.height;
        dense::value_range(
            &self.gpu,
            &buffers.depth,
            classes,
            pixels,
            &mut buffers.range,
        )?;
        dense::normalise_depth(
            &self.gpu,
            &buffers.depth,
            classes,
            buffers.range.range(),
            &mut buffers.normalised,
        )?;
        let stream = self.gpu.stream();
        stream
            .memcpy_dtoh(buffers.range.range(), &mut buffers.range_host)
            .map_err(cuda_error("reading the depth range"))?;
        if map_to_host {
            let host = pinned_slot(&mut buffers.depth_host, &self.gpu, pixels)?;
            stream
                .memcpy_dtoh(&buffers.depth, host)
                .map_err(cuda_error("reading depth"))?;
        }
        Ok(())
    }

    /// Runs the normal model, resizes its output to the frame and makes the normals unit
    /// length; queues the map's download when asked.
    fn queue_normals(
        &mut self,
        geometry: &FrameGeometry,
        mut request: DenseRequest,
        map_to_host: bool,
    ) -> Result<()> {
        let layout = request.layout;
        let inputs = dense_inputs(&self.gpu, &self.frame, &self.stretch)?;
        let raw = &queue_dense(inputs, &mut self.normal, geometry, &mut request)?.output;
        let buffers = self.dense.as_mut().expect("allocated for the dense models");
        let size = (geometry.width, geometry.height);
        let shape = (3, layout.height, layout.width);
        dense::resize_planar(&self.gpu, raw, shape, size, &mut buffers.normals)?;
        dense::normalise_normals(&self.gpu, &mut buffers.normals)?;
        if map_to_host {
            let len = 3 * geometry.width * geometry.height;
            let host = pinned_slot(&mut buffers.normals_host, &self.gpu, len)?;
            self.gpu
                .stream()
                .memcpy_dtoh(&buffers.normals, host)
                .map_err(cuda_error("reading normals"))?;
        }
        Ok(())
    }

    /// Draws the view into the uploaded frame (after every kernel that reads it; a frame in
    /// another layout is converted to RGBA first) and queues the drawn frame's download; false
    /// when an RGBA frame has nothing to draw.
    fn queue_paint(
        &mut self,
        geometry: &FrameGeometry,
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
        let in_place = geometry.layout == SourceLayout::Rgbx;
        if in_place && !view_drawn && classes.is_none() {
            return Ok(false);
        }
        let upload = self.frame.as_mut().expect("uploaded first");
        let (canvas, size) = if in_place {
            let size = (geometry.width, geometry.height, geometry.stride);
            (&mut upload.device, size)
        } else {
            let len = 4 * geometry.width * geometry.height;
            if upload.rgba.as_ref().is_none_or(|r| r.len() != len) {
                let rgba = self
                    .gpu
                    .stream()
                    .alloc_zeros::<u8>(len)
                    .map_err(cuda_error("allocating the RGBA frame"))?;
                upload.rgba = Some(rgba);
            }
            let rgba = upload.rgba.as_mut().expect("allocated above");
            frame_to_rgba(&self.gpu, &upload.device, geometry, rgba)?;
            (rgba, (geometry.width, geometry.height, 4 * geometry.width))
        };
        match (paint, &self.dense) {
            (Paint::Depth, Some(buffers)) if view_drawn => {
                dense::draw_depth(&self.gpu, canvas, size, &buffers.normalised, classes)?
            }
            (Paint::Normals, Some(buffers)) if view_drawn => {
                dense::draw_normals(&self.gpu, canvas, size, &buffers.normals, classes)?
            }
            _ => {
                if let (Some(classes), Some(seg)) = (classes, dense[0]) {
                    let palette = &class_set(seg.channels)
                        .expect("a checked seg model has a known class set")
                        .palette;
                    blend_class_map(&self.gpu, canvas, size, classes, palette, 0.5)?;
                }
            }
        }
        let len = canvas.len();
        let host = pinned_slot(&mut upload.painted, &self.gpu, len)?;
        self.gpu
            .stream()
            .memcpy_dtoh(canvas, host)
            .map_err(cuda_error("reading the drawn frame"))?;
        Ok(true)
    }
}

/// What every dense model's input is made from: the GPU, the uploaded frame, the stretch.
fn dense_inputs<'a>(
    gpu: &'a Gpu,
    frame: &'a Option<FrameUpload>,
    stretch: &'a Option<DeviceStretch>,
) -> Result<(&'a Gpu, &'a CudaSlice<u8>, &'a DeviceStretch)> {
    match (frame, stretch) {
        (Some(frame), Some(stretch)) => Ok((gpu, &frame.device, stretch)),
        _ => Err(Error::Cuda(
            "dense models need an uploaded frame and a stretch plan".into(),
        )),
    }
}

/// Stretches the frame into a dense model's input and queues the model; returns its batch.
fn queue_dense<'c>(
    (gpu, frame, stretch): (&Gpu, &CudaSlice<u8>, &DeviceStretch),
    cache: &'c mut BatchCache,
    geometry: &FrameGeometry,
    request: &mut DenseRequest,
) -> Result<&'c mut BoundBatch> {
    let batch = cache.get(gpu, &*request.engine, 1)?;
    stretch.run(
        gpu,
        frame,
        geometry,
        &Normalization::SAPIENS,
        &mut batch.input,
    )?;
    request.engine.run_device(&batch.batch)?;
    Ok(batch)
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
    batch: DeviceBatch,
}

/// The bound batches of one model, by item count: the full batch and the last partial one.
#[derive(Default)]
struct BatchCache {
    batches: Vec<BoundBatch>,
}

impl BatchCache {
    fn get(
        &mut self,
        gpu: &Gpu,
        engine: &dyn DeviceEngine,
        items: usize,
    ) -> Result<&mut BoundBatch> {
        let index = match self.batches.iter().position(|b| b.batch.items() == items) {
            Some(index) => index,
            None => {
                if self.batches.len() >= 2 {
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
