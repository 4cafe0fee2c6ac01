//! Measurements, two ways:
//!
//! - [`StageStats`]: per-stage latency histograms that each stage thread owns and hands back when
//!   it ends, so recording costs no locking; the end-of-run summary ([`RunReport`]) is made of them.
//! - [`Metrics`]: one shared registry (`Arc<Metrics>`) for the live view, served as `/metrics` in
//!   the Prometheus/OpenMetrics text format. Every method takes `&self` and is cheap (an atomic add
//!   or a short lock), so any thread may call it once per frame:
//!
//! | call                                  | when                                                       |
//! |---------------------------------------|------------------------------------------------------------|
//! | `frame_in(stream)`                    | the source delivered a frame                               |
//! | `frame_dropped(stream)`               | live mode threw a frame away before inference              |
//! | `frame_out(stream)`                   | a frame's results were published (also marks the run ready) |
//! | `stage_latency(stage, elapsed)`       | a stage finished a frame (automatic through [`StageStats::reporting_to`]) |
//! | `name_stream(stream, name)`           | a stream started: its series are labelled `stream="NAME"`  |
//! | `capture_to_publish(stream, elapsed)` | a result was published, measured from the frame's capture  |
//! | `batch_size(model, items)`            | an inference call of a model ran on `items` inputs         |
//! | `inference_error(model)`              | a remote model's server did not answer: the frame dropped, not ready |
//! | `inference_recovered()`               | the remote server answered again after an error            |
//! | `reconnect(stream)`                   | a source reconnected after it was lost                     |
//! | `stream_up(stream, up)`               | a source opened (up), went down, or came back              |
//! | `tracks(stream, held, confirmed)`     | the tracker ran on a frame: tracks held, newly confirmed    |
//! | `publisher_drops(publisher, count)`   | a publisher (websocket, mqtt, osc...) dropped messages     |
//! | `track_publisher(name, counters)`     | once per publisher that keeps its own [`PublisherCounters`] |
//!
//! Exposed series (prefix `sapiens_`): `frames_in_total`, `frames_out_total`,
//! `frames_dropped_total` and `reconnects_total` (label `stream`, the stream's name), `stream_up`
//! (gauge, 1 while the stream delivers frames, 0 while it is down and reconnecting; label
//! `stream`), `stage_latency_seconds` (histogram, label `stage`), `capture_to_publish_seconds`
//! (histogram, label `stream`), `inference_batch_size` (histogram of the inputs per call, label
//! `model`: the task), `inference_errors_total` (frames a remote model's server did not answer for,
//! label `model`), `publisher_drops_total` and `publisher_reconnects_total` (label `publisher`);
//! with tracking, `tracks` (gauge: confirmed tracks held, the people present) and
//! `tracks_confirmed_total` (people seen so far), label `stream`.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram as HdrHistogram;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Content type of [`Metrics::encode`]'s output.
pub const METRICS_CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StreamLabel {
    stream: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ModelLabel {
    model: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StageLabel {
    stage: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PublisherLabel {
    publisher: &'static str,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// Latency buckets: 0.25 ms doubling up to about 8 s.
fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.000_25, 2.0, 16))
}

/// Batch-size buckets: 1 doubling up to 128.
fn batch_histogram() -> Histogram {
    Histogram::new(exponential_buckets(1.0, 2.0, 8))
}

/// The live, shared counters and histograms of a run; see the module docs for the API.
pub struct Metrics {
    registry: Registry,
    frames_in: Family<StreamLabel, Counter>,
    frames_out: Family<StreamLabel, Counter>,
    frames_dropped: Family<StreamLabel, Counter>,
    reconnects: Family<StreamLabel, Counter>,
    stream_up: Family<StreamLabel, Gauge>,
    tracks: Family<StreamLabel, Gauge>,
    tracks_confirmed: Family<StreamLabel, Counter>,
    stage_latency: HistogramFamily<StageLabel>,
    capture_to_publish: HistogramFamily<StreamLabel>,
    batch_size: HistogramFamily<ModelLabel>,
    /// Each model's calls and inputs, for the run report.
    model_calls: Mutex<Vec<ModelCalls>>,
    inference_errors: Family<ModelLabel, Counter>,
    /// Stream index -> name, for the labels.
    names: Mutex<std::collections::HashMap<u32, String>>,
    publisher_drops: Family<PublisherLabel, Counter>,
    publisher_reconnects: Family<PublisherLabel, Counter>,
    tracked: Mutex<Vec<TrackedPublisher>>,
    ready: AtomicBool,
    /// A remote model's server stopped answering and has not answered since.
    remote_down: AtomicBool,
}

/// A publisher's own counters and how much of them the metrics already hold.
struct TrackedPublisher {
    name: &'static str,
    counters: Arc<PublisherCounters>,
    drops_seen: u64,
    reconnects_seen: u64,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("sapiens");
        let frames_in = Family::default();
        let frames_out = Family::default();
        let frames_dropped = Family::default();
        let reconnects = Family::default();
        let stream_up = Family::default();
        let tracks = Family::default();
        let tracks_confirmed = Family::default();
        let stage_latency =
            HistogramFamily::new_with_constructor(latency_histogram as fn() -> Histogram);
        let capture_to_publish =
            HistogramFamily::new_with_constructor(latency_histogram as fn() -> Histogram);
        let batch_size =
            HistogramFamily::new_with_constructor(batch_histogram as fn() -> Histogram);
        let publisher_drops = Family::default();
        let publisher_reconnects = Family::default();
        let inference_errors = Family::default();
        registry.register(
            "frames_in",
            "Frames delivered by the source",
            frames_in.clone(),
        );
        registry.register(
            "frames_out",
            "Frames whose results were published",
            frames_out.clone(),
        );
        registry.register(
            "frames_dropped",
            "Frames dropped before inference (live mode)",
            frames_dropped.clone(),
        );
        registry.register(
            "reconnects",
            "Times a lost source came back",
            reconnects.clone(),
        );
        registry.register(
            "stream_up",
            "1 while the stream delivers frames, 0 while it is down and reconnecting",
            stream_up.clone(),
        );
        registry.register(
            "tracks",
            "Confirmed tracks held: the people present (with tracking)",
            tracks.clone(),
        );
        registry.register(
            "tracks_confirmed",
            "Tracks confirmed so far: the people seen (with tracking)",
            tracks_confirmed.clone(),
        );
        registry.register(
            "stage_latency_seconds",
            "Time a pipeline stage spent on one frame",
            stage_latency.clone(),
        );
        registry.register(
            "capture_to_publish_seconds",
            "Time from a frame's capture to the publication of its results",
            capture_to_publish.clone(),
        );
        registry.register(
            "inference_batch_size",
            "Inputs per inference call",
            batch_size.clone(),
        );
        registry.register(
            "inference_errors",
            "Frames dropped because a remote model's server did not answer (live mode)",
            inference_errors.clone(),
        );
        registry.register(
            "publisher_drops",
            "Messages a publisher dropped (slow client, full queue)",
            publisher_drops.clone(),
        );
        registry.register(
            "publisher_reconnects",
            "Times a publisher re-established its connection",
            publisher_reconnects.clone(),
        );
        Metrics {
            registry,
            frames_in,
            frames_out,
            frames_dropped,
            reconnects,
            stream_up,
            tracks,
            tracks_confirmed,
            stage_latency,
            capture_to_publish,
            batch_size,
            inference_errors,
            publisher_drops,
            publisher_reconnects,
            names: Mutex::new(std::collections::HashMap::new()),
            tracked: Mutex::new(Vec::new()),
            ready: AtomicBool::new(false),
            remote_down: AtomicBool::new(false),
            model_calls: Mutex::new(Vec::new()),
        }
    }

    /// Labels the series of stream `stream` with `name` (else `stream<index>`).
    pub fn name_stream(&self, stream: u32, name: &str) {
        self.names
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(stream, name.to_owned());
    }

    fn label(&self, stream: u32) -> StreamLabel {
        let names = self.names.lock().unwrap_or_else(PoisonError::into_inner);
        StreamLabel {
            stream: names
                .get(&stream)
                .cloned()
                .unwrap_or_else(|| format!("stream{stream}")),
        }
    }

    pub fn frame_in(&self, stream: u32) {
        self.frames_in.get_or_create(&self.label(stream)).inc();
    }

    pub fn frame_dropped(&self, stream: u32) {
        self.frames_dropped.get_or_create(&self.label(stream)).inc();
    }

    /// Counts a published frame; the first one makes the run ready (`/ready`).
    pub fn frame_out(&self, stream: u32) {
        self.frames_out.get_or_create(&self.label(stream)).inc();
        self.ready.store(true, Ordering::Relaxed);
    }

    pub fn reconnect(&self, stream: u32) {
        self.reconnects.get_or_create(&self.label(stream)).inc();
    }

    pub fn stream_up(&self, stream: u32, up: bool) {
        self.stream_up
            .get_or_create(&self.label(stream))
            .set(i64::from(up));
    }

    /// After the tracker ran on a frame: the confirmed tracks it holds, and how many it just
    /// confirmed.
    pub fn tracks(&self, stream: u32, held: usize, confirmed: usize) {
        let label = self.label(stream);
        self.tracks.get_or_create(&label).set(held as i64);
        self.tracks_confirmed
            .get_or_create(&label)
            .inc_by(confirmed as u64);
    }

    pub fn stage_latency(&self, stage: &'static str, elapsed: Duration) {
        self.stage_latency
            .get_or_create(&StageLabel { stage })
            .observe(elapsed.as_secs_f64());
    }

    pub fn capture_to_publish(&self, stream: u32, elapsed: Duration) {
        self.capture_to_publish
            .get_or_create(&self.label(stream))
            .observe(elapsed.as_secs_f64());
    }

    /// An inference call of `model` (its task) ran on `items` inputs.
    pub fn batch_size(&self, model: &'static str, items: usize) {
        self.batch_size
            .get_or_create(&ModelLabel { model })
            .observe(items as f64);
        let mut calls = self
            .model_calls
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        match calls.iter_mut().find(|c| c.model == model) {
            Some(counted) => {
                counted.calls += 1;
                counted.inputs += items as u64;
            }
            None => calls.push(ModelCalls {
                model,
                calls: 1,
                inputs: items as u64,
            }),
        }
    }

    /// Each model's calls and inputs so far, in the order the models first ran.
    pub fn model_calls(&self) -> Vec<ModelCalls> {
        self.model_calls
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    pub fn publisher_drops(&self, publisher: &'static str, count: u64) {
        self.publisher_drops
            .get_or_create(&PublisherLabel { publisher })
            .inc_by(count);
    }

    /// Reads `counters` (drops, reconnects) into the `publisher` series at every [`encode`].
    ///
    /// [`encode`]: Metrics::encode
    pub fn track_publisher(&self, name: &'static str, counters: Arc<PublisherCounters>) {
        self.tracked
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(TrackedPublisher {
                name,
                counters,
                drops_seen: 0,
                reconnects_seen: 0,
            });
    }

    fn sync_tracked_publishers(&self) {
        let mut tracked = self.tracked.lock().unwrap_or_else(PoisonError::into_inner);
        for publisher in tracked.iter_mut() {
            let label = PublisherLabel {
                publisher: publisher.name,
            };
            let drops = publisher.counters.dropped();
            self.publisher_drops
                .get_or_create(&label)
                .inc_by(drops.saturating_sub(publisher.drops_seen));
            publisher.drops_seen = drops;
            let reconnects = publisher.counters.reconnects();
            self.publisher_reconnects
                .get_or_create(&label)
                .inc_by(reconnects.saturating_sub(publisher.reconnects_seen));
            publisher.reconnects_seen = reconnects;
        }
    }

    /// A remote model's server did not answer for a frame of `model` (a task name): the run
    /// is not ready until it answers again.
    pub fn inference_error(&self, model: &'static str) {
        self.inference_errors
            .get_or_create(&ModelLabel { model })
            .inc();
        self.remote_down.store(true, Ordering::Relaxed);
    }

    /// The remote server answered again.
    pub fn inference_recovered(&self) {
        self.remote_down.store(false, Ordering::Relaxed);
    }

    /// True once a frame was published, while every remote model's server answers.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed) && !self.remote_down.load(Ordering::Relaxed)
    }

    /// Every series in the OpenMetrics text format (which Prometheus scrapes), ending in `# EOF`.
    pub fn encode(&self) -> String {
        self.sync_tracked_publishers();
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)
            .expect("writing to a String cannot fail");
        text
    }
}

