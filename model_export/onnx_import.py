"""Bring your own ONNX: rewrite a model exported elsewhere into a convscope artifact.

The rewrite makes the batch dimension dynamic, names the input `input` and the class
output `logits`, and adds the outputs of Conv/Relu/MaxPool/AveragePool/
GlobalAveragePool nodes as graph outputs with readable names. Shapes come from running
the rewritten model once in onnxruntime; parameters from the initializers; receptive
fields from walking the graph (null wherever the graph is not chain-like enough).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from . import artifact
from .errors import ExportError
from .parity import check_dynamic_batch, compare, run_onnx
from .preprocessing import SCALE, InputSpec, check_channels, normalisation

TAP_OPS = ("Conv", "Relu", "MaxPool", "AveragePool", "GlobalAveragePool")
# Ops that keep the spatial grid: the receptive field passes through (max over inputs).
ELEMENTWISE = {
    "Relu",
    "LeakyRelu",
    "PRelu",
    "Elu",
    "Selu",
    "Sigmoid",
    "Tanh",
    "HardSigmoid",
    "HardSwish",
    "Gelu",
    "Clip",
    "BatchNormalization",
    "InstanceNormalization",
    "LRN",
    "Dropout",
    "Identity",
    "Add",
    "Sub",
    "Mul",
    "Div",
    "Sum",
    "Max",
    "Min",
    "Concat",
    "Cast",
    "Neg",
    "Abs",
    "Sqrt",
    "Exp",
    "Softplus",
    "Mish",
    "Pad",
}
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
    try:
        onnx.checker.check_model(model)
    except Exception as exc:
        raise ExportError(f"{path} is not a valid ONNX model: {exc}") from None
    return model


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


def _receptive_fields(
    graph: Any, input_name: str, consts: dict[str, np.ndarray], shapes: dict[str, list[int]]
) -> dict[str, tuple[int, int]]:
    """(rf, jump) per value on the spatial grid, for chain-like parts of the graph."""
    state: dict[str, tuple[int, int]] = {input_name: (1, 1)}
    for node in graph.node:
        # Every non-constant input must be on the grid already; else this value's
        # receptive field is unknown (and so is everything computed from it).
        spatial_inputs = [i for i in node.input if i and i not in consts]
        if not spatial_inputs or any(i not in state for i in spatial_inputs):
            continue
        inputs = [state[i] for i in spatial_inputs]
        op = node.op_type
        rf, jump = inputs[0]
        if op in ("Conv", "MaxPool", "AveragePool"):
            if op == "Conv" and node.input[1] in consts:
                kernel = list(consts[node.input[1]].shape[2:])
            else:
                kernel = list(_attr(node, "kernel_shape", []))
            if not kernel:
                continue
            k = max(kernel)
            d = max(_attr(node, "dilations", [1]))
            s = max(_attr(node, "strides", [1]))
            state[node.output[0]] = (rf + (k - 1) * d * jump, jump * s)
        elif op in ("GlobalAveragePool", "GlobalMaxPool"):
            shape = shapes.get(node.input[0], [])
            if len(shape) == 4 and min(shape[2:]) > 0:
                extent = max(shape[2:])
                state[node.output[0]] = (rf + (extent - 1) * jump, jump * extent)
        elif op in ELEMENTWISE:
            if len({j for _, j in inputs}) == 1:
                state[node.output[0]] = (max(r for r, _ in inputs), jump)
    return state


def _param_summary(graph: Any, consts: dict[str, np.ndarray], names: dict[str, str]) -> dict[str, Any]:
    counted: set[str] = set()
    per_module = []
    split = {"conv": 0, "dense": 0, "other": 0}
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
        if n == 0:
            continue
        label = names.get(node.output[0]) or node.name or node.output[0]
        per_module.append({"name": label, "type": node.op_type, "params": n})
        key = (
            "conv"
            if node.op_type in ("Conv", "ConvTranspose")
            else "dense"
            if node.op_type in ("Gemm", "MatMul")
            else "other"
        )
        split[key] += n
    total = sum(split.values())
    return {
        "total": total,
        **split,
        "dense_fraction": split["dense"] / total if total else 0.0,
        "per_module": per_module,
    }


def import_onnx(opts: ImportOptions) -> Path:
    import onnx

    name = artifact.check_name(opts.name)
    if opts.version is not None:
        artifact.choose_version(Path(opts.out) / name, opts.version)
    if not opts.tolerance > 0:
        raise ExportError("--tolerance must be positive")
    if not opts.scale > 0:
        raise ExportError("--scale must be positive")
    original = _load(opts.file)
    model = onnx.ModelProto()
    model.CopyFrom(original)
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

    # Run the original once at its own batch size for the parity reference.
    # A fixed-batch original runs in chunks of its batch size.
    chunk = dims[0].dim_value if dims[0].HasField("dim_value") and dims[0].dim_value > 0 else PARITY_IMAGES
    count = chunk * max(1, PARITY_IMAGES // chunk)
    sample = np.random.default_rng(0).standard_normal((count, channels, *size)).astype(np.float32)
    try:
        ref_logits = np.concatenate(
            [
                run_onnx(opts.file, sample[i : i + chunk], [class_output])[class_output]
                for i in range(0, count, chunk)
            ]
        )
    except Exception as exc:  # onnxruntime's own exception types
        raise ExportError(f"onnxruntime cannot run {opts.file}: {exc}") from None
    if ref_logits.ndim != 2:
        raise ExportError(
            f"class output {class_output!r} has shape {list(ref_logits.shape)}, expected [batch, classes]"
        )
    num_classes = int(ref_logits.shape[1])
    labels = read_labels(opts.labels) if opts.labels else [f"class_{i}" for i in range(num_classes)]
    if len(labels) != num_classes:
        raise ExportError(f"{len(labels)} labels for {num_classes} classes")
    mean = normalisation(opts.mean, channels, "mean") or (0.0,) * channels
    std = normalisation(opts.std, channels, "std") or (1.0,) * channels

    # Rename the input to `input` and the class output to `logits`, where free.
    used = {n for node in graph.node for n in [*node.input, *node.output]} | init_names
    input_name = inp.name
    if input_name != "input" and "input" not in used:
        _rename_value(graph, input_name, "input")
        input_name = "input"
    out_name = class_output
    if out_name != "logits" and "logits" not in used:
        _rename_value(graph, out_name, "logits")
        out_name = "logits"
    # Keep only the class output: others (e.g. softmax) are neither logits nor layers.
    for o in [o for o in graph.output if o.name != out_name]:
        graph.output.remove(o)
    _make_batch_dynamic(model, input_name)

    # Readable names for the tapped values.
    consts = _constants(graph)
    used = {n for node in graph.node for n in [*node.input, *node.output]} | set(consts)
    taken = {input_name, out_name}
    tap_nodes = [
        n for n in graph.node if n.op_type in TAP_OPS and n.output and n.output[0] not in (out_name,)
    ]
    layer_names: dict[str, str] = {}  # value name -> layer name
    for node in tap_nodes:
        base = _readable(node.output[0], node.op_type)
        candidate, k = base, 2
        while candidate in taken or (candidate != node.output[0] and candidate in used):
            candidate, k = f"{base}_{k}", k + 1
        taken.add(candidate)
        if candidate != node.output[0]:
            _rename_value(graph, node.output[0], candidate)
        layer_names[candidate] = candidate
    shapes = _spatial_shapes(model)
    for node in tap_nodes:
        # Graph outputs need a typed shape; batch stays symbolic, unknown dims free.
        known = shapes.get(node.output[0]) or [-1, -1, -1, -1]
        out_dims: list[str | int | None] = [BATCH_DIM, *[d if d > 0 else None for d in known[1:]]]
        graph.output.append(
            onnx.helper.make_tensor_value_info(node.output[0], onnx.TensorProto.FLOAT, out_dims)
        )

    rfs = _receptive_fields(graph, input_name, consts, shapes)
    producers = {n.output[0]: n for n in graph.node if n.output}
    layers = []
    for node in tap_nodes:
        value = node.output[0]
        conv_node = None
        if node.op_type == "Conv":
            conv_node = node
        elif node.op_type == "Relu":
            prev = producers.get(node.input[0])
            if prev is not None and prev.op_type == "BatchNormalization":
                prev = producers.get(prev.input[0])
            if prev is not None and prev.op_type == "Conv":
                conv_node = prev
        kind = "pool" if "Pool" in node.op_type else "conv" if conv_node is not None else "activation"
        entry: dict[str, Any] = {
            "name": value,
            "op": node.op_type,
            "kind": kind,
            "conv": None,
            "weight": None,
        }
        params = 0
        if conv_node is not None:
            w_name = conv_node.input[1]
            entry["conv"] = conv_node.output[0] if conv_node.output[0] in layer_names else None
            weight = consts.get(w_name)
            if weight is not None and weight.ndim == 4:
                entry["weight"] = w_name if w_name in init_names else None
                group = int(_attr(conv_node, "group", 1))
                entry["kernel_size"] = [int(x) for x in weight.shape[2:]]
                entry["out_channels"] = int(weight.shape[0])
                entry["in_channels"] = int(weight.shape[1]) * group
            params = sum(int(consts[i].size) for i in conv_node.input[1:] if i in consts)
        entry["output_shape"] = None
        entry["params"] = params
        rf = rfs.get(value)
        entry["receptive_field"] = rf[0] if rf else None
        entry["stride"] = rf[1] if rf else None
        layers.append(entry)

    try:
        onnx.checker.check_model(model)
    except Exception as exc:
        raise ExportError(f"the rewritten model is not valid ONNX: {exc}") from None

    with artifact.Staging(Path(opts.out), name, opts.version) as staging:
        assert staging.path is not None
        model_path = staging.path / artifact.MODEL_FILE
        onnx.save(model, str(model_path))
        check_dynamic_batch(model_path, sample)
        rewritten = run_onnx(model_path, sample)
        for entry in layers:
            entry["output_shape"] = [-1, *[int(x) for x in rewritten[entry["name"]].shape[1:]]]
        parity = compare({"logits": ref_logits}, {"logits": rewritten[out_name]}, opts.tolerance, len(sample))
        parity["max_abs_diff"] = {out_name: parity["max_abs_diff"]["logits"]}

        from .onnx_export import opset_of
        from .pipeline import package_versions

        spec = InputSpec(channels=channels, size=size, mean=mean, std=std, scale=opts.scale)
        meta: dict[str, Any] = {
            "schema_version": artifact.SCHEMA_VERSION,
            "name": name,
            "version": None,
            "created": artifact.utc_now(),
            "arch": "imported",
            "description": f"Imported from {os.path.basename(opts.file)}",
            "model_file": artifact.MODEL_FILE,
            "labels": labels,
            "input": spec.to_metadata(input_name),
            "output": {"name": out_name, "shape": [-1, num_classes], "kind": "logits"},
            "layers": layers,
            "params": _param_summary(graph, consts, layer_names),
            "training": None,
            "parity": parity,
            "versions": package_versions(opset_of(model), with_torch=False),
            "files": {},
        }
        return staging.commit(meta)


def parse_size(values: Sequence[int] | None) -> tuple[int, int] | None:
    if values is None:
        return None
    if len(values) == 1:
        return (int(values[0]), int(values[0]))
    return (int(values[0]), int(values[1]))
