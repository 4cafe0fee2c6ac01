#!/usr/bin/env python3
"""A synthetic moving scene and two synthetic models for testing tracking crops.

  make_tracking_scene.py OUT_DIR FRAMES

OUT_DIR/frames/frame_NNN.png: 640 x 360, black, a "person" of four discs (white head, red and
green hands, blue feet; 90 x 150 px) walking 3 px a frame to the right.

OUT_DIR/blob_yolo.onnx: a person detector in ultralytics' layout ('images' 1x3x640x640 in 0..1,
'output0' 1x84x8400): one box around every pixel brighter than 0.7 in any channel (the
letterbox's grey 114/255 and the black background are not), class person, score 0.9.

OUT_DIR/colour_pose17.onnx: a pose model with the Sapiens contract ('input' Nx3x1024x768
normalised, 'output' Nx17x256x192) whose heatmap k responds to one disc colour (red, green, blue,
white for k % 4), blurred: it finds the discs wherever the crop puts them, as a real model finds
joints, so its keypoints do not depend on the crop. Both are synthetic (no weights learnt).
"""
import sys
from pathlib import Path

import cv2
import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17
WIDTH, HEIGHT = 640, 360
DISCS = [((0, -60), (255, 255, 255)), ((-40, -10), (255, 0, 0)), ((40, -10), (0, 255, 0)), ((0, 60), (0, 0, 255))]
MEAN = np.array([123.675, 116.28, 103.53], np.float32)
STD = np.array([58.395, 57.12, 57.375], np.float32)


def frames(out: Path, count: int) -> None:
    (out / "frames").mkdir(parents=True, exist_ok=True)
    for k in range(count):
        image = np.zeros((HEIGHT, WIDTH, 3), np.uint8)
        cx, cy = 120 + 3 * k, 180
        for (dx, dy), rgb in DISCS:
            cv2.circle(image, (cx + dx, cy + dy), 14, rgb[::-1], -1, lineType=cv2.LINE_AA)
        cv2.imwrite(str(out / "frames" / f"frame_{k:03d}.png"), image)


def const(name, array):
    return numpy_helper.from_array(np.asarray(array), name)


def blob_detector(path: Path) -> None:
    anchors = 8400
    nodes = [
        helper.make_node("ReduceMax", ["images"], ["brightest"], axes=[1], keepdims=0),
        helper.make_node("ReduceMax", ["brightest"], ["columns"], axes=[1], keepdims=0),
        helper.make_node("ReduceMax", ["brightest"], ["rows"], axes=[2], keepdims=0),
    ]
    for axis in ("columns", "rows"):
        nodes += [
            helper.make_node("Greater", [axis, "threshold"], [f"{axis}_on"]),
            helper.make_node("Cast", [f"{axis}_on"], [f"{axis}_mask"], to=TensorProto.FLOAT),
            helper.make_node("ArgMax", [f"{axis}_mask"], [f"{axis}_first"], axis=1, keepdims=0),
            helper.make_node("ArgMax", [f"{axis}_mask"], [f"{axis}_last"], axis=1, keepdims=0, select_last_index=1),
            helper.make_node("Cast", [f"{axis}_first"], [f"{axis}_low"], to=TensorProto.FLOAT),
            helper.make_node("Cast", [f"{axis}_last"], [f"{axis}_high0"], to=TensorProto.FLOAT),
            helper.make_node("Add", [f"{axis}_high0", "one"], [f"{axis}_high"]),
            helper.make_node("Add", [f"{axis}_low", f"{axis}_high"], [f"{axis}_sum"]),
            helper.make_node("Mul", [f"{axis}_sum", "half"], [f"{axis}_centre"]),
            helper.make_node("Sub", [f"{axis}_high", f"{axis}_low"], [f"{axis}_size"]),
        ]
    nodes += [
        helper.make_node(
            "Concat",
            ["columns_centre", "rows_centre", "columns_size", "rows_size", "score", "other_classes"],
            ["column"],
            axis=0,
        ),
        helper.make_node("Reshape", ["column", "column_shape"], ["anchor"]),
        helper.make_node("Concat", ["anchor", "spare_anchors"], ["output0"], axis=2),
    ]
    initializers = [
        const("threshold", np.float32(0.7)),
        const("one", np.float32(1.0)),
        const("half", np.float32(0.5)),
        const("score", np.array([0.9], np.float32)),
        const("other_classes", np.zeros(79, np.float32)),
        const("column_shape", np.array([1, 84, 1], np.int64)),
        const("spare_anchors", np.zeros((1, 84, anchors - 1), np.float32)),
    ]
    graph = helper.make_graph(
        nodes,
        "blob_yolo",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, 640, 640])],
        [helper.make_tensor_value_info("output0", TensorProto.FLOAT, [1, 84, anchors])],
        initializers,
    )
    save(graph, path, {})


def colour_pose(path: Path) -> None:
    # Per output channel, a 1x1 convolution on the normalised input that is large on one disc
    # colour and small elsewhere; white is the sum of all three.
    # In pixel units p / 255: w . p / 255 - margin, that is (w * std / 255) . n + (w . mean / 255
    # - margin) on the normalised input n; times a gain so that peaks score well above 0.3.
    gain = 2.0
    weights = np.zeros((17, 3, 1, 1), np.float32)
    bias = np.zeros(17, np.float32)
    for k in range(17):
        colour = k % 4
        if colour < 3:
            # The colour's channel less half the others: red 1, white 0, black 0 (+ margin).
            w, margin = np.full(3, -0.5, np.float32), 0.2
            w[colour] = 1.0
        else:
            # The mean of the channels, above a margin no pure primary reaches.
            w, margin = np.full(3, 1.0 / 3.0, np.float32), 0.6
        weights[k, :, 0, 0] = gain * w * STD / 255.0
        bias[k] = gain * (float(w @ MEAN) / 255.0 - margin)
    nodes = [
        helper.make_node("AveragePool", ["input"], ["small"], kernel_shape=[4, 4], strides=[4, 4]),
        helper.make_node("Conv", ["small", "weights", "bias"], ["response"]),
        helper.make_node("Relu", ["response"], ["positive"]),
        helper.make_node("AveragePool", ["positive"], ["blurred"], kernel_shape=[5, 5], strides=[1, 1], pads=[2, 2, 2, 2]),
        helper.make_node("AveragePool", ["blurred"], ["output"], kernel_shape=[5, 5], strides=[1, 1], pads=[2, 2, 2, 2]),
    ]
    graph = helper.make_graph(
        nodes,
        "colour_pose17",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, 1024, 768])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["N", 17, 256, 192])],
        [const("weights", weights), const("bias", bias)],
    )
    save(graph, path, {"sapiens_stream.random_weights": "true", "sapiens_stream.task": "pose"})


def save(graph, path: Path, metadata) -> None:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="make_tracking_scene.py")
    model.ir_version = 8
    for key, value in metadata.items():
        model.metadata_props.append(onnx.StringStringEntryProto(key=key, value=value))
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def main() -> None:
    out, count = Path(sys.argv[1]), int(sys.argv[2])
    frames(out, count)
    blob_detector(out / "blob_yolo.onnx")
    colour_pose(out / "colour_pose17.onnx")


if __name__ == "__main__":
    main()
