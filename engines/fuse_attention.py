#!/usr/bin/env python3
"""Replace each plain attention core of a Sapiens ONNX graph with ONNX Runtime's fused
`com.microsoft.MultiHeadAttention`, whose CUDA kernels (sm80+) never materialise the
(B, heads, S, S) score tensor. Worth it in float16: on an H200, ONNX Runtime 1.31.1 ran it with
cuDNN flash attention and the 0.3b pose model went from 22 to 10 ms a frame (Sapiens2 0.4b: 51 to
23 ms). In float32 it picked memory-efficient attention without TF32, slower than the plain
graph's TF32 MatMuls (35 to 41 ms): fuse float16 models for the GPU (benches/README.md, "The
first runs on a GPU").

The core matched, as engines/generate_models.py and engines/export_onnx.py write it:

  q (B, N, S, H) -------------------------------> MatMul -> [scale] -> [Cast] -> Softmax(last axis)
  k (B, N, L, H) -> Transpose(0, 1, 3, 2) ------>                          -> [Cast] -> MatMul -> (B, N, S, H_v)
  v (B, N, L, H_v) ------------------------------------------------------------------>

The scale is any product of Mul / Div by one-element constants on the scores, on q, or on k before
or after its Transpose (torch's scaled_dot_product_attention export puts sqrt(scale) on q and k,
computed from Shape(q)); the constants may be initializers, Constant nodes or small expressions of
them and of statically known dimensions. Optional Casts around the Softmax (float32 softmax in a
float16 graph) go: the fused op accumulates in float32 anyway.

Each core becomes

  q -> Transpose(0, 2, 1, 3) -> Reshape(0, 0, -1) -> MultiHeadAttention(query (B, S, N*H),
  key k and value v as they are, 4-D BNSH; num_heads N, scale) -> (B, S, N*H_v) -> Reshape(0, 0, N, -1)
  -> Transpose(0, 2, 1, 3) -> the core's old output tensor, so every consumer stays as it was.

ONNX Runtime cancels the Transpose pair this leaves before the usual head merge. num_heads must
be proven by shape inference (with data propagation, so Reshape shapes built from Shape ops count)
for q, k and v; a core whose shapes cannot be proven, whose intermediate tensors are used elsewhere,
or whose q, k, v types differ is left as it is. com.microsoft ops run in ONNX Runtime only (CPU and
CUDA execution providers, float32 and float16); TensorRT does not run them natively.

Usage: python3 engines/fuse_attention.py IN.onnx OUT.onnx   (prints the number of cores fused)
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

MS_DOMAIN = "com.microsoft"
MS_OPSET = 1
FUSED_OP = "MultiHeadAttention"
# What a fused file's `sapiens_stream.attention` metadata says (the program reads it).
FUSED_OP_NAME = f"{MS_DOMAIN}.{FUSED_OP}"
# Float types both the CPU and the CUDA kernels of MultiHeadAttention take.
FUSABLE_TYPES = (TensorProto.FLOAT, TensorProto.FLOAT16)
# Initializers up to this many elements keep their values for shape inference (shapes, scalars);
# larger ones, the weights, only their type and shape, so models past protobuf's 2 GiB still infer.
SHAPE_CONSTANT_MAX_ELEMENTS = 64
PROTOBUF_LIMIT = 2**31
GRAPH_MARGIN = 64 * 2**20


@dataclasses.dataclass
class Core:
    """One matched attention core: what feeds it, what it computes, and the nodes it replaces."""

    q: str
    k: str
    v: str
    output: str
    num_heads: int
    scale: float
    nodes: list[onnx.NodeProto]  # the chain from the scores MatMul to the context MatMul


class GraphIndex:
    """Producers, consumers, constants and inferred shapes and types of one graph's tensors."""

    def __init__(self, model: onnx.ModelProto, nodes: list[onnx.NodeProto]) -> None:
        graph = model.graph
        self.producer = {name: node for node in nodes for name in node.output}
        self.consumers: dict[str, list[onnx.NodeProto]] = {}
        for node in nodes:
            for name in referenced_names(node):
                self.consumers.setdefault(name, []).append(node)
        self.graph_outputs = {o.name for o in graph.output}
        self.initializers = {t.name: t for t in graph.initializer}
        self.types = inferred_types(model)

    def sole_consumer(self, name: str) -> onnx.NodeProto | None:
        users = self.consumers.get(name, [])
        return users[0] if len(users) == 1 and name not in self.graph_outputs else None

    def shape(self, name: str) -> list[int | None] | None:
        tensor_type = self.types.get(name)
        if tensor_type is None or not tensor_type.HasField("shape"):
            return None
        return [d.dim_value if d.HasField("dim_value") else None for d in tensor_type.shape.dim]

    def elem_type(self, name: str) -> int | None:
        tensor_type = self.types.get(name)
        return tensor_type.elem_type if tensor_type is not None else None

    def constant(self, name: str) -> np.ndarray | None:
        """The value of `name` when the graph fixes it: an initializer, a Constant, or a small
        expression of those and of statically known dimensions (torch's attention scale)."""
        if name in self.initializers:
            tensor = self.initializers[name]
            return None if tensor.data_location == TensorProto.EXTERNAL else numpy_helper.to_array(tensor)
        node = self.producer.get(name)
        if node is None:
            return None
        evaluate = CONSTANT_OPS.get(node.op_type)
        return evaluate(self, node) if evaluate is not None else None

    def scalar(self, name: str) -> float | None:
        value = self.constant(name)
        if value is None or value.size != 1 or value.dtype == object:
            return None
        return float(value.reshape(()))


