"""Issue 11's hostile clients, each over a real socket against a real server: no 500s,
bounded metrics, heads refused before they are buffered, silent and slow sockets closed,
a connection cap, JSON and decoding that never hold up a well-behaved /predict, and a
client gone counted as such. Every wait is bounded; what is asserted is the order of
events, never how long something took."""

from __future__ import annotations

import io
import re
import select
import socket
import struct
import threading
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from service.http import json_bounds
from service.http.limits import SLOW_HEAD_S
from service.inference import image_preparation
from service.settings import Settings
from tests.support.artifacts import write_artifact
from tests.support.images import png_bytes
from tests.support.live import LiveServer, in_process

SMALL_PNG = png_bytes(np.full((8, 8), 100, dtype=np.uint8))
PNG = {"content-type": "image/png"}


@pytest.fixture(scope="module")
def repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("hostile-models")
    write_artifact(root, "synthetic", 1)
    return root


@pytest.fixture(scope="module")
def server(repository: Path, start_server: Callable[..., LiveServer]) -> LiveServer:
    return start_server(repository, header_timeout_s=1, body_timeout_s=1, max_header_bytes=8192)


def connect(server: LiveServer) -> socket.socket:
    host, port = server.url.removeprefix("http://").split(":")
    return socket.create_connection((host, int(port)), timeout=10)


