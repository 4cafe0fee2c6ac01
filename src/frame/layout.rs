//! Where a frame's pixels are in its buffer: packed RGB(x)/BGR(x) or NV12/I420 planes.

use std::ops::Range;

use super::colour::{ChromaRow, YuvRowConverter, YuvToRgb};
use super::view::{ImageView, PixelFormat};

/// How a frame's bytes are laid out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SourceLayout {
    Rgb,
    Bgr,
    /// RGBA or RGBx: the fourth byte is ignored.
    Rgbx,
    /// BGRA or BGRx.
    Bgrx,
    /// Y plane, then interleaved U/V at half resolution.
    Nv12,
    /// Y plane, then U, then V, each at half resolution.
    I420,
}

impl SourceLayout {
    /// The packed pixel format of a packed layout; `None` for the 4:2:0 layouts.
    pub(crate) fn packed_format(self) -> Option<PixelFormat> {
        match self {
            Self::Rgb => Some(PixelFormat::Rgb),
            Self::Bgr => Some(PixelFormat::Bgr),
            Self::Rgbx => Some(PixelFormat::Rgba),
            Self::Bgrx => Some(PixelFormat::Bgra),
            Self::Nv12 | Self::I420 => None,
        }
    }
}

/// A frame's geometry: size, layout and where its planes start in its buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameGeometry {
    pub width: usize,
    pub height: usize,
    pub layout: SourceLayout,
    /// Bytes per row of the packed image or of the Y plane.
    pub stride: usize,
    /// Byte offsets of the chroma planes (UV for NV12; U and V for I420).
    pub chroma: [usize; 2],
    pub chroma_stride: usize,
    /// How YUV samples become RGB (unused for packed layouts).
    pub yuv: YuvToRgb,
}

impl FrameGeometry {
    /// Width x height.
    pub fn pixels(&self) -> usize {
        self.width * self.height
    }

    /// A packed RGB/BGR(x) frame without padding.
    pub fn packed(width: usize, height: usize, layout: SourceLayout) -> Self {
        let bytes = layout
            .packed_format()
            .map_or(1, PixelFormat::bytes_per_pixel);
        FrameGeometry {
            width,
            height,
            layout,
            stride: width * bytes,
            chroma: [0; 2],
            chroma_stride: 0,
            yuv: YuvToRgb::BT601_LIMITED,
        }
    }

    /// An NV12 or I420 frame without padding, BT.601 limited range; odd sizes round the
    /// chroma planes up.
    pub fn yuv420(width: usize, height: usize, layout: SourceLayout) -> Self {
        let luma = width * height;
        let half_width = width.div_ceil(2);
        let (chroma, chroma_stride) = match layout {
            SourceLayout::Nv12 => ([luma, 0], 2 * half_width),
            _ => ([luma, luma + half_width * height.div_ceil(2)], half_width),
        };
        FrameGeometry {
            width,
            height,
            layout,
            stride: width,
            chroma,
            chroma_stride,
            yuv: YuvToRgb::BT601_LIMITED,
        }
    }

    /// Each plane's byte offset, rows, bytes per row and bytes of pixels per row.
    fn planes(&self) -> Vec<[usize; 4]> {
        if let Some(format) = self.layout.packed_format() {
            let row = format.bytes_per_pixel() * self.width;
            return vec![[0, self.height, self.stride, row]];
        }
        let (rows, half_width) = (self.height.div_ceil(2), self.width.div_ceil(2));
        match self.layout {
            SourceLayout::Nv12 => vec![
                [0, self.height, self.stride, self.width],
                [self.chroma[0], rows, self.chroma_stride, 2 * half_width],
            ],
            _ => vec![
                [0, self.height, self.stride, self.width],
                [self.chroma[0], rows, self.chroma_stride, half_width],
                [self.chroma[1], rows, self.chroma_stride, half_width],
            ],
        }
    }

    /// Bytes the frame's buffer holds with every row padded to its stride.
    pub fn len(&self) -> usize {
        let end = |[offset, rows, stride, _]: [usize; 4]| offset + rows * stride;
        self.planes().into_iter().map(end).max().unwrap_or(0)
    }

    /// Bytes a buffer must hold at least: [`Self::len`] without the padding of the last row,
    /// which decoders may leave out.
    pub fn min_len(&self) -> usize {
        let end = |[offset, rows, stride, row]: [usize; 4]| match rows {
            0 => offset,
            rows => offset + (rows - 1) * stride + row,
        };
        self.planes().into_iter().map(end).max().unwrap_or(0)
    }

    /// Checks that a buffer of `data_len` bytes holds such a frame: a size, rows no longer
    /// than their strides, every plane inside.
    pub fn validate(&self, data_len: usize) -> std::result::Result<(), String> {
        if self.is_empty() {
            return Err(format!("empty frame ({}x{})", self.width, self.height));
        }
        if let Some([_, _, stride, row]) = self.planes().into_iter().find(|p| p[2] < p[3]) {
            return Err(format!(
                "{:?} rows of {row} bytes do not fit a stride of {stride}",
                self.layout
            ));
        }
        if data_len < self.min_len() {
            return Err(format!(
                "{}x{} {:?} needs {} bytes, the buffer holds {data_len}",
                self.width,
                self.height,
                self.layout,
                self.min_len()
            ));
        }
        Ok(())
    }

    pub fn is_empty(&self) -> bool {
        self.width == 0 || self.height == 0
    }
}

