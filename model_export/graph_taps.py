"""Which values of an imported graph become layers, and what each one shows.

Tapped, in graph order, among the values computed from the image (`onnx_graph.data_values`):

- every Conv output (`kind` conv);
- every activation: one op (Relu, Clip = ReLU6, LeakyRelu, PRelu, Elu, Selu, Celu, Gelu,
  HardSwish, Sigmoid, Tanh, Softplus, Mish, ...) or one spelled out as `x * f(x)` with
  f a chain of elementwise ops on x alone (SiLU = x * Sigmoid(x), HardSwish = x *
  HardSigmoid(x), the erf form of GELU, Mish), taken after any constant scaling that
  follows (GELU's * 0.5); `kind` conv when the conv behind it made the map, else activation.
  A Sigmoid / HardSigmoid that only gates a product is shown by the product;
- every pool (MaxPool, AveragePool, the global pools, ReduceMean/Max over H and W);
- every merge of paths (`kind` merge): an Add / Sum of two or more image paths (a residual
  block's output), a Concat of two or more along the channels (dense, inception, fire and
  shuffle blocks), a product of an image path and a per-channel gate (squeeze-excite).

Only values whose layout is known are tapped: rank 2 `[batch, F]`, or rank 4 in NCHW or a
permutation of it (channel-last values inside a block, as ConvNeXt's, are served through a
Transpose back to NCHW; see `layouts`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .onnx_graph import Shapes, attr

ACTIVATIONS = {
    "Relu", "Clip", "LeakyRelu", "PRelu", "Elu", "Selu", "Celu", "Gelu", "HardSwish", "HardSigmoid",
    "Sigmoid", "Tanh", "Softplus", "Softsign", "Mish", "ThresholdedRelu", "Swish",
}
POOLS = {"MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool", "LpPool", "GlobalLpPool"}
REDUCE_POOLS = {"ReduceMean", "ReduceMax"}
# Ops that apply elementwise (with broadcasting) and so keep their input's layout.
ELEMENTWISE = {
    *ACTIVATIONS, "Add", "Sub", "Mul", "Div", "Pow", "Max", "Min", "Sum", "Mean", "Erf", "Exp", "Log", "Abs",
    "Neg", "Sqrt", "Reciprocal", "Identity", "Cast", "Dropout", "Where", "Floor", "Ceil", "Round",
}
# Ops that act along the last axis only (a Linear on channel-last values, a LayerNorm over C).
LAST_AXIS = {"MatMul", "LayerNormalization", "Softmax", "LogSoftmax"}
# Ops that read and write NCHW whatever came before.
NCHW_OPS = {"Conv", "ConvTranspose", "BatchNormalization", "InstanceNormalization", "LRN", *POOLS,
            "Resize", "Upsample", "DepthToSpace", "SpaceToDepth", "GroupNormalization"}
# The elementwise ops that may spell out an activation's f(x) in x * f(x).
_SPELLED = {"Sigmoid", "HardSigmoid", "Tanh", "Softplus", "Erf", "Relu", "Clip", "Exp", "Add", "Sub", "Mul",
            "Div", "Identity", "Cast", "Min", "Max"}
_SCALING = {"Mul", "Div", "Add", "Sub"}
NCHW = "NCHW"


@dataclass
class Tap:
    """One value to serve as a layer."""

    value: str  # the value in the graph
    node: Any  # the node whose output it is (the last one of a spelled-out activation)
    op: str  # the ONNX op, or the activation a few ops spell out (SiLU, HardSwish, Gelu, Mish)
    kind: str  # conv | pool | activation | merge
    layout: str | None  # rank 4: a permutation of "NCHW"; rank 2: None
    conv: Any | None = None  # the Conv whose filters made this map


class GraphView:
    """The facts about a graph that choosing taps needs, computed once."""

    def __init__(self, graph: Any, input_name: str, shapes: Shapes, consts: dict[str, Any],
                 data: set[str]) -> None:
        self.graph = graph
        self.input_name = input_name
        self.shapes = shapes
        self.consts = consts
        self.data = data
        self.producer = {out: node for node in graph.node for out in node.output if out}
        self.users: dict[str, list[Any]] = {}
        for node in graph.node:
            for name in set(node.input):
                self.users.setdefault(name, []).append(node)
        self.layout = layouts(graph, input_name, shapes)

    def data_inputs(self, node: Any) -> list[str]:
        return [i for i in node.input if i and i in self.data]

    def spatial(self, name: str) -> bool:
        shape = self.shapes.dims.get(name)
        return shape is not None and len(shape) == 4

    def full_map(self, name: str) -> bool:
        """A rank-4 value that is not a per-channel [N, C, 1, 1] vector."""
        shape = self.shapes.dims.get(name)
        return shape is not None and len(shape) == 4 and not (shape[2] == 1 and shape[3] == 1)


def layouts(graph: Any, input_name: str, shapes: Shapes) -> dict[str, str]:
    """The layout of each rank-4 value, as the order of N, C, H, W along its axes.

    A rank-4 value is NCHW, ONNX's convention, unless a Transpose moved its axes; the ops
    that act elementwise or along the last axis carry the moved order along, Conv and the
    pools read and write NCHW, and anything that reshapes starts again from NCHW.
    """
    out = {input_name: NCHW}
    for node in graph.node:
        for value in node.output:
            if shapes.rank(value) != 4:
                continue
            source = next((out[i] for i in node.input if i in out), NCHW)
            if node.op_type == "Transpose":
                perm = list(attr(node, "perm", [3, 2, 1, 0]))
                out[value] = "".join(source[p] for p in perm)
            elif node.op_type in ELEMENTWISE or node.op_type in LAST_AXIS or node.op_type == "Concat":
                out[value] = source
            else:
                out[value] = NCHW
    return out


def choose(view: GraphView, excluded: set[str]) -> list[Tap]:
    """The taps of the graph, in graph order, none of them a value in ``excluded``."""
    taps: list[Tap] = []
    seen: set[str] = set()
    gates = _gates(view)
    for node in view.graph.node:
        if not node.output or not node.output[0] or node.output[0] not in view.data:
            continue
        tap = _classify(view, node, gates)
        if tap is None or tap.value in excluded or tap.value in seen:
            continue
        rank = view.shapes.rank(tap.value)
        layout = view.layout.get(tap.value) if rank == 4 else None
        if rank not in (2, 4) or (rank == 4 and (layout is None or sorted(layout) != sorted(NCHW))):
            continue
        tap.layout = layout
        if tap.kind == "activation" and tap.conv is None:
            tap.conv = _conv_behind(view, node)
            if tap.conv is not None:
                tap.kind = "conv"
        seen.add(tap.value)
        taps.append(tap)
    return taps


def _classify(view: GraphView, node: Any, gates: set[str]) -> Tap | None:
    op = node.op_type
    value = node.output[0]
    if op in ("Conv", "ConvTranspose"):
        return Tap(value, node, op, "conv", None, conv=node)
    if op in POOLS or (op in REDUCE_POOLS and _over_space(view, node)):
        return Tap(value, node, op, "pool", None)
    if op in ACTIVATIONS:
        if value in gates or _feeds_own_product(view, node):
            return None  # shown by the product it gates (x * Sigmoid(x), or a channel gate)
        return Tap(value, node, op, "activation", None)
    if op == "Mul":
        spelled = _spelled_activation(view, node)
        if spelled is not None:
            last = _after_scaling(view, node)
            return Tap(last.output[0], last, spelled, "activation", None)
        inputs = view.data_inputs(node)
        if len(inputs) == 2 and any(i in gates for i in inputs) and any(view.full_map(i) for i in inputs):
            return Tap(value, node, op, "merge", None)
        return None
    if op in ("Add", "Sum", "Concat"):
        inputs = [i for i in view.data_inputs(node) if view.full_map(i)]
        if len(inputs) >= 2 and (op != "Concat" or _concat_axis(view, node) == 1):
            return Tap(value, node, op, "merge", None)
    return None


def _over_space(view: GraphView, node: Any) -> bool:
    axes = attr(node, "axes", None)
    if axes is None and len(node.input) > 1 and node.input[1] in view.consts:
        axes = [int(a) for a in view.consts[node.input[1]].ravel()]
    return axes is not None and sorted(a % 4 for a in axes) == [2, 3] and view.spatial(node.input[0])


def _concat_axis(view: GraphView, node: Any) -> int | None:
    axis = int(attr(node, "axis", 1))
    layout = view.layout.get(node.output[0], NCHW)
    return 1 if layout[axis % 4] == "C" else None


def _gates(view: GraphView) -> set[str]:
    """Values that scale a full map per channel: a Sigmoid / HardSigmoid (or any chain
    ending in one) of shape [N, C, 1, 1] multiplied into a map."""
    gates = set()
    for node in view.graph.node:
        if node.op_type != "Mul":
            continue
        inputs = view.data_inputs(node)
        if len(inputs) != 2:
            continue
        for gate, other in (inputs, inputs[::-1]):
            if view.full_map(other) and view.spatial(gate) and not view.full_map(gate):
                gates.add(gate)
    return gates


def _feeds_own_product(view: GraphView, node: Any) -> bool:
    """A Sigmoid-like op inside a spelled-out x * f(x): the product is the activation."""
    return any(user.op_type == "Mul" and _spelled_activation(view, user) is not None
               for user in view.users.get(node.output[0], []))


def _spelled_activation(view: GraphView, mul: Any) -> str | None:
    """For Mul(g(x), f(x)) with f and g elementwise on one value x alone (x * Sigmoid(x),
    0.5x * (1 + erf(x / sqrt 2))): SiLU, HardSwish, Gelu, Mish or Mul (another such
    activation); None for any other product."""
    inputs = view.data_inputs(mul)
    if len(inputs) != 2 or inputs[0] == inputs[1]:
        return None
    (root_a, ops_a), (root_b, ops_b) = (_root(view, i, depth=6) for i in inputs)
    if root_a != root_b or not (ops_a or ops_b):
        return None
    ops = set(ops_a) | set(ops_b)
    if ops <= {"Sigmoid", "Identity", "Cast"}:
        return "SiLU"
    if "HardSigmoid" in ops or "Clip" in ops:
        return "HardSwish"
    if "Softplus" in ops:
        return "Mish"
    if "Erf" in ops or "Tanh" in ops:
        return "Gelu"
    return "Mul"


def _root(view: GraphView, value: str, depth: int) -> tuple[str, list[str]]:
    """Walk back from value through elementwise ops with one image input (the others
    constant): the value they all start from, and the ops on the way."""
    ops: list[str] = []
    for _ in range(depth):
        node = view.producer.get(value)
        if node is None or node.op_type not in _SPELLED:
            break
        inputs = view.data_inputs(node)
        if len(inputs) != 1:
            break
        ops.append(node.op_type)
        value = inputs[0]
    return value, ops


def _after_scaling(view: GraphView, node: Any) -> Any:
    """The last node of a chain of constant scalings after ``node`` (GELU's * 0.5)."""
    while True:
        users = view.users.get(node.output[0], [])
        if len(users) != 1 or users[0].op_type not in _SCALING or len(view.data_inputs(users[0])) != 1:
            return node
        node = users[0]


_PASS_THROUGH = {"BatchNormalization", "Identity", "Cast", "Add", "Mul", "Sub", "Div"}


def _conv_behind(view: GraphView, first: Any) -> Any | None:
    """The Conv whose outputs an activation shows: behind it, through a batch norm, a
    bias or scale by constants, and casts."""
    node = first
    if node.op_type == "Mul" and _spelled_activation(view, node) is not None:
        root, _ = _root(view, view.data_inputs(node)[0], depth=6)
        node = view.producer.get(root)
    elif node.op_type in ACTIVATIONS:
        node = view.producer.get(node.input[0])
    for _ in range(4):
        if node is None:
            return None
        if node.op_type == "Conv":
            return node
        if node.op_type not in _PASS_THROUGH or len(view.data_inputs(node)) != 1:
            return None
        node = view.producer.get(view.data_inputs(node)[0])
    return None