def answer(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes (bounded by the socket's timeout)."""
    out = b""
    while chunk := sock.recv(65536):
        out += chunk
    return out


def one_response(sock: socket.socket) -> bytes:
    """One whole response (head and Content-Length body) from a kept-alive connection."""
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536)
    head, _, body = data.partition(b"\r\n\r\n")
    declared = re.search(rb"(?i)content-length: *(\d+)", head)
    length = int(declared.group(1)) if declared else 0
    while len(body) < length:
        body += sock.recv(65536)
    return data


def requests_counted(server: LiveServer) -> dict[tuple[str, ...], float]:
    """convscope_requests_total by (model, version, endpoint, status)."""
    counts = {}
    for line in httpx.get(server.url + "/metrics").text.splitlines():
        if line.startswith("convscope_requests_total{"):
            labels = dict(re.findall(r'(\w+)="([^"]*)"', line))
            key = tuple(labels[k] for k in ("model", "version", "endpoint", "status"))
            counts[key] = float(line.rsplit(" ", 1)[1])
    return counts


def counted(server: LiveServer, endpoint: str, status: str) -> float:
    return sum(v for k, v in requests_counted(server).items() if k[2] == endpoint and k[3] == status)


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"never happened: {what}"
        time.sleep(0.05)


# -- 1, 2: bad input is a 4xx, never a 500 ---------------------------------------------------

BAD_VERSIONS = ["%C2%B2", "%D9%A1", "1" * 5000, "0", "-1", "1" * 10, "1.0"]
VERSION_ROUTES = [
    ("GET", "/v2/models/synthetic/versions/{v}"),
    ("GET", "/v2/models/synthetic/versions/{v}/ready"),
    ("POST", "/v2/models/synthetic/versions/{v}/infer"),
    ("GET", "/v1/models/synthetic/versions/{v}"),
    ("POST", "/v1/models/synthetic/versions/{v}/predict"),
    ("POST", "/v1/models/synthetic/versions/{v}/layers/features.1/feature_maps.png"),
    ("GET", "/v1/models/synthetic/layers?version={v}"),
    ("GET", "/v1/models/synthetic/layers/conv/filters.png?version={v}"),
]


def test_every_invalid_version_is_a_4xx_on_both_apis(server: LiveServer) -> None:
    statuses = {}
    with httpx.Client(base_url=server.url, timeout=10) as client:
        for version in BAD_VERSIONS:
            for method, route in VERSION_ROUTES:
                path = route.format(v=version)
                response = client.request(method, path, content=SMALL_PNG if method == "POST" else None,
                                          headers=PNG)
                statuses[(version[:12], path.split("/")[1], method, route)] = response.status_code
    wrong = {k: v for k, v in statuses.items() if v not in (400, 422)}
    assert not wrong


@pytest.mark.parametrize("path, body", [
    ("/predict", b'{"image": ' + b"1" * 5000 + b"}"),
    ("/v2/models/synthetic/infer", b'{"id": ' + b"1" * 5000 + b', "inputs": []}'),
    ("/v2/models/synthetic/infer", b'{"inputs": [{"name": "input", "shape": [1, 1, 8, 8], "datatype": "FP32", '
                                   b'"data": [' + b"1" * 5000 + b"]}]}"),
], ids=["v1 image", "v2 id", "v2 data"])
def test_a_number_of_5000_digits_is_a_400(server: LiveServer, path: str, body: bytes) -> None:
    response = httpx.post(server.url + path, content=body, headers={"content-type": "application/json"})
    assert response.status_code == 400, response.text
    assert "not valid JSON" in response.json()["error"]


# -- 3: metrics labels come from a bounded set -----------------------------------------------


def test_metrics_stay_bounded_after_2000_unknown_model_requests(server: LiveServer) -> None:
    routes = ["/v2/models/x{i}y/ready", "/v2/models/synthetic/versions/{j}/ready", "/v1/models/x{i}y",
              "/v2/models/x{i}y/versions/{j}", "/v1/models/x{i}y/layers/conv/filters.png?version={j}"]
    with httpx.Client(base_url=server.url, timeout=10) as client:
        for i in range(2000):
            response = client.get(routes[i % len(routes)].format(i=i, j=i + 7))
            assert response.status_code == 404, response.text
        text = client.get("/metrics").text
    assert "x1y" not in text and "x1999y" not in text
    series = requests_counted(server)
    assert {model for model, *_ in series} <= {"synthetic", "unknown", ""}
    assert {version for _, version, *_ in series} <= {"1", "unknown", ""}
    # One series per (model, version, endpoint, status) that occurred: a handful, not 2000.
    assert len([k for k in series if k[3] == "404"]) <= 2 * 2 * len(routes)


# -- 4, 5: the HTTP server's own limits -------------------------------------------------------


@pytest.mark.parametrize("head, status", [
    (b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: ", b"431"),
    (b"GET /healthz?", b"414"),
], ids=["headers", "url"])
def test_an_oversized_head_is_refused_before_it_ends(server: LiveServer, head: bytes, status: bytes) -> None:
    with connect(server) as sock:
        sock.sendall(head + b"a" * 64 * 1024)  # eight times the limit, and the head never ends
        assert answer(sock).startswith(b"HTTP/1.1 " + status)


def test_a_silent_connection_is_closed_after_the_header_timeout(server: LiveServer) -> None:
    with connect(server) as sock:
        assert answer(sock) == b""  # closed by the server, nothing said


def test_a_head_sent_a_byte_at_a_time_gets_408_before_it_ends(server: LiveServer) -> None:
    head = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 500 + b"\r\n\r\n"
    with connect(server) as sock:
        sent = 0
        while sent < len(head) and not select.select([sock], [], [], 0.05)[0]:
            sock.send(head[sent:sent + 1])
            sent += 1
        assert sent < len(head)  # the server spoke first
        assert answer(sock).startswith(b"HTTP/1.1 408")


def test_a_stalled_body_gets_408_and_is_counted_so(server: LiveServer) -> None:
    before = counted(server, "/predict", "408")
    with connect(server) as sock:
        sock.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
                     b"Content-Length: 1000\r\n\r\n" + SMALL_PNG[:20])
        assert answer(sock).startswith(b"HTTP/1.1 408")
    wait_for(lambda: counted(server, "/predict", "408") == before + 1, "the 408 counted")


def test_at_the_connection_cap_the_idle_and_the_slow_make_room_and_the_busy_do_not(
    repository: Path, start_server: Callable[..., LiveServer]
) -> None:
    capped = start_server(repository, max_connections=4, keep_alive_timeout_s=60, header_timeout_s=60)
    with ExitStack() as stack:
        # Four kept-alive connections, each answered once: the server holds them, idle.
        idle = [stack.enter_context(connect(capped)) for _ in range(4)]
        for sock in idle:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            assert one_response(sock).startswith(b"HTTP/1.1 200")
        # A fifth client is served: the connection idle the longest was closed for it.
        assert httpx.get(capped.url + "/healthz").status_code == 200
        assert idle[0].recv(1) == b""
    wait_for(lambda: _gauge(capped, "convscope_http_connections") <= 1, "the idle ones gone (the scrape is one)")
    with ExitStack() as stack:
        # Four connections mid-upload (the server has asked for their bodies): none is idle
        # or slow, so a fifth gets 503 at once.
        busy = [stack.enter_context(connect(capped)) for _ in range(4)]
        for sock in busy:
            sock.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
                         b"Expect: 100-continue\r\nContent-Length: 1000\r\n\r\n")
            assert sock.recv(65536).startswith(b"HTTP/1.1 100")
        response = httpx.get(capped.url + "/healthz")
        assert response.status_code == 503 and response.headers["retry-after"] == "1"
    wait_for(lambda: _gauge(capped, "convscope_http_connections") <= 1, "the uploads gone")
    with ExitStack() as stack:
        # Four heads trickling in for longer than any client takes (SLOW_HEAD_S): the oldest
        # makes room, with a 408.
        slow = [stack.enter_context(connect(capped)) for _ in range(4)]
        for sock in slow:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
            time.sleep(0.1)  # heads begun one after the other
        time.sleep(SLOW_HEAD_S + 0.5)
        assert httpx.get(capped.url + "/healthz").status_code == 200
        assert answer(slow[0]).startswith(b"HTTP/1.1 408")
    refused = {line.split('"')[1]: float(line.rsplit(" ", 1)[1])
               for line in httpx.get(capped.url + "/metrics").text.splitlines()
               if line.startswith("convscope_http_refused_total{")}
    assert refused == {"too_many_connections": 1.0, "slow_header": 1.0}


