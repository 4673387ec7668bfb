"""One Service as a Ray Serve application: the replica's own ASGI app, as a Serve ingress.

`serve_application` wraps a Service factory in a Serve deployment whose replicas each make the
Service and serve it with the same `ReplicaApp` that `fermion serve` runs, so routes, batching,
limits, schemas and errors are the same on both backends. Ray imports the application builder
that calls it, `fermion.replica.on_ray:build`, which turns a source string into the factory. Ray
is imported only inside `serve_application`: the rest of this module (the concurrency rule) is
used by the Ray-free control plane and export.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fermion.service import Service
from fermion.serving.config import ServeConfig

#: The Serve deployment's name inside each application (one per Fermion deployment revision).
DEPLOYMENT_NAME = "replica"


def ongoing_limit(service: Service | type[Service], config: ServeConfig) -> int:
    """Requests a replica holds at once: every endpoint's running plus queued requests.

    Ray Serve's own default (5) makes its proxy queue what the replica could run: on a 2-core
    machine 64 clients got 7.6 req/s. The replica already bounds itself (429 when an endpoint's
    queue is full), so Serve may hand it as much as those bounds allow.
    """
    cls = service if isinstance(service, type) else type(service)
    total = 0
    for ep in cls.endpoints():
        if ep.batch is not None:  # a batcher runs whole batches
            running = (ep.max_concurrency or 1) * ep.batch.max_batch_size
        else:
            running = ep.max_concurrency or config.max_concurrency or (256 if ep.is_async else config.threads)
        queued = ep.max_queue if ep.max_queue is not None else config.max_queue
        total += running + queued
    return max(1, total)


class UnderPrefix:
    """Serve passes the full path and the route prefix as `root_path`; the replica routes on the rest."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        root = scope.get("root_path") or ""
        path = scope.get("path")
        if root and isinstance(path, str) and path.startswith(root):
            scope = {**scope, "path": path[len(root) :] or "/", "root_path": ""}
        await self.app(scope, receive, send)


def _log_to_serve() -> None:
    """Fermion's own log lines (ready, setup errors, warnings) into the Serve replica's log, which `fermion logs` reads."""
    import logging

    ours, serve = logging.getLogger("fermion"), logging.getLogger("ray.serve")
    if ours.handlers or not serve.handlers:
        return
    for handler in serve.handlers:  # Serve's filters and formatter sit on its handlers, so they fit our records too
        ours.addHandler(handler)
    ours.setLevel(logging.INFO)
    ours.propagate = False


def serve_application(
    make_service: Callable[[], Service], config_values: dict[str, Any], max_ongoing_requests: int | None = None
) -> Any:
    """A bound Serve deployment whose replicas serve `make_service()` with `ServeConfig.from_env(**config_values)`.

    `max_ongoing_requests` defaults to `ongoing_limit` of a Service made here.
    """
    from ray import serve

    from fermion.serving.app import FAILED, ReplicaApp

    @serve.ingress()
    class FermionReplica:
        """A Serve replica that serves one Fermion Service."""

        def __init__(self) -> None:
            _log_to_serve()
            config = ServeConfig.from_env(**config_values)
            self.replica = ReplicaApp(make_service(), config)
            # Serve runs the lifespan before the replica takes traffic: setup() must finish first.
            self.replica.accept_before_ready = False

        def __serve_build_asgi_app__(self) -> Any:
            return UnderPrefix(self.replica)

        def check_health(self) -> None:
            if self.replica.state == FAILED:
                raise RuntimeError(f"setup() failed: {self.replica.setup_error}")

    limit = max_ongoing_requests
    if not limit:
        limit = ongoing_limit(make_service(), ServeConfig.from_env(**config_values))
    deployment = serve.deployment(name=DEPLOYMENT_NAME, max_ongoing_requests=int(limit))(FermionReplica)
    return deployment.bind()
