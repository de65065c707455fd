"""service.models.channel_view on its own, over a real exported digits artifact."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from artifact import ArtifactError, parse_metadata
from service.codecs import v1
from service.codecs.pictures import TILE, top_sheet
from service.errors import NotFound
from service.handlers.results import ChannelTop, ModelRef, Samples
from service.models.channel_view import ChannelView, NotComputed
from service.models.repository import load_artifact, scan

BASE = "/v1/models/digits-tinyvgg"
MODEL = ModelRef("digits-tinyvgg", 1)


class Links:
    """v1.Links under BASE, as the routes make them under a versioned base."""

    def top_image(self, layer: str, channel: int, rank: int) -> str:
        return f"{BASE}/layers/{layer}/channels/{channel}/top/{rank}"

    def top_sheet(self, layer: str, channel: int) -> str:
        return f"{BASE}/layers/{layer}/channels/{channel}/top.png"

    def sample(self, sample_id: int) -> str:
        return f"{BASE}/samples/{sample_id}"


def channel_json(view: ChannelView, layer: str, channel: int) -> dict[str, Any]:
    return v1.channel(ChannelTop(MODEL, layer, channel, view.images, view.top(layer, channel)), Links())


def top_png(view: ChannelView, layer: str, channel: int) -> bytes:
    stored = view.top_pictures(layer, channel)
    return view.rendered(("top", layer, channel), lambda: top_sheet(stored))


@pytest.fixture(scope="module")
def view(digits_artifact: Any) -> ChannelView:
    (ref,) = scan(digits_artifact.repository)
    return ChannelView.from_artifact(load_artifact(ref))


def test_channel_json_is_the_top_k_activation_descending(view: ChannelView, digits_artifact: Any) -> None:
    body = channel_json(view, "features.4", 7)
    assert (body["layer"], body["channel"], body["images"]) == ("features.4", 7, len(digits_artifact.labels))
    top = body["top"]
    assert len(top) == 9 and [e["rank"] for e in top] == list(range(9))
    activations = [e["activation"] for e in top]
    assert activations == sorted(activations, reverse=True) and activations[0] > 0
    layer = next(x for x in digits_artifact.metadata["layers"] if x["name"] == "features.4")
    height, width = layer["output_shape"][2:]
    for entry in top:
        assert set(entry) == {"rank", "activation", "label", "image", "position", "box", "crop", "score", "image_url"}
        assert entry["label"] == digits_artifact.classes[digits_artifact.labels[entry["image"]]]
        assert entry["score"] is None  # a true label: the model did not caption it
        assert 0 <= entry["position"]["y"] < height and 0 <= entry["position"]["x"] < width
        box = entry["box"]
        assert 0 <= box["left"] < box["right"] <= 28 and 0 <= box["top"] < box["bottom"] <= 28
        assert entry["image_url"] == f"{BASE}/layers/features.4/channels/7/top/{entry['rank']}"
        assert entry["crop"] is False
    assert body["top_png_url"] == f"{BASE}/layers/features.4/channels/7/top.png"
    json.dumps(body)  # plain JSON types only


def test_top_images_are_the_stored_pngs(view: ChannelView) -> None:
    first = view.top("features.1", 2)[0]
    data = view.top_image("features.1", 2, 0)
    image = Image.open(io.BytesIO(data))
    assert image.format == "PNG" and image.size == (28, 28) and image.mode == "L"
    # Two channels ranking the same image share one stored picture.
    same = [
        (layer, c, e.rank)
        for layer in view.layers
        for c in range(10)
        for e in view.top(layer, c)
        if e.picture == first.picture
    ]
    assert len({view.top_image(*where) for where in same}) == 1


def test_top_png_shows_k_patches_with_boxes(view: ChannelView) -> None:
    data = top_png(view, "features.8", 3)
    assert data is top_png(view, "features.8", 3)  # rendered once
    sheet = np.asarray(Image.open(io.BytesIO(data)))
    assert sheet.ndim == 3 and sheet.shape[2] == 3
    assert sheet.shape[0] > 3 * TILE and sheet.shape[1] > 3 * TILE  # a 3x3 grid of tiles
    red = (sheet[:, :, 0] > 200) & (sheet[:, :, 1] < 100) & (sheet[:, :, 2] < 100)
    assert red.sum() > 9 * 4 * 20  # nine boxes drawn


def test_samples(view: ChannelView) -> None:
    samples = v1.samples(Samples(MODEL, view.samples()), Links())["samples"]
    assert len(samples) == 30 and samples[0] == {"id": 0, "label": "0", "score": None, "image_url": f"{BASE}/samples/0"}
    assert Image.open(io.BytesIO(view.sample_image(29))).size == (28, 28)


@pytest.mark.parametrize(
    "call,message",
    [
        (lambda v: channel_json(v, "features.99", 0), "unknown layer 'features.99'; valid: features.1, features.3"),
        (lambda v: v.top("features.1", 10), "has 10 channels; valid: 0..9, not 10"),
        (lambda v: top_png(v, "features.1", -1), "valid: 0..9, not -1"),
        (lambda v: v.top_image("features.1", 0, 9), "keeps 9 top images; valid ranks: 0..8, not 9"),
        (lambda v: v.sample_image(30), "unknown sample 30 of model digits-tinyvgg; valid: 0..29"),
    ],
)
def test_unknown_names_are_404_naming_the_valid_range(view: ChannelView, call: Any, message: str) -> None:
    with pytest.raises(NotFound, match=message.replace(".", r"\.")) as caught:
        call(view)
    assert caught.value.status_code == 404


def test_an_artifact_without_them_answers_not_computed(digits_artifact: Any) -> None:
    """An artifact written before the channel view existed: no keys, no files."""
    metadata = parse_metadata({k: v for k, v in digits_artifact.metadata.items()
                               if k not in ("channel_view", "samples")})
    view = ChannelView.load(digits_artifact.path, metadata, model="old", version=3)
    assert not view.computed and not view.has_samples and view.layers == [] and view.images == 0
    with pytest.raises(NotComputed) as caught:
        view.top("features.1", 0)
    assert caught.value.status_code == 404
    assert "model old version 3 has no channel view: it was not computed" in caught.value.message
    assert "--channel-images" in caught.value.message and "--data-dir" in caught.value.message
    with pytest.raises(NotComputed, match="has no sample images"):
        view.samples()


def test_an_inconsistent_file_fails_at_load(digits_artifact: Any, tmp_path: Path) -> None:
    shutil.copy(digits_artifact.path / "channel_view.npz", tmp_path / "channel_view.npz")
    with np.load(tmp_path / "channel_view.npz") as data:
        arrays = {k: data[k] for k in data.files}
    arrays["0.picture"] = arrays["0.picture"] + 10_000
    np.savez(tmp_path / "broken.npz", **arrays)
    metadata = parse_metadata(dict(digits_artifact.metadata, samples=None,
                                   channel_view=dict(digits_artifact.metadata["channel_view"], file="broken.npz")))
    with pytest.raises(ArtifactError, match="layer 'features.1' names pictures outside"):
        ChannelView.load(tmp_path, metadata, model="m", version=1)
    del arrays["picture_crop"]
    np.savez(tmp_path / "broken.npz", **arrays)
    with pytest.raises(ArtifactError, match="broken.npz lacks picture_crop"):
        ChannelView.load(tmp_path, metadata, model="m", version=1)