def referenced_names(node: onnx.NodeProto) -> list[str]:
    """The node's inputs and every outer tensor its subgraphs (If, Loop, Scan) may read."""
    names = [name for name in node.input if name]
    for attribute in node.attribute:
        for subgraph in [attribute.g] if attribute.HasField("g") else list(attribute.graphs):
            for inner in subgraph.node:
                names.extend(referenced_names(inner))
    return names


def inferred_types(model: onnx.ModelProto) -> dict[str, onnx.TypeProto.Tensor]:
    """Tensor types by shape inference with data propagation, on a copy of the graph that holds no
    weights: Reshape shapes built from Shape / Gather / Concat resolve, large models stay small."""
    skeleton = onnx.ModelProto()
    skeleton.ir_version = model.ir_version
    skeleton.opset_import.extend(model.opset_import)
    graph = skeleton.graph
    graph.node.extend(model.graph.node)
    graph.input.extend(model.graph.input)
    graph.output.extend(model.graph.output)
    declared = {i.name for i in model.graph.input}
    for tensor in model.graph.initializer:
        if math.prod(tensor.dims) <= SHAPE_CONSTANT_MAX_ELEMENTS and tensor.data_location != TensorProto.EXTERNAL:
            graph.initializer.append(tensor)
        elif tensor.name not in declared:
            graph.input.append(helper.make_tensor_value_info(tensor.name, tensor.data_type, list(tensor.dims)))
    inferred = onnx.shape_inference.infer_shapes(skeleton, data_prop=True)
    values = [*inferred.graph.input, *inferred.graph.value_info, *inferred.graph.output]
    return {v.name: v.type.tensor_type for v in values if v.type.HasField("tensor_type")}


# --- Constant evaluation: just the ops a scale or a dimension is computed with. -------------


def attribute(node: onnx.NodeProto, name: str, default=None):
    found = next((a for a in node.attribute if a.name == name), None)
    return helper.get_attribute_value(found) if found is not None else default


def inputs_of(index: GraphIndex, node: onnx.NodeProto) -> list[np.ndarray] | None:
    values = [index.constant(name) for name in node.input if name]
    return None if any(v is None or v.dtype == object for v in values) else values


def constant_node(index: GraphIndex, node: onnx.NodeProto) -> np.ndarray | None:
    value = next((a for a in node.attribute if a.name in ("value", "value_float", "value_int")), None)
    if value is None:
        return None
    return numpy_helper.to_array(value.t) if value.name == "value" else np.array(helper.get_attribute_value(value))


def shape_node(index: GraphIndex, node: onnx.NodeProto) -> np.ndarray | None:
    """The input's dimensions, unknown ones as None (an object array): Slice / Gather may pick
    known ones out, and arithmetic on an unknown one yields no constant."""
    dims = index.shape(node.input[0])
    if dims is None:
        return None
    start, end = attribute(node, "start", 0), attribute(node, "end", len(dims))
    return known(np.array(dims[start:end], dtype=object))


def slice_node(index: GraphIndex, node: onnx.NodeProto) -> np.ndarray | None:
    data = index.constant(node.input[0])
    bounds = [index.constant(name) if name else None for name in node.input[1:]] + [None] * 3
    starts, ends, axes, steps = bounds[:4]
    if data is None or starts is None or ends is None or data.ndim != 1:
        return None
    if axes is not None and list(axes) not in ([0], [-1]):
        return None
    step = int(steps[0]) if steps is not None else 1
    return known(data[slice(int(starts[0]), int(ends[0]), step)])


