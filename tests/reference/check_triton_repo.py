#!/usr/bin/env python3
"""Reads a Triton model repository the way Triton does: each config.pbtxt parsed by protobuf's
text format into Triton's own ModelConfig message (tritonclient's model_config_pb2), then
checked against ONNX Runtime's reading of the model file in 1/.

  .venv-triton/bin/python tests/reference/check_triton_repo.py REPO

Prints a JSON object {model name: ModelConfig as JSON} for the caller's checks; exits non-zero
with the reason when a config does not parse or does not match its model.
"""

import json
import pathlib
import sys

import onnxruntime as ort
from google.protobuf import json_format, text_format
from tritonclient.grpc import model_config_pb2

TYPES = {
    "tensor(float)": "TYPE_FP32",
    "tensor(float16)": "TYPE_FP16",
    "tensor(int64)": "TYPE_INT64",
    "tensor(int32)": "TYPE_INT32",
}


def check(folder):
    config = text_format.Parse((folder / "config.pbtxt").read_text(), model_config_pb2.ModelConfig())
    if config.name != folder.name:
        sys.exit(f"{folder}: name {config.name!r} is not the folder's")
    session = ort.InferenceSession(str(folder / "1" / "model.onnx"), providers=["CPUExecutionProvider"])
    batched = config.max_batch_size > 0
    for declared, onnx in [(config.input, session.get_inputs()), (config.output, session.get_outputs())]:
        if [t.name for t in declared] != [t.name for t in onnx]:
            sys.exit(f"{folder}: tensors {[t.name for t in declared]} vs ONNX {[t.name for t in onnx]}")
        for tensor, arg in zip(declared, onnx):
            dims = [d if isinstance(d, int) else -1 for d in arg.shape]
            expected = dims[1:] if batched else dims
            if list(tensor.dims) != expected:
                sys.exit(f"{folder}: {tensor.name} dims {list(tensor.dims)} vs ONNX {dims}")
            type_name = model_config_pb2.DataType.Name(tensor.data_type)
            if type_name != TYPES[arg.type]:
                sys.exit(f"{folder}: {tensor.name} is {type_name}, ONNX {arg.type}")
    metadata = session.get_modelmeta().custom_metadata_map
    parameters = {k: v.string_value for k, v in config.parameters.items()}
    if parameters != metadata:
        sys.exit(f"{folder}: parameters {parameters} vs ONNX metadata {metadata}")
    return json.loads(json_format.MessageToJson(config))


def main():
    repository = pathlib.Path(sys.argv[1])
    configs = {folder.name: check(folder) for folder in sorted(repository.iterdir()) if folder.is_dir()}
    print(json.dumps(configs))


if __name__ == "__main__":
    main()
