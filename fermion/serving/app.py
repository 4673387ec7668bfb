"""The ASGI application of one replica: endpoint routes plus health, readiness, metrics and docs.

Routing is a dictionary lookup on the path; each endpoint's work lives in `EndpointRuntime`.
`DELETE /requests/{request_id}` cancels one request in flight (an operator endpoint: replicas
listen on 127.0.0.1 behind the platform's gateway, which checks the caller's token first).
setup() runs in a thread after the server starts listening, so /healthz and /readyz answer
(and /readyz says 503) while a model loads.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import mimetypes
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import orjson

from fermion.service import Service
from fermion.serving.config import ServeConfig
from fermion.serving.deadlines import Deadlines, InFlight
from fermion.serving.http import (
    JSON_TYPE,
    HTTPError,
    new_request_id,
    oversized_headers,
    send_bytes,
    send_error,
    valid_request_id,
)
from fermion.serving.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from fermion.serving.metrics import ReplicaMetrics
from fermion.serving.openapi import DOCS_INIT_JS, build_openapi, docs_csp, docs_page, swagger_assets_dir
from fermion.serving.runtime import EndpointRuntime
from fermion.serving.v2.routes import PREFIX as V2_PREFIX
from fermion.serving.v2.routes import OpenInference

log = logging.getLogger("fermion.serving")

STARTING, READY, FAILED, STOPPING, DRAINING = "starting", "ready", "failed", "stopping", "draining"
REQUESTS_PREFIX = "/requests/"


class ReplicaApp:
    """Serve one Service instance over ASGI."""

    def __init__(self, service: Service, config: ServeConfig | None = None) -> None:
        self.service = service
        self.service_cls = type(service)
        self.config = config or ServeConfig()
        self.state = STARTING
        self.setup_error: BaseException | None = None
        #: Called (on the event loop) if setup() raises; the server uses it to exit non-zero.
        self.on_setup_failed: Callable[[BaseException], None] | None = None
        #: Called (on the event loop) once setup() has finished.
        self.on_ready: Callable[[], None] | None = None
        self._created = time.monotonic()
        #: Listen (and answer /readyz with 503) while setup() runs. Worker processes that share a
        #: port turn this off, so that only workers that finished setup() take connections.
        self.accept_before_ready = True
        #: Set on SIGTERM with a drain delay: requests are still served, /readyz says 503 "draining".
        self.draining = False
        self.metrics = ReplicaMetrics()
        self.metrics.gauges = lambda: {r.name: (r.active, r.waiting) for r in self.runtimes}
        self.deadlines = Deadlines()
        self.in_flight = InFlight()
        self._publisher: asyncio.Task[None] | None = None
        self.executor = ThreadPoolExecutor(self.config.threads, thread_name_prefix="fermion-endpoint")
        self.routes: dict[str, dict[str, EndpointRuntime]] = {}
        self.runtimes: list[EndpointRuntime] = []
        for ep in self.service_cls.endpoints():
            runtime = EndpointRuntime(
                service,
                ep,
                self.config,
                self.executor,
                self.metrics.for_endpoint(ep.name),
                self._is_ready,
                self.deadlines,
                self.in_flight,
            )
            self.routes.setdefault(ep.path, {})[ep.method] = runtime
            self.runtimes.append(runtime)
        #: The Open Inference Protocol (KServe v2) at /v2/...: each endpoint that takes tensors is a model.
        self.v2 = OpenInference(self.runtimes, self.service_cls.version, self._v2_ready, _request_id)
        self._openapi: bytes | None = None
        self._assets = swagger_assets_dir()
        self._ready_event = threading.Event()
        self._system = {
            "/healthz": self._healthz,
            "/readyz": self._readyz,
            "/metrics": self._metrics,
            "/openapi.json": self._openapi_json,
            "/docs": self._docs,
            "/docs/init.js": self._docs_init,
            "/": self._index,
        }

    # -- state ------------------------------------------------------------------------------

    def _is_ready(self) -> bool:
        return self.state == READY

    def _v2_ready(self) -> bool:
        return self.state == READY and not self.draining

    def wait_ready(self, timeout: float | None = None) -> bool:
        """Block until setup() has finished (for embedding the app in tests or other servers)."""
        return self._ready_event.wait(timeout)

    async def startup(self) -> None:
        """Run setup() without blocking the loop, then take traffic."""
        try:
            if inspect.iscoroutinefunction(self.service.setup):
                await self.service.setup()
            else:
                await asyncio.to_thread(self.service.setup)
        except BaseException as exc:  # noqa: BLE001 - any failure of user code must be reported
            self.state = FAILED
            self.setup_error = exc
            debug = log.isEnabledFor(logging.DEBUG)
            log.error(
                "setup() of %s raised %s: %s%s",
                self.service_cls.service_name(),
                type(exc).__name__,
                exc,
                "" if debug else " (--log-level debug shows the traceback)",
                exc_info=exc if debug else None,
            )
            if self.on_setup_failed is not None:
                self.on_setup_failed(exc)
            return
        _limit_compute_threads(self.config.effective_compute_threads())
        self.state = READY
        self.metrics.ready = True
        self.metrics.extra = self.service.extra_metrics
        self._ready_event.set()
        log.info("%s ready in %.2f s (pid %d)", self.service_cls.service_name(), time.monotonic() - self._created, os.getpid())
        if self.on_ready is not None:
            self.on_ready()

    def drain(self) -> None:
        """Tell load balancers to stop sending requests (/readyz: 503 "draining"); keep serving them."""
        self.draining = True
        self.metrics.ready = False

    async def shutdown(self) -> None:
        """Stop taking traffic, stop batchers, run teardown()."""
        self.state = STOPPING
        self.metrics.ready = False
        self.deadlines.close()
        if self._publisher is not None:
            self._publisher.cancel()
            self.metrics.write_snapshot()
        for runtime in self.runtimes:
            if runtime.batcher is not None:
                await runtime.batcher.close()
        try:
            if inspect.iscoroutinefunction(self.service.teardown):
                await self.service.teardown()
            else:
                await asyncio.to_thread(self.service.teardown)
        except Exception:
            log.exception("teardown() of %s raised", self.service_cls.__name__)
        self.executor.shutdown(wait=False, cancel_futures=True)

    # -- ASGI -------------------------------------------------------------------------------

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            path = scope["path"]
            too_large = oversized_headers(scope)
            if too_large is not None:
                await send_error(send, too_large, _request_id(scope))
                return
            methods = self.routes.get(path)
            if methods is not None:
                runtime = methods.get(scope["method"])
                if runtime is not None:
                    await runtime(scope, receive, send)
                else:
                    allowed = ", ".join(sorted(methods))
                    await send_error(
                        send,
                        HTTPError(
                            405, f"{path} accepts {allowed}, not {scope['method']}", headers=[(b"allow", allowed.encode())]
                        ),
                        _request_id(scope),
                    )
                return
            system = self._system.get(path)
            if system is not None and scope["method"] not in ("GET", "HEAD"):
                error = HTTPError(405, f"{path} accepts GET and HEAD, not {scope['method']}", headers=[(b"allow", b"GET, HEAD")])
                await send_error(send, error, _request_id(scope))
            elif system is not None:
                await system(scope, receive, send)
            elif path.startswith("/docs/static/"):
                await self._asset(path[len("/docs/static/") :], scope, send)
            elif path.startswith(REQUESTS_PREFIX):
                await self._cancel_request(scope, send)
            elif path == V2_PREFIX or path.startswith(V2_PREFIX + "/"):
                await self.v2(scope, receive, send)
            else:
                known = ", ".join(f"{m} {p}" for p, ms in self.routes.items() for m in ms) or "none"
                await send_error(send, HTTPError(404, f"no endpoint at {path}; this service has: {known}"), _request_id(scope))
        elif scope["type"] == "lifespan":
            await self._lifespan(receive, send)

    async def _lifespan(self, receive: Any, send: Any) -> None:
        setup_task: asyncio.Task[None] | None = None
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                if self.metrics.snapshot_dir:
                    self._publisher = asyncio.create_task(self._publish_metrics(), name="fermion-metrics")
                if self.accept_before_ready:
                    setup_task = asyncio.create_task(self.startup(), name="fermion-setup")
                else:
                    await self.startup()
                    if self.state == FAILED:
                        await send({"type": "lifespan.startup.failed", "message": str(self.setup_error)})
                        return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if setup_task is not None and not setup_task.done():
                    setup_task.cancel()
                await self.shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _publish_metrics(self) -> None:
        """Several workers: share this worker's counters every second."""
        while True:
            try:
                self.metrics.write_snapshot()
            except OSError:
                log.warning("could not write the metrics snapshot", exc_info=True)
            await asyncio.sleep(1.0)

    # -- system endpoints -------------------------------------------------------------------

    async def _json(self, send: Any, status: int, value: Any) -> None:
        await send_bytes(send, status, orjson.dumps(value), [JSON_TYPE])

    async def _healthz(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        await self._json(send, 200, {"status": "ok"})

    async def _readyz(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if self.state == READY and not self.draining:
            await self._json(send, 200, {"status": READY})
            return
        body: dict[str, Any] = {"status": DRAINING if self.draining and self.state == READY else self.state}
        if self.setup_error is not None:
            body["error"] = f"setup() raised {type(self.setup_error).__name__}: {self.setup_error}"
        await self._json(send, 503, body)

    async def _metrics(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        await send_bytes(send, 200, self.metrics.render(), [(b"content-type", METRICS_CONTENT_TYPE.encode())])

    def openapi(self) -> dict[str, Any]:
        """The OpenAPI document of the service."""
        return build_openapi(self.service_cls)

    async def _openapi_json(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if self._openapi is None:
            self._openapi = orjson.dumps(self.openapi())
        await send_bytes(send, 200, self._openapi, [JSON_TYPE])

    async def _docs(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        prefix = scope.get("root_path", "")
        for key, value in scope["headers"]:  # behind Fermion's gateway: /run/<deployment>
            if key == b"x-forwarded-prefix" and value.startswith(b"/"):
                prefix = value.decode("latin-1").rstrip("/")
        assets = f"{prefix}/docs/static" if self._assets else None
        page = docs_page(f"{prefix}/openapi.json", self.service_cls.service_name(), assets, f"{prefix}/docs/init.js")
        headers = [(b"content-type", b"text/html; charset=utf-8"), (b"content-security-policy", docs_csp(bool(assets)).encode())]
        await send_bytes(send, 200, page.encode(), [*headers, (b"x-content-type-options", b"nosniff")])

    async def _docs_init(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        headers = [(b"content-type", b"text/javascript; charset=utf-8"), (b"x-content-type-options", b"nosniff")]
        await send_bytes(send, 200, DOCS_INIT_JS, headers)

    async def _index(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        await self._json(
            send,
            200,
            {
                "service": self.service_cls.service_name(),
                "status": self.state,
                "endpoints": [{"name": r.name, "method": r.ep.method, "path": r.ep.path} for r in self.runtimes],
                "docs": "/docs",
                "openapi": "/openapi.json",
            },
        )

    async def _cancel_request(self, scope: dict[str, Any], send: Any) -> None:
        """`DELETE /requests/{request_id}`: cancel that request; its caller gets a 409 (see `EndpointRuntime`)."""
        request_id = scope["path"][len(REQUESTS_PREFIX) :]
        if scope["method"] != "DELETE":
            error = HTTPError(405, f"{scope['path']} accepts DELETE (to cancel that request), not {scope['method']}")
            error.headers.append((b"allow", b"DELETE"))
            await send_error(send, error, _request_id(scope))
            return
        endpoint = self.in_flight.cancel(request_id.encode("utf-8", "replace"))
        if endpoint is None:
            where = "this replica"
            if self.config.workers > 1:  # each worker knows only its own requests
                where = f"this worker (pid {os.getpid()}; a DELETE reaches one of the replica's {self.config.workers} workers)"
            await send_error(
                send,
                HTTPError(404, f"no request {request_id[:80]!r} in flight in {where}: it has finished, or never came here"),
                _request_id(scope),
            )
            return
        log.info("request %s to endpoint %r cancelled by DELETE %s", request_id, endpoint, scope["path"])
        await self._json(send, 202, {"request_id": request_id, "endpoint": endpoint, "cancelled": True})

    async def _asset(self, name: str, scope: dict[str, Any], send: Any) -> None:
        if self._assets is None or "/" in name or name.startswith("."):
            await send_error(send, HTTPError(404, "no such file"), _request_id(scope))
            return
        path = os.path.join(self._assets, name)
        if not os.path.isfile(path):
            await send_error(send, HTTPError(404, f"no such file: {name}"), _request_id(scope))
            return
        with open(path, "rb") as fh:
            data = fh.read()
        ctype = mimetypes.guess_type(name)[0] or "application/octet-stream"
        await send_bytes(send, 200, data, [(b"content-type", ctype.encode()), (b"cache-control", b"public, max-age=86400")])


def _request_id(scope: dict[str, Any]) -> str:
    """For an error outside the endpoints: the caller's X-Request-ID if valid (the gateway checks that an
    answer carries the id it sent), else a new one."""
    for key, value in scope["headers"]:
        if key == b"x-request-id" and valid_request_id(value):
            return value.decode("ascii")
    return new_request_id().decode()


def _limit_compute_threads(threads: int) -> None:
    """Cap torch's intra-op threads if the service loaded torch (env vars cover BLAS/OpenMP)."""
    import sys

    torch = sys.modules.get("torch")
    if torch is not None:
        try:
            torch.set_num_threads(threads)
        except Exception:  # pragma: no cover - torch refused; keep its default
            log.debug("could not set torch threads", exc_info=True)