def gather_node(index: GraphIndex, node: onnx.NodeProto) -> np.ndarray | None:
    data, indices = index.constant(node.input[0]), index.constant(node.input[1])
    if data is None or indices is None or data.ndim != 1 or indices.dtype == object:
        return None
    return known(data[indices.astype(np.int64)])


def known(values: np.ndarray) -> np.ndarray:
    """Dimensions taken from a shape: numbers once every one is known, else still an object array."""
    if values.dtype != object:
        return values
    return values if any(v is None for v in values.flat) else values.astype(np.int64)


def cast_node(index: GraphIndex, node: onnx.NodeProto) -> np.ndarray | None:
    values = inputs_of(index, node)
    return values[0].astype(helper.tensor_dtype_to_np_dtype(attribute(node, "to"))) if values else None


def elementwise(function):
    def evaluate(index: GraphIndex, node: onnx.NodeProto) -> np.ndarray | None:
        values = inputs_of(index, node)
        return np.asarray(function(*values)) if values else None

    return evaluate


CONSTANT_OPS = {
    "Constant": constant_node,
    "Shape": shape_node,
    "Slice": slice_node,
    "Gather": gather_node,
    "Cast": cast_node,
    "Identity": elementwise(lambda x: x),
    "Sqrt": elementwise(np.sqrt),
    "Reciprocal": elementwise(np.reciprocal),
    "Mul": elementwise(np.multiply),
    "Div": elementwise(lambda a, b: a / b),
    "Pow": elementwise(np.power),
}


# --- Matching. ----------------------------------------------------------------------------


def scale_step(index: GraphIndex, node: onnx.NodeProto | None) -> tuple[str, float] | None:
    """(the scaled tensor, the factor) when `node` is Mul or Div by a one-element constant."""
    if node is None or node.op_type not in ("Mul", "Div") or len(node.input) != 2:
        return None
    a, b = node.input
    if node.op_type == "Div":
        divisor = index.scalar(b)
        return (a, 1.0 / divisor) if divisor else None
    for tensor, other in ((a, b), (b, a)):
        factor = index.scalar(other)
        if factor is not None:
            return tensor, factor
    return None


def strip_scales(index: GraphIndex, name: str) -> tuple[str, float]:
    """Walks up from `name` through scalings used by nothing else; (the tensor above, their product)."""
    factor = 1.0
    while True:
        step = scale_step(index, index.producer.get(name))
        if step is None or index.sole_consumer(name) is None:
            return name, factor
        name, factor = step[0], factor * step[1]


def unscaled_key(index: GraphIndex, transposed: str) -> tuple[str, float] | None:
    """k behind the scores MatMul's second input: Transpose(0, 1, 3, 2), scalings on either side."""
    name, factor = strip_scales(index, transposed)
    node = index.producer.get(name)
    if node is None or node.op_type != "Transpose" or attribute(node, "perm") != [0, 1, 3, 2]:
        return None
    key, before = strip_scales(index, node.input[0])
    return key, factor * before


def softmax_on_last_axis(index: GraphIndex, node: onnx.NodeProto, opset: int) -> bool:
    # Before opset 13 Softmax flattens from `axis` (default 1); from the last axis that is the same.
    axis = attribute(node, "axis", -1 if opset >= 13 else 1)
    rank = len(index.shape(node.input[0]) or [])
    return rank == 4 and axis in (-1, rank - 1)


def walk_to_scores(
    index: GraphIndex, softmax: onnx.NodeProto
) -> tuple[onnx.NodeProto, list[onnx.NodeProto], float] | None:
    """From the Softmax up to the scores MatMul through Casts and scalings used by nothing else:
    (the MatMul, the nodes passed, their scale)."""
    passed, factor, name = [], 1.0, softmax.input[0]
    while True:
        node = index.producer.get(name)
        if node is None or index.sole_consumer(name) is None:
            return None
        if node.op_type == "MatMul":
            return node, passed, factor
        if node.op_type == "Cast":
            name = node.input[0]
        else:
            step = scale_step(index, node)
            if step is None:
                return None
            name, factor = step[0], factor * step[1]
        passed.append(node)


def walk_to_context(index: GraphIndex, softmax: onnx.NodeProto) -> tuple[onnx.NodeProto, list[onnx.NodeProto]] | None:
    """From the Softmax down to the MatMul with v through Casts: (the MatMul, the Casts passed)."""
    passed, name = [], softmax.output[0]
    while True:
        node = index.sole_consumer(name)
        if node is None:
            return None
        if node.op_type == "MatMul" and node.input[0] == name:
            return node, passed
        if node.op_type != "Cast":
            return None
        passed.append(node)
        name = node.output[0]


