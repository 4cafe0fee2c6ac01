//! Models on a Triton Inference Server, over its KServe v2 gRPC protocol: a model given as
//! `triton://HOST:PORT/MODEL[/VERSION]` is described by the server's metadata and config and
//! run there, tensors travelling as raw bytes (float32, or float16 where the model declares it)
//! or, on the same host, through registered system shared memory ([`shm`]).
//!
//! The server can go away while the program runs. Offline, a request is retried with backoff
//! until `retry_for` has passed, so no frame is lost to a restart; live, a failed request fails
//! the frame at once ([`Error::RemoteUnavailable`], which the inference stage drops and counts)
//! and the next attempts wait out a growing backoff, so a dead server costs nothing per frame.

pub mod client;
pub mod proto;
pub mod repository;
pub mod shm;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use client::{CallError, TritonClient};
use proto::{
    InferInputTensor, InferRequestedOutputTensor, ModelConfig, ModelInferRequest,
    ModelInferResponse, ModelMetadataResponse, ModelRequest, TensorMetadata,
};

use super::graph::{ElementType, HostTensor, TensorSpec};
use super::{DeclaredShape, Engine, ModelInfo};
use crate::error::{Error, Result};

const SCHEME: &str = "triton://";

/// A model on a Triton server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TritonUrl {
    /// `host:port` of the server's gRPC endpoint.
    pub address: String,
    pub model: String,
    /// Empty: the server's choice.
    pub version: String,
}

impl TritonUrl {
    /// `None` for anything that is not a `triton://` URL (a file path); the reason for one that
    /// is but is malformed.
    pub fn parse(text: &str) -> Option<std::result::Result<Self, String>> {
        let rest = text.strip_prefix(SCHEME)?;
        let usage = || {
            format!("'{text}' is not triton://HOST:PORT/MODEL or triton://HOST:PORT/MODEL/VERSION")
        };
        let parts: Vec<&str> = rest.split('/').collect();
        let (address, model, version) = match parts[..] {
            [address, model] => (address, model, ""),
            [address, model, version] => (address, model, version),
            _ => return Some(Err(usage())),
        };
        let port_ok = address
            .rsplit_once(':')
            .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
        let version_ok = version.is_empty() || version.parse::<u64>().is_ok();
        if !port_ok || model.is_empty() || !version_ok {
            return Some(Err(usage()));
        }
        Some(Ok(TritonUrl {
            address: address.to_owned(),
            model: model.to_owned(),
            version: version.to_owned(),
        }))
    }

    /// Whether a model given where a path is taken (`--pose-model` and the like) is a
    /// triton:// URL.
    pub fn is_url(path: &Path) -> bool {
        path.to_str().is_some_and(|text| text.starts_with(SCHEME))
    }

    /// The URL of a model given where a path is taken; `None` for a file, an [`Error::Model`]
    /// for a malformed URL.
    pub fn of_path(path: &Path) -> Result<Option<Self>> {
        path.to_str()
            .and_then(Self::parse)
            .transpose()
            .map_err(Error::model(path))
    }

    fn request(&self) -> ModelRequest {
        ModelRequest {
            name: self.model.clone(),
            version: self.version.clone(),
        }
    }
}

impl std::fmt::Display for TritonUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{SCHEME}{}/{}", self.address, self.model)?;
        if !self.version.is_empty() {
            write!(f, "/{}", self.version)?;
        }
        Ok(())
    }
}

/// How a remote model behaves when the server does not answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RemoteOptions {
    /// A request without an answer by then has failed.
    pub deadline: Duration,
    /// Offline: how long a request is retried before the run gives up. `None` (live): a
    /// failed request fails its frame, and attempts back off.
    pub retry_for: Option<Duration>,
    /// Inputs and outputs through system shared memory (the server on this host).
    pub shared_memory: bool,
}

impl Default for RemoteOptions {
    fn default() -> Self {
        RemoteOptions {
            deadline: Duration::from_secs(10),
            retry_for: Some(Duration::from_secs(60)),
            shared_memory: false,
        }
    }
}

/// A tensor's element type on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Wire {
    F32,
    F16,
    I64,
    I32,
}

impl Wire {
    fn of(datatype: &str) -> Option<Self> {
        Some(match datatype {
            "FP32" => Wire::F32,
            "FP16" => Wire::F16,
            "INT64" => Wire::I64,
            "INT32" => Wire::I32,
            _ => return None,
        })
    }

