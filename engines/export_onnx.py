#!/usr/bin/env python3
"""Export an official Sapiens checkpoint to ONNX for sapiens-stream: a first-family TorchScript file
(`*_torchscript.pt2`) or a Sapiens2 safetensors file (`*.safetensors`).

The official checkpoints are TorchScript programs traced at batch 1 (see engines/manifest.json for
the list and where to download them). This script:

  1. loads the checkpoint with torch.jit.load (any torch.jit.trace / torch.jit.script file works),
  2. exports it with PyTorch's TorchScript-based ONNX exporter (`dynamo=False`, which takes
     ScriptModules as they are) at opset 17: input `input` (N, 3, 1024, 768), output `output`,
     with a dynamic batch dimension N,
  3. with --fp16, converts the exported graph to float16 with ONNX Runtime's float16 converter
     (onnxruntime.transformers.float16, keep_io_types=True): weights and compute in float16,
     input and output stay float32 so `sapiens-stream run` feeds it unchanged,
  4. with --fused-attention, replaces each block's attention core (MatMul, scale, Softmax, MatMul)
     with ONNX Runtime's fused com.microsoft.MultiHeadAttention (engines/fuse_attention.py), after
     the float16 conversion: flash attention on ONNX Runtime's CUDA provider with --fp16 (in float32
     the fused kernel is slower than the plain graph); the file then runs in ONNX Runtime only
     (CPU or CUDA provider), not TensorRT,
  5. writes the weights to `<model>.onnx.data` beside the model when they exceed protobuf's 2 GiB
     limit (or always, with --external-data),
  6. records what the model is in its metadata: `sapiens_stream.task`, `sapiens_stream.keypoints`,
     `sapiens_stream.source` (the checkpoint's file name), `sapiens_stream.dtype`, the licence, and
     with --fused-attention `sapiens_stream.attention`,
  7. checks that ONNX Runtime (CPU) gives what TorchScript gives on the same random input at batch
     --check-batch (TorchScript runs the items one at a time, as traced), reports the max and mean
     absolute difference, and fails when the max difference exceeds --tolerance times the largest
     reference magnitude.

Task and keypoint count come from the manifest when the checkpoint's file name is listed there,
otherwise from --task and --keypoints. The output shape is checked against the task.

Sapiens2 (`*.safetensors`): the checkpoints hold weights only, so the model is this project's
PyTorch Sapiens2 (engines/sapiens2.py), built at the size and task the manifest gives (else
--size and --task), loaded by parameter name: a file with a missing, extra or misshapen tensor is
refused, naming them. Weights stored in bfloat16 or float16 are widened to float32 on load, and
the graph computes in float32 (or float16 with --fp16); the rotary table is the official
bfloat16 one, the rotation float32 (see engines/sapiens2.py). The pointmap model's output gets
the scale as a fourth plane (metric points = map / scale). The metadata adds
`sapiens_stream.family` = `sapiens2` and the checkpoint's tensor dtypes.

Needs: torch, onnx, onnxruntime, numpy (CPU is enough; a 2B model needs about 3x its size in RAM).

Usage:
  python engines/export_onnx.py CHECKPOINT.pt2 [-o OUT.onnx] [--task pose --keypoints 17]
      [--fp16] [--fused-attention] [--external-data] [--opset 17] [--check-batch 2] [--tolerance T]
      [--report R.json]
  python engines/export_onnx.py sapiens2_0.4b_pose.safetensors [--size 0.4b --task pose] [...]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import warnings
from pathlib import Path

import fuse_attention
import numpy as np
import onnx

INPUT_SHAPE = (3, 1024, 768)
INPUT_NAME, OUTPUT_NAME = "input", "output"
DEFAULT_OPSET = 17
TORCHSCRIPT_SUFFIX = "_torchscript.pt2"
SAFETENSORS_SUFFIX = ".safetensors"
SAPIENS2_SIZES = ("tiny", "0.4b", "0.8b", "1b", "5b")
SAPIENS2_TASKS = ("pose", "seg", "normal", "pointmap")
META_PREFIX = "sapiens_stream."
PROTOBUF_LIMIT = 2**31  # bytes; bigger models must keep their weights outside the .onnx file
GRAPH_MARGIN = 64 * 2**20  # room for the graph itself beside the weights
MANIFEST = Path(__file__).resolve().parent / "manifest.json"

# Output per image for each task (channels, height, width); pose channels = keypoints.
OUTPUTS = {"seg": (28, 512, 384), "depth": (1, 1024, 768), "normal": (3, 512, 384)}
POSE_KEYPOINTS = (17, 133, 308)
POSE_HEATMAP = (256, 192)
# Max |onnx - torch| allowed, as a fraction of the largest |torch| value.
DEFAULT_TOLERANCE = {"float32": 1e-3, "float16": 5e-2}


# Known and harmless here: TorchScript and the TorchScript-based exporter are deprecated (the
# official checkpoints are TorchScript), a ScriptModule has no Python signature to inspect, and
# InstanceNorm2d exports with instance statistics, which is what Sapiens heads use at inference too.
for message in (
    r"`torch\.jit\.load` is deprecated",
    r"no signature found for <torch\.ScriptMethod",
    r"You are using the legacy TorchScript-based ONNX export",
    r"ONNX export mode is set to TrainingMode\.EVAL, but operator 'instance_norm'",
):
    warnings.filterwarnings("ignore", message=message)


class ExportError(Exception):
    """A problem with the user's input or the exported model, reported in one line."""


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint", type=Path, help="TorchScript file (*_torchscript.pt2 or a torch.jit.save file)")
    parser.add_argument(
        "-o", "--output", type=Path, help="ONNX file to write (default: beside the checkpoint, NAME[_fp16].onnx)"
    )
    parser.add_argument(
        "--task",
        choices=["pose", "seg", "depth", "normal", "pointmap"],
        help="needed when the checkpoint is not in the manifest (pointmap: Sapiens2 only, depth: first family only)",
    )
    parser.add_argument("--keypoints", type=int, choices=POSE_KEYPOINTS, help="pose only: 17, 133 or 308")
    parser.add_argument(
        "--size", choices=SAPIENS2_SIZES, help="Sapiens2: backbone size, needed when the file is not in the manifest"
    )
    parser.add_argument("--fp16", action="store_true", help="float16 weights and compute (input/output stay float32)")
    parser.add_argument(
        "--fused-attention",
        action="store_true",
        help="attention as com.microsoft.MultiHeadAttention (ONNX Runtime CPU/CUDA only); names NAME[_fp16]_mha.onnx",
    )
    parser.add_argument("--external-data", action="store_true", help="always write weights to <model>.onnx.data")
    parser.add_argument("--opset", type=int, default=DEFAULT_OPSET)
    parser.add_argument(
        "--check-batch", type=int, default=2, help="batch size of the ONNX Runtime vs TorchScript check"
    )
    parser.add_argument(
        "--tolerance",
        type=float,
        help="max abs difference over the largest reference value (default 1e-3, 5e-2 with --fp16)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the check's random input")
    parser.add_argument("--report", type=Path, help="also write the export report as JSON here")
    args = parser.parse_args(argv)
    if args.check_batch < 1:
        parser.error("--check-batch must be at least 1")
    return args


