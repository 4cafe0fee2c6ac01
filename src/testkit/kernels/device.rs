//! The kernel checks' device backend: each call uploads its inputs, runs the kernel through its
//! wrapper on the GPU's stream, and reads the result back.

use cudarc::driver::{CudaSlice, DeviceRepr, ValidAsZeroBits};

use super::{Canvas, KernelBackend, Precision, Scale};
use crate::cuda::Gpu;
use crate::frame::FrameGeometry;
use crate::preprocess::cuda::{
    DeviceLetterbox, DeviceStretch, InputElement, frame_to_rgba, warp_crops,
};
use crate::preprocess::letterbox::LetterboxPlan;
use crate::preprocess::{Normalization, PoseCrop, StretchPlan};
use crate::tasks::dense::DepthRange;
use crate::tasks::dense::cuda::{self as dense, RangeBuffers};
use crate::tasks::pose::decode::HeatmapPeak;
use crate::tasks::seg::cuda::{self as seg, SegShape};

/// The preprocessing tolerance on a device, on the 0..255 scale.
const PREPROCESS_TOLERANCE: f32 = 0.5;

/// The kernels on a CUDA device.
pub struct DeviceKernels {
    gpu: Gpu,
}

impl DeviceKernels {
    pub fn new(gpu: Gpu) -> Self {
        DeviceKernels { gpu }
    }

    fn upload<T: DeviceRepr>(&self, values: &[T]) -> CudaSlice<T> {
        self.gpu.stream().clone_htod(values).expect("upload")
    }

    fn zeros<T: DeviceRepr + ValidAsZeroBits>(&self, len: usize) -> CudaSlice<T> {
        self.gpu
            .stream()
            .alloc_zeros(len)
            .expect("device allocation")
    }

    fn download<T: DeviceRepr + Clone + Default>(&self, values: &CudaSlice<T>) -> Vec<T> {
        self.gpu.stream().clone_dtoh(values).expect("download")
    }

    /// Runs `launch` into a zeroed `T` buffer of `len` values and reads it back widened to f32.
    fn preprocessed<T>(
        &self,
        len: usize,
        launch: impl FnOnce(&mut CudaSlice<T>) -> crate::Result<()>,
    ) -> Vec<f32>
    where
        T: InputElement + ValidAsZeroBits + Clone + Default + Into<f32>,
    {
        let mut out = self.zeros::<T>(len);
        launch(&mut out).expect("preprocessing kernel");
        self.download(&out).into_iter().map(Into::into).collect()
    }

    /// The frame after `draw` coloured `values` into it (on the foreground, when given).
    fn drawn(
        &self,
        frame: &[u8],
        values: &[f32],
        foreground: Option<&[u8]>,
        draw: impl FnOnce(
            &Gpu,
            &mut CudaSlice<u8>,
            &CudaSlice<f32>,
            Option<&CudaSlice<u8>>,
        ) -> crate::Result<()>,
    ) -> Vec<u8> {
        let mut frame = self.upload(frame);
        let values = self.upload(values);
        let foreground = foreground.map(|f| self.upload(f));
        draw(&self.gpu, &mut frame, &values, foreground.as_ref()).expect("drawing kernel");
        self.download(&frame)
    }

    fn range_buffers(&self, depth: &CudaSlice<f32>, foreground: Option<&[u8]>) -> RangeBuffers {
        let mut buffers = RangeBuffers::new(&self.gpu).expect("range buffers");
        let foreground = foreground.map(|f| self.upload(f));
        dense::value_range(
            &self.gpu,
            depth,
            foreground.as_ref(),
            depth.len(),
            &mut buffers,
        )
        .expect("value_range");
        buffers
    }
}

impl KernelBackend for DeviceKernels {
    fn scale(&self) -> Scale {
        Scale::Full
    }

    fn preprocess_tolerance(&self) -> f32 {
        PREPROCESS_TOLERANCE
    }

    fn stretch(
        &self,
        plan: &StretchPlan,
        frame: &[u8],
        geometry: &FrameGeometry,
        norm: &Normalization,
        precision: Precision,
    ) -> Vec<f32> {
        let (width, height) = (geometry.width, geometry.height);
        let stretch = DeviceStretch::upload(&self.gpu, plan, width, height).expect("taps");
        let frame = self.upload(frame);
        let (columns, rows) = plan.taps();
        let len = 3 * columns.len() * rows.len();
        let gpu = &self.gpu;
        match precision {
            Precision::F32 => {
                self.preprocessed::<f32>(len, |out| stretch.run(gpu, &frame, geometry, norm, out))
            }
            Precision::F16 => self.preprocessed::<half::f16>(len, |out| {
                stretch.run(gpu, &frame, geometry, norm, out)
            }),
        }
    }

    fn warp_crops(
        &self,
        frame: &[u8],
        geometry: &FrameGeometry,
        crops: &[PoseCrop],
        size: (usize, usize),
        norm: &Normalization,
        precision: Precision,
    ) -> Vec<f32> {
        let frame = self.upload(frame);
        let len = crops.len() * 3 * size.0 * size.1;
        let gpu = &self.gpu;
        match precision {
            Precision::F32 => self.preprocessed::<f32>(len, |out| {
                warp_crops(gpu, &frame, geometry, crops, size, norm, out)
            }),
            Precision::F16 => self.preprocessed::<half::f16>(len, |out| {
                warp_crops(gpu, &frame, geometry, crops, size, norm, out)
            }),
        }
    }

