"""Dynamic batching: requests grouped by size or deadline, each caller gets its own result."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine
from typing import Any

import pytest

from fermion.serving.batching import Batcher, BatchError
from fermion.serving.limits import Overloaded

# A regression here tends to hang rather than fail: give up quickly instead of after the suite default.
pytestmark = pytest.mark.timeout(10)

LONG_WAIT_MS = 10_000  # a deadline no test reaches: batches in these tests run because they are full


async def settle(condition: Callable[[], bool], turns: int = 1000) -> None:
    """Let the other tasks run until `condition()` holds (event-loop turns, no wall-clock sleeping)."""
    for _ in range(turns):
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError("the batcher never reached the expected state")


class Recorder:
    """A batch function that records each call's columns and returns `fn(x)` per item."""

    def __init__(self, fn: Callable[[Any], Any] = lambda x: x * 10) -> None:
        self.calls: list[dict[str, list[Any]]] = []
        self.fn = fn

    async def __call__(self, columns: dict[str, list[Any]]) -> list[Any]:
        self.calls.append({name: list(values) for name, values in columns.items()})
        return [self.fn(x) for x in columns["x"]]

    @property
    def batches(self) -> list[list[Any]]:
        return [call["x"] for call in self.calls]


def run(main: Callable[[], Coroutine[Any, Any, Any]]) -> Any:
    return asyncio.run(main())


def test_each_caller_gets_its_own_result_in_one_batch():
    record = Recorder()

    async def main():
        batcher = Batcher(record, max_batch_size=8, max_wait_ms=5, max_queue=100)
        try:
            return await asyncio.gather(*(batcher.submit({"x": i}) for i in range(5)))
        finally:
            await batcher.close()

    assert run(main) == [0, 10, 20, 30, 40]
    assert record.batches == [[0, 1, 2, 3, 4]]


def test_the_function_receives_one_list_per_parameter():
    seen: list[dict[str, list[Any]]] = []

    async def translate(columns: dict[str, list[Any]]) -> list[str]:
        seen.append(columns)
        return [f"{text}->{lang}" for text, lang in zip(columns["text"], columns["lang"], strict=True)]

    async def main():
        batcher = Batcher(translate, max_batch_size=2, max_wait_ms=LONG_WAIT_MS, max_queue=10)
        try:
            return await asyncio.gather(
                batcher.submit({"text": "hello", "lang": "fr"}),
                batcher.submit({"text": "bye", "lang": "de"}),
            )
        finally:
            await batcher.close()

    assert run(main) == ["hello->fr", "bye->de"]
    assert seen == [{"text": ["hello", "bye"], "lang": ["fr", "de"]}]


def test_batches_never_exceed_max_batch_size():
    record = Recorder()
    sizes: list[int] = []

    async def main():
        batcher = Batcher(record, max_batch_size=3, max_wait_ms=5, max_queue=100, on_batch=sizes.append)
        try:
            return await asyncio.gather(*(batcher.submit({"x": i}) for i in range(10)))
        finally:
            await batcher.close()

    assert run(main) == [i * 10 for i in range(10)]
    assert sizes == [3, 3, 3, 1]
    assert record.batches == [[0, 1, 2], [3, 4, 5], [6, 7, 8], [9]]


def test_a_full_batch_runs_without_waiting_for_the_deadline():
    record = Recorder()

    async def main():
        batcher = Batcher(record, max_batch_size=4, max_wait_ms=2000, max_queue=10)
        started = time.monotonic()
        try:
            await asyncio.gather(*(batcher.submit({"x": i}) for i in range(4)))
        finally:
            await batcher.close()
        return time.monotonic() - started

    assert run(main) < 1.0  # far below the 2 s deadline
    assert record.batches == [[0, 1, 2, 3]]


