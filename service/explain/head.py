"""Exact Grad-CAM gradients without autodiff: the part of the network after a tapped layer
("the head"), replayed in numpy and differentiated in closed form.

Grad-CAM needs d(target score)/d(layer activations). The heads of real classifiers are
short chains of ops whose vector-Jacobian products have closed forms (ops.py): pooling,
flattening, dense layers, batch and layer norm, and smooth or piecewise-linear activations
(ReLU, ReLU6, HardSwish, SiLU, GELU...). ``HeadAnalysis`` finds out, once per layer when a
model loads, whether the graph between the layer and the class output is made of those;
``GradHead.gradient`` then runs the head forward from the layer's activations, for the
very input explained, and back-propagates the target score exactly, in float32 like the
model.

What is differentiated: the class score before a final Softmax, LogSoftmax or Sigmoid
(``metadata.output.logits`` when the artifact names it, else the input of such a last op
when the class output ends in one, else the class output itself): Grad-CAM's logit.

Values that only compute shapes (Shape, Size and what is computed from them or from
constants alone: the Gather / Unsqueeze / Concat of ``x.view(x.size(0), -1)``) are not
data paths: they are evaluated, never differentiated, and a Shape of a value outside the
head (the dynamo exporter reads the batch size off the graph's input) is answered from the
graph's static shapes for one image (shapes.py).

Anything else between the layer and the score (a 3x3 Conv, a custom op, a second path
from the input that bypasses the layer) makes the layer ``NotExact``, with a reason that
names the op and what would make grad-cam work.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper

from service.explain import shapes
from service.explain.ops import OPS, NodeView, constant_value, role

Array = np.ndarray

# A class output made by one of these from the scores: the scores are what gradient methods
# differentiate (Grad-CAM's logit), never the probability.
FINAL_ACTIVATIONS = ("Softmax", "LogSoftmax", "Sigmoid")
# An int8 weight at least this large is dequantized per replay, never kept as float32.
LARGE_WEIGHT_BYTES = 1 << 20
# Ops that may sit between that final activation and the class output, moving values only.
PASS_THROUGH = ("Identity", "Flatten", "Reshape", "Squeeze", "Unsqueeze")


@dataclass(frozen=True)
class NotExact:
    """Why Grad-CAM would not be exact at a layer: the op that stops it, and what would help."""

    reason: str


@dataclass(frozen=True)
class _Node:
    op: str
    name: str  # "Op (node name)", for messages
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    attrs: Mapping[str, Any]
    dependent: tuple[bool, ...]  # per input: computed from the layer (meta inputs never are)
    backward: bool  # on the path from the layer to the score: its VJP runs


@dataclass(frozen=True)
class GradHead:
    """The ops from one tapped layer to the class output, runnable and differentiable in numpy."""

    layer: str
    output: str  # the class output
    score: str  # the value differentiated: the class scores before a final Softmax / Sigmoid
    nodes: tuple[_Node, ...]
    constants: Mapping[str, Array] = field(repr=False)  # weights and folded shape values
    # The tapped layer is Transpose(layer value, tapped_perm) (an import's channel-last value
    # tapped as NCHW: service/explain and the maps are NCHW); None: the value as tapped.
    tapped_perm: tuple[int, ...] | None = None

    @property
    def ops(self) -> tuple[str, ...]:
        """The op types differentiated between the layer and the score, in graph order."""
        return tuple(node.op for node in self.nodes if node.backward)

    def forward(self, activations: Array) -> Array:
        """The class output for one image's layer activations ([1, ...] as the graph has them)."""
        return self._run(activations)[self.output]

    def gradient(self, activations: Array, target: int) -> tuple[Array, Array]:
        """(class output [1, classes], d score[0, target] / d activations), both float32.

        ``activations`` is the layer's output for one image, batch dimension included.
        """
        if activations.shape[0] != 1:
            raise ValueError(f"one image at a time, not a batch of {activations.shape[0]}")
        values = self._run(activations)
        outputs, score = values[self.output], values[self.score]
        if score.size != outputs.size:
            raise ValueError(f"the score {self.score!r} has {score.size} values for {outputs.size} classes")
        seed = np.zeros(score.shape, dtype=np.float32)
        seed.reshape(-1)[target] = 1.0
        grads: dict[str, Array] = {self.score: seed}
        for node in reversed(self.nodes):
            upstream = grads.get(node.outputs[0]) if node.backward else None
            if upstream is None:
                continue  # off the path, or its result does not reach the score
            vjp = OPS[node.op].vjp
            assert vjp is not None, "the analysis only marks ops with a VJP as backward"
            inputs = [values.get(name) if name else None for name in node.inputs]
            results = [values[name] for name in node.outputs if name in values]
            for name, flag, grad in zip(node.inputs, node.dependent,
                                        vjp(upstream, inputs, results, node.attrs, list(node.dependent))):
                if grad is None or not flag:
                    continue
                grads[name] = grads[name] + grad if name in grads else grad
        gradient = grads.get(self.layer)
        if gradient is None:
            return outputs.astype(np.float32), np.zeros_like(activations, dtype=np.float32)
        if self.tapped_perm is not None:
            gradient = gradient.transpose(self.tapped_perm)
        return outputs.astype(np.float32), gradient.astype(np.float32).reshape(activations.shape)

    def _run(self, activations: Array) -> dict[str, Array]:
        values: dict[str, Array] = dict(self.constants)
        start = np.asarray(activations, dtype=np.float32)
        if self.tapped_perm is not None:
            start = start.transpose(np.argsort(self.tapped_perm))
        values[self.layer] = start
        for node in self.nodes:
            inputs = [values[name] if name else None for name in node.inputs]
            for name, value in zip(node.outputs, OPS[node.op].forward(inputs, node.attrs)):
                if name:
                    values[name] = value
        return values


