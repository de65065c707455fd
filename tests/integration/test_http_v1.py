"""The v1 API over real HTTP against a real uvicorn (``python -m service``, no torch),
serving the tinyvgg-on-digits artifact the export stage builds in this test session."""

from __future__ import annotations

import base64
import io
from collections.abc import Callable, Iterator

import httpx
import numpy as np
import onnxruntime as ort
import pytest
from PIL import Image

from artifact import InputRecipe
from service.inference.preprocessing import InputSpec, decode, preprocess
from tests.support.exported import ExportedModel
from tests.support.images import png_bytes
from tests.support.live import LiveServer

PNG = {"content-type": "image/png"}


@pytest.fixture(scope="module")
def server(digits_artifact: ExportedModel, start_server: Callable[..., LiveServer]) -> LiveServer:
    return start_server(digits_artifact.repository)


@pytest.fixture
def client(server: LiveServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=30) as c:
        yield c


def digit_png(image: np.ndarray) -> bytes:
    """A held-out 8x8 digit (0..255) as a PNG, as a user would upload it."""
    return png_bytes(np.asarray(image, dtype=np.uint8))


def test_held_out_digits_are_classified(client: httpx.Client, digits_artifact: ExportedModel) -> None:
    count = min(len(digits_artifact.images), 200)
    assert count >= 50
    correct = 0
    for image, label in zip(digits_artifact.images[:count], digits_artifact.labels[:count]):
        response = client.post("/predict", content=digit_png(image), headers=PNG)
        assert response.status_code == 200, response.text
        correct += response.json()["predictions"][0]["index"] == int(label)
    assert correct / count >= 0.90, f"{correct}/{count} correct over HTTP"


def test_probabilities_sum_to_one(client: httpx.Client, digits_artifact: ExportedModel) -> None:
    body = client.post("/predict?top_k=100", content=digit_png(digits_artifact.images[0]), headers=PNG).json()
    assert len(body["predictions"]) == len(digits_artifact.classes)
    assert sum(p["probability"] for p in body["predictions"]) == pytest.approx(1.0, abs=1e-6)


@pytest.mark.parametrize("encoding", ["stats", "png", "npy", "json"])
def test_every_layer_in_every_encoding(client: httpx.Client, digits_artifact: ExportedModel, encoding: str) -> None:
    response = client.post(f"/v1/models/{digits_artifact.name}/predict?layers=all&encoding={encoding}",
                           content=digit_png(digits_artifact.images[1]), headers=PNG)
    assert response.status_code == 200, response.text
    maps = response.json()["feature_maps"]
    assert list(maps) == [layer["name"] for layer in digits_artifact.metadata["layers"]]
    for layer in digits_artifact.metadata["layers"]:
        entry = maps[layer["name"]]
        assert entry["shape"] == layer["output_shape"][1:]
        if encoding == "png":
            grid = Image.open(io.BytesIO(base64.b64decode(entry["data"])))
            grid.load()
            assert grid.format == "PNG"
        if encoding == "npy":
            assert list(np.load(io.BytesIO(base64.b64decode(entry["data"]))).shape) == entry["shape"]
        if encoding == "json":
            assert list(np.asarray(entry["data"]).shape) == entry["shape"]


def test_npy_equals_onnxruntime_run_directly(client: httpx.Client, digits_artifact: ExportedModel) -> None:
    data = digit_png(digits_artifact.images[2])
    body = client.post("/predict?layers=all&encoding=npy", content=data, headers=PNG).json()
    spec = InputSpec.from_recipe(InputRecipe.model_validate(digits_artifact.metadata["input"]))
    tensor = preprocess(decode(data, max_pixels=10**6), spec)[None]
    session = ort.InferenceSession(str(digits_artifact.path / "model.onnx"), providers=["CPUExecutionProvider"])
    names = [layer["name"] for layer in digits_artifact.metadata["layers"]]
    expected = session.run(names, {"input": tensor})
    for name, direct in zip(names, expected):
        served = np.load(io.BytesIO(base64.b64decode(body["feature_maps"][name]["data"])))
        np.testing.assert_allclose(served, direct[0], rtol=1e-5, atol=1e-5)


