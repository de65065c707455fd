"""Small reads and edits of an ONNX graph that the import's steps share.

Torch-free; onnx is imported lazily so `--help` stays quick. Values are named strings:
an edit that renames one renames every use of it (subgraphs included), never half of them.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

FLOAT_TYPES = (1, 10)  # TensorProto.FLOAT, TensorProto.FLOAT16


def attr(node: Any, name: str, default: Any) -> Any:
    import onnx

    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default


def constants(graph: Any) -> dict[str, np.ndarray]:
    """Initializers and Constant nodes' values, by value name."""
    from onnx import numpy_helper

    values = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant":
            for a in node.attribute:
                if a.name == "value":
                    values[node.output[0]] = numpy_helper.to_array(a.t)
    return values


def used_names(graph: Any) -> set[str]:
    """Every value name the graph mentions (nodes, initializers, inputs, outputs)."""
    names = {n for node in _all_nodes(graph) for n in [*node.input, *node.output]}
    names |= {i.name for i in graph.initializer}
    names |= {v.name for v in [*graph.input, *graph.output, *graph.value_info]}
    names.discard("")
    return names


def _all_nodes(graph: Any) -> Iterator[Any]:
    """Nodes of the graph and of every subgraph (If/Loop bodies), which may use outer values."""
    for node in graph.node:
        yield node
        for a in node.attribute:
            if a.type == 5:  # GRAPH
                yield from _all_nodes(a.g)
            elif a.type == 10:  # GRAPHS
                for g in a.graphs:
                    yield from _all_nodes(g)


def rename_values(graph: Any, renames: Mapping[str, str]) -> None:
    """Rename values everywhere in one pass (node inputs and outputs, graph inputs,
    outputs and value_info, subgraphs)."""
    if not renames:
        return
    for node in _all_nodes(graph):
        for i, name in enumerate(node.input):
            if name in renames:
                node.input[i] = renames[name]
        for i, name in enumerate(node.output):
            if name in renames:
                node.output[i] = renames[name]
    for coll in (graph.input, graph.output, graph.value_info):
        for vi in coll:
            if vi.name in renames:
                vi.name = renames[vi.name]


def replace_uses(graph: Any, old: str, new: str) -> None:
    """Make every node that reads ``old`` read ``new`` (producers and graph outputs unchanged)."""
    for node in _all_nodes(graph):
        for i, name in enumerate(node.input):
            if name == old:
                node.input[i] = new


class Names:
    """Fresh value names that collide with nothing in the graph or handed out before."""

    def __init__(self, taken: set[str]) -> None:
        self.taken = set(taken)

    def fresh(self, base: str) -> str:
        candidate, k = base, 1
        while candidate in self.taken:
            candidate, k = f"{base}_{k}", k + 1
        self.taken.add(candidate)
        return candidate


@dataclass
class Shapes:
    """Element type and static shape of values from onnx shape inference (-1: unknown dim);
    values shape inference says nothing about are absent."""

    dims: dict[str, list[int]] = field(default_factory=dict)
    types: dict[str, int] = field(default_factory=dict)

    def rank(self, name: str) -> int | None:
        shape = self.dims.get(name)
        return len(shape) if shape is not None else None

    def is_float(self, name: str) -> bool:
        return self.types.get(name) in FLOAT_TYPES


def infer_shapes(model: Any) -> Shapes:
    import onnx

    try:
        inferred = onnx.shape_inference.infer_shapes(model, data_prop=True)
    except Exception:  # best-effort: a value it cannot type is simply not tapped
        return Shapes()
    shapes = Shapes()
    for vi in [*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output]:
        tensor = vi.type.tensor_type
        if not vi.type.HasField("tensor_type"):
            continue
        shapes.types[vi.name] = tensor.elem_type
        if tensor.HasField("shape"):
            shapes.dims[vi.name] = [d.dim_value if d.HasField("dim_value") else -1 for d in tensor.shape.dim]
    for init in model.graph.initializer:
        shapes.types.setdefault(init.name, init.data_type)
        shapes.dims.setdefault(init.name, list(init.dims))
    return shapes


def producers(graph: Any) -> dict[str, Any]:
    return {out: node for node in graph.node for out in node.output if out}


def consumers(graph: Any) -> dict[str, list[Any]]:
    users: dict[str, list[Any]] = {}
    for node in graph.node:
        for name in set(node.input):
            if name:
                users.setdefault(name, []).append(node)
    return users


def data_values(graph: Any, input_name: str, shapes: Shapes) -> set[str]:
    """Values computed from the image: reachable from the input through float tensors.

    Shape-only paths (Shape, Size and the integer arithmetic on their results) are not
    data: they depend on the input's dimensions, never on its pixels.
    """
    data = {input_name}
    for node in graph.node:
        if node.op_type in ("Shape", "Size"):
            continue
        if any(i in data for i in node.input if i):
            for out in node.output:
                if out and (shapes.is_float(out) or out not in shapes.types):
                    data.add(out)
    return data


_SANITISE = re.compile(r"[^A-Za-z0-9._-]+")


def sanitise(text: str) -> str:
    """A name made of [A-Za-z0-9._-]: path separators become dots, anything else '_'."""
    text = text.replace("/", ".").replace("::", ".")
    text = _SANITISE.sub("_", text)
    text = re.sub(r"\.{2,}", ".", text)
    return text.strip("._-")


def complete_shapes(model: Any, shapes: Shapes, input_name: str, input_shape: list[int]) -> None:
    """Shapes and types that shape inference could not give (a Reshape whose target is
    computed from Shape ops, as TorchScript's channel shuffle at opset 11): measured by
    running the model once on zeros with those values as outputs. A batch of 2 tells the
    batch axis (-1) from fixed axes of size 1; a fixed-batch graph keeps its own."""
    import onnx

    missing = [out for node in model.graph.node for out in node.output if out and out not in shapes.dims]
    if not missing:
        return
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    del probe.graph.output[:]
    probe.graph.output.extend(onnx.ValueInfoProto(name=name) for name in missing)
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 4
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    try:
        session = ort.InferenceSession(probe.SerializeToString(), options, providers=["CPUExecutionProvider"])
        values = session.run(missing, {input_name: np.zeros(input_shape, dtype=np.float32)})
    except Exception:  # best-effort, as shape inference is: what stays unknown is not tapped
        return
    batch = input_shape[0]
    for name, value in zip(missing, values, strict=True):
        if not isinstance(value, np.ndarray):
            continue
        dims = [int(d) for d in value.shape]
        if dims and dims[0] == batch and batch != 1:
            dims[0] = -1
        shapes.dims[name] = dims
        shapes.types[name] = int(onnx.helper.np_dtype_to_tensor_dtype(value.dtype))
