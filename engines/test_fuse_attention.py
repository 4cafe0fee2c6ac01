#!/usr/bin/env python3
"""Check of engines/fuse_attention.py and `generate_models.py --fused-attention`, ONNX Runtime on CPU.

1. Generated models: tiny Sapiens (pose17, seg) and Sapiens2 (pose308), float32 and float16, each
   written plain and with --fused-attention. The fused file has one com.microsoft.MultiHeadAttention
   per transformer block, with the block's head count and 1/sqrt(head size) as attributes, and no
   Softmax left, passes onnx.checker, says so in its metadata, and its output at batch 2 matches
   the plain file's (relative to the largest |output|: 1e-5 in float32, 1e-3 in float16);
   fuse_attention() on the plain file also reports one core per block.
2. The command line on a model with external data: the result keeps its weights external and
   computes what the plain model does.
3. Small hand-built cores in the forms other exporters write: torch's scaled_dot_product_attention
   export (sqrt of a scale computed from Shape(q), on q and on k after its Transpose), a Div scale
   with float32 Casts around the Softmax in a float16 graph; and two that must stay as they are:
   a head count shape inference cannot prove, and attention probabilities used elsewhere.

Needs onnx, onnxruntime and numpy (no torch). Writes the models into --out (a temporary folder by
default); `sapiens_tiny_pose17_mha.onnx` is there for the Rust side. The last line of stdout is a
JSON summary; a failure prints `error: ...` and exits 1.

Usage: python engines/test_fuse_attention.py [--out DIR]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
from onnx import TensorProto, helper, numpy_helper

ENGINES = Path(__file__).resolve().parent
sys.path.insert(0, str(ENGINES))
import fuse_attention  # noqa: E402
import generate_models as gm  # noqa: E402

BATCH = 2
MAX_RELATIVE_DIFF = {"fp32": 1e-5, "fp16": 1e-3}
GENERATED = [(gm.SAPIENS, ["pose17", "seg"]), (gm.SAPIENS2, ["pose308"])]
FUSED_OP = (fuse_attention.MS_DOMAIN, fuse_attention.FUSED_OP)
# Hand-built cores: batch, heads, tokens, head size (tokens not a multiple of anything on purpose).
B, N, S, H = 2, 4, 37, 16


class CheckFailed(Exception):
    pass


def expect(condition: bool, message: str) -> None:
    if not condition:
        raise CheckFailed(message)


def run(model: onnx.ModelProto | Path, feeds: dict[str, np.ndarray]) -> np.ndarray:
    source = str(model) if isinstance(model, Path) else model.SerializeToString()
    session = onnxruntime.InferenceSession(source, providers=["CPUExecutionProvider"])
    return session.run(None, feeds)[0]


def differences(actual: np.ndarray, expected: np.ndarray) -> dict[str, float]:
    worst = float(np.abs(actual.astype(np.float64) - expected).max())
    return {"max_abs_diff": worst, "relative_max_diff": worst / float(np.abs(expected).max())}


def op_count(model: onnx.ModelProto, domain: str, op_type: str) -> int:
    return sum(n.domain == domain and n.op_type == op_type for n in model.graph.node)


def generate(out: Path, family: str, tasks: list[str], extra: list[str]) -> None:
    command = [sys.executable, str(ENGINES / "generate_models.py"), "--out", str(out), "--family", family]
    command += ["--arch", "tiny", "--tasks", ",".join(tasks), *extra]
    done = subprocess.run(command, capture_output=True, text=True)
    expect(done.returncode == 0, f"generate_models.py {' '.join(extra)} failed:\n{done.stderr}")


def image() -> np.ndarray:
    rng = np.random.default_rng(5)
    return rng.standard_normal((BATCH, 3, gm.INPUT_HEIGHT, gm.INPUT_WIDTH), dtype=np.float32)


def heads_and_scale(spec: gm.ModelSpec) -> tuple[int, float]:
    arch = spec.arch
    heads = arch.heads if spec.family == gm.SAPIENS2 else arch.num_heads
    return heads, (arch.embed_dim // heads) ** -0.5


def fused_attributes(model: onnx.ModelProto) -> set[tuple[int, float]]:
    """(num_heads, scale) of every fused op."""
    ops = [n for n in model.graph.node if (n.domain, n.op_type) == FUSED_OP]
    return {(fuse_attention.attribute(n, "num_heads"), fuse_attention.attribute(n, "scale")) for n in ops}


def check_generated_pair(spec: gm.ModelSpec, out: Path, variant: str) -> dict:
    """The fused file of `spec` against its plain twin."""
    plain_path, fused_path = out / spec.file_name, out / dataclasses.replace(spec, fused_attention=True).file_name
    plain, fused = onnx.load(str(plain_path)), onnx.load(str(fused_path))
    name = fused_path.name
    onnx.checker.check_model(str(fused_path), full_check=True)
    fused_ops = op_count(fused, *FUSED_OP)
    expect(fused_ops == spec.blocks, f"{name}: {fused_ops} fused ops, {spec.blocks} blocks")
    expect(op_count(fused, "", "Softmax") == 0, f"{name}: a Softmax is left")
    # The random weights leave attention almost uniform, so the outputs hardly see the scale.
    heads, scale = heads_and_scale(spec)
    attributes = fused_attributes(fused)
    expect(
        all(h == heads and np.isclose(s, scale, rtol=1e-6) for h, s in attributes),
        f"{name}: (num_heads, scale) {attributes}, expected ({heads}, {scale})",
    )
    metadata = {p.key: p.value for p in fused.metadata_props}
    expect(metadata.get("sapiens_stream.attention") == ".".join(FUSED_OP), f"{name}: metadata {metadata}")
    plain_keys = {p.key for p in plain.metadata_props}
    expect("sapiens_stream.attention" not in plain_keys, f"{plain_path.name} says it is fused")
    _, cores = fuse_attention.fuse_attention(plain)
    expect(cores == spec.blocks, f"{plain_path.name}: fuse_attention found {cores} cores, {spec.blocks} blocks")

    expected = run(plain_path, {"input": image()})
    result = differences(run(fused_path, {"input": image()}), expected)
    expect(
        result["relative_max_diff"] <= MAX_RELATIVE_DIFF[variant],
        f"{name}: fused differs from plain by {result['relative_max_diff']:.3g} of the largest output",
    )
    return {"cores": cores, **result}


def check_generated(out: Path) -> dict:
    summary = {}
    for variant, extra in (("fp32", []), ("fp16", ["--fp16"])):
        for family, tasks in GENERATED:
            generate(out, family, tasks, extra)
            generate(out, family, tasks, extra + ["--fused-attention"])
            archs, family_tasks = gm.FAMILIES[family]
            for task in tasks:
                spec = gm.ModelSpec(archs["tiny"], family_tasks[task], seed=0, fp16=variant == "fp16")
                summary[spec.file_name.removesuffix(".onnx")] = check_generated_pair(spec, out, variant)
    return summary


def check_command_line(out: Path) -> dict:
    """fuse_attention.py IN OUT on a model whose weights are in an external file."""
    external = out / "external"
    generate(external, gm.SAPIENS, ["pose17"], ["--external-data-threshold-mb", "0"])
    plain = external / "sapiens_tiny_pose17.onnx"
    fused = external / "fused.onnx"
    done = subprocess.run(
        [sys.executable, str(ENGINES / "fuse_attention.py"), str(plain), str(fused)], capture_output=True, text=True
    )
    expect(done.returncode == 0, f"fuse_attention.py failed:\n{done.stderr}")
    expect("2 attention cores fused" in done.stdout, f"fuse_attention.py said: {done.stdout}")
    expect(fuse_attention.uses_external_data(onnx.load(str(fused), load_external_data=False)), "weights went inline")
    expect((external / "fused.onnx.data").is_file(), "no fused.onnx.data")
    result = differences(run(fused, {"input": image()}), run(plain, {"input": image()}))
    expect(
        result["relative_max_diff"] <= MAX_RELATIVE_DIFF["fp32"],
        f"the command line's fused model differs from the plain one: {result}",
    )
    return result


# --- Hand-built cores. --------------------------------------------------------------------


def core_model(
    nodes: list[onnx.NodeProto], elem_type: int, heads: int | str = N, outputs: tuple[str, ...] = ("context",)
) -> onnx.ModelProto:
    """Graph inputs q, k, v (batch, heads, S, H); graph outputs `outputs`: `context`, maybe `probs`."""
    inputs = [helper.make_tensor_value_info(name, elem_type, ["batch", heads, S, H]) for name in "qkv"]
    shapes = {"context": ["batch", heads, S, H], "probs": ["batch", heads, S, S]}
    results = [helper.make_tensor_value_info(name, elem_type, shapes[name]) for name in outputs]
    model = helper.make_model(
        helper.make_graph(nodes, "core", inputs, results), opset_imports=[helper.make_opsetid("", 17)]
    )
    model.ir_version = 8  # what ONNX Runtime 1.31 reads; the onnx package would write a newer one
    return model


def constant(name: str, value: float | list[int], dtype: type = np.float32) -> onnx.NodeProto:
    return helper.make_node("Constant", [], [name], value=numpy_helper.from_array(np.array(value, dtype=dtype)))


def sdpa_export_core() -> onnx.ModelProto:
    """What torch.onnx.export writes for F.scaled_dot_product_attention(q, k, v) at opset 17."""
    nodes = [
        helper.make_node("Shape", ["q"], ["q_shape"]),
        constant("last_start", [-1], np.int64),
        constant("last_end", [2**62], np.int64),
        helper.make_node("Slice", ["q_shape", "last_start", "last_end"], ["head_size"]),
        helper.make_node("Cast", ["head_size"], ["head_size_float"], to=TensorProto.FLOAT),
        helper.make_node("Sqrt", ["head_size_float"], ["head_size_sqrt"]),
        constant("one", [1.0]),
        helper.make_node("Div", ["one", "head_size_sqrt"], ["scale"]),
        helper.make_node("Sqrt", ["scale"], ["scale_sqrt"]),
        helper.make_node("Mul", ["q", "scale_sqrt"], ["q_scaled"]),
        helper.make_node("Transpose", ["k"], ["k_t"], perm=[0, 1, 3, 2]),
        helper.make_node("Mul", ["k_t", "scale_sqrt"], ["k_t_scaled"]),
        helper.make_node("MatMul", ["q_scaled", "k_t_scaled"], ["scores"]),
        helper.make_node("Softmax", ["scores"], ["probs"], axis=-1),
        helper.make_node("MatMul", ["probs", "v"], ["context"]),
    ]
    return core_model(nodes, TensorProto.FLOAT)


def fp16_core_with_float32_softmax(heads: int | str = N, probs_out: bool = False) -> onnx.ModelProto:
    """scores / sqrt(H) in float16, Softmax in float32 between Casts."""
    nodes = [
        helper.make_node("Transpose", ["k"], ["k_t"], perm=[0, 1, 3, 2]),
        helper.make_node("MatMul", ["q", "k_t"], ["scores"]),
        constant("divisor", float(np.sqrt(H)), np.float16),
        helper.make_node("Div", ["scores", "divisor"], ["scores_scaled"]),
        helper.make_node("Cast", ["scores_scaled"], ["scores_float"], to=TensorProto.FLOAT),
        helper.make_node("Softmax", ["scores_float"], ["probs_float"], axis=-1),
        helper.make_node("Cast", ["probs_float"], ["probs"], to=TensorProto.FLOAT16),
        helper.make_node("MatMul", ["probs", "v"], ["context"]),
    ]
    return core_model(nodes, TensorProto.FLOAT16, heads, ("context", "probs") if probs_out else ("context",))


def qkv(dtype: type) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(9)
    return {name: rng.standard_normal((B, N, S, H), dtype=np.float32).astype(dtype) for name in "qkv"}


def check_fused_core(name: str, model: onnx.ModelProto, dtype: type, tolerance: float) -> dict:
    expected = run(model, qkv(dtype))
    fused, cores = fuse_attention.fuse_attention(onnx.ModelProto.FromString(model.SerializeToString()))
    expect(cores == 1 and op_count(fused, *FUSED_OP) == 1, f"{name}: {cores} cores fused")
    onnx.checker.check_model(fused, full_check=True)
    kept = {n.op_type for n in fused.graph.node}
    expect(not kept & {"Softmax", "MatMul", "Shape", "Sqrt", "Cast"}, f"{name}: left behind {sorted(kept)}")
    result = differences(run(fused, qkv(dtype)), expected)
    expect(result["relative_max_diff"] <= tolerance, f"{name}: fused differs by {result['relative_max_diff']:.3g}")
    return result


def check_left_alone(name: str, model: onnx.ModelProto) -> None:
    before = model.SerializeToString()
    fused, cores = fuse_attention.fuse_attention(model)
    expect(cores == 0 and fused.SerializeToString() == before, f"{name}: changed, {cores} cores fused")


def check_hand_built() -> dict:
    summary = {
        "sdpa_export_fp32": check_fused_core("sdpa export", sdpa_export_core(), np.float32, MAX_RELATIVE_DIFF["fp32"]),
        "fp16_with_fp32_softmax": check_fused_core(
            "float32 softmax", fp16_core_with_float32_softmax(), np.float16, MAX_RELATIVE_DIFF["fp16"]
        ),
    }
    check_left_alone("symbolic head count", fp16_core_with_float32_softmax(heads="heads"))
    check_left_alone("probabilities used elsewhere", fp16_core_with_float32_softmax(probs_out=True))
    summary["left_alone"] = ["symbolic head count", "probabilities used elsewhere"]
    return summary


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, help="keep the models here (default: a temporary folder)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        out = args.out or Path(scratch)
        out.mkdir(parents=True, exist_ok=True)
        try:
            summary = {
                "generated": check_generated(out),
                "command_line_external_data": check_command_line(out),
                "hand_built": check_hand_built(),
            }
        except CheckFailed as failure:
            print(f"error: {failure}", file=sys.stderr)
            return 1
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
