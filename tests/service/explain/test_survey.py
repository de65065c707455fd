"""Measuring every method on a model (service/explain/survey.py), the default chosen from the
measurements, and what the catalogue makes of a recorded measurement."""

from __future__ import annotations

import itertools

import pytest

from artifact import ExplanationsRecord, MethodMeasurement
from service.errors import ModelFailed
from service.explain import Explainer, Method, default_method, describe, survey
from tests.support import explain_models as km

pytestmark = pytest.mark.anyio


def measured(method: str, wins: int, images: int = 30, seconds: float = 0.1, deletion: float = 0.2,
             passes: int = 59) -> MethodMeasurement:
    return MethodMeasurement(method=method, layer=None, images=images, beats_random=wins, share=wins / images,
                             passes=passes, median_seconds=seconds, deletion=deletion, random_deletion=0.5)


def record(*methods: MethodMeasurement, default: str | None = None) -> ExplanationsRecord:
    chosen, reason = survey.choose(methods)
    return ExplanationsRecord(images=30, seconds=1.0, methods=list(methods), default_method=default or chosen,
                              reason=reason)


# ---- the choice ----------------------------------------------------------------------------

def test_of_the_methods_that_hold_within_the_time_the_most_faithful_is_chosen() -> None:
    method, why = survey.choose([
        measured("occlusion", 30, seconds=0.9, deletion=0.08, passes=228),
        measured("hires-cam", 29, seconds=0.1, deletion=0.30),
        measured("rise", 30, seconds=4.0, deletion=0.05, passes=1059),  # more faithful, but over 1.5 s
        measured("eigen-cam", 20, seconds=0.1, deletion=0.10),  # faithful on average, holds on 67% only
    ])
    assert method == "occlusion"
    assert why.startswith("occlusion beat a random map on 30 of 30 held-out images (100%")
    assert "the lowest deletion area of the 2 methods that beat it on at least 90%" in why and "1.5 s" in why


def test_where_none_is_fast_enough_the_fastest_that_holds_is_chosen() -> None:
    method, why = survey.choose([measured("occlusion", 30, seconds=2.0, deletion=0.1),
                                 measured("rise", 30, seconds=9.0, deletion=0.05),
                                 measured("grad-cam", 10, seconds=0.2)])
    assert method == "occlusion" and "the fastest of the methods that beat it on at least 90%" in why


def test_where_none_holds_the_one_that_beats_chance_most_often_is_chosen() -> None:
    method, why = survey.choose([measured("occlusion", 20, seconds=0.5), measured("score-cam", 25, seconds=2.0),
                                 measured("rise", 25, seconds=9.0)])
    assert method == "score-cam"  # ties on the share: the faster
    assert "none beat it on 90% of the images" in why


# ---- measuring -----------------------------------------------------------------------------

async def test_every_method_is_measured_on_the_images_with_its_default_settings() -> None:
    proto = km.build()
    explainer = Explainer(describe("known", km.metadata(proto), proto), max_passes=2000)
    images = [km.image(), km.image()[:, :, ::-1, :].copy(), km.image()[:, :, :, ::-1].copy()]
    seen: list[tuple[str, int, int]] = []
    result = await survey.measure(explainer, images, km.OrtForward(proto), survey.SurveyLimits(images=2),
                                  progress=lambda m, n, of: seen.append((m, n, of)))
    by_method = {m.method: m for m in result.methods}
    assert set(by_method) == {m.value for m in Method}
    assert [m.method for m in result.methods][:3] == ["grad-cam", "hires-cam", "eigen-cam"]  # cheapest first
    for m in result.methods:
        assert m.images == 2 and 0 <= m.beats_random <= 2 and m.share == m.beats_random / 2
        assert m.median_seconds >= 0 and m.deletion is not None and m.random_deletion is not None
    assert by_method["occlusion"].passes == 1 + 169 + 58 and by_method["occlusion"].layer is None
    assert by_method["score-cam"].layer == "features.4" and by_method["score-cam"].passes == 1 + 2 + 58
    assert result.images == 2 and result.default_method in by_method
    assert result.reason == survey.choose(result.methods, result.load_average, result.cpus)[1]
    assert len(seen) == 6 * 2 and seen[-1][1:] == (2, 2)


async def test_measuring_stops_when_its_time_is_spent_but_tries_each_method_once() -> None:
    proto = km.build()
    explainer = Explainer(describe("known", km.metadata(proto), proto), max_passes=2000)
    ticks = itertools.count()  # a clock that moves one second per look

    result = await survey.measure(explainer, [km.image()] * 5, km.OrtForward(proto),
                                  survey.SurveyLimits(images=5, seconds=3.0), clock=lambda: float(next(ticks)))
    assert len(result.methods) == 6
    assert all(m.images == 1 for m in result.methods)  # out of time after the first image of each


