"""The explanation engine: checks a request against a model (``Explainer.plan``), then
explains one preprocessed image with forward passes the data plane runs
(``Explainer.run``). It never runs a model itself.

A run makes, in order: one pass on the image (the class output, plus the layer for the
CAM family), the method's passes, then the faithfulness passes; every pass is counted, the
total never exceeds the plan's budget, and cancelling the task (the client went away)
stops it at the next batch: nothing more is sent.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from service.errors import NotFound, Unprocessable, one_of
from service.explain import faithfulness as faith
from service.explain.head import NotExact
from service.explain.maps import evidence
from service.explain.methods import (
    METHOD_FNS,
    OCCLUSION_MIN_GRID,
    RISE_MASKS,
    RISE_MIN_MASKS,
    SCORE_CAM_CHANNELS,
    Context,
    OcclusionGrid,
    occlusion_window,
)
from service.explain.model import METHODS, ExplainableModel, LayerInfo, Method, default_method
from service.explain.passes import BatchImages, Forward, Passes
from service.models.scores import probabilities

DEFAULT_BATCH_SIZE = 16
MAX_LISTED_LABELS = 20



@dataclass(frozen=True)
class ExplainOptions:
    """How much one explanation may cost on this server."""

    max_passes: int = 2000  # forward passes, faithfulness included (CONVSCOPE_MAX_EXPLAIN_PASSES)

@dataclass(frozen=True)
class ExplainRequest:
    """What a client asks for; ``None`` means the default."""

    method: str | None = None
    target: int | str | None = None  # class index, or label; default: the top-1 class
    layer: str | None = None  # CAM family only; default: the deepest spatial layer valid for the method
    passes: int | None = None  # upper bound on forward passes; default: the method's default cost
    faithfulness: bool = True
    seed: int = 0  # RISE's masks, faithfulness's random order and tie-breaking


@dataclass(frozen=True)
class ExplainPlan:
    """A request checked against a model: everything ``run`` needs, nothing left to fail
    on the client's account."""

    method: Method
    layer: LayerInfo | None
    target: int | None  # None: the top-1 class, known after the first pass
    budget: int  # the most forward passes the run may make, all included
    method_passes: int  # of which the method may use
    faithfulness: bool
    seed: int


@dataclass(frozen=True)
class Target:
    index: int
    label: str
    probability: float  # P(target | image): the class output read by its kind (service/models/scores.py)


@dataclass(frozen=True)
class Explanation:
    """The answer. ``map`` is [H, W] float32 at the model's input resolution, 0..1, higher =
    more evidence for the target (aligned with the preprocessed input image)."""

    method: Method
    layer: str | None
    target: Target
    forward_passes: int
    budget: int
    map: np.ndarray
    faithfulness: faith.Faithfulness | None
    parameters: Mapping[str, Any]  # what the method did: window and stride, masks, channels...
    forward_seconds: float  # waiting on the forward passes (queue + inference)
    compute_seconds: float  # the engine's own numpy work
    note: str | None = None  # set when the map says nothing (empty or uniform): never hidden


@dataclass(frozen=True)
class Cost:
    """Forward passes a method itself needs beyond the first pass: least, default, most useful."""

    minimum: int
    default: int
    maximum: int


def method_cost(model: ExplainableModel, method: Method, layer: LayerInfo | None) -> Cost:
    if method is Method.OCCLUSION:
        h, w = model.input_shape[1:]
        wh, ww = occlusion_window(model)
        default = OcclusionGrid.default((h, w), (wh, ww)).positions
        return Cost(OCCLUSION_MIN_GRID**2, default, (h - wh + 1) * (w - ww + 1))
    if method is Method.RISE:
        return Cost(RISE_MIN_MASKS, RISE_MASKS, 10**9)
    if method is Method.SCORE_CAM:
        assert layer is not None
        return Cost(1, min(layer.shape[0], SCORE_CAM_CHANNELS), layer.shape[0])
    return Cost(0, 0, 0)


