"""Which explanation method holds on a model: every method measured on held-out images, and
the default chosen from the measurements.

The export stage runs this when it has held-out images (a training export, `import
--data-dir`, `channel-view --data-dir`) and stores the result in the artifact
(``artifact.ExplanationsRecord``); the service then takes its default method from it and
lists the methods that beat a random map too rarely as not recommended for that model.
The benchmark (benchmarks/explain_zoo.py) runs the same measurement with more time.

Each method runs as a request without parameters gets it (its default cost and layer,
faithfulness on), one image at a time, on up to ``images`` images; the whole measurement
is bounded in time: the methods run cheapest first, each until its share of the time left
is spent (at least one image each), so the dearer ones get what the cheap ones leave.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from artifact import ExplanationsRecord, MethodMeasurement
from service.errors import ModelFailed
from service.explain.engine import Explainer, ExplainRequest, method_cost
from service.explain.model import Method
from service.explain.passes import Forward

# A default must beat a random map on at least this share of the images (issue 21's target);
# below RECOMMENDED (service/explain/model.py) a method is listed as not recommended.
HOLDS = 0.9
# A default's median time at most this, where a method that holds allows it.
FAST_SECONDS = 1.5
DEFAULT_IMAGES = 30
DEFAULT_SECONDS = 60.0

Progress = Callable[[str, int, int], None]
"""Told (method, images done, images offered) after each image."""


@dataclass(frozen=True)
class SurveyLimits:
    images: int = DEFAULT_IMAGES  # held-out images each method may explain
    seconds: float = DEFAULT_SECONDS  # the whole measurement, all methods (at least one image each)


def order(explainer: Explainer) -> list[Method]:
    """The model's methods, cheapest first (by their default forward passes)."""
    model = explainer.model

    def cost(method: Method) -> int:
        layer = model.layer(model.default_layer(method) or "") if method.uses_layer else None
        return method_cost(model, method, layer).default

    return sorted(model.methods(), key=lambda m: (cost(m), list(Method).index(m)))


async def measure(explainer: Explainer, images: Sequence[np.ndarray], forward: Forward,
                  limits: SurveyLimits = SurveyLimits(), progress: Progress | None = None,
                  clock: Callable[[], float] = time.perf_counter,
                  only: Sequence[Method] | None = None) -> ExplanationsRecord:
    """Every method the model allows (or those of ``only`` it allows) on ``images`` (each
    [1, C, H, W], preprocessed), within ``limits``; the record, with the default chosen
    (``choose``)."""
    images = list(images)[: limits.images]
    if not images:
        raise ValueError("measuring explanations needs at least one image")
    load = _load_average()
    started = clock()
    deadline = started + limits.seconds
    methods = [m for m in order(explainer) if only is None or m in only]
    measured = []
    for i, method in enumerate(methods):
        stop_at = clock() + max(0.0, deadline - clock()) / (len(methods) - i)
        measured.append(await _measure_one(explainer, method, images, forward, stop_at, progress, clock))
    cpus = os.cpu_count()
    default, reason = choose(measured, load, cpus)
    return ExplanationsRecord(images=len(images), seconds=round(clock() - started, 3), cpus=cpus,
                              load_average=load, methods=measured, default_method=default, reason=reason)


async def _measure_one(explainer: Explainer, method: Method, images: list[np.ndarray], forward: Forward,
                       stop_at: float, progress: Progress | None, clock: Callable[[], float]) -> MethodMeasurement:
    plan = explainer.plan(ExplainRequest(method=method.value))
    seconds, wins, passes, deletion, chance, failed = [], 0, 0, [], [], 0
    for image in images:
        start = clock()
        try:
            result = await explainer.run(plan, image, forward)
        except ModelFailed:
            # The service answers this image with that error: the method counts it as a map
            # that did not beat a random one, and the export goes on to the other methods.
            result = None
            failed += 1
        seconds.append(clock() - start)
        if result is not None:
            scores = result.faithfulness
            assert scores is not None  # the plan asks for faithfulness
            wins += scores.beats_random
            passes = max(passes, result.forward_passes)
            deletion.append(scores.deletion)
            chance.append(scores.random_deletion)
        if progress is not None:
            progress(method.value, len(seconds), len(images))
        if clock() >= stop_at:
            break
    done = len(seconds)
    return MethodMeasurement(
        method=method.value, layer=plan.layer.name if plan.layer is not None else None, images=done,
        beats_random=wins, share=round(wins / done, 4), passes=passes,
        median_seconds=round(statistics.median(seconds), 4), failed=failed,
        deletion=round(float(np.mean(deletion)), 4) if deletion else None,
        random_deletion=round(float(np.mean(chance)), 4) if chance else None)


def time_limit(load_average: float | None, cpus: int | None) -> float:
    """FAST_SECONDS on an idle machine; on a loaded one, as much more as the load exceeds its
    CPUs (a machine with a load of 8 on 2 CPUs runs each pass about 4 times slower), so the
    choice does not turn on how busy the measuring machine was."""
    if not load_average or not cpus:
        return FAST_SECONDS
    return FAST_SECONDS * max(1.0, load_average / cpus)


def choose(measured: Sequence[MethodMeasurement], load_average: float | None = None,
           cpus: int | None = None) -> tuple[str, str]:
    """The default method and why, from the measurements.

    The methods whose map beat a random map on at least HOLDS of the images hold; of those,
    the ones within FAST_SECONDS median (``time_limit``: more on a loaded machine; else the
    fastest one that holds); of those, the one whose maps point at the evidence most
    sharply: the lowest mean deletion area (ties: the faster). Where no method holds, the
    one that beat chance most often (ties: the faster).
    """
    if not measured:
        raise ValueError("no method was measured")
    limit = time_limit(load_average, cpus)
    within = f"{FAST_SECONDS:g} s median" + (
        f" ({limit:.1f} s at this machine's load, {load_average:g} on {cpus} CPUs)" if limit > FAST_SECONDS else "")

    def said(m: MethodMeasurement) -> str:
        areas = (f"mean deletion area {m.deletion:.3f} against {m.random_deletion:.3f} for a random map"
                 if m.deletion is not None and m.random_deletion is not None else "no map to score")
        failed = f", failed on {m.failed}" if m.failed else ""
        return (f"{m.method} beat a random map on {m.beats_random} of {m.images} held-out images "
                f"({m.share:.0%}; {areas}{failed}), {m.median_seconds:.2f} s median, {m.passes} forward passes")

    holds = [m for m in measured if m.share >= HOLDS]
    if not holds:
        best = max(measured, key=lambda m: (m.share, -m.failed, -m.median_seconds))
        return best.method, (f"{said(best)}: the most often of the methods measured; none beat it on "
                             f"{HOLDS:.0%} of the images")
    fast = [m for m in holds if m.median_seconds <= limit]
    if not fast:
        quickest = min(holds, key=lambda m: m.median_seconds)
        return quickest.method, (f"{said(quickest)}: the fastest of the methods that beat it on at least "
                                 f"{HOLDS:.0%} of the images (none within {within})")
    best = min(fast, key=lambda m: (m.deletion if m.deletion is not None else 1.0, m.median_seconds))
    which = (f"the lowest deletion area of the {len(fast)} methods" if len(fast) > 1 else "the only method")
    return best.method, f"{said(best)}: {which} that beat it on at least {HOLDS:.0%} of the images within {within}"


def _load_average() -> float | None:
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:  # not on this platform
        return None
