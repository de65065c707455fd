"""Bring your own ONNX: rewrite a model exported elsewhere into a convscope artifact.

The rewrite makes the batch dimension dynamic, names the input `input` and the class
output `logits`, and adds the outputs of Conv/Relu/MaxPool/AveragePool/
GlobalAveragePool nodes as graph outputs with readable names. Shapes come from running
the rewritten model once in onnxruntime; parameters from the initializers; receptive
fields from walking the graph (graph_geometry.py).
"""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from artifact import MODEL_FILE, Layer, Params, Parity

from . import channel_view, graph_geometry, metadata
from .datasets import load_images
from .errors import ExportError
from .metadata import ParamCount, ParamGroup
from .parity import check_dynamic_batch, compare, run_onnx
from .preprocessing import SCALE, InputSpec, check_channels, normalisation
from .staging import Staging, check_name, choose_version

TAP_OPS = ("Conv", "Relu", "MaxPool", "AveragePool", "GlobalAveragePool")
BATCH_DIM = "batch"
PARITY_IMAGES = 8  # random-normal inputs: parity compares graphs, not accuracy


@dataclass
class ImportOptions:
    file: str
    name: str
    out: str = "models"
    version: int | None = None
    labels: str | None = None
    mean: list[float] | None = None
    std: list[float] | None = None
    size: tuple[int, int] | None = None
    scale: float = SCALE
    output: str | None = None
    tolerance: float = 1e-3
    data_dir: str | None = None  # ImageFolder images for the channel view and samples
    channel_images: int | None = None  # None: channel_view.default_images(size); 0: none
    channel_top_k: int = channel_view.DEFAULT_TOP_K
    progress: bool = True


def _load(path: str) -> Any:
    import onnx

    if not os.path.isfile(path):
        raise ExportError(f"ONNX file {path} does not exist")
    try:
        model = onnx.load(path)
    except Exception as exc:  # protobuf DecodeError, external-data OSError, ...
        raise ExportError(f"{path} is not an ONNX model ({type(exc).__name__})") from None
    # An arbitrary byte string can decode as an (almost) empty ModelProto.
    if model.ir_version <= 0 or not model.graph.node or not model.graph.output:
        raise ExportError(f"{path} is not an ONNX model (no graph)")
    _check_valid(model, f"{path} is not a valid ONNX model")
    return model


def _check_valid(model: Any, failure: str) -> None:
    import onnx

    try:
        onnx.checker.check_model(model)
    except Exception as exc:  # the checker's ValidationError, and protobuf's errors
        raise ExportError(f"{failure}: {exc}") from None