async def test_a_method_that_fails_on_an_image_counts_it_and_the_others_are_still_measured() -> None:
    """A failure the service would answer with an error (a grad-cam replay that disagrees with
    an int8 model's output) is that image's map not beating a random one; the export goes on."""
    proto = km.build()
    explainer = Explainer(describe("known", km.metadata(proto), proto), max_passes=2000)
    run = explainer.run
    calls = itertools.count()

    async def failing_grad_cam(plan, image, forward):  # type: ignore[no-untyped-def]
        if plan.method is Method.GRAD_CAM and next(calls) != 1:
            raise ModelFailed("grad-cam's replay of the layers after features.4 disagrees with the model's output")
        return await run(plan, image, forward)

    explainer.run = failing_grad_cam  # type: ignore[method-assign]
    result = await survey.measure(explainer, [km.image()] * 3, km.OrtForward(proto), survey.SurveyLimits(images=3))
    by_method = {m.method: m for m in result.methods}
    grad_cam = by_method["grad-cam"]
    assert (grad_cam.images, grad_cam.failed) == (3, 2) and grad_cam.beats_random <= 1
    assert grad_cam.deletion is not None  # from the one image it explained
    assert all(m.failed == 0 and m.images == 3 for m in result.methods if m.method != "grad-cam")


def test_a_method_that_failed_on_every_image_is_said_so_and_not_chosen_over_one_that_ran() -> None:
    failed = MethodMeasurement(method="grad-cam", layer="features.4", images=30, beats_random=0, share=0.0, passes=0,
                               median_seconds=0.01, failed=30, deletion=None, random_deletion=None)
    weak = measured("eigen-cam", 0, seconds=0.2)
    method, why = survey.choose([failed, weak])
    assert method == "eigen-cam"
    method, why = survey.choose([failed])
    assert method == "grad-cam" and "no map to score, failed on 30" in why


# ---- what the service makes of a recorded measurement ---------------------------------------

def test_the_default_comes_from_the_measurements_and_weak_methods_are_not_recommended() -> None:
    proto = km.build()
    measurements = record(measured("hires-cam", 30, deletion=0.3), measured("grad-cam", 3),
                          measured("eigen-cam", 24), measured("occlusion", 28, seconds=0.5, deletion=0.1))
    metadata = km.metadata(proto).model_copy(update={"explanations": measurements})
    model = describe("known", metadata, proto)
    assert default_method(model) is Method.OCCLUSION  # 28 of 30 hold; the lowest deletion within 1.5 s
    catalogue = model.catalogue()
    assert catalogue.default_method is Method.OCCLUSION and catalogue.measured == measurements
    assert catalogue.default_reason.startswith("measured at export on 30 held-out images: occlusion beat a random "
                                               "map on 28 of 30")
    shy = {n.method: n for n in catalogue.not_recommended}
    assert set(shy) == {Method.GRAD_CAM}  # 3 of 30; eigen-cam's 24 of 30 is exactly 80%: recommended
    assert shy[Method.GRAD_CAM].share == pytest.approx(0.1) and shy[Method.GRAD_CAM].images == 30
    assert "3 of 30 held-out images (10%)" in shy[Method.GRAD_CAM].why

    hires = metadata.model_copy(update={"explanations": record(measured("hires-cam", 30), default="hires-cam")})
    assert describe("known", hires, proto).catalogue().default_method is Method.HIRES_CAM


def test_without_measurements_or_with_a_default_the_model_cannot_run_occlusion_is_the_default() -> None:
    proto = km.build()
    old = describe("known", km.metadata(proto), proto)
    assert default_method(old) is Method.OCCLUSION
    assert old.catalogue().not_recommended == () and old.catalogue().measured is None
    assert old.catalogue().default_reason.startswith("not measured")
    # a record naming a method this model does not allow (no exact head anywhere here)
    strange = km.metadata(proto).model_copy(update={"layers": km.metadata(proto).layers[:1], "explanations": record(
        measured("grad-cam", 30), default="grad-cam")})
    assert default_method(describe("known", strange, proto)) is Method.OCCLUSION


def test_on_a_loaded_machine_the_time_limit_grows_with_the_load() -> None:
    assert survey.time_limit(None, None) == survey.time_limit(1.0, 2) == survey.FAST_SECONDS
    assert survey.time_limit(8.0, 2) == pytest.approx(4 * survey.FAST_SECONDS)
    methods = [measured("occlusion", 30, seconds=2.0, deletion=0.1), measured("score-cam", 29, seconds=1.4)]
    assert survey.choose(methods)[0] == "score-cam"  # occlusion's 2 s is over 1.5 s on an idle machine
    method, why = survey.choose(methods, load_average=8.0, cpus=2)
    assert method == "occlusion" and "(6.0 s at this machine's load, 8 on 2 CPUs)" in why