    fn name(self) -> &'static str {
        match self {
            Wire::F32 => "FP32",
            Wire::F16 => "FP16",
            Wire::I64 => "INT64",
            Wire::I32 => "INT32",
        }
    }

    fn size(self) -> usize {
        match self {
            Wire::F32 | Wire::I32 => 4,
            Wire::F16 => 2,
            Wire::I64 => 8,
        }
    }

    fn is_float(self) -> bool {
        matches!(self, Wire::F32 | Wire::F16)
    }
}

/// A tensor as the server declares it.
#[derive(Clone, Debug)]
struct RemoteTensor {
    name: String,
    wire: Wire,
    /// With the batch dimension; `None` where variable.
    shape: DeclaredShape,
}

impl RemoteTensor {
    fn spec(&self) -> TensorSpec {
        TensorSpec {
            name: self.name.clone(),
            // Float16 arrives as float32: the client widens it.
            element: Some(match self.wire {
                Wire::F32 | Wire::F16 => ElementType::F32,
                Wire::I32 => ElementType::I32,
                Wire::I64 => ElementType::I64,
            }),
            shape: Some(self.shape.clone()),
            type_name: self.wire.name().to_owned(),
            value_type: format!("tensor({})", self.wire.name()),
        }
    }
}

/// What the server says about a model, for `doctor` and `models inspect`.
#[derive(Clone, Debug)]
pub struct RemoteDescription {
    pub server_name: String,
    pub server_version: String,
    pub server_live: bool,
    pub server_ready: bool,
    pub model_ready: bool,
    pub platform: String,
    pub versions: Vec<String>,
    pub inputs: Vec<TensorSpec>,
    pub outputs: Vec<TensorSpec>,
    /// 0: the model takes no batch dimension.
    pub max_batch_size: i32,
    /// `None` without dynamic batching; else its queue delay in microseconds.
    pub dynamic_batching: Option<u64>,
    /// (kind, count) per instance group.
    pub instance_groups: Vec<(String, i32)>,
    pub parameters: BTreeMap<String, String>,
}

/// Asks the server about `url`'s model: health, version, readiness, metadata and config. An
/// unreachable server or unknown model is an [`Error::Model`] naming the URL.
pub fn describe(url: &TritonUrl, deadline: Duration) -> Result<RemoteDescription> {
    let path = PathBuf::from(url.to_string());
    let fail = Error::model(&path);
    let client = TritonClient::new(&url.address, deadline).map_err(fail)?;
    let unreachable = |e: CallError| fail(unreachable_text(&client, &e));
    let server_live = client.server_live().map_err(unreachable)?;
    let server = client.server_metadata().map_err(unreachable)?;
    let server_ready = client.server_ready().map_err(unreachable)?;
    let model_ready = client.model_ready(&url.request()).unwrap_or(false);
    let Served {
        metadata,
        config,
        inputs,
        outputs,
    } = served(&client, url)?;
    Ok(RemoteDescription {
        server_name: server.name,
        server_version: server.version,
        server_live,
        server_ready,
        model_ready,
        platform: if metadata.platform.is_empty() {
            config.backend.clone()
        } else {
            metadata.platform.clone()
        },
        versions: metadata.versions,
        inputs: inputs.iter().map(RemoteTensor::spec).collect(),
        outputs: outputs.iter().map(RemoteTensor::spec).collect(),
        max_batch_size: config.max_batch_size,
        dynamic_batching: config
            .dynamic_batching
            .as_ref()
            .map(|d| d.max_queue_delay_microseconds),
        instance_groups: config
            .instance_group
            .iter()
            .map(|g| (instance_kind(g.kind).to_owned(), g.count))
            .collect(),
        parameters: parameters(&config),
    })
}

fn instance_kind(kind: i32) -> &'static str {
    match kind {
        1 => "gpu",
        2 => "cpu",
        3 => "model",
        _ => "auto",
    }
}

fn parameters(config: &ModelConfig) -> BTreeMap<String, String> {
    config
        .parameters
        .iter()
        .map(|(k, v)| (k.clone(), v.string_value.clone()))
        .collect()
}

fn unreachable_text(client: &TritonClient, error: &CallError) -> String {
    format!("Triton server at {} unreachable: {error}", client.address())
}

