"""One write per answer: a response's head goes out with the first piece of its body.

uvicorn's HTTP protocol writes a response's status line and headers as soon as the app
sends ``http.response.start``, and the body when it sends ``http.response.body``: two
``write`` calls, so on a TCP_NODELAY socket two segments and two wake-ups of the client for
an answer of a few hundred bytes. Under load those two syscalls were the event loop's
largest single cost (a third of its CPU for the digits model at 16 clients on 2 cores,
benchmarks/peers/FINDINGS.md): on loopback the sender's ``write`` also runs the receiver's
TCP input path.

``HeadWithBody`` is the transport as one request's cycle sees it: it holds the head and
writes it together with the body's first piece (joined when small; ``writelines``, one
vectored write without a copy, when large). A head whose body does not follow at once (a streamed answer) goes out
on its own at the event loop's next turn, so nothing waits longer than that.
"""

from __future__ import annotations

import asyncio
from typing import Any, Protocol

# A body up to this size is joined to its head (a copy of microseconds, and the transport's
# plain write); a larger one goes out with it as a vectored write.
JOIN_BYTES = 64 * 1024


class Cycle(Protocol):
    """What of uvicorn's ``RequestResponseCycle`` this needs."""

    response_started: bool


class HeadWithBody:
    """Writes a response's head together with the first piece of its body."""

    __slots__ = ("transport", "cycle", "loop", "head", "flush_at_next_turn", "head_seen")

    def __init__(self, transport: asyncio.Transport, cycle: Cycle, loop: asyncio.AbstractEventLoop) -> None:
        self.transport = transport
        self.cycle = cycle
        self.loop = loop
        self.head: bytes | None = None
        self.flush_at_next_turn: asyncio.Handle | None = None
        self.head_seen = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self.head is not None:
            head, self.head = self.head, None
            self._cancel_flush()
            if len(data) > JOIN_BYTES:
                self.transport.writelines((head, data))  # one vectored write, no copy of the body
            else:
                self.transport.write(head + bytes(data))
            return
        # The first write once the response has started is its head ("100 Continue",
        # written while the request is still being read, goes straight out).
        if self.cycle.response_started and not self.head_seen:
            self.head_seen = True
            self.head = bytes(data)
            self.flush_at_next_turn = self.loop.call_soon(self.flush)
            return
        self.transport.write(data)

    def flush(self) -> None:
        """Write a held head now."""
        self._cancel_flush()
        if self.head is not None:
            head, self.head = self.head, None
            if not self.transport.is_closing():
                self.transport.write(head)

    def close(self) -> None:
        self.flush()
        self.transport.close()

    def _cancel_flush(self) -> None:
        if self.flush_at_next_turn is not None:
            self.flush_at_next_turn.cancel()
            self.flush_at_next_turn = None

    def __getattr__(self, name: str) -> Any:
        # Everything else (is_closing, get_extra_info, ...) is the transport's own.
        return getattr(self.transport, name)
