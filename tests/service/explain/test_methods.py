"""Every method against a model whose answer is known (tests/support/explain_models.py)."""

from __future__ import annotations

import numpy as np
import pytest

from service.explain import Explainer, ExplainRequest, Method, describe
from service.explain.methods import (
    OCCLUSION_GRID,
    RiseMasks,
    eigen_cam_map,
    grad_cam_map,
    hires_cam_map,
    occlusion_geometry,
)
from tests.support import explain_models as km

pytestmark = pytest.mark.anyio

CASES = [
    ("occlusion", None),
    ("rise", None),
    ("score-cam", "features.4"),
    ("score-cam", "features.1"),
    ("grad-cam", "features.4"),
    ("grad-cam", "features.3"),
    ("hires-cam", "features.4"),
    ("hires-cam", "features.3"),
    ("eigen-cam", "features.4"),
    ("eigen-cam", "features.1"),
]


def mass_inside(saliency: np.ndarray) -> float:
    return float(saliency[km.REGION].sum() / saliency.sum())


@pytest.fixture(scope="module")
def model() -> object:
    proto = km.build()
    return proto, describe("known", km.metadata(proto), proto)


@pytest.mark.parametrize("method, layer", CASES)
async def test_the_map_lies_where_the_target_looks_and_beats_chance(model: tuple, method: str, layer: str | None) -> None:
    proto, described = model
    explainer = Explainer(described, max_passes=2000)
    passes = 1 + 400 + 58 if method == "rise" else None  # RISE's default 1000 masks are not needed here
    plan = explainer.plan(ExplainRequest(method=method, layer=layer, target=0, passes=passes))
    result = await explainer.run(plan, km.image(), km.OrtForward(proto))
    saliency = result.map
    assert saliency.shape == (km.SIZE, km.SIZE) and saliency.dtype == np.float32
    assert saliency.min() >= 0 and saliency.max() == pytest.approx(1.0)
    assert mass_inside(saliency) >= 0.7
    assert result.faithfulness is not None
    assert result.faithfulness.deletion < result.faithfulness.random_deletion
    assert result.faithfulness.insertion > result.faithfulness.deletion
    assert result.target.index == 0 and result.target.label == "square"
    assert result.layer == layer and result.method is Method(method)


async def test_eigen_cam_is_the_same_for_every_target(model: tuple) -> None:
    proto, described = model
    explainer = Explainer(described, max_passes=2000)
    maps = []
    for target in (0, 1):
        plan = explainer.plan(ExplainRequest(method="eigen-cam", target=target, faithfulness=False))
        maps.append((await explainer.run(plan, km.image(), km.OrtForward(proto))).map)
    np.testing.assert_array_equal(maps[0], maps[1])


@pytest.mark.parametrize("method", ["grad-cam", "hires-cam"])
async def test_a_target_with_no_evidence_in_the_image_gets_an_empty_map_said_so(model: tuple, method: str) -> None:
    proto, described = model
    explainer = Explainer(described, max_passes=2000)
    plan = explainer.plan(ExplainRequest(method=method, target="none", faithfulness=False))
    result = await explainer.run(plan, km.image(), km.OrtForward(proto))
    assert not result.map.any()  # class 2's logit is a constant: nothing in the image matters
    assert result.note is not None and result.note.startswith("the map is empty")
    assert ("try hires-cam" in result.note) == (method == "grad-cam")
    measured = await explainer.run(explainer.plan(ExplainRequest(method=method, target="none")), km.image(),
                                   km.OrtForward(proto))
    scores = measured.faithfulness
    assert scores is not None and scores.uniform
    assert not scores.beats_random  # whatever its random tie order scored
    assert scores.note is not None and "chance" in scores.note


async def test_a_map_that_explains_carries_no_note(model: tuple) -> None:
    proto, described = model
    explainer = Explainer(described, max_passes=2000)
    result = await explainer.run(explainer.plan(ExplainRequest(method="hires-cam", target=0)), km.image(),
                                 km.OrtForward(proto))
    assert result.note is None
    assert result.faithfulness is not None and result.faithfulness.beats_random and result.faithfulness.note is None


async def test_rise_is_reproducible_from_its_seed(model: tuple) -> None:
    proto, described = model
    explainer = Explainer(described, max_passes=2000)

    async def run(seed: int) -> np.ndarray:
        plan = explainer.plan(ExplainRequest(method="rise", passes=1 + 64, faithfulness=False, seed=seed))
        return (await explainer.run(plan, km.image(), km.OrtForward(proto))).map

    first, again, other = await run(1), await run(1), await run(2)
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)


