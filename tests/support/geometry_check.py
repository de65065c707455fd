"""Brute force for receptive fields: which input pixels change which units.

A graph whose weights are all positive and whose biases are all zero gives a baseline
on an all-zero image; an image with one bright pixel (or one bright row, or column)
changes exactly the units whose field holds it: every path carries a positive change
(ReLU, max-pooling, sigmoid and hard-sigmoid gates pass it), zero padding adds nothing,
and outside a unit's field its main path stays exactly zero, so a gate computed from
the whole image multiplies zero there. The bounding box of the pixels that change a unit
is then the box its geometry must give (geometry.box), padding and bounds included.

One bright row and one bright column per image (`lines`) measure the rows and the
columns of every box in H + W runs instead of H * W: a row lights a unit exactly when
the unit's field holds a pixel of that row.

A plain module (not a conftest) with a name no other test directory uses, so test
files import it directly (pytest puts this directory on sys.path).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
import onnxruntime as ort

from model_export.geometry import box
from model_export.graph_geometry import Field

NONE = (-1, -1, -1, -1)


@dataclass
class Boxes:
    """Per unit of one map (h, w, 4): the box its geometry gives and the one observed
    ((left, top, right, bottom), right and bottom exclusive; -1s: no pixel at all)."""

    name: str
    predicted: np.ndarray
    observed: np.ndarray
    inside: np.ndarray  # (h, w) bool: the unit's unclipped window lies within the image

    @property
    def units(self) -> int:
        return int(self.inside.size)


def observe(
    model: onnx.ModelProto,
    fields: dict[str, Field],
    size: tuple[int, int],
    channels: int,
    *,
    lines: bool = False,
    magnitude: float = 1.0,
) -> list[Boxes]:
    """Run the graph on impulses; every value that `fields` calls a map, with its boxes."""
    maps = [name for name, field in fields.items() if field.axes is not None and name not in _inputs(model)]
    session = _session(model, maps)
    height, width = size
    images = _impulses(channels, size, lines, magnitude)
    fixed = model.graph.input[0].type.tensor_type.shape.dim[0].dim_value
    chunk = fixed or 64
    baseline = session.run(maps, {model.graph.input[0].name: np.zeros((chunk, channels, *size), np.float32)})
    changed: dict[str, list[np.ndarray]] = {name: [] for name in maps}
    for start in range(0, len(images), chunk):
        batch = images[start : start + chunk]
        padded = np.concatenate([batch, np.zeros((chunk - len(batch), *batch.shape[1:]), np.float32)])
        for name, out, base in zip(maps, session.run(maps, {model.graph.input[0].name: padded}), baseline):
            diff = np.moveaxis(out - base, fields[name].axes, (-2, -1))[: len(batch)]
            changed[name].append((diff != 0).reshape(len(batch), -1, *diff.shape[-2:]).any(axis=1))
    result = []
    for name in maps:
        lit = np.concatenate(changed[name])
        if lines:
            rows, cols = lit[:height], lit[height:]
        else:
            grid = lit.reshape(height, width, *lit.shape[1:])
            rows, cols = grid.any(axis=1), grid.any(axis=0)
        result.append(_compare(name, fields[name], rows, cols, size))
    return result


def assert_exact(observed: list[Boxes]) -> int:
    """Every unit's box is exactly the pixels that change it; returns the units checked."""
    for boxes in observed:
        wrong = np.argwhere((boxes.predicted != boxes.observed).any(axis=-1))
        if len(wrong):
            y, x = wrong[0]
            raise AssertionError(
                f"{boxes.name} unit ({y}, {x}): geometry gives {tuple(boxes.predicted[y, x].tolist())}, the pixels that "
                f"change it span {tuple(boxes.observed[y, x].tolist())} ({len(wrong)} of {boxes.units} units differ)"
            )
    return sum(boxes.units for boxes in observed)


def assert_covers(observed: list[Boxes], slack: int = 0) -> int:
    """Every unit's box holds the pixels that change it, at most `slack` pixels wider on
    each side; exact where the unit's window lies within the image and `slack` is 0."""
    for boxes in observed:
        seen = (boxes.observed != -1).all(axis=-1)
        p, o = boxes.predicted, boxes.observed
        holds = (p[..., :2] <= o[..., :2]).all(axis=-1) & (p[..., 2:] >= o[..., 2:]).all(axis=-1)
        if slack:
            bad = np.argwhere(seen & ~(holds & (np.abs(p - o) <= slack).all(axis=-1)))
        else:
            bad = np.argwhere(seen & ~holds | boxes.inside & (p != o).any(axis=-1))
        if len(bad):
            y, x = bad[0]
            raise AssertionError(
                f"{boxes.name} unit ({y}, {x}): geometry gives {tuple(p[y, x].tolist())}, the pixels that change it span "
                f"{tuple(o[y, x].tolist())}"
            )
    return sum(boxes.units for boxes in observed)


def _inputs(model: onnx.ModelProto) -> set[str]:
    return {vi.name for vi in model.graph.input}


def _session(model: onnx.ModelProto, names: list[str]) -> ort.InferenceSession:
    """The graph with `names` as extra outputs, run as written (no fusions)."""
    tapped = onnx.ModelProto()
    tapped.CopyFrom(model)
    listed = {o.name for o in tapped.graph.output}
    tapped.graph.output.extend(onnx.ValueInfoProto(name=name) for name in names if name not in listed)
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(tapped.SerializeToString(), options, providers=["CPUExecutionProvider"])


def _impulses(channels: int, size: tuple[int, int], lines: bool, magnitude: float) -> np.ndarray:
    height, width = size
    if lines:
        images = np.zeros((height + width, channels, height, width), np.float32)
        images[np.arange(height), :, np.arange(height), :] = magnitude
        images[height + np.arange(width), :, :, np.arange(width)] = magnitude
        return images
    images = np.zeros((height * width, channels, height, width), np.float32)
    pixel = np.arange(height * width)
    images[pixel, :, pixel // width, pixel % width] = magnitude
    return images


def _compare(name: str, field: Field, rows: np.ndarray, cols: np.ndarray, size: tuple[int, int]) -> Boxes:
    """rows (H, h, w), cols (W, h, w): which image rows / columns change each unit."""
    h, w = rows.shape[1:]
    predicted = np.full((h, w, 4), -1, np.int64)
    observed = np.full((h, w, 4), -1, np.int64)
    inside = np.zeros((h, w), bool)
    axes = field.geometry.axes
    for y in range(h):
        for x in range(w):
            predicted[y, x] = box(field.geometry, (y, x), size) or NONE
            r, c = np.nonzero(rows[:, y, x])[0], np.nonzero(cols[:, y, x])[0]
            if r.size and c.size:
                observed[y, x] = (c.min(), r.min(), c.max() + 1, r.max() + 1)
            if axes is not None:
                (top, bottom), (left, right) = axes[0].window(y), axes[1].window(x)
                inside[y, x] = top >= 0 and left >= 0 and bottom <= size[0] and right <= size[1]
    return Boxes(name, predicted, observed, inside)
