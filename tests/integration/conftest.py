"""A real server for integration tests: ``python -m service`` in a subprocess on a free
loopback port, spoken to over real HTTP. torch is made unimportable in that process, so
every integration test also proves the service runs on onnxruntime alone."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest


@dataclass
class LiveServer:
    url: str
    process: subprocess.Popen[bytes]
    log: Path

    def logs(self) -> str:
        return self.log.read_text(errors="replace")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _torch_blocker(directory: Path) -> Path:
    package = directory / "torch"
    package.mkdir(parents=True, exist_ok=True)
    (package / "__init__.py").write_text('raise ImportError("the service must not import torch")\n')
    return directory


@pytest.fixture(scope="session")
def start_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., LiveServer]]:
    """start_server(repository, **settings) -> LiveServer, stopped at the end of the session."""
    started: list[LiveServer] = []
    blocker = _torch_blocker(tmp_path_factory.mktemp("no-torch"))

    def start(repository: Path, **settings: object) -> LiveServer:
        port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("CONVSCOPE_")}
        env.update({f"CONVSCOPE_{k.upper()}": str(v) for k, v in settings.items()})
        env["PYTHONPATH"] = os.pathsep.join([str(blocker), str(Path(__file__).resolve().parents[2])])
        log = tmp_path_factory.mktemp("server") / "server.log"
        with log.open("wb") as out:
            process = subprocess.Popen(
                [sys.executable, "-m", "service", "--host", "127.0.0.1", "--port", str(port),
                 "--model-repository", str(repository)],
                env=env, stdout=out, stderr=subprocess.STDOUT,
            )
        server = LiveServer(f"http://127.0.0.1:{port}", process, log)
        started.append(server)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"the server exited with {process.returncode}:\n{server.logs()}")
            try:
                if httpx.get(server.url + "/readyz", timeout=1).status_code == 200:
                    return server
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise TimeoutError(f"the server never became ready:\n{server.logs()}")

    yield start
    for server in started:
        server.process.terminate()
        try:
            server.process.wait(10)
        except subprocess.TimeoutExpired:
            server.process.kill()
            server.process.wait()
