#!/usr/bin/env python3
"""Build Sapiens-architecture ONNX models with random weights.

sapiens-stream needs models to test and benchmark against, but the official Sapiens weights
are large, licensed CC-BY-NC-4.0 and not published as ONNX. This script writes ONNX graphs
with the same structure, operator types and input/output contract as an export of the real
models (see docs/SAPIENS.md), filled with random weights drawn from a fixed seed:

  input  `input`  (batch, 3, 1024, 768) float, already normalised
  output `output` pose: (batch, K, 256, 192) K = 17 / 133 / 308; seg: (batch, 28, 512, 384);
                  depth: (batch, 1, 1024, 768); normal: (batch, 3, 512, 384)

THE OUTPUTS OF THESE MODELS ARE RANDOM: they are not poses, segmentations, depths or normals.
Every file says so in its metadata (`sapiens_stream.random_weights` = `true`).

The `tiny` preset is small enough for CI on a CPU; `0.3b` .. `2b` match the real sizes and
compute, for throughput work. `null` has the Sapiens input and outputs and almost no compute (a
nearest resize of the input to the output size, then a 1x1 convolution), to measure the
pipeline itself; its metadata says so (`sapiens_stream.arch` = `null`). Weights larger than a threshold (1 GiB by default) go to an
external-data file `<model>.onnx.data` beside the model, since protobuf stops at 2 GiB.
Output is deterministic: the same arguments give byte-identical files.

Only `onnx` and NumPy are needed to build; `onnxruntime` only for `--check`.

Usage:
  python engines/generate_models.py --out engines/models [--arch tiny] [--seed 0]
      [--tasks pose17,pose133,pose308,seg,depth,normal] [--check] [--force] [--fp16 [--fp16-io]]

--fp16 writes float16 weights and compute with float32 input and output (casts at both ends), as
engines/export_onnx.py --fp16 exports the real models: what the program runs on a GPU in half
precision. --fp16-io makes the input and output float16 too (a model the program refuses).
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import sys
import tempfile
import time
import zlib
from pathlib import Path
from typing import Callable

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

PRODUCER_NAME = "sapiens-stream generate_models.py"
PRODUCER_VERSION = "1"
META_PREFIX = "sapiens_stream."

INPUT_HEIGHT, INPUT_WIDTH = 1024, 768
PATCH_SIZE = 16
GRID_HEIGHT, GRID_WIDTH = INPUT_HEIGHT // PATCH_SIZE, INPUT_WIDTH // PATCH_SIZE  # 64 x 48
LAYER_NORM_EPS = 1e-6
INSTANCE_NORM_EPS = 1e-5  # torch.nn.InstanceNorm2d default
WEIGHT_STD = 0.02  # ViT-style init; keeps activations finite even through 48 random layers

DEFAULT_OPSET = 17  # what torch.onnx.export writes for these models; GELU becomes Erf
GELU_OP_OPSET = 20  # first opset with a native Gelu operator
# Lowest IR version that may import each opset; pinned so files do not change with the onnx package.
IR_VERSION_FOR_OPSET = {17: 8, 18: 8, 19: 9, 20: 9, 21: 10}

DEFAULT_EXTERNAL_DATA_THRESHOLD_MB = 1024
EXTERNAL_DATA_ALIGNMENT = 4096  # page-aligned offsets let onnxruntime memory-map the weights
INLINE_TENSOR_MAX_BYTES = 1024  # tiny tensors (shapes, scalars) always stay in the model file


NULL_ARCH = "null"


@dataclasses.dataclass(frozen=True)
class Arch:
    """Backbone and head widths of one model size."""

    name: str
    embed_dim: int
    num_layers: int
    num_heads: int
    ffn_dim: int
    head_channels: int  # pose, seg and normal heads
    depth_head_channels: int  # the depth head is half as wide


ARCHS = {
    a.name: a
    for a in (
        Arch("tiny", 32, 2, 2, 128, 16, 8),
        # No backbone and no head: see `null_body`.
        Arch(NULL_ARCH, 0, 0, 0, 0, 0, 0),
        Arch("0.3b", 1024, 24, 16, 4096, 768, 384),
        Arch("0.6b", 1280, 32, 16, 5120, 768, 384),
        Arch("1b", 1536, 40, 24, 6144, 768, 384),
        Arch("2b", 1920, 48, 32, 7680, 768, 384),
    )
}


@dataclasses.dataclass(frozen=True)
class Task:
    """One fine-tuned Sapiens model: the head layout and what it outputs."""

    name: str  # file-name part: pose17, seg, ...
    kind: str  # pose / seg / depth / normal
    out_channels: int
    num_deconvs: int
    num_convs: int
    patch_padding: int
    keypoints: int | None = None

    def head_channels(self, arch: Arch) -> int:
        return arch.depth_head_channels if self.kind == "depth" else arch.head_channels

    def output_shape(self, batch: int) -> tuple[int, int, int, int]:
        scale = 2**self.num_deconvs
        return (batch, self.out_channels, GRID_HEIGHT * scale, GRID_WIDTH * scale)


TASKS = {
    t.name: t
    for t in (
        Task("pose17", "pose", 17, 2, 2, 2, keypoints=17),
        Task("pose133", "pose", 133, 2, 2, 2, keypoints=133),
        Task("pose308", "pose", 308, 2, 2, 2, keypoints=308),
        Task("seg", "seg", 28, 3, 3, 0),
        Task("depth", "depth", 1, 4, 2, 0),
        Task("normal", "normal", 3, 3, 3, 2),
    )
}


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """Everything that determines the bytes of one generated model."""

    arch: Arch
    task: Task
    seed: int
    fp16: bool = False
    # With fp16: float16 input and output too (else float32, cast at both ends).
    fp16_io: bool = False
    opset: int = DEFAULT_OPSET

    @property
    def np_dtype(self) -> type:
        return np.float16 if self.fp16 else np.float32

    @property
    def io_np_dtype(self) -> type:
        return np.float16 if self.fp16 and self.fp16_io else np.float32

    @property
    def io_onnx_dtype(self) -> int:
        return TensorProto.FLOAT16 if self.fp16 and self.fp16_io else TensorProto.FLOAT

    @property
    def casts_io(self) -> bool:
        """float16 compute behind float32 input and output."""
        return self.fp16 and not self.fp16_io

    @property
    def file_name(self) -> str:
        suffix = ("_fp16io" if self.fp16_io else "_fp16") if self.fp16 else ""
        return f"sapiens_{self.arch.name}_{self.task.name}{suffix}.onnx"

    def metadata(self) -> dict[str, str]:
        meta = {
            "random_weights": "true",
            "task": self.task.kind,
            "arch": self.arch.name,
            "seed": str(self.seed),
            "dtype": "float16" if self.fp16 else "float32",
        }
        if self.fp16:
            meta["io_dtype"] = "float16" if self.fp16_io else "float32"
        if self.task.keypoints is not None:
            meta["keypoints"] = str(self.task.keypoints)
        if self.arch.name == NULL_ARCH:
            meta["compute"] = "null: nearest resize to the output size, then a 1x1 convolution"
        return {META_PREFIX + k: v for k, v in meta.items()}


# ---------------------------------------------------------------------------------------------
# Weight storage: where initializer bytes go.


class InlineWeights:
    """Keeps every weight inside the model protobuf."""

    def add(self, name: str, shape: tuple[int, ...], make: Callable[[], np.ndarray]):
        return numpy_helper.from_array(make(), name)


class CountingWeights:
    """Builds nothing; sums the bytes the weights would take, to choose inline vs external."""

    def __init__(self, itemsize: int) -> None:
        self.itemsize = itemsize
        self.total_bytes = 0

    def add(self, name: str, shape: tuple[int, ...], make: Callable[[], np.ndarray]):
        self.total_bytes += math.prod(shape) * self.itemsize
        return None


class ExternalWeights:
    """Streams large weights into a `.onnx.data` file, one tensor at a time.

    Writing as we go keeps peak memory at one tensor, which matters for the 2b model (8.6 GB
    in fp32); onnx's own save_as_external_data would hold the whole model in memory twice.
    """

    def __init__(self, data_file, location: str) -> None:
        self.data_file = data_file
        self.location = location  # file name relative to the model, as ONNX requires
        self.offset = 0

    def add(self, name: str, shape: tuple[int, ...], make: Callable[[], np.ndarray]):
        array = make()
        if array.nbytes <= INLINE_TENSOR_MAX_BYTES:
            return numpy_helper.from_array(array, name)
        padding = -self.offset % EXTERNAL_DATA_ALIGNMENT
        self.data_file.write(b"\0" * padding)
        self.offset += padding
        self.data_file.write(array.astype(array.dtype.newbyteorder("<"), copy=False).tobytes())  # ONNX is little-endian
        tensor = TensorProto(name=name, dims=array.shape, data_type=helper.np_dtype_to_tensor_dtype(array.dtype))
        tensor.data_location = TensorProto.EXTERNAL
        for key, value in (("location", self.location), ("offset", self.offset), ("length", array.nbytes)):
            tensor.external_data.add(key=key, value=str(value))
        self.offset += array.nbytes
        return tensor


# ---------------------------------------------------------------------------------------------
# Graph construction.


class GraphBuilder:
    """Collects nodes and initializers; every op returns the name of its output tensor."""

    def __init__(self, spec: ModelSpec, weights) -> None:
        self.spec = spec
        self.weights = weights
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[TensorProto] = []

    def _initializer(self, name: str, shape: tuple[int, ...], make: Callable[[], np.ndarray]) -> str:
        tensor = self.weights.add(name, shape, make)
        if tensor is not None:
            self.initializers.append(tensor)
        return name

    def random(self, name: str, shape: tuple[int, ...], std: float = WEIGHT_STD) -> str:
        """A trainable weight: N(0, std), seeded by (seed, name) so it is independent of build order."""
        dtype = self.spec.np_dtype
        seed = [self.spec.seed, zlib.crc32(name.encode())]

        def make() -> np.ndarray:
            rng = np.random.default_rng(seed)
            return (rng.standard_normal(shape, dtype=np.float32) * np.float32(std)).astype(dtype)

        return self._initializer(name, shape, make)

    def filled(self, name: str, shape: tuple[int, ...], value: float) -> str:
        """A constant float tensor in the model dtype (norm scales, GELU constants, ...)."""
        dtype = self.spec.np_dtype
        return self._initializer(name, shape, lambda: np.full(shape, value, dtype=dtype))

    def float32s(self, name: str, values: list[float]) -> str:
        """A float32 constant whatever the model dtype (Resize scales)."""
        array = np.array(values, dtype=np.float32)
        return self._initializer(name, array.shape, lambda: array)

    def int64s(self, name: str, values: list[int] | int) -> str:
        """A shape or index constant; a plain int gives a scalar."""
        array = np.array(values, dtype=np.int64)
        return self._initializer(name, array.shape, lambda: array)

    def op(self, op_type: str, inputs: list[str], name: str, **attrs) -> str:
        self.nodes.append(helper.make_node(op_type, inputs, [name], name=name, **attrs))
        return name


def layer_norm(g: GraphBuilder, x: str, prefix: str, channels: int) -> str:
    gamma = g.filled(f"{prefix}.weight", (channels,), 1.0)
    beta = g.filled(f"{prefix}.bias", (channels,), 0.0)
    return g.op("LayerNormalization", [x, gamma, beta], prefix, axis=-1, epsilon=LAYER_NORM_EPS)


def linear(g: GraphBuilder, x: str, prefix: str, in_dim: int, out_dim: int) -> str:
    # torch exports nn.Linear on 3-D input as MatMul with the transposed weight, then Add.
    weight = g.random(f"{prefix}.weight", (in_dim, out_dim))
    bias = g.random(f"{prefix}.bias", (out_dim,))
    y = g.op("MatMul", [x, weight], f"{prefix}.matmul")
    return g.op("Add", [y, bias], prefix)


def gelu(g: GraphBuilder, x: str, prefix: str) -> str:
    if g.spec.opset >= GELU_OP_OPSET:
        return g.op("Gelu", [x], prefix)
    # Exact GELU as torch.onnx.export writes it before opset 20: x * 0.5 * (1 + erf(x / sqrt 2)).
    y = g.op("Div", [x, g.filled(f"{prefix}.sqrt2", (), math.sqrt(2.0))], f"{prefix}.div")
    y = g.op("Erf", [y], f"{prefix}.erf")
    y = g.op("Add", [y, g.filled(f"{prefix}.one", (), 1.0)], f"{prefix}.add")
    y = g.op("Mul", [x, y], f"{prefix}.mul")
    return g.op("Mul", [y, g.filled(f"{prefix}.half", (), 0.5)], prefix)


def silu(g: GraphBuilder, x: str, prefix: str) -> str:
    # ONNX has no SiLU before opset 24 (Swish); torch exports it as x * sigmoid(x).
    return g.op("Mul", [x, g.op("Sigmoid", [x], f"{prefix}.sigmoid")], prefix)


def attention(g: GraphBuilder, x: str, prefix: str, arch: Arch) -> str:
    dim, heads = arch.embed_dim, arch.num_heads
    head_dim = dim // heads
    qkv = linear(g, x, f"{prefix}.qkv", dim, 3 * dim)
    # (B, N, 3C) -> (B, N, 3, heads, head_dim) -> (3, B, heads, N, head_dim)
    qkv = g.op("Reshape", [qkv, g.int64s(f"{prefix}.qkv_shape", [0, 0, 3, heads, head_dim])], f"{prefix}.qkv_split")
    qkv = g.op("Transpose", [qkv], f"{prefix}.qkv_heads", perm=[2, 0, 3, 1, 4])
    q, k, v = (
        g.op("Gather", [qkv, g.int64s(f"{prefix}.{part}_index", i)], f"{prefix}.{part}", axis=0)
        for i, part in enumerate("qkv")
    )
    k_t = g.op("Transpose", [k], f"{prefix}.k_transposed", perm=[0, 1, 3, 2])
    scores = g.op("MatMul", [q, k_t], f"{prefix}.scores")
    scores = g.op("Mul", [scores, g.filled(f"{prefix}.scale", (), head_dim**-0.5)], f"{prefix}.scores_scaled")
    probs = g.op("Softmax", [scores], f"{prefix}.softmax", axis=-1)
    y = g.op("MatMul", [probs, v], f"{prefix}.context")
    # (B, heads, N, head_dim) -> (B, N, C)
    y = g.op("Transpose", [y], f"{prefix}.context_tokens", perm=[0, 2, 1, 3])
    y = g.op("Reshape", [y, g.int64s(f"{prefix}.merge_shape", [0, 0, dim])], f"{prefix}.context_merged")
    return linear(g, y, f"{prefix}.proj", dim, dim)


def mlp(g: GraphBuilder, x: str, prefix: str, arch: Arch) -> str:
    y = linear(g, x, f"{prefix}.fc1", arch.embed_dim, arch.ffn_dim)
    y = gelu(g, y, f"{prefix}.gelu")
    return linear(g, y, f"{prefix}.fc2", arch.ffn_dim, arch.embed_dim)


def transformer_block(g: GraphBuilder, x: str, prefix: str, arch: Arch) -> str:
    y = attention(g, layer_norm(g, x, f"{prefix}.ln1", arch.embed_dim), f"{prefix}.attn", arch)
    x = g.op("Add", [x, y], f"{prefix}.residual_attn")
    y = mlp(g, layer_norm(g, x, f"{prefix}.ln2", arch.embed_dim), f"{prefix}.ffn", arch)
    return g.op("Add", [x, y], f"{prefix}.residual_ffn")


def backbone(g: GraphBuilder, image: str, arch: Arch, patch_padding: int) -> str:
    """ViT from pixels (B, 3, 1024, 768) to a feature map (B, C, 64, 48)."""
    dim = arch.embed_dim
    weight = g.random("backbone.patch_embed.weight", (dim, 3, PATCH_SIZE, PATCH_SIZE))
    bias = g.random("backbone.patch_embed.bias", (dim,))
    x = g.op(
        "Conv",
        [image, weight, bias],
        "backbone.patch_embed",
        kernel_shape=[PATCH_SIZE, PATCH_SIZE],
        strides=[PATCH_SIZE, PATCH_SIZE],
        pads=[patch_padding] * 4,
    )
    # (B, C, 64, 48) -> (B, 3072, C), then the learned absolute position embedding.
    x = g.op("Reshape", [x, g.int64s("backbone.flatten_shape", [0, dim, -1])], "backbone.patch_tokens_cn")
    x = g.op("Transpose", [x], "backbone.patch_tokens", perm=[0, 2, 1])
    pos_embed = g.random("backbone.pos_embed", (1, GRID_HEIGHT * GRID_WIDTH, dim))
    x = g.op("Add", [x, pos_embed], "backbone.tokens")
    for i in range(arch.num_layers):
        x = transformer_block(g, x, f"backbone.layers.{i}", arch)
    x = layer_norm(g, x, "backbone.ln_final", dim)
    x = g.op("Reshape", [x, g.int64s("backbone.grid_shape", [0, GRID_HEIGHT, GRID_WIDTH, dim])], "backbone.grid_nhwc")
    return g.op("Transpose", [x], "backbone.features", perm=[0, 3, 1, 2])


def instance_norm_silu(g: GraphBuilder, x: str, prefix: str, channels: int) -> str:
    # InstanceNorm2d(affine=False) exports with a constant unit scale and zero bias.
    scale = g.filled(f"{prefix}.norm.scale", (channels,), 1.0)
    bias = g.filled(f"{prefix}.norm.bias", (channels,), 0.0)
    x = g.op("InstanceNormalization", [x, scale, bias], f"{prefix}.norm", epsilon=INSTANCE_NORM_EPS)
    return silu(g, x, f"{prefix}.silu")


def deconv_block(g: GraphBuilder, x: str, prefix: str, in_ch: int, out_ch: int) -> str:
    """Upsample x2: ConvTranspose k4 s2 p1 without bias, InstanceNorm, SiLU."""
    weight = g.random(f"{prefix}.weight", (in_ch, out_ch, 4, 4))
    x = g.op("ConvTranspose", [x, weight], f"{prefix}.deconv", kernel_shape=[4, 4], strides=[2, 2], pads=[1, 1, 1, 1])
    return instance_norm_silu(g, x, prefix, out_ch)


def conv1x1(g: GraphBuilder, x: str, prefix: str, in_ch: int, out_ch: int, output_name: str | None = None) -> str:
    weight = g.random(f"{prefix}.weight", (out_ch, in_ch, 1, 1))
    bias = g.random(f"{prefix}.bias", (out_ch,))
    return g.op("Conv", [x, weight, bias], output_name or f"{prefix}.conv", kernel_shape=[1, 1])


def head(g: GraphBuilder, features: str, task: Task, arch: Arch, output: str) -> str:
    channels = task.head_channels(arch)
    x, in_ch = features, arch.embed_dim
    for i in range(task.num_deconvs):
        x, in_ch = deconv_block(g, x, f"head.deconv_layers.{i}", in_ch, channels), channels
    for i in range(task.num_convs):
        prefix = f"head.conv_layers.{i}"
        x = instance_norm_silu(g, conv1x1(g, x, prefix, channels, channels), prefix, channels)
    return conv1x1(g, x, "head.final_layer", channels, task.out_channels, output_name=output)


def null_body(g: GraphBuilder, image: str, task: Task, output: str) -> str:
    """The task's output shape from the image with almost no compute: a nearest resize of the
    image to the output size, then a 1x1 convolution to the output channels."""
    _, _, out_h, out_w = task.output_shape(1)
    scales = g.float32s("null.scales", [1.0, 1.0, out_h / INPUT_HEIGHT, out_w / INPUT_WIDTH])
    x = g.op("Resize", [image, "", scales], "null.resize", mode="nearest")
    return conv1x1(g, x, "null.conv", 3, task.out_channels, output_name=output)


def body(g: GraphBuilder, image: str, spec: ModelSpec, output: str) -> str:
    if spec.arch.name == NULL_ARCH:
        return null_body(g, image, spec.task, output)
    features = backbone(g, image, spec.arch, spec.task.patch_padding)
    return head(g, features, spec.task, spec.arch, output)


def build_model(spec: ModelSpec, weights) -> onnx.ModelProto:
    g = GraphBuilder(spec, weights)
    image = g.op("Cast", ["input"], "input.float16", to=TensorProto.FLOAT16) if spec.casts_io else "input"
    if spec.casts_io:
        g.op("Cast", [body(g, image, spec, "output.float16")], "output", to=TensorProto.FLOAT)
    else:
        body(g, image, spec, "output")

    image = helper.make_tensor_value_info("input", spec.io_onnx_dtype, ["batch", 3, INPUT_HEIGHT, INPUT_WIDTH])
    output = helper.make_tensor_value_info("output", spec.io_onnx_dtype, ["batch", *spec.task.output_shape(1)[1:]])
    graph = helper.make_graph(
        g.nodes,
        f"sapiens_{spec.arch.name}_{spec.task.name}",
        [image],
        [output],
        initializer=g.initializers,
        doc_string="Sapiens architecture with RANDOM weights: outputs are meaningless.",
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", spec.opset)],
        producer_name=PRODUCER_NAME,
        producer_version=PRODUCER_VERSION,
        doc_string="Generated by engines/generate_models.py for tests and benchmarks; not a trained model.",
    )
    model.ir_version = IR_VERSION_FOR_OPSET[spec.opset]
    helper.set_model_props(model, spec.metadata())
    return model


# ---------------------------------------------------------------------------------------------
# Files.


def count_weight_bytes(spec: ModelSpec) -> int:
    counter = CountingWeights(np.dtype(spec.np_dtype).itemsize)
    build_model(spec, counter)
    return counter.total_bytes


def external_data_path(model_path: Path) -> Path:
    return model_path.with_name(model_path.name + ".data")


def write_model(spec: ModelSpec, path: Path, external_threshold_bytes: int) -> None:
    """Write atomically (temp file + rename) so a concurrent reader never sees half a model."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data_path = external_data_path(path)
    tmp_model = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp_data = data_path.with_name(f".{data_path.name}.{os.getpid()}.tmp")
    try:
        if count_weight_bytes(spec) > external_threshold_bytes:
            with open(tmp_data, "wb") as data_file:
                model = build_model(spec, ExternalWeights(data_file, data_path.name))
            os.replace(tmp_data, data_path)
        else:
            model = build_model(spec, InlineWeights())
            data_path.unlink(missing_ok=True)  # a stale one from an earlier external build
        tmp_model.write_bytes(model.SerializeToString(deterministic=True))
        os.replace(tmp_model, path)
    finally:
        tmp_model.unlink(missing_ok=True)
        tmp_data.unlink(missing_ok=True)


