"""The console's metrics history: points from the gateway's counters, with a fake clock."""

from __future__ import annotations

import threading

import pytest

from fermion.platform.gateway.history import MetricsHistory, quantile
from fermion.platform.gateway.metrics import BUCKETS, GatewayMetrics

T0 = 1_800_000_000.0


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def rig() -> tuple[GatewayMetrics, MetricsHistory, Clock]:
    clock = Clock()
    metrics = GatewayMetrics()
    return metrics, MetricsHistory(metrics, interval_s=5.0, keep_s=60.0, clock=clock), clock


REPLICAS = {"echo": {"desired": 2, "ready": 1, "starting": 1, "crashes": 0}}


def test_a_point_holds_the_rates_and_quantiles_of_its_interval(rig) -> None:
    metrics, history, clock = rig
    for _ in range(40):
        metrics.observe("echo", 200, 0.003)  # in the first bucket (0 .. 5 ms)
    for _ in range(10):
        metrics.observe("echo", 503, 0.2)  # in (0.1, 0.25]
    metrics.begin("echo")
    metrics.external_in_flight["echo"] = 2
    clock.now += 5
    history.sample(REPLICAS)
    [point] = history.points("echo", 15)
    assert point["t"] == "2027-01-15T08:00:05+00:00"
    assert point["rps"] == 10.0 and point["errors_per_s"] == 2.0
    assert (point["in_flight"], point["ready"], point["desired"]) == (3, 1, 2)
    # 50 requests: the 25th is in the first bucket (interpolated from 0); the 48th and the 49.5th in the 0.1-0.25 s one.
    assert point["p50_ms"] == pytest.approx(5 * 25 / 40)
    assert point["p95_ms"] == pytest.approx(100 + 150 * (47.5 - 40) / 10)
    assert point["p99_ms"] == pytest.approx(100 + 150 * (49.5 - 40) / 10)

    # The next interval counts only what came after the last sample; none → rates 0, quantiles null.
    clock.now += 5
    history.sample(REPLICAS)
    quiet = history.points("echo", 15)[-1]
    assert quiet["rps"] == 0.0 and quiet["errors_per_s"] == 0.0
    assert quiet["p50_ms"] is None and quiet["p95_ms"] is None and quiet["p99_ms"] is None
    for _ in range(5):
        metrics.observe("echo", 200, 0.03)
    clock.now += 5
    history.sample(REPLICAS)
    busy = history.points("echo", 15)[-1]
    assert busy["rps"] == 1.0 and 25 < busy["p99_ms"] <= 50
    assert [p["t"] for p in history.points("echo", 15)] == sorted(p["t"] for p in history.points("echo", 15))


def test_quantiles_follow_histogram_quantile() -> None:
    counts = [0] * (len(BUCKETS) + 1)
    assert quantile(0.99, counts) is None
    counts[0] = 4
    assert quantile(0.5, counts) == pytest.approx(0.0025)
    counts = [0] * (len(BUCKETS) + 1)
    counts[-1] = 3  # only +Inf: the highest finite bound, as Prometheus answers
    assert quantile(0.5, counts) == BUCKETS[-1]


def test_the_window_the_ring_and_the_summary(rig) -> None:
    metrics, history, clock = rig
    for second in range(0, 100, 5):  # 20 samples; 60 s kept → 12 points
        for _ in range(second // 5):  # interval k has k requests
            metrics.observe("echo", 200, 0.004)
        if second == 95:
            metrics.observe("echo", 500, 0.004)
        clock.now += 5
        history.sample(REPLICAS)
    assert len(history.points("echo", 60)) == 12
    last_minute = history.points("echo", 1)
    assert len(last_minute) == 12 and history.points("echo", 1)[-1]["rps"] == pytest.approx((19 + 1) / 5)
    clock.now += 30  # the window is measured from now
    assert len(history.points("echo", 1)) == 6
    summary = history.summary(1)
    # The last 6 points (30 s): intervals 14..19, plus the one 5xx.
    assert summary["echo"]["rps"] == pytest.approx((14 + 15 + 16 + 17 + 18 + 19 + 1) / 30, abs=1e-3)
    assert summary["echo"]["errors_per_s"] == pytest.approx(1 / 30, abs=1e-3)
    assert 0 < summary["echo"]["p99_ms"] <= 5
    assert history.points("nope", 5) == []
    clock.now += 3600
    assert history.summary(5) == {"echo": {"rps": 0.0, "p99_ms": None, "errors_per_s": 0.0}}


def test_deleted_deployments_are_forgotten_and_counters_never_go_backwards(rig) -> None:
    metrics, history, clock = rig
    metrics.observe("echo", 200, 0.01)
    metrics.observe("other", 200, 0.01)
    clock.now += 5
    history.sample({**REPLICAS, "other": {"desired": 1, "ready": 1}})
    assert history.names() == ["echo", "other"]
    clock.now += 5
    history.sample(REPLICAS)  # "other" was deleted
    assert history.names() == ["echo"] and history.points("other", 60) == []
    history.forget("echo")
    assert history.names() == [] and history.summary(5) == {}
    # Made again: the old requests are not new ones; a reset of the gateway's counters is not negative.
    clock.now += 5
    history.sample(REPLICAS)
    assert history.points("echo", 5)[-1]["rps"] == 0.0
    for _ in range(3):
        metrics.observe("echo", 200, 0.01)
    clock.now += 5
    history.sample(REPLICAS)
    metrics.forget("echo")  # 4 → 1: like Prometheus, a counter that went down was reset
    metrics.observe("echo", 200, 0.01)
    clock.now += 5
    history.sample(REPLICAS)
    assert history.points("echo", 5)[-1]["rps"] == pytest.approx(0.2)
    assert "" not in history.names()  # requests outside deployments (404s) are never a deployment


def test_reads_from_other_threads_while_sampling(rig) -> None:
    metrics, history, clock = rig
    stop = threading.Event()
    errors: list[BaseException] = []

    def read() -> None:
        try:
            while not stop.is_set():
                history.points("echo", 60)
                history.summary(60)
        except BaseException as exc:  # pragma: no cover - what the test looks for
            errors.append(exc)

    readers = [threading.Thread(target=read) for _ in range(2)]
    for thread in readers:
        thread.start()
    try:
        for _ in range(500):
            metrics.observe("echo", 200, 0.01)
            clock.now += 5
            history.sample(REPLICAS)
    finally:
        stop.set()
        for thread in readers:
            thread.join(10)
    assert errors == [] and len(history.points("echo", 60)) == 12
