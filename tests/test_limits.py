"""Admission control: at most `limit` requests run, a bounded queue waits, first come first served."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from fermion.serving.limits import ConcurrencyLimiter, Overloaded

# A regression here tends to hang rather than fail: give up quickly instead of after the suite default.
pytestmark = pytest.mark.timeout(10)


async def settle(condition: Callable[[], bool], turns: int = 1000) -> None:
    """Let the other tasks run until `condition()` holds (event-loop turns, no wall-clock sleeping)."""
    for _ in range(turns):
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError("the limiter never reached the expected state")


def test_free_slots_are_taken_without_waiting():
    limiter = ConcurrencyLimiter(limit=2, max_queue=0)
    assert limiter.try_acquire()
    assert limiter.try_acquire()
    assert not limiter.try_acquire()
    assert limiter.in_flight == 2
    limiter.release()
    assert limiter.in_flight == 1


def test_no_more_than_limit_run_at_once():
    peak = 0

    async def main():
        nonlocal peak
        limiter = ConcurrencyLimiter(limit=2, max_queue=10)
        release = asyncio.Event()
        running = 0

        async def request(i: int) -> int:
            nonlocal running, peak
            await limiter.acquire()
            try:
                running += 1
                peak = max(peak, running)
                await release.wait()
                return i
            finally:
                running -= 1
                limiter.release()

        tasks = [asyncio.create_task(request(i)) for i in range(5)]
        await settle(lambda: limiter.in_flight == 2 and limiter.waiting == 3)
        release.set()
        results = await asyncio.gather(*tasks)
        return results, limiter.in_flight, limiter.waiting

    assert asyncio.run(main()) == ([0, 1, 2, 3, 4], 0, 0)
    assert peak == 2


def test_waiters_get_the_slot_in_arrival_order():
    async def main():
        limiter = ConcurrencyLimiter(limit=1, max_queue=10)
        await limiter.acquire()
        order: list[str] = []

        async def request(name: str) -> None:
            await limiter.acquire()
            order.append(name)

        tasks = []
        for name in ("first", "second", "third"):
            tasks.append(asyncio.create_task(request(name)))
            await settle(lambda: limiter.waiting == len(tasks))
        for expected in range(1, 4):
            limiter.release()
            await settle(lambda expected=expected: len(order) == expected)
        await asyncio.gather(*tasks)
        limiter.release()
        return order, limiter.in_flight

    assert asyncio.run(main()) == (["first", "second", "third"], 0)


def test_a_released_slot_goes_to_the_waiter_not_a_newcomer():
    async def main():
        limiter = ConcurrencyLimiter(limit=1, max_queue=10)
        await limiter.acquire()
        waiter = asyncio.create_task(limiter.acquire())
        await settle(lambda: limiter.waiting == 1)
        limiter.release()
        # The slot was handed over, not freed: someone arriving now cannot jump the queue.
        newcomer_got_in = limiter.try_acquire()
        await waiter
        return newcomer_got_in, limiter.in_flight

    assert asyncio.run(main()) == (False, 1)


def test_a_full_queue_is_overloaded():
    async def main():
        limiter = ConcurrencyLimiter(limit=1, max_queue=1)
        await limiter.acquire()
        waiter = asyncio.create_task(limiter.acquire())
        await settle(lambda: limiter.waiting == 1)
        with pytest.raises(Overloaded):
            await limiter.acquire()
        assert limiter.waiting == 1  # the rejected request did not join the queue
        limiter.release()
        await waiter
        limiter.release()
        return limiter.in_flight

    assert asyncio.run(main()) == 0


def test_no_queue_means_overloaded_as_soon_as_busy():
    async def main():
        limiter = ConcurrencyLimiter(limit=1, max_queue=0)
        await limiter.acquire()
        with pytest.raises(Overloaded):
            await limiter.acquire()

    asyncio.run(main())


def test_a_cancelled_waiter_leaves_the_queue_and_never_runs():
    async def main():
        limiter = ConcurrencyLimiter(limit=1, max_queue=10)
        await limiter.acquire()
        ran: list[str] = []

        async def request(name: str) -> None:
            await limiter.acquire()
            ran.append(name)
            limiter.release()

        quitter = asyncio.create_task(request("quitter"))
        stayer = asyncio.create_task(request("stayer"))
        await settle(lambda: limiter.waiting == 2)
        quitter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await quitter
        assert limiter.waiting == 1
        limiter.release()
        await stayer
        return ran, limiter.in_flight, limiter.waiting

    assert asyncio.run(main()) == (["stayer"], 0, 0)


def test_a_waiter_cancelled_before_the_release_runs_is_skipped():
    async def main():
        limiter = ConcurrencyLimiter(limit=1, max_queue=10)
        await limiter.acquire()
        quitter = asyncio.create_task(limiter.acquire())
        stayer = asyncio.create_task(limiter.acquire())
        await settle(lambda: limiter.waiting == 2)
        quitter.cancel()  # it has not had a chance to leave the queue yet
        limiter.release()
        await asyncio.gather(quitter, return_exceptions=True)
        await stayer
        in_flight_while_stayer_runs = limiter.in_flight
        limiter.release()
        return quitter.cancelled(), in_flight_while_stayer_runs, limiter.in_flight, limiter.waiting

    assert asyncio.run(main()) == (True, 1, 0, 0)


def test_a_waiter_cancelled_just_after_being_granted_passes_the_slot_on():
    async def main():
        limiter = ConcurrencyLimiter(limit=1, max_queue=10)
        await limiter.acquire()
        unlucky = asyncio.create_task(limiter.acquire())
        next_in_line = asyncio.create_task(limiter.acquire())
        await settle(lambda: limiter.waiting == 2)
        limiter.release()  # hands the slot to `unlucky`...
        unlucky.cancel()  # ...which is cancelled before it could run
        await asyncio.gather(unlucky, return_exceptions=True)
        await next_in_line
        holders = limiter.in_flight
        limiter.release()
        return unlucky.cancelled(), holders, limiter.in_flight

    assert asyncio.run(main()) == (True, 1, 0)


def test_a_slot_granted_to_a_cancelled_waiter_is_not_leaked():
    async def main():
        limiter = ConcurrencyLimiter(limit=1, max_queue=10)
        await limiter.acquire()
        unlucky = asyncio.create_task(limiter.acquire())
        await settle(lambda: limiter.waiting == 1)
        limiter.release()
        unlucky.cancel()
        await asyncio.gather(unlucky, return_exceptions=True)
        return limiter.in_flight, limiter.try_acquire()

    assert asyncio.run(main()) == (0, True)


def test_timeouts_around_acquire_do_not_leak_slots():
    async def main():
        limiter = ConcurrencyLimiter(limit=1, max_queue=10)
        await limiter.acquire()
        for _ in range(3):
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(limiter.acquire(), timeout=0.001)
        assert limiter.waiting == 0
        limiter.release()
        return limiter.in_flight

    assert asyncio.run(main()) == 0
