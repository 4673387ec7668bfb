"""The chaos suite: a real `fermion up` (both gateways) under the things that go wrong in real use.

Each scenario asserts what a user would notice: no failed request beyond the ones the scenario
must fail, a platform that answers throughout, and no process left behind (counted by PID: every
process a platform starts carries `FERMION_HOME=<its data dir>` in its environment).

The idle-then-burst scenario needs quiet minutes: its deployments are made and called first,
checked after 35 quiet seconds, and again after two more quiet minutes, while the other scenarios
run on other deployments of the same platforms (tests in this module run in file order). docs/reliability.md quotes these scenarios and how to reproduce them.
"""

from __future__ import annotations

import json
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
from support import EXAMPLES, ROOT, RunningPlatform, start_platform, stop_process, stop_replicas, wait_for

pytestmark = pytest.mark.slow

ECHO = str(EXAMPLES / "echo.py")
ECHO_V2 = str(ROOT / "tests" / "apps" / "echo_v2.py")
#: What each scenario measured, written to test-artifacts/chaos.json for docs/reliability.md.
RESULTS: list[dict] = []
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
    from fermion.platform.backends.local import LocalBackend

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


class Load:
    """Callers in a loop on a few threads for the length of a `with` block, counting answers by status
    (0: no HTTP answer at all)."""

    def __init__(self, url: str, token: str | None = None, threads: int = 4, body: dict | None = None) -> None:
        self.url, self.body = url, body or {"text": "hi"}
        self.headers = {"authorization": f"Bearer {token}"} if token else {}
        self.answers: Counter[int] = Counter()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]

    def _run(self) -> None:
        with httpx.Client(headers=self.headers, timeout=30) as client:
            while not self._stop.is_set():
                try:
                    self.answers[client.post(self.url, json=self.body).status_code] += 1
                except httpx.HTTPError:
                    self.answers[0] += 1
                    time.sleep(0.05)  # nothing listening: do not spin

    @property
    def failed(self) -> int:
        return sum(n for status, n in self.answers.items() if status != 200)

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(30)


def record(gateway: str, scenario: str, load: Load, **extra: object) -> None:
    RESULTS.append(
        {"gateway": gateway, "scenario": scenario, "answers": {str(k): v for k, v in sorted(load.answers.items())}, **extra}
    )


@pytest.fixture(scope="module", autouse=True)
def write_results() -> Iterator[None]:
    yield
    folder = ROOT / "test-artifacts"
    folder.mkdir(exist_ok=True)
    (folder / "chaos.json").write_text(json.dumps(RESULTS, indent=1) + "\n")


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
            started[gateway] = Chaos(gateway, platform, "")  # stopped in `finally` even if what follows fails
            with platform.api() as api:
                deploy(api, "quiet-public", public=True)
                deploy(api, "quiet-private", public=False)
                started[gateway].invoke = api.post("/api/v1/tokens", json={"name": "app", "scopes": ["invoke"]}).json()["token"]
        for c in started.values():
            with c.platform.api() as api:
                wait_for(lambda: ready(api, "quiet-public", 1) and ready(api, "quiet-private", 1), what="the quiet deployments")
        # The burst: 16 concurrent calls to each quiet deployment, then silence until the checks.
        with ThreadPoolExecutor(64) as pool:
            for c in started.values():
                for name, token in (("quiet-public", None), ("quiet-private", c.invoke)):
                    statuses = list(pool.map(call, [f"{c.platform.url}/run/{name}/predict"] * 16, [token] * 16))
                    assert statuses == [200] * 16, (c.gateway, name, statuses)
                c.burst_at = time.monotonic()
        yield started
    finally:
        for c in started.values():
            stop_process(c.platform.proc)
            stop_replicas(c.platform.data_dir)


