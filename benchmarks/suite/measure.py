"""The measuring method: warm up, fixed windows, repeat until two consecutive windows agree, report medians.

In the spirit of Triton's perf_analyzer: a window's throughput is trusted once the next window
lands within ±tolerance of it; the reported numbers are the medians over all windows measured.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Any

from fermion.bench import LoadResult, run_load

#: A window needs this many answers per client to count towards stability; fewer lengthen the next window.
MIN_ANSWERS_PER_CLIENT = 4
MAX_WINDOW_S = 60.0
#: The fields whose medians a measurement reports.
MEDIAN_FIELDS = ("rps", "p50_ms", "p90_ms", "p99_ms", "mean_ms", "max_ms")


@dataclass(frozen=True)
class Method:
    """How each server is measured: the same for every peer of a run."""

    concurrency: int = 64
    window_s: float = 10.0
    warmup_s: float = 2.0
    max_windows: int = 5
    tolerance: float = 0.10
    load_cpu: int | None = 1
    engine: str = "auto"

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def agree(a: float, b: float, tolerance: float) -> bool:
    """Two throughputs within ±tolerance of their mean."""
    mean = (a + b) / 2
    return mean > 0 and abs(a - b) / mean <= tolerance


def summarize(windows: list[LoadResult], stable: bool, min_answers: int = 0) -> dict[str, Any]:
    """Medians over the windows with at least `min_answers` answers (all, if none has), the errors and
    requests added up, and every window as measured."""
    counted = [w for w in windows if w.requests >= min_answers] or windows
    median = {name: round(statistics.median(getattr(w, name) for w in counted), 3) for name in MEDIAN_FIELDS}
    statuses: dict[str, int] = {}
    for window in windows:
        for code, n in window.statuses.items():
            statuses[code] = statuses.get(code, 0) + n
    return {
        **median,
        "requests": sum(w.requests for w in windows),
        "errors": sum(w.errors for w in windows),
        "statuses": statuses,
        "stable": stable,
        "engine": windows[0].engine,
        "windows": [{**w.to_dict(), "counted": any(w is c for c in counted)} for w in windows],
    }


def measure(url: str, body: bytes, method: Method, *, concurrency: int | None = None, say: Any = print) -> dict[str, Any]:
    """Measure `url` by `method`; `say` gets one line per window."""
    clients = concurrency or method.concurrency
    windows: list[LoadResult] = []
    stable = False
    window_s = method.window_s
    for index in range(method.max_windows):
        result = run_load(
            url,
            body=body,
            concurrency=clients,
            duration=window_s,
            warmup=method.warmup_s if index == 0 else 0.0,
            engine=method.engine,
            cpu=method.load_cpu,
            timeout=30.0,
        )
        windows.append(result)
        errors = f", {result.errors} errors {result.error_statuses}" if result.errors else ""
        if result.requests == 0:
            say(f"    window {index + 1}: no answer at all{errors} (requests still waiting at its end are not counted)")
        else:
            say(
                f"    window {index + 1}: {result.rps:,.1f} req/s, p50 {result.p50_ms:.2f} ms, p99 {result.p99_ms:.2f} ms{errors}"
            )
        last = index + 1 == method.max_windows
        if result.requests < MIN_ANSWERS_PER_CLIENT * clients and window_s < MAX_WINDOW_S and not last:
            # Too few answers to trust (a slow server, or a busy machine): the next window is longer.
            window_s = min(MAX_WINDOW_S, window_s * 2)
            say(f"    only {result.requests} answers for {clients} clients: next window {window_s:g} s")
            continue
        good = [w for w in windows if w.requests >= MIN_ANSWERS_PER_CLIENT * clients]
        if len(good) >= 2 and good[-1] is result and agree(good[-2].rps, good[-1].rps, method.tolerance):
            stable = True
            break
    if not stable:
        say(f"    not stable within ±{method.tolerance:.0%} after {len(windows)} windows; reporting the median anyway")
    return summarize(windows, stable, MIN_ANSWERS_PER_CLIENT * clients)
