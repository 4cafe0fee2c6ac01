//! MQTT (`--mqtt mqtt://host[:port]/topic`): each frame's result JSON (the results-file schema)
//! is published to `topic` at QoS 0 or 1 (`--mqtt-qos`), for analytics back ends.
//!
//! - Never blocks the pipeline: results wait in a bounded queue (256 by default). When the broker
//!   is slow or away and the queue is full, the **oldest** queued result is dropped and counted,
//!   so that once the broker is back it receives the most recent results.
//! - Reconnects on its own: after a lost or refused connection it retries with exponential
//!   backoff (100 ms doubling, capped at 5 s by default) for as long as the program runs.
//! - `<topic>/status` holds a retained `online` while connected and a retained `offline`
//!   otherwise: published at a clean shutdown, and by the broker (last will) when the connection
//!   is lost.
//! - `<topic>/stream` holds the live input's status ([`super::STATUS_SCHEMA`] JSON: `down` with
//!   its reason, `up` when it is back), retained at QoS 1 so that a subscriber that connects
//!   during an outage learns it at once. Cleared when the publisher starts (a retained message
//!   from an earlier run would be stale): no retained status means the stream has not gone down
//!   in this run. Status messages wait in a small queue of their own, so results never push them
//!   out.
//! - `<topic>/track` gets the track events ([`super::TRACK_SCHEMA`] JSON, with `--track` or
//!   `--smooth`) at QoS 1, not retained, from a queue of their own.
//! - With several streams (`per_stream`), each has topics of its own: `<topic>/<NAME>` for its
//!   results, `<topic>/<NAME>/stream` and `<topic>/<NAME>/track`; `<topic>/status` stays the
//!   connection's. A stream's retained status is cleared before its first message.
//! - QoS 1 keeps the broker session (clean session off), so results in flight when a connection
//!   drops are sent again on reconnect if the broker kept the session: give a stable client id
//!   (`sapiens-stream-<pid>` by default). A broker that restarted without persistence lost the
//!   session; the results in flight then are counted as dropped.
//! - Shutdown flushes: the queued results and `offline` are sent, then a DISCONNECT, which the
//!   broker handles after everything before it; this waits at most 5 s (by default) for a broker
//!   that is away, then reports the results still queued as lost.
//!
//! rumqttc's synchronous client does the protocol; two threads drive it: one moves results from
//! the queue into the client, one polls the connection and reconnects.

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TrySendError, select};
use rumqttc::{Client, Connection, Event, LastWill, MqttOptions, Outgoing, Packet, QoS, Request};
use tracing::{info, warn};

use super::{Published, PublishedStatus, PublishedTrack, Publisher};
use crate::error::{Error, Result};
use crate::metrics::PublisherCounters;

const DEFAULT_PORT: u16 = 1883;
/// Larger results are dropped (and counted) rather than sent: a broker rejects packets past its
/// limit by closing the connection, which would stall every result behind it.
const MAX_PAYLOAD_LEN: usize = 8 << 20;
/// Room for the topic and the packet header above the payload.
const MAX_PACKET_OVERHEAD: usize = 64 << 10;
const FIRST_RETRY_DELAY: Duration = Duration::from_millis(100);
const KEEP_ALIVE: Duration = Duration::from_secs(15);
/// Requests between the feeding thread and the connection; the real buffering is the queue.
const CLIENT_CHANNEL_CAPACITY: usize = 10;
/// Status changes waiting for the broker: a few per outage, so this holds minutes of flapping.
const STATUS_QUEUE_CAPACITY: usize = 16;
/// Track events waiting for the broker; the oldest are dropped (and counted) beyond this.
const TRACK_QUEUE_CAPACITY: usize = 1024;

/// The quality of service results are published with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MqttQos {
    /// QoS 0: sent once, lost if the connection drops meanwhile.
    AtMostOnce,
    /// QoS 1: acknowledged by the broker, sent again until it is.
    AtLeastOnce,
}

