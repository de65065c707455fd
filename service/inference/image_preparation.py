"""From encoded images in a request to one float32 batch, and where that work runs.

Only the headers are read on the event loop (cheap whatever the image, and enough to refuse
a decompression bomb). An image of more than INLINE_PIXELS is decoded and preprocessed on a
worker thread; a smaller one (a 28 px digit) right on the loop, where it costs less than
the hand-off would, and so is a lone client's one image of up to ALONE_INLINE_PIXELS (a
224 px photo), since nothing else waits for the loop meanwhile. The memory decoding takes is known from the headers too
(preprocessing.decode_cost) and bounded before any pixel is decoded: per request (413) and
over every request in flight (the decode budget: a request waits for its share, then
503 with Retry-After). ``admit`` does the headers and the budget, ``Admission.decode`` the
pixels, so the data plane can count an image as arriving only once it is being decoded.
"""

from __future__ import annotations

import asyncio
import functools
import threading
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from enum import Enum

import numpy as np
from numpy.typing import NDArray

from service.errors import Overloaded, PayloadTooLarge
from service.inference.preprocessing import (
    REDUCING_GAP,
    Header,
    InputSpec,
    decode_cost,
    load,
    open_header,
    preprocess,
    reduce_on_decode,
)

# Decoding and resizing an image this small takes tens of microseconds: less than handing
# it to a worker thread and back (the benchmark's 28 px digits gained ~15% images/s).
INLINE_PIXELS = 64 * 64
# A request's one image is decoded on the loop up to this size too when nothing else is
# being served by its model (``decode(alone=True)``): at one client the loop has nothing
# else to do meanwhile, and the hand-off there and back only adds to the latency (a 224 px
# photo decodes in ~0.6 ms as a plain PNG, ~1.1 ms through Pillow). Larger ones still go to
# the pool: a client arriving meanwhile should not wait long for the loop. Under load,
# images go to the pool and decode side by side.
ALONE_INLINE_PIXELS = 256 * 256
# A PNG of up to this many pixels may be read as a PlainPng: its chunk list is walked on the
# loop, and a large PNG has thousands of chunks (Pillow reads those, on the pool).
PLAIN_PNG_PIXELS = 256 * 256


@dataclass(frozen=True)
class PreparationOptions:
    """How encoded images become tensors in this process, and how much of it at once."""

    threads: int = 4  # decode and preprocess threads, off the event loop
    max_pixels: int = 40_000_000  # a decoded image's largest width x height
    budget_bytes: int = 512 * 1024 * 1024  # decoding memory over every request in flight
    budget_wait_s: float = 5.0  # a request's longest wait for its share of the budget
    max_request_bytes: int = 256 * 1024 * 1024  # decoding memory of one request's images
    full_resolution: bool = False  # decode every image whole, as the export stage did

    @property
    def reducing_gap(self) -> float | None:
        """preprocessing's integer shrink of large images before the resample (None: the
        exact full-resolution path)."""
        return None if self.full_resolution else REDUCING_GAP


@dataclass(frozen=True)
class PreparedImages:
    tensor: NDArray[np.float32]  # [N, C, H, W]
    decode_seconds: float
    preprocess_seconds: float


@dataclass(frozen=True)
class _Prepared:
    tensor: NDArray[np.float32]  # [C, H, W]
    decode_seconds: float
    preprocess_seconds: float


