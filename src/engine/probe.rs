//! What this machine can run: the CUDA driver and its devices, ONNX Runtime's execution
//! providers, and the shared libraries the CUDA and TensorRT providers and our kernels load.
//!
//! Every probe reports why something is missing instead of failing: cudarc panics when `libcuda`
//! is absent, so the driver library is looked for (without cudarc's loader) before cudarc runs.

use std::ffi::c_int;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use super::runtime;

/// The libraries ONNX Runtime's CUDA execution provider loads when its own library cannot be
/// read: those of the `onnxruntime-gpu` 1.31 wheel (CUDA 13, cuDNN 9).
pub const CUDA_PROVIDER_LIBRARIES: [&str; 5] = [
    "libcudart.so.13",
    "libcublas.so.13",
    "libcublasLt.so.13",
    "libcurand.so.10",
    "libcudnn.so.9",
];
/// ONNX Runtime's CUDA execution provider, beside `libonnxruntime.so`.
const CUDA_PROVIDER_FILE: &str = "libonnxruntime_providers_cuda.so";
/// cuDNN, which the CUDA provider opens when it starts rather than linking to it.
const CUDNN_LIBRARY: &str = "libcudnn.so.9";
/// TensorRT 10's runtime, which ONNX Runtime's TensorRT execution provider loads.
pub const TENSORRT_LIBRARY: &str = "libnvinfer.so.10";
/// NVRTC, which compiles our kernels at run time: CUDA 13's or 12's (cudarc knows both names).
pub const NVRTC_LIBRARIES: [&str; 2] = ["libnvrtc.so.13", "libnvrtc.so.12"];
/// Environment variable naming the NVRTC library by path (when it is not on the loader's path).
pub const NVRTC_LIBRARY_ENV: &str = "SAPIENS_NVRTC_LIB";
const CUDA_DRIVER_LIBRARY: &str = "libcuda.so.1";

/// The CUDA driver and its devices.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CudaDriver {
    /// As `cuDriverGetVersion` reports it: 12040 is 12.4.
    pub version: i32,
    pub devices: Vec<String>,
}

impl CudaDriver {
    pub fn version_text(&self) -> String {
        format!("{}.{}", self.version / 1000, self.version % 1000 / 10)
    }
}

/// The loaded ONNX Runtime and the execution providers it was built with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OnnxRuntimeInfo {
    pub library: PathBuf,
    /// ONNX Runtime's build string (version, commit).
    pub build: String,
    /// Execution providers compiled in, by ONNX Runtime's names.
    pub providers: Vec<&'static str>,
}

/// A shared library: where it was loaded from and its version, or why it could not be.
pub type LibraryProbe = Result<LoadedLibrary, String>;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoadedLibrary {
    /// The path it was loaded from, or its name when the system loader found it.
    pub location: String,
    pub version: Option<String>,
}

/// Everything [`super::select`] needs to know about the machine.
#[derive(Clone, Debug)]
pub struct Capabilities {
    pub onnx_runtime: Result<OnnxRuntimeInfo, String>,
    pub cuda: Result<CudaDriver, String>,
    /// (library, probe) for each of [`CUDA_PROVIDER_LIBRARIES`].
    pub cuda_provider_libraries: Vec<(String, LibraryProbe)>,
    pub tensorrt: LibraryProbe,
    pub nvrtc: LibraryProbe,
}

const TENSORRT_PROVIDER: &str = "TensorrtExecutionProvider";
const CUDA_PROVIDER: &str = "CUDAExecutionProvider";

impl Capabilities {
    /// Probes this machine; `ort_lib` as `--ort-lib`.
    pub fn probe(ort_lib: Option<&Path>) -> Self {
        let onnx_runtime = probe_onnx_runtime(ort_lib);
        let libraries = match &onnx_runtime {
            Ok(info) => cuda_provider_libraries(&info.library),
            Err(_) => CUDA_PROVIDER_LIBRARIES.map(str::to_owned).to_vec(),
        };
        Capabilities {
            onnx_runtime,
            cuda: probe_cuda_driver(),
            cuda_provider_libraries: libraries
                .into_iter()
                .map(|name| {
                    let probe = load_library(&name).cloned();
                    (name, probe)
                })
                .collect(),
            tensorrt: probe_tensorrt(),
            nvrtc: nvrtc(),
        }
    }

