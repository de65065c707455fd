"""Exact Grad-CAM gradients without autodiff: the part of the network after a tapped layer,
replayed in numpy.

Grad-CAM needs d(target logit)/d(layer activations). When every operation between the
layer and the class output is linear (Gemm, MatMul, Add, average pooling, batch norm in
inference), piecewise linear with its pieces fixed by the forward pass (Relu, MaxPool), or
only moves values around (Flatten, Reshape, Squeeze, Identity, Dropout at inference), that
gradient is a product of the head's weight matrices and the on/off pattern of its Relus and
the winners of its max-pools. ``analyse_head`` finds out, once per layer when a model
loads, whether the graph is of that kind; ``GradHead.gradient`` then runs the head forward
from the layer's activations (which gives those patterns, for the very input explained)
and back-propagates the target logit exactly, in float32 like the model.

Anything else between the layer and the class output (a Conv, a Sigmoid, a second input
path) makes the layer ``NotExact`` with the reason; Grad-CAM is not offered there.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper

Array = np.ndarray
Attrs = Mapping[str, Any]

# Operations that may run on values computed from the layer: each has a forward and an
# exact vector-Jacobian product below.
DIFFERENTIABLE = (
    "Identity", "Dropout", "Flatten", "Reshape", "Squeeze", "Unsqueeze", "Transpose",
    "Relu", "MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool", "ReduceMean",
    "Gemm", "MatMul", "Add", "Sub", "Mul", "Div", "BatchNormalization",
)
# Operations on constants only (shapes for a Reshape and the like): evaluated, never
# differentiated.
CONSTANT_OPS = ("Constant", "Shape", "Gather", "Concat", "Cast", "Unsqueeze", "Squeeze", "Identity", "Reshape")


@dataclass(frozen=True)
class NotExact:
    """Why Grad-CAM would not be exact at a layer."""

    reason: str


@dataclass(frozen=True)
class _Node:
    op: str
    name: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    attrs: Attrs
    differentiable: bool  # some input depends on the layer


class GradHead:
    """The ops from one tapped layer to the class output, runnable and differentiable in numpy."""

    def __init__(self, layer: str, output: str, nodes: Sequence[_Node], constants: Mapping[str, Array]) -> None:
        self.layer = layer
        self.output = output
        self._nodes = tuple(nodes)
        self._constants = dict(constants)
        self._dependent = {layer}
        for node in self._nodes:
            if node.differentiable:
                self._dependent.update(node.outputs)

    @property
    def ops(self) -> tuple[str, ...]:
        """The op types between the layer and the class output, in graph order."""
        return tuple(node.op for node in self._nodes if node.differentiable)

    def forward(self, activations: Array) -> Array:
        """The class output for one image's layer activations ([1, ...] as the graph has them)."""
        values = self._run(activations)
        return values[self.output]

    def gradient(self, activations: Array, target: int) -> tuple[Array, Array]:
        """(logits [1, classes], d logits[0, target] / d activations), both float32.

        ``activations`` is the layer's output for one image, batch dimension included.
        """
        if activations.shape[0] != 1:
            raise ValueError(f"one image at a time, not a batch of {activations.shape[0]}")
        values = self._run(activations)
        logits = values[self.output]
        grads: dict[str, Array] = {self.output: np.zeros_like(logits)}
        grads[self.output][0, target] = 1.0
        for node in reversed(self._nodes):
            if not node.differentiable:
                continue
            upstream = [grads.get(name) for name in node.outputs]
            if upstream[0] is None:
                continue  # this node's result does not reach the target
            inputs = [values.get(name) if name else None for name in node.inputs]
            dependent = [name in self._dependent for name in node.inputs]
            for name, grad in zip(node.inputs, _VJP[node.op](upstream[0], inputs, node.attrs, dependent)):
                if grad is None or not name:
                    continue
                grads[name] = grads[name] + grad if name in grads else grad
        gradient = grads.get(self.layer)
        if gradient is None:
            gradient = np.zeros_like(activations)
        return logits.astype(np.float32), gradient.astype(np.float32).reshape(activations.shape)

    def _run(self, activations: Array) -> dict[str, Array]:
        values: dict[str, Array] = dict(self._constants)
        values[self.layer] = np.asarray(activations, dtype=np.float32)
        for node in self._nodes:
            inputs = [values[name] if name else None for name in node.inputs]
            outputs = _FORWARD[node.op](inputs, node.attrs)
            for name, value in zip(node.outputs, outputs):
                if name:
                    values[name] = value
        return values


