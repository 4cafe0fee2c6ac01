#!/usr/bin/env python3
"""Issue 4's GPU figure in one command: sapiens-stream end to end with the CUDA execution
provider (one person, Sapiens 0.3b pose308) beside PyTorch bf16 on the same GPU and weights.

Steps, each recorded under --results (default bench-results/gpu-e2e-<UTC time>/):
  1. environment: nvidia-smi, torch, the libraries found           -> summary.json "environment"
  2. the model: engines/generate_models.py [--family sapiens2] --arch ARCH --tasks TASK (kept
     when up to date; PyTorch runs a Sapiens2 file as engines/sapiens2.py's model); with
     --fp16 in float16 behind float32 input and output, as real models exported with
     engines/export_onnx.py --fp16: the CUDA provider then computes in half precision, the
     closer match to PyTorch bf16 (fp32 is the default, what the program runs unless told);
     with --fused-attention each attention core is ONNX Runtime's MultiHeadAttention (flash
     attention on the CUDA provider in fp16)
  3. PyTorch: benches/torch_reference.py --bench on the same ONNX file      -> torch.jsonl
  4. the program: `sapiens-stream doctor --engine cuda`, then `sapiens-stream run` over a folder
     of --frames identical frames (the image-folder input needs no GStreamer plugins, only the
     GStreamer core libraries the binary links), one fixed person box per frame (--boxes),
     --engine cuda, --mode offline, --output none                            -> e2e.jsonl, e2e.log
     With --persons detector the box comes from a person detector on the GPU instead: an
     RTMDet-layout model from tests/reference/make_detectors.py that returns that box whatever
     the frame (its cost is the letterbox, the run and the readback, not a real detector's), and
     the summary says whether every frame's box came back where it should.
  5. summary: fps of each, and the ratio program / PyTorch                   -> summary.json
The results folder holds at most 7 files (generate.log, torch.log, torch.jsonl, doctor.log,
e2e.log, e2e.jsonl, summary.json; the device tool returns 8 at most); summary.json is rewritten
after every step, so a run cut short still leaves what it measured. Frames, boxes and ldd's
output go to --work-dir.

Frames per second of the program: steady state, from the capture times in its results (frames
after --warmup-frames, minus the last few still queued), and also the program's own whole-run
figure. PyTorch's figures are the model alone (input already on the GPU); the program's include
decode, crop, copies, decode of the heatmaps and writing the results.

No figure is made up: a step that cannot run says why in summary.json and on stdout, and the
exit status is 1 when the program's figure or PyTorch eager bf16's is missing (2 for bad arguments).

Usage (on the GPU machine, from the repository root):
  python3 benches/gpu_e2e.py --bin PATH/sapiens-stream --ort-lib DIR_WITH_libonnxruntime.so \
      [--ld-path DIR[:DIR]] [--frames 300] [--results DIR] [--skip-torch] [--skip-e2e]
"""

from __future__ import annotations

import argparse
import datetime
import glob
import json
import os
import re
import struct
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
# Frames still in the program's queues when the source ends are decoded early; leave them out of
# the steady-state window (the pipeline's channels hold 2 each, plus the stage in hand).
TAIL_FRAMES = 8


def log(message: str) -> None:
    print(f"[gpu_e2e] {message}", flush=True)


def run(cmd: list[str], out: Path, timeout: float, env: dict | None = None) -> tuple[int, str]:
    """Runs `cmd`, output to `out` (and returned); rc 124 on timeout, 127 when it cannot start."""
    log("$ " + " ".join(cmd))
    try:
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              timeout=timeout, env=env, cwd=REPO)
        text, rc = proc.stdout, proc.returncode
    except subprocess.TimeoutExpired as e:
        text = (e.stdout.decode(errors="replace") if isinstance(e.stdout, bytes) else e.stdout or "")
        text += f"\n[gpu_e2e] timed out after {timeout:g} s\n"
        rc = 124
    except OSError as e:
        text, rc = f"cannot start {cmd[0]}: {e}\n", 127
    out.write_text(text)
    return rc, text


# ---------------------------------------------------------------------------------------------
# Environment


