#!/usr/bin/env python3
"""Build Sapiens- and Sapiens2-architecture ONNX models with random weights.

sapiens-stream needs models to test and benchmark against, but the official Sapiens weights
are large, licensed CC-BY-NC-4.0 and not published as ONNX. This script writes ONNX graphs
with the same structure, operator types and input/output contract as an export of the real
models (see docs/SAPIENS.md), filled with random weights drawn from a fixed seed:

  input  `input`  (batch, 3, 1024, 768) float, already normalised
  output `output` pose: (batch, K, 256, 192) K = 17 / 133 / 308; seg: (batch, 28, 512, 384);
                  depth: (batch, 1, 1024, 768); normal: (batch, 3, 512, 384)

`--family sapiens2` writes Sapiens2 models instead (`sapiens2_<arch>_<task>.onnx`, metadata
`sapiens_stream.family` = `sapiens2`), computing exactly what the PyTorch module of
engines/sapiens2.py computes with the same weights (its export's float32 rotation, rope="fp32"),
with the same input and these outputs:

  output `output` pose: (batch, 308, 256, 192); seg: (batch, 29, 1024, 768);
                  normal: (batch, 3, 1024, 768); pointmap: (batch, 4, 1024, 768), the point map
                  and its scale repeated as a fourth plane

Their initializers are named by that module's state_dict: `<key>` holds the entry `<key>` as is,
except that an nn.Linear applied to tokens is a MatMul with its weight transposed, stored (in,
out) as `<module>.weight_t`. Every other initializer is a constant that is no state_dict entry:
int64 shapes, slice bounds and axes, RMSNorm `*.eps`, attention `*.attn.scale`, InstanceNorm
`*.norm.scale` / `*.norm.bias` (ones and zeros), and the RoPE tables `backbone.rope_sin` /
`backbone.rope_cos`. engines/check_sapiens2_generator.py loads the weights into the PyTorch
module by this rule and compares the outputs.

THE OUTPUTS OF THESE MODELS ARE RANDOM: they are not poses, segmentations, depths, normals or
point maps.
Every file says so in its metadata (`sapiens_stream.random_weights` = `true`).

The `tiny` preset is small enough for CI on a CPU; `0.3b` .. `2b` (Sapiens2: `0.4b` .. `5b`) match
the real sizes and compute, for throughput work. `null` has the Sapiens input and outputs and almost no compute (a
nearest resize of the input to the output size, then a 1x1 convolution), to measure the
pipeline itself; its metadata says so (`sapiens_stream.arch` = `null`). Weights larger than a threshold (1 GiB by default) go to an
external-data file `<model>.onnx.data` beside the model, since protobuf stops at 2 GiB.
Output is deterministic: the same arguments give byte-identical files.

Only `onnx` and NumPy are needed to build; `onnxruntime` only for `--check`.

Usage:
  python engines/generate_models.py --out engines/models [--arch tiny] [--seed 0]
      [--tasks pose17,pose133,pose308,seg,depth,normal] [--check] [--force] [--fp16 [--fp16-io]]
      [--fused-attention]
  python engines/generate_models.py --family sapiens2 --out engines/models [--arch tiny]
      [--tasks pose308,seg,normal,pointmap] ...  (arch tiny, 0.4b, 0.8b, 1b or 5b)

--fp16 writes float16 weights and compute with float32 input and output (casts at both ends), as
engines/export_onnx.py --fp16 exports the real models: what the program runs on a GPU in half
precision. --fp16-io makes the input and output float16 too (a model the program refuses).

--fused-attention writes each block's attention core as ONNX Runtime's fused
com.microsoft.MultiHeadAttention (engines/fuse_attention.py; file name suffix `_mha`, metadata
`sapiens_stream.attention`): for ONNX Runtime's CPU and CUDA providers only, not TensorRT; faster on
the GPU with --fp16 (flash attention), slower in float32.
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
from typing import Callable, ClassVar

import fuse_attention
import numpy as np
import onnx
import sapiens2_arch
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
REDUCE_AXES_INPUT_OPSET = 18  # ReduceMean takes its axes as an input, no longer an attribute
# Lowest IR version that may import each opset; pinned so files do not change with the onnx package.
IR_VERSION_FOR_OPSET = {17: 8, 18: 8, 19: 9, 20: 9, 21: 10}

DEFAULT_EXTERNAL_DATA_THRESHOLD_MB = 1024
EXTERNAL_DATA_ALIGNMENT = 4096  # page-aligned offsets let onnxruntime memory-map the weights
INLINE_TENSOR_MAX_BYTES = 1024  # tiny tensors (shapes, scalars) always stay in the model file


NULL_ARCH = "null"

# Model families: the file-name prefix, and for Sapiens2 the metadata `family`.
SAPIENS, SAPIENS2 = "sapiens", "sapiens2"


@dataclasses.dataclass(frozen=True)
class Arch:
    """Backbone and head widths of one model size."""

    family: ClassVar[str] = SAPIENS
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


# ---------------------------------------------------------------------------------------------
# Sapiens2 sizes and tasks: the tables engines/sapiens2.py builds its PyTorch model from.

# RMSNorm, QK-norm and LayerScale weights are 1 + N(0, 0.1), not the 1 and 1e-4 training starts
# from: every one of them then changes the output, so the cross-check with PyTorch sees them all.
SAPIENS2_SCALE_STD = 0.1


@dataclasses.dataclass(frozen=True)
class Sapiens2Task:
    """One Sapiens2 task model: its head and output (sapiens2.output_shape)."""

    name: str  # file-name part: pose308, seg, normal, pointmap
    kind: str  # the task in sapiens2.py and in the metadata: pose / seg / normal / pointmap
    out_channels: int
    downsample: int  # the output is the input size divided by this
    keypoints: int | None = None

    def output_shape(self, batch: int) -> tuple[int, int, int, int]:
        return (batch, self.out_channels, INPUT_HEIGHT // self.downsample, INPUT_WIDTH // self.downsample)


SAPIENS2_TASKS = {
    t.name: t
    for t in (
        Sapiens2Task("pose308", "pose", sapiens2_arch.KEYPOINTS, 4, keypoints=sapiens2_arch.KEYPOINTS),
        Sapiens2Task("seg", "seg", sapiens2_arch.SEG_CLASSES, 1),
        Sapiens2Task("normal", "normal", 3, 1),
        # The canonical point map (3 channels) and its scale repeated as a fourth plane.
        Sapiens2Task("pointmap", "pointmap", 4, 1),
    )
}

FAMILIES = {SAPIENS: (ARCHS, TASKS), SAPIENS2: (sapiens2_arch.ARCHS, SAPIENS2_TASKS)}


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """Everything that determines the bytes of one generated model."""

    arch: Arch | sapiens2_arch.Arch
    task: Task | Sapiens2Task
    seed: int
    fp16: bool = False
    # With fp16: float16 input and output too (else float32, cast at both ends).
    fp16_io: bool = False
    opset: int = DEFAULT_OPSET
    # Attention cores as com.microsoft.MultiHeadAttention (engines/fuse_attention.py).
    fused_attention: bool = False

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
    def family(self) -> str:
        return self.arch.family

    @property
    def file_name(self) -> str:
        suffix = ("_fp16io" if self.fp16_io else "_fp16") if self.fp16 else ""
        suffix += "_mha" if self.fused_attention else ""
        return f"{self.family}_{self.arch.name}_{self.task.name}{suffix}.onnx"

    @property
    def blocks(self) -> int:
        """Transformer blocks: one attention core each."""
        return self.arch.layers if self.family == SAPIENS2 else self.arch.num_layers

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
        # Sapiens files predate the key and stay byte for byte what they were.
        if self.family != SAPIENS:
            meta["family"] = self.family
        # Likewise only fused files say how they compute attention.
        if self.fused_attention:
            meta["attention"] = fuse_attention.FUSED_OP_NAME
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

    def random(self, name: str, shape: tuple[int, ...], std: float = WEIGHT_STD, mean: float = 0.0) -> str:
        """A trainable weight: N(mean, std), seeded by (seed, name) so it is independent of build order."""
        dtype = self.spec.np_dtype
        seed = [self.spec.seed, zlib.crc32(name.encode())]

        def make() -> np.ndarray:
            rng = np.random.default_rng(seed)
            values = rng.standard_normal(shape, dtype=np.float32) * np.float32(std)
            if mean:  # only where asked, so every zero-mean weight keeps its exact bits
                values = values + np.float32(mean)
            return values.astype(dtype)

        return self._initializer(name, shape, make)

    def computed(self, name: str, shape: tuple[int, ...], make: Callable[[], np.ndarray]) -> str:
        """A precomputed float constant (the RoPE tables), in the model dtype."""
        dtype = self.spec.np_dtype
        return self._initializer(name, shape, lambda: make().astype(dtype))

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


def linear(g: GraphBuilder, x: str, prefix: str, in_dim: int, out_dim: int, weight_name: str = "weight") -> str:
    # torch exports nn.Linear on 3-D input as MatMul with the transposed weight, then Add.
    weight = g.random(f"{prefix}.{weight_name}", (in_dim, out_dim))
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


# ---------------------------------------------------------------------------------------------
# Sapiens2 graph: the ops engines/sapiens2.py's module exports to, named by its state_dict.


def bfloat16_round(values: np.ndarray) -> np.ndarray:
    """float32 values rounded to the nearest bfloat16 (ties to even), kept as float32: what a
    torch bfloat16 op does with the float32 result it computes."""
    bits = np.asarray(values, dtype=np.float32).view(np.uint32).astype(np.uint64)
    bits = (bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000
    return bits.astype(np.uint32).view(np.float32)


def bfloat16_of_exact(values: np.ndarray) -> np.ndarray:
    """A float64 result (pow, sin, cos) as a bfloat16 op returns it: rounded to the float32 that
    torch computes, then to bfloat16."""
    return bfloat16_round(values.astype(np.float32))


def rope_periods_bf16(head_dim: int) -> np.ndarray:
    """sapiens2.rope_periods: 100 ** (2k / (head_dim // 2)) for k < head_dim // 4, every op in bfloat16."""
    k = bfloat16_round(np.arange(head_dim // 4, dtype=np.float32))
    exponents = bfloat16_round(bfloat16_round(np.float32(2) * k) / np.float32(head_dim // 2))
    return bfloat16_of_exact(np.power(sapiens2_arch.ROPE_BASE, exponents.astype(np.float64)))


def rope_table_bf16(head_dim: int) -> tuple[np.ndarray, np.ndarray]:
    """sapiens2.rope_table(rope_periods(head_dim), grid): (sin, cos), each (3072, head_dim), with
    every bfloat16 op emulated, so the float32 tables equal the ones the export casts to float32."""
    periods = rope_periods_bf16(head_dim)
    ys, xs = (
        bfloat16_round(bfloat16_round(np.arange(0.5, n, dtype=np.float32)) / np.float32(n))
        for n in (GRID_HEIGHT, GRID_WIDTH)
    )
    coords = np.stack(np.meshgrid(ys, xs, indexing="ij"), -1).reshape(-1, 2)
    coords = bfloat16_round(bfloat16_round(np.float32(2.0) * coords) - np.float32(1.0))
    # `2 * math.pi * coords` is (2 pi) * coords: torch multiplies by the Python float as a float32,
    # not rounded to bfloat16 first.
    angles = bfloat16_round(np.float32(2 * math.pi) * coords)
    angles = bfloat16_round(angles[:, :, None] / periods[None, None, :])
    angles = np.tile(angles.reshape(len(angles), -1), 2).astype(np.float64)  # [y..., x...] twice: rotate-half layout
    return bfloat16_of_exact(np.sin(angles)), bfloat16_of_exact(np.cos(angles))


def token_linear(g: GraphBuilder, x: str, prefix: str, in_dim: int, out_dim: int) -> str:
    """nn.Linear on (B, N, C): its weight transposed, (in, out), is `<prefix>.weight_t`."""
    return linear(g, x, prefix, in_dim, out_dim, weight_name="weight_t")


def gemm_linear(g: GraphBuilder, x: str, prefix: str, in_dim: int, out_dim: int) -> str:
    # torch exports nn.Linear on 2-D input as Gemm with the (out, in) weight as it is.
    weight = g.random(f"{prefix}.weight", (out_dim, in_dim))
    bias = g.random(f"{prefix}.bias", (out_dim,))
    return g.op("Gemm", [x, weight, bias], prefix, transB=1)


def rms_norm(g: GraphBuilder, x: str, prefix: str, dim: int) -> str:
    """x * rsqrt(mean(x^2, last axis) + eps) * weight, as sapiens2.rms_norm exports (ONNX has no
    RMSNormalization before opset 23)."""
    weight = g.random(f"{prefix}.weight", (dim,), std=SAPIENS2_SCALE_STD, mean=1.0)
    square = g.op("Mul", [x, x], f"{prefix}.square")
    if g.spec.opset >= REDUCE_AXES_INPUT_OPSET:
        mean = g.op("ReduceMean", [square, g.int64s(f"{prefix}.axes", [-1])], f"{prefix}.mean", keepdims=1)
    else:
        mean = g.op("ReduceMean", [square], f"{prefix}.mean", axes=[-1], keepdims=1)
    y = g.op("Add", [mean, g.filled(f"{prefix}.eps", (), sapiens2_arch.NORM_EPS)], f"{prefix}.mean_eps")
    y = g.op("Reciprocal", [g.op("Sqrt", [y], f"{prefix}.sqrt")], f"{prefix}.rsqrt")
    y = g.op("Mul", [x, y], f"{prefix}.normalized")
    return g.op("Mul", [y, weight], prefix)


def slice_axis(g: GraphBuilder, x: str, name: str, axis: int, start: int, end: int) -> str:
    """x[start:end] along `axis`."""
    bounds = [g.int64s(f"{name}.{part}", [value]) for part, value in (("starts", start), ("ends", end), ("axes", axis))]
    return g.op("Slice", [x, *bounds], name)


def split_heads(g: GraphBuilder, x: str, name: str, heads: int, head_dim: int) -> str:
    """(B, N, heads * head_dim) -> (B, heads, N, head_dim)."""
    x = g.op("Reshape", [x, g.int64s(f"{name}.shape", [0, 0, heads, head_dim])], f"{name}.split")
    return g.op("Transpose", [x], name, perm=[0, 2, 1, 3])


def repeat_kv(g: GraphBuilder, x: str, name: str, heads: int, kv_heads: int, head_dim: int) -> str:
    """(B, kv_heads, N, head_dim) -> (B, heads, N, head_dim), key/value head j serving query heads
    j*r .. j*r+r-1 (repeat_interleave), by Unsqueeze, Expand and Reshape as sapiens2.repeat_kv."""
    repeats = heads // kv_heads
    if repeats == 1:
        return x
    x = g.op("Unsqueeze", [x, g.int64s(f"{name}.axes", [2])], f"{name}.unsqueezed")
    x = g.op("Expand", [x, g.int64s(f"{name}.expand_shape", [1, 1, repeats, 1, 1])], f"{name}.expanded")
    return g.op("Reshape", [x, g.int64s(f"{name}.shape", [0, heads, -1, head_dim])], name)


def apply_rope(g: GraphBuilder, x: str, name: str, rope: tuple[str, str], head_dim: int) -> str:
    """Rotates the patch tokens of (B, heads, N, head_dim), rotate-half convention:
    x * cos + [-second half, first half] * sin; the class and storage tokens pass through."""
    sin, cos = rope
    extra = slice_axis(g, x, f"{name}.extra", 2, 0, sapiens2_arch.EXTRA_TOKENS)
    patches = slice_axis(
        g, x, f"{name}.patches", 2, sapiens2_arch.EXTRA_TOKENS, sapiens2_arch.EXTRA_TOKENS + GRID_HEIGHT * GRID_WIDTH
    )
    half = head_dim // 2
    first = slice_axis(g, patches, f"{name}.first_half", -1, 0, half)
    second = slice_axis(g, patches, f"{name}.second_half", -1, half, head_dim)
    second = g.op("Neg", [second], f"{name}.second_half_negated")
    rotated_half = g.op("Concat", [second, first], f"{name}.rotate_half", axis=-1)
    with_cos = g.op("Mul", [patches, cos], f"{name}.times_cos")
    with_sin = g.op("Mul", [rotated_half, sin], f"{name}.times_sin")
    rotated = g.op("Add", [with_cos, with_sin], f"{name}.rotated")
    return g.op("Concat", [extra, rotated], name, axis=2)


def grouped_query_attention(
    g: GraphBuilder, x: str, prefix: str, arch: sapiens2_arch.Arch, block: int, rope: tuple[str, str]
) -> str:
    dim, heads, head_dim = arch.embed_dim, arch.heads, arch.head_dim
    kv_heads = arch.kv_heads(block)
    q = split_heads(g, token_linear(g, x, f"{prefix}.wq", dim, dim), f"{prefix}.q_heads", heads, head_dim)
    k = split_heads(
        g, token_linear(g, x, f"{prefix}.wk", dim, kv_heads * head_dim), f"{prefix}.k_heads", kv_heads, head_dim
    )
    v = split_heads(
        g, token_linear(g, x, f"{prefix}.wv", dim, kv_heads * head_dim), f"{prefix}.v_heads", kv_heads, head_dim
    )
    q = rms_norm(g, q, f"{prefix}.q_norm", head_dim)
    k = rms_norm(g, k, f"{prefix}.k_norm", head_dim)
    k = repeat_kv(g, k, f"{prefix}.k_repeated", heads, kv_heads, head_dim)
    v = repeat_kv(g, v, f"{prefix}.v_repeated", heads, kv_heads, head_dim)
    q = apply_rope(g, q, f"{prefix}.q_rope", rope, head_dim)
    k = apply_rope(g, k, f"{prefix}.k_rope", rope, head_dim)
    k_t = g.op("Transpose", [k], f"{prefix}.k_transposed", perm=[0, 1, 3, 2])
    scores = g.op("MatMul", [q, k_t], f"{prefix}.scores")
    scores = g.op("Mul", [scores, g.filled(f"{prefix}.scale", (), head_dim**-0.5)], f"{prefix}.scores_scaled")
    probs = g.op("Softmax", [scores], f"{prefix}.softmax", axis=-1)
    y = g.op("MatMul", [probs, v], f"{prefix}.context")
    # (B, heads, N, head_dim) -> (B, N, D)
    y = g.op("Transpose", [y], f"{prefix}.context_tokens", perm=[0, 2, 1, 3])
    y = g.op("Reshape", [y, g.int64s(f"{prefix}.merge_shape", [0, 0, dim])], f"{prefix}.context_merged")
    y = token_linear(g, y, f"{prefix}.proj", dim, dim)
    gamma = g.random(f"{prefix}.gamma.weight", (dim,), std=SAPIENS2_SCALE_STD, mean=1.0)
    return g.op("Mul", [y, gamma], f"{prefix}.gamma")


def swiglu(g: GraphBuilder, x: str, prefix: str, arch: sapiens2_arch.Arch) -> str:
    """w3(silu(gate) * value), gate and value the first and second half of w12(x)."""
    hidden = arch.ffn_dim
    y = token_linear(g, x, f"{prefix}.w12", arch.embed_dim, 2 * hidden)
    gate = silu(g, slice_axis(g, y, f"{prefix}.gate", -1, 0, hidden), f"{prefix}.gate_silu")
    value = slice_axis(g, y, f"{prefix}.value", -1, hidden, 2 * hidden)
    y = g.op("Mul", [gate, value], f"{prefix}.gated")
    return token_linear(g, y, f"{prefix}.w3", hidden, arch.embed_dim)


def sapiens2_block(g: GraphBuilder, x: str, prefix: str, arch: sapiens2_arch.Arch, block: int, rope: tuple[str, str]) -> str:
    y = grouped_query_attention(g, rms_norm(g, x, f"{prefix}.ln1", arch.embed_dim), f"{prefix}.attn", arch, block, rope)
    x = g.op("Add", [x, y], f"{prefix}.residual_attn")
    y = swiglu(g, rms_norm(g, x, f"{prefix}.ln2", arch.embed_dim), f"{prefix}.ffn", arch)
    return g.op("Add", [x, y], f"{prefix}.residual_ffn")


def sapiens2_backbone(g: GraphBuilder, image: str, arch: sapiens2_arch.Arch) -> str:
    """Pixels (B, 3, 1024, 768) to a feature map (B, D, 64, 48)."""
    dim, patches = arch.embed_dim, GRID_HEIGHT * GRID_WIDTH
    weight = g.random("backbone.patch_embed.projection.weight", (dim, 3, PATCH_SIZE, PATCH_SIZE))
    bias = g.random("backbone.patch_embed.projection.bias", (dim,))
    x = g.op(
        "Conv", [image, weight, bias], "backbone.patch_embed", kernel_shape=[PATCH_SIZE] * 2, strides=[PATCH_SIZE] * 2
    )
    # (B, D, 64, 48) -> (B, 3072, D), behind the class and storage tokens expanded to the batch.
    x = g.op("Reshape", [x, g.int64s("backbone.flatten_shape", [0, dim, -1])], "backbone.patch_tokens_cn")
    x = g.op("Transpose", [x], "backbone.patch_tokens", perm=[0, 2, 1])
    cls_token = g.random("backbone.cls_token", (1, 1, dim))
    storage_tokens = g.random("backbone.storage_tokens", (1, sapiens2_arch.STORAGE_TOKENS, dim))
    extra = g.op("Concat", [cls_token, storage_tokens], "backbone.extra_tokens", axis=1)
    batch = g.op("Shape", [image], "backbone.batch", start=0, end=1)
    extra_tail = g.int64s("backbone.extra_tokens_tail", [sapiens2_arch.EXTRA_TOKENS, dim])
    extra_shape = g.op("Concat", [batch, extra_tail], "backbone.extra_tokens_shape", axis=0)
    extra = g.op("Expand", [extra, extra_shape], "backbone.extra_tokens_expanded")
    x = g.op("Concat", [extra, x], "backbone.tokens", axis=1)
    rope = (
        g.computed("backbone.rope_sin", (patches, arch.head_dim), lambda: rope_table_bf16(arch.head_dim)[0]),
        g.computed("backbone.rope_cos", (patches, arch.head_dim), lambda: rope_table_bf16(arch.head_dim)[1]),
    )
    for i in range(arch.layers):
        x = sapiens2_block(g, x, f"backbone.blocks.{i}", arch, i, rope)
    x = rms_norm(g, x, "backbone.ln1", dim)
    x = slice_axis(g, x, "backbone.patch_outputs", 1, sapiens2_arch.EXTRA_TOKENS, sapiens2_arch.EXTRA_TOKENS + patches)
    x = g.op("Reshape", [x, g.int64s("backbone.grid_shape", [0, GRID_HEIGHT, GRID_WIDTH, dim])], "backbone.grid_nhwc")
    return g.op("Transpose", [x], "backbone.features", perm=[0, 3, 1, 2])


def conv(
    g: GraphBuilder,
    x: str,
    prefix: str,
    in_ch: int,
    out_ch: int,
    kernel: int,
    stride: int = 1,
    output_name: str | None = None,
) -> str:
    """nn.Conv2d(in_ch, out_ch, kernel, stride, padding=kernel // 2) with bias."""
    weight = g.random(f"{prefix}.weight", (out_ch, in_ch, kernel, kernel))
    bias = g.random(f"{prefix}.bias", (out_ch,))
    return g.op(
        "Conv",
        [x, weight, bias],
        output_name or f"{prefix}.conv",
        kernel_shape=[kernel] * 2,
        strides=[stride] * 2,
        pads=[kernel // 2] * 4,
    )


# The heads are nn.Sequential stacks: weights are named by the index of their module, and an
# InstanceNorm2d's constants by its own index. Each layer of a conv or deconv stack is three
# modules: the convolution at 3i, InstanceNorm2d at 3i + 1, SiLU at 3i + 2.


def deconv_stack(g: GraphBuilder, x: str, prefix: str, in_ch: int, widths: tuple[int, ...]) -> str:
    """sapiens2.deconv_stack: x2 upsampling by ConvTranspose k4 s2 p1 without bias, IN, SiLU."""
    for i, width in enumerate(widths):
        weight = g.random(f"{prefix}.{3 * i}.weight", (in_ch, width, 4, 4))
        x = g.op(
            "ConvTranspose", [x, weight], f"{prefix}.{3 * i}.deconv", kernel_shape=[4, 4], strides=[2, 2], pads=[1] * 4
        )
        x, in_ch = instance_norm_silu(g, x, f"{prefix}.{3 * i + 1}", width), width
    return x


def conv_stack(
    g: GraphBuilder, x: str, prefix: str, in_ch: int, widths: tuple[int, ...], kernel: int, stride: int = 1
) -> str:
    """sapiens2.conv_stack: Conv, IN, SiLU per width."""
    for i, width in enumerate(widths):
        x = conv(g, x, f"{prefix}.{3 * i}", in_ch, width, kernel, stride)
        x, in_ch = instance_norm_silu(g, x, f"{prefix}.{3 * i + 1}", width), width
    return x


def upsample_trunk(g: GraphBuilder, x: str, dim: int, upsample: tuple[int, ...], convs: tuple[int, ...]) -> str:
    """sapiens2.UpsampleTrunk: 3x3 conv; per width a 3x3 conv to 4x the channels, PixelShuffle(2),
    IN, SiLU; then 3x3 convs: (B, D, 64, 48) to full resolution."""
    x, channels = conv_stack(g, x, "decode_head.input_conv", dim, (dim,), 3), dim
    for i, width in enumerate(upsample):
        prefix = f"decode_head.upsample_blocks.{i}"
        x = conv(g, x, f"{prefix}.0", channels, 4 * width, 3)
        # PixelShuffle: channel 4c + 2i + j goes to pixel (2h + i, 2w + j) of channel c.
        x = g.op("DepthToSpace", [x], f"{prefix}.1", blocksize=2, mode="CRD")
        x, channels = instance_norm_silu(g, x, f"{prefix}.2", width), width
    return conv_stack(g, x, "decode_head.conv_layers", channels, convs, 3)


def pointmap_scale(g: GraphBuilder, features: str, dim: int, widths: sapiens2_arch.HeadWidths) -> str:
    """The point map's scale (B, 1): three stride-2 1x1 convs to 8 x 6, flattened channel-major,
    then Linear, SiLU, Linear, SiLU, Linear (scale_final_layer.1, .3, .5)."""
    x = conv_stack(g, features, "decode_head.scale_conv_layers", dim, widths.scale_conv, 1, stride=2)
    x = g.op("Flatten", [x], "decode_head.scale_final_layer.0", axis=1)
    sizes = (widths.scale_conv[-1] * sapiens2_arch.SCALE_GRID[0] * sapiens2_arch.SCALE_GRID[1], *widths.scale_hidden, 1)
    for i in range(len(sizes) - 1):
        if i:
            x = silu(g, x, f"decode_head.scale_final_layer.{2 * i}")
        x = gemm_linear(g, x, f"decode_head.scale_final_layer.{2 * i + 1}", sizes[i], sizes[i + 1])
    return x


def sapiens2_head(g: GraphBuilder, features: str, spec: ModelSpec, output: str) -> str:
    dim, widths, kind = spec.arch.embed_dim, sapiens2_arch.HEADS[spec.arch.name], spec.task.kind
    if kind == "pose":
        x = deconv_stack(g, features, "decode_head.deconv_layers", dim, widths.pose_deconv)
        x = conv_stack(g, x, "decode_head.conv_layers", widths.pose_deconv[-1], widths.pose_conv, 1)
        return conv(g, x, "decode_head.conv_pose", widths.pose_conv[-1], sapiens2_arch.KEYPOINTS, 1, output_name=output)
    if kind == "seg":
        x = deconv_stack(g, features, "decode_head.deconv_layers", dim, widths.seg_deconv)
        x = conv_stack(g, x, "decode_head.conv_layers", widths.seg_deconv[-1], widths.seg_conv, 1)
        return conv(g, x, "decode_head.conv_seg", widths.seg_conv[-1], sapiens2_arch.SEG_CLASSES, 1, output_name=output)
    if kind == "normal":
        x = upsample_trunk(g, features, dim, widths.normal_upsample, widths.normal_conv)
        return conv(g, x, "decode_head.conv_normal", widths.normal_conv[-1], 3, 1, output_name=output)
    x = upsample_trunk(g, features, dim, widths.pointmap_upsample, widths.pointmap_conv)
    pointmap = conv(g, x, "decode_head.conv_pointmap", widths.pointmap_conv[-1], 3, 1)
    # The scale (B, 1) repeated as a fourth plane (B, 1, H, W), as Sapiens2Model.forward returns it.
    scale = pointmap_scale(g, features, dim, widths)
    plane = g.op("Unsqueeze", [scale, g.int64s("decode_head.scale_plane_axes", [2, 3])], "decode_head.scale_pixel")
    plane_shape = g.int64s("decode_head.scale_plane_shape", [1, 1, INPUT_HEIGHT, INPUT_WIDTH])
    plane = g.op("Expand", [plane, plane_shape], "decode_head.scale_plane")
    return g.op("Concat", [pointmap, plane], output, axis=1)


def body(g: GraphBuilder, image: str, spec: ModelSpec, output: str) -> str:
    if spec.family == SAPIENS2:
        return sapiens2_head(g, sapiens2_backbone(g, image, spec.arch), spec, output)
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
        f"{spec.family}_{spec.arch.name}_{spec.task.name}",
        [image],
        [output],
        initializer=g.initializers,
        doc_string=f"{spec.family.capitalize()} architecture with RANDOM weights: outputs are meaningless.",
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


def with_fused_attention(spec: ModelSpec, model: onnx.ModelProto) -> onnx.ModelProto:
    """The model with every block's attention core fused, when the spec asks for it."""
    if not spec.fused_attention:
        return model
    model, fused = fuse_attention.fuse_attention(model)
    assert fused == spec.blocks, f"{spec.file_name}: fused {fused} attention cores, the model has {spec.blocks} blocks"
    return model


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
        model = with_fused_attention(spec, model)
        tmp_model.write_bytes(model.SerializeToString(deterministic=True))
        os.replace(tmp_model, path)
    finally:
        tmp_model.unlink(missing_ok=True)
        tmp_data.unlink(missing_ok=True)


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
    return not fuse_attention.uses_external_data(model) or external_data_path(path).exists()


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


def self_check(family: str) -> None:
    """Determinism and the external-data path, on a tiny model of `family` in a temporary folder."""
    archs, tasks = FAMILIES[family]
    spec = ModelSpec(archs["tiny"], next(iter(tasks.values())), seed=7)
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
        assert fuse_attention.uses_external_data(onnx.load(str(external_path), load_external_data=False))
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
    parser.add_argument("--family", choices=list(FAMILIES), default=SAPIENS)
    parser.add_argument(
        "--arch",
        default="tiny",
        help="; ".join(f"{family}: {', '.join(archs)}" for family, (archs, _) in FAMILIES.items()),
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--tasks",
        help="comma list, by default all the family's: "
        + "; ".join(f"{family}: {','.join(tasks)}" for family, (_, tasks) in FAMILIES.items()),
    )
    parser.add_argument("--fp16", action="store_true", help="float16 weights and compute, float32 input and output")
    parser.add_argument("--fp16-io", action="store_true", help="with --fp16: float16 input and output too")
    parser.add_argument(
        "--fused-attention",
        action="store_true",
        help="attention cores as com.microsoft.MultiHeadAttention (ONNX Runtime only), file suffix _mha",
    )
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
    archs, tasks = FAMILIES[args.family]
    if args.arch not in archs:
        parser.error(f"unknown {args.family} arch {args.arch!r}; choose from {list(archs)}")
    if args.fused_attention and args.arch == NULL_ARCH:
        parser.error("--fused-attention: the null arch has no attention")
    args.tasks = [t.strip() for t in args.tasks.split(",") if t.strip()] if args.tasks else list(tasks)
    unknown = [t for t in args.tasks if t not in tasks]
    if unknown:
        parser.error(f"unknown {args.family} task(s) {unknown}; choose from {list(tasks)}")
    return args


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    if args.check:
        self_check(args.family)
    archs, tasks = FAMILIES[args.family]
    threshold = int(args.external_data_threshold_mb * 2**20)
    for task_name in args.tasks:
        spec = ModelSpec(
            archs[args.arch], tasks[task_name], args.seed, args.fp16, args.fp16_io, args.opset, args.fused_attention
        )
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