    fn letterbox(&self, plan: &LetterboxPlan, frame: &[u8], geometry: &FrameGeometry) -> Vec<f32> {
        let letterbox = DeviceLetterbox::upload(&self.gpu, plan).expect("taps");
        let frame = self.upload(frame);
        let mut out = self.zeros::<f32>(3 * plan.input_w * plan.input_h);
        letterbox
            .run(&self.gpu, &frame, geometry, &mut out)
            .expect("letterbox_f32");
        self.download(&out)
    }

    fn frame_to_rgba(&self, frame: &[u8], geometry: &FrameGeometry) -> Vec<u8> {
        let frame = self.upload(frame);
        let mut rgba = self.zeros::<u8>(4 * geometry.width * geometry.height);
        frame_to_rgba(&self.gpu, &frame, geometry, &mut rgba).expect("frame_to_rgba");
        self.download(&rgba)
    }

    fn upsample_argmax(&self, logits: &[f32], shape: SegShape) -> Vec<u8> {
        let logits = self.upload(logits);
        let mut out = self.zeros::<u8>(shape.out_w * shape.out_h);
        seg::upsample_argmax(&self.gpu, &logits, shape, &mut out).expect("upsample_argmax");
        self.download(&out)
    }

    fn argmax_nearest(&self, logits: &[f32], shape: SegShape) -> Vec<u8> {
        let logits = self.upload(logits);
        let mut out = self.zeros::<u8>(shape.out_w * shape.out_h);
        seg::argmax_nearest(&self.gpu, &logits, shape, &mut out).expect("argmax_nearest");
        self.download(&out)
    }

    fn decode_dark_udp(&self, heatmaps: &[f32], maps: (usize, usize, usize)) -> Vec<HeatmapPeak> {
        let heatmaps = self.upload(heatmaps);
        let (mut scratch, mut peaks) = (None, Vec::new());
        crate::tasks::pose::cuda::decode_dark_udp(
            &self.gpu,
            &heatmaps,
            maps,
            &mut scratch,
            &mut peaks,
        )
        .expect("decode_dark_udp");
        peaks
    }

    fn blend_class_map(
        &self,
        frame: &[u8],
        canvas: Canvas,
        classes: &[u8],
        palette: &[[u8; 3]],
        alpha: f32,
    ) -> Vec<u8> {
        let mut frame = self.upload(frame);
        let classes = self.upload(classes);
        crate::render::cuda::blend_class_map(
            &self.gpu, &mut frame, canvas, &classes, palette, alpha,
        )
        .expect("blend_class_map");
        self.download(&frame)
    }

    fn mirror_batch(&self, maps: &[f32], dims: (usize, usize, usize, usize)) -> Vec<f32> {
        let maps = self.upload(maps);
        let mut out = self.zeros::<f32>(maps.len());
        crate::tasks::flip::cuda::mirror_batch(&self.gpu, &maps, dims, &mut out)
            .expect("mirror_rows");
        self.download(&out)
    }

    fn merge_flipped(
        &self,
        plain: &[f32],
        mirrored: &[f32],
        (items, _, h, w): (usize, usize, usize, usize),
        flip_indices: &[usize],
    ) -> Vec<f32> {
        let indices = crate::tasks::flip::cuda::upload_flip_indices(&self.gpu, flip_indices)
            .expect("flip indices");
        let mut merged = self.upload(plain);
        let mirrored = self.upload(mirrored);
        crate::tasks::flip::cuda::merge_flipped_heatmaps(
            &self.gpu,
            &mut merged,
            &mirrored,
            items,
            &indices,
            (h, w),
        )
        .expect("merge_flipped");
        self.download(&merged)
    }

    fn resize_planar(
        &self,
        maps: &[f32],
        source: (usize, usize, usize),
        (out_w, out_h): (usize, usize),
    ) -> Vec<f32> {
        let maps = self.upload(maps);
        let mut out = self.zeros::<f32>(source.0 * out_w * out_h);
        dense::resize_planar(&self.gpu, &maps, source, (out_w, out_h), &mut out)
            .expect("resize_planar");
        self.download(&out)
    }

    fn depth_range(&self, depth: &[f32], foreground: Option<&[u8]>) -> Option<DepthRange> {
        let depth = self.upload(depth);
        self.range_buffers(&depth, foreground)
            .read(&self.gpu)
            .expect("reading the range")
    }

    fn normalise_depth(&self, depth: &[f32], foreground: Option<&[u8]>) -> Vec<f32> {
        let depth = self.upload(depth);
        let buffers = self.range_buffers(&depth, foreground);
        let foreground = foreground.map(|f| self.upload(f));
        let mut out = self.zeros::<f32>(depth.len());
        dense::normalise_depth(
            &self.gpu,
            &depth,
            foreground.as_ref(),
            buffers.range(),
            &mut out,
        )
        .expect("normalise_depth");
        self.download(&out)
    }

    fn draw_depth(
        &self,
        frame: &[u8],
        canvas: Canvas,
        normalised: &[f32],
        foreground: Option<&[u8]>,
    ) -> Vec<u8> {
        self.drawn(
            frame,
            normalised,
            foreground,
            |gpu, frame, values, classes| dense::draw_depth(gpu, frame, canvas, values, classes),
        )
    }

    fn normalise_normals(&self, normals: &[f32]) -> Vec<f32> {
        let mut normals = self.upload(normals);
        dense::normalise_normals(&self.gpu, &mut normals).expect("normalise_normals");
        self.download(&normals)
    }

    fn draw_normals(
        &self,
        frame: &[u8],
        canvas: Canvas,
        normals: &[f32],
        foreground: Option<&[u8]>,
    ) -> Vec<u8> {
        self.drawn(frame, normals, foreground, |gpu, frame, values, classes| {
            dense::draw_normals(gpu, frame, canvas, values, classes)
        })
    }
}