class DecodeBudget:
    """Bytes of decoding memory in flight over every request of the process: reserved on the
    event loop before a request's images are decoded, given back by each image as its
    decode ends, on whichever thread that is.

    A request that does not fit waits up to ``wait_s`` for the bytes to come back, first
    come first served among the waiters: camera photos arriving in a burst are decoded a few
    at a time instead of half of them being told to retry (a 4K PNG takes 66 MB, so the
    default budget holds 8 at once, more than 2 cores decode anyway). A request that fits
    goes at once, even past waiters: a small image is never held behind large ones; a large
    one that cannot get its bytes within ``wait_s`` is answered 503."""

    def __init__(self, capacity: int, wait_s: float = 0.0, observer: BudgetObserver | None = None) -> None:
        self.capacity = capacity
        self.wait_s = wait_s
        self.in_flight = 0
        self.observer = observer or BudgetObserver()
        self._lock = threading.Lock()
        self._waiters: deque[_Waiter] = deque()

    def reserve(self, amount: int) -> bool:
        with self._lock:
            if self.in_flight + amount > self.capacity:
                return False
            self._add(amount)
            return True

    async def acquire(self, amount: int) -> bool:
        """Reserve ``amount``, waiting up to ``wait_s`` for it; False when it did not come."""
        if self.reserve(amount):
            return True
        if self.wait_s <= 0 or amount > self.capacity:
            self.observer.waited(WaitOutcome.REFUSED)
            return False
        loop = asyncio.get_running_loop()
        waiter = _Waiter(amount, loop, loop.create_future())
        with self._lock:
            self._waiters.append(waiter)
        try:
            await asyncio.wait_for(waiter.granted, self.wait_s)
        except TimeoutError:
            self._forget(waiter)
            self.observer.waited(WaitOutcome.REFUSED)
            return False
        except asyncio.CancelledError:  # the client went away while it waited
            self._forget(waiter)
            self.observer.waited(WaitOutcome.GONE)
            raise
        self.observer.waited(WaitOutcome.GRANTED)
        return True

    def _add(self, amount: int) -> None:
        """Under the lock."""
        self.in_flight += amount
        self.observer.in_flight(self.in_flight)

    def _forget(self, waiter: _Waiter) -> None:
        with self._lock:
            if waiter in self._waiters:
                self._waiters.remove(waiter)
                return
        if waiter.granted.done() and not waiter.granted.cancelled():
            self.release(waiter.amount)  # granted just before it gave up
        else:
            waiter.granted.cancel()  # the grant still on its way to the loop gives the bytes back

    def release(self, amount: int) -> None:
        with self._lock:
            self._add(-amount)
            granted = []
            while self._waiters and self.in_flight + self._waiters[0].amount <= self.capacity:
                waiter = self._waiters.popleft()
                self._add(waiter.amount)
                granted.append(waiter)
        for waiter in granted:  # release runs on decode threads too: futures are the loop's
            waiter.loop.call_soon_threadsafe(self._grant, waiter)

    def _grant(self, waiter: _Waiter) -> None:
        if waiter.granted.done():  # the waiter gave up (timed out, or its client went away)
            self.release(waiter.amount)
        else:
            waiter.granted.set_result(None)


class WaitOutcome(Enum):
    """How a request that did not fit the budget at once fared."""

    GRANTED = "granted"  # its share came back within the wait
    REFUSED = "refused"  # it did not (or there was no wait): 503
    GONE = "gone"  # its client went away while it waited


class BudgetObserver:
    """What the budget reports, for the metrics; this one reports nowhere. Called under the
    budget's lock and from decode threads: implementations must be quick and thread-safe."""

    def in_flight(self, amount: int) -> None:
        pass

    def waited(self, outcome: WaitOutcome) -> None:
        pass


@dataclass(eq=False)
class _Waiter:
    amount: int
    loop: asyncio.AbstractEventLoop
    granted: asyncio.Future[None]