def analyse_head(model: onnx.ModelProto, layer: str, output: str,
                 constants: dict[str, Array] | None = None) -> GradHead | NotExact:
    """Whether d ``output`` / d ``layer`` is exact by numpy replay; the runnable head if so.

    ``constants`` is a cache of initializer arrays shared between the heads of one model
    (AlexNet's dense weights are 230 MB: every layer's head uses the same ones).
    """
    graph = model.graph
    cache = constants if constants is not None else {}
    initializers = {init.name: init for init in graph.initializer}
    producer = {name: node for node in graph.node for name in node.output if name}
    graph_inputs = {i.name for i in graph.input} - set(initializers)
    if output not in producer:
        return NotExact(f"the class output {output!r} is not computed by any node")

    # Walk back from the class output to everything it needs, stopping at the layer.
    needed: set[int] = set()
    reaches_layer = False
    stack = [output]
    seen: set[str] = set()
    index = {id(node): i for i, node in enumerate(graph.node)}
    while stack:
        name = stack.pop()
        if name in seen or not name:
            continue
        seen.add(name)
        if name == layer:
            reaches_layer = True
            continue
        if name in initializers:
            continue
        if name in graph_inputs:
            return NotExact(f"the class output depends on {name!r} through a path that bypasses {layer!r}")
        node = producer.get(name)
        if node is None:
            return NotExact(f"value {name!r} has no producer in the graph")
        needed.add(index[id(node)])
        stack.extend(node.input)
    if not reaches_layer:
        return NotExact(f"the class output does not depend on {layer!r}")

    nodes: list[_Node] = []
    dependent = {layer}
    for i in sorted(needed):  # ONNX nodes are stored in topological order
        proto = graph.node[i]
        if proto.domain not in ("", "ai.onnx"):
            return NotExact(f"{proto.op_type} ({proto.name or proto.output[0]}) is a custom op")
        attrs = {a.name: helper.get_attribute_value(a) for a in proto.attribute}
        on_path = any(name in dependent for name in proto.input)
        op = proto.op_type
        if on_path and op == "Shape":
            on_path = False  # a shape is known from the forward pass; nothing flows back through it
        elif on_path:
            problem = _check_linear(op, proto, attrs, dependent)
            if problem:
                return NotExact(f"{problem} between {layer!r} and the class output")
            dependent.update(name for name in proto.output if name)
        elif op not in CONSTANT_OPS:
            return NotExact(f"{op} ({proto.name or proto.output[0]}) computes a constant this replay cannot")
        if op == "Constant":
            attrs = {"value": _constant_value(attrs)}
        nodes.append(_Node(op, proto.name, tuple(proto.input), tuple(proto.output), attrs, on_path))
        for name in proto.input:
            if name in initializers and name not in cache:
                cache[name] = numpy_helper.to_array(initializers[name])
    used = {name for node in nodes for name in node.inputs if name in initializers}
    return GradHead(layer, output, nodes, {name: cache[name] for name in used})


def _constant_value(attrs: Attrs) -> Array:
    for key in ("value", "value_float", "value_floats", "value_int", "value_ints"):
        if key in attrs:
            value = attrs[key]
            return numpy_helper.to_array(value) if key == "value" else np.asarray(value)
    raise ValueError(f"unsupported Constant attribute {sorted(attrs)}")


