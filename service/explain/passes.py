"""Every forward pass an explanation makes goes through ``Passes``: sent in bounded batches,
counted exactly (one pass = one image through the model), and never past the budget.

Batches are at most ``batch_size`` images and, with ``batch_seconds`` set, no more than
the forward is seen to get through in that time (measured on this explanation's own calls,
queueing included). An explanation's run holds the model, and a prediction that arrives
meanwhile waits for it: ``batch_seconds`` bounds that wait, and under prediction load,
when the calls take longer, the batches shrink by themselves. With ``batch_images`` set
(the service: the model's batcher, which sees the predictions), it says how many images
the next call may carry, asked before each call.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Awaitable, Callable

import numpy as np

from artifact import OutputKind
from service.errors import ModelFailed
from service.models.scores import probabilities

BatchImages = Callable[[int], int]
"""Given the most images a call may carry, how many the next one should: the data plane's
view of the model's load (``DynamicBatcher.explain_batch_images``)."""

Forward = Callable[[np.ndarray, tuple[str, ...]], Awaitable[list[np.ndarray]]]
"""What the data plane provides: run ``batch`` ([N, C, H, W] float32) through the model and
return the named graph outputs, each [N, ...], in the order asked. In the service it goes
through the model's dynamic batcher at explanation priority."""

# Building masked images is numpy work: small batches on the event loop (a thread hand-off
# costs more), large ones (AlexNet: 16 x 150k values) in a worker thread so the loop keeps
# serving predictions meanwhile.
INLINE_VALUES = 256 * 1024


class BudgetExceeded(RuntimeError):
    """A method asked for more passes than it was granted: a bug in the method, never the
    client's fault (plans are checked before any pass runs)."""


class Passes:
    """Forward passes for one explanation of one image."""

    def __init__(self, forward: Forward, *, output: str, classes: int, image_values: int, budget: int,
                 batch_size: int, batch_seconds: float | None = None,
                 batch_images: BatchImages | None = None, kind: OutputKind = OutputKind.LOGITS) -> None:
        """``kind``: what the class output holds, so ``probabilities`` reads it right."""
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        if batch_seconds is not None and batch_seconds <= 0:
            raise ValueError("batch_seconds must be positive")
        self._forward = forward
        self.output = output
        self.kind = kind
        self.classes = classes
        self.image_values = image_values  # C * H * W of one input
        self.budget = budget
        self.batch_size = batch_size
        self.batch_seconds = batch_seconds
        self.batch_images = batch_images
        self.used = 0
        self.forward_seconds = 0.0
        self.seconds_per_image: float | None = None  # a running estimate from the calls so far

    def next_batch(self) -> int:
        """How many images the next call may carry."""
        most = self.batch_size
        if self.batch_seconds is not None and self.seconds_per_image is not None:
            most = max(1, min(most, int(self.batch_seconds / self.seconds_per_image)))
        if self.batch_images is not None:
            most = max(1, min(most, self.batch_images(most)))
        return most

    def record(self, seconds: float, images: int) -> None:
        """Fold one call's time into the per-image estimate (half old, half new: it follows
        the load within a few calls)."""
        per_image = seconds / max(images, 1)
        old = self.seconds_per_image
        self.seconds_per_image = per_image if old is None else (old + per_image) / 2

    @property
    def left(self) -> int:
        return self.budget - self.used

    async def run(self, images: np.ndarray, outputs: tuple[str, ...]) -> list[np.ndarray]:
        """One call of the forward, at most ``batch_size`` images, counted before it is sent."""
        count = int(images.shape[0])
        if count > self.batch_size:
            raise ValueError(f"{count} images exceed the batch size {self.batch_size}")
        if count > self.left:
            raise BudgetExceeded(f"{count} more passes would exceed the budget of {self.budget} ({self.used} used)")
        self.used += count
        started = time.perf_counter()
        results = await self._forward(images, outputs)
        elapsed = time.perf_counter() - started
        self.forward_seconds += elapsed
        self.record(elapsed, count)
        if len(results) != len(outputs):
            raise ModelFailed(f"the model returned {len(results)} outputs for {len(outputs)} requested")
        logits = results[outputs.index(self.output)] if self.output in outputs else None
        if logits is not None and logits.shape != (count, self.classes):
            raise ModelFailed(
                f"the class output has shape {list(logits.shape)} for {count} images; expected [{count}, {self.classes}]"
            )
        return results

    async def offload(self, fn: Callable[[], np.ndarray], images: int) -> np.ndarray:
        """``fn()``, in a worker thread when it handles more than a few images' worth of values."""
        if images * self.image_values <= INLINE_VALUES:
            return fn()
        return await asyncio.to_thread(fn)

    async def probabilities(self, count: int, make: Callable[[int, int], np.ndarray], target: int) -> np.ndarray:
        """P(target) for ``count`` images that ``make(start, stop)`` builds a slice at a time:
        the class output read by its kind (service/models/scores.py), for a multi-label model the
        target's own score."""
        scores = np.empty(count, dtype=np.float64)
        start = 0
        while start < count:
            stop = min(count, start + self.next_batch())
            images = await self.offload(functools.partial(make, start, stop), stop - start)
            (values,) = await self.run(images, (self.output,))
            scores[start:stop] = probabilities(values, self.kind)[:, target]
            start = stop
        return scores
