//! `sapiens-stream models list` and `models inspect` through the binary, with real ONNX Runtime;
//! what inspect reports is checked against the `onnx` package's reading of the same files
//! (tests/reference/onnx_reference.py) and against the files' sizes on disk.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use sapiens_stream::engine::onnx::{OnnxEngine, OnnxOptions};
use sapiens_stream::engine::{Engine, runtime};
use serde_json::Value;

fn sapiens(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sapiens-stream"))
        .args(args)
        .env("RUST_LOG", "warn")
        .current_dir(common::repo_root())
        .output()
        .expect("start sapiens-stream")
}

fn stdout_of(output: &Output) -> String {
    assert!(
        output.status.success(),
        "sapiens-stream failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout.clone()).unwrap()
}

fn inspect(path: &Path) -> String {
    stdout_of(&sapiens(&["models", "inspect", path.to_str().unwrap()]))
}

fn tiny(name: &str) -> PathBuf {
    let path = common::repo_root().join(format!("engines/models/sapiens_tiny_{name}.onnx"));
    assert!(
        path.exists(),
        "{} missing: run scripts/setup.sh",
        path.display()
    );
    path
}

fn describe(path: &Path) -> Value {
    serde_json::from_str(&common::run_reference(
        "onnx_reference.py",
        &["describe", path.to_str().unwrap()],
    ))
    .unwrap()
}

/// `name  f32 (N, 3, 1024, 768)`, as inspect prints a tensor.
fn tensor_line(tensor: &Value) -> String {
    let dims: Vec<String> = tensor["dims"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            d.as_u64()
                .map_or_else(|| d.as_str().unwrap().to_owned(), |n| n.to_string())
        })
        .collect();
    format!(
        "{}  {} ({})",
        tensor["name"].as_str().unwrap(),
        tensor["type"].as_str().unwrap(),
        dims.join(", ")
    )
}

/// The value after a report line's label (`task      pose, ...` -> `pose, ...`).
fn field<'a>(report: &'a str, label: &str) -> &'a str {
    report
        .lines()
        .find_map(|line| {
            line.strip_prefix(label)
                .filter(|rest| rest.starts_with(' '))
        })
        .unwrap_or_else(|| panic!("no '{label}' line in:\n{report}"))
        .trim()
}

/// Inputs, outputs, opset and metadata exactly as the `onnx` package reads them.
fn assert_matches_reference(report: &str, path: &Path) {
    let reference = describe(path);
    assert_eq!(
        field(report, "opset"),
        format!("{} (ai.onnx)", reference["opset"])
    );
    for tensor in reference["inputs"]
        .as_array()
        .unwrap()
        .iter()
        .chain(reference["outputs"].as_array().unwrap())
    {
        let line = tensor_line(tensor);
        assert!(
            report.lines().any(|l| l.trim_end().ends_with(&line)),
            "no '{line}' in:\n{report}"
        );
    }
    for (key, value) in reference["metadata"].as_object().unwrap() {
        let line = format!("{key} = {}", value.as_str().unwrap());
        assert!(report.contains(&line), "no '{line}' in:\n{report}");
    }
}

#[test]
fn list_shows_every_manifest_checkpoint() {
    let report = stdout_of(&sapiens(&["models", "list"]));
    let manifest: Value = serde_json::from_str(
        &std::fs::read_to_string(common::repo_root().join("engines/manifest.json")).unwrap(),
    )
    .unwrap();
    for model in manifest["models"].as_array().unwrap() {
        let file = model["file"].as_str().unwrap();
        assert!(report.contains(file), "{file} missing from:\n{report}");
        let location = model["path"].as_str().unwrap_or(file);
        let url = format!(
            "https://huggingface.co/{}/resolve/main/{location}",
            model["repo"].as_str().unwrap()
        );
        assert!(report.contains(&url), "{url} missing");
    }
    // Published figures from docs/SAPIENS.md.
    for figure in [
        "COCO val2017 AP 79.6",
        "COCO-WholeBody AP 74.4",
        "Goliath-308 AP 63.9",
        "Goliath body-part mIoU 76.7",
    ] {
        assert!(report.contains(figure), "{figure} missing");
    }
    assert!(report.contains("CC-BY-NC-4.0") && report.contains("RTMDet-m"));
}

