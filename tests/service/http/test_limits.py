"""The HTTP server's own limits, on the protocol itself: bytes fed in, what it writes back.
No socket and no app of ours: a transport that records, and an app that reads the body and
answers 200. (tests/integration/test_hostile.py drives the same limits over real sockets.)"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import pytest
from uvicorn.config import Config
from uvicorn.server import ServerState

from service.http.hangup import HANGUP, Hangup
from service.http.limits import REFUSALS, HttpLimits, LimitedHttpToolsProtocol, bound_protocol


class Transport(asyncio.Transport):
    """Records what the protocol writes and whether it closed the connection."""

    def __init__(self) -> None:
        super().__init__()
        self.written = bytearray()
        self.closed = False
        self.eof = False
        self.paused = False
        self.protocol: LimitedHttpToolsProtocol | None = None

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written += bytes(data)

    def write_eof(self) -> None:
        self.eof = True

    def can_write_eof(self) -> bool:
        return True

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self.protocol is not None:
            self.protocol.connection_lost(None)  # as the event loop tells a closed protocol

    def is_closing(self) -> bool:
        return self.closed

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 50000), "sockname": ("127.0.0.1", 8000)}.get(name, default)

    def pause_reading(self) -> None:
        self.paused = True

    def resume_reading(self) -> None:
        self.paused = False

    def answer(self) -> tuple[int, dict[str, str], dict[str, Any]]:
        """The status, headers and JSON body written (one response)."""
        head, _, body = bytes(self.written).partition(b"\r\n\r\n")
        status_line, *lines = head.decode().split("\r\n")
        headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
        return int(status_line.split()[1]), headers, json.loads(body)


async def read_and_answer(scope: dict[str, Any], receive: Any, send: Any) -> None:
    while True:
        message = await receive()
        if message["type"] != "http.request" or not message.get("more_body"):
            break
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
    await send({"type": "http.response.body", "body": b"ok"})


@pytest.fixture
def limits() -> HttpLimits:
    return HttpLimits(max_connections=2, max_header_bytes=256, header_timeout_s=0.2, body_timeout_s=0.2)


class Connections:
    """Opens protocol instances, as uvicorn does for each accepted connection."""

    def __init__(self, limits: HttpLimits) -> None:
        self.config = Config(read_and_answer, http=bound_protocol(limits))
        self.config.load()
        self.state = ServerState()
        self.refusals: list[str] = []

    def open(self) -> tuple[LimitedHttpToolsProtocol, Transport]:
        protocol_class = self.config.http_protocol_class
        protocol = protocol_class(config=self.config, server_state=self.state,
                                  app_state={REFUSALS: self.refusals.append})
        transport = Transport()
        transport.protocol = protocol
        protocol.connection_made(transport)
        return protocol, transport


@pytest.fixture
def connections(limits: HttpLimits) -> Iterator[Connections]:
    made = Connections(limits)
    yield made
    for protocol in list(made.state.connections):
        protocol.transport.close()


def head(path: str = "/", extra: str = "") -> bytes:
    return f"GET {path} HTTP/1.1\r\nhost: x\r\n{extra}\r\n".encode()


@pytest.mark.anyio
async def test_a_request_within_the_limits_is_answered(connections: Connections) -> None:
    protocol, transport = connections.open()
    protocol.data_received(head())
    await asyncio.sleep(0.05)
    assert bytes(transport.written).startswith(b"HTTP/1.1 200") and not transport.closed


@pytest.mark.anyio
@pytest.mark.parametrize("request_bytes, status, words", [
    (head("/" + "a" * 400), 414, "the request line is over 256 bytes (CONVSCOPE_MAX_HEADER_BYTES)"),
    (head(extra="x-big: " + "b" * 400 + "\r\n"), 431, "the request headers are over 256 bytes"),
    (b"NOT HTTP AT ALL\r\n\r\n", 400, "Invalid HTTP request received."),
])
async def test_a_head_over_the_limit_is_refused_in_the_services_json(
        connections: Connections, request_bytes: bytes, status: int, words: str) -> None:
    protocol, transport = connections.open()
    protocol.data_received(request_bytes)
    got, headers, body = transport.answer()
    assert got == status and headers["content-type"] == "application/json" and headers["connection"] == "close"
    assert words in body["error"]
    assert transport.eof  # answered, then a graceful close: the client reads the answer, not a reset


@pytest.mark.anyio
async def test_a_slow_head_times_out_with_408_and_a_silent_connection_just_closes(
        connections: Connections) -> None:
    slow, slow_transport = connections.open()
    silent, silent_transport = connections.open()
    slow.data_received(b"GET / HTTP/1.1\r\nhost")  # and nothing more
    await asyncio.sleep(0.35)
    status, _, body = slow_transport.answer()
    assert status == 408 and "the request headers took over 0.2 s" in body["error"]
    assert silent_transport.closed and silent_transport.written == b""
    assert "header_timeout" in connections.refusals


@pytest.mark.anyio
async def test_a_body_that_stops_coming_times_out_with_408(connections: Connections) -> None:
    protocol, transport = connections.open()
    protocol.data_received(b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 10\r\n\r\n12")
    await asyncio.sleep(0.4)
    status, _, body = transport.answer()
    assert status == 408 and body == {"error": "no body data came for 0.2 s (CONVSCOPE_BODY_TIMEOUT_S)"}


@pytest.mark.anyio
async def test_at_the_connection_cap_the_idle_one_makes_room_and_a_busy_server_says_503(
        connections: Connections) -> None:
    first, first_transport = connections.open()
    second, second_transport = connections.open()
    first.data_received(head())  # answered: idle since
    await asyncio.sleep(0.02)
    second.data_received(b"GET / HTTP/1.1\r\n")  # a head on its way: busy
    third, third_transport = connections.open()
    assert first_transport.closed and not third_transport.written  # the idle one made room
    third.data_received(b"GET / HTTP/1.1\r\n")  # busy too, and only just begun
    fourth, fourth_transport = connections.open()
    status, headers, body = fourth_transport.answer()
    assert status == 503 and headers["retry-after"] == "1"
    assert body == {"error": "the server holds 2 connections (CONVSCOPE_MAX_CONNECTIONS); retry shortly"}
    assert connections.refusals.count("too_many_connections") == 1


@pytest.mark.anyio
@pytest.mark.parametrize("answered_first", [0, 1])
async def test_the_connection_answered_first_makes_room_even_when_the_clock_stands_still(
        connections: Connections, monkeypatch: pytest.MonkeyPatch, answered_first: int) -> None:
    # A VM's coarse clock gives answers a few milliseconds apart the same time: the order in
    # which connections fell idle must not depend on it (nor on the set they are kept in,
    # hence both orders).
    monkeypatch.setattr(asyncio.get_running_loop(), "time", lambda: 1000.0)
    opened = [connections.open(), connections.open()]
    for protocol, transport in (opened[answered_first], opened[1 - answered_first]):
        protocol.data_received(head())
        for _ in range(20):  # the app's turns (no timers: the clock is stopped)
            await asyncio.sleep(0)
        assert bytes(transport.written).startswith(b"HTTP/1.1 200")
    _, third_transport = connections.open()
    assert [transport.closed for _, transport in opened] == [i == answered_first for i in range(2)]
    assert not third_transport.written


@pytest.mark.anyio
async def test_each_request_hears_its_client_hang_up_and_only_its_own(limits: HttpLimits) -> None:
    scopes: list[dict[str, Any]] = []

    async def answer_second(scope: dict[str, Any], receive: Any, send: Any) -> None:
        scopes.append(scope)
        await receive()
        if len(scopes) == 1:  # the first is answered; the second never is
            await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"0")]})
            await send({"type": "http.response.body", "body": b""})
        else:
            await asyncio.Event().wait()

    config = Config(answer_second, http=bound_protocol(limits))
    config.load()
    protocol = config.http_protocol_class(config=config, server_state=ServerState(), app_state={})
    transport = Transport()
    transport.protocol = protocol
    protocol.connection_made(transport)
    protocol.data_received(head())
    await asyncio.sleep(0.05)
    protocol.data_received(head())
    await asyncio.sleep(0.05)
    first, second = (scope[HANGUP] for scope in scopes)
    assert isinstance(first, Hangup) and first is not second and not second.happened
    transport.close()
    assert second.happened and not first.happened  # the first was answered before
    for task in list(protocol.tasks):
        task.cancel()
