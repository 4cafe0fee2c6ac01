//! TensorRT through ONNX Runtime's TensorRT execution provider: the batch shape profile and the
//! engine cache. Building an engine takes minutes for the larger models, so engines and timing
//! caches are kept under `engines/cache/`, one folder per model file, GPU, TensorRT version,
//! precision and shape profile: a change to any of them builds a new engine instead of loading a
//! stale one.

use std::fmt::Write as _;
use std::io::Read;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// Where engines are cached unless told otherwise (relative to the working directory).
pub const DEFAULT_CACHE_ROOT: &str = "engines/cache";

/// TensorRT settings beyond the device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorRtOptions {
    /// Half-precision kernels where TensorRT finds them faster (the default: Sapiens is trained
    /// in bf16/fp32 and fp16 inference matches it closely).
    pub fp16: bool,
    pub cache_root: PathBuf,
}

impl Default for TensorRtOptions {
    fn default() -> Self {
        TensorRtOptions {
            fp16: true,
            cache_root: PathBuf::from(DEFAULT_CACHE_ROOT),
        }
    }
}

/// The batch sizes an engine is built for: any batch from `min` to `max` runs, `opt` runs fastest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ShapeProfile {
    pub min: usize,
    pub opt: usize,
    pub max: usize,
}

impl ShapeProfile {
    /// Batches of 1 to `max_batch`, tuned for half the largest: single persons and full batches
    /// both stay near their best.
    pub fn up_to(max_batch: usize) -> Self {
        let max = max_batch.max(1);
        ShapeProfile {
            min: 1,
            opt: max.div_ceil(2),
            max,
        }
    }

    /// ONNX Runtime's `trt_profile_{min,opt,max}_shapes` values for an input whose item shape
    /// (without the batch) is `item`: `input:1x3x1024x768`.
    pub fn shapes(&self, input_name: &str, item: &[usize]) -> [String; 3] {
        [self.min, self.opt, self.max].map(|batch| {
            let mut shape = format!("{input_name}:{batch}");
            for dim in item {
                let _ = write!(shape, "x{dim}");
            }
            shape
        })
    }
}

/// What an engine depends on; equal keys may share an engine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CacheKey {
    /// SHA-256 of the .onnx file, hex.
    pub model_sha256: String,
    pub gpu: String,
    pub tensorrt_version: String,
    pub fp16: bool,
    /// The three profile strings, joined.
    pub profile: String,
}

impl CacheKey {
    /// The cache folder's name: the model's file stem (for people) and a digest of every field.
    pub fn folder_name(&self, model_stem: &str) -> String {
        let mut hasher = Sha256::new();
        for field in [
            &self.model_sha256,
            &self.gpu,
            &self.tensorrt_version,
            &self.profile,
        ] {
            hasher.update(field.as_bytes());
            hasher.update([0]);
        }
        hasher.update([u8::from(self.fp16)]);
        let digest = hex(&hasher.finalize());
        format!("{model_stem}-{}", &digest[..16])
    }

    /// The key written beside the engine, so a cache folder says what it holds.
    pub fn describe(&self) -> String {
        format!(
            "model_sha256 = {}\ngpu = {}\ntensorrt = {}\nfp16 = {}\nprofile = {}\n",
            self.model_sha256, self.gpu, self.tensorrt_version, self.fp16, self.profile
        )
    }

    /// The cache folder under `root`.
    pub fn folder(&self, root: &Path, model: &Path) -> PathBuf {
        let stem = model
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        root.join(self.folder_name(&stem))
    }
}

/// SHA-256 of a file's bytes, hex.
pub fn file_sha256(path: &Path) -> std::io::Result<String> {
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 1 << 20];
    loop {
        let read = file.read(&mut buffer)?;
        if read == 0 {
            break;
        }
        hasher.update(&buffer[..read]);
    }
    Ok(hex(&hasher.finalize()))
}

fn hex(bytes: &[u8]) -> String {
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut text, byte| {
            let _ = write!(text, "{byte:02x}");
            text
        })
}

/// True when the folder already holds a built engine (ONNX Runtime names them `*.engine`).
pub fn holds_engine(folder: &Path) -> bool {
    std::fs::read_dir(folder)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok())
                .any(|e| e.path().extension().is_some_and(|x| x == "engine"))
        })
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profile_strings_name_the_input_and_every_dimension() {
        let profile = ShapeProfile::up_to(8);
        assert_eq!(
            profile,
            ShapeProfile {
                min: 1,
                opt: 4,
                max: 8
            }
        );
        assert_eq!(
            profile.shapes("input", &[3, 1024, 768]),
            [
                "input:1x3x1024x768",
                "input:4x3x1024x768",
                "input:8x3x1024x768"
            ]
        );
        assert_eq!(
            ShapeProfile::up_to(0),
            ShapeProfile {
                min: 1,
                opt: 1,
                max: 1
            }
        );
        assert_eq!(ShapeProfile::up_to(1).shapes("x", &[2])[1], "x:1x2");
    }

    fn key() -> CacheKey {
        CacheKey {
            model_sha256: "ab".repeat(32),
            gpu: "NVIDIA H100 80GB HBM3".into(),
            tensorrt_version: "10.3.0".into(),
            fp16: true,
            profile: ShapeProfile::up_to(8)
                .shapes("input", &[3, 1024, 768])
                .join(","),
        }
    }

    #[test]
    fn cache_folder_changes_with_every_field() {
        let base = key().folder_name("pose");
        assert!(
            base.starts_with("pose-") && base.len() == "pose-".len() + 16,
            "{base}"
        );
        assert_eq!(key().folder_name("pose"), base, "the name is deterministic");
        let variants = [
            CacheKey {
                model_sha256: "cd".repeat(32),
                ..key()
            },
            CacheKey {
                gpu: "NVIDIA H200".into(),
                ..key()
            },
            CacheKey {
                tensorrt_version: "10.4.0".into(),
                ..key()
            },
            CacheKey {
                fp16: false,
                ..key()
            },
            CacheKey {
                profile: ShapeProfile::up_to(4)
                    .shapes("input", &[3, 1024, 768])
                    .join(","),
                ..key()
            },
        ];
        for variant in variants {
            assert_ne!(variant.folder_name("pose"), base, "{variant:?}");
        }
    }

    #[test]
    fn file_hash_is_sha256() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("m.onnx");
        std::fs::write(&path, b"abc").expect("write");
        // FIPS 180-2's example digest of "abc".
        assert_eq!(
            file_sha256(&path).expect("hash"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
