//! An MQTT broker (a real mosquitto process) and an independent subscriber, for tests of the
//! MQTT publisher and of runs that publish to MQTT.

use std::io::Read;
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError};
use rumqttc::{Client, Event, MqttOptions, Packet, QoS, SubscribeFilter};

fn mosquitto_binary() -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/usr/local/sbin".into()])
        .map(|dir| dir.join("mosquitto"))
        .find(|candidate| candidate.is_file())
        .expect("the MQTT tests need the mosquitto broker (Debian package `mosquitto`): run scripts/setup.sh")
}

/// A mosquitto process on a fixed local port, which the test can stop and start again.
pub struct Broker {
    pub port: u16,
    config: PathBuf,
    process: Option<Child>,
    _dir: tempfile::TempDir,
}

impl Broker {
    pub fn start() -> Broker {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("mosquitto.conf");
        std::fs::write(
            &config,
            format!("listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"),
        )
        .unwrap();
        let mut broker = Broker {
            port,
            config,
            process: None,
            _dir: dir,
        };
        broker.resume();
        broker
    }

    pub fn resume(&mut self) {
        let mut process = Command::new(mosquitto_binary())
            .arg("-c")
            .arg(&self.config)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("cannot start mosquitto");
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if let Some(status) = process.try_wait().unwrap() {
                let mut stderr = String::new();
                process
                    .stderr
                    .take()
                    .unwrap()
                    .read_to_string(&mut stderr)
                    .unwrap();
                panic!("mosquitto exited ({status}): {stderr}");
            }
            assert!(
                Instant::now() < deadline,
                "mosquitto does not listen on port {}",
                self.port
            );
            thread::sleep(Duration::from_millis(20));
        }
        self.process = Some(process);
    }

    pub fn stop(&mut self) {
        if let Some(mut process) = self.process.take() {
            process.kill().unwrap();
            process.wait().unwrap();
        }
    }

    pub fn url(&self, topic: &str) -> String {
        format!("mqtt://127.0.0.1:{}/{topic}", self.port)
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A topic and a payload.
pub type Message = (String, Vec<u8>);

/// What a subscriber sees.
pub enum Seen {
    Subscribed,
    Message { topic: String, payload: Vec<u8> },
}

/// A second, independent client that subscribes to `topics` on every (re)connection.
pub struct Subscriber {
    seen: Receiver<Seen>,
    stop: Arc<AtomicBool>,
}

impl Subscriber {
    pub fn start(port: u16, name: &str, topics: &[&str]) -> Subscriber {
        let mut options = MqttOptions::new(name, "127.0.0.1", port);
        options.set_max_packet_size(16 << 20, 10 << 10);
        let (client, mut connection) = Client::new(options, 10);
        let (tx, seen) = crossbeam_channel::unbounded();
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = Arc::clone(&stop);
        let topics: Vec<String> = topics.iter().map(|t| t.to_string()).collect();
        thread::spawn(move || {
            for event in connection.iter() {
                if stopped.load(Ordering::Relaxed) {
                    return;
                }
                let sent = match event {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        // One SUBSCRIBE for all topics: one SubAck, before any message.
                        let filters = topics
                            .iter()
                            .map(|t| SubscribeFilter::new(t.clone(), QoS::AtLeastOnce));
                        client.subscribe_many(filters).unwrap();
                        Ok(())
                    }
                    Ok(Event::Incoming(Packet::SubAck(_))) => tx.send(Seen::Subscribed),
                    Ok(Event::Incoming(Packet::Publish(p))) => tx.send(Seen::Message {
                        topic: p.topic,
                        payload: p.payload.to_vec(),
                    }),
                    Ok(_) => Ok(()),
                    Err(_) => {
                        thread::sleep(Duration::from_millis(50));
                        Ok(())
                    }
                };
                if sent.is_err() {
                    return;
                }
            }
        });
        let subscriber = Subscriber { seen, stop };
        subscriber.wait_subscribed();
        subscriber
    }

    pub fn next(&self) -> Seen {
        match self.seen.recv_timeout(Duration::from_secs(10)) {
            Ok(seen) => seen,
            Err(RecvTimeoutError::Timeout) => panic!("the subscriber got nothing for 10 s"),
            Err(RecvTimeoutError::Disconnected) => panic!("the subscriber stopped"),
        }
    }

    pub fn wait_subscribed(&self) {
        while !matches!(self.next(), Seen::Subscribed) {}
    }

    /// Collects messages until `count` came on `topic`; messages on other topics are returned too.
    pub fn collect(&self, topic: &str, count: usize) -> (Vec<Vec<u8>>, Vec<Message>) {
        let (mut on_topic, mut others) = (Vec::new(), Vec::new());
        while on_topic.len() < count {
            if let Seen::Message { topic: t, payload } = self.next() {
                if t == topic {
                    on_topic.push(payload);
                } else {
                    others.push((t, payload));
                }
            }
        }
        (on_topic, others)
    }
}

impl Subscriber {
    /// Messages received so far and not yet taken, without waiting.
    pub fn drain(&self) -> Vec<Message> {
        self.seen
            .try_iter()
            .filter_map(|seen| match seen {
                Seen::Message { topic, payload } => Some((topic, payload)),
                Seen::Subscribed => None,
            })
            .collect()
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}
