//! Fan-out of JSON messages (one per processed frame) from the pipeline to network clients.
//!
//! The pipeline calls [`ResultsHub::publish`] from its own (non-async) thread; the call only
//! appends to each client's bounded queue and never waits on the network. A client that reads
//! too slowly loses its *oldest* queued messages: the count is kept per client and the client is
//! told with a [`DROPPED_SCHEMA`] message placed where the gap is, so it always gets the newest
//! results and a slow client never slows the pipeline or the other clients.
//!
//! Stream status messages ([`super::STATUS_SCHEMA`]) go to every client like results, and the
//! hub keeps the latest one per stream: a client that connects later gets it first, so a page
//! opened while the camera is down knows at once (what a retained MQTT message does).
//!
//! A client may follow one stream ([`ResultsHub::subscribe_to`]): it then gets that stream's
//! messages only (and those of no stream).

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use axum::extract::ws::Utf8Bytes;
use tokio::sync::Notify;

use super::{Published, PublishedStatus, PublishedTrack, Publisher};
use crate::error::Result;
use crate::metrics::Metrics;

/// Messages queued per client before the oldest are dropped.
pub const DEFAULT_CLIENT_QUEUE: usize = 64;
/// `schema` of the message that reports dropped messages: `{"schema":..,"version":1,"count":N}`.
pub const DROPPED_SCHEMA: &str = "sapiens-stream/dropped";
/// Name of WebSocket clients in the `publisher_drops` metric.
const PUBLISHER: &str = "websocket";

/// What a client is sent next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outgoing {
    /// This many messages were dropped right before the next one.
    Dropped(u64),
    Message(Utf8Bytes),
}

impl Outgoing {
    /// The text sent over the wire.
    pub fn text(&self) -> Utf8Bytes {
        match self {
            Outgoing::Dropped(count) => {
                format!(r#"{{"schema":"{DROPPED_SCHEMA}","version":1,"count":{count}}}"#).into()
            }
            Outgoing::Message(text) => text.clone(),
        }
    }
}

/// Locks a mutex whose data stays consistent even if a holder panicked (plain pushes and pops).
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

#[derive(Default)]
struct Queue {
    messages: VecDeque<Utf8Bytes>,
    /// Dropped since the last message taken; reported before the next one.
    dropped: u64,
}

/// One client's bounded queue.
struct ClientQueue {
    queue: Mutex<Queue>,
    ready: Notify,
    capacity: usize,
    /// The one stream the client follows; `None`: every stream.
    stream: Option<String>,
}

impl ClientQueue {
    /// Whether a message of `stream` (`None`: of no stream) is for this client.
    fn follows(&self, stream: Option<&str>) -> bool {
        match (&self.stream, stream) {
            (Some(followed), Some(stream)) => followed == stream,
            _ => true,
        }
    }

    /// Appends `message`, dropping the oldest when full; returns whether one was dropped.
    fn push(&self, message: &Utf8Bytes) -> bool {
        let mut queue = lock(&self.queue);
        let full = queue.messages.len() >= self.capacity;
        if full {
            queue.messages.pop_front();
            queue.dropped += 1;
        }
        queue.messages.push_back(message.clone());
        drop(queue);
        self.ready.notify_one();
        full
    }

    fn pop(&self) -> Option<Outgoing> {
        let mut queue = lock(&self.queue);
        if queue.dropped > 0 {
            return Some(Outgoing::Dropped(std::mem::take(&mut queue.dropped)));
        }
        queue.messages.pop_front().map(Outgoing::Message)
    }
}

/// The subscribed clients and the latest status per stream, under one lock so that a client
/// subscribing while a status is published gets it exactly once.
#[derive(Default)]
struct Clients {
    queues: Vec<Arc<ClientQueue>>,
    /// Per stream index: its name and latest status.
    status: BTreeMap<u32, (String, Utf8Bytes)>,
}

/// Distributes published messages to every subscribed client.
pub struct ResultsHub {
    clients: Mutex<Clients>,
    capacity: usize,
    metrics: Arc<Metrics>,
}

impl ResultsHub {
    /// A hub whose clients queue at most `capacity` messages each (at least 1); drops are counted
    /// in `metrics` as `publisher_drops{publisher="websocket"}`.
    pub fn new(capacity: usize, metrics: Arc<Metrics>) -> Self {
        ResultsHub {
            clients: Mutex::new(Clients::default()),
            capacity: capacity.max(1),
            metrics,
        }
    }

