//! Finding and loading the ONNX Runtime shared library (`ort` with `load-dynamic`).
//! Order: the explicit `--ort-lib`, then `ORT_DYLIB_PATH`, then the project's Python environment
//! (the `onnxruntime` wheel ships the library), then the system's library folders.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use crate::error::{Error, Result};

const LIBRARY_NAME: &str = "libonnxruntime.so";

/// The loaded ONNX Runtime, which every model session is opened in; code outside the engine
/// passes it on without naming `ort`.
pub type Environment = ort::environment::Environment;

static ENVIRONMENT: OnceLock<std::result::Result<(Environment, PathBuf), String>> = OnceLock::new();

/// The process-wide ONNX Runtime environment, loading the library on first use.
pub fn environment(explicit: Option<&Path>) -> Result<&'static Environment> {
    let loaded = ENVIRONMENT.get_or_init(|| {
        let path = locate_library(explicit)?;
        let builder = ort::init_from(&path)
            .map_err(|e| format!("cannot load ONNX Runtime from {}: {e}", path.display()))?;
        let environment = builder
            .with_name("sapiens-stream")
            .build()
            .map_err(|e| format!("cannot start ONNX Runtime from {}: {e}", path.display()))?;
        Ok((environment, path))
    });
    match loaded {
        Ok((environment, _)) => Ok(environment),
        Err(message) => Err(Error::OnnxRuntimeNotFound(message.clone())),
    }
}

/// Path of the library that was loaded, once [`environment`] succeeded.
pub fn loaded_library() -> Option<&'static Path> {
    ENVIRONMENT
        .get()?
        .as_ref()
        .ok()
        .map(|(_, path)| path.as_path())
}

/// Resolves the library path, or explains everywhere it looked.
pub fn locate_library(explicit: Option<&Path>) -> std::result::Result<PathBuf, String> {
    let mut looked = Vec::new();
    if let Some(path) = explicit {
        if path.is_file() {
            return Ok(path.to_owned());
        }
        return Err(format!("--ort-lib {}: no such file", path.display()));
    }
    // A variable set by hand that points nowhere is a mistake to report, not to paper over.
    match std::env::var_os("ORT_DYLIB_PATH") {
        Some(path) if Path::new(&path).is_file() => return Ok(PathBuf::from(path)),
        Some(path) => {
            return Err(format!(
                "ORT_DYLIB_PATH={}: no such file",
                Path::new(&path).display()
            ));
        }
        None => looked.push("ORT_DYLIB_PATH (unset)".into()),
    }
    for venv in candidate_venvs() {
        if let Some(found) = library_in_venv(&venv) {
            return Ok(found);
        }
        looked.push(format!(
            "{}/lib/python3*/site-packages/onnxruntime/capi",
            venv.display()
        ));
    }
    for dir in system_library_dirs() {
        let candidate = dir.join(LIBRARY_NAME);
        if candidate.is_file() {
            return Ok(candidate);
        }
        looked.push(dir.display().to_string());
    }
    Err(format!(
        "ONNX Runtime library ({LIBRARY_NAME}) not found; looked in: {}. Run scripts/setup.sh (it installs the onnxruntime wheel into .venv), or `pip install onnxruntime==1.31.1` and pass --ort-lib PATH or set ORT_DYLIB_PATH",
        looked.join(", ")
    ))
}

/// `$VIRTUAL_ENV`, then a `.venv` beside the working directory or the executable or any of their parents.
fn candidate_venvs() -> Vec<PathBuf> {
    let mut venvs: Vec<PathBuf> = std::env::var_os("VIRTUAL_ENV")
        .map(PathBuf::from)
        .into_iter()
        .collect();
    let starts = [std::env::current_dir().ok(), std::env::current_exe().ok()];
    for start in starts.into_iter().flatten() {
        for dir in start.ancestors() {
            let venv = dir.join(".venv");
            if venv.is_dir() && !venvs.contains(&venv) {
                venvs.push(venv);
            }
        }
    }
    venvs
}

fn library_in_venv(venv: &Path) -> Option<PathBuf> {
    site_packages_of(venv)
        .into_iter()
        .find_map(|site_packages| versioned_library(&site_packages.join("onnxruntime/capi")))
}

/// `lib/python3*/site-packages` of a virtual environment, sorted.
fn site_packages_of(venv: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(venv.join("lib")) else {
        return Vec::new();
    };
    let mut pythons: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("python3"))
        })
        .map(|p| p.join("site-packages"))
        .collect();
    pythons.sort();
    pythons
}

/// The `site-packages` folders of every candidate environment, where pip's `nvidia-*` and
/// `tensorrt` wheels put their libraries.
pub(crate) fn site_packages_dirs() -> Vec<PathBuf> {
    candidate_venvs()
        .iter()
        .flat_map(|venv| site_packages_of(venv))
        .collect()
}

/// The wheel ships `libonnxruntime.so.1.31.1`, without the unversioned link.
fn versioned_library(dir: &Path) -> Option<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(LIBRARY_NAME))
        })
        .collect();
    found.sort();
    found.pop()
}

fn system_library_dirs() -> Vec<PathBuf> {
    let from_env = std::env::var("LD_LIBRARY_PATH").unwrap_or_default();
    from_env
        .split(':')
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .chain(
            [
                "/usr/local/lib",
                "/usr/lib",
                "/usr/lib/x86_64-linux-gnu",
                "/usr/lib/aarch64-linux-gnu",
            ]
            .map(PathBuf::from),
        )
        .collect()
}
