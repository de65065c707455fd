"""A clean stop: on SIGTERM the server drains before it exits.

What uvicorn does by itself on SIGTERM is not enough: it closes the listening socket and the
idle connections at once (a client sending on one of them sees a reset), readiness never
says 503 (the probe just fails to connect), and after a graceful stop it re-raises the
signal, so the process ends with status 143, not 0.

Here, on the first SIGTERM (or SIGINT):

1. ``Drain.begin`` notes the time; from that instant readiness answers 503, so a load
   balancer takes the replica out;
2. requests already in flight, queued in a batcher included, carry on and are answered;
   new requests, on connections already open or new ones, get 503 with ``Retry-After`` and
   ``Connection: close`` (``refuse_while_draining``), never a reset; probes and /metrics
   are still answered;
3. once no request is in flight, or ``CONVSCOPE_DRAIN_SECONDS`` after the signal, uvicorn's
   own shutdown runs (listener and idle connections closed, lifespan shutdown) and the
   process exits 0. A second signal stops at once.

``serve(app, config)`` runs one process so: ``python -m service`` calls it, and a launcher
with several worker processes calls it in each worker with the sockets it shares.
"""

from __future__ import annotations

import logging
import socket
import time
from types import FrameType
from typing import Protocol

import uvicorn
from fastapi import FastAPI, Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.errors import ShuttingDown
from service.http.auth import Access, access_of

log = logging.getLogger("convscope.drain")

# Routes still answered normally while draining: the probes (readiness says 503 itself)
# and the metrics, so the drain itself can be watched.
ANSWERED_WHILE_DRAINING = (Access.PROBE, Access.METRICS)


class Drain:
    """Whether this process is draining, since when, and how many requests it is answering."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.began: float | None = None
        self.in_flight = 0

    @property
    def draining(self) -> bool:
        return self.began is not None

    def begin(self) -> None:
        """Start draining. Safe in a signal handler: a single assignment, nothing else."""
        if self.began is None:
            self.began = time.monotonic()

    def remaining(self) -> float:
        if self.began is None:
            return self.seconds
        return max(0.0, self.began + self.seconds - time.monotonic())

    def done(self) -> bool:
        """Draining, and nothing left to answer (or no time left to answer it)."""
        return self.draining and (self.in_flight == 0 or self.remaining() == 0.0)


class InFlight:
    """Counts the HTTP requests being answered; while draining, every response also closes
    its connection, so clients move on to another replica. Pure ASGI: it must not wrap
    ``receive``, which the routes read to notice a client that has gone away."""

    def __init__(self, app: ASGIApp, drain: Drain) -> None:
        self.app = app
        self.drain = drain

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start" and self.drain.draining:
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"connection"]
                message["headers"] = [*headers, (b"connection", b"close")]
            await send(message)

        self.drain.in_flight += 1
        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            self.drain.in_flight -= 1


async def refuse_while_draining(request: Request) -> None:
    """App-wide dependency: while draining, new requests get 503 + Retry-After, except the
    routes declared as probes or metrics."""
    drain: Drain = request.app.state.drain
    if drain.draining and access_of(request.scope.get("route")) not in ANSWERED_WHILE_DRAINING:
        raise ShuttingDown()


def readiness_detail(drain: Drain) -> str | None:
    """Why the process is not ready because of a drain, or None."""
    if drain.draining:
        return f"draining: shutting down, {drain.in_flight} request(s) in flight"
    return None


class Readiness(Protocol):
    def readiness(self) -> tuple[bool, str]: ...


def readiness(request: Request, models: Readiness) -> tuple[bool, str]:
    """Ready to take traffic: not draining, and a model ready (``models``: the repository
    handler)."""
    draining = readiness_detail(request.app.state.drain)
    if draining is not None:
        return False, draining
    return models.readiness()


class DrainingServer(uvicorn.Server):
    """uvicorn's server with the drain in place of its own signal handling."""

    def __init__(self, config: uvicorn.Config, drain: Drain) -> None:
        super().__init__(config)
        self.drain = drain
        self._announced = False

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        # Runs in the main thread between two bytecodes (signal.signal): only assignments.
        # The signal is not recorded for uvicorn to re-raise after shutdown: a drained
        # process exits 0.
        if self.drain.draining or self.should_exit:
            self.should_exit = True
            self.force_exit = True
        else:
            self.drain.begin()

    async def on_tick(self, counter: int) -> bool:
        if self.drain.draining:
            if not self._announced:
                self._announced = True
                log.info("draining: readiness is 503; %d request(s) in flight; exiting when they are "
                         "answered or in %.0f s", self.drain.in_flight, self.drain.seconds)
            if self.drain.done():
                if self.drain.in_flight:
                    log.warning("drain time (%.0f s) is up with %d request(s) still in flight",
                                self.drain.seconds, self.drain.in_flight)
                # Requests answered: what is left for uvicorn's shutdown is closing connections.
                self.config.timeout_graceful_shutdown = 1
                return True
        return await super().on_tick(counter)


def serve(app: FastAPI, config: uvicorn.Config, sockets: list[socket.socket] | None = None) -> None:
    """Serve ``app`` (made by ``service.app.create_app``, whose drain it uses) with uvicorn
    until SIGTERM or SIGINT, drain, and return. ``config.app`` must be ``app``; ``sockets``
    are a launcher's already-bound sockets, as for ``uvicorn.Server.run``."""
    drain: Drain = app.state.drain
    if config.app is not app:
        raise ValueError("config.app must be the app being served")
    DrainingServer(config, drain).run(sockets=sockets)

