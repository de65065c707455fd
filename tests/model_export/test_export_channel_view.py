"""The channel view and samples the export stores (channel_view.npz, samples.npz).

The invariant: a stored top image, decoded and preprocessed by the service's own code and
run through model.onnx, gives the channel's recorded maximum at the recorded position.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
from PIL import Image

from artifact import InputRecipe, parse_metadata
from model_export.geometry import Geometry, box
from service.codecs.pictures import top_sheet
from service.inference import preprocessing
from service.models.channel_view import ChannelView, NotComputed
from tests.support.export_cli import make_imagefolder, run_cli
from tests.support.onnx_files import export_small

RELATIVE = 1e-4


def _view(path: Path) -> ChannelView:
    meta = json.loads((path / "metadata.json").read_text())
    return ChannelView.load(path, parse_metadata(meta), model=meta["name"], version=meta["version"])


def _service_input(png: bytes, meta: dict[str, Any]) -> np.ndarray:
    """What the service does to an uploaded image (service/preprocessing.py)."""
    spec = preprocessing.InputSpec.from_recipe(InputRecipe.model_validate(meta["input"]))
    return preprocessing.preprocess(preprocessing.decode(png, max_pixels=1 << 24), spec)


def _run(path: Path, batch: np.ndarray, names: list[str]) -> dict[str, np.ndarray]:
    session = ort.InferenceSession(str(path / "model.onnx"), providers=["CPUExecutionProvider"])
    return dict(zip(names, session.run(names, {"input": batch}), strict=True))


def test_a_stored_top_image_reproduces_the_recorded_maximum(digits_artifact: Any) -> None:
    meta = digits_artifact.metadata
    view = _view(digits_artifact.path)
    layers = [layer["name"] for layer in meta["layers"]]
    assert view.layers == layers and view.images == len(digits_artifact.labels)
    entries = [(layer, c, e) for layer in layers for c in range(_channels(meta, layer)) for e in view.top(layer, c)]
    pictures = sorted({e.picture for _, _, e in entries})
    assert not any(e.crop for _, _, e in entries)  # 28 px: every picture is the whole input
    # Each distinct stored picture once through the service's preprocessing and the model.
    batch = np.stack([_service_input(view.top_image(*_first(entries, p)), meta) for p in pictures])
    outputs = _run(digits_artifact.path, batch, layers)
    row = {p: i for i, p in enumerate(pictures)}
    for layer, c, entry in entries:
        assert entry.position is not None
        channel_map = outputs[layer][row[entry.picture], c]
        at = float(channel_map[entry.position])
        scale = max(abs(entry.activation), 1e-6)
        assert abs(at - entry.activation) <= RELATIVE * scale, (layer, c, entry.rank)
        assert float(channel_map.max()) <= entry.activation + RELATIVE * scale  # it is the maximum


def _channels(meta: dict[str, Any], layer: str) -> int:
    return next(int(x["output_shape"][1]) for x in meta["layers"] if x["name"] == layer)


def _first(entries: list, picture: int) -> tuple[str, int, int]:
    layer, c, entry = next(item for item in entries if item[2].picture == picture)
    return layer, c, entry.rank


def test_the_ranking_is_the_top_k_over_every_held_out_image(digits_artifact: Any) -> None:
    """Recomputed from the held-out images themselves: same images, same order, same boxes."""
    meta = digits_artifact.metadata
    view = _view(digits_artifact.path)
    spec = preprocessing.InputSpec.from_recipe(InputRecipe.model_validate(meta["input"]))
    batch = np.stack([preprocessing.preprocess(Image.fromarray(img), spec) for img in digits_artifact.images])
    layers = {layer["name"]: layer for layer in meta["layers"]}
    outputs = _run(digits_artifact.path, batch, list(layers))
    size = tuple(meta["input"]["size"])
    for name, layer in layers.items():
        maxima = outputs[name].reshape(len(batch), outputs[name].shape[1], -1).max(axis=2)  # (N, C)
        geometry = Geometry(layer["receptive_field"], layer["stride"], layer["receptive_field_offset"])
        for c in range(maxima.shape[1]):
            top = view.top(name, c)
            assert len(top) == meta["channel_view"]["top_k"] == 9
            expected = np.sort(maxima[:, c])[::-1][: len(top)]
            got = np.array([e.activation for e in top])
            np.testing.assert_allclose(got, expected, rtol=RELATIVE, atol=1e-6)
            assert list(got) == sorted(got, reverse=True)
            for e in top:
                assert e.label == digits_artifact.classes[digits_artifact.labels[e.image]]
                assert abs(maxima[e.image, c] - e.activation) <= RELATIVE * max(abs(e.activation), 1e-6)
                assert e.box == box(geometry, e.position, size)


def test_metadata_lists_the_new_files_and_their_size_is_bounded(digits_artifact: Any) -> None:
    meta = digits_artifact.metadata
    section = meta["channel_view"]
    assert section["file"] == "channel_view.npz" and section["images"] == len(digits_artifact.labels)
    assert section["layers"] == [layer["name"] for layer in meta["layers"]]
    assert section["pictures"]["crop"] == 0 and 0 < section["pictures"]["whole"] <= section["images"]
    assert meta["samples"] == {"file": "samples.npz", "count": 30, "per_class": 3, "captions": "labels"}
    assert section["captions"] == "labels"  # the held-out split's own classes
    files = meta["files"]
    # Small next to what it explains: whole 28 px PNGs, each stored once.
    assert 0 < files["channel_view.npz"]["bytes"] < 256 * 1024
    assert 0 < files["samples.npz"]["bytes"] < 64 * 1024
    view = _view(digits_artifact.path)
    labels = view.samples()
    assert labels == [str(c) for c in range(10) for _ in range(3)]
    for sample_id in range(5):
        image = Image.open(io.BytesIO(view.sample_image(sample_id)))
        assert image.size == (28, 28) and image.mode == "L"


def test_without_a_channel_view_the_artifact_says_so(tmp_path: Path) -> None:
    result = run_cli(["--out", tmp_path, "--epochs", "0", "--quiet", "--channel-images", "0"])
    assert result.rc == 0, result.stderr
    meta = json.loads((result.written / "metadata.json").read_text())
    assert meta["channel_view"] is None and "channel_view.npz" not in meta["files"]
    assert meta["samples"]["count"] == 30  # samples are stored all the same
    view = _view(result.written)
    assert not view.computed and view.has_samples
    with pytest.raises(NotComputed, match="--channel-images"):
        view.top("features.1", 0)


def test_large_inputs_store_receptive_field_crops(tmp_path: Path) -> None:
    """Above 64x64 px, layers with a small field store only the box's pixels."""
    data = make_imagefolder(tmp_path / "data", per_class=10, size=40, rgb=False)
    result = run_cli(
        ["--out", tmp_path / "models", "--dataset", "imagefolder", "--data-dir", data, "--size", "80", "80",
         "--epochs", "0", "--quiet", "--channel-top-k", "3", "--layers", "features.1,features.4,features.9"]
    )
    assert result.rc == 0, result.stderr
    meta = json.loads((result.written / "metadata.json").read_text())
    assert meta["channel_view"]["top_k"] == 3
    view = _view(result.written)
    crops = 0
    for layer in meta["layers"]:
        for c in range(layer["output_shape"][1]):
            for entry in view.top(layer["name"], c):
                picture = Image.open(io.BytesIO(view.top_image(layer["name"], c, entry.rank)))
                assert entry.box is not None
                left, top, right, bottom = entry.box
                # rf 3 and 6 (<= 80 / 4): crops of the box; rf 14... also <= 20.
                assert entry.crop == (layer["receptive_field"] * 4 <= 80)
                assert picture.size == ((right - left, bottom - top) if entry.crop else (80, 80))
                crops += entry.crop
    assert crops and meta["channel_view"]["pictures"]["crop"] > 0
    png = top_sheet(view.top_pictures("features.1", 0))
    assert Image.open(io.BytesIO(png)).mode == "RGB"


