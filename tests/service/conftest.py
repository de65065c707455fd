"""Fixtures for the service's tests: settings -> app -> client, over synthetic artifacts."""

from __future__ import annotations

import io
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from starlette.testclient import TestClient

from service.app import create_app
from service.settings import Settings
from tests.service.synthetic import write_artifact


def wait_ready(client: TestClient, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        response = client.get("/readyz")
        if response.status_code == 200 or response.json()["detail"] != "loading models":
            return
        time.sleep(0.02)
    raise TimeoutError("the app did not finish loading its models")


@contextmanager
def serving(**overrides: object) -> Iterator[TestClient]:
    """A TestClient over ``create_app(Settings(**overrides))`` whose models have loaded."""
    app = create_app(Settings(**overrides))
    with TestClient(app) as client:
        wait_ready(client)
        yield client


@pytest.fixture
def repository(tmp_path: Path) -> Path:
    """One grey 8x8 model, ``synthetic``, in versions 1 and 2."""
    root = tmp_path / "models"
    write_artifact(root, "synthetic", 1, seed=0)
    write_artifact(root, "synthetic", 2, seed=1)
    return root


@pytest.fixture
def client(repository: Path) -> Iterator[TestClient]:
    with serving(model_repository=repository) as c:
        yield c


def png_bytes(array: np.ndarray, format: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format=format)
    return buffer.getvalue()


@pytest.fixture
def random_png() -> Callable[..., bytes]:
    rng = np.random.default_rng(0)

    def make(size: int = 20, channels: int = 1) -> bytes:
        shape = (size, size) if channels == 1 else (size, size, channels)
        return png_bytes(rng.integers(0, 256, shape, dtype=np.uint8))

    return make


@pytest.fixture
def anyio_backend() -> str:
    """Async tests run on asyncio, the loop uvicorn serves on."""
    return "asyncio"
