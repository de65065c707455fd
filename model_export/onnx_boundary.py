"""The edges of an imported graph: what it takes and gives, rewritten to the artifact's.

The stored model takes float32 NCHW images named `input` with a dynamic batch and gives
its class output (`logits`, or `probabilities` / `log_probabilities` / `scores` for a
graph that ends in Softmax / LogSoftmax / Sigmoid, with the scores before that op tapped
as `logits`), whatever the file took and gave:

- an NHWC input (tf2onnx's) gets its NCHW input back: the Transpose the exporter put
  after the input is dropped, or one is added;
- a float16 graph gets Casts at the boundary: float32 in, float32 out;
- a fixed batch (often 1) becomes dynamic, with Reshape targets that spell the batch out
  rewritten; where the graph still will not run other batches the batch stays fixed and
  the artifact says so (`input.fixed_batch`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from artifact import OutputKind

from .errors import ExportError
from .onnx_graph import Names, constants, consumers, producers, rename_values, replace_uses, used_names

BATCH_DIM = "batch"
INPUT = "input"
LOGITS = "logits"
CLASS_OUTPUT_NAMES = {
    OutputKind.LOGITS: LOGITS,
    OutputKind.PROBABILITIES: "probabilities",
    OutputKind.LOG_PROBABILITIES: "log_probabilities",
    OutputKind.MULTILABEL: "scores",
}
FINAL_OPS = {"Softmax": OutputKind.PROBABILITIES, "LogSoftmax": OutputKind.LOG_PROBABILITIES,
             "Sigmoid": OutputKind.MULTILABEL}
# Ops between the final Softmax and the graph output that only move values around.
_RESHAPING = {"Identity", "Flatten", "Reshape", "Squeeze", "Unsqueeze", "Cast"}
_TO_NCHW = [0, 3, 1, 2]
_TO_NHWC = [0, 2, 3, 1]
Layout = Literal["NCHW", "NHWC"]
Dtype = Literal["float32", "float16"]
_DTYPES: dict[int, Dtype] = {1: "float32", 10: "float16"}


@dataclass
class Signature:
    """The graph as it comes: its image input and its class-score output."""

    input_name: str
    channels: int
    size: tuple[int, int]
    batch: int | None  # a fixed batch size, or None when already dynamic
    layout: Layout
    dtype: Dtype
    class_output: str
    output_dtype: Dtype

    def feed(self, images: np.ndarray) -> np.ndarray:
        """NCHW float32 images as the original file takes them."""
        x = images.transpose(0, 2, 3, 1) if self.layout == "NHWC" else images
        return np.ascontiguousarray(x.astype(np.float16 if self.dtype == "float16" else np.float32))


def read_signature(model: Any, file: str, size: tuple[int, int] | None, output: str | None,
                   layout: Layout | None) -> Signature:
    """One float image input [batch, C, H, W] or [batch, H, W, C] of a known size, and the
    class output (``output``, else the first graph output); refusals name what would work."""
    graph = model.graph
    init_names = {i.name for i in graph.initializer}
    inputs = [vi for vi in graph.input if vi.name not in init_names]
    if len(inputs) != 1:
        listed = ", ".join(f"{vi.name!r}" for vi in inputs)
        raise ExportError(f"{file} has {len(inputs)} graph inputs ({listed}); convscope serves models with one image "
                          "input: export the model with the other inputs fixed as constants")
    inp = inputs[0]
    if not inp.type.HasField("tensor_type"):
        raise ExportError(f"{file}: input {inp.name!r} is not a tensor; an image input is a float tensor "
                          "[batch, C, H, W]")
    tensor = inp.type.tensor_type
    dtype = _DTYPES.get(tensor.elem_type)
    if dtype is None:
        import onnx

        name = onnx.TensorProto.DataType.Name(tensor.elem_type).lower()
        raise ExportError(f"{file}: input {inp.name!r} is {name}; convscope feeds float32 (or float16) images: "
                          "export the model with a float input and any pixel scaling inside the graph")
    dims = [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else 0 for d in tensor.shape.dim]
    if len(dims) != 4:
        raise ExportError(f"{file}: input {inp.name!r} has rank {len(dims)} ({_shape_text(tensor)}); an image "
                          "input is [batch, C, H, W] or [batch, H, W, C]")
    chosen = layout or _layout(graph, inp.name, dims)
    channels = dims[1] if chosen == "NCHW" else dims[3]
    if channels == 0:
        raise ExportError(f"{file}: input {inp.name!r} has a dynamic channel count ({_shape_text(tensor)}); "
                          "export it with 1 or 3 channels fixed")
    if channels not in (1, 3):
        raise ExportError(f"{file}: input {inp.name!r} {_shape_text(tensor)} read as {chosen} has {channels} "
                          "channels; convscope feeds 1 (grey) or 3 (RGB): export it so, or give --input-layout "
                          "if the channels are on the other axis")
    fixed_hw = (dims[2], dims[3]) if chosen == "NCHW" else (dims[1], dims[2])
    return Signature(
        input_name=inp.name,
        channels=channels,
        size=_size(file, fixed_hw, size),
        batch=dims[0] or None,
        layout=chosen,
        dtype=dtype,
        class_output=_class_output(graph, file, output),
        output_dtype=_output_dtype(graph, file, output),
    )


def _shape_text(tensor: Any) -> str:
    return "[" + ", ".join(str(d.dim_value) if d.HasField("dim_value") else (d.dim_param or "?")
                           for d in tensor.shape.dim) + "]"


def _layout(graph: Any, name: str, dims: list[int]) -> Layout:
    """NHWC when only the last axis looks like channels, or when the graph's first act is
    to move the last axis to the second (tf2onnx's Transpose perm [0, 3, 1, 2])."""
    users = consumers(graph).get(name, [])
    if users and all(n.op_type == "Transpose" and _perm(n) == _TO_NCHW for n in users):
        return "NHWC"
    if dims[3] in (1, 3) and dims[1] not in (1, 3):
        return "NHWC"
    return "NCHW"


def _perm(node: Any) -> list[int]:
    from .onnx_graph import attr

    return [int(p) for p in attr(node, "perm", [])]


def _size(file: str, fixed: tuple[int, int], given: tuple[int, int] | None) -> tuple[int, int]:
    if given is not None:
        if all(fixed) and tuple(given) != fixed:
            raise ExportError(f"{file} takes {fixed[0]}x{fixed[1]} inputs, not --size {given[0]} {given[1]}")
        return (int(given[0]), int(given[1]))
    if all(fixed):
        return (int(fixed[0]), int(fixed[1]))
    raise ExportError(f"{file} has a dynamic image size: give --size H W (the size it was trained at)")


def _class_output(graph: Any, file: str, output: str | None) -> str:
    outputs = [o.name for o in graph.output]
    name = output or outputs[0]
    if name not in outputs:
        raise ExportError(f"{file} has no output {name!r}; outputs: {', '.join(outputs)} (--output NAME)")
    vi = next(o for o in graph.output if o.name == name)
    if not vi.type.HasField("tensor_type"):
        kind = vi.type.WhichOneof("value")
        raise ExportError(f"{file}: output {name!r} is a {kind}, not a tensor; the class output is a "
                          f"[batch, classes] tensor: pick one with --output or export the scores as a tensor")
    return name


def _output_dtype(graph: Any, file: str, output: str | None) -> Dtype:
    vi = next(o for o in graph.output if o.name == (output or graph.output[0].name))
    dtype = _DTYPES.get(vi.type.tensor_type.elem_type)
    if dtype is None:
        raise ExportError(f"{file}: output {vi.name!r} is not float32 or float16; the class output holds "
                          "scores: pick another with --output")
    return dtype


def detect_kind(graph: Any, class_output: str) -> tuple[OutputKind, str | None]:
    """What the class output holds, from the op that makes it, and the value before that
    op (the scores a Softmax / LogSoftmax / Sigmoid turns into its output), if any."""
    made_by = producers(graph)
    node = made_by.get(class_output)
    while node is not None and node.op_type in _RESHAPING:
        node = made_by.get(node.input[0])
    if node is None or node.op_type not in FINAL_OPS:
        return OutputKind.LOGITS, None
    return FINAL_OPS[node.op_type], node.input[0]


@dataclass
class Boundary:
    """The rewritten graph's edges and what the rewrite did."""

    input_name: str
    output_name: str
    logits_name: str | None
    fixed_batch: int | None
    rewrites: list[str] = field(default_factory=list)


def rewrite(model: Any, sig: Signature, kind: OutputKind, pre_logits: str | None, keep_batch: bool) -> Boundary:
    """Rewrite ``model`` (in place) to the artifact's edges."""
    graph = model.graph
    names = Names(used_names(graph))
    rewrites: list[str] = []
    del graph.value_info[:]  # shapes and types of the original's edges; re-inferred when needed
    fixed = sig.batch if keep_batch else None
    batch: str | int = fixed if fixed is not None else BATCH_DIM
    _rewrite_input(graph, sig, names, batch, rewrites)
    output_name, logits_name = _rewrite_outputs(graph, sig, kind, pre_logits, names, batch, rewrites)
    if sig.batch is not None and not keep_batch:
        _free_batch(graph, sig.batch)
        rewrites.append(f"the fixed batch of {sig.batch} made dynamic")
    elif fixed is not None:
        rewrites.append(f"the batch stays fixed at {fixed}: the graph runs no other (input.fixed_batch)")
    return Boundary(INPUT, output_name, logits_name, fixed, rewrites)


def _claim(graph: Any, names: Names, value: str, wanted: str) -> str:
    """Rename ``value`` to ``wanted``, first moving any other value of that name aside."""
    if value == wanted:
        return wanted
    if wanted in names.taken:
        rename_values(graph, {wanted: names.fresh(f"{wanted}_original")})
    rename_values(graph, {value: wanted})
    names.taken.add(wanted)
    return wanted


def _rewrite_input(graph: Any, sig: Signature, names: Names, batch: str | int, rewrites: list[str]) -> None:
    import onnx

    h, w = sig.size
    old = sig.input_name
    if sig.layout == "NCHW" and sig.dtype == "float32":
        _claim(graph, names, old, INPUT)
        inp = next(vi for vi in graph.input if vi.name == INPUT)
        inp.CopyFrom(onnx.helper.make_tensor_value_info(INPUT, onnx.TensorProto.FLOAT, [batch, sig.channels, h, w]))
        if old != INPUT:
            rewrites.append(f"input {old!r} named {INPUT!r}")
        return
    if old == INPUT:
        old = _claim(graph, names, old, names.fresh(f"{INPUT}_original"))
    names.taken.add(INPUT)
    graph.input.remove(next(vi for vi in graph.input if vi.name == old))
    graph.input.insert(0, onnx.helper.make_tensor_value_info(INPUT, onnx.TensorProto.FLOAT,
                                                             [batch, sig.channels, h, w]))
    added = []
    current = INPUT
    if sig.dtype == "float16":
        cast = names.fresh(f"{INPUT}_float16")
        added.append(onnx.helper.make_node("Cast", [current], [cast], to=onnx.TensorProto.FLOAT16,
                                           name="convscope/input_cast"))
        current = cast
        rewrites.append("float16 graph: float32 input cast to float16")
    if sig.layout == "NHWC":
        for node in [n for n in graph.node if old in n.input and n.op_type == "Transpose" and _perm(n) == _TO_NCHW]:
            replace_uses(graph, node.output[0], current)
            graph.node.remove(node)
        if any(old in n.input for n in graph.node) or any(o.name == old for o in graph.output):
            added.append(onnx.helper.make_node("Transpose", [current], [old], perm=_TO_NHWC,
                                               name="convscope/input_to_nhwc"))
        rewrites.append(f"NHWC input {sig.input_name!r}: takes NCHW images as {INPUT!r}")
    else:
        replace_uses(graph, old, current)
    for node in reversed(added):
        graph.node.insert(0, node)


def _rewrite_outputs(graph: Any, sig: Signature, kind: OutputKind, pre_logits: str | None, names: Names,
                     batch: str | int, rewrites: list[str]) -> tuple[str, str | None]:
    """Keep only the class output, under its artifact name, and tap the scores before a
    final Softmax / LogSoftmax / Sigmoid as `logits`."""
    import onnx

    dropped = [o.name for o in graph.output if o.name != sig.class_output]
    for o in [o for o in graph.output if o.name != sig.class_output]:
        graph.output.remove(o)
    if dropped:
        rewrites.append(f"outputs {', '.join(repr(d) for d in dropped)} dropped (not the class output)")
    wanted = CLASS_OUTPUT_NAMES[kind]
    classes = _classes(graph, sig.class_output)
    output_name = _float32_output(graph, names, sig.class_output, wanted, sig.output_dtype, rewrites)
    vi = next(o for o in graph.output if o.name == output_name)
    vi.CopyFrom(onnx.helper.make_tensor_value_info(output_name, onnx.TensorProto.FLOAT, [batch, classes]))
    if pre_logits is None or kind == OutputKind.LOGITS:
        return output_name, None
    logits = _float32_output(graph, names, pre_logits, LOGITS, sig.output_dtype, rewrites, tap=True)
    graph.output.append(onnx.helper.make_tensor_value_info(logits, onnx.TensorProto.FLOAT, [batch, classes]))
    rewrites.append(f"the scores before the final op tapped as {LOGITS!r}")
    return output_name, logits


def _classes(graph: Any, name: str) -> int | None:
    vi = next(o for o in graph.output if o.name == name)
    dims = vi.type.tensor_type.shape.dim
    return dims[-1].dim_value if len(dims) == 2 and dims[-1].HasField("dim_value") else None


def _float32_output(graph: Any, names: Names, value: str, wanted: str, dtype: Dtype, rewrites: list[str],
                    tap: bool = False) -> str:
    """``value`` as a float32 output named ``wanted``: renamed, or cast from float16."""
    import onnx

    if dtype == "float32":
        return _claim(graph, names, value, wanted)
    if wanted in names.taken:  # the float16 value itself, or another value, moves aside
        moved = names.fresh(f"{wanted}_float16" if value == wanted else f"{wanted}_original")
        rename_values(graph, {wanted: moved})
        value = moved if value == wanted else value
    names.taken.add(wanted)
    graph.node.append(onnx.helper.make_node("Cast", [value], [wanted], to=onnx.TensorProto.FLOAT,
                                            name=f"convscope/{wanted}_cast"))
    if not tap:
        next(o for o in graph.output if o.name == value).name = wanted
        rewrites.append(f"float16 output {value!r} cast to float32")
    return wanted


def _free_batch(graph: Any, fixed: int) -> None:
    """Reshape targets that spell out the old batch size (e.g. [1, 576] before a Gemm)
    get -1 (or 0, ONNX's "copy from the input", when -1 is taken) in its place."""
    from onnx import numpy_helper

    inits = {init.name: init for init in graph.initializer}
    consts = constants(graph)
    for node in graph.node:
        if node.op_type != "Reshape" or len(node.input) < 2 or node.input[1] not in consts:
            continue
        shape = np.array(consts[node.input[1]]).copy()
        if shape.ndim != 1 or len(shape) < 2 or shape[0] != fixed:
            continue
        allowzero = next((a for a in node.attribute if a.name == "allowzero" and a.i), None)
        if -1 not in shape[1:]:
            shape[0] = -1  # infer the batch from the element count
        elif allowzero is None or 0 not in shape[1:]:
            shape[0] = 0  # copy the batch from the input
            if allowzero is not None:  # (the dynamo exporter's allowzero=1 means nothing without a 0)
                allowzero.i = 0
        else:
            continue  # cannot say it; the dynamic-batch check will keep the batch fixed
        tensor = numpy_helper.from_array(shape.astype(np.int64), node.input[1])
        if node.input[1] in inits:
            inits[node.input[1]].CopyFrom(tensor)
        else:  # a Constant node: give this Reshape its own initializer (others may share it)
            fresh = f"{node.input[1]}_batch_free"
            graph.initializer.append(numpy_helper.from_array(shape.astype(np.int64), fresh))
            node.input[1] = fresh