def test_a_lone_item_runs_once_max_wait_has_passed():
    record = Recorder()

    async def main():
        batcher = Batcher(record, max_batch_size=8, max_wait_ms=50, max_queue=10)
        started = time.monotonic()
        try:
            result = await batcher.submit({"x": 7})
        finally:
            await batcher.close()
        return result, time.monotonic() - started

    result, elapsed = run(main)
    assert result == 70
    assert 0.04 <= elapsed < 2.0  # it waited for company, but not forever
    assert record.batches == [[7]]


def test_adaptive_batching_stops_waiting_for_a_lone_client():
    record = Recorder()

    async def main():
        batcher = Batcher(record, max_batch_size=8, max_wait_ms=200, max_queue=10, adaptive=True)
        took = []
        try:
            for i in range(6):  # one client: each request waits for the previous answer
                started = time.monotonic()
                await batcher.submit({"x": i})
                took.append(time.monotonic() - started)
        finally:
            await batcher.close()
        return took

    took = run(main)
    assert took[0] >= 0.15  # at first it waits for company, hoping for some
    assert all(t < 0.1 for t in took[3:])  # none came, so it stopped waiting
    assert record.batches == [[i] for i in range(6)]


def test_adaptive_batching_keeps_waiting_while_company_comes():
    calls: list[list[int]] = []

    async def record(columns):
        calls.append(list(columns["x"]))
        return columns["x"]

    async def main():
        batcher = Batcher(record, max_batch_size=64, max_wait_ms=50, max_queue=100, adaptive=True)
        tasks = []
        try:
            for i in range(60):  # a steady stream, one request every ~2 ms: waiting pays off
                tasks.append(asyncio.create_task(batcher.submit({"x": i})))
                await asyncio.sleep(0.002)
            await asyncio.gather(*tasks)
        finally:
            await batcher.close()

    run(main)
    assert sorted(x for batch in calls for x in batch) == list(range(60))
    assert len(calls) < 10 and max(len(batch) for batch in calls) > 5


def test_an_item_arriving_during_the_wait_joins_the_batch():
    record = Recorder()

    async def main():
        batcher = Batcher(record, max_batch_size=2, max_wait_ms=LONG_WAIT_MS, max_queue=10)
        try:
            first = asyncio.create_task(batcher.submit({"x": 1}))
            await settle(lambda: batcher.depth == 1)
            second = await batcher.submit({"x": 2})
            return await first, second
        finally:
            await batcher.close()

    assert run(main) == (10, 20)
    assert record.batches == [[1, 2]]


def test_a_failing_batch_is_retried_item_by_item():
    calls: list[list[int]] = []

    async def reciprocal(columns: dict[str, list[int]]) -> list[float]:
        calls.append(list(columns["x"]))
        return [1 / x for x in columns["x"]]

    async def main():
        batcher = Batcher(reciprocal, max_batch_size=3, max_wait_ms=LONG_WAIT_MS, max_queue=10)
        try:
            return await asyncio.gather(
                *(batcher.submit({"x": x}) for x in (2, 0, 4)),
                return_exceptions=True,
            )
        finally:
            await batcher.close()

    good, bad, other = run(main)
    assert (good, other) == (0.5, 0.25)
    assert isinstance(bad, ZeroDivisionError)  # only the caller that sent 0 sees the error
    assert calls == [[2, 0, 4], [2], [0], [4]]


def test_a_lone_failing_item_gets_the_exception_without_a_retry():
    calls: list[list[int]] = []

    async def broken(columns: dict[str, list[int]]) -> list[int]:
        calls.append(list(columns["x"]))
        raise RuntimeError("model not loaded")

    async def main():
        batcher = Batcher(broken, max_batch_size=1, max_wait_ms=0, max_queue=10)
        try:
            await batcher.submit({"x": 1})
        finally:
            await batcher.close()

    with pytest.raises(RuntimeError, match="model not loaded"):
        run(main)
    assert calls == [[1]]