    /// Queues `json` (one JSON text, e.g. a serialized `FrameResult`) for every client; never
    /// blocks on the network. The text is copied once, then shared by all clients.
    pub fn publish(&self, json: &str) {
        self.publish_event(None, json);
    }

    /// Queues a stream status message (JSON) for every client of the stream, like
    /// [`ResultsHub::publish`], and keeps it as the stream's current status for clients that
    /// subscribe later.
    pub fn publish_status(&self, stream: u32, name: &str, json: &str) {
        let message = Utf8Bytes::from(json);
        let mut clients = lock(&self.clients);
        clients
            .status
            .insert(stream, (name.to_owned(), message.clone()));
        self.push_to_all(&clients, &message, Some(name));
    }

    /// A message of stream `stream` (`None`: of none) every client of it gets once (not kept
    /// for clients that join later).
    pub fn publish_event(&self, stream: Option<&str>, json: &str) {
        let clients = lock(&self.clients);
        self.push_to_all(&clients, &Utf8Bytes::from(json), stream);
    }

    fn push_to_all(&self, clients: &Clients, message: &Utf8Bytes, stream: Option<&str>) {
        let dropped = clients
            .queues
            .iter()
            .filter(|client| client.follows(stream) && client.push(message))
            .count();
        if dropped > 0 {
            self.metrics.publisher_drops(PUBLISHER, dropped as u64);
        }
    }

    /// A [`Publisher`] feeding this hub, for the pipeline's list of publishers.
    pub fn publisher(self: &Arc<Self>) -> WebSocketPublisher {
        WebSocketPublisher(Arc::clone(self))
    }

    /// Clients subscribed now.
    pub fn client_count(&self) -> usize {
        lock(&self.clients).queues.len()
    }

    /// Registers a client; it receives the current status of each stream that has one, then what
    /// is published from now on until the subscription is dropped.
    pub fn subscribe(self: &Arc<Self>) -> Subscription {
        self.subscribe_to(None)
    }

    /// Like [`ResultsHub::subscribe`], for the messages of one stream (by name) only.
    pub fn subscribe_to(self: &Arc<Self>, stream: Option<String>) -> Subscription {
        let client = Arc::new(ClientQueue {
            queue: Mutex::new(Queue::default()),
            ready: Notify::new(),
            capacity: self.capacity,
            stream,
        });
        let mut clients = lock(&self.clients);
        for (name, status) in clients.status.values() {
            if client.follows(Some(name)) {
                client.push(status);
            }
        }
        clients.queues.push(Arc::clone(&client));
        drop(clients);
        Subscription {
            hub: Arc::clone(self),
            client,
        }
    }
}

/// The hub as one of the pipeline's publishers (see [`ResultsHub::publisher`]).
pub struct WebSocketPublisher(Arc<ResultsHub>);

impl Publisher for WebSocketPublisher {
    fn name(&self) -> &'static str {
        PUBLISHER
    }

    fn publish(&mut self, frame: &Published) -> Result<()> {
        let stream = Some(frame.result.stream_name.as_str());
        self.0.publish_event(stream, &frame.json);
        Ok(())
    }

    fn publish_status(&mut self, status: &PublishedStatus) -> Result<()> {
        let message = status.message;
        self.0
            .publish_status(message.stream, &message.stream_name, &status.json);
        Ok(())
    }

    fn publish_track(&mut self, track: &PublishedTrack) -> Result<()> {
        let stream = Some(track.message.stream_name.as_str());
        self.0.publish_event(stream, &track.json);
        Ok(())
    }

    /// Nothing to do here: [`super::server::NetworkServer::shutdown`] sends the clients what is
    /// queued and closes them.
    fn finish(self: Box<Self>) -> Result<()> {
        Ok(())
    }
}

/// A client's view of the hub; unsubscribes when dropped.
pub struct Subscription {
    hub: Arc<ResultsHub>,
    client: Arc<ClientQueue>,
}

impl Subscription {
    /// The next thing to send, waiting until there is one.
    pub async fn next(&self) -> Outgoing {
        loop {
            if let Some(outgoing) = self.client.pop() {
                return outgoing;
            }
            // A push between pop and here leaves a permit, so this wakes at once.
            self.client.ready.notified().await;
        }
    }

