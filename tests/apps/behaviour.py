"""A Service that exercises every serving behaviour the tests check (limits, errors, streams, files)."""

from __future__ import annotations

import asyncio
import os
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

from fermion import EventStream, File, InvalidInput, Response, Service, endpoint


def _wait_for_file(path: str, limit: float = 30.0) -> None:
    deadline = time.monotonic() + limit
    while not Path(path).exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} never appeared")
        time.sleep(0.01)


def _exhausted(kind: str) -> Exception:
    """What running out of memory or overflowing says: details of this machine, which must stay in its log."""
    if kind == "memory":
        return MemoryError("Unable to allocate 22.0 GiB for an array with shape (458601300,) in /srv/secret-model")
    return OverflowError("cannot fit 'int' into an index-sized integer in /srv/secret-model")


class Behaviour(Service):
    """Test service."""

    def setup(self) -> None:
        gate = os.environ.get("FERMION_TEST_GATE")
        if gate:
            _wait_for_file(gate, 120)
        if os.environ.get("FERMION_TEST_SETUP_FAIL"):
            raise RuntimeError("model file missing")
        self.calls: Counter[str] = Counter()
        self.batch_sizes: list[int] = []

    @endpoint
    def predict(self, text: str, times: int = 1) -> dict[str, str]:
        """Echo."""
        return {"output": text * times}

    @endpoint
    async def apredict(self, text: str) -> str:
        await asyncio.sleep(0)
        return text.upper()

    @endpoint(method="GET")
    def lookup(self, key: str, limit: int = 3, tags: list[str] | None = None) -> dict[str, object]:
        return {"key": key, "limit": limit, "tags": tags}

    @endpoint
    def boom(self, message: str = "kaboom") -> None:
        raise ValueError(message)

    @endpoint(timeout=0.3)
    async def slow(self, seconds: float) -> str:
        await asyncio.sleep(seconds)
        return "done"

    @endpoint(max_concurrency=1, max_queue=1)
    def blocking(self, tag: str, started: str, release: str) -> str:
        """Counts the call, says it started, then waits until the release file exists."""
        self.calls[tag] += 1
        Path(started).write_text(tag)
        _wait_for_file(release)
        return tag

    @endpoint(method="GET")
    def calls_of(self, tag: str) -> int:
        return self.calls[tag]

    @endpoint
    def sleepy(self, seconds: float, started: str = "") -> float:
        if started:
            Path(started).write_text("started")
        time.sleep(seconds)
        return seconds

    @endpoint(stream=True)
    def count(self, n: int) -> Iterator[int]:
        yield from range(n)

    @endpoint(stream=True)
    def stream_fail(self, n: int) -> Iterator[int]:
        yield from range(n)
        raise RuntimeError("stream broke")

    @endpoint
    def exhausted(self, kind: str) -> None:
        raise _exhausted(kind)

    @endpoint(stream=True)
    def stream_exhausted(self, n: int) -> Iterator[int]:
        yield from range(n)
        raise _exhausted("memory")

    @endpoint(stream=True)
    async def ticker(self, tag: str) -> AsyncIterator[int]:
        """Yields forever; counts how many items it produced under `tag`."""
        n = 0
        while True:
            self.calls[tag] += 1
            yield n
            n += 1
            await asyncio.sleep(0.01)

    @endpoint
    def size(self, upload: File, label: str = "") -> dict[str, object]:
        return {"size": upload.size, "filename": upload.filename, "content_type": upload.content_type, "label": label}

    @endpoint(max_batch_size=4, max_wait_ms=50)
    def double(self, x: list[int]) -> list[int]:
        self.batch_sizes.append(len(x))
        if any(v < 0 for v in x):
            raise ValueError("negative input")
        return [2 * v for v in x]

    @endpoint
    def picky(self, word: str) -> str:
        if not word.isalpha():
            raise InvalidInput(f"{word!r} is not a word: send letters only")
        return word

    @endpoint(method="GET")
    def pixel(self) -> Response:
        return Response(b"\x89PNG fake", media_type="image/png", headers={"x-kind": "pixel"})

    @endpoint
    async def maybe_stream(self, n: int, stream: bool = False) -> object:
        """Streams OpenAI-style when asked, answers once otherwise."""
        if not stream:
            return {"items": list(range(n))}
        return EventStream(({"i": i} for i in range(n)), end=b"data: [DONE]\n\n")

    @endpoint(max_batch_size=4, max_wait_ms=50)
    def checked(self, x: list[int]) -> list[int]:
        for v in x:
            if v < 0:
                raise InvalidInput(f"x must be >= 0, got {v}")
        return x

    @endpoint(method="GET")
    def batches(self) -> list[int]:
        return self.batch_sizes

    @endpoint(timeout=0.5)
    def slow_stream(self, n: int) -> Iterator[int]:
        for i in range(n):
            time.sleep(0.3)
            yield i

    @endpoint(method="GET")
    def options_of(self, options: dict[str, int]) -> int:
        return sum(options.values())

    @endpoint(stream=True)
    def refuses_early(self, n: int) -> Iterator[int]:
        if n < 0:
            raise InvalidInput("n must not be negative")
        yield from range(n)

    @endpoint(extra="ignore", error_style="openai")
    def lenient(self, text: str) -> str:
        return text

    @endpoint
    def count_files(self, uploads: list[File]) -> list[int]:
        return [f.size for f in uploads]

    @endpoint(method="GET")
    def compute_threads(self) -> str:
        return os.environ.get("OMP_NUM_THREADS", "")

    @endpoint(method="GET")
    def whoami(self) -> int:
        return os.getpid()
