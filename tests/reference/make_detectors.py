#!/usr/bin/env python3
"""Constant-output person detectors for tests/detect.rs.

  make_detectors.py OUT_DIR SPEC_JSON

SPEC_JSON is a list of models:
  {"name": "rtmdet", "layout": "rtmdet" | "yolo" | "yolo_nms",
   "input": [H, W] or null (dynamic height and width),
   "boxes": [[x1, y1, x2, y2, score, class], ...],    # in the model's input pixels
   "input_gain": g}                                   # optional, default 0
and each becomes OUT_DIR/<name>.onnx. The model returns those boxes, in the layout's output
format, every float output value plus g x the mean of the image input (so with g = 0 whatever
the image, and with a small g a test can tell which input a run saw):
  rtmdet:   mmdeploy's export, 'dets' float32 (1, N, 5) and 'labels' int64 (1, N), plus one
            all-zero row (mmdeploy pads its fixed-size output that way);
  yolo:     ultralytics v8/v11, 'output0' float32 (1, 4 + 80, anchors), with ultralytics' anchor
            count (strides 8, 16, 32; 8400 at 640 x 640): cx, cy, w, h, then class
            scores; the box's class gets its score, class 0 (person) gets 0.4 x that score when
            the class is not person (so only a best-class rule rejects it), other classes 0.01;
            spare anchors are all zero;
  yolo_nms: ultralytics' export with nms=True, 'output0' (1, 300, 6): a layout the program refuses.
The image input ('input' for mmdeploy, 'images' for ultralytics) is consumed through
ReduceMean(x) * g, so that ONNX Runtime keeps it as a real input even when g = 0.
"""

import json
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

CLASSES = 80
STRIDES = (8, 16, 32)
DYNAMIC_SIZE = (640, 640)
OPSET = 17
IR_VERSION = 8


def offset_from_input(name, gain):
    """Nodes that turn the image into the scalar gain x mean(image), named 'offset'."""
    return [
        helper.make_node("ReduceMean", [name], ["mean"], keepdims=0),
        helper.make_node("Mul", ["mean", "gain"], ["offset"]),
    ], [numpy_helper.from_array(np.array(gain, dtype=np.float32), "gain")]


def rtmdet(boxes, _size):
    rows = [box[:5] for box in boxes] + [[0.0] * 5]
    labels = [int(box[5]) for box in boxes] + [0]
    dets = np.array([rows], dtype=np.float32)
    labels = np.array([labels], dtype=np.int64)
    nodes = [
        helper.make_node("Add", ["offset", "dets_constant"], ["dets"]),
        # Labels stay whole: the float offset, times 0, cast.
        helper.make_node("Mul", ["offset", "zero_constant"], ["zero"]),
        helper.make_node("Cast", ["zero"], ["zero_int"], to=TensorProto.INT64),
        helper.make_node("Add", ["zero_int", "labels_constant"], ["labels"]),
    ]
    initializers = [
        numpy_helper.from_array(dets, "dets_constant"),
        numpy_helper.from_array(labels, "labels_constant"),
        numpy_helper.from_array(np.array(0.0, dtype=np.float32), "zero_constant"),
    ]
    outputs = [
        helper.make_tensor_value_info("dets", TensorProto.FLOAT, list(dets.shape)),
        helper.make_tensor_value_info("labels", TensorProto.INT64, list(labels.shape)),
    ]
    return "input", nodes, initializers, outputs


def yolo(boxes, size):
    anchors = sum((size[0] // stride) * (size[1] // stride) for stride in STRIDES)
    output = np.zeros((1, 4 + CLASSES, anchors), dtype=np.float32)
    output[0, 4:, : len(boxes)] = 0.01
    for anchor, (x1, y1, x2, y2, score, cls) in enumerate(boxes):
        output[0, :4, anchor] = [(x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1]
        output[0, 4 + int(cls), anchor] = score
        if int(cls) != 0:
            output[0, 4, anchor] = 0.4 * score
    return yolo_graph(output)


def yolo_nms(boxes, _size):
    output = np.zeros((1, 300, 6), dtype=np.float32)
    for row, box in enumerate(boxes):
        output[0, row] = box
    return yolo_graph(output)


def yolo_graph(output):
    nodes = [helper.make_node("Add", ["offset", "output_constant"], ["output0"])]
    initializers = [numpy_helper.from_array(output, "output_constant")]
    outputs = [helper.make_tensor_value_info("output0", TensorProto.FLOAT, list(output.shape))]
    return "images", nodes, initializers, outputs


LAYOUTS = {"rtmdet": rtmdet, "yolo": yolo, "yolo_nms": yolo_nms}


def make_model(spec):
    size = spec["input"] or DYNAMIC_SIZE
    input_name, nodes, initializers, outputs = LAYOUTS[spec["layout"]](spec["boxes"], size)
    declared = spec["input"] or ["height", "width"]
    image = helper.make_tensor_value_info(input_name, TensorProto.FLOAT, [1, 3, *declared])
    offset_nodes, offset_initializers = offset_from_input(input_name, spec.get("input_gain", 0.0))
    graph = helper.make_graph(offset_nodes + nodes, spec["name"], [image], outputs, offset_initializers + initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model, full_check=True)
    return model


def main():
    out_dir, spec = sys.argv[1], json.loads(sys.argv[2])
    for model_spec in spec:
        onnx.save(make_model(model_spec), f"{out_dir}/{model_spec['name']}.onnx")


if __name__ == "__main__":
    main()