/// Each generated task model: its file-name part, the task `inspect` names, its `run` flag.
const TASKS: [(&str, &str, &str); 6] = [
    ("pose17", "pose, 17 keypoints (coco17)", "pose"),
    ("pose133", "pose, 133 keypoints (coco_wholebody133)", "pose"),
    ("pose308", "pose, 308 keypoints (goliath308)", "pose"),
    ("seg", "seg, 28 classes (goliath_parts28)", "seg"),
    ("depth", "depth, 1 channel(s) at 1024x768", "depth"),
    ("normal", "normal, 3 channel(s) at 512x384", "normal"),
];

/// What `inspect` must say of a generated model of `task` that `run` takes.
fn assert_accepted_random_model(path: &Path, (name, task, flag): (&str, &str, &str)) -> String {
    let report = inspect(path);
    assert_eq!(field(&report, "task"), task, "{name}");
    assert_eq!(
        field(&report, "run"),
        format!("accepted: `run --{flag}-model {}`", path.display())
    );
    let bytes = std::fs::metadata(path).unwrap().len();
    assert!(
        field(&report, "file").ends_with(&format!(", {bytes} bytes")),
        "{report}"
    );
    assert!(report.contains("WARNING   RANDOM WEIGHTS"), "{report}");
    assert_matches_reference(&report, path);
    report
}

#[test]
fn inspect_names_task_and_keypoint_set_of_each_tiny_model() {
    for task in TASKS {
        assert_accepted_random_model(&tiny(task.0), task);
    }
}

/// `generate_models.py --arch null`: every task's Sapiens input and output with almost no
/// compute, taken by `run` as that task, saying what it is; a run with it decodes keypoints.
#[test]
fn null_models_have_the_sapiens_contract_and_say_so() {
    let dir = tempfile::tempdir().unwrap();
    let generator = common::repo_root().join("engines/generate_models.py");
    let status = Command::new(common::python())
        .arg(&generator)
        .args(["--arch", "null", "--out"])
        .arg(dir.path())
        .status()
        .expect("start generate_models.py");
    assert!(status.success());
    for task in TASKS {
        let path = dir.path().join(format!("sapiens_null_{}.onnx", task.0));
        let report = assert_accepted_random_model(&path, task);
        assert!(report.contains("sapiens_stream.arch = null"), "{report}");
        assert!(
            report.contains("sapiens_stream.compute = null: nearest resize"),
            "{report}"
        );
    }
    let results = dir.path().join("results.jsonl");
    let pose = dir.path().join("sapiens_null_pose17.onnx");
    let run = sapiens(&[
        "run",
        "--input",
        "test://smpte?width=160&height=120&frames=3",
        "--mode",
        "offline",
        "--pose-model",
        pose.to_str().unwrap(),
        "--results",
        results.to_str().unwrap(),
        "--no-progress",
    ]);
    stdout_of(&run);
    let lines = std::fs::read_to_string(&results).unwrap();
    let frames: Vec<Value> = lines
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(frames.len(), 3);
    for frame in &frames {
        assert_eq!(frame["random_weights"], true);
        let keypoints = frame["persons"][0]["keypoints"].as_array().unwrap();
        assert_eq!(keypoints.len(), 17, "{frame}");
    }
}

/// `generate_models.py --fused-attention` (engines/fuse_attention.py): engines/test_fuse_attention.py
/// checks that tiny fused models of both families, float32 and float16, hold one
/// com.microsoft.MultiHeadAttention per block and compute in ONNX Runtime what the plain ones do;
/// then the program takes the fused pose model as it takes the plain one.
#[test]
fn fused_attention_models_compute_what_plain_ones_do_and_run() {
    let dir = tempfile::tempdir().unwrap();
    let output = Command::new(common::python())
        .arg(common::repo_root().join("engines/test_fuse_attention.py"))
        .arg("--out")
        .arg(dir.path())
        .output()
        .expect("start engines/test_fuse_attention.py");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "engines/test_fuse_attention.py failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    eprintln!(
        "fused vs plain attention: {}",
        stdout.lines().last().unwrap_or_default()
    );
    let fused = dir.path().join("sapiens_tiny_pose17_mha.onnx");
    let report = assert_accepted_random_model(&fused, TASKS[0]);
    assert!(
        report.contains("sapiens_stream.attention = com.microsoft.MultiHeadAttention"),
        "{report}"
    );
    // The engine tells a fused file from a plain one (it warns before TensorRT runs one).
    let environment = runtime::environment(None).expect("ONNX Runtime");
    let fused_attention = |path: &Path| {
        OnnxEngine::load(path, environment, &OnnxOptions::default())
            .expect("load")
            .info()
            .has_fused_attention()
    };
    assert!(fused_attention(&fused));
    assert!(!fused_attention(
        &dir.path().join("sapiens_tiny_pose17.onnx")
    ));
}

