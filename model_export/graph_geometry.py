"""Receptive fields through any ONNX graph: for every value computed from the image, the
input pixels each of its units sees (geometry.Geometry, rows and columns apart where they
differ) and, where that field is null or leaves something out, why.

Torch-free (onnx and numpy): `model_export import` runs it on CNNs made anywhere.

The walk follows the graph in order (ONNX sorts it) and keeps one state per value
computed from the image; the pieces that only compute shapes (Shape -> Gather -> Concat
-> Reshape's second input) are not computed from it and get none. A state is

- a map: which tensor axes hold the image's rows and columns, and along each a span:
  unit i sees input pixels start + i*step .. end + i*step;
- flat: no map any more (a global pool, a Flatten, a Gemm): the value sees the whole
  image, and the note says which op mixed or folded the positions;
- unknown: an op the walk does not model; null, and the note names it.

Ops, by what they do to a span:
- windows (Conv incl. grouped and depthwise, MaxPool, AveragePool, LpPool; dilations,
  explicit pads, auto_pad SAME_*/VALID; ceil_mode only adds units): output unit o reads
  input units o*s - p .. o*s - p + (k-1)*d;
- grid shifts: Pad (o reads o - p), Slice (o reads start + o*step), Split;
- resampling (Resize, Upsample, ConvTranspose, DepthToSpace): not an affine function
  of o, so the span is the smallest one on the new grid that holds every unit's true
  window (up to a stride wider than it; the note says so);
- merges (Add, Mul, Sum, Max, Concat on channels, ...): the union of the inputs'
  windows, which needs the inputs on one grid (one step). An input broadcast over the
  positions (a [N, C, 1, 1] squeeze-excite gate, a bias from a global pool) sees the
  whole image: the field given is the main path's, and the note says so;
- layout (Transpose, Reshape, Squeeze, Unsqueeze, Gather/Split/Slice on other axes, and
  MatMul over the channels of an NHWC tensor as a Linear layer exports): the rows and
  columns move to other tensor axes, the spans stay;
- normalisation over positions (InstanceNormalization, GroupNormalization, a LayerNorm
  or Softmax over H and W): the values' own field, with a note (the statistics come from
  every position);
- everything elementwise passes the map through.
A value is flat after Gemm, GlobalAveragePool, a Reduce* or MatMul over the rows or
columns (they mix every position), or after Flatten, or a Reshape or Squeeze that folds
the rows or columns into another axis (no longer a map).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper, shape_inference

from .geometry import UNKNOWN, Axis, Geometry

# Notes on fields that are known but leave something out.
GATED = (
    "also scaled or shifted per channel by values computed from the whole image (a "
    "squeeze-excite gate, a global bias): the box shows the main path's field"
)
NORMALISED = "normalised by statistics over every position: the box shows the field of the values normalised"
MIRRORED = "reflect/edge/wrap padding: units near the border also see pixels mirrored from outside their box"
RESAMPLED = (
    "resampled (Resize, Upsample, ConvTranspose, DepthToSpace): the box is the smallest window "
    "on the new grid that holds every unit's field, up to one stride wider than it"
)
FOLD_ROUNDS = 256
FOLD_LIMIT = 4096  # elements: constants this small are read (pads, axes, shapes); weights are not
ROWS, COLS = 0, 1
AXIS_NAMES = ("rows", "columns")


@dataclass(frozen=True)
class Field:
    """Where the units of one value look in the input image.

    geometry: the field (geometry.Geometry); for a value that is no longer a map the whole
    image with stride None, and null where the walk cannot know it.
    note: why the field is null or whole-image, or what it leaves out; None when it is
    exactly the pixels the units read.
    axes: the value's tensor axes holding the image's rows and columns, for a map (NCHW:
    (2, 3); after a layout Transpose to NHWC: (1, 2)); None otherwise.
    """

    geometry: Geometry
    note: str | None = None
    axes: tuple[int, int] | None = None


def receptive_fields(
    model: onnx.ModelProto,
    input_name: str,
    *,
    size: tuple[int, int] | None = None,
    axes: tuple[int, int] = (2, 3),
) -> dict[str, Field]:
    """Every value of the graph computed from the image input `input_name` -> its Field.

    `axes`: the input's tensor axes holding the image's rows and columns (NCHW: (2, 3),
    NHWC: (1, 2)); `size` (H, W) is needed only where the graph's input size is dynamic."""
    graph = _Graph(model, input_name, size, axes)
    image = _Span(0, 0, 1)
    states: dict[str, _State] = {input_name: _Map(axes, (image, image), graph.input_rank, bounds=graph.image_bounds)}
    for node in model.graph.node:
        if node.op_type in SHAPE_ONLY:
            continue
        ins = [states.get(name) if name else None for name in node.input]
        captured = _captured(node)
        if all(state is None for state in ins) and not any(name in states for name in captured):
            continue
        if captured:  # If, Loop, Scan
            outs: list[_State] = [_Unknown(f"{node.op_type} with a subgraph is not modelled here")] * len(node.output)
        else:
            outs = _step(node, ins, graph)
        for name, state in zip(node.output, outs, strict=True):
            if name:
                states[name] = state
    return {name: graph.field(state) for name, state in states.items()}


@dataclass(frozen=True)
class _Span:
    """One image axis of a map: unit i sees input pixels start + i*step .. end + i*step."""

    start: int
    end: int
    step: int

    def through(self, first: int, last: int, step: int) -> _Span:
        """After an op whose output unit o reads input units first + o*step .. last + o*step."""
        return _Span(self.start + first * self.step, self.end + last * self.step, self.step * step)

    def cover(self, reads: Sequence[tuple[int, int] | None], ratio: Fraction) -> _Span | None:
        """After an op whose output unit o reads input units reads[o] (None: none), on a
        grid of `ratio` input units per output unit: the smallest span holding every
        unit's window; None where the new step is not a whole number of pixels."""
        step = self.step * ratio
        if step.denominator != 1 or step <= 0:
            return None
        jump = int(step)
        windows = [
            (self.start + r[0] * self.step - o * jump, self.end + r[1] * self.step - o * jump)
            for o, r in enumerate(reads)
            if r is not None
        ]
        if not windows:
            return None
        return _Span(min(w[0] for w in windows), max(w[1] for w in windows), jump)

    def union(self, other: _Span) -> _Span:
        return _Span(min(self.start, other.start), max(self.end, other.end), self.step)

    @property
    def axis(self) -> Axis:
        return Axis(self.end - self.start + 1, self.step, self.start)


