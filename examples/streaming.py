"""A streaming endpoint: each yielded item reaches the client as a server-sent event.

fermion serve examples/streaming.py
curl -N http://127.0.0.1:8000/count -H 'content-type: application/json' -d '{"n": 3}'
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from typing import Annotated

from pydantic import Field

from fermion import Service, endpoint


class Streams(Service):
    """Counts and spells, one item at a time."""

    @endpoint(stream=True)
    def count(self, n: Annotated[int, Field(ge=0, le=10_000)], delay: Annotated[float, Field(ge=0, le=1)] = 0.0) -> Iterator[int]:
        """Count from 1 to n, optionally pausing between numbers.

        Args:
            n: The last number.
            delay: Seconds to wait between numbers.
        """
        import time

        for i in range(1, n + 1):
            if delay:
                time.sleep(delay)
            yield i

    @endpoint
    async def spell(self, word: Annotated[str, Field(max_length=1_000)]) -> AsyncIterator[str]:
        """Spell a word letter by letter (an async generator streams too)."""
        for letter in word:
            await asyncio.sleep(0)
            yield letter