impl MqttQos {
    /// `0` or `1`, as given to `--mqtt-qos`.
    pub fn from_level(level: u8) -> Result<Self> {
        match level {
            0 => Ok(MqttQos::AtMostOnce),
            1 => Ok(MqttQos::AtLeastOnce),
            _ => Err(Error::Publish {
                target: "MQTT".into(),
                message: format!("QoS {level} is not supported; use 0 or 1"),
            }),
        }
    }

    fn level(self) -> QoS {
        match self {
            MqttQos::AtMostOnce => QoS::AtMostOnce,
            MqttQos::AtLeastOnce => QoS::AtLeastOnce,
        }
    }
}

/// Where and how to publish; [`MqttConfig::from_url`] fills in the defaults.
#[derive(Clone, Debug, PartialEq)]
pub struct MqttConfig {
    /// Host name or address; an IPv6 address keeps its brackets.
    pub host: String,
    pub port: u16,
    pub topic: String,
    pub qos: MqttQos,
    pub client_id: String,
    /// Results waiting for the broker before the oldest is dropped.
    pub queue_capacity: usize,
    pub max_reconnect_delay: Duration,
    /// How long [`Publisher::finish`] waits for the broker to take the last results.
    pub flush_timeout: Duration,
    /// Topics per stream (`<topic>/<NAME>/...`), for runs of several streams.
    pub per_stream: bool,
}

impl MqttConfig {
    /// Parses `mqtt://host[:port]/topic` (port 1883 by default; the topic may contain `/`).
    pub fn from_url(url: &str) -> Result<Self> {
        let invalid = |why: &str| Error::Publish {
            target: url.to_string(),
            message: format!("{why}; expected mqtt://host[:port]/topic"),
        };
        let rest = url
            .strip_prefix("mqtt://")
            .ok_or_else(|| invalid("not an mqtt:// URL"))?;
        let (authority, topic) = rest.split_once('/').ok_or_else(|| invalid("no topic"))?;
        if topic.is_empty() {
            return Err(invalid("no topic"));
        }
        if authority.contains('@') {
            return Err(invalid("credentials in the URL are not supported"));
        }
        let (host, port) = split_host_port(authority).ok_or_else(|| invalid("bad host or port"))?;
        let config = MqttConfig {
            host: host.to_string(),
            port: port.unwrap_or(DEFAULT_PORT),
            topic: topic.to_string(),
            qos: MqttQos::AtMostOnce,
            client_id: format!("sapiens-stream-{}", std::process::id()),
            queue_capacity: 256,
            max_reconnect_delay: Duration::from_secs(5),
            flush_timeout: Duration::from_secs(5),
            per_stream: false,
        };
        config.validate()?;
        Ok(config)
    }

    /// What the client would otherwise reject later, or panic on.
    fn validate(&self) -> Result<()> {
        let invalid = |message: &str| Error::Publish {
            target: self.describe(),
            message: message.to_string(),
        };
        if self.topic.is_empty() {
            return Err(invalid("the topic is empty"));
        }
        if self.topic.contains(['+', '#']) {
            return Err(invalid("the wildcards + and # cannot be published to"));
        }
        if self.client_id.is_empty() {
            return Err(invalid("the client id is empty"));
        }
        Ok(())
    }

    /// Where a stream's results go: `<topic>`, or `<topic>/<NAME>` per stream.
    pub fn results_topic(&self, stream: &str) -> String {
        match self.per_stream {
            true => format!("{}/{stream}", self.topic),
            false => self.topic.clone(),
        }
    }

    /// Where a stream's retained status goes: `<topic>/stream`, or `<topic>/<NAME>/stream`.
    pub fn stream_status_topic(&self, stream: &str) -> String {
        format!("{}/stream", self.results_topic(stream))
    }

    /// Where a stream's track events go: `<topic>/track`, or `<topic>/<NAME>/track`.
    pub fn stream_track_topic(&self, stream: &str) -> String {
        format!("{}/track", self.results_topic(stream))
    }

    /// `<topic>/status`: retained `online` / `offline` (the connection to the broker).
    pub fn status_topic(&self) -> String {
        format!("{}/status", self.topic)
    }

