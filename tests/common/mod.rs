//! Helpers shared by the integration tests: the project's Python (for the independent
//! OpenCV / NumPy references), temporary folders and NumPy files.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

use npyz::WriterBuilder;

/// The checkout: `SAPIENS_REPO_ROOT` (a test binary carried to another machine), else the one
/// the tests were built in.
pub fn repo_root() -> PathBuf {
    std::env::var_os("SAPIENS_REPO_ROOT")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")))
}

/// The Python that has numpy, opencv and onnxruntime: `SAPIENS_PYTHON`, else the project's `.venv`.
pub fn python() -> PathBuf {
    if let Some(p) = std::env::var_os("SAPIENS_PYTHON") {
        return PathBuf::from(p);
    }
    let venv = repo_root().join(".venv/bin/python");
    assert!(
        venv.exists(),
        "no Python environment at {}: run scripts/setup.sh first (or set SAPIENS_PYTHON)",
        venv.display()
    );
    venv
}

/// Runs `tests/reference/<script>` with the project's Python; panics with its stderr on failure.
pub fn run_reference(script: &str, args: &[&str]) -> String {
    let path = repo_root().join("tests/reference").join(script);
    let out = Command::new(python())
        .arg(&path)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot start Python for {script}: {e}"));
    assert!(
        out.status.success(),
        "reference {script} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn write_npy_f32(path: &Path, shape: &[u64], data: &[f32]) {
    let mut out = npyz::WriteOptions::new()
        .default_dtype()
        .shape(shape)
        .writer(std::io::BufWriter::new(
            std::fs::File::create(path).unwrap(),
        ))
        .begin_nd()
        .unwrap();
    out.extend(data.iter().copied()).unwrap();
    out.finish().unwrap();
}

pub fn write_npy_u8(path: &Path, shape: &[u64], data: &[u8]) {
    let mut out = npyz::WriteOptions::new()
        .default_dtype()
        .shape(shape)
        .writer(std::io::BufWriter::new(
            std::fs::File::create(path).unwrap(),
        ))
        .begin_nd()
        .unwrap();
    out.extend(data.iter().copied()).unwrap();
    out.finish().unwrap();
}

pub fn read_npy_f32(path: &Path) -> (Vec<u64>, Vec<f32>) {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let npy = npyz::NpyFile::new(&bytes[..]).unwrap();
    let shape = npy.shape().to_vec();
    (shape, npy.into_vec::<f32>().unwrap())
}

pub fn read_npy_u8(path: &Path) -> (Vec<u64>, Vec<u8>) {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let npy = npyz::NpyFile::new(&bytes[..]).unwrap();
    let shape = npy.shape().to_vec();
    (shape, npy.into_vec::<u8>().unwrap())
}

pub mod cli;
pub mod synthetic;
