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

How hard a batch waits for those returning clients is chosen per model from what its runs
cost (``BatchCosts``, timed at load, issue 23): a run of b images takes about
``fixed + b * per_image`` seconds, and every two runs merged into one save ``fixed``.

- ``BatchPolicy.HOLD`` (the fixed cost is large: AlexNet's dense layers read ~200 MB of
  weights per run, ~7 ms): full batches. When a run ends, the batcher expects back the
  clients it answered plus the requests that queued during it, and holds the next batch
  for them (up to ``max_batch_size``), never longer than half the last run. How long is
  learnt: at least ``arrival_wait_ms``, and ``HOLD_MARGIN`` times as long as recent holds
  took to gather what they expected; a hold that ran out first lets the next wait
  ``HOLD_GROWTH`` times as long. (A fixed 15 ms was too short once the server had less
  than a core: 16 AlexNet requests need ~20 ms of decoding and HTTP to come back even on
  a quiet 2-core machine, and batches fell back to 8-10, benchmarks/peers/FINDINGS.md.) At 16 clients this turns two alternating half batches (the other half is
  queued when a run ends, so the old rule ran it at once) into one full batch: what the
  hold costs is time in which the cores decode and answer those very requests, which on a
  small box would otherwise run beside onnxruntime and slow it down. (Holding for as long
  as requests kept coming, up to a whole run, idled the model behind stragglers: slower.)
