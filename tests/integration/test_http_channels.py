"""The channel view, one channel's filter and the samples over real HTTP (issue 13), against
the digits model the export stage trains in this session and a synthetic model exported
without them."""

from __future__ import annotations

import base64
import io
import shutil
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import numpy as np
import onnx
import pytest
from onnx import numpy_helper
from PIL import Image

from tests.support.artifacts import write_artifact
from tests.support.exported import ExportedModel
from tests.support.live import LiveServer

PNG = {"content-type": "image/png"}


@pytest.fixture(scope="module")
def server(digits_artifact: ExportedModel, start_server: Callable[..., LiveServer],
           tmp_path_factory: pytest.TempPathFactory) -> LiveServer:
    root = tmp_path_factory.mktemp("channels") / "models"
    shutil.copytree(digits_artifact.path, root / digits_artifact.name / str(digits_artifact.version))
    write_artifact(root, "bare", 1)  # an artifact without a channel view or samples
    return start_server(root, default_model=digits_artifact.name)


@pytest.fixture
def client(server: LiveServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=30) as c:
        yield c


def model_base(digits: ExportedModel) -> str:
    return f"/v1/models/{digits.name}"


def version_base(digits: ExportedModel) -> str:
    return f"/v1/models/{digits.name}/versions/{digits.version}"


def spatial_layers(digits: ExportedModel) -> list[dict[str, Any]]:
    return [layer for layer in digits.metadata["layers"] if len(layer["output_shape"]) == 4]


def test_channel_json_points_at_versioned_pictures(client: httpx.Client, digits_artifact: ExportedModel) -> None:
    response = client.get(f"{model_base(digits_artifact)}/layers/features.4/channels/3")
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["layer"], body["channel"]) == ("features.4", 3)
    activations = [entry["activation"] for entry in body["top"]]
    assert len(activations) == digits_artifact.metadata["channel_view"]["top_k"]
    assert activations == sorted(activations, reverse=True)
    base = version_base(digits_artifact)
    assert body["top_png_url"] == f"{base}/layers/features.4/channels/3/top.png"
    for entry in body["top"]:
        assert entry["image_url"] == f"{base}/layers/features.4/channels/3/top/{entry['rank']}"
        picture = client.get(entry["image_url"])
        assert picture.status_code == 200 and picture.headers["content-type"] == "image/png"
        image = Image.open(io.BytesIO(picture.content))
        assert image.size == (28, 28) and image.mode == "L"
        assert entry["label"] == digits_artifact.classes[digits_artifact.labels[entry["image"]]]


def _map(client: httpx.Client, picture: bytes, layers: str) -> dict[str, np.ndarray]:
    response = client.post(f"/predict?layers={layers}&encoding=npy", content=picture, headers=PNG)
    assert response.status_code == 200, response.text
    return {name: np.load(io.BytesIO(base64.b64decode(entry["data"])))
            for name, entry in response.json()["feature_maps"].items()}


def _check_recorded(values: np.ndarray, entry: dict[str, Any], where: str) -> None:
    channel_map = values[entry["channel"]] if values.ndim == 3 else values[entry["channel"]: entry["channel"] + 1]
    recorded = entry["activation"]
    assert float(channel_map.max()) == pytest.approx(recorded, rel=1e-4, abs=1e-6), where
    if entry["position"] is not None:
        y, x = entry["position"]["y"], entry["position"]["x"]
        assert float(channel_map[y, x]) == pytest.approx(recorded, rel=1e-4, abs=1e-6), where


def test_a_stored_top_image_gives_the_recorded_maximum_at_the_recorded_position(
        client: httpx.Client, digits_artifact: ExportedModel) -> None:
    """The issue's invariant, as it states it: post the stored picture with
    ``layers=<layer>&encoding=npy``; for every layer, the strongest image of two channels."""
    for layer in digits_artifact.metadata["layers"]:
        name, channels = layer["name"], layer["output_shape"][1]
        for channel in (0, channels - 1):
            body = client.get(f"{model_base(digits_artifact)}/layers/{name}/channels/{channel}").json()
            entry = dict(body["top"][0], channel=channel)
            values = _map(client, client.get(entry["image_url"]).content, name)[name]
            _check_recorded(values, entry, f"{name} channel {channel}")


