//! engines/export_onnx.py end to end. engines/test_export.py traces a small Sapiens-architecture
//! pose model to TorchScript (as the official checkpoints are), exports it twice (float32; float16
//! with external data) and checks ONNX Runtime against PyTorch. Then this side loads both exports
//! with the crate's own engine, runs PyTorch's input through them at batch 2 and compares with
//! PyTorch's output, and inspects them as `models inspect` does.
//!
//! The same for Sapiens2 (engines/test_sapiens2.py): tiny models of every task saved as
//! safetensors, exported, checked against PyTorch, and checkpoints that do not fit refused; the
//! pointmap export then runs in our engine. engines/check_sapiens2_generator.py checks that the
//! random-weight Sapiens2 models of engines/generate_models.py compute what the PyTorch model does.
//!
//! Needs PyTorch in the project's Python (or in SAPIENS_PYTHON); CI does not install it, so
//! without it the tests print why and pass as skipped.

mod common;

use std::process::Command;

use sapiens_stream::engine::Engine;
use sapiens_stream::engine::onnx::{OnnxEngine, OnnxOptions};
use sapiens_stream::engine::runtime;
use sapiens_stream::tasks::{self, Task};
use sapiens_stream::zoo;
use serde_json::Value;

const OUTPUT_SHAPE: [u64; 4] = [2, 17, 256, 192];

fn has_torch(python: &std::path::Path) -> bool {
    Command::new(python)
        .args(["-c", "import torch"])
        .output()
        .is_ok_and(|out| out.status.success())
}

fn relative_max_diff(actual: &[f32], expected: &[f32]) -> f32 {
    assert_eq!(actual.len(), expected.len());
    let largest = expected.iter().fold(0f32, |m, v| m.max(v.abs()));
    let worst = actual
        .iter()
        .zip(expected)
        .fold(0f32, |m, (a, e)| m.max((a - e).abs()));
    worst / largest
}

/// The Python with PyTorch, or `None` after saying why the test is skipped.
fn torch_python() -> Option<std::path::PathBuf> {
    let python = common::python();
    if has_torch(&python) {
        return Some(python);
    }
    eprintln!(
        "skipped: `import torch` fails in {}; set SAPIENS_PYTHON to a Python with torch, safetensors, onnx, onnxruntime and numpy to run it",
        python.display()
    );
    None
}

/// Runs `engines/SCRIPT ARGS`, which must succeed; its last stdout line is a JSON summary.
fn run_engines_script(python: &std::path::Path, script: &str, args: &[&std::ffi::OsStr]) -> Value {
    let output = Command::new(python)
        .arg(common::repo_root().join("engines").join(script))
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("start engines/{script}: {e}"));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "engines/{script} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_str(stdout.lines().last().unwrap_or_default()).expect("JSON summary")
}

