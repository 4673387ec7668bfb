"""Prometheus metrics of one replica: requests, latency, in-flight, queue depth and batch sizes.

Label children are resolved once per endpoint so the hot path only increments numbers.
With several workers, `PROMETHEUS_MULTIPROC_DIR` is set by the supervisor and each scrape
aggregates every worker's values.
"""

from __future__ import annotations

import os
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

disable_created_metrics()  # the *_created series double the output and nobody graphs them

CONTENT_TYPE = CONTENT_TYPE_LATEST
_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class ReplicaMetrics:
    """The metric families of one replica, registered in their own registry."""

    def __init__(self) -> None:
        self.multiprocess = bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))
        self.registry = CollectorRegistry(auto_describe=True)
        registry = None if self.multiprocess else self.registry
        self.requests = Counter(
            "fermion_requests", "Requests by endpoint and HTTP status.", ["endpoint", "status"], registry=registry
        )
        self.latency = Histogram(
            "fermion_request_duration_seconds",
            "Time from request received to response sent, by endpoint.",
            ["endpoint"],
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )
        gauge_kw: dict[str, Any] = {"multiprocess_mode": "livesum"} if self.multiprocess else {}
        self.in_flight = Gauge(
            "fermion_requests_in_flight", "Requests being processed, by endpoint.", ["endpoint"], registry=registry, **gauge_kw
        )
        self.queue_depth = Gauge(
            "fermion_queue_depth", "Requests waiting for a slot or a batch, by endpoint.", ["endpoint"], registry=registry, **gauge_kw
        )
        self.batch_size = Histogram(
            "fermion_batch_size", "Items per batch run, by endpoint.", ["endpoint"], buckets=_BATCH_BUCKETS, registry=registry
        )
        self.ready = Gauge(
            "fermion_ready", "1 once setup() has finished and the replica takes traffic.", registry=registry,
            **({"multiprocess_mode": "livemax"} if self.multiprocess else {}),
        )

    def for_endpoint(self, name: str) -> EndpointMetrics:
        """Children of each family for one endpoint."""
        return EndpointMetrics(self, name)

    def render(self) -> bytes:
        """The text exposition format, aggregated across workers when there are several."""
        if self.multiprocess:
            from prometheus_client import multiprocess

            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
            return generate_latest(registry)
        return generate_latest(self.registry)


class EndpointMetrics:
    """Pre-bound metric children for one endpoint."""

    __slots__ = ("_by_status", "_name", "_requests", "batch_size", "in_flight", "latency", "queue_depth")

    def __init__(self, metrics: ReplicaMetrics, name: str) -> None:
        self._requests = metrics.requests
        self._by_status: dict[int, Any] = {}
        self._name = name
        self.latency = metrics.latency.labels(name)
        self.in_flight = metrics.in_flight.labels(name)
        self.queue_depth = metrics.queue_depth.labels(name)
        self.batch_size = metrics.batch_size.labels(name)

    def observe(self, status: int, seconds: float) -> None:
        """Count one finished request."""
        child = self._by_status.get(status)
        if child is None:
            child = self._by_status[status] = self._requests.labels(self._name, str(status))
        child.inc()
        self.latency.observe(seconds)
