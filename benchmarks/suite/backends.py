"""The platform's backends: the same deployment through `fermion up`'s gateway, on local processes and on Ray Serve.

Per case, in one run and on the same CPUs (echo: CPU 0, MiniLM: CPUs 0-1): `fermion up` (local
backend: the replica is a `fermion serve` process it starts), then `fermion up --backend ray` on a
Ray head the benchmark starts, twice: with Serve's own HTTP proxy (Ray's default, "ray") and with
Serve's HAProxy ingress ("ray-haproxy", what a head `fermion up` starts uses when haproxy is installed). `fermion up` is pinned with taskset and its replica inherits it; the
head is started (RayHead.start, a Popen) while the benchmark's own thread is pinned to the case's
CPUs with `os.sched_setaffinity`, so `ray start`, its GCS, raylet, dashboard, Serve's controller and
proxy and every worker inherit that mask; the benchmark's mask is restored right after. Both backends
get the same deployment, with resources cpus = 1 (echo) or 2 (MiniLM): on Ray that is the replica's
`num_cpus`, locally its compute threads.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import httpx

from fermion.platform.backends.ray_head import RayHead, RayHeadError
from suite.envs import ROOT
from suite.gateway import CASES, Say, deploy, gateway_kind, one_gateway, start_up
from suite.machine import load_average, machine_info
from suite.measure import Method, measure
from suite.peers import body_for
from suite.procs import NotReady, descendants, free_port

#: The deployment's resources per case, on both backends.
CPUS = {"echo": 1, "minilm": 2}
#: The head's logical CPUs: enough to place either case's replica (Ray counts them, it does not pin them).
HEAD_CPUS = 4


@contextmanager
def _pinned(cpus: str) -> Iterator[None]:
    """This thread on `cpus` ("0" or "0,1"), so that processes it starts inherit them; restored afterwards."""
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {int(c) for c in cpus.split(",")})
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


def _serve_config(head: RayHead, name: str) -> dict[str, Any]:
    """The concurrency limit and actor options Serve actually applied to the deployment's replica."""
    answer = httpx.get(
        head.dashboard_url + "/api/serve/applications/", headers={"Authorization": f"Bearer {head.token}"}, timeout=30
    )
    apps = answer.json().get("applications") or {}
    app = next((a for key, a in apps.items() if key.startswith(f"fermion-{name}-")), {})
    config = app.get("deployments", {}).get("replica", {}).get("deployment_config", {})
    return {key: config.get(key) for key in ("max_ongoing_requests", "max_queued_requests", "ray_actor_options")}


def _affinity(pids: list[int]) -> list[int]:
    """The CPUs any of `pids` may run on (a check that the placement took)."""
    cpus: set[int] = set()
    for pid in pids:
        try:
            cpus |= os.sched_getaffinity(pid)
        except OSError:  # gone meanwhile
            pass
    return sorted(cpus)


def _keep_logs(head: RayHead, to: Path) -> None:
    """Copy the head's session logs (its temp dir, which stop() removes) next to the run's other logs."""
    if not head.temp_dir:
        return
    try:
        shutil.copytree(Path(head.temp_dir) / "session_latest" / "logs", to, ignore_dangling_symlinks=True, dirs_exist_ok=True)
    except OSError:
        pass


