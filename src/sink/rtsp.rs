//! The overlay video over RTSP.
//!
//! Serving (`--output rtsp://0.0.0.0:8554/live`, a host of this machine): gst-rtsp-server with one
//! shared media, so a single encoder feeds every client. The media (appsrc -> encoder -> RTP
//! payloader) is built when the first client asks for the stream and torn down after the last one
//! leaves; while it exists the pipeline's frames go to its appsrc, which never blocks (it drops its
//! oldest frame when the encoder or the network falls behind), and while nobody watches frames are
//! not encoded at all. Clients come and go without the pipeline noticing.
//!
//! Pushing (`--output rtsp://server:8554/path`, any other host): rtspclientsink RECORDs the stream
//! to that server.

use std::fmt;
use std::net::{IpAddr, ToSocketAddrs, UdpSocket};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use gstreamer as gst;
use gstreamer::glib;
use gstreamer::glib::subclass::prelude::*;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;
use gstreamer_rtsp_server as rtsp_server;
use gstreamer_rtsp_server::prelude::*;

use super::{
    Delivery, Timing, VideoSinkOptions, encoder_chain, frame_appsrc, frame_sample, make,
    posted_error,
};
use crate::error::{Error, Result};
use crate::frame::Frame;

/// The port RTSP URLs mean when they name none.
const DEFAULT_PORT: u16 = 554;
/// Name of the appsrc inside each served media, to find it again when the media is configured.
const MEDIA_APPSRC: &str = "frames";
/// How often sessions of clients that vanished without a TEARDOWN are reaped.
const SESSION_CLEANUP_SECONDS: u32 = 2;
/// How long the served stream's end-of-stream may take to reach the clients.
const END_OF_STREAM_TIMEOUT: Duration = Duration::from_secs(2);
/// How long clients told of the end get to hang up before they are disconnected.
const CLIENTS_LEAVE_TIMEOUT: Duration = Duration::from_secs(3);
/// How long a push output may take to send its last frames when the run ends.
const PUSH_FINISH_TIMEOUT: Duration = Duration::from_secs(5);

/// An `rtsp://HOST[:PORT]/PATH` URL, split.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RtspUrl {
    /// As given (credentials included, for rtspclientsink).
    pub url: String,
    pub host: String,
    pub port: u16,
    /// The mount path, with its leading '/'.
    pub path: String,
}

impl RtspUrl {
    pub fn parse(url: &str) -> std::result::Result<Self, String> {
        let rest = url.strip_prefix("rtsp://").ok_or("not an rtsp:// URL")?;
        let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        if path.len() < 2 {
            return Err("give the stream a path, e.g. rtsp://127.0.0.1:8554/live".into());
        }
        let host_port = authority
            .rsplit_once('@')
            .map_or(authority, |(_, host_port)| host_port);
        let (host, port) = match host_port.strip_prefix('[') {
            // [IPv6]:port
            Some(bracketed) => {
                let (host, after) = bracketed
                    .split_once(']')
                    .ok_or("unclosed '[' in the host")?;
                (host, after.strip_prefix(':'))
            }
            None => match host_port.rsplit_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (host_port, None),
            },
        };
        if host.is_empty() {
            return Err("the URL names no host".into());
        }
        let port = match port {
            Some(port) => port
                .parse()
                .map_err(|_| format!("'{port}' is not a port number"))?,
            None => DEFAULT_PORT,
        };
        Ok(RtspUrl {
            url: url.to_owned(),
            host: host.to_owned(),
            port,
            path: path.to_owned(),
        })
    }

    /// Whether the host is this machine (then the stream is served here): localhost, a loopback
    /// or unspecified address, or any address a socket can be bound to.
    pub fn is_local(&self) -> bool {
        if self.host.eq_ignore_ascii_case("localhost") {
            return true;
        }
        let bindable = |ip: IpAddr| {
            ip.is_loopback() || ip.is_unspecified() || UdpSocket::bind((ip, 0)).is_ok()
        };
        match self.host.parse::<IpAddr>() {
            Ok(ip) => bindable(ip),
            Err(_) => (self.host.as_str(), 0)
                .to_socket_addrs()
                .is_ok_and(|mut addrs| addrs.any(|a| bindable(a.ip()))),
        }
    }

    fn error(&self, message: String) -> Error {
        Error::Output {
            path: PathBuf::from(&self.url),
            message,
        }
    }
}

