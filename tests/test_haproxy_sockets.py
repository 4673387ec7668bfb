"""HAProxy reaches local replicas through their Unix sockets (`fermion serve --unix-socket`), which a core proxies
about 1.5× as many calls through as TCP loopback (benchmarks/RESULTS.md, the gateway benchmark). A slot's address is
a symlink in HAProxy's folder that the control plane points at the serving replica's socket, so a rolling update
moves calls to the new replica without a reload and without a failed call."""

from __future__ import annotations

import os
import shutil
import threading
from pathlib import Path

import httpx
import pytest

from tests.support import EXAMPLES, running_platform, wait_for

pytestmark = pytest.mark.skipif(shutil.which("haproxy") is None, reason="haproxy is not installed (.ci/run installs it)")


def test_calls_go_through_the_replicas_socket_and_follow_a_rolling_update(tmp_path: Path) -> None:
    with running_platform(tmp_path / "data", "--gateway", "haproxy") as platform, platform.api() as api:
        made = api.post("/api/v1/deployments", json={"name": "echo", "source": str(EXAMPLES / "echo.py"), "public": True})
        assert made.status_code == 201, made.text
        wait_for(lambda: api.get("/api/v1/deployments/echo").json()["status"] == "ready", what="echo")
        links = platform.data_dir / "haproxy" / "links"

        def serving_socket() -> Path | None:
            replicas = api.get("/api/v1/deployments/echo/replicas").json()["replicas"]
            targets = {Path(os.readlink(link)) for link in links.iterdir() if not link.name.startswith(".")}
            found = [t for t in targets if any(t.parent.name == f"{r['id']}.run" for r in replicas if r["state"] == "ready")]
            return found[0] if len(found) == 1 else None

        wait_for(lambda: serving_socket() is not None, 30, "a slot linked to the replica's socket")
        first = serving_socket()
        assert first is not None and first.is_socket() and first.name == "http.sock"
        with httpx.Client(base_url=platform.url, timeout=30) as client:
            assert client.post("/run/echo/predict", json={"text": "hi"}).json() == {"output": "echo: hi"}
            failures: list[int] = []
            stop = threading.Event()

            def call_meanwhile() -> None:
                while not stop.is_set():
                    answer = client.post("/run/echo/predict", json={"text": "x"})
                    if answer.status_code != 200:
                        failures.append(answer.status_code)

            caller = threading.Thread(target=call_meanwhile)
            caller.start()
            try:
                rolled = api.patch("/api/v1/deployments/echo", json={"env": {"GREETING": "new"}})
                assert rolled.status_code == 200, rolled.text
                wait_for(lambda: (s := serving_socket()) is not None and s != first, 90, "the new replica's socket")
            finally:
                stop.set()
                caller.join()
            assert failures == []
            assert client.post("/run/echo/predict", json={"text": "hi"}).status_code == 200