def default_output(checkpoint: Path, fp16: bool, fused_attention: bool) -> Path:
    name = checkpoint.name
    stem = name.removesuffix(TORCHSCRIPT_SUFFIX) if name.endswith(TORCHSCRIPT_SUFFIX) else checkpoint.stem
    return checkpoint.with_name(stem + ("_fp16" if fp16 else "") + ("_mha" if fused_attention else "") + ".onnx")


def manifest_entry(checkpoint: Path) -> dict | None:
    """The checkpoint's manifest entry, with its family's licence."""
    manifest = json.loads(MANIFEST.read_text())
    families = ((manifest["models"], manifest["licence"]), (manifest["sapiens2"]["models"], manifest["sapiens2"]["licence"]))
    for models, licence in families:
        entry = next((m for m in models if m["file"] == checkpoint.name), None)
        if entry is not None:
            return {**entry, "licence": licence}
    return None


def resolve_task(checkpoint: Path, task: str | None, keypoints: int | None) -> tuple[str, int | None, dict | None]:
    """Task and keypoint count: the manifest's, else the flags'; flags that contradict the manifest are an error."""
    entry = manifest_entry(checkpoint)
    if entry is not None:
        if task is not None and task != entry["task"]:
            raise ExportError(f"{checkpoint.name} is a {entry['task']} model in the manifest, not {task}")
        if keypoints is not None and keypoints != entry.get("keypoints"):
            raise ExportError(
                f"{checkpoint.name} predicts {entry.get('keypoints')} keypoints in the manifest, not {keypoints}"
            )
        return entry["task"], entry.get("keypoints"), entry
    if task is None:
        raise ExportError(f"{checkpoint.name} is not in engines/manifest.json: pass --task (and --keypoints for pose)")
    if task == "pose" and keypoints is None:
        raise ExportError("--task pose needs --keypoints 17, 133 or 308")
    if task != "pose" and keypoints is not None:
        raise ExportError(f"--keypoints is for pose models, not {task}")
    return task, keypoints, None


