"""The engine's contract: plans and their errors, pass accounting, cancellation, the catalogue."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import numpy as np
import pytest
from pydantic import ValidationError

from service.errors import ModelFailed, NotFound, Unprocessable
from service.explain import Explainer, ExplainRequest, Method, default_method, describe, method_cost
from service.explain import faithfulness as faith
from service.settings import Settings
from tests.support import explain_models as km

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
def proto() -> object:
    return km.build()


@pytest.fixture(scope="module")
def explainer(proto: object) -> Explainer:
    return Explainer(describe("known", km.metadata(proto), proto), max_passes=1000, batch_size=8)


# ---- pass accounting -------------------------------------------------------------------

@pytest.mark.parametrize("method, own", [
    ("occlusion", 169), ("rise", 1000 - 1 - 58), ("score-cam", 2), ("grad-cam", 0), ("hires-cam", 0),
    ("eigen-cam", 0),
])
async def test_every_pass_is_counted_and_the_budget_holds(explainer: Explainer, proto: object,
                                                          method: str, own: int) -> None:
    plan = explainer.plan(ExplainRequest(method=method))
    forward = km.OrtForward(proto)
    result = await explainer.run(plan, km.image(), forward)
    assert result.forward_passes == forward.images == 1 + own + faith.PASSES == plan.budget
    assert result.budget == plan.budget <= explainer.max_passes
    assert all(n <= explainer.batch_size for n, _ in forward.calls)
    # Only the first pass asks for a layer, and only for the CAM family.
    assert forward.calls[0] == (1, ("logits", "features.4") if Method(method).uses_layer else ("logits",))
    assert all(outputs == ("logits",) for _, outputs in forward.calls[1:])


@pytest.mark.parametrize("method, passes", [
    ("occlusion", 1 + 169), ("rise", 1 + 1000), ("score-cam", 1 + 2), ("grad-cam", 1), ("hires-cam", 1),
    ("eigen-cam", 1),
])
async def test_without_faithfulness_only_the_method_runs(proto: object, method: str, passes: int) -> None:
    explainer = Explainer(describe("known", km.metadata(proto), proto), max_passes=2000)
    plan = explainer.plan(ExplainRequest(method=method, faithfulness=False))
    forward = km.OrtForward(proto)
    result = await explainer.run(plan, km.image(), forward)
    assert result.faithfulness is None
    # score-cam weighs channels by their masked images' scores alone: no baseline pass (issue 21)
    assert result.forward_passes == forward.images == passes == plan.budget


async def test_rise_spends_the_budget_it_is_given(explainer: Explainer, proto: object) -> None:
    plan = explainer.plan(ExplainRequest(method="rise", passes=300))
    result = await explainer.run(plan, km.image(), km.OrtForward(proto))
    assert result.forward_passes == 300
    assert result.parameters["masks"] == 300 - 1 - faith.PASSES


async def test_occlusion_uses_a_coarser_grid_under_a_small_budget(explainer: Explainer, proto: object) -> None:
    plan = explainer.plan(ExplainRequest(method="occlusion", passes=1 + 25 + faith.PASSES))
    result = await explainer.run(plan, km.image(), km.OrtForward(proto))
    assert result.parameters["positions"] == 25 and result.forward_passes == 1 + 25 + faith.PASSES


def test_a_server_limit_below_the_default_cost_shrinks_the_default(proto: object) -> None:
    small = Explainer(describe("known", km.metadata(proto), proto), max_passes=200)
    plan = small.plan(ExplainRequest(method="rise"))
    assert plan.budget == 200 and plan.method_passes == 200 - 1 - faith.PASSES


def test_costs_per_method(explainer: Explainer) -> None:
    model = explainer.model
    assert method_cost(model, Method.OCCLUSION, None).default == 169
    assert method_cost(model, Method.SCORE_CAM, model.layer("features.4")).default == 2
    assert method_cost(model, Method.GRAD_CAM, model.layer("features.4")).maximum == 0


# ---- errors name the valid values --------------------------------------------------------

@pytest.mark.parametrize("request_, error, message", [
    (ExplainRequest(method="lime"), Unprocessable,
     "unknown method 'lime'; valid: occlusion, rise, score-cam, grad-cam, hires-cam, eigen-cam"),
    (ExplainRequest(method="grad-cam", layer="features.9"), NotFound,
     "unknown layer 'features.9'; valid: features.3, features.4 for grad-cam"),
    (ExplainRequest(method="grad-cam", layer="features.1"), Unprocessable,
     r"layer 'features.1' cannot be used with grad-cam: grad-cam is not exact there \(Conv .*\); "
     "valid layers: features.3, features.4"),
    (ExplainRequest(method="score-cam", layer="flat"), Unprocessable,
     "layer 'flat' cannot be used with score-cam: it has no spatial map; valid layers: features.1, features.3, "
     "features.4"),
    (ExplainRequest(method="hires-cam", layer="features.1"), Unprocessable,
     r"layer 'features.1' cannot be used with hires-cam: hires-cam is not exact there \(Conv .*\)"),
    (ExplainRequest(method="occlusion", layer="features.4"), Unprocessable,
     "occlusion perturbs the input and takes no layer; layers are for score-cam, grad-cam, hires-cam, eigen-cam"),
    (ExplainRequest(method="occlusion", layer="conv9"), NotFound,
     "unknown layer 'conv9'; valid: features.1, features.3, features.4, flat"),
    (ExplainRequest(target=3), NotFound,
     r"unknown target 3; valid: a class index 0..2 or a label \('square', 'other', 'none'\)"),
    (ExplainRequest(target=-1), NotFound, "unknown target -1"),
    (ExplainRequest(target="circle"), NotFound, "unknown target 'circle'; valid: a class index 0..2"),
    (ExplainRequest(passes=1001), Unprocessable,
     r"passes=1001 is over this server's limit of 1000 \(CONVSCOPE_MAX_EXPLAIN_PASSES\); valid: 63..1000"),
    (ExplainRequest(method="grad-cam", passes=10), Unprocessable,
     r"passes=10 is too few: method grad-cam needs at least 59 \(1 for the image, 58 for faithfulness\); "
     "valid: 59..1000"),
    (ExplainRequest(method="rise", passes=16, faithfulness=False), Unprocessable, "needs at least 17"),
    (ExplainRequest(seed=-1), Unprocessable, "seed=-1 is not valid"),
])
def test_bad_requests_are_refused_naming_the_valid_values(explainer: Explainer, request_: ExplainRequest,
                                                          error: type, message: str) -> None:
    with pytest.raises(error, match=message):
        explainer.plan(request_)


def test_a_server_limit_below_a_methods_least_cost_is_refused_naming_it(proto: object) -> None:
    tiny = Explainer(describe("known", km.metadata(proto), proto), max_passes=30)
    with pytest.raises(Unprocessable, match=r"needs at least 59 .* limit of 30 \(CONVSCOPE_MAX_EXPLAIN_PASSES\)"):
        tiny.plan(ExplainRequest(method="grad-cam"))
    with pytest.raises(Unprocessable, match=r"limit of 30 \(CONVSCOPE_MAX_EXPLAIN_PASSES\)"):
        tiny.plan(ExplainRequest(method="grad-cam", passes=20))
    assert tiny.plan(ExplainRequest(method="grad-cam", faithfulness=False)).budget == 1


def test_targets_by_index_label_or_number_text(explainer: Explainer) -> None:
    assert explainer.plan(ExplainRequest(target=2)).target == 2
    assert explainer.plan(ExplainRequest(target="other")).target == 1
    assert explainer.plan(ExplainRequest(target="2")).target == 2  # a query string's digits
    assert explainer.plan(ExplainRequest()).target is None  # top-1, once the image is seen


def test_the_limit_is_a_validated_setting() -> None:
    assert Settings().max_explain_passes == 2000
    with pytest.raises(ValidationError):
        Settings(max_explain_passes=0)


# ---- the run itself ----------------------------------------------------------------------

async def test_the_default_target_is_the_top_class(explainer: Explainer, proto: object) -> None:
    result = await explainer.run(explainer.plan(ExplainRequest(method="grad-cam")), km.image(), km.OrtForward(proto))
    assert result.target.index == 0 and result.target.probability == pytest.approx(np.exp(2) / (np.exp(2) + 2))


async def test_cancelling_stops_the_remaining_passes(explainer: Explainer) -> None:
    started = asyncio.Event()
    calls: list[int] = []
    release = asyncio.Event()

    async def slow_forward(batch: np.ndarray, outputs: Sequence[str]) -> list[np.ndarray]:
        calls.append(batch.shape[0])
        if len(calls) == 3:
            started.set()
            await release.wait()  # the third batch is "in the model" when the client leaves
        return [np.zeros((batch.shape[0], 3), np.float32)] + [
            np.ones((batch.shape[0], 2, 8, 8), np.float32) for _ in outputs[1:]
        ]

    task = asyncio.ensure_future(explainer.run(explainer.plan(ExplainRequest(method="occlusion")), km.image(),
                                               slow_forward))
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    release.set()
    await asyncio.sleep(0.05)
    assert len(calls) == 3  # nothing was sent after the cancellation


async def test_a_model_answering_the_wrong_shape_is_a_model_failure(explainer: Explainer) -> None:
    async def broken(batch: np.ndarray, outputs: Sequence[str]) -> list[np.ndarray]:
        return [np.zeros((batch.shape[0], 5), np.float32)]

    with pytest.raises(ModelFailed, match=r"class output has shape \[1, 5\]"):
        await explainer.run(explainer.plan(ExplainRequest(method="occlusion")), km.image(), broken)


async def test_grad_cam_refuses_a_replay_that_disagrees_with_the_model(explainer: Explainer, proto: object) -> None:
    real = km.OrtForward(proto)

    async def shifted(batch: np.ndarray, outputs: Sequence[str]) -> list[np.ndarray]:
        out = await real(batch, outputs)
        return [out[0] + 1.0, *out[1:]]  # logits no longer what the head computes

    with pytest.raises(ModelFailed, match="replay"):
        await explainer.run(explainer.plan(ExplainRequest(method="grad-cam")), km.image(), shifted)


def _shifted(forward: km.OrtForward, relative: float):  # type: ignore[no-untyped-def]
    """The forward, its class scores moved by ``relative`` of the largest."""
    async def shifted(batch: np.ndarray, outputs: Sequence[str]) -> list[np.ndarray]:
        out = await forward(batch, outputs)
        return [out[0] + relative * max(1.0, float(np.abs(out[0]).max())), *out[1:]]
    return shifted


@pytest.mark.parametrize("relative, refused", [(0.0, False), (5e-3, False), (5e-2, True)])
async def test_an_int8_heads_replay_may_differ_by_its_rounding_and_no_more(
        tmp_path_factory: pytest.TempPathFactory, relative: float, refused: bool) -> None:
    """At each QuantizeLinear of an int8 head, onnxruntime's sums and numpy's can round a unit
    to either side of a tie: up to 2.6e-3 of the scores measured (service/explain/methods.py)."""
    import onnx

    from artifact import read_metadata
    from tests.support.artifacts import write_artifact, write_int8

    root = tmp_path_factory.mktemp("int8") / "models"
    write_artifact(root, "synthetic", 1, size=16, classes=3)
    written = write_int8(root)
    proto = onnx.load(str(written / "model.onnx"))
    explainer = Explainer(describe("synthetic", read_metadata(written), proto), max_passes=1000)
    plan = explainer.plan(ExplainRequest(method="grad-cam"))
    head = explainer.model.grad_head(plan.layer.name if plan.layer else "")
    assert head is not None and "QuantizeLinear" in head.ops  # the premise: the head rounds
    run = explainer.run(plan, km.image(), _shifted(km.OrtForward(proto), relative))
    if refused:
        with pytest.raises(ModelFailed, match="replay"):
            await run
    else:
        assert (await run).forward_passes >= 1


async def test_a_float_heads_replay_must_match_to_rounding(explainer: Explainer, proto: object) -> None:
    with pytest.raises(ModelFailed, match="replay"):
        await explainer.run(explainer.plan(ExplainRequest(method="grad-cam")), km.image(),
                            _shifted(km.OrtForward(proto), 5e-3))


async def test_an_image_of_the_wrong_shape_is_a_programming_error(explainer: Explainer, proto: object) -> None:
    with pytest.raises(ValueError, match=r"expected \[1, 1, 16, 16\]"):
        await explainer.run(explainer.plan(ExplainRequest()), np.zeros((1, 3, 16, 16), np.float32),
                            km.OrtForward(proto))


async def test_faithfulness_curves_run_from_the_image_to_the_baseline(explainer: Explainer, proto: object) -> None:
    result = await explainer.run(explainer.plan(ExplainRequest(method="grad-cam")), km.image(), km.OrtForward(proto))
    scores = result.faithfulness
    assert scores is not None and scores.steps == faith.STEPS
    for curve in (scores.deletion_curve, scores.random_deletion_curve):
        assert len(curve) == faith.STEPS + 1 and curve[0] == pytest.approx(result.target.probability)
    assert scores.insertion_curve[-1] == pytest.approx(result.target.probability)
    assert scores.deletion_curve[-1] == pytest.approx(scores.insertion_curve[0])  # both the baseline image
    assert scores.deletion == pytest.approx(faith.area(np.asarray(scores.deletion_curve)))
    assert scores.beats_random


def test_area_is_the_trapezoid_mean() -> None:
    assert faith.area(np.array([1.0, 1.0, 1.0])) == 1.0
    assert faith.area(np.array([1.0, 0.0, 0.0])) == 0.25


def test_ties_are_ranked_in_random_order_not_raster_order() -> None:
    flat = np.zeros((8, 8), np.float32)
    flat[0, 0] = 1.0
    rank = faith.ranking(flat, np.random.default_rng(0)).reshape(8, 8)
    assert rank[0, 0] == 0
    first_row = rank[0, 1:]
    assert first_row.max() > 16  # a raster order would put the whole first row next


# ---- the catalogue -----------------------------------------------------------------------

def test_the_catalogue_lists_each_layers_methods(explainer: Explainer) -> None:
    catalogue = explainer.model.catalogue()
    assert catalogue.default_method is Method.OCCLUSION == default_method(explainer.model)
    assert catalogue.default_layer == "features.4"  # the deepest spatial layer
    assert catalogue.methods == tuple(Method)
    rows = {row.name: row for row in catalogue.layers}
    assert rows["features.1"].methods == (Method.SCORE_CAM, Method.EIGEN_CAM)
    # the reason names the op that stops grad-cam, what would make it work, and where it is offered
    why = rows["features.1"].grad_cam_unavailable or ""
    assert "Conv (" in why and "3x3 convolution" in why and "tap a layer after it" in why, why
    assert why.endswith("(offered at: features.3, features.4)"), why
    assert rows["features.3"].methods == (Method.GRAD_CAM, Method.HIRES_CAM, Method.SCORE_CAM, Method.EIGEN_CAM)
    assert rows["features.4"].grad_cam_unavailable is None
    assert rows["flat"].methods == () and rows["flat"].shape == (128,)


# ---- batch sizing ------------------------------------------------------------------------

def test_batches_follow_the_time_the_forward_takes() -> None:
    from service.explain.passes import Passes

    passes = Passes(km.OrtForward(km.build()), output="logits", classes=3, image_values=256, budget=100,
                    batch_size=16, batch_seconds=0.02)
    assert passes.next_batch() == 16  # nothing measured yet
    passes.record(0.005, 1)
    assert passes.next_batch() == 4
    passes.record(0.020, 4)  # slower now (predictions queued ahead): (5 + 5) / 2 ms per image
    assert passes.next_batch() == 4
    passes.record(0.100, 4)
    assert passes.next_batch() == 1  # never below one image
    passes.record(0.0, 16)  # 15 ms -> 7.5 ms per image
    passes.record(0.0, 16)  # -> 3.75 ms
    assert passes.next_batch() == 5
    unbounded = Passes(km.OrtForward(km.build()), output="logits", classes=3, image_values=256, budget=100,
                       batch_size=16)
    unbounded.record(10.0, 1)
    assert unbounded.next_batch() == 16


async def test_the_batcher_can_size_each_batch(proto: object) -> None:
    asked: list[int] = []

    def batch_images(most: int) -> int:
        asked.append(most)
        return 3

    explainer = Explainer(describe("known", km.metadata(proto), proto), max_passes=1000, batch_size=8,
                          batch_images=batch_images)
    forward = km.OrtForward(proto)
    result = await explainer.run(explainer.plan(ExplainRequest(method="occlusion", faithfulness=False)), km.image(),
                                 forward)
    assert result.forward_passes == 1 + 169
    assert [n for n, _ in forward.calls[1:]] == [3] * 56 + [1]  # asked before each call
    assert asked and set(asked) == {8}


async def test_a_slow_forward_gets_small_batches(proto: object) -> None:
    real = km.OrtForward(proto)
    sizes: list[int] = []

    async def slow(batch: np.ndarray, outputs: Sequence[str]) -> list[np.ndarray]:
        sizes.append(batch.shape[0])
        await asyncio.sleep(0.02 * batch.shape[0])  # 20 ms an image, or more on a busy machine
        return await real(batch, outputs)

    explainer = Explainer(describe("known", km.metadata(proto), proto), max_passes=100, batch_size=16, batch_seconds=0.05)
    plan = explainer.plan(ExplainRequest(method="occlusion", passes=1 + 16, faithfulness=False))
    result = await explainer.run(plan, km.image(), slow)
    assert result.forward_passes == sum(sizes) == 17
    assert max(sizes[1:]) <= 2  # at most 50 ms of model time per call, not all 16 positions at once


def test_the_cam_default_layer_is_the_deepest_block_output_with_a_4x4_map() -> None:
    """On a residual net the CAMs' default is where a block ends (never a conv inside one, half
    of a residual sum), and of those the deepest whose map is at least 4 x 4: at 64 px a
    ResNet's last block is 2 x 2, one blob once upsampled (issue 21)."""
    from service.explain import ExplainableModel, LayerInfo

    def layer(name: str, side: int, group: str | None) -> LayerInfo:
        return LayerInfo(name, (8, side, side) if side else (8,), group=group)

    blocks = ExplainableModel("res", (3, 64, 64), "logits", ("a", "b"), (
        layer("conv1", 32, "conv1"),
        layer("layer1.0.conv1", 16, "layer1.0"), layer("layer1.0", 16, "layer1.0"),
        layer("layer3.0.conv1", 4, "layer3.0"), layer("layer3.0.conv2", 4, "layer3.0"), layer("layer3.0", 4, "layer3.0"),
        layer("layer4.0.conv1", 2, "layer4.0"), layer("layer4.0", 2, "layer4.0"),
        layer("avgpool", 0, "avgpool"),
    ))
    assert blocks.block_outputs() == {"conv1", "layer1.0", "layer3.0", "layer4.0", "avgpool"}
    assert blocks.default_layer(Method.SCORE_CAM) == blocks.default_layer(Method.EIGEN_CAM) == "layer3.0"
    coarse = ExplainableModel("res", (3, 64, 64), "logits", ("a", "b"), blocks.layers[-3:])
    assert coarse.default_layer(Method.SCORE_CAM) == "layer4.0"  # nothing at 4 x 4: the deepest block output
    chain = ExplainableModel("chain", (3, 64, 64), "logits", ("a", "b"), tuple(
        LayerInfo(x.name, x.shape) for x in blocks.layers))  # no blocks: any layer
    assert chain.default_layer(Method.SCORE_CAM) == "layer3.0"