fn model_unknown(client: &TritonClient, url: &TritonUrl, error: &CallError) -> String {
    match error {
        CallError::Unreachable(_) => unreachable_text(client, error),
        CallError::NotServed(message) | CallError::Refused(message) => format!(
            "the Triton server at {} does not serve model '{}'{}: {message}",
            client.address(),
            url.model,
            if url.version.is_empty() {
                String::new()
            } else {
                format!(" version {}", url.version)
            }
        ),
    }
}

/// A model as its server declares it.
struct Served {
    metadata: ModelMetadataResponse,
    config: ModelConfig,
    inputs: Vec<RemoteTensor>,
    outputs: Vec<RemoteTensor>,
}

/// Reads `url`'s model metadata and config; a server that cannot be reached or does not serve
/// the model is an [`Error::Model`] naming the URL.
fn served(client: &TritonClient, url: &TritonUrl) -> Result<Served> {
    let path = PathBuf::from(url.to_string());
    let fail = Error::model(&path);
    let request = url.request();
    let metadata = client
        .model_metadata(&request)
        .map_err(|e| fail(model_unknown(client, url, &e)))?;
    let config = client
        .model_config(&request)
        .map_err(|e| fail(model_unknown(client, url, &e)))?;
    let (inputs, outputs) = tensors(&metadata).map_err(fail)?;
    Ok(Served {
        metadata,
        config,
        inputs,
        outputs,
    })
}

fn tensors(
    metadata: &ModelMetadataResponse,
) -> std::result::Result<(Vec<RemoteTensor>, Vec<RemoteTensor>), String> {
    let convert = |t: &TensorMetadata| -> std::result::Result<RemoteTensor, String> {
        let wire = Wire::of(&t.datatype).ok_or_else(|| {
            format!(
                "tensor '{}' is {}, not FP32, FP16, INT32 or INT64",
                t.name, t.datatype
            )
        })?;
        Ok(RemoteTensor {
            name: t.name.clone(),
            wire,
            shape: t.shape.iter().map(|&d| usize::try_from(d).ok()).collect(),
        })
    };
    let inputs = metadata
        .inputs
        .iter()
        .map(convert)
        .collect::<std::result::Result<_, _>>()?;
    let outputs = metadata
        .outputs
        .iter()
        .map(convert)
        .collect::<std::result::Result<_, _>>()?;
    Ok((inputs, outputs))
}

/// A model on a Triton server with one float image input and any outputs.
pub struct RemoteModel {
    client: TritonClient,
    url: TritonUrl,
    input: RemoteTensor,
    outputs: Vec<RemoteTensor>,
    /// Items per request: the server's `max_batch_size`, or the fixed batch of a model that
    /// takes none.
    request_items: usize,
    parameters: BTreeMap<String, String>,
    options: RemoteOptions,
    backoff: Backoff,
    shared_memory: Option<shm::Regions>,
}

impl RemoteModel {
    /// Connects and reads the model's metadata and config; an unreachable server, an unknown
    /// model or a model without one float input is a one-line error.
    pub fn connect(url: &TritonUrl, options: RemoteOptions) -> Result<Self> {
        let path = PathBuf::from(url.to_string());
        let fail = Error::model(&path);
        let client = TritonClient::new(&url.address, options.deadline).map_err(fail)?;
        let Served {
            config,
            inputs,
            outputs,
            ..
        } = served(&client, url)?;
        if !client
            .model_ready(&url.request())
            .map_err(|e| fail(unreachable_text(&client, &e)))?
        {
            return Err(fail(format!(
                "model '{}' is not ready on the Triton server at {}",
                url.model, url.address
            )));
        }
        let [input] = &inputs[..] else {
            return Err(fail(format!("expected 1 input, found {}", inputs.len())));
        };
        if !input.wire.is_float() {
            return Err(fail(format!(
                "input '{}' is {}, not FP32 or FP16",
                input.name,
                input.wire.name()
            )));
        }
        if outputs.is_empty() {
            return Err(fail("the model has no outputs".into()));
        }
        let request_items = match (config.max_batch_size, input.shape.first()) {
            (n, _) if n > 0 => n as usize,
            (_, Some(Some(fixed))) => *fixed,
            _ => 1,
        };
        let shared_memory = options
            .shared_memory
            .then(|| shm::Regions::new(&client, &url.model));
        Ok(RemoteModel {
            client,
            url: url.clone(),
            input: input.clone(),
            outputs,
            request_items,
            parameters: parameters(&config),
            options,
            backoff: Backoff::default(),
            shared_memory,
        })
    }

