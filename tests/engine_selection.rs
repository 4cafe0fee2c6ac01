//! `--engine` / `--device` and `doctor` through the binary. The expectations come from the
//! library's own probe of this machine, so the tests hold with or without a GPU; on a machine
//! without CUDA (CI, the development machine) `auto` must pick the CPU and an explicit
//! `--engine cuda` must fail with one line naming what is missing.

mod common;

use std::process::{Command, Output};

use sapiens_stream::engine::probe::Capabilities;
use sapiens_stream::engine::{ExecutionChoice, select};

fn sapiens(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sapiens-stream"))
        .args(args)
        .current_dir(common::repo_root())
        .output()
        .expect("start sapiens-stream")
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

fn can_run(engine: &str, device: &str) -> bool {
    let choice = ExecutionChoice {
        engine: engine.parse().unwrap(),
        device: device.parse().unwrap(),
    };
    select(choice, || Capabilities::probe(None)).is_ok()
}

fn cuda_machine() -> bool {
    Capabilities::probe(None).cuda.is_ok()
}

#[test]
fn doctor_reports_every_piece_and_passes_for_auto_and_cpu() {
    for args in [
        &["doctor"][..],
        &["doctor", "--engine", "cpu"],
        &["doctor", "--device", "cpu"],
    ] {
        let output = sapiens(args);
        let report = text(&output);
        assert!(output.status.success(), "{args:?} failed:\n{report}");
        for section in [
            "GStreamer: 1.",
            "elements found: uridecodebin, videoconvert",
            "ONNX Runtime: ",
            "execution providers: ",
            "CUDA driver: ",
            "NVRTC (kernel compiler): ",
            "TensorRT: ",
            "engine cache: engines/cache",
            "--engine auto would use: engine ",
        ] {
            assert!(
                report.contains(section),
                "{args:?}: no '{section}' in:\n{report}"
            );
        }
    }
}

#[test]
fn doctor_fails_for_an_engine_that_cannot_run_and_says_why() {
    let output = sapiens(&["doctor", "--engine", "cuda"]);
    let report = text(&output);
    assert_eq!(output.status.success(), can_run("cuda", "auto"), "{report}");
    if !cuda_machine() {
        assert_eq!(output.status.code(), Some(1), "{report}");
        assert!(
            report.contains("CUDA driver: none: libcuda.so.1"),
            "{report}"
        );
        assert!(
            report.contains("CANNOT RUN: --engine cuda on cuda:0 cannot run here: "),
            "{report}"
        );
        assert!(
            report.contains("--engine auto would use: engine cpu"),
            "{report}"
        );
        assert!(
            report.contains("not tensorrt: ") && report.contains("not cuda: "),
            "{report}"
        );
    }
}

#[test]
fn run_with_an_engine_that_cannot_run_is_one_clear_line() {
    if can_run("cuda", "auto") {
        eprintln!(
            "SKIPPED run_with_an_engine_that_cannot_run_is_one_clear_line: CUDA can run here"
        );
        return;
    }
    let model = common::repo_root().join("engines/models/sapiens_tiny_pose17.onnx");
    let output = sapiens(&[
        "run",
        "--input",
        "test://ball?frames=1",
        "--pose-model",
        model.to_str().unwrap(),
        "--engine",
        "cuda",
    ]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1));
    let error: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("error: "))
        .collect();
    assert_eq!(error.len(), 1, "{stderr}");
    assert!(
        error[0].starts_with("error: --engine cuda on cuda:0 cannot run here: "),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn auto_says_what_it_picked_and_why() {
    let model = common::repo_root().join("engines/models/sapiens_tiny_pose17.onnx");
    let output = sapiens(&[
        "run",
        "--input",
        "test://ball?frames=1&width=64&height=48",
        "--pose-model",
        model.to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(
        stderr.contains("engine ") && stderr.contains("(asked: --engine auto --device auto)"),
        "{stderr}"
    );
    if !cuda_machine() {
        assert!(stderr.contains("engine cpu (asked"), "{stderr}");
        assert!(
            stderr.contains("not tensorrt: ") && stderr.contains("not cuda: "),
            "{stderr}"
        );
    }
}

#[test]
fn build_engine_without_tensorrt_is_a_clear_error() {
    if can_run("tensorrt", "cuda:0") {
        eprintln!("SKIPPED build_engine_without_tensorrt_is_a_clear_error: TensorRT can run here");
        return;
    }
    let model = common::repo_root().join("engines/models/sapiens_tiny_pose17.onnx");
    let output = sapiens(&[
        "models",
        "build-engine",
        model.to_str().unwrap(),
        "--max-batch",
        "4",
    ]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.starts_with("error: --engine tensorrt on cuda:0 cannot run here: "),
        "{stderr}"
    );
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
}

#[test]
fn unknown_engine_or_device_is_refused() {
    let output = sapiens(&["doctor", "--engine", "gpu"]);
    assert!(!output.status.success());
    assert!(
        text(&output).contains("unknown engine 'gpu' (auto, tensorrt, cuda, cpu)"),
        "{}",
        text(&output)
    );
    let output = sapiens(&["doctor", "--device", "cuda:x"]);
    assert!(
        text(&output).contains("unknown device 'cuda:x'"),
        "{}",
        text(&output)
    );
}
