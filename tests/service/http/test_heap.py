"""An answered error releases the frames of its traceback (service/app.py), so it leaves no
reference cycle holding the request and its body for the garbage collector."""

from __future__ import annotations

import gc
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support.services import serving

PNG = {"content-type": "image/png"}


@pytest.fixture
def collector() -> Iterator[None]:
    """Whatever a test does to the collector is undone."""
    thresholds = gc.get_threshold()
    yield
    gc.set_debug(0)
    gc.garbage.clear()
    gc.unfreeze()
    gc.set_threshold(*thresholds)
    gc.enable()


@pytest.mark.parametrize(("path", "body"), [
    ("/v1/models/synthetic/predict", b"x" * 300_001),  # not an image: 400
    ("/v1/models/synthetic/predict?layers=nope", None),  # an unknown layer: 404 (a valid PNG)
    ("/v1/models/synthetic/predict?top_k=0", b"x" * 300_001),  # FastAPI's validation error: 422
])
def test_an_answered_error_leaves_no_cycle_holding_the_request(
        repository: Path, random_png: Callable[..., bytes], collector: None, path: str, body: bytes | None) -> None:
    data = body if body is not None else random_png(size=300)
    with serving(model_repository=repository) as client:
        client.post("/v1/models/synthetic/predict", content=random_png(), headers=PNG)  # the path is known
        gc.collect()
        gc.disable()
        gc.set_debug(gc.DEBUG_SAVEALL)
        for _ in range(5):
            assert client.post(path, content=data, headers=PNG).status_code in (400, 404, 422)
        gc.collect()
        # The test client's own request objects (httpx) hold the body in cycles of their own.
        holders = [type(o) for o in gc.garbage if not type(o).__module__.startswith("httpx")
                   and any(isinstance(r, bytes) and len(r) == len(data) for r in gc.get_referents(o))]
        assert holders == []
