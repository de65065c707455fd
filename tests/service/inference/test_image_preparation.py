"""Decoding memory, counted from the headers: per image by mode, per request, and over
every request in flight (the decode budget)."""

from __future__ import annotations

import asyncio
import io
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from PIL import Image

from artifact import InputRecipe
from service.errors import BadRequest, Overloaded, PayloadTooLarge
from service.inference.image_preparation import BudgetObserver, DecodeBudget, ImagePreparer, WaitOutcome
from service.inference.preprocessing import InputSpec, decode_cost, open_checked

GREY = InputSpec.from_recipe(InputRecipe.model_validate({"channels": 1, "size": [8, 8], "resize": "bilinear", "scale": 1 / 255,
                                "mean": [0.5], "std": [0.25]}))


def encoded(array: np.ndarray, format: str = "PNG", **options: object) -> bytes:
    out = io.BytesIO()
    Image.fromarray(array).save(out, format=format, **options)
    return out.getvalue()


BIG16 = encoded(np.full((100, 100), 1234, dtype=np.uint16))  # 16-bit grey: 13 bytes a pixel to L


@pytest.mark.parametrize("data, mode, per_pixel", [
    (BIG16, "L", 2 * 2 + (2 + 4 + 1 + 1) + 1),  # frame + transposed copy, samples, float32, uint8, L, converted
    (encoded(np.zeros((100, 100, 3), np.uint8), "JPEG"), "L", 2 * 4 + 1),  # RGB is stored as 4 bytes
    (encoded(np.zeros((100, 100, 3), np.uint8), "JPEG"), "RGB", 2 * 4),
    (encoded(np.zeros((100, 100), np.uint8)), "L", 2 * 1),  # already L: no conversion
    (encoded(np.zeros((100, 100, 4), np.uint8)), "RGB", 2 * 4 + 3 * 4 + 4),  # alpha composited on black
])
def test_decode_cost_by_mode(data: bytes, mode: str, per_pixel: int) -> None:
    assert decode_cost(open_checked(data, max_pixels=10**8), mode) == 100 * 100 * per_pixel


@pytest.fixture
def pool() -> Iterator[ThreadPoolExecutor]:
    with ThreadPoolExecutor(2) as executor:
        yield executor


def preparer(pool: ThreadPoolExecutor, budget: int, per_request: int) -> ImagePreparer:
    return ImagePreparer(pool, max_pixels=10**8, budget=DecodeBudget(budget), max_request_bytes=per_request)


@pytest.mark.anyio
async def test_a_request_over_its_limit_is_refused_before_decoding(pool: ThreadPoolExecutor) -> None:
    images = preparer(pool, budget=1_000_000, per_request=200_000)
    with pytest.raises(PayloadTooLarge, match="260000 bytes .* the limit is 200000"):
        await images.prepare(GREY, [BIG16, BIG16])  # 130 000 bytes each
    assert images.budget.in_flight == 0


@pytest.mark.anyio
async def test_a_spent_budget_is_a_503_and_every_decode_gives_its_share_back(pool: ThreadPoolExecutor) -> None:
    images = preparer(pool, budget=300_000, per_request=300_000)
    assert images.budget.reserve(200_000)  # another request's decodes in flight
    with pytest.raises(Overloaded, match="200000 of the 300000 bytes"):
        await images.prepare(GREY, [BIG16])
    images.budget.release(200_000)
    prepared = await images.prepare(GREY, [BIG16, BIG16])
    assert prepared.tensor.shape == (2, 1, 8, 8)
    assert images.budget.in_flight == 0


