//! The One Euro filter (Casiez, Roussel and Vogel, CHI 2012): a first-order low-pass filter
//! whose cutoff rises with the signal's speed, so a still point stops jittering and a moving one
//! lags little. As the authors' reference implementation computes it, on irregular time steps.

use std::f64::consts::PI;

/// The filter's parameters.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct OneEuroParams {
    /// Cutoff (Hz) when the signal is still: lower removes more jitter.
    pub min_cutoff: f64,
    /// How fast the cutoff rises with speed (per unit of the signal per second): higher lags less.
    pub beta: f64,
    /// Cutoff (Hz) of the speed's own low-pass filter.
    pub d_cutoff: f64,
}

impl OneEuroParams {
    /// For keypoints of a 30 fps webcam, their coordinates in frame heights: still keypoints
    /// jitter a third as much, a quick move is followed within a few frames.
    pub const WEBCAM: Self = OneEuroParams {
        min_cutoff: 1.0,
        beta: 10.0,
        d_cutoff: 1.0,
    };

    /// Refuses cutoffs that are not positive and finite and a negative or non-finite beta.
    pub fn checked(min_cutoff: f64, beta: f64, d_cutoff: f64) -> Result<Self, String> {
        let positive = |name: &str, value: f64| {
            if value.is_finite() && value > 0.0 {
                Ok(value)
            } else {
                Err(format!(
                    "{name} must be a positive number of Hz, not {value}"
                ))
            }
        };
        if !(beta.is_finite() && beta >= 0.0) {
            return Err(format!("beta must be a number >= 0, not {beta}"));
        }
        Ok(OneEuroParams {
            min_cutoff: positive("min cutoff", min_cutoff)?,
            beta,
            d_cutoff: positive("derivative cutoff", d_cutoff)?,
        })
    }
}

/// Exponential smoothing with a weight given at each sample.
#[derive(Clone, Copy, Debug, Default)]
struct LowPass {
    last: Option<f64>,
}

impl LowPass {
    fn filter(&mut self, value: f64, alpha: f64) -> f64 {
        let smoothed = match self.last {
            Some(last) => alpha * value + (1.0 - alpha) * last,
            None => value,
        };
        self.last = Some(smoothed);
        smoothed
    }
}

/// One scalar signal's filter.
#[derive(Clone, Copy, Debug)]
pub struct OneEuroFilter {
    params: OneEuroParams,
    /// Sampling rate, from the last time step (the initial estimate until there is one).
    rate: f64,
    last_time: Option<f64>,
    value: LowPass,
    speed: LowPass,
}

impl OneEuroFilter {
    /// A filter that assumes `rate` samples a second until two timestamps tell it otherwise.
    pub fn new(params: OneEuroParams, rate: f64) -> Self {
        OneEuroFilter {
            params,
            rate,
            last_time: None,
            value: LowPass::default(),
            speed: LowPass::default(),
        }
    }

    /// The filtered value of `value` sampled at `time` (seconds). A time that does not move
    /// forward keeps the previous rate.
    pub fn filter(&mut self, value: f64, time: f64) -> f64 {
        if let Some(last) = self.last_time
            && time > last
        {
            self.rate = 1.0 / (time - last);
        }
        self.last_time = Some(time);
        let speed = self
            .value
            .last
            .map_or(0.0, |last| (value - last) * self.rate);
        let speed = self.speed.filter(speed, self.alpha(self.params.d_cutoff));
        let cutoff = self.params.min_cutoff + self.params.beta * speed.abs();
        self.value.filter(value, self.alpha(cutoff))
    }

    /// The smoothing weight of a cutoff at the current rate.
    fn alpha(&self, cutoff: f64) -> f64 {
        let tau = 1.0 / (2.0 * PI * cutoff);
        1.0 / (1.0 + tau * self.rate)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_constant_passes_unchanged_and_the_first_sample_is_kept() {
        let params = OneEuroParams::checked(1.0, 0.5, 1.0).unwrap();
        let mut filter = OneEuroFilter::new(params, 30.0);
        for step in 0..50 {
            assert_eq!(filter.filter(3.25, 1.0 + f64::from(step) / 30.0), 3.25);
        }
    }

    #[test]
    fn parameters_out_of_range_are_refused() {
        assert!(OneEuroParams::checked(0.0, 0.0, 1.0).is_err());
        assert!(OneEuroParams::checked(1.0, -1.0, 1.0).is_err());
        assert!(OneEuroParams::checked(1.0, 0.0, f64::NAN).is_err());
        assert!(OneEuroParams::checked(1.0, 0.0, 1.0).is_ok());
    }
}
