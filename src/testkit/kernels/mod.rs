//! The kernel tests, written once and run on two backends: the kernels' CUDA C built for the
//! host ([`emulator`], in the unit tests, on every machine) and a CUDA device
//! ([`device::DeviceKernels`], tests/gpu.rs, where there is one). Each check gives a kernel the
//! CPU stage's inputs and compares with the CPU stage's outputs, in every frame layout the
//! kernel reads; the backend sets the sizes (small on the emulator, which runs one OS thread per
//! CUDA thread) and the preprocessing tolerance.

pub mod device;
#[cfg(test)]
mod emulator;

use crate::frame::{FrameGeometry, HostFrame, ImageView, PixelFormat, SourceLayout, YuvToRgb};
use crate::preprocess::letterbox::{LetterboxInput, LetterboxPlan};
use crate::preprocess::{Normalization, PoseCrop, StretchPlan, warp_crop};
use crate::render;
use crate::tasks::dense::{self, DepthRange};
use crate::tasks::detect::DetectorLayout;
use crate::tasks::pose::decode::{HeatmapPeak, decode_dark_udp};
use crate::tasks::seg::{self, cuda::SegShape};
use crate::tasks::{flip, keypoint_sets};
use crate::testkit::kernel_inputs::{
    Noise, edge_case_heatmaps, random_logits, test_bytes, tied_logits_with_nans,
};

/// How large the checks' inputs are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scale {
    /// A few thousand pixels: the emulator runs one OS thread per CUDA thread.
    Small,
    /// Frame and model sizes as the pipeline sees them.
    Full,
}

/// The element type a preprocessing kernel writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Precision {
    F32,
    F16,
}

/// Frame sizes a draw takes: width, height, bytes per row.
pub type Canvas = (usize, usize, usize);

/// The kernels as the checks call them: host buffers in, host buffers out, each launched the
/// way its device wrapper launches it.
pub trait KernelBackend {
    fn scale(&self) -> Scale;
    /// Largest difference from the CPU path accepted for f32 model inputs (of 255); f16 inputs
    /// must always be the CPU's f32 value rounded to nearest.
    fn preprocess_tolerance(&self) -> f32;
    /// `plan` over the frame (f16 values come back widened to f32).
    fn stretch(
        &self,
        plan: &StretchPlan,
        frame: &[u8],
        geometry: &FrameGeometry,
        norm: &Normalization,
        precision: Precision,
    ) -> Vec<f32>;
    /// One UDP crop per person into consecutive slots of `size` (f16 widened to f32).
    fn warp_crops(
        &self,
        frame: &[u8],
        geometry: &FrameGeometry,
        crops: &[PoseCrop],
        size: (usize, usize),
        norm: &Normalization,
        precision: Precision,
    ) -> Vec<f32>;
    fn letterbox(&self, plan: &LetterboxPlan, frame: &[u8], geometry: &FrameGeometry) -> Vec<f32>;
    fn frame_to_rgba(&self, frame: &[u8], geometry: &FrameGeometry) -> Vec<u8>;
    fn upsample_argmax(&self, logits: &[f32], shape: SegShape) -> Vec<u8>;
    fn argmax_nearest(&self, logits: &[f32], shape: SegShape) -> Vec<u8>;
    fn decode_dark_udp(&self, heatmaps: &[f32], maps: (usize, usize, usize)) -> Vec<HeatmapPeak>;
    /// The frame with the class colours blended in.
    fn blend_class_map(
        &self,
        frame: &[u8],
        canvas: Canvas,
        classes: &[u8],
        palette: &[[u8; 3]],
        alpha: f32,
    ) -> Vec<u8>;
    /// `(items, channels, h, w)` maps mirrored left-right.
    fn mirror_batch(&self, maps: &[f32], dims: (usize, usize, usize, usize)) -> Vec<f32>;
    /// `plain` merged with its mirrored run, channels swapped by `flip_indices`.
    fn merge_flipped(
        &self,
        plain: &[f32],
        mirrored: &[f32],
        dims: (usize, usize, usize, usize),
        flip_indices: &[usize],
    ) -> Vec<f32>;
    fn resize_planar(
        &self,
        maps: &[f32],
        source: (usize, usize, usize),
        size: (usize, usize),
    ) -> Vec<f32>;
    fn depth_range(&self, depth: &[f32], foreground: Option<&[u8]>) -> Option<DepthRange>;
    /// Depth scaled to 0..1 over its range (of the foreground, when given).
    fn normalise_depth(&self, depth: &[f32], foreground: Option<&[u8]>) -> Vec<f32>;
    fn draw_depth(
        &self,
        frame: &[u8],
        canvas: Canvas,
        normalised: &[f32],
        foreground: Option<&[u8]>,
    ) -> Vec<u8>;
    fn normalise_normals(&self, normals: &[f32]) -> Vec<f32>;
    fn draw_normals(
        &self,
        frame: &[u8],
        canvas: Canvas,
        normals: &[f32],
        foreground: Option<&[u8]>,
    ) -> Vec<u8>;
}