@pytest.mark.anyio
async def test_a_corrupt_image_gives_the_whole_reservation_back(pool: ThreadPoolExecutor) -> None:
    images = preparer(pool, budget=1_000_000, per_request=1_000_000)
    truncated = BIG16[: len(BIG16) // 2]
    with pytest.raises(BadRequest):
        await images.prepare(GREY, [BIG16, truncated])
    pool.shutdown(wait=True)  # the other image's decode has ended too
    assert images.budget.in_flight == 0


def waiting(pool: ThreadPoolExecutor, budget: int, wait_s: float) -> ImagePreparer:
    return ImagePreparer(pool, max_pixels=10**8, budget=DecodeBudget(budget, wait_s), max_request_bytes=budget)


@pytest.mark.anyio
async def test_a_request_waits_for_its_share_and_is_decoded_when_it_comes_back(pool: ThreadPoolExecutor) -> None:
    images = waiting(pool, budget=200_000, wait_s=30)
    assert images.budget.reserve(150_000)  # another request's decodes in flight
    pending = asyncio.ensure_future(images.prepare(GREY, [BIG16]))  # 130 000 bytes: does not fit
    await asyncio.sleep(0.05)
    assert not pending.done()
    small = await images.prepare(GREY, [encoded(np.zeros((8, 8), np.uint8))])  # fits: goes past the waiter
    assert small.tensor.shape == (1, 1, 8, 8)
    images.budget.release(150_000)  # on the loop here; decode threads release the same way
    prepared = await asyncio.wait_for(pending, 10)
    assert prepared.tensor.shape == (1, 1, 8, 8)
    assert images.budget.in_flight == 0


@pytest.mark.anyio
async def test_waiters_are_served_in_arrival_order() -> None:
    budget = DecodeBudget(100, wait_s=30)
    assert budget.reserve(100)
    order: list[str] = []

    async def want(name: str, amount: int) -> None:
        assert await budget.acquire(amount)
        order.append(name)

    first = asyncio.ensure_future(want("first", 80))
    await asyncio.sleep(0.01)
    second = asyncio.ensure_future(want("second", 20))
    await asyncio.sleep(0.01)
    budget.release(100)
    await asyncio.wait_for(asyncio.gather(first, second), 10)
    assert order == ["first", "second"] and budget.in_flight == 100


@pytest.mark.anyio
async def test_a_wait_that_runs_out_is_a_503_naming_both_settings(pool: ThreadPoolExecutor) -> None:
    images = waiting(pool, budget=200_000, wait_s=0.1)
    assert images.budget.reserve(150_000)
    with pytest.raises(Overloaded, match="CONVSCOPE_DECODE_BUDGET_BYTES.*stayed taken for 0.1 s.*WAIT_S"):
        await images.prepare(GREY, [BIG16])
    images.budget.release(150_000)
    assert images.budget.in_flight == 0


@pytest.mark.anyio
async def test_a_waiter_whose_client_goes_away_leaves_nothing_reserved() -> None:
    budget = DecodeBudget(100, wait_s=30)
    assert budget.reserve(100)
    waiter = asyncio.ensure_future(budget.acquire(60))
    await asyncio.sleep(0.01)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    budget.release(100)
    assert budget.in_flight == 0


@pytest.mark.anyio
async def test_a_grant_that_arrives_as_the_waiter_leaves_is_given_back() -> None:
    budget = DecodeBudget(100, wait_s=30)
    assert budget.reserve(100)
    waiter = asyncio.ensure_future(budget.acquire(60))
    await asyncio.sleep(0.01)
    waiter.cancel()  # its client went away ...
    budget.release(100)  # ... and a decode thread grants it the 60 bytes before the loop has seen that
    with pytest.raises(asyncio.CancelledError):
        await waiter
    await asyncio.sleep(0.01)  # the grant reaches the loop and finds no one
    assert budget.in_flight == 0


class Recorder(BudgetObserver):
    def __init__(self) -> None:
        self.levels: list[int] = []
        self.outcomes: list[WaitOutcome] = []

    def in_flight(self, amount: int) -> None:
        self.levels.append(amount)

    def waited(self, outcome: WaitOutcome) -> None:
        self.outcomes.append(outcome)


@pytest.mark.anyio
async def test_the_budget_reports_what_it_holds_and_how_each_wait_ended() -> None:
    seen = Recorder()
    budget = DecodeBudget(100, wait_s=0.05, observer=seen)
    assert budget.reserve(70)
    assert not await budget.acquire(40)  # the wait runs out
    gone = asyncio.ensure_future(budget.acquire(40))
    await asyncio.sleep(0.01)
    gone.cancel()
    with pytest.raises(asyncio.CancelledError):
        await gone
    granted = asyncio.ensure_future(budget.acquire(40))
    await asyncio.sleep(0.01)
    budget.release(70)
    assert await asyncio.wait_for(granted, 10)
    budget.release(40)
    assert seen.outcomes == [WaitOutcome.REFUSED, WaitOutcome.GONE, WaitOutcome.GRANTED]
    assert seen.levels == [70, 0, 40, 0]


@pytest.mark.anyio
async def test_an_image_alone_is_decoded_on_the_loop_and_under_load_on_the_pool() -> None:
    closed = ThreadPoolExecutor(1)
    closed.shutdown()  # any hand-off to it fails: what decodes here never touched the pool
    images = preparer(closed, budget=1_000_000, per_request=1_000_000)
    mid = encoded(np.zeros((100, 100), np.uint8))  # over INLINE_PIXELS, within ALONE_INLINE_PIXELS
    admission = await images.admit(GREY, [mid])
    with admission:
        prepared = await admission.decode(alone=True)
    assert prepared.tensor.shape == (1, 1, 8, 8)
    admission = await images.admit(GREY, [mid])
    with admission, pytest.raises(RuntimeError, match="shutdown"):
        await admission.decode()
    assert images.budget.in_flight == 0