/// Latencies of one stage, in microseconds.
pub struct StageStats {
    pub name: &'static str,
    histogram: HdrHistogram<u64>,
    shared: Option<Arc<Metrics>>,
}

impl StageStats {
    pub fn new(name: &'static str) -> Self {
        StageStats {
            name,
            // Up to an hour; saturating_record clamps anything longer.
            histogram: HdrHistogram::new_with_bounds(1, 3_600_000_000, 3)
                .expect("valid histogram bounds and precision"),
            shared: None,
        }
    }

    /// Also records every latency into `metrics` (as `stage_latency(name, ..)`).
    pub fn reporting_to(mut self, metrics: &Arc<Metrics>) -> Self {
        self.shared = Some(Arc::clone(metrics));
        self
    }

    pub fn record(&mut self, elapsed: Duration) {
        self.histogram.saturating_record(elapsed.as_micros() as u64);
        if let Some(metrics) = &self.shared {
            metrics.stage_latency(self.name, elapsed);
        }
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

    /// Adds `other`'s latencies (the same stage on another stream).
    pub fn merge(&mut self, other: &StageStats) {
        // Both histograms have the same bounds, so adding cannot fail.
        let _ = self.histogram.add(&other.histogram);
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
    /// Each stream's figures, in the order the streams ended.
    pub streams: Vec<StreamReport>,
    /// Each model's calls and inputs: how well the batches filled.
    pub model_calls: Vec<ModelCalls>,
}

/// How many calls a model (named by its task) ran, on how many inputs (crops or frames).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModelCalls {
    pub model: &'static str,
    pub calls: u64,
    pub inputs: u64,
}

/// What one stream of a run did.
pub struct StreamReport {
    pub name: String,
    pub frames_in: u64,
    pub frames_out: u64,
    pub frames_dropped: u64,
    /// Decoded to published.
    pub latency: StageStats,
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
        if !self.model_calls.is_empty() {
            text.push_str("model           calls   inputs  per call\n");
            for model in &self.model_calls {
                text.push_str(&format!(
                    "{:<12} {:>8} {:>8}  {:>8.2}\n",
                    model.model,
                    model.calls,
                    model.inputs,
                    model.inputs as f64 / model.calls.max(1) as f64
                ));
            }
        }
        if self.streams.len() > 1 {
            text.push_str("stream        frames in      out  dropped  latency p50 ms   p99 ms\n");
            for stream in &self.streams {
                text.push_str(&format!(
                    "{:<12} {:>10} {:>8} {:>8}  {:>14.2} {:>8.2}\n",
                    stream.name,
                    stream.frames_in,
                    stream.frames_out,
                    stream.frames_dropped,
                    stream.latency.quantile_ms(0.5),
                    stream.latency.quantile_ms(0.99),
                ));
            }
        }
        text
    }
}