def test_import_with_a_data_dir_stores_a_channel_view_and_samples(tmp_path: Path) -> None:
    source = tmp_path / "small.onnx"
    export_small(source, classes=2)
    data = make_imagefolder(tmp_path / "data", per_class=5, size=20)
    plain = run_cli(["import", source, "--name", "plain", "--out", tmp_path / "m", "--mean", "0", "--std", "1"])
    assert plain.rc == 0 and json.loads((plain.written / "metadata.json").read_text())["channel_view"] is None
    result = run_cli(
        ["import", source, "--name", "small", "--out", tmp_path / "m", "--mean", "0", "--std", "1",
         "--data-dir", data, "--channel-top-k", "4"]
    )
    assert result.rc == 0, result.stderr
    assert "channel view" in result.stderr  # the progress bar, on stderr without --quiet
    meta = json.loads((result.written / "metadata.json").read_text())
    assert meta["channel_view"]["images"] == 10 and meta["channel_view"]["top_k"] == 4
    assert meta["samples"]["count"] == 6  # 3 per class, 2 classes
    view = _view(result.written)
    assert view.layers == [layer["name"] for layer in meta["layers"]]
    assert {e.label for layer in view.layers for e in view.top(layer, 0)} <= {"horizontal", "vertical"}
    refused = run_cli(["import", source, "--name", "x", "--out", tmp_path / "m", "--channel-images", "5"])
    assert refused.rc == 2 and "--channel-images needs --data-dir" in refused.stderr