def test_rise_masks_are_smooth_binary_grids_kept_half_the_time() -> None:
    masks = RiseMasks.make(400, (28, 28), seed=0).slice(0, 400)
    assert masks.shape == (400, 28, 28)
    assert masks.min() >= 0 and masks.max() <= 1
    assert masks.mean() == pytest.approx(0.5, abs=0.03)
    np.testing.assert_array_equal(RiseMasks.make(400, (28, 28), seed=0).slice(10, 20), masks[10:20])


@pytest.mark.parametrize("size, passes, window, positions", [
    ((28, 28), 169, (4, 4), 169),       # the default: a 13 x 13 grid of side/7 windows
    ((224, 224), 169, (32, 32), 169),
    ((28, 28), 16, (7, 7), 16),          # a small budget: a coarser grid of wider windows
    ((28, 28), 4, (14, 14), 4),
    ((28, 28), 10_000, (4, 4), 625),     # a large one: down to a 1 px stride
])
def test_occlusion_windows_cover_the_image_within_the_budget(size: tuple[int, int], passes: int,
                                                              window: tuple[int, int], positions: int) -> None:
    (wh, ww), (rows, cols) = occlusion_geometry(size, passes)
    assert (wh, ww) == window and len(rows) * len(cols) == positions <= passes
    covered = np.zeros(size, dtype=bool)
    for r in rows:
        for c in cols:
            covered[r : r + wh, c : c + ww] = True
    assert covered.all()
    assert OCCLUSION_GRID**2 == 169


async def test_score_cam_scores_the_most_active_channels_when_the_budget_is_short(model: tuple) -> None:
    proto, described = model
    explainer = Explainer(described, max_passes=2000)
    plan = explainer.plan(ExplainRequest(method="score-cam", layer="features.4", passes=1 + 1 + 58))
    result = await explainer.run(plan, km.image(), km.OrtForward(proto))
    assert result.parameters == {"channels_scored": 1, "channels": 2}
    assert mass_inside(result.map) >= 0.7  # channel 0 (the bright square) fires most


def test_grad_cam_weighs_channels_by_the_mean_gradient_and_hires_cam_each_position() -> None:
    rng = np.random.default_rng(0)
    acts = rng.random((3, 4, 4)).astype(np.float32)
    varying = rng.normal(size=acts.shape).astype(np.float32)
    np.testing.assert_allclose(grad_cam_map(acts, varying),
                               np.tensordot(varying.mean(axis=(1, 2)), acts, axes=1), rtol=1e-5)
    np.testing.assert_allclose(hires_cam_map(acts, varying), (varying * acts).sum(axis=0), rtol=1e-5)
    # Where the gradient is the same at every position (a pooling head) the two agree.
    pooled = np.broadcast_to(np.array([1.0, -2.0, 0.5], np.float32)[:, None, None], acts.shape)
    np.testing.assert_allclose(grad_cam_map(acts, pooled), hires_cam_map(acts, pooled), rtol=1e-5)


async def test_on_a_pooling_head_grad_cam_and_hires_cam_draw_the_same_map() -> None:
    proto = km.build(head="gap")
    explainer = Explainer(describe("known", km.metadata(proto), proto), max_passes=100)
    maps = {}
    for method in ("grad-cam", "hires-cam"):
        plan = explainer.plan(ExplainRequest(method=method, target=0, faithfulness=False))
        result = await explainer.run(plan, km.image(), km.OrtForward(proto))
        assert result.parameters["head"] == ["GlobalAveragePool", "Flatten", "Gemm"]
        assert mass_inside(result.map) >= 0.7
        maps[method] = result.map
    assert maps["grad-cam"].max() == pytest.approx(1.0)
    np.testing.assert_allclose(maps["grad-cam"], maps["hires-cam"], atol=1e-6)


def test_eigen_cam_follows_the_first_component_with_the_activations_sign() -> None:
    acts = np.zeros((2, 4, 4), dtype=np.float32)
    acts[0, :2, :2] = 3.0  # one strong blob
    acts[1, 2:, 2:] = 0.5  # and a weak one in another channel
    cam = eigen_cam_map(acts)
    assert cam[:2, :2].min() > 0 and cam[:2, :2].min() > cam[2:, 2:].max()
    np.testing.assert_array_equal(eigen_cam_map(np.ones((2, 3, 3), np.float32)), np.zeros((3, 3)))
