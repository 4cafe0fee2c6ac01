#!/usr/bin/env python3
"""N streams in one process beside N processes of one stream each (issue 13).

For each N: the same input (a clip, or a folder of images) N times, offline (every frame), pose
with a random-weight model (the tiny pose17 by default) and the whole frame as one person. One
process takes the N inputs; the other way starts N processes at once, one input each.
Throughput: N x frames / wall time from start to the last process's end. Memory: the peak RSS of
the one process, against the sum of the N processes' peak RSS (each read with wait4); with
`--gpu-memory`, also the GPU's memory in use at its peak less what was in use before
(nvidia-smi, sampled every 0.2 s). Then N streams live (test patterns) in one process for
`--live-seconds`, with the per-stream latency (decoded to published) p50/p99 from the run report.

Each figure is the median of `--repeats` runs, the two ways alternating, after a warm-up run.

Usage: benches/streams.py --input CLIP_OR_FOLDER --frames N [--counts 1,2,4,8] [--max-batch B]
       [--extra "--engine cuda --ort-lib PATH"] [--gpu-memory] [--live-seconds 0 (skips it)]
       [--logs DIR]
Prints one JSON line per measurement, and Markdown tables at the end.
"""

import argparse
import json
import os
import re
import shlex
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
MAX_BATCH = None
# More options for every run (the engine, its library, ...).
EXTRA = []
# Where each run's stderr (its report: stages, model calls, streams) is kept, if anywhere.
LOGS = None
POLL_S = 0.2


def run_args(binary, model, inputs, extra):
    args = [binary, "run", "--pose-model", str(model), "--no-progress", "--output", "none"]
    if MAX_BATCH:
        args += ["--max-batch", str(MAX_BATCH)]
    for name, uri in inputs:
        args += ["--input", f"{name}={uri}"]
    return args + EXTRA + extra


def gpu_memory_mib():
    """The GPU's memory in use, in MiB (the first GPU), or None without nvidia-smi."""
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=10).stdout
        return float(out.split()[0])
    except (OSError, subprocess.TimeoutExpired, IndexError, ValueError):
        return None


def spawn(args, env):
    return subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, text=True)


def wait_all(processes, sample=None):
    """Waits for every process, calling `sample` every POLL_S meanwhile; each one's peak RSS
    (kB) and stderr."""
    peaks, logs = {}, {}
    # stderr is drained on threads so that a chatty process never blocks on a full pipe.
    readers = {}
    for process in processes:
        readers[process.pid] = threading.Thread(
            target=lambda p=process: logs.__setitem__(p.pid, p.stderr.read()), daemon=True)
        readers[process.pid].start()
    running = list(processes)
    while running:
        for process in list(running):
            pid, status, usage = os.wait4(process.pid, os.WNOHANG)
            if pid == 0:
                continue
            running.remove(process)
            process.returncode = os.waitstatus_to_exitcode(status)
            readers[process.pid].join()
            if process.returncode != 0:
                sys.exit(f"a run failed ({process.returncode}):\n{logs[process.pid]}")
            peaks[process.pid] = usage.ru_maxrss
        if running:
            if sample:
                sample()
            time.sleep(POLL_S)
    return [peaks[p.pid] for p in processes], [logs[p.pid] for p in processes]


def offline(binary, model, source, n, frames, env, together, gpu_memory=False):
    inputs = [(f"s{i}", str(source)) for i in range(n)]
    extra = ["--mode", "offline"]
    before = gpu_memory_mib() if gpu_memory else None
    used = [0.0]
    def sample():
        now = gpu_memory_mib()
        if now is not None and before is not None:
            used[0] = max(used[0], now - before)
    start = time.monotonic()
    if together:
        processes = [spawn(run_args(binary, model, inputs, extra), env)]
    else:
        processes = [spawn(run_args(binary, model, [one], extra), env) for one in inputs]
    peaks, logs = wait_all(processes, sample if before is not None else None)
    wall = time.monotonic() - start
    if LOGS:
        LOGS.mkdir(parents=True, exist_ok=True)
        way = "one" if together else "separate"
        for i, log in enumerate(logs):
            (LOGS / f"n{n}-{way}-{i}-{time.strftime('%H%M%S')}.log").write_text(log)
    row = {"n": n, "mode": "one process" if together else "separate processes",
           "fps": round(n * frames / wall, 2), "wall_s": round(wall, 2),
           "rss_mb": round(sum(peaks) / 1024, 1)}
    if before is not None:
        row["gpu_mib"] = round(used[0])
    return row