    /// `<topic>/track`: the track events.
    pub fn track_topic(&self) -> String {
        format!("{}/track", self.topic)
    }

    /// `<topic>/stream`: the retained status of the live input (down / up).
    pub fn stream_topic(&self) -> String {
        format!("{}/stream", self.topic)
    }

    fn describe(&self) -> String {
        format!("mqtt://{}:{}/{}", self.host, self.port, self.topic)
    }

    fn options(&self) -> MqttOptions {
        let mut options = MqttOptions::new(&self.client_id, &self.host, self.port);
        options
            .set_keep_alive(KEEP_ALIVE)
            .set_clean_session(self.qos == MqttQos::AtMostOnce)
            .set_max_packet_size(10 << 10, MAX_PAYLOAD_LEN + MAX_PACKET_OVERHEAD)
            .set_last_will(LastWill::new(
                self.status_topic(),
                "offline",
                QoS::AtLeastOnce,
                true,
            ));
        options
    }
}

/// `host`, `host:port`, `[v6]` or `[v6]:port`.
fn split_host_port(authority: &str) -> Option<(&str, Option<u16>)> {
    let (host, port) = if authority.starts_with('[') {
        let (host, rest) = authority.split_at(authority.find(']')? + 1);
        match rest {
            "" => (host, None),
            _ => (host, Some(rest.strip_prefix(':')?)),
        }
    } else {
        match authority.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        }
    };
    if host.is_empty() || host == "[]" {
        return None;
    }
    let port = match port {
        Some(port) => Some(port.parse().ok().filter(|&p: &u16| p != 0)?),
        None => None,
    };
    Some((host, port))
}

/// A message for the broker: its topic and payload.
type Message = (String, Vec<u8>);

/// A bounded queue whose sender drops the oldest message when it is full.
struct DropOldest {
    queue: Sender<Message>,
    /// The queue's other end, to drop the oldest message.
    oldest: Receiver<Message>,
}

impl DropOldest {
    /// The queue and the receiver the feeder takes messages from.
    fn new(capacity: usize) -> (Self, Receiver<Message>) {
        let (queue, oldest) = crossbeam_channel::bounded(capacity.max(1));
        let receiver = oldest.clone();
        (DropOldest { queue, oldest }, receiver)
    }

    /// Queues `payload`; returns how many older messages were dropped for it.
    fn push(&self, mut payload: Message) -> u64 {
        let mut dropped = 0;
        loop {
            match self.queue.try_send(payload) {
                Ok(()) => return dropped,
                Err(TrySendError::Full(back)) => {
                    if self.oldest.try_recv().is_ok() {
                        dropped += 1;
                    }
                    payload = back;
                }
                Err(TrySendError::Disconnected(_)) => {
                    unreachable!("this queue holds a receiver of its own")
                }
            }
        }
    }
}

/// Publishes results to an MQTT broker without ever blocking the caller.
pub struct MqttPublisher {
    results: DropOldest,
    statuses: DropOldest,
    tracks: DropOldest,
    counters: Arc<PublisherCounters>,
    /// Closed by the connection thread when it ends; a message first if it ended flushed.
    flushed: Receiver<()>,
    /// Dropped to make the connection thread give up retrying.
    abandon: Sender<()>,
    threads: [JoinHandle<()>; 2],
    target: String,
    flush_timeout: Duration,
    warned_oversize: bool,
    config: MqttConfig,
    /// Streams whose retained status was cleared (per stream).
    cleared: std::collections::HashSet<String>,
}

