"""The chaos suite: a real `fermion up` (both gateways) under the things that go wrong in real use.

Each scenario asserts what a user would notice: no failed request beyond the ones the scenario
must fail, a platform that answers throughout, and no process left behind (counted by PID: every
process a platform starts carries `FERMION_HOME=<its data dir>` in its environment).

The idle-then-burst scenario needs quiet minutes, so its deployments are made first and checked
last, while the other scenarios run on other deployments of the same platforms (tests in this
module run in file order). docs/reliability.md quotes these scenarios and how to reproduce them.
"""

from __future__ import annotations

import os
import shutil
import signal
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from support import EXAMPLES, RunningPlatform, start_platform, stop_process, stop_replicas, wait_for

pytestmark = pytest.mark.slow

ECHO = str(EXAMPLES / "echo.py")
GATEWAYS = ["python"] + (["haproxy"] if shutil.which("haproxy") else [])
#: The replica's keep-alive is 30 s: a quiet spell longer than it, and one of two minutes.
IDLE_CHECKS_S = (35.0, 120.0)


def platform_processes(data_dir: Path) -> list[int]:
    """PIDs of every live process started by the platform of `data_dir` (replicas, HAProxy, trainings, …)."""
    marker = f"FERMION_HOME={data_dir}".encode()
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            environ = Path(f"/proc/{entry.name}/environ").read_bytes().split(b"\0")
            state = Path(f"/proc/{entry.name}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if marker in environ and state != "Z":
            found.append(int(entry.name))
    return found


def replica_processes(data_dir: Path) -> list[int]:
    """PIDs of the replica processes (session leaders) of that platform."""
    from fermion.platform.local import LocalBackend

    return list(LocalBackend(data_dir)._own_processes().values())


@dataclass
class Chaos:
    """One platform of the suite, with an invoke token and the burst's start time."""

    gateway: str
    platform: RunningPlatform
    invoke: str
    burst_at: float = 0.0
    idle_results: dict[str, list[int]] = field(default_factory=dict)


def call(url: str, token: str | None, text: str = "hi") -> int:
    headers = {"authorization": f"Bearer {token}"} if token else {}
    try:
        answer = httpx.post(url, json={"text": text}, headers=headers, timeout=30)
    except httpx.HTTPError:
        return 0
    return answer.status_code


def deploy(api: httpx.Client, name: str, public: bool, **extra: object) -> None:
    answer = api.post("/api/v1/deployments", json={"name": name, "source": ECHO, "public": public, **extra})
    assert answer.status_code == 201, answer.text


def ready(api: httpx.Client, name: str, replicas: int) -> bool:
    d = api.get(f"/api/v1/deployments/{name}").json()
    return d["status"] == "ready" and d["replicas"]["ready"] == replicas


@pytest.fixture(scope="module")
def chaos(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Chaos]]:
    started: dict[str, Chaos] = {}
    try:
        for gateway in GATEWAYS:
            data = tmp_path_factory.mktemp(f"chaos-{gateway}")
            platform = start_platform(data, "--gateway", gateway, "--max-replicas-total", "6")
            with platform.api() as api:
                deploy(api, "quiet-public", public=True)
                deploy(api, "quiet-private", public=False)
                token = api.post("/api/v1/tokens", json={"name": "app", "scopes": ["invoke"]}).json()["token"]
            started[gateway] = Chaos(gateway, platform, token)
        for c in started.values():
            with c.platform.api() as api:
                wait_for(lambda: ready(api, "quiet-public", 1) and ready(api, "quiet-private", 1), what="the quiet deployments")
        # The burst: 16 concurrent calls to each quiet deployment, then silence until the checks.
        with ThreadPoolExecutor(64) as pool:
            for c in started.values():
                for name, token in (("quiet-public", None), ("quiet-private", c.invoke)):
                    statuses = list(pool.map(lambda _: call(f"{c.platform.url}/run/{name}/predict", token), range(16)))
                    assert statuses == [200] * 16, (c.gateway, name, statuses)
                c.burst_at = time.monotonic()
        yield started
    finally:
        for c in started.values():
            stop_process(c.platform.proc)
            stop_replicas(c.platform.data_dir)