class Explainer:
    """Explanations for one model version."""

    def __init__(self, model: ExplainableModel, *, max_passes: int, batch_size: int = DEFAULT_BATCH_SIZE,
                 batch_seconds: float | None = None, batch_images: BatchImages | None = None) -> None:
        """``batch_size``: most images per forward call; ``batch_seconds``: also no more than
        the forward gets through in this time (see passes.py), so a prediction never waits
        long behind an explanation's run; ``batch_images``: asked before each call how many
        images it may carry (the service's batcher, which sees the predictions)."""
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        self.model = model
        self.max_passes = max_passes
        self.batch_size = batch_size
        self.batch_seconds = batch_seconds
        self.batch_images = batch_images

    # ---- checking a request ------------------------------------------------------------

    def plan(self, request: ExplainRequest) -> ExplainPlan:
        """Check ``request``; raises Unprocessable (422) or NotFound (404) naming the valid values."""
        method = self._method(request.method)
        layer = self._layer(method, request.layer)
        target = None if request.target is None else self._target(request.target)
        cost = method_cost(self.model, method, layer)
        extra = faith.PASSES if request.faithfulness else 0
        least = 1 + cost.minimum + extra
        limit = "CONVSCOPE_MAX_EXPLAIN_PASSES"
        if request.seed < 0:
            raise Unprocessable(f"seed={request.seed} is not valid: seeds are integers from 0")
        if least > self.max_passes:
            raise Unprocessable(
                f"method {method.value} needs at least {least} forward passes{self._why(extra)}, "
                f"over this server's limit of {self.max_passes} ({limit})"
                + ("; ask for faithfulness=false" if request.faithfulness else "")
            )
        if request.passes is None:
            budget = min(1 + cost.default + extra, self.max_passes)
        else:
            if request.passes > self.max_passes:
                raise Unprocessable(
                    f"passes={request.passes} is over this server's limit of {self.max_passes} ({limit}); "
                    f"valid: {least}..{self.max_passes}"
                )
            if request.passes < least:
                raise Unprocessable(
                    f"passes={request.passes} is too few: method {method.value} needs at least {least}"
                    f"{self._why(extra)}; valid: {least}..{self.max_passes}"
                )
            budget = request.passes
        method_passes = min(cost.maximum, budget - 1 - extra)
        budget = 1 + method_passes + extra
        return ExplainPlan(method, layer, target, budget, method_passes, request.faithfulness, request.seed)

    @staticmethod
    def _why(extra: int) -> str:
        if extra == faith.PASSES:
            return f" (1 for the image, {faith.PASSES} for faithfulness)"
        return " (1 for the image)"

    def _method(self, name: str | None) -> Method:
        valid = self.model.methods()
        if name is None:
            return default_method(self.model)
        if name not in METHODS:
            raise Unprocessable(one_of("method", name, [m.value for m in valid]))
        method = Method(name)
        if method not in valid:
            raise Unprocessable(
                f"method {name} needs a layer where it is valid and model {self.model.name} has none; "
                f"valid methods: {', '.join(m.value for m in valid)}"
            )
        return method

    def _layer(self, method: Method, name: str | None) -> LayerInfo | None:
        if not method.uses_layer:
            if name is not None:
                if name not in (layer.name for layer in self.model.layers):
                    raise NotFound(one_of("layer", name, [layer.name for layer in self.model.layers])
                                   + f" (model {self.model.name})")
                takes = ", ".join(m.value for m in Method if m.uses_layer)
                raise Unprocessable(f"method {method.value} perturbs the input and takes no layer; "
                                    f"layers are for {takes}")
            return None
        valid = self.model.layers_for(method)
        if name is None:
            default = self.model.default_layer(method)
            assert default is not None, "_method() only lets through methods with a valid layer"
            return self.model.layer(default)
        try:
            layer = self.model.layer(name)
        except KeyError:
            raise NotFound(one_of("layer", name, valid) + f" for {method.value} (model {self.model.name})") from None
        if name not in valid:
            head = self.model.heads.get(name)
            if not layer.spatial:
                why = "it has no spatial map"
            elif method.uses_gradient and isinstance(head, NotExact):
                why = f"{method.value} is not exact there ({head.reason})"
            else:
                why = "it is not valid for this method"
            raise Unprocessable(
                f"layer {name!r} cannot be used with {method.value}: {why}; valid layers: {', '.join(valid)}"
            )
        return layer

    def _target(self, target: int | str) -> int:
        """A class by index or label; one the model does not have is a 404 (like an unknown
        layer), naming the valid ones."""
        labels = self.model.labels
        if isinstance(target, str):
            if target in labels:
                return labels.index(target)
            try:
                index = int(target)
            except ValueError:
                raise NotFound(self._bad_target(repr(target))) from None
        else:
            index = int(target)
        if not 0 <= index < len(labels):
            raise NotFound(self._bad_target(str(index)))
        return index

    def _bad_target(self, given: str) -> str:
        labels = self.model.labels
        shown = ", ".join(repr(label) for label in labels[:MAX_LISTED_LABELS])
        more = f", ... ({len(labels)} labels)" if len(labels) > MAX_LISTED_LABELS else ""
        return (f"unknown target {given}; valid: a class index 0..{len(labels) - 1} "
                f"or a label ({shown}{more})")

    # ---- running -----------------------------------------------------------------------

    async def run(self, plan: ExplainPlan, image: np.ndarray, forward: Forward) -> Explanation:
        """Explain ``image`` ([1, C, H, W] float32, preprocessed exactly as for predict)."""
        started = time.perf_counter()
        model = self.model
        expected = (1, *model.input_shape)
        if image.shape != expected:
            raise ValueError(f"the image tensor has shape {list(image.shape)}; expected {list(expected)}")
        image = np.ascontiguousarray(image, dtype=np.float32)
        passes = Passes(forward, output=model.output, classes=len(model.labels),
                        image_values=int(np.prod(model.input_shape)), budget=plan.budget,
                        batch_size=self.batch_size, batch_seconds=self.batch_seconds,
                        batch_images=self.batch_images, kind=model.output_kind)
        outputs = (model.output,) if plan.layer is None else (model.output, plan.layer.name)
        first = await passes.run(image, outputs)
        values = first[0][0]  # the class output for the image, as the model answers it
        read = probabilities(values[None], model.output_kind)[0]
        index = int(np.argmax(values)) if plan.target is None else plan.target
        ctx = Context(
            model=model,
            image=image[0],
            target=index,
            probability=float(read[index]),
            outputs=values,
            passes=passes,
            method_passes=plan.method_passes,
            seed=plan.seed,
            layer=plan.layer,
            activations=first[1] if plan.layer is not None else None,
        )
        raw, parameters = await METHOD_FNS[plan.method](ctx)
        saliency = evidence(raw)
        note = faith.uniform_map_note(saliency, plan.method.value)
        scores = None
        if plan.faithfulness:
            scores = await faith.measure(ctx.image, model.baseline, saliency, passes, index, ctx.probability,
                                         await ctx.baseline_probability(), plan.seed)
        total = time.perf_counter() - started
        return Explanation(
            method=plan.method,
            layer=plan.layer.name if plan.layer is not None else None,
            target=Target(index, model.labels[index], ctx.probability),
            forward_passes=passes.used,
            budget=plan.budget,
            map=saliency,
            faithfulness=scores,
            parameters=parameters,
            forward_seconds=passes.forward_seconds,
            compute_seconds=max(0.0, total - passes.forward_seconds),
            note=note,
        )