def read_labels(path: str) -> list[str]:
    """One label per line, or a JSON list of strings."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ExportError(f"cannot read labels file {path}: {exc}") from None
    stripped = text.strip()
    if stripped.startswith("["):
        try:
            labels = json.loads(stripped)
        except json.JSONDecodeError as exc:
            raise ExportError(f"labels file {path} is not a valid JSON list: {exc}") from None
        if not isinstance(labels, list):
            raise ExportError(f"labels file {path} must hold a JSON list")
        return [str(x) for x in labels]
    return [line.strip() for line in text.splitlines() if line.strip()]


def _readable(name: str, op: str) -> str:
    # TorchScript-exported names look like /features/features.0/Conv_output_0: the
    # module path is the part before the op name.
    m = re.fullmatch(r"/(?:.*/)?([^/]+)/[A-Za-z]+(?:_\d+)?_output_\d+", name)
    text = m.group(1) if m else name.strip("/").replace("/", ".")
    text = re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._-")
    if not text or text.isdigit():
        text = f"{op.lower()}_{text}" if text else op.lower()
    return text


def _rename_value(graph: Any, old: str, new: str) -> None:
    for node in graph.node:
        for i, name in enumerate(node.input):
            if name == old:
                node.input[i] = new
        for i, name in enumerate(node.output):
            if name == old:
                node.output[i] = new
    for coll in (graph.input, graph.output, graph.value_info):
        for vi in coll:
            if vi.name == old:
                vi.name = new


def _constants(graph: Any) -> dict[str, np.ndarray]:
    from onnx import numpy_helper

    values = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value":
                    values[node.output[0]] = numpy_helper.to_array(attr.t)
    return values


def _make_batch_dynamic(model: Any, input_name: str) -> int | None:
    """Turn a fixed batch dimension into `batch`; returns the old fixed size (or None).

    Reshape targets that spell out the old batch size (e.g. [1, 6] before a Gemm)
    get -1 (or 0, ONNX's "copy from the input", when -1 is taken) in its place.
    """
    from onnx import numpy_helper

    graph = model.graph
    inp = next(vi for vi in graph.input if vi.name == input_name)
    dim0 = inp.type.tensor_type.shape.dim[0]
    fixed = dim0.dim_value if dim0.HasField("dim_value") else None
    dim0.dim_param = BATCH_DIM
    for out in graph.output:
        dims = out.type.tensor_type.shape.dim
        if len(dims):
            dims[0].dim_param = BATCH_DIM
    del graph.value_info[:]  # stale fixed shapes; re-derived when needed
    if fixed:
        inits = {init.name: init for init in graph.initializer}
        for node in graph.node:
            if node.op_type != "Reshape" or node.input[1] not in inits:
                continue
            shape = numpy_helper.to_array(inits[node.input[1]]).copy()
            if shape.ndim != 1 or len(shape) < 2 or shape[0] != fixed:
                continue
            allowzero = any(a.name == "allowzero" and a.i for a in node.attribute)
            if -1 not in shape[1:]:
                shape[0] = -1  # infer the batch from the element count
            elif not allowzero:
                shape[0] = 0  # copy the batch from the input
            else:
                continue  # cannot express it; the dynamic-batch check will say so
            inits[node.input[1]].CopyFrom(numpy_helper.from_array(shape, node.input[1]))
    return fixed


def _spatial_shapes(model: Any) -> dict[str, list[int]]:
    """Static shapes of intermediate values (batch excluded) via shape inference."""
    import onnx

    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception:  # shape inference is best-effort; receptive fields go null
        return {}
    shapes = {}
    for vi in [*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output]:
        dims = vi.type.tensor_type.shape.dim
        shapes[vi.name] = [d.dim_value if d.HasField("dim_value") else -1 for d in dims]
    return shapes


def _attr(node: Any, name: str, default: Any) -> Any:
    import onnx

    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default


def _param_summary(graph: Any, consts: dict[str, np.ndarray], names: set[str]) -> Params:
    """metadata `params` from the float initializers, each counted at its first user."""
    counted: set[str] = set()
    counts = []
    for node in graph.node:
        if node.op_type == "Constant":
            continue
        n = 0
        for name in node.input:
            value = consts.get(name)
            if name in counted or value is None or not np.issubdtype(value.dtype, np.floating):
                continue
            counted.add(name)
            n += int(value.size)
        group: ParamGroup = (
            "conv"
            if node.op_type in ("Conv", "ConvTranspose")
            else "dense"
            if node.op_type in ("Gemm", "MatMul")
            else "other"
        )
        label = node.output[0] if node.output[0] in names else node.name or node.output[0]
        counts.append(ParamCount(label, node.op_type, n, group))
    return metadata.param_summary(counts)


@dataclass
class _Signature:
    """The user's graph as it comes: its image input and its class-score output."""

    input_name: str
    channels: int
    size: tuple[int, int]
    batch: int | None  # a fixed batch size, or None when already dynamic
    class_output: str


@dataclass
class _Rewritten:
    """The graph as the artifact stores it, and the names it now uses."""

    model: Any  # onnx.ModelProto
    input_name: str
    output_name: str
    taps: list[Any]  # the tapped nodes (NodeProto), graph order
    consts: dict[str, np.ndarray]
    shapes: dict[str, list[int]]  # inferred value shapes (-1 where unknown)


def import_onnx(opts: ImportOptions) -> Path:
    """Write a convscope artifact for an ONNX file; returns the new version's directory."""
    import onnx

    name = _check_options(opts)
    images = load_images(opts.data_dir) if opts.data_dir else None
    original = _load(opts.file)
    signature = _signature(original, opts)
    sample, reference = _reference_logits(opts.file, signature)
    labels = _labels(opts, reference)
    input_spec = _input_spec(opts, signature)
    rewritten = _rewrite(original, signature)
    entries = _describe_layers(rewritten, signature.size)
    with Staging(Path(opts.out), name, opts.version) as staging:
        assert staging.path is not None
        model_path = staging.path / MODEL_FILE
        onnx.save(rewritten.model, str(model_path))
        layers, parity = _check_parity(model_path, sample, reference, rewritten, entries, opts.tolerance)
        views = channel_view.Stored()
        if images is not None:  # --data-dir: images to rank and to sample
            options = channel_view.ViewOptions(opts.channel_images, opts.channel_top_k, opts.progress)
            views = channel_view.write_views(
                staging.path, model_path, layers, input_spec, images.val, images.classes, options
            )
        facts = metadata.ModelFacts(
            name=name,
            arch="imported",
            description=f"Imported from {os.path.basename(opts.file)}",
            labels=labels,
            input=input_spec,
            input_name=rewritten.input_name,
            output_name=rewritten.output_name,
            layers=layers,
            params=_param_summary(rewritten.model.graph, rewritten.consts, {e.name for e in layers}),
            parity=parity,
            opset=metadata.opset_of(rewritten.model),
            training=None,
            with_torch=False,
            views=views,
        )
        return staging.commit(lambda version, files: metadata.build(facts, version, files))


def _check_options(opts: ImportOptions) -> str:
    name = check_name(opts.name)
    if opts.version is not None:
        choose_version(Path(opts.out) / name, opts.version)
    if not opts.tolerance > 0:
        raise ExportError("--tolerance must be positive")
    if not opts.scale > 0:
        raise ExportError("--scale must be positive")
    channel_view.check_options(opts.channel_images, opts.channel_top_k)
    if opts.data_dir is None and opts.channel_images:
        raise ExportError("--channel-images needs --data-dir: the images to rank")
    return name


def _signature(model: Any, opts: ImportOptions) -> _Signature:
    """One float32 NCHW image input with a known size, and the class output."""
    import onnx

    graph = model.graph
    init_names = {i.name for i in graph.initializer}
    real_inputs = [vi for vi in graph.input if vi.name not in init_names]
    if len(real_inputs) != 1:
        raise ExportError(f"{opts.file} has {len(real_inputs)} graph inputs; one image input is needed")
    inp = real_inputs[0]
    if inp.type.tensor_type.elem_type != onnx.TensorProto.FLOAT:
        raise ExportError(f"{opts.file}: input {inp.name!r} is not float32")
    dims = inp.type.tensor_type.shape.dim
    if len(dims) != 4:
        raise ExportError(f"{opts.file}: input {inp.name!r} has rank {len(dims)}, expected [batch, C, H, W]")
    channels = dims[1].dim_value if dims[1].HasField("dim_value") else 0
    check_channels(channels)
    fixed_hw = tuple(d.dim_value if d.HasField("dim_value") else 0 for d in dims[2:])
    if opts.size is not None:
        if all(fixed_hw) and tuple(opts.size) != fixed_hw:
            raise ExportError(
                f"{opts.file} takes {fixed_hw[0]}x{fixed_hw[1]} inputs, "
                f"not --size {opts.size[0]} {opts.size[1]}"
            )
        size = (int(opts.size[0]), int(opts.size[1]))
    elif all(fixed_hw):
        size = (int(fixed_hw[0]), int(fixed_hw[1]))
    else:
        raise ExportError(f"{opts.file} has a dynamic image size: give --size H W")
    outputs = [o.name for o in graph.output]
    class_output = opts.output or outputs[0]
    if class_output not in outputs:
        raise ExportError(f"{opts.file} has no output {class_output!r}; outputs: {', '.join(outputs)}")
    batch = dims[0].dim_value if dims[0].HasField("dim_value") and dims[0].dim_value > 0 else None
    return _Signature(inp.name, channels, size, batch, class_output)


def _reference_logits(path: str, signature: _Signature) -> tuple[np.ndarray, np.ndarray]:
    """Random images and the original's class scores for them, the parity reference.

    A fixed-batch original runs in chunks of its batch size.
    """
    chunk = signature.batch or PARITY_IMAGES
    count = chunk * max(1, PARITY_IMAGES // chunk)
    shape = (count, signature.channels, *signature.size)
    sample = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    output = signature.class_output
    try:
        logits = np.concatenate(
            [run_onnx(path, sample[i : i + chunk], [output])[output] for i in range(0, count, chunk)]
        )
    except Exception as exc:  # onnxruntime's own exception types
        raise ExportError(f"onnxruntime cannot run {path}: {exc}") from None
    if logits.ndim != 2:
        raise ExportError(f"class output {output!r} has shape {list(logits.shape)}, expected [batch, classes]")
    return sample, logits


def _labels(opts: ImportOptions, reference: np.ndarray) -> list[str]:
    num_classes = int(reference.shape[1])
    labels = read_labels(opts.labels) if opts.labels else [f"class_{i}" for i in range(num_classes)]
    if len(labels) != num_classes:
        raise ExportError(f"{len(labels)} labels for {num_classes} classes")
    return labels


def _input_spec(opts: ImportOptions, signature: _Signature) -> InputSpec:
    """--scale/--mean/--std; an import has no training set to measure them on, so a
    missing one falls back to no normalisation, said on stderr."""
    channels = signature.channels
    mean = normalisation(opts.mean, channels, "mean")
    std = normalisation(opts.std, channels, "std")
    missing = [flag for flag, value in (("--mean", mean), ("--std", std)) if value is None]
    if missing:
        print(
            f"warning: no {' or '.join(missing)} given: using mean 0 and std 1 where missing, so the "
            f"model sees pixel * {opts.scale:.6g} un-normalised; pass the statistics it was trained with",
            file=sys.stderr,
        )
    return InputSpec(
        channels=channels,
        size=signature.size,
        mean=mean or (0.0,) * channels,
        std=std or (1.0,) * channels,
        scale=opts.scale,
    )


def _rewrite(original: Any, signature: _Signature) -> _Rewritten:
    """A copy with the artifact's names, a dynamic batch and one output per tap."""
    import onnx

    model = onnx.ModelProto()
    model.CopyFrom(original)
    input_name, output_name = _rename_io(model.graph, signature)
    _make_batch_dynamic(model, input_name)
    consts = _constants(model.graph)
    taps = _name_taps(model.graph, {input_name, output_name}, consts)
    shapes = _spatial_shapes(model)
    for node in taps:
        # Graph outputs need a typed shape; batch stays symbolic, unknown dims free.
        known = shapes.get(node.output[0]) or [-1, -1, -1, -1]
        dims: list[str | int | None] = [BATCH_DIM, *[d if d > 0 else None for d in known[1:]]]
        model.graph.output.append(onnx.helper.make_tensor_value_info(node.output[0], onnx.TensorProto.FLOAT, dims))
    _check_valid(model, "the rewritten model is not valid ONNX")
    return _Rewritten(model, input_name, output_name, taps, consts, shapes)


def _rename_io(graph: Any, signature: _Signature) -> tuple[str, str]:
    """Name the input `input` and the class output `logits` where free; drop the other
    outputs (e.g. a softmax): they are neither logits nor layers."""
    used = {n for node in graph.node for n in [*node.input, *node.output]}
    used |= {i.name for i in graph.initializer}
    input_name, output_name = signature.input_name, signature.class_output
    if input_name != "input" and "input" not in used:
        _rename_value(graph, input_name, "input")
        input_name = "input"
    if output_name != "logits" and "logits" not in used:
        _rename_value(graph, output_name, "logits")
        output_name = "logits"
    for o in [o for o in graph.output if o.name != output_name]:
        graph.output.remove(o)
    return input_name, output_name


def _name_taps(graph: Any, taken: set[str], consts: dict[str, np.ndarray]) -> list[Any]:
    """The Conv/Relu/pool nodes to tap, each output renamed to a readable, unique name."""
    used = {n for node in graph.node for n in [*node.input, *node.output]} | set(consts)
    taken = set(taken)
    taps = [n for n in graph.node if n.op_type in TAP_OPS and n.output and n.output[0] not in taken]
    for node in taps:
        base = _readable(node.output[0], node.op_type)
        candidate, k = base, 2
        while candidate in taken or (candidate != node.output[0] and candidate in used):
            candidate, k = f"{base}_{k}", k + 1
        taken.add(candidate)
        if candidate != node.output[0]:
            _rename_value(graph, node.output[0], candidate)
    return taps


def _describe_layers(rewritten: _Rewritten, size: tuple[int, int]) -> list[dict[str, Any]]:
    """metadata `layers` for the taps (output_shape is filled in after a run)."""
    graph = rewritten.model.graph
    consts = rewritten.consts
    fields = graph_geometry.receptive_fields(rewritten.model, rewritten.input_name, size=size)
    producers = {n.output[0]: n for n in graph.node if n.output}
    tapped = {node.output[0] for node in rewritten.taps}
    layers = []
    for node in rewritten.taps:
        conv_node = _conv_behind(node, producers)
        kind = "pool" if "Pool" in node.op_type else "conv" if conv_node is not None else "activation"
        entry: dict[str, Any] = {"name": node.output[0], "op": node.op_type, "kind": kind, "conv": None, "weight": None}
        params = 0
        if conv_node is not None:
            entry["conv"] = conv_node.output[0] if conv_node.output[0] in tapped else None
            entry.update(_conv_facts(conv_node, consts, {i.name for i in graph.initializer}))
            params = sum(int(consts[i].size) for i in conv_node.input[1:] if i in consts)
        entry["output_shape"] = None
        entry["params"] = params
        entry.update(_geometry_facts(fields.get(node.output[0])))
        layers.append(entry)
    return layers


def _geometry_facts(field: graph_geometry.Field | None) -> dict[str, Any]:
    """The contract's geometry fields of one layer (docs/artifact.md, "Geometry")."""
    if field is None:  # not computed from the image at all
        return {"geometry_note": "not computed from the image"}
    g = field.geometry
    return {
        "receptive_field": g.receptive_field,
        "stride": g.stride,
        "receptive_field_offset": g.offset,
        "receptive_field_hw": g.receptive_field_hw,
        "stride_hw": g.stride_hw,
        "receptive_field_offset_hw": g.offset_hw,
        "receptive_field_bounds": g.bounds,
        "geometry_note": field.note,
    }


def _conv_behind(node: Any, producers: dict[str, Any]) -> Any | None:
    """The Conv whose kernels a tapped value shows: itself, or the Conv (+BN) before a Relu."""
    if node.op_type == "Conv":
        return node
    if node.op_type != "Relu":
        return None
    prev = producers.get(node.input[0])
    if prev is not None and prev.op_type == "BatchNormalization":
        prev = producers.get(prev.input[0])
    return prev if prev is not None and prev.op_type == "Conv" else None


def _conv_facts(conv: Any, consts: dict[str, np.ndarray], init_names: set[str]) -> dict[str, Any]:
    """weight (the initializer holding the kernels), kernel_size, out/in channels."""
    w_name = conv.input[1]
    weight = consts.get(w_name)
    if weight is None or weight.ndim != 4:
        return {}
    group = int(_attr(conv, "group", 1))
    return {
        "weight": w_name if w_name in init_names else None,
        "kernel_size": [int(x) for x in weight.shape[2:]],
        "out_channels": int(weight.shape[0]),
        "in_channels": int(weight.shape[1]) * group,
    }


def _check_parity(
    model_path: Path,
    sample: np.ndarray,
    reference: np.ndarray,
    rewritten: _Rewritten,
    entries: list[dict[str, Any]],
    tolerance: float,
) -> tuple[list[Layer], Parity]:
    """The rewritten graph runs at any batch size and gives the original's scores;
    the run also gives each tapped layer's output shape, which completes its entry."""
    check_dynamic_batch(model_path, sample)
    outputs = run_onnx(model_path, sample)
    layers = [
        Layer(**{**entry, "output_shape": [-1, *[int(x) for x in outputs[entry["name"]].shape[1:]]]})
        for entry in entries
    ]
    name = rewritten.output_name
    parity = compare({name: reference}, {name: outputs[name]}, tolerance, len(sample))
    return layers, parity


def parse_size(values: Sequence[int] | None) -> tuple[int, int] | None:
    if values is None:
        return None
    if len(values) == 1:
        return (int(values[0]), int(values[0]))
    return (int(values[0]), int(values[1]))
