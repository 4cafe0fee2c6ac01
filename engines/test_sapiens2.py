#!/usr/bin/env python3
"""Test of the Sapiens2 path of engines/export_onnx.py on tiny Sapiens2 models (engines/sapiens2.py).

For each task (pose, seg, normal, pointmap): builds the tiny model with random weights (norm and
LayerScale weights drawn around 1, so attention and the norms matter), saves its state dict as
safetensors under the official parameter names, and runs the export script on it twice: float32
with the weights inline, float16 with external data. Checks each report, then the ONNX files
independently: ONNX Runtime at batch 3 against the eager PyTorch module, and the metadata. The pose
model is exported a third time, float16 with --fused-attention: one com.microsoft.MultiHeadAttention
per block, checked the same way.

Then the refusals: a checkpoint with a tensor missing, one with an extra tensor, one with a
tensor of the wrong shape, and a file that is not safetensors must each end the script with
exit status 1 and one `error:` line naming the problem. Also measures how far the exported
float32 rotation is from the official bfloat16 one (reported, not asserted).

Writes into --out: the exports, `input.npy` (2, 3, 1024, 768) and `pointmap_output.npy` (the eager
pointmap module's output for it), for the Rust side to run the same input through its engine.
The last line of stdout is a JSON summary. Needs torch, safetensors, onnx, onnxruntime, numpy.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import torch
from safetensors.torch import save_file

ENGINES = Path(__file__).resolve().parent
sys.path.insert(0, str(ENGINES))
import sapiens2  # noqa: E402

EXPORT_SCRIPT = ENGINES / "export_onnx.py"
INPUT_SHAPE = (3, sapiens2.INPUT_HEIGHT, sapiens2.INPUT_WIDTH)
TOLERANCE = {"fp32": 1e-4, "fp16": 5e-2}


def tiny_model(task: str, seed: int) -> sapiens2.Sapiens2Model:
    torch.manual_seed(seed)
    model = sapiens2.build("tiny", task)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name.endswith((".ln1.weight", ".ln2.weight", "norm.weight", "gamma.weight")) or name == "backbone.ln1.weight":
                parameter.copy_(1 + 0.1 * torch.randn_like(parameter))
            elif parameter.dim() > 1:
                parameter.copy_(0.05 * torch.randn_like(parameter))
    return model


def save_checkpoint(tensors: dict[str, torch.Tensor], path: Path) -> Path:
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path))
    return path


def run_export(checkpoint: Path, output: Path, task: str, extra: list[str]) -> subprocess.CompletedProcess:
    command = [sys.executable, str(EXPORT_SCRIPT), str(checkpoint), "-o", str(output), "--task", task, "--size", "tiny"]
    return subprocess.run(command + extra, capture_output=True, text=True)


def relative_diff(actual: np.ndarray, expected: np.ndarray) -> float:
    return float(np.abs(actual.astype(np.float64) - expected).max() / np.abs(expected).max())


def check_export(model, task: str, out: Path, checkpoint: Path, variant: str, inputs: np.ndarray) -> dict:
    fp16 = variant == "fp16"
    onnx_path = out / f"sapiens2_tiny_{task}{'_fp16' if fp16 else ''}.onnx"
    report_path = out / f"{onnx_path.stem}_report.json"
    flags = ["--report", str(report_path)] + (["--fp16", "--external-data"] if fp16 else [])
    done = run_export(checkpoint, onnx_path, task, flags)
    if done.returncode != 0:
        raise AssertionError(f"export of {task} {variant} failed:\n{done.stdout}\n{done.stderr}")
    report = json.loads(report_path.read_text())
    assert report["passed"] and report["family"] == "sapiens2", report
    assert Path(onnx_path.name + ".data").name in {p.name for p in out.iterdir()} or not fp16

    exported = onnx.load(str(onnx_path), load_external_data=False)
    declared = [d.dim_param or d.dim_value for d in exported.graph.output[0].type.tensor_type.shape.dim]
    assert declared[1:] == list(sapiens2.output_shape(task)), f"{task} {variant}: declared output {declared}"
    metadata = {p.key: p.value for p in exported.metadata_props}
    assert metadata["sapiens_stream.family"] == "sapiens2", metadata
    assert metadata["sapiens_stream.task"] == task, metadata
    assert metadata["sapiens_stream.dtype"] == ("float16" if fp16 else "float32"), metadata
    # The rotary periods are a bfloat16 buffer, as in the official checkpoints.
    assert metadata["sapiens_stream.checkpoint_dtypes"] == "bfloat16,float32", metadata
    assert (metadata.get("sapiens_stream.keypoints") == "308") == (task == "pose"), metadata

    session = onnxruntime.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    (result,) = session.run(["output"], {"input": inputs})
    with torch.inference_mode():
        expected = model(torch.from_numpy(inputs)).numpy()
    assert result.shape == (len(inputs), *sapiens2.output_shape(task)), result.shape
    relative = relative_diff(result, expected)
    assert relative <= TOLERANCE[variant], f"{task} {variant}: ONNX Runtime differs from PyTorch by {relative:.3g}"
    return {"export_relative_diff": report["relative_max_diff"], "batch3_relative_diff": relative}


def check_fused_export(model, out: Path, checkpoint: Path, inputs: np.ndarray) -> dict:
    """Pose in float16 with --fused-attention: one fused core per block, PyTorch's output at batch 3."""
    onnx_path = out / "sapiens2_tiny_pose_fp16_mha.onnx"
    report_path = out / f"{onnx_path.stem}_report.json"
    done = run_export(checkpoint, onnx_path, "pose", ["--fp16", "--fused-attention", "--report", str(report_path)])
    if done.returncode != 0:
        raise AssertionError(f"fused export failed:\n{done.stdout}\n{done.stderr}")
    report = json.loads(report_path.read_text())
    assert report["passed"] and report["fused_attention_cores"] == len(model.backbone.blocks), report
    metadata = {p.key: p.value for p in onnx.load(str(onnx_path)).metadata_props}
    assert metadata["sapiens_stream.attention"] == "com.microsoft.MultiHeadAttention", metadata
    session = onnxruntime.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    (result,) = session.run(["output"], {"input": inputs})
    with torch.inference_mode():
        relative = relative_diff(result, model(torch.from_numpy(inputs)).numpy())
    assert relative <= TOLERANCE["fp16"], f"fused pose fp16: ONNX Runtime differs from PyTorch by {relative:.3g}"
    return {"export_relative_diff": report["relative_max_diff"], "batch3_relative_diff": relative}