#[test]
fn exported_torchscript_matches_pytorch_in_our_engine() {
    let Some(python) = torch_python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let out = ["--out".as_ref(), dir.path().as_os_str()];
    let summary = run_engines_script(&python, "test_export.py", &out);
    eprintln!("export_onnx.py check (ONNX Runtime vs TorchScript): {summary}");

    let (input_shape, input) = common::read_npy_f32(&dir.path().join("input.npy"));
    let (expected_shape, expected) = common::read_npy_f32(&dir.path().join("torch_output.npy"));
    assert_eq!(input_shape, [2, 3, 1024, 768]);
    assert_eq!(expected_shape, OUTPUT_SHAPE);
    let environment = runtime::environment(None).expect("ONNX Runtime");

    for (variant, file, tolerance) in [
        ("fp32", "sapiens_tiny_pose17.onnx", 1e-4),
        ("fp16", "sapiens_tiny_pose17_fp16.onnx", 5e-2),
    ] {
        let report = &summary[variant];
        let shape: Vec<u64> = report["onnx_output_shape"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d.as_u64().unwrap())
            .collect();
        assert_eq!(shape, OUTPUT_SHAPE, "{variant}");
        let (max, mean) = (
            report["max_abs_diff"].as_f64().unwrap(),
            report["mean_abs_diff"].as_f64().unwrap(),
        );
        assert!(
            mean <= max && report["relative_max_diff"].as_f64().unwrap() <= tolerance,
            "{variant}: {report}"
        );

        let path = dir.path().join(file);
        let mut engine = OnnxEngine::load(&path, environment, &OnnxOptions::default()).unwrap();
        let layout = tasks::validate_model(Task::Pose, engine.info()).unwrap();
        assert_eq!(layout.channels, 17);
        let mut result = Vec::new();
        engine.run(&input, 2, &mut result).unwrap();
        let ours = relative_max_diff(&result, &expected);
        eprintln!(
            "{variant}: our engine vs PyTorch at batch 2, relative max difference {ours:.3e}"
        );
        assert!(ours <= tolerance as f32, "{variant}: {ours}");

        let inspected = zoo::inspect_report(&path, None).unwrap();
        assert!(
            inspected.contains("task      pose, 17 keypoints (coco17)"),
            "{inspected}"
        );
        assert!(inspected.contains("run       accepted"), "{inspected}");
        assert!(
            inspected.contains("sapiens_stream.source = sapiens_tiny_pose17_torchscript.pt2"),
            "{inspected}"
        );
        assert!(!inspected.contains("RANDOM WEIGHTS"), "{inspected}");
    }
    let fp16 =
        zoo::inspect_report(&dir.path().join("sapiens_tiny_pose17_fp16.onnx"), None).unwrap();
    assert!(
        fp16.contains("external data") && fp16.contains("sapiens_stream.dtype = float16"),
        "{fp16}"
    );
}

#[test]
fn exported_sapiens2_matches_pytorch_in_our_engine() {
    let Some(python) = torch_python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let out = ["--out".as_ref(), dir.path().as_os_str()];
    let summary = run_engines_script(&python, "test_sapiens2.py", &out);
    eprintln!("export_onnx.py Sapiens2 check (ONNX Runtime vs PyTorch): {summary}");
    let generator = run_engines_script(&python, "check_sapiens2_generator.py", &[]);
    eprintln!("generate_models.py Sapiens2 vs PyTorch: {generator}");

    let (_, input) = common::read_npy_f32(&dir.path().join("input.npy"));
    let (expected_shape, expected) = common::read_npy_f32(&dir.path().join("pointmap_output.npy"));
    assert_eq!(expected_shape, [2, 4, 1024, 768]);
    let environment = runtime::environment(None).expect("ONNX Runtime");
    for (variant, file, tolerance) in [
        ("fp32", "sapiens2_tiny_pointmap.onnx", 1e-4),
        ("fp16", "sapiens2_tiny_pointmap_fp16.onnx", 5e-2),
    ] {
        let path = dir.path().join(file);
        let mut engine = OnnxEngine::load(&path, environment, &OnnxOptions::default()).unwrap();
        let layout = tasks::validate_model(Task::Depth, engine.info()).unwrap();
        assert!(layout.is_pointmap(), "{variant}: {layout:?}");
        let mut result = Vec::new();
        engine.run(&input, 2, &mut result).unwrap();
        let ours = relative_max_diff(&result, &expected);
        eprintln!(
            "Sapiens2 pointmap {variant}: our engine vs PyTorch at batch 2, relative max difference {ours:.3e}"
        );
        assert!(ours <= tolerance, "{variant}: {ours}");
        let inspected = zoo::inspect_report(&path, None).unwrap();
        assert!(inspected.contains("family    Sapiens2"), "{inspected}");
        assert!(
            inspected.contains("sapiens_stream.source = sapiens2_tiny_pointmap.safetensors"),
            "{inspected}"
        );
    }
}
