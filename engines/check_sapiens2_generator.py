#!/usr/bin/env python3
"""Cross-check of engines/generate_models.py --family sapiens2 against engines/sapiens2.py.

1. The generator's tasks and their output shapes are the model's (both take the sizes and head
   widths from engines/sapiens2_arch.py).
2. Its numpy RoPE tables, bfloat16 ops emulated, equal torch's bfloat16
   `rope_table(rope_periods(head_dim), GRID)` bit for bit, for every size's head_dim.
3. For each tiny task: builds the ONNX model, loads its initializers into
   `sapiens2.build("tiny", task)` by name, and runs ONNX Runtime (CPU) and PyTorch on the same
   batch-2 input: max |ONNX - torch| must be at most 1e-4 max |torch|.

Initializers map to the state_dict by the generator's rule: `<key>` is the entry `<key>` as is,
`<module>.weight_t` is the transposed `<module>.weight` of an nn.Linear on tokens. Every other
initializer must be a constant that CONSTANTS names, no state_dict entry, and is checked by value.
Every state_dict entry is filled exactly once, except `backbone.rope_embed.periods`: the model has
the RoPE table computed from it instead (checked in 2), not the periods.

Needs torch, onnx, onnxruntime and numpy. The last line of stdout is a JSON summary; a failure
prints `error: ...` and exits 1.

Usage: python engines/check_sapiens2_generator.py [--out DIR]   (DIR keeps the models)
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np
import onnx
import onnxruntime
import torch
from onnx import numpy_helper

sys.path.insert(0, str(Path(__file__).resolve().parent))
import generate_models as gm  # noqa: E402
import sapiens2  # noqa: E402

ARCH = "tiny"
BATCH = 2
MAX_RELATIVE_DIFF = 1e-4
TRANSPOSED_SUFFIX = "_t"
# The one state_dict entry the model holds as what it determines, the RoPE tables.
NOT_IN_MODEL = {"backbone.rope_embed.periods"}


class CheckFailed(Exception):
    pass


def expect(condition: bool, message: str) -> None:
    if not condition:
        raise CheckFailed(message)


def check_tasks() -> None:
    """The generator's tasks are the model's, with its output shapes."""
    kinds = [t.kind for t in gm.SAPIENS2_TASKS.values()]
    expect(kinds == list(sapiens2.TASKS), f"tasks {kinds} != {sapiens2.TASKS}")
    for task in gm.SAPIENS2_TASKS.values():
        shape = task.output_shape(1)[1:]
        expect(
            shape == sapiens2.output_shape(task.kind),
            f"{task.name}: output {shape} != {sapiens2.output_shape(task.kind)}",
        )


def torch_rope(head_dim: int) -> tuple[np.ndarray, np.ndarray]:
    sin, cos = sapiens2.rope_table(sapiens2.rope_periods(head_dim), sapiens2.GRID)
    return sin.float().numpy(), cos.float().numpy()


def same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    return (
        a.shape == b.shape and a.dtype == b.dtype == np.float32 and np.array_equal(a.view(np.uint32), b.view(np.uint32))
    )


def check_rope_tables() -> list[int]:
    head_dims = sorted({arch.head_dim for arch in sapiens2.ARCHS.values()})
    for head_dim in head_dims:
        periods = sapiens2.rope_periods(head_dim).float().numpy()
        expect(
            same_bits(gm.rope_periods_bf16(head_dim), periods), f"head_dim {head_dim}: RoPE periods differ from torch's"
        )
        for part, ours, theirs in zip(("sin", "cos"), gm.rope_table_bf16(head_dim), torch_rope(head_dim), strict=True):
            differing = (
                int((ours.view(np.uint32) != theirs.view(np.uint32)).sum()) if ours.shape == theirs.shape else -1
            )
            expect(
                same_bits(ours, theirs), f"head_dim {head_dim}: RoPE {part} differs from torch's ({differing} values)"
            )
    return head_dims


# Initializers that are no weight: name pattern and a check of the value (float32 models).
def constants(head_dim: int) -> list[tuple[re.Pattern, str, Callable[[np.ndarray], bool]]]:
    sin, cos = torch_rope(head_dim)
    return [
        (re.compile(r"backbone\.rope_sin"), "torch's RoPE sin table", lambda a: same_bits(a, sin)),
        (re.compile(r"backbone\.rope_cos"), "torch's RoPE cos table", lambda a: same_bits(a, cos)),
        (re.compile(r".*\.eps"), "RMSNorm epsilon", lambda a: a.shape == () and a == np.float32(sapiens2.NORM_EPS)),
        (
            re.compile(r"backbone\.blocks\.\d+\.attn\.scale"),
            "attention scale head_dim ** -0.5",
            lambda a: a.shape == () and a == np.float32(head_dim**-0.5),
        ),
        (re.compile(r".*\.norm\.scale"), "InstanceNorm unit scale", lambda a: a.ndim == 1 and (a == 1).all()),
        (re.compile(r".*\.norm\.bias"), "InstanceNorm zero bias", lambda a: a.ndim == 1 and (a == 0).all()),
        (re.compile(r".*"), "int64 shape, slice bound or axes", lambda a: a.dtype == np.int64),
    ]


def load_into(model: onnx.ModelProto, module: torch.nn.Module) -> dict[str, int]:
    """Loads the ONNX initializers into `module` by the naming rule; counts what each was."""
    expected = module.state_dict()
    head_dim = module.backbone.arch.head_dim
    rules = constants(head_dim)
    node_inputs = {name for node in model.graph.node for name in node.input}
    loaded: dict[str, torch.Tensor] = {}
    counts = {"weights": 0, "transposed": 0, "constants": 0}
    for tensor in model.graph.initializer:
        name, array = tensor.name, numpy_helper.to_array(tensor)
        expect(name in node_inputs, f"initializer {name} is not used by any node")
        if name in expected:
            key, value, kind = name, array, "weights"
        elif name.endswith(TRANSPOSED_SUFFIX) and name.removesuffix(TRANSPOSED_SUFFIX) in expected:
            expect(array.ndim == 2, f"{name}: a transposed Linear weight must be 2-D, is {array.shape}")
            key, value, kind = name.removesuffix(TRANSPOSED_SUFFIX), array.T, "transposed"
        else:
            pattern, what, valid = next(rule for rule in rules if rule[0].fullmatch(name))
            expect(valid(array), f"initializer {name} is no {what}: {array.dtype} {array.shape}")
            counts["constants"] += 1
            continue
        expect(key not in NOT_IN_MODEL, f"{name}: {key} should not be in the model")
        expect(key not in loaded, f"{key} filled twice")
        expect(value.dtype == np.float32, f"{name}: dtype {value.dtype}")
        shape = tuple(expected[key].shape)
        expect(value.shape == shape, f"{name}: shape {value.shape} != state_dict {key} {shape}")
        loaded[key] = torch.from_numpy(np.array(value))  # a writable copy
        counts[kind] += 1
    missing = sorted(set(expected) - set(loaded) - NOT_IN_MODEL)
    expect(not missing, f"{len(missing)} state_dict entries not in the model: {missing[:5]}")
    for key in NOT_IN_MODEL:
        loaded[key] = expected[key]
    module.load_state_dict(loaded, strict=True)
    return counts


def check_task(task: gm.Sapiens2Task, out: Path, image: np.ndarray) -> dict:
    spec = gm.ModelSpec(gm.sapiens2_arch.ARCHS[ARCH], task, seed=0)
    path = out / spec.file_name
    start = time.perf_counter()
    gm.write_model(spec, path, external_threshold_bytes=1 << 62)
    build_s = time.perf_counter() - start
    onnx.checker.check_model(str(path), full_check=True)
    model = onnx.load(str(path))
    meta = {p.key: p.value for p in model.metadata_props}
    expected_meta = {"sapiens_stream.family": "sapiens2", "sapiens_stream.task": task.kind, "sapiens_stream.arch": ARCH}
    if task.kind == "pose":
        expected_meta["sapiens_stream.keypoints"] = str(sapiens2.KEYPOINTS)
    expect(expected_meta.items() <= meta.items(), f"{path.name}: metadata {meta} lacks {expected_meta}")

    module = sapiens2.build(ARCH, task.kind)
    counts = load_into(model, module)

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    start = time.perf_counter()
    (result,) = session.run(["output"], {"input": image})
    onnx_s = time.perf_counter() - start
    start = time.perf_counter()
    with torch.inference_mode():
        reference = module(torch.from_numpy(image)).numpy()
    torch_s = time.perf_counter() - start

    shape = (BATCH, *sapiens2.output_shape(task.kind))
    expect(
        result.shape == shape == reference.shape,
        f"{path.name}: output {result.shape}, torch {reference.shape}, want {shape}",
    )
    expect(np.isfinite(result).all() and np.isfinite(reference).all(), f"{path.name}: non-finite output")
    max_abs_diff = float(np.abs(result - reference).max())
    max_abs_torch = float(np.abs(reference).max())
    relative = max_abs_diff / max_abs_torch
    expect(
        relative <= MAX_RELATIVE_DIFF,
        f"{path.name}: max |diff| {max_abs_diff:.3g} is {relative:.3g} of max |torch| {max_abs_torch:.3g}",
    )
    report = {
        "max_abs_diff": max_abs_diff,
        "max_abs_torch": max_abs_torch,
        "relative_max_diff": relative,
        "file_bytes": path.stat().st_size,
        "build_s": round(build_s, 2),
        "onnx_s": round(onnx_s, 2),
        "torch_s": round(torch_s, 2),
        **counts,
    }
    print(f"{path.name}: {json.dumps(report)}")
    return report


def run(out: Path) -> dict:
    start = time.perf_counter()
    check_tasks()
    print("tables: generate_models.py's copies equal sapiens2.py's")
    head_dims = check_rope_tables()
    print(f"rope: numpy bfloat16 tables equal torch's bit for bit for head_dim {head_dims}")
    image = np.random.default_rng(5).standard_normal((BATCH, 3, gm.INPUT_HEIGHT, gm.INPUT_WIDTH), dtype=np.float32)
    tasks = {task.name: check_task(task, out, image) for task in gm.SAPIENS2_TASKS.values()}
    return {
        "passed": True,
        "rope_head_dims": head_dims,
        "tasks": tasks,
        "seconds": round(time.perf_counter() - start, 1),
    }


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, help="keep the models in this folder (default: a temporary one)")
    args = parser.parse_args(argv)
    torch.set_grad_enabled(False)
    try:
        if args.out:
            summary = run(args.out)
        else:
            with tempfile.TemporaryDirectory() as tmp:
                summary = run(Path(tmp))
    except CheckFailed as error:
        print(f"error: {error}")
        return 1
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
