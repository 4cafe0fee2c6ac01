#!/usr/bin/env python3
"""The Triton engine on one machine (issue 14): what the remote engine costs beside the local one,
what shared memory saves on the wire, and how one server serves several client processes.

Starts the project's test Triton (tests/reference/triton_server.py: Triton 2.51 from
nvidia-pytriton, the model run by ONNX Runtime on the CPU, dynamic batching), serving the tiny
random-weight pose17 model, and runs the program on a clip, offline, the whole frame one person:

- local vs remote: the same run with the ONNX file (every core, and one thread as the test
  server runs it) and with triton:// (tensors in the request, and --triton-shm); wall time per
  frame.
- bytes per frame: the loopback interface's transmitted bytes (the kernel's count, both
  directions, /sys/class/net/lo/statistics/tx_bytes) over a run, per frame, without and with
  --triton-shm; on an otherwise quiet machine that is the gRPC traffic.
- clients: 1, 2, 4 processes at once against the one server; frames per second over all of
  them, and the server's executions against its requests (its dynamic batching).

Each figure is the median of --repeats runs. Usage:
  benches/triton_engine.py --clip CLIP --frames N [--repeats 3] [--clients 1,2,4]
Prints Markdown tables.
"""

import argparse
import os
import re
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
MODEL = REPO / "engines/models/sapiens_tiny_pose17.onnx"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server():
    ports = [free_port() for _ in range(3)]
    server = subprocess.Popen(
        [REPO / ".venv-triton/bin/python", REPO / "tests/reference/triton_server.py",
         "--grpc-port", str(ports[0]), "--http-port", str(ports[1]), "--metrics-port", str(ports[2]),
         f"pose={MODEL}"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    if server.stdout.readline().strip() != "ready":
        sys.exit("the Triton server did not start")
    return server, ports


def run(binary, model, clip, extra=()):
    args = [binary, "run", "--input", str(clip), "--mode", "offline", "--pose-model", model,
            "--no-progress", "--output", "none", *extra]
    done = subprocess.run(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if done.returncode != 0:
        sys.exit(f"a run failed:\n{done.stderr}")


def timed(action):
    started = time.monotonic()
    action()
    return time.monotonic() - started


def loopback_bytes():
    return int(Path("/sys/class/net/lo/statistics/tx_bytes").read_text())


def server_counts(metrics_port):
    text = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics").read().decode()
    value = lambda name: float(re.search(rf'^{name}{{model="pose",version="1"}} (\S+)', text, re.M).group(1))
    return value("nv_inference_request_success"), value("nv_inference_exec_count")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--clip", required=True)
    parser.add_argument("--frames", type=int, required=True, help="frames in the clip")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--clients", default="1,2,4")
    parser.add_argument("--binary", default=str(REPO / "target/release/sapiens-stream"))
    args = parser.parse_args()
    os.environ.setdefault("RUST_LOG", "warn")
    server, (grpc, _, metrics) = start_server()
    remote = f"triton://127.0.0.1:{grpc}/pose"
    try:
        run(args.binary, remote, args.clip)  # warm-up
        engines = [
            ("local ONNX Runtime, every core", str(MODEL), ()),
            ("local ONNX Runtime, 1 thread (as the test server runs the model)", str(MODEL), ("--threads", "1")),
            ("Triton on this host, tensors in the request", remote, ()),
            ("Triton on this host, --triton-shm", remote, ("--triton-shm",)),
        ]
        print("| engine | ms per frame |\n|---|---|")
        for label, model, extra in engines:
            seconds = statistics.median(timed(lambda: run(args.binary, model, args.clip, extra)) for _ in range(args.repeats))
            print(f"| {label} | {1000 * seconds / args.frames:.1f} |")
        print()

        print("| transport | bytes per frame on loopback |\n|---|---|")
        for label, extra in [("raw tensors in the request", ()), ("--triton-shm", ("--triton-shm",))]:
            counts = []
            for _ in range(args.repeats):
                before = loopback_bytes()
                run(args.binary, remote, args.clip, extra)
                counts.append((loopback_bytes() - before) / args.frames)
            print(f"| {label} | {statistics.median(counts):,.0f} |")
        print()

        print("| client processes | frames/s, all clients | server executions / requests |\n|---|---|---|")
        for clients in map(int, args.clients.split(",")):
            rates, fills = [], []
            for _ in range(args.repeats):
                requests, executions = server_counts(metrics)
                started = time.monotonic()
                processes = [subprocess.Popen(
                    [args.binary, "run", "--input", args.clip, "--mode", "offline", "--pose-model", remote,
                     "--no-progress", "--output", "none"],
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for _ in range(clients)]
                if any(p.wait() != 0 for p in processes):
                    sys.exit("a client run failed")
                rates.append(clients * args.frames / (time.monotonic() - started))
                requests_after, executions_after = server_counts(metrics)
                fills.append((executions_after - executions) / (requests_after - requests))
            print(f"| {clients} | {statistics.median(rates):.1f} | {statistics.median(fills):.2f} |")
    finally:
        server.terminate()
        server.wait()


if __name__ == "__main__":
    main()