def test_an_absurd_scale_request_is_refused_at_once_and_nothing_runs_away(chaos):
    c = chaos["python"]
    with c.platform.api() as api:
        deploy(api, "big", public=True)
        wait_for(lambda: ready(api, "big", 1), what="big")
        before = len(replica_processes(c.platform.data_dir))
        for body in ({"min_replicas": 1000}, {"min_replicas": 1e3}, {"min_replicas": 7}):
            started = time.monotonic()
            answer = api.patch("/api/v1/deployments/big", json=body)
            assert time.monotonic() - started < 1.0
            assert answer.status_code == 422, answer.text
            assert "does not fit" in answer.json()["message"] and "--max-replicas-total" in answer.json()["message"]
        answer = api.patch("/api/v1/deployments/big", json={"max_replicas": 1000})
        assert answer.status_code == 422 and "at most 32" in answer.json()["message"]
        assert api.get("/api/v1/deployments").status_code == 200  # the API kept answering
        assert len(replica_processes(c.platform.data_dir)) == before

        # A ceiling the autoscaler could reach but the platform cannot hold: it stops at what fits.
        # 6 replicas in all; 2 are the quiet ones, so `big` may have 4.
        answer = api.patch("/api/v1/deployments/big", json={"min_replicas": 4, "max_replicas": 30})
        assert answer.status_code == 200, answer.text
        wait_for(lambda: ready(api, "big", 4), what="4 replicas of big")
        stop = threading.Event()
        most = 0

        def hammer() -> None:
            with httpx.Client(timeout=30) as client:
                while not stop.is_set():
                    try:
                        client.post(f"{c.platform.url}/run/big/predict", json={"text": "x" * 100, "times": 100})
                    except httpx.HTTPError:
                        pass

        threads = [threading.Thread(target=hammer) for _ in range(24)]
        for thread in threads:
            thread.start()
        try:
            deadline = time.monotonic() + 6
            while time.monotonic() < deadline:
                most = max(most, len(replica_processes(c.platform.data_dir)))
                time.sleep(0.1)
        finally:
            stop.set()
            for thread in threads:
                thread.join(30)
        assert most <= 6, most
        assert api.patch("/api/v1/deployments/big", json={"min_replicas": 1, "max_replicas": 1}).status_code == 200
        wait_for(lambda: ready(api, "big", 1), what="big back to 1")
        assert api.delete("/api/v1/deployments/big").status_code == 202


@pytest.mark.parametrize("gateway", GATEWAYS)
def test_kill_9_of_replicas_under_load_fails_only_requests_they_were_serving(chaos, gateway):
    c = chaos[gateway]
    with c.platform.api() as api:
        deploy(api, "victim", public=True, min_replicas=2)
        wait_for(lambda: ready(api, "victim", 2), what="two replicas")
        answers: Counter[int] = Counter()
        stop = threading.Event()

        def load() -> None:
            with httpx.Client(timeout=30) as client:
                while not stop.is_set():
                    try:
                        answers[client.post(f"{c.platform.url}/run/victim/predict", json={"text": "k"}).status_code] += 1
                    except httpx.HTTPError:
                        answers[0] += 1

        threads = [threading.Thread(target=load) for _ in range(4)]
        for thread in threads:
            thread.start()
        kills = 0
        try:
            for _ in range(3):
                time.sleep(2)
                replicas = [r for r in api.get("/api/v1/deployments/victim/replicas").json()["replicas"] if r["state"] == "ready"]
                if len(replicas) == 2:
                    os.kill(replicas[0]["pid"], signal.SIGKILL)
                    kills += 1
                wait_for(lambda: ready(api, "victim", 2), what="the replacement")
        finally:
            stop.set()
            for thread in threads:
                thread.join(30)
        failed = sum(n for status, n in answers.items() if status != 200)
        # A request in flight on a killed replica cannot be retried (it may have run): at most the
        # 4 concurrent callers' requests per kill fail; everything else is answered.
        assert kills >= 2 and answers[200] > 50, answers
        assert failed <= 4 * kills, answers
        assert api.delete("/api/v1/deployments/victim").status_code == 202


