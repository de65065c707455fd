"""A client that hangs up while its request waits for the model: the request leaves the
queue and never reaches onnxruntime. Needs a real server (TestClient never disconnects),
run in-process here so the test can hold the model still."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from service.models.registry import ModelRegistry
from service.settings import Settings
from tests.support.artifacts import write_artifact
from tests.support.images import png_bytes
from tests.support.live import HeldModel, in_process


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[str, ModelRegistry]]:
    write_artifact(tmp_path, "synthetic", 1)
    with in_process(Settings(model_repository=tmp_path, max_batch_size=1)) as (url, app):
        yield url.removeprefix("http://"), app.state.registry


V1_IMAGE = png_bytes(np.full((8, 8), 100, dtype=np.uint8))
V2_TENSOR = json.dumps({"inputs": [{"name": "input", "shape": [1, 1, 8, 8], "datatype": "FP32",
                                    "data": [0.0] * 64}]}).encode()


@pytest.mark.parametrize("path, content_type, body", [
    ("/predict", "image/png", V1_IMAGE),
    ("/v2/models/synthetic/infer", "application/json", V2_TENSOR),
], ids=["v1", "v2"])
def test_a_request_whose_client_left_never_reaches_the_model(
    server: tuple[str, ModelRegistry], path: str, content_type: str, body: bytes
) -> None:
    address, registry = server
    batcher = registry.resolve("synthetic", 1).batcher
    held = HeldModel(batcher.model, wait_s=10)  # runs recorded as batch sizes
    batcher.model = held
    headers = {"content-type": content_type}

    first: dict[str, int] = {}
    worker = threading.Thread(target=lambda: first.update(status=httpx.post(
        f"http://{address}{path}", content=body, headers=headers, timeout=30).status_code))
    worker.start()
    assert held.entered.wait(10)  # the model is busy with the first request

    host, port = address.split(":")
    raw = socket.create_connection((host, int(port)))
    raw.sendall(f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: {content_type}\r\n"
                f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
    deadline = time.monotonic() + 10
    while batcher.queued_images != 1:
        assert time.monotonic() < deadline, "the second request never queued"
        time.sleep(0.01)
    raw.close()  # the second client hangs up while queued
    while batcher.queued_images != 0:
        assert time.monotonic() < deadline, "the abandoned request kept its queue slot"
        time.sleep(0.01)

    held.release.set()
    worker.join(10)
    assert first["status"] == 200
    response = httpx.post(f"http://{address}{path}", content=body, headers=headers)
    assert response.status_code == 200
    assert held.runs == [1, 1]  # the first and the last request ran; the abandoned one never did