def test_every_channel_s_top_and_last_image_hold_the_invariant(
        client: httpx.Client, digits_artifact: ExportedModel) -> None:
    """The same for every channel of every layer (rank 0 and the last rank): one predict per
    distinct picture, all layers at once."""
    by_picture: dict[str, list[tuple[str, dict[str, Any]]]] = {}
    for layer in digits_artifact.metadata["layers"]:
        for channel in range(layer["output_shape"][1]):
            top = client.get(f"{model_base(digits_artifact)}/layers/{layer['name']}/channels/{channel}").json()["top"]
            for entry in (top[0], top[-1]):
                by_picture.setdefault(entry["image_url"], []).append((layer["name"], dict(entry, channel=channel)))
    assert len(by_picture) >= 10
    for url, entries in by_picture.items():
        maps = _map(client, client.get(url).content, "all")
        for name, entry in entries:
            _check_recorded(maps[name], entry, f"{name} channel {entry['channel']} rank {entry['rank']}")


def test_pictures_are_cached_for_good_where_the_url_names_the_version(
        client: httpx.Client, digits_artifact: ExportedModel) -> None:
    versioned = f"{version_base(digits_artifact)}/layers/features.1/channels/2/top.png"
    first = client.get(versioned)
    assert first.status_code == 200 and first.headers["content-type"] == "image/png"
    sheet = Image.open(io.BytesIO(first.content))
    assert sheet.mode == "RGB" and sheet.width > 3 * 100
    assert first.headers["cache-control"] == "max-age=31536000, immutable"
    etag = first.headers["etag"]
    again = client.get(versioned, headers={"If-None-Match": etag})
    assert again.status_code == 304 and again.content == b"" and again.headers["etag"] == etag
    assert client.get(versioned, headers={"If-None-Match": '"other"'}).status_code == 200
    newest = client.get(f"{model_base(digits_artifact)}/layers/features.1/channels/2/top.png")
    assert newest.headers["cache-control"] == "no-cache" and newest.content == first.content
    assert client.get(f"{model_base(digits_artifact)}/layers/features.1/channels/2/top.png",
                      headers={"If-None-Match": newest.headers["etag"]}).status_code == 304
    other = client.get(f"{version_base(digits_artifact)}/layers/features.1/channels/3/top.png")
    assert other.headers["etag"] != etag
    for path in ("/layers/features.1/channels/2", "/samples", "/samples/0", "/layers/features.1/channels/2/top/0",
                 "/layers/features.1/channels/2/filter"):
        answer = client.get(version_base(digits_artifact) + path)
        assert answer.status_code == 200, (path, answer.text)
        assert answer.headers["cache-control"] == "max-age=31536000, immutable", path
        assert client.get(version_base(digits_artifact) + path,
                          headers={"If-None-Match": answer.headers["etag"]}).status_code == 304, path


def test_samples_are_held_out_images_of_each_class(client: httpx.Client, digits_artifact: ExportedModel) -> None:
    samples = client.get(f"{model_base(digits_artifact)}/samples").json()["samples"]
    assert len(samples) == digits_artifact.metadata["samples"]["count"]
    assert sorted({s["label"] for s in samples}) == sorted(digits_artifact.classes)
    correct = 0
    for sample in samples:
        assert sample["image_url"] == f"{version_base(digits_artifact)}/samples/{sample['id']}"
        picture = client.get(sample["image_url"])
        assert Image.open(io.BytesIO(picture.content)).size == (28, 28)
        best = client.post("/predict", content=picture.content, headers=PNG).json()["predictions"][0]
        correct += best["label"] == sample["label"]
    assert correct >= 0.8 * len(samples)  # they are real digits the model knows


