"""Each handler on its own, over a registry of synthetic artifacts: it holds the version for
the call, checks the request against it, and returns a typed result. No HTTP."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from service.codecs.arrays import Encoding, NpyDtype
from service.errors import (
    BadRequest,
    ModelNotReady,
    NoFilters,
    NotFound,
    PayloadTooLarge,
    UnknownLayer,
    UnknownModel,
    UnknownVersion,
)
from service.explain import ExplainRequest
from service.handlers.explanation import ExplanationHandler
from service.handlers.inference import InferenceHandler, select_layers
from service.handlers.introspection import FilterState, IntrospectionHandler
from service.handlers.repository import RepositoryHandler
from service.inference.dataplane import DataPlane
from service.inference.workers import Workers
from service.metrics import Metrics
from service.models.channel_view import NotComputed
from service.models.registry import ModelRegistry, ModelState
from service.models.scores import softmax
from tests.service.conftest import png_bytes
from tests.service.synthetic import write_artifact
from tests.support.services import options_for, registry_for

pytestmark = pytest.mark.anyio


@dataclass
class Handlers:
    registry: ModelRegistry
    inference: InferenceHandler
    explanation: ExplanationHandler
    introspection: IntrospectionHandler
    repository: RepositoryHandler


@pytest.fixture
async def handlers(tmp_path: Path) -> AsyncIterator[Handlers]:
    write_artifact(tmp_path, "synthetic", 1, seed=0)
    write_artifact(tmp_path, "synthetic", 2, seed=1, initial_weights=False, views=True)
    write_artifact(tmp_path, "probs", 1, seed=2, output_kind="probabilities")
    write_artifact(tmp_path, "logprobs", 1, seed=2, output_kind="log_probabilities")
    (tmp_path / "synthetic" / "3").mkdir()  # no metadata: failed
    settings = {"max_images_per_request": 4, "max_feature_map_bytes": 4096}
    options = options_for(tmp_path, **settings)
    registry = registry_for(tmp_path, **settings)
    workers = Workers(2)
    plane = DataPlane(options.preparation, workers, Metrics())
    await registry.load_all()
    yield Handlers(registry, InferenceHandler(registry, plane, workers, options.limits),
                   ExplanationHandler(registry, plane), IntrospectionHandler(registry), RepositoryHandler(registry))
    await registry.close()
    workers.close()


def image(value: int = 128) -> bytes:
    return png_bytes(np.full((8, 8), value, dtype=np.uint8))


def raw_logits(root: Path, name: str, version: int, images: list[bytes], handlers: Handlers) -> np.ndarray:
    """The graph's class output for these images, by onnxruntime on the file."""
    model = handlers.registry.resolve(name, version)
    from service.inference.preprocessing import decode, preprocess

    batch = np.stack([preprocess(decode(i, max_pixels=10**6), model.spec) for i in images])
    session = ort.InferenceSession(str(root / name / str(version) / "model.onnx"), providers=["CPUExecutionProvider"])
    (logits,) = session.run(["logits"], {"input": batch})
    return logits


# -- inference --------------------------------------------------------------------------------

async def test_predict_holds_the_newest_version_and_gives_probabilities(handlers: Handlers, tmp_path: Path) -> None:
    images = [image(0), image(255)]
    result = await handlers.inference.predict("synthetic", None, images, ["features.2"], Encoding.STATS)
    assert (result.model.name, result.model.version) == ("synthetic", 2) and result.model.digest
    assert np.allclose(result.scores, softmax(raw_logits(tmp_path, "synthetic", 2, images, handlers)))
    assert list(result.maps) == ["features.2"] and result.maps["features.2"].shape == (2, 4, 4, 4)
    assert result.timings.inference > 0
    assert handlers.registry.resolve("synthetic", 2).leases == 0  # given back


@pytest.mark.parametrize("name, undo", [("probs", lambda raw: raw), ("logprobs", np.exp)])
async def test_a_graph_that_gives_probabilities_is_never_softmaxed_again(
        handlers: Handlers, tmp_path: Path, name: str, undo: object) -> None:
    result = await handlers.inference.predict(name, None, [image(40)])
    raw = raw_logits(tmp_path, name, 1, [image(40)], handlers)
    assert np.allclose(result.scores, undo(raw))  # type: ignore[operator]
    assert result.kind.value == {"probs": "probabilities", "logprobs": "log_probabilities"}[name]


async def test_the_version_is_held_while_the_call_runs(handlers: Handlers) -> None:
    model = handlers.registry.resolve("synthetic", 1)
    admitted = model.batcher.arriving
    seen: list[int] = []

    def arriving(count: int):  # type: ignore[no-untyped-def]
        seen.append(model.leases)
        return admitted(count)

    model.batcher.arriving = arriving  # type: ignore[method-assign]
    await handlers.inference.predict("synthetic", 1, [image()])
    assert seen == [1] and model.leases == 0


