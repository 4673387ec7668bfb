"""A Service exercising every kind of endpoint the Python client must call (tests/test_client.py)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from datetime import datetime

from fermion import EventStream, File, InvalidInput, Response, Service, endpoint


class ClientApp(Service):
    """Endpoints of every shape: defaults, GET, stream, file, batch, errors, async."""

    @endpoint
    def predict(self, text: str, times: int = 1) -> str:
        """Repeat a text.

        Args:
            text: What to repeat.
            times: How many times.
        """
        return text * times

    @endpoint(method="GET")
    def search(self, q: str, tags: list[str] | None = None, limit: int = 10) -> dict:
        """Echo a query back."""
        return {"q": q, "tags": tags or [], "limit": limit}

    @endpoint
    def count(self, n: int) -> Iterator[int]:
        """Count from 0 to n - 1."""
        yield from range(n)

    @endpoint
    def fail_midway(self, n: int) -> Iterator[int]:
        """Yield n items, then raise."""
        yield from range(n)
        raise RuntimeError("ran out of numbers")

    @endpoint
    def size(self, upload: File, label: str = "file", meta: dict | None = None) -> dict:
        """Describe an uploaded file."""
        return {"size": upload.size, "filename": upload.filename, "label": label, "meta": meta}

    @endpoint(method="GET")
    def peek(self, upload: File) -> int:
        """Size of a file sent in a query string (as base64)."""
        return upload.size

    @endpoint(max_batch_size=8, max_wait_ms=5)
    def square(self, x: list[int]) -> list[int]:
        """Square numbers, batched."""
        return [v * v for v in x]

    @endpoint
    def boom(self, message: str = "boom") -> str:
        """Always raise."""
        raise ValueError(message)

    @endpoint
    def sqrt(self, x: float) -> float:
        """Refuse negative numbers with a 422 of the endpoint's own."""
        if x < 0:
            raise InvalidInput(f"x must be zero or more, got {x}")
        return x**0.5

    @endpoint
    async def shout(self, text: str) -> str:
        """Upper-case a text, asynchronously."""
        await asyncio.sleep(0)
        return text.upper()

    @endpoint
    async def ticks(self, n: int) -> AsyncIterator[str]:
        """Stream n ticks from an async generator."""
        for i in range(n):
            await asyncio.sleep(0)
            yield f"tick {i}"

    @endpoint
    def schedule(self, when: datetime) -> str:
        """Echo a time; only the server can tell a malformed date-time string."""
        return when.isoformat()

    @endpoint
    def thumbnail(self, width: int) -> Response:
        """Raw bytes with a media type."""
        return Response(b"\x89PNG" + bytes([width]), media_type="image/png")

    @endpoint
    def chat(self, prompt: str, stream: bool = False) -> EventStream | str:
        """Answer at once, or stream words OpenAI-style (ending with `data: [DONE]`) when asked."""
        if stream:
            return EventStream(iter(prompt.split()), end=b"data: [DONE]\n\n")
        return prompt

    @endpoint
    def call(self, value: int) -> int:
        """An endpoint whose name clashes with Client.call."""
        return value + 1
