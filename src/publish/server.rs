//! The network side, on a tokio runtime of its own so the pipeline's threads never await:
//!
//! - `--http ADDR`: `/` the browser view (a grid of every stream; `/?stream=NAME` one), `/ws`
//!   the results WebSocket (`?stream=NAME`: one stream's), `/video.mjpeg?stream=NAME` a stream's
//!   raw video as MJPEG (the first stream's without `stream`), `/keypoints/<set>.json` and `/classes/<set>.json` the keypoint and class
//!   sets the view draws with (names, colours, skeleton, palette), `/metrics`
//!   (OpenMetrics text, which Prometheus scrapes), `/health` (liveness: 200 while the server
//!   runs) and `/ready` (readiness: 503 until the first frame was published, and while a remote
//!   model's server does not answer; else 200).
//! - `--ws ADDR`: the results WebSocket alone, on `/` (and `/ws`).
//!
//! WebSocket messages are text: each published JSON result, each stream status change
//! (`"schema":"sapiens-stream/status"`; a client first gets the current one, if any), and
//! `{"schema":"sapiens-stream/dropped","version":1,"count":N}` where a slow client lost N
//! messages (see [`super::results_hub`]).
//!
//! - `/streams` (with `--http`): `GET` lists the running streams, `POST` starts one from a JSON
//!   body `{"name", "input", "output"?}` (201 with its entry; 400 with a one-line reason; 409
//!   for a name in use), `DELETE /streams/NAME` stops one once its outputs are finished (204; 404
//!   for an unknown name). See [`StreamControl`].
//!
//! With a token, every path but `/health` and `/ready` needs `Authorization: Bearer TOKEN`, or
//! `?token=TOKEN` in the query for browsers, which cannot set headers on a WebSocket or an
//! `<img>`; others get 401. Without a token, browsers may open the WebSocket only from a page of
//! the same origin, so that no web page the user visits can read the stream; pages of other
//! origins must use a token. Nothing received from the network reaches GStreamer.

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr, TcpListener as StdTcpListener, ToSocketAddrs};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade, close_code};
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{delete, get};
use axum::serve::ListenerExt;
use serde::{Deserialize, Serialize};
use tokio::runtime::Runtime;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use super::frame_hub::{DEFAULT_VIDEO_FPS, FrameHubs};
use super::results_hub::{DEFAULT_CLIENT_QUEUE, ResultsHub, Subscription};
use crate::error::{Error, Result};
use crate::metrics::{METRICS_CONTENT_TYPE, Metrics};
use crate::tasks::keypoint_sets;

/// How long [`NetworkServer::shutdown`] lets clients take their last messages.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);
/// Kernel send buffer per connection: small, so a client that stops reading soon fills it and
/// its backlog stays in its own bounded queue, where the oldest messages are dropped.
const SEND_BUFFER_BYTES: usize = 64 * 1024;
const VIEW_PAGE: &str = include_str!("view.html");
const MJPEG_BOUNDARY: &str = "frame";

/// The servers to start.
#[derive(Clone, Debug)]
pub struct NetworkOptions {
    /// Browser view, WebSocket, MJPEG, metrics and health.
    pub http: Option<SocketAddr>,
    /// WebSocket only.
    pub ws: Option<SocketAddr>,
    /// Bearer token every client must present.
    pub token: Option<String>,
    /// Messages queued per WebSocket client before its oldest are dropped.
    pub client_queue: usize,
    /// Frames per second encoded for `/video.mjpeg` at most.
    pub video_fps: f64,
}

impl Default for NetworkOptions {
    fn default() -> Self {
        NetworkOptions {
            http: None,
            ws: None,
            token: None,
            client_queue: DEFAULT_CLIENT_QUEUE,
            video_fps: DEFAULT_VIDEO_FPS,
        }
    }
}