    pub fn inputs(&self) -> Vec<TensorSpec> {
        vec![self.input.spec()]
    }

    pub fn outputs(&self) -> Vec<TensorSpec> {
        self.outputs.iter().map(RemoteTensor::spec).collect()
    }

    pub fn url(&self) -> &TritonUrl {
        &self.url
    }

    /// Runs `values` of `shape` (batch first) and returns every output, batch first, in the
    /// server's declared order. A batch larger than the server takes goes as several requests
    /// in flight together.
    pub fn run(&mut self, values: &[f32], shape: &[usize]) -> Result<Vec<HostTensor>> {
        let started = Instant::now();
        let mut remapped = false;
        loop {
            if let Some(wait) = self.backoff.wait_left() {
                if self.options.retry_for.is_none() {
                    return Err(self.unavailable(format!(
                        "the Triton server at {} is down; next attempt in {:.1} s",
                        self.url.address,
                        wait.as_secs_f32()
                    )));
                }
                std::thread::sleep(wait);
            }
            match self.attempt(values, shape) {
                Ok(outputs) => {
                    if self.backoff.succeeded() {
                        tracing::info!(model = %self.url, "the Triton server answers again");
                    }
                    return Ok(outputs);
                }
                // A server restarted between two requests no longer knows the regions named.
                Err(CallError::Refused(message))
                    if self.shared_memory.is_some()
                        && message.contains("shared memory")
                        && !remapped =>
                {
                    tracing::info!(model = %self.url, "registering the shared memory again: {message}");
                    if let Some(regions) = self.shared_memory.as_mut() {
                        regions.forget();
                    }
                    remapped = true;
                }
                Err(CallError::Refused(message)) => {
                    return Err(Error::Inference {
                        model: self.url.to_string(),
                        message,
                    });
                }
                // Gone, or back without the model loaded yet: a restart. A restarted server has
                // also forgotten the shared memory it had mapped.
                Err(error) => {
                    let message = error.to_string();
                    if let Some(regions) = self.shared_memory.as_mut() {
                        regions.forget();
                    }
                    if self.backoff.failed() {
                        tracing::warn!(model = %self.url, "Triton request failed: {message}; retrying with backoff");
                    }
                    let given_up = self
                        .options
                        .retry_for
                        .is_none_or(|limit| started.elapsed() >= limit);
                    if given_up {
                        return Err(match self.options.retry_for {
                            Some(limit) => Error::Inference {
                                model: self.url.to_string(),
                                message: format!(
                                    "the Triton server at {} did not answer for {:.0} s (--remote-timeout): {message}",
                                    self.url.address,
                                    limit.as_secs_f32()
                                ),
                            },
                            None => self.unavailable(format!(
                                "Triton server at {}: {message}",
                                self.url.address
                            )),
                        });
                    }
                }
            }
        }
    }

    fn unavailable(&self, message: String) -> Error {
        Error::RemoteUnavailable {
            model: self.url.to_string(),
            message,
        }
    }

    /// One try: the batch in requests of at most `request_items`, sent together.
    fn attempt(
        &mut self,
        values: &[f32],
        shape: &[usize],
    ) -> std::result::Result<Vec<HostTensor>, CallError> {
        let item_len = shape[1..].iter().product::<usize>().max(1);
        let requests: Vec<ModelInferRequest> = values[..shape[0] * item_len]
            .chunks(self.request_items.max(1) * item_len)
            .enumerate()
            .map(|(slot, chunk)| {
                let mut chunk_shape = shape.to_vec();
                chunk_shape[0] = chunk.len() / item_len;
                self.request(slot, chunk, &chunk_shape)
            })
            .collect::<std::result::Result<_, _>>()?;
        let answers = self
            .client
            .call_all::<_, ModelInferResponse>("ModelInfer", requests);
        let mut merged: Option<Vec<HostTensor>> = None;
        for (slot, answer) in answers.into_iter().enumerate() {
            let outputs = self.read_response(slot, answer?)?;
            merged = Some(match merged {
                None => outputs,
                Some(so_far) => append_batches(so_far, outputs),
            });
        }
        merged.ok_or_else(|| CallError::Refused("an empty batch".into()))
    }

