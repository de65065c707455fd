"""The inference handler: predictions by output kind, one layer's maps, v2 requests; the
version held for the call and every request checked against it before any work."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from service.codecs.arrays import Encoding, NpyDtype
from service.errors import (
    BadRequest,
    ModelNotReady,
    PayloadTooLarge,
    UnknownLayer,
    UnknownModel,
    UnknownVersion,
)
from service.handlers.inference import select_layers
from service.models.scores import softmax
from tests.support.images import png_bytes
from tests.support.services import HandlerSet

pytestmark = pytest.mark.anyio


def image(value: int = 128) -> bytes:
    return png_bytes(np.full((8, 8), value, dtype=np.uint8))


def raw_logits(root: Path, name: str, version: int, images: list[bytes], handlers: HandlerSet) -> np.ndarray:
    """The graph's class output for these images, by onnxruntime on the file."""
    model = handlers.registry.resolve(name, version)
    from service.inference.preprocessing import decode, preprocess

    batch = np.stack([preprocess(decode(i, max_pixels=10**6), model.spec) for i in images])
    session = ort.InferenceSession(str(root / name / str(version) / "model.onnx"), providers=["CPUExecutionProvider"])
    (logits,) = session.run(["logits"], {"input": batch})
    return logits


async def test_predict_holds_the_newest_version_and_gives_probabilities(handlers: HandlerSet, tmp_path: Path) -> None:
    images = [image(0), image(255)]
    result = await handlers.inference.predict("synthetic", None, images, ["features.2"], Encoding.STATS)
    assert (result.model.name, result.model.version) == ("synthetic", 2) and result.model.digest
    assert np.allclose(result.scores, softmax(raw_logits(tmp_path, "synthetic", 2, images, handlers)))
    assert list(result.maps) == ["features.2"] and result.maps["features.2"].shape == (2, 4, 4, 4)
    assert result.timings.inference > 0
    assert handlers.registry.resolve("synthetic", 2).leases == 0  # given back


@pytest.mark.parametrize("name, undo", [("probs", lambda raw: raw), ("logprobs", np.exp)])
async def test_a_graph_that_gives_probabilities_is_never_softmaxed_again(
        handlers: HandlerSet, tmp_path: Path, name: str, undo: object) -> None:
    result = await handlers.inference.predict(name, None, [image(40)])
    raw = raw_logits(tmp_path, name, 1, [image(40)], handlers)
    assert np.allclose(result.scores, undo(raw))  # type: ignore[operator]
    assert result.kind.value == {"probs": "probabilities", "logprobs": "log_probabilities"}[name]


async def test_the_version_is_held_while_the_call_runs(handlers: HandlerSet) -> None:
    model = handlers.registry.resolve("synthetic", 1)
    admitted = model.batcher.arriving
    seen: list[int] = []

    def arriving(count: int):  # type: ignore[no-untyped-def]
        seen.append(model.leases)
        return admitted(count)

    model.batcher.arriving = arriving  # type: ignore[method-assign]
    await handlers.inference.predict("synthetic", 1, [image()])
    assert seen == [1] and model.leases == 0


async def test_requests_are_checked_against_the_version_before_any_work(handlers: HandlerSet) -> None:
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


async def test_layer_selection_takes_commas_repeats_and_all(handlers: HandlerSet) -> None:
    signature = handlers.registry.resolve("synthetic", 1).signature
    assert select_layers(signature, ["features.2,features.1", "features.2"]) == ["features.2", "features.1"]
    assert select_layers(signature, ["all"]) == ["features.1", "features.2"]


async def test_feature_map_and_infer(handlers: HandlerSet) -> None:
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
