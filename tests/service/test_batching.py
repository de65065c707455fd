"""The dynamic batcher, tested by behaviour against a model that counts its runs."""

from __future__ import annotations

import asyncio
import threading
import time

import numpy as np
import pytest

from service.batching import DynamicBatcher, Priority
from service.errors import Overloaded

pytestmark = pytest.mark.anyio


class CountingModel:
    """out = input * 2 (and + 1 for a second output); each run takes ``delay`` seconds."""

    def __init__(self, delay: float = 0.02) -> None:
        self.delay = delay
        self.batches: list[tuple[int, tuple[str, ...]]] = []
        self.gate = threading.Event()
        self.gate.set()

    def run(self, batch: np.ndarray, outputs: tuple[str, ...]) -> list[np.ndarray]:
        self.gate.wait(5)
        time.sleep(self.delay)
        self.batches.append((batch.shape[0], outputs))
        return [batch * 2 if name == "double" else batch + 1 for name in outputs]


def make(model: CountingModel, **kwargs: float) -> DynamicBatcher:
    options = dict(max_batch_size=32, max_queue_delay_ms=0, max_queue_size=256)
    options.update(kwargs)
    batcher = DynamicBatcher(model, **options)  # type: ignore[arg-type]
    batcher.start()
    return batcher


def inputs(i: int, n: int = 1) -> np.ndarray:
    return np.full((n, 2), float(i), dtype=np.float32)


async def test_concurrent_requests_share_runs_and_get_their_own_rows() -> None:
    model = CountingModel()
    batcher = make(model)
    results = await asyncio.gather(*(batcher.infer(inputs(i), ("double",)) for i in range(20)))
    await batcher.stop()
    assert len(model.batches) < 20
    assert sum(n for n, _ in model.batches) == 20
    for i, result in enumerate(results):
        np.testing.assert_array_equal(result.outputs[0], inputs(i) * 2)  # equal to the unbatched answer


async def test_multi_image_requests_are_never_split_or_mixed() -> None:
    model = CountingModel()
    batcher = make(model, max_batch_size=8)
    sizes = [3, 5, 2, 7, 1, 4]
    results = await asyncio.gather(*(batcher.infer(inputs(i, n), ("double",)) for i, n in enumerate(sizes)))
    await batcher.stop()
    for i, (n, result) in enumerate(zip(sizes, results)):
        assert result.outputs[0].shape == (n, 2)
        np.testing.assert_array_equal(result.outputs[0], inputs(i, n) * 2)
    assert all(n <= 8 for n, _ in model.batches)


async def test_requests_for_different_outputs_are_served_apart() -> None:
    model = CountingModel()
    batcher = make(model)
    tasks = [batcher.infer(inputs(i), ("double",) if i % 2 else ("double", "plus_one")) for i in range(10)]
    results = await asyncio.gather(*tasks)
    await batcher.stop()
    for i, result in enumerate(results):
        np.testing.assert_array_equal(result.outputs[0], inputs(i) * 2)
        if i % 2 == 0:
            np.testing.assert_array_equal(result.outputs[1], inputs(i) + 1)
        else:
            assert len(result.outputs) == 1
    for _, outputs in model.batches:
        assert outputs in {("double",), ("double", "plus_one")}


async def test_queue_delay_gathers_requests_that_arrive_apart() -> None:
    model = CountingModel(delay=0)
    batcher = make(model, max_queue_delay_ms=200, max_batch_size=4)

    async def later(i: int) -> object:
        await asyncio.sleep(0.01 * i)
        return await batcher.infer(inputs(i), ("double",))

    await asyncio.gather(*(later(i) for i in range(4)))
    await batcher.stop()
    assert [n for n, _ in model.batches] == [4]


async def test_full_queue_answers_overloaded_at_once() -> None:
    model = CountingModel()
    model.gate.clear()  # the model hangs until released: the queue fills
    batcher = make(model, max_queue_size=4, max_batch_size=1)
    first = asyncio.ensure_future(batcher.infer(inputs(0), ("double",)))
    await asyncio.sleep(0.05)  # the first is now running, not queued
    queued = [asyncio.ensure_future(batcher.infer(inputs(i), ("double",))) for i in range(1, 5)]
    await asyncio.sleep(0.01)
    assert batcher.queued_images == 4
    started = time.perf_counter()
    with pytest.raises(Overloaded) as info:
        await batcher.infer(inputs(9), ("double",))
    assert time.perf_counter() - started < 0.5
    assert info.value.headers["Retry-After"]
    model.gate.set()
    await asyncio.gather(first, *queued)
    await batcher.stop()


