"""The v1 REST API through starlette's TestClient, over synthetic artifacts."""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families
from starlette.testclient import TestClient

from artifact import InputRecipe
from service.inference.preprocessing import InputSpec, decode, preprocess
from tests.support.artifacts import write_artifact
from tests.support.images import png_bytes
from tests.support.services import serving

PNG = {"content-type": "image/png"}


def test_predict_raw_png(client: TestClient, random_png: Callable[..., bytes]) -> None:
    response = client.post("/predict?top_k=3", content=random_png(), headers=PNG)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model"] == "synthetic" and body["version"] == 2  # newest by default
    probabilities = [p["probability"] for p in body["predictions"]]
    assert probabilities == sorted(probabilities, reverse=True)
    assert sum(probabilities) == pytest.approx(1.0)
    assert {p["label"] for p in body["predictions"]} == {"class_0", "class_1", "class_2"}
    assert set(body["timings_ms"]) == {"decode", "preprocess", "queue", "inference", "encode", "total"}
    assert "inference;dur=" in response.headers["server-timing"]
    assert response.headers["x-convscope-replica"]


def test_server_timing_and_the_bodys_timings_are_the_same_figures(client: TestClient,
                                                                   random_png: Callable[..., bytes]) -> None:
    response = client.post("/predict", content=random_png(), headers=PNG)
    header = dict(part.split(";dur=") for part in response.headers["server-timing"].split(", "))
    assert {k: float(v) for k, v in header.items()} == response.json()["timings_ms"]


def test_predictions_equal_onnxruntime_run_directly(client: TestClient, repository: Path,
                                                     random_png: Callable[..., bytes]) -> None:
    data = random_png(13)
    body = client.post("/v1/models/synthetic/versions/1/predict?top_k=3", content=data, headers=PNG).json()
    metadata = json.loads((repository / "synthetic/1/metadata.json").read_text())
    tensor = preprocess(decode(data, max_pixels=10**6), InputSpec.from_recipe(InputRecipe.model_validate(metadata["input"])))[None]
    session = ort.InferenceSession(str(repository / "synthetic/1/model.onnx"), providers=["CPUExecutionProvider"])
    logits = session.run(["logits"], {"input": tensor})[0][0]
    expected = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
    for p in body["predictions"]:
        assert p["probability"] == pytest.approx(float(expected[p["index"]]), rel=1e-5)


@pytest.mark.parametrize("encoding", ["stats", "png", "npy", "json"])
def test_feature_maps_in_every_encoding_have_the_metadata_shapes(client: TestClient, encoding: str,
                                                                  random_png: Callable[..., bytes]) -> None:
    response = client.post(f"/predict?layers=all&encoding={encoding}", content=random_png(), headers=PNG)
    assert response.status_code == 200, response.text
    maps = response.json()["feature_maps"]
    metadata = client.get("/v1/models/synthetic").json()
    for layer in metadata["layers"]:
        entry = maps[layer["name"]]
        assert entry["shape"] == layer["output_shape"][1:]
        assert entry["encoding"] == encoding
        if encoding == "png":
            image = Image.open(io.BytesIO(base64.b64decode(entry["data"])))
            assert image.format == "PNG" and image.mode == "RGB"
        elif encoding == "npy":
            array = np.load(io.BytesIO(base64.b64decode(entry["data"])), allow_pickle=False)
            assert list(array.shape) == entry["shape"]
        elif encoding == "json":
            assert list(np.asarray(entry["data"]).shape) == entry["shape"]
        else:
            assert len(entry["stats"]["mean"]) == entry["shape"][0]


def test_npy_float16_and_chosen_layers(client: TestClient, random_png: Callable[..., bytes]) -> None:
    body = client.post("/predict?layers=features.2&encoding=npy&dtype=float16", content=random_png(),
                       headers=PNG).json()
    assert list(body["feature_maps"]) == ["features.2"]
    array = np.load(io.BytesIO(base64.b64decode(body["feature_maps"]["features.2"]["data"])))
    assert array.dtype == np.float16


def test_layers_may_repeat_or_be_comma_separated(client: TestClient, random_png: Callable[..., bytes]) -> None:
    image = random_png()
    for query in ("layers=features.1&layers=features.2", "layers=features.1,features.2&layers=features.1"):
        body = client.post(f"/predict?{query}", content=image, headers=PNG).json()
        assert list(body["feature_maps"]) == ["features.1", "features.2"], query


