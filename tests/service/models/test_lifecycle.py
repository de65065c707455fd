"""Versions coming and going while the registry serves: the poll's sync, load and unload on
request, leases held across a switch, and nothing left behind after an unload."""

from __future__ import annotations

import asyncio
import gc
import shutil
import threading
import weakref
from pathlib import Path

import numpy as np
import pytest

from service.errors import LoadFailed, ModelNotReady, UnknownModel, UnknownVersion
from service.inference.batching import DynamicBatcher
from service.models.loader import LoadedVersion
from service.models.registry import ModelRegistry, ModelState
from tests.support.artifacts import publish, write_artifact
from tests.support.services import registry_for


@pytest.fixture
async def registry(tmp_path: Path) -> ModelRegistry:
    write_artifact(tmp_path, "alpha", 1, seed=0)
    registry = registry_for(tmp_path)
    await registry.load_all()
    yield registry
    await registry.close()


def state(registry: ModelRegistry, name: str, version: int) -> ModelState:
    return registry.entries[name][version].state


async def sync(registry: ModelRegistry) -> None:
    await registry.sync(registry.scan())


def image() -> np.ndarray:
    return np.zeros((1, 1, 8, 8), dtype=np.float32)


@pytest.mark.anyio
async def test_a_new_version_becomes_the_default_once_ready_and_held_requests_stay(registry: ModelRegistry) -> None:
    with registry.lease("alpha") as held:
        publish(registry.root, "alpha", 2, seed=1)
        await sync(registry)
        assert registry.resolve("alpha").version == 2  # the switch
        assert held.version == 1
        result = await held.batcher.infer(image(), ("logits",))  # finishes on the version it started on
        assert result.outputs[0].shape == (1, 3)
    assert state(registry, "alpha", 1) is ModelState.READY  # every version stays addressable
    assert registry.metrics.model_loads.labels("alpha", "success")._value.get() == 2


@pytest.mark.anyio
async def test_a_failing_new_version_leaves_the_default_serving_and_is_retried_when_fixed(
        registry: ModelRegistry) -> None:
    publish(registry.root, "alpha", 2, seed=1, corrupted=True)
    await sync(registry)
    assert state(registry, "alpha", 2) is ModelState.FAILED
    assert "does not match its sha256" in (registry.entries["alpha"][2].reason or "")
    assert registry.resolve("alpha").version == 1
    assert registry.metrics.model_loads.labels("alpha", "failure")._value.get() == 1
    await sync(registry)  # unchanged files: not tried again
    assert registry.metrics.model_loads.labels("alpha", "failure")._value.get() == 1
    shutil.rmtree(registry.root / "alpha" / "2")
    publish(registry.root, "alpha", 2, seed=1)
    await sync(registry)
    assert registry.resolve("alpha").version == 2


@pytest.mark.anyio
async def test_a_version_gone_from_disk_is_unloaded_when_its_last_request_ends(registry: ModelRegistry) -> None:
    publish(registry.root, "alpha", 2, seed=1)
    await sync(registry)
    with registry.lease("alpha", 2) as held:
        shutil.rmtree(registry.root / "alpha" / "2")
        syncing = asyncio.create_task(sync(registry))
        await asyncio.sleep(0.05)
        assert state(registry, "alpha", 2) is ModelState.UNLOADING
        assert registry.resolve("alpha").version == 1  # out of resolution at once
        with pytest.raises(ModelNotReady, match="version 2 is unloading"):
            registry.resolve("alpha", 2)
        assert not syncing.done()  # waits for this request
        await held.batcher.infer(image(), ("logits",))
    await asyncio.wait_for(syncing, 5)
    with pytest.raises(UnknownVersion, match="valid: 1$"):
        registry.resolve("alpha", 2)


@pytest.mark.anyio
async def test_a_model_directory_removed_whole_is_unloaded(registry: ModelRegistry) -> None:
    publish(registry.root, "beta", 1)
    await sync(registry)
    assert registry.names() == ["alpha", "beta"]
    shutil.rmtree(registry.root / "beta")
    await sync(registry)
    assert registry.names() == ["alpha"]
    with pytest.raises(UnknownModel, match="unknown model 'beta'; valid: alpha"):
        registry.resolve("beta")


@pytest.mark.anyio
async def test_unload_and_load_on_request(registry: ModelRegistry) -> None:
    await registry.unload_model("alpha")
    assert state(registry, "alpha", 1) is ModelState.UNLOADED
    with pytest.raises(ModelNotReady, match="unloaded on request; POST /v2/repository/models/alpha/load"):
        registry.resolve("alpha")
    assert registry.readiness() == (False, f"no model is ready in {registry.root}")
    publish(registry.root, "alpha", 2, seed=1)
    await sync(registry)  # the poll leaves an unloaded model alone
    assert 2 not in registry.entries["alpha"]
    await registry.load_model("alpha")
    assert registry.resolve("alpha").version == 2
    assert state(registry, "alpha", 1) is ModelState.READY
    with pytest.raises(UnknownModel, match="unknown model 'nope'; valid: alpha"):
        await registry.load_model("nope")


@pytest.mark.anyio
async def test_load_on_request_says_which_version_failed_and_what_serves(registry: ModelRegistry) -> None:
    publish(registry.root, "alpha", 2, seed=1, corrupted=True)
    with pytest.raises(LoadFailed, match=r"model alpha failed to load \(version 2: model.onnx does not match "
                                         r"its sha256.*\); version 1 serves"):
        await registry.load_model("alpha")
    index = {(e.name, e.version): e.state for e in await registry.index()}
    assert index == {("alpha", 1): ModelState.READY, ("alpha", 2): ModelState.FAILED}


@pytest.mark.anyio
async def test_the_index_lists_versions_on_disk_that_are_not_loaded(registry: ModelRegistry) -> None:
    publish(registry.root, "gamma", 3)
    index = await registry.index()
    assert [(e.name, e.version, e.state) for e in index] == [("alpha", 1, ModelState.READY), ("gamma", 3, None)]


@pytest.mark.anyio
async def test_a_stopped_batcher_answers_503_instead_of_waiting(registry: ModelRegistry) -> None:
    model = registry.resolve("alpha")
    await model.batcher.stop()
    with pytest.raises(ModelNotReady, match="alpha-1 was stopped"):
        await asyncio.wait_for(model.batcher.infer(image(), ("logits",)), 5)


def _ort_threads() -> int:
    return sum(1 for t in threading.enumerate() if t.name.startswith("ort-"))


@pytest.mark.anyio
async def test_load_unload_cycles_leave_no_session_batcher_or_thread_behind(registry: ModelRegistry) -> None:
    served: list[weakref.ref[LoadedVersion]] = []
    batchers: list[weakref.ref[DynamicBatcher]] = []
    sessions: list[weakref.ref[object]] = []
    threads_before = _ort_threads()
    for _ in range(5):
        await registry.unload_model("alpha")
        await registry.load_model("alpha")
        model = registry.resolve("alpha")
        await model.batcher.infer(image(), ("logits", "features.1"))
        served.append(weakref.ref(model))
        batchers.append(weakref.ref(model.batcher))
        sessions += [weakref.ref(model.runtime.logits_session), weakref.ref(model.runtime.features_session)]
        del model
    gc.collect()
    # Only the version loaded last is alive.
    assert sum(r() is not None for r in served) == 1
    assert sum(r() is not None for r in batchers) == 1
    assert sum(r() is not None for r in sessions) == 2
    assert _ort_threads() == threads_before + 1  # the live batcher's one worker thread; it ran once
