"""When the app's startup lets uvicorn listen: at once (models load in the background,
/healthz answers, /readyz says 503), or, for each of several workers sharing a port, only
once the models are loaded, so the kernel never hands a loading worker a connection."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from service.app import create_app
from service.models.registry import ModelRegistry
from service.settings import Settings
from tests.support.artifacts import write_artifact


@pytest.mark.anyio
@pytest.mark.parametrize("load_before_serving", [False, True])
async def test_startup_waits_for_the_models_only_when_asked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, load_before_serving: bool
) -> None:
    write_artifact(tmp_path, "synthetic", 1)
    release = asyncio.Event()
    load_all = ModelRegistry.load_all

    async def held_load(self: ModelRegistry) -> None:
        await release.wait()
        await load_all(self)

    monkeypatch.setattr(ModelRegistry, "load_all", held_load)
    app = create_app(Settings(model_repository=tmp_path), load_before_serving=load_before_serving)
    registry: ModelRegistry = app.state.registry
    startup = asyncio.ensure_future(app.router.lifespan_context(app).__aenter__())
    await asyncio.sleep(0.1)
    assert startup.done() is not load_before_serving  # held by the load, or already serving
    release.set()
    await asyncio.wait_for(startup, 30)
    if load_before_serving:
        assert registry.load_finished and registry.readiness() == (True, "ready")
    await registry.close()