def test_several_images_in_multipart_and_json(client: TestClient, random_png: Callable[..., bytes]) -> None:
    images = [random_png(), random_png(), random_png()]
    files = [("image", (f"{i}.png", data, "image/png")) for i, data in enumerate(images)]
    multipart = client.post("/predict?layers=features.1", files=files).json()
    assert len(multipart["results"]) == 3
    as_json = client.post("/predict?layers=features.1",
                          json={"images": [base64.b64encode(d).decode() for d in images]}).json()
    singles = [client.post("/predict?layers=features.1", content=d, headers=PNG).json() for d in images]
    for batched_m, batched_j, single in zip(multipart["results"], as_json["results"], singles):
        for batched in (batched_m, batched_j):
            assert batched["predictions"][0]["label"] == single["predictions"][0]["label"]
            assert batched["predictions"][0]["probability"] == pytest.approx(single["predictions"][0]["probability"], rel=1e-5)
            assert batched["feature_maps"]["features.1"]["stats"]["mean"] == pytest.approx(
                single["feature_maps"]["features.1"]["stats"]["mean"], rel=1e-4, abs=1e-6)


def test_json_single_image_and_data_url(client: TestClient, random_png: Callable[..., bytes]) -> None:
    encoded = base64.b64encode(random_png()).decode()
    assert client.post("/predict", json={"image": encoded}).status_code == 200
    assert client.post("/predict", json={"image": "data:image/png;base64," + encoded}).status_code == 200


@pytest.mark.parametrize("format", ["JPEG", "WEBP", "BMP", "GIF"])
def test_other_formats(client: TestClient, format: str) -> None:
    data = png_bytes(np.full((16, 16, 3), 120, dtype=np.uint8), format=format)
    response = client.post("/predict", content=data, headers={"content-type": f"image/{format.lower()}"})
    assert response.status_code == 200, response.text


def test_rgb_model_serves_grey_and_colour_images(tmp_path: Path, random_png: Callable[..., bytes]) -> None:
    write_artifact(tmp_path, "colour", 1, channels=3, size=10)
    with serving(model_repository=tmp_path) as client:
        for channels in (1, 3, 4):
            assert client.post("/predict", content=random_png(12, channels), headers=PNG).status_code == 200
        response = client.get("/v1/models/colour/layers/features.1/filters.png")
        assert json.loads(response.headers["x-convscope-grid"])["layout"] == "rgb"


def test_models_list_and_metadata(client: TestClient) -> None:
    models = client.get("/v1/models").json()["models"]
    assert models[0]["name"] == "synthetic" and models[0]["default_version"] == 2
    assert [v["version"] for v in models[0]["versions"]] == [2, 1]
    assert all(v["provider"] == "CPUExecutionProvider" for v in models[0]["versions"])
    metadata = client.get("/v1/models/synthetic/versions/1").json()
    assert metadata["version"] == 1 and metadata["provider"] == "CPUExecutionProvider"
    assert metadata["available_versions"] == [1, 2]
    layers = client.get("/v1/models/synthetic/layers").json()["layers"]
    assert [(layer["name"], layer["has_filters"]) for layer in layers] == [("features.1", True), ("features.2", False)]
    geometry = ("receptive_field", "stride", "geometry_note")
    assert [[layer[k] for k in geometry] for layer in layers] == [
        [layer.get(k) for k in geometry] for layer in metadata["layers"]
    ]


def test_feature_map_png_endpoint(client: TestClient, random_png: Callable[..., bytes]) -> None:
    response = client.post("/v1/models/synthetic/layers/features.1/feature_maps.png", content=random_png(), headers=PNG)
    assert response.status_code == 200 and response.headers["content-type"] == "image/png"
    assert Image.open(io.BytesIO(response.content)).format == "PNG"
    versioned = client.post("/v1/models/synthetic/versions/1/layers/features.2/feature_maps.png",
                            content=random_png(), headers=PNG)
    assert versioned.status_code == 200


def test_filters_trained_and_initial_differ(client: TestClient) -> None:
    trained = client.get("/v1/models/synthetic/layers/features.1/filters.png")
    initial = client.get("/v1/models/synthetic/layers/features.1/filters.png?state=initial")
    assert trained.status_code == initial.status_code == 200
    assert trained.content != initial.content
    assert Image.open(io.BytesIO(trained.content)).size == Image.open(io.BytesIO(initial.content)).size


