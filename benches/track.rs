//! The tracker's cost per frame: 50 people walking (17 keypoints each), boxes jittered, with
//! and without One Euro smoothing.
//!
//! Run: `cargo bench --bench track`.

use criterion::{Criterion, criterion_group, criterion_main};
use sapiens_stream::tasks::pose::Person;
use sapiens_stream::tasks::track::one_euro::OneEuroParams;
use sapiens_stream::tasks::track::{Tracker, TrackerOptions};

const PEOPLE: usize = 50;

/// Frame `k`'s persons: a 10 x 5 grid of people drifting, each with 17 keypoints in its box.
fn scene(k: usize) -> Vec<Person> {
    (0..PEOPLE)
        .map(|i| {
            let wobble = ((k * 7 + i * 13) % 5) as f32 - 2.0;
            let x = 40.0 + 185.0 * (i % 10) as f32 + 0.8 * k as f32 + wobble;
            let y = 60.0 + 200.0 * (i / 10) as f32 + 0.3 * k as f32;
            let keypoints = (0..17)
                .map(|j| [x + 5.0 + 3.0 * j as f32, y + 10.0 * j as f32, 0.8])
                .collect();
            Person {
                bbox: [x, y, x + 60.0, y + 170.0],
                score: 0.9,
                track_id: None,
                keypoints,
                keypoints_raw: None,
            }
        })
        .collect()
}

fn bench_tracker(c: &mut Criterion, name: &str, options: TrackerOptions) {
    c.bench_function(name, |b| {
        let mut tracker = Tracker::new(options, 1080);
        let mut k = 0;
        // The scene keeps moving on (made outside the timing), as a stream does.
        b.iter_batched(
            || {
                k += 1;
                (k, scene(k))
            },
            |(k, mut persons)| tracker.update(k as f64 / 30.0, &mut persons),
            criterion::BatchSize::SmallInput,
        )
    });
}

fn tracker(c: &mut Criterion) {
    bench_tracker(c, "track_50_people", TrackerOptions::default());
    let smoothing = TrackerOptions {
        smoothing: Some(OneEuroParams::WEBCAM),
        ..TrackerOptions::default()
    };
    bench_tracker(c, "track_and_smooth_50_people", smoothing);
}

criterion_group!(benches, tracker);
criterion_main!(benches);
