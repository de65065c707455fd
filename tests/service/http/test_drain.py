"""The drain on its own: what a draining app answers (in process), the count of requests in
flight, when it is done, and what the server does with the first and second signal.
(tests/integration/test_drain.py sends SIGTERM to a real server.)"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import uvicorn
from starlette.testclient import TestClient

from service.http.drain import Drain, DrainingServer
from tests.support.artifacts import write_artifact
from tests.support.images import png_bytes
from tests.support.services import serving

IMAGE = png_bytes(np.full((8, 8), 9, dtype=np.uint8))


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    write_artifact(tmp_path, "synthetic", 1)
    with serving(model_repository=tmp_path) as c:
        yield c


def test_while_draining_probes_and_metrics_answer_and_the_rest_is_told_to_go_elsewhere(client: TestClient) -> None:
    assert client.get("/readyz").status_code == 200
    client.app.state.drain.begin()  # type: ignore[attr-defined]
    ready = client.get("/readyz")
    assert ready.status_code == 503 and ready.json()["detail"].startswith("draining: shutting down")
    assert client.get("/v2/health/ready").status_code == 503
    assert client.get("/healthz").status_code == 200 and client.get("/metrics").status_code == 200
    refused = client.post("/predict", content=IMAGE, headers={"Content-Type": "image/png"})
    assert refused.status_code == 503 and refused.headers["retry-after"] == "1"
    assert refused.headers["connection"] == "close"
    assert refused.json() == {"error": "the server is shutting down; retry (another replica will answer)"}


def test_requests_in_flight_are_counted_and_done_waits_for_them() -> None:
    drain = Drain(seconds=0.2)
    assert not drain.draining and not drain.done() and drain.remaining() == 0.2
    drain.in_flight = 2
    drain.begin()
    began = drain.began
    drain.begin()  # a second signal does not restart the clock
    assert drain.began == began and drain.draining and not drain.done()
    drain.in_flight = 0
    assert drain.done()
    drain.in_flight = 1
    time.sleep(0.25)
    assert drain.remaining() == 0.0 and drain.done()  # out of time, whatever is left


@pytest.mark.anyio
async def test_the_first_signal_drains_and_the_second_stops_at_once() -> None:
    async def app(scope: dict[str, object], receive: object, send: object) -> None:
        return None

    drain = Drain(seconds=5)
    server = DrainingServer(uvicorn.Config(app, lifespan="off"), drain)
    server.handle_exit(15, None)
    assert drain.draining and not server.should_exit  # keeps serving what is in flight
    drain.in_flight = 1
    assert await server.on_tick(0) is False
    drain.in_flight = 0
    assert await server.on_tick(1) is True  # nothing left: uvicorn's own shutdown may begin
    server.handle_exit(15, None)
    assert server.should_exit and server.force_exit
    await asyncio.sleep(0)
