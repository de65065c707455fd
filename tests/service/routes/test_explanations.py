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


# ---- the default method and the methods not recommended, from the export's measurements --------

def _measured(method: str, wins: int, deletion: float, seconds: float = 0.05) -> dict[str, object]:
    return {"method": method, "layer": None if method in ("occlusion", "rise") else "features.2", "images": 30,
            "beats_random": wins, "share": wins / 30, "passes": 59, "median_seconds": seconds,
            "deletion": deletion, "random_deletion": 0.5}


MEASURED = {
    "images": 30, "seconds": 12.5, "cpus": 2, "load_average": 0.4,
    "methods": [_measured("grad-cam", 12, 0.45), _measured("hires-cam", 30, 0.2), _measured("eigen-cam", 25, 0.3),
                _measured("score-cam", 28, 0.25), _measured("occlusion", 29, 0.22, 0.3),
                _measured("rise", 30, 0.1, 4.0)],
    "default_method": "hires-cam",
    "reason": "hires-cam beat a random map on 30 of 30 held-out images (100%; ...)",
}


@pytest.fixture(scope="module")
def measured_client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    root = tmp_path_factory.mktemp("models")
    write_artifact(root, "measured", 1, seed=0, explanations=MEASURED)
    write_artifact(root, "older", 1, seed=0)
    with serving(model_repository=root) as c:
        yield c


def test_the_catalogue_gives_the_measured_default_why_and_the_methods_not_recommended(
        measured_client: TestClient) -> None:
    body = measured_client.get("/v1/models/measured/layers").json()["explanations"]
    assert body["default_method"] == "hires-cam"
    assert body["default_reason"] == f"measured at export on 30 held-out images: {MEASURED['reason']}"
    assert body["not_recommended"] == [{
        "method": "grad-cam", "beats_random_share": 0.4, "images": 30,
        "why": "its map beat a random map on 12 of 30 held-out images (40%) when measured at export, under the "
               "80% a method needs to be recommended"}]  # eigen-cam's 25 of 30 (83%) is recommended
    # A record written before 'failed' existed reads as no image failed.
    assert body["measured"] == {**MEASURED, "methods": [{**m, "failed": 0} for m in MEASURED["methods"]]}
    assert body["methods"] == ["occlusion", "rise", "score-cam", "grad-cam", "hires-cam", "eigen-cam"]  # all offered
    answer = measured_client.post("/v1/models/measured/explain?faithfulness=false", content=IMAGE, headers=PNG)
    assert answer.status_code == 200 and answer.json()["method"] == "hires-cam"  # a request without method=


def test_an_artifact_without_measurements_keeps_todays_default(measured_client: TestClient) -> None:
    body = measured_client.get("/v1/models/older/layers").json()["explanations"]
    assert body["default_method"] == "occlusion" and body["measured"] is None and body["not_recommended"] == []
    assert body["default_reason"].startswith("not measured") and "channel-view" in body["default_reason"]
    answer = measured_client.post("/v1/models/older/explain?faithfulness=false", content=IMAGE, headers=PNG)
    assert answer.json()["method"] == "occlusion"
