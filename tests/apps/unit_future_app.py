"""A Service written with `from __future__ import annotations`: every annotation is a string (tests/test_schema.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

from pydantic import BaseModel

from fermion import File, Service, endpoint


class Point(BaseModel):
    """A point in the plane."""

    x: float
    y: float


class Shapes(Service):
    """Geometry endpoints whose types are only known by name until Fermion resolves them."""

    @endpoint
    def centroid(self, points: list[Point], label: str | None = None) -> Point:
        """Average a list of points.

        Args:
            points: The corners of the shape.
            label: A name to remember the shape by.
        """
        n = len(points)
        return Point(x=sum(p.x for p in points) / n, y=sum(p.y for p in points) / n)

    @endpoint(max_batch_size=4)
    def norms(self, point: list[Point]) -> list[float]:
        """Distance of each point from the origin, batched."""
        return [(p.x**2 + p.y**2) ** 0.5 for p in point]

    @endpoint
    def walk(self, steps: int) -> Iterator[Point]:
        """Stream the points of a diagonal walk."""
        for i in range(steps):
            yield Point(x=i, y=i)

    @endpoint
    async def ticks(self, n: int) -> AsyncIterator[str]:
        """Stream n ticks."""
        for i in range(n):
            yield f"tick {i}"

    @endpoint
    def measure(self, drawing: File | None = None) -> int:
        """Size of an optional drawing in bytes."""
        return 0 if drawing is None else drawing.size
