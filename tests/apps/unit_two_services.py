"""Two Services in one file: the source string has to say which one (tests/test_sources.py)."""

from __future__ import annotations

from fermion import Service, endpoint


class First(Service):
    @endpoint
    def one(self) -> int:
        return 1


class Second(Service):
    @endpoint
    def two(self) -> int:
        return 2