/// Parses a listen address: `HOST:PORT`, `[IPv6]:PORT`, or a bare `PORT` (or `:PORT`) on
/// `default_host`. `flag` names the option in the error.
pub fn listen_address(flag: &str, spec: &str, default_host: IpAddr) -> Result<SocketAddr> {
    let invalid = |reason: String| Error::InputInvalid {
        input: format!("{flag} {spec}"),
        reason,
    };
    let port_only = spec.strip_prefix(':').unwrap_or(spec);
    if let Ok(port) = port_only.parse::<u16>() {
        return Ok(SocketAddr::new(default_host, port));
    }
    if let Ok(address) = spec.parse::<SocketAddr>() {
        return Ok(address);
    }
    if !spec.contains(':') {
        return Err(invalid("expected HOST:PORT or PORT".into()));
    }
    spec.to_socket_addrs()
        .map_err(|e| invalid(format!("not an address to listen on ({e})")))?
        .next()
        .ok_or_else(|| invalid("the host name has no address".into()))
}

/// A stream as `GET /streams` lists it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamEntry {
    pub name: String,
    /// The stream's index, as in its results.
    pub stream: u32,
    pub input: String,
    /// Delivers frames (false while a camera is down and reconnecting).
    pub up: bool,
    /// Frames processed and published so far.
    pub frames: u64,
    /// Frames live scheduling dropped before inference so far.
    pub dropped: u64,
}

/// `POST /streams`'s body.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamRequest {
    pub name: String,
    pub input: String,
    /// The stream's video output; `{name}` is filled in.
    #[serde(default)]
    pub output: Option<String>,
}

/// Why a `/streams` request was refused.
#[derive(Debug)]
pub enum StreamControlError {
    /// 400: a bad name, input or output; the one-line reason.
    Invalid(String),
    /// 409: the name is taken.
    InUse(String),
    /// 404: no stream has this name.
    Unknown(String),
    /// 503: the run is ending.
    Closed,
}

/// What `/streams` asks of the run; the calls may block (opening an input waits for its first
/// frame, stopping a stream for its outputs to finish).
pub trait StreamControl: Send + Sync {
    fn list(&self) -> Vec<StreamEntry>;
    fn add(&self, request: StreamRequest) -> std::result::Result<StreamEntry, StreamControlError>;
    fn remove(&self, name: &str) -> std::result::Result<(), StreamControlError>;
}

/// Where `/streams` finds the run, once it has started.
type ControlSlot = Arc<OnceLock<Arc<dyn StreamControl>>>;

/// The running servers; see the module docs.
pub struct NetworkServer {
    runtime: Option<Runtime>,
    stop: watch::Sender<bool>,
    servers: Vec<JoinHandle<()>>,
    /// Ends (yields `None`) once every WebSocket session is over.
    sessions_done: mpsc::Receiver<()>,
    results: Arc<ResultsHub>,
    frames: Arc<FrameHubs>,
    http_address: Option<SocketAddr>,
    ws_address: Option<SocketAddr>,
    control: ControlSlot,
}

/// What every request handler shares.
#[derive(Clone)]
struct AppState {
    results: Arc<ResultsHub>,
    frames: Arc<FrameHubs>,
    metrics: Arc<Metrics>,
    token: Option<Arc<str>>,
    stop: watch::Receiver<bool>,
    /// Cloned into each WebSocket session; the server waits for all clones to go.
    session: mpsc::Sender<()>,
    control: ControlSlot,
}

