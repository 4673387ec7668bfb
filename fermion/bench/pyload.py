"""The python engine: a lean asyncio load generator over raw keep-alive HTTP/1.1 connections.

Each connection is an asyncio Protocol that writes a pre-built request, parses just enough of the
answer (status line, Content-Length or chunked framing) to know where it ends, and sends the next
one. No HTTP client library sits in the loop; uvloop is used when installed.
"""

from __future__ import annotations

import asyncio
import os
import ssl
import time
from collections.abc import Callable
from urllib.parse import urlsplit

from fermion.bench.result import LoadResult

_NO_BODY = (204, 304)


def build_request(url: str, method: str, body: bytes | None, headers: dict[str, str]) -> tuple[str, int, bool, bytes]:
    """(host, port, tls, request bytes) for `url`; the bytes are sent as they are for every request."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{url!r} is not an http(s) URL")
    tls = parts.scheme == "https"
    port = parts.port or (443 if tls else 80)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    host_header = parts.netloc.rsplit("@", 1)[-1]
    lines = [f"{method} {target} HTTP/1.1", f"Host: {host_header}", "User-Agent: fermion-bench"]
    lowered = {k.lower() for k in headers}
    lines += [f"{k}: {v}" for k, v in headers.items() if k.lower() not in ("host", "content-length")]
    if body is not None or method not in ("GET", "HEAD", "DELETE", "OPTIONS"):
        lines.append(f"Content-Length: {len(body or b'')}")
    if "connection" not in lowered:
        lines.append("Connection: keep-alive")
    return parts.hostname, port, tls, ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (body or b"")


def chunked_end(buf: bytearray, start: int) -> int:
    """Index just past a complete chunked body starting at `start`, or -1 while it is incomplete."""
    pos = start
    while True:
        line_end = buf.find(b"\r\n", pos)
        if line_end < 0:
            return -1
        size = int(bytes(buf[pos:line_end]).split(b";", 1)[0].strip() or b"0", 16)
        if size == 0:
            trailer_end = buf.find(b"\r\n\r\n", line_end)
            if buf[line_end : line_end + 4] == b"\r\n\r\n":
                return line_end + 4
            return -1 if trailer_end < 0 else trailer_end + 4
        pos = line_end + 2 + size + 2
        if pos > len(buf):
            return -1


class _Connection(asyncio.Protocol):
    """One keep-alive connection sending one request at a time."""

    __slots__ = ("gen", "transport", "buf", "started", "status", "body_end", "chunked", "until_close", "close_after")

    def __init__(self, gen: _Generator) -> None:
        self.gen = gen
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.started = 0.0
        self._reset()

    def _reset(self) -> None:
        self.status = 0
        self.body_end = -1
        self.chunked = False
        self.until_close = False
        self.close_after = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.gen.live.add(self)
        self.send()

    def send(self) -> None:
        if not self.gen.running or self.transport is None:
            return
        self.started = time.perf_counter()
        self.transport.write(self.gen.request)

    def data_received(self, data: bytes) -> None:
        buf = self.buf
        buf += data
        if self.status == 0:
            head_end = buf.find(b"\r\n\r\n")
            if head_end < 0:
                return
            head = bytes(buf[:head_end]).lower()
            self.status = int(head[9:12])
            self.close_after = b"\r\nconnection: close" in head
            length_at = head.find(b"\r\ncontent-length:")
            if length_at >= 0:
                line_end = head.find(b"\r\n", length_at + 2)
                length = int(head[length_at + 17 : line_end if line_end >= 0 else len(head)])
                self.body_end = head_end + 4 + length
            elif self.status in _NO_BODY or self.status < 200:
                self.body_end = head_end + 4
            elif b"\r\ntransfer-encoding: chunked" in head:
                self.chunked = True
                self.body_end = head_end + 4
            else:
                self.until_close = True
                return
        if self.until_close:
            return
        if self.chunked:
            end = chunked_end(buf, self.body_end)
            if end < 0:
                return
            self.body_end, self.chunked = end, False
        if len(buf) < self.body_end:
            return
        del buf[: self.body_end]
        self._complete()

    def _complete(self) -> None:
        self.gen.record(self.status, time.perf_counter() - self.started)
        close = self.close_after
        self._reset()
        self.started = 0.0
        if close:
            if self.transport is not None:
                self.transport.close()
        else:
            self.send()

    def connection_lost(self, exc: Exception | None) -> None:
        self.gen.live.discard(self)
        if self.until_close and self.status:
            self._complete()
        elif self.started and self.gen.running:
            self.gen.count_error("read")
        self.transport = None
        self.gen.reopen()


class _Generator:
    """Shared state of one run: the request, counters, and the connections to keep open."""

    def __init__(self, host: str, port: int, tls: bool, request: bytes, concurrency: int, timeout: float) -> None:
        self.host, self.port, self.request = host, port, request
        self.ssl = ssl.create_default_context() if tls else None
        self.concurrency = concurrency
        self.timeout = timeout
        self.running = True
        self.measuring = False
        self.latencies: list[float] = []
        self.statuses: dict[int, int] = {}
        self.socket_errors = {"connect": 0, "read": 0, "write": 0, "timeout": 0}
        self.live: set[_Connection] = set()
        self.opening = 0
        self.tasks: set[asyncio.Task[None]] = set()
        self.cpu_s = 0.0

    def record(self, status: int, latency: float) -> None:
        if self.measuring:
            self.latencies.append(latency)
            self.statuses[status] = self.statuses.get(status, 0) + 1

    def count_error(self, kind: str) -> None:
        if self.measuring:
            self.socket_errors[kind] += 1

    def reopen(self) -> None:
        if self.running and len(self.live) + self.opening < self.concurrency:
            task = asyncio.get_running_loop().create_task(self._open())
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)

    async def _open(self) -> None:
        self.opening += 1
        try:
            while self.running:
                try:
                    await asyncio.get_running_loop().create_connection(
                        lambda: _Connection(self), self.host, self.port, ssl=self.ssl
                    )
                    return
                except OSError:
                    self.count_error("connect")
                    await asyncio.sleep(0.05)
        finally:
            self.opening -= 1

    def expire(self) -> None:
        """Close connections whose request has waited longer than the timeout (they reopen)."""
        now = time.perf_counter()
        for conn in list(self.live):
            if conn.started and now - conn.started > self.timeout and conn.transport is not None:
                self.count_error("timeout")
                conn.started = 0.0
                conn.transport.abort()


async def _drive(gen: _Generator, warmup: float, duration: float, progress: Callable[[float], None] | None) -> float:
    for _ in range(gen.concurrency):
        gen.reopen()
    loop_start = time.perf_counter()
    cpu_start = time.process_time()
    measure_start = loop_start + warmup
    measure_end = measure_start + duration
    while True:
        now = time.perf_counter()
        if not gen.measuring and now >= measure_start:
            gen.measuring = True
            cpu_start = time.process_time()
            measure_start = now
            measure_end = now + duration
        if now >= measure_end:
            break
        gen.expire()
        if progress is not None:
            progress(now - loop_start)
        await asyncio.sleep(min(0.1, max(0.001, (measure_start if not gen.measuring else measure_end) - now)))
    gen.measuring = False
    gen.running = False
    elapsed = time.perf_counter() - measure_start
    gen.cpu_s = time.process_time() - cpu_start
    for conn in list(gen.live):
        if conn.transport is not None:
            conn.transport.abort()
    for task in list(gen.tasks):
        task.cancel()
    await asyncio.sleep(0)
    if progress is not None:
        progress(warmup + duration)
    return elapsed


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop]:
    try:
        import uvloop

        return uvloop.new_event_loop
    except ImportError:
        return asyncio.new_event_loop


def loop_name() -> str:
    """Which event loop the engine runs on ("uvloop 0.23.0" or "asyncio")."""
    try:
        import uvloop

        return f"uvloop {uvloop.__version__}"
    except ImportError:
        return "asyncio"


def run_python(
    url: str,
    *,
    method: str,
    body: bytes | None,
    headers: dict[str, str],
    concurrency: int,
    duration: float,
    warmup: float = 0.0,
    timeout: float = 10.0,
    cpu: int | None = None,
    progress: Callable[[float], None] | None = None,
) -> LoadResult:
    """Warm up for `warmup` s, then measure `duration` s with `concurrency` keep-alive connections."""
    host, port, tls, request = build_request(url, method, body, headers)
    gen = _Generator(host, port, tls, request, concurrency, timeout)
    old_affinity = os.sched_getaffinity(0) if cpu is not None else None
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})
    try:
        with asyncio.Runner(loop_factory=_loop_factory()) as runner:
            elapsed = runner.run(_drive(gen, warmup, duration, progress))
    finally:
        if old_affinity is not None:
            os.sched_setaffinity(0, old_affinity)
    return LoadResult.from_latencies(
        engine="python",
        url=url,
        method=method,
        concurrency=concurrency,
        duration_s=elapsed,
        latencies_s=gen.latencies,
        statuses={str(k): v for k, v in gen.statuses.items()},
        socket_errors=gen.socket_errors,
        engine_cpu_s=gen.cpu_s,
    )
