"""The explanation routes in process (TestClient): the default model's and a model's two
version paths, JSON in every map encoding, the PNG overlay with its summary header, and the
refusals. (tests/integration/test_http_explain.py measures maps on a trained model.)"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator

import numpy as np
import pytest
from starlette.testclient import TestClient

from tests.support.artifacts import write_artifact
from tests.support.images import png_bytes
from tests.support.services import serving

PNG = {"Content-Type": "image/png"}
IMAGE = png_bytes(np.tile(np.arange(8, dtype=np.uint8) * 30, (8, 1)))


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    root = tmp_path_factory.mktemp("models")
    write_artifact(root, "synthetic", 1, seed=0)
    write_artifact(root, "synthetic", 2, seed=1)
    with serving(model_repository=root) as c:
        yield c


@pytest.mark.parametrize("path, version", [
    ("/explain", 2), ("/v1/models/synthetic/explain", 2), ("/v1/models/synthetic/versions/1/explain", 1)])
def test_every_path_explains_with_its_version(client: TestClient, path: str, version: int) -> None:
    response = client.post(f"{path}?method=hires-cam&faithfulness=false", content=IMAGE, headers=PNG)
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["model"], body["version"], body["method"]) == ("synthetic", version, "hires-cam")
    assert body["layer"] == "features.2" and body["faithfulness"] is None  # the deepest spatial layer
    assert np.asarray(body["map"]["data"]).shape == (8, 8) and body["map"]["encoding"] == "json"
    assert {"decode", "inference", "engine", "encode", "total"} <= set(body["timings_ms"])


@pytest.mark.parametrize("encoding", ["json", "npy", "png"])
def test_each_map_encoding(client: TestClient, encoding: str) -> None:
    response = client.post(f"/explain?method=grad-cam&faithfulness=false&encoding={encoding}",
                           content=IMAGE, headers=PNG)
    assert response.status_code == 200, response.text
    saliency = response.json()["map"]
    assert saliency["encoding"] == encoding and saliency["shape"] == [8, 8]
    if encoding == "png":
        assert saliency["colormap"] == "inferno" and saliency["size"] == [224, 224]


def test_the_png_overlay_carries_the_answer_in_a_header(client: TestClient) -> None:
    response = client.post("/v1/models/synthetic/versions/2/explain.png?method=occlusion&colormap=viridis",
                           content=IMAGE, headers=PNG)
    assert response.status_code == 200 and response.content.startswith(b"\x89PNG")
    summary = json.loads(response.headers["x-convscope-explanation"])
    assert summary["version"] == 2 and "map" not in summary
    assert "deletion_curve" not in summary["faithfulness"] and "deletion" in summary["faithfulness"]
    assert json.loads(response.headers["x-convscope-overlay"])["colormap"] == "viridis"


@pytest.mark.parametrize("query, status, words", [
    ("method=magic", 422, "method"),
    ("method=grad-cam&layer=fc", 404, "unknown layer 'fc'; valid: features.1, features.2 for grad-cam"),
    ("target=9", 404, "target"),
    ("passes=999999999", 422, "CONVSCOPE_MAX_EXPLAIN_PASSES"),
])
def test_refusals_name_what_is_valid(client: TestClient, query: str, status: int, words: str) -> None:
    response = client.post(f"/explain?{query}", content=IMAGE, headers=PNG)
    assert response.status_code == status and words in response.json()["error"], response.text


def test_one_image_only(client: TestClient) -> None:
    body = {"images": [base64.b64encode(IMAGE).decode()] * 2}
    response = client.post("/explain", json=body)
    assert response.status_code == 400 and response.json() == {"error": "send exactly one image to explain, not 2"}