async def test_requests_are_checked_against_the_version_before_any_work(handlers: Handlers) -> None:
    with pytest.raises(UnknownLayer, match="unknown layer 'fc'; valid: features.1, features.2"):
        await handlers.inference.predict("synthetic", 1, [image()], ["fc"])
    with pytest.raises(BadRequest, match="holds no image"):
        await handlers.inference.predict("synthetic", 1, [])
    with pytest.raises(PayloadTooLarge, match="5 images in one request; the limit is 4"):
        await handlers.inference.predict("synthetic", 1, [image()] * 5)
    with pytest.raises(PayloadTooLarge, match="over the budget of 4096 bytes"):
        await handlers.inference.predict("synthetic", 1, [image()] * 4, ["all"], Encoding.JSON, NpyDtype.FLOAT32)
    with pytest.raises(UnknownModel, match="unknown model 'nope'; valid: logprobs, probs, synthetic"):
        await handlers.inference.predict("nope", None, [image()])
    with pytest.raises(UnknownVersion, match="model synthetic has no version 9; valid: 1, 2, 3"):
        await handlers.inference.predict("synthetic", 9, [image()])
    with pytest.raises(ModelNotReady, match="model synthetic version 3 is failed"):
        await handlers.inference.predict("synthetic", 3, [image()])


async def test_layer_selection_takes_commas_repeats_and_all(handlers: Handlers) -> None:
    signature = handlers.registry.resolve("synthetic", 1).signature
    assert select_layers(signature, ["features.2,features.1", "features.2"]) == ["features.2", "features.1"]
    assert select_layers(signature, ["all"]) == ["features.1", "features.2"]


async def test_feature_map_and_infer(handlers: Handlers) -> None:
    one = await handlers.inference.feature_map("synthetic", 1, "features.1", image())
    assert one.values.shape == (4, 8, 8) and one.layer == "features.1"
    body = json.dumps({"inputs": [{"name": "input", "shape": [2, 1, 8, 8], "datatype": "FP32",
                                   "data": [0.5] * 128}], "outputs": [{"name": "logits"}]}).encode()
    done = await handlers.inference.infer("synthetic", 2, body, None, None)
    assert done.outputs["logits"].shape == (2, 3) and done.model.version == 2
    too_many = json.dumps({"inputs": [{"name": "input", "shape": [5, 1, 8, 8], "datatype": "FP32",
                                       "data": [0.5] * 320}]}).encode()
    with pytest.raises(PayloadTooLarge, match="5 images in one request; the limit is 4"):
        await handlers.inference.infer("synthetic", 2, too_many, None, None)


# -- explanation ------------------------------------------------------------------------------

async def test_explain_returns_the_map_with_the_recipe_to_draw_it(handlers: Handlers) -> None:
    done = await handlers.explanation.explain("synthetic", 1, image(200),
                                              ExplainRequest(method="grad-cam", faithfulness=False))
    assert done.model.version == 1 and done.result.explanation.map.shape == (8, 8)
    assert done.spec.channels == 1
    with pytest.raises(NotFound, match="unknown layer 'nope'; valid: features.1, features.2 for grad-cam"):
        await handlers.explanation.explain("synthetic", 1, image(), ExplainRequest(method="grad-cam", layer="nope"))
    with pytest.raises(UnknownVersion, match="valid: 1, 2, 3"):
        await handlers.explanation.explain("synthetic", 9, image(), ExplainRequest())


# -- introspection ----------------------------------------------------------------------------

async def test_describe_and_layers(handlers: Handlers) -> None:
    described = handlers.introspection.describe("synthetic", None)
    assert described.model.version == 2 and described.available_versions == [1, 2, 3]
    assert described.metadata.layer_names == ["features.1", "features.2"] and described.provider
    catalogue = handlers.introspection.layers("synthetic", 1)
    assert [layer.name for layer in catalogue.layers] == ["features.1", "features.2"]
    assert catalogue.with_filters == {"features.1"} and catalogue.explanations is not None


async def test_filters_and_one_channels_filter(handlers: Handlers) -> None:
    trained = handlers.introspection.filters("synthetic", 1, "features.1")
    assert trained.weights.shape == (4, 1, 3, 3)
    initial = handlers.introspection.filters("synthetic", 1, "features.1", FilterState.INITIAL)
    assert not np.array_equal(initial.weights, trained.weights)
    with pytest.raises(NoFilters, match="layers with filters: features.1"):
        handlers.introspection.filters("synthetic", 1, "features.2")
    with pytest.raises(NotFound, match="no record of its filters before training"):
        handlers.introspection.filters("synthetic", 2, "features.1", FilterState.INITIAL)
    one = handlers.introspection.channel_filter("synthetic", 1, "features.1", 3)
    assert one.trained.shape == (1, 3, 3) and one.reads_image and one.conv == "conv"
    with pytest.raises(NotFound, match="has 4 channels; valid: 0..3, not 4"):
        handlers.introspection.channel_filter("synthetic", 1, "features.1", 4)


async def test_channels_and_samples_where_the_version_has_them(handlers: Handlers) -> None:
    top = handlers.introspection.channel("synthetic", 2, "features.1", 0)
    assert top.images == 40 and len(top.top) == 4
    sheet = handlers.introspection.top_sheet("synthetic", 2, "features.1", 0)
    assert sheet.make().startswith(b"\x89PNG") and sheet.make() is sheet.make()  # drawn once
    assert handlers.introspection.top_image("synthetic", 2, "features.1", 0, 0).make().startswith(b"\x89PNG")
    assert handlers.introspection.samples("synthetic", 2).labels == ["class_0"] * 3 + ["class_1"] * 3 + ["class_2"] * 3
    with pytest.raises(NotComputed, match="has no channel view"):
        handlers.introspection.channel("synthetic", 1, "features.1", 0)


# -- repository -------------------------------------------------------------------------------

async def test_index_readiness_and_unload(handlers: Handlers) -> None:
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
