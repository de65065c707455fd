"""The data plane: runs requests against served models.

Every route that runs a model (v1 predict, v2 infer, feature-map pictures) goes through
``DataPlane.run``: decode and preprocess the images while the model's batcher knows they
are on their way, queue them, check what came back. The registry says which model serves;
the codecs and the API shape what goes back to the client.

Explanations go through ``DataPlane.explain``: the same decoding (and decode budget),
then the model's explainer (built at load) runs its forward passes through the same
batcher at ``Priority.EXPLAIN``, behind any prediction.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np
from numpy.typing import NDArray

from service.codecs import encoding as enc
from service.codecs.encoding import Encoding, NpyDtype
from service.errors import (
    BadRequest,
    ModelOutputNotFinite,
    NotFound,
    PayloadTooLarge,
    ServiceError,
    UnknownLayer,
)
from service.explain import METHODS, ExplainRequest, Explanation, default_method
from service.inference.batching import Priority
from service.inference.image_preparation import BudgetObserver, DecodeBudget, ImagePreparer, WaitOutcome
from service.metrics import ExplainOutcome, Metrics
from service.models.registry import ModelRegistry, ServedModel
from service.models.signature import ModelSignature
from service.settings import Settings

T = TypeVar("T")

# Encoding or checking maps this small (all of TinyVGG's for one digit are ~22k values,
# ~0.1 ms) costs less on the event loop than a hand-off to a worker thread and back.
INLINE_MAP_VALUES = 64 * 1024
# A JSON body this small parses in well under a millisecond: on the loop, no hand-off.
INLINE_PARSE_BYTES = 64 * 1024


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
    def __init__(self, settings: Settings, registry: ModelRegistry) -> None:
        self.settings = settings
        self.registry = registry
        self.pool = ThreadPoolExecutor(settings.preprocess_threads, thread_name_prefix="preprocess")
        # Parsing holds the GIL (C code building objects): more threads would parse no faster,
        # only take turns at the GIL with the event loop. On one thread the loop waits for
        # one C call at most between its own turns, however many bodies queue up.
        self.parser = ThreadPoolExecutor(1, thread_name_prefix="parse")
        self.images = ImagePreparer(
            self.pool, max_pixels=settings.max_image_pixels,
            budget=DecodeBudget(int(settings.decode_budget_bytes), settings.decode_budget_wait_s,
                                BudgetMetrics(registry.metrics)),
            max_request_bytes=int(settings.max_request_decode_bytes),
        )

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)
        self.parser.shutdown(wait=True, cancel_futures=True)

    @contextmanager
    def serving(self, name: str | None, version: int | None = None) -> Iterator[ServedModel]:
        """The model a request is for (its newest ready version unless one is named), held
        until the request is answered."""
        with self.registry.lease(name, version) as model:
            yield model

    # -- limits --------------------------------------------------------------------------

    def check_count(self, images: int) -> None:
        """The per-request image limit, also for requests that bring tensors, not images."""
        if not images:
            raise BadRequest("the request holds no image")
        if images > self.settings.max_images_per_request:
            raise PayloadTooLarge(
                f"{images} images in one request; the limit is "
                f"{self.settings.max_images_per_request} (CONVSCOPE_MAX_IMAGES_PER_REQUEST)"
            )

    def check_budget(self, signature: ModelSignature, layers: Sequence[str], images: int,
                     encoding: Encoding, dtype: NpyDtype) -> None:
        """Refuse, before any work, a response whose feature maps would pass the budget."""
        budget = self.settings.max_feature_map_bytes
        estimate = images * sum(enc.estimate_bytes(signature.layer_shape(n), encoding, dtype) for n in layers)
        if estimate > budget:
            raise PayloadTooLarge(
                f"the requested feature maps would take about {estimate} bytes encoded as "
                f"{encoding}, over the budget of {budget} bytes (CONVSCOPE_MAX_FEATURE_MAP_BYTES); "
                "ask for fewer layers or images, encoding=stats or png, or dtype=float16"
            )

    @staticmethod
    def select_layers(signature: ModelSignature, names: Sequence[str]) -> list[str]:
        """Layer names from a query (each may be comma separated, or ``all``), in order and
        without repeats; an unknown one is a 404 that lists the valid ones."""
        wanted = [part.strip() for name in names for part in name.split(",") if part.strip()]
        if "all" in wanted:
            return signature.layer_names
        for layer in wanted:
            if layer not in signature.layer_names:
                raise UnknownLayer(signature.name, layer, signature.layer_names)
        return list(dict.fromkeys(wanted))

    # -- the work ------------------------------------------------------------------------

    async def run(self, model: ServedModel, inputs: Inputs, outputs: tuple[str, ...]) -> RunResult:
        """Run ``inputs`` through the model's batcher; ``outputs`` are graph output names.

        Images are decoded inside ``arriving()`` so a batch about to run may wait for them,
        and ``infer`` follows with no ``await`` in between, so the batcher never sees the gap.
        """
        self.check_count(inputs.count)
        timings = Timings()
        if isinstance(inputs, ImageInputs):
            # Waiting for the decode budget is not arriving: a batch would wait for images
            # that nobody is decoding yet.
            admission = await self.images.admit(model.runtime.spec, inputs.images)
            with admission, model.batcher.arriving(inputs.count):
                prepared = await admission.decode()
            tensor = prepared.tensor
            timings.decode, timings.preprocess = prepared.decode_seconds, prepared.preprocess_seconds
        else:
            tensor = inputs.tensor
        result = await model.batcher.infer(tensor, outputs)
        timings.queue, timings.inference = result.queue_seconds, result.compute_seconds
        values = dict(zip(outputs, result.outputs))
        await self.offload(_check_finite, model.signature, values, size=sum(v.size for v in values.values()))
        return RunResult(values, timings)

    async def explain(self, model: ServedModel, image: bytes, request: ExplainRequest) -> ExplainResult:
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
            prepared = await self.images.prepare(model.runtime.spec, [image])
            timings.decode, timings.preprocess = prepared.decode_seconds, prepared.preprocess_seconds
            batcher, signature = model.batcher, model.signature

            async def forward(batch: NDArray[np.float32], outputs: tuple[str, ...]) -> list[NDArray[np.float32]]:
                result = await batcher.infer(batch, outputs, Priority.EXPLAIN)
                timings.queue += result.queue_seconds
                timings.inference += result.compute_seconds
                values = dict(zip(outputs, result.outputs))
                await self.offload(_check_finite, signature, values, size=sum(v.size for v in values.values()))
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
            self.registry.metrics.explained(
                model.name, model.version, method, outcome,
                passes=explanation.forward_passes if explanation is not None else None,
                seconds=time.perf_counter() - started if explanation is not None else None,
            )

    async def offload(self, work: Callable[..., T], *args: Any, size: int) -> T:
        """Run CPU work over ``size`` values on the pool, or right here when it is small."""
        if size > INLINE_MAP_VALUES:
            return await asyncio.get_running_loop().run_in_executor(self.pool, work, *args)
        return work(*args)

    async def parse(self, work: Callable[..., T], *args: Any, size: int) -> T:
        """Parse a request body of ``size`` bytes: right here when small, else on the one
        parsing thread, in turn, so that no body holds up the event loop."""
        if size <= INLINE_PARSE_BYTES:
            return work(*args)
        return await asyncio.get_running_loop().run_in_executor(self.parser, work, *args)

    async def feature_map_png(self, model: ServedModel, layer: str, image: bytes) -> tuple[bytes, dict[str, Any]]:
        """One layer's feature-map grid for one image, as PNG bytes."""
        self.select_layers(model.signature, [layer])
        result = await self.run(model, ImageInputs([image]), (layer,))
        values = result.outputs[layer][0]
        return await self.offload(_grid_png, values, size=values.size)

    @staticmethod
    def filters_png(model: ServedModel, layer: str, state: str = "trained") -> tuple[bytes, dict[str, Any]]:
        """A conv layer's kernels as a picture: as trained, or as initialised before training."""
        runtime = model.runtime
        trained = runtime.trained_filters(layer)
        weights = trained if state == "trained" else runtime.initial_filters.get(layer)
        if weights is None:
            raise NotFound(
                f"model {runtime.name} version {runtime.version} has no record of its filters before "
                "training (exported without initial_weights.npz); use state=trained"
            )
        grid, info = enc.filters_grid(weights)
        return enc.png_bytes(grid), info


def _check_finite(signature: ModelSignature, values: dict[str, NDArray[np.float32]]) -> None:
    bad = [name for name, array in values.items() if not np.isfinite(array).all()]
    if bad:
        raise ModelOutputNotFinite(signature.name, signature.version, bad)


def _grid_png(values: NDArray[np.float32]) -> tuple[bytes, dict[str, Any]]:
    grid, info = enc.feature_map_grid(values)
    return enc.png_bytes(grid), info