impl fmt::Display for RtspUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.url)
    }
}

/// The appsrc of the shared media, while one exists.
type MediaInput = Arc<Mutex<Option<gst_app::AppSrc>>>;

/// Serves the overlay stream to any number of RTSP clients through one shared encoder, at its
/// URL's path. Outputs of several streams on one address share its server, each at a path of
/// its own (`rtsp://0.0.0.0:8554/{name}`).
pub struct RtspServer {
    host: Arc<RtspHost>,
    path: String,
    input: MediaInput,
}

/// One gst-rtsp-server listening on one address, serving every mount of this process there.
struct RtspHost {
    address: (String, u16),
    server: rtsp_server::RTSPServer,
    main_loop: glib::MainLoop,
    thread: Mutex<Option<JoinHandle<()>>>,
    sources: Mutex<Vec<glib::Source>>,
    /// The mounted paths.
    paths: Mutex<std::collections::HashSet<String>>,
}

/// The servers of this process, by address; a server lives while one of its mounts does.
static HOSTS: Mutex<Vec<std::sync::Weak<RtspHost>>> = Mutex::new(Vec::new());

impl RtspServer {
    pub fn open(url: &RtspUrl, options: &VideoSinkOptions) -> Result<Self> {
        gst::init().map_err(|e| Error::Gstreamer(e.to_string()))?;
        // Fail now, not when the first client connects, if an element is missing.
        build_media(options).map_err(|message| url.error(message))?;
        let host = RtspHost::shared(url)?;
        let mounts = host
            .server
            .mount_points()
            .ok_or_else(|| url.error("the RTSP server has no mount points".into()))?;
        let mut paths = host.paths.lock().unwrap_or_else(PoisonError::into_inner);
        if !paths.insert(url.path.clone()) {
            return Err(url.error(format!("{} is served already", url.path)));
        }
        drop(paths);
        let factory = OverlayFactory::new(options.clone());
        factory.set_shared(true);
        let input = MediaInput::default();
        let slot = input.clone();
        factory.connect_media_configure(move |_, media| take_media_input(media, &slot));
        mounts.add_factory(&url.path, factory);
        tracing::info!(
            "serving the overlay video on rtsp://{}:{}{}",
            url.host,
            host.server.bound_port(),
            url.path
        );
        Ok(RtspServer {
            host,
            path: url.path.clone(),
            input,
        })
    }

    /// Hands the frame to the shared encoder if someone watches; never blocks.
    pub fn push(&mut self, frame: &mut Frame) {
        let Some(appsrc) = lock(&self.input).clone() else {
            return;
        };
        // The appsrc stamps frames on arrival, on the media's own clock.
        if let Err(flow) = appsrc.push_sample(&frame_sample(frame, Timing::Arrival)) {
            // The media is shutting down (its last client left): the frame is simply not sent.
            tracing::debug!("RTSP media refused a frame: {flow:?}");
        }
    }

    /// Ends the stream for its clients and stops serving it (and the server with its last
    /// mount).
    pub fn finish(self) {
        if let Some(appsrc) = lock(&self.input).take() {
            end_stream(&appsrc);
            // Clients of other mounts stay: only the last mount waits for every client.
            if Arc::strong_count(&self.host) == 1 {
                self.host.let_clients_leave();
            }
        }
    }
}

impl Drop for RtspServer {
    fn drop(&mut self) {
        if let Some(mounts) = self.host.server.mount_points() {
            mounts.remove_factory(&self.path);
        }
        let mut paths = self
            .host
            .paths
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        paths.remove(&self.path);
    }
}

impl RtspHost {
    /// The server on the URL's address: the running one, else a new one.
    fn shared(url: &RtspUrl) -> Result<Arc<Self>> {
        let mut hosts = HOSTS.lock().unwrap_or_else(PoisonError::into_inner);
        hosts.retain(|host| host.strong_count() > 0);
        let address = (url.host.clone(), url.port);
        if let Some(host) = hosts
            .iter()
            .filter_map(std::sync::Weak::upgrade)
            .find(|host| host.address == address && url.port != 0)
        {
            return Ok(host);
        }
        let host = Arc::new(RtspHost::start(url)?);
        hosts.push(Arc::downgrade(&host));
        Ok(host)
    }