    /// Why ONNX Runtime's CUDA execution provider cannot run on `device`; empty when it can.
    pub fn cuda_blockers(&self, device: usize) -> Vec<String> {
        let mut blockers = Vec::new();
        self.provider_blocker(CUDA_PROVIDER, &mut blockers);
        match &self.cuda {
            Err(reason) => blockers.push(reason.clone()),
            Ok(driver) if device >= driver.devices.len() => {
                blockers.push(format!(
                    "no CUDA device cuda:{device} ({} found)",
                    driver.devices.len()
                ));
            }
            Ok(_) => {}
        }
        let missing: Vec<&str> = self
            .cuda_provider_libraries
            .iter()
            .filter(|(_, probe)| probe.is_err())
            .map(|(name, _)| name.as_str())
            .collect();
        if !missing.is_empty() {
            blockers.push(format!(
                "CUDA libraries not found: {} ({})",
                missing.join(", "),
                cuda_install_hint(&missing)
            ));
        }
        blockers
    }

    /// Why ONNX Runtime's TensorRT execution provider cannot run on `device`; empty when it can.
    pub fn tensorrt_blockers(&self, device: usize) -> Vec<String> {
        let mut blockers = Vec::new();
        self.provider_blocker(TENSORRT_PROVIDER, &mut blockers);
        if let Err(reason) = &self.tensorrt {
            blockers.push(reason.clone());
        }
        // TensorRT hands the nodes it cannot run to the CUDA provider.
        for blocker in self.cuda_blockers(device) {
            if !blockers.contains(&blocker) {
                blockers.push(blocker);
            }
        }
        blockers
    }

    fn provider_blocker(&self, provider: &str, blockers: &mut Vec<String>) {
        match &self.onnx_runtime {
            Err(reason) => blockers.push(reason.clone()),
            Ok(ort) if !ort.providers.contains(&provider) => blockers.push(format!(
                "ONNX Runtime at {} has no {provider} (the `onnxruntime` wheel is CPU-only; install `onnxruntime-gpu`)",
                ort.library.display()
            )),
            Ok(_) => {}
        }
    }
}

fn probe_onnx_runtime(ort_lib: Option<&Path>) -> Result<OnnxRuntimeInfo, String> {
    use ort::ep::{CPU, CUDA, ExecutionProvider, TensorRT};
    runtime::environment(ort_lib).map_err(|e| e.to_string())?;
    let library = runtime::loaded_library()
        .map(Path::to_owned)
        .unwrap_or_default();
    let compiled = |available: ort::Result<bool>| available.unwrap_or(false);
    let providers = [
        (TensorRT::NAME, compiled(TensorRT::is_available())),
        (CUDA::NAME, compiled(CUDA::is_available())),
        (CPU::NAME, compiled(CPU::is_available())),
    ]
    .into_iter()
    .filter_map(|(name, available)| available.then_some(name))
    .collect();
    Ok(OnnxRuntimeInfo {
        library,
        build: ort::info().to_owned(),
        providers,
    })
}

/// The driver library is looked for first: cudarc's own loader panics when it is missing.
fn probe_cuda_driver() -> Result<CudaDriver, String> {
    load_library(CUDA_DRIVER_LIBRARY).map_err(|_| format!("{CUDA_DRIVER_LIBRARY} (the NVIDIA driver) not found: no NVIDIA GPU driver on this machine"))?;
    let count = cudarc::driver::CudaContext::device_count()
        .map_err(|e| format!("the CUDA driver cannot start: {e}"))?;
    let mut version: c_int = 0;
    // SAFETY: the driver library is loaded (checked above) and the pointer is to a live c_int.
    unsafe { cudarc::driver::sys::cuDriverGetVersion(&mut version) }
        .result()
        .map_err(|e| format!("cuDriverGetVersion: {e}"))?;
    let devices = (0..count)
        .map(|ordinal| {
            cudarc::driver::result::device::get(ordinal)
                .and_then(cudarc::driver::result::device::get_name)
                .unwrap_or_else(|e| format!("(unnamed: {e})"))
        })
        .collect::<Vec<_>>();
    if devices.is_empty() {
        return Err(format!(
            "the CUDA driver {}.{} sees no devices",
            version / 1000,
            version % 1000 / 10
        ));
    }
    Ok(CudaDriver { version, devices })
}

fn probe_tensorrt() -> LibraryProbe {
    let library = load_library(TENSORRT_LIBRARY).map_err(|looked| {
        format!(
            "TensorRT ({TENSORRT_LIBRARY}) not found; {looked} (pip install 'tensorrt-cu13-libs<11' for the CUDA 13 onnxruntime-gpu, tensorrt-cu12-libs for a CUDA 12 one)"
        )
    })?;
    let version =
        tensorrt_version().map(|(major, minor, patch)| format!("{major}.{minor}.{patch}"));
    Ok(LoadedLibrary {
        version,
        ..library.clone()
    })
}