/// A model with float16 input fits the pose shapes but `run` feeds float32, so it is refused, with
/// the reason;
/// its weights in an external file count towards its size.
/// A tiny pose17 model with its weights in an external file, in `dir`.
fn generate_external_pose17(dir: &Path, extra: &[&str]) {
    let status = Command::new(common::python())
        .arg(common::repo_root().join("engines/generate_models.py"))
        .args([
            "--arch",
            "tiny",
            "--tasks",
            "pose17",
            "--external-data-threshold-mb",
            "0",
        ])
        .args(extra)
        .arg("--out")
        .arg(dir)
        .status()
        .expect("start generate_models.py");
    assert!(status.success());
}

#[test]
fn inspect_explains_refusals_and_counts_external_data() {
    let dir = tempfile::tempdir().unwrap();
    generate_external_pose17(dir.path(), &["--fp16", "--fp16-io"]);
    let path = dir.path().join("sapiens_tiny_pose17_fp16io.onnx");
    let data = dir.path().join("sapiens_tiny_pose17_fp16io.onnx.data");
    assert!(data.is_file(), "the generator wrote no external data");

    let report = inspect(&path);
    assert_eq!(field(&report, "task"), "pose, 17 keypoints (coco17)");
    assert_eq!(
        field(&report, "run"),
        "refused: input 'input' is not a float32 tensor"
    );
    let total = std::fs::metadata(&path).unwrap().len() + std::fs::metadata(&data).unwrap().len();
    let file = field(&report, "file");
    assert!(file.contains(&format!(", {total} bytes (graph ")), "{file}");
    assert!(
        file.ends_with("in sapiens_tiny_pose17_fp16io.onnx.data)"),
        "{file}"
    );
    assert_matches_reference(&report, &path);
}

#[test]
fn inspect_reports_a_model_of_another_kind_with_its_shapes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("detector_like.onnx");
    common::run_reference("onnx_reference.py", &["detector", path.to_str().unwrap()]);
    let report = inspect(&path);
    assert!(
        field(&report, "task").starts_with("not a Sapiens task model"),
        "{report}"
    );
    assert_eq!(field(&report, "run"), "refused: not a Sapiens task model");
    assert_eq!(field(&report, "metadata"), "none");
    assert!(!report.contains("RANDOM WEIGHTS"));
    assert_matches_reference(&report, &path);
}

#[test]
fn inspect_errors_are_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.onnx");
    let not_onnx = dir.path().join("notes.onnx");
    std::fs::write(&not_onnx, "these are not the weights you are looking for\n").unwrap();
    for (path, expected) in [
        (&missing, "no such file"),
        (&not_onnx, "not a model ONNX Runtime can load"),
    ] {
        let output = sapiens(&["models", "inspect", path.to_str().unwrap()]);
        assert!(!output.status.success());
        let stderr = String::from_utf8_lossy(&output.stderr);
        let lines: Vec<&str> = stderr.lines().collect();
        assert_eq!(lines.len(), 1, "{stderr}");
        assert!(
            lines[0].starts_with(&format!("error: model {}: {expected}", path.display())),
            "{stderr}"
        );
    }
}

/// `.venv-triton`'s Python (scripts/setup.sh makes it): it has tritonclient, whose
/// model_config_pb2 is Triton's own ModelConfig message.
fn triton_python() -> PathBuf {
    let python = common::repo_root().join(".venv-triton/bin/python");
    assert!(
        python.exists(),
        "{} missing: run scripts/setup.sh",
        python.display()
    );
    python
}