impl NetworkServer {
    /// Binds every requested address (errors are immediate) and starts serving.
    pub fn start(options: &NetworkOptions, metrics: Arc<Metrics>) -> Result<Self> {
        let http = options
            .http
            .map(|address| bind("HTTP", address))
            .transpose()?;
        let ws = options
            .ws
            .map(|address| bind("WebSocket", address))
            .transpose()?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .max_blocking_threads(8)
            .thread_name("network")
            .enable_io()
            .enable_time()
            .build()
            .map_err(|e| Error::io("starting the network runtime", e))?;
        let results = Arc::new(ResultsHub::new(options.client_queue, metrics.clone()));
        let frames = Arc::new(FrameHubs::new(options.video_fps, runtime.handle().clone()));
        let (stop, stop_rx) = watch::channel(false);
        let (session, sessions_done) = mpsc::channel(1);
        let control = ControlSlot::default();
        let state = AppState {
            control: control.clone(),
            results: Arc::clone(&results),
            frames: Arc::clone(&frames),
            metrics,
            token: options.token.as_deref().map(Arc::from),
            stop: stop_rx,
            session,
        };
        let mut servers = Vec::new();
        let mut addresses = [None, None];
        for (index, (name, listener, router)) in [
            ("HTTP", http, http_router(state.clone())),
            ("WebSocket", ws, websocket_router(state.clone())),
        ]
        .into_iter()
        .enumerate()
        {
            let Some((listener, address)) = listener else {
                continue;
            };
            addresses[index] = Some(address);
            let listener = {
                let _runtime = runtime.enter();
                tokio::net::TcpListener::from_std(listener)
                    .map_err(|e| server_error(name, address, &e))?
            };
            servers.push(runtime.spawn(serve(name, listener, router, state.stop.clone())));
            tracing::info!("{name} server listening on {address}");
        }
        let [http_address, ws_address] = addresses;
        Ok(NetworkServer {
            runtime: Some(runtime),
            stop,
            servers,
            sessions_done,
            results,
            frames,
            http_address,
            ws_address,
            control,
        })
    }

    /// Serves `/streams` from now on (503 before).
    pub fn control_streams(&self, control: Arc<dyn StreamControl>) {
        let _ = self.control.set(control);
    }

    /// Where the pipeline publishes one JSON message per processed frame.
    pub fn results(&self) -> &Arc<ResultsHub> {
        &self.results
    }

    /// Where the pipeline offers each stream's raw frames for `/video.mjpeg`.
    pub fn frames(&self) -> &Arc<FrameHubs> {
        &self.frames
    }

    /// The HTTP server's address (the actual port when asked for port 0).
    pub fn http_address(&self) -> Option<SocketAddr> {
        self.http_address
    }

    /// The WebSocket server's address (the actual port when asked for port 0).
    pub fn ws_address(&self) -> Option<SocketAddr> {
        self.ws_address
    }

    /// Stops accepting connections, sends every WebSocket client what was published before this
    /// call and a close frame, ends the video streams, and stops the runtime. Clients that do not
    /// take their messages within a few seconds are cut off.
    pub fn shutdown(mut self) {
        let Some(runtime) = self.runtime.take() else {
            return;
        };
        self.stop.send_replace(true);
        let servers = std::mem::take(&mut self.servers);
        let sessions_done = &mut self.sessions_done;
        let finished = runtime.block_on(async {
            tokio::time::timeout(SHUTDOWN_GRACE, async {
                for server in servers {
                    let _ = server.await;
                }
                // Every server, and so every router's clone, is gone: only sessions hold senders.
                while sessions_done.recv().await.is_some() {}
            })
            .await
        });
        if finished.is_err() {
            tracing::warn!("network clients still busy after {SHUTDOWN_GRACE:?}; closing them");
        }
        self.frames.stop_encoders();
        runtime.shutdown_timeout(Duration::from_millis(200));
    }
}

impl Drop for NetworkServer {
    /// Without [`NetworkServer::shutdown`] (an error path): stop at once.
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            self.stop.send_replace(true);
            runtime.shutdown_timeout(Duration::from_millis(200));
        }
    }
}

fn server_error(name: &'static str, address: SocketAddr, e: &std::io::Error) -> Error {
    Error::Server {
        server: name,
        address: address.to_string(),
        message: e.to_string(),
    }
}

fn bind(name: &'static str, address: SocketAddr) -> Result<(StdTcpListener, SocketAddr)> {
    let listener = StdTcpListener::bind(address).map_err(|e| server_error(name, address, &e))?;
    listener
        .set_nonblocking(true)
        .map_err(|e| server_error(name, address, &e))?;
    let bound = listener
        .local_addr()
        .map_err(|e| server_error(name, address, &e))?;
    Ok((listener, bound))
}