def _check_idle(chaos: dict[str, Chaos], quiet_for: float) -> None:
    for c in chaos.values():
        wait = c.burst_at + quiet_for - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        for name, token in (("quiet-public", None), ("quiet-private", c.invoke)):
            statuses = [call(f"{c.platform.url}/run/{name}/predict", token) for _ in range(20)]
            c.idle_results[f"{name} after {quiet_for:g} s"] = statuses
            RESULTS.append(
                {
                    "gateway": c.gateway,
                    "scenario": f"{name}: 20 calls after {quiet_for:g} quiet s",
                    "answers": {str(k): v for k, v in sorted(Counter(statuses).items())},
                }
            )
            assert statuses == [200] * 20, (c.gateway, name, quiet_for, statuses)
        c.burst_at = time.monotonic()  # the next check's quiet spell starts now


def test_after_35_quiet_seconds_every_call_is_answered(chaos):
    _check_idle(chaos, IDLE_CHECKS_S[0])


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
        most = 0
        with Load(f"{c.platform.url}/run/big/predict", threads=24, body={"text": "x" * 100, "times": 100}):
            deadline = time.monotonic() + 6
            while time.monotonic() < deadline:
                most = max(most, len(replica_processes(c.platform.data_dir)))
                time.sleep(0.1)
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
        kills = 0
        with Load(f"{c.platform.url}/run/victim/predict") as load:
            for _ in range(3):
                time.sleep(2)
                replicas = [r for r in api.get("/api/v1/deployments/victim/replicas").json()["replicas"] if r["state"] == "ready"]
                if len(replicas) == 2:
                    os.kill(replicas[0]["pid"], signal.SIGKILL)
                    kills += 1
                wait_for(lambda: ready(api, "victim", 2), what="the replacement")
        # A request in flight on a killed replica cannot be retried (it may have run): at most the
        # 4 concurrent callers' requests per kill fail; everything else is answered.
        assert kills >= 2 and load.answers[200] > 50, load.answers
        assert load.failed <= 4 * kills, load.answers
        record(gateway, "kill -9 a replica every 2 s (3 times), 4 callers", load, kills=kills)
        assert api.delete("/api/v1/deployments/victim").status_code == 202


@pytest.mark.parametrize("gateway", GATEWAYS)
def test_sigterm_of_a_replica_under_load_drains_without_a_failed_request(chaos, gateway):
    c = chaos[gateway]
    with c.platform.api() as api:
        deploy(api, "drained", public=True, min_replicas=2)
        wait_for(lambda: ready(api, "drained", 2), what="two replicas")
        with Load(f"{c.platform.url}/run/drained/predict") as load:
            time.sleep(1)
            pid = api.get("/api/v1/deployments/drained/replicas").json()["replicas"][0]["pid"]
            os.kill(pid, signal.SIGTERM)
            wait_for(
                lambda: pid not in [r["pid"] for r in api.get("/api/v1/deployments/drained/replicas").json()["replicas"]],
                what="the drained replica to go",
            )
            wait_for(lambda: ready(api, "drained", 2), what="the replacement")
        assert load.answers[200] > 50 and set(load.answers) == {200}, load.answers
        record(gateway, "SIGTERM a replica (it drains), 4 callers", load)
        assert api.delete("/api/v1/deployments/drained").status_code == 202


@pytest.mark.parametrize("gateway", GATEWAYS)
def test_a_rolling_update_and_a_rollback_under_load_fail_no_request(chaos, gateway):
    c = chaos[gateway]
    with c.platform.api() as api:
        deploy(api, "rolling", public=False)
        wait_for(lambda: ready(api, "rolling", 1), what="rolling")
        with Load(f"{c.platform.url}/run/rolling/predict", c.invoke) as load:
            assert api.patch("/api/v1/deployments/rolling", json={"source": ECHO_V2}).status_code == 200
            wait_for(
                lambda: api.get("/api/v1/deployments/rolling").json()["revision"] == 2 and ready(api, "rolling", 1),
                what="revision 2",
            )
            wait_for(
                lambda: len(api.get("/api/v1/deployments/rolling/replicas").json()["replicas"]) == 1, what="the old replica to go"
            )
            assert api.post("/api/v1/deployments/rolling/rollback", json={}).status_code == 200
            wait_for(
                lambda: api.get("/api/v1/deployments/rolling").json()["revision"] == 3 and ready(api, "rolling", 1),
                what="the rollback",
            )
            wait_for(
                lambda: len(api.get("/api/v1/deployments/rolling/replicas").json()["replicas"]) == 1, what="the old replica to go"
            )
        assert load.answers[200] > 20 and set(load.answers) == {200}, load.answers
        record(gateway, "rolling update, then rollback, 4 callers (private)", load)
        assert api.delete("/api/v1/deployments/rolling").status_code == 202