impl MqttPublisher {
    /// Starts the client; the broker may be away, it is retried in the background.
    pub fn start(config: &MqttConfig) -> Result<Self> {
        config.validate()?;
        let (client, connection) = Client::new(config.options(), CLIENT_CHANNEL_CAPACITY);
        let (results, queued) = DropOldest::new(config.queue_capacity);
        let (statuses, statuses_queued) = DropOldest::new(STATUS_QUEUE_CAPACITY);
        let (tracks, tracks_queued) = DropOldest::new(TRACK_QUEUE_CAPACITY);
        // An empty retained message deletes the one an earlier run may have left (per stream:
        // before the stream's first message).
        if !config.per_stream {
            statuses.push((config.stream_topic(), Vec::new()));
        }
        let (flushed_tx, flushed) = crossbeam_channel::bounded(1);
        let (abandon, abandoned) = crossbeam_channel::bounded(0);
        let counters = Arc::<PublisherCounters>::default();
        let feeder = Feeder {
            client,
            status_topic: config.status_topic(),
            qos: config.qos.level(),
        };
        let driver = Driver {
            target: config.describe(),
            topic: config.topic.clone(),
            per_stream: config.per_stream,
            status_topic: config.status_topic(),
            counters: Arc::clone(&counters),
            max_delay: config.max_reconnect_delay.max(FIRST_RETRY_DELAY),
            abandoned,
            flushed: flushed_tx,
        };
        let spawn_error = |e| Error::io("starting an MQTT thread", e);
        let connection_thread = std::thread::Builder::new()
            .name("mqtt-connection".into())
            .spawn(move || driver.run(connection))
            .map_err(spawn_error)?;
        let feed_thread = std::thread::Builder::new()
            .name("mqtt-feed".into())
            .spawn(move || feeder.run(queued, statuses_queued, tracks_queued))
            .map_err(spawn_error)?;
        Ok(MqttPublisher {
            results,
            statuses,
            tracks,
            counters,
            flushed,
            abandon,
            threads: [feed_thread, connection_thread],
            target: config.describe(),
            flush_timeout: config.flush_timeout,
            warned_oversize: false,
            config: config.clone(),
            cleared: std::collections::HashSet::new(),
        })
    }

    /// Per stream, clears the stream's retained status before its first message.
    fn first_of(&mut self, stream: &str) {
        if self.config.per_stream && self.cleared.insert(stream.to_owned()) {
            let topic = self.config.stream_status_topic(stream);
            let dropped = self.statuses.push((topic, Vec::new()));
            self.counters.count_dropped_many(dropped);
        }
    }

    pub fn counters(&self) -> Arc<PublisherCounters> {
        Arc::clone(&self.counters)
    }
}

impl Publisher for MqttPublisher {
    fn name(&self) -> &'static str {
        "mqtt"
    }

    fn publish(&mut self, frame: &Published) -> Result<()> {
        self.counters.count_published();
        if frame.json.len() > MAX_PAYLOAD_LEN {
            self.counters.count_dropped();
            if !self.warned_oversize {
                warn!(
                    "{}: results over {MAX_PAYLOAD_LEN} bytes are not sent",
                    self.target
                );
                self.warned_oversize = true;
            }
            return Ok(());
        }
        let stream = &frame.result.stream_name;
        self.first_of(stream);
        let topic = self.config.results_topic(stream);
        let dropped = self.results.push((topic, frame.json.as_bytes().to_vec()));
        self.counters.count_dropped_many(dropped);
        Ok(())
    }

    fn publish_status(&mut self, status: &PublishedStatus) -> Result<()> {
        let stream = &status.message.stream_name;
        self.first_of(stream);
        let topic = self.config.stream_status_topic(stream);
        let dropped = self.statuses.push((topic, status.json.as_bytes().to_vec()));
        self.counters.count_dropped_many(dropped);
        Ok(())
    }

    fn publish_track(&mut self, track: &PublishedTrack) -> Result<()> {
        let stream = &track.message.stream_name;
        self.first_of(stream);
        let topic = self.config.stream_track_topic(stream);
        let dropped = self.tracks.push((topic, track.json.as_bytes().to_vec()));
        self.counters.count_dropped_many(dropped);
        Ok(())
    }

    fn finish(self: Box<Self>) -> Result<()> {
        let MqttPublisher {
            results,
            statuses,
            tracks,
            flushed,
            abandon,
            threads,
            target,
            flush_timeout,
            ..
        } = *self;
        // Closing the queues lets the feeder send what is left, then `offline` and DISCONNECT.
        let still_queued = results.oldest.clone();
        drop((results, statuses, tracks));
        match flushed.recv_timeout(flush_timeout) {
            Ok(()) => {
                for thread in threads {
                    thread.join().map_err(|_| Error::Publish {
                        target: target.clone(),
                        message: "an MQTT thread panicked".into(),
                    })?;
                }
                Ok(())
            }
            Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => {
                // The threads end on their own once the connection thread sees `abandon` closed.
                drop(abandon);
                Err(Error::Publish {
                    target,
                    message: format!(
                        "the broker did not take the last results (waited up to {flush_timeout:?}); {} results still queued are lost",
                        still_queued.len()
                    ),
                })
            }
        }
    }
}

