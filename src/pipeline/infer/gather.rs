//! Batches across streams, as nvstreammux makes them: each stream's current frame, streams
//! served round-robin (each batch starts one stream further on, so a fast camera cannot starve
//! a slow one), up to `max_batch` inputs, waiting at most `timeout` for the streams not in the
//! batch yet once it has a frame. A stream whose post stage has no room is left out, so
//! handing a batch on never blocks on one stream's slow consumer.

use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Select, TryRecvError};

use crate::pipeline::links::StreamPort;
use crate::pipeline::work::Work;

/// How often a wait looks again at streams whose post stage was full.
const ROOM_POLL: Duration = Duration::from_millis(2);

/// One stream's frame in a batch.
pub(in crate::pipeline) struct Entry {
    /// The stream's place in [`Gatherer`]'s ports while the batch is out.
    port: usize,
    pub(in crate::pipeline) work: Work,
}

pub(in crate::pipeline) struct Gatherer {
    ports: Vec<Port>,
    joining: Receiver<StreamPort>,
    /// False once no stream can join any more.
    open: bool,
    /// Where the next batch starts.
    next: usize,
    max_batch: usize,
    timeout: Duration,
}

struct Port {
    port: StreamPort,
    /// Its preprocess or post stage is gone: dropped before the next batch.
    ended: bool,
}

/// What a wait saw.
enum Waited {
    /// Something may be ready (a frame, a stream joining, a stream ending).
    Ready,
    TimedOut,
    /// No stream left and none can join.
    Over,
}

impl Entry {
    pub(in crate::pipeline) fn port_index(&self) -> usize {
        self.port
    }
}

impl Gatherer {
    pub(in crate::pipeline) fn new(
        joining: Receiver<StreamPort>,
        max_batch: usize,
        timeout: Duration,
    ) -> Self {
        Gatherer {
            ports: Vec::new(),
            joining,
            open: true,
            next: 0,
            max_batch: max_batch.max(1),
            timeout,
        }
    }

    /// The next batch; `None` once every stream has ended and none can join.
    pub(in crate::pipeline) fn next_batch(&mut self) -> Option<Vec<Entry>> {
        let mut batch: Vec<Entry> = Vec::new();
        let mut inputs = 0;
        let mut deadline = None;
        loop {
            self.take_joining();
            self.take_ready(&mut batch, &mut inputs);
            if batch.is_empty() {
                // No entry points into the ports: an ended stream's post stage is let go now.
                self.ports.retain(|p| !p.ended);
            }
            let all_in = self.waiting_ports(&batch).next().is_none();
            if inputs >= self.max_batch || (!batch.is_empty() && all_in) {
                break;
            }
            let deadline = (!batch.is_empty())
                .then(|| *deadline.get_or_insert_with(|| Instant::now() + self.timeout));
            match self.wait(&batch, deadline) {
                Waited::Over => return None,
                Waited::TimedOut if deadline.is_some_and(|d| Instant::now() >= d) => break,
                Waited::Ready | Waited::TimedOut => {}
            }
        }
        self.next = (self.next + 1) % self.ports.len().max(1);
        Some(batch)
    }

    /// Hands each frame of the batch on to its stream's post stage.
    pub(in crate::pipeline) fn dispatch(&mut self, batch: Vec<Entry>) {
        for Entry { port, work } in batch {
            let port = &mut self.ports[port];
            // Room was there when the frame was taken, and only this stage sends.
            if port.port.inferred.try_send(work).is_err() {
                port.ended = true;
            }
        }
    }

    /// The stream of an entry's [`Entry::port_index`], with its pools.
    pub(in crate::pipeline) fn port_of(&self, index: usize) -> &StreamPort {
        &self.ports[index].port
    }

    fn take_joining(&mut self) {
        loop {
            match self.joining.try_recv() {
                Ok(port) => self.ports.push(Port { port, ended: false }),
                Err(TryRecvError::Empty) => return,
                Err(TryRecvError::Disconnected) => {
                    self.open = false;
                    return;
                }
            }
        }
    }

    /// Ports that may still give the batch a frame, in round-robin order from `next`.
    fn waiting_ports<'a>(&'a self, batch: &'a [Entry]) -> impl Iterator<Item = usize> + 'a {
        let count = self.ports.len();
        (0..count)
            .map(move |offset| (self.next + offset) % count)
            .filter(move |&i| !self.ports[i].ended && !batch.iter().any(|e| e.port == i))
    }

    /// Takes the frames that are ready, a stream at a time, counting the inputs they bring.
    fn take_ready(&mut self, batch: &mut Vec<Entry>, inputs: &mut usize) {
        let candidates: Vec<usize> = self.waiting_ports(batch).collect();
        for index in candidates {
            if *inputs >= self.max_batch {
                break;
            }
            let port = &mut self.ports[index];
            if port.port.inferred.is_full() {
                continue;
            }
            match port.port.prepared.try_recv() {
                Ok(work) => {
                    *inputs += work.batch_inputs();
                    batch.push(Entry { port: index, work });
                }
                Err(TryRecvError::Empty) => {}
                Err(TryRecvError::Disconnected) => port.ended = true,
            }
        }
    }

    /// Waits until a stream not in the batch may have a frame, a stream joins, or `deadline`.
    fn wait(&self, batch: &[Entry], deadline: Option<Instant>) -> Waited {
        let mut select = Select::new();
        let mut blocked = false;
        let mut watched = 0;
        for index in self.waiting_ports(batch) {
            let port = &self.ports[index].port;
            if port.inferred.is_full() {
                blocked = true;
            } else {
                select.recv(&port.prepared);
                watched += 1;
            }
        }
        if self.open {
            select.recv(&self.joining);
            watched += 1;
        }
        if watched == 0 && !blocked && batch.is_empty() {
            return Waited::Over;
        }
        let poll = blocked.then(|| Instant::now() + ROOM_POLL);
        let until = match (deadline, poll) {
            (Some(d), Some(p)) => Some(d.min(p)),
            (d, p) => d.or(p),
        };
        if watched == 0 {
            if let Some(until) = until {
                std::thread::sleep(until.saturating_duration_since(Instant::now()));
            }
            return Waited::TimedOut;
        }
        let ready = match until {
            Some(until) => select.ready_deadline(until).ok(),
            None => Some(select.ready()),
        };
        match ready {
            Some(_) => Waited::Ready,
            None => Waited::TimedOut,
        }
    }
}