def proven_heads(index: GraphIndex, q: str, k: str, v: str) -> int | None:
    """num_heads when q, k and v are 4-D with the same known head count, one float type, and no
    dimension known to disagree (batch, key/value length, q/k head size)."""
    shapes = [index.shape(name) for name in (q, k, v)]
    types = {index.elem_type(name) for name in (q, k, v)}
    if any(s is None or len(s) != 4 for s in shapes) or len(types) != 1 or types.pop() not in FUSABLE_TYPES:
        return None
    (qb, qn, _, qh), (kb, kn, kl, kh), (vb, vn, vl, _) = shapes
    heads = {qn, kn, vn}
    if len(heads) != 1 or None in heads:
        return None
    if disagree(qb, kb, vb) or disagree(kl, vl) or disagree(qh, kh):
        return None
    return heads.pop()


def disagree(*dims: int | None) -> bool:
    return len({d for d in dims if d is not None}) > 1


def match_core(index: GraphIndex, softmax: onnx.NodeProto, opset: int) -> Core | None:
    if not softmax_on_last_axis(index, softmax, opset):
        return None
    upward, downward = walk_to_scores(index, softmax), walk_to_context(index, softmax)
    if upward is None or downward is None:
        return None
    scores, above, score_scale = upward
    context, below = downward
    q, q_scale = strip_scales(index, scores.input[0])
    key = unscaled_key(index, scores.input[1])
    if key is None:
        return None
    k, k_scale = key
    v = context.input[1]
    num_heads = proven_heads(index, q, k, v)
    if num_heads is None:
        return None
    scale = score_scale * q_scale * k_scale
    return Core(q, k, v, context.output[0], num_heads, scale, [scores, *above, softmax, *below, context])


# --- Rewriting. ---------------------------------------------------------------------------


class Names:
    """Fresh tensor and node names that clash with nothing in the graph."""

    def __init__(self, graph: onnx.GraphProto) -> None:
        self.taken = {n for node in graph.node for n in [node.name, *node.input, *node.output]}
        self.taken |= {t.name for t in graph.initializer} | {i.name for i in graph.input}

    def fresh(self, base: str) -> str:
        name, suffix = base, 0
        while name in self.taken:
            suffix += 1
            name = f"{base}_{suffix}"
        self.taken.add(name)
        return name


def shape_constant(graph: onnx.GraphProto, names: Names, cache: dict, values: tuple[int, ...]) -> str:
    """An int64 initializer holding `values`, one per distinct shape."""
    if values not in cache:
        name = names.fresh("fused_attention.shape_" + "_".join(str(v).replace("-", "m") for v in values))
        graph.initializer.append(numpy_helper.from_array(np.array(values, dtype=np.int64), name))
        cache[values] = name
    return cache[values]


def fused_nodes(core: Core, graph: onnx.GraphProto, names: Names, shapes: dict) -> list[onnx.NodeProto]:
    """query (B, N, S, H) -> (B, S, N*H); MultiHeadAttention with key / value BNSH; its
    (B, S, N*H_v) back to (B, N, S, H_v) under the core's output name."""
    base = core.output.rsplit("/", 1)[0] if "/" in core.output else core.output

    def node(op_type: str, inputs: list[str], output: str | None = None, **attrs) -> onnx.NodeProto:
        name = names.fresh(f"{base}/fused_attention/{op_type}")
        return helper.make_node(op_type, inputs, [output or names.fresh(name + "_output")], name=name, **attrs)

    query_bsnh = node("Transpose", [core.q], perm=[0, 2, 1, 3])
    query = node("Reshape", [query_bsnh.output[0], shape_constant(graph, names, shapes, (0, 0, -1))])
    attention = node(
        FUSED_OP, [query.output[0], core.k, core.v], domain=MS_DOMAIN, num_heads=core.num_heads, scale=core.scale
    )
    split = node("Reshape", [attention.output[0], shape_constant(graph, names, shapes, (0, 0, core.num_heads, -1))])
    heads_first = node("Transpose", [split.output[0]], output=core.output, perm=[0, 2, 1, 3])
    return [query_bsnh, query, attention, split, heads_first]


def live_nodes(graph: onnx.GraphProto, nodes: list[onnx.NodeProto]) -> set[int]:
    """Indices of the nodes the graph outputs depend on."""
    producer = {name: i for i, node in enumerate(nodes) for name in node.output}
    live, pending = set(), [o.name for o in graph.output]
    while pending:
        i = producer.get(pending.pop())
        if i is not None and i not in live:
            live.add(i)
            pending.extend(referenced_names(nodes[i]))
    return live


