"""The Service the schema and OpenAPI tests describe: one endpoint of each kind (sync, async, GET, batched,
streamed, file upload, custom route, no result).

No `from __future__ import annotations` here on purpose: these endpoints are defined with real
(evaluated) annotations, while tests/apps/unit_future_app.py covers string annotations.
"""

from collections.abc import AsyncIterator, Iterator

import pydantic

from fermion import File, Service, endpoint


class Point(pydantic.BaseModel):
    """A point in the plane."""

    x: float
    y: float


class TextTools(Service):
    """Small text utilities."""

    @endpoint
    def predict(self, text: str, times: int = 1) -> str:
        """Repeat a text.

        The text is repeated verbatim, without separators.

        Args:
            text: What to repeat.
            times (int): How many times.

        Returns:
            The repeated text.
        """
        return text * times

    @endpoint(method="get")
    def search(self, q: str, limit: int = 10) -> dict:
        """Find documents."""
        return {"q": q, "limit": limit}

    @endpoint
    async def shout(self, text: str) -> str:
        """Upper-case a text."""
        return text.upper()

    @endpoint(max_batch_size=8)
    def embed(self, text: list[str]) -> list[list[float]]:
        """Embed texts, many at a time."""
        return [[float(len(t))] for t in text]

    @endpoint
    def count(self, n: int) -> Iterator[int]:
        """Count from 0 to n - 1."""
        yield from range(n)

    @endpoint
    async def ticks(self, n: int) -> AsyncIterator[str]:
        """Stream ticks."""
        for i in range(n):
            yield f"tick {i}"

    @endpoint
    def size(self, upload: File, label: str = "file") -> int:
        """Size of an upload in bytes."""
        return upload.size

    @endpoint(path="v2/classify", method="PUT", name="classify_v2", tags=["labels"])
    def classify(self, text: str) -> Point:
        return Point(x=len(text), y=0)

    @endpoint
    def forget(self, key: str) -> None:
        """Drop a key."""