/// The stretch (dense models) from every layout, padded and BT.709 full-range frames included,
/// both normalisations, both precisions; narrower and taller than the frame.
pub fn stretch_equals_the_cpu_path(backend: &impl KernelBackend) {
    let sizes: &[(usize, usize, usize, usize)] = match backend.scale() {
        Scale::Small => &[(64, 48, 40, 56)],
        Scale::Full => &[(640, 360, 192, 256), (1920, 1080, 768, 1024)],
    };
    for &(width, height, out_w, out_h) in sizes {
        let plan = StretchPlan::new(width, height, out_w, out_h);
        for geometry in every_layout(width, height) {
            let frame = test_bytes(geometry.len(), 3);
            for norm in [Normalization::IDENTITY, Normalization::SAPIENS] {
                let mut expected = vec![0.0; 3 * out_w * out_h];
                plan.run(&cpu_view(&frame, &geometry).view(), &mut expected, &norm);
                for precision in [Precision::F32, Precision::F16] {
                    let got = backend.stretch(&plan, &frame, &geometry, &norm, precision);
                    let what = format!("{precision:?} stretch of {geometry:?}, {norm:?}");
                    assert_preprocessed(backend, &got, &expected, precision, &what);
                }
            }
        }
    }
}

/// Batched UDP crops, inside the frame and past each edge, from every layout.
pub fn batched_crops_equal_the_cpu_path(backend: &impl KernelBackend) {
    let (width, height, out_w, out_h, boxes) = match backend.scale() {
        Scale::Small => (
            64,
            48,
            24,
            32,
            [
                [10.0, 5.0, 30.0, 45.0],
                [-4.0, 30.0, 12.0, 52.0],
                [50.0, -3.0, 70.0, 20.0],
            ],
        ),
        Scale::Full => (
            640,
            480,
            192,
            256,
            [
                [100.0, 50.0, 300.0, 450.0],
                [-40.0, 300.0, 120.0, 520.0],
                [500.0, 10.0, 700.0, 200.0],
            ],
        ),
    };
    let crops = boxes.map(|[x1, y1, x2, y2]| PoseCrop::from_box(x1, y1, x2, y2, out_w, out_h));
    for layout in LAYOUTS {
        let geometry = plain(layout, width, height);
        let frame = test_bytes(geometry.len(), 9);
        let cpu = cpu_view(&frame, &geometry);
        for norm in [Normalization::IDENTITY, Normalization::SAPIENS] {
            let slot = 3 * out_w * out_h;
            let mut expected = vec![0.0; crops.len() * slot];
            for (crop, out) in crops.iter().zip(expected.chunks_mut(slot)) {
                warp_crop(&cpu.view(), crop, out, out_w, out_h, &norm);
            }
            for precision in [Precision::F32, Precision::F16] {
                let size = (out_w, out_h);
                let got = backend.warp_crops(&frame, &geometry, &crops, size, &norm, precision);
                let what = format!("{precision:?} {layout:?} crops, {norm:?}");
                assert_preprocessed(backend, &got, &expected, precision, &what);
            }
        }
    }
}

/// A detector family, a frame size and the detector's input size.
type LetterboxCase = (DetectorLayout, (usize, usize), (usize, usize));

