"""int8 versions over the v1 API, in process (TestClient): the quantization record on both
paths and its 404s, the catalogue's and the model list's figures, and the int8 version's
inside view (filters, grad-cam) next to its float version's."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
from starlette.testclient import TestClient

from tests.support.artifacts import write_artifact, write_int8
from tests.support.images import png_bytes
from tests.support.services import serving

PNG = {"Content-Type": "image/png"}
# Pixels like the calibration images' (random PNGs, tests/support/artifacts.py).
IMAGE = png_bytes(np.random.default_rng(11).integers(0, 256, (8, 8), dtype=np.uint8))


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    root = tmp_path_factory.mktemp("models")
    write_artifact(root, "synthetic", 1, seed=0, views=True)
    write_int8(root)  # version 2
    write_artifact(root, "plain", 1, seed=1)
    # "newest": the default does not hang on which version ran faster at load on this machine.
    with serving(model_repository=root, default_precision="newest") as c:
        yield c


@pytest.mark.parametrize("path", ["/v1/models/synthetic/quantization", "/v1/models/synthetic/versions/2/quantization"])
def test_an_int8_versions_record_on_both_paths(client: TestClient, path: str) -> None:
    response = client.get(path)
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["model"], body["version"], body["precision"], body["quantized_from"]) == ("synthetic", 2, "int8", 1)
    assert body["method"] == "minmax" and 0 <= body["agreement"] <= 1 and body["evaluation_images"] > 0
    assert [row["name"] for row in body["layers"]] == ["features.1", "features.2", "logits"]
    assert set(body["worst_layers"]) <= {"features.1", "features.2"} and body["worst_layers"]
    assert body["float_version"] == {"version": 1, "state": "ready", "served": True}
    assert all(row["speedup"] > 0 for row in body["speed"])


@pytest.mark.parametrize("path, message", [
    ("/v1/models/synthetic/versions/1/quantization",
     "model synthetic version 1 is float32: it has no quantization record; its int8 versions: 2"),
    ("/v1/models/plain/quantization",
     "model plain version 1 is float32: it has no quantization record; it has no int8 version "
     "(python -m model_export quantize <repository>/plain makes one)"),
    ("/v1/models/synthetic/versions/9/quantization", "model synthetic has no version 9; valid: 1, 2"),
    ("/v1/models/nothing/quantization", "unknown model 'nothing'; valid: plain, synthetic"),
])
def test_what_has_no_record_is_a_404_naming_what_has(client: TestClient, path: str, message: str) -> None:
    response = client.get(path)
    assert response.status_code == 404 and response.json() == {"error": message}


def test_the_catalogue_and_the_model_list_show_the_precision(client: TestClient) -> None:
    int8 = client.get("/v1/models/synthetic/versions/2/layers").json()
    assert int8["precision"] == "int8" and int8["quantization"]["quantized_from"] == 1
    assert "layers" not in int8["quantization"]  # the per-layer table is the quantization answer's
    assert all(isinstance(layer["quantization_sqnr_db"], float) for layer in int8["layers"])
    plain = client.get("/v1/models/synthetic/versions/1/layers").json()
    assert plain["precision"] == "float32" and plain["quantization"] is None
    assert all("quantization_sqnr_db" not in layer for layer in plain["layers"])
    metadata = client.get("/v1/models/synthetic/versions/2").json()
    assert metadata["precision"] == "int8" and metadata["quantization"]["agreement"] == int8["quantization"]["agreement"]
    (model,) = [m for m in client.get("/v1/models").json()["models"] if m["name"] == "synthetic"]
    assert [(v["version"], v["precision"], v["quantized_from"]) for v in model["versions"]] == \
        [(2, "int8", 1), (1, "float32", None)]


def test_the_int8_filters_are_the_float_ones_to_a_quantization_step(client: TestClient) -> None:
    for channel in range(4):
        path = "/v1/models/synthetic/versions/{}/layers/features.1/channels/%d/filter" % channel
        int8, plain = (np.asarray(client.get(path.format(v)).json()["trained"]) for v in (2, 1))
        assert int8.shape == plain.shape == (1, 3, 3)
        assert np.abs(int8 - plain).max() <= np.abs(plain).max() / 127 / 2 + 1e-6


def test_grad_cam_is_offered_on_the_int8_version_and_its_map_is_the_float_ones(client: TestClient) -> None:
    catalogue = client.get("/v1/models/synthetic/versions/2/layers").json()
    assert "grad-cam" in catalogue["explanations"]["methods"]
    maps = []
    for version in (1, 2):
        response = client.post(f"/v1/models/synthetic/versions/{version}/explain?method=grad-cam&layer=features.2"
                               "&faithfulness=false&target=0", content=IMAGE, headers=PNG)
        assert response.status_code == 200, response.text
        maps.append(np.asarray(response.json()["map"]["data"]))
    plain, int8 = maps
    assert plain.std() > 0 and np.corrcoef(plain.ravel(), int8.ravel())[0, 1] > 0.95