def uses_external_data(model: onnx.ModelProto) -> bool:
    return any(t.data_location == TensorProto.EXTERNAL for t in model.graph.initializer)


def is_up_to_date(spec: ModelSpec, path: Path) -> bool:
    """True when `path` already holds this spec's model (same metadata and opset, data file present)."""
    if not path.exists():
        return False
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception:
        return False
    meta = {p.key: p.value for p in model.metadata_props}
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    if any(meta.get(k) != v for k, v in spec.metadata().items()) or opset != spec.opset:
        return False
    return not uses_external_data(model) or external_data_path(path).exists()


# ---------------------------------------------------------------------------------------------
# Checks (--check): onnx.checker, one onnxruntime inference, and a self-check of the generator.


def random_input(spec: ModelSpec, batch: int) -> np.ndarray:
    rng = np.random.default_rng(1234)
    return rng.standard_normal((batch, 3, INPUT_HEIGHT, INPUT_WIDTH), dtype=np.float32).astype(spec.io_np_dtype)


def run_onnxruntime(path: Path, image: np.ndarray) -> tuple[np.ndarray, float]:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    start = time.perf_counter()
    (output,) = session.run(["output"], {"input": image})
    return output, time.perf_counter() - start


def check_model(spec: ModelSpec, path: Path, batch: int) -> None:
    onnx.checker.check_model(str(path), full_check=True)  # by path, so external data is checked too
    model = onnx.load(str(path), load_external_data=False)
    meta = {p.key: p.value for p in model.metadata_props}
    assert meta == spec.metadata(), f"{path}: metadata {meta} != {spec.metadata()}"
    assert model.producer_name == PRODUCER_NAME
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch", "batch dim is not dynamic"

    output, seconds = run_onnxruntime(path, random_input(spec, batch))
    expected = spec.task.output_shape(batch)
    assert output.shape == expected, f"{path}: output shape {output.shape} != {expected}"
    assert output.dtype == spec.io_np_dtype, f"{path}: output dtype {output.dtype}"
    assert np.isfinite(output).all(), f"{path}: output has NaN or Inf"
    print(
        f"  check ok: output {output.shape} {output.dtype}, std {output.astype(np.float32).std():.3g}, "
        f"first run batch {batch}: {seconds * 1000:.0f} ms ({seconds * 1000 / batch:.0f} ms/image)"
    )


