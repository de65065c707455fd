"""Every forward pass an explanation makes goes through ``Passes``: sent in bounded batches,
counted exactly (one pass = one image through the model), and never past the budget."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import numpy as np

from service.errors import ModelFailed
from service.explain.maps import softmax

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
                 batch_size: int) -> None:
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        self._forward = forward
        self.output = output
        self.classes = classes
        self.image_values = image_values  # C * H * W of one input
        self.budget = budget
        self.batch_size = batch_size
        self.used = 0
        self.forward_seconds = 0.0

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
        self.forward_seconds += time.perf_counter() - started
        if len(results) != len(outputs):
            raise ModelFailed(f"the model returned {len(results)} outputs for {len(outputs)} requested")
        logits = results[outputs.index(self.output)] if self.output in outputs else None
        if logits is not None and logits.shape != (count, self.classes):
            raise ModelFailed(
                f"the class output has shape {list(logits.shape)} for {count} images; expected [{count}, {self.classes}]"
            )
        return results

    async def probabilities(self, count: int, make: Callable[[int, int], np.ndarray], target: int) -> np.ndarray:
        """P(target) for ``count`` images that ``make(start, stop)`` builds a slice at a time."""
        scores = np.empty(count, dtype=np.float64)
        for start in range(0, count, self.batch_size):
            stop = min(count, start + self.batch_size)
            if (stop - start) * self.image_values <= INLINE_VALUES:
                images = make(start, stop)
            else:
                images = await asyncio.to_thread(make, start, stop)
            (logits,) = await self.run(images, (self.output,))
            scores[start:stop] = softmax(logits)[:, target]
        return scores