/// The detector letterbox (resize, padding, channel order, normalisation) of both detector
/// families: wide frames (padding above and below), tall ones (left and right), odd sizes.
pub fn detector_letterbox_equals_the_cpu_path(backend: &impl KernelBackend) {
    let cases: Vec<LetterboxCase> = match backend.scale() {
        Scale::Small => [DetectorLayout::RtmDet, DetectorLayout::Yolo]
            .into_iter()
            .flat_map(|d| [(64, 36), (30, 50), (33, 17)].map(|frame| (d, frame, (40, 32))))
            .collect(),
        Scale::Full => vec![
            (DetectorLayout::RtmDet, (640, 360), (320, 320)),
            (DetectorLayout::Yolo, (270, 480), (320, 256)),
        ],
    };
    for (detector, (width, height), input) in cases {
        for geometry in every_layout(width, height) {
            let frame = test_bytes(geometry.len(), 7);
            let mut cpu = LetterboxInput::new(detector, input.0, input.1);
            cpu.prepare(&cpu_view(&frame, &geometry).view());
            let plan = LetterboxPlan::new(detector, (width, height), input);
            let got = backend.letterbox(&plan, &frame, &geometry);
            // Same taps, same arithmetic, same division: equal values.
            let differing = got.iter().zip(cpu.tensor()).position(|(a, b)| a != b);
            assert!(
                got.len() == cpu.tensor().len() && differing.is_none(),
                "{detector:?} letterbox of {geometry:?}: value {differing:?} differs from the CPU's"
            );
        }
    }
}

/// Frames of every layout to RGBA, as the CPU converts them; odd sizes, where the last chroma
/// column and row cover one pixel.
pub fn rgba_conversion_equals_the_cpu_path(backend: &impl KernelBackend) {
    let sizes: &[(usize, usize)] = match backend.scale() {
        Scale::Small => &[(64, 48), (33, 17)],
        Scale::Full => &[(321, 181)],
    };
    for &(width, height) in sizes {
        for geometry in every_layout(width, height) {
            let frame = test_bytes(geometry.len(), 5);
            let expected: Vec<u8> = HostFrame {
                data: &frame,
                geometry,
            }
            .to_rgb()
            .chunks_exact(3)
            .flat_map(|p| [p[0], p[1], p[2], 255])
            .collect();
            let got = backend.frame_to_rgba(&frame, &geometry);
            assert!(got == expected, "{geometry:?}: RGBA differs from the CPU's");
        }
    }
}

/// Logits to a frame-size class map both ways (bilinear then argmax; argmax then nearest), on
/// random logits and on ties and NaNs.
pub fn segmentation_class_maps_equal_the_cpu_path(backend: &impl KernelBackend) {
    let shape = match backend.scale() {
        Scale::Small => SegShape {
            classes: 28,
            in_h: 16,
            in_w: 12,
            out_w: 50,
            out_h: 37,
        },
        Scale::Full => SegShape {
            classes: 28,
            in_h: 64,
            in_w: 48,
            out_w: 333,
            out_h: 250,
        },
    };
    let random = random_logits(shape.classes, shape.in_h, shape.in_w);
    let tied = tied_logits_with_nans(shape.classes, shape.in_h, shape.in_w);
    let SegShape {
        classes,
        in_h,
        in_w,
        out_w,
        out_h,
    } = shape;
    for (logits, what) in [(random, "random"), (tied, "ties and NaNs")] {
        let mut expected = vec![0u8; out_w * out_h];
        seg::upsample_argmax(&logits, classes, in_h, in_w, out_w, out_h, &mut expected);
        let got = backend.upsample_argmax(&logits, shape);
        assert_eq!(got, expected, "bilinear + argmax, {what}");
        seg::argmax_nearest(&logits, classes, in_h, in_w, out_w, out_h, &mut expected);
        let got = backend.argmax_nearest(&logits, shape);
        assert_eq!(got, expected, "argmax + nearest, {what}");
    }
}

