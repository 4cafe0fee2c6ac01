//! `sapiens-stream doctor`: what this machine has for the pipelines (GStreamer and its plugins,
//! ONNX Runtime and its execution providers, the CUDA driver and devices, NVRTC, TensorRT, the
//! engine cache), what `--engine auto` would pick, and whether the requested configuration can run.

use std::path::Path;

use crate::engine::probe::{Capabilities, LibraryProbe};
use crate::engine::tensorrt::DEFAULT_CACHE_ROOT;
use crate::engine::triton::TritonUrl;
use crate::engine::{ExecutionChoice, select};
use crate::zoo::{REMOTE_DEADLINE, remote_report};

/// Elements every pipeline needs: decoding, conversion, and the hand-over to and from our code.
const ESSENTIAL_ELEMENTS: [&str; 5] = [
    "uridecodebin",
    "videoconvert",
    "appsink",
    "appsrc",
    "videotestsrc",
];
/// Elements only some inputs or outputs need, with what needs them.
const OPTIONAL_ELEMENTS: [(&str, &str); 7] = [
    ("x264enc", "--output video"),
    ("h264parse", "--output video"),
    ("mp4mux", "--output *.mp4"),
    ("matroskamux", "--output *.mkv"),
    ("v4l2src", "--input webcam"),
    ("rtspsrc", "--input rtsp://"),
    ("rtspclientsink", "RTSP output"),
];

/// The report: lines to print, and whether the requested configuration can run.
pub struct Diagnosis {
    pub lines: Vec<String>,
    pub can_run: bool,
}

/// Examines the machine for `choice` (`ort_lib` as `--ort-lib`), and the models on Triton
/// servers at `remote` (triton:// URLs).
pub fn diagnose(choice: ExecutionChoice, ort_lib: Option<&Path>, remote: &[String]) -> Diagnosis {
    let mut lines = Vec::new();
    let gstreamer_ok = report_gstreamer(&mut lines);
    let capabilities = Capabilities::probe(ort_lib);
    report_engines(&capabilities, &mut lines);
    let cache = Path::new(DEFAULT_CACHE_ROOT);
    let engines = std::fs::read_dir(cache)
        .map(|entries| entries.count())
        .unwrap_or(0);
    lines.push(format!(
        "engine cache: {} ({engines} cached engine folder(s))",
        cache.display()
    ));
    match select(ExecutionChoice::default(), || capabilities.clone()) {
        Ok(selection) => lines.push(format!(
            "--engine auto would use: {}",
            selection.describe(ExecutionChoice::default())
        )),
        Err(e) => lines.push(format!("--engine auto: {e}")),
    }
    let requested = select(choice, || capabilities.clone());
    let ort_ok = capabilities.onnx_runtime.is_ok();
    match &requested {
        Ok(selection) => {
            lines.push(format!(
                "requested (--engine {} --device {}): runs with {}",
                choice.engine, choice.device, selection.execution
            ));
            if let Some(device) = selection.execution.device() {
                lines.push(frames_on_device(device, &capabilities.nvrtc));
            }
        }
        Err(e) => lines.push(format!(
            "requested (--engine {} --device {}): CANNOT RUN: {e}",
            choice.engine, choice.device
        )),
    }
    let remote_ok = remote.iter().all(|url| report_remote(url, &mut lines));
    Diagnosis {
        lines,
        can_run: gstreamer_ok && ort_ok && requested.is_ok() && remote_ok,
    }
}

/// A model on a Triton server, as `models inspect` describes it; false when `run` could not
/// use it now.
fn report_remote(url: &str, lines: &mut Vec<String>) -> bool {
    let report = match TritonUrl::parse(url) {
        None => Err(format!("{url}: not a triton://HOST:PORT/MODEL URL")),
        Some(Err(reason)) => Err(reason),
        Some(Ok(url)) => remote_report(&url, REMOTE_DEADLINE).map_err(|e| e.to_string()),
    };
    match report {
        Ok(report) => {
            lines.push(format!("Triton model {url}:"));
            lines.extend(report.text.lines().map(|line| format!("  {line}")));
            report.runnable
        }
        Err(e) => {
            lines.push(format!("Triton model {url}: CANNOT RUN: {e}"));
            false
        }
    }
}

