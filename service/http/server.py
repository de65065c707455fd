"""Running the service: one process, or ``CONVSCOPE_WORKERS`` processes that share the port.

With several workers each one binds its own listening socket to the same address with
``SO_REUSEPORT``, so the kernel hashes every new connection onto one of the workers'
accept queues. uvicorn's own ``workers=N`` shares one socket instead and lets the
processes race to accept: with a load generator that opens its 16 connections at once,
one or two event loops won most of them, and two workers gave 1.0-2.4x one worker's
rate from run to run (issue 14). Hashing spreads connections evenly whatever the
client does (benchmarks/README.md).

The supervisor (this process) holds no model: it reserves the port, starts the workers,
restarts one that dies, forwards SIGTERM/SIGINT to all of them on shutdown, and
removes the Prometheus multiprocess directory it created once every worker is gone.
Every worker writes its metrics there, so ``/metrics`` from any worker is the sum.
"""

from __future__ import annotations

import gc
import logging
import multiprocessing
import multiprocessing.connection
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
from dataclasses import dataclass, field
from multiprocessing.process import BaseProcess
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

from service.http import drain
from service.http import limits as http_limits

if TYPE_CHECKING:
    from fastapi import FastAPI

    from service.options import ServiceOptions

log = logging.getLogger("convscope.server")

# uvicorn's own shutdown after the drain: only closing connections is left by then.
GRACEFUL_SHUTDOWN_S = 10
BACKLOG = 2048
# A worker that dies this soon after starting, this many times in a row, is not restarted
# again: something is wrong with the machine or the settings, not the worker.
CRASH_WINDOW_S = 30.0
MAX_QUICK_CRASHES = 3
_MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


def serve(options: ServiceOptions) -> int:
    """Serve until SIGTERM/SIGINT; the exit status for ``python -m service``."""
    from service.app import build_app

    if options.server.workers == 1:
        _serve_app(build_app(options), options)
        return 0
    return Supervisor(options).run()


def uvicorn_options(options: ServiceOptions, port: int | None = None) -> dict[str, Any]:
    """uvicorn.Config's keyword arguments for one serving process (call it in that process:
    it raises the process's open-file limit for the connection cap)."""
    server = options.server
    return dict(host=server.host, port=server.port if port is None else port, log_level=server.log_level,
                access_log=False, timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S, backlog=BACKLOG,
                **http_limits.uvicorn_options(options.http))


def _serve_app(app: FastAPI, options: ServiceOptions, port: int | None = None,
               sockets: list[socket.socket] | None = None) -> None:
    import uvicorn

    _freeze_heap()
    drain.serve(app, uvicorn.Config(app, **uvicorn_options(options, port)), sockets=sockets)


def _freeze_heap() -> None:
    """Take what the process holds before serving (its modules, FastAPI's routes, schemas
    and validators: hundreds of thousands of objects) out of the garbage collector's view.
    Requests allocate enough to set off collections all the time, and each full one would
    walk all of that again: 13% of TinyVGG's event-loop CPU per request in the profile was
    the collector (benchmarks/peers/FINDINGS.md). Only in a serving process: tests build
    and drop many apps, whose cycles a freeze would keep alive."""
    gc.collect()
    gc.freeze()
    # Python's thresholds stay: with this freeze a collection walks little, and at 16
    # clients on the digits model every collection together took ~15 us a request (3.5% of
    # the loop; gc.callbacks over 30 s of wrk). Thresholds of (20000, 50, 50) made each
    # young collection take ~17 ms, a pause every half second (p99 x2, 0.82x the images/s
    # in an interleaved A/B of 5 rounds).


def reuseport_socket(host: str, port: int) -> socket.socket:
    """A TCP socket bound to (host, port) with SO_REUSEPORT, not yet listening."""
    family, kind, proto, _, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    if family == socket.AF_INET6 and host in ("::", ""):
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    sock.bind(address)
    return sock


def _worker_main(options: ServiceOptions, port: int) -> None:
    """One worker process: its own SO_REUSEPORT listening socket, its own app and models."""
    from service.app import build_app

    # Not listening yet: uvicorn listens once the app's startup has loaded the models, so the
    # kernel never hands this worker a connection it would answer with 503.
    sock = reuseport_socket(options.server.host, port)
    _serve_app(build_app(options, load_before_serving=True), options, port, sockets=[sock])


@dataclass
class _Slot:
    """One worker position: its current process and how often it died young."""

    index: int
    process: BaseProcess | None = None
    started: float = 0.0
    quick_crashes: int = 0
    pids: list[int] = field(default_factory=list)