async def test_a_cancelled_request_leaves_the_queue_and_never_runs() -> None:
    model = CountingModel()
    model.gate.clear()
    batcher = make(model, max_batch_size=1)
    first = asyncio.ensure_future(batcher.infer(inputs(0), ("double",)))
    await asyncio.sleep(0.05)
    gone = asyncio.ensure_future(batcher.infer(inputs(1), ("double",)))
    await asyncio.sleep(0.01)
    assert batcher.queued_images == 1
    gone.cancel()  # its client disconnected
    await asyncio.sleep(0.01)
    assert batcher.queued_images == 0  # the slot is free again
    model.gate.set()
    await first
    third = await batcher.infer(inputs(3), ("double",))
    await batcher.stop()
    np.testing.assert_array_equal(third.outputs[0], inputs(3) * 2)
    assert [n for n, _ in model.batches] == [1, 1]  # the cancelled one never ran


async def test_a_failing_run_fails_its_requests_and_the_batcher_goes_on() -> None:
    class Flaky(CountingModel):
        def run(self, batch: np.ndarray, outputs: tuple[str, ...]) -> list[np.ndarray]:
            if batch[0, 0] == 13:
                raise RuntimeError("boom")
            return super().run(batch, outputs)

    batcher = make(Flaky(delay=0))
    with pytest.raises(RuntimeError, match="boom"):
        await batcher.infer(inputs(13), ("double",))
    ok = await batcher.infer(inputs(2), ("double",))
    await batcher.stop()
    np.testing.assert_array_equal(ok.outputs[0], inputs(2) * 2)


async def test_a_batch_waits_for_requests_still_being_decoded() -> None:
    model = CountingModel(delay=0)
    batcher = make(model, arrival_wait_ms=2000)

    async def slow_decode() -> object:
        with batcher.arriving(1):
            await asyncio.sleep(0.05)  # decoding its image
        return await batcher.infer(inputs(2), ("double",))

    late = asyncio.ensure_future(slow_decode())
    await asyncio.sleep(0)  # the slow one has announced itself
    started = time.perf_counter()
    first = await batcher.infer(inputs(1), ("double",))
    await late
    await batcher.stop()
    assert [n for n, _ in model.batches] == [2]  # one run for both
    assert first.batch_size == 2
    assert time.perf_counter() - started < 1.0  # it waited for the arrival, not the whole bound


async def test_a_lone_request_does_not_wait_for_arrivals() -> None:
    model = CountingModel(delay=0)
    batcher = make(model, arrival_wait_ms=2000)
    started = time.perf_counter()
    await batcher.infer(inputs(1), ("double",))
    await batcher.stop()
    assert time.perf_counter() - started < 1.0


async def closed_loop_batches(arrival_wait_ms: float) -> list[int]:
    """8 clients that each send their next request a few ms after their answer."""
    model = CountingModel(delay=0.02)
    batcher = make(model, arrival_wait_ms=arrival_wait_ms)

    async def client(i: int) -> None:
        for _ in range(4):
            await batcher.infer(inputs(i), ("double",))
            await asyncio.sleep(0.001 * (i + 1))  # network and decoding, a little different for each

    await asyncio.gather(*(client(i) for i in range(8)))
    await batcher.stop()
    return [n for n, _ in model.batches]


async def test_clients_that_come_straight_back_are_batched_together() -> None:
    assert await closed_loop_batches(arrival_wait_ms=200) == [8, 8, 8, 8]


async def test_without_the_wait_their_batches_split() -> None:
    assert len(await closed_loop_batches(arrival_wait_ms=0)) > 4


# ---- priorities: explanation passes never delay predictions ------------------------------

class RecordingModel(CountingModel):
    """Also records which inputs (their first value) each run carried."""

    def __init__(self, delay: float = 0.01) -> None:
        super().__init__(delay)
        self.runs_seen: list[list[float]] = []

    def run(self, batch: np.ndarray, outputs: tuple[str, ...]) -> list[np.ndarray]:
        result = super().run(batch, outputs)
        self.runs_seen.append([float(v) for v in batch[:, 0]])
        return result