/// TensorRT's version as `getInferLibVersion` reports it (10.3.0 is 100300), once loaded.
pub fn tensorrt_version() -> Option<(u32, u32, u32)> {
    let library = load_library(TENSORRT_LIBRARY).ok()?;
    // SAFETY: the library is already loaded (this only takes another reference), and
    // `getInferLibVersion` is TensorRT's C entry point `int32_t getInferLibVersion()`.
    let version = unsafe {
        let handle = libloading::Library::new(&library.location).ok()?;
        let symbol = handle
            .get::<unsafe extern "C" fn() -> i32>(b"getInferLibVersion")
            .ok()?;
        symbol()
    };
    let version = u32::try_from(version).ok()?;
    Some((version / 10000, version / 100 % 100, version % 100))
}

/// NVRTC, loaded from `SAPIENS_NVRTC_LIB` or by name, with its version.
pub fn nvrtc() -> LibraryProbe {
    let library = match std::env::var_os(NVRTC_LIBRARY_ENV) {
        Some(path) => load_path(Path::new(&path)).map_err(|e| format!("{NVRTC_LIBRARY_ENV}={}: {e}", Path::new(&path).display()))?,
        None => first_library(&NVRTC_LIBRARIES).map_err(|looked| format!("NVRTC ({}) not found; {looked} (pip install nvidia-cuda-nvrtc, or set {NVRTC_LIBRARY_ENV})", NVRTC_LIBRARIES.join(" or ")))?,
    };
    let (mut major, mut minor): (c_int, c_int) = (0, 0);
    // SAFETY: libnvrtc is loaded (by name or path, so cudarc's loader finds the same one) and
    // the pointers are to live c_ints.
    let version = unsafe { cudarc::nvrtc::sys::nvrtcVersion(&mut major, &mut minor) }
        .result()
        .ok()
        .map(|()| format!("{major}.{minor}"));
    Ok(LoadedLibrary { version, ..library })
}

/// The first of `names` that loads.
fn first_library(names: &[&str]) -> Result<LoadedLibrary, String> {
    let mut looked = String::new();
    for name in names {
        match load_library(name) {
            Ok(library) => return Ok(library.clone()),
            Err(e) => looked = e,
        }
    }
    Err(looked)
}

/// The CUDA libraries the CUDA provider beside `onnx_runtime` needs: those its library links
/// to (so a CUDA 12 build and a CUDA 13 build are each probed for their own), and cuDNN.
pub fn cuda_provider_libraries(onnx_runtime: &Path) -> Vec<String> {
    let provider = onnx_runtime.with_file_name(CUDA_PROVIDER_FILE);
    let linked = std::fs::read(&provider).ok().and_then(|bytes| {
        let elf = goblin::elf::Elf::parse(&bytes).ok()?;
        let cuda: Vec<String> = elf
            .libraries
            .iter()
            .filter(|name| name.starts_with("libcu") && !name.starts_with("libcuda.so"))
            .map(|name| name.to_string())
            .collect();
        (!cuda.is_empty()).then_some(cuda)
    });
    let mut libraries = linked.unwrap_or_else(|| {
        CUDA_PROVIDER_LIBRARIES
            .iter()
            .map(|name| name.to_string())
            .collect()
    });
    if !libraries.iter().any(|name| name == CUDNN_LIBRARY) {
        libraries.push(CUDNN_LIBRARY.to_owned());
    }
    libraries
}

/// How to get `missing` CUDA libraries, by the CUDA major version their names carry.
pub fn cuda_install_hint(missing: &[&str]) -> String {
    let cuda_12 = missing.iter().any(|name| name.ends_with(".so.12"));
    let packages = if cuda_12 {
        "nvidia-cuda-runtime-cu12 nvidia-cublas-cu12 nvidia-curand-cu12 nvidia-cufft-cu12 nvidia-cudnn-cu12"
    } else {
        "nvidia-cuda-runtime nvidia-cublas nvidia-curand nvidia-cudnn-cu13"
    };
    format!("pip install {packages}, or add their folders to LD_LIBRARY_PATH")
}

/// Loads a library by name, from the system loader's path or from the pip `nvidia-*` and
/// `tensorrt` wheels in the project's Python environment. The library stays loaded for the
/// process, so ONNX Runtime and cudarc, which load by name, find this one.
pub fn load_library(name: &str) -> Result<&'static LoadedLibrary, String> {
    static LOADED: OnceLock<Mutex<Vec<(String, &'static LoadedLibrary)>>> = OnceLock::new();
    let loaded = LOADED.get_or_init(Default::default);
    let mut loaded = loaded
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some((_, library)) = loaded.iter().find(|(n, _)| *n == name) {
        return Ok(library);
    }
    let library = find_library(name)?;
    let library: &'static LoadedLibrary = Box::leak(Box::new(library));
    loaded.push((name.to_owned(), library));
    Ok(library)
}