async fn serve(
    name: &'static str,
    listener: tokio::net::TcpListener,
    router: Router,
    mut stop: watch::Receiver<bool>,
) {
    let listener = listener.tap_io(|stream| {
        let socket = socket2::SockRef::from(&*stream);
        if let Err(e) = socket.set_send_buffer_size(SEND_BUFFER_BYTES) {
            tracing::debug!("setting a client's send buffer: {e}");
        }
        let _ = stream.set_nodelay(true);
    });
    let stopped = async move { until_stopped(&mut stop).await };
    if let Err(e) = axum::serve(listener, router)
        .with_graceful_shutdown(stopped)
        .await
    {
        tracing::error!("{name} server stopped: {e}");
    }
}

/// Returns once the server is told to stop (or its [`NetworkServer`] is gone).
async fn until_stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|stop| *stop).await;
}

fn http_router(state: AppState) -> Router {
    let protected = Router::new()
        .route("/", get(view_page))
        .route("/ws", get(websocket))
        .route("/video.mjpeg", get(video))
        .route("/keypoints/{file}", get(keypoint_set))
        .route("/classes/{file}", get(class_set))
        .route("/metrics", get(metrics))
        .route("/streams", get(list_streams).post(add_stream))
        .route("/streams/{name}", delete(remove_stream))
        .route_layer(middleware::from_fn_with_state(state.clone(), require_token));
    Router::new()
        .route("/health", get(|| async { "ok\n" }))
        .route("/ready", get(ready))
        .merge(protected)
        .with_state(state)
}

fn websocket_router(state: AppState) -> Router {
    Router::new()
        .route("/", get(websocket))
        .route("/ws", get(websocket))
        .route_layer(middleware::from_fn_with_state(state.clone(), require_token))
        .with_state(state)
}

#[derive(Deserialize)]
struct TokenQuery {
    token: Option<String>,
}

/// The bearer token of the `Authorization` header, else the `token` query parameter.
fn presented_token(request: &Request) -> Option<String> {
    let from_header = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim().to_owned());
    from_header.or_else(|| {
        Query::<TokenQuery>::try_from_uri(request.uri())
            .ok()?
            .0
            .token
    })
}

/// Compares in time independent of where the strings differ.
fn same_secret(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0, |acc, (x, y)| acc | (x ^ y))
            == 0
}

async fn require_token(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let Some(expected) = &state.token else {
        return next.run(request).await;
    };
    if presented_token(&request).is_some_and(|token| same_secret(&token, expected)) {
        return next.run(request).await;
    }
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, "Bearer")],
        "a token is required: send `Authorization: Bearer TOKEN` or add ?token=TOKEN\n",
    )
        .into_response()
}

/// True when the request does not come from a browser page of another origin: no `Origin`
/// header (not a browser), or one naming the host the request was sent to.
fn same_origin(headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN) else {
        return true;
    };
    let origin_host = origin
        .to_str()
        .ok()
        .and_then(|origin| origin.split_once("://"))
        .map(|(_, host)| host);
    let host = headers
        .get(header::HOST)
        .and_then(|host| host.to_str().ok());
    matches!((origin_host, host), (Some(origin), Some(host)) if origin.eq_ignore_ascii_case(host))
}

/// The answer to `/streams` before the run has started its streams.
fn streams_starting() -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        "the streams are starting\n",
    )
        .into_response()
}

/// Runs a blocking control call off the runtime's workers.
async fn blocking<T: Send + 'static>(
    call: impl FnOnce() -> std::result::Result<T, StreamControlError> + Send + 'static,
) -> std::result::Result<T, StreamControlError> {
    tokio::task::spawn_blocking(call)
        .await
        .unwrap_or(Err(StreamControlError::Closed))
}

fn refused(error: StreamControlError) -> Response {
    let (status, reason) = match error {
        StreamControlError::Invalid(reason) => (StatusCode::BAD_REQUEST, reason),
        StreamControlError::InUse(name) => {
            (StatusCode::CONFLICT, format!("a stream is named {name}"))
        }
        StreamControlError::Unknown(name) => {
            (StatusCode::NOT_FOUND, format!("no stream is named {name}"))
        }
        StreamControlError::Closed => (
            StatusCode::SERVICE_UNAVAILABLE,
            "the run is ending".to_owned(),
        ),
    };
    (status, format!("{}\n", reason.replace('\n', " "))).into_response()
}