- ``BatchPolicy.OVERLAP`` (the fixed cost is less than one request's HTTP path, ~1 ms:
  TinyVGG's is ~0.02 ms): a batch takes what is queued and waits only for requests
  already being decoded; decoding and answering overlap the runs.
- ``None`` (no costs measured, as in tests with fake models): as HOLD, but expecting back
  only as many requests as the last run answered.

Two priorities share the one model (no second copy of it): predictions, and the forward
passes of explanations (``Priority.EXPLAIN``). Whenever both wait, the prediction is
taken: an explanation's batch runs when no prediction is queued or on its way
(``arriving``), so predictions wait at most for one explanation batch already running,
which the engine keeps small. Explanation batches never wait to fill (the engine already
sends them full) and never join a prediction's run. The queue limit counts predictions
against the predictions queued (explanations queued ahead of a prediction do not delay
it), and explanations against everything queued.

How long an explanation batch holds the model is the batcher's call too
(``explain_batch_images``, which the engine asks before each batch): while predictions
flow (one is queued or on its way, or one ran in the last ``PREDICTIONS_QUIET_SECONDS``),
a batch carries no more images than the model gets through in ``EXPLAIN_SHARE`` of the
last prediction run (measured on explanation runs; at least one image). Explanation
batches slip into the gaps between prediction runs, and a prediction that arrives during
one waits a fraction of a run more, not a long batch. With no prediction about, the
engine's whole batch (nobody waits).

Priority without starvation: under a prediction load that never lets the queue empty,
that rule alone would hold an explanation back for ever. So an explanation batch that
has been passed over by ``explain_after`` prediction runs in a row gets the next run
(one batch, then predictions go first again). Predictions then share the model with at
most one small explanation batch in every ``explain_after + 1`` runs; an explanation
under such a load advances a batch at a time, never stops.
"""

from __future__ import annotations

import asyncio
import collections
import enum
import logging
import math
import time
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from service.errors import ModelNotReady, Overloaded

log = logging.getLogger("convscope.batching")

# Prediction runs in a row that may pass over a waiting explanation batch before it gets
# one run (the anti-starvation rule above).
EXPLAIN_AFTER = 4
# With no prediction run for this long, explanation batches are not held short.
PREDICTIONS_QUIET_SECONDS = 1.0
# While predictions flow, an explanation batch holds the model for at most about this share
# of the last prediction run: it fills the gaps between prediction runs without doubling
# the predictions' latency (measured: a batch as long as a run made AlexNet's predict p99 at
# concurrency 8 2.5x; benchmarks/RESULTS-explain.md).
EXPLAIN_SHARE = 0.25


@dataclass(frozen=True)
class BatchingOptions:
    """One model's batcher: how many images a run takes, how long it waits to fill."""

    max_batch_size: int = 32
    max_queue_delay_ms: float = 0.0
    max_queue_size: int = 256
    arrival_wait_ms: float = 15.0


@dataclass(frozen=True)
class BatchingPolicy:
    """The batcher options of every model: the server's, and any model's own."""

    default: BatchingOptions = BatchingOptions()
    per_model: Mapping[str, BatchingOptions] = field(default_factory=dict)

    def for_model(self, name: str) -> BatchingOptions:
        return self.per_model.get(name, self.default)


class Runnable(Protocol):
    """What the batcher drives: ModelRuntime in the service, a fake in tests."""

    def run(self, batch: np.ndarray, outputs: tuple[str, ...]) -> list[np.ndarray]: ...


class BatchObserver(Protocol):
    def batch_done(self, batch_size: int, queue_seconds: list[float], compute_seconds: float) -> None: ...

    def queue_depth(self, images: int) -> None: ...


class BatchPolicy(enum.Enum):
    """How a prediction batch waits for requests not yet queued (see the module's doc)."""

    HOLD = "hold"
    OVERLAP = "overlap"


# A merge of two runs saves the model's fixed cost per run; bringing one more request in
# costs its HTTP path on the event loop, ~0.6-1 ms of CPU on the 2-core benchmark machine
# (benchmarks/peers/FINDINGS.md). Holding batches pays when the saving is at least that.
HOLD_MIN_FIXED_SECONDS = 0.001
# A hold waits up to this many times as long as recent holds took to fill (returns vary);
# after one ran out before its batch filled, the next may wait this many times as long.
HOLD_MARGIN = 1.5
HOLD_GROWTH = 1.5
# How much of the smoothed fill time one hold's fill time makes up.
HOLD_SMOOTHING = 0.25


@dataclass(frozen=True)
class BatchCosts:
    """Seconds of one run at two or more batch sizes, as timed at load; a run of b images
    costs about ``fixed + b * per_image`` (the straight line through the smallest and
    largest size timed)."""

    seconds: dict[int, float]

    def __post_init__(self) -> None:
        if len(self.seconds) < 2 or min(self.seconds) < 1:
            raise ValueError("batch costs need at least two batch sizes, each of at least one image")

    @property
    def per_image(self) -> float:
        small, large = min(self.seconds), max(self.seconds)
        return max(0.0, (self.seconds[large] - self.seconds[small]) / (large - small))

    @property
    def fixed(self) -> float:
        small = min(self.seconds)
        return max(0.0, self.seconds[small] - small * self.per_image)

    def policy(self) -> BatchPolicy:
        return BatchPolicy.HOLD if self.fixed >= HOLD_MIN_FIXED_SECONDS else BatchPolicy.OVERLAP

    def describe(self) -> str:
        """The choice and why, for the log."""
        policy = self.policy()
        why = ("full batches: merging two runs saves more than a request's HTTP path costs"
               if policy is BatchPolicy.HOLD else "overlap: a merge saves less than a request's HTTP path costs")
        sizes = ", ".join(f"batch {b}: {t * 1000:.2f} ms" for b, t in sorted(self.seconds.items()))
        return (f"batch policy {policy.value} ({sizes}; a run costs {self.fixed * 1000:.2f} ms + "
                f"{self.per_image * 1000:.3f} ms per image; {why}, {HOLD_MIN_FIXED_SECONDS * 1000:g} ms)")


class Priority(enum.IntEnum):
    """Who a run is for; lower runs first."""

    PREDICT = 0
    EXPLAIN = 1


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
    priority: Priority = Priority.PREDICT
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
        explain_after: int = EXPLAIN_AFTER,
        policy: BatchPolicy | None = None,
    ) -> None:
        self.model = model
        self.max_batch_size = max_batch_size
        self.max_queue_delay = max_queue_delay_ms / 1000.0
        self.max_queue_size = max_queue_size
        self.arrival_wait = arrival_wait_ms / 1000.0
        self.policy = policy
        self._arriving = 0
        self._last_run_images = 0
        self._last_run_seconds = 0.0
        self._queued_at_run_end = 0  # predictions that queued while the last prediction run ran
        self._fill_seconds: float | None = None  # how long holds take to gather what they expect (HOLD)
        self._last_prediction_end = -math.inf  # perf_counter() when the last prediction run ended
        self._explain_image_seconds: float | None = None  # compute per image of explanation runs, smoothed
        self.observer = observer
        self.label = label
        if explain_after < 1:
            raise ValueError("explain_after must be at least 1")
        self.explain_after = explain_after
        self._passed_over = 0  # prediction runs taken in a row while an explanation waited
        self.runs = 0  # onnxruntime calls made: batching is tested by counting these
        # One queue per priority, oldest first in each.
        self._queues: dict[Priority, collections.deque[_Request]] = {p: collections.deque() for p in Priority}
        self._queued_images = 0
        self._queued_by_priority: dict[Priority, int] = {p: 0 for p in Priority}
        self._wakeup = asyncio.Event()
        # One thread per model: runs of one model never overlap (onnxruntime already uses
        # every core inside a run), and overlap is what would defeat batching.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"ort-{label}")
        self._worker: asyncio.Task[None] | None = None
        self._running: list[_Request] = []
        self._forming: list[_Request] = []  # a batch begun that waits for more (out of the queue)
        self._stopped = False

    @property
    def queued_images(self) -> int:
        return self._queued_images

    @property
    def alone(self) -> bool:
        """A lone client: nothing queued, gathering, running or being decoded, and the last
        prediction run answered one image (after a batch, more of its clients come back)."""
        idle = not (self._queued_images or self._forming or self._running or self._arriving)
        return idle and self._last_run_images <= 1

    def explain_batch_images(self, most: int) -> int:
        """How many images an explanation's next batch should carry, at most ``most``: all
        of them while no prediction is about; else no more than the model gets through in
        ``EXPLAIN_SHARE`` of the last prediction run (one image until an explanation run has
        shown what an image costs), so a prediction never waits long behind one."""
        quiet = time.perf_counter() - self._last_prediction_end > PREDICTIONS_QUIET_SECONDS
        if quiet and not self._queued_by_priority[Priority.PREDICT] and not self._arriving:
            return most
        if self._explain_image_seconds is None:
            return 1
        fits = int(EXPLAIN_SHARE * self._last_run_seconds / max(self._explain_image_seconds, 1e-9))
        return max(1, min(most, fits))

    def start(self) -> None:
        if self._worker is None:
            self._worker = asyncio.get_running_loop().create_task(self._loop(), name=f"batcher-{self.label}")

    def _gone(self) -> ModelNotReady:
        return ModelNotReady(f"model {self.label} was stopped (unloaded, or the server is shutting down); retry")

    async def stop(self) -> None:
        """Stop the worker; a request still queued or running fails with ModelNotReady (503),
        and so does any later ``infer``: nothing waits on a batcher that will never run."""
        self._stopped = True
        if self._worker is not None:
            self._worker.cancel()
            try:
                await self._worker
            except asyncio.CancelledError:
                pass
            self._worker = None
        for request in [*self._queued(), *self._forming, *self._running]:
            if not request.future.done():
                request.future.set_exception(self._gone())
        for queue in self._queues.values():
            queue.clear()
        self._queued_images = 0
        self._queued_by_priority = {p: 0 for p in Priority}
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

    async def infer(
        self, inputs: np.ndarray, outputs: tuple[str, ...], priority: Priority = Priority.PREDICT
    ) -> InferenceResult:
        """Queue ``inputs`` ([N, ...]); resolves with this request's own N rows of each output.

        ``priority``: PREDICT for client requests, EXPLAIN for an explanation's passes,
        which run while no prediction waits (or, once, after ``explain_after``
        prediction runs in a row passed them over). Raises Overloaded at once when the queue
        is full. If the caller is cancelled (its client went away) while queued, the
        request leaves the queue and never runs.
        """
        if self._stopped:
            raise self._gone()
        size = int(inputs.shape[0])
        ahead = self._queued_images if priority is Priority.EXPLAIN else self._queued_by_priority[Priority.PREDICT]
        if ahead and ahead + size > self.max_queue_size:
            raise Overloaded(
                f"model {self.label} has {ahead} images queued (limit "
                f"{self.max_queue_size}); retry shortly"
            )
        request = _Request(inputs, outputs, asyncio.get_running_loop().create_future(), priority)
        self._queues[priority].append(request)
        self._queued_by_priority[priority] += size
        self._set_depth(self._queued_images + size)
        self._wakeup.set()
        try:
            return await request.future
        finally:
            if not request.future.done() or request.future.cancelled():
                self._discard(request)

    def _discard(self, request: _Request) -> None:
        try:
            self._queues[request.priority].remove(request)
        except ValueError:
            return  # already taken into a batch
        self._queued_by_priority[request.priority] -= request.size
        self._set_depth(self._queued_images - request.size)

    def _recount(self) -> None:
        """Queued images per priority and in all, from the queues themselves."""
        self._queued_by_priority = {p: sum(r.size for r in self._queues[p]) for p in Priority}
        self._set_depth(sum(self._queued_by_priority.values()))

    def _queued(self) -> list[_Request]:
        return [request for priority in Priority for request in self._queues[priority]]

    def _set_depth(self, images: int) -> None:
        self._queued_images = images
        if self.observer is not None:
            self.observer.queue_depth(images)

    def _take_matching(self, group: list[_Request], images: int) -> int:
        """Move queued requests of the group's priority with its outputs into it, oldest
        first, while they fit."""
        outputs, priority = group[0].outputs, group[0].priority
        queue = self._queues[priority]
        kept: collections.deque[_Request] = collections.deque()
        while queue:
            request = queue.popleft()
            if request.future.done():
                continue
            if request.outputs == outputs and images + request.size <= self.max_batch_size:
                group.append(request)
                images += request.size
            else:
                kept.append(request)
        self._queues[priority] = kept
        return images

    def _pop_live(self, priority: Priority) -> _Request | None:
        queue = self._queues[priority]
        while queue:
            request = queue.popleft()
            if not request.future.done():
                return request
        return None

    def _pop_first(self) -> _Request | None:
        """The oldest prediction; else the oldest explanation, unless a prediction is on
        its way (it would wait a whole explanation run). But an explanation passed over by
        ``explain_after`` prediction runs in a row goes first, once."""
        waiting = any(not r.future.done() for r in self._queues[Priority.EXPLAIN])
        if not waiting:
            self._passed_over = 0
        elif self._passed_over >= self.explain_after:
            self._passed_over = 0
            return self._pop_live(Priority.EXPLAIN)
        request = self._pop_live(Priority.PREDICT)
        if request is not None:
            if waiting:
                self._passed_over += 1
            return request
        if self._arriving:
            return None
        self._passed_over = 0
        return self._pop_live(Priority.EXPLAIN)

    async def _next_group(self) -> list[_Request]:
        while True:
            first = self._pop_first()
            if first is not None:
                break
            self._wakeup.clear()
            await self._wakeup.wait()
        group = [first]
        images = self._take_matching(group, first.size)
        if first.priority is Priority.EXPLAIN:  # sent full by the engine: waiting only delays
            self._recount()
            return group
        self._forming = group  # left set if cancelled: stop() fails these requests too
        await self._gather(group, images)
        self._forming = []
        self._recount()
        return group

    async def _gather(self, group: list[_Request], images: int) -> None:
        """Wait for more of the group's requests, within the batch's deadline."""
        now = time.perf_counter()
        # Likely to come back: the clients the last run answered and, when holding, those
        # that queued during it.
        expected = self._last_run_images
        if self.policy is BatchPolicy.HOLD:
            expected = min(self.max_batch_size, self._queued_at_run_end + self._last_run_images)
        holding = self.policy is BatchPolicy.HOLD and images < expected
        bound = self.hold_bound()
        filled_after: float | None = None
        while images < self.max_batch_size:
            deadline = self._deadline(now, images, expected, bound)
            remaining = deadline - time.perf_counter()
            if remaining <= 0:
                break
            self._wakeup.clear()
            try:
                await asyncio.wait_for(self._wakeup.wait(), remaining)
            except TimeoutError:
                break
            images = self._take_matching(group, images)
            if filled_after is None and images >= expected:
                filled_after = time.perf_counter() - now
        if holding:
            self._learn_fill(filled_after, bound)

    def hold_bound(self) -> float:
        """How long the next prediction batch may wait for clients only likely to come
        back: never more than half the last run (the model would idle longer than it ran)."""
        half_run = self._last_run_seconds / 2
        if self.policy is BatchPolicy.HOLD and self._fill_seconds is not None:
            return min(half_run, max(self.arrival_wait, HOLD_MARGIN * self._fill_seconds))
        return min(self.arrival_wait, half_run)

    def _learn_fill(self, filled_after: float | None, bound: float) -> None:
        """A hold is over: it gathered what it expected after ``filled_after`` seconds, or
        (None) ran out after ``bound``, and the next may wait ``HOLD_GROWTH`` times as long."""
        if filled_after is None:
            self._fill_seconds = HOLD_GROWTH * bound / HOLD_MARGIN
        elif self._fill_seconds is None:
            self._fill_seconds = filled_after
        else:
            self._fill_seconds += HOLD_SMOOTHING * (filled_after - self._fill_seconds)

    def _deadline(self, now: float, images: int, expected: int, bound: float) -> float:
        """Until when a prediction batch of ``images``, begun at ``now``, waits for more."""
        deadline = now + self.max_queue_delay
        if self._arriving:  # known to be on their way: worth the whole bound
            deadline = max(deadline, now + max(self.arrival_wait, bound))
        if self.policy is not BatchPolicy.OVERLAP and images < expected:
            # Only likely to come back: never idle the model longer than the hold bound.
            deadline = max(deadline, now + bound)
        return deadline

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
                self._running = []
                continue
            finished = time.perf_counter()
            self.runs += 1
            if group[0].priority is Priority.PREDICT:
                # Only predictions' clients "come straight back" for the arrival wait.
                self._last_run_images = int(batch.shape[0])
                self._last_run_seconds = finished - started
                self._last_prediction_end = finished
                self._queued_at_run_end = self._queued_by_priority[Priority.PREDICT]
            else:
                per_image = (finished - started) / max(int(batch.shape[0]), 1)
                old = self._explain_image_seconds
                self._explain_image_seconds = per_image if old is None else (old + per_image) / 2
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
