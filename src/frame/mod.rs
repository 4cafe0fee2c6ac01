//! The frame and its pixels, as every stage sees them: where the bytes are ([`FrameGeometry`]),
//! how YUV becomes RGB ([`YuvToRgb`]), packed pixels as the CPU reads them ([`ImageView`]), and,
//! with GStreamer, the decoded [`Frame`] that travels through the pipeline. Nothing here needs
//! GStreamer or CUDA except `Frame` itself.

mod colour;
#[cfg(feature = "gstreamer")]
mod decoded;
mod layout;
mod view;

pub use colour::{RgbToYuv, YuvToRgb};
pub(crate) use colour::{YuvRowConverter, word_rgb};
#[cfg(feature = "gstreamer")]
pub use decoded::{Frame, FrameCopies, MappedFrame};
pub(crate) use layout::FrameRow;
pub use layout::{FrameGeometry, HostFrame, SourceLayout, yuv420_to_rgb};
pub use view::{ImageView, PaintedFrame, PixelFormat};