    fn start(url: &RtspUrl) -> Result<Self> {
        let server = rtsp_server::RTSPServer::new();
        server.set_address(&url.host);
        server.set_service(&url.port.to_string());
        server.connect_client_connected(|_, client| {
            tracing::info!("RTSP client connected");
            client.connect_closed(|_| tracing::info!("RTSP client left"));
        });

        let context = glib::MainContext::new();
        let listening = server.attach(Some(&context)).map_err(|_| {
            url.error(format!(
                "cannot listen on {}:{} (port in use, or not an address of this machine)",
                url.host, url.port
            ))
        })?;
        let pool = server.session_pool();
        let cleanup = glib::timeout_source_new_seconds(
            SESSION_CLEANUP_SECONDS,
            None,
            glib::Priority::DEFAULT,
            move || {
                if let Some(pool) = &pool {
                    pool.cleanup();
                }
                glib::ControlFlow::Continue
            },
        );
        cleanup.attach(Some(&context));
        let mut sources = vec![cleanup];
        sources.extend(context.find_source_by_id(&listening));
        let main_loop = glib::MainLoop::new(Some(&context), false);
        let looping = main_loop.clone();
        let thread = std::thread::Builder::new()
            .name("rtsp-server".into())
            .spawn(move || looping.run())
            .map_err(|e| url.error(format!("cannot start the RTSP server thread: {e}")))?;
        Ok(RtspHost {
            address: (url.host.clone(), url.port),
            server,
            main_loop,
            thread: Mutex::new(Some(thread)),
            sources: Mutex::new(sources),
            paths: Mutex::default(),
        })
    }