    fn request(
        &mut self,
        slot: usize,
        values: &[f32],
        shape: &[usize],
    ) -> std::result::Result<ModelInferRequest, CallError> {
        let wire = self.input.wire;
        let mut input = InferInputTensor {
            name: self.input.name.clone(),
            datatype: self.input.wire.name().to_owned(),
            shape: shape.iter().map(|&d| d as i64).collect(),
            ..Default::default()
        };
        let mut outputs: Vec<InferRequestedOutputTensor> = self
            .outputs
            .iter()
            .map(|o| InferRequestedOutputTensor {
                name: o.name.clone(),
                ..Default::default()
            })
            .collect();
        let mut raw_input_contents = Vec::new();
        match self.shared_memory.as_mut() {
            Some(regions) => {
                let output_sizes = self
                    .outputs
                    .iter()
                    .map(|o| output_bytes(o, shape[0]))
                    .collect::<Vec<_>>();
                let (placed, bytes) =
                    regions.place(slot, values.len() * wire.size(), &output_sizes)?;
                encode_into(values, wire, bytes);
                input.parameters = placed.input;
                for (output, parameters) in outputs.iter_mut().zip(placed.outputs) {
                    output.parameters = parameters;
                }
            }
            None => raw_input_contents.push(encode(values, wire)),
        }
        Ok(ModelInferRequest {
            model_name: self.url.model.clone(),
            model_version: self.url.version.clone(),
            inputs: vec![input],
            outputs,
            raw_input_contents,
        })
    }

    fn read_response(
        &self,
        slot: usize,
        response: ModelInferResponse,
    ) -> std::result::Result<Vec<HostTensor>, CallError> {
        let refused = |m: String| CallError::Refused(m);
        self.outputs
            .iter()
            .enumerate()
            .map(|(i, declared)| {
                let (position, tensor) = response
                    .outputs
                    .iter()
                    .enumerate()
                    .find(|(_, t)| t.name == declared.name)
                    .ok_or_else(|| {
                        refused(format!("the answer has no output '{}'", declared.name))
                    })?;
                let wire = Wire::of(&tensor.datatype).ok_or_else(|| {
                    refused(format!(
                        "output '{}' came as {}",
                        tensor.name, tensor.datatype
                    ))
                })?;
                let bytes: &[u8] = match self.shared_memory.as_ref() {
                    Some(regions) => {
                        let len =
                            tensor.shape.iter().product::<i64>().max(0) as usize * wire.size();
                        regions.output(slot, i, len)
                    }
                    None => response.raw_output_contents.get(position).ok_or_else(|| {
                        refused(format!("output '{}' has no raw contents", tensor.name))
                    })?,
                };
                decode(bytes, wire, tensor.shape.clone()).map_err(refused)
            })
            .collect()
    }
}

/// Bytes an output of `batch` items takes; variable dimensions count as one (the region grows
/// when an answer is larger).
fn output_bytes(output: &RemoteTensor, batch: usize) -> usize {
    let item: usize = output.shape[1..].iter().map(|d| d.unwrap_or(1)).product();
    item * batch * output.wire.size()
}

/// `values` as a float input on the wire.
fn encode(values: &[f32], wire: Wire) -> Vec<u8> {
    let mut bytes = vec![0; values.len() * wire.size()];
    encode_into(values, wire, &mut bytes);
    bytes
}

/// `values` as a float input on the wire, into `bytes` (`values.len() * wire.size()` of them).
fn encode_into(values: &[f32], wire: Wire, bytes: &mut [u8]) {
    match wire {
        Wire::F16 => {
            for (value, out) in values.iter().zip(bytes.chunks_exact_mut(2)) {
                out.copy_from_slice(&half::f16::from_f32(*value).to_le_bytes());
            }
        }
        _ => {
            for (value, out) in values.iter().zip(bytes.chunks_exact_mut(4)) {
                out.copy_from_slice(&value.to_le_bytes());
            }
        }
    }
}