_Bound = tuple[int, int]  # first and last input pixel along one image axis
UNBOUNDED: _Bound = (-(1 << 62), 1 << 62)


@dataclass(frozen=True)
class _Map:
    axes: tuple[int, int]  # tensor axes of the image's rows and columns
    spans: tuple[_Span, _Span]
    rank: int
    notes: tuple[str, ...] = ()
    # The pixels any unit sees at all, per axis: a unit's window clipped to them is its
    # field. Narrower than the image where an op reads past its input's last unit (a
    # ceil_mode pool after an unpadded strided conv that never read the last column).
    bounds: tuple[_Bound, _Bound] = (UNBOUNDED, UNBOUNDED)

    def moved(self, axes: tuple[int, int], rank: int) -> _Map:
        return _Map(axes, self.spans, rank, self.notes, self.bounds)

    def noted(self, *notes: str) -> _Map:
        return _Map(self.axes, self.spans, self.rank, tuple(dict.fromkeys([*self.notes, *notes])), self.bounds)

    def regrid(self, spans: Sequence[_Span], graph: _Graph, name: str) -> _Map:
        """The map an op makes by reading this one (value `name`) on a new grid: a window
        reaching past this map's first or last unit reads padding there, so the new units
        see only pixels that some unit of this map sees."""
        bounds = []
        for i in (ROWS, COLS):
            first, last = self.bounds[i]
            units = graph.dim(name, self.axes[i])
            if units:
                span = self.spans[i]
                first, last = max(first, span.start), min(last, span.end + (units - 1) * span.step)
            bounds.append((first, last))
        return _Map(self.axes, (spans[ROWS], spans[COLS]), self.rank, self.notes, (bounds[ROWS], bounds[COLS]))


@dataclass(frozen=True)
class _Flat:
    note: str
    mixed: bool  # an op mixed every position (else one only folded them into other axes)


@dataclass(frozen=True)
class _Unknown:
    note: str


_State = _Map | _Flat | _Unknown
_Handler = Callable[[onnx.NodeProto, list["_State | None"], "_Graph"], list["_State"]]
_MapHandler = Callable[[onnx.NodeProto, "_Map", "_Graph"], list["_State"]]

# Ops whose outputs depend on their input's shape only, never on its values.
SHAPE_ONLY = {"Shape", "Size", "RandomNormalLike", "RandomUniformLike", "EyeLike"}


class _Graph:
    """What the walk knows about the graph besides the states: shapes (inferred on a
    copy whose input has a concrete size), small constants (folded where they are
    computed from shapes), attributes."""

    def __init__(
        self, model: onnx.ModelProto, input_name: str, size: tuple[int, int] | None, axes: tuple[int, int]
    ) -> None:
        self.opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 1)
        self.shapes, self.consts = _shapes_and_constants(model, input_name, size, axes)
        shape = self.shapes.get(input_name) or []
        self.input_rank = len(shape) or 4
        dims = [shape[a] if a < len(shape) else -1 for a in axes]
        self.image = (dims[0], dims[1]) if min(dims) > 0 else size
        self.image_bounds: tuple[_Bound, _Bound] = (UNBOUNDED, UNBOUNDED)
        if self.image is not None:
            self.image_bounds = ((0, self.image[0] - 1), (0, self.image[1] - 1))

    def field(self, state: _State) -> Field:
        if isinstance(state, _Map):
            rows, cols = (span.axis for span in state.spans)
            geometry = Geometry.of_axes(rows, cols, self._bounds(state))
            return Field(geometry, "; ".join(state.notes) or None, state.axes)
        if isinstance(state, _Flat):
            return Field(Geometry.whole(self.image), state.note)
        return Field(UNKNOWN, state.note)

    def _bounds(self, state: _Map) -> tuple[int, int, int, int] | None:
        """(left, top, right, bottom) pixels the map sees at all, right and bottom
        exclusive; None where that is the whole image."""
        if self.image is None or state.bounds == self.image_bounds:
            return None
        (top, bottom), (left, right) = state.bounds
        height, width = self.image
        return (max(left, 0), max(top, 0), min(right + 1, width), min(bottom + 1, height))

    def shape(self, name: str) -> list[int] | None:
        """Dims of a value, -1 where unknown; None where even the rank is."""
        return self.shapes.get(name)

    def dim(self, name: str, axis: int) -> int | None:
        shape = self.shapes.get(name)
        return shape[axis] if shape is not None and 0 <= axis < len(shape) and shape[axis] >= 0 else None

    def rank(self, name: str) -> int | None:
        shape = self.shapes.get(name)
        return None if shape is None else len(shape)

    def const(self, name: str) -> np.ndarray | None:
        return self.consts.get(name) if name else None

    def ints(self, node: onnx.NodeProto, attr: str, index: int) -> list[int] | None:
        """An int list given as attribute `attr` (older opsets) or as constant input `index`."""
        if len(node.input) > index and node.input[index]:
            value = self.const(node.input[index])
            return None if value is None else [int(v) for v in value.ravel()]
        found = _attr(node, attr, None)
        return None if found is None else [int(v) for v in found]


def _captured(node: onnx.NodeProto) -> list[str]:
    """Values a node's subgraphs (If, Loop, Scan) read, its own inputs aside: a branch
    may use the image without the node listing it."""
    names = []
    for a in node.attribute:
        for sub in [a.g] if a.type == onnx.AttributeProto.GRAPH else list(a.graphs):
            for inner in sub.node:
                names += [*inner.input, *_captured(inner)]
    return names


def _pair(values: Any) -> tuple[int, int]:
    first, second = values
    return int(first), int(second)