    /// Clients told of the end usually hang up themselves; the ones still there after a short
    /// while are disconnected by `shutdown`.
    fn let_clients_leave(&self) {
        let deadline = Instant::now() + CLIENTS_LEAVE_TIMEOUT;
        while !self.server.client_filter(None).is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for RtspHost {
    fn drop(&mut self) {
        let Some(thread) = self.thread.get_mut().ok().and_then(Option::take) else {
            return;
        };
        self.server
            .client_filter(Some(&mut |_, _| rtsp_server::RTSPFilterResult::Remove));
        if let Ok(sources) = self.sources.get_mut() {
            for source in sources.drain(..) {
                source.destroy();
            }
        }
        self.main_loop.quit();
        let _ = thread.join();
    }
}

/// Sends end-of-stream through the media and waits (briefly) until the RTP session has sent its
/// RTCP BYE, which it does before passing the end-of-stream on to its RTCP output: clients are
/// told the stream ended before they are disconnected.
fn end_stream(appsrc: &gst_app::AppSrc) {
    let rtcp_outputs: Vec<gst::Pad> = appsrc
        .parent()
        .and_then(|media_bin| media_bin.parent())
        .and_then(|pipeline| pipeline.downcast::<gst::Bin>().ok())
        .into_iter()
        .flat_map(|pipeline| pipeline.iterate_recurse().into_iter().flatten())
        .filter(|element| element.factory().is_some_and(|f| f.name() == "rtpbin"))
        .flat_map(|rtpbin| rtpbin.src_pads())
        .filter(|pad| pad.name().starts_with("send_rtcp_src"))
        .collect();
    let (ended, wait) = std::sync::mpsc::channel();
    for pad in &rtcp_outputs {
        let ended = ended.clone();
        pad.add_probe(gst::PadProbeType::EVENT_DOWNSTREAM, move |_, info| {
            if let Some(gst::PadProbeData::Event(event)) = &info.data
                && event.type_() == gst::EventType::Eos
            {
                let _ = ended.send(());
            }
            gst::PadProbeReturn::Ok
        });
    }
    if appsrc.end_of_stream().is_err() {
        return;
    }
    let deadline = Instant::now() + END_OF_STREAM_TIMEOUT;
    for _ in &rtcp_outputs {
        let left = deadline.saturating_duration_since(Instant::now());
        if wait.recv_timeout(left).is_err() {
            tracing::debug!("RTCP BYE not confirmed in time");
            return;
        }
    }
    tracing::debug!("RTCP BYE sent on {} outputs", rtcp_outputs.len());
}

fn lock(input: &MediaInput) -> std::sync::MutexGuard<'_, Option<gst_app::AppSrc>> {
    input.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A new shared media was built: frames go to its appsrc until it is unprepared.
fn take_media_input(media: &rtsp_server::RTSPMedia, input: &MediaInput) {
    let appsrc = media
        .element()
        .downcast_ref::<gst::Bin>()
        .and_then(|bin| bin.by_name(MEDIA_APPSRC))
        .and_then(|element| element.downcast::<gst_app::AppSrc>().ok());
    let Some(appsrc) = appsrc else {
        tracing::error!("the RTSP media has no frame input");
        return;
    };
    *lock(input) = Some(appsrc.clone());
    let input = input.clone();
    media.connect_unprepared(move |_| {
        let mut current = lock(&input);
        if current.as_ref() == Some(&appsrc) {
            *current = None;
        }
    });
}

/// appsrc -> encoder chain -> rtph264pay (pay0), in the bin a served media plays.
fn build_media(options: &VideoSinkOptions) -> std::result::Result<gst::Bin, String> {
    let appsrc = frame_appsrc(Delivery::Live);
    appsrc.set_property("name", MEDIA_APPSRC);
    let mut chain = encoder_chain(&appsrc, options, Delivery::Live)?;
    let payloader = make("rtph264pay")?;
    payloader.set_property("name", "pay0");
    payloader.set_property("pt", 96u32);
    // SPS/PPS with every key frame, so that a client joining mid-stream can decode.
    payloader.set_property("config-interval", -1i32);
    chain.push(payloader);
    let bin = gst::Bin::new();
    bin.add_many(&chain).map_err(|e| e.to_string())?;
    gst::Element::link_many(&chain).map_err(|e| e.to_string())?;
    Ok(bin)
}

mod imp {
    use std::sync::OnceLock;

    use gstreamer::glib;
    use gstreamer::prelude::*;
    use gstreamer_rtsp_server::subclass::prelude::*;

    use super::{VideoSinkOptions, build_media};

    /// Builds each shared media from the stream's description.
    #[derive(Default)]
    pub struct OverlayFactory {
        pub(super) stream: OnceLock<VideoSinkOptions>,
    }

    #[glib::object_subclass]
    impl ObjectSubclass for OverlayFactory {
        const NAME: &'static str = "SapiensStreamOverlayFactory";
        type Type = super::OverlayFactory;
        type ParentType = gstreamer_rtsp_server::RTSPMediaFactory;
    }

    impl ObjectImpl for OverlayFactory {}

    impl RTSPMediaFactoryImpl for OverlayFactory {
        fn create_element(&self, _url: &gstreamer_rtsp::RTSPUrl) -> Option<gstreamer::Element> {
            let stream = self.stream.get()?;
            match build_media(stream) {
                Ok(bin) => Some(bin.upcast()),
                Err(message) => {
                    tracing::error!("cannot build the RTSP media: {message}");
                    None
                }
            }
        }
    }
}

glib::wrapper! {
    /// A media factory whose media take the pipeline's frames through an appsrc.
    pub struct OverlayFactory(ObjectSubclass<imp::OverlayFactory>) @extends rtsp_server::RTSPMediaFactory;
}

impl OverlayFactory {
    fn new(stream: VideoSinkOptions) -> Self {
        let factory: Self = glib::Object::new();
        let _ = factory.imp().stream.set(stream);
        factory
    }
}

/// Pushes the overlay stream to an external RTSP server (RTSP RECORD).
pub struct RtspPush {
    pipeline: gst::Pipeline,
    appsrc: gst_app::AppSrc,
    url: RtspUrl,
}

impl RtspPush {
    pub fn open(url: &RtspUrl, options: &VideoSinkOptions) -> Result<Self> {
        gst::init().map_err(|e| Error::Gstreamer(e.to_string()))?;
        let (pipeline, appsrc) =
            build_push_pipeline(url, options).map_err(|message| url.error(message))?;
        let push = RtspPush {
            pipeline,
            appsrc,
            url: url.clone(),
        };
        push.pipeline.set_state(gst::State::Playing).map_err(|_| {
            push.bus_error()
                .unwrap_or_else(|| url.error("cannot start the stream".into()))
        })?;
        Ok(push)
    }

    fn bus_error(&self) -> Option<Error> {
        posted_error(&self.pipeline).map(|message| self.url.error(message))
    }

    /// Hands the frame to the encoder; never blocks (the oldest frame is dropped when the
    /// network falls behind). A server that failed or went away ends the run with its error.
    pub fn push(&mut self, frame: &mut Frame) -> Result<()> {
        if let Some(error) = self.bus_error() {
            return Err(error);
        }
        let sample = frame_sample(frame, Timing::Arrival);
        self.appsrc.push_sample(&sample).map_err(|flow| {
            self.bus_error().unwrap_or_else(|| {
                self.url
                    .error(format!("the stream refused a frame: {flow:?}"))
            })
        })?;
        Ok(())
    }

    /// Sends end-of-stream (the server sees the recording end) and closes the connection.
    pub fn finish(self) -> Result<()> {
        if let Some(error) = self.bus_error() {
            return Err(error);
        }
        let _ = self.appsrc.end_of_stream();
        let ended = self.pipeline.bus().and_then(|bus| {
            bus.timed_pop_filtered(
                gst::ClockTime::from_seconds(PUSH_FINISH_TIMEOUT.as_secs()),
                &[gst::MessageType::Eos, gst::MessageType::Error],
            )
        });
        match ended.as_ref().map(|m| m.view()) {
            Some(gst::MessageView::Error(err)) => Err(self.url.error(err.error().to_string())),
            _ => Ok(()),
        }
    }
}

impl Drop for RtspPush {
    fn drop(&mut self) {
        let _ = self.pipeline.set_state(gst::State::Null);
    }
}

/// appsrc -> encoder chain -> rtspclientsink
fn build_push_pipeline(
    url: &RtspUrl,
    options: &VideoSinkOptions,
) -> std::result::Result<(gst::Pipeline, gst_app::AppSrc), String> {
    let appsrc = frame_appsrc(Delivery::Live);
    let mut chain = encoder_chain(&appsrc, options, Delivery::Live)?;
    let sink = make("rtspclientsink")?;
    sink.set_property("location", url.url.as_str());
    chain.push(sink);
    let pipeline = gst::Pipeline::new();
    pipeline.add_many(&chain).map_err(|e| e.to_string())?;
    gst::Element::link_many(&chain).map_err(|e| e.to_string())?;
    Ok((pipeline, appsrc))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_hosts_ports_and_paths() {
        let url = RtspUrl::parse("rtsp://0.0.0.0:8554/live").unwrap();
        assert_eq!(
            (url.host.as_str(), url.port, url.path.as_str()),
            ("0.0.0.0", 8554, "/live")
        );
        let url = RtspUrl::parse("rtsp://user:secret@cam.example:8554/a/b").unwrap();
        assert_eq!(
            (url.host.as_str(), url.port, url.path.as_str()),
            ("cam.example", 8554, "/a/b")
        );
        let url = RtspUrl::parse("rtsp://[::1]:9000/x").unwrap();
        assert_eq!((url.host.as_str(), url.port), ("::1", 9000));
        assert_eq!(
            RtspUrl::parse("rtsp://server/x").unwrap().port,
            DEFAULT_PORT
        );
    }

    #[test]
    fn rejects_urls_without_path_host_or_port() {
        assert!(RtspUrl::parse("rtsp://127.0.0.1:8554").is_err());
        assert!(RtspUrl::parse("rtsp://127.0.0.1:8554/").is_err());
        assert!(RtspUrl::parse("rtsp://:8554/live").is_err());
        assert!(RtspUrl::parse("rtsp://host:port/live").is_err());
        assert!(RtspUrl::parse("rtsp://[::1:8554/live").is_err());
    }

    #[test]
    fn local_hosts_are_served_others_pushed() {
        for local in ["127.0.0.1", "0.0.0.0", "localhost", "[::]", "[::1]"] {
            let url = RtspUrl::parse(&format!("rtsp://{local}:8554/live")).unwrap();
            assert!(url.is_local(), "{local}");
        }
        // TEST-NET-1 (RFC 5737): never an address of this machine.
        assert!(
            !RtspUrl::parse("rtsp://192.0.2.1:8554/live")
                .unwrap()
                .is_local()
        );
    }
}
