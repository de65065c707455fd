"""The data plane with a fake runtime: the one path through arriving() and the batcher,
the model-fault check. No onnxruntime, no HTTP."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from artifact import InputRecipe
from service.errors import ModelOutputNotFinite
from service.inference.batching import DynamicBatcher
from service.inference.dataplane import DataPlane, ImageInputs, TensorInputs
from service.inference.image_preparation import PreparationOptions
from service.inference.preprocessing import InputSpec
from service.inference.workers import Workers
from service.metrics import Metrics
from service.models.channel_view import ChannelView
from service.models.loader import LoadedVersion
from service.models.repository import ArtifactRef
from service.models.runtime import ModelRuntime
from service.models.signature import LayerSignature, ModelSignature
from tests.support.images import png_bytes

SPEC = InputSpec.from_recipe(InputRecipe.model_validate({"channels": 1, "size": [4, 4], "scale": 1 / 255, "mean": [0.0], "std": [1.0]}))
SIGNATURE = ModelSignature("fake", 1, "input", (1, 4, 4), "logits", ("a", "b"),
                           (LayerSignature("conv", (2, 4, 4)), LayerSignature("pool", (2, 2, 2))))


@dataclass
class FakeRuntime:
    """Logits = [sum of pixels, -sum]; each layer = the input repeated; NaN when told."""

    spec: InputSpec = SPEC
    signature: ModelSignature = SIGNATURE
    name: str = "fake"
    version: int = 1
    layer_names: list[str] = field(default_factory=lambda: ["conv", "pool"])
    filters: dict[str, np.ndarray] = field(default_factory=lambda: {"conv": np.ones((2, 1, 3, 3), np.float32)})
    initial_filters: dict[str, np.ndarray] = field(default_factory=dict)
    poison: bool = False
    batcher: DynamicBatcher | None = None
    trained_filters = ModelRuntime.trained_filters  # the real lookup, on these fields

    def run(self, batch: np.ndarray, outputs: tuple[str, ...]) -> list[np.ndarray]:
        total = batch.reshape(batch.shape[0], -1).sum(axis=1)
        values = {"logits": np.stack([total, -total], axis=1).astype(np.float32),
                  "conv": np.repeat(batch, 2, axis=1), "pool": np.repeat(batch[:, :, ::2, ::2], 2, axis=1)}
        if self.poison:
            values["pool"] = np.full_like(values["pool"], np.inf)
        return [values[o] for o in outputs]


@pytest.fixture
async def plane(tmp_path: Path) -> AsyncIterator[tuple[DataPlane, LoadedVersion, FakeRuntime]]:
    runtime = FakeRuntime()
    batcher = DynamicBatcher(runtime, max_batch_size=8, max_queue_delay_ms=0, max_queue_size=16)
    batcher.start()
    served = LoadedVersion(ArtifactRef("fake", 1, tmp_path), runtime, batcher,  # type: ignore[arg-type]
                           ChannelView("fake", 1, None, None))
    workers = Workers(4)
    data_plane = DataPlane(PreparationOptions(), workers, Metrics())
    yield data_plane, served, runtime
    await batcher.stop()
    workers.close()


def image(value: int) -> bytes:
    return png_bytes(np.full((4, 4), value, dtype=np.uint8))


@pytest.mark.anyio
async def test_images_run_with_their_outputs_and_timings(plane: Any) -> None:
    data_plane, model, _ = plane
    result = await data_plane.run(model, ImageInputs([image(255), image(0)]), ("logits", "pool"))
    assert list(result.outputs) == ["logits", "pool"]
    assert result.outputs["logits"][:, 0].tolist() == pytest.approx([16.0, 0.0])
    assert result.outputs["pool"].shape == (2, 2, 2, 2)
    assert result.timings.decode > 0 and result.timings.inference > 0


@pytest.mark.anyio
async def test_a_request_waiting_for_the_decode_budget_is_not_yet_arriving(plane: Any) -> None:
    data_plane, model, _ = plane
    budget = data_plane.images.budget
    assert budget.reserve(budget.capacity)  # every byte held by other requests' decodes
    pending = asyncio.ensure_future(data_plane.run(model, ImageInputs([image(3)]), ("logits",)))
    await asyncio.sleep(0.05)
    # A batch may wait for images being decoded; none is, this one only waits for memory.
    assert not pending.done() and model.batcher._arriving == 0
    budget.release(budget.capacity)
    result = await asyncio.wait_for(pending, 10)
    assert result.outputs["logits"].shape == (1, 2) and budget.in_flight == 0


@pytest.mark.anyio
async def test_tensors_skip_decoding(plane: Any) -> None:
    data_plane, model, _ = plane
    result = await data_plane.run(model, TensorInputs(np.ones((3, 1, 4, 4), np.float32)), ("logits",))
    assert result.outputs["logits"][:, 0].tolist() == [16.0] * 3 and result.timings.decode == 0


@pytest.mark.anyio
async def test_a_non_finite_output_is_the_models_fault(plane: Any) -> None:
    data_plane, model, runtime = plane
    runtime.poison = True
    with pytest.raises(ModelOutputNotFinite, match="model fake version 1 produced NaN or infinite values in pool"):
        await data_plane.run(model, ImageInputs([image(1)]), ("logits", "pool"))
    assert (await data_plane.run(model, ImageInputs([image(1)]), ("logits",))).outputs["logits"].shape == (1, 2)