async fn list_streams(State(state): State<AppState>) -> Response {
    match state.control.get() {
        Some(control) => Json(control.list()).into_response(),
        None => streams_starting(),
    }
}

async fn add_stream(State(state): State<AppState>, body: Bytes) -> Response {
    let Some(control) = state.control.get().cloned() else {
        return streams_starting();
    };
    let request: StreamRequest = match serde_json::from_slice(&body) {
        Ok(request) => request,
        Err(e) => return refused(StreamControlError::Invalid(format!("body: {e}"))),
    };
    match blocking(move || control.add(request)).await {
        Ok(entry) => (StatusCode::CREATED, Json(entry)).into_response(),
        Err(error) => refused(error),
    }
}

async fn remove_stream(State(state): State<AppState>, Path(name): Path<String>) -> Response {
    let Some(control) = state.control.get().cloned() else {
        return streams_starting();
    };
    match blocking(move || control.remove(&name)).await {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(error) => refused(error),
    }
}

async fn view_page() -> Response {
    ([(header::CACHE_CONTROL, "no-store")], Html(VIEW_PAGE)).into_response()
}

async fn ready(State(state): State<AppState>) -> Response {
    if state.metrics.is_ready() {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "no frame processed yet\n").into_response()
    }
}

async fn metrics(State(state): State<AppState>) -> Response {
    (
        [(header::CONTENT_TYPE, METRICS_CONTENT_TYPE)],
        state.metrics.encode(),
    )
        .into_response()
}

/// The keypoint sets (names, colours, skeleton) of `assets/`, for the view to draw with.
async fn keypoint_set(Path(file): Path<String>) -> Response {
    let json = match file.as_str() {
        "coco17.json" => include_str!("../../assets/keypoints_coco17.json"),
        "coco_wholebody133.json" => include_str!("../../assets/keypoints_coco_wholebody133.json"),
        "goliath308.json" => include_str!("../../assets/keypoints_goliath308.json"),
        _ => return (StatusCode::NOT_FOUND, "no such keypoint set\n").into_response(),
    };
    json_asset(json)
}

/// The segmentation class sets (names, palette) of `assets/`.
async fn class_set(Path(file): Path<String>) -> Response {
    let found = keypoint_sets::CLASS_SETS
        .iter()
        .find(|(name, _)| file.strip_suffix(".json") == Some(name));
    match found {
        Some((_, json)) => json_asset(json),
        None => (StatusCode::NOT_FOUND, "no such class set\n").into_response(),
    }
}

fn json_asset(json: &'static str) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], json).into_response()
}

/// `?stream=NAME`: the one stream a client follows.
#[derive(Deserialize)]
struct StreamQuery {
    stream: Option<String>,
}

async fn websocket(
    State(state): State<AppState>,
    Query(query): Query<StreamQuery>,
    headers: HeaderMap,
    upgrade: WebSocketUpgrade,
) -> Response {
    if state.token.is_none() && !same_origin(&headers) {
        return (
            StatusCode::FORBIDDEN,
            "WebSocket from a page of another origin: start the server with a token\n",
        )
            .into_response();
    }
    // Subscribed before the handshake completes: the client gets everything published after it.
    let subscription = state.results.subscribe_to(query.stream);
    let AppState { stop, session, .. } = state;
    upgrade.on_upgrade(move |socket| send_results(socket, subscription, stop, session))
}

