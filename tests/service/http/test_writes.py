"""One write per answer (service/http/writes.py), on the serving protocol itself: bytes fed
in, the writes it makes. No socket: a transport that records each write."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from typing import Any

import pytest
from uvicorn.config import Config
from uvicorn.server import ServerState

from service.http.limits import HttpLimits, bound_protocol
from service.http.writes import JOIN_BYTES


class Transport(asyncio.Transport):
    """Records every write call (``writelines`` is one: asyncio's joins its pieces)."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []
        self.closed = False
        self.protocol: Any = None

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.writes.append(bytes(data))

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.protocol.connection_lost(None)

    def is_closing(self) -> bool:
        return self.closed

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 50000), "sockname": ("127.0.0.1", 8000)}.get(name, default)

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


BODY = b'{"answer": 42}'


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """``/``: a plain answer; ``/stream``: its head, then its body a moment later; every
    request's body is read first (which sends "100 Continue" when the client asks)."""
    if scope["type"] != "http":
        return
    while True:
        message = await receive()
        if message["type"] != "http.request" or not message.get("more_body"):
            break
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(BODY))]})
    if scope["path"] == "/stream":
        await asyncio.sleep(0.1)
    await send({"type": "http.response.body", "body": BODY})


@contextlib.contextmanager
def connection(served: Any = None) -> Iterator[tuple[Any, Transport]]:
    """A connection to ``served`` (default: ``app``) as uvicorn opens one (inside the running loop)."""
    config = Config(served or app, http=bound_protocol(HttpLimits()))
    config.load()
    protocol = config.http_protocol_class(config=config, server_state=ServerState(), app_state={})
    transport = Transport()
    transport.protocol = protocol
    protocol.connection_made(transport)
    try:
        yield protocol, transport
    finally:
        transport.close()


def request(method: str = "POST", path: str = "/", body: bytes = b"xyz", extra: str = "") -> bytes:
    return f"{method} {path} HTTP/1.1\r\nhost: x\r\ncontent-length: {len(body)}\r\n{extra}\r\n".encode() + body


@pytest.mark.anyio
async def test_an_answer_goes_out_in_one_write_head_and_body() -> None:
    with connection() as (protocol, transport):
        for _ in range(2):  # and again on the kept-alive connection
            transport.writes.clear()
            protocol.data_received(request())
            await asyncio.sleep(0.05)
            assert len(transport.writes) == 1
            assert transport.writes[0].startswith(b"HTTP/1.1 200 OK\r\n") and transport.writes[0].endswith(b"\r\n\r\n" + BODY)


@pytest.mark.anyio
async def test_a_head_whose_body_is_late_goes_out_alone_at_the_next_turn() -> None:
    with connection() as (protocol, transport):
        protocol.data_received(request(path="/stream"))
        await asyncio.sleep(0.05)  # the app has sent its head, not its body
        assert len(transport.writes) == 1 and transport.writes[0].startswith(b"HTTP/1.1 200 OK\r\n")
        assert transport.writes[0].endswith(b"\r\n\r\n")
        await asyncio.sleep(0.15)
        assert transport.writes[1:] == [BODY]


@pytest.mark.anyio
async def test_100_continue_is_not_held_back() -> None:
    with connection() as (protocol, transport):
        protocol.data_received(request(body=b"", extra="expect: 100-continue\r\ncontent-length: 3\r\n")
                               .replace(b"content-length: 0\r\n", b""))
        await asyncio.sleep(0.05)  # the app waits for the body, after "100 Continue"
        assert transport.writes == [b"HTTP/1.1 100 Continue\r\n\r\n"]
        protocol.data_received(b"xyz")
        await asyncio.sleep(0.05)
        assert len(transport.writes) == 2 and transport.writes[1].endswith(BODY)


@pytest.mark.anyio
async def test_a_head_request_is_answered_with_its_head_once() -> None:
    with connection() as (protocol, transport):
        protocol.data_received(request(method="HEAD", body=b""))
        await asyncio.sleep(0.05)
        assert len(transport.writes) == 1 and transport.writes[0].startswith(b"HTTP/1.1 200 OK\r\n")
        assert transport.writes[0].endswith(b"\r\n\r\n")


@pytest.mark.anyio
async def test_a_large_body_goes_out_with_its_head_in_one_call_too() -> None:
    big = b"x" * (JOIN_BYTES + 1)

    async def large(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"%d" % len(big))]})
        await send({"type": "http.response.body", "body": big})

    with connection(large) as (protocol, transport):
        protocol.data_received(request())
        await asyncio.sleep(0.05)
        assert len(transport.writes) == 1 and transport.writes[0].endswith(b"\r\n\r\n" + big)
