"""Why a request task was cancelled, and one sweeper that enforces every request's deadline.

A timer per request (asyncio.timeout) costs more than the rest of a small request's handling;
instead each request registers its deadline in a dict and one task checks them every 50 ms.
Cancelled tasks carry a reason so the handler can answer 504 (timeout) or stop quietly
(the client went away).
"""

from __future__ import annotations

import asyncio
import weakref
from typing import Any

TIMEOUT = "timeout"
DISCONNECT = "disconnect"

# Request tasks cancelled on purpose, and why; anything else is an ordinary cancellation.
_REASONS: weakref.WeakKeyDictionary[asyncio.Task[Any], str] = weakref.WeakKeyDictionary()


def cancel(task: asyncio.Task[Any], reason: str) -> None:
    """Cancel `task`, remembering why (the first reason wins)."""
    _REASONS.setdefault(task, reason)
    task.cancel()


def take_reason(task: asyncio.Task[Any] | None) -> str | None:
    """Why we cancelled `task` (and forget it); None if we did not."""
    if task is None:
        return None
    return _REASONS.pop(task, None)


class Deadlines:
    """Cancels registered tasks whose deadline (loop time) has passed, with reason `TIMEOUT`."""

    RESOLUTION = 0.05

    def __init__(self) -> None:
        self._deadlines: dict[asyncio.Task[Any], float] = {}
        self._sweeper: asyncio.Task[None] | None = None

    def add(self, task: asyncio.Task[Any], seconds: float) -> None:
        loop = task.get_loop()
        self._deadlines[task] = loop.time() + seconds
        if self._sweeper is None or self._sweeper.done():
            self._sweeper = loop.create_task(self._sweep(), name="fermion-deadlines")

    def discard(self, task: asyncio.Task[Any]) -> None:
        self._deadlines.pop(task, None)

    async def _sweep(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self.RESOLUTION)
            if not self._deadlines:
                continue
            now = loop.time()
            expired = [task for task, deadline in self._deadlines.items() if deadline <= now]
            for task in expired:
                del self._deadlines[task]
                cancel(task, TIMEOUT)

    def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