/// DARK-UDP on heatmaps with edge cases (peaks on borders, flat maps, NaNs).
pub fn pose_decode_equals_the_cpu_path(backend: &impl KernelBackend) {
    // The second size leaves partial tiles of the device's 32x32 blur on both edges.
    let shapes: &[(usize, usize, usize)] = match backend.scale() {
        Scale::Small => &[(12, 64, 48), (10, 45, 61)],
        Scale::Full => &[(308, 256, 192), (10, 45, 61)],
    };
    for &(maps, h, w) in shapes {
        let data = edge_case_heatmaps(maps, h, w);
        let mut expected = Vec::new();
        decode_dark_udp(&data, maps, h, w, &mut expected);
        let got = backend.decode_dark_udp(&data, (maps, h, w));
        assert_eq!(got.len(), expected.len());
        for (k, (g, e)) in got.iter().zip(&expected).enumerate() {
            assert_eq!(g.score, e.score, "{h}x{w} map {k}: score");
            // The log differs by an ulp between the kernel's logf and Rust's ln.
            assert!(
                (g.x - e.x).abs() < 1e-3 && (g.y - e.y).abs() < 1e-3,
                "{h}x{w} map {k}: {g:?} vs {e:?}"
            );
        }
    }
}

/// The class colours blended into a padded RGBA frame, at several opacities.
pub fn class_overlay_equals_the_cpu_path(backend: &impl KernelBackend) {
    let (width, height, stride) = (101, 37, 101 * 4 + 12);
    let classes: Vec<u8> = test_bytes(width * height, 43)
        .iter()
        .map(|b| b % 30)
        .collect();
    let palette: Vec<[u8; 3]> = (0..28u8).map(|i| [i * 9, 255 - i * 7, i * 3]).collect();
    for alpha in [0.5, 0.3, 1.0] {
        let frame = test_bytes(height * stride, 41);
        let got =
            backend.blend_class_map(&frame, (width, height, stride), &classes, &palette, alpha);
        let mut expected = frame;
        render::blend_class_map(
            &mut expected,
            width,
            height,
            stride,
            &classes,
            &palette,
            alpha,
        );
        assert_eq!(got, expected, "alpha {alpha}");
    }
}

/// The flip test's mirror of the crops' heatmaps and its merge back, left and right swapped.
pub fn flip_test_kernels_equal_the_cpu_path(backend: &impl KernelBackend) {
    let (items, channels, h, w) = match backend.scale() {
        Scale::Small => (2, 17, 12, 9),
        Scale::Full => (2, 17, 24, 19),
    };
    let len = items * channels * h * w;
    let mut noise = Noise(51);
    let plain: Vec<f32> = (0..len).map(|_| noise.unit() * 2.0 - 0.5).collect();
    let mirrored: Vec<f32> = (0..len).map(|_| noise.unit()).collect();
    let mut expected = vec![0.0; len];
    flip::mirror_batch(&plain, items, channels, h, w, &mut expected);
    let dims = (items, channels, h, w);
    assert_eq!(backend.mirror_batch(&plain, dims), expected, "mirror");

    let flip_indices = &keypoint_sets::keypoint_set(channels)
        .expect("17 keypoints are COCO's")
        .flip_indices;
    let mut merged = plain.clone();
    flip::merge_flipped_heatmaps(&mut merged, &mirrored, items, flip_indices, h, w);
    let got = backend.merge_flipped(&plain, &mirrored, dims, flip_indices);
    assert_eq!(got, merged, "merge");
}