@pytest.mark.parametrize("gateway", GATEWAYS)
def test_sigterm_of_a_replica_under_load_drains_without_a_failed_request(chaos, gateway):
    c = chaos[gateway]
    with c.platform.api() as api:
        deploy(api, "drained", public=True, min_replicas=2)
        wait_for(lambda: ready(api, "drained", 2), what="two replicas")
        answers: Counter[int] = Counter()
        stop = threading.Event()

        def load() -> None:
            with httpx.Client(timeout=30) as client:
                while not stop.is_set():
                    try:
                        answers[client.post(f"{c.platform.url}/run/drained/predict", json={"text": "d"}).status_code] += 1
                    except httpx.HTTPError:
                        answers[0] += 1

        threads = [threading.Thread(target=load) for _ in range(4)]
        for thread in threads:
            thread.start()
        try:
            time.sleep(1)
            pid = api.get("/api/v1/deployments/drained/replicas").json()["replicas"][0]["pid"]
            os.kill(pid, signal.SIGTERM)
            wait_for(lambda: pid not in [r["pid"] for r in api.get("/api/v1/deployments/drained/replicas").json()["replicas"]],
                     what="the drained replica to go")
            wait_for(lambda: ready(api, "drained", 2), what="the replacement")
        finally:
            stop.set()
            for thread in threads:
                thread.join(30)
        assert answers[200] > 50 and set(answers) == {200}, answers
        assert api.delete("/api/v1/deployments/drained").status_code == 202


def _check_idle(chaos: dict[str, Chaos], quiet_for: float) -> None:
    for c in chaos.values():
        wait = c.burst_at + quiet_for - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        for name, token in (("quiet-public", None), ("quiet-private", c.invoke)):
            statuses = [call(f"{c.platform.url}/run/{name}/predict", token) for _ in range(20)]
            c.idle_results[f"{name} after {quiet_for:g} s"] = statuses
            assert statuses == [200] * 20, (c.gateway, name, quiet_for, statuses)
        c.burst_at = time.monotonic()  # the next check's quiet spell starts now


def test_after_35_quiet_seconds_every_call_is_answered(chaos):
    _check_idle(chaos, IDLE_CHECKS_S[0])


def test_after_two_quiet_minutes_every_call_is_answered(chaos):
    _check_idle(chaos, IDLE_CHECKS_S[1] - IDLE_CHECKS_S[0])


def test_sigterm_of_the_platform_leaves_no_process(chaos):
    for c in chaos.values():
        data = c.platform.data_dir
        assert platform_processes(data), "the platform started processes"
        assert stop_process(c.platform.proc) == 0
        assert platform_processes(data) == [], c.gateway


def test_kill_9_restart_and_sigterm_leave_no_process(tmp_path: Path):
    """kill -9 of `fermion up` while replicas run and one is still starting; the next `fermion up`
    adopts the runners (same PIDs), reaps nothing it knows, and its SIGTERM leaves nothing behind."""
    data = tmp_path / "data"
    platform = start_platform(data)
    try:
        with platform.api() as api:
            deploy(api, "echo", public=True, min_replicas=2)
            wait_for(lambda: ready(api, "echo", 2), what="two replicas")
            pids = sorted(r["pid"] for r in api.get("/api/v1/deployments/echo/replicas").json()["replicas"])
            assert api.patch("/api/v1/deployments/echo", json={"min_replicas": 3}).status_code == 200
        platform.proc.kill()  # maybe mid-start of the third replica
        platform.proc.wait()
        assert set(pids) <= set(replica_processes(data))  # replicas outlive a killed control plane
        platform = start_platform(data, port=int(platform.url.rsplit(":", 1)[1]))
        with platform.api() as api:
            wait_for(lambda: ready(api, "echo", 3), what="adoption and the third replica")
            now = sorted(r["pid"] for r in api.get("/api/v1/deployments/echo/replicas").json()["replicas"])
            assert set(pids) <= set(now) and len(now) == 3
        assert len(replica_processes(data)) == 3  # nothing runs that the platform does not know
        assert stop_process(platform.proc) == 0
        assert platform_processes(data) == []
    finally:
        stop_process(platform.proc)
        stop_replicas(data)
