"""Fermion's benchmark suite: Fermion against the servers users would pick instead, in one run, on one machine.

    python benchmarks/run.py                  # everything (about 15 minutes on 2 cores)
    python benchmarks/run.py --quick          # short windows, a few minutes
    python benchmarks/run.py --only echo --peers fermion,asgi

Writes benchmarks/results/<time>-<bench>.json, benchmarks/RESULTS.md and benchmarks/results/chart.png.
See benchmarks/README.md for the method.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from suite.envs import ROOT  # noqa: E402
from suite.machine import checkout_commit  # noqa: E402
from suite.measure import Method  # noqa: E402
from suite.peers import PEERS  # noqa: E402
from suite.procs import stop_all  # noqa: E402

BENCH_DIR = ROOT / "benchmarks"
RESULTS = BENCH_DIR / "results"
ALL_BENCHES = ("echo", "minilm", "startup", "gateway", "backends", "llm", "batch")


def _say(line: str) -> None:
    print(line, flush=True)


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def methods(quick: bool, window: float | None, max_windows: int | None) -> dict[str, Method]:
    """The measuring method of each benchmark; --quick shortens windows and warm-ups."""
    win = window or (3.0 if quick else 10.0)
    most = max_windows or (3 if quick else 5)
    return {
        "echo": Method(window_s=win, warmup_s=1.0 if quick else 2.0, max_windows=most),
        "minilm": Method(window_s=win, warmup_s=2.0 if quick else 5.0, max_windows=most),
        "startup": Method(window_s=win, warmup_s=0.0, max_windows=1),
        "gateway": Method(window_s=win, warmup_s=1.0 if quick else 3.0, max_windows=most),
        "backends": Method(window_s=win, warmup_s=1.0 if quick else 3.0, max_windows=most),
        "llm": Method(window_s=win, warmup_s=0.0, max_windows=1),  # suite/llm.py sets its own windows
        "batch": Method(window_s=win, warmup_s=2.0 if quick else 5.0, max_windows=most),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Fermion's benchmark suite (see benchmarks/README.md).")
    parser.add_argument("--quick", action="store_true", help="3 s windows, at most 3 windows: a few minutes in all")
    parser.add_argument("--only", default=",".join(ALL_BENCHES), help=f"benchmarks to run, from {','.join(ALL_BENCHES)}")
    parser.add_argument("--peers", default=",".join(p.name for p in PEERS), help="servers to compare")
    parser.add_argument("--window", type=float, help="seconds per measuring window")
    parser.add_argument("--max-windows", type=int, help="windows before giving up on stability")
    parser.add_argument("--no-report", action="store_true", help="only write the JSON results")
    args = parser.parse_args(argv)

    from suite.runs import peers_named, run_echo, run_minilm, run_startup

    benches = [b.strip() for b in args.only.split(",") if b.strip()]
    if unknown := [b for b in benches if b not in ALL_BENCHES]:
        parser.error(f"unknown benchmark(s) {', '.join(unknown)}; pick from {', '.join(ALL_BENCHES)}")
    try:
        peers = peers_named([p.strip() for p in args.peers.split(",") if p.strip()])
    except ValueError as exc:
        parser.error(str(exc))
    stamp = dt.datetime.now().strftime("%Y-%m-%dT%H%M%S")
    log_dir = BENCH_DIR / ".venvs" / "logs" / stamp
    log_dir.mkdir(parents=True, exist_ok=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    method = methods(args.quick, args.window, args.max_windows)
    signal.signal(signal.SIGTERM, _interrupt)
    started = time.monotonic()
    _say(f"Fermion benchmarks{' (quick)' if args.quick else ''}: {', '.join(benches)} · peers {', '.join(p.name for p in peers)}")
    _say(f"logs: {log_dir}")
    try:
        for bench in benches:
            _say(f"\n{bench}")
            if bench == "echo":
                record = run_echo(peers, method[bench], args.quick, log_dir, _say)
            elif bench == "minilm":
                record = run_minilm(peers, method[bench], args.quick, log_dir, _say)
            elif bench == "gateway":
                from suite.gateway import run_gateway

                record = run_gateway(["echo", "minilm"], method[bench], args.quick, log_dir, _say)
            elif bench == "backends":
                from suite.backends import run_backends

                record = run_backends(["echo", "minilm"], method[bench], args.quick, log_dir, _say)
            elif bench == "llm":
                from suite.llm import run_llm

                record = run_llm(args.quick, log_dir, _say)
            elif bench == "batch":
                from suite.batch import run_batch

                record = run_batch(method[bench], args.quick, log_dir, _say)
            else:
                record = run_startup(method[bench], args.quick, log_dir, _say)
            record["started"] = stamp
            record["commit"] = checkout_commit()
            record.setdefault("gateway", "none")  # echo, minilm, startup: each server is measured directly
            path = RESULTS / f"{stamp}-{bench}.json"
            path.write_text(json.dumps(record, indent=2) + "\n")
            _say(f"  → {path.relative_to(ROOT)}")
    except KeyboardInterrupt:
        _say("\ninterrupted: stopping the servers this run started")
        return 130
    finally:
        stop_all()
    if not args.no_report:
        from suite.report import write_chart, write_report

        _say(f"\n→ {write_report(RESULTS, BENCH_DIR / 'RESULTS.md').relative_to(ROOT)}")
        chart = write_chart(RESULTS, RESULTS / "chart.png", log_dir)
        _say(f"→ {chart.relative_to(ROOT)}" if isinstance(chart, Path) else f"chart skipped: {chart}")
    _say(f"done in {(time.monotonic() - started) / 60:.1f} min")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    sys.exit(main())
