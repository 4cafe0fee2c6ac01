//! A gRPC client for one Triton server: the calls of the KServe v2 protocol the engine uses,
//! each bounded by a deadline, on a small runtime of its own so the inference stage can call
//! it from its thread.

use std::sync::OnceLock;
use std::time::Duration;

use tonic::client::Grpc;
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::{Channel, Endpoint};
use tonic_prost::ProstCodec;

use super::proto::*;

const SERVICE: &str = "/inference.GRPCInferenceService/";

/// Why a call failed: the server could not be reached (or did not answer in time), it does not
/// serve the model (unknown, or not loaded: a server stopping or starting says so too), or it
/// answered with another error.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CallError {
    Unreachable(String),
    NotServed(String),
    Refused(String),
}

impl CallError {
    /// The server is away (down, restarting, loading its models): worth another try once the
    /// model was found at start.
    pub fn is_transient(&self) -> bool {
        matches!(self, CallError::Unreachable(_) | CallError::NotServed(_))
    }
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CallError::Unreachable(m) | CallError::NotServed(m) | CallError::Refused(m) => {
                f.write_str(m)
            }
        }
    }
}

/// The runtime every client's calls run on: two threads are plenty for a few requests in
/// flight, and the network side of the program keeps its own.
fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("triton-client")
            .enable_all()
            .build()
            .expect("a tokio runtime starts (threads and timers are available)")
    })
}

/// A connection to `host:port`, made on first use and again after it broke.
#[derive(Clone)]
pub struct TritonClient {
    grpc: Grpc<Channel>,
    address: String,
    deadline: Duration,
}

impl TritonClient {
    /// A client for `address` (`host:port`) whose calls fail after `deadline`. Nothing is
    /// sent until the first call.
    pub fn new(address: &str, deadline: Duration) -> Result<Self, String> {
        let endpoint = Endpoint::from_shared(format!("http://{address}"))
            .map_err(|e| format!("'{address}' is not a host:port ({e})"))?
            .connect_timeout(deadline.min(Duration::from_secs(5)))
            .tcp_nodelay(true);
        let channel = {
            let _entered = runtime().enter();
            endpoint.connect_lazy()
        };
        // Tensors are megabytes: the 4 MiB default would refuse a single pose crop.
        let grpc = Grpc::new(channel)
            .max_decoding_message_size(usize::MAX)
            .max_encoding_message_size(usize::MAX);
        Ok(TritonClient {
            grpc,
            address: address.to_owned(),
            deadline,
        })
    }

    pub fn address(&self) -> &str {
        &self.address
    }

    /// Calls `method` with `request` and waits for the answer, at most the deadline.
    pub fn call<Q, A>(&self, method: &'static str, request: Q) -> Result<A, CallError>
    where
        Q: prost::Message + Send + Sync + 'static,
        A: prost::Message + Default + Send + Sync + 'static,
    {
        runtime().block_on(self.call_async(method, request))
    }

    /// As [`Self::call`], for requests sent together.
    pub async fn call_async<Q, A>(&self, method: &'static str, request: Q) -> Result<A, CallError>
    where
        Q: prost::Message + Send + Sync + 'static,
        A: prost::Message + Default + Send + Sync + 'static,
    {
        let mut grpc = self.grpc.clone();
        let call = async move {
            grpc.ready().await.map_err(|e| {
                CallError::Unreachable(format!("cannot connect: {}", source_text(&e)))
            })?;
            let path: PathAndQuery = format!("{SERVICE}{method}")
                .parse()
                .expect("the service and method names make a valid path");
            let codec: ProstCodec<Q, A> = ProstCodec::default();
            grpc.unary(tonic::Request::new(request), path, codec)
                .await
                .map(tonic::Response::into_inner)
                .map_err(status_error)
        };
        match tokio::time::timeout(self.deadline, call).await {
            Ok(answer) => answer,
            Err(_) => Err(CallError::Unreachable(format!(
                "no answer within {:.1} s",
                self.deadline.as_secs_f32()
            ))),
        }
    }

    /// Runs requests sent together (chunks of a batch) and waits for every answer.
    pub fn call_all<Q, A>(
        &self,
        method: &'static str,
        requests: Vec<Q>,
    ) -> Vec<Result<A, CallError>>
    where
        Q: prost::Message + Send + Sync + 'static,
        A: prost::Message + Default + Send + Sync + 'static,
    {
        runtime().block_on(futures_util::future::join_all(
            requests.into_iter().map(|r| self.call_async(method, r)),
        ))
    }

    pub fn server_live(&self) -> Result<bool, CallError> {
        self.call::<_, ServerLiveResponse>("ServerLive", ServerLiveRequest {})
            .map(|r| r.live)
    }

    pub fn server_ready(&self) -> Result<bool, CallError> {
        self.call::<_, ServerReadyResponse>("ServerReady", ServerReadyRequest {})
            .map(|r| r.ready)
    }

    pub fn server_metadata(&self) -> Result<ServerMetadataResponse, CallError> {
        self.call("ServerMetadata", ServerMetadataRequest {})
    }

    pub fn model_ready(&self, model: &ModelRequest) -> Result<bool, CallError> {
        self.call::<_, ModelReadyResponse>("ModelReady", model.clone())
            .map(|r| r.ready)
    }

    pub fn model_metadata(&self, model: &ModelRequest) -> Result<ModelMetadataResponse, CallError> {
        self.call("ModelMetadata", model.clone())
    }

    pub fn model_config(&self, model: &ModelRequest) -> Result<ModelConfig, CallError> {
        self.call::<_, ModelConfigResponse>("ModelConfig", model.clone())
            .map(|r| r.config.unwrap_or_default())
    }
}

/// A status that means the server is not there (down, restarting, overloaded) is
/// [`CallError::Unreachable`] and worth a retry; any other is the server's answer.
fn status_error(status: tonic::Status) -> CallError {
    use tonic::Code;
    let message = match std::error::Error::source(&status) {
        // A transport failure: the message is its first line, the causes say why.
        Some(cause) => source_text(cause),
        None if status.message().is_empty() => format!("{:?}", status.code()),
        None => status.message().to_owned(),
    };
    match status.code() {
        Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled | Code::ResourceExhausted => {
            CallError::Unreachable(message)
        }
        Code::NotFound => CallError::NotServed(message),
        _ => CallError::Refused(message),
    }
}

/// A transport error with its causes: "tcp connect error: Connection refused (os error 111)".
fn source_text(error: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = vec![error.to_string()];
    let mut inner = error.source();
    while let Some(cause) = inner {
        let text = cause.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        inner = cause.source();
    }
    parts.join(": ")
}
