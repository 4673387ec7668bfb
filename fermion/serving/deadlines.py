"""How request tasks end early, and why: deadlines, clients that leave, and explicit cancellation.

A timer per request (asyncio.timeout) costs more than the rest of a small request's handling;
instead each request registers its deadline in a dict and one task checks them every 50 ms.
The same sweep starts a disconnect watcher for each request that is still running: a request
that ends within a sweep never pays for one, a long one is cancelled soon after its client leaves.
Cancelled tasks carry a reason so the handler can answer 504 (timeout), 409 (cancelled by
`DELETE /requests/{id}`) or stop quietly (the client went away).
"""

from __future__ import annotations

import asyncio
import threading
import weakref
from collections.abc import Callable
from typing import Any

TIMEOUT = "timeout"
DISCONNECT = "disconnect"
CANCELLED = "cancelled"

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


async def _cancel_on_disconnect(task: asyncio.Task[Any], receive: Any) -> None:
    """Cancel `task` (reason `DISCONNECT`) when its client goes away; the body has been read already."""
    try:
        while (await receive())["type"] != "http.disconnect":
            await asyncio.sleep(Deadlines.RESOLUTION)  # a server whose receive() does not wait after the body: poll, never spin
    except Exception:  # a server whose receive() fails after the body: nothing to watch
        return
    cancel(task, DISCONNECT)


class Deadlines:
    """Cancels registered tasks whose deadline (loop time) has passed (reason `TIMEOUT`), and
    watched tasks whose client disconnected (reason `DISCONNECT`)."""

    RESOLUTION = 0.05

    def __init__(self) -> None:
        self._deadlines: dict[asyncio.Task[Any], float] = {}
        self._unwatched: dict[asyncio.Task[Any], Any] = {}  # task → its receive(), until a sweep starts a watcher
        self._watchers: dict[asyncio.Task[Any], asyncio.Task[None]] = {}
        self._sweeper: asyncio.Task[None] | None = None

    def add(self, task: asyncio.Task[Any], seconds: float) -> None:
        loop = task.get_loop()
        self._deadlines[task] = loop.time() + seconds
        if self._sweeper is None or self._sweeper.done():
            self._sweeper = loop.create_task(self._sweep(), name="fermion-deadlines")

    def watch(self, task: asyncio.Task[Any], receive: Any) -> None:
        """Cancel `task` if its client disconnects, from the next sweep on (call once the body is read)."""
        self._unwatched[task] = receive

    def discard(self, task: asyncio.Task[Any]) -> None:
        """Forget `task`'s deadline and stop watching its client (it is answering, or done)."""
        self._deadlines.pop(task, None)
        if self._unwatched.pop(task, None) is None:
            watcher = self._watchers.pop(task, None)
            if watcher is not None:
                watcher.cancel()

    async def _sweep(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self.RESOLUTION)
            if self._unwatched:
                for task, receive in self._unwatched.items():
                    self._watchers[task] = loop.create_task(_cancel_on_disconnect(task, receive))
                self._unwatched.clear()
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
        for watcher in self._watchers.values():
            watcher.cancel()
        self._watchers.clear()
        self._unwatched.clear()


class InFlight:
    """This process's requests in flight (queued, running or streaming) by request id, so that
    `DELETE /requests/{id}` can cancel one (reason `CANCELLED`)."""

    __slots__ = ("_requests",)

    def __init__(self) -> None:
        self._requests: dict[bytes, tuple[asyncio.Task[Any], str]] = {}

    def __contains__(self, request_id: bytes) -> bool:
        return request_id in self._requests

    def __len__(self) -> int:
        return len(self._requests)

    def add(self, request_id: bytes, task: asyncio.Task[Any], endpoint: str) -> None:
        """Track a request; if its id already names one in flight (a caller reused it), that one keeps it."""
        self._requests.setdefault(request_id, (task, endpoint))

    def remove(self, request_id: bytes, task: asyncio.Task[Any]) -> None:
        """Forget the request (if the id still names `task`'s: once a request answers, its id is free again)."""
        found = self._requests.get(request_id)
        if found is not None and found[0] is task:
            del self._requests[request_id]

    def cancel(self, request_id: bytes) -> str | None:
        """Cancel the request with this id; the name of its endpoint, or None if none is in flight."""
        found = self._requests.get(request_id)
        if found is None:
            return None
        task, endpoint = found
        cancel(task, CANCELLED)
        return endpoint


class CancelFlag:
    """Set when the request a worker thread serves is abandoned (see `cancelled`)."""

    __slots__ = ("cancelled",)

    def __init__(self) -> None:
        self.cancelled = False


_thread = threading.local()


def call_flagged(flag: CancelFlag, func: Callable[..., Any], kwargs: dict[str, Any]) -> Any:
    """Run a sync endpoint in a worker thread, where `cancelled()` reads `flag`."""
    _thread.flag = flag
    try:
        return func(**kwargs)
    finally:
        _thread.flag = None


def cancelled() -> bool:
    """Whether the request this code serves was cancelled (its client left, its timeout passed, or
    `DELETE /requests/{id}` named it). Sync endpoint code cannot be interrupted: it may check this
    between steps and return early, since its result is discarded anyway. Async code gets
    `CancelledError` instead; batched calls and sync generators always see False."""
    flag = getattr(_thread, "flag", None)
    if flag is not None:
        return bool(flag.cancelled)
    try:
        task = asyncio.current_task()
    except RuntimeError:  # no event loop in this thread
        return False
    return task is not None and task.cancelling() > 0
