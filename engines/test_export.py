#!/usr/bin/env python3
"""Test of engines/export_onnx.py on a small Sapiens-architecture pose model.

Builds a ViT with the Sapiens layout (patch-embed conv with padding 2, learned position embedding,
pre-norm blocks with LayerNorm eps 1e-6, qkv attention and a GELU MLP, final LayerNorm, tokens
reshaped to (B, C, 64, 48)) and the pose head (2 x ConvTranspose k4 s2 p1 + InstanceNorm2d + SiLU,
2 x 1x1 conv + InstanceNorm2d + SiLU, final 1x1 conv to 17 heatmaps), at tiny widths. Traces it
with torch.jit.trace at batch 1, as the official checkpoints are, saves it, and runs the export
script on it three times: float32 with the weights inline, float16 with external data, float32
with --fused-attention (one com.microsoft.MultiHeadAttention per block). Checks each report, then
checks the ONNX files independently: ONNX Runtime at batch 3 against the eager PyTorch module,
the metadata, and that a task the model does not fit is refused.

Writes into --out: the exported models, `input.npy` (2, 3, 1024, 768) and `torch_output.npy`
(the eager module's output for it), for the Rust side to run the same input through its engine.
The last line of stdout is a JSON summary. Needs torch, onnx, onnxruntime, numpy.
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
from torch import nn

EXPORT_SCRIPT = Path(__file__).resolve().parent / "export_onnx.py"
INPUT_SHAPE = (3, 1024, 768)
GRID = (64, 48)
KEYPOINTS = 17


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.scale = (dim // heads) ** -0.5
        self.qkv = nn.Linear(dim, 3 * dim, bias=True)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        attention = ((q @ k.transpose(-2, -1)) * self.scale).softmax(dim=-1)
        return self.proj((attention @ v).transpose(1, 2).reshape(b, n, c))


class Block(nn.Module):
    def __init__(self, dim: int, heads: int, ffn: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attention = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = nn.Sequential(nn.Linear(dim, ffn), nn.GELU(), nn.Linear(ffn, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attention(self.norm1(x))
        return x + self.mlp(self.norm2(x))


def norm_act(channels: int) -> list[nn.Module]:
    return [nn.InstanceNorm2d(channels), nn.SiLU()]


class TinySapiensPose(nn.Module):
    def __init__(self, dim: int = 32, heads: int = 2, layers: int = 2, ffn: int = 64, head: int = 16) -> None:
        super().__init__()
        self.dim = dim
        self.patch_embed = nn.Conv2d(3, dim, kernel_size=16, stride=16, padding=2)
        self.pos_embed = nn.Parameter(torch.randn(1, GRID[0] * GRID[1], dim) * 0.02)
        self.blocks = nn.Sequential(*[Block(dim, heads, ffn) for _ in range(layers)])
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.head = nn.Sequential(
            nn.ConvTranspose2d(dim, head, kernel_size=4, stride=2, padding=1, bias=False),
            *norm_act(head),
            nn.ConvTranspose2d(head, head, kernel_size=4, stride=2, padding=1, bias=False),
            *norm_act(head),
            nn.Conv2d(head, head, kernel_size=1),
            *norm_act(head),
            nn.Conv2d(head, head, kernel_size=1),
            *norm_act(head),
            nn.Conv2d(head, KEYPOINTS, kernel_size=1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x)
        b = x.shape[0]
        tokens = self.norm(self.blocks(x.flatten(2).transpose(1, 2) + self.pos_embed))
        return self.head(tokens.transpose(1, 2).reshape(b, self.dim, *GRID))


def export(checkpoint: Path, output: Path, *extra: str) -> subprocess.CompletedProcess:
    report = output.with_suffix(".report.json")
    command = [sys.executable, str(EXPORT_SCRIPT), str(checkpoint), "-o", str(output), "--report", str(report), *extra]
    return subprocess.run(command, capture_output=True, text=True)


def exported(checkpoint: Path, output: Path, *extra: str) -> dict:
    result = export(checkpoint, output, *extra)
    assert result.returncode == 0, f"export_onnx.py {' '.join(extra)} failed:\n{result.stdout}\n{result.stderr}"
    return json.loads(output.with_suffix(".report.json").read_text())


def check_report(report: dict, dtype: str, max_relative: float) -> None:
    assert report["passed"], report
    assert report["dtype"] == dtype, report
    assert report["onnx_output_shape"] == [2, KEYPOINTS, 256, 192], report
    assert report["relative_max_diff"] <= max_relative, report
    assert 0 <= report["mean_abs_diff"] <= report["max_abs_diff"], report


def check_against_eager(path: Path, module: nn.Module, max_relative: float) -> float:
    """ONNX Runtime at batch 3 (the export was traced at 1) against the eager module."""
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (declared,) = session.get_inputs()
    assert declared.name == "input" and not isinstance(declared.shape[0], int), declared.shape
    assert declared.shape[1:] == list(INPUT_SHAPE) and declared.type == "tensor(float)", declared
    inputs = np.random.default_rng(7).standard_normal((3, *INPUT_SHAPE), dtype=np.float32)
    (result,) = session.run(["output"], {"input": inputs})
    with torch.inference_mode():
        reference = module(torch.from_numpy(inputs)).numpy()
    assert result.shape == (3, KEYPOINTS, 256, 192), result.shape
    relative = float(np.abs(result - reference).max() / np.abs(reference).max())
    assert relative <= max_relative, f"{path.name}: relative max difference {relative}"
    return relative


def metadata(path: Path) -> dict[str, str]:
    model = onnx.load(str(path), load_external_data=False)
    return {p.key: p.value for p in model.metadata_props}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, required=True)
    out = parser.parse_args().out
    out.mkdir(parents=True, exist_ok=True)

    torch.manual_seed(0)
    module = TinySapiensPose().eval()
    checkpoint = out / "sapiens_tiny_pose17_torchscript.pt2"
    with torch.inference_mode():
        traced = torch.jit.trace(module, torch.randn(1, *INPUT_SHAPE))
    traced.save(str(checkpoint))

    fp32_path = out / "sapiens_tiny_pose17.onnx"
    fp32 = exported(checkpoint, fp32_path, "--task", "pose", "--keypoints", "17")
    check_report(fp32, "float32", 1e-4)
    assert fp32["external_data"] is None and not Path(str(fp32_path) + ".data").exists()
    eager_fp32 = check_against_eager(fp32_path, module, 1e-4)
    meta = metadata(fp32_path)
    assert meta["sapiens_stream.task"] == "pose" and meta["sapiens_stream.keypoints"] == "17", meta
    assert meta["sapiens_stream.source"] == checkpoint.name and "sapiens_stream.random_weights" not in meta, meta

    fp16_path = out / "sapiens_tiny_pose17_fp16.onnx"
    fp16 = exported(checkpoint, fp16_path, "--task", "pose", "--keypoints", "17", "--fp16", "--external-data")
    check_report(fp16, "float16", 5e-2)
    assert Path(fp16["external_data"]).is_file(), fp16
    weights = onnx.load(str(fp16_path)).graph.initializer
    assert sum(w.data_type == onnx.TensorProto.FLOAT16 for w in weights) > len(weights) // 2, "weights not float16"
    eager_fp16 = check_against_eager(fp16_path, module, 5e-2)

    fused_path = out / "sapiens_tiny_pose17_mha.onnx"
    fused = exported(checkpoint, fused_path, "--task", "pose", "--keypoints", "17", "--fused-attention")
    check_report(fused, "float32", 1e-4)
    assert fused["fused_attention_cores"] == len(module.blocks), fused
    assert metadata(fused_path)["sapiens_stream.attention"] == "com.microsoft.MultiHeadAttention"
    eager_fused = check_against_eager(fused_path, module, 1e-4)

    refused = export(checkpoint, out / "refused.onnx", "--task", "seg")
    assert refused.returncode == 1 and "must output (N, 28, 512, 384)" in refused.stderr, refused.stderr
    assert not (out / "refused.onnx").exists()

    inputs = np.random.default_rng(11).standard_normal((2, *INPUT_SHAPE), dtype=np.float32)
    with torch.inference_mode():
        np.save(out / "torch_output.npy", module(torch.from_numpy(inputs)).numpy())
    np.save(out / "input.npy", inputs)

    keys = ("max_abs_diff", "mean_abs_diff", "relative_max_diff", "onnx_output_shape")
    summary = {
        "fp32": {k: fp32[k] for k in keys} | {"eager_relative_max_diff": eager_fp32},
        "fp16": {k: fp16[k] for k in keys} | {"eager_relative_max_diff": eager_fp16},
        "fp32_mha": {k: fused[k] for k in keys} | {"eager_relative_max_diff": eager_fused},
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
