//! How a frame becomes a detector's input: the fit (keep-ratio resize and padding) each
//! detector family's own pipeline makes, and the CPU letterbox that runs it (the device's is
//! [`super::cuda::DeviceLetterbox`]).

use super::{Normalization, StretchPlan};
use crate::frame::HostFrame;

/// Letterbox padding value of both mmdet and ultralytics, on the 0..255 scale.
const PAD_VALUE: f32 = 114.0;

/// How a detector family's own pipeline letterboxes a frame.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LetterboxStyle {
    pub fit: Fit,
    pub norm: Normalization,
    /// The input's planes go B, G, R (mmdet).
    pub blue_first: bool,
}

/// Where the resized frame goes and how its size is rounded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fit {
    /// mmcv's `imrescale`: sizes rounded half up, the frame at the top left, boxes mapped back
    /// with the per-axis scale it got (RTMDet).
    TopLeft,
    /// ultralytics' `LetterBox`: sizes rounded half to even, the frame centred, boxes mapped
    /// back with the single gain (YOLO).
    Centred,
    /// Sapiens2's `NormalResizePadImage` (normal and pointmap models): sizes truncated
    /// (`int()`), the frame centred (the floor of half the padding before), black padding.
    CentredTruncated,
}

/// How Sapiens2 normal and pointmap models take a frame: kept in aspect, centred, black padding.
pub const SAPIENS2_PADDING: LetterboxStyle = LetterboxStyle {
    fit: Fit::CentredTruncated,
    norm: Normalization::SAPIENS,
    blue_first: false,
};

impl Fit {
    /// The padding's value on the 0..255 scale, before normalisation.
    fn pad_value(self) -> f32 {
        match self {
            Fit::TopLeft | Fit::Centred => PAD_VALUE,
            Fit::CentredTruncated => 0.0,
        }
    }
}

/// Where a frame lands inside the detector input, and the way back.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Letterbox {
    /// Size of the resized frame inside the input.
    pub resized_w: usize,
    pub resized_h: usize,
    /// Padding columns left of, and rows above, the resized frame.
    pub left: usize,
    pub top: usize,
    /// Input pixels per frame pixel, per axis, as the layout's own pipeline maps boxes back.
    pub scale_x: f64,
    pub scale_y: f64,
}

impl Letterbox {
    /// The fit of a `frame_w x frame_h` frame into an `input_w x input_h` input: the largest
    /// scale at which it fits, `min(input_w / frame_w, input_h / frame_h)`.
    pub fn new(fit: Fit, frame_w: usize, frame_h: usize, input_w: usize, input_h: usize) -> Self {
        let scale = (input_w as f64 / frame_w as f64).min(input_h as f64 / frame_h as f64);
        // A sliver frame still keeps one row or column.
        let fitted =
            |len: usize, rounded: fn(f64) -> f64| (rounded(len as f64 * scale) as usize).max(1);
        match fit {
            // mmcv's `imrescale` (the same scale for square inputs, the usual export) rounds half
            // up (`int(x + 0.5)`), and mmdet maps boxes back with the per-axis scale it got.
            Fit::TopLeft => {
                let round_half_up = |x: f64| (x + 0.5).floor();
                let (resized_w, resized_h) = (
                    fitted(frame_w, round_half_up),
                    fitted(frame_h, round_half_up),
                );
                Letterbox {
                    resized_w,
                    resized_h,
                    left: 0,
                    top: 0,
                    scale_x: resized_w as f64 / frame_w as f64,
                    scale_y: resized_h as f64 / frame_h as f64,
                }
            }
            // ultralytics rounds with Python's `round` (half to even), splits the padding as
            // `round(d / 2 - 0.1)` before and the rest after (the floor of half before), and
            // maps boxes back with the single gain.
            Fit::Centred | Fit::CentredTruncated => {
                let round = if fit == Fit::Centred {
                    f64::round_ties_even
                } else {
                    f64::floor
                };
                let (resized_w, resized_h) = (fitted(frame_w, round), fitted(frame_h, round));
                Letterbox {
                    resized_w,
                    resized_h,
                    left: (input_w - resized_w) / 2,
                    top: (input_h - resized_h) / 2,
                    scale_x: scale,
                    scale_y: scale,
                }
            }
        }
    }

    /// Input pixels -> frame pixels.
    pub fn to_frame(&self, x: f32, y: f32) -> (f32, f32) {
        (
            ((f64::from(x) - self.left as f64) / self.scale_x) as f32,
            ((f64::from(y) - self.top as f64) / self.scale_y) as f32,
        )
    }
}

/// How frames of one size become a detector's input: the fit, the resize taps, the channel
/// order and the normalisation (with the padding's value). The frames of a stream share one;
/// the CPU letterbox and the device's (`crate::preprocess::cuda::DeviceLetterbox`) run it.
#[derive(Debug)]
pub struct LetterboxPlan {
    pub frame_w: usize,
    pub frame_h: usize,
    pub input_w: usize,
    pub input_h: usize,
    pub letterbox: Letterbox,
    /// Frame -> the resized rectangle.
    pub stretch: StretchPlan,
    pub norm: Normalization,
    /// The normalised padding per R, G, B channel.
    pub pad: [f32; 3],
    /// The input's planes go B, G, R (mmdet).
    pub blue_first: bool,
}

