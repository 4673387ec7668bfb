"""What one load test measured: `LoadResult`, and the percentile arithmetic both engines share."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

#: Percentiles every result carries, for reports and latency-by-percentile plots.
PERCENTILES: tuple[float, ...] = (0.0, 10.0, 25.0, 50.0, 75.0, 90.0, 95.0, 99.0, 99.9, 99.99, 100.0)


def percentile(sorted_values: Sequence[float], pct: float) -> float:
    """The nearest-rank percentile of already sorted values (0.0 for none)."""
    if not sorted_values:
        return 0.0
    rank = math.ceil(pct / 100.0 * len(sorted_values))
    return float(sorted_values[min(max(rank, 1), len(sorted_values)) - 1])


@dataclass
class LoadResult:
    """The outcome of one measured window: throughput, latency in milliseconds, and every error.

    `statuses` counts answers by HTTP status ("200", "422", ...). The wrk engine cannot tell
    non-2xx/3xx answers apart without slowing itself down, so it reports them as "non-2xx".
    `socket_errors` counts connect/read/write failures and timeouts (requests with no answer).
    """

    engine: str
    url: str
    method: str
    concurrency: int
    duration_s: float
    requests: int
    rps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    max_ms: float
    statuses: dict[str, int] = field(default_factory=dict)
    socket_errors: dict[str, int] = field(default_factory=dict)
    #: Latency in ms at each of PERCENTILES, keyed by the percentile as text ("99.9").
    percentiles: dict[str, float] = field(default_factory=dict)
    #: CPU seconds the load generator itself used while measuring (None when unknown).
    engine_cpu_s: float | None = None

    @property
    def engine_busy(self) -> float | None:
        """The load generator's CPU use as a fraction of one core: near 1.0 it may be the bottleneck."""
        if self.engine_cpu_s is None or self.duration_s <= 0:
            return None
        return self.engine_cpu_s / self.duration_s

    @property
    def ok(self) -> int:
        """Answers with a 2xx or 3xx status."""
        return sum(n for code, n in self.statuses.items() if code[:1] in ("2", "3"))

    @property
    def errors(self) -> int:
        """Non-2xx/3xx answers plus socket errors and timeouts."""
        return self.requests - self.ok + sum(self.socket_errors.values())

    @property
    def error_statuses(self) -> dict[str, int]:
        """Only the failing statuses and socket errors, for a one-line summary."""
        failed = {code: n for code, n in self.statuses.items() if code[:1] not in ("2", "3")}
        failed.update({name: n for name, n in self.socket_errors.items() if n})
        return failed

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict: every field plus `ok` and `errors`."""
        data = asdict(self)
        data["ok"] = self.ok
        data["errors"] = self.errors
        data["engine_busy"] = None if self.engine_busy is None else round(self.engine_busy, 3)
        return data

    @classmethod
    def from_latencies(
        cls,
        *,
        engine: str,
        url: str,
        method: str,
        concurrency: int,
        duration_s: float,
        latencies_s: list[float],
        statuses: dict[str, int],
        socket_errors: dict[str, int],
        engine_cpu_s: float | None = None,
    ) -> LoadResult:
        """Build a result from raw per-request latencies in seconds (of answered requests)."""
        values = sorted(latencies_s)
        ms = [v * 1000.0 for v in values]
        requests = sum(statuses.values())
        return cls(
            engine=engine,
            url=url,
            method=method,
            concurrency=concurrency,
            duration_s=round(duration_s, 3),
            requests=requests,
            rps=round(requests / duration_s, 2) if duration_s > 0 else 0.0,
            p50_ms=round(percentile(ms, 50), 3),
            p90_ms=round(percentile(ms, 90), 3),
            p99_ms=round(percentile(ms, 99), 3),
            mean_ms=round(sum(ms) / len(ms), 3) if ms else 0.0,
            max_ms=round(ms[-1], 3) if ms else 0.0,
            statuses=dict(sorted(statuses.items())),
            socket_errors=socket_errors,
            percentiles={_pct_key(p): round(percentile(ms, p), 3) for p in PERCENTILES},
            engine_cpu_s=None if engine_cpu_s is None else round(engine_cpu_s, 3),
        )


def _pct_key(pct: float) -> str:
    return f"{pct:g}"