async def test_predictions_queued_behind_explanation_batches_are_taken_first() -> None:
    model = RecordingModel()
    model.gate.clear()  # the first explanation batch holds the model while the rest queue
    batcher = make(model, max_batch_size=4)
    running = asyncio.ensure_future(batcher.infer(inputs(100, 4), ("double",), Priority.EXPLAIN))
    await asyncio.sleep(0.05)
    explanations = [
        asyncio.ensure_future(batcher.infer(inputs(101 + i, 4), ("double",), Priority.EXPLAIN)) for i in range(3)
    ]
    await asyncio.sleep(0.01)
    predictions = [asyncio.ensure_future(batcher.infer(inputs(i), ("double",))) for i in range(3)]
    await asyncio.sleep(0.01)
    model.gate.set()
    results = await asyncio.gather(running, *explanations, *predictions)
    await batcher.stop()
    firsts = [run[0] for run in model.runs_seen]
    assert firsts == [100, 0, 101, 102, 103]  # the predictions overtook every queued explanation
    assert model.runs_seen[1] == [0, 1, 2]  # ... in one run of their own
    for i, result in enumerate(results[4:]):
        np.testing.assert_array_equal(result.outputs[0], inputs(i) * 2)
    np.testing.assert_array_equal(results[1].outputs[0], inputs(101, 4) * 2)


async def test_explanation_requests_never_join_a_prediction_run() -> None:
    model = RecordingModel()
    model.gate.clear()
    batcher = make(model, max_batch_size=32)
    blocker = asyncio.ensure_future(batcher.infer(inputs(50), ("double",)))
    await asyncio.sleep(0.05)
    explanation = asyncio.ensure_future(batcher.infer(inputs(100, 2), ("double",), Priority.EXPLAIN))
    prediction = asyncio.ensure_future(batcher.infer(inputs(1), ("double",)))
    await asyncio.sleep(0.01)
    model.gate.set()
    await asyncio.gather(blocker, explanation, prediction)
    await batcher.stop()
    assert model.runs_seen == [[50], [1], [100, 100]]


async def test_explanations_wait_while_a_prediction_is_being_decoded() -> None:
    model = RecordingModel(delay=0)
    batcher = make(model)

    async def prediction() -> object:
        with batcher.arriving(1):
            await asyncio.sleep(0.05)  # decoding its image
        return await batcher.infer(inputs(1), ("double",))

    arriving = asyncio.ensure_future(prediction())
    await asyncio.sleep(0)  # it has announced itself
    await asyncio.gather(arriving, batcher.infer(inputs(100), ("double",), Priority.EXPLAIN))
    await batcher.stop()
    assert model.runs_seen == [[1], [100]]


async def test_explanations_do_not_take_the_queue_room_of_predictions() -> None:
    model = RecordingModel()
    model.gate.clear()
    batcher = make(model, max_queue_size=4, max_batch_size=4)
    first = asyncio.ensure_future(batcher.infer(inputs(0), ("double",)))
    await asyncio.sleep(0.05)  # running, not queued
    queued = asyncio.ensure_future(batcher.infer(inputs(100, 4), ("double",), Priority.EXPLAIN))
    await asyncio.sleep(0.01)
    prediction = asyncio.ensure_future(batcher.infer(inputs(1, 4), ("double",)))  # fits: 4 predictions queued
    await asyncio.sleep(0.01)
    with pytest.raises(Overloaded):  # an explanation counts everything queued (8 > 4)
        await batcher.infer(inputs(101), ("double",), Priority.EXPLAIN)
    with pytest.raises(Overloaded):  # and a fifth prediction is over the limit
        await batcher.infer(inputs(2), ("double",))
    model.gate.set()
    await asyncio.gather(first, queued, prediction)
    await batcher.stop()
    assert [run[0] for run in model.runs_seen] == [0, 1, 100]


async def test_a_cancelled_explanation_batch_never_runs() -> None:
    model = RecordingModel()
    model.gate.clear()
    batcher = make(model)
    first = asyncio.ensure_future(batcher.infer(inputs(0), ("double",)))
    await asyncio.sleep(0.05)
    gone = asyncio.ensure_future(batcher.infer(inputs(100, 3), ("double",), Priority.EXPLAIN))
    await asyncio.sleep(0.01)
    assert batcher.queued_images == 3
    gone.cancel()  # the explanation's client went away
    await asyncio.sleep(0.01)
    assert batcher.queued_images == 0
    model.gate.set()
    await first
    await batcher.stop()
    assert model.runs_seen == [[0]]


async def test_an_explanation_run_does_not_make_a_lone_prediction_wait_for_arrivals() -> None:
    model = RecordingModel(delay=0.05)
    batcher = make(model, arrival_wait_ms=2000)
    await batcher.infer(inputs(100, 8), ("double",), Priority.EXPLAIN)  # 8 images, but no clients
    started = time.perf_counter()
    await batcher.infer(inputs(1), ("double",))
    await batcher.stop()
    assert time.perf_counter() - started < 1.0  # no wait for 7 "returning" clients that never were
