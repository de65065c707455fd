"""The Open Inference Protocol (v2) REST API as raw HTTP through starlette's TestClient,
over synthetic artifacts: the JSON shapes, both extensions, and every error a client can
cause (a 4xx with {"error": ...}, never a 500)."""

from __future__ import annotations

import base64
import gzip
import json
import struct
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
from starlette.testclient import TestClient

from artifact import InputRecipe
from service.inference.preprocessing import InputSpec, decode, preprocess
from tests.support.artifacts import write_artifact
from tests.support.services import serving

INFER = "/v2/models/synthetic/infer"
INFER_V1 = "/v2/models/synthetic/versions/1/infer"
HEADER = "Inference-Header-Content-Length"


@pytest.fixture(scope="module")
def repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """As conftest's (synthetic, versions 1 and 2), once for the module: no test here writes."""
    root = tmp_path_factory.mktemp("v2") / "models"
    write_artifact(root, "synthetic", 1, seed=0)
    write_artifact(root, "synthetic", 2, seed=1)
    return root


@pytest.fixture(scope="module")
def client(repository: Path) -> Iterator[TestClient]:
    with serving(model_repository=repository) as c:
        yield c


def ort_run(repository: Path, version: int, tensor: np.ndarray, outputs: list[str]) -> list[np.ndarray]:
    session = ort.InferenceSession(str(repository / f"synthetic/{version}/model.onnx"),
                                   providers=["CPUExecutionProvider"])
    return session.run(outputs, {"input": tensor})


