"""Explanations against a live server whose model the test can hold still (run in-process,
as tests/integration/test_disconnect.py does; TestClient never disconnects):

- a client that hangs up stops its explanation: no pass runs after it is gone;
- predictions queued behind explanation batches are taken first.

The synthetic model normalises pixels with mean 0.5 and std 0.25: a black image is -2
everywhere, and an explanation of it (masked with the baseline, 0) never holds a value
above 0, while a white image's prediction is +2: each run says whose it was.
"""

from __future__ import annotations

import re
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

BLACK = png_bytes(np.zeros((8, 8), dtype=np.uint8))
WHITE = png_bytes(np.full((8, 8), 255, dtype=np.uint8))
WAIT = 20.0  # seconds: a bound on polling for a state that comes in milliseconds


def kind(batch: np.ndarray) -> tuple[str, int]:
    """A run as ("P", size) for a prediction (a white image) or ("E", size) for an
    explanation pass."""
    return ("P" if float(batch.max()) > 1.0 else "E", int(batch.shape[0]))


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[str, ModelRegistry]]:
    write_artifact(tmp_path, "synthetic", 1)
    with in_process(Settings(model_repository=tmp_path, max_batch_size=4)) as (url, app):
        yield url.removeprefix("http://"), app.state.registry


def wait_until(condition: object, what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, what
        time.sleep(0.005)


def explanations(address: str, outcome: str) -> float:
    text = httpx.get(f"http://{address}/metrics").text
    found = re.search(rf'^convscope_explanations_total\{{[^}}]*outcome="{outcome}"[^}}]*\}} (\S+)$', text, re.M)
    return float(found.group(1)) if found else 0.0


def post_raw(address: str, path: str, body: bytes) -> socket.socket:
    host, port = address.split(":")
    raw = socket.create_connection((host, int(port)))
    raw.sendall(f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
                f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
    return raw


def test_a_client_that_hangs_up_stops_its_explanations_passes(server: tuple[str, ModelRegistry]) -> None:
    address, registry = server
    batcher = registry.resolve("synthetic", 1).batcher
    held = HeldModel(batcher.model, kind, WAIT)
    batcher.model = held
    # Occlusion with its default grid and faithfulness: 1 + 36 + 58 passes, in batches of 4.
    raw = post_raw(address, "/explain?method=occlusion", BLACK)
    assert held.entered.wait(WAIT)  # its first pass is running
    raw.close()  # the client hangs up
    wait_until(lambda: explanations(address, "cancelled") == 1, "the explanation was never counted as cancelled")
    held.release.set()
    wait_until(lambda: not batcher._running, "the held run never finished")
    assert held.runs == [("E", 1)]  # the pass that was running when it left; no other
    assert batcher.queued_images == 0
    response = httpx.post(f"http://{address}/predict", content=WHITE, headers={"content-type": "image/png"})
    assert response.status_code == 200
    assert held.runs == [("E", 1), ("P", 1)]


def test_predictions_queued_behind_explanation_batches_are_taken_first(server: tuple[str, ModelRegistry]) -> None:
    address, registry = server
    batcher = registry.resolve("synthetic", 1).batcher
    held = HeldModel(batcher.model, kind, WAIT)
    batcher.model = held
    results: dict[str, int] = {}

    def post(key: str, path: str, body: bytes) -> None:
        results[key] = httpx.post(f"http://{address}{path}", content=body, headers={"content-type": "image/png"},
                                  timeout=60).status_code

    query = "/explain?method=grad-cam&faithfulness=false"  # one pass each
    threads = [threading.Thread(target=post, args=("first", query, BLACK))]
    threads[0].start()
    assert held.entered.wait(WAIT)  # the first explanation's pass holds the model
    threads.append(threading.Thread(target=post, args=("second", query, BLACK)))
    threads[1].start()
    wait_until(lambda: batcher.queued_images == 1, "the second explanation's pass never queued")
    threads.append(threading.Thread(target=post, args=("prediction", "/predict", WHITE)))
    threads[2].start()
    wait_until(lambda: batcher.queued_images == 2, "the prediction never queued")
    held.release.set()
    for thread in threads:
        thread.join(WAIT)
    assert results == {"first": 200, "second": 200, "prediction": 200}
    # The prediction came last, behind a queued explanation pass, and ran before it.
    assert held.runs == [("E", 1), ("P", 1), ("E", 1)]
