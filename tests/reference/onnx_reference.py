#!/usr/bin/env python3
"""Independent view of ONNX files for tests/models.rs, read with the `onnx` package.

describe MODEL   prints JSON: opset of the default domain, inputs and outputs (name, element type
                 as ONNX Runtime's Rust API names it, dims with "N" for a symbolic or unknown
                 dimension), metadata properties, producer.
detector PATH    writes a small model with a detector's layout, not a Sapiens one:
                 input `input` (1, 3, 640, 640) float32 -> `dets` (1, 3, 640, 640) and `labels` (4) int64.
"""

from __future__ import annotations

import json
import sys

import onnx
from onnx import TensorProto, helper

ELEMENT_NAMES = {
    TensorProto.FLOAT: "f32",
    TensorProto.FLOAT16: "f16",
    TensorProto.INT64: "i64",
    TensorProto.BFLOAT16: "bf16",
}


def value_info(value: onnx.ValueInfoProto) -> dict:
    tensor = value.type.tensor_type
    dims = [d.dim_value if d.HasField("dim_value") else "N" for d in tensor.shape.dim]
    return {"name": value.name, "type": ELEMENT_NAMES[tensor.elem_type], "dims": dims}


def describe(path: str) -> dict:
    model = onnx.load(path, load_external_data=False)
    initializers = {i.name for i in model.graph.initializer}
    return {
        "opset": next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")),
        "inputs": [value_info(v) for v in model.graph.input if v.name not in initializers],
        "outputs": [value_info(v) for v in model.graph.output],
        "metadata": {p.key: p.value for p in model.metadata_props},
        "producer": model.producer_name,
    }


def detector(path: str) -> None:
    graph = helper.make_graph(
        [
            helper.make_node("Identity", ["input"], ["dets"]),
            helper.make_node("Shape", ["input"], ["labels"]),
        ],
        "detector_like",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 640, 640])],
        [
            helper.make_tensor_value_info("dets", TensorProto.FLOAT, [1, 3, 640, 640]),
            helper.make_tensor_value_info("labels", TensorProto.INT64, [4]),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="onnx_reference.py")
    model.ir_version = 8
    onnx.save(model, path)


if __name__ == "__main__":
    command, path = sys.argv[1:3]
    if command == "describe":
        print(json.dumps(describe(path)))
    elif command == "detector":
        detector(path)
    else:
        sys.exit(f"unknown command {command}")
