"""The gateway: `/run/<deployment>/<path>` → a ready replica of that deployment.

Routing picks the replica with the fewest outstanding requests; a request is retried on another
replica only when the first could not be reached before anything was sent (connection refused),
so no request ever runs twice: a request whose replica dies under it fails with 502. (On Ray,
Serve's proxy stands between and reports a lost replica as a bare 500, which becomes that 502.)
Streams pass through as they come. Each call is put to the `admit`
callback (the platform's rules: private deployments need a token it accepts, tokens may be narrowed
to deployments and limited to a rate); the token is not forwarded to replicas. Without a valid token
a private deployment answers as an unknown name does (404), so strangers learn no names.

Cancellation: every request carries an `X-Request-ID` (the caller's, if valid, else a random one)
to the replica, and the gateway remembers which replica serves each id while it is in flight. A
client that leaves cancels its request on the replica; `DELETE /run/<deployment>/requests/<id>`
cancels one explicitly, on the replica that serves it, or on whichever replica knows the id (a
request that reached the replica through HAProxy, which the gateway did not see).

What the gateway lets through, and adds to answers, is `fermion.platform.gateway.edge`'s to decide.

A deployment that may scale to zero (`Route.cold_start`) has no replica while idle: a request then
waits (counted in `Route.waiting`, which the autoscaler adds to the load) until one is ready.
Every request is counted in `Gateway.metrics` (see `fermion.platform.gateway.metrics`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any
from urllib.parse import unquote

from fermion.platform.gateway.admission import ADMITTED, Admit, admit_all
from fermion.platform.gateway.edge import (
    DEFAULT_MAX_BODY_SIZE,
    RUN_HEADERS,
    forwarded_headers,
    header,
    malformed,
    preflight,
    read_body,
    send_error,
    send_json,
    unknown_deployment,
)
from fermion.platform.gateway.metrics import GatewayMetrics
from fermion.platform.gateway.routes import PREFIX, Route, RouteTable, Upstream
from fermion.platform.gateway.upstream import UpstreamBroken, UpstreamPool, UpstreamUnreachable, behind_shared_proxy
from fermion.serving.http import bearer_token, new_request_id, valid_request_id

log = logging.getLogger("fermion.gateway")

#: `DELETE /run/<deployment>/requests/<request_id>` cancels a request; replicas serve `DELETE /requests/<request_id>`.
REQUESTS = "requests/"
_DROP_RESPONSE = {"connection", "keep-alive", "transfer-encoding", "te", "upgrade", "proxy-connection", "content-length"}
#: How often a request waiting for a cold start looks for a ready replica (routes change in another thread).
_COLD_START_POLL_S = 0.05
#: The status recorded for a client that left before it got an answer (nginx's convention).
CLIENT_CLOSED = 499
#: How long a replica gets to answer a `DELETE /requests/<id>` sent by the gateway.
_CANCEL_TIMEOUT_S = 5.0


class Gateway:
    """ASGI app proxying `/run/<deployment>/...` to replicas over pooled keep-alive connections.

    `timeout`: how long a replica may take to answer; `cold_start_timeout`: how long a request for
    a deployment scaled to zero waits for its first replica before it gets a 503.
    """

    def __init__(
        self,
        table: RouteTable,
        admit: Admit | None = None,
        timeout: float = 300.0,
        cold_start_timeout: float = 120.0,
        max_body_size: int = DEFAULT_MAX_BODY_SIZE,
    ) -> None:
        self.table = table
        self.admit = admit or admit_all
        self.timeout = timeout
        self.cold_start_timeout = cold_start_timeout
        self.max_body_size = max_body_size
        self.pool = UpstreamPool()
        self.metrics = GatewayMetrics()
        #: (deployment, request id) → URL of the replica serving it, while it is in flight (so the
        #: map is as large as the requests in flight, no larger).
        self.in_flight: dict[tuple[str, bytes], str] = {}

    async def aclose(self) -> None:
        """Close the pooled connections to replicas."""
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
        started = time.perf_counter()
        path: str = scope["path"]
        if not path.startswith(PREFIX):
            await send_error(send, 404, f"no such path {path}; deployments are served under {PREFIX}<name>/")
            self.metrics.observe("", 404, time.perf_counter() - started)
            return
        raw_name, _, raw_rest = (scope.get("raw_path") or path.encode())[len(PREFIX) :].partition(b"/")
        query: bytes = scope.get("query_string", b"")
        refused = malformed(path, raw_rest, query, scope["headers"])
        if refused is not None:
            await send_error(send, *refused)
            self.metrics.observe("", refused[0], time.perf_counter() - started)
            return
        name = unquote(raw_name.decode("ascii"))
        rest = unquote(raw_rest.decode("ascii"))
        if scope["method"] == "OPTIONS" and header(scope["headers"], b"access-control-request-method") is not None:
            # A browser asking before a cross-origin call carries no token yet; answered for any name, known or
            # not, so that a preflight tells nobody which deployments exist.
            await preflight(send, scope["headers"])
            return
        route = self.table.get(name)
        admission = (
            ADMITTED
            if route is None
            else await self.admit(name, route.public, bearer_token(header(scope["headers"], b"authorization")))
        )
        denied = admission.refused
        if route is None or (denied is not None and denied[0] in (401, 404)):
            # Unknown, or private and called without a valid token: one answer for both, so a stranger learns no
            # names. Counted under deployment="": a label per unknown name would let anyone grow the metrics.
            await send_error(send, 404, unknown_deployment(name), [(b"www-authenticate", b'Bearer realm="fermion"')])
            self.metrics.observe("", 404, time.perf_counter() - started)
            return
        self.metrics.begin(name)
        status = 500  # what uvicorn answers if the gateway itself fails
        try:
            if denied is not None:  # a valid token without the scope to call it (403), or over its rate (429)
                status = await send_error(send, *denied, list(admission.headers))
                return
            if rest.startswith(REQUESTS) and scope["method"] == "DELETE":
                status = await self._cancel(route, rest[len(REQUESTS) :], send)
                return
            route.arrivals += 1
            target = "/" + raw_rest.decode("ascii") + ("?" + query.decode("ascii") if query else "")
            status = await self._proxy(route, target, scope, receive, send, admission.headers)
        finally:
            self.metrics.end(name, status, time.perf_counter() - started)

    async def _proxy(
        self,
        route: Route,
        target: str,
        scope: dict[str, Any],
        receive: Any,
        send: Any,
        extra: tuple[tuple[bytes, bytes], ...] = (),
    ) -> int:
        """Forward one request (`target`: path and query as the caller sent them, after the deployment's
        prefix; `extra`: headers for the replica's answer); returns the status the client got (499 if it left first)."""
        body = await read_body(receive, scope["headers"], self.max_body_size)
        if isinstance(body, int):
            if body < 0:
                return CLIENT_CLOSED
            return await send_error(
                send,
                413,
                f"request body is over the limit of {self.max_body_size} bytes"
                + (f" (Content-Length: {body})" if body else "")
                + "; send less, or ask the operator to raise `fermion up --max-body-size`",
            )
        headers = forwarded_headers(scope, f"{PREFIX}{route.name}")
        request_id = self._request_id(route.name, scope["headers"])
        headers.append((b"x-request-id", request_id))
        key = (route.name, request_id)
        self.in_flight[key] = ""  # not on a replica yet (waiting for a cold start): claims the id
        tried: set[str] = set()
        try:
            while True:
                upstream = route.pick(tried)
                if upstream is None:
                    # Scaled to zero (maybe just now, after we picked a replica that was stopping: nothing
                    # reached it, so waiting for a fresh one is safe).
                    if route.cold_start and not route.upstreams:
                        answered = await self._cold_start(route, receive, send)
                        if answered is not None:
                            return answered
                        tried.clear()  # the new replica may reuse a port we found closed
                        continue
                    if tried:
                        return await send_error(send, 502, f"no replica of {route.name!r} could be reached ({len(tried)} tried)")
                    return await send_error(
                        send, 503, f"deployment {route.name!r} has no ready replica yet; retry shortly", [(b"retry-after", b"1")]
                    )
                tried.add(upstream.url)
                self.in_flight[key] = upstream.url
                status = await self._exchange(
                    route, upstream, scope["method"], target, headers, body, request_id, receive, send, extra
                )
                if status is not None:
                    return status
                log.warning("replica %s of %s unreachable; trying another", upstream.url, route.name)
        finally:
            self.in_flight.pop(key, None)

    def _request_id(self, deployment: str, headers: list[tuple[bytes, bytes]]) -> bytes:
        """The caller's X-Request-ID if it is valid and not in flight already, else a random one."""
        for key, value in headers:
            if key == b"x-request-id":
                if valid_request_id(value) and (deployment, value) not in self.in_flight:
                    return value
                break
        return new_request_id()

    async def _exchange(
        self,
        route: Route,
        upstream: Upstream,
        method: str,
        target: str,
        headers: list[tuple[bytes, bytes]],
        body: bytes,
        request_id: bytes,
        receive: Any,
        send: Any,
        extra: tuple[tuple[bytes, bytes], ...] = (),
    ) -> int | None:
        """One try on one replica: the status the client got, or None if the replica could not be
        reached (nothing was sent: safe to try another). A client that leaves meanwhile cancels the
        request on the replica: closing the connection stops a stream; a request still waiting for
        its answer is also cancelled by id, whatever became of the connection."""
        task = asyncio.current_task()
        assert task is not None
        watcher = asyncio.create_task(_cancel_on_disconnect(receive, task))
        upstream.outstanding += 1
        status: int | None = None
        try:
            try:
                async with asyncio.timeout(self.timeout):
                    response = await self.pool.request(upstream.url, method, target, headers, body)
            except UpstreamUnreachable:
                return None
            except UpstreamBroken as exc:
                return await send_error(send, 502, f"replica of {route.name!r} broke the connection: {exc}")
            except TimeoutError:
                timed_out = await send_error(send, 504, f"replica of {route.name!r} did not answer within {self.timeout:g} s")
                await self._cancel_upstream(upstream.url, request_id)  # the replica works on: stop it
                return timed_out
            shared = behind_shared_proxy(upstream.url)
            if shared and response.status == 500 and not _is_json(response.headers):
                # Serve's proxy lost the replica under this request (it died, or was killed): its
                # bare 500 says nothing more. It may have run, so it is not run again.
                await response.body.aclose()  # type: ignore[attr-defined]
                log.warning("Ray Serve lost the replica of %s serving request %r", route.name, request_id)
                return await send_error(
                    send,
                    502,
                    f"the Ray Serve replica of {route.name!r} serving this call died before it answered; "
                    "Serve replaces it, so retry (the call was not run again for you, since it may have run)",
                )
            answered = next((v for k, v in response.headers if k == b"x-request-id"), request_id)
            # A replica echoes the id it was sent; one behind a shared proxy (Ray Serve's: a URL with a
            # path) answers through that proxy's own ids, so only direct replicas are held to it.
            if answered != request_id and not shared:  # out of step: someone else's answer
                await response.body.aclose()  # type: ignore[attr-defined]  # unfinished: the connection is closed
                log.error(
                    "replica %s of %s answered request %r with %r's answer; connection dropped",
                    upstream.url,
                    route.name,
                    request_id,
                    answered,
                )
                return await send_error(send, 502, f"replica of {route.name!r} answered out of step; its connection was dropped")
            status = response.status
            out_headers = [(k, v) for k, v in response.headers if k.decode("latin-1") not in _DROP_RESPONSE]
            out_headers += RUN_HEADERS
            out_headers += extra
            try:
                await send({"type": "http.response.start", "status": response.status, "headers": out_headers})
                async for chunk in response.body:
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
                await send({"type": "http.response.body", "body": b"", "more_body": False})
            finally:
                await response.body.aclose()  # type: ignore[attr-defined]  # closes the connection if unfinished
            return status
        except asyncio.CancelledError:
            if not watcher.done():
                raise
            task.uncancel()  # the client left
            if status is None:  # before the replica answered: make sure its work stops
                await self._cancel_upstream(upstream.url, request_id)
                return CLIENT_CLOSED
            return status
        finally:
            watcher.cancel()
            upstream.outstanding -= 1

    async def _cancel_upstream(self, url: str, request_id: bytes) -> tuple[int, bytes] | None:
        """`DELETE /requests/<id>` on one replica: its status and body, or None if it did not answer."""
        try:
            async with asyncio.timeout(_CANCEL_TIMEOUT_S):
                response = await self.pool.request(url, "DELETE", "/" + REQUESTS + request_id.decode("ascii"), [], b"")
                body = b"".join([chunk async for chunk in response.body])
        except (UpstreamUnreachable, UpstreamBroken, TimeoutError) as exc:
            log.warning(
                "could not cancel request %s on replica %s: %s", request_id.decode("ascii"), url, exc or type(exc).__name__
            )
            return None
        return response.status, body

    async def _cancel(self, route: Route, request_id: str, send: Any) -> int:
        """`DELETE /run/<deployment>/requests/<id>`: cancel on the replica serving that request.

        An id the gateway did not route (the request went through HAProxy straight to a replica) is
        asked of every replica of the deployment: the first that cancels it answers, else 404.
        """
        rid = request_id.encode("utf-8", "replace")
        valid = valid_request_id(rid)
        known = self.in_flight.get((route.name, rid)) if valid else None
        # one DELETE per distinct URL: on Ray every replica of a deployment is behind one Serve route
        urls = [known] if known else list(dict.fromkeys(u.url for u in route.upstreams)) if valid else []
        answers = await asyncio.gather(*(self._cancel_upstream(url, rid) for url in urls))
        for answer in answers:
            if answer is not None and 200 <= answer[0] < 300:
                status, body = answer
                await send_json(send, status, body)
                return status
        return await send_error(
            send,
            404,
            f"no request {request_id[:80]!r} in flight on any replica of {route.name!r}: it has finished, or the id is wrong "
            "(it is the X-Request-ID header of the answer, or the one the caller sent)",
        )

    async def _cold_start(self, route: Route, receive: Any, send: Any) -> int | None:
        """Wait for the route's first upstream: None once there is one, else the status answered
        (503 after `cold_start_timeout`, 404 if the deployment was deleted, 499 if the client left)."""
        self.metrics.cold_start(route.name)
        route.waiting += 1  # the autoscaler counts this as load and starts a replica
        gone = asyncio.create_task(_wait_for_disconnect(receive))
        deadline = time.monotonic() + self.cold_start_timeout
        try:
            while not route.upstreams:
                if self.table.get(route.name) is not route:
                    return await send_error(send, 404, f"deployment {route.name!r} was deleted while the request waited for it")
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return await send_error(
                        send,
                        503,
                        f"deployment {route.name!r} is scaled to zero and no replica started within {self.cold_start_timeout:g} s; "
                        "retry shortly, and if this persists see its events and logs (fermion logs)",
                        [(b"retry-after", b"5")],
                    )
                # Routes change in the reconciler's thread, which cannot wake this loop: poll.
                await asyncio.wait({gone}, timeout=min(_COLD_START_POLL_S, remaining))
                if gone.done():
                    return CLIENT_CLOSED
            return None
        finally:
            route.waiting -= 1
            gone.cancel()


def _is_json(headers: list[tuple[bytes, bytes]]) -> bool:
    """Whether an answer is JSON: every error a Fermion replica answers itself is."""
    return (header(headers, b"content-type") or b"").lower().startswith(b"application/json")


async def _wait_for_disconnect(receive: Any) -> None:
    """Return when the client goes away (the request body has been read already)."""
    while (await receive())["type"] != "http.disconnect":
        pass


async def _cancel_on_disconnect(receive: Any, task: asyncio.Task[Any] | None) -> None:
    """Cancel the proxying task when the client goes away (streams would otherwise run on)."""
    await _wait_for_disconnect(receive)
    if task is not None:
        task.cancel()