/// What a network publisher did, counted in frames; shared with the metrics exporter.
#[derive(Debug, Default)]
pub struct PublisherCounters {
    published: AtomicU64,
    dropped: AtomicU64,
    reconnects: AtomicU64,
}

impl PublisherCounters {
    /// Frames handed to the publisher.
    pub fn published(&self) -> u64 {
        self.published.load(Ordering::Relaxed)
    }

    /// Frames lost before leaving this process: queue overflow, send errors.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Connections re-established after a loss.
    pub fn reconnects(&self) -> u64 {
        self.reconnects.load(Ordering::Relaxed)
    }

    pub(crate) fn count_published(&self) {
        self.published.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn count_dropped(&self) {
        self.count_dropped_many(1);
    }

    pub(crate) fn count_dropped_many(&self, frames: u64) {
        self.dropped.fetch_add(frames, Ordering::Relaxed);
    }

    pub(crate) fn count_reconnect(&self) {
        self.reconnects.fetch_add(1, Ordering::Relaxed);
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

    #[test]
    fn stream_up_is_a_gauge_per_stream() {
        let metrics = Metrics::new();
        metrics.stream_up(0, true);
        assert!(
            metrics
                .encode()
                .contains("sapiens_stream_up{stream=\"stream0\"} 1\n")
        );
        metrics.name_stream(1, "door");
        metrics.stream_up(1, true);
        metrics.stream_up(0, false);
        let text = metrics.encode();
        assert!(text.contains("# TYPE sapiens_stream_up gauge"), "{text}");
        for line in [
            "sapiens_stream_up{stream=\"stream0\"} 0",
            "sapiens_stream_up{stream=\"door\"} 1",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} not in {text}");
        }
    }

    #[test]
    fn tracks_are_a_gauge_and_a_counter_per_stream() {
        let metrics = Metrics::new();
        metrics.tracks(0, 2, 2);
        metrics.tracks(0, 1, 0);
        metrics.tracks(3, 4, 1);
        let text = metrics.encode();
        for line in [
            "sapiens_tracks{stream=\"stream0\"} 1",
            "sapiens_tracks_confirmed_total{stream=\"stream0\"} 2",
            "sapiens_tracks{stream=\"stream3\"} 4",
            "sapiens_tracks_confirmed_total{stream=\"stream3\"} 1",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} not in {text}");
        }
    }

    #[test]
    fn stage_stats_feed_the_shared_metrics() {
        let metrics = Arc::new(Metrics::new());
        let mut stats = StageStats::new("preprocess").reporting_to(&metrics);
        stats.record(Duration::from_millis(3));
        stats.record(Duration::from_millis(5));
        let text = metrics.encode();
        assert!(
            text.contains("sapiens_stage_latency_seconds_count{stage=\"preprocess\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("sapiens_stage_latency_seconds_sum{stage=\"preprocess\"} 0.008"),
            "{text}"
        );
    }
}
