"""Explanations over real HTTP, on the trained digits model (issue 12): every method answers
with a map of the input's size in 0..1 and its faithfulness; the PNG overlay decodes; every
error names what is valid; and on 30 held-out digits each method's map beats a random map
on at least 80% of them, except where that is measured not to hold (classic Grad-CAM on
TinyVGG: see ``test_classic_grad_cam_finds_no_evidence_on_tinyvggs_dense_head``).
"""

from __future__ import annotations

import base64
import io
import json
import re
from collections.abc import Callable

import httpx
import numpy as np
import pytest
from PIL import Image

from service.explain import METHODS
from tests.support.exported import ExportedModel
from tests.support.live import LiveServer

DIGITS = 30
BAR = 0.8  # the share of digits whose map must beat chance (issue 12)
MAX_PASSES = 1200  # the server's CONVSCOPE_MAX_EXPLAIN_PASSES here: RISE's default 1059 fits
# Few passes where the method allows (the map's quality is not under test here): the
# least each takes, faithfulness included (58 passes).
LEAN_PASSES = {"occlusion": 1 + 4 + 58, "rise": 1 + 16 + 58, "score-cam": 1 + 1 + 58}


@pytest.fixture(scope="module")
def server(start_server: Callable[..., LiveServer], digits_artifact: ExportedModel) -> LiveServer:
    return start_server(digits_artifact.repository, max_explain_passes=MAX_PASSES)


@pytest.fixture(scope="module")
def digits(digits_artifact: ExportedModel) -> list[bytes]:
    """The held-out digits as PNGs, as a client would send them."""
    out = []
    for image in digits_artifact.images[:DIGITS]:
        buffer = io.BytesIO()
        Image.fromarray(np.asarray(image, dtype=np.uint8)).save(buffer, format="PNG")
        out.append(buffer.getvalue())
    return out


def explain(server: LiveServer, model: str, image: bytes, path: str = "explain", **query: object) -> httpx.Response:
    return httpx.post(f"{server.url}/v1/models/{model}/{path}", params={k: str(v) for k, v in query.items()},
                      content=image, headers={"content-type": "image/png"}, timeout=120)


@pytest.mark.parametrize("method", METHODS)
def test_every_method_answers_with_a_map_of_the_input_size_and_its_faithfulness(
    server: LiveServer, digits_artifact: ExportedModel, digits: list[bytes], method: str
) -> None:
    passes = LEAN_PASSES.get(method)
    response = explain(server, digits_artifact.name, digits[0], method=method,
                       **({"passes": passes} if passes else {}))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model"] == digits_artifact.name and body["version"] == digits_artifact.version
    assert body["method"] == method
    assert body["layer"] == (None if method in ("occlusion", "rise") else "features.9")
    top = httpx.post(f"{server.url}/v1/models/{digits_artifact.name}/predict", content=digits[0],
                     headers={"content-type": "image/png"}, timeout=60).json()["predictions"][0]
    assert body["target"]["index"] == top["index"]  # the default target: the top class
    assert body["target"]["probability"] == pytest.approx(top["probability"], rel=1e-5)
    assert body["target"]["label"] == digits_artifact.classes[body["target"]["index"]]
    assert 0 < body["target"]["probability"] <= 1
    assert body["forward_passes"] <= (passes or MAX_PASSES) and body["forward_passes"] == body["budget"]
    saliency = np.asarray(body["map"]["data"], dtype=np.float32)
    assert body["map"]["shape"] == [28, 28] == list(saliency.shape)
    assert saliency.min() >= 0 and saliency.max() <= 1
    scores = body["faithfulness"]
    assert set(scores) >= {"deletion", "insertion", "random_deletion", "beats_random", "note", "deletion_curve"}
    assert all(0 <= scores[k] <= 1 for k in ("deletion", "insertion", "random_deletion"))
    assert len(scores["deletion_curve"]) == scores["steps"] + 1
    if body["note"] is not None:  # an empty map is said to be one, and never beats chance
        assert not saliency.any() and scores["beats_random"] is False and scores["note"]
    else:
        assert saliency.max() == pytest.approx(1.0)
        assert scores["beats_random"] == (scores["deletion"] < scores["random_deletion"])
    assert set(body["timings_ms"]) >= {"decode", "queue", "inference", "engine", "total"}


