"""Receptive-field boxes: the geometry in metadata against the pixels a unit really reads.

With every kernel 1 and every bias 0, a zero image gives zero everywhere, and an image
with one bright pixel lights exactly the units whose receptive field holds that pixel
(ReLU and max-pooling pass positive values; zero padding adds nothing). So the set of
input pixels that light unit (y, x) is its true receptive field, clipped to the image,
and `geometry.box` must give exactly its bounding box: padding and offset included.
(Not with dilation: a dilated kernel's field has holes, so the pixels it reads can
have a smaller bounding box than the field; the nets here are undilated.)
"""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
import torch
from torch import nn

from artifact import Layer
from model_export import layers as L
from model_export.architectures import REGISTRY
from model_export.geometry import Axis, Geometry, box
from tests.support.export_cli import run_cli


class _Odd(nn.Module):
    """Padding wider than the kernel's half, a padded stride-2 pool, an unpadded strided conv."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 2, 3, padding=2),
            nn.ReLU(),
            nn.MaxPool2d(3, stride=2, padding=1),
            nn.Conv2d(2, 2, 5, stride=2),
            nn.ReLU(),
            nn.Conv2d(2, 2, 3, padding=1),
            nn.ReLU(),
        )
        self.head = nn.Linear(2 * 4 * 4, 3)  # 21 px in: 23, 12, 4, 4 px maps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.flatten(self.features(x), 1))


def _ones(net: nn.Module) -> nn.Module:
    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                module.weight.fill_(1.0)
                if module.bias is not None:
                    module.bias.zero_()
    return net.eval()


def _impulses(channels: int, size: tuple[int, int]) -> torch.Tensor:
    """One image per input pixel, that pixel 1 (in every channel), the rest 0."""
    h, w = size
    batch = torch.zeros(h * w, channels, h, w)
    batch[torch.arange(h * w), :, torch.arange(h * w) // w, torch.arange(h * w) % w] = 1.0
    return batch


def _true_box(lit: np.ndarray) -> tuple[int, int, int, int] | None:
    """Bounding box (left, top, right, bottom; exclusive) of the pixels that lit a unit."""
    rows, cols = np.nonzero(lit)
    if rows.size == 0:
        return None
    return (int(cols.min()), int(rows.min()), int(cols.max()) + 1, int(rows.max()) + 1)


def _check_units(maps: np.ndarray, layer: dict, size: tuple[int, int]) -> int:
    """maps: (H*W impulses, C, h, w). Every unit of channel 0, against the metadata box;
    a layer without rows and columns (the head's pooled vector) has none to check."""
    if maps.ndim != 4:
        return 0
    geometry = Geometry.of_layer(Layer.model_validate(layer))
    checked = 0
    for y in range(maps.shape[2]):
        for x in range(maps.shape[3]):
            lit = (maps[:, 0, y, x] > 0).reshape(size)
            assert box(geometry, (y, x), size) == _true_box(lit), (layer["name"], y, x)
            checked += 1
    return checked


def _traced_layers(net: nn.Module, channels: int, size: tuple[int, int]) -> list[dict]:
    calls = L.trace(net, torch.zeros(1, channels, *size))
    return [layer.to_json() for layer in L.describe_taps(net, calls, L.default_taps(calls), size)]


@pytest.mark.parametrize(
    "name,size",
    [("tinyvgg", (28, 28)), ("lenet", (28, 28)), ("alexnet-small", (16, 16)), ("odd", (21, 21))],
)
def test_boxes_from_the_trace_are_the_pixels_a_unit_reads(name: str, size: tuple[int, int]) -> None:
    channels = 1
    torch.manual_seed(0)
    net = _ones(_Odd() if name == "odd" else L.prepare(REGISTRY[name].builder(channels, size, 3)))
    layers = [layer for layer in _traced_layers(net, channels, size) if len(layer["output_shape"]) == 4]
    assert layers and all(layer["receptive_field_offset"] is not None for layer in layers)
    modules = dict(net.named_modules())
    seen: dict[str, torch.Tensor] = {}
    handles = [
        modules[layer["name"]].register_forward_hook(lambda _m, _a, out, n=layer["name"]: seen.__setitem__(n, out))
        for layer in layers
    ]
    with torch.no_grad():
        net(_impulses(channels, size))
    for handle in handles:
        handle.remove()
    assert sum(_check_units(seen[layer["name"]].numpy(), layer, size) for layer in layers) > 100


def _imported(net: nn.Module, size: tuple[int, int], name: str, tmp_path: Path) -> tuple[Any, dict]:
    """``net`` exported by the dynamo exporter for one grey image of ``size``, then imported
    as ``name``: the CLI's result and the artifact's metadata."""
    source = tmp_path / f"{name}.onnx"
    with contextlib.redirect_stdout(io.StringIO()):
        torch.onnx.export(net, (torch.zeros(1, 1, *size),), str(source), dynamo=True, external_data=False)
    result = run_cli(["import", source, "--name", name, "--out", tmp_path / "models", "--mean", "0", "--std", "1"])
    assert result.rc == 0, result.stderr
    return result, json.loads((result.written / "metadata.json").read_text())


def test_boxes_from_an_imported_graph_are_the_pixels_a_unit_reads(tmp_path: Path) -> None:
    """The same check on the ONNX graph walk of `model_export import`."""
    size = (21, 21)
    net = _ones(_Odd())
    result, meta = _imported(net, size, "odd", tmp_path)
    traced = {layer["name"]: layer for layer in _traced_layers(net, 1, size)}
    imported = [layer for layer in meta["layers"] if layer["op"] == "Relu"]
    # Same net, two derivations: the graph walk agrees with the trace on every ReLU.
    assert [(x["receptive_field"], x["stride"], x["receptive_field_offset"]) for x in imported] == [
        (t["receptive_field"], t["stride"], t["receptive_field_offset"])
        for t in traced.values()
        if t["op"] == "ReLU"
    ]
    session = ort.InferenceSession(str(result.written / "model.onnx"), providers=["CPUExecutionProvider"])
    names = [layer["name"] for layer in meta["layers"]]
    outputs = dict(zip(names, session.run(names, {"input": _impulses(1, size).numpy()}), strict=True))
    for layer in meta["layers"]:
        _check_units(outputs[layer["name"]], layer, size)


class _Gated(nn.Module):
    """A residual block with a depthwise conv and a squeeze-excite gate: the graph walk
    before graph_geometry gave every layer after the first Add or Mul a null field."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, 4, 3, stride=2, padding=1), nn.ReLU())
        self.depthwise = nn.Sequential(nn.Conv2d(4, 4, 3, padding=2, dilation=1, groups=4), nn.ReLU())
        self.squeeze = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(4, 2, 1), nn.ReLU(), nn.Conv2d(2, 4, 1))
        self.project = nn.Conv2d(4, 4, 3, padding=0)
        self.last = nn.Sequential(nn.Conv2d(4, 4, 3, padding=1), nn.ReLU())
        self.head = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        y = self.depthwise(x)
        y = y * nn.functional.hardsigmoid(self.squeeze(y))
        x = self.last(x + self.project(y))
        return self.head(x.mean(dim=(2, 3)))


def test_an_imported_residual_net_with_a_gate_has_every_box(tmp_path: Path) -> None:
    size = (18, 18)
    net = _ones(_Gated())
    result, meta = _imported(net, size, "gated", tmp_path)
    maps = [layer for layer in meta["layers"] if len(layer["output_shape"]) == 4 and layer["output_shape"][2] > 1]
    # Every activation and merge is tapped: the gated product and the residual sum too.
    assert [layer["name"] for layer in maps] == [
        "stem.0", "stem.1", "depthwise.0", "depthwise.1", "Mul", "project", "Add", "last.0", "last.1"
    ]
    assert all(layer["receptive_field_offset"] is not None for layer in maps)
    last = maps[-1]
    assert (last["receptive_field"], last["stride"], last["receptive_field_offset"]) == (15, 2, -7)
    assert "squeeze-excite" in last["geometry_note"]  # the gate sees the whole image, and says so
    gate = [layer for layer in meta["layers"] if layer["output_shape"][2:] == [1, 1]]  # the squeeze branch
    assert gate and {(g["receptive_field"], g["stride"], g["geometry_note"]) for g in gate} == {
        (18, None, "ReduceMean over the image's rows and columns mixes every position: not a map")
    }
    session = ort.InferenceSession(str(result.written / "model.onnx"), providers=["CPUExecutionProvider"])
    names = [layer["name"] for layer in meta["layers"]]
    outputs = dict(zip(names, session.run(names, {"input": _impulses(1, size).numpy()}), strict=True))
    assert sum(_check_units(outputs[layer["name"]], layer, size) for layer in meta["layers"]) > 300


def test_box_edges() -> None:
    g = Geometry(receptive_field=5, stride=2, offset=-2)
    assert box(g, (0, 0), (10, 12)) == (0, 0, 3, 3)  # starts in the padding: clipped
    assert box(g, (1, 3), (10, 12)) == (4, 0, 9, 5)
    assert box(g, (5, 6), (10, 12)) == (10, 8, 12, 10)  # ends past the image: clipped
    assert box(g, None, (10, 12)) == (0, 0, 12, 10)  # a non-spatial output sees everything
    assert box(Geometry(5, 2, None), (0, 0), (10, 12)) is None  # offset unknown: no box
    assert box(Geometry(1, 1, -3), (0, 0), (10, 12)) is None  # only padding in view


def test_rows_and_columns_apart() -> None:
    g = Geometry.of_axes(Axis(3, 1, -1), Axis(7, 2, -3))  # a 3x1 kernel, then a 1x5 one of stride 2
    assert (g.receptive_field, g.stride, g.offset) == (7, None, None)  # no square window: strides differ
    assert (g.receptive_field_hw, g.stride_hw, g.offset_hw) == ((3, 7), (1, 2), (-1, -3))
    assert box(g, (2, 1), (8, 12)) == (0, 1, 6, 4)  # rows 1..3, columns -1..5
    # Strides agree: the square fields hold the smallest square window around the field.
    covering = Geometry.of_axes(Axis(3, 1, 0), Axis(3, 1, -2))
    assert (covering.receptive_field, covering.stride, covering.offset) == (5, 1, -2)
    assert Geometry.of_axes(Axis(5, 2, -2), Axis(5, 2, -2)) == Geometry(5, 2, -2)  # square: no _hw fields
    assert Geometry.whole((12, 20)) == Geometry(20, None, None, (12, 20))
    assert Geometry.whole((16, 16)) == Geometry(16, None, None) and Geometry.whole(None).receptive_field is None


def test_boxes_stop_at_the_pixels_the_layer_sees() -> None:
    g = Geometry(5, 2, -2, bounds=(0, 0, 11, 11))  # the layer never sees row or column 11
    assert box(g, (5, 5), (12, 12)) == (8, 8, 11, 11)
    assert box(g, (0, 0), (12, 12)) == (0, 0, 3, 3)


def test_the_contract_carries_the_geometry_both_ways() -> None:
    layer = Layer(
        name="conv", output_shape=[-1, 2, 10, 5], receptive_field=7, stride=None, receptive_field_offset=None,
        receptive_field_hw=(3, 7), stride_hw=(1, 2), receptive_field_offset_hw=(-1, -3),
        receptive_field_bounds=(0, 0, 11, 8),
    )  # fmt: skip
    stored = Layer.model_validate(layer.to_json())
    assert stored.to_json()["receptive_field_hw"] == [3, 7]
    assert Geometry.of_layer(stored) == Geometry(7, None, None, (3, 7), (1, 2), (-1, -3), (0, 0, 11, 8))
    assert Geometry.of_layer(Layer(name="old", output_shape=[-1, 2, 4, 4], receptive_field=3, stride=1,
                                   receptive_field_offset=-1)) == Geometry(3, 1, -1)  # fmt: skip
