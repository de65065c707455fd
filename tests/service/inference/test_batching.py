"""The dynamic batcher, tested by behaviour against a model that counts its runs.

No assertion here is on elapsed time: the machine running the suite may be loaded, so
each test checks the order of events or counts of runs, with waiting bounds far longer
than the test needs (a bound that mattered would make the test hang, and
``HANG_GUARD`` turns that into a failure that says what it waited for).
"""

from __future__ import annotations

import asyncio
import threading
import time

import numpy as np
import pytest

from service.errors import ModelNotReady, Overloaded
from service.inference.batching import HOLD_MIN_FIXED_SECONDS, BatchCosts, BatchPolicy, DynamicBatcher, Priority

pytestmark = pytest.mark.anyio

HANG_GUARD = 60.0  # seconds: only reached if the batcher waits for the bound it must not wait for
FOREVER_MS = 600_000.0  # a wait bound no test may sit out


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


def make(model: CountingModel, **kwargs: object) -> DynamicBatcher:
    options: dict[str, object] = dict(max_batch_size=32, max_queue_delay_ms=0, max_queue_size=256)
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
    # The batch runs when it is full, so the delay bound only has to outlast the arrivals.
    batcher = make(model, max_queue_delay_ms=FOREVER_MS, max_batch_size=4)

    async def later(i: int) -> object:
        await asyncio.sleep(0.01 * i)
        return await batcher.infer(inputs(i), ("double",))

    await asyncio.wait_for(asyncio.gather(*(later(i) for i in range(4))), HANG_GUARD)
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
    with pytest.raises(Overloaded) as info:
        await batcher.infer(inputs(9), ("double",))
    # Answered while the model still hangs: the refusal waited for no run.
    assert not first.done() and model.batches == [] and batcher.queued_images == 4
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
    batcher = make(model, arrival_wait_ms=FOREVER_MS)

    async def slow_decode() -> object:
        with batcher.arriving(1):
            await asyncio.sleep(0.05)  # decoding its image
        return await batcher.infer(inputs(2), ("double",))

    late = asyncio.ensure_future(slow_decode())
    await asyncio.sleep(0)  # the slow one has announced itself
    # It waits for the arrival, not the whole bound (which would trip the guard).
    first = await asyncio.wait_for(batcher.infer(inputs(1), ("double",)), HANG_GUARD)
    await late
    await batcher.stop()
    assert [n for n, _ in model.batches] == [2]  # one run for both
    assert first.batch_size == 2


async def test_a_lone_request_does_not_wait_for_arrivals() -> None:
    model = CountingModel(delay=0)
    batcher = make(model, arrival_wait_ms=FOREVER_MS)
    await asyncio.wait_for(batcher.infer(inputs(1), ("double",)), HANG_GUARD)  # no wait for the bound
    await batcher.stop()
    assert [n for n, _ in model.batches] == [1]


async def closed_loop_batches(arrival_wait_ms: float, run_seconds: float, gap_seconds: float) -> list[int]:
    """8 clients that each send their next request ``gap_seconds * (i + 1)`` after their answer."""
    model = CountingModel(delay=run_seconds)
    batcher = make(model, arrival_wait_ms=arrival_wait_ms)

    async def client(i: int) -> None:
        for _ in range(4):
            await batcher.infer(inputs(i), ("double",))
            await asyncio.sleep(gap_seconds * (i + 1))  # network and decoding, a little different for each

    await asyncio.gather(*(client(i) for i in range(8)))
    await batcher.stop()
    return [n for n, _ in model.batches]


async def test_clients_that_come_straight_back_are_batched_together() -> None:
    # The batcher waits up to half a run (0.15 s) for returning clients; they come back
    # within 8 ms, so only a stall of the whole event loop could split a batch.
    assert await closed_loop_batches(arrival_wait_ms=FOREVER_MS, run_seconds=0.3, gap_seconds=0.001) == [8, 8, 8, 8]


async def test_without_the_wait_their_batches_split() -> None:
    # Returns spread over 30..240 ms: without the wait the first to return runs alone.
    assert len(await closed_loop_batches(arrival_wait_ms=0, run_seconds=0.01, gap_seconds=0.03)) > 4


# ---- the policy, from what runs cost ------------------------------------------------------

def test_costs_split_a_run_into_its_fixed_part_and_a_part_per_image() -> None:
    costs = BatchCosts({1: 0.015, 8: 0.064})  # AlexNet-like: 8 ms a run + 7 ms an image
    assert costs.per_image == pytest.approx(0.007)
    assert costs.fixed == pytest.approx(0.008)
    assert costs.policy() is BatchPolicy.HOLD
    tiny = BatchCosts({1: 0.00009, 8: 0.00059})  # TinyVGG-like: the fixed part is ~0.02 ms
    assert tiny.fixed < HOLD_MIN_FIXED_SECONDS and tiny.policy() is BatchPolicy.OVERLAP
    assert BatchCosts({1: 0.005, 8: 0.004}).fixed == 0.005  # noise that makes a batch look free: all fixed
    with pytest.raises(ValueError):
        BatchCosts({8: 0.06})


