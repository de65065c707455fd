"""The repository handler: the index, readiness, unload and load on request."""

from __future__ import annotations

import asyncio

import pytest

from service.models.registry import ModelState
from tests.support.services import HandlerSet

pytestmark = pytest.mark.anyio


async def test_index_readiness_and_unload(handlers: HandlerSet) -> None:
    index = await handlers.repository.index()
    assert [(e.name, e.version, e.state) for e in index if e.name == "synthetic"] == [
        ("synthetic", 1, ModelState.READY), ("synthetic", 2, ModelState.READY), ("synthetic", 3, ModelState.FAILED)]
    assert all(e.state is ModelState.READY for e in await handlers.repository.index(ready_only=True))
    assert handlers.repository.ready("synthetic", 1) is None
    assert "failed" in handlers.repository.ready("synthetic", 3).message  # type: ignore[union-attr]
    assert handlers.repository.readiness() == (True, "ready")
    await handlers.repository.unload("probs")
    assert "unloaded on request" in handlers.repository.ready("probs", 1).message  # type: ignore[union-attr]
    await asyncio.wait_for(handlers.repository.load("probs"), 30)
    assert handlers.repository.ready("probs", None) is None
