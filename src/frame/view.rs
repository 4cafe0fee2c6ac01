//! Packed 8-bit pixels as the CPU stages read them.

/// Layout of one 8-bit packed pixel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PixelFormat {
    /// Red, green, blue: 3 bytes per pixel.
    Rgb,
    /// Red, green, blue, alpha (ignored): 4 bytes per pixel.
    Rgba,
    /// Blue, green, red: 3 bytes per pixel.
    Bgr,
    /// Blue, green, red, alpha (ignored): 4 bytes per pixel.
    Bgra,
}

impl PixelFormat {
    /// Bytes of one pixel.
    pub const fn bytes_per_pixel(self) -> usize {
        match self {
            Self::Rgb | Self::Bgr => 3,
            Self::Rgba | Self::Bgra => 4,
        }
    }

    /// Byte offsets of red, green and blue inside one pixel.
    pub const fn rgb_offsets(self) -> [usize; 3] {
        match self {
            Self::Rgb | Self::Rgba => [0, 1, 2],
            Self::Bgr | Self::Bgra => [2, 1, 0],
        }
    }
}

/// A borrowed packed 8-bit image; rows may be padded (`stride >= width * bytes_per_pixel`).
#[derive(Clone, Copy, Debug)]
pub struct ImageView<'a> {
    /// Pixel bytes, row after row; the last row needs no padding.
    pub data: &'a [u8],
    /// Width in pixels.
    pub width: usize,
    /// Height in pixels.
    pub height: usize,
    /// Bytes from the start of one row to the start of the next.
    pub stride: usize,
    /// Layout of each pixel.
    pub format: PixelFormat,
}

impl<'a> ImageView<'a> {
    /// A view of rows without padding.
    pub fn packed(data: &'a [u8], width: usize, height: usize, format: PixelFormat) -> Self {
        Self {
            data,
            width,
            height,
            stride: width * format.bytes_per_pixel(),
            format,
        }
    }
}

/// A frame drawn on the device, read back.
#[derive(Debug)]
pub struct PaintedFrame {
    /// RGBA rows; the last may come without its padding, as the frame's own did.
    pub rgba: Vec<u8>,
    /// Bytes per row: the input's for RGBA frames, `4 x width` for frames converted to RGBA.
    pub stride: usize,
}
