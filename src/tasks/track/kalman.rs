//! ByteTrack's constant-velocity Kalman filter on a box's centre, aspect ratio and height, with
//! its noise model (standard deviations proportional to the height), on time steps measured in
//! frames at 30 fps so that its tuning holds at any frame rate and across dropped frames.
//!
//! ByteTrack's covariance matrices are block-diagonal by coordinate (the transition, the
//! noises and the projection never mix x, y, aspect and height), so its 8-state filter is
//! exactly four independent filters of (position, velocity): that is how it is computed here.

/// ByteTrack's noise weights, relative to the box height.
const POSITION_WEIGHT: f64 = 1.0 / 20.0;
const VELOCITY_WEIGHT: f64 = 1.0 / 160.0;

/// Time steps are in frames at this rate (ByteTrack's tuning is per frame at 30 fps).
const TUNED_FPS: f64 = 30.0;

/// Standard deviations per coordinate (x, y, aspect, height): `weight` times the height for
/// the centre and the height, a constant for the aspect ratio (ByteTrack's model).
fn deviations(height: f64, weight: f64, aspect: f64) -> [f64; 4] {
    let scaled = weight * height;
    [scaled, scaled, aspect, scaled]
}

/// A box as the filter sees it: centre x, centre y, width / height, height.
pub type Xyah = [f64; 4];

pub fn xyah_of(bbox: [f32; 4]) -> Xyah {
    let [x1, y1, x2, y2] = bbox.map(f64::from);
    let (w, h) = (x2 - x1, (y2 - y1).max(1e-6));
    [x1 + w / 2.0, y1 + h / 2.0, w / h, h]
}

pub fn bbox_of([x, y, a, h]: Xyah) -> [f32; 4] {
    let w = a * h;
    [x - w / 2.0, y - h / 2.0, x + w / 2.0, y + h / 2.0].map(|v| v as f32)
}

/// One coordinate's position and velocity, and their covariance.
#[derive(Clone, Copy, Debug)]
struct Axis {
    position: f64,
    velocity: f64,
    /// [[pp, pv], [pv, vv]]
    pp: f64,
    pv: f64,
    vv: f64,
}

impl Axis {
    fn predict(&mut self, steps: f64, position_noise: f64, velocity_noise: f64) {
        self.position += self.velocity * steps;
        self.pp += 2.0 * steps * self.pv + steps * steps * self.vv + position_noise * steps;
        self.pv += steps * self.vv;
        self.vv += velocity_noise * steps;
    }

    fn update(&mut self, measured: f64, measurement_noise: f64) {
        let innovation_variance = self.pp + measurement_noise;
        let (gain_p, gain_v) = (self.pp / innovation_variance, self.pv / innovation_variance);
        let innovation = measured - self.position;
        self.position += gain_p * innovation;
        self.velocity += gain_v * innovation;
        let (pp, pv, vv) = (self.pp, self.pv, self.vv);
        self.pp = pp - pp * pp / innovation_variance;
        self.pv = pv - pp * pv / innovation_variance;
        self.vv = vv - pv * pv / innovation_variance;
    }
}

/// The filter of one track.
#[derive(Clone, Copy, Debug)]
pub struct BoxFilter {
    axes: [Axis; 4],
}

impl BoxFilter {
    /// ByteTrack's `initiate`: the measurement, no velocity, wide uncertainty.
    pub fn new(measured: Xyah) -> Self {
        let h = measured[3];
        let position_std = deviations(h, 2.0 * POSITION_WEIGHT, 1e-2);
        let velocity_std = deviations(h, 10.0 * VELOCITY_WEIGHT, 1e-5);
        let axes = std::array::from_fn(|i| Axis {
            position: measured[i],
            velocity: 0.0,
            pp: position_std[i].powi(2),
            pv: 0.0,
            vv: velocity_std[i].powi(2),
        });
        BoxFilter { axes }
    }

    /// Moves the state `seconds` ahead; the process noise grows with the time step.
    pub fn predict(&mut self, seconds: f64) {
        let steps = (seconds * TUNED_FPS).max(0.0);
        if steps == 0.0 {
            return;
        }
        let h = self.axes[3].position;
        let position_std = deviations(h, POSITION_WEIGHT, 1e-2);
        let velocity_std = deviations(h, VELOCITY_WEIGHT, 1e-5);
        for (i, axis) in self.axes.iter_mut().enumerate() {
            axis.predict(steps, position_std[i].powi(2), velocity_std[i].powi(2));
        }
    }

    /// ByteTrack's `update` with a measured box.
    pub fn update(&mut self, measured: Xyah) {
        let noise = deviations(self.axes[3].position, POSITION_WEIGHT, 1e-1);
        for (i, axis) in self.axes.iter_mut().enumerate() {
            axis.update(measured[i], noise[i].powi(2));
        }
    }

    pub fn xyah(&self) -> Xyah {
        self.axes.map(|axis| axis.position)
    }

    /// The centre's velocity in pixels per second.
    pub fn centre_velocity(&self) -> [f64; 2] {
        [
            self.axes[0].velocity * TUNED_FPS,
            self.axes[1].velocity * TUNED_FPS,
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boxes_convert_both_ways() {
        let bbox = [10.0, 20.0, 50.0, 100.0];
        assert_eq!(xyah_of(bbox), [30.0, 60.0, 0.5, 80.0]);
        assert_eq!(bbox_of(xyah_of(bbox)), bbox);
    }

    #[test]
    fn a_box_moving_steadily_is_followed_and_extrapolated() {
        // 3 px a frame to the right at 30 fps; after some updates the prediction a frame ahead
        // lands within a pixel of the truth.
        let at = |frame: f64| [100.0 + 3.0 * frame, 200.0, 0.5, 160.0];
        let mut filter = BoxFilter::new(at(0.0));
        for frame in 1..40 {
            filter.predict(1.0 / 30.0);
            filter.update(at(f64::from(frame)));
        }
        filter.predict(1.0 / 30.0);
        let predicted = filter.xyah();
        assert!((predicted[0] - at(40.0)[0]).abs() < 1.0, "{predicted:?}");
        assert!((filter.centre_velocity()[0] - 90.0).abs() < 3.0);
        // Two frames' time in one step moves it twice as far.
        let mut twice = filter;
        twice.predict(2.0 / 30.0);
        assert!((twice.xyah()[0] - predicted[0] - 6.0).abs() < 0.5);
    }
}
