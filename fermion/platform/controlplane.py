"""The control plane: the store, the reconciler, the autoscaler, the gateway and the REST API in
one process, behind one ASGI app (`fermion up` serves it).

Paths: `/run/<name>/...` → the gateway (the hot path, no framework); `/api/v1/...` → the REST
API (FastAPI), which also serves the web console at `/` and `/console/...`; `/metrics` (for a
token with the deploy scope) and `/healthz` are answered here. The reconciler runs in a thread of
its own, ticking twice a second, and at once when the API changes something.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import threading
import time
from pathlib import Path
from typing import Any

import orjson

from fermion.platform.auth import TOKEN_CACHE_S, Scope, TokenCache, call_refusal, reach
from fermion.platform.autoscaler import Autoscaler
from fermion.platform.backends.base import Backend
from fermion.platform.batches import BatchLimits
from fermion.platform.capacity import DEFAULT_MAX_REPLICAS, Ask, Capacity, Machine
from fermion.platform.errors import PlatformError
from fermion.platform.gateway.admission import ADMITTED, Admission
from fermion.platform.gateway.edge import DEFAULT_MAX_BODY_SIZE
from fermion.platform.gateway.haproxy import HAProxyFrontDoor
from fermion.platform.gateway.haproxy_config import Grant
from fermion.platform.gateway.history import MetricsHistory
from fermion.platform.gateway.inside import InsideCaller
from fermion.platform.gateway.proxy import Gateway
from fermion.platform.gateway.routes import PREFIX as RUN_PREFIX
from fermion.platform.gateway.routes import RouteTable
from fermion.platform.rates import RateLimiter, parse_rate
from fermion.platform.reconciler import Reconciler
from fermion.platform.sandbox import Sandbox
from fermion.platform.store.database import Store
from fermion.platform.store.records import DeploymentRecord
from fermion.platform.trainings import TrainingLimits

log = logging.getLogger("fermion.platform")

TICK_S = 0.5
PRUNE_S = 5.0
#: How often the console's metrics history samples the gateway's counters.
METRICS_INTERVAL_S = 5.0
#: A deployment whose replicas crashed this many times in a row, with none ready, is 'failing'.
FAILING_AFTER_CRASHES = 2


class ControlPlane:
    """Everything `fermion up` runs, wired together; the instance is the ASGI app to serve."""

    def __init__(
        self,
        store: Store,
        backend: Backend,
        *,
        grace: float = 30.0,
        cold_start_timeout: float = 120.0,
        scale_down_delay_s: float = 30.0,
        tick_s: float = TICK_S,
        front: HAProxyFrontDoor | None = None,
        metrics_interval_s: float = METRICS_INTERVAL_S,
        data_dir: Path | None = None,
        training_limits: TrainingLimits | None = None,
        max_replicas: int = DEFAULT_MAX_REPLICAS,
        max_replicas_total: int | None = None,
        max_body_size: int = DEFAULT_MAX_BODY_SIZE,
        sandbox: Sandbox | None = None,
        batch_limits: BatchLimits | None = None,
    ) -> None:
        from fermion.data import DatasetStore
        from fermion.platform.batches import BatchJobs
        from fermion.platform.home import default_data_dir
        from fermion.platform.trainings import TrainingJobs
        from fermion.serving.openapi import swagger_assets_dir

        self.store = store
        self.backend = backend
        self.routes = RouteTable()
        self.autoscaler = Autoscaler(self.routes, scale_down_delay_s=scale_down_delay_s)
        #: The machine's room for replicas; only the local backend's replicas share this machine
        #: (a Ray cluster places them itself, and refuses what no node can hold).
        self.capacity = Capacity(Machine.here(), max_replicas, max_replicas_total)
        self.reconciler = Reconciler(
            store,
            backend,
            self.routes,
            grace=grace,
            autoscaler=self.autoscaler,
            capacity=self.capacity if backend.name == "local" else None,
        )
        self.tokens = TokenCache(store)
        self.limiter = RateLimiter()  # tokens' rates, counted here when no HAProxy is in front
        self.gateway = Gateway(self.routes, admit=self._admit, cold_start_timeout=cold_start_timeout, max_body_size=max_body_size)
        self.history = MetricsHistory(self.gateway.metrics, interval_s=metrics_interval_s)
        self.swagger_assets = swagger_assets_dir()
        self.tick_s = tick_s
        self.front = front  # HAProxy in front of us, when `fermion up` runs one
        #: Where datasets, models and training jobs live (the CLI's data dir).
        self.data_dir = Path(data_dir) if data_dir is not None else default_data_dir()
        self.trainings = TrainingJobs(self.data_dir, training_limits)
        #: Batch jobs call replicas from inside, through the gateway's routes, pool and metrics (`gateway.inside`).
        inside = InsideCaller(self.routes, self.gateway.pool, self.gateway.metrics, self.gateway.timeout, cold_start_timeout)
        self.batches = BatchJobs(self.data_dir, DatasetStore(self.data_dir / "datasets"), inside, batch_limits)
        #: How replicas and the source check run, and which folders may hold code (`fermion up --code-from`).
        self.sandbox = sandbox or getattr(backend, "sandbox", None) or Sandbox.probe(self.data_dir)
        self._token_grants: list[Grant] = []
        self._tokens_read_at = 0.0
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        from fermion.data.store import DEFAULT_MAX_BYTES
        from fermion.platform.api.app import build_api
        from fermion.platform.api.guard import APIGuard

        # Bodies are refused before they are read unless they come with a valid token (api_guard).
        self.api = APIGuard(build_api(self), self.tokens.valid, upload_limit=DEFAULT_MAX_BYTES)

    # The reconcile loop

    def start(self) -> None:
        """Adopt replicas that survived a restart, then reconcile in a background thread."""
        adopted = self.reconciler.adopt()
        if adopted:
            log.info("adopted %d running replica(s)", adopted)
            self.store.add_event(None, "Adopted", f"control plane restarted; adopted {adopted} running replica(s)")
        self.reconciler.tick()  # routes to adopted replicas are in place before the first request
        if self.front is not None:
            self.front.start(self.routes, self._active_tokens(force=True))
        self._thread = threading.Thread(target=self._loop, name="fermion-reconciler", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                if self.front is not None:
                    self._pull_front_load()
                self.reconciler.tick()
                if self.front is not None:
                    self.front.sync(self.routes, self._active_tokens())
            except Exception:  # the loop must outlive a bad tick (e.g. the database briefly away)
                log.exception("reconcile tick failed; retrying")
            self._wake.wait(self.tick_s)
            self._wake.clear()

    def wake(self) -> None:
        """Reconcile now rather than at the next tick (after the API changed something)."""
        self._wake.set()

    def check_capacity(self, name: str, source: str, options: dict[str, Any], min_replicas: int, max_replicas: int) -> None:
        """Invalid (422) when `min_replicas` replicas of this source cannot run on this machine beside the
        other deployments' (their min, or what runs now if more), or max_replicas is over the ceiling."""
        if self.backend.name == "local":
            taken = []
            for other in self.store.list_deployments():
                if other.name != name and other.state != "deleting":
                    running = self.reconciler.counts(other.name)
                    count = max(other.min_replicas, running.get("ready", 0) + running.get("starting", 0))
                    taken += [Ask.of(other.source, other.options)] * count
            self.capacity.check_fits(name, min_replicas, Ask.of(source, options), taken)
        self.capacity.check_ceiling(max_replicas)

    def check_resources(self, options: dict[str, Any]) -> None:
        """Invalid when the backend cannot place a replica that asks for these resources (Ray checks its nodes)."""
        check = getattr(self.backend, "check_resources", None)
        if check is not None and options.get("resources"):
            check(options)

    def tokens_changed(self) -> None:
        """A token was made or revoked: the cache forgets, and HAProxy knows before the API answers."""
        self.tokens.forget()
        if self.front is not None and self.front.alive():
            self.front.sync_tokens(self._active_tokens(force=True))

    def _active_tokens(self, force: bool = False) -> list[Grant]:
        """The tokens that work now (hash, reach, rate), for HAProxy; re-read every few seconds (expiry) or when changed."""
        now = time.monotonic()
        if force or now - self._tokens_read_at > TOKEN_CACHE_S:
            self._token_grants = self.store.active_token_grants()
            self._tokens_read_at = now
        return self._token_grants

    def _pull_front_load(self) -> None:
        """Requests HAProxy has in flight per deployment: load the autoscaler and /metrics must see."""
        load = self.front.load() if self.front is not None else {}
        for name in self.routes.names():
            route = self.routes.get(name)
            if route is not None:
                in_flight, total = load.get(name, (0, route.external_arrivals))
                route.external_in_flight, route.external_arrivals = in_flight, total
                self.gateway.metrics.external_in_flight[name] = in_flight

    def stop(self) -> None:
        """Stop reconciling and stop every replica (each drains for up to the grace period)."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join()
        if self.front is not None:
            self.front.stop()  # stop taking requests; those in flight finish on the replicas
        self.trainings.stop()
        self.reconciler.stop_all()
        close = getattr(self.backend, "close", None)
        if close is not None:  # the last sweep: nothing the backend started outlives the platform
            close()

    # Answers the API and the gateway need

    def deployment_status(self, record: DeploymentRecord) -> dict[str, Any]:
        """{"status": ..., "replicas": {"desired", "ready", "starting"}, "restarts": n} of the current revision."""
        views = [v for v in self.reconciler.replica_views(record.name) if v["revision"] == record.revision]
        counts = self.reconciler.counts(record.name)
        # Clamped: right after a change to min/max the last tick's count may lie outside the new range.
        desired = min(max(counts.get("desired", record.min_replicas), record.min_replicas), record.max_replicas)
        ready = sum(1 for v in views if v["state"] == "ready")
        starting = len(views) - ready
        if record.state == "deleting":
            status = "deleting"
        elif ready and ready >= desired:
            status = "ready"
        elif desired == 0 and not views:
            status = "idle"
        elif counts.get("crashes", 0) >= FAILING_AFTER_CRASHES:
            status = "failing"
        elif ready:
            status = "degraded"
        else:
            status = "starting"
        return {
            "status": status,
            "replicas": {"desired": desired, "ready": ready, "starting": starting},
            "restarts": self.reconciler.restarts(record.name),
        }

    async def _admit(self, name: str, public: bool, token: str | None) -> Admission:
        """The gateway's question about one call, answered by `auth` (who may call a private deployment)
        and `rates` (a token's rate; counted by HAProxy instead when it is in front, as it sees every call)."""
        record = await self.tokens.calling(token)
        if not public:
            error = call_refusal(record, token is not None, name)
            if error is not None:
                return Admission((error.status, error.message))
        if record is None or record.rate is None or self.front is not None:
            return ADMITTED
        verdict = self.limiter.take(record.id, parse_rate(record.rate))
        if verdict.allowed:
            return Admission(headers=tuple(verdict.headers()))
        message = f"token {record.name!r} is over its rate of {record.rate}; retry in {verdict.retry_after} s"
        return Admission((429, message), tuple(verdict.headers()))

    # The ASGI app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        """The ASGI app of the whole control plane (see the module docstring)."""
        kind = scope["type"]
        if kind == "http":
            path: str = scope["path"]
            if path.startswith(RUN_PREFIX):
                await self.gateway(scope, receive, send)
            elif path == "/metrics":
                await self._serve_metrics(scope, send)
            elif path == "/healthz":
                await _send(send, 200, orjson.dumps({"status": "ok"}), b"application/json")
            else:  # the API, and the console at / and /console/
                await self.api(scope, receive, send)
        elif kind == "lifespan":
            await self._lifespan(receive, send)
        else:
            await self.api(scope, receive, send)

    async def _listen_for_front_logs(self) -> None:
        """HAProxy logs each request it proxied to a Unix datagram socket; count them in /metrics."""
        from fermion.platform.gateway.haproxy_config import parse_log

        assert self.front is not None
        path = self.front.log_socket
        path.unlink(missing_ok=True)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.bind(str(path))
        os.chmod(path, 0o600)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 1024 * 1024)
        sock.setblocking(False)
        observe = self.gateway.metrics.observe

        def drain() -> None:
            # Every datagram waiting now, in one wakeup: under load many arrive between two turns of the
            # loop, and one wakeup per request would cost more than the counting (measured).
            while True:
                try:
                    data = sock.recv(1024)
                except (BlockingIOError, InterruptedError):
                    return
                found = parse_log(data)
                if found is not None:
                    observe(*found)

        asyncio.get_running_loop().add_reader(sock.fileno(), drain)
        self._front_log = sock  # closed with the loop's end (process exit); kept referenced till then

    async def _prune_connections(self) -> None:
        """Every few seconds, close pooled connections to replicas that left the route table (retired,
        crashed or scaled away), so a long-running gateway does not collect dead sockets."""
        while True:
            await asyncio.sleep(PRUNE_S)
            live = {u.url for name in self.routes.names() if (route := self.routes.get(name)) for u in route.upstreams}
            self.gateway.pool.prune(live)
            # Deleted deployments' series go too (here, on the loop that also writes them).
            metrics = self.gateway.metrics
            known = set(self.routes.names())
            for name in {d for d, _ in list(metrics.requests)} | set(metrics.latency) | set(metrics.external_in_flight):
                if name and name not in known:
                    metrics.forget(name)
                    metrics.external_in_flight.pop(name, None)

    async def _sample_history(self) -> None:
        """Every few seconds, turn the gateway's counters into a point of the console's metrics history."""
        while True:
            await asyncio.sleep(self.history.interval_s)
            try:
                self.history.sample(self._replica_counts())
            except Exception:  # a bad sample must not end the sampling
                log.exception("sampling metrics failed")

    def _replica_counts(self) -> dict[str, dict[str, int]]:
        # The route table names every deployment the reconciler serves: no database call on the event loop.
        return {name: self.reconciler.counts(name) for name in self.routes.names()}

    async def _serve_metrics(self, scope: dict[str, Any], send: Any) -> None:
        """Prometheus text, for a token with the deploy scope: the series name every deployment, private ones too
        (Prometheus sends the token with `authorization: {credentials: fmn_...}` in its scrape config)."""
        sent = next((value.decode("latin-1") for key, value in scope["headers"] if key == b"authorization"), None)
        try:
            reach(await self.tokens.require_async(sent, Scope.DEPLOY, "reading /metrics"), None, "reading /metrics")
        except PlatformError as error:
            challenge = [(b"www-authenticate", b'Bearer realm="fermion"')] if error.status == 401 else []
            await _send(send, error.status, orjson.dumps(error.to_dict()), b"application/json", challenge)
            return
        await _send(send, 200, self._metrics().encode(), b"text/plain; version=0.0.4; charset=utf-8")

    def _metrics(self) -> str:
        return self.gateway.metrics.render(self._replica_counts())

    async def _lifespan(self, receive: Any, send: Any) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    if self.front is not None:
                        await self._listen_for_front_logs()
                    await asyncio.to_thread(self.start)
                except Exception as exc:
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                pruner = asyncio.create_task(self._prune_connections())
                sampler = asyncio.create_task(self._sample_history())
                if resumed := self.batches.resume():  # after start(): the routes to adopted replicas are in place
                    log.info("resumed %d batch job(s)", resumed)
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                # uvicorn has drained the gateway's in-flight requests by now; stop the replicas.
                pruner.cancel()
                sampler.cancel()
                await self.batches.stop()  # they stay running on disk: the next start resumes them
                await asyncio.to_thread(self.stop)
                await self.gateway.aclose()
                await send({"type": "lifespan.shutdown.complete"})
                return


async def _send(send: Any, status: int, body: bytes, ctype: bytes, headers: list[tuple[bytes, bytes]] | None = None) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", ctype),
                (b"content-length", str(len(body)).encode()),
                (b"x-content-type-options", b"nosniff"),
                *(headers or []),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