    /// The next thing to send, if any is queued.
    pub fn try_next(&self) -> Option<Outgoing> {
        self.client.pop()
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        lock(&self.hub.clients)
            .queues
            .retain(|client| !Arc::ptr_eq(client, &self.client));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json(i: u32) -> String {
        format!("{{\"frame\":{i}}}")
    }

    fn message(i: u32) -> Outgoing {
        Outgoing::Message(json(i).into())
    }

    #[test]
    fn a_full_queue_drops_its_oldest_and_reports_the_gap() {
        let metrics = Arc::new(Metrics::new());
        let hub = Arc::new(ResultsHub::new(3, Arc::clone(&metrics)));
        let slow = hub.subscribe();
        let fast = hub.subscribe();
        hub.publish(&json(0));
        assert_eq!(fast.try_next(), Some(message(0)));
        for i in 1..=5 {
            hub.publish(&json(i));
            assert_eq!(fast.try_next(), Some(message(i)));
        }
        // slow holds 3 of 0..=5: 3, 4, 5, after a gap of 3.
        assert_eq!(slow.try_next(), Some(Outgoing::Dropped(3)));
        for i in 3..=5 {
            assert_eq!(slow.try_next(), Some(message(i)));
        }
        assert_eq!(slow.try_next(), None);
        assert_eq!(fast.try_next(), None);
        assert!(
            metrics
                .encode()
                .contains("sapiens_publisher_drops_total{publisher=\"websocket\"} 3")
        );
        assert_eq!(
            &*Outgoing::Dropped(3).text(),
            r#"{"schema":"sapiens-stream/dropped","version":1,"count":3}"#
        );
    }

    #[test]
    fn a_client_of_one_stream_gets_its_messages_only() {
        let hub = Arc::new(ResultsHub::new(8, Arc::new(Metrics::new())));
        hub.publish_status(1, "door", r#"{"door":"down"}"#);
        hub.publish_status(0, "hall", r#"{"hall":"down"}"#);
        let door = hub.subscribe_to(Some("door".into()));
        let every = hub.subscribe();
        hub.publish_event(Some("hall"), &json(1));
        hub.publish_event(Some("door"), &json(2));
        hub.publish(&json(3));
        let taken = |s: &Subscription| std::iter::from_fn(|| s.try_next()).collect::<Vec<_>>();
        let text = |t: &str| Outgoing::Message(t.into());
        assert_eq!(
            taken(&door),
            [text(r#"{"door":"down"}"#), message(2), message(3)]
        );
        assert_eq!(
            taken(&every),
            [
                text(r#"{"hall":"down"}"#),
                text(r#"{"door":"down"}"#),
                message(1),
                message(2),
                message(3)
            ]
        );
    }

    #[test]
    fn dropping_a_subscription_unsubscribes() {
        let hub = Arc::new(ResultsHub::new(4, Arc::new(Metrics::new())));
        let first = hub.subscribe();
        let second = hub.subscribe();
        assert_eq!(hub.client_count(), 2);
        drop(first);
        assert_eq!(hub.client_count(), 1);
        hub.publish(&json(7));
        assert_eq!(second.try_next(), Some(message(7)));
    }

    #[test]
    fn status_goes_to_every_client_and_the_latest_to_later_ones() {
        let hub = Arc::new(ResultsHub::new(4, Arc::new(Metrics::new())));
        let early = hub.subscribe();
        let (down, up) = (r#"{"status":"down"}"#, r#"{"status":"up"}"#);
        hub.publish_status(0, "stream0", down);
        hub.publish(&json(1));
        let during = hub.subscribe();
        hub.publish_status(0, "stream0", up);
        hub.publish(&json(2));
        let after = hub.subscribe();
        let text = |outgoing: Option<Outgoing>| outgoing.map(|o| o.text().to_string());
        let drain = |client: &Subscription| {
            std::iter::from_fn(|| text(client.try_next())).collect::<Vec<_>>()
        };
        assert_eq!(drain(&early), [down, &json(1), up, &json(2)]);
        assert_eq!(drain(&during), [down, up, &json(2)]);
        assert_eq!(drain(&after), [up]);
    }
}