/// Whether frames are prepared and outputs decoded on the GPU (our kernels load), or on the CPU.
fn frames_on_device(device: usize, nvrtc: &LibraryProbe) -> String {
    match nvrtc {
        Ok(_) => match crate::cuda::Gpu::open(device) {
            Ok(_) => format!("  frames on cuda:{device}: yes (the CUDA kernels compile and load)"),
            Err(e) => {
                format!("  frames on cuda:{device}: no, prepared and decoded on the CPU: {e}")
            }
        },
        Err(e) => format!("  frames on cuda:{device}: no, prepared and decoded on the CPU: {e}"),
    }
}

/// GStreamer's version and plugins; false when it or an essential element is missing.
fn report_gstreamer(lines: &mut Vec<String>) -> bool {
    if let Err(e) = gstreamer::init() {
        lines.push(format!("GStreamer: cannot start: {e}"));
        return false;
    }
    let (major, minor, micro, _) = gstreamer::version();
    lines.push(format!("GStreamer: {major}.{minor}.{micro}"));
    let present = |name: &str| gstreamer::ElementFactory::find(name).is_some();
    let missing_essential: Vec<&str> = ESSENTIAL_ELEMENTS
        .into_iter()
        .filter(|e| !present(e))
        .collect();
    let found: Vec<&str> = ESSENTIAL_ELEMENTS
        .into_iter()
        .chain(OPTIONAL_ELEMENTS.map(|(e, _)| e))
        .filter(|e| present(e))
        .collect();
    lines.push(format!("  elements found: {}", found.join(", ")));
    if !missing_essential.is_empty() {
        lines.push(format!("  MISSING (every pipeline needs them): {} (scripts/setup.sh installs the GStreamer plugins)", missing_essential.join(", ")));
    }
    for (element, needed_by) in OPTIONAL_ELEMENTS.into_iter().filter(|(e, _)| !present(e)) {
        lines.push(format!("  missing: {element} (needed for {needed_by})"));
    }
    missing_essential.is_empty()
}

fn report_engines(capabilities: &Capabilities, lines: &mut Vec<String>) {
    match &capabilities.onnx_runtime {
        Ok(ort) => {
            lines.push(format!("ONNX Runtime: {}", ort.library.display()));
            lines.push(format!("  build: {}", ort.build));
            lines.push(format!(
                "  execution providers: {}",
                ort.providers.join(", ")
            ));
        }
        Err(e) => lines.push(format!("ONNX Runtime: NOT FOUND: {e}")),
    }
    match &capabilities.cuda {
        Ok(driver) => {
            lines.push(format!("CUDA driver: {}", driver.version_text()));
            for (ordinal, name) in driver.devices.iter().enumerate() {
                lines.push(format!("  cuda:{ordinal}: {name}"));
            }
        }
        Err(e) => lines.push(format!("CUDA driver: none: {e}")),
    }
    for (name, probe) in &capabilities.cuda_provider_libraries {
        lines.push(library_line(&format!("CUDA library {name}"), probe));
    }
    lines.push(library_line("NVRTC (kernel compiler)", &capabilities.nvrtc));
    lines.push(library_line("TensorRT", &capabilities.tensorrt));
}

fn library_line(what: &str, probe: &LibraryProbe) -> String {
    match probe {
        Ok(library) => match &library.version {
            Some(version) => format!("{what}: {version} ({})", library.location),
            None => format!("{what}: found ({})", library.location),
        },
        Err(e) => format!("{what}: not found: {e}"),
    }
}
