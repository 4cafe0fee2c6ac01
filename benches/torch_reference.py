#!/usr/bin/env python3
"""PyTorch twin of the Sapiens-architecture ONNX models that engines/generate_models.py writes.

Builds the same network as a torch.nn.Module (ViT backbone + task head, same widths, same op
order) and fills it with the very same weights: read from a generated ONNX file (`--onnx`), or
drawn by the generator's own seeded code (no file needed). A Sapiens2 file (`--family sapiens2`
in the generator; told by its metadata) is loaded into engines/sapiens2.py's model, the one the
exporter exports, by engines/check_sapiens2_generator.py's naming rule. Two jobs:

  --check   torch (fp32) and ONNX Runtime (CPU) on the same random input; prints the max and mean
            absolute difference of the outputs. This is what shows the two are one architecture.
  --bench   throughput at batch 1 (input 1x3x1024x768 already on the device, output left there),
            one JSON line per mode:
              eager-bf16    weights and input cast to bfloat16, eager
              compile-bf16  the same under torch.compile (--compile-mode, --compile-timeout)
              eager-fp32    fp32 eager (context only)
              ort-cuda      the ONNX file through onnxruntime's Python API with the CUDA execution
                            provider, I/O bound on the GPU (skipped, with the reason, when this
                            onnxruntime has no CUDAExecutionProvider)

Torch, onnx and NumPy are needed; onnxruntime for --check and the ort-cuda mode. Not used by CI.

Usage:
  python benches/torch_reference.py --check --arch tiny --task pose17
  python benches/torch_reference.py --bench --onnx engines/models/sapiens_0.3b_pose308.onnx \
      [--modes eager-bf16,compile-bf16,ort-cuda] [--iters 50] [--json-out results/torch.jsonl]
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import platform
import signal
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "engines"))
import generate_models as gm  # noqa: E402  (the architecture's single source of truth)

MODES = ("eager-bf16", "compile-bf16", "eager-fp32", "ort-cuda")
DEFAULT_MODES = "eager-bf16,compile-bf16,ort-cuda"
DEFAULT_TOLERANCE = 1e-3  # max |torch - ort| as a fraction of max |ort|, as engines/export_onnx.py


class UsageError(Exception):
    """Bad input or an unusable machine, reported in one line."""


# ---------------------------------------------------------------------------------------------
# The network. Module paths mirror the ONNX initializer names (backbone.layers.3.attn.qkv, ...)
# so the weight mapping below is a rename plus the transposes torch's layouts need.


def build_module(arch: "gm.Arch", task: "gm.Task", attention: str = "sdpa"):
    import torch
    import torch.nn.functional as F
    from torch import nn

    class Attention(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.heads = arch.num_heads
            self.qkv = nn.Linear(arch.embed_dim, 3 * arch.embed_dim)
            self.proj = nn.Linear(arch.embed_dim, arch.embed_dim)

        def forward(self, x):
            b, n, c = x.shape
            qkv = self.qkv(x).reshape(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
            q, k, v = qkv[0], qkv[1], qkv[2]
            if attention == "sdpa":  # what a PyTorch deployment would use (flash / efficient kernels)
                y = F.scaled_dot_product_attention(q, k, v)
            else:  # the ONNX graph's exact op sequence: MatMul, scale, Softmax, MatMul
                y = torch.softmax((q @ k.transpose(-2, -1)) * (c // self.heads) ** -0.5, dim=-1) @ v
            return self.proj(y.transpose(1, 2).reshape(b, n, c))

    class Ffn(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc1 = nn.Linear(arch.embed_dim, arch.ffn_dim)
            self.fc2 = nn.Linear(arch.ffn_dim, arch.embed_dim)

        def forward(self, x):
            return self.fc2(F.gelu(self.fc1(x)))  # exact (erf) GELU, as the ONNX graph

    class Block(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.ln1 = nn.LayerNorm(arch.embed_dim, eps=gm.LAYER_NORM_EPS)
            self.attn = Attention()
            self.ln2 = nn.LayerNorm(arch.embed_dim, eps=gm.LAYER_NORM_EPS)
            self.ffn = Ffn()

        def forward(self, x):
            x = x + self.attn(self.ln1(x))
            return x + self.ffn(self.ln2(x))

    class Backbone(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            dim, pad = arch.embed_dim, task.patch_padding
            self.patch_embed = nn.Conv2d(3, dim, gm.PATCH_SIZE, stride=gm.PATCH_SIZE, padding=pad)
            self.pos_embed = nn.Parameter(torch.zeros(1, gm.GRID_HEIGHT * gm.GRID_WIDTH, dim))
            self.layers = nn.ModuleList(Block() for _ in range(arch.num_layers))
            self.ln_final = nn.LayerNorm(dim, eps=gm.LAYER_NORM_EPS)

        def forward(self, image):
            x = self.patch_embed(image).flatten(2).transpose(1, 2) + self.pos_embed
            for layer in self.layers:
                x = layer(x)
            x = self.ln_final(x)
            return x.reshape(x.shape[0], gm.GRID_HEIGHT, gm.GRID_WIDTH, -1).permute(0, 3, 1, 2)

    def norm_silu(channels: int):
        # InstanceNorm2d(affine=False): the ONNX graph's unit scale / zero bias, checked at load.
        return nn.Sequential(nn.InstanceNorm2d(channels, eps=gm.INSTANCE_NORM_EPS), nn.SiLU())

    class Deconv(nn.Module):
        def __init__(self, in_ch: int, out_ch: int) -> None:
            super().__init__()
            self.deconv = nn.ConvTranspose2d(in_ch, out_ch, 4, stride=2, padding=1, bias=False)
            self.post = norm_silu(out_ch)

        def forward(self, x):
            return self.post(self.deconv(x))

    class Conv(nn.Module):
        def __init__(self, channels: int) -> None:
            super().__init__()
            self.conv = nn.Conv2d(channels, channels, 1)
            self.post = norm_silu(channels)

        def forward(self, x):
            return self.post(self.conv(x))

    class Head(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            ch = task.head_channels(arch)
            ins = [arch.embed_dim] + [ch] * (task.num_deconvs - 1)
            self.deconv_layers = nn.ModuleList(Deconv(i, ch) for i in ins)
            self.conv_layers = nn.ModuleList(Conv(ch) for _ in range(task.num_convs))
            self.final_layer = nn.Conv2d(ch, task.out_channels, 1)

        def forward(self, x):
            for layer in (*self.deconv_layers, *self.conv_layers):
                x = layer(x)
            return self.final_layer(x)

    class Sapiens(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.backbone = Backbone()
            self.head = Head()

        def forward(self, image):
            return self.head(self.backbone(image))

    return Sapiens()


# ---------------------------------------------------------------------------------------------
# Weights: ONNX initializer name -> state_dict key, with the layout changes.


def onnx_to_torch_key(name: str) -> tuple[str, bool] | None:
    """(state_dict key, transpose?) for a trainable ONNX initializer, None for graph constants."""
    parts = name.split(".")
    if name.startswith("backbone.layers.") and parts[3] in ("attn", "ffn") and parts[-1] in ("weight", "bias"):
        return name, parts[-1] == "weight"  # MatMul stores (in, out); nn.Linear wants (out, in)
    if name.startswith("backbone.layers.") and parts[3] in ("ln1", "ln2"):
        return name, False
    if name in ("backbone.patch_embed.weight", "backbone.patch_embed.bias", "backbone.pos_embed",
                "backbone.ln_final.weight", "backbone.ln_final.bias",
                "head.final_layer.weight", "head.final_layer.bias"):
        return name, False
    if name.startswith("head.deconv_layers.") and len(parts) == 4 and parts[3] == "weight":
        return f"head.deconv_layers.{parts[2]}.deconv.weight", False  # both (in, out, 4, 4)
    if name.startswith("head.conv_layers.") and len(parts) == 4 and parts[3] in ("weight", "bias"):
        return f"head.conv_layers.{parts[2]}.conv.{parts[3]}", False
    return None


def generator_weights(spec: "gm.ModelSpec") -> dict[str, np.ndarray]:
    """The initializers generate_models.py would write for `spec`, without writing a file."""

    class Capture:
        def __init__(self) -> None:
            self.arrays: dict[str, np.ndarray] = {}

        def add(self, name, shape, make):
            self.arrays[name] = make()
            return None

    capture = Capture()
    gm.build_model(spec, capture)
    return capture.arrays


def onnx_weights(path: Path) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path))  # external data (<model>.onnx.data) is read from beside it
    arrays = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    meta = {p.key: p.value for p in model.metadata_props}
    return arrays, meta


def load_weights(module, arrays: dict[str, np.ndarray]) -> None:
    import torch

    state = module.state_dict()
    loaded = set()
    for name, array in arrays.items():
        target = onnx_to_torch_key(name)
        if target is None:
            # Graph constants. InstanceNorm scale/bias must be the identity that affine=False means.
            if name.endswith(".norm.scale") and not np.all(array == 1):
                raise UsageError(f"{name} is not all ones: this model's InstanceNorm is affine")
            if name.endswith(".norm.bias") and not np.all(array == 0):
                raise UsageError(f"{name} is not all zeros: this model's InstanceNorm is affine")
            continue
        key, transpose = target
        if key not in state:
            raise UsageError(f"ONNX initializer {name} has no place in the torch module ({key})")
        value = torch.from_numpy(np.ascontiguousarray(array.T if transpose else array).astype(np.float32))
        if tuple(value.shape) != tuple(state[key].shape):
            raise UsageError(f"{name}: shape {tuple(value.shape)} != torch {tuple(state[key].shape)} (wrong --arch/--task?)")
        state[key] = value
        loaded.add(key)
    missing = sorted(set(state) - loaded)
    if missing:
        raise UsageError(f"{len(missing)} torch parameters not in the weights, e.g. {missing[:3]} (wrong --arch/--task?)")
    module.load_state_dict(state)


def resolve_spec(args) -> tuple["gm.ModelSpec", dict[str, np.ndarray], str]:
    """The model spec, its weights and where they came from."""
    if args.onnx is not None:
        if not args.onnx.is_file():
            raise UsageError(f"model not found: {args.onnx} (make it with engines/generate_models.py)")
        arrays, meta = onnx_weights(args.onnx)
        arch_name = meta.get(gm.META_PREFIX + "arch")
        if arch_name is None:
            raise UsageError(f"{args.onnx} has no {gm.META_PREFIX}arch metadata: not written by generate_models.py")
        task_name = _task_from_meta(meta, args.onnx)
        if args.arch and args.arch != arch_name:
            raise UsageError(f"--arch {args.arch} but {args.onnx} is {arch_name}")
        if args.task and args.task != task_name:
            raise UsageError(f"--task {args.task} but {args.onnx} is {task_name}")
        return spec_of(gm.ARCHS[arch_name], gm.TASKS[task_name], meta), arrays, str(args.onnx)
    spec = gm.ModelSpec(gm.ARCHS[args.arch or "tiny"], gm.TASKS[args.task or "pose17"], args.seed)
    return spec, generator_weights(spec), f"generate_models.py seed {args.seed}"


def spec_of(arch, task, meta: dict[str, str]) -> "gm.ModelSpec":
    """The spec of a generated file of `arch` and `task`, its seed and precision from its metadata
    (torch still computes in what --bench asks)."""
    fp16 = meta.get(gm.META_PREFIX + "dtype") == "float16"
    fp16_io = fp16 and meta.get(gm.META_PREFIX + "io_dtype") == "float16"
    return gm.ModelSpec(arch, task, int(meta.get(gm.META_PREFIX + "seed", 0)), fp16, fp16_io)


def _task_from_meta(meta: dict[str, str], path: Path) -> str:
    kind = meta.get(gm.META_PREFIX + "task")
    name = f"pose{meta.get(gm.META_PREFIX + 'keypoints')}" if kind == "pose" else kind
    if name in gm.TASKS:
        return name
    raise UsageError(f"{path}: unknown task metadata {kind!r}: not a generate_models.py model?")


def onnx_family(path: Path) -> str:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    meta = {p.key: p.value for p in model.metadata_props}
    return meta.get(gm.META_PREFIX + "family", gm.SAPIENS)


def sapiens2_model(path: Path, attention: str):
    """engines/sapiens2.py's model with the weights of a generated Sapiens2 file (float16 files
    widened to float32, as the first family's are)."""
    import onnx
    from onnx import numpy_helper

    import check_sapiens2_generator as generator_check
    import sapiens2

    model = onnx.load(str(path))
    meta = {p.key: p.value for p in model.metadata_props}
    arch_name, kind = meta.get(gm.META_PREFIX + "arch"), meta.get(gm.META_PREFIX + "task")
    task = next((t for t in gm.SAPIENS2_TASKS.values() if t.kind == kind), None)
    if arch_name not in gm.sapiens2_arch.ARCHS or task is None:
        raise UsageError(f"{path}: Sapiens2 arch {arch_name!r} and task {kind!r}: not a generate_models.py model?")
    module = sapiens2.build(arch_name, kind)
    weights = set(module.state_dict())
    # A float16 file: its weights widened; its constants (epsilons, scales), which the check
    # knows only in float32, left out (the model computes its own).
    for tensor in list(model.graph.initializer):
        if tensor.data_type != onnx.TensorProto.FLOAT16:
            continue
        if tensor.name.removesuffix(generator_check.TRANSPOSED_SUFFIX) in weights:
            wide = numpy_helper.to_array(tensor).astype(np.float32)
            tensor.CopyFrom(numpy_helper.from_array(wide, tensor.name))
        else:
            model.graph.initializer.remove(tensor)
    try:
        generator_check.load_into(model, module)
    except generator_check.CheckFailed as e:
        raise UsageError(f"{path}: {e}") from None
    if attention == "sdpa":
        sapiens2.fused_attention(module)
    return spec_of(gm.sapiens2_arch.ARCHS[arch_name], task, meta), module, str(path)