def test_a_channel_s_filter_is_the_kernel_in_the_onnx_file(client: httpx.Client,
                                                            digits_artifact: ExportedModel) -> None:
    graph = onnx.load(digits_artifact.path / "model.onnx").graph
    weights = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    first = client.get(f"{model_base(digits_artifact)}/layers/features.1/channels/4/filter").json()
    layer = next(x for x in digits_artifact.metadata["layers"] if x["name"] == "features.1")
    assert first["shape"] == [1, 3, 3] and first["reads_image"] is True and first["conv"] == layer["conv"]
    np.testing.assert_allclose(first["trained"], weights[layer["weight"]][4], rtol=1e-5, atol=1e-7)
    assert first["initial"] is not None
    assert not np.allclose(first["initial"], first["trained"])  # training moved it
    deep = next(x for x in spatial_layers(digits_artifact)[1:] if x.get("weight"))
    body = client.get(f"{model_base(digits_artifact)}/layers/{deep['name']}/channels/0/filter").json()
    assert body["reads_image"] is False and body["shape"][0] == deep["in_channels"]


@pytest.mark.parametrize("path,message", [
    ("/layers/features.99/channels/0", "unknown layer 'features.99'; valid: features.1"),
    ("/layers/features.1/channels/10", "has 10 channels; valid: 0..9, not 10"),
    ("/layers/features.1/channels/10/top.png", "valid: 0..9, not 10"),
    ("/layers/features.1/channels/0/top/9", "keeps 9 top images; valid ranks: 0..8, not 9"),
    ("/layers/features.1/channels/10/filter", "has 10 channels; valid: 0..9, not 10"),
    ("/layers/features.4/channels/0/filter", "has no filters of its own"),
    ("/layers/nope/channels/0/filter", "unknown layer 'nope'; valid: features.1"),
    ("/samples/30", "unknown sample 30 of model digits-tinyvgg; valid: 0..29"),
])
def test_unknown_things_are_404_naming_the_valid_range(client: httpx.Client, digits_artifact: ExportedModel,
                                                        path: str, message: str) -> None:
    for base in (model_base(digits_artifact), version_base(digits_artifact)):
        response = client.get(base + path)
        assert response.status_code == 404, response.text
        assert message in response.json()["error"]


def test_bad_indexes_and_versions(client: httpx.Client, digits_artifact: ExportedModel) -> None:
    for path in ("/layers/features.1/channels/-1", "/layers/features.1/channels/+1", "/samples/60",
                 "/layers/features.1/channels/1/top/x"):
        response = client.get(model_base(digits_artifact) + path)
        assert response.status_code == 422, (path, response.text)
        assert "error" in response.json()
    unknown = client.get(f"/v1/models/{digits_artifact.name}/versions/7/samples")
    assert unknown.status_code == 404 and "has no version 7" in unknown.json()["error"]
    assert client.get("/v1/models/nope/samples").status_code == 404


def test_an_artifact_without_them_serves_and_says_how_to_compute_them(client: httpx.Client) -> None:
    assert client.post("/v1/models/bare/predict", content=_grey_png(), headers=PNG).status_code == 200
    for path in ("/layers/features.1/channels/0", "/layers/features.1/channels/0/top.png",
                 "/layers/features.1/channels/0/top/0"):
        response = client.get("/v1/models/bare" + path)
        assert response.status_code == 404
        error = response.json()["error"]
        assert "model bare version 1 has no channel view: it was not computed" in error
        assert "--channel-images" in error
    samples = client.get("/v1/models/bare/versions/1/samples")
    assert samples.status_code == 404 and "has no sample images" in samples.json()["error"]
    # The filter comes from the ONNX file, not the channel view: it is there.
    assert client.get("/v1/models/bare/layers/features.1/channels/0/filter").status_code == 200


def _grey_png() -> bytes:
    buffer = io.BytesIO()
    Image.new("L", (8, 8), 128).save(buffer, format="PNG")
    return buffer.getvalue()
