"""What the gateway counts, per deployment, and its Prometheus text (served at `/metrics`).

The hot path only touches plain dicts and ints (a request costs a few dict updates and one
bisect); the text is built when scraped. Requests for an unknown deployment (404) and for paths
outside `/run/` are counted under `deployment=""`, so random names cannot grow the label set.
Denied requests (401/403) count under their deployment. Latency is measured from the request's
arrival to the end of its answer (for a stream: its last byte), so long streams land in `+Inf`.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Mapping

#: Latency histogram bounds in seconds (the `le` labels), `+Inf` implied.
BUCKETS: tuple[float, ...] = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
#: The replica counts `render` exposes from each deployment's mapping, in this order.
REPLICA_STATES = ("desired", "ready", "starting")

#: Every metric family `render` writes (the Grafana dashboard's test checks its queries against these).
METRICS = {
    "fermion_gateway_requests_total": ("counter", "Requests through the gateway, by deployment and HTTP status code."),
    "fermion_gateway_request_duration_seconds": (
        "histogram",
        "Seconds from a request's arrival at the gateway to the end of its answer, by deployment.",
    ),
    "fermion_gateway_in_flight": ("gauge", "Requests the gateway is handling now (including ones waiting for a cold start)."),
    "fermion_gateway_cold_starts_total": ("counter", "Requests that had to wait for a deployment scaled to zero to start."),
    "fermion_deployment_replicas": (
        "gauge",
        "Replicas of a deployment by state: desired (the autoscaler's aim), ready, starting.",
    ),
}


class _Latency:
    __slots__ = ("counts", "total")

    def __init__(self) -> None:
        self.counts = [0] * (len(BUCKETS) + 1)  # per bucket, not cumulative; the last is +Inf
        self.total = 0.0


class GatewayMetrics:
    """Per-deployment request counters, a latency histogram and in-flight gauges.

    Updated from the gateway's event loop; `render` may run in another thread (it copies first).
    """

    def __init__(self) -> None:
        self.requests: dict[tuple[str, int], int] = {}  # (deployment, status) → count
        self.latency: dict[str, _Latency] = {}
        self.in_flight: dict[str, int] = {}
        #: In flight through a proxy in front (HAProxy), which reports its own count.
        self.external_in_flight: dict[str, int] = {}
        self.cold_starts: dict[str, int] = {}

    def begin(self, deployment: str) -> None:
        """A request for `deployment` arrived (call `end` when it is answered)."""
        self.in_flight[deployment] = self.in_flight.get(deployment, 0) + 1

    def end(self, deployment: str, status: int, seconds: float) -> None:
        """A request counted by `begin` got its answer."""
        self.in_flight[deployment] -= 1
        self.observe(deployment, status, seconds)

    def observe(self, deployment: str, status: int, seconds: float) -> None:
        """Count one answered request (without touching the in-flight gauge)."""
        key = (deployment, status)
        self.requests[key] = self.requests.get(key, 0) + 1
        latency = self.latency.get(deployment)
        if latency is None:
            latency = self.latency[deployment] = _Latency()
        latency.counts[bisect_left(BUCKETS, seconds)] += 1
        latency.total += seconds

    def cold_start(self, deployment: str) -> None:
        """A request had to wait for the deployment's first replica."""
        self.cold_starts[deployment] = self.cold_starts.get(deployment, 0) + 1

    def forget(self, deployment: str) -> None:
        """Drop a deleted deployment's series (Prometheus treats a recreated one's counters as reset)."""
        for key in [k for k in list(self.requests) if k[0] == deployment]:
            self.requests.pop(key, None)
        self.latency.pop(deployment, None)
        self.cold_starts.pop(deployment, None)
        if not self.in_flight.get(deployment):
            self.in_flight.pop(deployment, None)

    def render(self, replicas: Mapping[str, Mapping[str, int]] | None = None) -> str:
        """The Prometheus text exposition (format 0.0.4); `replicas` maps deployment → {"desired": n, "ready": n, ...}."""
        replicas = replicas or {}
        # Copies taken in one go each: the event loop may add keys while this runs in another thread.
        requests, in_flight, cold = dict(self.requests), dict(self.in_flight), dict(self.cold_starts)
        for name, count in dict(self.external_in_flight).items():
            in_flight[name] = in_flight.get(name, 0) + count
        latency = {name: (list(h.counts), h.total) for name, h in dict(self.latency).items()}
        out: list[str] = []

        def family(name: str) -> None:
            kind, text = METRICS[name]
            out.append(f"# HELP {name} {text}\n# TYPE {name} {kind}\n")

        family("fermion_gateway_requests_total")
        for (name, status), count in sorted(requests.items()):
            out.append(
                f'fermion_gateway_requests_total{{deployment="{_esc(name)}",code="{status}",class="{status // 100}xx"}} {count}\n'
            )

        family("fermion_gateway_request_duration_seconds")
        for name, (counts, total) in sorted(latency.items()):
            label, cumulative = _esc(name), 0
            for bound, count in zip((*map(repr, BUCKETS), "+Inf"), counts, strict=True):
                cumulative += count
                out.append(f'fermion_gateway_request_duration_seconds_bucket{{deployment="{label}",le="{bound}"}} {cumulative}\n')
            out.append(f'fermion_gateway_request_duration_seconds_sum{{deployment="{label}"}} {total!r}\n')
            out.append(f'fermion_gateway_request_duration_seconds_count{{deployment="{label}"}} {cumulative}\n')

        family("fermion_gateway_in_flight")
        for name in sorted({*(n for n in in_flight if n), *replicas}):
            out.append(f'fermion_gateway_in_flight{{deployment="{_esc(name)}"}} {in_flight.get(name, 0)}\n')

        family("fermion_gateway_cold_starts_total")
        for name, count in sorted(cold.items()):
            out.append(f'fermion_gateway_cold_starts_total{{deployment="{_esc(name)}"}} {count}\n')

        family("fermion_deployment_replicas")
        for name, counts_of in sorted(replicas.items()):
            for state in REPLICA_STATES:
                if state in counts_of:
                    out.append(
                        f'fermion_deployment_replicas{{deployment="{_esc(name)}",state="{state}"}} {int(counts_of[state])}\n'
                    )
        return "".join(out)


def _esc(value: str) -> str:
    """A label value escaped as the text format requires."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
