//! How stages hand frames on: bounded links (blocking, or latest-wins in live mode) and pools
//! that recycle the large buffers between them.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crossbeam_channel::{Receiver, Sender, TrySendError, bounded};

use super::config::Scheduling;
use super::work::Work;
use crate::frame::Frame;
use crate::metrics::Metrics;

/// Frames waiting between two stages; small, so latency and memory stay bounded.
pub(super) const CHANNEL_DEPTH: usize = 2;

/// Recycles large f32 buffers between stages.
#[derive(Clone)]
pub(super) struct Pool {
    give: Sender<Vec<f32>>,
    take: Receiver<Vec<f32>>,
}

impl Pool {
    pub(super) fn new(capacity: usize) -> Self {
        let (give, take) = bounded(capacity);
        Pool { give, take }
    }

    /// A buffer of `len` elements; its contents are stale and must be overwritten.
    pub(super) fn get(&self, len: usize) -> Vec<f32> {
        let mut buffer = self.take.try_recv().unwrap_or_default();
        buffer.resize(len, 0.0);
        buffer
    }

    /// Takes a buffer back as it is: its next user overwrites it, so it is not cleared (a
    /// model input is 9 MiB to zero per frame).
    pub(super) fn put(&self, buffer: Vec<f32>) {
        let _ = self.give.try_send(buffer);
    }
}

/// The link between two stages: blocking (backpressure), or latest-wins, where a full link drops
/// its oldest item to make room so the consumer always gets the newest.
pub(super) struct Handoff<T> {
    send: Sender<T>,
    /// The sender's own view of the queue, to take out the stale item; `None` when blocking.
    stale: Option<Receiver<T>>,
    /// Where the stream's drops are counted.
    drops: Drops,
}

impl<T> Handoff<T> {
    fn blocking(capacity: usize, drops: &Drops) -> (Self, Receiver<T>) {
        let (send, receive) = bounded(capacity);
        let drops = drops.clone();
        (
            Handoff {
                send,
                stale: None,
                drops,
            },
            receive,
        )
    }

    fn latest_wins(drops: &Drops) -> (Self, Receiver<T>) {
        let (send, receive) = bounded(1);
        let stale = Some(receive.clone());
        let drops = drops.clone();
        (Handoff { send, stale, drops }, receive)
    }

    /// Counts a frame of this stream dropped on its way.
    pub(super) fn count_drop(&self) {
        self.drops.count();
    }

    /// False once the consumer has gone.
    pub(super) fn send(&self, item: T) -> bool {
        let Some(stale) = &self.stale else {
            return self.send.send(item).is_ok();
        };
        let mut item = item;
        loop {
            match self.send.try_send(item) {
                Ok(()) => return true,
                Err(TrySendError::Disconnected(_)) => return false,
                Err(TrySendError::Full(back)) => {
                    if stale.try_recv().is_ok() {
                        self.count_drop();
                    }
                    item = back;
                }
            }
        }
    }
}

/// Live: the decoder's newest frame waits for preprocessing, which hands over only when inference
/// is free (a rendezvous), so a frame waits at most one inference. Offline: backpressure throughout.
pub(super) type Link<T> = (Handoff<T>, Receiver<T>);

/// Where a stream's live drops are counted.
#[derive(Clone)]
pub(super) struct Drops {
    pub(super) stream: u32,
    pub(super) dropped: Arc<AtomicU64>,
    pub(super) metrics: Arc<Metrics>,
}

impl Drops {
    /// Counts a dropped frame (the run report's and `/metrics`').
    pub(super) fn count(&self) {
        self.dropped.fetch_add(1, Ordering::Relaxed);
        self.metrics.frame_dropped(self.stream);
    }
}

/// A stage's view of a remote model's server being away (live runs, whose frames it drops
/// meanwhile): one warning when it goes, the run's readiness given back when it answers again.
pub(super) struct RemoteOutage {
    metrics: Arc<Metrics>,
    away: bool,
}

impl RemoteOutage {
    pub(super) fn new(metrics: &Arc<Metrics>) -> Self {
        RemoteOutage {
            metrics: metrics.clone(),
            away: false,
        }
    }

    /// The stage's models answered.
    pub(super) fn answered(&mut self) {
        if std::mem::take(&mut self.away) {
            self.metrics.inference_recovered();
        }
    }

    /// `frames` frames of `task` got no answer from `model`: counted as inference errors.
    pub(super) fn unanswered(
        &mut self,
        model: &str,
        message: &str,
        task: &'static str,
        frames: usize,
    ) {
        if !self.away {
            tracing::warn!("{model}: {message}; dropping frames until it answers");
        }
        self.away = true;
        for _ in 0..frames {
            self.metrics.inference_error(task);
        }
    }
}

pub(super) fn stage_links(scheduling: Scheduling, drops: &Drops) -> (Link<Frame>, Link<Work>) {
    match scheduling {
        Scheduling::Live => (Handoff::latest_wins(drops), Handoff::blocking(0, drops)),
        Scheduling::Offline => (
            Handoff::blocking(CHANNEL_DEPTH, drops),
            Handoff::blocking(CHANNEL_DEPTH, drops),
        ),
    }
}

/// A stream as the shared inference stage sees it: where its prepared frames come from, where
/// they go on, and the pools of its buffers.
pub(super) struct StreamPort {
    pub(super) prepared: Receiver<Work>,
    pub(super) inferred: Sender<Work>,
    pub(super) input_pool: Pool,
    pub(super) output_pool: Pool,
    /// Where the frames the stage drops are counted.
    pub(super) drops: Drops,
}
