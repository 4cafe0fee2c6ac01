#!/usr/bin/env python3
"""N streams in one process beside N processes of one stream each (issue 13).

For each N: the same clip N times, offline (every frame), pose with the tiny random-weight
pose17 model and the whole frame as one person. One process takes the N inputs; the other way
starts N processes at once, one input each. Throughput: N x frames / wall time from start to the
last process's end. Memory: the peak RSS of the one process, against the sum of the N processes'
peak RSS (each read with wait4). Then N streams live (test patterns at the clip's rate) in one
process for `--live-seconds`, with the per-stream latency (decoded to published) p50/p99 from
the run report.

Each figure is the median of `--repeats` runs, the two ways alternating, after a warm-up run.

Usage: benches/streams.py --clip CLIP --frames N [--counts 1,2,4,8] [--max-batch B]
Prints one JSON line per measurement, and Markdown tables at the end.
"""

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
MAX_BATCH = None


def run_args(binary, model, inputs, extra):
    args = [binary, "run", "--pose-model", str(model), "--no-progress", "--output", "none"]
    if MAX_BATCH:
        args += ["--max-batch", str(MAX_BATCH)]
    for name, uri in inputs:
        args += ["--input", f"{name}={uri}"]
    return args + extra


def spawn(args, env):
    return subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, text=True)


def wait_all(processes):
    """Waits for every process; each one's peak RSS (kB) and stderr."""
    peaks, logs = [], []
    for process in processes:
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
        logs.append(process.stderr.read())
        if process.returncode != 0:
            sys.exit(f"a run failed ({process.returncode}):\n{logs[-1]}")
        peaks.append(usage.ru_maxrss)
    return peaks, logs


def offline(binary, model, clip, n, frames, env, together):
    inputs = [(f"s{i}", str(clip)) for i in range(n)]
    extra = ["--mode", "offline"]
    start = time.monotonic()
    if together:
        processes = [spawn(run_args(binary, model, inputs, extra), env)]
    else:
        processes = [spawn(run_args(binary, model, [one], extra), env) for one in inputs]
    peaks, _ = wait_all(processes)
    wall = time.monotonic() - start
    return {"n": n, "mode": "one process" if together else "separate processes",
            "fps": round(n * frames / wall, 2), "wall_s": round(wall, 2),
            "rss_mb": round(sum(peaks) / 1024, 1)}


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
    parser.add_argument("--clip", required=True, help="the clip every stream reads")
    parser.add_argument("--frames", type=int, required=True, help="frames in the clip")
    parser.add_argument("--counts", default="1,2,4,8")
    parser.add_argument("--live-seconds", type=float, default=20.0)
    parser.add_argument("--live-size", default="640x360")
    parser.add_argument("--live-fps", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--max-batch", type=int, help="default: the program's (1 on the CPU)")
    options = parser.parse_args()
    global MAX_BATCH
    MAX_BATCH = options.max_batch
    env = dict(os.environ, RUST_LOG="warn")
    offline(options.binary, options.model, options.clip, 1, options.frames, env, True)
    rows = []
    for n in [int(c) for c in options.counts.split(",")]:
        runs = {True: [], False: []}
        for _ in range(options.repeats):
            for together in (True, False):
                row = offline(options.binary, options.model, options.clip, n, options.frames, env, together)
                print(json.dumps(row), flush=True)
                runs[together].append(row)
        for together, measured in runs.items():
            rows.append({"n": n, "mode": measured[0]["mode"],
                         "fps": statistics.median(r["fps"] for r in measured),
                         "rss_mb": statistics.median(r["rss_mb"] for r in measured)})
    size = tuple(int(v) for v in options.live_size.split("x"))
    n = max(int(c) for c in options.counts.split(","))
    latencies = live_latency(options.binary, options.model, n, options.live_seconds, size,
                             options.live_fps, env)
    for row in latencies:
        print(json.dumps(row), flush=True)

    print(f"\n--max-batch {MAX_BATCH or 'default'}, median of {options.repeats}")
    print("| N | one process fps | separate fps | one process RSS MB | separate RSS MB (sum) |")
    print("|---|---|---|---|---|")
    by_n = {}
    for row in rows:
        by_n.setdefault(row["n"], {})[row["mode"]] = row
    for n, pair in by_n.items():
        one, apart = pair["one process"], pair["separate processes"]
        print(f"| {n} | {one['fps']} | {apart['fps']} | {one['rss_mb']} | {apart['rss_mb']} |")
    print(f"\n| stream (N = {n}, live) | fps out | dropped | latency p50 ms | p99 ms |")
    print("|---|---|---|---|---|")
    for row in latencies:
        print(f"| {row['stream']} | {row['fps']} | {row['dropped']} | {row['latency_p50_ms']} | "
              f"{row['latency_p99_ms']} |")


if __name__ == "__main__":
    main()
