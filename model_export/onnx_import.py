"""Bring your own ONNX: rewrite a model exported elsewhere into a convscope artifact.

The steps, each in its own module:

- `onnx_boundary`: the edges. One float32 NCHW input `input` with a dynamic batch (an
  NHWC or float16 graph rewritten at its edges, a fixed batch freed where the graph
  allows), the class output under its artifact name with its kind decided from the graph
  (logits, or the probabilities / log-probabilities / independent scores of a final
  Softmax / LogSoftmax / Sigmoid, whose input is tapped as `logits`);
- `graph_taps`: the layers. Conv outputs, every activation (one op or spelled out), pools
  and the merges of paths (block outputs);
- `graph_names`: their names from the exporter's own scopes, and their blocks (`group`);
- `graph_geometry`: receptive field, stride and offset of each layer through any graph,
  with a note where a field is the whole image or null.

Shapes come from running the rewritten model in onnxruntime; parameters from the
initializers. Every refusal is one line naming what is unsupported and what would work.
"""

from __future__ import annotations

import functools
import json
import os
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from artifact import MODEL_FILE, Layer, OutputKind, Params, Parity, Source
from artifact.onnx_file import write_model

from . import channel_view, explanations, graph_geometry, metadata
from .datasets import load_images
from .errors import ExportError
from .graph_names import fallback_name, groups, module_path, shared_weights
from .graph_taps import NCHW, GraphView, Tap, choose
from .layer_patterns import select
from .metadata import ParamCount, ParamGroup
from .onnx_boundary import Boundary, Layout, Signature, detect_kind, read_signature, rewrite
from .onnx_graph import (
    Names,
    Shapes,
    attr,
    complete_shapes,
    constants,
    data_values,
    infer_shapes,
    rename_values,
    used_names,
)
from .parity import CRITERION, check_dynamic_batch, compare, run_onnx, session
from .preprocessing import SCALE, InputSpec, normalisation
from .staging import Staging, check_name, choose_version

PARITY_IMAGES = 8  # random-normal inputs: parity compares graphs, not accuracy
MIN_OPSET = 9
FLOAT16_TOLERANCE = 1e-2  # ~10 float16 ulps of a unit-sized score


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
    output_kind: OutputKind | None = None  # None: decided from the graph
    input_layout: Layout | None = None  # None: decided from the graph
    layers: list[str] | None = None  # glob (or re:regex) patterns; None: every tap
    tolerance: float = 1e-3
    data_dir: str | None = None  # images (ImageFolder or flat) for the channel view, samples, explanations
    channel_images: int | None = None  # None: channel_view.default_images(size); 0: none
    channel_top_k: int = channel_view.DEFAULT_TOP_K
    explain_images: int = explanations.MeasureOptions.images  # with data_dir; 0: do not measure
    explain_seconds: float = explanations.MeasureOptions.seconds
    progress: bool = True


def _load(path: str) -> tuple[Any, bool]:
    """The model with any external data read in from its folder (and whether it had
    some), checked, on an opset and IR version this onnxruntime runs."""
    import onnx
    from onnx.external_data_helper import load_external_data_for_model, uses_external_data

    if not os.path.isfile(path):
        raise ExportError(f"ONNX file {path} does not exist")
    try:
        model = onnx.load(path, load_external_data=False)
    except Exception as exc:  # protobuf DecodeError, ...
        raise ExportError(f"{path} is not an ONNX model ({type(exc).__name__})") from None
    external = any(uses_external_data(t) for t in model.graph.initializer)
    if external:
        try:
            load_external_data_for_model(model, os.path.dirname(os.path.abspath(path)))
        except Exception as exc:  # OSError, onnx's ValidationError for a missing file
            raise ExportError(f"{path} keeps its weights in external data that cannot be read ({_one_line(exc)}): "
                              "keep the .onnx file and its data files in one folder") from None
    # An arbitrary byte string can decode as an (almost) empty ModelProto.
    if model.ir_version <= 0 or not model.graph.node or not model.graph.output:
        raise ExportError(f"{path} is not an ONNX model (no graph)")
    _check_runtime_supports(model, path)
    _check_valid(model, f"{path} is not a valid ONNX model")
    return model, external