impl LetterboxPlan {
    pub fn new(
        style: impl Into<LetterboxStyle>,
        (frame_w, frame_h): (usize, usize),
        (input_w, input_h): (usize, usize),
    ) -> Self {
        let LetterboxStyle {
            fit,
            norm,
            blue_first,
        } = style.into();
        let letterbox = Letterbox::new(fit, frame_w, frame_h, input_w, input_h);
        LetterboxPlan {
            frame_w,
            frame_h,
            input_w,
            input_h,
            letterbox,
            stretch: StretchPlan::new(frame_w, frame_h, letterbox.resized_w, letterbox.resized_h),
            norm,
            pad: std::array::from_fn(|c| (fit.pad_value() - norm.mean[c]) / norm.std[c]),
            blue_first,
        }
    }

    /// The input plane that holds R, G or B (`rgb_channel` 0, 1, 2).
    pub fn plane_of(&self, rgb_channel: usize) -> usize {
        if self.blue_first {
            2 - rgb_channel
        } else {
            rgb_channel
        }
    }
}

/// Builds a detector's 1 x 3 x H x W input from frames, reusing its buffers frame after frame.
#[derive(Debug)]
pub struct LetterboxInput {
    style: LetterboxStyle,
    pub input_w: usize,
    pub input_h: usize,
    plan: Option<LetterboxPlan>,
    /// The resized frame alone, planar R, G, B, normalised.
    resized: Vec<f32>,
    tensor: Vec<f32>,
}

impl LetterboxInput {
    pub fn new(style: impl Into<LetterboxStyle>, input_w: usize, input_h: usize) -> Self {
        LetterboxInput {
            style: style.into(),
            input_w,
            input_h,
            plan: None,
            resized: Vec::new(),
            tensor: vec![0.0; 3 * input_w * input_h],
        }
    }

    /// The plan for `frame_w x frame_h` frames, made when the size changes.
    pub fn plan(&mut self, frame_w: usize, frame_h: usize) -> &LetterboxPlan {
        let (style, input) = (self.style, (self.input_w, self.input_h));
        let plan = match self.plan.take() {
            Some(plan) if (plan.frame_w, plan.frame_h) == (frame_w, frame_h) => plan,
            _ => LetterboxPlan::new(style, (frame_w, frame_h), input),
        };
        self.plan.insert(plan)
    }

    /// Letterboxes a frame of any layout into [`Self::tensor`] (bilinear resize with
    /// `cv2.resize` INTER_LINEAR values, the fit's padding, the layout's channel order and
    /// normalisation) and returns the fit.
    pub fn prepare<'a>(&mut self, frame: impl Into<HostFrame<'a>>) -> Letterbox {
        let mut tensor = std::mem::take(&mut self.tensor);
        let letterbox = self.prepare_into(frame, &mut tensor);
        self.tensor = tensor;
        letterbox
    }

    /// [`Self::prepare`] into `tensor` (3 x input height x input width values) instead.
    ///
    /// # Panics
    /// If `tensor` does not hold the input.
    pub fn prepare_into<'a>(
        &mut self,
        frame: impl Into<HostFrame<'a>>,
        tensor: &mut [f32],
    ) -> Letterbox {
        let frame = frame.into();
        assert_eq!(
            tensor.len(),
            3 * self.input_w * self.input_h,
            "letterbox tensor size"
        );
        let (input_w, input_h) = (self.input_w, self.input_h);
        self.plan(frame.geometry.width, frame.geometry.height);
        let plan = self.plan.as_ref().expect("made above");
        let letterbox = plan.letterbox;
        self.resized
            .resize(3 * letterbox.resized_w * letterbox.resized_h, 0.0);
        plan.stretch.run(frame, &mut self.resized, &plan.norm);
        let plane_len = input_w * input_h;
        let resized_planes = self
            .resized
            .chunks_exact(letterbox.resized_w * letterbox.resized_h);
        for (rgb_channel, plane) in resized_planes.enumerate() {
            let out = &mut tensor[plan.plane_of(rgb_channel) * plane_len..][..plane_len];
            out.fill(plan.pad[rgb_channel]);
            let out_rows = out.chunks_exact_mut(input_w).skip(letterbox.top);
            for (out_row, row) in out_rows.zip(plane.chunks_exact(letterbox.resized_w)) {
                out_row[letterbox.left..][..letterbox.resized_w].copy_from_slice(row);
            }
        }
        letterbox
    }

    /// The input of the last [`Self::prepare`]: planar, in the layout's channel order.
    pub fn tensor(&self) -> &[f32] {
        &self.tensor
    }
}
