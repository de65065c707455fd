"""The service on the directories KServe's storage initializer leaves in /mnt/models, over
real HTTP: one version's own directory (named by CONVSCOPE_MODEL_NAME, as the ServingRuntime
in deploy/kubernetes/kserve/ sets it to the InferenceService's name) and one model's
directory of versions (named by its metadata). Predictions go through the Open Inference
Protocol, as KServe's clients send them."""

from __future__ import annotations

import base64
import shutil
from collections.abc import Callable
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.support.exported import ExportedModel
from tests.support.images import png_bytes
from tests.support.live import LiveServer

IMAGES = 40  # one v2 request; under the default CONVSCOPE_MAX_IMAGES_PER_REQUEST


def mount(digits_artifact: ExportedModel, tmp_path: Path, layout: str) -> Path:
    """Copy the exported version into ``<tmp>/mnt/models`` the way KServe would lay it out."""
    root = tmp_path / "mnt" / "models"
    if layout == "version directory":  # storageUri names .../<name>/<version>
        shutil.copytree(digits_artifact.path, root)
    else:  # storageUri names .../<name>: its version directories land in the root
        shutil.copytree(digits_artifact.path, root / str(digits_artifact.version))
    return root


@pytest.mark.parametrize("layout, model_name", [
    ("version directory", "digits-isvc"),
    ("model directory", None),
])
def test_the_service_serves_kserve_layouts_over_v2(digits_artifact: ExportedModel, tmp_path: Path,
                                                   start_server: Callable[..., LiveServer],
                                                   layout: str, model_name: str | None) -> None:
    root = mount(digits_artifact, tmp_path, layout)
    settings = {"model_name": model_name} if model_name else {}
    server = start_server(root, **settings)
    served = model_name or digits_artifact.name  # unset: the name in metadata.json
    with httpx.Client(base_url=server.url, timeout=30) as client:
        assert client.get("/v2/health/ready").status_code == 200
        assert client.get(f"/v2/models/{served}/ready").status_code == 200
        metadata = client.get(f"/v2/models/{served}").json()
        assert metadata["name"] == served
        assert metadata["versions"] == [str(digits_artifact.version)]

        images = digits_artifact.images[:IMAGES]
        request = {
            "inputs": [{
                "name": "image_bytes", "shape": [len(images)], "datatype": "BYTES",
                "data": [base64.b64encode(png_bytes(np.asarray(i, dtype=np.uint8))).decode() for i in images],
            }],
            "outputs": [{"name": "logits"}],
        }
        response = client.post(f"/v2/models/{served}/infer", json=request)
    assert response.status_code == 200, response.text
    (logits,) = response.json()["outputs"]
    assert logits["shape"] == [len(images), len(digits_artifact.classes)]
    predicted = np.asarray(logits["data"], dtype=np.float32).reshape(logits["shape"]).argmax(axis=1)
    correct = int((predicted == digits_artifact.labels[:IMAGES]).sum())
    assert correct / len(images) >= 0.9, f"{correct}/{len(images)} correct on the {layout} layout"