def resolve_sapiens2(checkpoint: Path, task: str | None, size: str | None) -> tuple[str, str, dict | None]:
    """Task and size of a Sapiens2 checkpoint: the manifest's, else the flags'."""
    entry = manifest_entry(checkpoint)
    if entry is not None:
        for flag, given, listed in (("--task", task, entry["task"]), ("--size", size, entry["size"])):
            if given is not None and given != listed:
                raise ExportError(f"{checkpoint.name} is {listed} in the manifest, not {flag} {given}")
        return entry["task"], entry["size"], entry
    if task is None or size is None:
        raise ExportError(f"{checkpoint.name} is not in engines/manifest.json: pass --task and --size")
    if task not in SAPIENS2_TASKS:
        raise ExportError(f"Sapiens2 has no {task} model; its tasks are {', '.join(SAPIENS2_TASKS)}")
    return task, size, None


def expected_output(task: str, keypoints: int | None) -> tuple[int, int, int]:
    return (keypoints, *POSE_HEATMAP) if task == "pose" else OUTPUTS[task]


def load_torchscript(path: Path):
    import torch

    if not path.is_file():
        raise ExportError(f"{path}: no such file")
    try:
        module = torch.jit.load(str(path), map_location="cpu")
    except RuntimeError as error:
        raise ExportError(
            f"{path}: not a TorchScript file torch.jit.load can read: {str(error).splitlines()[0]}"
        ) from None
    return module.eval()


def run_torchscript(module, batch: np.ndarray) -> np.ndarray:
    """One item at a time: the official checkpoints were traced at batch 1."""
    import torch

    outputs = []
    with torch.inference_mode():
        for item in batch:
            result = module(torch.from_numpy(item[None]))
            if not isinstance(result, torch.Tensor):
                raise ExportError(f"the model returns {type(result).__name__}, not one tensor")
            outputs.append(result.float().numpy())
    return np.concatenate(outputs)


def export_graph(module, path: Path, opset: int) -> None:
    import torch

    example = torch.zeros((1, *INPUT_SHAPE), dtype=torch.float32)
    with torch.inference_mode():
        torch.onnx.export(
            module,
            (example,),
            str(path),
            dynamo=False,  # the TorchScript-based exporter exports ScriptModules directly
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
            opset_version=opset,
            do_constant_folding=True,
        )


def to_float16(path: Path, inferred: Path) -> onnx.ModelProto:
    """ONNX Runtime's float16 converter; shapes are inferred from the file so models over 2 GiB work too."""
    from onnxruntime.transformers.float16 import convert_float_to_float16
    from onnxruntime.transformers.onnx_model import OnnxModel

    onnx.shape_inference.infer_shapes_path(str(path), str(inferred))
    model = convert_float_to_float16(onnx.load(str(inferred)), keep_io_types=True, disable_shape_infer=True)
    # The converter appends the float32 -> float16 input casts at the end of the node list.
    OnnxModel.graph_topological_sort(model.graph)
    return model


