"""A Service whose endpoints record how they ended, so that tests can see cancellation from outside."""

from __future__ import annotations

import asyncio
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

from fermion import Service, cancelled, endpoint


class Cancellable(Service):
    """Each endpoint records under its `tag`: running, then cancelled, closed or finished."""

    def setup(self) -> None:
        self.states: dict[str, str] = {}
        self.produced: dict[str, int] = {}

    @endpoint
    async def wait(self, tag: str, seconds: float = 30.0, record: str = "") -> str:
        """Sleeps `seconds` unless cancelled first; `record`: a file that gets the state too (any replica's)."""
        self._set(tag, "running", record)
        try:
            await asyncio.sleep(seconds)
        except asyncio.CancelledError:
            self._set(tag, "cancelled", record)
            raise
        self._set(tag, "finished", record)
        return tag

    def _set(self, tag: str, state: str, record: str) -> None:
        self.states[tag] = state
        if record:  # a relative name lands in the replica's own TMPDIR (a sandboxed replica writes nowhere else)
            Path(tempfile.gettempdir(), record).write_text(state)

    @endpoint
    def hold(self, tag: str, seconds: float = 1.0) -> str:
        """Sync code: cannot be interrupted; runs to its end."""
        self.states[tag] = "running"
        time.sleep(seconds)
        self.states[tag] = "finished"
        return tag

    @endpoint
    def steps(self, tag: str, steps: int = 3000) -> int:
        """Sync code that checks `fermion.cancelled()` between steps, and stops early."""
        self.states[tag] = "running"
        for done in range(steps):
            if cancelled():
                self.states[tag] = "stopped"
                return done
            time.sleep(0.01)
        self.states[tag] = "finished"
        return steps

    @endpoint(stream=True)
    async def ticks(self, tag: str) -> AsyncIterator[int]:
        """An async generator that yields forever."""
        self.states[tag] = "running"
        try:
            n = 0
            while True:
                self.produced[tag] = n + 1
                yield n
                n += 1
                await asyncio.sleep(0.01)
        finally:
            self.states[tag] = "closed"

    @endpoint(stream=True)
    def sync_ticks(self, tag: str) -> Iterator[int]:
        """A sync generator that yields forever."""
        self.states[tag] = "running"
        try:
            n = 0
            while True:
                self.produced[tag] = n + 1
                yield n
                n += 1
                time.sleep(0.01)
        finally:
            self.states[tag] = "closed"

    @endpoint(method="GET")
    def state_of(self, tag: str) -> dict[str, object]:
        return {"state": self.states.get(tag, ""), "produced": self.produced.get(tag, 0)}
