"""A request's client hanging up, as the HTTP protocol tells the app.

Work for a client who has gone away is dropped (``requests.unless_client_gone``). ASGI says
so through ``receive()``, which returns ``http.disconnect``, so the portable way to notice is
a second task per request that waits on it, and an ``asyncio.wait`` over the two: on the
2-core benchmark machine, with the work run as a task of its own, about 7% of the event
loop's CPU per digits prediction (benchmarks/peers/FINDINGS.md). The server's protocol
(``limits.LimitedHttpToolsProtocol``) knows it first-hand: it puts a ``Hangup`` in each
request's scope and fires it when the connection is lost, or when it cuts the request short,
before the answer is complete. The work then runs in the request's own task, which a hang-up
cancels.
"""

from __future__ import annotations

from collections.abc import Callable

# The scope key of a request's Hangup (absent under another server, or in tests without one).
HANGUP = "convscope.hangup"


class Hangup:
    """Fired once, when the request's client has gone; one listener at a time."""

    __slots__ = ("happened", "listener")

    def __init__(self) -> None:
        self.happened = False
        self.listener: Callable[[], None] | None = None

    def listen(self, listener: Callable[[], None]) -> None:
        self.listener = listener

    def forget(self) -> None:
        self.listener = None

    def fire(self) -> None:
        if self.happened:
            return
        self.happened = True
        listener, self.listener = self.listener, None
        if listener is not None:
            listener()