def _check_valid(model: Any, failure: str) -> None:
    import onnx

    try:
        onnx.checker.check_model(model)
    except Exception as exc:  # the checker's ValidationError, and protobuf's errors
        raise ExportError(f"{failure}: {_one_line(exc)}") from None


def _check_runtime_supports(model: Any, path: str) -> None:
    import onnxruntime as ort

    max_opset, max_ir = runtime_limits()
    opset = metadata.opset_of(model)
    if opset is not None and opset < MIN_OPSET:
        raise ExportError(f"{path} uses opset {opset}; convscope imports opsets {MIN_OPSET} to {max_opset}: "
                          f"re-export it, or convert it with onnx.version_converter.convert_version(model, 13)")
    if opset is not None and opset > max_opset:
        raise ExportError(f"{path} uses opset {opset}; onnxruntime {ort.__version__} runs opsets up to {max_opset}: "
                          f"re-export it with opset {max_opset} or lower")
    if model.ir_version > max_ir:
        raise ExportError(f"{path} has IR version {model.ir_version}; onnxruntime {ort.__version__} reads IR "
                          f"versions up to {max_ir}: save it with an older onnx package (model.ir_version = {max_ir})")


@functools.lru_cache(maxsize=1)
def runtime_limits() -> tuple[int, int]:
    """(newest default-domain opset, newest IR version) this onnxruntime runs, found by
    asking it to load a one-node model of each, newest first."""
    import onnx
    import onnxruntime as ort

    def loads(opset: int, ir: int) -> bool:
        node = onnx.helper.make_node("Relu", ["x"], ["y"])
        vi = onnx.helper.make_tensor_value_info
        graph = onnx.helper.make_graph([node], "probe", [vi("x", onnx.TensorProto.FLOAT, [1])],
                                       [vi("y", onnx.TensorProto.FLOAT, [1])])
        model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", opset)], ir_version=ir)
        options = ort.SessionOptions()
        options.log_severity_level = 4
        try:
            ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
        except Exception:  # onnxruntime's own Fail / InvalidGraph
            return False
        return True

    max_ir = next((ir for ir in range(onnx.IR_VERSION, 3, -1) if loads(MIN_OPSET, ir)), 3)
    newest = onnx.defs.onnx_opset_version()
    max_opset = next((op for op in range(newest, MIN_OPSET - 1, -1) if loads(op, max_ir)), MIN_OPSET)
    return max_opset, max_ir


def _one_line(exc: BaseException) -> str:
    """onnxruntime's and onnx's multi-line messages as one line, without their prefixes."""
    text = re.sub(r"\[ONNXRuntimeError\] : \d+ : \w+ : ", "", str(exc))
    text = re.sub(r"\s+", " ", text).strip()
    return text if len(text) <= 400 else text[:397] + "..."


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


_attr = attr


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
class _Layer:
    """A tap as the artifact names it."""

    tap: Tap
    name: str  # the layer's name: a graph output
    value: str  # the graph value it shows (= name unless a Cast or Transpose adapts it)
    path: str | None  # the exporter's module path, where known
    group: str | None = None


@dataclass
class _Imported:
    """The rewritten graph, ready to save, and what the artifact says about it."""

    model: Any  # onnx.ModelProto
    boundary: Boundary
    layers: list[_Layer]
    consts: dict[str, np.ndarray]
    shapes: Shapes
    entries: list[dict[str, Any]] = field(default_factory=list)