def _gauge(server: LiveServer, name: str) -> float:
    for line in httpx.get(server.url + "/metrics").text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"no {name} in /metrics")


# -- 8: a client gone is its own outcome ------------------------------------------------------


def test_a_client_gone_during_upload_is_counted_and_logs_no_traceback(server: LiveServer) -> None:
    log_before = len(server.logs())
    gone_before = counted(server, "/predict", "499")
    with connect(server) as sock:
        sock.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
                     b"Expect: 100-continue\r\nContent-Length: 100000\r\n\r\n")
        assert sock.recv(65536).startswith(b"HTTP/1.1 100")  # the app is reading the body
        sock.sendall(b"\x89PNG" + b"\0" * 1000)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # reset
    wait_for(lambda: counted(server, "/predict", "499") == gone_before + 1, "the disconnect counted")
    assert counted(server, "/predict", "500") == 0
    new_log = server.logs()[log_before:]
    assert "Traceback" not in new_log and "ERROR" not in new_log


def test_a_malformed_chunked_body_is_a_400_counted_as_400(server: LiveServer) -> None:
    log_before = len(server.logs())
    before = counted(server, "/predict", "400")
    with connect(server) as sock:
        sock.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
                     b"Transfer-Encoding: chunked\r\n\r\n5\r\nabcde\r\nZZZ\r\n")
        assert answer(sock).startswith(b"HTTP/1.1 400")
    wait_for(lambda: counted(server, "/predict", "400") == before + 1, "the 400 counted")
    assert counted(server, "/predict", "500") == 0
    new_log = server.logs()[log_before:]
    assert "Traceback" not in new_log and len(new_log.splitlines()) <= 1


# -- 6, 7: work that must not hold up a concurrent /predict ---------------------------------