def test_wrong_number_of_results_fails_every_caller():
    calls: list[list[int]] = []

    async def forgetful(columns: dict[str, list[int]]) -> list[int]:
        calls.append(list(columns["x"]))
        return [0]

    async def main():
        batcher = Batcher(forgetful, max_batch_size=3, max_wait_ms=LONG_WAIT_MS, max_queue=10)
        try:
            return await asyncio.gather(*(batcher.submit({"x": x}) for x in (1, 2, 3)), return_exceptions=True)
        finally:
            await batcher.close()

    results = run(main)
    assert all(isinstance(r, BatchError) for r in results)
    assert "returned 1 results for 3 inputs" in str(results[0])
    assert calls == [[1, 2, 3]]  # a contract error is not retried item by item


def test_a_result_that_is_not_a_list_is_a_batch_error():
    async def scalar(columns: dict[str, list[int]]) -> int:
        return 42

    async def main():
        batcher = Batcher(scalar, max_batch_size=2, max_wait_ms=LONG_WAIT_MS, max_queue=10)
        try:
            return await asyncio.gather(*(batcher.submit({"x": x}) for x in (1, 2)), return_exceptions=True)
        finally:
            await batcher.close()

    results = run(main)
    assert all(isinstance(r, BatchError) for r in results)
    assert "must return a list with one result per input; it returned int" in str(results[0])


def test_a_caller_that_gives_up_while_queued_never_reaches_the_function():
    record = Recorder()

    async def main():
        batcher = Batcher(record, max_batch_size=3, max_wait_ms=LONG_WAIT_MS, max_queue=10)
        try:
            first = asyncio.create_task(batcher.submit({"x": 1}))
            quitter = asyncio.create_task(batcher.submit({"x": 2}))
            await settle(lambda: batcher.depth == 2)
            quitter.cancel()
            with pytest.raises(asyncio.CancelledError):
                await quitter
            rest = await asyncio.gather(first, batcher.submit({"x": 3}), batcher.submit({"x": 4}))
        finally:
            await batcher.close()
        return rest

    assert run(main) == [10, 30, 40]
    assert record.batches == [[1, 3, 4]]


def test_an_abandoned_oldest_item_is_dropped():
    record = Recorder()

    async def main():
        batcher = Batcher(record, max_batch_size=2, max_wait_ms=LONG_WAIT_MS, max_queue=10)
        try:
            quitter = asyncio.create_task(batcher.submit({"x": 1}))
            await settle(lambda: batcher.depth == 1)
            quitter.cancel()
            await asyncio.gather(quitter, return_exceptions=True)
            return await asyncio.gather(batcher.submit({"x": 2}), batcher.submit({"x": 3}))
        finally:
            await batcher.close()

    assert run(main) == [20, 30]
    assert record.batches == [[2, 3]]


def test_a_caller_that_gives_up_mid_batch_does_not_disturb_the_others():
    batches: list[list[int]] = []

    async def main():
        started, release = asyncio.Event(), asyncio.Event()

        async def slow(columns: dict[str, list[int]]) -> list[int]:
            batches.append(list(columns["x"]))
            started.set()
            await release.wait()
            return [x * 10 for x in columns["x"]]

        batcher = Batcher(slow, max_batch_size=2, max_wait_ms=LONG_WAIT_MS, max_queue=10)
        try:
            quitter = asyncio.create_task(batcher.submit({"x": 1}))
            stayer = asyncio.create_task(batcher.submit({"x": 2}))
            await asyncio.wait_for(started.wait(), 5)
            quitter.cancel()
            await asyncio.gather(quitter, return_exceptions=True)
            release.set()
            return await stayer, quitter.cancelled()
        finally:
            await batcher.close()

    assert run(main) == (20, True)
    assert batches == [[1, 2]]


def test_a_full_queue_is_overloaded():
    record = Recorder()

    async def main():
        batcher = Batcher(record, max_batch_size=8, max_wait_ms=LONG_WAIT_MS, max_queue=2)
        try:
            waiting = [asyncio.create_task(batcher.submit({"x": i})) for i in range(2)]
            await settle(lambda: batcher.depth == 2)
            with pytest.raises(Overloaded):
                await batcher.submit({"x": 99})
            assert batcher.depth == 2
        finally:
            await batcher.close()
        return await asyncio.gather(*waiting, return_exceptions=True)

    results = run(main)
    assert all(isinstance(r, asyncio.CancelledError) for r in results)
    assert record.calls == []