def self_check() -> None:
    """Determinism and the external-data path, on tiny models in a temporary folder."""
    spec = ModelSpec(ARCHS["tiny"], TASKS["pose17"], seed=7)
    first = build_model(spec, InlineWeights()).SerializeToString(deterministic=True)
    second = build_model(spec, InlineWeights()).SerializeToString(deterministic=True)
    assert first == second, "same seed gave different bytes"
    other_seed = build_model(dataclasses.replace(spec, seed=8), InlineWeights()).SerializeToString(deterministic=True)
    assert other_seed != first, "the seed does not change the weights"

    with tempfile.TemporaryDirectory() as tmp:
        inline_path, external_path = Path(tmp, "inline.onnx"), Path(tmp, "external.onnx")
        write_model(spec, inline_path, external_threshold_bytes=1 << 62)
        write_model(spec, external_path, external_threshold_bytes=0)
        assert inline_path.read_bytes() == first, "written file differs from the built model"
        assert not external_data_path(inline_path).exists()
        assert external_data_path(external_path).exists(), "no external data file written"
        assert uses_external_data(onnx.load(str(external_path), load_external_data=False))
        onnx.checker.check_model(str(external_path), full_check=True)
        image = random_input(spec, 1)
        inline_out, _ = run_onnxruntime(inline_path, image)
        external_out, _ = run_onnxruntime(external_path, image)
        assert np.array_equal(inline_out, external_out), "external-data model computes something else"
        assert is_up_to_date(spec, external_path)
        assert not is_up_to_date(dataclasses.replace(spec, seed=8), external_path)
    print("self-check ok: deterministic bytes, seed changes weights, external data loads and matches inline")