async def two_groups_closed_loop(policy: BatchPolicy | None) -> list[int]:
    """16 clients, 4 requests each: 8 start at once, 8 more while the first run runs, each
    coming back 1-8 ms after its answer (its next request's network and decoding)."""
    model = CountingModel(delay=0.2)
    batcher = make(model, max_batch_size=16, arrival_wait_ms=FOREVER_MS, policy=policy)

    async def client(i: int) -> None:
        if i >= 8:
            await asyncio.sleep(0.05)  # the second group: arrives while the first run runs
        for _ in range(4):
            await batcher.infer(inputs(i), ("double",))
            await asyncio.sleep(0.001 * (i % 8 + 1))

    await asyncio.wait_for(asyncio.gather(*(client(i) for i in range(16))), HANG_GUARD)
    await batcher.stop()
    return [n for n, _ in model.batches]


async def test_holding_turns_two_alternating_half_batches_into_full_ones() -> None:
    # After the first run the second group waits in the queue and the first comes back: one
    # batch of both. (Without the hold the two groups alternate in batches of 8, below.)
    assert await two_groups_closed_loop(BatchPolicy.HOLD) == [8, 16, 16, 16, 8]


async def test_overlapping_never_waits_for_returning_clients() -> None:
    batches = await two_groups_closed_loop(BatchPolicy.OVERLAP)
    assert max(batches) <= 8 and sum(batches) == 64


async def slow_returns_closed_loop(spread_seconds: float, rounds: int) -> tuple[list[int], DynamicBatcher]:
    """16 clients that come back one after the other over ``spread_seconds`` after their
    answers: longer than the 15 ms arrival wait, as when the server has less than a core to
    read and decode them with."""
    model = CountingModel(delay=0.2)
    batcher = make(model, max_batch_size=16, arrival_wait_ms=15, policy=BatchPolicy.HOLD)

    async def client(i: int) -> None:
        for _ in range(rounds):
            await batcher.infer(inputs(i), ("double",))
            await asyncio.sleep(0.001 + spread_seconds * i / 15)

    await asyncio.wait_for(asyncio.gather(*(client(i) for i in range(16))), HANG_GUARD)
    await batcher.stop()
    return [n for n, _ in model.batches], batcher


async def test_a_hold_learns_to_wait_as_long_as_returning_clients_take() -> None:
    batches, batcher = await slow_returns_closed_loop(0.04, 12)
    # The first holds run out at 15 ms and split the clients; then the hold grows past the
    # 40 ms they take to come back, and the batches are whole again (until clients finish).
    assert batches[0] == 16 and min(batches[1:3]) < 16
    assert any(batches[i:i + 5] == [16] * 5 for i in range(2, len(batches)))
    assert 0.04 < batcher.hold_bound() <= 0.1 * 1.05  # at most half a 0.2 s run


async def test_a_hold_never_waits_longer_than_half_a_run() -> None:
    batches, batcher = await slow_returns_closed_loop(0.15, 5)  # they need 150 ms; half a run is 100
    assert batcher.hold_bound() == pytest.approx(0.1, rel=0.1)
    assert sum(batches) == 80 and batches.count(16) < 5  # no hold waits until they are all back


async def test_holding_never_makes_a_lone_client_wait() -> None:
    model = CountingModel(delay=0)
    batcher = make(model, arrival_wait_ms=FOREVER_MS, policy=BatchPolicy.HOLD)
    for i in range(3):  # each answered alone: only it comes back, nothing else queued
        await asyncio.wait_for(batcher.infer(inputs(i), ("double",)), HANG_GUARD)
    await batcher.stop()
    assert [n for n, _ in model.batches] == [1, 1, 1]


async def test_a_lone_client_is_one_with_nothing_else_queued_running_or_decoding() -> None:
    model = CountingModel(delay=0)
    model.gate.clear()  # runs wait at the gate until the test opens it
    batcher = make(model)
    assert batcher.alone
    with batcher.arriving(1):
        assert not batcher.alone
    pending = asyncio.ensure_future(batcher.infer(inputs(1), ("double",)))
    await asyncio.sleep(0.05)  # taken into a run, which waits at the gate
    assert not batcher.alone
    model.gate.set()
    await asyncio.wait_for(pending, HANG_GUARD)
    assert batcher.alone
    # After a batch of two, a second client is about to come back.
    await asyncio.gather(batcher.infer(inputs(1), ("double",)), batcher.infer(inputs(2), ("double",)))
    assert not batcher.alone
    await batcher.stop()