def test_after_two_quiet_minutes_every_call_is_answered(chaos):
    _check_idle(chaos, IDLE_CHECKS_S[1])


def test_sigterm_of_the_platform_leaves_no_process(chaos):
    for c in chaos.values():
        data = c.platform.data_dir
        assert platform_processes(data), "the platform started processes"
        assert stop_process(c.platform.proc) == 0
        assert platform_processes(data) == [], c.gateway


@pytest.mark.parametrize("gateway", GATEWAYS)
def test_kill_9_of_the_control_plane_under_load_then_restart_then_sigterm(tmp_path: Path, gateway: str):
    """kill -9 of `fermion up` under load while one replica is still starting. Replicas outlive it;
    the next `fermion up` adopts them (same PIDs), reaps nothing it knows, answers every call once
    it is up, and its SIGTERM leaves no process behind."""
    data = tmp_path / "data"
    platform = start_platform(data, "--gateway", gateway)
    try:
        with platform.api() as api:
            deploy(api, "echo", public=True, min_replicas=2)
            wait_for(lambda: ready(api, "echo", 2), what="two replicas")
            pids = sorted(r["pid"] for r in api.get("/api/v1/deployments/echo/replicas").json()["replicas"])
        port = int(platform.url.rsplit(":", 1)[1])
        with Load(f"{platform.url}/run/echo/predict") as during:
            time.sleep(1)
            with platform.api() as api:
                assert api.patch("/api/v1/deployments/echo", json={"min_replicas": 3}).status_code == 200
            platform.proc.kill()  # maybe mid-start of the third replica
            platform.proc.wait()
            killed_at = time.monotonic()
            assert set(pids) <= set(replica_processes(data))  # replicas outlive a killed control plane
            platform = start_platform(data, "--gateway", gateway, port=port)
            back_after = time.monotonic() - killed_at
            with platform.api() as api:
                wait_for(lambda: ready(api, "echo", 3), what="adoption and the third replica")
                now = sorted(r["pid"] for r in api.get("/api/v1/deployments/echo/replicas").json()["replicas"])
        assert set(pids) <= set(now) and len(now) == 3
        assert len(replica_processes(data)) == 3  # nothing runs that the platform does not know
        record(
            gateway,
            "kill -9 of fermion up under load, restart (calls during the outage)",
            during,
            restarted_after_s=round(back_after, 1),
        )
        with Load(f"{platform.url}/run/echo/predict") as after:
            time.sleep(2)
        assert after.answers[200] > 20 and set(after.answers) == {200}, after.answers
        record(gateway, "after the restart, 4 callers for 2 s", after)
        assert stop_process(platform.proc) == 0
        assert platform_processes(data) == []
    finally:
        stop_process(platform.proc)
        stop_replicas(data)


