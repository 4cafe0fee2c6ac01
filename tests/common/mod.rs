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

/// A path as a command-line argument (test paths are UTF-8).
pub fn path_arg(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// The largest element-wise difference of two equally long slices.
pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// Writes `data` as a C-order `.npy` file of this shape, in `T`'s NumPy dtype.
fn write_npy<T: npyz::AutoSerialize + Copy>(path: &Path, shape: &[u64], data: &[T]) {
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

/// Reads a `.npy` file of `T`s: its shape and its data in file order.
fn read_npy<T: npyz::Deserialize>(path: &Path) -> (Vec<u64>, Vec<T>) {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let npy = npyz::NpyFile::new(&bytes[..]).unwrap();
    let shape = npy.shape().to_vec();
    (shape, npy.into_vec::<T>().unwrap())
}

// Typed names, so each call site says which dtype the NumPy side sees.
pub fn write_npy_f32(path: &Path, shape: &[u64], data: &[f32]) {
    write_npy(path, shape, data);
}

pub fn write_npy_u8(path: &Path, shape: &[u64], data: &[u8]) {
    write_npy(path, shape, data);
}

pub fn read_npy_f32(path: &Path) -> (Vec<u64>, Vec<f32>) {
    read_npy(path)
}

pub fn read_npy_u8(path: &Path) -> (Vec<u64>, Vec<u8>) {
    read_npy(path)
}

pub mod cli;
pub mod mqtt;
pub mod process;
pub mod triton;
