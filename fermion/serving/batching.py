"""Dynamic batching: requests for one endpoint are grouped by size or deadline and run together.

Each request submits one item (its validated keyword arguments) and awaits its own result.
The endpoint function receives one list per parameter and returns one result per item.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from fermion.serving.limits import Overloaded

_PROBE_EVERY = 8  # adaptive: even when waiting has not paid off lately, wait before every 8th batch
RunBatch = Callable[[dict[str, list[Any]]], Awaitable[Any]]


class BatchError(Exception):
    """The batched function broke its contract (for example, returned the wrong number of results)."""


class _Item:
    __slots__ = ("future", "kwargs")

    def __init__(self, kwargs: dict[str, Any], future: asyncio.Future[Any]) -> None:
        self.kwargs = kwargs
        self.future = future


class Batcher:
    """Groups items into batches of at most `max_batch_size`, waiting at most `max_wait_ms` for more.

    The oldest waiting item never waits longer than `max_wait_ms` for company. At most
    `concurrency` batches run at once; at most `max_queue` items wait (more → `Overloaded`).
    Items whose caller gave up (cancelled future) are dropped before their batch runs. When a
    batch raises, its items are retried one by one so that a bad item fails only its own request.
    """

    def __init__(
        self,
        run_batch: RunBatch,
        *,
        max_batch_size: int,
        max_wait_ms: float,
        max_queue: int,
        concurrency: int = 1,
        on_batch: Callable[[int], None] | None = None,
        adaptive: bool = False,
    ) -> None:
        self._run_batch = run_batch
        self.max_batch_size = max_batch_size
        self.max_wait = max_wait_ms / 1000.0
        self.max_queue = max_queue
        self.concurrency = concurrency
        self._on_batch = on_batch
        #: Skip the wait for company while waiting has not been paying off (see `_worth_waiting`).
        self.adaptive = adaptive
        self._gain = 1.0  # recent items gained per wait (exponential average; starts hopeful)
        self._skipped = 0
        self._queue: deque[_Item] = deque()
        self._arrivals: deque[float] = deque()
        self._waiters: list[asyncio.Future[None]] = []
        self._workers: list[asyncio.Task[None]] = []
        self.running = 0

    @property
    def depth(self) -> int:
        """Items waiting to be batched."""
        return len(self._queue)

    async def submit(self, kwargs: dict[str, Any]) -> Any:
        """Queue one item and wait for its result."""
        if len(self._queue) >= self.max_queue:
            self._purge_abandoned()
            if len(self._queue) >= self.max_queue:
                raise Overloaded
        if not self._workers:
            self._workers = [asyncio.create_task(self._work(), name="fermion-batcher") for _ in range(self.concurrency)]
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._queue.append(_Item(kwargs, future))
        self._arrivals.append(time.monotonic())
        size = len(self._queue)
        if size == 1 or size >= self.max_batch_size:  # only these change what a worker would do
            self._notify()
        return await future

    def _notify(self) -> None:
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_result(None)
        self._waiters.clear()

    async def _wait(self, timeout: float | None) -> None:
        """Sleep until an item arrives in an empty queue, the queue fills, or `timeout` passes."""
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[None] = loop.create_future()
        self._waiters.append(waiter)
        handle = None if timeout is None else loop.call_later(timeout, _resolve, waiter)
        try:
            await waiter
        finally:
            if handle is not None:
                handle.cancel()
            if waiter in self._waiters:
                self._waiters.remove(waiter)

    async def close(self) -> None:
        """Stop the workers; waiting items are cancelled."""
        for task in self._workers:
            task.cancel()
        for task in self._workers:
            try:
                await task
            except asyncio.CancelledError:
                pass
        self._workers = []
        while self._queue:
            self._queue.popleft().future.cancel()
            self._arrivals.popleft()

    def _purge_abandoned(self) -> None:
        """Forget items whose callers gave up (only needed when the queue looks full)."""
        kept = [(item, t) for item, t in zip(self._queue, self._arrivals, strict=True) if not item.future.done()]
        self._queue = deque(item for item, _ in kept)
        self._arrivals = deque(t for _, t in kept)

    def _drop_abandoned_head(self) -> None:
        while self._queue and self._queue[0].future.done():
            self._queue.popleft()
            self._arrivals.popleft()

    def _worth_waiting(self) -> bool:
        """Adaptive waiting: wait for company only while it keeps coming.

        Each wait's gain (items that arrived during it) feeds an average; below half an item per
        wait, batches run at once (a lone client never waits), except every few batches, which
        still wait so that rising load is noticed.
        """
        if not self.adaptive or self.running > 0 or self._gain >= 0.5:
            return True
        self._skipped += 1
        if self._skipped >= _PROBE_EVERY:
            self._skipped = 0
            return True
        return False

    async def _gather_company(self) -> None:
        """Wait until the batch is full or the oldest item has waited `max_wait_ms`."""
        before = len(self._queue)
        deadline = self._arrivals[0] + self.max_wait
        while self._queue and len(self._queue) < self.max_batch_size:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            await self._wait(remaining)
            self._drop_abandoned_head()
        gained = max(0, min(len(self._queue), self.max_batch_size) - before)
        self._gain = 0.7 * self._gain + 0.3 * gained

    async def _work(self) -> None:
        while True:
            self._drop_abandoned_head()
            if not self._queue:
                await self._wait(None)
                continue
            if len(self._queue) < self.max_batch_size and self._worth_waiting():
                await self._gather_company()
                self._drop_abandoned_head()
                if not self._queue:
                    continue
            batch: list[_Item] = []
            while self._queue and len(batch) < self.max_batch_size:
                item = self._queue.popleft()
                self._arrivals.popleft()
                if not item.future.done():
                    batch.append(item)
            if batch:
                self.running += 1
                try:
                    await self._run(batch)
                finally:
                    self.running -= 1

    async def _run(self, batch: list[_Item]) -> None:
        if self._on_batch is not None:
            try:
                self._on_batch(len(batch))
            except Exception:  # a metrics hiccup must never stop the batcher
                pass
        try:
            results = await self._call(batch)
        except asyncio.CancelledError:
            for item in batch:
                item.future.cancel()
            raise
        except Exception as exc:
            if len(batch) == 1 or isinstance(exc, BatchError):
                _fail(batch, exc)
                return
            for item in batch:  # isolate the item(s) that broke the batch
                if item.future.done():
                    continue
                try:
                    result = (await self._call([item]))[0]
                except asyncio.CancelledError:
                    item.future.cancel()
                    raise
                except Exception as single_exc:
                    _fail([item], single_exc)
                else:
                    if not item.future.done():
                        item.future.set_result(result)
            return
        for item, result in zip(batch, results, strict=True):
            if not item.future.done():
                item.future.set_result(result)

    async def _call(self, batch: list[_Item]) -> Sequence[Any]:
        names = batch[0].kwargs.keys()
        columns = {name: [item.kwargs[name] for item in batch] for name in names}
        results = await self._run_batch(columns)
        try:
            results = list(results)
        except TypeError:
            raise BatchError(
                f"a batched endpoint must return a list with one result per input; it returned {type(results).__name__}"
            ) from None
        if len(results) != len(batch):
            raise BatchError(f"a batched endpoint returned {len(results)} results for {len(batch)} inputs")
        return results


def _resolve(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


def _fail(batch: list[_Item], exc: BaseException) -> None:
    for item in batch:
        if not item.future.done():
            item.future.set_exception(exc)
