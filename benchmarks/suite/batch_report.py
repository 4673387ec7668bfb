"""RESULTS.md's part for the `batch` benchmark (suite/batch.py): its targets and its table.

The record holds the deployment's online throughput (`online`), one batch job run to the end at the same
concurrency (`batch`), and an interactive caller's latency while idle and while a second job runs
(`interactive_idle`, `interactive_during_batch`); `skipped` when the platform did not start.
"""

from __future__ import annotations

from typing import Any

from suite.target import Target, ratio_target


def batch_targets(record: dict[str, Any] | None) -> list[Target]:
    """Issue 20's targets: a batch job as fast as online calls, and interactive callers barely slowed by it."""
    found = record or {}
    concurrency = found.get("concurrency", 8)
    return [
        ratio_target(
            f"batch job vs the deployment's online throughput, {concurrency} in flight",
            "≥ 0.9×",
            found.get("batch", {}).get("rows_per_s"),
            found.get("online", {}).get("rps"),
            0.9,
            True,
        ),
        ratio_target(
            "batch: interactive p99 (1 client) during a batch vs idle",
            "≤ 2×",
            found.get("interactive_during_batch", {}).get("p99_ms"),
            found.get("interactive_idle", {}).get("p99_ms"),
            2.0,
            False,
        ),
    ]


def _row(label: str, result: dict[str, Any]) -> str:
    return f"| {label} | {result['rps']:,.1f} req/s | {result['p50_ms']:.2f} | {result['p99_ms']:.2f} |"


def batch_section(record: dict[str, Any]) -> list[str]:
    """The `batch` section: online, batch and interactive numbers on one deployment."""
    concurrency = record.get("concurrency")
    lines = [
        "",
        "## Batch predictions",
        "",
        f"From {record['file']}{' (quick)' if record.get('quick') else ''}: `fermion up` and one MiniLM replica "
        f"({record.get('source')}, batches of 32 / 5 ms) on CPUs {record.get('cpus')}, wrk on CPU "
        f"{record.get('method', {}).get('load_cpu')}; everything through the gateway. The batch job and the online clients keep {concurrency} rows in flight; the job's rate "
        "counts the rows between 10 % and 90 % done.",
        "",
    ]
    if "skipped" in record:
        return [*lines, f"Not measured: {record['skipped'][:300]}"]
    batch, during = record["batch"], record.get("batch_during_interactive", {})
    lines += [
        "| measurement | throughput | p50 ms | p99 ms |",
        "|---|---:|---:|---:|",
        _row(f"online, {concurrency} clients", record["online"]),
        f"| batch job, {batch['rows']:,} rows, {concurrency} in flight (10–90 %) | "
        + (f"{batch['rows_per_s']:,.1f} rows/s" if batch.get("rows_per_s") else "–")
        + " | – | – |",
        f"| the same job end to end ({batch['seconds']:,.1f} s) | {batch['rows_per_s_end_to_end']:,.1f} rows/s | – | – |",
        _row("interactive, 1 client, idle", record["interactive_idle"]),
        _row("interactive, 1 client, during a batch", record["interactive_during_batch"]),
    ]
    if during.get("rows_per_s") is not None:
        lines += [
            "",
            f"The batch running beside the interactive client: {during['rows_done']:,} rows done, "
            f"{during['rows_per_s']:,.1f} rows/s, {during.get('status')}.",
        ]
    return lines
