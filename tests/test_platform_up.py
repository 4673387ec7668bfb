"""`fermion up` end to end, as its users meet it: real processes, real HTTP, the REST API and the gateway.

create → call through the gateway → scale 1→3 → kill -9 a replica (replaced, calls keep working)
→ roll out a new revision under load with no failed request → roll back → kill -9 the control
plane and start it again (nothing lost, replicas adopted) → SIGTERM stops everything cleanly.
"""

from __future__ import annotations

import os
import shutil
import signal
import stat
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from support import EXAMPLES, ROOT, running_platform, start_platform, stop_process, stop_replicas, wait_for

pytestmark = pytest.mark.slow

ECHO = str(EXAMPLES / "echo.py")
ECHO_V2 = str(ROOT / "tests" / "apps" / "echo_v2.py")


def deployment(api: httpx.Client, name: str) -> dict:
    answer = api.get(f"/api/v1/deployments/{name}")
    assert answer.status_code == 200, answer.text
    return answer.json()


def ready(api: httpx.Client, name: str, replicas: int, revision: int | None = None) -> Callable[[], bool]:
    def check() -> bool:
        d = deployment(api, name)
        return d["status"] == "ready" and d["replicas"]["ready"] == replicas and (revision is None or d["revision"] == revision)

    return check


class Load:
    """Calls the deployment through the gateway in a loop on a few threads, counting answers."""

    def __init__(self, url: str, token: str, threads: int = 3) -> None:
        self.url, self.token = url, token
        self.answers: Counter[str] = Counter()
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]

    def _run(self) -> None:
        with httpx.Client(headers={"authorization": f"Bearer {self.token}"}, timeout=30) as client:
            while not self._stop.is_set():
                try:
                    answer = client.post(self.url, json={"text": "hi"})
                except httpx.HTTPError as exc:
                    self.failures.append(f"{type(exc).__name__}: {exc}")
                    continue
                if answer.status_code == 200:
                    self.answers[answer.json()["output"]] += 1
                else:
                    self.failures.append(f"{answer.status_code}: {answer.text}")

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(30)


GATEWAYS = [
    "python",
    pytest.param(
        "haproxy",
        marks=pytest.mark.skipif(shutil.which("haproxy") is None, reason="haproxy is not installed (.ci/run installs it)"),
    ),
]