/// Depth resized, its range (of the foreground, of the frame, of no pixel), normalised and
/// coloured, with a NaN in the map.
pub fn depth_kernels_equal_the_cpu_path(backend: &impl KernelBackend) {
    let (in_h, in_w, out_w, out_h) = match backend.scale() {
        Scale::Small => (16, 12, 41, 29),
        Scale::Full => (32, 24, 101, 77),
    };
    let (raw, _) = depth_and_classes(in_h, in_w);
    let (_, classes) = depth_and_classes(out_h, out_w);
    let pixels = out_w * out_h;
    let mut resized = vec![0.0; pixels];
    dense::resize_planar(&raw, 1, in_h, in_w, out_w, out_h, &mut resized);
    let got = backend.resize_planar(&raw, (1, in_h, in_w), (out_w, out_h));
    assert_same_floats(&got, &resized, "resize");
    let stride = out_w * 4 + 8;
    let mut frame = test_bytes(out_h * stride, 71);
    let mut drawn = frame.clone();
    let background = vec![0u8; pixels];
    for foreground in [Some(&classes[..]), None, Some(&background[..])] {
        let mut normalised = vec![0.0; pixels];
        let range = dense::normalise_depth(&resized, foreground, &mut normalised);
        let what = |step| format!("{step}, foreground {:?}", foreground.map(|f| f.len()));
        assert_eq!(
            backend.depth_range(&resized, foreground),
            range,
            "{}",
            what("range")
        );
        let got = backend.normalise_depth(&resized, foreground);
        assert_same_floats(&got, &normalised, &what("normalised"));
        dense::draw_depth(&mut frame, out_w, out_h, stride, &normalised, foreground);
        drawn = backend.draw_depth(&drawn, (out_w, out_h, stride), &got, foreground);
        assert_eq!(drawn, frame, "{}", what("depth colours"));
    }
}

/// Normals resized, made unit length and coloured, with and without a foreground.
pub fn normal_kernels_equal_the_cpu_path(backend: &impl KernelBackend) {
    let (in_h, in_w, out_w, out_h) = match backend.scale() {
        Scale::Small => (8, 6, 23, 17),
        Scale::Full => (16, 12, 67, 45),
    };
    let mut noise = Noise(81);
    let raw: Vec<f32> = (0..3 * in_h * in_w)
        .map(|_| noise.unit() * 2.0 - 1.0)
        .collect();
    let pixels = out_w * out_h;
    let mut normals = vec![0.0; 3 * pixels];
    dense::resize_planar(&raw, 3, in_h, in_w, out_w, out_h, &mut normals);
    dense::normalise_normals(&mut normals);
    let resized = backend.resize_planar(&raw, (3, in_h, in_w), (out_w, out_h));
    let got = backend.normalise_normals(&resized);
    assert_same_floats(&got, &normals, "unit normals");
    let (_, classes) = depth_and_classes(out_h, out_w);
    let stride = out_w * 4;
    let mut frame = test_bytes(out_h * stride, 83);
    let mut drawn = frame.clone();
    for foreground in [Some(&classes[..]), None] {
        dense::draw_normals(&mut frame, out_w, out_h, stride, &normals, foreground);
        drawn = backend.draw_normals(&drawn, (out_w, out_h, stride), &got, foreground);
        assert_eq!(drawn, frame, "normal colours");
    }
}

/// Every frame layout a kernel reads.
pub const LAYOUTS: [SourceLayout; 6] = [
    SourceLayout::Rgb,
    SourceLayout::Bgr,
    SourceLayout::Rgbx,
    SourceLayout::Bgrx,
    SourceLayout::Nv12,
    SourceLayout::I420,
];

/// A `layout` frame without padding, BT.601 limited range.
pub fn plain(layout: SourceLayout, width: usize, height: usize) -> FrameGeometry {
    match layout {
        SourceLayout::Nv12 | SourceLayout::I420 => FrameGeometry::yuv420(width, height, layout),
        _ => FrameGeometry::packed(width, height, layout),
    }
}

/// `geometry` with padded rows and gaps between the planes, as decoders leave frames: the kernel
/// must follow the strides and plane offsets.
pub fn padded(geometry: FrameGeometry) -> FrameGeometry {
    let stride = geometry.stride + 16;
    let luma = stride * geometry.height + 64;
    match geometry.layout {
        SourceLayout::Nv12 => FrameGeometry {
            stride,
            chroma: [luma, 0],
            chroma_stride: stride,
            ..geometry
        },
        SourceLayout::I420 => {
            let chroma_stride = geometry.chroma_stride + 8;
            FrameGeometry {
                stride,
                chroma: [luma, luma + chroma_stride * geometry.height / 2 + 32],
                chroma_stride,
                ..geometry
            }
        }
        _ => FrameGeometry { stride, ..geometry },
    }
}

