"""Services for the chaos suite's shutdown tests: one that takes long to start, one that cannot
start, one whose calls take long (so a replica is mid-request when the platform stops)."""

from __future__ import annotations

import time

from fermion import Service, endpoint


class SlowStart(Service):
    """setup() takes a minute: its replica is 'starting' for all of a short test."""

    def setup(self) -> None:
        time.sleep(60)

    @endpoint
    def predict(self, text: str) -> str:
        return text


class CrashLoop(Service):
    """setup() always fails: the replica exits, is started again after a backoff, and fails again."""

    def setup(self) -> None:
        raise RuntimeError("this service never starts (on purpose)")

    @endpoint
    def predict(self, text: str) -> str:
        return text


class Slow(Service):
    """Each call takes `seconds`: a replica stopped meanwhile is draining."""

    @endpoint
    def wait(self, seconds: float = 30.0) -> float:
        time.sleep(seconds)
        return seconds