/// `models triton-repo` writes what Triton reads: every config.pbtxt parses into Triton's
/// ModelConfig and matches ONNX Runtime's reading of the model beside it (names, types, dims,
/// metadata as parameters; tests/reference/check_triton_repo.py), with the options asked for; a
/// model exported for batch 1 is served without batching; external weights travel with it.
#[test]
fn triton_repo_writes_configs_that_triton_parses() {
    let dir = tempfile::tempdir().unwrap();
    generate_external_pose17(dir.path(), &[]);
    let pose = dir.path().join("sapiens_tiny_pose17.onnx");
    let spec = serde_json::json!([{"name": "rtmdet", "layout": "rtmdet", "input": [640, 640],
        "boxes": [[200.0, 150.0, 320.0, 360.0, 0.9, 0]]}]);
    common::run_reference(
        "make_detectors.py",
        &[common::path_arg(dir.path()), &spec.to_string()],
    );
    let detector = dir.path().join("rtmdet.onnx");
    let repo = dir.path().join("repo");
    let seg = tiny("seg");
    let written = stdout_of(&sapiens(&[
        "models",
        "triton-repo",
        common::path_arg(&repo),
        common::path_arg(&seg),
        common::path_arg(&pose),
        common::path_arg(&detector),
        "--max-batch",
        "4",
        "--queue-delay-us",
        "500",
        "--instances",
        "2",
        "--tensorrt-fp16",
    ]));
    assert_eq!(written.lines().count(), 3, "{written}");

    let checked = Command::new(triton_python())
        .arg(common::repo_root().join("tests/reference/check_triton_repo.py"))
        .arg(&repo)
        .output()
        .unwrap();
    assert!(
        checked.status.success(),
        "{}",
        String::from_utf8_lossy(&checked.stderr)
    );
    let configs: Value = serde_json::from_slice(&checked.stdout).unwrap();
    for name in ["sapiens_tiny_seg", "sapiens_tiny_pose17"] {
        let config = &configs[name];
        assert_eq!(config["platform"], "onnxruntime_onnx", "{name}");
        assert_eq!(config["maxBatchSize"], 4, "{name}");
        assert_eq!(
            config["dynamicBatching"]["maxQueueDelayMicroseconds"], "500",
            "{name}"
        );
        assert_eq!(config["instanceGroup"][0]["count"], 2, "{name}");
        assert_eq!(config["instanceGroup"][0]["kind"], "KIND_GPU", "{name}");
        let accelerator =
            &config["optimization"]["executionAccelerators"]["gpuExecutionAccelerator"][0];
        assert_eq!(accelerator["name"], "tensorrt");
        assert_eq!(accelerator["parameters"]["precision_mode"], "FP16");
        assert_eq!(
            config["parameters"]["sapiens_stream.random_weights"]["stringValue"],
            "true"
        );
    }
    // mmdeploy's export takes batch 1 only: served as it is, the batcher would refuse it.
    let rtmdet = &configs["rtmdet"];
    assert!(
        rtmdet.get("maxBatchSize").is_none() && rtmdet.get("dynamicBatching").is_none(),
        "{rtmdet}"
    );
    assert_eq!(
        rtmdet["input"][0]["dims"],
        serde_json::json!(["1", "3", "640", "640"])
    );

    let served = repo.join("sapiens_tiny_pose17/1");
    assert_eq!(
        std::fs::read(served.join("model.onnx")).unwrap(),
        std::fs::read(&pose).unwrap()
    );
    let data = "sapiens_tiny_pose17.onnx.data";
    assert_eq!(
        std::fs::read(served.join(data)).unwrap(),
        std::fs::read(dir.path().join(data)).unwrap()
    );

    let twice = sapiens(&[
        "models",
        "triton-repo",
        common::path_arg(&repo),
        common::path_arg(&seg),
        common::path_arg(&seg),
    ]);
    assert!(!twice.status.success());
    let stderr = String::from_utf8_lossy(&twice.stderr);
    assert!(
        stderr.contains("a second model named 'sapiens_tiny_seg'"),
        "{stderr}"
    );
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
}
