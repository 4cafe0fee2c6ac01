//! The streams of a run: started from the command line or over HTTP (`/streams`), stopped
//! when their input ends, when asked, or when the run stops; each one's outcome kept for the
//! run's report. Stream indexes are never reused.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use crossbeam_channel::Sender;

use super::config::{Scheduling, StreamSpec, check_stream_name, name_in_use};
use super::links::StreamPort;
use super::stream::{RunShared, StreamHandle, StreamOutcome, run_ending};
use crate::error::{Error, Result};
use crate::publish::server::{StreamControl, StreamControlError, StreamEntry, StreamRequest};
use crate::sink::OutputSpec;
use crate::source::InputSpec;

/// How often the run looks for streams that ended and for its stop flag.
const REAP_EVERY: Duration = Duration::from_millis(50);

pub(super) struct Streams {
    shared: Arc<RunShared>,
    state: Mutex<Registry>,
    changed: Condvar,
}

struct Registry {
    running: Vec<StreamHandle>,
    /// Names of streams being opened.
    starting: Vec<String>,
    next_index: u32,
    /// Where streams join the inference stage; `None` once the run ends.
    joining: Option<Sender<StreamPort>>,
    ended: Vec<StreamOutcome>,
}

impl Streams {
    pub(super) fn new(shared: Arc<RunShared>, joining: Sender<StreamPort>) -> Self {
        Streams {
            shared,
            state: Mutex::new(Registry {
                running: Vec::new(),
                starting: Vec::new(),
                next_index: 0,
                joining: Some(joining),
                ended: Vec::new(),
            }),
            changed: Condvar::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Registry> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Starts a stream under a free name; its index is the next one.
    pub(super) fn start(&self, spec: &StreamSpec) -> std::result::Result<StreamEntry, Refused> {
        let (index, joining) = {
            let mut registry = self.lock();
            let taken = registry.running.iter().any(|s| s.id.name == spec.name)
                || registry.starting.contains(&spec.name);
            if taken {
                return Err(Refused::InUse);
            }
            let joining = registry.joining.clone().ok_or(Refused::Closed)?;
            registry.starting.push(spec.name.clone());
            let index = registry.next_index;
            registry.next_index += 1;
            (index, joining)
        };
        // Opening waits for the first frame: the registry stays free meanwhile.
        let started = StreamHandle::start(&self.shared, spec, index, &joining);
        let mut registry = self.lock();
        registry.starting.retain(|name| *name != spec.name);
        let handle = started.map_err(Refused::Failed)?;
        tracing::info!(stream = %spec.name, index, input = %handle.input, "stream started");
        let entry = entry(&handle);
        registry.running.push(handle);
        drop(registry);
        self.changed.notify_all();
        Ok(entry)
    }

    /// Stops the stream and waits until its outputs are finished; false for an unknown name.
    pub(super) fn stop(&self, name: &str) -> bool {
        let handle = {
            let mut registry = self.lock();
            let Some(position) = registry.running.iter().position(|s| s.id.name == name) else {
                return false;
            };
            registry.running.remove(position)
        };
        handle.stop();
        let outcome = self.ended(handle);
        self.lock().ended.push(outcome);
        self.changed.notify_all();
        true
    }

    /// Frames the streams started so far will deliver in all (each up to `max_frames`), when
    /// each knows.
    pub(super) fn expected_frames(&self, max_frames: Option<u64>) -> Option<u64> {
        let each = |expected: Option<u64>| match (expected, max_frames) {
            (Some(expected), Some(max)) => Some(expected.min(max)),
            (expected, max) => expected.or(max),
        };
        self.lock()
            .running
            .iter()
            .map(|s| each(s.expected_frames))
            .sum::<Option<u64>>()
            .filter(|total| *total > 0)
    }

    /// Runs until every stream has ended; with `keep_open` (a run that waits for streams over
    /// HTTP), until `stop` is set. Once `stop` is set, every stream is stopped.
    pub(super) fn wait(&self, stop: &AtomicBool, keep_open: bool) {
        let mut registry = self.lock();
        loop {
            let stopping = stop.load(Ordering::Relaxed);
            if stopping {
                registry.running.iter().for_each(StreamHandle::stop);
            }
            let (done, running): (Vec<_>, Vec<_>) = std::mem::take(&mut registry.running)
                .into_iter()
                .partition(StreamHandle::is_finished);
            registry.running = running;
            let outcomes: Vec<_> = done.into_iter().map(|h| self.ended(h)).collect();
            registry.ended.extend(outcomes);
            let idle = registry.running.is_empty() && registry.starting.is_empty();
            if idle && (stopping || !keep_open) {
                return;
            }
            registry = self
                .changed
                .wait_timeout(registry, REAP_EVERY)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }

    /// Ends the run's streams: no stream may join any more, those still running are stopped;
    /// what each stream did.
    pub(super) fn close(&self) -> Vec<StreamOutcome> {
        let running = {
            let mut registry = self.lock();
            registry.joining = None;
            // A stream still opening joins the others before they are stopped.
            while !registry.starting.is_empty() {
                registry = self
                    .changed
                    .wait_timeout(registry, REAP_EVERY)
                    .unwrap_or_else(PoisonError::into_inner)
                    .0;
            }
            std::mem::take(&mut registry.running)
        };
        running.iter().for_each(StreamHandle::stop);
        let outcomes: Vec<_> = running.into_iter().map(|h| self.ended(h)).collect();
        let mut registry = self.lock();
        registry.ended.extend(outcomes);
        std::mem::take(&mut registry.ended)
    }

    /// A stream's outcome once its threads are over; with other streams, its error is logged
    /// now (a run of one stream ends with it).
    fn ended(&self, handle: StreamHandle) -> StreamOutcome {
        let outcome = handle.join();
        tracing::info!(stream = %outcome.name, frames = outcome.frames_out, "stream ended");
        if let Some(error) = outcome
            .error
            .as_ref()
            .filter(|_| self.shared.config.splits_per_stream())
        {
            tracing::error!("stream {}: {error}", outcome.name);
        }
        outcome
    }

    fn list(&self) -> Vec<StreamEntry> {
        self.lock().running.iter().map(entry).collect()
    }
}

/// Why a stream did not start.
pub(super) enum Refused {
    InUse,
    Closed,
    Failed(Error),
}

impl Refused {
    /// As the command line reports it.
    pub(super) fn into_error(self, name: &str) -> Error {
        match self {
            Refused::InUse => name_in_use(name),
            Refused::Closed => run_ending(name),
            Refused::Failed(error) => error,
        }
    }
}

fn entry(handle: &StreamHandle) -> StreamEntry {
    let counters = &handle.counters;
    StreamEntry {
        name: handle.id.name.clone(),
        stream: handle.id.index,
        input: handle.input.clone(),
        up: counters.up.load(Ordering::Relaxed),
        frames: counters.frames.load(Ordering::Relaxed),
        dropped: counters.dropped.load(Ordering::Relaxed),
    }
}

impl StreamControl for Streams {
    fn list(&self) -> Vec<StreamEntry> {
        Streams::list(self)
    }

    fn add(&self, request: StreamRequest) -> std::result::Result<StreamEntry, StreamControlError> {
        let spec = stream_spec(&request).map_err(|e| StreamControlError::Invalid(e.to_string()))?;
        self.start(&spec).map_err(|refused| match refused {
            Refused::InUse => StreamControlError::InUse(request.name.clone()),
            Refused::Closed => StreamControlError::Closed,
            Refused::Failed(error) => StreamControlError::Invalid(error.to_string()),
        })
    }

    fn remove(&self, name: &str) -> std::result::Result<(), StreamControlError> {
        if self.stop(name) {
            Ok(())
        } else {
            Err(StreamControlError::Unknown(name.to_owned()))
        }
    }
}

/// A `POST /streams` body as a stream: a well-formed name, an input, its own output if any.
fn stream_spec(request: &StreamRequest) -> Result<StreamSpec> {
    check_stream_name(&request.name)?;
    let input = InputSpec::parse(&request.input)?;
    let outputs = request
        .output
        .as_deref()
        .map(|output| OutputSpec::parse(output).map(|o| vec![o.for_stream(&request.name)]))
        .transpose()?;
    Ok(StreamSpec {
        name: request.name.clone(),
        scheduling: Scheduling::default_for(&input),
        input,
        outputs,
        reconnect: None,
    })
}
