"""The HTTP server's own limits: how big a request head may be, how long a client may take
to send it or the next piece of its body, and how many connections a worker holds.

uvicorn serves with httptools (``HttpToolsProtocol``), installed with the ``web`` extra.
That protocol has none of these limits: it feeds whatever arrives to the parser, and
httptools grows a header value in memory until its line ends (32 MB of headers cost
~600 MB); it starts no timer before a first response, so a socket that sends nothing, or
a header byte a second, is held forever; and it accepts every connection (uvicorn's
``limit_concurrency`` answers 503 only once a whole head has been parsed, and counts no
silent socket). h11's ``h11_max_incomplete_event_size`` bounds the head only under h11.
So the limits live here, in a subclass of the protocol that every worker serves with
(which also writes each answer's head with its body: service/http/writes.py):

* **head size**: the request line and headers are counted as they arrive, before the
  parser sees them; past ``max_header_bytes`` the client gets 414 (still in the URL) or
  431 and the rest is never read;
* **head timeout**: a complete head within ``header_timeout_s`` of the connection, or of
  the first byte of the next request on a kept-alive one; more bytes do not extend it.
  408, or a silent close when nothing came;
* **body timeout**: at most ``body_timeout_s`` between two pieces of a body (not while the
  server itself holds back reading because the app has not taken the last piece): 408;
* **connections**: at most ``max_connections`` per worker. At the cap the connection idle
  the longest (between requests, or connected and silent) is closed to make room, as
  nginx reuses its idle keep-alive connections; failing that, the one whose head has been
  coming for longest, if over ``SLOW_HEAD_S`` (any client sends its head in a few round
  trips; one still trickling in holds a slot it does not use), with 408; failing that,
  503 at once.

A refusal is answered, then the connection is closed gracefully: FIN after the answer,
and what the client still sends is read and dropped for up to ``LINGER_S`` (nginx's
lingering close), so the client reads the answer rather than a reset. Each refusal is
counted, by reason, in ``convscope_http_refused_total`` (the app puts its counter into
the lifespan state under ``REFUSALS``) and logged at most once a minute per reason; the
open connections are the gauge ``convscope_http_connections`` (``CONNECTIONS``).
"""

from __future__ import annotations

import asyncio
import json
import logging
import resource
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from enum import StrEnum
from itertools import count
from typing import Any, ClassVar, cast

from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from service.http.hangup import HANGUP, Hangup
from service.http.writes import HeadWithBody

log = logging.getLogger("convscope.http")

# Lifespan-state keys under which the app offers a ``count(reason)`` for refusals and a
# ``report(open_connections)``.
REFUSALS = "convscope.http_refusals"
CONNECTIONS = "convscope.http_connections"
# A scope key: the status the server itself answered a request with, when it cut the
# request short (a malformed chunked body, a body timeout) while the app was handling it.
PROTOCOL_STATUS = "convscope.protocol_status"

LINGER_S = 2.0  # how long a refused client's further bytes are read and dropped
SLOW_HEAD_S = 1.0  # a head still incomplete after this may make room for a new connection
RESERVED_FILES = 256  # open files kept for the service itself (models, logs, pipes, threads)
MAX_LINGERING_REFUSALS = 64  # refused connections lingering at once (each holds a file)

# Ranks connections by when they fell idle. A counter, not the clock: on a machine whose
# monotonic clock ticks coarsely (a VM's jiffies clocksource: 1-4 ms) answers given one
# after another can share a time, and the idlest would be picked at random among them.
_IDLE_ORDER = count()


class Refusal(StrEnum):
    URL_TOO_LONG = "url_too_long"
    HEADERS_TOO_LARGE = "headers_too_large"
    HEADER_TIMEOUT = "header_timeout"
    BODY_TIMEOUT = "body_timeout"
    TOO_MANY_CONNECTIONS = "too_many_connections"
    SLOW_HEADER = "slow_header"
    MALFORMED = "malformed"


