//! engines/export_onnx.py end to end. engines/test_export.py traces a small Sapiens-architecture
//! pose model to TorchScript (as the official checkpoints are), exports it twice (float32; float16
//! with external data) and checks ONNX Runtime against PyTorch. Then this side loads both exports
//! with the crate's own engine, runs PyTorch's input through them at batch 2 and compares with
//! PyTorch's output, and inspects them as `models inspect` does.
//!
//! Needs PyTorch in the project's Python (or in SAPIENS_PYTHON); CI does not install it, so
//! without it the test prints why and passes as skipped.

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

#[test]
fn exported_torchscript_matches_pytorch_in_our_engine() {
    let python = common::python();
    if !has_torch(&python) {
        eprintln!(
            "skipped: `import torch` fails in {}; set SAPIENS_PYTHON to a Python with torch, onnx, onnxruntime and numpy to run it",
            python.display()
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let output = Command::new(&python)
        .arg(common::repo_root().join("engines/test_export.py"))
        .arg("--out")
        .arg(dir.path())
        .output()
        .expect("start engines/test_export.py");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "engines/test_export.py failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let summary: Value =
        serde_json::from_str(stdout.lines().last().unwrap_or_default()).expect("JSON summary");
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