/// Moves results and stream statuses from their queues into the client; blocks while the
/// connection is busy or away.
struct Feeder {
    client: Client,
    status_topic: String,
    qos: QoS,
}

impl Feeder {
    fn run(
        self,
        results: Receiver<Message>,
        mut statuses: Receiver<Message>,
        mut tracks: Receiver<Message>,
    ) {
        loop {
            // An error means the connection thread is gone (abandoned): nothing can be sent.
            let sent = select! {
                recv(statuses) -> status => match status {
                    Ok(message) => self.publish_event(message, Retained::Yes),
                    // Closed just before the results in `finish`; what it held was taken.
                    Err(_) => {
                        statuses = crossbeam_channel::never();
                        Ok(())
                    }
                },
                recv(tracks) -> track => match track {
                    Ok(message) => self.publish_event(message, Retained::No),
                    Err(_) => {
                        tracks = crossbeam_channel::never();
                        Ok(())
                    }
                },
                recv(results) -> result => match result {
                    Ok((topic, payload)) => self.client.publish(topic, self.qos, false, payload),
                    Err(_) => break,
                },
            };
            if sent.is_err() {
                return;
            }
        }
        let left = (statuses.try_iter().map(|m| (m, Retained::Yes)))
            .chain(tracks.try_iter().map(|m| (m, Retained::No)));
        for (message, retained) in left {
            if self.publish_event(message, retained).is_err() {
                return;
            }
        }
        // The queue is closed and empty: a clean shutdown. The broker handles DISCONNECT after
        // every packet before it, and discards the last will, hence the explicit `offline`.
        let _ = self
            .client
            .publish(&self.status_topic, QoS::AtLeastOnce, true, "offline");
        let _ = self.client.disconnect();
    }

    /// A stream status (retained) or a track event, at QoS 1 whatever the results' QoS: a lost
    /// status would leave a wrong state, and an analytics back end counts on every event.
    fn publish_event(
        &self,
        (topic, payload): Message,
        retained: Retained,
    ) -> std::result::Result<(), rumqttc::ClientError> {
        let retain = retained == Retained::Yes;
        self.client
            .publish(topic, QoS::AtLeastOnce, retain, payload)
    }
}

/// Whether the broker keeps a message for subscribers that come later.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Retained {
    Yes,
    No,
}

/// Polls the connection, which is what makes rumqttc send, receive and reconnect.
struct Driver {
    target: String,
    topic: String,
    per_stream: bool,
    status_topic: String,
    counters: Arc<PublisherCounters>,
    max_delay: Duration,
    abandoned: Receiver<()>,
    flushed: Sender<()>,
}