_ANSWERS = {
    Refusal.URL_TOO_LONG: (414, "URI Too Long", "the request line is over {limit} bytes (CONVSCOPE_MAX_HEADER_BYTES)"),
    Refusal.HEADERS_TOO_LARGE: (431, "Request Header Fields Too Large",
                                "the request headers are over {limit} bytes (CONVSCOPE_MAX_HEADER_BYTES)"),
    Refusal.HEADER_TIMEOUT: (408, "Request Timeout",
                             "the request headers took over {limit} s (CONVSCOPE_HEADER_TIMEOUT_S)"),
    Refusal.BODY_TIMEOUT: (408, "Request Timeout",
                           "no body data came for {limit} s (CONVSCOPE_BODY_TIMEOUT_S)"),
    Refusal.SLOW_HEADER: (408, "Request Timeout",
                          "the request headers were still coming after {limit} s, with the server full "
                          "(CONVSCOPE_MAX_CONNECTIONS)"),
    Refusal.TOO_MANY_CONNECTIONS: (503, "Service Unavailable",
                                   "the server holds {limit} connections (CONVSCOPE_MAX_CONNECTIONS); retry shortly"),
    Refusal.MALFORMED: (400, "Bad Request", "Invalid HTTP request received."),
}


@dataclass(frozen=True)
class HttpLimits:
    max_connections: int = 1000
    max_header_bytes: int = 32 * 1024
    header_timeout_s: float = 10.0
    body_timeout_s: float = 30.0
    keep_alive_timeout_s: int = 5

    def for_this_process(self) -> HttpLimits:
        """These limits with ``max_connections`` under the open-file limit, after raising
        the soft limit towards the hard one (a default container allows 1024)."""
        soft = raise_open_files_limit(self.max_connections + RESERVED_FILES + MAX_LINGERING_REFUSALS)
        if soft == resource.RLIM_INFINITY:
            return self
        room = max(1, soft - RESERVED_FILES - MAX_LINGERING_REFUSALS)
        if room >= self.max_connections:
            return self
        log.warning("max_connections %d is over what %d open files allow: holding at most %d connections "
                    "(raise the open-file limit, `ulimit -n`, or lower CONVSCOPE_MAX_CONNECTIONS)",
                    self.max_connections, soft, room)
        return replace(self, max_connections=room)