def import_onnx(opts: ImportOptions) -> Path:
    """Write a convscope artifact for an ONNX file; returns the new version's directory."""
    name = _check_options(opts)
    images = load_images(opts.data_dir) if opts.data_dir else None
    original, external = _load(opts.file)
    signature = read_signature(original, opts.file, opts.size, opts.output, opts.input_layout)
    kind, pre_logits = _output_kind(original, signature, opts.output_kind)
    sample, reference = _reference_scores(opts.file, signature)
    labels = _labels(opts, reference)
    input_spec = _input_spec(opts, signature)
    imported = _build(original, signature, kind, pre_logits, opts.layers, keep_batch=False)
    with Staging(Path(opts.out), name, opts.version) as staging:
        assert staging.path is not None
        model_path = staging.path / MODEL_FILE
        _save(imported.model, model_path)
        if signature.batch is not None and not _runs_any_batch(model_path, sample):
            imported = _build(original, signature, kind, pre_logits, opts.layers, keep_batch=True)
            _save(imported.model, model_path)
            print(f"note: {os.path.basename(opts.file)} runs only batches of {signature.batch} (its graph fixes "
                  f"the batch): it is served {signature.batch} image(s) per run", file=sys.stderr)
        tolerance = max(opts.tolerance, FLOAT16_TOLERANCE) if signature.dtype == "float16" else opts.tolerance
        layers, parity = _check_parity(model_path, sample, reference, imported, tolerance,
                                       signature.dtype == "float16")
        views = channel_view.Stored()
        if images is not None:  # --data-dir: images to rank and to sample
            options = channel_view.ViewOptions(opts.channel_images, opts.channel_top_k, opts.progress)
            captions = None if images.labelled else channel_view.Predictions(
                imported.boundary.output_name, kind, labels)
            views = channel_view.write_views(
                staging.path, model_path, layers, input_spec, images.val, images.classes, options, captions
            )
        facts = metadata.ModelFacts(
            name=name,
            arch="imported",
            description=f"Imported from {os.path.basename(opts.file)}",
            labels=labels,
            input=input_spec,
            input_name=imported.boundary.input_name,
            output_name=imported.boundary.output_name,
            layers=layers,
            params=_param_summary(imported.model.graph, imported.consts, {layer.name for layer in layers}),
            parity=parity,
            opset=metadata.opset_of(imported.model),
            training=None,
            with_torch=False,
            views=views,
            output_kind=kind,
            output_logits=imported.boundary.logits_name,
            fixed_batch=imported.boundary.fixed_batch,
            source=_source(original, opts.file, signature, imported.boundary, external),
        )
        if images is not None:
            measuring = explanations.MeasureOptions(opts.explain_images, opts.explain_seconds, opts.progress)
            facts.explanations = explanations.measure(model_path, metadata.provisional(facts), images.val,
                                                      input_spec, measuring)
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
    explanations.check_options(opts.explain_images, opts.explain_seconds)
    if opts.data_dir is None and opts.channel_images:
        raise ExportError("--channel-images needs --data-dir: the images to rank")
    return name


def _output_kind(model: Any, signature: Signature, given: OutputKind | None) -> tuple[OutputKind, str | None]:
    """The graph's answer unless --output-kind says otherwise; the value before a final
    Softmax / LogSoftmax / Sigmoid is tapped only where the kind is not logits."""
    detected, before = detect_kind(model.graph, signature.class_output)
    kind = given or detected
    return kind, before if kind != OutputKind.LOGITS and detected != OutputKind.LOGITS else None