@pytest.mark.parametrize("gateway", GATEWAYS)
def test_the_platform_end_to_end(tmp_path: Path, gateway: str) -> None:
    data = tmp_path / "data"
    platform = start_platform(data, "--gateway", gateway)
    assert ("HAProxy in front" in platform.log()) == (gateway == "haproxy")
    try:
        api = platform.api()
        # The admin token is saved for the CLI, readable only by its owner.
        assert stat.S_IMODE((data / "admin.token").stat().st_mode) == 0o600
        # Its output is a log, not a terminal: the banner says where the token is, never the token.
        assert platform.token not in platform.log() and f"saved to {data / 'admin.token'}" in platform.log()
        assert stat.S_IMODE(data.stat().st_mode) == 0o700

        # Create from a Service file; secrets given as env are never shown back.
        created = api.post("/api/v1/deployments", json={"name": "echo", "source": ECHO, "env": {"API_KEY": "s3cret-value"}})
        assert created.status_code == 201, created.text
        assert created.json()["env"] == {"API_KEY": "***"}
        assert created.json()["url"] == f"{platform.url}/run/echo"
        wait_for(ready(api, "echo", 1), what="the first replica")
        call = api.post("/run/echo/predict", json={"text": "hi"})
        assert call.status_code == 200 and call.json() == {"output": "echo: hi"}

        # Streams pass through as they come: the first event arrives long before the last is made.
        assert (
            api.post(
                "/api/v1/deployments", json={"name": "stream", "source": str(EXAMPLES / "streaming.py"), "public": True}
            ).status_code
            == 201
        )
        wait_for(ready(api, "stream", 1), what="the streaming replica")
        started = time.monotonic()
        with httpx.stream("POST", f"{platform.url}/run/stream/count", json={"n": 3, "delay": 1.0}, timeout=30) as events:
            assert events.status_code == 200 and events.headers["content-type"].startswith("text/event-stream")
            lines = events.iter_lines()
            first = next(line for line in lines if line.startswith("data:"))
            first_after = time.monotonic() - started
            rest = [line for line in lines if line.startswith("data:")]
            last_after = time.monotonic() - started
        # Each number comes a second after the one before: a buffering proxy would deliver them together.
        assert (first, rest[:2]) == ("data: 1", ["data: 2", "data: 3"]) and last_after - first_after > 1.5, (
            first,
            rest,
            first_after,
            last_after,
        )
        assert api.delete("/api/v1/deployments/stream").status_code == 202

        # Tokens deny what they must: private by default (without a token, answered as an unknown name is, so a
        # stranger learns no names); invoke may call but not deploy.
        hidden = httpx.post(f"{platform.url}/run/echo/predict", json={"text": "hi"})
        unknown = httpx.post(f"{platform.url}/run/ohce/predict", json={"text": "hi"})
        assert hidden.status_code == unknown.status_code == 404
        assert hidden.json()["message"] == unknown.json()["message"].replace("'ohce'", "'echo'")
        assert hidden.headers["www-authenticate"] == 'Bearer realm="fermion"'
        made = api.post("/api/v1/tokens", json={"name": "app", "scopes": ["invoke"]})
        assert made.status_code == 201, made.text
        invoke = made.json()["token"]
        assert invoke.startswith("fmn_") and invoke not in api.get("/api/v1/tokens").text
        with platform.api(invoke) as as_app:
            assert as_app.post("/run/echo/predict", json={"text": "x"}).status_code == 200
            denied = as_app.post("/api/v1/deployments", json={"name": "other", "source": ECHO})
            assert denied.status_code == 403 and "deploy" in denied.json()["message"]
            assert as_app.get("/api/v1/tokens").status_code == 403
            assert as_app.get("/api/v1/deployments").status_code == 200
        assert api.delete("/api/v1/tokens/app").status_code == 200
        with platform.api(invoke) as as_app:
            assert as_app.post("/run/echo/predict", json={"text": "x"}).status_code == 404  # revoked: as a stranger
            assert as_app.get("/api/v1/deployments").status_code == 401
        with platform.api("fmn_not-a-real-token") as stranger:
            assert stranger.get("/api/v1/deployments").status_code == 401

        # Bad input: an unknown deployment lists the known ones to a token; the gateway names none (it says how to
        # find them); a source that does not load → 422 with the reason.
        missing = api.get("/api/v1/deployments/ecko")
        assert missing.status_code == 404 and "'echo'" in missing.json()["message"]
        unknown = api.post("/run/ecko/predict", json={}).json()["message"]
        assert "'echo'" not in unknown and "fermion ls" in unknown
        bad = api.post("/api/v1/deployments", json={"name": "broken", "source": "examples/nope.py"})
        assert bad.status_code == 422 and "no file" in bad.json()["message"], bad.text
        assert api.post("/api/v1/deployments", json={"name": "Bad Name", "source": ECHO}).status_code == 422
        assert api.post("/api/v1/deployments", json={"name": "echo", "source": ECHO}).status_code == 409

        # Scale 1 → 3.
        assert api.patch("/api/v1/deployments/echo", json={"min_replicas": 3, "max_replicas": 3}).status_code == 200
        wait_for(ready(api, "echo", 3), what="three replicas")
        replicas = api.get("/api/v1/deployments/echo/replicas").json()["replicas"]
        assert len(replicas) == 3 and all(r["state"] == "ready" for r in replicas)

        # Kill -9 one replica: it is replaced, and calls keep succeeding meanwhile.
        victim = replicas[0]
        with Load(f"{platform.url}/run/echo/predict", platform.token) as load:
            time.sleep(0.5)
            os.kill(victim["pid"], signal.SIGKILL)
            wait_for(
                lambda: victim["id"] not in {r["id"] for r in api.get("/api/v1/deployments/echo/replicas").json()["replicas"]},
                what="the dead replica's removal",
            )
            wait_for(ready(api, "echo", 3), what="the replacement replica")
            time.sleep(0.5)
        # A request already inside the killed process when it died cannot be saved (the gateway
        # never re-sends a request that may have run): at most one per client thread, each a 502,
        # or a closed connection where the answer had begun (HAProxy streams it on: too late for a
        # 502). Every other call must have succeeded.
        lost = ("502", "RemoteProtocolError")
        assert len(load.failures) <= len(load._threads) and all(f.startswith(lost) for f in load.failures), load.failures
        assert sum(load.answers.values()) > 50
        events = [e["kind"] for e in api.get("/api/v1/deployments/echo/events").json()["events"]]
        assert "ReplicaExited" in events

        # A rolling update under load: no failed request, and afterwards only the new version answers.
        with Load(f"{platform.url}/run/echo/predict", platform.token) as load:
            time.sleep(0.3)
            updated = api.patch("/api/v1/deployments/echo", json={"source": ECHO_V2, "note": "v2"})
            assert updated.status_code == 200 and updated.json()["revision"] == 2
            wait_for(ready(api, "echo", 3, revision=2), what="revision 2")
            wait_for(
                lambda: len(api.get("/api/v1/deployments/echo/replicas").json()["replicas"]) == 3, what="old replicas to drain"
            )
            time.sleep(0.5)
        assert load.failures == [], load.failures[:5]
        assert load.answers["echo: hi"] > 0 and load.answers["echo v2: hi"] > 0
        assert api.post("/run/echo/predict", json={"text": "hi"}).json() == {"output": "echo v2: hi"}

        # A failing new version never takes traffic; the old one keeps serving.
        broken = api.patch(
            "/api/v1/deployments/echo",
            json={"source": str(ROOT / "tests" / "apps" / "behaviour.py"), "env": {"FERMION_TEST_SETUP_FAIL": "1"}},
        )
        assert broken.status_code == 200, broken.text
        wait_for(
            lambda: "CrashLoop" in {e["kind"] for e in api.get("/api/v1/deployments/echo/events").json()["events"]},
            what="the crash loop to be recorded",
        )
        assert api.post("/run/echo/predict", json={"text": "hi"}).json() == {"output": "echo v2: hi"}
        crash = [e for e in api.get("/api/v1/deployments/echo/events").json()["events"] if e["kind"] == "CrashLoop"][-1]
        assert "exited with code 3" in crash["message"]

        # Roll back to revision 2 (as revision 4).
        back = api.post("/api/v1/deployments/echo/rollback", json={"revision": 2})
        assert back.status_code == 200 and back.json()["revision"] == 4, back.text
        wait_for(ready(api, "echo", 3, revision=4), what="the rollback")
        assert [r["number"] for r in api.get("/api/v1/deployments/echo/revisions").json()["revisions"]] == [1, 2, 3, 4]

        # The audit log has every change, and never a secret.
        audit = api.get("/api/v1/audit").json()["entries"]
        actions = [a["action"] for a in audit]
        assert {"deployment.create", "deployment.update", "deployment.rollback", "token.create", "token.revoke"} <= set(actions)
        assert "s3cret-value" not in str(audit) and invoke not in str(audit)
        assert "s3cret-value" not in platform.log()

        # Kill -9 the control plane; start it again: nothing lost, replicas adopted, calls work.
        pids_before = {r["pid"] for r in api.get("/api/v1/deployments/echo/replicas").json()["replicas"]}
        tokens_before = api.get("/api/v1/tokens").json()["tokens"]
        events_before = api.get("/api/v1/events", params={"limit": 1000}).json()["events"]
        api.close()
        port = int(platform.url.rsplit(":", 1)[1])
        platform.proc.kill()
        platform.proc.wait()
        platform = start_platform(data, "--gateway", gateway, port=port)
        api = platform.api()
        assert platform.token not in platform.log()  # not printed again
        assert deployment(api, "echo")["revision"] == 4
        assert api.get("/api/v1/tokens").json()["tokens"] == tokens_before
        events_after = api.get("/api/v1/events", params={"limit": 1000}).json()["events"]
        assert events_after[: len(events_before)] == events_before
        wait_for(ready(api, "echo", 3), what="adoption")
        assert {r["pid"] for r in api.get("/api/v1/deployments/echo/replicas").json()["replicas"]} == pids_before
        assert api.post("/run/echo/predict", json={"text": "hi"}).json() == {"output": "echo v2: hi"}

        # Delete: replicas stop, the name is free again, the gateway says so.
        assert api.delete("/api/v1/deployments/echo").status_code == 202
        wait_for(lambda: api.get("/api/v1/deployments/echo").status_code == 404, what="the deletion")
        wait_for(lambda: not any(_alive(pid) for pid in pids_before), what="the replicas to stop")
        wait_for(
            lambda: 'deployment="echo"' not in api.get("/metrics").text,
            timeout=30,
            what="the deleted deployment's metrics to go",
        )

        # SIGTERM: the platform stops its replicas and exits 0.
        api.post("/api/v1/deployments", json={"name": "last", "source": ECHO, "public": True})
        wait_for(ready(api, "last", 1), what="the last deployment")
        last_pid = api.get("/api/v1/deployments/last/replicas").json()["replicas"][0]["pid"]
        assert httpx.post(f"{platform.url}/run/last/predict", json={"text": "open"}).status_code == 200  # public: no token
        api.close()
        assert stop_process(platform.proc) == 0
        assert not _alive(last_pid)
        assert not (data / "up.json").exists()
    finally:
        stop_process(platform.proc)
        stop_replicas(data)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").exists() and Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] != "Z"