def test_maps_travel_as_npy_and_as_a_png_overlay(server: LiveServer, digits_artifact: ExportedModel,
                                                 digits: list[bytes]) -> None:
    name = digits_artifact.name
    as_json = explain(server, name, digits[1], method="hires-cam", faithfulness="false").json()
    as_npy = explain(server, name, digits[1], method="hires-cam", faithfulness="false", encoding="npy").json()
    array = np.load(io.BytesIO(base64.b64decode(as_npy["map"]["data"])))
    np.testing.assert_allclose(array, np.asarray(as_json["map"]["data"], np.float32), atol=1e-6)
    assert as_json["faithfulness"] is None and as_json["forward_passes"] == 1
    as_png = explain(server, name, digits[1], method="hires-cam", faithfulness="false", encoding="png").json()
    picture = Image.open(io.BytesIO(base64.b64decode(as_png["map"]["data"])))
    assert picture.format == "PNG" and list(picture.size) == as_png["map"]["size"][::-1]
    assert as_png["map"]["colormap"] == "inferno"


def test_explain_png_answers_the_overlay_itself(server: LiveServer, digits_artifact: ExportedModel,
                                                digits: list[bytes]) -> None:
    response = explain(server, digits_artifact.name, digits[2], path="explain.png", method="eigen-cam")
    assert response.status_code == 200 and response.headers["content-type"] == "image/png"
    picture = Image.open(io.BytesIO(response.content))
    picture.load()
    assert picture.mode == "RGB" and picture.size == (224, 224)  # 28 px enlarged 8 x to be seen
    summary = json.loads(response.headers["x-convscope-explanation"])
    assert summary["method"] == "eigen-cam" and summary["forward_passes"] == 59
    assert "deletion" in summary["faithfulness"] and "deletion_curve" not in summary["faithfulness"]
    default = httpx.post(f"{server.url}/explain.png", content=digits[2], headers={"content-type": "image/png"},
                         params={"faithfulness": "false"}, timeout=120)
    assert default.status_code == 200  # the default model, the default method (occlusion)
    assert json.loads(default.headers["x-convscope-explanation"])["method"] == "occlusion"


@pytest.mark.parametrize("query, status, message", [
    ({"method": "lime"}, 422, "Input should be 'occlusion', 'rise', 'score-cam', 'grad-cam', 'hires-cam' or 'eigen-cam'"),
    ({"method": "grad-cam", "layer": "features.99"}, 404,
     "unknown layer 'features.99'; valid: features.8, features.9 for grad-cam"),
    ({"method": "grad-cam", "layer": "features.1"}, 422,
     r"layer 'features.1' cannot be used with grad-cam: grad-cam is not exact there \(Conv"),
    ({"method": "occlusion", "layer": "features.9"}, 422, "occlusion perturbs the input and takes no layer"),
    ({"target": "eleven"}, 404, r"unknown target 'eleven'; valid: a class index 0..9 or a label \('0', '1'"),
    ({"target": "10"}, 404, "unknown target 10; valid: a class index 0..9"),
    ({"passes": MAX_PASSES + 1}, 422, rf"over this server's limit of {MAX_PASSES} \(CONVSCOPE_MAX_EXPLAIN_PASSES\)"),
    ({"passes": 10}, 422, "passes=10 is too few: method occlusion needs at least 63"),
    ({"encoding": "stats"}, 422, "Input should be 'json', 'npy' or 'png'"),
])
def test_bad_queries_are_refused_naming_what_is_valid(server: LiveServer, digits_artifact: ExportedModel,
                                                      digits: list[bytes], query: dict, status: int,
                                                      message: str) -> None:
    response = explain(server, digits_artifact.name, digits[0], **query)
    assert response.status_code == status, response.text
    assert re.search(message, response.json()["error"]), response.json()["error"]


@pytest.mark.parametrize("content, content_type, status, message", [
    (b"not an image", "image/png", 400, "not an image this service can decode"),
    (b"", "image/png", 400, "the body is empty"),
    (b"\x89PNG", "text/plain", 415, "Content-Type text/plain is not accepted"),
])
def test_bad_bodies_are_refused(server: LiveServer, digits_artifact: ExportedModel, content: bytes,
                                content_type: str, status: int, message: str) -> None:
    for path in ("explain", "explain.png"):
        response = httpx.post(f"{server.url}/v1/models/{digits_artifact.name}/{path}", content=content,
                              headers={"content-type": content_type}, timeout=60)
        assert response.status_code == status and message in response.json()["error"]