def nvidia_lib_dirs() -> list[str]:
    """The CUDA 13 / cuDNN libraries pip put beside torch (site-packages/nvidia/*/lib): the ONNX
    Runtime CUDA provider dlopens libcublas, libcudnn, ... and a Rust program has no torch to
    preload them, so they go on LD_LIBRARY_PATH."""
    dirs = []
    for entry in sys.path:
        dirs += glob.glob(os.path.join(entry, "nvidia", "*", "lib"))
        dirs += glob.glob(os.path.join(entry, "nvidia", "cu13", "lib"))
    return sorted(set(d for d in dirs if os.path.isdir(d)))


def environment(args) -> dict:
    env: dict = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                 "python": sys.version.split()[0]}
    try:
        env["nvidia_smi"] = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,driver_version,memory.total,clocks.max.sm", "--format=csv,noheader"],
            capture_output=True, text=True, timeout=30).stdout.strip()
    except (OSError, subprocess.TimeoutExpired) as e:
        env["nvidia_smi"] = f"unavailable: {e}"
    try:
        import torch

        env["torch"] = torch.__version__
        env["cuda_available"] = torch.cuda.is_available()
        if torch.cuda.is_available():
            env["gpu"] = torch.cuda.get_device_name(0)
    except ImportError as e:
        env["torch"] = f"not importable: {e}"
    try:
        import onnxruntime as ort

        env["onnxruntime_python"] = {"version": ort.__version__, "file": ort.__file__,
                                     "providers": ort.get_available_providers()}
    except ImportError as e:
        env["onnxruntime_python"] = f"not importable: {e}"
    env["nvidia_lib_dirs"] = nvidia_lib_dirs()
    env["cpu_count"] = os.cpu_count()
    return env


# ---------------------------------------------------------------------------------------------
# Input for the program