def _check_linear(op: str, proto: onnx.NodeProto, attrs: Attrs, dependent: set[str]) -> str | None:
    """Why this op on layer-derived values would make the gradient inexact or unsupported."""
    where = f"{op} ({proto.name or proto.output[0]})"
    if op not in DIFFERENTIABLE:
        return f"{where} is not linear or piecewise linear"
    flags = [name in dependent for name in proto.input]
    if op in ("Gemm", "Mul", "Div") and sum(flags) > 1:
        return f"{where} multiplies two layer-dependent values"
    if op == "Div" and flags[1]:
        return f"{where} divides by a layer-dependent value"
    if op == "Gemm" and (not flags[0] or any(flags[1:])):
        return f"{where} takes the layer's values as its weights or bias"
    if op == "MatMul" and all(flags):
        return f"{where} multiplies two layer-dependent values"
    if op in ("Reshape", "Squeeze", "Unsqueeze", "ReduceMean") and any(flags[1:]):
        return f"{where} takes its shape from the layer's values"
    if op == "BatchNormalization" and (any(flags[1:]) or int(attrs.get("training_mode", 0))):
        return f"{where} is in training mode or takes its statistics from the layer"
    if op == "Dropout":
        if len(proto.input) > 2 and proto.input[2]:
            return f"{where} has a training_mode input"
        if len(proto.output) > 1 and proto.output[1]:
            return f"{where} uses its mask"
    if op in ("MaxPool", "AveragePool"):
        if attrs.get("auto_pad", b"NOTSET") not in (b"NOTSET", b"VALID", "NOTSET", "VALID"):
            return f"{where} uses auto_pad"
        if any(d != 1 for d in attrs.get("dilations", [1])):
            return f"{where} is dilated"
        if op == "AveragePool" and int(attrs.get("ceil_mode", 0)):
            return f"{where} uses ceil_mode"
        if len(proto.output) > 1 and proto.output[1]:
            return f"{where} outputs its indices"
        if len(attrs.get("kernel_shape", [])) != 2:
            return f"{where} is not a 2-D pool"
    return None


# ---- forward implementations: (inputs, attrs) -> outputs -------------------------------

def _reshape_target(data: Array, shape: Array, allowzero: int) -> list[int]:
    target = [int(d) for d in shape]
    if not allowzero:
        target = [data.shape[i] if d == 0 else d for i, d in enumerate(target)]
    return target


def _axes(inputs: list[Array | None], attrs: Attrs) -> list[int] | None:
    if len(inputs) > 1 and inputs[1] is not None:
        return [int(a) for a in np.asarray(inputs[1]).reshape(-1)]
    if "axes" in attrs:
        return [int(a) for a in attrs["axes"]]
    return None


def _unsqueeze(x: Array, axes: list[int]) -> Array:
    rank = x.ndim + len(axes)
    for axis in sorted(a % rank for a in axes):
        x = np.expand_dims(x, axis)
    return x


def _gemm_operands(inputs: list[Array | None], attrs: Attrs) -> tuple[Array, Array]:
    a, b = inputs[0], inputs[1]
    assert a is not None and b is not None
    return (a.T if attrs.get("transA", 0) else a), (b.T if attrs.get("transB", 0) else b)


def _gemm(inputs: list[Array | None], attrs: Attrs) -> list[Array]:
    a, b = _gemm_operands(inputs, attrs)
    y = float(attrs.get("alpha", 1.0)) * (a @ b)
    if len(inputs) > 2 and inputs[2] is not None:
        y = y + float(attrs.get("beta", 1.0)) * inputs[2]
    return [y.astype(np.float32, copy=False)]


