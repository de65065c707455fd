"""A real server for integration tests: ``python -m service`` in a subprocess on a free
loopback port (service.testing.ServerProcess), spoken to over real HTTP. torch is made
unimportable in that process, so every integration test also proves the service runs on
onnxruntime alone."""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import uvicorn
from fastapi import FastAPI

from service.app import build_app
from service.http.server import uvicorn_options
from service.options import ServiceOptions
from service.settings import Settings
from service.testing import ServerProcess, free_port

LiveServer = ServerProcess
ROOT = Path(__file__).resolve().parents[2]


def _torch_blocker(directory: Path) -> Path:
    package = directory / "torch"
    package.mkdir(parents=True, exist_ok=True)
    (package / "__init__.py").write_text('raise ImportError("the service must not import torch")\n')
    return directory


@pytest.fixture(scope="session")
def start_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., ServerProcess]]:
    """start_server(repository, **settings) -> a ready ServerProcess, stopped at the end of the session."""
    started: list[ServerProcess] = []
    blocker = _torch_blocker(tmp_path_factory.mktemp("no-torch"))

    def start(repository: Path, **settings: object) -> ServerProcess:
        port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("CONVSCOPE_")}
        env.update({f"CONVSCOPE_{k.upper()}": str(v) for k, v in settings.items()})
        env["PYTHONPATH"] = os.pathsep.join([str(blocker), str(ROOT)])
        command = [sys.executable, "-m", "service", "--host", "127.0.0.1", "--port", str(port),
                   "--model-repository", str(repository)]
        server = ServerProcess(command, port=port, env=env, log=tmp_path_factory.mktemp("server") / "server.log")
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


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