/// A frame's bytes in host memory, and where its pixels are in them.
#[derive(Clone, Copy, Debug)]
pub struct HostFrame<'a> {
    pub data: &'a [u8],
    pub geometry: FrameGeometry,
}

impl<'a> From<&ImageView<'a>> for HostFrame<'a> {
    fn from(view: &ImageView<'a>) -> Self {
        let layout = match view.format {
            PixelFormat::Rgb => SourceLayout::Rgb,
            PixelFormat::Bgr => SourceLayout::Bgr,
            PixelFormat::Rgba => SourceLayout::Rgbx,
            PixelFormat::Bgra => SourceLayout::Bgrx,
        };
        HostFrame {
            data: view.data,
            geometry: FrameGeometry {
                stride: view.stride,
                ..FrameGeometry::packed(view.width, view.height, layout)
            },
        }
    }
}

impl<'a> HostFrame<'a> {
    /// Row `y` as stored: packed pixels, or the luma and chroma samples of a 4:2:0 row.
    pub(crate) fn row(&self, y: usize) -> FrameRow<'a> {
        let g = &self.geometry;
        match g.layout.packed_format() {
            Some(format) => {
                FrameRow::Packed(&self.data[y * g.stride..][..g.width * format.bytes_per_pixel()])
            }
            None => FrameRow::Yuv420(Yuv420Row::new(self.data, g, y)),
        }
    }

    /// Panics with a clear message when the frame is empty or its buffer too short: the
    /// CPU stages' precondition.
    pub(crate) fn check(&self) {
        if let Err(reason) = self.geometry.validate(self.data.len()) {
            panic!("frame cannot be read: {reason}");
        }
    }

    /// Tightly packed RGB, whatever the layout (YUV converted as the kernels do).
    pub fn to_rgb(&self) -> Vec<u8> {
        let mut rgb = Vec::new();
        self.to_rgb_into(&mut rgb);
        rgb
    }

    /// [`Self::to_rgb`] into `rgb`, reusing its allocation.
    pub fn to_rgb_into(&self, rgb: &mut Vec<u8>) {
        let g = &self.geometry;
        rgb.clear();
        rgb.reserve(g.width * g.height * 3);
        let Some(format) = g.layout.packed_format() else {
            return yuv420_to_rgb_into(self.data, g, rgb);
        };
        let (bytes, [r, gr, b]) = (format.bytes_per_pixel(), format.rgb_offsets());
        for row in self.data.chunks(g.stride).take(g.height) {
            for pixel in row[..bytes * g.width].chunks_exact(bytes) {
                rgb.extend_from_slice(&[pixel[r], pixel[gr], pixel[b]]);
            }
        }
    }
}

/// YUV 4:2:0 to packed RGB on the CPU, each 2x2 block sharing its chroma sample, with the
/// frame's [`YuvToRgb`] (for BT.601 limited range: OpenCV's `cvtColor(COLOR_YUV2RGB_NV12 /
/// _I420)`): the kernels' colour conversion.
pub fn yuv420_to_rgb(data: &[u8], geometry: &FrameGeometry) -> Vec<u8> {
    let mut rgb = Vec::with_capacity(geometry.width * geometry.height * 3);
    yuv420_to_rgb_into(data, geometry, &mut rgb);
    rgb
}

fn yuv420_to_rgb_into(data: &[u8], geometry: &FrameGeometry, rgb: &mut Vec<u8>) {
    let converter = geometry.yuv.row_converter();
    let row_len = 3 * geometry.width;
    for y in 0..geometry.height {
        rgb.resize(rgb.len() + row_len, 0);
        let start = rgb.len() - row_len;
        Yuv420Row::new(data, geometry, y).convert(&converter, &mut rgb[start..]);
    }
}

/// One row of a frame as stored.
pub(crate) enum FrameRow<'a> {
    /// Packed pixels of the frame's layout.
    Packed(&'a [u8]),
    Yuv420(Yuv420Row<'a>),
}

/// A row of a YUV 4:2:0 frame: its luma, and the chroma row it shares with its neighbour.
pub(crate) struct Yuv420Row<'a> {
    luma: &'a [u8],
    chroma: ChromaRow<'a>,
}

impl<'a> Yuv420Row<'a> {
    fn new(data: &'a [u8], geometry: &FrameGeometry, y: usize) -> Self {
        let luma = &data[y * geometry.stride..][..geometry.width];
        let row = y / 2 * geometry.chroma_stride;
        let samples = geometry.width.div_ceil(2);
        let plane = |index: usize, len: usize| &data[geometry.chroma[index] + row..][..len];
        let chroma = match geometry.layout {
            SourceLayout::Nv12 => ChromaRow::Interleaved(plane(0, 2 * samples)),
            _ => ChromaRow::Planar {
                u: plane(0, samples),
                v: plane(1, samples),
            },
        };
        Yuv420Row { luma, chroma }
    }

    /// Columns `columns` as RGB words (`colour::word_rgb`); the run starts on a chroma sample.
    pub(crate) fn convert_words(
        &self,
        converter: &YuvRowConverter,
        columns: Range<usize>,
        words: &mut [u32],
    ) {
        assert!(
            columns.start.is_multiple_of(2),
            "a 4:2:0 run starts on an even column"
        );
        let chroma = self.chroma.skip_pairs(columns.start / 2);
        converter.convert_words(&self.luma[columns], chroma, words);
    }

    /// The whole row as packed RGB.
    fn convert(&self, converter: &YuvRowConverter, rgb: &mut [u8]) {
        converter.convert_packed(self.luma, self.chroma, rgb);
    }
}
