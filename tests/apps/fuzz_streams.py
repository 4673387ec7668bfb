"""Streams for the fuzzer (tests/test_fuzz.py): like examples/streaming.py, without the pause that makes one request
last minutes, and with an item type that is an object."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Annotated

from pydantic import BaseModel, Field

from fermion import Service, endpoint


class Step(BaseModel):
    """One item of a countdown."""

    left: int
    done: bool


class FuzzStreams(Service):
    """Counts and spells, one item at a time."""

    @endpoint(stream=True)
    def count(self, n: Annotated[int, Field(ge=0, le=200)]) -> Iterator[int]:
        """Count from 1 to n."""
        yield from range(1, n + 1)

    @endpoint(stream=True)
    async def countdown(self, start: Annotated[int, Field(ge=0, le=50)]) -> AsyncIterator[Step]:
        """Count down to zero, as objects."""
        for left in range(start, -1, -1):
            yield Step(left=left, done=left == 0)