@pytest.mark.parametrize("method, path, status, words", [
    ("post", "/v1/models/nope/predict", 404, "valid: synthetic"),
    ("post", "/v1/models/synthetic/versions/7/predict", 404, "valid: 1, 2"),
    ("post", "/predict?layers=conv9", 404, "valid: features.1, features.2"),
    ("post", "/v1/models/synthetic/layers/conv9/feature_maps.png", 404, "valid: features.1"),
    ("get", "/v1/models/synthetic/layers/features.2/filters.png", 404, "layers with filters: features.1"),
    ("get", "/v1/models/synthetic/layers/conv9/filters.png", 404, "valid: features.1"),
    ("get", "/v1/models/nope", 404, "valid: synthetic"),
    ("post", "/predict?top_k=0", 422, "top_k"),
    ("post", "/predict?encoding=gif", 422, "encoding"),
    ("post", "/predict?dtype=int8", 422, "dtype"),
    ("post", "/v1/models/synthetic/versions/zero/predict", 422, "version"),
    ("get", "/no/such/route", 404, "no route"),
])
def test_client_errors_name_what_is_valid(client: TestClient, random_png: Callable[..., bytes],
                                          method: str, path: str, status: int, words: str) -> None:
    if method == "post":
        response = client.post(path, content=random_png(), headers=PNG)
    else:
        response = client.get(path)
    assert response.status_code == status, response.text
    assert set(response.json()) == {"error"}
    assert words in response.json()["error"]


@pytest.mark.parametrize("content, headers, status", [
    (b"", PNG, 400),
    (b"\x89PNG\r\n\x1a\n truncated", PNG, 400),
    (b"GIF89a", {"content-type": "image/gif"}, 400),
    (b"hello", {"content-type": "text/plain"}, 415),
    (b"hello", {"content-type": "application/x-www-form-urlencoded"}, 415),
    (b"{not json", {"content-type": "application/json"}, 400),
    (b'{"image": "***"}', {"content-type": "application/json"}, 400),
    (b'{"images": []}', {"content-type": "application/json"}, 400),
    (b'{"picture": "aGk="}', {"content-type": "application/json"}, 400),
    (b'[1, 2]', {"content-type": "application/json"}, 400),
    (b'{"image": "aGVsbG8="}', {"content-type": "application/json"}, 400),  # valid base64, not an image
    (b"[" * 100_000, {"content-type": "application/json"}, 400),
])
def test_bad_bodies_are_client_errors(client: TestClient, content: bytes, headers: dict, status: int) -> None:
    response = client.post("/predict", content=content, headers=headers)
    assert response.status_code == status, response.text
    assert list(response.json()) == ["error"]
    assert client.get("/healthz").status_code == 200  # and the server keeps serving


def test_multipart_without_image_field(client: TestClient) -> None:
    response = client.post("/predict", files=[("picture", ("a.png", b"x", "image/png"))])
    assert response.status_code == 400 and "'image'" in response.json()["error"]


def test_missing_content_type(client: TestClient, random_png: Callable[..., bytes]) -> None:
    response = client.post("/predict", content=random_png(), headers={"content-type": ""})
    assert response.status_code == 415


def test_size_limits(repository: Path, random_png: Callable[..., bytes]) -> None:
    with serving(model_repository=repository, max_body_bytes=2048, max_image_pixels=100,
                 max_feature_map_bytes=1024, max_images_per_request=2) as client:
        big = png_bytes(np.random.default_rng(0).integers(0, 256, (64, 64), dtype=np.uint8))
        response = client.post("/predict", content=big, headers=PNG)
        assert response.status_code == 413 and "CONVSCOPE_MAX_BODY_BYTES" in response.json()["error"]
        response = client.post("/predict", content=random_png(11), headers=PNG)
        assert response.status_code == 413 and "pixels" in response.json()["error"]
        response = client.post("/predict?layers=all&encoding=json", content=random_png(8), headers=PNG)
        assert response.status_code == 413
        assert "1024 bytes" in response.json()["error"] and "encoding=stats" in response.json()["error"]
        files = [("image", (f"{i}.png", random_png(8), "image/png")) for i in range(3)]
        response = client.post("/predict", files=files)
        assert response.status_code == 413 and "3 images" in response.json()["error"]
        assert client.post("/predict?layers=all&encoding=stats", content=random_png(8), headers=PNG).status_code == 200


