//! Where a frame's pixels are in its buffer: packed RGB(x)/BGR(x) or NV12/I420 planes.

use std::ops::Range;

use super::colour::YuvToRgb;
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
    /// Row `y`'s pixels as packed bytes of `format`: the frame's own row when it is packed,
    /// else the row converted to RGB into `scratch` (as the kernels convert each sample), only
    /// the pixels of `columns` (the others are stale).
    pub(crate) fn packed_row<'s>(
        &self,
        y: usize,
        columns: Range<usize>,
        scratch: &'s mut Vec<u8>,
    ) -> (&'s [u8], PixelFormat)
    where
        'a: 's,
    {
        let g = &self.geometry;
        match g.layout.packed_format() {
            Some(format) => (
                &self.data[y * g.stride..][..g.width * format.bytes_per_pixel()],
                format,
            ),
            None => {
                scratch.resize(3 * g.width, 0);
                yuv420_row_to_rgb(self.data, g, y, columns, scratch);
                (scratch, PixelFormat::Rgb)
            }
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
    let row_len = 3 * geometry.width;
    for y in 0..geometry.height {
        rgb.resize(rgb.len() + row_len, 0);
        let start = rgb.len() - row_len;
        yuv420_row_to_rgb(data, geometry, y, 0..geometry.width, &mut rgb[start..]);
    }
}

/// The pixels `columns` of row `y` of a YUV 4:2:0 frame, each 2x2 block sharing one chroma
/// sample, as packed RGB at their places in `rgb` (a row's worth of bytes).
fn yuv420_row_to_rgb(
    data: &[u8],
    geometry: &FrameGeometry,
    y: usize,
    columns: Range<usize>,
    rgb: &mut [u8],
) {
    let luma = &data[y * geometry.stride..][..geometry.width];
    let (u, v, step) = chroma_row(data, geometry, y);
    let pixels = &mut rgb[3 * columns.start..3 * columns.end];
    for (x, pixel) in columns.zip(pixels.chunks_exact_mut(3)) {
        let at = x / 2 * step;
        pixel.copy_from_slice(&geometry.yuv.convert(luma[x], u[at], v[at]));
    }
}

/// The U and V samples of the chroma row that covers row `y`, and the distance between two
/// samples of one plane (2 in NV12's interleaved plane, 1 in I420's).
fn chroma_row<'d>(
    data: &'d [u8],
    geometry: &FrameGeometry,
    y: usize,
) -> (&'d [u8], &'d [u8], usize) {
    let row = y / 2 * geometry.chroma_stride;
    match geometry.layout {
        SourceLayout::Nv12 => {
            let uv = &data[geometry.chroma[0] + row..];
            (uv, &uv[1..], 2)
        }
        _ => (
            &data[geometry.chroma[0] + row..],
            &data[geometry.chroma[1] + row..],
            1,
        ),
    }
}