def live_latency(binary, model, n, seconds, size, fps, env):
    width, height = size
    pattern = f"test://ball?width={width}&height={height}&fps={fps}"
    inputs = [(f"s{i}", pattern) for i in range(n)]
    args = run_args(binary, model, inputs, ["--mode", "live"])
    process = spawn(args, env)
    time.sleep(seconds)
    process.terminate()
    _, logs = wait_all([process])
    rows = re.findall(r"^(s\d+)\s+(\d+)\s+(\d+)\s+(\d+)\s+([\d.]+)\s+([\d.]+)$", logs[0], re.M)
    return [{"n": n, "stream": name, "frames_in": int(fin), "frames_out": int(fout),
             "dropped": int(dropped), "latency_p50_ms": float(p50), "latency_p99_ms": float(p99),
             "fps": round(int(fout) / seconds, 2)}
            for name, fin, fout, dropped, p50, p99 in rows]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--binary", default=str(REPO / "target/release/sapiens-stream"))
    parser.add_argument("--model", default=str(REPO / "engines/models/sapiens_tiny_pose17.onnx"))
    parser.add_argument("--input", "--clip", dest="input", required=True,
                        help="the clip or image folder every stream reads")
    parser.add_argument("--frames", type=int, required=True, help="frames in the input")
    parser.add_argument("--extra", default="", help="more options for every run, as one string")
    parser.add_argument("--logs", type=Path, help="keep each run's stderr (its report) in this folder")
    parser.add_argument("--gpu-memory", action="store_true", help="sample the GPU's memory in use (nvidia-smi)")
    parser.add_argument("--counts", default="1,2,4,8")
    parser.add_argument("--live-seconds", type=float, default=20.0, help="0: no live run")
    parser.add_argument("--live-size", default="640x360")
    parser.add_argument("--live-fps", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--max-batch", type=int, help="default: the program's (1 on the CPU)")
    options = parser.parse_args()
    global MAX_BATCH, EXTRA, LOGS
    MAX_BATCH = options.max_batch
    LOGS = options.logs
    EXTRA = shlex.split(options.extra)
    env = dict(os.environ, RUST_LOG="warn")
    offline(options.binary, options.model, options.input, 1, options.frames, env, True)
    rows = []
    for n in [int(c) for c in options.counts.split(",")]:
        runs = {True: [], False: []}
        for _ in range(options.repeats):
            for together in (True, False):
                row = offline(options.binary, options.model, options.input, n, options.frames, env, together,
                              options.gpu_memory)
                print(json.dumps(row), flush=True)
                runs[together].append(row)
        for together, measured in runs.items():
            rows.append({"n": n, "mode": measured[0]["mode"],
                         "fps": statistics.median(r["fps"] for r in measured),
                         "rss_mb": statistics.median(r["rss_mb"] for r in measured),
                         "gpu_mib": statistics.median(r.get("gpu_mib", 0) for r in measured)})
    size = tuple(int(v) for v in options.live_size.split("x"))
    n = max(int(c) for c in options.counts.split(","))
    latencies = []
    if options.live_seconds > 0:
        latencies = live_latency(options.binary, options.model, n, options.live_seconds, size,
                                 options.live_fps, env)
    for row in latencies:
        print(json.dumps(row), flush=True)

    print(f"\n--max-batch {MAX_BATCH or 'default'}, median of {options.repeats}")
    gpu = options.gpu_memory
    print("| N | one process fps | separate fps | one process RSS MB | separate RSS MB (sum) |"
          + (" one process GPU MiB | separate GPU MiB |" if gpu else ""))
    print("|---|---|---|---|---|" + ("---|---|" if gpu else ""))
    by_n = {}
    for row in rows:
        by_n.setdefault(row["n"], {})[row["mode"]] = row
    for n, pair in by_n.items():
        one, apart = pair["one process"], pair["separate processes"]
        print(f"| {n} | {one['fps']} | {apart['fps']} | {one['rss_mb']} | {apart['rss_mb']} |"
              + (f" {one['gpu_mib']} | {apart['gpu_mib']} |" if gpu else ""))
    if not latencies:
        return
    print(f"\n| stream (N = {n}, live) | fps out | dropped | latency p50 ms | p99 ms |")
    print("|---|---|---|---|---|")
    for row in latencies:
        print(f"| {row['stream']} | {row['fps']} | {row['dropped']} | {row['latency_p50_ms']} | "
              f"{row['latency_p99_ms']} |")


if __name__ == "__main__":
    main()