def make_model(args):
    if args.onnx is not None and args.onnx.is_file() and onnx_family(args.onnx) == gm.SAPIENS2:
        return sapiens2_model(args.onnx, args.attention)
    spec, arrays, source = resolve_spec(args)
    module = build_module(spec.arch, spec.task, args.attention)
    load_weights(module, arrays)
    del arrays
    module.eval()
    return spec, module, source


# ---------------------------------------------------------------------------------------------
# --check


def run_check(args) -> dict:
    import onnxruntime as ort
    import torch

    spec, module, source = make_model(args)
    with contextlib.ExitStack() as stack:
        path = args.onnx
        if path is None:  # write the generator's file so ONNX Runtime has something to run
            tmp = Path(stack.enter_context(tempfile.TemporaryDirectory()))
            path = tmp / spec.file_name
            gm.write_model(spec, path, gm.DEFAULT_EXTERNAL_DATA_THRESHOLD_MB * 2**20)
        image = gm.random_input(spec, args.batch)  # the generator's own check input (seed 1234)
        options = ort.SessionOptions()
        if args.threads:
            options.intra_op_num_threads = args.threads
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        start = time.perf_counter()
        (expected,) = session.run(["output"], {"input": image})
        ort_s = time.perf_counter() - start
        del session
    if args.threads:
        torch.set_num_threads(args.threads)
    with torch.inference_mode():
        start = time.perf_counter()
        got = module(torch.from_numpy(image.astype(np.float32))).numpy()
        torch_s = time.perf_counter() - start
    if got.shape != expected.shape:
        raise UsageError(f"torch output {got.shape} != ONNX Runtime output {expected.shape}")
    diff = np.abs(got.astype(np.float64) - expected.astype(np.float64))
    scale = float(np.abs(expected).max())
    result = {
        "check": "torch fp32 vs onnxruntime CPU",
        "arch": spec.arch.name,
        "task": spec.task.name,
        "weights": source,
        "attention": args.attention,
        "batch": args.batch,
        "output_shape": list(expected.shape),
        "params": sum(p.numel() for p in module.parameters()),
        "max_abs_diff": float(diff.max()),
        "mean_abs_diff": float(diff.mean()),
        "max_abs_output": scale,
        "relative_max_diff": float(diff.max()) / max(scale, 1e-30),
        "tolerance": args.tolerance,
        "torch_s": round(torch_s, 3),
        "ort_cpu_s": round(ort_s, 3),
        **environment("cpu"),
    }
    result["ok"] = result["relative_max_diff"] <= args.tolerance
    return result