def batch(n: int = 2, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(0, 1, (n, 1, 8, 8)).astype(np.float32)


def tensor_input(array: np.ndarray, **extra: Any) -> dict[str, Any]:
    return {"name": "input", "shape": list(array.shape), "datatype": "FP32", "data": array.ravel().tolist(), **extra}


def binary_request(payload: dict[str, Any], *chunks: bytes) -> tuple[bytes, dict[str, str]]:
    header = json.dumps(payload).encode()
    return header + b"".join(chunks), {HEADER: str(len(header)), "content-type": "application/octet-stream"}


def split_response(response: Any) -> tuple[dict[str, Any], dict[str, bytes]]:
    """(JSON header, {output name: its binary bytes}) of a binary v2 response."""
    size = int(response.headers[HEADER])
    header = json.loads(response.content[:size])
    rest, blobs = response.content[size:], {}
    for out in header["outputs"]:
        n = out.get("parameters", {}).get("binary_data_size")
        if n is not None:
            blobs[out["name"]], rest = rest[:n], rest[n:]
    assert rest == b""
    return header, blobs


def bytes_elements(raw: bytes) -> list[bytes]:
    out = []
    while raw:
        (n,) = struct.unpack_from("<I", raw)
        out.append(raw[4:4 + n])
        raw = raw[4 + n:]
    return out


# -- discovery and health ---------------------------------------------------------------


def test_server_metadata(client: TestClient) -> None:
    body = client.get("/v2").json()
    assert body["name"] == "convscope" and isinstance(body["version"], str)
    assert {"binary_tensor_data", "classification", "convscope_feature_maps",
            "convscope_encoded_images"} <= set(body["extensions"])


def test_live_and_ready(client: TestClient) -> None:
    assert client.get("/v2/health/live").json() == {"live": True}
    response = client.get("/v2/health/ready")
    assert response.status_code == 200 and response.json() == {"ready": True}


def test_not_ready_with_an_empty_repository(tmp_path: Path) -> None:
    with serving(model_repository=tmp_path) as c:
        assert c.get("/v2/health/live").status_code == 200
        response = c.get("/v2/health/ready")
        assert response.status_code == 503
        assert response.json()["ready"] is False and "no model is ready" in response.json()["error"]


def test_model_metadata(client: TestClient) -> None:
    body = client.get("/v2/models/synthetic").json()
    assert body == {
        "name": "synthetic",
        "versions": ["1", "2"],
        "platform": "onnx_onnxv1",
        "inputs": [
            {"name": "input", "datatype": "FP32", "shape": [-1, 1, 8, 8]},
            {"name": "image_bytes", "datatype": "BYTES", "shape": [-1]},
        ],
        "outputs": [
            {"name": "logits", "datatype": "FP32", "shape": [-1, 3]},
            {"name": "features.1", "datatype": "FP32", "shape": [-1, 4, 8, 8]},
            {"name": "features.2", "datatype": "FP32", "shape": [-1, 4, 4, 4]},
        ],
    }
    assert client.get("/v2/models/synthetic/versions/1").json() == body


def test_model_ready(client: TestClient) -> None:
    assert client.get("/v2/models/synthetic/ready").json() == {"name": "synthetic", "ready": True}
    assert client.get("/v2/models/synthetic/versions/1/ready").status_code == 200
    assert client.get("/v2/models/nope/ready").status_code == 404
    assert client.get("/v2/models/synthetic/versions/9/ready").status_code == 404


def test_a_failed_version_is_not_ready(tmp_path: Path) -> None:
    write_artifact(tmp_path, "synthetic", 1)
    (write_artifact(tmp_path, "synthetic", 2) / "model.onnx").write_bytes(b"not onnx")
    with serving(model_repository=tmp_path) as c:
        response = c.get("/v2/models/synthetic/versions/2/ready")
        assert response.status_code == 503
        assert response.json()["ready"] is False and response.json()["error"]
        assert c.get("/v2/models/synthetic/versions/1/ready").status_code == 200
        assert c.get("/v2/models/synthetic/versions/2").status_code == 503
        assert c.post("/v2/models/synthetic/versions/2/infer", json={}).status_code == 503


# -- inference ----------------------------------------------------------------------------


def test_json_infer_equals_onnxruntime(client: TestClient, repository: Path) -> None:
    x = batch(3)
    response = client.post(INFER_V1, json={"id": "req-1", "inputs": [tensor_input(x)]})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert body["model_name"] == "synthetic" and body["model_version"] == "1" and body["id"] == "req-1"
    assert [o["name"] for o in body["outputs"]] == ["logits"]  # feature maps only when asked for
    out = body["outputs"][0]
    assert out["datatype"] == "FP32" and out["shape"] == [3, 3]
    (expected,) = ort_run(repository, 1, x, ["logits"])
    np.testing.assert_allclose(np.array(out["data"], dtype=np.float32).reshape(3, 3), expected, rtol=1e-5, atol=1e-6)
    assert "inference;dur=" in response.headers["server-timing"]


def test_nested_json_data_and_the_newest_version_by_default(client: TestClient, repository: Path) -> None:
    x = batch(1, seed=4)
    body = client.post(INFER, json={"inputs": [{"name": "input", "shape": [1, 1, 8, 8], "datatype": "FP32",
                                                  "data": x.tolist()}]}).json()
    assert body["model_version"] == "2" and "id" not in body
    (expected,) = ort_run(repository, 2, x, ["logits"])
    np.testing.assert_allclose(body["outputs"][0]["data"], expected.ravel(), rtol=1e-5, atol=1e-6)


def test_binary_in_and_out(client: TestClient, repository: Path) -> None:
    x = batch(2, seed=1)
    payload = {
        "inputs": [{"name": "input", "shape": [2, 1, 8, 8], "datatype": "FP32",
                    "parameters": {"binary_data_size": x.nbytes}}],
        "outputs": [{"name": "logits", "parameters": {"binary_data": True}},
                    {"name": "features.1", "parameters": {"binary_data": True}}],
    }
    response = client.post(INFER_V1, content=binary_request(payload, x.tobytes())[0],
                           headers=binary_request(payload)[1])
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/octet-stream"
    header, blobs = split_response(response)
    assert [o["shape"] for o in header["outputs"]] == [[2, 3], [2, 4, 8, 8]]
    logits, maps = ort_run(repository, 1, x, ["logits", "features.1"])
    np.testing.assert_allclose(np.frombuffer(blobs["logits"], "<f4").reshape(2, 3), logits, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.frombuffer(blobs["features.1"], "<f4").reshape(2, 4, 8, 8), maps, rtol=1e-5,
                               atol=1e-6)


def test_binary_data_output_with_a_per_output_override(client: TestClient, repository: Path) -> None:
    x = batch(1, seed=2)
    body, headers = binary_request({
        "parameters": {"binary_data_output": True},
        "inputs": [{"name": "input", "shape": [1, 1, 8, 8], "datatype": "FP32",
                    "parameters": {"binary_data_size": x.nbytes}}],
        "outputs": [{"name": "features.2"}, {"name": "logits", "parameters": {"binary_data": False}}],
    }, x.tobytes())
    header, blobs = split_response(client.post(INFER_V1, content=body, headers=headers))
    maps_out, logits_out = header["outputs"]
    assert maps_out["name"] == "features.2" and maps_out["parameters"] == {"binary_data_size": 4 * 4 * 4 * 4}
    assert "data" in logits_out and "parameters" not in logits_out
    logits, maps = ort_run(repository, 1, x, ["logits", "features.2"])
    np.testing.assert_allclose(np.frombuffer(blobs["features.2"], "<f4").reshape(1, 4, 4, 4), maps, rtol=1e-5,
                               atol=1e-6)
    np.testing.assert_allclose(logits_out["data"], logits.ravel(), rtol=1e-5, atol=1e-6)


def test_a_feature_map_alone_as_json(client: TestClient, repository: Path) -> None:
    x = batch(1, seed=3)
    body = client.post(INFER_V1, json={"inputs": [tensor_input(x)], "outputs": [{"name": "features.1"}]}).json()
    (out,) = body["outputs"]
    assert out["name"] == "features.1" and out["shape"] == [1, 4, 8, 8]
    (expected,) = ort_run(repository, 1, x, ["features.1"])
    np.testing.assert_allclose(out["data"], expected.ravel(), rtol=1e-5, atol=1e-6)


def test_classification_json(client: TestClient, repository: Path) -> None:
    x = batch(2, seed=5)
    body = client.post(INFER_V1, json={"inputs": [tensor_input(x)],
                                       "outputs": [{"name": "logits", "parameters": {"classification": 2}}]}).json()
    (out,) = body["outputs"]
    assert out["datatype"] == "BYTES" and out["shape"] == [2, 2]
    (logits,) = ort_run(repository, 1, x, ["logits"])
    for i in range(2):
        strings = out["data"][2 * i:2 * i + 2]
        order = np.argsort(-logits[i], kind="stable")[:2]
        assert [int(s.split(":")[1]) for s in strings] == list(order)
        for s, index in zip(strings, order):
            value, idx, label = s.split(":")
            assert label == f"class_{index}"
            assert float(value) == pytest.approx(float(logits[i, index]), rel=1e-5)


def test_classification_binary_and_a_count_over_the_classes(client: TestClient) -> None:
    x = batch(1, seed=6)
    body, headers = binary_request({
        "inputs": [tensor_input(x)],
        "outputs": [{"name": "logits", "parameters": {"classification": 10, "binary_data": True}}],
    })
    header, blobs = split_response(client.post(INFER_V1, content=body, headers=headers))
    (out,) = header["outputs"]
    assert out["datatype"] == "BYTES" and out["shape"] == [1, 3]  # clamped to the 3 classes
    elements = bytes_elements(blobs["logits"])
    assert sorted(e.split(b":")[2] for e in elements) == [b"class_0", b"class_1", b"class_2"]


def expected_from_image(repository: Path, version: int, data: bytes) -> np.ndarray:
    metadata = json.loads((repository / f"synthetic/{version}/metadata.json").read_text())
    tensor = preprocess(decode(data, max_pixels=10**6), InputSpec.from_recipe(InputRecipe.model_validate(metadata["input"])))[None]
    return ort_run(repository, version, tensor, ["logits"])[0][0]


def test_encoded_images_as_binary_bytes(client: TestClient, repository: Path,
                                        random_png: Callable[..., bytes]) -> None:
    images = [random_png(13), random_png(8)]
    raw = b"".join(struct.pack("<I", len(i)) + i for i in images)
    body, headers = binary_request({"inputs": [{"name": "image_bytes", "shape": [2], "datatype": "BYTES",
                                                "parameters": {"binary_data_size": len(raw)}}]}, raw)
    response = client.post(INFER_V1, content=body, headers=headers)
    assert response.status_code == 200, response.text
    logits = np.array(response.json()["outputs"][0]["data"]).reshape(2, 3)
    for row, image in zip(logits, images):
        np.testing.assert_allclose(row, expected_from_image(repository, 1, image), rtol=1e-5, atol=1e-6)


def test_encoded_image_as_base64_json_agrees_with_v1(client: TestClient, repository: Path,
                                                     random_png: Callable[..., bytes]) -> None:
    image = random_png(20)
    response = client.post(INFER_V1, json={"inputs": [{"name": "image_bytes", "shape": [1, 1], "datatype": "BYTES",
                                                       "data": [base64.b64encode(image).decode()]}],
                                           "outputs": [{"name": "logits", "parameters": {"classification": 1}}]})
    assert response.status_code == 200, response.text
    best = response.json()["outputs"][0]["data"][0]
    v1 = client.post("/v1/models/synthetic/versions/1/predict?top_k=1", content=image,
                     headers={"content-type": "image/png"}).json()
    assert best.split(":")[2] == v1["predictions"][0]["label"]
    logits = expected_from_image(repository, 1, image)
    assert float(best.split(":")[0]) == pytest.approx(float(logits.max()), rel=1e-5)


def test_gzip_request_body(client: TestClient) -> None:
    body = gzip.compress(json.dumps({"inputs": [tensor_input(batch(1))]}).encode())
    response = client.post(INFER_V1, content=body, headers={"content-encoding": "gzip"})
    assert response.status_code == 200, response.text


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
def test_non_finite_inputs_are_the_clients_error(client: TestClient, binary: bool) -> None:
    x = np.full((1, 1, 8, 8), np.nan, dtype=np.float32)
    if binary:
        payload = {"inputs": [{"name": "input", "shape": [1, 1, 8, 8], "datatype": "FP32",
                               "parameters": {"binary_data_size": x.nbytes}}]}
        body, headers = binary_request(payload, x.tobytes())
        response = client.post(INFER_V1, content=body, headers=headers)
    else:  # JSON has no NaN literal, but Python's json module (and some clients) write one
        body = json.dumps({"inputs": [{"name": "input", "shape": [1, 1, 8, 8], "datatype": "FP32",
                                       "data": x.ravel().tolist()}]}).encode()
        response = client.post(INFER_V1, content=body)
    assert response.status_code == 400
    assert response.json()["error"] == "input 'input' holds NaN or infinite values; send finite pixels"


def test_v1_and_v2_requests_share_a_batch(repository: Path, random_png: Callable[..., bytes]) -> None:
    image = random_png(8)
    with serving(model_repository=repository, max_queue_delay_ms=400, max_batch_size=8) as c:
        batcher = c.app.state.registry.resolve("synthetic", 1).batcher  # type: ignore[attr-defined]
        runs = batcher.runs
        results: dict[str, int] = {}
        calls = {
            "v1": lambda: c.post("/v1/models/synthetic/versions/1/predict", content=image,
                                 headers={"content-type": "image/png"}),
            "v2": lambda: c.post(INFER_V1, json={"inputs": [tensor_input(batch(2))]}),
        }
        threads = [threading.Thread(target=lambda k=k: results.update({k: calls[k]().status_code})) for k in calls]
        for t in threads:
            t.start()
            time.sleep(0.05)
        for t in threads:
            t.join(10)
        assert results == {"v1": 200, "v2": 200}
        assert batcher.runs == runs + 1  # one onnxruntime run for both: 1 image + 2 tensors


# -- errors -------------------------------------------------------------------------------

X = batch(1)
GOOD_INPUT = tensor_input(X)


def j(payload: Any) -> dict[str, Any]:
    return {"content": json.dumps(payload).encode(), "headers": {"content-type": "application/json"}}


ERROR_CASES: dict[str, tuple[dict[str, Any], int, str]] = {
    "empty body": ({"content": b""}, 400, "empty"),
    "malformed JSON": ({"content": b'{"inputs": ['}, 400, "not valid JSON"),
    "JSON not an object": (j([1, 2]), 400, "JSON object"),
    "JSON nested too deeply": ({"content": b"[" * 100_000 + b"]" * 100_000}, 400, "too deeply"),
    "parameters not an object": (j({"inputs": [{**GOOD_INPUT, "parameters": []}]}), 400, "parameters must be"),
    "no inputs": (j({"outputs": [{"name": "logits"}]}), 400, '"inputs"'),
    "two inputs": (j({"inputs": [GOOD_INPUT, GOOD_INPUT]}), 400, "exactly one input"),
    "unknown input": (j({"inputs": [{**GOOD_INPUT, "name": "pixels"}]}), 400, "unknown input 'pixels'"),
    "INT32 tensor": (j({"inputs": [{**GOOD_INPUT, "datatype": "INT32"}]}), 400, "must be FP32"),
    "FP64 tensor": (j({"inputs": [{**GOOD_INPUT, "datatype": "FP64"}]}), 400, "must be FP32"),
    "unknown datatype": (j({"inputs": [{**GOOD_INPUT, "datatype": "FLOAT"}]}), 400, "unknown datatype"),
    "wrong image size": (j({"inputs": [{**GOOD_INPUT, "shape": [1, 1, 16, 4]}]}), 400, "[-1, 1, 8, 8]"),
    "wrong rank": (j({"inputs": [{**GOOD_INPUT, "shape": [1, 64]}]}), 400, "[-1, 1, 8, 8]"),
    "negative dim": (j({"inputs": [{**GOOD_INPUT, "shape": [-1, 1, 8, 8]}]}), 400, "non-negative"),
    "empty batch": (j({"inputs": [{**GOOD_INPUT, "shape": [0, 1, 8, 8], "data": []}]}), 400, "no image"),
    "data shorter than shape": (j({"inputs": [{**GOOD_INPUT, "shape": [2, 1, 8, 8]}]}), 400, "128 values"),
    "data of strings": (j({"inputs": [{**GOOD_INPUT, "data": ["0.5"] * 64}]}), 400, "list of numbers"),
    "ragged data": (j({"inputs": [{**GOOD_INPUT, "data": [[1.0], [1.0, 2.0]]}]}), 400, "list of numbers"),
    "no data": (j({"inputs": [{k: v for k, v in GOOD_INPUT.items() if k != "data"}]}), 400, "neither"),
    "unknown output": (j({"inputs": [GOOD_INPUT], "outputs": [{"name": "probs"}]}), 400, "unknown output 'probs'"),
    "output twice": (j({"inputs": [GOOD_INPUT], "outputs": [{"name": "logits"}, {"name": "logits"}]}), 400, "twice"),
    "empty outputs": (j({"inputs": [GOOD_INPUT], "outputs": []}), 400, '"outputs"'),
    "classification of a feature map": (
        j({"inputs": [GOOD_INPUT], "outputs": [{"name": "features.1", "parameters": {"classification": 2}}]}),
        400, "class output"),
    "classification not a number": (
        j({"inputs": [GOOD_INPUT], "outputs": [{"name": "logits", "parameters": {"classification": "2"}}]}),
        400, "positive integer"),
    "binary_data not a bool": (
        j({"inputs": [GOOD_INPUT], "outputs": [{"name": "logits", "parameters": {"binary_data": "yes"}}]}),
        400, "true or false"),
    "binary_data_output not a bool": (
        j({"inputs": [GOOD_INPUT], "parameters": {"binary_data_output": 1}}), 400, "true or false"),
    "id not a string": (j({"id": 7, "inputs": [GOOD_INPUT]}), 400, '"id"'),
    "shared memory": (
        j({"inputs": [{**GOOD_INPUT, "parameters": {"shared_memory_region": "r"}}]}), 400, "shared memory"),
    "header length beyond the body": (
        {"content": b'{"inputs": []}', "headers": {HEADER: "999"}}, 400, "the body holds 14 bytes"),
    "header length not a number": ({"content": b"{}", "headers": {HEADER: "ten"}}, 400, "not a number"),
    "binary size without the header": (
        j({"inputs": [{"name": "input", "shape": [1, 1, 8, 8], "datatype": "FP32",
                       "parameters": {"binary_data_size": 256}}]}), 400, HEADER),
    "both data and binary": ({"content": binary_request(
        {"inputs": [{**GOOD_INPUT, "parameters": {"binary_data_size": 256}}]}, X.tobytes())[0],
        "headers": binary_request({"inputs": [{**GOOD_INPUT, "parameters": {"binary_data_size": 256}}]})[1]},
        400, "both"),
    "binary size not the shape's": ({"content": binary_request(
        {"inputs": [{"name": "input", "shape": [1, 1, 8, 8], "datatype": "FP32",
                     "parameters": {"binary_data_size": 128}}]}, X.tobytes()[:128])[0],
        "headers": binary_request({"inputs": [{"name": "input", "shape": [1, 1, 8, 8], "datatype": "FP32",
                                               "parameters": {"binary_data_size": 128}}]})[1]},
        400, "needs 256 bytes"),
    "binary size not what follows": ({"content": binary_request(
        {"inputs": [{"name": "input", "shape": [1, 1, 8, 8], "datatype": "FP32",
                     "parameters": {"binary_data_size": 256}}]}, X.tobytes()[:100])[0],
        "headers": binary_request({"inputs": [{"name": "input", "shape": [1, 1, 8, 8], "datatype": "FP32",
                                               "parameters": {"binary_data_size": 256}}]})[1]},
        400, "100 bytes follow"),
    "unclaimed binary bytes": ({"content": binary_request({"inputs": [GOOD_INPUT]}, b"\0" * 8)[0],
                                "headers": binary_request({"inputs": [GOOD_INPUT]})[1]}, 400, "no input claims"),
    "images as FP32": (j({"inputs": [{"name": "image_bytes", "shape": [1], "datatype": "FP32", "data": [1.0]}]}),
                       400, "must be BYTES"),
    "images in a bad shape": (j({"inputs": [{"name": "image_bytes", "shape": [1, 2], "datatype": "BYTES",
                                             "data": ["aGk=", "aGk="]}]}), 400, "[N] or [N, 1]"),
    "images not base64": (j({"inputs": [{"name": "image_bytes", "shape": [1], "datatype": "BYTES",
                                         "data": ["%%%"]}]}), 400, "base64"),
    "image count not the shape's": (j({"inputs": [{"name": "image_bytes", "shape": [2], "datatype": "BYTES",
                                                   "data": ["aGk="]}]}), 400, "holds 1"),
    "not an image": (j({"inputs": [{"name": "image_bytes", "shape": [1], "datatype": "BYTES",
                                    "data": [base64.b64encode(b"hello").decode()]}]}), 400, "not an image"),
    "truncated BYTES element": ({"content": binary_request(
        {"inputs": [{"name": "image_bytes", "shape": [1], "datatype": "BYTES", "parameters": {"binary_data_size": 6}}]},
        struct.pack("<I", 50) + b"ab")[0], "headers": {HEADER: str(len(json.dumps(
            {"inputs": [{"name": "image_bytes", "shape": [1], "datatype": "BYTES",
                         "parameters": {"binary_data_size": 6}}]})))}}, 400, "declares 50 bytes"),
    "bad gzip": ({"content": b"not gzip", "headers": {"content-encoding": "gzip"}}, 400, "gzip"),
    "unknown content encoding": ({"content": b"{}", "headers": {"content-encoding": "br"}}, 415, "br"),
}


@pytest.mark.parametrize("case", list(ERROR_CASES))
def test_client_errors(client: TestClient, case: str) -> None:
    kwargs, status, fragment = ERROR_CASES[case]
    response = client.post(INFER_V1, **kwargs)
    assert response.status_code == status, response.text
    assert fragment in response.json()["error"]


@pytest.mark.parametrize(("path", "status", "fragment"), [
    ("/v2/models/nope/infer", 404, "unknown model 'nope'"),
    ("/v2/models/synthetic/versions/7/infer", 404, "no version 7"),
    ("/v2/models/synthetic/versions/latest/infer", 400, "positive integers"),
    ("/v2/models/synthetic/versions/0/infer", 400, "positive integers"),
])
def test_unknown_model_or_version(client: TestClient, path: str, status: int, fragment: str) -> None:
    response = client.post(path, json={"inputs": [GOOD_INPUT]})
    assert response.status_code == status and fragment in response.json()["error"]
    meta_path = path.removesuffix("/infer")
    assert client.get(meta_path).status_code == status


def test_limits(repository: Path) -> None:
    with serving(model_repository=repository, max_body_bytes=4096, max_feature_map_bytes=1024,
                 max_images_per_request=2) as c:
        big = batch(3)  # 3 x 256 bytes of FP32 is fine for the body, not for the image limit
        body, headers = binary_request({"inputs": [{"name": "input", "shape": [3, 1, 8, 8], "datatype": "FP32",
                                                    "parameters": {"binary_data_size": big.nbytes}}]}, big.tobytes())
        response = c.post(INFER_V1, content=body, headers=headers)
        assert response.status_code == 413 and "MAX_IMAGES_PER_REQUEST" in response.json()["error"]

        response = c.post(INFER_V1, content=b"{" + b" " * 5000 + b"}")
        assert response.status_code == 413 and "MAX_BODY_BYTES" in response.json()["error"]

        response = c.post(INFER_V1, content=gzip.compress(b"{" + b" " * 5000 + b"}"),
                          headers={"content-encoding": "gzip"})
        assert response.status_code == 413 and "MAX_BODY_BYTES" in response.json()["error"]

        one = batch(1)
        body, headers = binary_request({"inputs": [{"name": "input", "shape": [1, 1, 8, 8], "datatype": "FP32",
                                                    "parameters": {"binary_data_size": one.nbytes}}],
                                        "outputs": [{"name": "features.1"}]}, one.tobytes())
        response = c.post(INFER_V1, content=body, headers=headers)
        assert response.status_code == 413 and "MAX_FEATURE_MAP_BYTES" in response.json()["error"]
        # The class output alone is not held to the feature-map budget.
        body, headers = binary_request({"inputs": [{"name": "input", "shape": [1, 1, 8, 8], "datatype": "FP32",
                                                    "parameters": {"binary_data_size": one.nbytes}}]}, one.tobytes())
        assert c.post(INFER_V1, content=body, headers=headers).status_code == 200