def _reference_scores(path: str, signature: Signature) -> tuple[np.ndarray, np.ndarray]:
    """Random NCHW images and the original's class scores for them (fed as it takes them),
    the parity reference. A fixed-batch original runs in chunks of its batch size."""
    chunk = signature.batch or PARITY_IMAGES
    count = chunk * max(1, PARITY_IMAGES // chunk)
    shape = (count, signature.channels, *signature.size)
    sample = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    if signature.dtype == "float16":
        # Values float16 holds exactly: the original rounds its input to float16, the
        # imported graph's input Cast does not always (onnxruntime's CPU provider removes a
        # Cast to float16 that it would cast back for an op it runs in float32), and a
        # barely trained net can turn that rounding into a large difference of its scores.
        sample = sample.astype(np.float16).astype(np.float32)
    output = signature.class_output
    try:
        scores = np.concatenate([run_onnx(path, signature.feed(sample[i : i + chunk]), [output])[output]
                                 for i in range(0, count, chunk)])
    except Exception as exc:  # onnxruntime's own exception types
        import onnxruntime as ort

        raise ExportError(f"onnxruntime {ort.__version__} cannot run {path}: {_one_line(exc)} (export it with "
                          "standard ONNX ops that onnxruntime implements)") from None
    if scores.ndim != 2:
        raise ExportError(f"class output {output!r} has shape {list(scores.shape)}, expected [batch, classes]: "
                          "pick the class scores with --output")
    return sample, scores.astype(np.float32)


def _labels(opts: ImportOptions, reference: np.ndarray) -> list[str]:
    num_classes = int(reference.shape[1])
    labels = read_labels(opts.labels) if opts.labels else [f"class_{i}" for i in range(num_classes)]
    if len(labels) != num_classes:
        raise ExportError(f"{len(labels)} labels for {num_classes} classes")
    return labels


def _input_spec(opts: ImportOptions, signature: Signature) -> InputSpec:
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


def _build(original: Any, signature: Signature, kind: OutputKind, pre_logits: str | None,
           patterns: Sequence[str] | None, keep_batch: bool) -> _Imported:
    """A copy with the artifact's edges, one output per layer, and each layer described."""
    import onnx

    model = onnx.ModelProto()
    model.CopyFrom(original)
    boundary = rewrite(model, signature, kind, pre_logits, keep_batch)
    graph = model.graph
    consts = constants(graph)
    shapes = infer_shapes(model)
    complete_shapes(model, shapes, boundary.input_name,
                    [boundary.fixed_batch or 2, signature.channels, *signature.size])
    view = GraphView(graph, boundary.input_name, shapes, consts, data_values(graph, boundary.input_name, shapes))
    excluded = {boundary.input_name, boundary.output_name, boundary.logits_name or boundary.output_name}
    layers = _name(choose(view, excluded), consts, excluded, shared_weights(graph.node))
    if patterns:
        chosen = select([layer.name for layer in layers], {layer.name: layer.group for layer in layers}, patterns)
        layers = [layer for layer in layers if layer.name in chosen]
    _add_outputs(graph, layers, shapes, excluded, signature, boundary)
    _check_valid(model, "the rewritten model is not valid ONNX")
    imported = _Imported(model, boundary, layers, consts, shapes)
    imported.entries = _describe_layers(imported, signature.size)
    return imported


def _name(taps: list[Tap], consts: dict[str, np.ndarray], reserved: set[str], shared: set[str]) -> list[_Layer]:
    """Each tap named from the exporter's scopes, unique, and its block."""
    paths = [module_path(tap.node, consts, tap.op, shared) for tap in taps]
    bases = _bases(taps, paths)
    taken = set(reserved)
    layers = []
    for tap, path, base in zip(taps, paths, bases, strict=True):
        name, k = base, 1
        while name in taken:
            name, k = f"{base}_{k}", k + 1
        taken.add(name)
        layers.append(_Layer(tap, name, tap.value, path))
    # Blocks are where paths join (a residual Add, a Concat), not where a gate scales one.
    merges = {layer.path for layer in layers if layer.tap.op in ("Add", "Sum", "Concat") and layer.path}
    found = groups({layer.name: layer.path for layer in layers}, merges)
    for layer in layers:
        layer.group = found[layer.name]
    return layers


def _bases(taps: list[Tap], paths: list[str | None]) -> list[str]:
    """Names before numbering. Taps of one module path that are calls of one module (the
    same op) share its path and are numbered in call order (`relu`, `relu_1`: TorchScript's
    own numbering); in a module that computes several, the last one is its output and takes
    the path, the others `<path>.<Op>` (`blocks.0.Mul` before the block's Add)."""
    ops_at: dict[str, set[str]] = {}
    last_at: dict[str, int] = {}
    for i, (tap, path) in enumerate(zip(taps, paths, strict=True)):
        if path:
            ops_at.setdefault(path, set()).add(tap.op)
            last_at[path] = i
    bases = []
    for i, (tap, path) in enumerate(zip(taps, paths, strict=True)):
        if not path:
            bases.append(fallback_name(tap.node, tap.value))
        elif len(ops_at[path]) == 1 or last_at[path] == i:
            bases.append(path)
        else:
            bases.append(f"{path}.{tap.op}")
    return bases


def _adapted(layer: _Layer, shapes: Shapes, signature: Signature) -> bool:
    """Whether the layer's output is computed from its value (float16, or not NCHW)."""
    return (signature.dtype == "float16" and shapes.types.get(layer.value) == 10) or (
        layer.tap.layout is not None and layer.tap.layout != NCHW)


def _add_outputs(graph: Any, layers: list[_Layer], shapes: Shapes, reserved: set[str], signature: Signature,
                 boundary: Boundary) -> None:
    """Rename each tapped value to its layer's name (in one pass, so names may swap), or
    add the Transpose back to NCHW / the Cast to float32 that makes the layer's output
    from it; then add the outputs."""
    import onnx

    wanted = {layer.name for layer in layers}
    existing = used_names(graph)
    names = Names(existing | wanted | reserved)
    adapted = {layer.name for layer in layers if _adapted(layer, shapes, signature)}
    renames = {layer.value: layer.name for layer in layers if layer.name not in adapted}
    # A value already called by a layer's name, and not renamed to it, moves aside.
    for value in (wanted & existing) - set(renames) - set(renames.values()):
        renames[value] = names.fresh(f"{value}_original")
    rename_values(graph, renames)
    for layer in layers:
        layer.value = renames.get(layer.value, layer.value)
        if layer.name in adapted:
            graph.node.extend(_adapter(layer, names))
    batch: str | int = boundary.fixed_batch or "batch"
    for layer in layers:
        dims = shapes.dims.get(layer.tap.value, [])
        if layer.tap.layout is not None and layer.tap.layout != NCHW and len(dims) == 4:
            dims = [dims[layer.tap.layout.index(axis)] for axis in NCHW]
        graph.output.append(onnx.helper.make_tensor_value_info(
            layer.name, onnx.TensorProto.FLOAT, [batch, *[d if d > 0 else None for d in dims[1:]]]))


def _adapter(layer: _Layer, names: Names) -> list[Any]:
    """Nodes that make the layer's float32 NCHW output from its value."""
    import onnx

    nodes = []
    current = layer.value
    if layer.tap.layout is not None and layer.tap.layout != NCHW:
        perm = [layer.tap.layout.index(axis) for axis in NCHW]
        moved = names.fresh(f"{layer.name}.nchw")
        nodes.append(onnx.helper.make_node("Transpose", [current], [moved], perm=perm,
                                           name=f"convscope/{layer.name}/to_nchw"))
        current = moved
    nodes.append(onnx.helper.make_node("Cast", [current], [layer.name], to=onnx.TensorProto.FLOAT,
                                       name=f"convscope/{layer.name}/to_float32"))
    return nodes


def _describe_layers(imported: _Imported, size: tuple[int, int]) -> list[dict[str, Any]]:
    """metadata `layers` for the taps (output_shape is filled in after a run)."""
    graph = imported.model.graph
    consts = imported.consts
    fields = graph_geometry.receptive_fields(imported.model, imported.boundary.input_name, size=size)
    conv_layers = {id(layer.tap.node): layer.name for layer in imported.layers if layer.tap.op in ("Conv",)}
    init_names = {i.name for i in graph.initializer}
    entries = []
    for layer in imported.layers:
        tap = layer.tap
        entry: dict[str, Any] = {"name": layer.name, "op": tap.op, "kind": tap.kind, "conv": None, "weight": None}
        params = 0
        if tap.conv is not None:
            entry["conv"] = conv_layers.get(id(tap.conv))
            entry.update(_conv_facts(tap.conv, consts, init_names))
            params = sum(int(consts[i].size) for i in tap.conv.input[1:] if i in consts)
        entry["output_shape"] = None
        entry["params"] = params
        entry.update(_geometry_facts(fields.get(layer.value)))
        entry["group"] = layer.group
        entries.append(entry)
    return entries


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


def _save(model: Any, path: Path) -> None:
    """One file: external data was read in at load, and stays in."""

    try:
        write_model(model, Path(path))
    except ValueError as exc:  # protobuf's 2 GB limit
        raise ExportError(f"the rewritten model cannot be stored as one file ({_one_line(exc)}): convscope "
                          "serves models under 2 GB") from None


def _runs_any_batch(model_path: Path, sample: np.ndarray) -> bool:
    try:
        check_dynamic_batch(model_path, sample)
    except ExportError:
        return False
    return True


def _check_parity(model_path: Path, sample: np.ndarray, reference: np.ndarray, imported: _Imported,
                  tolerance: float, float16: bool) -> tuple[list[Layer], Parity]:
    """The rewritten graph runs at any batch size (or its fixed one) and, as the service's
    predictions run it (its class output alone), gives the original's scores; the run with
    every tap gives each layer's output shape, which completes its entry."""
    fixed = imported.boundary.fixed_batch
    if fixed is None:
        check_dynamic_batch(model_path, sample)
    chunk = fixed or len(sample)
    runs = [run_onnx(model_path, sample[i : i + chunk]) for i in range(0, len(sample), chunk)]
    outputs = {name: np.concatenate([run[name] for run in runs]) for name in runs[0]}
    layers = [
        Layer(**{**entry, "output_shape": [-1, *[int(x) for x in outputs[entry["name"]].shape[1:]]]})
        for entry in imported.entries
    ]
    name = imported.boundary.output_name
    served = _class_scores(model_path, name, sample, chunk)
    parity = compare({name: reference}, {name: served}, tolerance, len(sample), against="the original file")
    if float16:
        parity = parity.model_copy(update={"criterion": f"{CRITERION}; a float16 graph: tolerance at least "
                                                        f"{FLOAT16_TOLERANCE:g}"})
    return layers, parity


def _class_scores(model_path: Path, output: str, sample: np.ndarray, chunk: int) -> np.ndarray:
    """The class scores as the service's predictions compute them: the graph with its class
    output alone (service/models/runtime.py: a float16 graph rounds differently with taps)."""
    import onnx

    from service.models.runtime import class_output_only

    model = onnx.load(str(model_path))
    class_output_only(model, output)
    run = session(model.SerializeToString())
    name = run.get_inputs()[0].name
    return np.concatenate([run.run([output], {name: sample[i : i + chunk]})[0] for i in range(0, len(sample), chunk)])


def _source(original: Any, file: str, signature: Signature, boundary: Boundary, external: bool) -> Source:
    """metadata `source`: the file as it came and what the import rewrote."""
    return Source(
        file=os.path.basename(file),
        producer=" ".join(p for p in (original.producer_name, original.producer_version) if p) or None,
        exporter=_exporter(original),
        opset=metadata.opset_of(original),
        ir_version=int(original.ir_version),
        layout=signature.layout,
        dtype=signature.dtype,
        batch=signature.batch,
        external_data=external,
        rewrites=list(boundary.rewrites),
    )


def _exporter(model: Any) -> str | None:
    if model.producer_name == "pytorch":
        dynamo = any(p.key.startswith("pkg.torch.") for node in model.graph.node for p in node.metadata_props)
        return "torch.onnx (dynamo)" if dynamo else "torch.onnx (TorchScript)"
    return model.producer_name or None


def parse_size(values: Sequence[int] | None) -> tuple[int, int] | None:
    if values is None:
        return None
    if len(values) == 1:
        return (int(values[0]), int(values[0]))
    return (int(values[0]), int(values[1]))