class Supervisor:
    """Starts ``options.server.workers`` worker processes on one port and looks after them."""

    def __init__(self, options: ServiceOptions) -> None:
        self.options = options
        self.server = options.server
        self.context = multiprocessing.get_context("spawn")  # no inherited threads or sessions
        self.slots = [_Slot(i) for i in range(options.server.workers)]
        self.stopping = False
        self.status = 0
        self._created_dir: Path | None = None

    def run(self) -> int:
        # Bound but never listening: it holds the port (and picks one for port 0) without
        # taking connections, which the kernel gives only to listening sockets.
        try:
            reserved = reuseport_socket(self.server.host, self.server.port)
        except OSError as exc:
            print(f"error: cannot listen on {self.server.host}:{self.server.port}: {exc}", file=sys.stderr)
            return 2
        port = reserved.getsockname()[1]
        self._prepare_metrics_dir()
        previous = {sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
        log.info("convscope: %d workers on %s:%d (SO_REUSEPORT)", len(self.slots), self.server.host, port)
        print(f"convscope: {len(self.slots)} workers on http://{self.server.host}:{port}", flush=True)
        try:
            for slot in self.slots:
                self._start(slot, port)
            self._watch(port)
        finally:
            self._stop_all()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            reserved.close()
            self._remove_metrics_dir()
        return self.status

    # -- workers -----------------------------------------------------------------------------

    def _start(self, slot: _Slot, port: int) -> None:
        process = self.context.Process(target=_worker_main, args=(self.options, port),
                                       name=f"convscope-worker-{slot.index}", daemon=False)
        process.start()
        slot.process, slot.started = process, time.monotonic()
        if process.pid is not None:
            slot.pids.append(process.pid)

    def _watch(self, port: int) -> None:
        while not self.stopping:
            sentinels = [s.process.sentinel for s in self.slots if s.process is not None]
            multiprocessing.connection.wait(sentinels, timeout=0.5)
            for slot in self.slots:
                process = slot.process
                if self.stopping or process is None or process.is_alive():
                    continue
                self._forget(process)
                lived = time.monotonic() - slot.started
                slot.quick_crashes = slot.quick_crashes + 1 if lived < CRASH_WINDOW_S else 0
                if slot.quick_crashes >= MAX_QUICK_CRASHES:
                    print(f"error: worker {slot.index} exited {MAX_QUICK_CRASHES} times within "
                          f"{CRASH_WINDOW_S:.0f} s of starting (last exit code {process.exitcode}); "
                          "stopping", file=sys.stderr, flush=True)
                    self.status = 1
                    self.stopping = True
                    return
                print(f"warning: worker {slot.index} (pid {process.pid}) exited with {process.exitcode}; "
                      "restarting it", file=sys.stderr, flush=True)
                self._start(slot, port)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self.stopping = True

    def _stop_all(self) -> None:
        running = [s.process for s in self.slots if s.process is not None and s.process.is_alive()]
        for process in running:
            if process.pid is not None:
                try:
                    os.kill(process.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        # Each worker drains (up to drain_seconds), then closes its connections.
        deadline = time.monotonic() + self.server.drain_seconds + GRACEFUL_SHUTDOWN_S + 5
        for process in running:
            process.join(max(0.0, deadline - time.monotonic()))
            if process.is_alive():
                process.kill()
                process.join()
        for slot in self.slots:
            if slot.process is not None:
                self._forget(slot.process)

    def _forget(self, process: BaseProcess) -> None:
        """A worker is gone: its live gauges (queue depth) must stop counting."""
        if process.pid is not None and os.environ.get(_MULTIPROC_ENV):
            from prometheus_client import multiprocess

            multiprocess.mark_process_dead(process.pid)  # type: ignore[no-untyped-call]

    # -- metrics directory -------------------------------------------------------------------

    def _prepare_metrics_dir(self) -> None:
        """Workers pool their metrics in PROMETHEUS_MULTIPROC_DIR: a fresh temporary one
        (removed at the end), or the operator's, cleared of a previous run's files."""
        given = os.environ.get(_MULTIPROC_ENV)
        if given:
            directory = Path(given)
            directory.mkdir(parents=True, exist_ok=True)
            for stale in directory.glob("*.db"):
                stale.unlink()
            return
        self._created_dir = Path(tempfile.mkdtemp(prefix="convscope-metrics-"))
        os.environ[_MULTIPROC_ENV] = str(self._created_dir)  # the spawned workers inherit it

    def _remove_metrics_dir(self) -> None:
        if self._created_dir is not None:
            shutil.rmtree(self._created_dir, ignore_errors=True)
            os.environ.pop(_MULTIPROC_ENV, None)
            self._created_dir = None
