"""The platform's gateway: the same replica measured directly and through `fermion up`'s gateway, in one run.

`fermion up` and the replicas it starts share the CPUs the benchmark gives them (child processes
inherit the taskset), so the gateway's cost shows as lost throughput and added latency:
echo on CPU 0 (the gateway and the replica share one core), MiniLM on CPUs 0-1.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import httpx

from suite.envs import FERMION_PYTHON, ROOT
from suite.machine import load_average, machine_info
from suite.measure import Method, measure
from suite.peers import SERVERS, body_for
from suite.procs import NotReady, Process, free_port, start, wait_ready

Say = Callable[[str], None]
#: (deployment name, source, endpoint path, CPUs) per benchmark.
CASES = {
    "echo": ("echo", str(SERVERS / "fermion_echo.py"), "/echo", "0"),
    "minilm": ("minilm", str(ROOT / "examples" / "embeddings.py"), "/embed", "0,1"),
}


def gateway_kind(up: Process) -> str:
    """Which gateway `fermion up` put in front, from its banner."""
    text = " ".join(up.log_path.read_text(errors="replace").split())
    return "HAProxy" if "HAProxy in front" in text else "built-in (Python)"


def one_gateway(kinds: Iterable[str]) -> str:
    """The record's `gateway`: the one every case went through, or each one when they differ."""
    found = sorted(set(kinds))
    return found[0] if len(found) == 1 else (", ".join(found) if found else "not measured")


def start_up(
    label: str, cpus: str, log_dir: Path, extra: tuple[str, ...] = (), env: dict[str, str] | None = None
) -> tuple[Process, str, Path]:
    """`fermion up [extra]` pinned to `cpus`, on a free port with a fresh data dir, with the repository open to code
    (`--code-from`: the benchmark's servers and examples are Python sources): the process, its URL and data dir."""
    data_dir = Path(tempfile.mkdtemp(prefix="fermion-bench-up-"))
    port = free_port()
    up = start(
        f"fermion up:{label}",
        [
            str(FERMION_PYTHON),
            "-m",
            "fermion",
            "up",
            "--data-dir",
            str(data_dir),
            "--port",
            str(port),
            "--log-level",
            "warning",
            "--code-from",
            str(ROOT),
            *extra,
        ],
        cpus=cpus,
        log_path=log_dir / f"fermion-up-{label}.log",
        cwd=ROOT,
        env={"HF_HUB_OFFLINE": "1", **(env or {})},
    )
    return up, f"http://127.0.0.1:{port}", data_dir


def deploy(up: Process, base: str, data_dir: Path, bench: str, options: dict[str, Any] | None = None) -> str:
    """Once `up` answers, create a public one-replica deployment of `bench`'s case and wait until it answers
    through the gateway; the replica's own URL."""
    name, source, path, _ = CASES[bench]
    body = body_for(bench)
    wait_ready([up], lambda: httpx.get(base + "/healthz", timeout=2).status_code == 200, 60)
    token = (data_dir / "admin.token").read_text().strip()
    with httpx.Client(base_url=base, headers={"authorization": f"Bearer {token}"}, timeout=120) as api:
        spec: dict[str, Any] = {"name": name, "source": source, "public": True}
        if options:
            spec["options"] = options
        created = api.post("/api/v1/deployments", json=spec)
        if created.status_code != 201:
            raise NotReady(f"deploying {source} failed: {created.text[:300]}")

        def answers() -> bool:
            return (
                httpx.post(
                    f"{base}/run/{name}{path}", content=body, headers={"content-type": "application/json"}, timeout=5
                ).status_code
                == 200
            )

        wait_ready([up], answers, 300)
        replicas = api.get(f"/api/v1/deployments/{name}/replicas").json()["replicas"]
    return replicas[0]["url"]


def run_gateway(benches: list[str], method: Method, quick: bool, log_dir: Path, say: Say) -> dict[str, Any]:
    """Per case: the replica directly, then through the gateway, with the ratio and the added p50."""
    record: dict[str, Any] = {
        "bench": "gateway",
        "quick": quick,
        "machine": machine_info(),
        "method": method.to_dict(),
        "cases": {},
    }
    for bench in benches:
        name, source, path, cpus = CASES[bench]
        body = body_for(bench)
        say(f"  {bench}: fermion up on CPU(s) {cpus}, deploying {Path(source).name}")
        up, base, data_dir = start_up(bench, cpus, log_dir)
        try:
            replica = deploy(up, base, data_dir, bench)
            case: dict[str, Any] = {"cpus": cpus, "source": str(Path(source).relative_to(ROOT)), "gateway_kind": gateway_kind(up)}
            say(f"  {bench}: direct to the replica {replica}")
            case["direct"] = measure(replica + path, body, method, say=say)
            say(f"  {bench}: through the gateway {base}/run/{name}{path}")
            case["gateway"] = measure(f"{base}/run/{name}{path}", body, method, say=say)
            direct, gateway = case["direct"], case["gateway"]
            case["throughput_ratio"] = round(gateway["rps"] / direct["rps"], 3) if direct["rps"] else None
            case["added_p50_ms"] = round(gateway["p50_ms"] - direct["p50_ms"], 3)
            if bench == "echo":  # latency added at one client: the gateway's own cost, without queueing
                say(f"  {bench}: one client, direct then through the gateway")
                case["direct_1"] = measure(replica + path, body, method, concurrency=1, say=say)
                case["gateway_1"] = measure(f"{base}/run/{name}{path}", body, method, concurrency=1, say=say)
                case["added_p50_ms_1_client"] = round(case["gateway_1"]["p50_ms"] - case["direct_1"]["p50_ms"], 3)
            say(f"  {bench}: {case['throughput_ratio']}× the direct throughput, p50 +{case['added_p50_ms']} ms")
            record["cases"][bench] = case
        except NotReady as exc:
            say(f"  {bench}: did not start: {str(exc).splitlines()[0]}")
            record["cases"][bench] = {"skipped": str(exc)[:500]}
        finally:
            up.stop(grace=30)
    record["gateway"] = one_gateway(case["gateway_kind"] for case in record["cases"].values() if "gateway_kind" in case)
    record["load_average_after"] = load_average()
    return record