class HeadAnalysis:
    """Where grad-cam is exact in one model: built once, asked once per tapped layer.

    ``constants`` is a cache of initializer arrays (and folded shape values) shared between
    the heads of one model: AlexNet's dense weights are 230 MB, and every layer's head uses
    the same ones. It may hold arrays the graph only points to (the runtime's shared
    weights, detached from the proto). ``input_shapes``: each graph input's shape for one
    image where the graph leaves a dimension open (the artifact's input recipe).
    """

    def __init__(self, model: onnx.ModelProto, constants: dict[str, Array] | None = None,
                 input_shapes: Mapping[str, Sequence[int]] | None = None) -> None:
        graph = model.graph
        self._graph = graph
        self._model = model
        self._cache = constants if constants is not None else {}
        self._initializers = {init.name: init for init in graph.initializer}
        self._producer = {name: i for i, node in enumerate(graph.node) for name in node.output if name}
        self._inputs = {i.name for i in graph.input} - set(self._initializers)
        self._consumed = {name for node in graph.node for name in node.input} | {o.name for o in graph.output}
        self._opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 13)
        self._input_shapes = dict(input_shapes or {})
        self._static: dict[str, tuple[int, ...]] | None = None

    def head(self, layer: str, output: str, logits: str | None = None) -> GradHead | NotExact:
        """Whether d score / d ``layer`` is exact by numpy replay; the runnable head if so.
        ``logits``: the graph's value holding the scores before a final Softmax, where the
        artifact names one (``metadata.output.logits``)."""
        if output not in self._producer:
            return NotExact(f"the class output {output!r} is not computed by any node")
        if self._is_a_view(layer):
            return NotExact(f"{layer!r} is an int8 version's view of a value the model quantizes again, on the range "
                            "of the ReLU after it, on its way to the class output (docs/artifact.md, \"int8 versions\"); "
                            "grad-cam is exact at that ReLU's output")
        layer, perm = self._tapped_from(layer)
        score = logits if logits and (logits in self._producer or logits == layer) else self._score_of(output)
        to_score = self._walk([score], layer)
        if isinstance(to_score, NotExact):
            return to_score
        needed = self._walk([output, score], layer)
        if isinstance(needed, NotExact):
            return needed
        if not to_score.reached:
            return NotExact(f"the class output does not depend on {layer!r}")
        head = self._build(layer, output, score, needed, to_score.nodes)
        return replace(head, tapped_perm=perm) if isinstance(head, GradHead) and perm is not None else head

    def _tapped_from(self, layer: str) -> tuple[str, tuple[int, ...] | None]:
        """The value the graph goes on from, for a layer the importer tapped through its own
        adapters (``convscope/<layer>/to_float32``: a float16 value cast up;
        ``convscope/<layer>/to_nchw``: a channel-last value transposed), and the permutation
        that made the tapped value; the layer itself otherwise."""
        name, perm = layer, None
        while name in self._producer:
            node = self._graph.node[self._producer[name]]
            if node.op_type == "Cast" and node.name == f"convscope/{layer}/to_float32":
                name = str(node.input[0])
            elif node.op_type == "Transpose" and node.name == f"convscope/{layer}/to_nchw":
                perm = tuple(int(p) for p in helper.get_attribute_value(next(a for a in node.attribute
                                                                             if a.name == "perm")))
                name = str(node.input[0])
            else:
                break
        return name, perm

    def _is_a_view(self, layer: str) -> bool:
        """Whether ``layer`` is a DequantizeLinear of a QuantizeLinear of a float value that
        another QuantizeLinear reads too (an int8 version's view pair of a tapped layer)."""
        producer = self._producer.get(layer)
        dequantize = self._graph.node[producer] if producer is not None else None
        if dequantize is None or dequantize.op_type != "DequantizeLinear":
            return False
        quantize_index = self._producer.get(dequantize.input[0])
        if quantize_index is None or self._graph.node[quantize_index].op_type != "QuantizeLinear":
            return False
        value = self._graph.node[quantize_index].input[0]
        readers = [n for n in self._graph.node if n.op_type == "QuantizeLinear" and n.input and n.input[0] == value]
        return len(readers) > 1

    # ---- the walk back from the class output ---------------------------------------------

    def _score_of(self, output: str) -> str:
        """The scores before a final Softmax / LogSoftmax / Sigmoid, else the class output."""
        name = output
        while name in self._producer:
            node = self._graph.node[self._producer[name]]
            if node.op_type in FINAL_ACTIVATIONS and node.domain in ("", "ai.onnx"):
                return str(node.input[0])
            if node.op_type not in PASS_THROUGH:
                break
            name = node.input[0]
        return output

    def _walk(self, starts: Iterable[str], layer: str) -> _Walk | NotExact:
        """The nodes ``starts`` need, back to the layer, initializers and shape-only reads."""
        walk = _Walk()
        stack = list(starts)
        seen: set[str] = set()
        while stack:
            name = stack.pop()
            if not name or name in seen:
                continue
            seen.add(name)
            if name == layer:
                walk.reached = True
                continue
            if name in self._initializers:
                continue
            if name in self._inputs:
                return NotExact(
                    f"the class output also depends on {name!r} through a path that bypasses {layer!r} "
                    "(a skip connection or a second branch around it); grad-cam is exact at a layer that every "
                    "path to the class output goes through, such as the block output where the paths merge")
            index = self._producer.get(name)
            if index is None:
                return NotExact(f"value {name!r} has no producer in the graph")
            walk.nodes.add(index)
            node = self._graph.node[index]
            spec = OPS.get(node.op_type) if node.domain in ("", "ai.onnx") else None
            meta = spec.meta if spec else ()
            for k, value in enumerate(node.input):
                (walk.meta if k in meta else stack).append(value)
        return walk

    # ---- classifying the needed nodes ---------------------------------------------------

    def _build(self, layer: str, output: str, score: str, walk: _Walk, to_score: set[int]) -> GradHead | NotExact:
        # Every op is checked before any weight is loaded: an early layer's walk spans most
        # of the network, and a 3x3 conv near the end refuses it at once.
        classified = self._classify(layer, walk, to_score)
        if isinstance(classified, NotExact):
            return classified
        computed = {layer} | {o for i in walk.nodes for o in self._graph.node[i].output if o}
        known: dict[str, Array] = {}  # values fixed at analysis: weights, stand-ins, folded shapes
        problem = self._known_inputs(walk, computed, known)
        if problem:
            return NotExact(problem)
        nodes: list[_Node] = []
        for node in classified:
            if (not any(node.dependent) and all(not name or name in known for name in node.inputs)
                    and not _dequantizes_a_large_weight(node, known)):
                problem = self._fold(node, known)
                if problem:
                    return NotExact(problem)
            else:
                nodes.append(node)
        used = {name for node in nodes for name in node.inputs} | {output, score}
        return GradHead(layer, output, score, tuple(nodes), {k: v for k, v in known.items() if k in used})

    def _classify(self, layer: str, walk: _Walk, to_score: set[int]) -> list[_Node] | NotExact:
        """The head's nodes in graph order, each marked: which inputs hang on the layer, and
        whether its gradient is taken; or the first one that makes the gradient inexact."""
        dependent_values = {layer}
        nodes: list[_Node] = []
        for index in sorted(walk.nodes):  # ONNX stores nodes in topological order
            proto = self._graph.node[index]
            where = f"{proto.op_type} ({proto.name or proto.output[0]})"
            if proto.domain not in ("", "ai.onnx"):
                return NotExact(f"{where} is a custom op (domain {proto.domain!r}) the numpy replay cannot run; "
                                "grad-cam is exact at layers after it")
            spec = OPS.get(proto.op_type)
            if spec is None:
                return NotExact(f"{where} has no numpy replay (it is not one of the ops a classifier head is made "
                                "of); grad-cam is exact at layers after it")
            attrs = {a.name: helper.get_attribute_value(a) for a in proto.attribute}
            attrs["_opset"] = self._opset
            dependent = tuple(name in dependent_values and k not in spec.meta for k, name in enumerate(proto.input))
            view = NodeView(proto.op_type, where, attrs, dependent,
                            tuple(bool(o) and o in self._consumed for o in proto.output), self._opset)
            problem = spec.check(view) if spec.check else None
            backward = any(dependent) and index in to_score
            if not problem and backward:
                problem = self._differentiable(proto.op_type, where, dependent)
            if problem:
                return NotExact(problem)
            if any(dependent):
                dependent_values.update(o for o in proto.output if o)
            nodes.append(_Node(proto.op_type, where, tuple(proto.input), tuple(proto.output), attrs,
                               dependent, backward))
        return nodes

    def _differentiable(self, op: str, where: str, dependent: tuple[bool, ...]) -> str | None:
        spec = OPS[op]
        if spec.vjp is None:
            return (f"{where} has no closed-form gradient in the numpy replay; "
                    "grad-cam is exact at layers after it")
        for k, flag in enumerate(dependent):
            if flag and spec.wrt is not None and k not in spec.wrt:
                return (f"{where} takes {role(op, k)} from the layer's values, so the head is not a fixed "
                        "function of the layer; grad-cam is exact at layers after it")
        return None

    def _known_inputs(self, walk: _Walk, computed: set[str], known: dict[str, Array]) -> str | None:
        """Load the head's weights; stand in for values read only for their shape or type."""
        for index in walk.nodes:
            for name in self._graph.node[index].input:
                if name in self._initializers and name not in known:
                    known[name] = self._constant(name)
        for name in walk.meta:
            if not name or name in computed or name in known:
                continue
            shape = self._static_shape(name)
            if shape is None:
                return (f"the head reads the shape of {name!r}, which the graph does not fix for one image; "
                        "export the model with static input dimensions")
            known[name] = np.broadcast_to(np.zeros((), dtype=np.float32), shape)
        return None

    def _constant(self, name: str) -> Array:
        if name not in self._cache:
            self._cache[name] = numpy_helper.to_array(self._initializers[name])
        return self._cache[name]

    def _fold(self, node: _Node, known: dict[str, Array]) -> str | None:
        """Evaluate a node on constants only, once, at analysis; the result is shared with the
        other heads of the model (it depends on constants and static shapes alone)."""
        if all(not name or name in self._cache for name in node.outputs):
            known.update({name: self._cache[name] for name in node.outputs if name})
            return None
        try:
            if node.op == "Constant":
                results = [constant_value(node.attrs)]
            else:
                results = OPS[node.op].forward([known[n] if n else None for n in node.inputs], node.attrs)
        except Exception as exc:  # a shape computation numpy cannot follow: say which
            return f"{node.name} computes a constant the numpy replay cannot ({type(exc).__name__}: {exc})"
        for name, value in zip(node.outputs, results):
            if name:
                known[name] = value
                self._cache.setdefault(name, value)
        return None

    def _static_shape(self, name: str) -> tuple[int, ...] | None:
        if self._static is None:
            pinned = shapes.input_shapes(self._model, self._input_shapes)
            try:
                self._static = {**shapes.infer(self._model, pinned), **pinned}
            except Exception:  # shape inference refuses some graphs; then only the inputs are known
                self._static = pinned
        return self._static.get(name)


def _dequantizes_a_large_weight(node: _Node, known: Mapping[str, Array]) -> bool:
    """An int8 version's dense weights are dequantized on every replay rather than folded
    once: a folded float32 copy would stay as long as the model is loaded, four times the
    int8 weights' size (AlexNet: 218 MB next to the 55 MB the sessions share)."""
    if node.op != "DequantizeLinear" or not node.inputs:
        return False
    weight = known.get(node.inputs[0])
    return weight is not None and weight.nbytes >= LARGE_WEIGHT_BYTES


@dataclass
class _Walk:
    nodes: set[int] = field(default_factory=set)
    meta: list[str] = field(default_factory=list)  # values read only for their shape or type
    reached: bool = False


def analyse_head(model: onnx.ModelProto, layer: str, output: str, constants: dict[str, Array] | None = None, *,
                 logits: str | None = None,
                 input_shapes: Mapping[str, Sequence[int]] | None = None) -> GradHead | NotExact:
    """``HeadAnalysis(model, constants, input_shapes).head(layer, output, logits)``, for one layer."""
    return HeadAnalysis(model, constants, input_shapes).head(layer, output, logits)
