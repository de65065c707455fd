"""Every method against a model whose answer is known (tests/support/explain_models.py)."""

from __future__ import annotations

import numpy as np
import pytest

from service.explain import Explainer, ExplainRequest, Method, describe
from service.explain.methods import (
    OcclusionGrid,
    RiseMasks,
    eigen_cam_map,
    grad_cam_map,
    hires_cam_map,
    occlusion_window,
)
from service.explain.model import ExplainableModel, LayerInfo
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


@pytest.mark.parametrize("size, stride, window", [
    ((28, 28), 4, (4, 4)),       # TinyVGG's last map: 7 x 7, 4 px apart
    ((224, 224), 32, (32, 32)),  # AlexNet's, a ResNet's: 7 x 7, 32 px apart
    ((64, 64), 32, (16, 16)),    # the zoo at 64 px: a 2 x 2 map, but never over 1/4 of the image
    ((224, 224), 8, (28, 28)),   # a fine last map: never under 1/8 of the image
    ((48, 192), 16, (12, 24)),   # per axis: rows at most 48 / 4, columns at least 192 / 8
    ((28, 28), None, (4, 4)),    # no stride known: 1/7 of the side
])
def test_the_occluder_is_the_deepest_maps_cell_within_an_eighth_to_a_quarter_of_the_image(
        size: tuple[int, int], stride: int | None, window: tuple[int, int]) -> None:
    model = ExplainableModel("m", (1, *size), "logits", ("a", "b"), (
        LayerInfo("early", (4, size[0], size[1]), 3, 1), LayerInfo("last", (4, 2, 2), 99, stride),
        LayerInfo("flat", (8,))))
    assert occlusion_window(model) == window


@pytest.mark.parametrize("size, window, passes, used, positions", [
    ((28, 28), (4, 4), 169, (4, 4), 169),          # the default: half-window stride, 13 x 13
    ((224, 224), (32, 32), 169, (32, 32), 169),
    ((64, 64), (16, 16), 49, (16, 16), 49),         # the zoo's 16 px occluder: 7 x 7
    ((28, 28), (4, 4), 16, (7, 7), 16),             # a small budget: a coarser grid of wider windows
    ((28, 28), (4, 4), 4, (14, 14), 4),
    ((28, 28), (4, 4), 10_000, (4, 4), 625),        # a large one: down to a 1 px stride
])
def test_occlusion_windows_cover_the_image_within_the_budget(size: tuple[int, int], window: tuple[int, int],
                                                              passes: int, used: tuple[int, int],
                                                              positions: int) -> None:
    grid = OcclusionGrid.within(size, window, passes)
    assert grid.window == used and grid.positions == positions <= passes
    covered = np.zeros(size, dtype=bool)
    for r in grid.rows:
        for c in grid.cols:
            covered[r : r + used[0], c : c + used[1]] = True
    assert covered.all()
    if passes == OcclusionGrid.default(size, window).positions:
        assert grid.stride == [window[0] // 2, window[1] // 2]


@pytest.mark.parametrize("size, window", [((224, 224), (16, 16)), ((224, 160), (8, 8)), ((40, 32), (4, 4))])
def test_the_default_grid_leaves_no_pixel_unoccluded(size: tuple[int, int], window: tuple[int, int]) -> None:
    """A small window on a large image: 13 starts per axis spaced wider than the window
    would leave strips no window covers; the windows widen to the spacing instead."""
    grid = OcclusionGrid.default(size, window)
    covered = np.zeros(size, dtype=bool)
    for r in grid.rows:
        for c in grid.cols:
            covered[r : r + grid.window[0], c : c + grid.window[1]] = True
    assert covered.all() and grid.positions <= 13 * 13


async def test_score_cam_scores_the_most_active_channels_when_the_budget_is_short(model: tuple) -> None:
    proto, described = model
    explainer = Explainer(described, max_passes=2000)
    plan = explainer.plan(ExplainRequest(method="score-cam", layer="features.4", passes=1 + 1 + 58))
    result = await explainer.run(plan, km.image(), km.OrtForward(proto))
    assert (result.parameters["channels_scored"], result.parameters["channels"]) == (1, 2)
    assert mass_inside(result.map) >= 0.7  # channel 0 (the bright square) fires most


async def test_score_cam_finds_an_object_whose_parts_alone_score_below_the_blank_image() -> None:
    """Issue 21: Score-CAM returned an empty map on an image the model names with confidence.
    Weighing each channel by the rise of P(target) over the blank baseline image (the
    paper's increase of confidence) makes every weight negative where each channel keeps
    one part of an object and one part alone looks like another class: here P(whole) is
    0.87 for the image, 1/3 for the blank image and 0.21 for either part alone, so the
    weighted sum was negative everywhere. Weighed by P(target) itself, as the authors'
    implementation does, the map covers both parts."""
    proto = km.build_parts()
    explainer = Explainer(describe("parts", km.parts_metadata(proto), proto), max_passes=2000)
    result = await explainer.run(explainer.plan(ExplainRequest(method="score-cam")), km.parts_image(),
                                 km.OrtForward(proto))
    assert result.target.label == "whole" and result.target.probability == pytest.approx(0.867, abs=1e-3)
    assert result.note is None and result.map.max() == pytest.approx(1.0)
    inside = result.map[km.PART_A].sum() + result.map[km.PART_B].sum()
    assert inside / result.map.sum() >= 0.7
    assert result.map[km.PART_A].mean() == pytest.approx(result.map[km.PART_B].mean(), rel=1e-5)  # both parts
    assert result.faithfulness is not None and result.faithfulness.beats_random


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
