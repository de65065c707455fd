"""Helpers for the export-stage tests: run the CLI in-process, build tiny datasets.

A plain module (not a conftest) with a name no other test directory uses, so test
files import it directly (pytest puts this directory on sys.path).
"""

from __future__ import annotations

import contextlib
import gzip
import io
import json
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from PIL import Image

import artifact


@dataclass
class CliResult:
    rc: int
    stdout: str
    stderr: str

    @property
    def written(self) -> Path:
        return Path(self.stdout.strip().splitlines()[-1])


# AlexNet's receptive field and stride per tapped module path: the textbook values that
# the analytic computation must reproduce.
ALEXNET_RECEPTIVE_FIELDS = {
    "features.1": (11, 4),
    "features.2": (19, 8),
    "features.4": (51, 8),
    "features.5": (67, 16),
    "features.7": (99, 16),
    "features.9": (131, 16),
    "features.11": (163, 16),
    "features.12": (195, 32),
    "avgpool": (195, 32),
}


def run_cli(args: Sequence[str]) -> CliResult:
    from model_export.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main([str(a) for a in args])
    return CliResult(rc, out.getvalue(), err.getvalue())


def bars(cls: int, n: int, size: int, seed: int, rgb: bool) -> list[np.ndarray]:
    """Synthetic class images: class 0 = a horizontal bar, 1 = vertical, 2 = diagonal."""
    rng = np.random.default_rng(seed)
    images = []
    for _ in range(n):
        img = rng.integers(0, 40, (size, size), dtype=np.uint8)
        pos = int(rng.integers(2, size - 3))
        if cls == 0:
            img[pos : pos + 2, :] = 255
        elif cls == 1:
            img[:, pos : pos + 2] = 255
        else:
            np.fill_diagonal(img, 255)
        images.append(np.stack([img, img // 2, img], axis=2) if rgb else img)
    return images


def make_imagefolder(
    root: Path,
    classes: Sequence[str] = ("horizontal", "vertical"),
    per_class: int = 20,
    size: int = 16,
    rgb: bool = True,
    seed: int = 0,
) -> Path:
    """An ImageFolder tree of PNGs: root/<class>/<i>.png."""
    for index, name in enumerate(classes):
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        for i, img in enumerate(bars(index, per_class, size, seed + index, rgb)):
            Image.fromarray(img).save(folder / f"{i:03d}.png")
    return root


def write_idx(path: Path, array: np.ndarray, gz: bool) -> Path:
    """Write a uint8 idx file (the MNIST format)."""
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    data = header + array.astype(np.uint8).tobytes()
    if gz:
        path = path.with_name(path.name + ".gz")
        with gzip.open(path, "wb") as fh:
            fh.write(data)
    else:
        path.write_bytes(data)
    return path


def make_fashion_dir(root: Path, n_train: int = 40, n_test: int = 20) -> Path:
    """Four tiny Fashion-MNIST-format files (two gzipped, two plain)."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for prefix, n, gz in (("train", n_train, True), ("t10k", n_test, False)):
        labels = np.arange(n) % 10
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        write_idx(root / f"{prefix}-images-idx3-ubyte", images, gz)
        write_idx(root / f"{prefix}-labels-idx1-ubyte", labels, gz)
    return root


def tree(path: Path) -> list[str]:
    """Everything under path (relative), to assert a failed run wrote nothing."""
    if not path.exists():
        return []
    return sorted(str(p.relative_to(path)) for p in path.rglob("*"))


REQUIRED_INPUT_KEYS = {
    "name",
    "shape",
    "layout",
    "dtype",
    "channels",
    "color_mode",
    "size",
    "resize",
    "scale",
    "mean",
    "std",
}


def check_contract(version_dir: Path) -> dict[str, Any]:
    """The artifact layout and metadata fields of docs/artifact.md."""
    meta = json.loads((version_dir / "metadata.json").read_text())
    assert meta["schema_version"] == 1 and meta["version"] == int(version_dir.name)
    assert meta["name"] == version_dir.parent.name
    assert meta["created"].endswith("Z")
    assert REQUIRED_INPUT_KEYS <= set(meta["input"])
    assert meta["input"]["color_mode"] == {1: "L", 3: "RGB"}[meta["input"]["channels"]]
    assert meta["output"]["name"] and meta["output"]["shape"] == [-1, len(meta["labels"])]
    assert not [p for p in version_dir.parent.iterdir() if p.name.startswith(".tmp-")]
    for name, record in meta["files"].items():
        assert artifact.sha256(version_dir / name) == record["sha256"]
        assert (version_dir / name).stat().st_size == record["bytes"]
    assert "model.onnx" in meta["files"] and "metadata.json" not in meta["files"]
    model = onnx.load(str(version_dir / "model.onnx"))
    assert not any(init.data_location == onnx.TensorProto.EXTERNAL for init in model.graph.initializer)
    assert [i.name for i in model.graph.input] == [meta["input"]["name"]]
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_param  # dynamic batch
    outputs = [o.name for o in model.graph.output]
    assert outputs == [meta["output"]["name"], *[layer["name"] for layer in meta["layers"]]]
    for layer in meta["layers"]:
        assert {
            "name",
            "op",
            "kind",
            "conv",
            "weight",
            "output_shape",
            "params",
            "receptive_field",
            "stride",
        } <= set(layer)
        assert layer["kind"] in {"conv", "pool", "activation", "linear", "other"}
        assert layer["output_shape"][0] == -1
    assert meta["parity"]["passed"] is True
    return meta