def fuse(model: onnx.ModelProto) -> tuple[onnx.ModelProto, int]:
    """The model with its attention cores fused; a model in which none can be is an error."""
    model, fused = fuse_attention.fuse_attention(model)
    if fused == 0:
        raise ExportError(
            "--fused-attention: no attention core (MatMul, scale, Softmax, MatMul on 4-D heads) whose "
            "number of heads shape inference proves; export without it"
        )
    print(f"fused {fused} attention cores into {fuse_attention.FUSED_OP_NAME}", file=sys.stderr)
    return model, fused


def declare_output_shape(model: onnx.ModelProto, expected: tuple[int, int, int]) -> None:
    """Writes the per-item output shape into the graph's output: the exporter leaves a dimension
    it cannot infer (the pointmap's concatenated scale plane) symbolic, and the program checks
    the declared shape. The batch stays dynamic; the check below runs the graph at that shape."""
    dims = model.graph.output[0].type.tensor_type.shape.dim
    for dim, size in zip(list(dims)[1:], expected):
        dim.Clear()
        dim.dim_value = size


def weight_bytes(model: onnx.ModelProto) -> int:
    return sum(len(t.raw_data) for t in model.graph.initializer)


def save(model: onnx.ModelProto, path: Path, external: bool) -> Path | None:
    """Writes the model; returns the external-data file when the weights go to one."""
    data_path = path.with_name(path.name + ".data")
    if data_path.exists():
        data_path.unlink()  # onnx appends to an existing data file
    if not external:
        onnx.save_model(model, str(path))
        return None
    onnx.save_model(
        model,
        str(path),
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location=data_path.name,
        size_threshold=1024,
    )
    return data_path


def check(path: Path, module, batch: int, seed: int, expected: tuple[int, int, int], tolerance: float) -> dict:
    import onnxruntime

    rng = np.random.default_rng(seed)
    inputs = rng.standard_normal((batch, *INPUT_SHAPE), dtype=np.float32)
    reference = run_torchscript(module, inputs)
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    try:
        (result,) = session.run([OUTPUT_NAME], {INPUT_NAME: inputs})
    except Exception as error:  # ONNX Runtime raises its own exception types
        raise ExportError(
            f"ONNX Runtime cannot run the export at batch {batch} ({str(error).splitlines()[0]}); "
            "if the TorchScript graph fixes the batch size, export with --check-batch 1 and run with --max-batch 1"
        ) from None
    if result.shape != (batch, *expected):
        raise ExportError(f"ONNX output shape {result.shape} differs from the expected {(batch, *expected)}")
    difference = np.abs(result.astype(np.float64) - reference)
    reference_max = float(np.abs(reference).max())
    max_diff = float(difference.max())
    return {
        "check_batch": batch,
        "onnx_output_shape": list(result.shape),
        "max_abs_diff": max_diff,
        "mean_abs_diff": float(difference.mean()),
        "reference_max_abs": reference_max,
        "relative_max_diff": max_diff / max(reference_max, 1e-12),
        "tolerance": tolerance,
    }


def load_sapiens2(args: argparse.Namespace) -> tuple:
    """The Sapiens2 module with the checkpoint's weights, its task, output shape, metadata and entry."""
    import sapiens2

    if args.keypoints is not None:
        raise ExportError("--keypoints is for first-family pose models; Sapiens2 pose predicts 308")
    task, size, entry = resolve_sapiens2(args.checkpoint, args.task, args.size)
    module = sapiens2.build(size, task)
    try:
        dtypes = sapiens2.load_checkpoint(module, args.checkpoint)
    except sapiens2.CheckpointError as error:
        raise ExportError(str(error)) from None
    module.backbone.freeze_rope()
    metadata = {"family": "sapiens2", "size": size, "checkpoint_dtypes": ",".join(sorted(dtypes))}
    if task == "pose":
        metadata["keypoints"] = str(sapiens2.KEYPOINTS)
    return module, task, sapiens2.output_shape(task), metadata, entry


