"""Static shapes of a graph's values for one image, for the heads' shape-only subgraphs.

A head may compute a Reshape's target from the shape of a value it never replays: the
dynamo exporter reads the batch size of ``x.view(x.size(0), -1)`` from the graph's input
(``Shape(input)``), far before the tapped layer. The replay only needs that shape, not the
value, and for one image it is fixed: ONNX shape inference on the graph with its input
pinned to one image gives it, without any weight (only their declared dimensions).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import onnx
from onnx import TensorProto, helper, shape_inference

# Initializers kept with their values (shape inference reads a Reshape's target through
# them); larger ones are declared by type and dimensions only.
SMALL_INITIALIZER = 64


def input_shapes(model: onnx.ModelProto, fallback: Mapping[str, Sequence[int]]) -> dict[str, tuple[int, ...]]:
    """Each graph input's shape for one image: its declared dimensions, a dynamic batch as
    1, any other dynamic dimension from ``fallback`` (the artifact's input recipe)."""
    initializers = {init.name for init in model.graph.initializer}
    shapes: dict[str, tuple[int, ...]] = {}
    for value in model.graph.input:
        if value.name in initializers:
            continue
        dims = list(value.type.tensor_type.shape.dim)
        given = list(fallback.get(value.name, ()))
        shape = []
        for axis, dim in enumerate(dims):
            if dim.HasField("dim_value") and dim.dim_value > 0:
                shape.append(int(dim.dim_value))
            elif axis == 0:
                shape.append(1)
            elif axis < len(given) and given[axis] > 0:
                shape.append(int(given[axis]))
            else:
                break
        else:
            shapes[value.name] = tuple(shape)
    return shapes


def infer(model: onnx.ModelProto, inputs: Mapping[str, Sequence[int]]) -> dict[str, tuple[int, ...]]:
    """Every value whose shape inference fixes for ``inputs`` (graph input -> shape)."""
    graph = model.graph
    light = helper.make_graph([], graph.name or "shapes", [], [])
    light.node.extend(graph.node)
    types = {v.name: v.type.tensor_type.elem_type for v in graph.input}
    for name, shape in inputs.items():
        light.input.append(helper.make_tensor_value_info(name, types.get(name) or TensorProto.FLOAT, list(shape)))
    for init in graph.initializer:
        size = 1
        for d in init.dims:
            size *= d
        if size <= SMALL_INITIALIZER and init.data_location != TensorProto.EXTERNAL:
            light.initializer.append(init)
        else:
            light.input.append(helper.make_tensor_value_info(init.name, init.data_type, list(init.dims)))
    light_model = helper.make_model(light, opset_imports=list(model.opset_import), ir_version=model.ir_version)
    light_model.functions.extend(model.functions)
    inferred = shape_inference.infer_shapes(light_model, strict_mode=False, data_prop=True)
    shapes: dict[str, tuple[int, ...]] = {}
    for value in [*inferred.graph.value_info, *inferred.graph.output, *inferred.graph.input]:
        dims = value.type.tensor_type.shape.dim
        if value.type.tensor_type.HasField("shape") and all(d.HasField("dim_value") for d in dims):
            shapes[value.name] = tuple(int(d.dim_value) for d in dims)
    return shapes
