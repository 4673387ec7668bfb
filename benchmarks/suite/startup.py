"""Fermion's own costs: `import fermion` time, an echo replica's time to ready, and its memory."""

from __future__ import annotations

import re
import statistics
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx

from fermion.bench import run_load
from suite.envs import FERMION_PYTHON, ROOT
from suite.peers import SERVERS, body_for
from suite.procs import answers, free_port, rss_mb, start, wait_ready

_IMPORT_LINE = re.compile(r"import time:\s+\d+\s+\|\s+(\d+)\s+\|\s+fermion$")


def import_time(runs: int = 7) -> dict[str, Any]:
    """`import fermion`: the cumulative time `python -X importtime` reports, and the wall-clock extra over `pass`."""
    cumulative, with_import, bare = [], [], []
    for _ in range(runs):
        done = subprocess.run(
            [str(FERMION_PYTHON), "-X", "importtime", "-c", "import fermion"],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=ROOT,
        )
        found = [int(m.group(1)) for line in done.stderr.splitlines() if (m := _IMPORT_LINE.search(line.strip()))]
        if found:
            cumulative.append(found[-1] / 1e6)
        for code, bucket in (("import fermion", with_import), ("pass", bare)):
            start_at = time.perf_counter()
            subprocess.run([str(FERMION_PYTHON), "-c", code], check=True, timeout=60, cwd=ROOT)
            bucket.append(time.perf_counter() - start_at)
    return {
        "import_s": round(statistics.median(cumulative), 4) if cumulative else None,
        "wall_extra_s": round(statistics.median(with_import) - statistics.median(bare), 4),
        "interpreter_start_s": round(statistics.median(bare), 4),
        "runs": runs,
    }


def ready_and_memory(log_dir: Path, cpus: str, load_s: float, load_cpu: int | None, runs: int = 5) -> dict[str, Any]:
    """Start the echo replica `runs` times: seconds from process start to /readyz 200; RSS when ready and after load."""
    ready: list[float] = []
    rss: dict[str, float | None] = {}
    for index in range(runs):
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        proc = start(
            "fermion:ready",
            [
                str(FERMION_PYTHON),
                "-m",
                "fermion",
                "serve",
                str(SERVERS / "fermion_echo.py"),
                "--port",
                str(port),
                "--log-level",
                "warning",
            ],
            cpus=cpus,
            log_path=log_dir / "fermion-ready.log",
            cwd=ROOT,
        )
        try:
            with httpx.Client(base_url=base, timeout=2.0) as client:
                wait_ready([proc], lambda: client.get("/readyz").status_code == 200, timeout=60, interval=0.005)
            ready.append(time.monotonic() - proc.started)
            if index == runs - 1:
                rss["ready_mb"] = rss_mb(proc.pid)
                wait_ready([proc], answers(base + "/echo", body_for("echo")), timeout=10)
                result = run_load(base + "/echo", body=body_for("echo"), concurrency=64, duration=load_s, warmup=0, cpu=load_cpu)
                rss["after_load_mb"] = rss_mb(proc.pid)
                rss["load_requests"] = result.requests
        finally:
            proc.stop()
    return {
        "ready_s": round(statistics.median(ready), 4),
        "ready_runs_s": [round(r, 4) for r in ready],
        "rss_ready_mb": round(rss["ready_mb"], 1) if rss.get("ready_mb") else None,
        "rss_after_load_mb": round(rss["after_load_mb"], 1) if rss.get("after_load_mb") else None,
        "rss_load_requests": rss.get("load_requests"),
    }