def _attr(node: onnx.NodeProto, name: str, default: Any) -> Any:
    for a in node.attribute:
        if a.name == name:
            value = helper.get_attribute_value(a)
            return value.decode() if isinstance(value, bytes) else value
    return default


def _step(node: onnx.NodeProto, ins: list[_State | None], graph: _Graph) -> list[_State]:
    """The states of one node's outputs, given those of its inputs (None: not data)."""
    outputs = len(node.output)
    data = [state for state in ins if state is not None]
    unknown = next((state for state in data if isinstance(state, _Unknown)), None)
    if unknown is not None:
        return [unknown] * outputs
    if not any(isinstance(state, _Map) for state in data):
        flats = [state for state in data if isinstance(state, _Flat)]
        mixed = next((f for f in flats if f.mixed), None)
        if mixed is None and node.op_type in MIXES_FEATURES:
            return [_Flat(f"{node.op_type} mixes every position: not a map", True)] * outputs
        return [mixed or flats[0]] * outputs
    known = node.domain in ("", "ai.onnx") and (node.op_type in MERGES or node.op_type in ON_MAP)
    if not known:
        op = f"{node.domain}.{node.op_type}" if node.domain not in ("", "ai.onnx") else node.op_type
        name = f" {node.name!r}" if node.name else ""
        return [_Unknown(f"{op}{name} is not modelled here: the field is unknown")] * outputs
    if node.op_type in MERGES:
        return MERGES[node.op_type](node, ins, graph)
    state = ins[0]
    if not isinstance(state, _Map) or any(other is not None for other in ins[1:]):
        # e.g. a Conv whose weights, a Resize whose sizes, a Gather whose indices come from the image
        return [_Unknown(f"{node.op_type} of a value computed from the image other than its input")] * outputs
    return ON_MAP[node.op_type](node, state, graph)


# --- merges and elementwise ops -------------------------------------------------------


def _elementwise(node: onnx.NodeProto, ins: list[_State | None], graph: _Graph) -> list[_State]:
    """Ops that compute each output position from the same position of every input
    (numpy broadcasting): the union of the inputs' fields."""
    merged = _merge(node, ins, graph, concat_axis=None)
    extra: list[_State] = [merged] * (len(node.output) - 1)
    if node.op_type == "BatchNormalization" and extra:  # training mode: batch statistics
        extra = [_Flat("BatchNormalization statistics mix every position: not a map", True)] * len(extra)
    return [merged, *extra]


def _concat(node: onnx.NodeProto, ins: list[_State | None], graph: _Graph) -> list[_State]:
    return [_merge(node, ins, graph, concat_axis=int(_attr(node, "axis", 0)))]


def _merge(node: onnx.NodeProto, ins: list[_State | None], graph: _Graph, concat_axis: int | None) -> _State:
    out = node.output[0]
    ranks = [s.rank for s in ins if isinstance(s, _Map)]
    rank = graph.rank(out) or max(ranks)
    maps: list[_Map] = []
    gated = False
    for name, state in zip(node.input, ins, strict=True):
        if isinstance(state, _Flat):
            gated = True
        elif isinstance(state, _Map):
            shift = rank - state.rank
            moved = state.moved((state.axes[0] + shift, state.axes[1] + shift), rank)
            if _broadcast(graph, name, state.axes, out, moved.axes):
                gated = True
            else:
                maps.append(moved)
    if not maps:
        return _Flat(f"{node.op_type} broadcasts a value that sees the whole image: not a map", True)
    axes = maps[0].axes
    if any(m.axes != axes for m in maps):
        return _Unknown(f"{node.op_type} merges maps whose rows and columns lie on different axes")
    if concat_axis is not None and concat_axis % rank in axes:
        return _Unknown(f"Concat along the image's {AXIS_NAMES[axes.index(concat_axis % rank)]} is not modelled")
    spans = list(maps[0].spans)
    for m in maps[1:]:
        for i in (ROWS, COLS):
            if m.spans[i].step != spans[i].step:
                return _Unknown(
                    f"{node.op_type} merges grids of {spans[i].step} and {m.spans[i].step} px between "
                    f"{AXIS_NAMES[i]}: no one stride"
                )
            spans[i] = spans[i].union(m.spans[i])
    notes = tuple(dict.fromkeys(n for m in maps for n in m.notes))
    rows, cols = ((min(m.bounds[i][0] for m in maps), max(m.bounds[i][1] for m in maps)) for i in (ROWS, COLS))
    merged = _Map(axes, (spans[ROWS], spans[COLS]), rank, notes, (rows, cols))
    return merged.noted(GATED) if gated else merged


def _broadcast(graph: _Graph, name: str, axes: tuple[int, int], out: str, out_axes: tuple[int, int]) -> bool:
    """Whether input `name` is spread over the output's positions (one unit wide, the
    output not)."""
    for axis, out_axis in zip(axes, out_axes, strict=True):
        size, out_size = graph.dim(name, axis), graph.dim(out, out_axis)
        if size == 1 and out_size is not None and out_size > 1:
            return True
    return False


# --- sliding windows -------------------------------------------------------------------


def _window(node: onnx.NodeProto, state: _Map, graph: _Graph) -> list[_State]:
    """Conv (any groups), MaxPool, AveragePool, LpPool."""
    kernel = _attr(node, "kernel_shape", None)
    if kernel is None and len(node.input) > 1:
        weight = graph.shape(node.input[1])
        kernel = weight[2:] if weight is not None else None
    if not kernel or min(kernel) < 1 or any(a < 2 for a in state.axes) or state.rank != len(kernel) + 2:
        return [_Unknown(f"{node.op_type} over this layout or with an unknown kernel is not modelled")] * len(
            node.output
        )
    spans = list(state.spans)
    for i, axis in enumerate(state.axes):
        j = axis - 2
        k, s, d = int(kernel[j]), _nth(node, "strides", j), _nth(node, "dilations", j)
        before = _pad_before(node, j, k, s, d, graph.dim(node.input[0], axis))
        if before is None:
            return [_Unknown(f"{node.op_type} pads an input of unknown size (auto_pad SAME)")] * len(node.output)
        spans[i] = spans[i].through(-before, -before + (k - 1) * d, s)
    return [state.regrid(spans, graph, node.input[0])] * len(node.output)


