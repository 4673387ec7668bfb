"""Prometheus metrics of one replica: requests, latency, in-flight, queue depth and batch sizes.

The hot path only bumps plain integers (the event loop is single-threaded, so no locks);
families are built at scrape time. With several worker processes, each worker writes a
snapshot of its counters to a shared folder every second and a scrape of any worker adds
them up (counters of exited workers are kept so totals never go backwards).
"""

from __future__ import annotations

import json
import os
import tempfile
from bisect import bisect_left
from collections.abc import Callable, Iterable
from typing import Any

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"  # Prometheus text format; its library loads on first scrape
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
SNAPSHOT_DIR_ENV = "FERMION_METRICS_DIR"


class EndpointMetrics:
    """Counters of one endpoint; `observe` is called once per request on the event loop."""

    __slots__ = ("batch_buckets", "batch_sum", "by_status", "latency_buckets", "latency_sum", "name")

    def __init__(self, name: str) -> None:
        self.name = name
        self.by_status: dict[int, int] = {}
        self.latency_buckets = [0] * (len(LATENCY_BUCKETS) + 1)  # last slot: +Inf
        self.latency_sum = 0.0
        self.batch_buckets = [0] * (len(BATCH_BUCKETS) + 1)
        self.batch_sum = 0

    def observe(self, status: int, seconds: float) -> None:
        """Count one finished request."""
        by_status = self.by_status
        by_status[status] = by_status.get(status, 0) + 1
        self.latency_buckets[bisect_left(LATENCY_BUCKETS, seconds)] += 1
        self.latency_sum += seconds

    def observe_batch(self, size: int) -> None:
        """Count one batch run of `size` items."""
        self.batch_buckets[bisect_left(BATCH_BUCKETS, size)] += 1
        self.batch_sum += size

    def snapshot(self) -> dict[str, Any]:
        return {
            "by_status": {str(k): v for k, v in self.by_status.items()},
            "latency_buckets": list(self.latency_buckets),
            "latency_sum": self.latency_sum,
            "batch_buckets": list(self.batch_buckets),
            "batch_sum": self.batch_sum,
        }


Gauges = Callable[[], dict[str, tuple[int, int]]]  # endpoint → (in flight, waiting)


class ReplicaMetrics:
    """All endpoints' metrics of one replica process, and their exposition."""

    def __init__(self, snapshot_dir: str | None = None) -> None:
        self.snapshot_dir = snapshot_dir if snapshot_dir is not None else os.environ.get(SNAPSHOT_DIR_ENV) or None
        self.endpoints: dict[str, EndpointMetrics] = {}
        self.ready = False
        self.gauges: Gauges = dict
        #: The service's own metric families (`Service.extra_metrics`): this process's, not summed over workers.
        self.extra: Callable[[], Iterable[Any]] = tuple

    def for_endpoint(self, name: str) -> EndpointMetrics:
        return self.endpoints.setdefault(name, EndpointMetrics(name))

    # -- snapshots (several workers) ---------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        return {
            "pid": os.getpid(),
            "ready": self.ready,
            "endpoints": {name: m.snapshot() for name, m in self.endpoints.items()},
            "gauges": {name: list(values) for name, values in self.gauges().items()},
        }

    def write_snapshot(self) -> None:
        """Publish this worker's counters for the other workers' scrapes (atomic replace)."""
        if not self.snapshot_dir:
            return
        fd, tmp = tempfile.mkstemp(dir=self.snapshot_dir, prefix=".tmp-")
        with os.fdopen(fd, "w") as fh:
            json.dump(self.snapshot(), fh)
        os.replace(tmp, os.path.join(self.snapshot_dir, f"{os.getpid()}.json"))

    def _all_snapshots(self) -> list[dict[str, Any]]:
        mine = self.snapshot()
        if not self.snapshot_dir:
            return [mine]
        found = [mine]
        for entry in os.scandir(self.snapshot_dir):
            if not entry.name.endswith(".json") or entry.name == f"{mine['pid']}.json":
                continue
            try:
                with open(entry.path) as fh:
                    other = json.load(fh)
            except (OSError, ValueError):
                continue
            if not _alive(other.get("pid", 0)):
                other["gauges"], other["ready"] = {}, False  # keep an exited worker's counters only
            found.append(other)
        return found

    # -- exposition --------------------------------------------------------------------------

    def collect(self) -> Iterable[Any]:
        """Prometheus metric families, summed over every worker's snapshot."""
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

        snapshots = self._all_snapshots()
        requests = CounterMetricFamily("fermion_requests", "Requests by endpoint and HTTP status.", labels=["endpoint", "status"])
        latency = HistogramMetricFamily(
            "fermion_request_duration_seconds", "Time from request received to response sent, by endpoint.", labels=["endpoint"]
        )
        batches = HistogramMetricFamily("fermion_batch_size", "Items per batch run, by endpoint.", labels=["endpoint"])
        in_flight = GaugeMetricFamily(
            "fermion_requests_in_flight", "Requests inside the endpoint (running or waiting).", labels=["endpoint"]
        )
        queue = GaugeMetricFamily(
            "fermion_queue_depth", "Requests waiting for a slot or a batch, by endpoint.", labels=["endpoint"]
        )
        ready = GaugeMetricFamily("fermion_ready", "1 once setup() has finished and the replica takes traffic.")
        names = sorted({name for snap in snapshots for name in snap["endpoints"]})
        for name in names:
            parts = [snap["endpoints"][name] for snap in snapshots if name in snap["endpoints"]]
            statuses: dict[str, int] = {}
            for part in parts:
                for status, count in part["by_status"].items():
                    statuses[status] = statuses.get(status, 0) + count
            for status in sorted(statuses):
                requests.add_metric([name, status], statuses[status])
            latency.add_metric(
                [name], _cumulative(LATENCY_BUCKETS, parts, "latency_buckets"), sum(p["latency_sum"] for p in parts)
            )
            batch_counts = _cumulative(BATCH_BUCKETS, parts, "batch_buckets")
            if batch_counts[-1][1]:
                batches.add_metric([name], batch_counts, sum(p["batch_sum"] for p in parts))
            in_flight.add_metric([name], sum(snap["gauges"].get(name, (0, 0))[0] for snap in snapshots))
            queue.add_metric([name], sum(snap["gauges"].get(name, (0, 0))[1] for snap in snapshots))
        ready.add_metric([], 1 if any(snap["ready"] for snap in snapshots) else 0)
        return [requests, latency, batches, in_flight, queue, ready, *self.extra()]

    def render(self) -> bytes:
        """The text exposition format."""
        from prometheus_client.exposition import generate_latest

        return generate_latest(self)  # type: ignore[arg-type]  # anything with collect() works


def _cumulative(bounds: tuple[float, ...], parts: list[dict[str, Any]], key: str) -> list[tuple[str, float]]:
    totals = [0] * (len(bounds) + 1)
    for part in parts:
        for i, count in enumerate(part[key]):
            totals[i] += count
    running = 0
    out: list[tuple[str, float]] = []
    for bound, count in zip((*[_label(b) for b in bounds], "+Inf"), totals, strict=True):
        running += count
        out.append((bound, running))
    return out


def _label(bound: float) -> str:
    return repr(float(bound))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
