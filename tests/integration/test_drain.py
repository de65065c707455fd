"""SIGTERM drains a live server over real sockets: readiness turns 503 at once, requests in
flight are answered, new ones on open connections get 503 with Retry-After (never a reset),
and the process exits 0, within CONVSCOPE_DRAIN_SECONDS."""

from __future__ import annotations

import http.client
import signal
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.support.artifacts import write_artifact
from tests.support.images import png_bytes
from tests.support.live import LiveServer

IMAGE = png_bytes(np.full((8, 8), 100, dtype=np.uint8))


@pytest.fixture
def repository(tmp_path: Path) -> Path:
    write_artifact(tmp_path, "synthetic", 1)
    return tmp_path


def port_of(server: LiveServer) -> int:
    return int(server.url.rsplit(":", 1)[1])


class SlowUpload:
    """A prediction whose body arrives over a raw socket in two parts: between them the
    server has the request in flight, waiting for the rest."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        head = (f"POST /v1/models/synthetic/predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: image/png\r\n"
                f"Content-Length: {len(IMAGE)}\r\n\r\n").encode()
        self.sock.sendall(head + IMAGE[:20])

    def finish(self) -> int:
        """Send the rest of the body; the status of the answer."""
        self.sock.sendall(IMAGE[20:])
        response = http.client.HTTPResponse(self.sock)
        try:
            response.begin()
            response.read()
            return response.status
        finally:
            response.close()
            self.sock.close()


class Clients:
    """Threads sending predictions back to back, each stopping at its first answer that is
    not a 200 (as a client moves on to another replica); every answer and error is kept."""

    def __init__(self, url: str, count: int = 3) -> None:
        self.url = url
        self.answers: list[tuple[float, int, str | None]] = []
        self.errors: list[BaseException] = []
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(count)]
        for thread in self.threads:
            thread.start()

    def _run(self) -> None:
        with httpx.Client(base_url=self.url, timeout=30) as client:
            while True:
                try:
                    response = client.post("/v1/models/synthetic/predict", content=IMAGE,
                                           headers={"content-type": "image/png"})
                except BaseException as exc:
                    self.errors.append(exc)
                    return
                self.answers.append((time.monotonic(), response.status_code, response.headers.get("retry-after")))
                if response.status_code != 200:
                    return

    def join(self) -> None:
        for thread in self.threads:
            thread.join(30)


def test_sigterm_drains_requests_in_flight_and_exits_0(start_server: Callable[..., LiveServer],
                                                       repository: Path) -> None:
    server = start_server(repository, drain_seconds=20)
    port = port_of(server)
    idle = http.client.HTTPConnection("127.0.0.1", port, timeout=30)  # an open keep-alive connection
    idle.request("GET", "/v1/models")
    assert idle.getresponse().read()
    slow = SlowUpload(port)
    clients = Clients(server.url)
    time.sleep(0.5)  # the clients are in full swing, the upload is in flight

    signalled = time.monotonic()
    server.process.send_signal(signal.SIGTERM)
    time.sleep(0.3)

    ready = httpx.get(f"{server.url}/readyz", timeout=10)
    assert ready.status_code == 503 and ready.json()["detail"].startswith("draining")
    assert httpx.get(f"{server.url}/healthz", timeout=10).status_code == 200
    idle.request("GET", "/v1/models")  # a new request on a connection opened before the signal
    refused = idle.getresponse()
    body = refused.read()
    assert (refused.status, refused.getheader("retry-after"), refused.getheader("connection")) == (503, "1", "close")
    assert b"shutting down" in body
    assert server.process.poll() is None  # still draining: the upload is in flight

    idle.close()
    assert slow.finish() == 200  # in flight at the signal: answered
    clients.join()
    assert server.process.wait(30) == 0
    exited = time.monotonic() - signalled

    assert clients.errors == []  # no reset, no lost request
    statuses = {status for _, status, _ in clients.answers}
    assert statuses <= {200, 503}
    assert all(retry == "1" for _, status, retry in clients.answers if status == 503)
    after = [status for at, status, _ in clients.answers if at > signalled]
    print(f"\ndrain: {len(clients.answers)} client requests, {after.count(200)} answered 200 after SIGTERM "
          f"(in flight or queued then), {after.count(503)} refused with 503 + Retry-After, 0 lost; "
          f"exit 0 {exited:.2f} s after SIGTERM")
    assert "draining: readiness is 503" in server.logs()


def test_the_drain_ends_at_its_limit_and_still_exits_0(start_server: Callable[..., LiveServer],
                                                      repository: Path) -> None:
    server = start_server(repository, drain_seconds=1)
    stuck = SlowUpload(port_of(server))  # never finishes its body
    try:
        time.sleep(0.2)
        server.process.send_signal(signal.SIGTERM)
        assert server.process.wait(30) == 0
    finally:
        stuck.sock.close()
    assert "drain time (1 s) is up with 1 request(s) still in flight" in server.logs()