def expect_refusal(checkpoint: Path, out: Path, task: str, *needles: str) -> str:
    done = run_export(checkpoint, out / "refused.onnx", task, [])
    errors = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert done.returncode == 1, f"{checkpoint.name}: exit {done.returncode}\n{done.stderr}"
    assert "Traceback" not in done.stderr and len(errors) == 1, done.stderr
    assert all(n in errors[0] for n in needles), f"{errors[0]!r} lacks {needles}"
    assert not (out / "refused.onnx").exists()
    return errors[0]


def refusals(model, out: Path) -> list[str]:
    state = dict(model.state_dict())
    missing = {k: v for k, v in state.items() if k != "backbone.blocks.1.attn.k_norm.weight"}
    extra = {**state, "decode_head.loss.weight": torch.ones(3)}
    misshapen = {**state, "decode_head.conv_pose.bias": torch.zeros(17)}
    not_safetensors = out / "garbage.safetensors"
    not_safetensors.write_bytes(b"not a safetensors file")
    return [
        expect_refusal(save_checkpoint(missing, out / "missing.safetensors"), out, "pose", "1 missing", "k_norm"),
        expect_refusal(save_checkpoint(extra, out / "extra.safetensors"), out, "pose", "1 unexpected", "decode_head.loss.weight"),
        expect_refusal(save_checkpoint(misshapen, out / "misshapen.safetensors"), out, "pose", "conv_pose.bias", "(17,)"),
        expect_refusal(not_safetensors, out, "pose", "not a safetensors file"),
        expect_refusal(out / "absent.safetensors", out, "pose", "no such file"),
    ]


def bf16_rope_gap(model: sapiens2.Sapiens2Model, inputs: np.ndarray) -> float:
    """How far the float32 rotation is from the official bfloat16 one, on the same weights."""
    official = sapiens2.build("tiny", model.task, rope="bf16")
    official.load_state_dict(model.state_dict())
    with torch.inference_mode():
        ours = model(torch.from_numpy(inputs)).numpy()
        theirs = official(torch.from_numpy(inputs)).numpy()
    return relative_diff(ours, theirs)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    inputs = rng.standard_normal((3, *INPUT_SHAPE), dtype=np.float32)

    summary: dict = {}
    for seed, task in enumerate(sapiens2.TASKS):
        model = tiny_model(task, seed)
        checkpoint = save_checkpoint(model.state_dict(), out / f"sapiens2_tiny_{task}.safetensors")
        summary[task] = {variant: check_export(model, task, out, checkpoint, variant, inputs) for variant in TOLERANCE}
        summary[task]["bf16_rope_relative_gap"] = bf16_rope_gap(model, inputs[:1])
        if task == "pointmap":
            np.save(out / "input.npy", inputs[:2])
            with torch.inference_mode():
                np.save(out / "pointmap_output.npy", model(torch.from_numpy(inputs[:2])).numpy())
        if task == "pose":
            summary[task]["fp16_mha"] = check_fused_export(model, out, checkpoint, inputs)
            summary["refusals"] = refusals(model, out)
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