fn decode(bytes: &[u8], wire: Wire, shape: Vec<i64>) -> std::result::Result<HostTensor, String> {
    let count = shape.iter().product::<i64>().max(0) as usize;
    if bytes.len() != count * wire.size() {
        return Err(format!(
            "an output of shape {shape:?} came with {} bytes, expected {}",
            bytes.len(),
            count * wire.size()
        ));
    }
    Ok(match wire {
        Wire::F32 => HostTensor::F32 {
            shape,
            values: bytes
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect(),
        },
        Wire::F16 => HostTensor::F32 {
            shape,
            values: bytes
                .chunks_exact(2)
                .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect(),
        },
        Wire::I32 => HostTensor::I64 {
            shape,
            values: bytes
                .chunks_exact(4)
                .map(|b| i64::from(i32::from_le_bytes([b[0], b[1], b[2], b[3]])))
                .collect(),
        },
        Wire::I64 => HostTensor::I64 {
            shape,
            values: bytes
                .chunks_exact(8)
                .map(|b| i64::from_le_bytes(b.try_into().expect("chunks of 8")))
                .collect(),
        },
    })
}

/// The outputs of a later chunk appended to those of the earlier ones, along the batch.
fn append_batches(mut so_far: Vec<HostTensor>, more: Vec<HostTensor>) -> Vec<HostTensor> {
    for (into, from) in so_far.iter_mut().zip(more) {
        match (into, from) {
            (
                HostTensor::F32 { shape, values },
                HostTensor::F32 {
                    shape: s,
                    values: v,
                },
            ) => {
                shape[0] += s[0];
                values.extend(v);
            }
            (
                HostTensor::I64 { shape, values },
                HostTensor::I64 {
                    shape: s,
                    values: v,
                },
            ) => {
                shape[0] += s[0];
                values.extend(v);
            }
            _ => {}
        }
    }
    so_far
}

/// When to try a server that failed again: 0.25 s after the first failure, doubling to 5 s.
#[derive(Default)]
struct Backoff {
    failures: u32,
    next_attempt: Option<Instant>,
}

impl Backoff {
    const FIRST: Duration = Duration::from_millis(250);
    const LONGEST: Duration = Duration::from_secs(5);

    fn wait_left(&self) -> Option<Duration> {
        let left = self.next_attempt?.saturating_duration_since(Instant::now());
        (!left.is_zero()).then_some(left)
    }

    /// Records a failure; true for the first of a run of them.
    fn failed(&mut self) -> bool {
        let delay = Self::FIRST
            .saturating_mul(1 << self.failures.min(5))
            .min(Self::LONGEST);
        self.failures += 1;
        self.next_attempt = Some(Instant::now() + delay);
        self.failures == 1
    }

    /// Records a success; true when it ends a run of failures.
    fn succeeded(&mut self) -> bool {
        let recovered = self.failures > 0;
        self.failures = 0;
        self.next_attempt = None;
        recovered
    }
}

/// A Sapiens task model on Triton: one float image input, the first output read.
pub struct TritonEngine {
    model: RemoteModel,
    info: ModelInfo,
    item: Vec<usize>,
}

impl TritonEngine {
    pub fn connect(url: &TritonUrl, options: RemoteOptions) -> Result<Self> {
        let model = RemoteModel::connect(url, options)?;
        let path = PathBuf::from(url.to_string());
        let output = &model.outputs[0];
        if !output.wire.is_float() {
            return Err(Error::model(&path)(format!(
                "output '{}' is {}, not FP32 or FP16",
                output.name,
                output.wire.name()
            )));
        }
        let item = model.input.shape[1..]
            .iter()
            .map(|d| {
                d.ok_or_else(|| {
                    format!("'{}' has a variable non-batch dimension", model.input.name)
                })
            })
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(Error::model(&path))?;
        let info = ModelInfo {
            path,
            id: url.model.clone(),
            input_name: model.input.name.clone(),
            input_shape: model.input.shape.clone(),
            output_name: output.name.clone(),
            output_shape: output.shape.clone(),
            metadata: model.parameters.clone(),
            provider: format!("triton:{}", url.address),
        };
        Ok(TritonEngine { model, info, item })
    }
}

impl Engine for TritonEngine {
    fn info(&self) -> &ModelInfo {
        &self.info
    }

    fn is_remote(&self) -> bool {
        true
    }