def test_several_images_in_one_request(client: httpx.Client, digits_artifact: ExportedModel) -> None:
    images = digits_artifact.images[:5]
    files = [("image", (f"{i}.png", digit_png(im), "image/png")) for i, im in enumerate(images)]
    body = client.post("/predict?top_k=1", files=files).json()
    assert len(body["results"]) == 5
    for result, image in zip(body["results"], images):
        single = client.post("/predict?top_k=1", content=digit_png(image), headers=PNG).json()
        assert result["predictions"][0]["index"] == single["predictions"][0]["index"]
        assert result["predictions"][0]["probability"] == pytest.approx(single["predictions"][0]["probability"], rel=1e-5)


def test_pictures_for_people(client: httpx.Client, digits_artifact: ExportedModel) -> None:
    first_conv = next(layer["name"] for layer in digits_artifact.metadata["layers"] if layer.get("weight"))
    for state in ("trained", "initial"):
        response = client.get(f"/v1/models/{digits_artifact.name}/layers/{first_conv}/filters.png?state={state}")
        assert response.status_code == 200 and Image.open(io.BytesIO(response.content)).format == "PNG"
    response = client.post(f"/v1/models/{digits_artifact.name}/layers/{first_conv}/feature_maps.png",
                           content=digit_png(digits_artifact.images[3]), headers=PNG)
    assert response.status_code == 200 and Image.open(io.BytesIO(response.content)).format == "PNG"


def test_metadata_shows_what_the_primer_explains(client: httpx.Client, digits_artifact: ExportedModel) -> None:
    metadata = client.get(f"/v1/models/{digits_artifact.name}").json()
    assert metadata["provider"] == "CPUExecutionProvider"
    assert metadata["params"]["total"] == metadata["params"]["conv"] + metadata["params"]["dense"] + metadata["params"]["other"]
    strides = [layer["stride"] for layer in metadata["layers"]]
    fields = [layer["receptive_field"] for layer in metadata["layers"]]
    assert strides == sorted(strides) and fields == sorted(fields)  # both grow with depth


@pytest.mark.parametrize("path, kwargs, status", [
    ("/v1/models/nope/predict", {"content": b"x", "headers": PNG}, 404),
    ("/v1/models/digits-tinyvgg/versions/9/predict", {"content": b"x", "headers": PNG}, 404),
    ("/predict?layers=nope", {"content": b"x", "headers": PNG}, 404),
    ("/predict", {"content": b"not an image", "headers": PNG}, 400),
    ("/predict", {"content": b"", "headers": PNG}, 400),
    ("/predict", {"content": b"abc", "headers": {"content-type": "text/plain"}}, 415),
    ("/predict", {"json": {"image": "%%%"}}, 400),
    ("/predict?top_k=-1", {"content": b"x", "headers": PNG}, 422),
    ("/predict", {"content": b"\0" * (9 * 1024 * 1024), "headers": PNG}, 413),
])
def test_errors_over_http(client: httpx.Client, path: str, kwargs: dict, status: int) -> None:
    response = client.post(path, **kwargs)
    assert response.status_code == status, response.text
    assert list(response.json()) == ["error"]
    assert client.get("/healthz").status_code == 200


def test_truncated_png_is_400_and_the_server_keeps_serving(client: httpx.Client, digits_artifact: ExportedModel) -> None:
    data = png_bytes(np.random.default_rng(0).integers(0, 255, (64, 64), dtype=np.uint8))
    assert client.post("/predict", content=data[: len(data) // 2], headers=PNG).status_code == 400
    assert client.post("/predict", content=digit_png(digits_artifact.images[0]), headers=PNG).status_code == 200
