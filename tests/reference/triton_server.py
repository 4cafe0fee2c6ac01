#!/usr/bin/env python3
"""A real NVIDIA Triton Inference Server (nvidia-pytriton) serving ONNX models, for the tests.

  .venv-triton/bin/python tests/reference/triton_server.py --grpc-port P --http-port P2 \
      --metrics-port P3 [--max-batch 8] [--queue-delay-us 2000] NAME=PATH.onnx [NAME=PATH.onnx ...]

Each model runs in ONNX Runtime (CPU, one intra-op thread) behind Triton's dynamic batcher, with
its input and every output declared as the ONNX file declares them (names, FP32 / FP16 / integer
types, shapes without the batch dimension, -1 where the ONNX dimension is symbolic).

Batch dimension: every model is served with max_batch_size = --max-batch, so clients see the
same [-1, ...] shapes for all of them. A model whose ONNX batch dimension is symbolic runs each
dynamic batch in one session call; a model whose batch dimension is fixed at 1 (the person
detectors) runs it one item at a time, so batching still works for it.

Prints `ready` on stdout once Triton serves every model, then serves until SIGTERM or SIGINT.
Must run under Debian's /usr/bin/python3 (scripts/setup.sh makes .venv-triton with it): Triton's
Python backend stub is built for, and loads, the system libpython of the same version.
"""

import argparse
import logging
import pathlib
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time

import numpy as np
import onnxruntime as ort
from pytriton.decorators import batch
from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor
from pytriton.models.model import Model
from pytriton.triton import Triton, TritonConfig, TritonSecurityConfig

DTYPES = {
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
    "tensor(int64)": np.int64,  # mmdeploy's RTMDet 'labels'
    "tensor(int32)": np.int32,
}


def tensor(arg):
    """The Triton declaration of an ONNX input or output: its shape without the batch dimension."""
    if arg.type not in DTYPES:
        sys.exit(f"triton_server: {arg.name}: unsupported type {arg.type}")
    shape = tuple(d if isinstance(d, int) else -1 for d in arg.shape[1:])
    return Tensor(name=arg.name, dtype=DTYPES[arg.type], shape=shape)


def session_options(path):
    """One intra-op thread, and the graph optimisation the program opens the model with: Sapiens
    models (their metadata names a `sapiens_stream.task`) at the extended level, without the NCHWc
    layout; the detectors at every level. Results through Triton then equal local ones."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    metadata = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"]).get_modelmeta()
    sapiens = "sapiens_stream.task" in metadata.custom_metadata_map
    options.graph_optimization_level = (
        ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED if sapiens else ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    )
    return options


def infer_function(session):
    """The batched infer function of one session (inputs and outputs by their ONNX names)."""
    names = [o.name for o in session.get_outputs()]
    # ONNX Runtime returns int64 as numpy.longlong, which pytriton's check refuses: view as int64.
    types = [DTYPES[o.type] for o in session.get_outputs()]
    fixed_batch = isinstance(session.get_inputs()[0].shape[0], int)

    def run(inputs):
        return [out.view(t) for out, t in zip(session.run(names, inputs), types)]

    @batch
    def infer(**inputs):
        if not fixed_batch:
            return dict(zip(names, run(inputs)))
        # Batch dimension fixed at 1: one run per item, outputs stacked back into a batch.
        count = len(next(iter(inputs.values())))
        runs = [run({k: v[i : i + 1] for k, v in inputs.items()}) for i in range(count)]
        return {name: np.concatenate([r[j] for r in runs]) for j, name in enumerate(names)}

    return infer


def keep_onnx_metadata(metadata_by_model):
    """Puts each ONNX file's metadata (the random-weights mark) in its model config's
    `parameters`, as `sapiens-stream models triton-repo` writes them for a real Triton: pytriton's
    public ModelConfig has no field for them, so its config maker is wrapped."""
    make_config = Model._get_triton_model_config

    def with_metadata(self):
        config = make_config(self)
        config.backend_parameters.update(metadata_by_model.get(self.model_name, {}))
        return config

    Model._get_triton_model_config = with_metadata


def wait_for_free_ports(address, ports, timeout_s=30.0):
    """Waits until nothing listens on the ports: a killed server's Triton (which pytriton started
    with a parent-death SIGTERM) takes seconds to unload its models and let them go, and Triton
    started meanwhile fails to bind, which pytriton only reports after a minute."""
    deadline = time.monotonic() + timeout_s
    for port in ports:
        while True:
            with socket.socket() as probe:
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                try:
                    probe.bind((address, port))
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        sys.exit(f"triton_server: port {port} stays in use")
            time.sleep(0.2)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--grpc-port", type=int, required=True)
    parser.add_argument("--http-port", type=int, required=True)
    parser.add_argument("--metrics-port", type=int, required=True)
    parser.add_argument("--address", default="127.0.0.1", help="address of all three endpoints")
    parser.add_argument("--max-batch", type=int, default=8)
    parser.add_argument("--queue-delay-us", type=int, default=2000)
    parser.add_argument("models", nargs="+", metavar="NAME=PATH.onnx")
    args = parser.parse_args()
    # stdout carries only `ready`: pytriton prints Triton's own log to sys.stdout, so send it to stderr.
    ready_out, sys.stdout = sys.stdout, sys.stderr
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)

    config = TritonConfig(
        grpc_address=args.address,
        grpc_port=args.grpc_port,
        http_address=args.address,
        http_port=args.http_port,
        metrics_address=args.address,
        metrics_port=args.metrics_port,
        allow_gpu_metrics=False,
        # A stopping Triton waits this long for requests in flight, keeping its ports and
        # answering NOT_FOUND meanwhile (30 s by default): a restart on the same ports waits it out.
        exit_timeout_secs=2,
    )
    wait_for_free_ports(args.address, [args.grpc_port, args.http_port, args.metrics_port])
    # A workspace per gRPC port (Triton's binaries and model store, 22 MB): a clean stop removes it,
    # and a restart on the same port removes the one that a killed server left behind.
    workspace = pathlib.Path(tempfile.gettempdir()) / f"sapiens-triton-{args.grpc_port}"
    shutil.rmtree(workspace, ignore_errors=True)
    # pytriton 0.7 puts a random access token on the shared-memory, statistics, ... endpoints by
    # default; a plain Triton has none, and the clients under test register shared memory.
    triton = Triton(
        config=config, workspace=workspace, security_config=TritonSecurityConfig(restricted_endpoints=[])
    )
    metadata_by_model = {}
    keep_onnx_metadata(metadata_by_model)
    for spec in args.models:
        name, _, path = spec.partition("=")
        session = ort.InferenceSession(path, session_options(path), providers=["CPUExecutionProvider"])
        if len(session.get_inputs()) != 1:
            sys.exit(f"triton_server: {path}: one image input expected")
        metadata_by_model[name] = dict(session.get_modelmeta().custom_metadata_map)
        triton.bind(
            model_name=name,
            infer_func=infer_function(session),
            inputs=[tensor(i) for i in session.get_inputs()],
            outputs=[tensor(o) for o in session.get_outputs()],
            config=ModelConfig(
                max_batch_size=args.max_batch,
                batcher=DynamicBatcher(max_queue_delay_microseconds=args.queue_delay_us),
            ),
            strict=True,
        )

    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    triton.run()  # returns once the server and every model are ready
    print("ready", file=ready_out, flush=True)
    while not stop.wait(1.0):
        if not triton.is_alive():
            sys.exit("triton_server: Triton stopped")
    triton.stop()


if __name__ == "__main__":
    main()