# ---------------------------------------------------------------------------------------------
# CLI.


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("engines/models"), help="output folder")
    parser.add_argument("--arch", choices=list(ARCHS), default="tiny")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tasks", default=",".join(TASKS), help=f"comma list of {','.join(TASKS)}")
    parser.add_argument("--fp16", action="store_true", help="float16 weights and compute, float32 input and output")
    parser.add_argument("--fp16-io", action="store_true", help="with --fp16: float16 input and output too")
    parser.add_argument(
        "--opset",
        type=int,
        choices=sorted(IR_VERSION_FOR_OPSET),
        default=DEFAULT_OPSET,
        help=f"ONNX opset; {GELU_OP_OPSET}+ uses the Gelu op instead of the Erf formula torch exports",
    )
    parser.add_argument(
        "--external-data-threshold-mb",
        type=float,
        default=DEFAULT_EXTERNAL_DATA_THRESHOLD_MB,
        help="weights larger than this go to <model>.onnx.data",
    )
    parser.add_argument("--force", action="store_true", help="rebuild even if an identical model exists")
    parser.add_argument("--check", action="store_true", help="self-check, onnx.checker and one inference per model")
    parser.add_argument("--check-batch", type=int, default=2, help="batch size of the --check inference")
    args = parser.parse_args(argv)
    if args.fp16_io and not args.fp16:
        parser.error("--fp16-io needs --fp16")
    args.tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    unknown = [t for t in args.tasks if t not in TASKS]
    if unknown:
        parser.error(f"unknown task(s) {unknown}; choose from {list(TASKS)}")
    return args


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    if args.check:
        self_check()
    threshold = int(args.external_data_threshold_mb * 2**20)
    for task_name in args.tasks:
        spec = ModelSpec(ARCHS[args.arch], TASKS[task_name], args.seed, args.fp16, args.fp16_io, args.opset)
        path = args.out / spec.file_name
        if not args.force and is_up_to_date(spec, path):
            print(f"{path}: up to date")
        else:
            start = time.perf_counter()
            write_model(spec, path, threshold)
            data_path = external_data_path(path)
            size = path.stat().st_size + (data_path.stat().st_size if data_path.exists() else 0)
            where = f" (weights in {data_path.name})" if data_path.exists() else ""
            print(f"{path}: written, {size / 2**20:.1f} MiB{where}, {time.perf_counter() - start:.1f} s")
        if args.check:
            check_model(spec, path, args.check_batch)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