    fn run(&mut self, input: &[f32], batch: usize, output: &mut Vec<f32>) -> Result<()> {
        let mut shape = vec![batch];
        shape.extend_from_slice(&self.item);
        let outputs = self.model.run(input, &shape)?;
        match outputs.into_iter().next() {
            Some(HostTensor::F32 { values, .. }) => {
                output.extend_from_slice(&values);
                Ok(())
            }
            _ => Err(Error::Inference {
                model: self.info.id.clone(),
                message: "the first output is not a float tensor".into(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_model_urls() {
        let url = TritonUrl::parse("triton://gpu-pool:8001/sapiens_pose/3")
            .unwrap()
            .unwrap();
        assert_eq!(url.address, "gpu-pool:8001");
        assert_eq!(url.model, "sapiens_pose");
        assert_eq!(url.version, "3");
        assert_eq!(url.to_string(), "triton://gpu-pool:8001/sapiens_pose/3");
        let url = TritonUrl::parse("triton://127.0.0.1:8001/seg")
            .unwrap()
            .unwrap();
        assert_eq!(
            (url.version.as_str(), url.to_string().as_str()),
            ("", "triton://127.0.0.1:8001/seg")
        );
        assert!(TritonUrl::parse("models/pose.onnx").is_none());
        for bad in [
            "triton://host/seg",
            "triton://host:port/seg",
            "triton://:8001/seg",
            "triton://host:8001/",
            "triton://host:8001/seg/latest",
            "triton://host:8001/a/1/b",
        ] {
            let error = TritonUrl::parse(bad).unwrap().unwrap_err();
            assert!(error.contains("triton://HOST:PORT/MODEL"), "{bad}: {error}");
        }
    }

    #[test]
    fn tensors_round_trip_through_the_wire_types() {
        let values = [0.5f32, -1.25, 3.0, 1e-3];
        let back = decode(&encode(&values, Wire::F32), Wire::F32, vec![1, 4]).unwrap();
        assert_eq!(
            back,
            HostTensor::F32 {
                shape: vec![1, 4],
                values: values.to_vec()
            }
        );
        let HostTensor::F32 {
            values: half_back, ..
        } = decode(&encode(&values, Wire::F16), Wire::F16, vec![4]).unwrap()
        else {
            panic!("float16 widens to float32");
        };
        for (a, b) in values.iter().zip(half_back) {
            assert!((a - b).abs() <= a.abs() * 1e-3, "{a} vs {b}");
        }
        let longs: Vec<u8> = [7i64, -2].iter().flat_map(|v| v.to_le_bytes()).collect();
        assert_eq!(
            decode(&longs, Wire::I64, vec![2]).unwrap(),
            HostTensor::I64 {
                shape: vec![2],
                values: vec![7, -2]
            }
        );
        assert!(
            decode(&longs, Wire::F32, vec![3])
                .unwrap_err()
                .contains("16 bytes, expected 12")
        );
    }

    #[test]
    fn chunks_append_along_the_batch() {
        let a = vec![HostTensor::F32 {
            shape: vec![2, 1],
            values: vec![1.0, 2.0],
        }];
        let b = vec![HostTensor::F32 {
            shape: vec![1, 1],
            values: vec![3.0],
        }];
        assert_eq!(
            append_batches(a, b),
            vec![HostTensor::F32 {
                shape: vec![3, 1],
                values: vec![1.0, 2.0, 3.0]
            }]
        );
    }

    #[test]
    fn backoff_doubles_to_its_cap_and_resets() {
        let mut backoff = Backoff::default();
        assert!(backoff.wait_left().is_none());
        assert!(backoff.failed());
        assert!(!backoff.failed());
        let wait = backoff.wait_left().unwrap();
        assert!(
            wait > Duration::from_millis(400) && wait <= Duration::from_millis(500),
            "{wait:?}"
        );
        for _ in 0..10 {
            backoff.failed();
        }
        assert!(backoff.wait_left().unwrap() <= Backoff::LONGEST);
        assert!(backoff.succeeded());
        assert!(backoff.wait_left().is_none() && !backoff.succeeded());
    }

    #[test]
    fn an_unreachable_server_is_one_line() {
        let url = TritonUrl::parse("triton://127.0.0.1:9/pose")
            .unwrap()
            .unwrap();
        let options = RemoteOptions {
            deadline: Duration::from_secs(2),
            ..RemoteOptions::default()
        };
        let error = RemoteModel::connect(&url, options)
            .err()
            .unwrap()
            .to_string();
        assert!(
            error.starts_with(
                "model triton://127.0.0.1:9/pose: Triton server at 127.0.0.1:9 unreachable"
            ),
            "{error}"
        );
        assert!(!error.contains('\n'), "{error}");
    }
}
