"""Batch predictions on the platform (docs/batch.md): a batch job's throughput against the same deployment's online
throughput at the same concurrency, and an interactive caller's latency while a batch runs against its idle latency.

`fermion up` (built-in gateway) and its MiniLM replica (`examples/embeddings.py`, batched 32 / 5 ms) share CPUs
0-1; wrk shares CPU 1, as in the MiniLM benchmark. In order, on one deployment:

1. online: wrk at `CONCURRENCY` clients through the gateway (`/run/minilm/embed`) → requests per second;
2. batch: a job over a dataset of that many rows per second × `BATCH_S` seconds, at the same concurrency → rows per
   second while it ran (between 10 % and 90 % of the rows, so neither reading the dataset nor storing the output
   counts), and end to end;
3. interactive, idle: wrk at 1 client → p99;
4. interactive, during a batch: the same while a second, longer job runs → p99.
"""

from __future__ import annotations

import csv
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from suite.gateway import CASES, deploy, gateway_kind, start_up
from suite.machine import load_average, machine_info
from suite.measure import Method, measure
from suite.peers import body_for
from suite.procs import NotReady

Say = Callable[[str], None]
#: Rows in flight: the batch job's concurrency and the online measurement's clients.
CONCURRENCY = 8
#: Seconds of rows the measured job gets at the online rate (`--quick`: fewer).
BATCH_S, QUICK_BATCH_S = 30.0, 10.0


def run_batch(method: Method, quick: bool, log_dir: Path, say: Say) -> dict[str, Any]:
    """The four measurements above, with the throughput ratio and the p99 ratio."""
    from servers._common import SENTENCE

    name, source, path, cpus = CASES["minilm"]
    body = body_for("minilm")
    record: dict[str, Any] = {
        "bench": "batch",
        "quick": quick,
        "machine": machine_info(),
        "method": method.to_dict(),
        "concurrency": CONCURRENCY,
        "cpus": cpus,
        "source": "examples/embeddings.py",
    }
    say(f"  fermion up on CPU(s) {cpus}, deploying {Path(source).name}")
    up, base, data_dir = start_up("batch", cpus, log_dir, ("--gateway", "python"))
    work = Path(tempfile.mkdtemp(prefix="fermion-bench-batch-"))
    try:
        deploy(up, base, data_dir, "minilm")
        record["gateway"] = gateway_kind(up)
        token = (data_dir / "admin.token").read_text().strip()
        url = f"{base}/run/{name}{path}"
        with httpx.Client(base_url=base, headers={"authorization": f"Bearer {token}"}, timeout=120) as api:
            say(f"  online: {CONCURRENCY} clients through the gateway")
            online = measure(url, body, method, concurrency=CONCURRENCY, say=say)
            rows = max(200, int(online["rps"] * (QUICK_BATCH_S if quick else BATCH_S)))
            ref = _add_sentences(api, work, "sentences", rows, SENTENCE)
            say(f"  batch: {rows} rows at concurrency {CONCURRENCY}")
            batch = _timed_batch(api, ref, name, say)
            say("  interactive, idle: 1 client")
            idle = measure(url, body, method, concurrency=1, say=say)
            long_ref = _add_sentences(api, work, "more-sentences", rows * 20, SENTENCE)
            job = _start(api, long_ref, name)
            _wait(api, job, lambda j: j["rows_done"] > 0, 120)
            say("  interactive, during a batch: 1 client")
            busy = measure(url, body, method, concurrency=1, say=say)
            during = api.get(f"/api/v1/batches/{job}").json()
            api.delete(f"/api/v1/batches/{job}")
        record["online"], record["batch"], record["interactive_idle"], record["interactive_during_batch"] = (
            online,
            batch,
            idle,
            busy,
        )
        record["batch_during_interactive"] = {k: during.get(k) for k in ("rows_done", "rows_per_s", "status")}
        record["throughput_ratio"] = round(batch["rows_per_s"] / online["rps"], 3) if online["rps"] else None
        record["p99_ratio"] = round(busy["p99_ms"] / idle["p99_ms"], 3) if idle["p99_ms"] else None
        say(f"  batch ÷ online throughput: {record['throughput_ratio']}×; interactive p99 during ÷ idle: {record['p99_ratio']}×")
    except NotReady as exc:
        say(f"  did not start: {str(exc).splitlines()[0]}")
        record["skipped"] = str(exc)[:500]
    finally:
        up.stop(grace=30)
        shutil.rmtree(work, ignore_errors=True)
    record["load_average_after"] = load_average()
    return record


def _add_sentences(api: httpx.Client, work: Path, name: str, rows: int, sentence: str) -> str:
    """Upload a table of `rows` sentences (each a little different) as dataset `name`; its NAME@V."""
    path = work / f"{name}.csv"
    with open(path, "w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["text"])
        writer.writerows([f"{sentence} ({n})"] for n in range(rows))
    with open(path, "rb") as handle:
        added = api.post("/api/v1/datasets", files={"file": (path.name, handle)}, data={"name": name}, timeout=300)
    added.raise_for_status()
    return str(added.json()["ref"])


def _start(api: httpx.Client, ref: str, deployment: str) -> str:
    started = api.post(
        "/api/v1/batches", json={"deployment": deployment, "dataset": ref, "endpoint": "embed", "concurrency": CONCURRENCY}
    )
    if started.status_code != 202:
        raise NotReady(f"the batch did not start: {started.text[:300]}")
    return str(started.json()["id"])


def _wait(
    api: httpx.Client, job_id: str, done: Callable[[dict[str, Any]], bool], timeout: float
) -> list[tuple[float, dict[str, Any]]]:
    """Poll the job until `done(job)`; every (time, job) seen."""
    seen, deadline = [], time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = api.get(f"/api/v1/batches/{job_id}").json()
        seen.append((time.monotonic(), job))
        if done(job) or job["status"] in ("failed", "cancelled"):
            return seen
        time.sleep(0.2)
    raise NotReady(f"batch {job_id} did not get there within {timeout:g} s")


def _timed_batch(api: httpx.Client, ref: str, deployment: str, say: Say) -> dict[str, Any]:
    """Run one job to the end: rows per second between 10 % and 90 % done, and end to end."""
    started = time.monotonic()
    job = _start(api, ref, deployment)
    seen = _wait(api, job, lambda j: j["status"] == "succeeded", 3600)
    final = seen[-1][1]
    if final["status"] != "succeeded":
        raise NotReady(f"batch {job} {final['status']}: {final['error']}")
    total = final["rows_total"]
    low = next((t, j["rows_done"]) for t, j in seen if j["rows_done"] >= 0.1 * total)
    high = next((t, j["rows_done"]) for t, j in seen if j["rows_done"] >= 0.9 * total)
    steady = (high[1] - low[1]) / (high[0] - low[0]) if high[0] > low[0] else None
    elapsed = seen[-1][0] - started
    say(f"    {total} rows: {steady or 0:,.1f} rows/s steady, {total / elapsed:,.1f} rows/s end to end ({elapsed:.1f} s)")
    return {
        "rows": total,
        "rows_per_s": round(steady, 2) if steady else None,
        "rows_per_s_end_to_end": round(total / elapsed, 2),
        "seconds": round(elapsed, 2),
        "result": final["result"],
    }
