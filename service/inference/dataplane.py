"""The data plane: runs requests against a loaded version.

Every handler that runs a model (v1 predict, v2 infer, feature-map pictures) goes through
``DataPlane.run``: decode and preprocess the images while the model's batcher knows they
are on their way, queue them, check what came back. The handlers say which version serves
(they hold it) and give the results to the codecs.

Explanations go through ``DataPlane.explain``: the same decoding (and decode budget),
then the model's explainer (built at load) runs its forward passes through the same
batcher at ``Priority.EXPLAIN``, behind any prediction.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from service.errors import ModelOutputNotFinite, ServiceError
from service.explain import METHODS, ExplainRequest, Explanation, default_method
from service.inference.batching import Priority
from service.inference.image_preparation import (
    BudgetObserver,
    DecodeBudget,
    ImagePreparer,
    PreparationOptions,
    WaitOutcome,
)
from service.inference.workers import Workers
from service.metrics import ExplainOutcome, Metrics
from service.models.loader import LoadedVersion
from service.models.signature import ModelSignature


@dataclass
class Timings:
    """Where one request's time went, in seconds."""

    decode: float = 0.0
    preprocess: float = 0.0
    queue: float = 0.0
    inference: float = 0.0
    encode: float = 0.0
    started: float = field(default_factory=time.perf_counter)

    def as_ms(self) -> dict[str, float]:
        total = time.perf_counter() - self.started
        parts = {
            "decode": self.decode, "preprocess": self.preprocess, "queue": self.queue,
            "inference": self.inference, "encode": self.encode, "total": total,
        }
        return {k: round(v * 1000.0, 3) for k, v in parts.items()}


@dataclass(frozen=True)
class ImageInputs:
    """Encoded images (JPEG, PNG, ...) that the server decodes and preprocesses."""

    images: list[bytes]

    @property
    def count(self) -> int:
        return len(self.images)


@dataclass(frozen=True)
class TensorInputs:
    """A preprocessed float32 batch [N, C, H, W], as a v2 client may send it."""

    tensor: NDArray[np.float32]

    @property
    def count(self) -> int:
        return int(self.tensor.shape[0])


Inputs = ImageInputs | TensorInputs


@dataclass(frozen=True)
class RunResult:
    """One request's rows of each output it asked for, by output name, in request order."""

    outputs: dict[str, NDArray[np.float32]]
    timings: Timings


@dataclass(frozen=True)
class ExplainResult:
    """One image explained: the engine's answer, the preprocessed input it explains
    ([C, H, W], for an overlay), and where the time went (``queue`` and ``inference`` summed
    over the explanation's forward passes; ``engine``: the engine's own numpy work)."""

    explanation: Explanation
    image: NDArray[np.float32]
    timings: Timings
    engine_seconds: float


class BudgetMetrics(BudgetObserver):
    """The decode budget's reports, as metrics."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def in_flight(self, amount: int) -> None:
        self.metrics.decode_in_flight.set(amount)

    def waited(self, outcome: WaitOutcome) -> None:
        self.metrics.decode_waits.labels(outcome.value).inc()


class DataPlane:
    """The one way into a model: images decoded while the batcher knows they are coming,
    runs through the version's batcher, every output checked before it goes back."""

    def __init__(self, preparation: PreparationOptions, workers: Workers, metrics: Metrics) -> None:
        self.workers = workers
        self.metrics = metrics
        self.images = ImagePreparer(
            workers.pool, max_pixels=preparation.max_pixels,
            budget=DecodeBudget(preparation.budget_bytes, preparation.budget_wait_s, BudgetMetrics(metrics)),
            max_request_bytes=preparation.max_request_bytes,
        )

    async def run(self, model: LoadedVersion, inputs: Inputs, outputs: tuple[str, ...]) -> RunResult:
        """Run ``inputs`` through the model's batcher; ``outputs`` are graph output names.

        Images are decoded inside ``arriving()`` so a batch about to run may wait for them,
        and ``infer`` follows with no ``await`` in between, so the batcher never sees the gap.
        """
        timings = Timings()
        if isinstance(inputs, ImageInputs):
            # Waiting for the decode budget is not arriving: a batch would wait for images
            # that nobody is decoding yet.
            admission = await self.images.admit(model.spec, inputs.images)
            alone = model.batcher.alone  # a lone client: no thread hop for its decode
            with admission, model.batcher.arriving(inputs.count):
                prepared = await admission.decode(alone=alone)
            tensor = prepared.tensor
            timings.decode, timings.preprocess = prepared.decode_seconds, prepared.preprocess_seconds
        else:
            tensor = inputs.tensor
        result = await model.batcher.infer(tensor, outputs)
        timings.queue, timings.inference = result.queue_seconds, result.compute_seconds
        values = dict(zip(outputs, result.outputs))
        await self.workers.offload(_check_finite, model.signature, values, size=sum(v.size for v in values.values()))
        return RunResult(values, timings)

    async def explain(self, model: LoadedVersion, image: bytes, request: ExplainRequest) -> ExplainResult:
        """Explain one encoded image. The request is checked against the model before the
        image is decoded; every forward pass goes through the model's batcher at explanation
        priority. Cancelling the task (the client went away) stops it before its next pass.
        Counted in the metrics by method and outcome."""
        started = time.perf_counter()
        method = request.method if request.method in METHODS else "unknown"
        outcome = ExplainOutcome.FAILED
        explanation: Explanation | None = None
        try:
            explainer = model.require_explainer()
            if request.method is None:
                method = default_method(explainer.model).value
            plan = explainer.plan(request)
            method = plan.method.value
            timings = Timings()
            prepared = await self.images.prepare(model.spec, [image])
            timings.decode, timings.preprocess = prepared.decode_seconds, prepared.preprocess_seconds
            batcher, signature = model.batcher, model.signature

            async def forward(batch: NDArray[np.float32], outputs: tuple[str, ...]) -> list[NDArray[np.float32]]:
                result = await batcher.infer(batch, outputs, Priority.EXPLAIN)
                timings.queue += result.queue_seconds
                timings.inference += result.compute_seconds
                values = dict(zip(outputs, result.outputs))
                await self.workers.offload(_check_finite, signature, values,
                                           size=sum(v.size for v in values.values()))
                return result.outputs

            explanation = await explainer.run(plan, prepared.tensor, forward)
            outcome = ExplainOutcome.OK
            return ExplainResult(explanation, prepared.tensor[0], timings, explanation.compute_seconds)
        except asyncio.CancelledError:
            outcome = ExplainOutcome.CANCELLED
            raise
        except ServiceError as exc:
            outcome = ExplainOutcome.REJECTED if exc.status_code < 500 else ExplainOutcome.FAILED
            raise
        finally:
            self.metrics.explained(
                model.name, model.version, method, outcome,
                passes=explanation.forward_passes if explanation is not None else None,
                seconds=time.perf_counter() - started if explanation is not None else None,
            )


def _check_finite(signature: ModelSignature, values: dict[str, NDArray[np.float32]]) -> None:
    bad = [name for name, array in values.items() if not np.isfinite(array).all()]
    if bad:
        raise ModelOutputNotFinite(signature.name, signature.version, bad)
