"""The gateway: `/run/<deployment>/<path>` → a ready replica of that deployment.

Routing picks the replica with the fewest outstanding requests; a request is retried on another
replica only when the first could not be reached before anything was sent (connection refused),
so no request ever runs twice. Streams pass through as they come. Private deployments need a
token that the `authorize` callback accepts; the token is not forwarded to replicas.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from fermion.platform.upstream import UpstreamBroken, UpstreamPool, UpstreamUnreachable

log = logging.getLogger("fermion.gateway")

PREFIX = "/run/"
# Hop-by-hop headers (RFC 9110 §7.6.1) and ones the gateway sets itself.
_DROP_REQUEST = {b"host", b"connection", b"keep-alive", b"transfer-encoding", b"te", b"upgrade", b"proxy-connection",
                 b"authorization", b"content-length"}
_DROP_RESPONSE = {"connection", "keep-alive", "transfer-encoding", "te", "upgrade", "proxy-connection", "content-length"}

#: authorize(deployment, bearer token or None) → None if allowed, else (status, message).
Authorize = Callable[[str, str | None], Awaitable[tuple[int, str] | None]]


@dataclass
class Upstream:
    """One ready replica and the requests it is serving through this gateway."""

    url: str
    outstanding: int = 0


@dataclass
class Route:
    """Where a deployment's traffic goes."""

    name: str
    upstreams: list[Upstream] = field(default_factory=list)
    public: bool = False
    _turn: itertools.count[int] = field(default_factory=itertools.count, repr=False)

    def pick(self, exclude: set[str]) -> Upstream | None:
        """The least busy upstream not in `exclude`; ties go round-robin."""
        candidates = [u for u in self.upstreams if u.url not in exclude]
        if not candidates:
            return None
        fewest = min(u.outstanding for u in candidates)
        tied = [u for u in candidates if u.outstanding == fewest]
        return tied[next(self._turn) % len(tied)]


class RouteTable:
    """Deployments and their ready replicas, kept current by the control plane."""

    def __init__(self) -> None:
        self._routes: dict[str, Route] = {}

    def set(self, name: str, urls: list[str], public: bool = False) -> None:
        """Replace a deployment's ready replicas, keeping the in-flight counts of those that stay."""
        route = self._routes.setdefault(name, Route(name))
        known = {u.url: u for u in route.upstreams}
        route.upstreams = [known.get(url) or Upstream(url) for url in urls]
        route.public = public

    def remove(self, name: str) -> None:
        self._routes.pop(name, None)

    def get(self, name: str) -> Route | None:
        return self._routes.get(name)

    def names(self) -> list[str]:
        return sorted(self._routes)


async def _allow_all(name: str, token: str | None) -> tuple[int, str] | None:
    return None


class Gateway:
    """ASGI app proxying `/run/<deployment>/...` to replicas over pooled keep-alive connections."""

    def __init__(self, table: RouteTable, authorize: Authorize | None = None, timeout: float = 300.0) -> None:
        self.table = table
        self.authorize = authorize or _allow_all
        self.timeout = timeout
        self.pool = UpstreamPool()

    async def aclose(self) -> None:
        await self.pool.aclose()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await self.aclose()
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        path: str = scope["path"]
        if not path.startswith(PREFIX):
            await _error(send, 404, f"no such path {path}; deployments are served under {PREFIX}<name>/")
            return
        name, _, rest = path[len(PREFIX) :].partition("/")
        route = self.table.get(name)
        if route is None:
            known = ", ".join(self.table.names()) or "none yet"
            await _error(send, 404, f"no deployment named {name!r}; deployments: {known}")
            return
        if not route.public:
            denied = await self.authorize(name, _bearer(scope))
            if denied is not None:
                status, message = denied
                headers = [(b"www-authenticate", b'Bearer realm="fermion"')] if status == 401 else []
                await _error(send, status, message, headers)
                return
        await self._proxy(route, "/" + rest, scope, receive, send)

    async def _proxy(self, route: Route, path: str, scope: dict[str, Any], receive: Any, send: Any) -> None:
        body = await _read_body(receive)
        headers = [(k, v) for k, v in scope["headers"] if k not in _DROP_REQUEST]
        headers.append((b"x-forwarded-prefix", f"{PREFIX}{route.name}".encode()))
        query = scope.get("query_string", b"")
        target = path + ("?" + query.decode("latin-1") if query else "")
        tried: set[str] = set()
        while True:
            upstream = route.pick(tried)
            if upstream is None:
                if tried:
                    await _error(send, 502, f"no replica of {route.name!r} could be reached ({len(tried)} tried)")
                else:
                    await _error(send, 503, f"deployment {route.name!r} has no ready replica yet; retry shortly",
                                 [(b"retry-after", b"1")])
                return
            tried.add(upstream.url)
            upstream.outstanding += 1
            try:
                try:
                    async with asyncio.timeout(self.timeout):
                        response = await self.pool.request(upstream.url, scope["method"], target, headers, body)
                except UpstreamUnreachable:
                    log.warning("replica %s of %s unreachable; trying another", upstream.url, route.name)
                    continue  # nothing reached the replica: safe to try another
                except UpstreamBroken as exc:
                    await _error(send, 502, f"replica of {route.name!r} broke the connection: {exc}")
                    return
                except TimeoutError:
                    await _error(send, 504, f"replica of {route.name!r} did not answer within {self.timeout:g} s")
                    return
                out_headers = [(k, v) for k, v in response.headers if k.decode("latin-1") not in _DROP_RESPONSE]
                watcher = asyncio.create_task(_cancel_on_disconnect(receive, asyncio.current_task()))
                try:
                    await send({"type": "http.response.start", "status": response.status, "headers": out_headers})
                    async for chunk in response.body:
                        await send({"type": "http.response.body", "body": chunk, "more_body": True})
                    await send({"type": "http.response.body", "body": b"", "more_body": False})
                except asyncio.CancelledError:
                    if not watcher.done():
                        raise
                    task = asyncio.current_task()
                    if task is not None:
                        task.uncancel()  # the client left; the replica's connection was closed above
                finally:
                    watcher.cancel()
                    await response.body.aclose()  # type: ignore[attr-defined]
                return
            finally:
                upstream.outstanding -= 1


async def _cancel_on_disconnect(receive: Any, task: asyncio.Task[Any] | None) -> None:
    """Cancel the proxying task when the client goes away (streams would otherwise run on)."""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            if task is not None:
                task.cancel()
            return


def _bearer(scope: dict[str, Any]) -> str | None:
    for key, value in scope["headers"]:
        if key == b"authorization":
            scheme, _, token = value.decode("latin-1").partition(" ")
            return token.strip() if scheme.lower() == "bearer" and token.strip() else None
    return None


async def _read_body(receive: Any) -> bytes:
    chunks = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


async def _error(send: Any, status: int, message: str, headers: list[tuple[bytes, bytes]] | None = None) -> None:
    body = orjson.dumps({"error": message})
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), *(headers or [])]})
    await send({"type": "http.response.body", "body": body})
