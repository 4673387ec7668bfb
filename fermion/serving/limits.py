"""Admission control: a concurrency limit with a bounded waiting queue (full → 429)."""

from __future__ import annotations

import asyncio
from collections import deque


class Overloaded(Exception):
    """The endpoint is at its concurrency limit and its queue is full."""


class ConcurrencyLimiter:
    """At most `limit` holders at once; at most `max_queue` more wait, first come first served.

    Waiters that are cancelled (the client went away, the timeout fired) leave the queue
    without ever running.
    """

    __slots__ = ("_waiters", "in_flight", "limit", "max_queue")

    def __init__(self, limit: int, max_queue: int) -> None:
        self.limit = limit
        self.max_queue = max_queue
        self.in_flight = 0
        self._waiters: deque[asyncio.Future[None]] = deque()

    @property
    def waiting(self) -> int:
        return len(self._waiters)

    def try_acquire(self) -> bool:
        """Take a slot if one is free right now, without waiting."""
        if self.in_flight < self.limit and not self._waiters:
            self.in_flight += 1
            return True
        return False

    async def acquire(self) -> None:
        """Take a slot, waiting in the queue if needed; raises `Overloaded` when the queue is full."""
        if self.try_acquire():
            return
        if len(self._waiters) >= self.max_queue:
            raise Overloaded
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self.release()  # the slot was handed to us just as we were cancelled: pass it on
            else:
                try:
                    self._waiters.remove(waiter)
                except ValueError:
                    pass
            raise

    def release(self) -> None:
        """Give the slot back, handing it straight to the next live waiter."""
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
        self.in_flight -= 1
