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

    /// The pixel bytes of row `y`, padding excluded.
    pub(crate) fn row(&self, y: usize) -> &'a [u8] {
        let start = y * self.stride;
        &self.data[start..start + self.width * self.format.bytes_per_pixel()]
    }

    /// Panics with a clear message when the view is empty or its buffer is too short.
    pub(crate) fn check(&self) {
        let row_len = self.width * self.format.bytes_per_pixel();
        assert!(
            self.width > 0 && self.height > 0,
            "image is empty ({}x{})",
            self.width,
            self.height
        );
        assert!(
            self.stride >= row_len,
            "stride {} is shorter than a row of {row_len} bytes",
            self.stride
        );
        let needed = (self.height - 1) * self.stride + row_len;
        assert!(
            self.data.len() >= needed,
            "image buffer holds {} bytes, {}x{} with stride {} needs {needed}",
            self.data.len(),
            self.width,
            self.height,
            self.stride
        );
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