# ---------------------------------------------------------------------------------------------
# --bench


def environment(device: str) -> dict:
    import torch

    gpu = torch.cuda.get_device_name(0) if device == "cuda" else None
    return {
        "torch": torch.__version__,
        "device": device,
        "gpu": gpu,
        "cpu": platform.processor() or platform.machine(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


def time_loop(step, sync, warmup: int, iters: int, batch: int) -> dict:
    """Runs `step` warmup + iters times, each finished (sync) before the clock stops."""
    for _ in range(warmup):
        step()
    sync()
    times = []
    for _ in range(iters):
        start = time.perf_counter()
        step()
        sync()
        times.append(time.perf_counter() - start)
    mean = sum(times) / len(times)
    return {
        "iters": iters,
        "warmup": warmup,
        "ms_per_frame": round(mean * 1000 / batch, 3),
        "ms_p50_per_call": round(float(np.median(times)) * 1000, 3),
        "fps": round(batch / mean, 2),
    }


class CompileTimeout(Exception):
    pass


@contextlib.contextmanager
def time_limit(seconds: float):
    """SIGALRM in the main thread: torch.compile's worker processes cannot be interrupted otherwise."""
    state = {"fired": False}
    if seconds <= 0:
        yield state
        return

    def on_alarm(signum, frame):
        state["fired"] = True  # the compiler may wrap the exception: the flag tells the caller
        raise CompileTimeout(f"torch.compile did not finish within {seconds:g} s (--compile-timeout)")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield state
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def bench_torch(mode: str, module, spec, args, base: dict) -> dict:
    import torch

    device = torch.device(args.device)
    dtype = torch.float32 if mode == "eager-fp32" else torch.bfloat16
    model = module.to(device=device, dtype=dtype)
    image = torch.randn(args.batch, 3, gm.INPUT_HEIGHT, gm.INPUT_WIDTH, device=device, dtype=dtype)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    record = {**base, "mode": mode, "dtype": str(dtype).removeprefix("torch."),
              "label": f"PyTorch {'torch.compile' if mode.startswith('compile') else 'eager'} "
                       f"{str(dtype).removeprefix('torch.')}, model only (input on the device, output left there)"}
    forward = model
    if mode == "compile-bf16":
        record["compile_mode"] = args.compile_mode
        start = time.perf_counter()
        alarm = {"fired": False}
        try:
            forward = torch.compile(model, mode=None if args.compile_mode == "default" else args.compile_mode)
            with torch.inference_mode(), time_limit(args.compile_timeout) as alarm:
                forward(image)
                sync()
        except Exception as e:  # noqa: BLE001  a compiler failure is a result to report, not a crash
            if alarm["fired"]:
                return {**record, "error": f"torch.compile did not finish within {args.compile_timeout:g} s (--compile-timeout)"}
            first = str(e).strip().splitlines()[0] if str(e).strip() else ""
            return {**record, "error": f"torch.compile failed: {type(e).__name__}: {first}"}
        record["compile_s"] = round(time.perf_counter() - start, 1)
    with torch.inference_mode():
        record.update(time_loop(lambda: forward(image), sync, args.warmup, args.iters, args.batch))
    return record


def bench_ort_cuda(spec, args, base: dict) -> dict:
    record = {**base, "mode": "ort-cuda", "dtype": "float16" if spec.fp16 else "float32",
              "label": "onnxruntime Python API, CUDAExecutionProvider, same ONNX file, I/O bound on the GPU"}
    try:
        import onnxruntime as ort
    except ImportError:
        return {**record, "skipped": "onnxruntime is not installed"}
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        return {**record, "onnxruntime": ort.__version__,
                "skipped": f"onnxruntime {ort.__version__} has no CUDAExecutionProvider "
                           f"(providers: {', '.join(ort.get_available_providers())}); install onnxruntime-gpu"}
    if args.onnx is None:
        return {**record, "skipped": "needs --onnx"}
    if args.device != "cuda":
        return {**record, "skipped": "needs --device cuda"}
    session = ort.InferenceSession(str(args.onnx), providers=[("CUDAExecutionProvider", {"device_id": 0}), "CPUExecutionProvider"])
    if session.get_providers()[0] != "CUDAExecutionProvider":
        return {**record, "skipped": f"CUDA provider did not load (session providers: {session.get_providers()})"}
    image = ort.OrtValue.ortvalue_from_numpy(gm.random_input(spec, args.batch), "cuda", 0)
    binding = session.io_binding()
    binding.bind_ortvalue_input("input", image)
    binding.bind_output("output", "cuda", 0)
    record["onnxruntime"] = ort.__version__
    record.update(time_loop(lambda: session.run_with_iobinding(binding), binding.synchronize_outputs,
                            args.warmup, args.iters, args.batch))
    return record


def run_bench(args) -> list[dict]:
    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        raise UsageError("--bench on cuda: torch sees no CUDA device (torch.cuda.is_available() is False); use --device cpu to exercise the code path")
    torch.backends.cudnn.benchmark = True  # let cuDNN pick the deconv algorithms, as a deployment would
    start = time.perf_counter()
    spec, module, source = make_model(args)
    load_s = time.perf_counter() - start
    base = {"arch": spec.arch.name, "task": spec.task.name, "batch": args.batch, "weights": source,
            "attention": args.attention, "params": sum(p.numel() for p in module.parameters()),
            "load_s": round(load_s, 1), **environment(args.device)}
    results = []
    for mode in args.modes:
        # One mode's failure (a compiler that cannot load, say) is its record; the others still run.
        try:
            if mode == "ort-cuda":
                record = bench_ort_cuda(spec, args, base)
            else:
                record = bench_torch(mode, module, spec, args, base)
        except Exception as e:  # noqa: BLE001
            record = {**base, "mode": mode, "error": f"{type(e).__name__}: {e}"}
        emit(record, args.json_out)
        results.append(record)
        if args.device == "cuda":
            torch.cuda.empty_cache()
    return results


def emit(record: dict, json_out: Path | None) -> None:
    line = json.dumps(record)
    print(line, flush=True)
    if json_out is not None:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        with open(json_out, "a") as f:
            f.write(line + "\n")


# ---------------------------------------------------------------------------------------------
# CLI


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    job = parser.add_mutually_exclusive_group(required=True)
    job.add_argument("--check", action="store_true", help="torch fp32 vs ONNX Runtime CPU, same weights and input")
    job.add_argument("--bench", action="store_true", help="throughput, one JSON line per mode")
    parser.add_argument("--onnx", type=Path, help="a model written by generate_models.py (weights, arch and task from it)")
    parser.add_argument("--arch", choices=list(gm.ARCHS), help="without --onnx: size (default tiny)")
    parser.add_argument("--task", choices=list(gm.TASKS), help="without --onnx: task (default pose17)")
    parser.add_argument("--seed", type=int, default=0, help="without --onnx: generator seed")
    parser.add_argument("--attention", choices=("sdpa", "math"), default="sdpa",
                        help="sdpa: F.scaled_dot_product_attention; math: the ONNX graph's MatMul/Softmax/MatMul")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--threads", type=int, default=0, help="--check: CPU threads for both (0: library default)")
    parser.add_argument("--tolerance", type=float, default=DEFAULT_TOLERANCE,
                        help="--check fails above this max |diff| / max |output|")
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda", help="--bench device")
    parser.add_argument("--modes", default=DEFAULT_MODES, help=f"--bench: comma list of {','.join(MODES)}")
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--iters", type=int, default=50)
    parser.add_argument("--compile-mode", default="default",
                        help="torch.compile mode: default, reduce-overhead, max-autotune, max-autotune-no-cudagraphs")
    parser.add_argument("--compile-timeout", type=float, default=600,
                        help="seconds allowed for torch.compile's first call (0: no limit)")
    parser.add_argument("--json-out", type=Path, help="also append each JSON line to this file")
    args = parser.parse_args(argv)
    args.modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    unknown = [m for m in args.modes if m not in MODES]
    if unknown:
        parser.error(f"unknown mode(s) {unknown}; choose from {list(MODES)}")
    if args.batch < 1 or args.iters < 1 or args.warmup < 0:
        parser.error("--batch and --iters must be >= 1, --warmup >= 0")
    if args.onnx is None and args.arch is None and args.task is None:
        args.arch, args.task = "tiny", "pose17"
    return args


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    try:
        if args.check:
            result = run_check(args)
            emit(result, args.json_out)
            if not result["ok"]:
                print(f"error: torch and ONNX Runtime differ: relative max diff {result['relative_max_diff']:.3g} "
                      f"> tolerance {args.tolerance:g}", file=sys.stderr)
                return 1
            return 0
        results = run_bench(args)
        return 1 if all("error" in r or "skipped" in r for r in results) else 0
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