def raise_open_files_limit(wanted: int) -> int:
    """Raise this process's soft open-file limit to ``wanted`` (at most the hard limit);
    the soft limit in force afterwards."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= wanted:
        return soft
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (ValueError, OSError):
        return soft
    return target


def uvicorn_options(limits: HttpLimits) -> dict[str, Any]:
    """Keyword arguments for ``uvicorn.run`` / ``uvicorn.Config`` in this process: the
    protocol class bound to these limits, and the keep-alive timeout."""
    return {"http": bound_protocol(limits.for_this_process()), "timeout_keep_alive": limits.keep_alive_timeout_s}


def bound_protocol(limits: HttpLimits) -> type[LimitedHttpToolsProtocol]:
    """A protocol class serving with ``limits`` (for a server in this process)."""
    return type("BoundHttpToolsProtocol", (LimitedHttpToolsProtocol,), {"limits": limits})


class _Notes:
    """Refusal warnings, at most one a minute per reason, with the count since the last."""

    interval_s = 60.0

    def __init__(self) -> None:
        self.last: dict[Refusal, float] = {}
        self.unsaid: dict[Refusal, int] = {}

    def note(self, reason: Refusal, detail: str) -> None:
        self.unsaid[reason] = self.unsaid.get(reason, 0) + 1
        now = time.monotonic()
        if now - self.last.get(reason, -self.interval_s) >= self.interval_s:
            count = self.unsaid.pop(reason)
            self.last[reason] = now
            log.warning("refused %d connection%s (%s): %s", count, "" if count == 1 else "s", reason, detail)


class LimitedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with the limits above, per connection."""

    limits: ClassVar[HttpLimits | None] = None  # set by bound_protocol: one class per serving process
    notes: ClassVar[_Notes] = _Notes()
    lingering: ClassVar[int] = 0  # refused connections lingering, in this process

    def __init__(self, config: Config, server_state: ServerState, app_state: dict[str, Any],
                 _loop: asyncio.AbstractEventLoop | None = None) -> None:
        super().__init__(config, server_state, app_state, _loop)
        bounds = type(self).limits
        if bounds is None:
            raise RuntimeError("serve with http_limits.uvicorn_options(settings): it binds the limits")
        self.bounds = bounds
        self.head_bytes = 0  # of the request head being read
        self.reading_head = True  # between requests, or inside a head
        self.line_done = False  # the request line of that head has ended
        self.heads = 0  # heads parsed on this connection
        self.refused = False  # answered and closing: further bytes are dropped
        self.idle_rank = next(_IDLE_ORDER)  # lower: idle for longer
        self.head_started = self.loop.time()  # the first byte of the head being read
        self.head_timer: asyncio.TimerHandle | None = None
        self.body_timer: asyncio.TimerHandle | None = None
        self.body_deadline = 0.0
        self.linger_timer: asyncio.TimerHandle | None = None
        self.counted_linger = False

    # -- connections ---------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        if len(self.connections) >= self.bounds.max_connections and not self._make_room():
            self.transport = transport
            self._refuse(Refusal.TOO_MANY_CONNECTIONS, self.bounds.max_connections,
                         linger=type(self).lingering < MAX_LINGERING_REFUSALS)
            return
        super().connection_made(transport)
        self.head_timer = self.loop.call_later(self.bounds.header_timeout_s, self._head_timed_out)
        self._report_connections()

    def connection_lost(self, exc: Exception | None) -> None:
        for timer in (self.head_timer, self.body_timer, self.linger_timer):
            if timer is not None:
                timer.cancel()
        self.head_timer = self.body_timer = self.linger_timer = None
        if self.counted_linger:
            self.counted_linger = False
            type(self).lingering -= 1
        super().connection_lost(exc)
        for cycle in [self.cycle, *(queued for queued, _ in self.pipeline)]:
            if cycle is not None and not cycle.response_complete:
                _hang_up(cycle.scope)
        self._report_connections()

    def _report_connections(self) -> None:
        report: Callable[[int], None] | None = self.app_state.get(CONNECTIONS)
        if report is not None:
            report(len(self.connections))

    def is_idle(self) -> bool:
        """No request on the way in or being answered: closing it costs nobody anything."""
        return (self.reading_head and self.head_bytes == 0 and not self.refused and not self.pipeline
                and (self.cycle is None or self.cycle.response_complete)
                and self.transport is not None and not self.transport.is_closing())

    def is_slow_head(self, now: float) -> bool:
        """A request head has been coming for over SLOW_HEAD_S, with no request of this
        connection in the app's hands."""
        return (self.reading_head and self.head_bytes > 0 and not self.refused and not self.pipeline
                and now - self.head_started >= SLOW_HEAD_S
                and (self.cycle is None or self.cycle.response_complete)
                and not self.transport.is_closing())

    def _make_room(self) -> bool:
        """Close a connection for a new one: the idlest, else the slowest head."""
        ours = [c for c in self.connections if isinstance(c, LimitedHttpToolsProtocol)]
        idle = [c for c in ours if c.is_idle()]
        if idle:
            min(idle, key=lambda c: c.idle_rank).transport.close()
            return True
        now = self.loop.time()
        slow = [c for c in ours if c.is_slow_head(now)]
        if slow:
            # Closed at once, not lingering: its file is what the new connection needs.
            min(slow, key=lambda c: c.head_started)._refuse(Refusal.SLOW_HEADER, SLOW_HEAD_S, linger=False)
            return True
        return False

    # -- reading -------------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        if self.refused:
            return  # the answer is on its way; what follows is read and dropped
        if not self.reading_head:
            self.body_deadline = self.loop.time() + self.bounds.body_timeout_s
            super().data_received(data)
            return
        room = self.bounds.max_header_bytes - self.head_bytes
        fits = data if len(data) <= room else data[:room]
        if not self.line_done and b"\n" in fits:
            self.line_done = True
        self.head_bytes += len(fits)
        heads = self.heads
        super().data_received(fits)
        if len(fits) == len(data) or self.refused or self.transport.is_closing():
            return
        if self.heads == heads:  # the head did not end within the limit
            self._refuse(Refusal.HEADERS_TOO_LARGE if self.line_done else Refusal.URL_TOO_LONG,
                         self.bounds.max_header_bytes)
            return
        self.data_received(data[room:])

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self.head_started = self.loop.time()
        if self.head_timer is None:  # the first byte of a request on a kept-alive connection
            self.head_timer = self.loop.call_later(self.bounds.header_timeout_s, self._head_timed_out)

    def on_headers_complete(self) -> None:
        self.reading_head = False
        self.heads += 1
        if self.head_timer is not None:
            self.head_timer.cancel()
            self.head_timer = None
        before = self.cycle
        super().on_headers_complete()
        if self.cycle is not None and self.cycle is not before:  # a new request (not an upgrade)
            self.cycle.transport = HeadWithBody(self.transport, self.cycle, self.loop)  # type: ignore[assignment]
            cast(dict[str, Any], self.cycle.scope)[HANGUP] = Hangup()
        self.body_deadline = self.loop.time() + self.bounds.body_timeout_s
        self.body_timer = self.loop.call_at(self.body_deadline, self._body_timed_out)

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self.reading_head, self.line_done, self.head_bytes = True, False, 0
        if self.body_timer is not None:
            self.body_timer.cancel()
            self.body_timer = None

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self.idle_rank = next(_IDLE_ORDER)

    # -- timeouts ------------------------------------------------------------------------

    def _head_timed_out(self) -> None:
        self.head_timer = None
        if not self.reading_head or self.refused or self.transport.is_closing():
            return
        if self.head_bytes == 0:
            self.transport.close()  # connected and silent: nothing to answer
        else:
            self._refuse(Refusal.HEADER_TIMEOUT, self.bounds.header_timeout_s)

    def _body_timed_out(self) -> None:
        self.body_timer = None
        if self.reading_head or self.refused or self.transport.is_closing():
            return
        now = self.loop.time()
        if self.flow.read_paused or (self.cycle is not None and self.cycle.waiting_for_100_continue):
            self.body_deadline = now + self.bounds.body_timeout_s  # the server is the one not reading
        if now < self.body_deadline:
            self.body_timer = self.loop.call_at(self.body_deadline, self._body_timed_out)
            return
        self._refuse(Refusal.BODY_TIMEOUT, self.bounds.body_timeout_s)

    # -- refusing ------------------------------------------------------------------------

    def send_400_response(self, msg: str) -> None:
        """httptools could not parse what came (uvicorn has logged it): answer 400 and close,
        gracefully, and let the metrics count the request as the 400 it is."""
        self._refuse(Refusal.MALFORMED, 0)

    def _refuse(self, reason: Refusal, limit: float, linger: bool = True) -> None:
        status, phrase, message = _ANSWERS[reason]
        text = message.format(limit=limit)
        cycle = self.cycle
        running = cycle is not None and not cycle.response_complete
        if running and reason in (Refusal.BODY_TIMEOUT, Refusal.MALFORMED):
            # The request the app is handling: the metrics count what its client was answered.
            cast(dict[str, Any], cycle.scope)[PROTOCOL_STATUS] = status
        else:
            if reason is not Refusal.MALFORMED:  # uvicorn has logged that one
                self.notes.note(reason, text)
            count: Callable[[str], None] | None = self.app_state.get(REFUSALS)
            if count is not None:
                count(reason.value)
        if running:
            cycle.disconnected = True  # the app learns at once that nobody will read its answer
            cycle.message_event.set()
            _hang_up(cycle.scope)
        self.refused = True
        for timer in (self.head_timer, self.body_timer):
            if timer is not None:
                timer.cancel()
        self.head_timer = self.body_timer = None
        if not (running and cycle.response_started):  # never an answer inside another one
            # The same shape as every other refusal of the service: {"error": "..."}.
            body = json.dumps({"error": text}).encode()
            extra = b"retry-after: 1\r\n" if status == 503 else b""
            self.transport.write(b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\n"
                                 b"content-length: %d\r\nconnection: close\r\n%s\r\n%s"
                                 % (status, phrase.encode(), len(body), extra, body))
        if not linger or not self.transport.can_write_eof():
            self.transport.close()
            return
        self.transport.write_eof()
        if self.flow is not None:
            self.flow.resume_reading()
        self.counted_linger = True
        type(self).lingering += 1
        self.linger_timer = self.loop.call_later(LINGER_S, self.transport.close)


def _hang_up(scope: Any) -> None:
    hangup = scope.get(HANGUP)
    if isinstance(hangup, Hangup):
        hangup.fire()
