//! Opening ONNX Runtime sessions: the one place a model file becomes a session, or a one-line
//! error a user can act on.

use std::path::Path;

use ort::session::Session;
use ort::session::builder::{GraphOptimizationLevel, SessionBuilder};

use super::runtime::Environment;
use crate::error::{Error, Result};

/// Opens the model at `path` in an ONNX Runtime session with this graph optimisation and
/// intra-op threads (0: ONNX Runtime's default, every core), `register_providers` adding execution
/// providers before the model is read. A missing or unloadable model is an [`Error::Model`] with a
/// one-line reason (ONNX Runtime's messages go on with lines of context a user cannot act on).
pub(crate) fn open_session(
    path: &Path,
    environment: &Environment,
    optimization: GraphOptimizationLevel,
    threads: usize,
    register_providers: impl FnOnce(SessionBuilder) -> Result<SessionBuilder>,
) -> Result<Session> {
    let model_error = Error::model(path);
    if !path.is_file() {
        return Err(model_error("no such file".into()));
    }
    let builder = Session::builder(environment)
        .and_then(|b| b.with_optimization_level(optimization).map_err(Into::into))
        .and_then(|b| b.with_intra_threads(threads).map_err(Into::into))
        // The decoder, the preprocessing and the encoder share the cores with inference: idle
        // pool threads that spin between runs take them away (a third of the CPU time of a
        // run with a light model).
        .and_then(|b| b.with_intra_op_spinning(false).map_err(Into::into))
        .and_then(|b| b.with_inter_op_spinning(false).map_err(Into::into))
        // Memory patterns are planned per input shape and kept: with batches of every size
        // (crops of several streams) they held a third more memory at no gain in speed.
        .and_then(|b| b.with_memory_pattern(false).map_err(Into::into))
        .map_err(|e| model_error(first_line(&e.to_string()).to_owned()))?;
    register_providers(builder)?
        .commit_from_file(path)
        .map_err(|e| {
            model_error(format!(
                "not a model ONNX Runtime can load: {}",
                first_line(&e.to_string())
            ))
        })
}

pub(crate) fn first_line(message: &str) -> &str {
    message.lines().next().unwrap_or(message)
}
