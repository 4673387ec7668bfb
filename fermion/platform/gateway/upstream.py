"""A lean HTTP/1.1 client for the gateway: pooled keep-alive connections to replicas, raw asyncio.

httpx's pool degrades badly with concurrency (measured: 392 req/s at 8 concurrent requests, 63
at 64, against a replica that serves 8k), so the gateway speaks HTTP/1.1 to replicas itself:
one request per connection at a time, bodies with Content-Length or chunked encoding.

Pooled connections are never handed out stale: one that sat idle longer than `idle_timeout`
(shorter than the replica's own keep-alive, `fermion.serving.server.KEEP_ALIVE_S`, or the
`Keep-Alive: timeout=N` a proxy advertises) is closed instead of reused, one the replica has
already closed is noticed before use, and a request that fails on a reused connection before any
byte came back is sent again on a fresh connection: the replica closed it idle, so it processed
nothing.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from urllib.parse import urlsplit

#: How long a pooled connection may sit idle before it is closed rather than reused. Replicas keep
#: idle connections for 30 s (`fermion.serving.server.KEEP_ALIVE_S`); closing ours well before
#: means the two never race.
IDLE_TIMEOUT_S = 15.0


def behind_shared_proxy(url: str) -> bool:
    """An upstream URL with a path is a route on a shared proxy (Ray Serve's), not one replica."""
    return "/" in url.split("://", 1)[-1]


class UpstreamUnreachable(Exception):
    """Nothing was sent: the replica refused the connection (safe to try another)."""


class UpstreamBroken(Exception):
    """The connection broke after the request was (maybe) sent: not safe to retry."""


@dataclass
class UpstreamResponse:
    """Status, headers, and the body as it arrives (iterate `body`, then the connection is reused)."""

    status: int
    headers: list[tuple[bytes, bytes]]
    body: AsyncIterator[bytes]


class _Connection:
    __slots__ = ("reader", "writer", "idle_since", "keep_for")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.idle_since = 0.0
        self.keep_for: float | None = None  # the upstream's own advertised keep-alive, when it sends one

    def close(self) -> None:
        self.writer.close()

    def usable(self, now: float, idle_timeout: float) -> bool:
        """Still open on both sides and idle for less than the pool's (or the upstream's) limit."""
        limit = idle_timeout if self.keep_for is None else min(idle_timeout, self.keep_for / 2)
        return now - self.idle_since < limit and not self.writer.is_closing() and not self.reader.at_eof()


class UpstreamPool:
    """Keep-alive connections per replica URL (`http://host:port`, or `http://host:port/route` behind a shared proxy)."""

    def __init__(self, max_idle: int = 256, idle_timeout: float = IDLE_TIMEOUT_S) -> None:
        self.max_idle = max_idle
        self.idle_timeout = idle_timeout
        self._idle: dict[str, list[_Connection]] = {}

    async def _connect(self, base: str) -> _Connection:
        parts = urlsplit(base)
        try:
            reader, writer = await asyncio.open_connection(parts.hostname, parts.port or 80, limit=2**20)
        except OSError as exc:
            raise UpstreamUnreachable(f"{base}: {exc}") from None
        return _Connection(reader, writer)

    def _release(self, base: str, conn: _Connection) -> None:
        idle = self._idle.setdefault(base, [])
        if len(idle) < self.max_idle and not conn.writer.is_closing():
            conn.idle_since = time.monotonic()
            idle.append(conn)
        else:
            conn.close()

    def _pooled(self, base: str) -> _Connection | None:
        """The most recently used idle connection that is still good; stale ones are closed on the way."""
        idle = self._idle.get(base)
        now = time.monotonic()
        while idle:
            conn = idle.pop()
            if conn.usable(now, self.idle_timeout):
                return conn
            conn.close()
        return None

    async def request(
        self, base: str, method: str, target: str, headers: list[tuple[bytes, bytes]], body: bytes
    ) -> UpstreamResponse:
        """Send one request. A reused connection that fails before any byte of an answer came back is
        replaced by a fresh one, transparently (the replica closed it idle: nothing was processed)."""
        parts = urlsplit(base)  # a replica behind a shared proxy (Ray Serve) has a path: its route
        head = [
            f"{method} {parts.path.rstrip('/')}{target} HTTP/1.1\r\n".encode("latin-1"),
            b"host: ",
            parts.netloc.encode(),
            b"\r\n",
        ]
        for key, value in headers:
            head += [key, b": ", value, b"\r\n"]
        head.append(b"content-length: %d\r\n\r\n" % len(body))
        payload = b"".join(head) + body
        for attempt in range(2):
            pooled = self._pooled(base) if attempt == 0 else None
            reused = pooled is not None
            conn = pooled or await self._connect(base)
            try:
                conn.writer.write(payload)
                await conn.writer.drain()
                status_line = await conn.reader.readline()
                if not status_line:
                    raise ConnectionResetError("closed before answering")
            except (ConnectionError, OSError) as exc:
                conn.close()
                if reused:  # the replica closed an idle keep-alive connection: retry on a fresh one
                    continue
                raise UpstreamBroken(f"{base}: {exc}") from None
            except BaseException:  # cancelled (the caller left, a timeout): the answer is unread, so the
                conn.close()  # connection is out of step with its requests and must not be reused
                raise
            try:
                return await self._response(base, conn, status_line)
            except BaseException:
                conn.close()
                raise
        raise UpstreamBroken(f"{base}: no usable connection")  # pragma: no cover - loop always returns or raises

    async def _response(self, base: str, conn: _Connection, status_line: bytes) -> UpstreamResponse:
        try:
            status = int(status_line.split(b" ", 2)[1])
        except (IndexError, ValueError):
            conn.close()
            raise UpstreamBroken(f"{base}: not an HTTP answer: {status_line[:60]!r}") from None
        headers: list[tuple[bytes, bytes]] = []
        length: int | None = None
        chunked, keep_alive = False, True
        while True:
            line = await conn.reader.readline()
            if line in (b"\r\n", b"\n", b""):
                break
            key, _, value = line.partition(b":")
            key, value = key.strip().lower(), value.strip()
            if key == b"content-length":
                length = int(value)
            elif key == b"transfer-encoding":
                chunked = b"chunked" in value.lower()
            elif key == b"connection":
                keep_alive = value.lower() != b"close"
            elif key == b"keep-alive":  # e.g. "timeout=5": a proxy that closes idle connections sooner
                conn.keep_for = _keep_alive_timeout(value)
            else:
                headers.append((key, value))
        return UpstreamResponse(status, headers, self._body(base, conn, length, chunked, keep_alive))

    async def _body(
        self, base: str, conn: _Connection, length: int | None, chunked: bool, keep_alive: bool
    ) -> AsyncIterator[bytes]:
        reader = conn.reader
        complete = False
        try:
            if chunked:
                while True:
                    size = int((await reader.readline()).split(b";")[0].strip() or b"0", 16)
                    if size == 0:
                        await reader.readline()  # the blank line after the last chunk (no trailers)
                        break
                    data = await reader.readexactly(size + 2)
                    yield data[:-2]
            elif length is not None:
                if length:
                    yield await reader.readexactly(length)
            else:  # no length: the body runs until the replica closes
                keep_alive = False
                while chunk := await reader.read(65536):
                    yield chunk
            complete = True
        finally:
            if complete and keep_alive:
                self._release(base, conn)
            else:
                conn.close()

    def prune(self, keep: set[str]) -> int:
        """Close the idle connections to replicas not in `keep` (retired ones); how many were closed."""
        closed = 0
        for base in [b for b in self._idle if b not in keep]:
            for conn in self._idle.pop(base):
                conn.close()
                closed += 1
        return closed

    async def aclose(self) -> None:
        for idle in self._idle.values():
            for conn in idle:
                conn.close()
        self._idle.clear()


def _keep_alive_timeout(value: bytes) -> float | None:
    """The `timeout=N` of a Keep-Alive header, in seconds, or None."""
    for part in value.split(b","):
        key, _, number = part.strip().partition(b"=")
        if key.strip().lower() == b"timeout":
            try:
                return float(number)
            except ValueError:
                return None
    return None