def write_bmp(path: Path, width: int, height: int) -> None:
    """A 24-bit BMP with a smooth picture (no image library needed on the GPU machine). The
    program decodes a 1080p one in about 20 ms, on several threads at once, so that the source
    keeps ahead of the GPU."""
    row = bytearray()
    for x in range(width):  # B, G, R
        row += bytes((x * 255 // max(width - 1, 1), 128, 255 - x * 255 // max(width - 1, 1)))
    row += b"\0" * (-len(row) % 4)
    pixels = bytes(row) * height
    header = struct.pack("<2sIHHI", b"BM", 54 + len(pixels), 0, 0, 54)
    info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 24, 0, len(pixels), 2835, 2835, 0, 0)
    path.write_bytes(header + info + pixels)


def make_frames(folder: Path, count: int, width: int, height: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    first = folder / "frame_000000.bmp"
    write_bmp(first, width, height)
    for i in range(1, count):
        target = folder / f"frame_{i:06d}.bmp"
        if not target.exists():
            os.link(first, target)  # hard links: N frames for the disk cost of one


def write_boxes(path: Path, count: int, width: int, height: int) -> list[float]:
    # One standing person: a box 30 % of the frame wide and 90 % high, in the middle.
    box = [0.35 * width, 0.05 * height, 0.65 * width, 0.95 * height, 1.0]
    with open(path, "w") as f:
        for i in range(count):
            f.write(json.dumps({"frame": i, "boxes": [box]}) + "\n")
    return box


DETECTOR_INPUT = 640


def constant_detector(work: Path, box: list[float], width: int, height: int) -> Path | str:
    """An RTMDet-layout detector (640x640 input) that finds `box` in every frame: the box in
    its input pixels, as mmdet's keep-ratio resize puts the frame there. An error text if the
    generator fails."""
    scale = min(DETECTOR_INPUT / width, DETECTOR_INPUT / height)
    scale_x = int(width * scale + 0.5) / width
    scale_y = int(height * scale + 0.5) / height
    x1, y1, x2, y2, score = box
    spec = [{"name": "detector", "layout": "rtmdet", "input": [DETECTOR_INPUT, DETECTOR_INPUT],
             "boxes": [[x1 * scale_x, y1 * scale_y, x2 * scale_x, y2 * scale_y, 0.9 * score, 0]]}]
    rc, text = run([sys.executable, str(REPO / "tests" / "reference" / "make_detectors.py"), str(work),
                    json.dumps(spec)], work / "make_detectors.log", timeout=120)
    model = work / "detector.onnx"
    if rc != 0 or not model.is_file():
        return f"make_detectors.py failed (rc {rc}): {text.strip().splitlines()[-1:]}"
    return model


def detected_boxes(results_file: Path, box: list[float]) -> dict:
    """Whether every frame found one person at `box` (within half a pixel)."""
    worst, frames, wrong = 0.0, 0, 0
    with open(results_file) as f:
        for line in f:
            persons = json.loads(line).get("persons") or []
            frames += 1
            if len(persons) != 1:
                wrong += 1
                continue
            worst = max(worst, max(abs(a - b) for a, b in zip(persons[0]["bbox"], box[:4])))
    return {"detector_frames_without_one_person": wrong, "detector_box_max_error_px": round(worst, 4),
            "detector_boxes_match": frames > 0 and wrong == 0 and worst <= 0.5}


# ---------------------------------------------------------------------------------------------
# Reading the program's output

SUMMARY_RE = re.compile(r"frames in (\d+), out (\d+), dropped (\d+); ([\d.]+) s, ([\d.]+) fps")
STAGE_RE = re.compile(r"^(\S+(?: \S+)?)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)\s+(\d+)\s*$")


def parse_program_log(text: str) -> dict:
    result: dict = {}
    match = SUMMARY_RE.search(text)
    if match:
        result.update(frames_in=int(match[1]), frames_out=int(match[2]), frames_dropped=int(match[3]),
                      run_s=float(match[4]), whole_run_fps=float(match[5]))
        stages = {}
        for line in text[match.end():].splitlines():
            stage = STAGE_RE.match(line.strip())
            if stage:
                stages[stage[1]] = {"p50_ms": float(stage[2]), "p90_ms": float(stage[3]),
                                    "p99_ms": float(stage[4]), "frames": int(stage[5])}
        result["stages"] = stages
    return result


def steady_fps(results_file: Path, warmup: int) -> dict:
    """Frames per second between frame `warmup` and the last frames, by capture time: with
    offline backpressure the decoder takes a frame only when the pipeline has room for it."""
    captures, persons = [], []
    with open(results_file) as f:
        for line in f:
            record = json.loads(line)
            captures.append((record["frame"], record["capture_unix_ns"]))
            persons.append(len(record.get("persons") or []))
    captures.sort()
    window = captures[warmup: len(captures) - TAIL_FRAMES]
    if len(window) < 2:
        return {"error": f"too few frames ({len(captures)}) for --warmup-frames {warmup} and {TAIL_FRAMES} tail frames"}
    (f0, t0), (f1, t1) = window[0], window[-1]
    seconds = (t1 - t0) / 1e9
    return {"steady_fps": round((f1 - f0) / seconds, 2), "steady_ms_per_frame": round(seconds * 1000 / (f1 - f0), 3),
            "steady_frames": f1 - f0, "result_lines": len(captures),
            "persons_per_frame": sorted(set(persons))}


# ---------------------------------------------------------------------------------------------
# Steps


def step_model(args, results: Path) -> tuple[Path | None, dict]:
    suffix = ("_fp16" if args.fp16 else "") + ("_mha" if args.fused_attention else "")
    prefix = "sapiens2" if args.family == "sapiens2" else "sapiens"
    model = args.models_dir / f"{prefix}_{args.arch}_{args.task}{suffix}.onnx"
    cmd = [sys.executable, "engines/generate_models.py", "--out", str(args.models_dir), "--family", args.family,
           "--arch", args.arch, "--tasks", args.task, *(["--fp16"] if args.fp16 else []),
           *(["--fused-attention"] if args.fused_attention else [])]
    start = time.perf_counter()
    rc, text = run(cmd, results / "generate.log", timeout=1800)
    if rc != 0 or not model.is_file():
        return None, {"error": f"generate_models.py failed (rc {rc}): {text.strip().splitlines()[-1:]}"}
    return model, {"path": str(model), "generate_s": round(time.perf_counter() - start, 1), "log": text.strip()}


def step_torch(args, model: Path, results: Path) -> dict:
    out = results / "torch.jsonl"
    cmd = [sys.executable, "benches/torch_reference.py", "--bench", "--onnx", str(model), "--modes", args.torch_modes,
           "--device", args.torch_device,
           "--iters", str(args.iters), "--warmup", str(args.warmup), "--compile-mode", args.compile_mode,
           "--compile-timeout", str(args.compile_timeout), "--json-out", str(out)]
    env = dict(os.environ)  # the CUDA libraries for onnxruntime-gpu's CUDA provider (ort-cuda mode)
    env["LD_LIBRARY_PATH"] = ":".join(nvidia_lib_dirs() + [p for p in env.get("LD_LIBRARY_PATH", "").split(":") if p])
    rc, text = run(cmd, results / "torch.log", timeout=args.compile_timeout + 900, env=env)
    records = [json.loads(line) for line in out.read_text().splitlines()] if out.exists() else []
    if not records:
        tail = text.strip().splitlines()[-1:] or ["no output"]
        return {"error": f"torch_reference.py gave no result (rc {rc}): {tail[0]}"}
    return {"rc": rc, "modes": {r["mode"]: r for r in records}}


def find_ort_library(path: Path) -> Path | None:
    if path.is_file():
        return path
    for pattern in ("libonnxruntime.so", "libonnxruntime.so.*"):
        found = sorted(p for p in path.glob(pattern) if "providers" not in p.name)
        if found:
            return found[0]
    return None


def step_e2e(args, model: Path, results: Path) -> dict:
    if args.bin is None:
        return {"error": "no --bin given (the x86-64 sapiens-stream binary)"}
    if not args.bin.is_file() or not os.access(args.bin, os.X_OK):
        return {"error": f"--bin {args.bin} is not an executable file"}
    ort_lib = find_ort_library(args.ort_lib) if args.ort_lib else None
    if args.ort_lib and ort_lib is None:
        return {"error": f"--ort-lib {args.ort_lib}: no libonnxruntime.so there"}

    env = dict(os.environ)
    lib_dirs = [d for d in (args.ld_path or "").split(":") if d] + nvidia_lib_dirs()
    if ort_lib is not None:
        lib_dirs.insert(0, str(ort_lib.parent))
    env["LD_LIBRARY_PATH"] = ":".join(lib_dirs + [p for p in env.get("LD_LIBRARY_PATH", "").split(":") if p])
    env.setdefault("NO_COLOR", "1")
    env.setdefault("RUST_LOG", "info,ort=warn")  # engine choice and reasons, without ONNX Runtime's arena chatter
    record: dict = {"bin": str(args.bin), "ort_lib": str(ort_lib) if ort_lib else None,
                    "LD_LIBRARY_PATH": env["LD_LIBRARY_PATH"]}

    # A binary that cannot even load (no GStreamer core libraries, say) is named here, plainly.
    work = Path(args.work_dir or results)
    work.mkdir(parents=True, exist_ok=True)
    ldd_rc, ldd = run(["ldd", str(args.bin)], work / "ldd.txt", timeout=60, env=env)
    missing = [line.split()[0] for line in ldd.splitlines() if "not found" in line]
    if missing:
        return {**record, "error": f"the binary's libraries are missing: {', '.join(missing)} (bundle them and pass --ld-path)"}

    ort_args = ["--ort-lib", str(ort_lib)] if ort_lib else []
    device = "cpu" if args.engine == "cpu" else "cuda:0"
    doctor_rc, doctor = run([str(args.bin), "doctor", "--engine", args.engine, "--device", device, *ort_args],
                            results / "doctor.log", timeout=120, env=env)
    # For the log only: doctor also fails for missing GStreamer plugins, which the image-folder
    # input does not use. The run below gives the verdict.
    requested = [line.strip() for line in doctor.splitlines() if line.startswith("requested")]
    record.update(doctor_rc=doctor_rc, doctor=requested[0] if requested else None)

    width, height = args.frame_size
    frames = work / "frames"
    make_frames(frames, args.frames, width, height)
    box = write_boxes(work / "boxes.jsonl", args.frames, width, height)
    if args.persons == "detector":
        detector = constant_detector(work, box, width, height)
        if isinstance(detector, str):
            return {**record, "error": detector}
        persons_args = ["--detector", str(detector)]
    else:
        persons_args = ["--boxes", str(work / "boxes.jsonl")]
    results_file = results / "e2e.jsonl"
    results_file.unlink(missing_ok=True)
    cmd = [str(args.bin), "run", "--input", str(frames), "--pose-model", str(model),
           *persons_args, "--engine", args.engine, "--device", device,
           "--mode", "offline", "--output", "none", "--results", str(results_file), "--no-progress",
           "--max-batch", "1", *ort_args]
    start = time.perf_counter()
    rc, text = run(cmd, results / "e2e.log", timeout=args.e2e_timeout, env=env)
    record.update(command=" ".join(cmd), rc=rc, wall_s=round(time.perf_counter() - start, 1),
                  frames=args.frames, frame_size=f"{width}x{height}", box=box)
    if rc != 0:
        errors = [line for line in text.splitlines() if line.startswith("error")] or text.strip().splitlines()[-1:]
        return {**record, "error": f"sapiens-stream run failed (rc {rc}): {errors[0] if errors else 'no output'}"}
    record.update(parse_program_log(text))
    if results_file.exists():
        record.update(steady_fps(results_file, args.warmup_frames))
        if args.persons == "detector":
            record.update(detected_boxes(results_file, box))
    if "steady_fps" not in record:
        record.setdefault("error", "no results to measure (e2e.jsonl empty?)")
    return record


# ---------------------------------------------------------------------------------------------
# Summary


def summarize(summary: dict) -> list[str]:
    lines = []
    env = summary["environment"]
    lines.append(f"GPU: {env.get('gpu') or env.get('nvidia_smi')}; torch {env.get('torch')}; "
                 f"model {summary['arch']} {summary['task']} {summary['model_dtype']}, attention {summary['attention']}")
    torch_modes = (summary.get("torch") or {}).get("modes", {})
    for mode, r in torch_modes.items():
        if "fps" in r:
            extra = f", compile {r['compile_s']} s" if "compile_s" in r else ""
            lines.append(f"  {mode:<14} {r['fps']:>8.2f} fps  {r['ms_per_frame']:>8.3f} ms/frame  ({r['label']}{extra})")
        else:
            lines.append(f"  {mode:<14} not measured: {r.get('error') or r.get('skipped')}")
    if "error" in (summary.get("torch") or {}):
        lines.append(f"  torch: not measured: {summary['torch']['error']}")
    e2e = summary.get("e2e") or {}
    if "steady_fps" in e2e:
        # The device path times a batch's GPU work as one stage ("gpu frame" before batches
        # spanned streams); the host path times the model.
        stages = e2e.get("stages", {})
        timed = [f"{name} p50 {stages[name]['p50_ms']} ms" for name in ("gpu batch", "gpu frame", "pose infer", "detect")
                 if name in stages]
        lines.append(f"  {'program e2e':<14} {e2e['steady_fps']:>8.2f} fps  {e2e['steady_ms_per_frame']:>8.3f} ms/frame  "
                     f"(sapiens-stream --engine {summary['engine']}, steady state; whole run {e2e.get('whole_run_fps')} fps; "
                     f"{'; '.join(timed)})")
        if "detector_boxes_match" in e2e:
            lines.append(f"  detector boxes where expected: {e2e['detector_boxes_match']} (largest error "
                         f"{e2e['detector_box_max_error_px']} px, frames without one person "
                         f"{e2e['detector_frames_without_one_person']})")
    elif e2e:
        lines.append(f"  program e2e    not measured: {e2e.get('error')}")
    for name, value in summary.get("ratios", {}).items():
        lines.append(f"  ratio {name}: {value}")
    return lines


def ratios(summary: dict) -> dict:
    out = {}
    e2e = (summary.get("e2e") or {}).get("steady_fps")
    modes = (summary.get("torch") or {}).get("modes", {})
    for mode in ("eager-bf16", "compile-bf16"):
        fps = modes.get(mode, {}).get("fps")
        if e2e and fps:
            out[f"program / torch {mode}"] = round(e2e / fps, 3)
    ort = modes.get("ort-cuda", {}).get("fps")
    for mode in ("eager-bf16", "compile-bf16"):
        fps = modes.get(mode, {}).get("fps")
        if ort and fps:
            out[f"onnxruntime-python-cuda / torch {mode} (engine only)"] = round(ort / fps, 3)
    return out


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bin", type=Path, help="the x86-64 sapiens-stream binary")
    parser.add_argument("--ort-lib", type=Path, help="libonnxruntime.so with the CUDA provider, or its folder (onnxruntime-gpu's onnxruntime/capi)")
    parser.add_argument("--ld-path", help="more library folders for the binary (GStreamer core libs, ...), ':'-separated")
    parser.add_argument("--engine", default="cuda", choices=("cuda", "tensorrt", "cpu"),
                        help="the program's --engine (cpu: a dry run of this kit on a machine without a GPU)")
    parser.add_argument("--torch-device", default="cuda", choices=("cuda", "cpu"), help="torch_reference.py --device")
    parser.add_argument("--family", default="sapiens", choices=("sapiens", "sapiens2"),
                        help="generator family: sapiens2 takes --arch 0.4b.. and --task pose308/seg/...")
    parser.add_argument("--arch", default="0.3b")
    parser.add_argument("--task", default="pose308")
    parser.add_argument("--models-dir", type=Path, default=REPO / "engines" / "models")
    parser.add_argument("--results", type=Path, help="results folder (default bench-results/gpu-e2e-<UTC time>)")
    parser.add_argument("--work-dir", type=Path, help="where the input frames go (default: the results folder)")
    parser.add_argument("--frames", type=int, default=300)
    parser.add_argument("--warmup-frames", type=int, default=30, help="frames left out of the steady-state fps")
    parser.add_argument("--frame-size", default="1920x1080", help="WIDTHxHEIGHT of the input frames")
    parser.add_argument("--e2e-timeout", type=float, default=600)
    parser.add_argument("--torch-modes", default="eager-bf16,compile-bf16,ort-cuda")
    parser.add_argument("--iters", type=int, default=100)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--compile-mode", default="default")
    parser.add_argument("--compile-timeout", type=float, default=240, help="keeps the whole run inside a 10-minute call")
    parser.add_argument("--fp16", action="store_true",
                        help="the model in float16 (float32 input and output, as export_onnx.py --fp16 writes)")
    parser.add_argument("--fused-attention", action="store_true",
                        help="the model's attention as ONNX Runtime's fused MultiHeadAttention (generate_models.py "
                             "--fused-attention): flash attention on the CUDA provider with --fp16")
    parser.add_argument("--persons", default="boxes", choices=("boxes", "detector"),
                        help="where the program's person box comes from: a boxes file, or a detector on the GPU")
    parser.add_argument("--skip-torch", action="store_true")
    parser.add_argument("--skip-e2e", action="store_true")
    args = parser.parse_args(argv)
    try:
        w, h = (int(v) for v in args.frame_size.lower().split("x"))
        args.frame_size = (w, h)
    except ValueError:
        parser.error(f"--frame-size {args.frame_size!r}: expected WIDTHxHEIGHT")
    if args.frames < args.warmup_frames + TAIL_FRAMES + 2:
        parser.error(f"--frames must be at least --warmup-frames + {TAIL_FRAMES + 2}")
    if args.results is None:
        stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        args.results = REPO / "bench-results" / f"gpu-e2e-{stamp}"
    return args


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    if not args.skip_e2e and args.bin is None:
        print("error: --bin PATH (the sapiens-stream binary) is needed, or --skip-e2e", file=sys.stderr)
        return 2
    results = args.results
    results.mkdir(parents=True, exist_ok=True)
    summary: dict = {"family": args.family, "arch": args.arch, "task": args.task, "model_dtype": "float16" if args.fp16 else "float32",
                     "attention": "com.microsoft.MultiHeadAttention" if args.fused_attention else "MatMul/Softmax",
                     "engine": args.engine, "environment": environment(args)}
    save = lambda: (results / "summary.json").write_text(json.dumps(summary, indent=2))  # noqa: E731
    save()
    log(f"results in {results}")
    if not summary["environment"].get("cuda_available"):
        log("warning: torch sees no CUDA device")

    model, summary["model"] = step_model(args, results)
    if model is not None:
        save()
        if not args.skip_torch:
            summary["torch"] = step_torch(args, model, results)
            save()
        if not args.skip_e2e:
            summary["e2e"] = step_e2e(args, model, results)
    summary["ratios"] = ratios(summary)
    save()
    print("\n".join(summarize(summary)) if model else f"model: {summary['model']['error']}")
    log(f"summary: {results / 'summary.json'}")

    # The figure needs PyTorch eager bf16 and the program; compile and the ORT-Python
    # engine-only figure are extras, reported with their reason when missing.
    wanted_missing = model is None
    if not args.skip_torch and model is not None:
        modes = summary["torch"].get("modes", {})
        wanted_missing |= "fps" not in modes.get("eager-bf16", {}) and "eager-bf16" in args.torch_modes
    if not args.skip_e2e and model is not None:
        wanted_missing |= "steady_fps" not in summary["e2e"]
    return 1 if wanted_missing else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
