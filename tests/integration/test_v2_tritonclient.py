"""The stock Triton client (``tritonclient.http``) against a real convscope server:
the Open Inference Protocol works for standard clients unchanged."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from artifact import InputRecipe
from service.inference.preprocessing import InputSpec, decode, preprocess
from tests.support.artifacts import write_artifact
from tests.support.images import png_bytes
from tests.support.live import LiveServer

ROOT = Path(__file__).resolve().parents[2]
MODEL = "synthetic"


@pytest.fixture(scope="module")
def repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("v2-triton") / "models"
    write_artifact(root, MODEL, 1, seed=0)
    write_artifact(root, MODEL, 2, seed=1, channels=3, size=12, classes=5)
    return root


@pytest.fixture(scope="module")
def server(start_server: Callable[..., LiveServer], repository: Path) -> LiveServer:
    return start_server(repository)


@pytest.fixture
def client(server: LiveServer) -> Iterator[httpclient.InferenceServerClient]:
    c = httpclient.InferenceServerClient(url=server.url.removeprefix("http://"))
    yield c
    c.close()


def ort_run(repository: Path, version: int, tensor: np.ndarray, outputs: list[str]) -> list[np.ndarray]:
    session = ort.InferenceSession(str(repository / f"{MODEL}/{version}/model.onnx"), providers=["CPUExecutionProvider"])
    return session.run(outputs, {"input": tensor})


def fp32_input(array: np.ndarray, binary: bool = True) -> httpclient.InferInput:
    model_input = httpclient.InferInput("input", list(array.shape), "FP32")
    model_input.set_data_from_numpy(array, binary_data=binary)
    return model_input


def test_server_metadata_and_health(client: httpclient.InferenceServerClient) -> None:
    metadata = client.get_server_metadata()
    assert metadata["name"] == "convscope"
    assert {"binary_tensor_data", "classification"} <= set(metadata["extensions"])
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready(MODEL) and client.is_model_ready(MODEL, "1")
    assert not client.is_model_ready("nope") and not client.is_model_ready(MODEL, "9")


def test_model_metadata(client: httpclient.InferenceServerClient) -> None:
    metadata = client.get_model_metadata(MODEL, "1")
    assert metadata["platform"] == "onnx_onnxv1" and metadata["versions"] == ["1", "2"]
    assert metadata["inputs"][0] == {"name": "input", "datatype": "FP32", "shape": [-1, 1, 8, 8]}
    assert [o["name"] for o in metadata["outputs"]] == ["logits", "features.1", "features.2"]
    newest = client.get_model_metadata(MODEL)  # version 2: RGB 12x12, 5 classes
    assert newest["inputs"][0]["shape"] == [-1, 3, 12, 12] and newest["outputs"][0]["shape"] == [-1, 5]


def test_binary_infer_equals_onnxruntime(client: httpclient.InferenceServerClient, repository: Path) -> None:
    x = np.random.default_rng(0).normal(0, 1, (4, 1, 8, 8)).astype(np.float32)
    result = client.infer(MODEL, [fp32_input(x)], model_version="1", request_id="r-1")
    response = result.get_response()
    assert response["id"] == "r-1" and response["model_version"] == "1"
    assert [o["name"] for o in response["outputs"]] == ["logits"]  # feature maps are opt-in
    (expected,) = ort_run(repository, 1, x, ["logits"])
    np.testing.assert_allclose(result.as_numpy("logits"), expected, rtol=1e-5, atol=1e-6)


def test_json_infer_and_gzip(client: httpclient.InferenceServerClient, repository: Path) -> None:
    x = np.random.default_rng(1).normal(0, 1, (2, 1, 8, 8)).astype(np.float32)
    (expected,) = ort_run(repository, 1, x, ["logits"])
    result = client.infer(MODEL, [fp32_input(x, binary=False)], model_version="1",
                          outputs=[httpclient.InferRequestedOutput("logits", binary_data=False)])
    assert "data" in result.get_output("logits")
    np.testing.assert_allclose(result.as_numpy("logits"), expected, rtol=1e-5, atol=1e-6)
    result = client.infer(MODEL, [fp32_input(x)], model_version="1", request_compression_algorithm="gzip")
    np.testing.assert_allclose(result.as_numpy("logits"), expected, rtol=1e-5, atol=1e-6)


def test_feature_maps_and_classification(client: httpclient.InferenceServerClient, repository: Path) -> None:
    x = np.random.default_rng(2).normal(0, 1, (2, 3, 12, 12)).astype(np.float32)
    outputs = [
        httpclient.InferRequestedOutput("logits", class_count=2),
        httpclient.InferRequestedOutput("features.1"),
        httpclient.InferRequestedOutput("features.2", binary_data=False),
    ]
    result = client.infer(MODEL, [fp32_input(x)], outputs=outputs)
    logits, maps1, maps2 = ort_run(repository, 2, x, ["logits", "features.1", "features.2"])
    np.testing.assert_allclose(result.as_numpy("features.1"), maps1, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(result.as_numpy("features.2"), maps2, rtol=1e-5, atol=1e-6)
    classes = result.as_numpy("logits")
    assert classes.shape == (2, 2) and classes.dtype == np.object_
    for row, scores in zip(classes, logits):
        parsed = [entry.decode().split(":") for entry in row]
        assert [int(p[1]) for p in parsed] == list(np.argsort(-scores, kind="stable")[:2])
        assert [p[2] for p in parsed] == [f"class_{int(p[1])}" for p in parsed]
        assert [float(p[0]) for p in parsed] == pytest.approx([float(scores[int(p[1])]) for p in parsed], rel=1e-5)


def test_encoded_image_bytes(client: httpclient.InferenceServerClient, repository: Path) -> None:
    image = png_bytes(np.random.default_rng(3).integers(0, 256, (16, 16), dtype=np.uint8))
    model_input = httpclient.InferInput("image_bytes", [1], "BYTES")
    model_input.set_data_from_numpy(np.array([image], dtype=np.object_))
    result = client.infer(MODEL, [model_input], model_version="1")
    metadata = json.loads((repository / f"{MODEL}/1/metadata.json").read_text())
    tensor = preprocess(decode(image, max_pixels=10**6), InputSpec.from_recipe(InputRecipe.model_validate(metadata["input"])))[None]
    (expected,) = ort_run(repository, 1, tensor, ["logits"])
    np.testing.assert_allclose(result.as_numpy("logits"), expected, rtol=1e-5, atol=1e-6)


def test_errors_reach_the_client_as_messages(client: httpclient.InferenceServerClient) -> None:
    wrong = np.zeros((1, 1, 9, 9), dtype=np.float32)
    with pytest.raises(InferenceServerException) as info:
        client.infer(MODEL, [fp32_input(wrong)], model_version="1")
    assert info.value.status() == "400" and "[-1, 1, 8, 8]" in info.value.message()

    as_int = httpclient.InferInput("input", [1, 1, 8, 8], "INT32")
    as_int.set_data_from_numpy(np.zeros((1, 1, 8, 8), dtype=np.int32))
    with pytest.raises(InferenceServerException) as info:
        client.infer(MODEL, [as_int], model_version="1")
    assert info.value.status() == "400" and "FP32" in info.value.message()

    with pytest.raises(InferenceServerException) as info:
        client.infer(MODEL, [fp32_input(np.zeros((1, 1, 8, 8), np.float32))], model_version="1",
                     outputs=[httpclient.InferRequestedOutput("features.9")])
    assert info.value.status() == "400" and "features.1" in info.value.message()

    with pytest.raises(InferenceServerException) as info:
        client.get_model_metadata("nope")
    assert info.value.status() == "404"


def test_the_example_script(server: LiveServer) -> None:
    """examples/triton_client.py, as docs/v2.md shows it, runs against a live server."""
    run = subprocess.run([sys.executable, str(ROOT / "examples/triton_client.py"), server.url, MODEL],
                         capture_output=True, text=True, timeout=60, check=False)
    assert run.returncode == 0, run.stderr
    assert "top 3 (logit:index:label):" in run.stdout
    assert "feature map features.1: float32 [1, 4, 12, 12]" in run.stdout
