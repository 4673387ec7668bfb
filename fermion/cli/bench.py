"""`fermion bench URL ENDPOINT`: load-test one endpoint and report throughput, latency and errors."""

from __future__ import annotations

import datetime as dt
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from fermion.cli.app import app, err, fail, out, renamed_options

if TYPE_CHECKING:
    from fermion.bench import LoadResult
    from fermion.bench.target import Target

#: Above this share of one core, the load generator may be what limits the numbers.
BUSY_WARNING = 0.9


def _arguments(json_body: str | None) -> dict[str, Any] | None:
    if json_body is None:
        return None
    try:
        loaded = json.loads(json_body)
    except json.JSONDecodeError as exc:
        fail(f'--body is not valid JSON ({exc.msg} at character {exc.pos}); write an object like \'{{"text": "hi"}}\'', 2)
    if not isinstance(loaded, dict):
        fail('--body takes a JSON object, like \'{"text": "hi"}\'', 2)
    return loaded


def report(result: LoadResult, target: Target, engine_text: str) -> dict[str, Any]:
    """The JSON report written by --output: the result's fields plus what was measured and with what."""
    from fermion._version import __version__

    return {
        "endpoint": target.endpoint,
        "arguments": target.arguments,
        "engine_version": engine_text,
        "fermion_version": __version__,
        "finished_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        **result.to_dict(),
    }


def print_report(result: LoadResult, target: Target, engine_text: str) -> None:
    """Throughput, latency and errors by status, one line each."""
    from rich.table import Table

    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    failed = result.error_statuses
    answers = ", ".join(f"{code}: {n:,}" for code, n in result.statuses.items()) or "no answers"
    rows = [
        ("endpoint", f"{target.endpoint} · {target.method} {target.url}"),
        (
            "engine",
            f"{engine_text} · {result.concurrency} clients · {result.duration_s:.1f} s measured"
            + (f" · used {result.engine_busy:.0%} of a core" if result.engine_busy is not None else ""),
        ),
        ("throughput", f"{result.rps:,.1f} req/s ({result.requests:,} requests)"),
        (
            "latency",
            f"p50 {result.p50_ms:.2f} ms · p90 {result.p90_ms:.2f} ms · p99 {result.p99_ms:.2f} ms · max {result.max_ms:.2f} ms",
        ),
        (
            "errors",
            f"{result.errors:,}: " + ", ".join(f"{code}: {n:,}" for code, n in failed.items()) if failed else f"none ({answers})",
        ),
    ]
    for name, value in rows:
        grid.add_row(name, value)
    out.print(grid, markup=False)


@app.command(cls=renamed_options({"--json": "--body", "--timeout": "--request-timeout", "--out": "--output"}))
def bench(
    url: Annotated[str, typer.Argument(help="Base URL of the service, e.g. http://127.0.0.1:8000.")],
    endpoint: Annotated[str, typer.Argument(help="Endpoint name, e.g. predict.")],
    concurrency: Annotated[int, typer.Option("--concurrency", "-c", help="Concurrent connections (clients).")] = 64,
    duration: Annotated[float, typer.Option("--duration", "-d", help="Seconds to measure (after the warm-up).")] = 10.0,
    warmup: Annotated[float, typer.Option(help="Seconds of load before measuring.")] = 2.0,
    json_body: Annotated[
        str | None, typer.Option("--body", help="The arguments as one JSON object (default: an example from the schema).")
    ] = None,
    engine: Annotated[str, typer.Option(help="auto (wrk when installed, else python), wrk or python.")] = "auto",
    token: Annotated[str | None, typer.Option(help="Bearer token (default: $FERMION_TOKEN).")] = None,
    cpu: Annotated[int | None, typer.Option(help="Pin the load generator to this CPU (run the server on another).")] = None,
    timeout: Annotated[float, typer.Option("--request-timeout", help="Seconds before a request counts as timed out.")] = 10.0,
    out_path: Annotated[Path | None, typer.Option("--output", "-o", help="Write the report as JSON to this file.")] = None,
    plot: Annotated[Path | None, typer.Option(help="Draw latency by percentile into this PNG (needs matplotlib).")] = None,
) -> None:
    """Load-test ENDPOINT of the service at URL: req/s, p50/p90/p99 latency and errors by status."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    from fermion.bench import engine_description, resolve_engine, run_load
    from fermion.bench.target import TargetError, UnknownEndpoint, resolve_target
    from fermion.bench.wrk import WrkError

    if concurrency < 1 or duration <= 0 or warmup < 0:
        fail("--concurrency must be at least 1, --duration positive and --warmup not negative", 2)
    try:
        chosen = resolve_engine(engine)
    except ValueError as exc:
        fail(str(exc), 2)
    if plot is not None:
        from fermion.bench.plot import PlotUnavailable, require_matplotlib

        try:
            require_matplotlib()
        except PlotUnavailable as exc:
            fail(str(exc), 2)
    from fermion.client import http_url

    token = token or os.environ.get("FERMION_TOKEN")
    try:
        url = http_url(url, "fermion bench")
    except ValueError as exc:
        fail(str(exc), 2)
    try:
        target = resolve_target(url, endpoint, _arguments(json_body), token)
    except TargetError as exc:
        fail(str(exc), 2 if isinstance(exc, UnknownEndpoint) else 1)
    engine_text = engine_description(chosen)
    err.print(
        f"{target.method} {target.url} · {concurrency} clients · {warmup:g} s warm-up + {duration:g} s · {engine_text}",
        markup=False,
    )
    columns = (TextColumn("{task.description}"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"), TimeRemainingColumn())
    try:
        with Progress(*columns, console=err, transient=True) as bar:
            task = bar.add_task("load", total=warmup + duration)

            def progress(done: float, total: float) -> None:
                bar.update(task, completed=done, total=total, description="warm-up" if done < warmup else "measuring")

            result = run_load(
                target.url,
                method=target.method,
                body=target.body,
                headers=target.headers,
                concurrency=concurrency,
                duration=duration,
                warmup=warmup,
                engine=chosen,
                cpu=cpu,
                timeout=timeout,
                progress=progress,
            )
    except (WrkError, OSError, ValueError) as exc:
        fail(str(exc))
    except KeyboardInterrupt:
        fail("interrupted before the measurement finished; nothing to report", 130)
    print_report(result, target, engine_text)
    if result.engine_busy is not None and result.engine_busy > BUSY_WARNING:
        hint = "" if chosen == "wrk" else "; wrk (apt-get install wrk) needs less CPU per request"
        err.print(
            f"warning: the load generator used {result.engine_busy:.0%} of a core, so it may be the limit, not the server: "
            f"give it a core of its own with --cpu{hint}",
            markup=False,
        )
    if out_path is not None:
        out_path.parent.mkdir(parents=True, exist_ok=True)
        out_path.write_text(json.dumps(report(result, target, engine_text), indent=2) + "\n")
        out.print(f"report: {out_path}", markup=False)
    if plot is not None:
        from fermion.bench.plot import plot_latency

        plot_latency({f"{target.endpoint} ({engine_text})": result}, plot, f"{target.method} {target.url}")
        out.print(f"plot:   {plot}", markup=False)
    if result.ok == 0:
        fail(f"no request succeeded ({', '.join(f'{k}: {v}' for k, v in result.error_statuses.items()) or 'no answers'})")
