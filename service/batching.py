"""A dynamic batcher per model, in the manner of Triton's.

Requests queue per model version. One worker loop per model takes the oldest request,
adds every queued request that asks for the same outputs (up to ``max_batch_size``
images, waiting up to ``max_queue_delay_ms`` for more), runs them as one onnxruntime
call on a worker thread, and hands each request back its own slice. While a run is in
progress new requests pile up, so under load batches form by themselves even with no
delay, and at low load nothing waits.

When the model frees up, more requests are often on their way: ones the server has
accepted for this model and is still decoding (counted by ``arriving``), and, from
clients that send their next request as soon as they get an answer, about as many as the
last run answered. Then the batcher waits for them, up to ``arrival_wait_ms``, instead
of running half a batch and leaving the other half to queue behind it (at 16 clients it
would otherwise settle into two alternating batches of 8). A lone client never waits:
nothing else is on its way and the last run answered only it.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from service.errors import Overloaded

log = logging.getLogger("convscope.batching")


class Runnable(Protocol):
    """What the batcher drives: ModelRuntime in the service, a fake in tests."""

    def run(self, batch: np.ndarray, outputs: tuple[str, ...]) -> list[np.ndarray]: ...


class BatchObserver(Protocol):
    def batch_done(self, batch_size: int, queue_seconds: list[float], compute_seconds: float) -> None: ...

    def queue_depth(self, images: int) -> None: ...


@dataclass
class InferenceResult:
    outputs: list[np.ndarray]
    queue_seconds: float
    compute_seconds: float
    batch_size: int


@dataclass
class _Request:
    inputs: np.ndarray
    outputs: tuple[str, ...]
    future: asyncio.Future[InferenceResult]
    enqueued: float = field(default_factory=time.perf_counter)

    @property
    def size(self) -> int:
        return int(self.inputs.shape[0])


class DynamicBatcher:
    """Gathers concurrent requests for one model into shared onnxruntime runs."""

    def __init__(
        self,
        model: Runnable,
        *,
        max_batch_size: int,
        max_queue_delay_ms: float,
        max_queue_size: int,
        arrival_wait_ms: float = 0.0,
        observer: BatchObserver | None = None,
        label: str = "model",
    ) -> None:
        self.model = model
        self.max_batch_size = max_batch_size
        self.max_queue_delay = max_queue_delay_ms / 1000.0
        self.max_queue_size = max_queue_size
        self.arrival_wait = arrival_wait_ms / 1000.0
        self._arriving = 0
        self._last_run_images = 0
        self._last_run_seconds = 0.0
        self.observer = observer
        self.label = label
        self.runs = 0  # onnxruntime calls made: batching is tested by counting these
        self._queue: collections.deque[_Request] = collections.deque()
        self._queued_images = 0
        self._wakeup = asyncio.Event()
        # One thread per model: runs of one model never overlap (onnxruntime already uses
        # every core inside a run), and overlap is what would defeat batching.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"ort-{label}")
        self._worker: asyncio.Task[None] | None = None
        self._running: list[_Request] = []

    @property
    def queued_images(self) -> int:
        return self._queued_images

    def start(self) -> None:
        if self._worker is None:
            self._worker = asyncio.get_running_loop().create_task(self._loop(), name=f"batcher-{self.label}")

    async def stop(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            try:
                await self._worker
            except asyncio.CancelledError:
                pass
            self._worker = None
        for request in [*self._queue, *self._running]:
            if not request.future.done():
                request.future.cancel()
        self._queue.clear()
        self._queued_images = 0
        self._executor.shutdown(wait=True, cancel_futures=True)

    @contextmanager
    def arriving(self, images: int) -> Iterator[None]:
        """Wrap the decoding of a request that will call ``infer`` right after: while it
        lasts, a batch about to run may wait for it. Leave the block and call ``infer``
        without an ``await`` between them, so the batcher never sees the gap."""
        self._arriving += images
        try:
            yield
        finally:
            self._arriving -= images
            self._wakeup.set()

    async def infer(self, inputs: np.ndarray, outputs: tuple[str, ...]) -> InferenceResult:
        """Queue ``inputs`` ([N, ...]); resolves with this request's own N rows of each output.

        Raises Overloaded at once when the queue is full. If the caller is cancelled (its
        client went away) while queued, the request leaves the queue and never runs.
        """
        size = int(inputs.shape[0])
        if self._queued_images and self._queued_images + size > self.max_queue_size:
            raise Overloaded(
                f"model {self.label} has {self._queued_images} images queued (limit "
                f"{self.max_queue_size}); retry shortly"
            )
        request = _Request(inputs, outputs, asyncio.get_running_loop().create_future())
        self._queue.append(request)
        self._set_depth(self._queued_images + size)
        self._wakeup.set()
        try:
            return await request.future
        finally:
            if not request.future.done() or request.future.cancelled():
                self._discard(request)

    def _discard(self, request: _Request) -> None:
        try:
            self._queue.remove(request)
        except ValueError:
            return  # already taken into a batch
        self._set_depth(self._queued_images - request.size)

    def _set_depth(self, images: int) -> None:
        self._queued_images = images
        if self.observer is not None:
            self.observer.queue_depth(images)

    def _take_matching(self, group: list[_Request], images: int) -> int:
        """Move queued requests with the group's outputs into it, oldest first, while they fit."""
        outputs = group[0].outputs
        kept: collections.deque[_Request] = collections.deque()
        while self._queue:
            request = self._queue.popleft()
            if request.future.done():
                continue
            if request.outputs == outputs and images + request.size <= self.max_batch_size:
                group.append(request)
                images += request.size
            else:
                kept.append(request)
        self._queue = kept
        return images

    async def _next_group(self) -> list[_Request]:
        while True:
            while not self._queue:
                self._wakeup.clear()
                await self._wakeup.wait()
            first = self._queue.popleft()
            if not first.future.done():
                break
        group = [first]
        images = self._take_matching(group, first.size)
        now = time.perf_counter()
        delay_deadline = now + self.max_queue_delay
        while images < self.max_batch_size:
            deadline = delay_deadline
            if self._arriving:  # known to be on their way: worth the whole bound
                deadline = max(deadline, now + self.arrival_wait)
            if images < self._last_run_images:
                # Only likely to come back: never idle the model longer than half a run.
                deadline = max(deadline, now + min(self.arrival_wait, self._last_run_seconds / 2))
            remaining = deadline - time.perf_counter()
            if remaining <= 0:
                break
            self._wakeup.clear()
            try:
                await asyncio.wait_for(self._wakeup.wait(), remaining)
            except TimeoutError:
                break
            images = self._take_matching(group, images)
        self._set_depth(sum(r.size for r in self._queue))
        return group

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            group = await self._next_group()
            group = [r for r in group if not r.future.done()]
            if not group:
                continue
            self._running = group
            started = time.perf_counter()
            batch = group[0].inputs if len(group) == 1 else np.concatenate([r.inputs for r in group])
            try:
                results = await loop.run_in_executor(self._executor, self.model.run, batch, group[0].outputs)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # onnxruntime failed: every request in the batch learns why
                log.exception("inference failed for %s", self.label)
                for request in group:
                    if not request.future.done():
                        request.future.set_exception(exc)
                continue
            finished = time.perf_counter()
            self.runs += 1
            self._last_run_images = int(batch.shape[0])
            self._last_run_seconds = finished - started
            compute = finished - started
            queue_times = [started - r.enqueued for r in group]
            offset = 0
            for request, waited in zip(group, queue_times):
                rows = slice(offset, offset + request.size)
                offset += request.size
                if not request.future.done():
                    request.future.set_result(
                        InferenceResult([out[rows] for out in results], waited, compute, int(batch.shape[0]))
                    )
            self._running = []
            if self.observer is not None:
                self.observer.batch_done(int(batch.shape[0]), queue_times, compute)
            # Not held while waiting for the next batch: every feature map of 32 AlexNet
            # images is ~110 MB, idle memory until the next run replaces it.
            del batch, results, group
