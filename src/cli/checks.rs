//! The accepted values of the flags that take numbers, checked where they are parsed: by clap
//! on the command line ([`parser`]) and by [`RunArgs::check`](super::run_args::RunArgs) for a
//! preset's values, with the same words.

use std::fmt::Display;
use std::ops::RangeInclusive;
use std::str::FromStr;

/// More ONNX Runtime threads than this only add contention (the threads are real OS threads).
pub const MAX_THREADS: usize = 256;
/// Person crops per call: the TensorRT profile's largest batch, and far past any GPU's sweet spot.
pub const MAX_BATCH: usize = 256;
/// Still images faster than this are no video.
pub const MAX_IMAGE_FPS: u32 = 1000;

/// A check of a parsed value: the value, or what is accepted.
pub type Check<T> = fn(T) -> Result<T, String>;

/// clap's value parser for a flag: parse as `T`, then `check`.
pub fn parser<T>(check: Check<T>) -> impl Fn(&str) -> Result<T, String> + Clone + Send + Sync
where
    T: FromStr,
    T::Err: Display,
{
    move |text| check(text.parse().map_err(|e| format!("{e}"))?)
}

pub fn threads(threads: usize) -> Result<usize, String> {
    within(
        threads,
        0..=MAX_THREADS,
        &format!("0 (every core) to {MAX_THREADS}"),
    )
}

pub fn max_batch(batch: usize) -> Result<usize, String> {
    within(batch, 1..=MAX_BATCH, &format!("1 to {MAX_BATCH}"))
}

/// `--batch-timeout-ms`: up to a second.
/// Model instances per GPU in a Triton repository.
pub fn instances(count: usize) -> Result<usize, String> {
    within(count, 1..=64, "1 to 64")
}

pub fn batch_timeout_ms(milliseconds: u64) -> Result<u64, String> {
    within(milliseconds, 0..=1000, "0 to 1000")
}

/// Scores, thresholds and IoUs: a number from 0 to 1.
pub fn unit_interval(value: f32) -> Result<f32, String> {
    within(value, 0.0..=1.0, "a number from 0 to 1")
}

pub fn image_fps(fps: u32) -> Result<u32, String> {
    within(fps, 1..=MAX_IMAGE_FPS, &format!("1 to {MAX_IMAGE_FPS}"))
}

/// A count of frames: at least one.
pub fn frames(frames: u64) -> Result<u64, String> {
    if frames >= 1 {
        Ok(frames)
    } else {
        Err("must be at least 1".into())
    }
}

pub fn mqtt_qos(qos: u8) -> Result<u8, String> {
    within(qos, 0..=1, "0 or 1")
}

/// `value` when `range` holds it (never NaN), else what is accepted.
fn within<T: PartialOrd + Display>(
    value: T,
    range: RangeInclusive<T>,
    accepted: &str,
) -> Result<T, String> {
    if range.contains(&value) {
        Ok(value)
    } else {
        Err(format!("must be {accepted}, not {value}"))
    }
}

/// A wait: a positive, finite number of seconds.
pub fn seconds(seconds: f64) -> Result<f64, String> {
    let positive = std::time::Duration::try_from_secs_f64(seconds).is_ok_and(|d| !d.is_zero());
    if positive {
        Ok(seconds)
    } else {
        Err(format!(
            "must be a positive number of seconds, not {seconds}"
        ))
    }
}

/// A frequency in Hz: positive and finite.
pub fn hertz(value: f64) -> Result<f64, String> {
    if value.is_finite() && value > 0.0 {
        Ok(value)
    } else {
        Err(format!("must be a positive number of Hz, not {value}"))
    }
}

/// A finite number, zero or more.
pub fn non_negative(value: f64) -> Result<f64, String> {
    if value.is_finite() && value >= 0.0 {
        Ok(value)
    } else {
        Err(format!("must be a number >= 0, not {value}"))
    }
}

/// A preset's value through the flag's check; the error names the key.
pub fn preset_value<T: Copy>(key: &str, value: Option<T>, check: Check<T>) -> Result<(), String> {
    match value.map(check) {
        Some(Err(reason)) => Err(format!("{key}: {reason}")),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_outside_their_range_are_refused_with_the_range() {
        assert_eq!(parser(threads)("0"), Ok(0));
        assert_eq!(
            parser(threads)("100000"),
            Err("must be 0 (every core) to 256, not 100000".into())
        );
        assert_eq!(
            parser(max_batch)("0"),
            Err("must be 1 to 256, not 0".into())
        );
        assert_eq!(parser(max_batch)("8"), Ok(8));
        assert!(
            parser(unit_interval)("nan")
                .unwrap_err()
                .contains("from 0 to 1")
        );
        assert!(parser(unit_interval)("-0.1").is_err());
        assert!(parser(unit_interval)("inf").is_err());
        assert_eq!(parser(unit_interval)("0.3"), Ok(0.3));
        assert!(parser(seconds)("0").is_err());
        assert!(parser(seconds)("nan").is_err());
        assert!(parser(seconds)("-1").is_err());
        assert_eq!(parser(seconds)("2.5"), Ok(2.5));
        assert!(parser(mqtt_qos)("2").is_err());
        assert!(parser(hertz)("0").is_err());
        assert!(parser(hertz)("inf").is_err());
        assert_eq!(parser(hertz)("1.5"), Ok(1.5));
        assert!(parser(non_negative)("-0.5").is_err());
        assert_eq!(parser(non_negative)("0"), Ok(0.0));
        assert!(parser(frames)("0").is_err());
        assert!(parser(image_fps)("0").is_err());
        assert!(
            parser(threads)("many")
                .unwrap_err()
                .contains("invalid digit")
        );
    }

    #[test]
    fn a_preset_value_names_its_key() {
        assert_eq!(
            preset_value("max-batch", Some(0), max_batch),
            Err("max-batch: must be 1 to 256, not 0".into())
        );
        assert_eq!(preset_value("max-batch", None, max_batch), Ok(()));
    }
}