def test_a_broken_model_is_listed_and_does_not_stop_the_others(tmp_path: Path, random_png: Callable[..., bytes]) -> None:
    write_artifact(tmp_path, "good", 1)
    broken = write_artifact(tmp_path, "broken", 1)
    (broken / "model.onnx").write_bytes(b"corrupt")
    write_artifact(tmp_path, "good", 2)
    (tmp_path / "good" / "2" / "metadata.json").write_text("{")
    with serving(model_repository=tmp_path, default_model="good") as client:
        assert client.get("/readyz").status_code == 200
        models = {m["name"]: m for m in client.get("/v1/models").json()["models"]}
        assert models["broken"]["versions"][0]["state"] == "failed"
        assert "sha256" in models["broken"]["versions"][0]["reason"]
        assert models["good"]["default_version"] == 1  # version 2 failed: the newest ready one serves
        assert "JSON" in models["good"]["versions"][0]["reason"]
        assert client.post("/predict", content=random_png(), headers=PNG).json()["version"] == 1
        response = client.post("/v1/models/broken/predict", content=random_png(), headers=PNG)
        assert response.status_code == 503 and "sha256" in response.json()["error"]
        response = client.post("/v1/models/good/versions/2/predict", content=random_png(), headers=PNG)
        assert response.status_code == 503


def test_default_model_must_be_named_when_several_are_served(tmp_path: Path, random_png: Callable[..., bytes]) -> None:
    write_artifact(tmp_path, "a", 1)
    write_artifact(tmp_path, "b", 1)
    with serving(model_repository=tmp_path) as client:
        response = client.post("/predict", content=random_png(), headers=PNG)
        assert response.status_code == 400 and "CONVSCOPE_DEFAULT_MODEL" in response.json()["error"]
        assert client.post("/v1/models/b/predict", content=random_png(), headers=PNG).status_code == 200


def test_empty_repository_is_alive_but_not_ready(tmp_path: Path, random_png: Callable[..., bytes]) -> None:
    with serving(model_repository=tmp_path / "empty") as client:
        assert client.get("/healthz").status_code == 200
        ready = client.get("/readyz")
        assert ready.status_code == 503 and "no model" in ready.json()["detail"]
        assert client.post("/predict", content=random_png(), headers=PNG).status_code == 404


def test_metrics_parse_and_move_with_requests(client: TestClient, random_png: Callable[..., bytes]) -> None:
    def samples() -> dict[tuple[str, tuple], float]:
        text = client.get("/metrics").text
        return {(s.name, tuple(sorted(s.labels.items()))): s.value
                for family in text_string_to_metric_families(text) for s in family.samples}

    before = samples()
    for _ in range(3):
        client.post("/v1/models/synthetic/predict", content=random_png(), headers=PNG)
    client.post("/v1/models/synthetic/predict?top_k=0", content=random_png(), headers=PNG)
    after = samples()
    ok = ("convscope_requests_total", (("endpoint", "/v1/models/{name}/predict"), ("model", "synthetic"),
                                       ("status", "200"), ("version", "2")))
    assert after[ok] - before.get(ok, 0) == 3
    assert any(k[0] == "convscope_requests_total" and ("status", "422") in k[1] for k in after)
    count = ("convscope_inference_count_total", (("model", "synthetic"), ("version", "2")))
    assert after[count] - before.get(count, 0) == 3
    assert after[("convscope_models_loaded", ())] == 2
    assert any(k[0] == "convscope_inference_batch_size_bucket" for k in after)
    assert any(k[0] == "convscope_request_duration_seconds_count" for k in after)
    assert ("convscope_inference_queue_depth", (("model", "synthetic"), ("version", "2"))) in after


def test_openapi_documents_the_api(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    assert "/v1/models/{name}/predict" in spec["paths"]
    body = spec["paths"]["/predict"]["post"]["requestBody"]["content"]
    assert {"image/*", "multipart/form-data", "application/json"} <= set(body)
    assert client.get("/docs").status_code == 200


def test_explorer_page_is_served(client: TestClient) -> None:
    response = client.get("/")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/html")
    page = response.text
    assert '<script type="module" src="/explorer/explorer.mjs"' in page and 'href="/explorer/explorer.css"' in page
    script = client.get("/explorer/explorer.mjs")
    assert script.status_code == 200 and script.headers["content-type"] == "text/javascript; charset=utf-8"
    assert script.headers["cache-control"] == "no-cache" and "etag" in script.headers
    assert client.get("/explorer/explorer.css").headers["content-type"].startswith("text/css")
    # the page drives the same public API a program would use: every path it asks for is in lib/api.mjs
    api = client.get("/explorer/lib/api.mjs").text
    for path in ("/v1/models", "/predict?top_k=", "&layers=", "&encoding=npy&dtype=float16", "/samples",
                 "/channels/", "/filter`", "/explain?", "/layers?version=", "filters.png?version="):
        assert path in api, path
