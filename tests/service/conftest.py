"""Fixtures for the service's tests: settings -> app -> client, over synthetic artifacts."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from starlette.testclient import TestClient

from tests.support.artifacts import write_artifact
from tests.support.images import png_bytes
from tests.support.services import serving


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
