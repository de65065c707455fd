"""The registry on its own: states, resolution, the words of its errors, leases."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from service.errors import BadRequest, ModelNotReady, UnknownModel, UnknownVersion
from service.models.registry import ModelState
from tests.support.artifacts import sha256, write_artifact, write_int8
from tests.support.services import registry_for


@pytest.fixture
def root(tmp_path: Path) -> Path:
    write_artifact(tmp_path, "alpha", 1, seed=0)
    write_artifact(tmp_path, "alpha", 2, seed=1)
    (tmp_path / "alpha" / "3").mkdir()  # no metadata.json: listed as failed, not served
    write_artifact(tmp_path, "beta", 1, seed=2)
    return tmp_path


@pytest.mark.anyio
async def test_states_after_loading(root: Path) -> None:
    registry = registry_for(root)
    assert registry.readiness() == (False, "loading models")
    with pytest.raises(ModelNotReady, match="model alpha is not known yet: the repository is still loading"):
        registry.entry("alpha")
    await registry.load_all()
    try:
        states = {(e.name, e.version): e.state for v in registry.entries.values() for e in v.values()}
        assert states == {("alpha", 1): ModelState.READY, ("alpha", 2): ModelState.READY,
                          ("alpha", 3): ModelState.FAILED, ("beta", 1): ModelState.READY}
        assert registry.readiness() == (True, "ready")
        status = registry.status()[0]
        assert (status.name, status.default_version) == ("alpha", 2)
        assert [v.version for v in status.versions] == [3, 2, 1]
        assert "metadata.json is missing" in (status.versions[0].reason or "")
    finally:
        await registry.close()


@pytest.mark.anyio
async def test_resolution_and_its_errors(root: Path) -> None:
    registry = registry_for(root)
    await registry.load_all()
    try:
        assert registry.resolve("alpha").version == 2  # newest ready, not the failed 3
        assert registry.resolve("alpha", 1).version == 1
        with pytest.raises(UnknownModel, match="unknown model 'gamma'; valid: alpha, beta"):
            registry.resolve("gamma")
        with pytest.raises(UnknownVersion, match="model alpha has no version 9; valid: 1, 2, 3"):
            registry.resolve("alpha", 9)
        with pytest.raises(ModelNotReady, match="model alpha version 3 is failed: metadata.json is missing"):
            registry.resolve("alpha", 3)
        with pytest.raises(BadRequest, match=r"2 models are served \(alpha, beta\): name one"):
            registry.resolve(None)  # the default needs naming when two models are served
    finally:
        await registry.close()


@pytest.mark.anyio
async def test_a_model_with_no_ready_version_says_why(tmp_path: Path) -> None:
    (tmp_path / "broken" / "1").mkdir(parents=True)
    registry = registry_for(tmp_path)
    await registry.load_all()
    with pytest.raises(ModelNotReady, match=r"model broken has no version ready \(version 1: failed \(metadata"):
        registry.resolve("broken")
    assert registry.readiness() == (False, f"no model is ready in {tmp_path}")


@pytest.mark.anyio
async def test_stopping_a_model_waits_for_its_leases(root: Path) -> None:
    registry = registry_for(root)
    await registry.load_all()
    try:
        with registry.lease("beta") as model:
            assert model.leases == 1
            stopping = asyncio.create_task(model.stop())
            await asyncio.sleep(0.05)
            assert not stopping.done()  # held by this request
        await asyncio.wait_for(stopping, 5)
        assert model.leases == 0
    finally:
        await registry.close()


@pytest.mark.anyio
async def test_the_channel_view_loads_with_its_version(tmp_path: Path) -> None:
    """Read once at load and attached to the served model; absent: an empty view that says
    it was not computed; listed but unreadable: the version fails at load, saying why."""
    write_artifact(tmp_path, "viewed", 1, views=True)
    write_artifact(tmp_path, "plain", 1)
    broken = write_artifact(tmp_path, "broken", 1, views=True)
    (broken / "channel_view.npz").write_bytes(b"not a zip file")
    metadata = json.loads((broken / "metadata.json").read_text())
    metadata["files"]["channel_view.npz"]["sha256"] = sha256(broken / "channel_view.npz")  # a writer's bug
    (broken / "metadata.json").write_text(json.dumps(metadata))
    registry = registry_for(tmp_path)
    await registry.load_all()
    try:
        viewed = registry.resolve("viewed").channel_view
        assert viewed.computed and viewed.has_samples and viewed.layers == ["features.1", "features.2"]
        plain = registry.resolve("plain").channel_view
        assert not plain.computed and not plain.has_samples
        failed = registry.entry("broken", 1)
        assert failed.state is ModelState.FAILED and "channel_view.npz cannot be read" in (failed.reason or "")
    finally:
        await registry.close()


@pytest.mark.anyio
@pytest.mark.parametrize("policy, int8_faster, default", [
    ("auto", True, 2), ("auto", False, 1), ("newest", False, 2), ("float32", True, 1), ("int8", False, 2),
])
async def test_the_default_version_follows_the_precision_setting(tmp_path: Path, policy: str, int8_faster: bool,
                                                                  default: int) -> None:
    from service.inference.batching import BatchCosts

    write_artifact(tmp_path, "synthetic", 1)
    write_int8(tmp_path)  # version 2, int8 of 1
    registry = registry_for(tmp_path, default_precision=policy)
    await registry.load_all()
    try:
        versions = registry.entries["synthetic"]
        # What the runtime timed at load, made to say which runs faster here.
        fast, slow = BatchCosts({1: 0.001, 8: 0.004}), BatchCosts({1: 0.002, 8: 0.010})
        assert versions[1].served is not None and versions[2].served is not None
        versions[2].served.runtime.batch_costs = fast if int8_faster else slow
        versions[1].served.runtime.batch_costs = slow if int8_faster else fast
        assert registry.entry("synthetic").version == default
        assert registry.model_status("synthetic").default_version == default
        assert [(v.version, v.precision, v.quantized_from) for v in registry.model_status("synthetic").versions] == \
            [(2, "int8", 1), (1, "float32", None)]
        assert registry.entry("synthetic", 1).version == 1  # every version stays addressable
    finally:
        await registry.close()


@pytest.mark.anyio
async def test_a_precision_with_no_ready_version_falls_back_to_the_newest(tmp_path: Path) -> None:
    write_artifact(tmp_path, "synthetic", 1)
    write_artifact(tmp_path, "synthetic", 2, seed=1)
    registry = registry_for(tmp_path, default_precision="int8")
    await registry.load_all()
    try:
        assert registry.entry("synthetic").version == 2
    finally:
        await registry.close()