async def test_stopping_fails_a_batch_that_is_still_gathering() -> None:
    model = CountingModel(delay=0.5)
    batcher = make(model, arrival_wait_ms=FOREVER_MS)
    await asyncio.gather(batcher.infer(inputs(1), ("double",)), batcher.infer(inputs(2), ("double",)))
    # One request of the two the last run answered: its batch waits up to half a run for the other.
    lone = asyncio.ensure_future(batcher.infer(inputs(3), ("double",)))
    await asyncio.sleep(0.05)
    assert not batcher.alone
    await batcher.stop()
    with pytest.raises(ModelNotReady):
        await asyncio.wait_for(lone, HANG_GUARD)


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
    batcher = make(model, arrival_wait_ms=FOREVER_MS)
    await batcher.infer(inputs(100, 8), ("double",), Priority.EXPLAIN)  # 8 images, but no clients
    # No wait for 7 "returning" clients that never were (the bound would trip the guard).
    await asyncio.wait_for(batcher.infer(inputs(1), ("double",)), HANG_GUARD)
    await batcher.stop()
    assert model.runs_seen == [[100] * 8, [1]]


# ---- ... but never starve them -------------------------------------------------------------

async def test_an_explanation_passed_over_by_explain_after_prediction_runs_gets_the_next() -> None:
    model = RecordingModel(delay=0)
    model.gate.clear()
    batcher = make(model, max_batch_size=1, explain_after=4)
    first = asyncio.ensure_future(batcher.infer(inputs(0), ("double",)))
    await asyncio.sleep(0.05)  # running: the model hangs until the gate opens
    explanation = asyncio.ensure_future(batcher.infer(inputs(100), ("double",), Priority.EXPLAIN))
    predictions = [asyncio.ensure_future(batcher.infer(inputs(i), ("double",))) for i in range(1, 11)]
    await asyncio.sleep(0.01)
    model.gate.set()
    await asyncio.gather(first, explanation, *predictions)
    await batcher.stop()
    # Four prediction runs pass it over, then it runs once, then predictions go first again.
    assert [run[0] for run in model.runs_seen] == [0, 1, 2, 3, 4, 100, 5, 6, 7, 8, 9, 10]


async def test_an_explanation_progresses_under_a_prediction_load_that_never_lets_up() -> None:
    model = RecordingModel(delay=0)
    batcher = make(model, max_batch_size=2, explain_after=3)
    done = asyncio.Event()

    async def client(i: int) -> int:
        sent = 0
        while not done.is_set() and sent < 500:  # 500: the explanation starved; asserted below
            await batcher.infer(inputs(i), ("double",))
            sent += 1
        return sent

    async def explanation() -> None:
        await asyncio.sleep(0.01)  # the load is on
        for batch in range(3):
            await batcher.infer(inputs(100 + batch, 2), ("double",), Priority.EXPLAIN)
        done.set()

    clients = [asyncio.ensure_future(client(i)) for i in range(6)]  # 6 clients, 2 per run: always a queue
    await asyncio.wait_for(explanation(), HANG_GUARD)
    sent = await asyncio.gather(*clients)
    await batcher.stop()
    assert max(sent) < 500
    kinds = ["E" if run[0] >= 100 else "P" for run in model.runs_seen]
    explained = [i for i, kind in enumerate(kinds) if kind == "E"]
    assert len(explained) == 3
    for before, after in zip(explained, explained[1:]):
        # explain_after runs passed the batch over, plus at most the one that started
        # while the engine was still building it.
        assert 3 <= after - before - 1 <= 3 + 1
    assert all(kind == "P" for kind in kinds[explained[0] - 3 : explained[0]])  # the queue never emptied


def test_explain_after_is_at_least_one() -> None:
    with pytest.raises(ValueError, match="explain_after"):
        DynamicBatcher(CountingModel(), max_batch_size=1, max_queue_delay_ms=0, max_queue_size=1, explain_after=0)


# ---- how long an explanation batch may hold the model -------------------------------------

async def test_explanation_batches_are_whole_with_no_prediction_about_and_short_while_they_flow() -> None:
    model = RecordingModel(delay=0)
    batcher = make(model)
    assert batcher.explain_batch_images(16) == 16  # nobody to delay
    await batcher.infer(inputs(1), ("double",))  # a prediction ran just now
    assert batcher.explain_batch_images(16) == 1  # and what an explanation image costs is not known yet
    await batcher.infer(inputs(100, 4), ("double",), Priority.EXPLAIN)
    # The policy from the measured times (set here: a loaded machine would blur them):
    # no more images than fit in a quarter of the last prediction run.
    batcher._last_run_seconds, batcher._explain_image_seconds = 0.320, 0.010
    assert batcher.explain_batch_images(16) == 8
    assert batcher.explain_batch_images(4) == 4
    batcher._last_run_seconds = 0.001
    assert batcher.explain_batch_images(16) == 1  # never below one
    batcher._last_prediction_end -= 3600  # predictions stopped long ago ...
    assert batcher.explain_batch_images(16) == 16
    with batcher.arriving(1):  # ... but one is being decoded
        assert batcher.explain_batch_images(16) == 1
    await batcher.stop()
