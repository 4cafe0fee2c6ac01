//! Per-stage latency and frame counters. Each stage thread owns its [`StageStats`] and hands it
//! back when it ends, so recording costs no locking.

use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

/// Latencies of one stage, in microseconds.
pub struct StageStats {
    pub name: &'static str,
    histogram: Histogram<u64>,
}

impl StageStats {
    pub fn new(name: &'static str) -> Self {
        StageStats {
            name,
            // Up to an hour; saturating_record clamps anything longer.
            histogram: Histogram::new_with_bounds(1, 3_600_000_000, 3)
                .expect("valid histogram bounds and precision"),
        }
    }

    pub fn record(&mut self, elapsed: Duration) {
        self.histogram.saturating_record(elapsed.as_micros() as u64);
    }

    /// Runs `f` and records how long it took.
    pub fn time<R>(&mut self, f: impl FnOnce() -> R) -> R {
        let start = Instant::now();
        let result = f();
        self.record(start.elapsed());
        result
    }

    pub fn count(&self) -> u64 {
        self.histogram.len()
    }

    /// Latency at quantile `q` (0..1) in milliseconds.
    pub fn quantile_ms(&self, q: f64) -> f64 {
        self.histogram.value_at_quantile(q) as f64 / 1000.0
    }
}

/// What a run did, printed at its end.
pub struct RunReport {
    pub frames_in: u64,
    pub frames_out: u64,
    pub frames_dropped: u64,
    pub elapsed: Duration,
    pub stages: Vec<StageStats>,
}

impl RunReport {
    pub fn fps(&self) -> f64 {
        self.frames_out as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    pub fn summary(&self) -> String {
        let mut text = format!(
            "frames in {}, out {}, dropped {}; {:.1} s, {:.2} fps\n",
            self.frames_in,
            self.frames_out,
            self.frames_dropped,
            self.elapsed.as_secs_f64(),
            self.fps()
        );
        text.push_str("stage         p50 ms   p90 ms   p99 ms   frames\n");
        for stage in &self.stages {
            text.push_str(&format!(
                "{:<12} {:>7.2}  {:>7.2}  {:>7.2}  {:>7}\n",
                stage.name,
                stage.quantile_ms(0.5),
                stage.quantile_ms(0.9),
                stage.quantile_ms(0.99),
                stage.count()
            ));
        }
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_in_milliseconds() {
        let mut stats = StageStats::new("x");
        for ms in 1..=100 {
            stats.record(Duration::from_millis(ms));
        }
        assert_eq!(stats.count(), 100);
        assert!(
            (stats.quantile_ms(0.5) - 50.0).abs() < 0.1,
            "{}",
            stats.quantile_ms(0.5)
        );
        assert!((stats.quantile_ms(0.99) - 99.0).abs() < 0.1);
    }
}
