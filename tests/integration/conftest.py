"""A real server for integration tests: ``python -m service`` in a subprocess on a free
loopback port (service.testing.ServerProcess), spoken to over real HTTP. torch is made
unimportable in that process, so every integration test also proves the service runs on
onnxruntime alone."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from service.testing import ServerProcess, free_port
from tests.support.live import torch_blocker

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def start_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., ServerProcess]]:
    """start_server(repository, **settings) -> a ready ServerProcess (``ready_path`` answers:
    /readyz, every model loaded, unless told), stopped at the end of the session."""
    started: list[ServerProcess] = []
    blocker = torch_blocker(tmp_path_factory.mktemp("no-torch"))

    def start(repository: Path, *, ready_path: str = "/readyz", **settings: object) -> ServerProcess:
        port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("CONVSCOPE_")}
        env.update({f"CONVSCOPE_{k.upper()}": str(v) for k, v in settings.items()})
        env["PYTHONPATH"] = os.pathsep.join([str(blocker), str(ROOT)])
        command = [sys.executable, "-m", "service", "--host", "127.0.0.1", "--port", str(port),
                   "--model-repository", str(repository)]
        server = ServerProcess(command, port=port, env=env, log=tmp_path_factory.mktemp("server") / "server.log",
                               ready_path=ready_path)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()




@pytest.fixture(scope="session")
def zoo_cache(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the zoo's (benchmarks/zoo.py) trained weights and exported files are kept between
    runs: $CONVSCOPE_ZOO_CACHE, else pytest's cache."""
    if os.environ.get("CONVSCOPE_ZOO_CACHE"):
        return Path(os.environ["CONVSCOPE_ZOO_CACHE"])
    cache = getattr(request.config, "cache", None)
    return Path(cache.mkdir("convscope-zoo")) if cache is not None else tmp_path_factory.mktemp("zoo")