fn find_library(name: &str) -> Result<LoadedLibrary, String> {
    if keep_loaded(Path::new(name)).is_ok() {
        return Ok(LoadedLibrary {
            location: name.to_owned(),
            version: None,
        });
    }
    let folders = wheel_library_folders();
    for folder in &folders {
        let candidate = folder.join(name);
        if candidate.is_file() {
            return load_path(&candidate);
        }
    }
    let wheels = match folders.len() {
        0 => "no nvidia-* or tensorrt wheels in the Python environment".to_owned(),
        n => format!("{n} nvidia-*/tensorrt wheel folders"),
    };
    Err(format!(
        "looked on the loader's path (LD_LIBRARY_PATH, ldconfig); {wheels}"
    ))
}

fn load_path(path: &Path) -> Result<LoadedLibrary, String> {
    keep_loaded(path)?;
    Ok(LoadedLibrary {
        location: path.display().to_string(),
        version: None,
    })
}

/// dlopen with RTLD_GLOBAL, never closed: later loads by name resolve to it.
fn keep_loaded(path: &Path) -> Result<(), String> {
    use libloading::os::unix::{Library, RTLD_GLOBAL, RTLD_NOW};
    // SAFETY: loading runs the library's initialisers; these are NVIDIA's runtime libraries.
    let library =
        unsafe { Library::open(Some(path), RTLD_NOW | RTLD_GLOBAL) }.map_err(|e| e.to_string())?;
    std::mem::forget(library);
    Ok(())
}

/// `site-packages/nvidia/*/lib` and `site-packages/tensorrt_libs` of the candidate environments.
fn wheel_library_folders() -> Vec<PathBuf> {
    let mut folders = Vec::new();
    for site_packages in runtime::site_packages_dirs() {
        if let Ok(entries) = std::fs::read_dir(site_packages.join("nvidia")) {
            let mut libs: Vec<PathBuf> = entries
                .filter_map(|e| e.ok())
                .map(|e| e.path().join("lib"))
                .filter(|p| p.is_dir())
                .collect();
            libs.sort();
            folders.extend(libs);
        }
        let tensorrt = site_packages.join("tensorrt_libs");
        if tensorrt.is_dir() {
            folders.push(tensorrt);
        }
    }
    folders
}

/// A CUDA device's name, for the TensorRT cache key; the driver library is probed first.
pub fn cuda_device_name(device: usize) -> Result<String, String> {
    let driver = probe_cuda_driver()?;
    driver.devices.get(device).cloned().ok_or_else(|| {
        format!(
            "no CUDA device cuda:{device} ({} found)",
            driver.devices.len()
        )
    })
}

#[cfg(test)]
mod tests {
    use std::process::Command;

    use super::*;

    /// Builds a shared library `name` in `dir` (with that soname) linked to `needed` there.
    fn shared_library(dir: &Path, name: &str, needed: &[&str]) {
        let source = dir.join("empty.c");
        std::fs::write(&source, "int sapiens_stub;\n").unwrap();
        let status = Command::new("cc")
            .args(["-shared", "-fPIC", "-Wl,--no-as-needed", "-o"])
            .arg(dir.join(name))
            .arg(format!("-Wl,-soname,{name}"))
            .arg(&source)
            .args(needed.iter().map(|n| dir.join(n)))
            .status()
            .expect("a C compiler (cc) links the stub libraries");
        assert!(status.success(), "cc failed for {name}");
    }

    #[test]
    fn provider_libraries_are_read_from_the_cuda_provider() {
        let dir = tempfile::tempdir().unwrap();
        for name in ["libcudart.so.12", "libcublas.so.12", "libcuda.so.1"] {
            shared_library(dir.path(), name, &[]);
        }
        let provider_needs = ["libcudart.so.12", "libcublas.so.12", "libcuda.so.1"];
        shared_library(dir.path(), CUDA_PROVIDER_FILE, &provider_needs);
        let runtime = dir.path().join("libonnxruntime.so.1.31.1");
        // The driver is not a provider library; cuDNN is added (opened at start, not linked).
        assert_eq!(
            cuda_provider_libraries(&runtime),
            ["libcudart.so.12", "libcublas.so.12", "libcudnn.so.9"]
        );
        assert!(cuda_install_hint(&["libcudart.so.12"]).contains("-cu12"));
    }

    #[test]
    fn provider_libraries_default_to_the_cuda_13_wheel() {
        let dir = tempfile::tempdir().unwrap();
        let runtime = dir.path().join("libonnxruntime.so");
        assert_eq!(cuda_provider_libraries(&runtime), CUDA_PROVIDER_LIBRARIES);
        assert!(cuda_install_hint(&CUDA_PROVIDER_LIBRARIES).contains("nvidia-cudnn-cu13"));
    }
}