class Gate:
    """Holds the work it wraps until released, for inputs that ``holds`` picks."""

    def __init__(self, work: Callable[..., object], holds: Callable[..., bool]) -> None:
        self.work, self.holds = work, holds
        self.entered, self.release = threading.Event(), threading.Event()

    def __call__(self, *args: object) -> object:
        if self.holds(*args):
            self.entered.set()
            assert self.release.wait(20), "never released"
        return self.work(*args)


HUGE_STRUCTURE = b"[" + b",".join([b"[]"] * 1_000_000) + b"]"  # 3 MB, a million lists


@pytest.mark.parametrize("path", ["/predict", "/v2/models/synthetic/infer"], ids=["v1", "v2"])
def test_a_huge_json_structure_is_refused_without_stalling_predict(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, path: str
) -> None:
    write_artifact(tmp_path, "synthetic", 1)
    scan = Gate(json_bounds.scan, lambda body, *_: len(body) > 1_000_000)
    monkeypatch.setattr(json_bounds, "scan", scan)
    events: list[str] = []
    with in_process(Settings(model_repository=tmp_path)) as (url, _):
        def huge() -> None:
            response = httpx.post(url + path, content=HUGE_STRUCTURE, timeout=30,
                                  headers={"content-type": "application/json"})
            events.append(f"huge {response.status_code} {response.json()['error'][:60]}")

        worker = threading.Thread(target=huge)
        worker.start()
        assert scan.entered.wait(20)  # the big body is being parsed, and held there
        response = httpx.post(url + "/predict", content=SMALL_PNG, headers=PNG, timeout=10)
        events.append(f"predict {response.status_code}")
        scan.release.set()
        worker.join(30)
    assert events[0] == "predict 200"
    assert re.fullmatch(r"huge 400 .*holds 1000001 JSON arrays and objects.*", events[1])


def png16(side: int) -> bytes:
    out = io.BytesIO()
    Image.fromarray(np.full((side, side), 1234, dtype=np.uint16)).save(out, format="PNG")
    return out.getvalue()


def test_the_decode_budget_answers_503_while_a_small_predict_succeeds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_artifact(tmp_path, "synthetic", 1)
    big = png16(300)  # 840 bytes; 1.17 MB to decode and convert (13 bytes a pixel)
    finish = Gate(image_preparation._finish, lambda image, *_: image.width > 64)
    monkeypatch.setattr(image_preparation, "_finish", finish)
    settings = Settings(model_repository=tmp_path, decode_budget_bytes=2 * 1024 * 1024,
                        max_request_decode_bytes=1536 * 1024, decode_budget_wait_s=0.5)
    first: dict[str, int] = {}
    with in_process(settings) as (url, _):
        worker = threading.Thread(target=lambda: first.update(
            status=httpx.post(url + "/predict", content=big, headers=PNG, timeout=30).status_code))
        worker.start()
        assert finish.entered.wait(20)  # 1.17 of the 2 MiB are being decoded
        second = httpx.post(url + "/predict", content=big, headers=PNG, timeout=10)
        small = httpx.post(url + "/predict", content=SMALL_PNG, headers=PNG, timeout=10)
        two = httpx.post(url + "/predict", files=[("image", big), ("image", big)], timeout=10)
        finish.release.set()
        worker.join(30)
        metrics = httpx.get(url + "/metrics", timeout=10).text
    assert second.status_code == 503 and second.headers["retry-after"] == "1"
    assert 'convscope_decode_budget_waits_total{outcome="refused"} 1.0' in metrics
    assert "convscope_decode_bytes_in_flight 0.0" in metrics  # every reservation given back
    assert "CONVSCOPE_DECODE_BUDGET_BYTES" in second.json()["error"]  # after its 0.5 s wait
    assert "CONVSCOPE_DECODE_BUDGET_WAIT_S" in second.json()["error"]
    assert small.status_code == 200
    assert two.status_code == 413 and "CONVSCOPE_MAX_REQUEST_DECODE_BYTES" in two.json()["error"]
    assert first == {"status": 200}
