"""Recent per-deployment metrics for the console: the gateway's counters sampled every few seconds.

`GatewayMetrics` only keeps cumulative counters (what Prometheus wants); the console wants "the
last 15 minutes" without a Prometheus. `MetricsHistory.sample()` turns the counters into one
point per deployment per interval (rates and latency quantiles of that interval) and keeps an
hour of them in a ring buffer. Sampling runs on the event loop (where the counters change);
the read methods run in the API's thread pool, hence the lock.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from fermion.platform.gateway.metrics import BUCKETS, GatewayMetrics

#: The quantiles every point carries, as (key, q).
QUANTILES = (("p50_ms", 0.50), ("p95_ms", 0.95), ("p99_ms", 0.99))


@dataclass(frozen=True)
class _Point:
    t: float  # when sampled (epoch seconds)
    dt: float  # seconds since the previous sample: the interval the deltas cover
    requests: int
    errors: int  # 5xx answers
    buckets: tuple[int, ...]  # latency histogram deltas, per bucket (not cumulative), +Inf last
    in_flight: int
    ready: int
    desired: int


@dataclass
class _Last:
    """One deployment's counters as of the previous sample."""

    requests: int = 0
    errors: int = 0
    buckets: tuple[int, ...] = (0,) * (len(BUCKETS) + 1)


def quantile(q: float, buckets: Sequence[int]) -> float | None:
    """The q-quantile in seconds of a histogram (per-bucket counts over BUCKETS, +Inf last), interpolated
    linearly inside its bucket as Prometheus' histogram_quantile does; None without observations."""
    total = sum(buckets)
    if total <= 0:
        return None
    rank = q * total
    below = 0
    for index, count in enumerate(buckets):
        if count and below + count >= rank:
            if index == len(BUCKETS):  # the +Inf bucket: the highest finite bound is all we know
                return BUCKETS[-1]
            lower = BUCKETS[index - 1] if index else 0.0
            return lower + (BUCKETS[index] - lower) * (rank - below) / count
        below += count
    return BUCKETS[-1]


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="seconds")


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000.0, 3)


class MetricsHistory:
    """Per-deployment points (rates, latency quantiles, in flight, replicas) of the last `keep_s` seconds."""

    def __init__(
        self, metrics: GatewayMetrics, interval_s: float = 5.0, keep_s: float = 3600.0, clock: Callable[[], float] = time.time
    ) -> None:
        if interval_s <= 0:
            raise ValueError("interval_s must be > 0")
        self.metrics = metrics
        self.interval_s = interval_s
        self.keep_s = keep_s
        self.clock = clock
        self._maxlen = max(1, int(keep_s / interval_s))
        self._points: dict[str, deque[_Point]] = {}
        self._last: dict[str, _Last] = {}
        self._last_t = clock()  # the counters began (at zero) with the gateway, about now
        self._lock = threading.Lock()

    def sample(self, replicas: Mapping[str, Mapping[str, int]]) -> None:
        """Record one point per deployment in `replicas` (name → {"desired", "ready", ...}) from the
        counters' change since the previous sample; deployments no longer listed are forgotten."""
        now = self.clock()
        dt = max(now - self._last_t, 1e-9)
        self._last_t = now
        metrics = self.metrics
        # Copies first: on the event loop nothing changes underneath, but a caller in a thread may differ.
        requests, in_flight, external = dict(metrics.requests), dict(metrics.in_flight), dict(metrics.external_in_flight)
        latency = {name: tuple(h.counts) for name, h in dict(metrics.latency).items()}
        totals: dict[str, list[int]] = {}
        for (name, status), count in requests.items():
            entry = totals.setdefault(name, [0, 0])
            entry[0] += count
            if status >= 500:
                entry[1] += count
        with self._lock:
            for name in [n for n in self._points if n not in replicas]:
                self._points.pop(name, None)
            # The baselines stay while the gateway still counts the name: a deployment deleted and made again
            # under it must not show the old requests as new ones.
            for name in [n for n in self._last if n not in replicas and n not in totals and n not in latency]:
                del self._last[name]
            for name, counts in replicas.items():
                total, errors = totals.get(name, (0, 0))
                buckets = latency.get(name, _Last.buckets)
                last = self._last.get(name) or _Last()
                if total < last.requests or errors < last.errors:  # counters were reset (deployment recreated)
                    last = _Last()
                point = _Point(
                    t=now,
                    dt=dt,
                    requests=total - last.requests,
                    errors=errors - last.errors,
                    buckets=tuple(max(0, b - a) for a, b in zip(last.buckets, buckets, strict=True)),
                    in_flight=in_flight.get(name, 0) + external.get(name, 0),
                    ready=int(counts.get("ready", 0)),
                    desired=int(counts.get("desired", 0)),
                )
                self._last[name] = _Last(total, errors, buckets)
                ring = self._points.get(name)
                if ring is None:
                    ring = self._points[name] = deque(maxlen=self._maxlen)
                ring.append(point)

    def points(self, name: str, minutes: float) -> list[dict[str, Any]]:
        """The deployment's points of the last `minutes`, oldest first, as the API shows them."""
        since = self.clock() - minutes * 60.0
        with self._lock:
            window = [p for p in self._points.get(name, ()) if p.t > since]
        return [self._view(p) for p in window]

    def summary(self, minutes: float) -> dict[str, dict[str, float | None]]:
        """Per deployment over the last `minutes`: {"rps", "p99_ms", "errors_per_s"}."""
        since = self.clock() - minutes * 60.0
        with self._lock:
            windows = {name: [p for p in ring if p.t > since] for name, ring in self._points.items()}
        result: dict[str, dict[str, float | None]] = {}
        for name, window in windows.items():
            seconds = sum(p.dt for p in window)
            buckets = [sum(column) for column in zip(*(p.buckets for p in window), strict=True)] if window else []
            result[name] = {
                "rps": round(sum(p.requests for p in window) / seconds, 3) if seconds else 0.0,
                "p99_ms": _ms(quantile(0.99, buckets)),
                "errors_per_s": round(sum(p.errors for p in window) / seconds, 3) if seconds else 0.0,
            }
        return result

    def names(self) -> list[str]:
        """The deployments with a history."""
        with self._lock:
            return sorted(self._points)

    def forget(self, name: str) -> None:
        """Drop a deployment's points (it was deleted); the next sample starts from the counters as they are then."""
        with self._lock:
            self._points.pop(name, None)

    @staticmethod
    def _view(p: _Point) -> dict[str, Any]:
        view: dict[str, Any] = {"t": _iso(p.t), "rps": round(p.requests / p.dt, 3), "errors_per_s": round(p.errors / p.dt, 3)}
        for key, q in QUANTILES:
            view[key] = _ms(quantile(q, p.buckets))
        view.update(in_flight=p.in_flight, ready=p.ready, desired=p.desired)
        return view
