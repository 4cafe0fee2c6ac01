//! The library's error type: one variant per way a run can fail, each with a message a user can act on.

use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("input {0}: no such file or folder")]
    InputMissing(PathBuf),
    #[error("input {input}: {reason}")]
    InputInvalid { input: String, reason: String },
    #[error("input {input}: {message}")]
    Decode { input: String, message: String },
    #[error("{0}")]
    OnnxRuntimeNotFound(String),
    /// The requested engine or device cannot run on this machine, or failed to start.
    #[error("{0}")]
    Execution(String),
    /// A CUDA kernel failed to compile, load or run.
    #[error("CUDA: {0}")]
    Cuda(String),
    #[error("model {path}: {reason}")]
    Model { path: PathBuf, reason: String },
    #[error("inference with {model}: {message}")]
    Inference { model: String, message: String },
    /// A remote model's server did not answer (down, unreachable, past the deadline) in a live
    /// run, which drops the frame and goes on. Offline, a server that never answered is an
    /// [`Error::Inference`].
    #[error("inference with {model}: {message}")]
    RemoteUnavailable { model: String, message: String },
    #[error("boxes file {path}, line {line}: {reason}")]
    BoxesFile {
        path: PathBuf,
        line: usize,
        reason: String,
    },
    #[error("{argument}: {reason}")]
    InvalidArgument {
        argument: &'static str,
        reason: String,
    },
    #[error("output {path}: {message}")]
    Output { path: PathBuf, message: String },
    #[error("publishing to {target}: {message}")]
    Publish { target: String, message: String },
    #[error("drawing the overlay: {0}")]
    Render(String),
    #[error("{server} server on {address}: {message}")]
    Server {
        server: &'static str,
        address: String,
        message: String,
    },
    #[error("GStreamer: {0}")]
    Gstreamer(String),
    /// The OS error is part of the message, not a source, so a report that walks the cause
    /// chain says it once.
    #[error("{context}: {error}")]
    Io {
        context: String,
        error: std::io::Error,
    },
}

impl Error {
    pub fn io(context: impl Into<String>, error: std::io::Error) -> Self {
        Error::Io {
            context: context.into(),
            error,
        }
    }

    /// Makes [`Error::Model`]s about the model at `path`, for `map_err`.
    pub fn model(path: &Path) -> impl Fn(String) -> Error + Copy + '_ {
        |reason| Error::Model {
            path: path.to_owned(),
            reason,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
