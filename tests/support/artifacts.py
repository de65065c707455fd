"""Small artifacts built with onnx.helper alone (no torch, no training), so the service's
tests can shape the repository however they need: several versions, broken files, RGB."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from artifact import Layer
from artifact.onnx_file import write_model


def build_model(channels: int, size: int, classes: int, filters: int = 4, seed: int = 0,
                faulty: bool = False) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    """conv 3x3 (pad 1) -> relu -> maxpool 2 -> flatten -> gemm, with random weights
    (``faulty``: a NaN conv bias, so every map and score is NaN whatever the input)."""
    rng = np.random.default_rng(seed)
    w = rng.normal(0, 0.5, (filters, channels, 3, 3)).astype(np.float32)
    b = rng.normal(0, 0.1, (filters,)).astype(np.float32)
    if faulty:
        b[:] = np.nan
    half = size // 2
    fc_w = rng.normal(0, 0.2, (classes, filters * half * half)).astype(np.float32)
    fc_b = np.zeros(classes, dtype=np.float32)
    nodes = [
        helper.make_node("Conv", ["input", "conv.weight", "conv.bias"], ["conv_out"], pads=[1, 1, 1, 1],
                         kernel_shape=[3, 3], name="conv"),
        helper.make_node("Relu", ["conv_out"], ["features.1"], name="relu"),
        helper.make_node("MaxPool", ["features.1"], ["features.2"], kernel_shape=[2, 2], strides=[2, 2], name="pool"),
        helper.make_node("Flatten", ["features.2"], ["flat"], axis=1, name="flatten"),
        helper.make_node("Gemm", ["flat", "fc.weight", "fc.bias"], ["logits"], transB=1, name="fc"),
    ]
    graph = helper.make_graph(
        nodes,
        "synthetic",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", channels, size, size])],
        [
            helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", classes]),
            helper.make_tensor_value_info("features.1", TensorProto.FLOAT, ["batch", filters, size, size]),
            helper.make_tensor_value_info("features.2", TensorProto.FLOAT, ["batch", filters, half, half]),
        ],
        initializer=[
            numpy_helper.from_array(w, "conv.weight"),
            numpy_helper.from_array(b, "conv.bias"),
            numpy_helper.from_array(fc_w, "fc.weight"),
            numpy_helper.from_array(fc_b, "fc.bias"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model, {"conv.weight": w}


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def write_artifact(
    root: Path,
    name: str = "synthetic",
    version: int = 1,
    *,
    channels: int = 1,
    size: int = 8,
    classes: int = 3,
    seed: int = 0,
    initial_weights: bool = True,
    faulty: bool = False,
    views: bool = False,
    output_kind: str = "logits",
    fixed_batch: int | None = None,
    explanations: dict[str, Any] | None = None,
) -> Path:
    """Write ``root/name/version/`` per docs/artifact.md and return its directory
    (``views``: with a channel view and samples of random images, by the export stage's
    own writer; ``output_kind``: what metadata says the class output is, whatever it holds;
    ``fixed_batch``: a graph that takes exactly that many images a run; ``explanations``: the
    export's record of every explanation method measured, docs/artifact.md). model.onnx is
    written as the export stage writes it (``artifact.onnx_file.write_model``)."""
    model, weights = build_model(channels, size, classes, seed=seed, faulty=faulty)
    if fixed_batch is not None:
        for value in [*model.graph.input, *model.graph.output]:
            value.type.tensor_type.shape.dim[0].dim_value = fixed_batch
    directory = root / name / str(version)
    directory.mkdir(parents=True)
    write_model(model, directory / "model.onnx")  # as the export stage writes it: large weights aligned
    files = ["model.onnx"]
    if initial_weights:
        rng = np.random.default_rng(seed + 1000)
        np.savez(directory / "initial_weights.npz",
                 **{"conv.weight": rng.normal(0, 1, weights["conv.weight"].shape).astype(np.float32)})
        files.append("initial_weights.npz")
    filters = weights["conv.weight"].shape[0]
    half = size // 2
    metadata: dict[str, Any] = {
        "schema_version": 1,
        "name": name,
        "version": version,
        "arch": "synthetic",
        "model_file": "model.onnx",
        "labels": [f"class_{i}" for i in range(classes)],
        "input": {
            "name": "input", "shape": [fixed_batch or -1, channels, size, size], "layout": "NCHW",
            "dtype": "float32", "fixed_batch": fixed_batch,
            "channels": channels, "color_mode": "L" if channels == 1 else "RGB", "size": [size, size],
            "resize": "bilinear", "scale": 1 / 255, "mean": [0.5] * channels, "std": [0.25] * channels,
        },
        "output": {"name": "logits", "shape": [-1, classes], "kind": output_kind},
        "layers": [
            {"name": "features.1", "op": "Relu", "kind": "conv", "conv": "conv", "weight": "conv.weight",
             "output_shape": [-1, filters, size, size], "params": filters * channels * 9 + filters,
             "receptive_field": 3, "stride": 1, "receptive_field_offset": -1},
            {"name": "features.2", "op": "MaxPool", "kind": "pool", "conv": None, "weight": None,
             "output_shape": [-1, filters, half, half], "params": 0, "receptive_field": 4, "stride": 2,
             "receptive_field_offset": -1},
        ],
        "params": {"total": 0, "conv": 0, "dense": 0, "other": 0},
        "training": None,
        "parity": None,
        "versions": {"onnx": onnx.__version__, "opset": 17},
    }
    if explanations is not None:
        metadata["explanations"] = explanations
    if views:
        stored = _write_views(directory, metadata, seed)
        metadata.update(channel_view=stored.channel_view.to_json(), samples=stored.samples.to_json())
        files += [stored.channel_view.file, stored.samples.file]
    metadata["files"] = {f: {"sha256": sha256(directory / f), "bytes": (directory / f).stat().st_size} for f in files}
    (directory / "metadata.json").write_text(json.dumps(metadata, indent=2))
    return directory


def _write_views(directory: Path, metadata: dict[str, Any], seed: int) -> Any:
    from model_export.channel_view import ViewOptions, write_views
    from model_export.datasets import Split
    from model_export.preprocessing import InputSpec

    meta = metadata["input"]
    spec = InputSpec(meta["channels"], tuple(meta["size"]), tuple(meta["mean"]), tuple(meta["std"]), meta["scale"])
    rng = np.random.default_rng(seed)
    classes = metadata["labels"]
    shape = (40, *meta["size"]) if meta["channels"] == 1 else (40, *meta["size"], 3)
    held_out = Split(rng.integers(0, 256, shape, dtype=np.uint8), np.arange(40, dtype=np.int64) % len(classes))
    layers = [Layer.model_validate(layer) for layer in metadata["layers"]]
    return write_views(directory, directory / "model.onnx", layers, spec, held_out, classes,
                       ViewOptions(images=40, top_k=4, progress=False))


def corrupt(version_dir: Path) -> None:
    """Break a version's model file after its checksum was recorded."""
    (version_dir / "model.onnx").write_bytes(b"not an onnx model")


def publish(root: Path, name: str, version: int, *, corrupted: bool = False, **options: object) -> Path:
    """Write a version the way the export stage does: complete elsewhere, then one rename
    (``corrupted``: with a model file that fails its checksum)."""
    staging = root / ".staging"
    built = write_artifact(staging, name, version, **options)  # type: ignore[arg-type]
    if corrupted:
        corrupt(built)
    target = root / name / str(version)
    target.parent.mkdir(parents=True, exist_ok=True)
    os.rename(built, target)
    shutil.rmtree(staging)
    return target


def calibration_images(directory: Path, count: int = 60, size: int = 8, channels: int = 1, seed: int = 0) -> Path:
    """A flat folder of random PNGs: images a synthetic model did not learn from."""
    from PIL import Image

    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    shape = (size, size) if channels == 1 else (size, size, channels)
    for i in range(count):
        Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)).save(directory / f"{i:03d}.png")
    return directory


def write_int8(root: Path, name: str = "synthetic", float_version: int = 1, *, images: Path | None = None,
               min_agreement: float = 0.0, explain_images: int = 0) -> Path:
    """The int8 version of ``root/name/float_version`` as the export stage writes it (the next
    version number), calibrated and judged on random images; returns its directory. Its
    explanation methods are measured on ``explain_images`` (0 by default: tests that serve it
    do not need the record, and measuring costs seconds)."""
    from model_export.quantize import QuantizeOptions, quantize

    meta = json.loads((root / name / str(float_version) / "metadata.json").read_text())
    size, channels = meta["input"]["size"][0], meta["input"]["channels"]
    # A hidden directory of the repository: not a model name, so the service never lists it.
    folder = images or calibration_images(root / f".calibration-{name}", size=size, channels=channels)
    return quantize(QuantizeOptions(model_dir=str(root / name), version=float_version, data_dir=str(folder),
                                    min_agreement=min_agreement, progress=False, explain_images=explain_images))