/// `geometry` with BT.709 full-range colours (only YUV layouts read them).
pub fn bt709_full_range(geometry: FrameGeometry) -> FrameGeometry {
    FrameGeometry {
        yuv: YuvToRgb::from_weights(0.2126, 0.0722, true),
        ..geometry
    }
}

/// Every layout at `width x height`: as it comes, padded as decoders leave frames, and padded
/// with BT.709 full-range colours.
pub fn every_layout(width: usize, height: usize) -> impl Iterator<Item = FrameGeometry> {
    LAYOUTS.into_iter().flat_map(move |layout| {
        let geometry = plain(layout, width, height);
        [
            geometry,
            padded(geometry),
            bt709_full_range(padded(geometry)),
        ]
    })
}

/// The CPU path's input for a frame of any layout: YUV converted first (to packed RGB), then
/// the CPU stage reads it.
pub struct CpuView {
    pixels: Vec<u8>,
    format: PixelFormat,
    width: usize,
    height: usize,
    stride: usize,
}

impl CpuView {
    pub fn view(&self) -> ImageView<'_> {
        ImageView {
            data: &self.pixels,
            width: self.width,
            height: self.height,
            stride: self.stride,
            format: self.format,
        }
    }
}

pub fn cpu_view(frame: &[u8], geometry: &FrameGeometry) -> CpuView {
    let (width, height) = (geometry.width, geometry.height);
    let packed = |format| CpuView {
        pixels: frame.to_vec(),
        format,
        width,
        height,
        stride: geometry.stride,
    };
    match geometry.layout {
        SourceLayout::Nv12 | SourceLayout::I420 => CpuView {
            pixels: crate::frame::yuv420_to_rgb(frame, geometry),
            format: PixelFormat::Rgb,
            width,
            height,
            stride: width * 3,
        },
        SourceLayout::Rgb => packed(PixelFormat::Rgb),
        SourceLayout::Bgr => packed(PixelFormat::Bgr),
        SourceLayout::Rgbx => packed(PixelFormat::Rgba),
        SourceLayout::Bgrx => packed(PixelFormat::Bgra),
    }
}

/// f32 values within the backend's tolerance of the CPU's; f16 values the CPU's rounded to
/// nearest.
fn assert_preprocessed(
    backend: &impl KernelBackend,
    got: &[f32],
    expected: &[f32],
    precision: Precision,
    what: &str,
) {
    assert_eq!(got.len(), expected.len(), "{what}: length");
    let tolerance = backend.preprocess_tolerance();
    let accepted = |g: f32, e: f32| match precision {
        Precision::F32 if tolerance == 0.0 => g == e,
        Precision::F32 => (g - e).abs() <= tolerance,
        // `g` is an f16 widened, so this compares the f16 bits' values.
        Precision::F16 => half::f16::from_f32(g) == half::f16::from_f32(e),
    };
    if let Some(i) = got
        .iter()
        .zip(expected)
        .position(|(&g, &e)| !accepted(g, e))
    {
        panic!(
            "{what}: value {i} is {}, the CPU path's {} (tolerance {tolerance})",
            got[i], expected[i]
        );
    }
}

/// Equal values, NaN equal to NaN.
fn assert_same_floats(got: &[f32], expected: &[f32], what: &str) {
    assert_eq!(got.len(), expected.len(), "{what}: length");
    for (i, (g, e)) in got.iter().zip(expected).enumerate() {
        assert!(
            g == e || (g.is_nan() && e.is_nan()),
            "{what} at {i}: {g} vs {e}"
        );
    }
}

/// A depth map with a NaN and a class map with background, person and an empty corner.
fn depth_and_classes(h: usize, w: usize) -> (Vec<f32>, Vec<u8>) {
    let mut noise = Noise(61);
    let mut depth: Vec<f32> = (0..h * w).map(|_| 1.0 + noise.unit() * 3.0).collect();
    depth[w + 1] = f32::NAN;
    let classes = (0..h * w)
        .map(|i| {
            if (i % w) < w / 3 {
                0
            } else {
                (i % 27) as u8 + 1
            }
        })
        .collect();
    (depth, classes)
}
