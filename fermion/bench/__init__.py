"""Load-test an HTTP endpoint: `run_load` drives it with wrk or a lean asyncio engine.

from fermion.bench import run_load
result = run_load("http://127.0.0.1:8000/predict", body=b'{"text": "hi"}', concurrency=64, duration=10)
print(result.rps, result.p99_ms, result.errors)
"""

from __future__ import annotations

from collections.abc import Callable

from fermion.bench.result import PERCENTILES, LoadResult, percentile

__all__ = ["ENGINES", "PERCENTILES", "LoadResult", "engine_description", "percentile", "resolve_engine", "run_load"]

ENGINES = ("auto", "wrk", "python")


def resolve_engine(engine: str) -> str:
    """ "auto" → "wrk" when the wrk binary is on PATH, else "python"; others are checked and returned."""
    from fermion.bench.wrk import wrk_path

    if engine not in ENGINES:
        raise ValueError(f"unknown engine {engine!r}; pick one of {', '.join(ENGINES)}")
    if engine == "auto":
        return "wrk" if wrk_path() else "python"
    if engine == "wrk" and not wrk_path():
        raise ValueError("wrk is not installed; install it (apt-get install wrk) or use --engine python")
    return engine


def engine_description(engine: str) -> str:
    """What actually generated the load, for reports: "wrk 4.1.0" or "python (uvloop 0.23.0)"."""
    from fermion.bench.pyload import loop_name
    from fermion.bench.wrk import wrk_version

    return wrk_version() if engine == "wrk" else f"python ({loop_name()})"


def run_load(
    url: str,
    *,
    method: str = "POST",
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    concurrency: int = 64,
    duration: float = 10.0,
    warmup: float = 2.0,
    engine: str = "auto",
    cpu: int | None = None,
    timeout: float = 10.0,
    progress: Callable[[float, float], None] | None = None,
) -> LoadResult:
    """Send `method url` with `body` from `concurrency` keep-alive connections; measure `duration` s after `warmup` s.

    `cpu` pins the load generator to one CPU (the server should run on another). `progress` is
    called about ten times a second with (seconds done, seconds in all, warm-up included).
    Errors are never dropped: non-2xx answers land in `statuses`, failures in `socket_errors`.
    """
    if concurrency < 1:
        raise ValueError(f"concurrency must be at least 1, not {concurrency}")
    if duration <= 0:
        raise ValueError(f"duration must be positive, not {duration}")
    chosen = resolve_engine(engine)
    method = method.upper()
    sent_headers = dict(headers or {})
    if body is not None and not any(k.lower() == "content-type" for k in sent_headers):
        sent_headers["Content-Type"] = "application/json"
    if chosen == "python":
        from fermion.bench.pyload import run_python

        total = warmup + duration
        report = (lambda done: progress(done, total)) if progress else None
        return run_python(
            url,
            method=method,
            body=body,
            headers=sent_headers,
            concurrency=concurrency,
            duration=duration,
            warmup=warmup,
            timeout=timeout,
            cpu=cpu,
            progress=report,
        )
    from fermion.bench.wrk import run_wrk

    seconds = float(max(1, int(-(-duration // 1))))
    warm = float(max(1, int(-(-warmup // 1)))) if warmup > 0 else 0.0
    total = warm + seconds
    if warm:
        run_wrk(
            url,
            method=method,
            body=body,
            headers=sent_headers,
            concurrency=concurrency,
            duration=warm,
            timeout=timeout,
            cpu=cpu,
            progress=(lambda done: progress(done, total)) if progress else None,
        )
    return run_wrk(
        url,
        method=method,
        body=body,
        headers=sent_headers,
        concurrency=concurrency,
        duration=seconds,
        timeout=timeout,
        cpu=cpu,
        progress=(lambda done: progress(warm + done, total)) if progress else None,
    )