def test_one_image_only_and_unknown_models_and_versions(server: LiveServer, digits_artifact: ExportedModel,
                                                        digits: list[bytes]) -> None:
    two = httpx.post(f"{server.url}/explain", files=[("image", digits[0]), ("image", digits[1])], timeout=60)
    assert two.status_code == 400 and "exactly one image" in two.json()["error"]
    unknown = httpx.post(f"{server.url}/v1/models/nope/explain", content=digits[0],
                         headers={"content-type": "image/png"}, timeout=60)
    assert unknown.status_code == 404 and digits_artifact.name in unknown.json()["error"]
    version = httpx.post(f"{server.url}/v1/models/{digits_artifact.name}/versions/7/explain", content=digits[0],
                         headers={"content-type": "image/png"}, timeout=60)
    assert version.status_code == 404 and "no version 7" in version.json()["error"]


def test_the_layer_catalogue_says_which_methods_each_layer_allows(server: LiveServer,
                                                                  digits_artifact: ExportedModel) -> None:
    body = httpx.get(f"{server.url}/v1/models/{digits_artifact.name}/layers").json()
    assert body["explanations"]["default_method"] == "occlusion"
    assert body["explanations"]["default_layer"] == "features.9"
    assert body["explanations"]["methods"] == list(METHODS)
    layers = {layer["name"]: layer for layer in body["layers"]}
    assert layers["features.9"]["explain_methods"] == ["grad-cam", "hires-cam", "score-cam", "eigen-cam"]
    assert layers["features.1"]["explain_methods"] == ["score-cam", "eigen-cam"]
    assert "Conv" in layers["features.1"]["gradient_methods_unavailable"]


def test_explanations_are_counted_by_method_and_outcome(server: LiveServer, digits_artifact: ExportedModel,
                                                        digits: list[bytes]) -> None:
    explain(server, digits_artifact.name, digits[3], method="eigen-cam", faithfulness="false")
    explain(server, digits_artifact.name, digits[3], method="eigen-cam", target="eleven")
    text = httpx.get(f"{server.url}/metrics").text
    labels = f'method="eigen-cam",model="{digits_artifact.name}"'
    for outcome in ("ok", "rejected"):
        assert re.search(rf'^convscope_explanations_total\{{{labels},outcome="{outcome}",version="1"\}} [1-9]', text,
                         re.M), outcome
    assert re.search(rf'^convscope_explanation_forward_passes_count\{{{labels},version="1"\}} [1-9]', text, re.M)
    assert re.search(rf'^convscope_explanation_duration_seconds_count\{{{labels},version="1"\}} [1-9]', text, re.M)


# ---- faithfulness on 30 held-out digits ---------------------------------------------------

def beats_chance(server: LiveServer, model: str, digits: list[bytes], method: str) -> list[dict]:
    """Each digit's answer with the method's default settings, as a request without parameters gets."""
    answers = []
    for image in digits:
        response = explain(server, model, image, method=method)
        assert response.status_code == 200, response.text
        answers.append(response.json())
    return answers


@pytest.mark.slow
@pytest.mark.parametrize("method", [m for m in METHODS if m != "grad-cam"])
def test_maps_beat_a_random_map_on_most_held_out_digits(server: LiveServer, digits_artifact: ExportedModel,
                                                        digits: list[bytes], method: str) -> None:
    answers = beats_chance(server, digits_artifact.name, digits, method)
    wins = sum(a["faithfulness"]["beats_random"] for a in answers)
    assert wins >= BAR * DIGITS, f"{method}: the map beat chance on {wins} of {DIGITS} digits"


@pytest.mark.slow
def test_classic_grad_cam_finds_no_evidence_on_tinyvggs_dense_head(server: LiveServer,
                                                                   digits_artifact: ExportedModel,
                                                                   digits: list[bytes]) -> None:
    """Classic Grad-CAM cannot meet the bar on this model, a measured fact and not a defect.

    TinyVGG flattens its last 7 x 7 map into a dense layer, which weighs every position
    separately; Grad-CAM averages the gradient over positions, and on the trained model the
    averages are mostly negative, so the weighted sum is negative everywhere and its ReLU
    leaves nothing: the map is empty on every held-out digit (hires-cam, the same gradient
    weighed per position, meets the bar above). What matters is that the answer says so
    rather than letting a random tie order pass for evidence: every one of those maps is
    reported empty, with beats_random false.
    """
    answers = beats_chance(server, digits_artifact.name, digits, "grad-cam")
    empty = [a for a in answers if a["note"] is not None and a["note"].startswith("the map is empty")]
    wins = sum(a["faithfulness"]["beats_random"] for a in answers)
    assert len(empty) == DIGITS and wins == 0
    for answer in empty:
        assert answer["faithfulness"]["beats_random"] is False and "chance" in answer["faithfulness"]["note"]
        assert "try hires-cam" in answer["note"]  # the method that does meet the bar here