def load_first_family(args: argparse.Namespace) -> tuple:
    """The TorchScript module, its task, output shape, metadata and manifest entry."""
    task, keypoints, entry = resolve_task(args.checkpoint, args.task, args.keypoints)
    if task == "pointmap":
        raise ExportError("pointmap models are Sapiens2 (*.safetensors); the first family has depth")
    expected = expected_output(task, keypoints)
    module = load_torchscript(args.checkpoint)
    probe = run_torchscript(module, np.zeros((1, *INPUT_SHAPE), dtype=np.float32))
    if probe.shape[1:] != expected:
        shape = ", ".join(map(str, expected))
        raise ExportError(f"the checkpoint outputs {tuple(probe.shape)}, but a {task} model must output (N, {shape})")
    metadata = {"keypoints": str(keypoints)} if keypoints is not None else {}
    return module, task, expected, metadata, entry


def export(args: argparse.Namespace) -> dict:
    sapiens2 = args.checkpoint.name.endswith(SAFETENSORS_SUFFIX)
    if args.size is not None and not sapiens2:
        raise ExportError("--size is for Sapiens2 checkpoints (*.safetensors)")
    output = args.output or default_output(args.checkpoint, args.fp16, args.fused_attention)
    dtype = "float16" if args.fp16 else "float32"
    tolerance = args.tolerance if args.tolerance is not None else DEFAULT_TOLERANCE[dtype]

    started = time.monotonic()
    module, task, expected, model_metadata, entry = (load_sapiens2 if sapiens2 else load_first_family)(args)
    keypoints = int(model_metadata["keypoints"]) if "keypoints" in model_metadata else None

    with tempfile.TemporaryDirectory(dir=output.parent if output.parent.exists() else None) as scratch:
        exported = Path(scratch) / "exported.onnx"
        print(f"exporting {args.checkpoint.name} ({task}) to ONNX opset {args.opset} ...", file=sys.stderr)
        export_graph(module, exported, args.opset)
        model = to_float16(exported, Path(scratch) / "inferred.onnx") if args.fp16 else onnx.load(str(exported))
        model, fused_cores = fuse(model) if args.fused_attention else (model, 0)
        metadata = {
            "task": task,
            "source": args.checkpoint.name,
            "dtype": dtype,
            "io_dtype": "float32",
            "exporter": "engines/export_onnx.py",
            **model_metadata,
        }
        if entry is not None:
            metadata["licence"] = entry["licence"]
        if fused_cores:
            metadata["attention"] = fuse_attention.FUSED_OP_NAME
        declare_output_shape(model, expected)
        onnx.helper.set_model_props(model, {META_PREFIX + k: v for k, v in metadata.items()})
        external = args.external_data or weight_bytes(model) > PROTOBUF_LIMIT - GRAPH_MARGIN
        output.parent.mkdir(parents=True, exist_ok=True)
        data_path = save(model, output, external)
        del model
    onnx.checker.check_model(str(output))

    reference = "PyTorch" if sapiens2 else "TorchScript"
    print(f"checking ONNX Runtime against {reference} at batch {args.check_batch} ...", file=sys.stderr)
    report = {
        "checkpoint": str(args.checkpoint),
        "onnx": str(output),
        "external_data": str(data_path) if data_path else None,
        "family": "sapiens2" if sapiens2 else "sapiens",
        "task": task,
        "keypoints": keypoints,
        "dtype": dtype,
        "opset": args.opset,
        "fused_attention_cores": fused_cores,
        **check(output, module, args.check_batch, args.seed, expected, tolerance),
        "seconds": round(time.monotonic() - started, 1),
    }
    report["passed"] = report["relative_max_diff"] <= tolerance
    return report


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    try:
        report = export(args)
    except ExportError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    if args.report:
        args.report.write_text(json.dumps(report, indent=2) + "\n")
    print(
        f"wrote {report['onnx']}" + (f" (+ {report['external_data']})" if report["external_data"] else "") + "\n"
        f"ONNX Runtime vs {'PyTorch' if report['family'] == 'sapiens2' else 'TorchScript'} at batch {report['check_batch']}: max |diff| {report['max_abs_diff']:.3g}, "
        f"mean |diff| {report['mean_abs_diff']:.3g}, largest |output| {report['reference_max_abs']:.3g}, "
        f"relative {report['relative_max_diff']:.3g} (tolerance {report['tolerance']:g}); "
        f"output {tuple(report['onnx_output_shape'])}"
    )
    if not report["passed"]:
        print("error: ONNX Runtime's output differs from the checkpoint's beyond the tolerance", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