impl Driver {
    fn run(self, mut connection: Connection) {
        let mut delay = FIRST_RETRY_DELAY;
        let mut ever_connected = false;
        let mut reported_down = false;
        let mut disconnecting = false;
        // Results rumqttc moved back to its pending list when the connection broke: resent if
        // the broker kept the session, lost otherwise.
        let mut in_limbo = 0;
        loop {
            let Ok(event) = connection.recv() else {
                // Every client handle is gone: only after the feeder's DISCONNECT.
                break;
            };
            match event {
                Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                    if !ack.session_present && in_limbo > 0 {
                        warn!(
                            "{}: the broker lost the session; {in_limbo} results in flight are lost",
                            self.target
                        );
                        self.counters.count_dropped_many(in_limbo);
                    }
                    in_limbo = 0;
                    if ever_connected {
                        self.counters.count_reconnect();
                    }
                    if reported_down || !ever_connected {
                        info!("{}: connected", self.target);
                    }
                    ever_connected = true;
                    reported_down = false;
                    delay = FIRST_RETRY_DELAY;
                    // Ahead of everything else: the last will may have left `offline` retained.
                    connection
                        .eventloop
                        .pending
                        .push_front(self.status("online"));
                }
                Ok(Event::Outgoing(Outgoing::Disconnect)) => disconnecting = true,
                Ok(_) => {}
                // After our DISCONNECT the broker closes the connection: everything was taken.
                Err(_) if disconnecting => break,
                Err(e) => {
                    in_limbo = self.results_pending(&connection);
                    if !reported_down {
                        warn!(
                            "{}: {e}; retrying with backoff up to {:?}",
                            self.target, self.max_delay
                        );
                        reported_down = true;
                    }
                    if self.abandoned.recv_timeout(delay) != Err(RecvTimeoutError::Timeout) {
                        return;
                    }
                    delay = (delay * 2).min(self.max_delay);
                }
            }
        }
        if disconnecting {
            // The receiver is gone only if `finish` already gave up.
            let _ = self.flushed.send(());
        }
    }

    fn status(&self, state: &str) -> Request {
        let mut publish = rumqttc::Publish::new(&self.status_topic, QoS::AtLeastOnce, state);
        publish.retain = true;
        Request::Publish(publish)
    }

    fn results_pending(&self, connection: &Connection) -> u64 {
        connection
            .eventloop
            .pending
            .iter()
            .filter(
                |request| matches!(request, Request::Publish(p) if self.is_results_topic(&p.topic)),
            )
            .count() as u64
    }

    /// `<topic>`, or per stream `<topic>/<NAME>` (not the status topic).
    fn is_results_topic(&self, topic: &str) -> bool {
        let per_stream = || {
            topic
                .strip_prefix(self.topic.as_str())
                .and_then(|rest| rest.strip_prefix('/'))
                .is_some_and(|name| !name.contains('/') && topic != self.status_topic)
        };
        topic == self.topic || (self.per_stream && per_stream())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_broker_urls() {
        let config = MqttConfig::from_url("mqtt://broker.local/sapiens/cam1").unwrap();
        assert_eq!(
            (config.host.as_str(), config.port, config.topic.as_str()),
            ("broker.local", 1883, "sapiens/cam1")
        );
        let config = MqttConfig::from_url("mqtt://127.0.0.1:11883/t").unwrap();
        assert_eq!((config.host.as_str(), config.port), ("127.0.0.1", 11883));
        let config = MqttConfig::from_url("mqtt://[::1]:1884/t").unwrap();
        assert_eq!((config.host.as_str(), config.port), ("[::1]", 1884));
        assert_eq!(config.status_topic(), "t/status");
        assert_eq!(config.stream_topic(), "t/stream");
    }

    #[test]
    fn rejects_bad_urls_with_the_reason() {
        for (url, reason) in [
            ("mqtt:/host/t", "not an mqtt:// URL"),
            ("mqtt://host", "no topic"),
            ("mqtt://host/", "no topic"),
            ("mqtt://host/a/#", "wildcards"),
            ("mqtt://[::1]x/t", "bad host or port"),
            ("mqtt://user:pw@host/t", "credentials"),
            ("mqtt://host:notaport/t", "bad host or port"),
            ("mqtt://host:0/t", "bad host or port"),
            ("mqtt://host:/t", "bad host or port"),
            ("mqtt://:1883/t", "bad host or port"),
            ("mqtt://[::1/t", "bad host or port"),
        ] {
            let message = MqttConfig::from_url(url).unwrap_err().to_string();
            assert!(
                message.starts_with("publishing to mqtt:") && message.contains(reason),
                "{url}: {message}"
            );
        }
        assert!(
            MqttQos::from_level(2)
                .unwrap_err()
                .to_string()
                .contains("use 0 or 1")
        );
    }
}