def _nth(node: onnx.NodeProto, attr: str, index: int, default: int = 1) -> int:
    values = _attr(node, attr, None)
    return int(values[index]) if values is not None and len(values) > index else default


def _pad_before(node: onnx.NodeProto, j: int, k: int, s: int, d: int, size: int | None) -> int | None:
    """Units of padding before the first one along spatial axis j (None: not known)."""
    auto_pad = _attr(node, "auto_pad", "NOTSET")
    if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        if size is None:
            return None
        total = max((-(-size // s) - 1) * s + (k - 1) * d + 1 - size, 0)
        return total // 2 if auto_pad == "SAME_UPPER" else total - total // 2
    if auto_pad == "VALID":
        return 0
    return _nth(node, "pads", j, 0)


def _global(node: onnx.NodeProto, ins: list[_State | None], graph: _Graph) -> list[_State]:
    return [_Flat(f"{node.op_type} mixes every position: not a map", True)] * len(node.output)


def _conv_transpose(node: onnx.NodeProto, state: _Map, graph: _Graph) -> list[_State]:
    """Output unit o gathers input units j with o = j*s - p + t*d, t < k."""
    weight = graph.shape(node.input[1])
    if weight is None or any(a < 2 for a in state.axes):
        return [_Unknown("ConvTranspose over this layout or with weights of unknown shape is not modelled")]
    spans = list(state.spans)
    for i, axis in enumerate(state.axes):
        j = axis - 2
        k, s, d = int(weight[2 + j]), _nth(node, "strides", j), _nth(node, "dilations", j)
        n_in, n_out = graph.dim(node.input[0], axis), graph.dim(node.output[0], axis)
        if n_in is None or n_out is None:
            return [_Unknown("ConvTranspose on a map of unknown size is not modelled")]
        before = _nth(node, "pads", j, 0)
        if _attr(node, "auto_pad", "NOTSET") in ("SAME_UPPER", "SAME_LOWER") or _attr(node, "output_shape", None):
            total = s * (n_in - 1) + _nth(node, "output_padding", j, 0) + (k - 1) * d + 1 - n_out
            upper = _attr(node, "auto_pad", "NOTSET") == "SAME_UPPER"
            before = total // 2 if upper else total - total // 2
        reads = []
        for o in range(n_out):
            js = [(o + before - t * d) // s for t in range(k) if (o + before - t * d) % s == 0]
            js = [x for x in js if 0 <= x < n_in]
            reads.append((min(js), max(js)) if js else None)
        span = spans[i].cover(reads, Fraction(1, s))
        if span is None:
            return [_Unknown(f"ConvTranspose makes a grid finer than one pixel along the {AXIS_NAMES[i]}")]
        spans[i] = span
    return [state.regrid(spans, graph, node.input[0]).noted(RESAMPLED)]


# --- grid shifts and resampling --------------------------------------------------------


def _pad(node: onnx.NodeProto, state: _Map, graph: _Graph) -> list[_State]:
    pads = graph.ints(node, "pads", 1)
    axes = graph.ints(node, "", 3) if len(node.input) > 3 and node.input[3] else list(range(state.rank))
    if pads is None or axes is None or len(pads) != 2 * len(axes):
        return [_Unknown("Pad by amounts computed at run time is not modelled")]
    axes = [a % state.rank for a in axes]
    spans = list(state.spans)
    mirrored = False
    for i, axis in enumerate(state.axes):
        if axis in axes:
            before, after = pads[axes.index(axis)], pads[axes.index(axis) + len(axes)]
            spans[i] = spans[i].through(-before, -before, 1)
            mirrored |= (before, after) != (0, 0) and _attr(node, "mode", "constant") != "constant"
    padded = state.regrid(spans, graph, node.input[0])
    return [padded.noted(MIRRORED) if mirrored else padded]


def _slice(node: onnx.NodeProto, state: _Map, graph: _Graph) -> list[_State]:
    if graph.opset < 10:
        starts, axes, steps = _attr(node, "starts", None), _attr(node, "axes", None), None
    else:
        starts = graph.ints(node, "", 1)
        axes = graph.ints(node, "", 3) if len(node.input) > 3 and node.input[3] else None
        steps = graph.ints(node, "", 4) if len(node.input) > 4 and node.input[4] else None
    if axes is None:
        if starts is None:  # which axes it slices is unknown
            return [_Unknown("Slice of axes computed at run time is not modelled")]
        axes = list(range(len(starts)))
    axes = [int(a) % state.rank for a in axes]
    spans = list(state.spans)
    for i, axis in enumerate(state.axes):
        if axis not in axes:
            continue
        at = axes.index(axis)
        step = 1 if steps is None else steps[at]
        size = graph.dim(node.input[0], axis)
        if starts is None or size is None:
            return [_Unknown(f"Slice of the image's {AXIS_NAMES[i]} at run-time positions is not modelled")]
        if step < 1:
            return [_Unknown(f"Slice reversing the image's {AXIS_NAMES[i]} is not modelled")]
        start = int(starts[at])
        start = min(max(start + size if start < 0 else start, 0), size)
        spans[i] = spans[i].through(start, start, step)
    return [state.regrid(spans, graph, node.input[0])]


def _split(node: onnx.NodeProto, state: _Map, graph: _Graph) -> list[_State]:
    axis = int(_attr(node, "axis", 0)) % state.rank
    if axis not in state.axes:
        return [state] * len(node.output)
    i = state.axes.index(axis)
    size = graph.dim(node.input[0], axis)
    parts = graph.ints(node, "split", 1)
    if parts is None and size is not None:
        count = len(node.output)
        chunk = -(-size // count)
        parts = [min(chunk, size - k * chunk) for k in range(count)]
    if parts is None:
        return [_Unknown(f"Split of the image's {AXIS_NAMES[i]} at run-time positions is not modelled")] * len(
            node.output
        )
    outs: list[_State] = []
    for k in range(len(node.output)):
        spans = list(state.spans)
        spans[i] = spans[i].through(sum(parts[:k]), sum(parts[:k]), 1)
        outs.append(state.regrid(spans, graph, node.input[0]))
    return outs


def _resize(node: onnx.NodeProto, state: _Map, graph: _Graph) -> list[_State]:
    """Resize and Upsample: output unit o reads the input units around its source
    coordinate (ONNX's coordinate_transformation_mode), clamped to the map."""
    if _attr(node, "coordinate_transformation_mode", "") == "tf_crop_and_resize":
        return [_Unknown("Resize with tf_crop_and_resize is not modelled")]
    scales = _resize_scales(node, graph, state.rank)
    spans = list(state.spans)
    for i, axis in enumerate(state.axes):
        n_in, n_out = graph.dim(node.input[0], axis), graph.dim(node.output[0], axis)
        if n_in is None or n_out is None:
            return [_Unknown("Resize of a map of unknown size is not modelled")]
        scale = scales[axis] if scales is not None and scales[axis] > 0 else n_out / n_in
        if scale < 1 and int(_attr(node, "antialias", 0)):
            return [_Unknown("Resize with antialiased downscaling is not modelled")]
        reads = [_resize_reads(node, graph, o, scale, n_in, n_out) for o in range(n_out)]
        span = spans[i].cover(reads, Fraction(1 / scale).limit_denominator(1000))
        if span is None:
            return [_Unknown(f"Resize to a grid finer than one pixel along the image's {AXIS_NAMES[i]}")]
        spans[i] = span
    return [state.regrid(spans, graph, node.input[0]).noted(RESAMPLED)]


def _resize_scales(node: onnx.NodeProto, graph: _Graph, rank: int) -> list[float] | None:
    """Per-axis scales where the node gives them (else sizes do: scale = out / in)."""
    if node.op_type == "Upsample" or graph.opset == 10:
        index = 1
    else:
        index = 2
    if len(node.input) > index and node.input[index]:
        value = graph.const(node.input[index])
        scales = None if value is None or value.size == 0 else [float(v) for v in value.ravel()]
    else:
        found = _attr(node, "scales", None)
        scales = None if found is None else [float(v) for v in found]
    axes = _attr(node, "axes", None)
    if scales is not None and axes is not None:
        full = [1.0] * rank
        for a, s in zip(axes, scales, strict=False):
            full[int(a) % rank] = s
        scales = full
    return scales if scales is not None and len(scales) == rank else None


def _resize_reads(node: onnx.NodeProto, graph: _Graph, o: int, scale: float, n_in: int, n_out: int) -> tuple[int, int]:
    legacy = node.op_type == "Upsample" or graph.opset == 10
    mode = _attr(node, "mode", "nearest")
    transform = "asymmetric" if legacy else _attr(node, "coordinate_transformation_mode", "half_pixel")
    if transform == "align_corners":
        x = o * (n_in - 1) / (n_out - 1) if n_out > 1 else 0.0
    elif transform == "asymmetric":
        x = o / scale
    elif transform == "pytorch_half_pixel":
        x = (o + 0.5) / scale - 0.5 if n_out > 1 else 0.0
    elif transform == "half_pixel_symmetric":
        adjustment = n_out / (scale * n_in)
        x = n_in / 2 * (1 - adjustment) + (o + 0.5) / scale - 0.5
    else:  # half_pixel
        x = (o + 0.5) / scale - 0.5

    def clamp(v: int) -> int:
        return min(max(v, 0), n_in - 1)

    if mode == "nearest":
        if legacy:  # Upsample and Resize-10 round differently across runtimes: either neighbour
            return clamp(math.floor(x)), clamp(math.ceil(x))
        index = _nearest(x, _attr(node, "nearest_mode", "round_prefer_floor"))
        return clamp(index), clamp(index)
    if mode == "cubic":
        return clamp(math.floor(x) - 1), clamp(math.floor(x) + 2)
    return clamp(math.floor(x)), clamp(math.ceil(x))  # linear: the two neighbours


def _nearest(x: float, rounding: str) -> int:
    if rounding == "floor":
        return math.floor(x)
    if rounding == "ceil":
        return math.ceil(x)
    if x - math.floor(x) == 0.5:
        return math.floor(x) if rounding == "round_prefer_floor" else math.ceil(x)
    return math.floor(x + 0.5)


def _depth_to_space(node: onnx.NodeProto, state: _Map, graph: _Graph) -> list[_State]:
    block = int(_attr(node, "blocksize", 1))
    if state.rank != 4 or set(state.axes) != {2, 3}:
        return [_Unknown(f"{node.op_type} over this layout is not modelled")]
    if node.op_type == "SpaceToDepth":
        return [state.regrid([span.through(0, block - 1, block) for span in state.spans], graph, node.input[0])]
    covered = []
    for axis, span in zip(state.axes, state.spans, strict=True):
        n_in = graph.dim(node.input[0], axis)
        if n_in is None:
            return [_Unknown("DepthToSpace of a map of unknown size is not modelled")]
        new = span.cover([(o // block, o // block) for o in range(n_in * block)], Fraction(1, block))
        if new is None:
            return [_Unknown("DepthToSpace to a grid finer than one pixel is not modelled")]
        covered.append(new)
    return [state.regrid(covered, graph, node.input[0]).noted(RESAMPLED)]


# --- layout ------------------------------------------------------------------------------


def _transpose(node: onnx.NodeProto, state: _Map, graph: _Graph) -> list[_State]:
    perm = [int(p) for p in _attr(node, "perm", list(range(state.rank))[::-1])]
    return [state.moved((perm.index(state.axes[ROWS]), perm.index(state.axes[COLS])), state.rank)]


def _unsqueeze(node: onnx.NodeProto, state: _Map, graph: _Graph) -> list[_State]:
    axes = graph.ints(node, "axes", 1)
    if axes is None:
        return [_Unknown("Unsqueeze of axes computed at run time is not modelled")]
    rank = state.rank + len(axes)
    added = {a % rank for a in axes}
    kept = [a for a in range(rank) if a not in added]  # old axis k is now kept[k]
    return [state.moved((kept[state.axes[ROWS]], kept[state.axes[COLS]]), rank)]


def _squeeze(node: onnx.NodeProto, state: _Map, graph: _Graph) -> list[_State]:
    axes = graph.ints(node, "axes", 1)
    shape = graph.shape(node.input[0])
    if axes is None and shape is not None and -1 not in shape:
        axes = [a for a, d in enumerate(shape) if d == 1]
    if axes is None:
        return [_Unknown("Squeeze of axes computed at run time is not modelled")]
    removed = {a % state.rank for a in axes}
    if removed & set(state.axes):
        return [_Flat("Squeeze drops the image's rows or columns (a map one unit wide): not a map", False)]
    return [state.moved(_pair(a - sum(r < a for r in removed) for a in state.axes), state.rank - len(removed))]


def _flatten(node: onnx.NodeProto, state: _Map, graph: _Graph) -> list[_State]:
    return [_Flat("Flatten folds the image's rows and columns into one axis: not a map", False)]


def _reshape(node: onnx.NodeProto, state: _Map, graph: _Graph) -> list[_State]:
    """Row-major: input axis a survives as output axis b when the axes before each hold
    as many elements and the two are as long; else the map is folded away."""
    before, after = graph.shape(node.input[0]), graph.shape(node.output[0])
    if before is None or after is None or -1 in before or -1 in after:
        return [_Unknown("Reshape to a shape known only at run time is not modelled")]
    moved = []
    for axis in state.axes:
        lead = math.prod(before[:axis])
        found = [b for b in range(len(after)) if math.prod(after[:b]) == lead and after[b] == before[axis]]
        if not found:
            return [_Flat("Reshape folds the image's rows or columns into another axis: not a map", False)]
        moved.append(found[0] if found[0] not in moved else found[-1])
    if moved[ROWS] == moved[COLS]:
        return [_Flat("Reshape folds the image's rows and columns into one axis: not a map", False)]
    return [state.moved((moved[ROWS], moved[COLS]), len(after))]


def _gather(node: onnx.NodeProto, state: _Map, graph: _Graph) -> list[_State]:
    axis = int(_attr(node, "axis", 0)) % state.rank
    if axis in state.axes:
        return [_Unknown(f"Gather along the image's {AXIS_NAMES[state.axes.index(axis)]} is not modelled")]
    indices = graph.rank(node.input[1])
    if indices is None:
        return [_Unknown("Gather with indices of unknown rank is not modelled")]
    shift = indices - 1
    return [state.moved(_pair(a + shift if a > axis else a for a in state.axes), state.rank + shift)]


def _expand(node: onnx.NodeProto, state: _Map, graph: _Graph) -> list[_State]:
    rank = graph.rank(node.output[0])
    if rank is None:
        return [_Unknown("Expand to a shape known only at run time is not modelled")]
    shift = rank - state.rank
    moved = (state.axes[ROWS] + shift, state.axes[COLS] + shift)
    if _broadcast(graph, node.input[0], state.axes, node.output[0], moved):
        return [_Flat("Expand spreads one position over the map: not a map", True)]
    return [state.moved(moved, rank)]


def _tile(node: onnx.NodeProto, state: _Map, graph: _Graph) -> list[_State]:
    repeats = graph.ints(node, "", 1)
    if repeats is None or any(repeats[a] != 1 for a in state.axes):
        return [_Unknown("Tile over the image's rows or columns is not modelled")]
    return [state]


def _matmul(node: onnx.NodeProto, ins: list[_State | None], graph: _Graph) -> list[_State]:
    """A @ B with one operand a map: its rows and columns must be batch axes or the
    kept matrix axis (a Linear layer over the channels of an NHWC tensor); summing over
    one of them mixes every position."""
    a, b = ins[0], ins[1]
    if a is not None and b is not None:
        return [_Flat("MatMul of two values computed from the image mixes positions: not a map", True)]
    state = a if a is not None else b
    assert isinstance(state, _Map)
    other = graph.rank(node.input[1] if a is not None else node.input[0])
    rank = graph.rank(node.output[0])
    if other is None or rank is None or state.rank < 2:
        return [_Unknown("MatMul of operands of unknown rank is not modelled")]
    contracted = state.rank - 1 if a is not None else state.rank - 2
    if contracted in state.axes:
        return [_Flat("MatMul over the image's rows or columns mixes every position: not a map", True)]
    if a is not None and other == 1:
        return [state.moved(state.axes, rank)]  # the last axis is gone, the others stay
    return [state.moved(_pair(rank - 1 if x == state.rank - 1 else x + rank - state.rank for x in state.axes), rank)]


def _gemm(node: onnx.NodeProto, ins: list[_State | None], graph: _Graph) -> list[_State]:
    return [_Flat("Gemm mixes every position: not a map", True)]


# --- reductions and normalisations --------------------------------------------------------


def _reduce(node: onnx.NodeProto, state: _Map, graph: _Graph) -> list[_State]:
    if node.op_type in ("ArgMax", "ArgMin"):
        axes: list[int] | None = [int(_attr(node, "axis", 0))]
    else:
        axes = graph.ints(node, "axes", 1)
    if not axes:
        if axes is not None and int(_attr(node, "noop_with_empty_axes", 0)):
            return [state]
        if axes is None and len(node.input) > 1 and node.input[1]:
            return [_Unknown(f"{node.op_type} over axes computed at run time is not modelled")]
        axes = list(range(state.rank))
    reduced = {a % state.rank for a in axes}
    if reduced & set(state.axes):
        return [_Flat(f"{node.op_type} over the image's rows and columns mixes every position: not a map", True)]
    if int(_attr(node, "keepdims", 1)):
        return [state]
    return [state.moved(_pair(a - sum(r < a for r in reduced) for a in state.axes), state.rank - len(reduced))]


def _along_axis(node: onnx.NodeProto, state: _Map, graph: _Graph) -> list[_State]:
    """TopK, CumSum, Hardmax... along one axis: along the rows or columns, they mix them."""
    axis = graph.ints(node, "axis", 1) if node.op_type == "CumSum" else [int(_attr(node, "axis", -1))]
    if axis is None:
        return [_Unknown(f"{node.op_type} along an axis computed at run time is not modelled")] * len(node.output)
    if axis[0] % state.rank in state.axes:
        return [_Flat(f"{node.op_type} along the image's rows or columns mixes positions: not a map", True)] * len(
            node.output
        )
    return [state] * len(node.output)


def _normalise(node: onnx.NodeProto, ins: list[_State | None], graph: _Graph) -> list[_State]:
    """Each value keeps its own field; where the statistics span the rows or columns,
    they come from every position (noted)."""
    merged = _merge(node, ins, graph, concat_axis=None)
    if not isinstance(merged, _Map):
        return [merged] * len(node.output)
    axes = _normalised_axes(node, graph, merged.rank)
    noted = merged.noted(NORMALISED) if axes & set(merged.axes) else merged
    stats: list[_State] = [_Flat(f"{node.op_type} statistics mix positions: not a map", True)]
    return [noted, *stats * (len(node.output) - 1)]


def _normalised_axes(node: onnx.NodeProto, graph: _Graph, rank: int) -> set[int]:
    op = node.op_type
    if op in ("InstanceNormalization", "GroupNormalization"):
        return set(range(2, rank))
    if op == "MeanVarianceNormalization":
        return {int(a) % rank for a in _attr(node, "axes", [0, 2, 3])}
    if op == "LayerNormalization":
        return set(range(int(_attr(node, "axis", -1)) % rank, rank))
    if op == "LpNormalization":
        return {int(_attr(node, "axis", -1)) % rank}
    if op == "LRN":
        return {1}
    axis = int(_attr(node, "axis", 1 if graph.opset < 13 else -1)) % rank  # Softmax, LogSoftmax, Hardmax
    return set(range(axis, rank)) if graph.opset < 13 else {axis}


ELEMENTWISE = {
    # merges
    "Add", "Sub", "Mul", "Div", "Pow", "Mod", "Max", "Min", "Sum", "Mean", "Where", "PRelu",
    "Equal", "Greater", "GreaterOrEqual", "Less", "LessOrEqual", "And", "Or", "Xor", "BitShift",
    "BitwiseAnd", "BitwiseOr", "BitwiseXor",
    # activations and other unary ops
    "Relu", "LeakyRelu", "Elu", "Selu", "Celu", "Sigmoid", "HardSigmoid", "HardSwish", "Tanh",
    "Softplus", "Softsign", "Mish", "Gelu", "Swish", "ThresholdedRelu", "Shrink", "Clip", "Erf", "Exp",
    "Log", "Sqrt", "Reciprocal", "Abs", "Neg", "Floor", "Ceil", "Round", "Sign", "Not", "IsNaN",
    "IsInf", "Sin", "Cos", "Tan", "Asin", "Acos", "Atan", "Sinh", "Cosh", "Asinh", "Acosh", "Atanh",
    "BitwiseNot",
    # per-channel affine or type changes
    "BatchNormalization", "Dropout", "Identity", "Cast", "CastLike", "QuantizeLinear",
    "DequantizeLinear", "DynamicQuantizeLinear", "Affine", "ScaledTanh", "ImageScaler",
}  # fmt: skip
REDUCE = {
    "ReduceMean", "ReduceMax", "ReduceMin", "ReduceSum", "ReduceProd", "ReduceL1", "ReduceL2",
    "ReduceLogSum", "ReduceLogSumExp", "ReduceSumSquare", "ArgMax", "ArgMin",
}  # fmt: skip
NORMALISATIONS = {
    "InstanceNormalization", "GroupNormalization", "MeanVarianceNormalization", "LayerNormalization",
    "LpNormalization", "LRN", "Softmax", "LogSoftmax", "Hardmax",
}  # fmt: skip
# Ops that mix the features of a flattened map, i.e. its positions.
MIXES_FEATURES = {"Gemm", "MatMul", "Conv", "ConvTranspose", "Einsum", *REDUCE, *NORMALISATIONS}

# Ops that combine several inputs computed from the image (or pass one through).
MERGES: dict[str, _Handler] = {
    **{op: _elementwise for op in ELEMENTWISE},
    **{op: _normalise for op in NORMALISATIONS},
    "Concat": _concat,
    "MatMul": _matmul,
    "Gemm": _gemm,
    "GlobalAveragePool": _global,
    "GlobalMaxPool": _global,
    "GlobalLpPool": _global,
}
# Ops that transform one map, their other inputs constants (weights, pads, axes, scales).
ON_MAP: dict[str, _MapHandler] = {
    **{op: _reduce for op in REDUCE},
    "Conv": _window,
    "MaxPool": _window,
    "AveragePool": _window,
    "LpPool": _window,
    "ConvTranspose": _conv_transpose,
    "Pad": _pad,
    "Slice": _slice,
    "Split": _split,
    "Resize": _resize,
    "Upsample": _resize,
    "DepthToSpace": _depth_to_space,
    "SpaceToDepth": _depth_to_space,
    "Transpose": _transpose,
    "Unsqueeze": _unsqueeze,
    "Squeeze": _squeeze,
    "Flatten": _flatten,
    "Reshape": _reshape,
    "Gather": _gather,
    "Expand": _expand,
    "Tile": _tile,
    "TopK": _along_axis,
    "CumSum": _along_axis,
}


# --- shapes and constants ------------------------------------------------------------------


def _shapes_and_constants(
    model: onnx.ModelProto, input_name: str, size: tuple[int, int] | None, axes: tuple[int, int]
) -> tuple[dict[str, list[int]], dict[str, np.ndarray]]:
    """Every value's shape (-1 for unknown dims) and the small constants, inferred on a
    copy whose input is one image of a concrete size. Shape arithmetic (Shape -> Gather
    -> Div -> Slice, as torch.onnx writes `chunk`) is folded into constants between
    rounds of inference, where onnx's own data propagation stops."""
    skeleton = _skeleton(model, input_name, size, axes)
    consts = _constants(model.graph)
    data = _data_values(model.graph, input_name)
    opsets = {o.domain or "": o.version for o in model.opset_import}
    shapes: dict[str, list[int]] = {}
    # One round per shape known only after the previous fold: a ShuffleNet reshapes at
    # every block (its channel shuffle), each from the shape the last one produced.
    for _ in range(FOLD_ROUNDS):
        shapes = _infer(skeleton)
        folded = _fold(skeleton.graph, data, consts, shapes, opsets)
        if not folded:
            break
        nodes = [
            helper.make_node("Constant", [], [n.output[0]], value=numpy_helper.from_array(consts[n.output[0]]))
            if n.output and n.output[0] in folded else n
            for n in skeleton.graph.node
        ]
        del skeleton.graph.node[:]
        skeleton.graph.node.extend(nodes)
    for init in model.graph.initializer:
        shapes.setdefault(init.name, [int(d) for d in init.dims])
    return shapes, consts


def _skeleton(
    model: onnx.ModelProto, input_name: str, size: tuple[int, int] | None, axes: tuple[int, int]
) -> onnx.ModelProto:
    """The graph with its weights as typed inputs (no data to copy) and the image input
    one image of a concrete size."""
    graph = model.graph
    small = [init for init in graph.initializer if _small(init)]
    small_names = {init.name for init in small}
    inputs = [vi for vi in graph.input if vi.name not in small_names]
    listed = {vi.name for vi in inputs}
    inputs += [
        helper.make_tensor_value_info(init.name, init.data_type, list(init.dims))
        for init in graph.initializer
        if init.name not in small_names and init.name not in listed
    ]
    skeleton = helper.make_model(
        helper.make_graph(list(graph.node), graph.name or "graph", inputs, list(graph.output), small),
        opset_imports=list(model.opset_import),
        ir_version=model.ir_version,
    )
    skeleton.functions.extend(model.functions)
    for vi in skeleton.graph.input:
        if vi.name == input_name:
            concrete = {0: 1, **({axes[0]: size[0], axes[1]: size[1]} if size else {})}
            for axis, dim in enumerate(vi.type.tensor_type.shape.dim):
                if not dim.HasField("dim_value") and axis in concrete:
                    dim.dim_value = concrete[axis]
    return skeleton


def _small(init: onnx.TensorProto) -> bool:
    external = init.data_location == onnx.TensorProto.EXTERNAL
    return not external and math.prod(init.dims) <= FOLD_LIMIT


def _infer(model: onnx.ModelProto) -> dict[str, list[int]]:
    try:
        inferred = shape_inference.infer_shapes(model, data_prop=True)
    except Exception:  # best effort: the walk then knows fewer shapes, and says so where it needs one
        inferred = model
    shapes = {}
    for vi in [*inferred.graph.input, *inferred.graph.value_info, *inferred.graph.output]:
        if vi.type.HasField("tensor_type") and vi.type.tensor_type.HasField("shape"):
            dims = vi.type.tensor_type.shape.dim
            shapes[vi.name] = [d.dim_value if d.HasField("dim_value") else -1 for d in dims]
    return shapes


def _constants(graph: onnx.GraphProto) -> dict[str, np.ndarray]:
    values = {init.name: numpy_helper.to_array(init) for init in graph.initializer if _small(init)}
    for node in graph.node:
        if node.op_type == "Constant" and node.attribute:
            value = helper.get_attribute_value(node.attribute[0])
            if isinstance(value, onnx.TensorProto):
                values[node.output[0]] = numpy_helper.to_array(value)
            elif isinstance(value, (int, float, list)):
                values[node.output[0]] = np.array(value)
    return values


def _small_shape(shape: list[int] | None) -> bool:
    """Whether a value may be folded: small, or of a size not known (then checked after)."""
    return shape is None or -1 in shape or math.prod(shape) <= FOLD_LIMIT


def _data_values(graph: onnx.GraphProto, input_name: str) -> set[str]:
    """The values computed from the image (not from its shape alone)."""
    data = {input_name}
    for node in graph.node:
        if node.op_type not in SHAPE_ONLY and any(name in data for name in [*node.input, *_captured(node)]):
            data.update(node.output)
    return data


def _fold(
    graph: onnx.GraphProto,
    data: set[str],
    consts: dict[str, np.ndarray],
    shapes: dict[str, list[int]],
    opsets: dict[str, int],
) -> set[str]:
    """Evaluate the shape arithmetic whose inputs are now known; returns the values
    newly folded into `consts`."""
    from onnx.reference import ReferenceEvaluator

    folded = set()
    for node in graph.node:
        if len(node.output) != 1 or node.output[0] in consts or node.output[0] in data or node.domain:
            continue
        if node.op_type in ("Shape", "Size"):
            shape = shapes.get(node.input[0])
            if shape is None or -1 in shape:
                continue
            start, end = _attr(node, "start", 0), _attr(node, "end", None)
            dims = shape[start:end] if node.op_type == "Shape" else [math.prod(shape)]
            value = np.array(dims, dtype=np.int64) if node.op_type == "Shape" else np.array(dims[0], np.int64)
        elif all(not name or name in consts for name in node.input) and _small_shape(shapes.get(node.output[0])):
            feeds = {name: consts[name] for name in node.input if name}
            try:
                outputs: Any = ReferenceEvaluator(_one_node_model(node, feeds, opsets)).run(None, feeds)
                value = outputs[0]
            except Exception:  # an op the reference cannot run: left unfolded
                continue
            if not isinstance(value, np.ndarray) or value.size > FOLD_LIMIT:
                continue
        else:
            continue
        consts[node.output[0]] = value
        folded.add(node.output[0])
    return folded


def _one_node_model(node: onnx.NodeProto, feeds: dict[str, np.ndarray], opsets: dict[str, int]) -> onnx.ModelProto:
    """The node alone as a model of the graph's opsets: given a bare node, the reference
    evaluator runs the newest version of its op (opset 11's Unsqueeze with an `axes`
    attribute fails as Unsqueeze-13)."""
    inputs = [
        helper.make_tensor_value_info(name, helper.np_dtype_to_tensor_dtype(np.asarray(v).dtype), list(np.shape(v)))
        for name, v in feeds.items()
    ]
    outputs = [helper.make_empty_tensor_value_info(name) for name in node.output]
    graph = helper.make_graph([node], "fold", inputs, outputs)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid(d, v) for d, v in opsets.items()])