def _pool_geometry(x: Array, attrs: Attrs) -> tuple[list[int], list[int], list[int], list[int]]:
    """kernel, strides, pads [top, left, bottom, right] (ceil_mode folded into the end
    pads), output size."""
    kernel = [int(k) for k in attrs["kernel_shape"]]
    strides = [int(s) for s in attrs.get("strides", [1, 1])]
    pads = [int(p) for p in attrs.get("pads", [0, 0, 0, 0])]
    size = []
    for axis in range(2):
        span = x.shape[2 + axis] + pads[axis] + pads[axis + 2] - kernel[axis]
        steps = -(-span // strides[axis]) if int(attrs.get("ceil_mode", 0)) else span // strides[axis]
        if int(attrs.get("ceil_mode", 0)) and steps * strides[axis] >= x.shape[2 + axis] + pads[axis]:
            steps -= 1  # the last window must start inside the input or its left padding
        size.append(steps + 1)
        extra = (size[axis] - 1) * strides[axis] + kernel[axis] - (x.shape[2 + axis] + pads[axis] + pads[axis + 2])
        pads[axis + 2] += max(0, extra)
    return kernel, strides, pads, size


def _windows(padded: Array, kernel: list[int], strides: list[int], size: list[int]) -> Array:
    view = np.lib.stride_tricks.sliding_window_view(padded, kernel, axis=(2, 3))
    return view[:, :, : size[0] * strides[0] : strides[0], : size[1] * strides[1] : strides[1]]


def _pad(x: Array, pads: list[int], value: float) -> Array:
    return np.pad(x, ((0, 0), (0, 0), (pads[0], pads[2]), (pads[1], pads[3])), constant_values=value)


def _max_pool(inputs: list[Array | None], attrs: Attrs) -> list[Array]:
    x = inputs[0]
    assert x is not None
    kernel, strides, pads, size = _pool_geometry(x, attrs)
    windows = _windows(_pad(x, pads, -np.inf), kernel, strides, size)
    return [windows.max(axis=(-2, -1)).astype(np.float32)]


def _avg_pool(inputs: list[Array | None], attrs: Attrs) -> list[Array]:
    x = inputs[0]
    assert x is not None
    kernel, strides, pads, size = _pool_geometry(x, attrs)
    total = _windows(_pad(x, pads, 0.0), kernel, strides, size).sum(axis=(-2, -1))
    return [(total / _pool_counts(x, attrs, kernel, strides, pads, size)).astype(np.float32)]


def _pool_counts(x: Array, attrs: Attrs, kernel: list[int], strides: list[int], pads: list[int],
                 size: list[int]) -> Array:
    if int(attrs.get("count_include_pad", 0)):
        return np.full(size, float(kernel[0] * kernel[1]))
    ones = np.ones((1, 1, *x.shape[2:]), dtype=np.float32)
    counts: Array = _windows(_pad(ones, pads, 0.0), kernel, strides, size).sum(axis=(-2, -1))[0, 0]
    return counts


def _reduce_axes(x: Array, inputs: list[Array | None], attrs: Attrs) -> tuple[int, ...]:
    axes = _axes(inputs, attrs)
    if not axes:
        if int(attrs.get("noop_with_empty_axes", 0)):
            return ()
        return tuple(range(x.ndim))
    return tuple(a % x.ndim for a in axes)


def _reduce_mean(inputs: list[Array | None], attrs: Attrs) -> list[Array]:
    x = inputs[0]
    assert x is not None
    axes = _reduce_axes(x, inputs, attrs)
    if not axes:
        return [x]
    return [x.mean(axis=axes, keepdims=bool(attrs.get("keepdims", 1)), dtype=np.float32)]


def _batch_norm_affine(inputs: list[Array | None], attrs: Attrs, ndim: int) -> tuple[Array, Array]:
    scale, bias, mean, var = (np.asarray(v, dtype=np.float32) for v in inputs[1:5])
    factor = scale / np.sqrt(var + float(attrs.get("epsilon", 1e-5)))
    shape = (1, -1) + (1,) * (ndim - 2)
    return factor.reshape(shape), (bias - mean * factor).reshape(shape)


def _batch_norm(inputs: list[Array | None], attrs: Attrs) -> list[Array]:
    x = inputs[0]
    assert x is not None
    factor, shift = _batch_norm_affine(inputs, attrs, x.ndim)
    return [(x * factor + shift).astype(np.float32)]


def _constant_forward(inputs: list[Array | None], attrs: Attrs) -> list[Array]:
    return [attrs["value"]]


def _binary(fn: Callable[[Array, Array], Array]) -> Callable[[list[Array | None], Attrs], list[Array]]:
    def run(inputs: list[Array | None], attrs: Attrs) -> list[Array]:
        a, b = inputs[0], inputs[1]
        assert a is not None and b is not None
        return [fn(a, b)]

    return run


def _one(fn: Callable[[Array, list[Array | None], Attrs], Array]) -> Callable[[list[Array | None], Attrs], list[Array]]:
    def run(inputs: list[Array | None], attrs: Attrs) -> list[Array]:
        x = inputs[0]
        assert x is not None
        return [fn(x, inputs, attrs)]

    return run


def _flatten(x: Array, axis: int) -> Array:
    if axis < 0:
        axis += x.ndim
    return x.reshape(int(np.prod(x.shape[:axis])), -1)


def _gather(inputs: list[Array | None], attrs: Attrs) -> list[Array]:
    data, indices = inputs[0], inputs[1]
    assert data is not None and indices is not None
    return [np.take(data, indices.astype(np.int64), axis=int(attrs.get("axis", 0)))]


_FORWARD: dict[str, Callable[[list[Array | None], Attrs], list[Array]]] = {
    "Identity": _one(lambda x, i, a: x),
    "Dropout": _one(lambda x, i, a: x),
    "Flatten": _one(lambda x, i, a: _flatten(x, int(a.get("axis", 1)))),
    "Reshape": _one(lambda x, i, a: x.reshape(_reshape_target(x, i[1], int(a.get("allowzero", 0))))),  # type: ignore[arg-type]
    "Squeeze": _one(lambda x, i, a: np.squeeze(x, axis=tuple(_axes(i, a) or [d for d in range(x.ndim) if x.shape[d] == 1]))),
    "Unsqueeze": _one(lambda x, i, a: _unsqueeze(x, _axes(i, a) or [])),
    "Transpose": _one(lambda x, i, a: np.transpose(x, a.get("perm"))),
    "Relu": _one(lambda x, i, a: np.maximum(x, 0)),
    "MaxPool": _max_pool,
    "AveragePool": _avg_pool,
    "GlobalAveragePool": _one(lambda x, i, a: x.mean(axis=tuple(range(2, x.ndim)), keepdims=True, dtype=np.float32)),
    "GlobalMaxPool": _one(lambda x, i, a: x.max(axis=tuple(range(2, x.ndim)), keepdims=True)),
    "ReduceMean": _reduce_mean,
    "Gemm": _gemm,
    "MatMul": _binary(lambda a, b: np.matmul(a, b)),
    "Add": _binary(lambda a, b: a + b),
    "Sub": _binary(lambda a, b: a - b),
    "Mul": _binary(lambda a, b: a * b),
    "Div": _binary(lambda a, b: a / b),
    "BatchNormalization": _batch_norm,
    "Constant": _constant_forward,
    "Shape": _one(lambda x, i, a: np.asarray(x.shape[int(a.get("start", 0)) : a.get("end")], dtype=np.int64)),
    "Gather": _gather,
    "Concat": lambda i, a: [np.concatenate([v for v in i if v is not None], axis=int(a["axis"]))],
    "Cast": _one(lambda x, i, a: x.astype(helper.tensor_dtype_to_np_dtype(int(a["to"])))),
}


# ---- vector-Jacobian products: (upstream grad, inputs, attrs, dependent flags) -> grads --

Vjp = Callable[[Array, list[Array | None], Attrs, list[bool]], list[Array | None]]


def _unbroadcast(grad: Array, shape: tuple[int, ...]) -> Array:
    while grad.ndim > len(shape):
        grad = grad.sum(axis=0)
    for axis, size in enumerate(shape):
        if size == 1 and grad.shape[axis] != 1:
            grad = grad.sum(axis=axis, keepdims=True)
    return grad


def _same_shape(g: Array, inputs: list[Array | None], attrs: Attrs, dep: list[bool]) -> list[Array | None]:
    x = inputs[0]
    assert x is not None
    return [g.reshape(x.shape)]


def _vjp_transpose(g: Array, inputs: list[Array | None], attrs: Attrs, dep: list[bool]) -> list[Array | None]:
    perm = attrs.get("perm")
    if perm is None:
        return [g.T]
    return [np.transpose(g, np.argsort(perm))]


def _vjp_relu(g: Array, inputs: list[Array | None], attrs: Attrs, dep: list[bool]) -> list[Array | None]:
    x = inputs[0]
    assert x is not None
    return [g * (x > 0)]


def _vjp_max_pool(g: Array, inputs: list[Array | None], attrs: Attrs, dep: list[bool]) -> list[Array | None]:
    # The gradient goes to each window's maximum (the first one on ties, like PyTorch;
    # which tied position gets it changes no Grad-CAM weight, a sum over positions).
    x = inputs[0]
    assert x is not None
    kernel, strides, pads, size = _pool_geometry(x, attrs)
    padded = _pad(x, pads, -np.inf)
    windows = _windows(padded, kernel, strides, size)
    flat = windows.reshape(*windows.shape[:4], -1)
    arg = flat.argmax(axis=-1)
    rows = np.arange(size[0])[:, None] * strides[0] + arg // kernel[1]
    cols = np.arange(size[1])[None, :] * strides[1] + arg % kernel[1]
    grad = np.zeros(padded.shape, dtype=np.float32)
    n_idx, c_idx = np.indices(arg.shape[:2])
    np.add.at(grad, (n_idx[..., None, None], c_idx[..., None, None], rows, cols), g)
    return [grad[:, :, pads[0] : pads[0] + x.shape[2], pads[1] : pads[1] + x.shape[3]]]


def _vjp_avg_pool(g: Array, inputs: list[Array | None], attrs: Attrs, dep: list[bool]) -> list[Array | None]:
    x = inputs[0]
    assert x is not None
    kernel, strides, pads, size = _pool_geometry(x, attrs)
    share = g / _pool_counts(x, attrs, kernel, strides, pads, size)
    padded = np.zeros((x.shape[0], x.shape[1], x.shape[2] + pads[0] + pads[2], x.shape[3] + pads[1] + pads[3]),
                      dtype=np.float32)
    for dy in range(kernel[0]):
        for dx in range(kernel[1]):
            padded[:, :, dy : dy + size[0] * strides[0] : strides[0], dx : dx + size[1] * strides[1] : strides[1]] += share
    return [padded[:, :, pads[0] : pads[0] + x.shape[2], pads[1] : pads[1] + x.shape[3]]]


def _vjp_global_avg(g: Array, inputs: list[Array | None], attrs: Attrs, dep: list[bool]) -> list[Array | None]:
    x = inputs[0]
    assert x is not None
    count = int(np.prod(x.shape[2:]))
    return [np.broadcast_to(g / count, x.shape).astype(np.float32)]


def _vjp_global_max(g: Array, inputs: list[Array | None], attrs: Attrs, dep: list[bool]) -> list[Array | None]:
    x = inputs[0]
    assert x is not None
    flat = x.reshape(*x.shape[:2], -1)
    grad = np.zeros_like(flat)
    n_idx, c_idx = np.indices(x.shape[:2])
    grad[n_idx, c_idx, flat.argmax(axis=-1)] = g.reshape(*x.shape[:2])
    return [grad.reshape(x.shape)]


def _vjp_reduce_mean(g: Array, inputs: list[Array | None], attrs: Attrs, dep: list[bool]) -> list[Array | None]:
    x = inputs[0]
    assert x is not None
    axes = _reduce_axes(x, inputs, attrs)
    if not axes:
        return [g]
    if not int(attrs.get("keepdims", 1)):
        for axis in sorted(axes):
            g = np.expand_dims(g, axis)
    count = int(np.prod([x.shape[a] for a in axes]))
    return [np.broadcast_to(g / count, x.shape).astype(np.float32)]


def _vjp_gemm(g: Array, inputs: list[Array | None], attrs: Attrs, dep: list[bool]) -> list[Array | None]:
    _, b = _gemm_operands(inputs, attrs)
    grad = float(attrs.get("alpha", 1.0)) * (g @ b.T)
    return [grad.T if attrs.get("transA", 0) else grad, None, None]


def _vjp_matmul(g: Array, inputs: list[Array | None], attrs: Attrs, dep: list[bool]) -> list[Array | None]:
    a, b = inputs[0], inputs[1]
    assert a is not None and b is not None
    if dep[0]:
        grad = g @ np.swapaxes(b, -1, -2) if b.ndim > 1 else np.outer(g, b) if a.ndim > 1 else g * b
        return [_unbroadcast(grad, a.shape), None]
    grad = np.swapaxes(a, -1, -2) @ g if a.ndim > 1 else np.outer(a, g)
    return [None, _unbroadcast(grad, b.shape)]


def _vjp_add(sign: float) -> Vjp:
    def vjp(g: Array, inputs: list[Array | None], attrs: Attrs, dep: list[bool]) -> list[Array | None]:
        a, b = inputs[0], inputs[1]
        assert a is not None and b is not None
        return [_unbroadcast(g, a.shape) if dep[0] else None, _unbroadcast(sign * g, b.shape) if dep[1] else None]

    return vjp


def _vjp_mul(g: Array, inputs: list[Array | None], attrs: Attrs, dep: list[bool]) -> list[Array | None]:
    a, b = inputs[0], inputs[1]
    assert a is not None and b is not None
    if dep[0]:
        return [_unbroadcast(g * b, a.shape), None]
    return [None, _unbroadcast(g * a, b.shape)]


def _vjp_div(g: Array, inputs: list[Array | None], attrs: Attrs, dep: list[bool]) -> list[Array | None]:
    a, b = inputs[0], inputs[1]
    assert a is not None and b is not None
    return [_unbroadcast(g / b, a.shape), None]


def _vjp_batch_norm(g: Array, inputs: list[Array | None], attrs: Attrs, dep: list[bool]) -> list[Array | None]:
    x = inputs[0]
    assert x is not None
    factor, _ = _batch_norm_affine(inputs, attrs, x.ndim)
    return [g * factor, None, None, None, None]


_VJP: dict[str, Vjp] = {
    "Identity": _same_shape,
    "Dropout": _same_shape,
    "Flatten": _same_shape,
    "Reshape": _same_shape,
    "Squeeze": _same_shape,
    "Unsqueeze": _same_shape,
    "Transpose": _vjp_transpose,
    "Relu": _vjp_relu,
    "MaxPool": _vjp_max_pool,
    "AveragePool": _vjp_avg_pool,
    "GlobalAveragePool": _vjp_global_avg,
    "GlobalMaxPool": _vjp_global_max,
    "ReduceMean": _vjp_reduce_mean,
    "Gemm": _vjp_gemm,
    "MatMul": _vjp_matmul,
    "Add": _vjp_add(1.0),
    "Sub": _vjp_add(-1.0),
    "Mul": _vjp_mul,
    "Div": _vjp_div,
    "BatchNormalization": _vjp_batch_norm,
}