def test_close_cancels_waiting_items():
    record = Recorder()

    async def main():
        batcher = Batcher(record, max_batch_size=8, max_wait_ms=LONG_WAIT_MS, max_queue=10)
        waiting = [asyncio.create_task(batcher.submit({"x": i})) for i in range(3)]
        await settle(lambda: batcher.depth == 3)
        await batcher.close()
        results = await asyncio.gather(*waiting, return_exceptions=True)
        return results, batcher.depth

    results, depth = run(main)
    assert all(isinstance(r, asyncio.CancelledError) for r in results)
    assert depth == 0
    assert record.calls == []


def test_close_cancels_the_running_batch():
    async def main():
        started = asyncio.Event()

        async def forever(columns: dict[str, list[int]]) -> list[int]:
            started.set()
            await asyncio.Event().wait()
            return columns["x"]

        batcher = Batcher(forever, max_batch_size=1, max_wait_ms=0, max_queue=10)
        caller = asyncio.create_task(batcher.submit({"x": 1}))
        await asyncio.wait_for(started.wait(), 5)
        await batcher.close()
        return await asyncio.gather(caller, return_exceptions=True)

    [result] = run(main)
    assert isinstance(result, asyncio.CancelledError)


@pytest.mark.parametrize("concurrency", [1, 2])
def test_concurrency_bounds_the_batches_running_at_once(concurrency):
    peak = 0

    async def main():
        nonlocal peak
        release = asyncio.Event()
        running = 0

        async def slow(columns: dict[str, list[int]]) -> list[int]:
            nonlocal running, peak
            running += 1
            peak = max(peak, running)
            await release.wait()
            running -= 1
            return columns["x"]

        batcher = Batcher(slow, max_batch_size=1, max_wait_ms=0, max_queue=10, concurrency=concurrency)
        try:
            callers = [asyncio.create_task(batcher.submit({"x": i})) for i in range(3)]
            await settle(lambda: batcher.running == concurrency and batcher.depth == 3 - concurrency)
            for _ in range(50):  # give any extra worker every chance to start a batch too
                await asyncio.sleep(0)
            assert batcher.running == concurrency
            release.set()
            return await asyncio.gather(*callers)
        finally:
            await batcher.close()

    assert run(main) == [0, 1, 2]
    assert peak == concurrency


def test_on_batch_reports_each_batch_size():
    sizes: list[int] = []

    async def main():
        batcher = Batcher(Recorder(), max_batch_size=4, max_wait_ms=5, max_queue=100, on_batch=sizes.append)
        try:
            await asyncio.gather(*(batcher.submit({"x": i}) for i in range(6)))
            await batcher.submit({"x": 6})
        finally:
            await batcher.close()

    run(main)
    assert sizes == [4, 2, 1]


def test_callers_that_gave_up_do_not_fill_the_queue():
    async def main():
        started, release = asyncio.Event(), asyncio.Event()

        async def slow(columns: dict[str, list[int]]) -> list[int]:
            started.set()
            await release.wait()
            return columns["x"]

        batcher = Batcher(slow, max_batch_size=1, max_wait_ms=0, max_queue=2)
        try:
            running = asyncio.create_task(batcher.submit({"x": 0}))
            await asyncio.wait_for(started.wait(), 5)
            quitters = [asyncio.create_task(batcher.submit({"x": i})) for i in (1, 2)]
            await settle(lambda: batcher.depth == 2)
            for quitter in quitters:  # e.g. their clients timed out while the batch ran
                quitter.cancel()
            await asyncio.gather(*quitters, return_exceptions=True)
            newcomer = asyncio.create_task(batcher.submit({"x": 3}))  # nobody is waiting: this must be accepted
            await asyncio.sleep(0)  # one turn: it reaches the queue (or is turned away) while the batch still runs
            release.set()
            return await running, await newcomer
        finally:
            await batcher.close()

    assert run(main) == (0, 3)
