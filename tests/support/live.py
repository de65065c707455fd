"""Servers for integration tests: a real one in a subprocess (``ServerProcess``, with torch
made unimportable), or the app under uvicorn in this process (``in_process``) when a test
must reach in and hold a piece of work still."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import uvicorn
from fastapi import FastAPI

from service.app import build_app
from service.http.server import uvicorn_options
from service.options import ServiceOptions
from service.settings import Settings
from service.testing import ServerProcess

LiveServer = ServerProcess


def torch_blocker(directory: Path) -> Path:
    """A package named torch that refuses to import: the service must run without it."""
    package = directory / "torch"
    package.mkdir(parents=True, exist_ok=True)
    (package / "__init__.py").write_text('raise ImportError("the service must not import torch")\n')
    return directory


@contextmanager
def in_process(settings: Settings) -> Iterator[tuple[str, FastAPI]]:
    """The app under uvicorn with the launcher's options (HTTP limits included), in this
    process, so a test can reach in and hold a piece of work still, on a real loopback
    socket: yields the base URL and the app."""
    service_options = ServiceOptions.from_settings(settings)
    app = build_app(service_options)
    options = {**uvicorn_options(service_options, port=0), "host": "127.0.0.1", "log_level": "warning"}
    server = uvicorn.Server(uvicorn.Config(app, lifespan="on", **options))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not (server.started and app.state.registry.load_finished):
        assert time.monotonic() < deadline, "the server did not start"
        time.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}", app
    finally:
        server.should_exit = True
        thread.join(10)


class HeldModel:
    """Wraps a runtime so a test can hold the model still: every run waits (up to
    ``wait_s``) until ``release`` is set, and ``runs`` records ``label(batch)`` of each."""

    def __init__(self, inner: object, label: Callable[[np.ndarray], Any] = lambda batch: batch.shape[0],
                 wait_s: float = 20.0) -> None:
        self.inner = inner
        self.label = label
        self.wait_s = wait_s
        self.release = threading.Event()
        self.entered = threading.Event()
        self.runs: list[Any] = []

    def run(self, batch: np.ndarray, outputs: tuple[str, ...]) -> list[np.ndarray]:
        self.entered.set()
        self.release.wait(self.wait_s)
        self.runs.append(self.label(batch))
        return self.inner.run(batch, outputs)  # type: ignore[attr-defined,no-any-return]