@contextmanager
def _platform(bench: str, backend: str, log_dir: Path, say: Say) -> Iterator[dict[str, Any]]:
    """`fermion up` on `backend` (with a Ray head for "ray") on the case's CPUs, the case deployed; stopped on exit."""
    name, source, path, cpus = CASES[bench]
    head, up = None, None
    try:
        extra: tuple[str, ...] = ("--gateway", "python")  # the same gateway on both: only the backend differs
        env: dict[str, str] = {}
        if backend.startswith("ray"):
            head = RayHead(log_dir / f"ray-head-{backend}-{bench}", num_cpus=HEAD_CPUS, haproxy_ingress=backend == "ray-haproxy")
            say(f"  {bench}: a Ray head ({HEAD_CPUS} logical CPUs) pinned to CPU(s) {cpus}")
            with _pinned(cpus):
                head.start(timeout=240)
            extra = ("--backend", "ray", "--ray-address", head.dashboard_url, "--ray-serve-port", str(free_port()))
            env["RAY_AUTH_TOKEN_PATH"] = str(head.folder / "auth_token")  # the head keeps Ray's token auth on
        say(
            f"  {bench}: fermion up --backend {backend.split('-')[0]} on CPU(s) {cpus}, deploying {Path(source).name} (cpus {CPUS[bench]})"
        )
        up, base, data_dir = start_up(f"{backend}-{bench}", cpus, log_dir, extra, env)
        deploy(up, base, data_dir, bench, {"resources": {"cpus": CPUS[bench]}})
        info: dict[str, Any] = {"url": f"{base}/run/{name}{path}", "gateway": gateway_kind(up)}
        info["affinity"] = _affinity([up.pid, *descendants(up.pid), *(head.pids() if head is not None else [])])
        if head is not None:
            info["serve"] = _serve_config(head, name)
            info["head_cpus"] = HEAD_CPUS
        yield info
    finally:
        try:
            if up is not None:
                up.stop(grace=30)
        finally:
            if head is not None:
                _keep_logs(head, log_dir / f"{backend}-{bench}")
                head.stop()


def _one_backend(bench: str, backend: str, method: Method, log_dir: Path, say: Say) -> dict[str, Any]:
    """The case through the gateway on one backend: 64 clients (and 1 client for echo), or why it did not run."""
    body = body_for(bench)
    try:
        with _platform(bench, backend, log_dir, say) as info:
            say(f"  {bench}: {backend}, {info['gateway']} gateway, {info['url']}")
            result = {**info, **measure(info["url"], body, method, say=say)}
            if bench == "echo":  # one client: the latency the backend adds, without queueing
                say(f"  {bench}: {backend}, one client")
                result["at_1"] = measure(info["url"], body, method, concurrency=1, say=say)
            return result
    except (NotReady, RayHeadError, httpx.HTTPError, OSError) as exc:
        say(f"  {bench}: {backend} did not start: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}")
        return {"skipped": str(exc)[:500] or type(exc).__name__}


def run_backends(benches: list[str], method: Method, quick: bool, log_dir: Path, say: Say) -> dict[str, Any]:
    """Per case: through the gateway on the local backend, then on Ray Serve; the ratio and the added p50."""
    try:
        ray_version = version("ray")
    except PackageNotFoundError:
        ray_version = None
    record: dict[str, Any] = {
        "bench": "backends",
        "quick": quick,
        "machine": machine_info(),
        "method": method.to_dict(),
        "versions": {"ray": ray_version},
        "cases": {},
    }
    for bench in benches:
        _, source, _, cpus = CASES[bench]
        case: dict[str, Any] = {"cpus": cpus, "source": str(Path(source).relative_to(ROOT)), "resources": {"cpus": CPUS[bench]}}
        for backend in ("local", "ray", "ray-haproxy"):
            case[backend] = _one_backend(bench, backend, method, log_dir, say)
        local = case["local"]
        for backend in ("ray", "ray-haproxy"):
            ray = case[backend]
            if "rps" in local and "rps" in ray and local["rps"]:
                case[f"{backend}_throughput_ratio"] = round(ray["rps"] / local["rps"], 3)
                case[f"{backend}_added_p50_ms"] = round(ray["p50_ms"] - local["p50_ms"], 3)
                say(f"  {bench}: {backend} {case[f'{backend}_throughput_ratio']}× the local throughput")
        record["cases"][bench] = case
    record["gateway"] = one_gateway(
        run["gateway"] for case in record["cases"].values() for run in case.values() if isinstance(run, dict) and "gateway" in run
    )
    record["load_average_after"] = load_average()
    return record
