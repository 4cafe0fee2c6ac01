//! What this machine can run: the CUDA driver and its devices, ONNX Runtime's execution
//! providers, and the shared libraries the CUDA and TensorRT providers and our kernels load.
//!
//! Every probe reports why something is missing instead of failing: cudarc panics when `libcuda`
//! is absent, so the driver library is looked for (without cudarc's loader) before cudarc runs.

use std::ffi::c_int;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use super::runtime;

/// The libraries ONNX Runtime's CUDA execution provider (built for CUDA 12 and cuDNN 9) loads.
pub const CUDA_PROVIDER_LIBRARIES: [&str; 5] = [
    "libcudart.so.12",
    "libcublas.so.12",
    "libcublasLt.so.12",
    "libcufft.so.11",
    "libcudnn.so.9",
];
/// TensorRT 10's runtime, which ONNX Runtime's TensorRT execution provider loads.
pub const TENSORRT_LIBRARY: &str = "libnvinfer.so.10";
/// NVRTC, which compiles our kernels at run time.
pub const NVRTC_LIBRARY: &str = "libnvrtc.so.12";
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
    pub cuda_provider_libraries: Vec<(&'static str, LibraryProbe)>,
    pub tensorrt: LibraryProbe,
    pub nvrtc: LibraryProbe,
}

const TENSORRT_PROVIDER: &str = "TensorrtExecutionProvider";
const CUDA_PROVIDER: &str = "CUDAExecutionProvider";

impl Capabilities {
    /// Probes this machine; `ort_lib` as `--ort-lib`.
    pub fn probe(ort_lib: Option<&Path>) -> Self {
        Capabilities {
            onnx_runtime: probe_onnx_runtime(ort_lib),
            cuda: probe_cuda_driver(),
            cuda_provider_libraries: CUDA_PROVIDER_LIBRARIES
                .iter()
                .map(|&name| (name, load_library(name).cloned()))
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
            .map(|(name, _)| *name)
            .collect();
        if !missing.is_empty() {
            blockers.push(format!("CUDA libraries not found: {} (pip install nvidia-cudnn-cu12 nvidia-cublas-cu12 nvidia-cuda-runtime-cu12 nvidia-cufft-cu12, or add their folders to LD_LIBRARY_PATH)", missing.join(", ")));
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
            "TensorRT ({TENSORRT_LIBRARY}) not found; {looked} (pip install tensorrt-cu12-libs)"
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
        None => load_library(NVRTC_LIBRARY).map_err(|looked| format!("NVRTC ({NVRTC_LIBRARY}) not found; {looked} (pip install nvidia-cuda-nvrtc-cu12, or set {NVRTC_LIBRARY_ENV})"))?.clone(),
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

/// Loads a library by name, from the system loader's path or from the pip `nvidia-*` and
/// `tensorrt` wheels in the project's Python environment. The library stays loaded for the
/// process, so ONNX Runtime and cudarc, which load by name, find this one.
pub fn load_library(name: &'static str) -> Result<&'static LoadedLibrary, String> {
    static LOADED: OnceLock<Mutex<Vec<(&'static str, &'static LoadedLibrary)>>> = OnceLock::new();
    let loaded = LOADED.get_or_init(Default::default);
    let mut loaded = loaded
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some((_, library)) = loaded.iter().find(|(n, _)| *n == name) {
        return Ok(library);
    }
    let library = find_library(name)?;
    let library: &'static LoadedLibrary = Box::leak(Box::new(library));
    loaded.push((name, library));
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