def test_up_refuses_a_taken_port_and_a_second_instance(tmp_path: Path) -> None:
    import subprocess
    import sys

    with running_platform(tmp_path / "a") as platform:
        port = platform.url.rsplit(":", 1)[1]
        taken = subprocess.run(
            [sys.executable, "-m", "fermion", "up", "--data-dir", str(tmp_path / "b"), "--port", port],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=ROOT,
        )
        assert taken.returncode == 2 and "already in use" in taken.stderr
        twice = subprocess.run(
            [sys.executable, "-m", "fermion", "up", "--data-dir", str(tmp_path / "a"), "--port", "0"],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=ROOT,
        )
        assert twice.returncode == 2 and "already runs" in twice.stderr
        assert platform.proc.poll() is None


def test_up_refuses_an_unusable_data_dir(tmp_path: Path) -> None:
    import subprocess
    import sys

    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    done = subprocess.run(
        [sys.executable, "-m", "fermion", "up", "--data-dir", str(blocker / "data"), "--port", "0"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert done.returncode == 2 and "cannot use data dir" in done.stderr and done.stderr.count("\n") == 1


def test_make_run_brings_up_the_three_demo_deployments(tmp_path: Path) -> None:
    """What `make run` runs: examples/platform_demo.py starts `fermion up` with echo, MiniLM and a freshly trained iris model."""
    import subprocess
    import sys

    from support import free_port

    port = free_port()
    log_path = tmp_path / "demo.log"
    env = {
        **os.environ,
        "FERMION_HOME": str(tmp_path / "home"),
        "FERMION_PORT": str(port),
        "HF_HUB_OFFLINE": "1",
        "PYTHONUNBUFFERED": "1",
    }
    with open(log_path, "w") as log:
        demo = subprocess.Popen(
            [sys.executable, str(EXAMPLES / "platform_demo.py")],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            text=True,
            cwd=ROOT,
        )
    try:
        wait_for(lambda: "The platform is up" in log_path.read_text() or demo.poll() is not None, timeout=300, what="make run")
        output = log_path.read_text()
        assert demo.poll() is None, output
        token = (tmp_path / "home" / "admin.token").read_text().strip()
        assert token not in output and "admin.token" in output  # its output is a log: the token stays in its file
        base = f"http://127.0.0.1:{port}"
        assert httpx.post(f"{base}/run/echo/predict", json={"text": "hello"}).json() == {"output": "echo: hello"}
        assert httpx.post(f"{base}/run/embeddings/embed", json={"text": "hello"}).status_code == 404  # private: hidden
        vector = httpx.post(f"{base}/run/embeddings/embed", json={"text": "hello"}, headers={"authorization": f"Bearer {token}"})
        assert vector.status_code == 200 and len(vector.json()) == 384
        flower = {"sepal_length_cm": 6.1, "sepal_width_cm": 2.8, "petal_length_cm": 4.7, "petal_width_cm": 1.2}
        assert httpx.post(f"{base}/run/iris/predict", json=flower).json() == "versicolor"
        with httpx.Client(base_url=base, headers={"authorization": f"Bearer {token}"}) as api:
            assert [m["ref"] for m in api.get("/api/v1/models").json()["models"]] == ["iris@1"]
            pids = [
                r["pid"]
                for name in ("echo", "embeddings", "iris")
                for r in api.get(f"/api/v1/deployments/{name}/replicas").json()["replicas"]
            ]
        assert stop_process(demo) == 0
        assert not any(_alive(pid) for pid in pids)
    finally:
        stop_process(demo)
        stop_replicas(tmp_path / "home")


def test_the_platform_on_postgresql_survives_a_kill(tmp_path: Path, pg_url: str) -> None:
    """`fermion up --db postgresql://...`: the same platform, its state in PostgreSQL; kill -9 loses nothing."""
    data = tmp_path / "data"
    platform = start_platform(data, "--db", pg_url)
    try:
        with platform.api() as api:
            info = api.get("/api/v1/info").json()
            assert info["database"].startswith("postgresql+psycopg://") and "fermion:***@" in info["database"]
            assert api.post("/api/v1/deployments", json={"name": "echo", "source": ECHO, "public": True}).status_code == 201
            wait_for(ready(api, "echo", 1), what="the replica")
            made = api.post("/api/v1/tokens", json={"name": "app", "scopes": ["invoke"]}).json()
            pid = api.get("/api/v1/deployments/echo/replicas").json()["replicas"][0]["pid"]
        assert "fermion:fermion@" not in platform.log()  # the password is never printed
        port = int(platform.url.rsplit(":", 1)[1])
        platform.proc.kill()
        platform.proc.wait()
        platform = start_platform(data, "--db", pg_url, port=port)
        with platform.api() as api:
            wait_for(ready(api, "echo", 1), what="adoption")
            assert api.get("/api/v1/deployments/echo/replicas").json()["replicas"][0]["pid"] == pid
            assert [e["kind"] for e in api.get("/api/v1/deployments/echo/events").json()["events"]][:2] == [
                "Created",
                "ReplicaReady",
            ]
        with platform.api(made["token"]) as as_app:
            assert as_app.post("/run/echo/predict", json={"text": "pg"}).json() == {"output": "echo: pg"}
            assert as_app.get("/api/v1/deployments").status_code == 200
    finally:
        stop_process(platform.proc)
        stop_replicas(data)
