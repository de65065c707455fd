"""A model that produces NaN or infinity is a fault of the served model: the same 500 and
the same words on every path, v1 and v2, JSON and binary, class scores and feature maps."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from starlette.testclient import TestClient

from tests.support.artifacts import write_artifact
from tests.support.images import png_bytes
from tests.support.services import serving

EXPECTED = ("model faulty version 1 produced NaN or infinite values in {outputs}: the model is "
            "faulty (its weights or its graph), not the request")
IMAGE = png_bytes(np.full((8, 8), 100, dtype=np.uint8))
TENSOR = np.zeros((1, 1, 8, 8), dtype=np.float32)


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    root: Path = tmp_path_factory.mktemp("models")
    write_artifact(root, "faulty", 1, faulty=True)
    with serving(model_repository=root) as c:
        yield c


def v2_infer(client: TestClient, outputs: list[str], binary: bool) -> tuple[int, str]:
    header = json.dumps({
        "inputs": [{"name": "input", "shape": [1, 1, 8, 8], "datatype": "FP32",
                    "parameters": {"binary_data_size": TENSOR.nbytes}}],
        "outputs": [{"name": n, "parameters": {"binary_data": binary}} for n in outputs],
    }).encode()
    response = client.post("/v2/models/faulty/infer", content=header + TENSOR.tobytes(),
                           headers={"Inference-Header-Content-Length": str(len(header))})
    return response.status_code, response.json()["error"]


@pytest.mark.parametrize("path, outputs", [
    ("/predict", "logits"),
    ("/predict?layers=features.1&encoding=npy", "logits, features.1"),
    ("/predict?layers=features.2&encoding=png", "logits, features.2"),
    ("/v1/models/faulty/layers/features.1/feature_maps.png", "features.1"),
])
def test_v1_paths(client: TestClient, path: str, outputs: str) -> None:
    response = client.post(path, content=IMAGE, headers={"content-type": "image/png"})
    assert response.status_code == 500
    assert response.json() == {"error": EXPECTED.format(outputs=outputs)}


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
@pytest.mark.parametrize("outputs", [["logits"], ["logits", "features.1"], ["features.2"]])
def test_v2_paths(client: TestClient, outputs: list[str], binary: bool) -> None:
    status, error = v2_infer(client, outputs, binary)
    ran = ["logits", *[o for o in outputs if o != "logits"]]
    assert (status, error) == (500, EXPECTED.format(outputs=", ".join(ran)))