def drop_orphans(graph: onnx.GraphProto, nodes: list[onnx.NodeProto], dead_before: set[int]) -> list[onnx.NodeProto]:
    """Removes the nodes the rewrite left unused (k's Transpose, the scale subgraph); nodes that
    were unused before it (ids in `dead_before`) stay, so nothing else of the graph changes."""
    live = live_nodes(graph, nodes)
    return [node for i, node in enumerate(nodes) if i in live or id(node) in dead_before]


def drop_orphan_initializers(graph: onnx.GraphProto, used_before: set[str]) -> None:
    """Removes the initializers only the replaced nodes read (the generator's scale constants)."""
    used = {name for node in graph.node for name in referenced_names(node)} | {o.name for o in graph.output}
    kept = [t for t in graph.initializer if t.name in used or t.name not in used_before]
    del graph.initializer[:]
    graph.initializer.extend(kept)


def replace_nodes(graph: onnx.GraphProto, nodes: list[onnx.NodeProto]) -> None:
    # Copies first: the list may hold the graph's own node messages, which clearing would free.
    copies = [onnx.NodeProto() for _ in nodes]
    for copy, node in zip(copies, nodes):
        copy.CopyFrom(node)
    del graph.node[:]
    graph.node.extend(copies)


def ensure_ms_opset(model: onnx.ModelProto) -> None:
    if not any(o.domain == MS_DOMAIN for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid(MS_DOMAIN, MS_OPSET))


def drop_stale_value_info(graph: onnx.GraphProto) -> None:
    produced = {name for node in graph.node for name in node.output}
    kept = [v for v in graph.value_info if v.name in produced]
    del graph.value_info[:]
    graph.value_info.extend(kept)


def fuse_attention(model: onnx.ModelProto) -> tuple[onnx.ModelProto, int]:
    """Rewrites `model` in place (a copy of a multi-GiB model would double its memory) and returns
    it with the number of attention cores replaced by MultiHeadAttention; 0 leaves it unchanged."""
    graph = model.graph
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    nodes = list(graph.node)  # one Python object per node, so matched nodes are known by id
    index = GraphIndex(model, nodes)
    cores = [core for node in nodes if node.op_type == "Softmax" for core in [match_core(index, node, opset)] if core]
    if not cores:
        return model, 0

    dead_before = {id(nodes[i]) for i in set(range(len(nodes))) - live_nodes(graph, nodes)}
    used_before = set(index.consumers)
    replaced = {id(node) for core in cores for node in core.nodes}
    by_output = {core.output: core for core in cores}
    names, shapes = Names(graph), {}
    rewritten = []
    for node in nodes:
        if id(node) not in replaced:
            rewritten.append(node)
        elif node.output[0] in by_output:  # the core's last node: its replacement goes here
            rewritten.extend(fused_nodes(by_output[node.output[0]], graph, names, shapes))
    replace_nodes(graph, drop_orphans(graph, rewritten, dead_before))
    drop_orphan_initializers(graph, used_before)
    drop_stale_value_info(graph)
    ensure_ms_opset(model)
    return model, len(cores)


# --- Command line. ------------------------------------------------------------------------


def uses_external_data(model: onnx.ModelProto) -> bool:
    return any(t.data_location == TensorProto.EXTERNAL for t in model.graph.initializer)


def save(model: onnx.ModelProto, path: Path, external: bool) -> None:
    data_path = path.with_name(path.name + ".data")
    data_path.unlink(missing_ok=True)  # onnx appends to an existing data file
    if external:
        onnx.save_model(
            model, str(path), save_as_external_data=True, all_tensors_to_one_file=True, location=data_path.name
        )
    else:
        onnx.save_model(model, str(path))


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("input", type=Path)
    parser.add_argument("output", type=Path)
    args = parser.parse_args(argv)
    # Read before loading: onnx.load leaves every tensor inline, external ones too.
    external = uses_external_data(onnx.load(str(args.input), load_external_data=False))
    model, fused = fuse_attention(onnx.load(str(args.input)))
    if fused == 0:
        print(f"error: {args.input}: no attention core whose shapes could be proven; nothing written", file=sys.stderr)
        return 1
    weights = sum(t.ByteSize() for t in model.graph.initializer)
    save(model, args.output, external or weights > PROTOBUF_LIMIT - GRAPH_MARGIN)
    onnx.checker.check_model(str(args.output))
    print(f"{args.output}: {fused} attention cores fused into {FUSED_OP_NAME}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