def test_a_postgresql_restart_under_load_fails_no_call_and_the_api_comes_back(tmp_path: Path, pg_url: str):
    """`fermion up --db postgresql://…` while its database restarts: calls through the gateway do not
    need the database (routes and verified tokens are in memory), and the API answers again once
    PostgreSQL is back, without a restart of the platform."""
    import pg

    data = tmp_path / "data"
    platform = start_platform(data, "--db", pg_url, "--gateway", "python")
    try:
        with platform.api() as api:
            deploy(api, "public", public=True)
            deploy(api, "private", public=False)
            token = api.post("/api/v1/tokens", json={"name": "app", "scopes": ["invoke"]}).json()["token"]
            wait_for(lambda: ready(api, "public", 1) and ready(api, "private", 1), what="both deployments")
            with (
                Load(f"{platform.url}/run/public/predict", threads=2) as public,
                Load(f"{platform.url}/run/private/predict", token, threads=2) as private,
            ):
                time.sleep(1)
                started = time.monotonic()
                pg.restart()
                restarted_in = time.monotonic() - started
                wait_for(lambda: api.get("/api/v1/deployments").status_code == 200, timeout=30, what="the API after the restart")
                api_back_in = time.monotonic() - started
                time.sleep(6)  # past the token cache's 5 s: private calls verify against the database again
            assert api.post("/api/v1/deployments", json={"name": "after", "source": ECHO, "public": True}).status_code == 201
        for name, load in (("public", public), ("private", private)):
            assert load.answers[200] > 50 and set(load.answers) == {200}, (name, load.answers)
            record(
                "python",
                f"PostgreSQL restart under load ({name} deployment, 2 callers)",
                load,
                restart_s=round(restarted_in, 1),
                api_back_after_s=round(api_back_in, 1),
            )
    finally:
        stop_process(platform.proc)
        stop_replicas(data)


STATES = str(ROOT / "tests" / "apps" / "chaos_states.py")


def _busy_platform(data: Path, port: int = 0) -> tuple[RunningPlatform, list[threading.Thread]]:
    """A platform with a replica starting, one crash-looping, one mid-request and a training job
    running (each kind of process it starts, in each awkward state)."""
    platform = start_platform(data, "--graceful-timeout", "3", port=port)
    try:
        return platform, _make_busy(platform)
    except BaseException:  # the caller never gets this platform to stop: stop it here
        stop_process(platform.proc)
        stop_replicas(data)
        raise


def _make_busy(platform: RunningPlatform) -> list[threading.Thread]:
    with platform.api() as api:
        for name, cls in (("slow", "Slow"), ("starting", "SlowStart"), ("crashing", "CrashLoop")):
            answer = api.post("/api/v1/deployments", json={"name": name, "source": f"{STATES}:{cls}", "public": True})
            assert answer.status_code in (201, 409), answer.text  # 409: there already, after a restart
        if not api.get("/api/v1/datasets").json().get("datasets"):
            assert api.post("/api/v1/datasets/samples", json={"source": "sample:iris"}).status_code == 201
        job = api.post("/api/v1/trainings", json={"dataset": "iris@1", "budget_s": 120, "seed": 1})
        assert job.status_code == 202, job.text
        wait_for(lambda: ready(api, "slow", 1), what="the slow deployment")
        wait_for(lambda: api.get(f"/api/v1/trainings/{job.json()['id']}").json()["status"] == "running", what="the training job")
        wait_for(
            lambda: any(
                e["kind"] in ("ReplicaExited", "CrashLoop")
                for e in api.get("/api/v1/deployments/crashing/events").json()["events"]
            ),
            what="a crash",
        )
    callers = [threading.Thread(target=call, args=(f"{platform.url}/run/slow/wait", None), daemon=True)]
    for caller in callers:
        caller.start()
    time.sleep(0.5)  # the call is on the replica now
    return callers


def test_stopping_the_platform_in_any_state_leaves_no_process(tmp_path: Path):
    """SIGTERM with a replica starting, one crash-looping, one mid-request and a training job running:
    zero processes remain. Then the same after a kill -9 and a restart (which stops the training
    job the killed platform left running)."""
    data = tmp_path / "data"
    platform, callers = _busy_platform(data)
    try:
        assert stop_process(platform.proc) == 0
        assert platform_processes(data) == []
        platform, callers = _busy_platform(data)
        training = [p for p in platform_processes(data) if b"train" in Path(f"/proc/{p}/cmdline").read_bytes()]
        assert training, "a training process runs"
        platform.proc.kill()
        platform.proc.wait()
        platform = start_platform(data, "--graceful-timeout", "3", port=int(platform.url.rsplit(":", 1)[1]))
        wait_for(lambda: not set(training) & set(platform_processes(data)), timeout=10, what="the leftover training job to stop")
        assert stop_process(platform.proc) == 0
        assert platform_processes(data) == []
    finally:
        stop_process(platform.proc)
        stop_replicas(data)
        for caller in callers:
            caller.join(40)
