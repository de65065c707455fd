"""Channel views, samples and measured explanations from any folder of images (issue 21):
an ImageFolder (true labels) or a flat folder (the model captions each image with its top-1
and its probability), for `import`, for training exports, and for an existing version
(`python -m model_export channel-view MODEL_DIR --data-dir DIR`, which writes the next
version: published versions never change)."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
from PIL import Image

from artifact import parse_metadata
from service.explain import METHODS
from service.models.channel_view import ChannelView
from service.models.scores import softmax
from tests.support.export_cli import bars, run_cli
from tests.support.onnx_files import export_small

FEW = ["--explain-images", "3", "--explain-seconds", "10"]  # measuring kept short: at most 3 images a method


def _flat_folder(root: Path, count: int = 12, size: int = 20) -> Path:
    """PNGs side by side, no class subfolders."""
    root.mkdir(parents=True)
    for i, image in enumerate(bars(0, count // 2, size, 1, True) + bars(1, count - count // 2, size, 2, True)):
        Image.fromarray(image).save(root / f"photo-{i:02d}.png")
    return root


def _meta(path: Path) -> dict[str, Any]:
    return dict(json.loads((path / "metadata.json").read_text()))


def _view(path: Path) -> ChannelView:
    meta = _meta(path)
    return ChannelView.load(path, parse_metadata(meta), model=meta["name"], version=meta["version"])


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> Path:
    source = tmp_path_factory.mktemp("onnx") / "small.onnx"
    export_small(source, classes=3)
    return source


def test_a_flat_folder_is_captioned_with_the_models_top1_and_its_probability(tmp_path: Path, small: Path) -> None:
    flat = _flat_folder(tmp_path / "photos")
    result = run_cli(["import", small, "--name", "small", "--out", tmp_path / "m", "--mean", "0", "--std", "1",
                      "--data-dir", flat, "--channel-top-k", "4", "--quiet", *FEW])
    assert result.rc == 0, result.stderr
    meta = _meta(result.written)
    assert meta["channel_view"]["captions"] == "predictions" and meta["channel_view"]["images"] == 12
    assert meta["samples"]["captions"] == "predictions"
    arrays = np.load(result.written / "channel_view.npz", allow_pickle=False)
    assert list(arrays["classes"]) == meta["labels"]  # the model's own classes
    # Each ranked image's caption is what the model answers for the very pixels stored.
    session = ort.InferenceSession(str(result.written / "model.onnx"), providers=["CPUExecutionProvider"])
    view = _view(result.written)
    layer = view.layers[0]
    for entry in view.top(layer, 0):
        pixels = np.asarray(Image.open(io.BytesIO(view.top_image(layer, 0, entry.rank))).convert("RGB"), np.float32)
        x = (pixels / 255).transpose(2, 0, 1)[None].astype(np.float32)
        (scores,) = session.run([meta["output"]["name"]], {"input": x})
        probabilities = softmax(scores)[0]
        assert entry.label == meta["labels"][int(probabilities.argmax())]
        assert entry.score == pytest.approx(float(probabilities.max()), rel=1e-4)
    samples = np.load(result.written / "samples.npz", allow_pickle=False)
    assert samples["score"].shape == samples["label"].shape and (0 < samples["score"]).all()
    assert view.sample_scores() == pytest.approx([float(v) for v in samples["score"]])


def test_an_import_with_images_records_every_method_measured_and_the_default_chosen(tmp_path: Path,
                                                                                  small: Path) -> None:
    flat = _flat_folder(tmp_path / "photos", count=6)
    result = run_cli(["import", small, "--name", "small", "--out", tmp_path / "m", "--mean", "0", "--std", "1",
                      "--data-dir", flat, "--channel-images", "0", *FEW])
    assert result.rc == 0, result.stderr
    assert "explanations" in result.stderr  # the progress bar, on stderr without --quiet
    record = _meta(result.written)["explanations"]
    measured = {m["method"]: m for m in record["methods"]}
    assert set(measured) <= set(METHODS) and {"occlusion", "rise"} <= set(measured)
    assert record["images"] == 3 and record["default_method"] in measured and record["reason"]
    for m in measured.values():
        assert 1 <= m["images"] <= 3 and m["beats_random"] <= m["images"] and m["passes"] >= 59
        assert m["share"] == pytest.approx(m["beats_random"] / m["images"], abs=1e-4)
    assert _meta(result.written)["channel_view"] is None  # --channel-images 0: samples and measurements only


def test_a_training_export_measures_its_explanations_on_held_out_images(tmp_path: Path) -> None:
    result = run_cli(["--out", tmp_path, "--epochs", "1", "--max-val-samples", "20", "--quiet", *FEW])
    assert result.rc == 0, result.stderr
    record = _meta(result.written)["explanations"]
    assert record["images"] == 3 and len(record["methods"]) == 6
    assert record["default_method"] in METHODS and record["cpus"] >= 1
    off = run_cli(["--out", tmp_path / "off", "--epochs", "0", "--quiet", "--explain-images", "0"])
    assert off.rc == 0 and _meta(off.written)["explanations"] is None
    bad = run_cli(["--out", tmp_path / "bad", "--explain-seconds", "0"])
    assert bad.rc == 2 and "--explain-seconds" in bad.stderr


def test_channel_view_writes_the_next_version_and_leaves_the_published_one_alone(tmp_path: Path,
                                                                               small: Path) -> None:
    models = tmp_path / "models"
    first = run_cli(["import", small, "--name", "small", "--out", models, "--mean", "0", "--std", "1", "--quiet"])
    assert first.rc == 0, first.stderr
    before = {p.name: p.read_bytes() for p in first.written.iterdir()}
    assert _meta(first.written)["channel_view"] is None
    flat = _flat_folder(tmp_path / "photos", count=8)
    result = run_cli(["channel-view", models / "small", "--data-dir", flat, "--quiet", *FEW])
    assert result.rc == 0, result.stderr
    assert result.written == models / "small" / "2"
    assert {p.name: p.read_bytes() for p in first.written.iterdir()} == before  # version 1 untouched
    meta, old = _meta(result.written), _meta(first.written)
    assert meta["version"] == 2 and meta["derived_from"] == {
        "version": 1, "data_dir": "photos", "added": ["channel_view", "samples", "explanations"]}
    assert meta["files"]["model.onnx"] == old["files"]["model.onnx"]  # the same model, byte for byte
    assert meta["layers"] == old["layers"] and meta["labels"] == old["labels"] and meta["source"] == old["source"]
    assert meta["channel_view"]["captions"] == "predictions" and meta["explanations"]["images"] == 3
    assert _view(result.written).computed

    labelled = tmp_path / "labelled"
    for name in ("horizontal", "vertical"):
        (labelled / name).mkdir(parents=True)
        for i, image in enumerate(bars(name == "vertical", 4, 20, 3, True)):
            Image.fromarray(image).save(labelled / name / f"{i}.png")
    again = run_cli(["channel-view", models / "small", "--data-dir", labelled, "--version", "1", "--quiet",
                     "--explain-images", "0"])
    assert again.rc == 0, again.stderr
    third = _meta(again.written)
    assert third["version"] == 3 and third["derived_from"]["version"] == 1
    assert third["channel_view"]["captions"] == "labels" and third["explanations"] is None  # v1 had none
    assert {e.label for e in _view(again.written).top(third["layers"][0]["name"], 0)} <= {"horizontal", "vertical"}


@pytest.mark.parametrize("args, message", [
    (["nowhere"], "model directory nowhere does not exist"),
    (["{models}/small", "--version", "7"], "small has no version 7; versions: 1"),
    (["{models}/small", "--data-dir", "{empty}"], "holds no images: give an ImageFolder"),
])
def test_channel_view_refusals_name_what_is_there(tmp_path: Path, small: Path, args: list[str],
                                                   message: str) -> None:
    models, empty = tmp_path / "models", tmp_path / "empty"
    empty.mkdir()
    assert run_cli(["import", small, "--name", "small", "--out", models, "--quiet"]).rc == 0
    given = [a.format(models=models, empty=empty) for a in args]
    if "--data-dir" not in given:
        given += ["--data-dir", str(empty)]
    result = run_cli(["channel-view", *given])
    assert result.rc == 2 and message in result.stderr, result.stderr
    assert sorted(p.name for p in (models / "small").iterdir()) == ["1"]  # nothing half-written


def test_measuring_explanations_works_inside_a_running_event_loop(tmp_path: Path) -> None:
    """A notebook or a program driving a browser calls the export from inside a running
    event loop, where asyncio.run refuses: the measurement runs in a thread of its own."""
    import asyncio

    from model_export.explanations import _run

    async def answer() -> int:
        await asyncio.sleep(0)
        return 42

    async def caller() -> int:
        return _run(answer())

    assert _run(answer()) == 42
    assert asyncio.run(caller()) == 42
