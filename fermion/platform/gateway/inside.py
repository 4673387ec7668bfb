"""Calls the platform itself makes to a deployment (a batch job's rows), through the gateway's own path.

They take the route table's least-busy replica and count on it (`Upstream.outstanding`), count as the
deployment's arrivals and in the gateway's metrics, and wait for a cold start like any caller's request: so
the replica's dynamic batching gets them together, the autoscaler sees their load, and interactive calls are
routed around the busiest replica. They skip what only an outside caller needs: no HTTP hop through the
control plane's own port, no token (the platform checked the job's token when the job was made), no rate.

They run on the gateway's event loop, the loop that also changes these counters for outside calls.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from fermion.platform.gateway.metrics import GatewayMetrics
from fermion.platform.gateway.routes import RouteTable
from fermion.platform.gateway.upstream import UpstreamBroken, UpstreamPool, UpstreamUnreachable

#: How often a call waiting for a replica looks again (routes change in the reconciler's thread).
_POLL_S = 0.05
_JSON = [(b"content-type", b"application/json"), (b"accept", b"application/json")]


@dataclass(frozen=True)
class InsideAnswer:
    """A replica's answer (`status`, `body`), or the platform's own when none answered (`reached` False)."""

    status: int
    body: bytes
    reached: bool = True

    @property
    def retryable(self) -> bool:
        """Worth trying again later: no replica was reached, or the replica was full (429) or not ready (503)."""
        return not self.reached or self.status in (429, 503)


class InsideCaller:
    """Calls deployments from inside the platform over the gateway's route table, pool and metrics."""

    def __init__(self, table: RouteTable, pool: UpstreamPool, metrics: GatewayMetrics, timeout: float, wait_s: float) -> None:
        self.table = table
        self.pool = pool
        self.metrics = metrics
        self.timeout = timeout
        self.wait_s = wait_s  # how long a call waits for a ready replica (a cold start, a restart)
        #: deployment → calls of ours that reached a replica (counted in its route's arrivals too): the difference is others'
        self.arrivals: dict[str, int] = {}

    async def call(self, name: str, method: str, target: str, body: bytes = b"") -> InsideAnswer:
        """One request to a ready replica of `name` (`target`: the path after `/run/<name>`)."""
        route = self.table.get(name)
        if route is None:
            return InsideAnswer(404, f"no deployment named {name!r}".encode(), reached=False)
        started = time.perf_counter()
        self.metrics.begin(name)
        status = 502
        try:
            upstream = route.pick(set())
            if upstream is None:
                route.waiting += 1  # the autoscaler counts it as load and starts a replica of a scaled-to-zero deployment
                try:
                    deadline = time.monotonic() + self.wait_s
                    while upstream is None and time.monotonic() < deadline and self.table.get(name) is route:
                        await asyncio.sleep(_POLL_S)
                        upstream = route.pick(set())
                finally:
                    route.waiting -= 1
                if upstream is None:
                    status = 503
                    return InsideAnswer(503, f"deployment {name!r} has no ready replica".encode(), reached=False)
            route.arrivals += 1
            self.arrivals[name] = self.arrivals.get(name, 0) + 1
            upstream.outstanding += 1
            try:
                async with asyncio.timeout(self.timeout):
                    response = await self.pool.request(upstream.url, method, target, _JSON, body)
                    answer = b"".join([chunk async for chunk in response.body])
            except (UpstreamUnreachable, UpstreamBroken, TimeoutError) as exc:
                return InsideAnswer(502, f"replica of {name!r} did not answer: {exc or type(exc).__name__}".encode(), False)
            finally:
                upstream.outstanding -= 1
            status = response.status
            return InsideAnswer(status, answer)
        finally:
            self.metrics.end(name, status, time.perf_counter() - started)