/// Sends the client its queue until it leaves or the server stops; then what is left, and a close.
async fn send_results(
    mut socket: WebSocket,
    subscription: Subscription,
    mut stop: watch::Receiver<bool>,
    _session: mpsc::Sender<()>,
) {
    loop {
        tokio::select! {
            outgoing = subscription.next() => {
                if socket.send(Message::Text(outgoing.text())).await.is_err() {
                    return;
                }
            }
            incoming = socket.recv() => match incoming {
                // Pings are answered inside the WebSocket layer; other input is ignored.
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => return,
                Some(Ok(_)) => {}
            },
            _ = until_stopped(&mut stop) => break,
        }
    }
    while let Some(outgoing) = subscription.try_next() {
        if socket.send(Message::Text(outgoing.text())).await.is_err() {
            return;
        }
    }
    let close = CloseFrame {
        code: close_code::AWAY,
        reason: "server shutting down".into(),
    };
    let _ = socket.send(Message::Close(Some(close))).await;
}

/// `multipart/x-mixed-replace` of JPEGs. Each part is followed at once by the next boundary, so
/// browsers show a frame as soon as it arrives rather than when the next one starts.
async fn video(State(state): State<AppState>, Query(query): Query<StreamQuery>) -> Response {
    let hub = match &query.stream {
        Some(name) => state.frames.hub(name),
        None => state.frames.first(),
    };
    let watcher = hub.watch();
    let opening = Bytes::from(format!("--{MJPEG_BOUNDARY}\r\n"));
    let parts = futures_util::stream::unfold(
        (watcher, state.stop, Some(opening)),
        |(mut watcher, mut stop, opening)| async move {
            if let Some(opening) = opening {
                return Some((Ok::<_, Infallible>(opening), (watcher, stop, None)));
            }
            let jpeg = tokio::select! {
                jpeg = watcher.next() => jpeg?,
                _ = until_stopped(&mut stop) => return None,
            };
            Some((Ok(multipart_part(&jpeg)), (watcher, stop, None)))
        },
    );
    let content_type = format!("multipart/x-mixed-replace; boundary={MJPEG_BOUNDARY}");
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_str(&content_type).expect("a valid header value"),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
        ],
        Body::from_stream(parts),
    )
        .into_response()
}

fn multipart_part(jpeg: &[u8]) -> Bytes {
    let head = format!(
        "Content-Type: image/jpeg\r\nContent-Length: {}\r\n\r\n",
        jpeg.len()
    );
    let tail = format!("\r\n--{MJPEG_BOUNDARY}\r\n");
    [head.as_bytes(), jpeg, tail.as_bytes()].concat().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_addresses() {
        let local = IpAddr::from([127, 0, 0, 1]);
        let parse = |spec| listen_address("--http", spec, local);
        assert_eq!(parse("8080").unwrap(), "127.0.0.1:8080".parse().unwrap());
        assert_eq!(parse(":9002").unwrap(), "127.0.0.1:9002".parse().unwrap());
        assert_eq!(parse("0.0.0.0:80").unwrap(), "0.0.0.0:80".parse().unwrap());
        assert_eq!(parse("[::1]:8080").unwrap(), "[::1]:8080".parse().unwrap());
        let error = parse("nonsense").unwrap_err().to_string();
        assert_eq!(error, "input --http nonsense: expected HOST:PORT or PORT");
        assert!(parse("127.0.0.1:99999").is_err());
    }

    #[test]
    fn origins() {
        let headers = |pairs: &[(header::HeaderName, &'static str)]| {
            pairs
                .iter()
                .map(|(name, value)| (name.clone(), HeaderValue::from_static(value)))
                .collect::<HeaderMap>()
        };
        assert!(same_origin(&headers(&[(header::HOST, "127.0.0.1:8080")])));
        assert!(same_origin(&headers(&[
            (header::HOST, "127.0.0.1:8080"),
            (header::ORIGIN, "http://127.0.0.1:8080")
        ])));
        assert!(!same_origin(&headers(&[
            (header::HOST, "127.0.0.1:8080"),
            (header::ORIGIN, "https://example.com")
        ])));
        assert!(!same_origin(&headers(&[
            (header::HOST, "127.0.0.1:8080"),
            (header::ORIGIN, "null")
        ])));
    }

    #[test]
    fn secrets_compare_whole() {
        assert!(same_secret("abc", "abc"));
        assert!(!same_secret("abc", "abd"));
        assert!(!same_secret("abc", "abcd"));
    }
}