class ImagePreparer:
    """Decodes and preprocesses images for a model, on the loop or on its own thread pool,
    within a per-request limit and a budget shared by all requests, both in bytes of
    decoding memory (preprocessing.decode_cost), both checked from the headers alone."""

    def __init__(self, pool: ThreadPoolExecutor, *, max_pixels: int, budget: DecodeBudget,
                 max_request_bytes: int) -> None:
        self.pool = pool
        self.max_pixels = max_pixels
        self.budget = budget
        self.max_request_bytes = max_request_bytes

    async def prepare(self, spec: InputSpec, images: list[bytes]) -> PreparedImages:
        admission = await self.admit(spec, images)
        with admission:
            return await admission.decode()

    async def admit(self, spec: InputSpec, images: list[bytes]) -> Admission:
        """Read the images' headers and reserve the memory their decoding takes (waiting
        for it if need be). Use the answer as a context manager: what it did not hand to a
        decode is given back on leaving it, however it is left."""
        opened: list[tuple[Header, float]] = []
        for data in images:
            started = time.perf_counter()
            image = open_header(data, max_pixels=self.max_pixels, plain_pixels=PLAIN_PNG_PIXELS)
            reduce_on_decode(image, spec)  # first: the decode is counted at the size it will have
            opened.append((image, time.perf_counter() - started))
        costs = [decode_cost(image, spec.mode) for image, _ in opened]
        await self._reserve(sum(costs))
        return Admission(self.pool, self.budget, spec, opened, costs)

    async def _reserve(self, total: int) -> None:
        if total > self.max_request_bytes:
            raise PayloadTooLarge(
                f"decoding this request's images takes about {total} bytes of memory; the limit is "
                f"{self.max_request_bytes} (CONVSCOPE_MAX_REQUEST_DECODE_BYTES): send fewer or smaller "
                "images, or 8-bit ones (a 16-bit image takes 13 bytes a pixel, an 8-bit RGB one 8)"
            )
        if not await self.budget.acquire(total):
            raise Overloaded(
                f"decoding this request's images takes about {total} bytes of memory and "
                f"{self.budget.in_flight} of the {self.budget.capacity} bytes the server decodes at once "
                f"(CONVSCOPE_DECODE_BUDGET_BYTES) stayed taken for {self.budget.wait_s:g} s "
                "(CONVSCOPE_DECODE_BUDGET_WAIT_S): retry shortly"
            )


class Admission:
    """A request's images, their headers read and their decoding memory reserved: waiting
    for the budget is over, decoding has not begun. The data plane decodes them inside the
    batcher's ``arriving()``, which should count only images being decoded."""

    def __init__(self, pool: ThreadPoolExecutor, budget: DecodeBudget, spec: InputSpec,
                 opened: list[tuple[Header, float]], costs: list[int]) -> None:
        self.pool = pool
        self.budget = budget
        self.spec = spec
        self.opened = opened
        self.costs = costs
        self.handed = 0  # bytes whose release is now up to a finished (or cancelled) decode

    def __enter__(self) -> Admission:
        return self

    def __exit__(self, *exc: object) -> None:
        self.budget.release(sum(self.costs) - self.handed)
        self.handed = sum(self.costs)

    async def decode(self, *, alone: bool = False) -> PreparedImages:
        """The images as one batch. ``alone``: nothing else is being served, so a single image
        of up to ALONE_INLINE_PIXELS is decoded right here rather than on the pool."""
        loop = asyncio.get_running_loop()
        pending: list[asyncio.Future[_Prepared]] = []
        inline_pixels = ALONE_INLINE_PIXELS if alone and len(self.opened) == 1 else INLINE_PIXELS
        try:
            for (image, header_seconds), cost in zip(self.opened, self.costs):
                if image.width * image.height <= inline_pixels:
                    done: asyncio.Future[_Prepared] = loop.create_future()
                    self.handed += cost
                    try:
                        done.set_result(_finish(image, self.spec, header_seconds))
                    finally:
                        self.budget.release(cost)
                    pending.append(done)
                else:
                    job = self.pool.submit(_finish, image, self.spec, header_seconds)
                    self.handed += cost
                    job.add_done_callback(functools.partial(_give_back, self.budget, cost))
                    pending.append(asyncio.wrap_future(job))
        except BaseException:
            for future in pending:
                future.cancel()  # a queued decode is dropped, and gives its bytes back
            raise
        results = await asyncio.gather(*pending)
        tensor = results[0].tensor[None] if len(results) == 1 else np.stack([r.tensor for r in results])
        return PreparedImages(
            tensor=tensor,
            decode_seconds=sum(r.decode_seconds for r in results),
            preprocess_seconds=sum(r.preprocess_seconds for r in results),
        )


def _give_back(budget: DecodeBudget, cost: int, _: Future[_Prepared]) -> None:
    budget.release(cost)


def _finish(image: Header, spec: InputSpec, header_seconds: float) -> _Prepared:
    """Decode the pixels of a header-checked image and preprocess them (on the event loop
    or a worker thread)."""
    started = time.perf_counter()
    decoded = load(image)
    decoded_at = time.perf_counter()
    tensor = preprocess(decoded, spec)
    return _Prepared(tensor, header_seconds + decoded_at - started, time.perf_counter() - decoded_at)
