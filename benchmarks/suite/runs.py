"""One function per benchmark: start each server in turn, measure it, stop it, return a JSON-ready record."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

from suite.envs import FERMION_PYTHON, EnvError, versions
from suite.machine import load_average, machine_info
from suite.measure import Method, measure
from suite.peers import PEERS, SERVERS, Peer, body_for
from suite.procs import NotReady, answers, wait_ready

Say = Callable[[str], None]


def _first_line(text: str) -> str:
    return next((line for line in str(text).splitlines() if line.strip()), str(text))[:300]


def serve_and_measure(
    peer: Peer, bench: str, method: Method, cpus: str, log_dir: Path, say: Say, extra_concurrency: tuple[int, ...] = ()
) -> dict[str, Any]:
    """Start `peer` for `bench`, wait until it answers, measure it (and at extra concurrencies), stop it."""
    say(f"  {peer.label}: starting")
    try:
        launch = peer.launcher(bench, cpus, log_dir)
    except EnvError as exc:
        say(f"  {peer.label}: skipped, {_first_line(str(exc))}")
        return {"label": peer.label, "skipped": f"install failed: {_first_line(str(exc))}"}
    try:
        timeout = 120.0 if bench == "echo" else 240.0
        ready_s = wait_ready(launch.procs, answers(launch.url, launch.body), timeout)
        say(f"  {peer.label}: answering after {ready_s:.1f} s at {launch.url}")
        record: dict[str, Any] = {
            "label": peer.label,
            "note": peer.note,
            "url": launch.url,
            "ready_s": round(ready_s, 2),
            "body": launch.body.decode(),
        }
        record.update(measure(launch.url, launch.body, method, say=say))
        for clients in extra_concurrency:
            say(f"  {peer.label}: at {clients} client(s)")
            record[f"at_{clients}"] = measure(launch.url, launch.body, method, concurrency=clients, say=say)
        record["versions"] = versions(peer.python(log_dir), peer.packages_for(bench))
        return record
    except NotReady as exc:
        say(f"  {peer.label}: did not start: {_first_line(str(exc))} (log: {launch.procs[-1].log_path})")
        return {"label": peer.label, "skipped": f"did not start: {_first_line(str(exc))}", "log": str(launch.procs[-1].log_path)}
    finally:
        for proc in reversed(launch.procs):
            proc.stop()
        for folder in launch.cleanup:
            shutil.rmtree(folder, ignore_errors=True)


def _base(bench: str, method: Method, quick: bool, cpus: str) -> dict[str, Any]:
    return {"bench": bench, "quick": quick, "machine": machine_info(), "method": {**method.to_dict(), "server_cpus": cpus}}


def run_echo(peers: list[Peer], method: Method, quick: bool, log_dir: Path, say: Say) -> dict[str, Any]:
    """Echo on every peer: the server on CPU 0, the load generator on CPU 1."""
    record = _base("echo", method, quick, "0")
    record["payload"] = json.loads(body_for("echo"))
    record["peers"] = {}
    for peer in peers:
        if "echo" in peer.benches:
            record["peers"][peer.name] = serve_and_measure(peer, "echo", method, "0", log_dir, say)
    record["load_average_after"] = load_average()
    return record


def raw_model(seconds: float, cpus: str, log_dir: Path, say: Say) -> dict[str, Any]:
    """The MiniLM limit, measured in-process by servers/raw_model.py (2 torch threads)."""
    say("  raw model (the limit): encoding in-process, batches of 1, 32, 64")
    done = subprocess.run(
        ["taskset", "-c", cpus, str(FERMION_PYTHON), "raw_model.py", "--seconds", str(seconds)],
        capture_output=True,
        text=True,
        cwd=SERVERS,
        timeout=600,
        env=_offline_env(),
    )
    (log_dir / "raw-model.log").write_text(done.stdout + done.stderr)
    if done.returncode != 0:
        raise RuntimeError(f"raw model measurement failed: {_first_line(done.stderr.strip().splitlines()[-1:] or ['?'])}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    rates = ", ".join(f"batch {b}: {r:,.1f}/s" for b, r in result["sentences_per_s"].items())
    say(f"    {rates}; one sentence {result['single_encode_ms']:.1f} ms")
    return result


def _offline_env() -> dict[str, str]:
    import os

    return {**os.environ, "HF_HUB_OFFLINE": "1"}


def run_minilm(peers: list[Peer], method: Method, quick: bool, log_dir: Path, say: Say) -> dict[str, Any]:
    """MiniLM embeddings: the model needs both cores, so servers get CPUs 0-1; wrk (a few % of a core) runs on CPU 1."""
    record = _base("minilm", method, quick, "0,1")
    record["payload"] = json.loads(body_for("minilm"))
    record["raw_model"] = raw_model(method.window_s, "0,1", log_dir, say)
    record["peers"] = {}
    for peer in peers:
        if "minilm" in peer.benches:
            extra = (1,) if peer.name in ("fermion", "fermion-unbatched") else ()
            record["peers"][peer.name] = serve_and_measure(peer, "minilm", method, "0,1", log_dir, say, extra)
    record["load_average_after"] = load_average()
    return record


def run_startup(method: Method, quick: bool, log_dir: Path, say: Say) -> dict[str, Any]:
    """`import fermion`, an echo replica's time to ready, and its RSS when ready and after load."""
    from suite.startup import import_time, ready_and_memory

    record = _base("startup", method, quick, "0")
    say("  import fermion")
    record["import"] = import_time(5 if quick else 9)
    say(f"    {record['import']['import_s']} s (python -X importtime, cumulative)")
    say("  echo replica: time to /readyz 200, memory")
    record["replica"] = ready_and_memory(log_dir, "0", method.window_s, method.load_cpu, runs=3 if quick else 5)
    replica = record["replica"]
    say(
        f"    ready in {replica['ready_s']} s; RSS {replica['rss_ready_mb']} MB ready, {replica['rss_after_load_mb']} MB after load"
    )
    record["load_average_after"] = load_average()
    return record


def peers_named(names: list[str]) -> list[Peer]:
    """The peers to run, in the suite's order; unknown names are an error that lists the known ones."""
    known = {peer.name: peer for peer in PEERS}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ValueError(f"unknown peer(s) {', '.join(unknown)}; pick from {', '.join(known)}")
    return [peer for peer in PEERS if peer.name in names]
