"""What the web console needs from the control plane: whoami, the metrics history, started_at and
restarts, and the console's own files at `/` and `/console/` (docs/platform-api.md, last section)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from starlette.testclient import TestClient
from support import EXAMPLES, ROOT, running_platform, wait_for

from fermion.platform.api import console as api_console
from fermion.platform.api.console import console_file

ECHO = str(EXAMPLES / "echo.py")


# Fast: the control plane's ASGI app in this process, with no replica and no lifespan.


@pytest.fixture
def plane(tmp_path: Path) -> Iterator[tuple[TestClient, str]]:
    from fermion.platform.backends.local import LocalBackend
    from fermion.platform.controlplane import ControlPlane
    from fermion.platform.store.database import Store

    store = Store.open(tmp_path)
    _, token = store.create_token("admin", ["admin"])
    try:
        yield TestClient(ControlPlane(store, LocalBackend(tmp_path), metrics_interval_s=1.0)), token
    finally:
        store.close()


def test_console_files_never_leave_the_folder(tmp_path: Path) -> None:
    root = tmp_path / "console"
    (root / "i18n").mkdir(parents=True)
    (root / "app.js").write_text("1")
    (root / "i18n" / "en.json").write_text("{}")
    (tmp_path / "secret.txt").write_text("no")
    (root / "link.txt").symlink_to(tmp_path / "secret.txt")
    assert console_file("app.js", root) == (root / "app.js").resolve()
    assert console_file("i18n/en.json", root) == (root / "i18n" / "en.json").resolve()
    for bad in (
        "../secret.txt",
        "i18n/../../secret.txt",
        "/etc/passwd",
        str(tmp_path / "secret.txt"),
        "..\\secret.txt",
        "link.txt",
        "i18n",
        "",
        "missing.js",
        "app.js\x00.png",
    ):
        assert console_file(bad, root) is None, bad


def test_whoami_the_page_and_the_files(plane, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    client, token = plane
    me = client.get("/api/v1/whoami", headers={"authorization": f"Bearer {token}"})
    assert me.status_code == 200 and me.json() == {
        "name": "admin",
        "scopes": ["admin"],
        "expires_at": None,
        "deployments": [],
        "rate": None,
    }
    assert client.get("/api/v1/whoami").status_code == 401

    # Without the console's files, / still answers with a page that says so.
    monkeypatch.setattr(api_console, "CONSOLE_DIR", tmp_path / "nothing")
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html") and "not built" in page.text
    assert client.get("/console/app.js").status_code == 404

    console = tmp_path / "console"
    (console / "i18n").mkdir(parents=True)
    (console / "index.html").write_text("<!doctype html><title>console</title>")
    (console / "app.js").write_text("export {}")
    (console / "style.css").write_text("body {}")
    (console / "i18n" / "en.json").write_text("{}")
    (console / "logo.svg").write_text("<svg/>")
    monkeypatch.setattr(api_console, "CONSOLE_DIR", console)
    page = client.get("/")
    assert page.status_code == 200 and page.text == "<!doctype html><title>console</title>"
    assert page.headers["content-type"] == "text/html; charset=utf-8" and page.headers["cache-control"] == "no-cache"
    for path, kind in [
        ("app.js", "text/javascript"),
        ("style.css", "text/css"),
        ("i18n/en.json", "application/json"),
        ("logo.svg", "image/svg+xml"),
    ]:
        answer = client.get(f"/console/{path}")
        assert answer.status_code == 200 and answer.headers["content-type"].split(";")[0] == kind, (path, answer.headers)
    assert client.get("/console/nope.js").status_code == 404
    assert client.get("/console/%2e%2e/%2e%2e/pyproject.toml").status_code == 404
    assert client.get("/console/..%2f..%2fpyproject.toml").status_code == 404


def test_metrics_routes_validate_and_are_documented(plane) -> None:
    client, token = plane
    auth = {"authorization": f"Bearer {token}"}
    missing = client.get("/api/v1/deployments/ech/metrics", headers=auth)
    assert missing.status_code == 404 and missing.json()["error"] == "not_found"
    assert client.get("/api/v1/metrics", headers=auth).json() == {"deployments": {}}
    for minutes in (0, 61):
        assert client.get("/api/v1/metrics", params={"minutes": minutes}, headers=auth).status_code == 422
    schema = client.get("/api/v1/openapi.json").json()
    assert {"/api/v1/whoami", "/api/v1/metrics", "/api/v1/deployments/{name}/metrics"} <= set(schema["paths"])
    assert "/" not in schema["paths"]
    assert {"MetricsPoint", "DeploymentMetrics", "MetricsOverview", "WhoAmI"} <= set(schema["components"]["schemas"])
    assert "restarts" in schema["components"]["schemas"]["DeploymentView"]["properties"]
    assert "started_at" in schema["components"]["schemas"]["ReplicaView"]["properties"]


# Slow: a real `fermion up`, a replica, calls through the gateway.


def raw_get(url: str, path: str) -> int:
    """The status of GET `path` sent as is (clients remove '..' segments before sending)."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
        head = sock.recv(4096).decode(errors="replace")
    return int(head.split(" ", 2)[1])


GATEWAYS = [
    "python",
    pytest.param(
        "haproxy",
        marks=pytest.mark.skipif(shutil.which("haproxy") is None, reason="haproxy is not installed (.ci/run installs it)"),
    ),
]


@pytest.mark.slow
@pytest.mark.parametrize("gateway", GATEWAYS)
def test_the_console_api_on_a_running_platform(tmp_path: Path, gateway: str) -> None:
    data = tmp_path / "data"
    with running_platform(data, "--gateway", gateway, env={"FERMION_METRICS_INTERVAL_S": "1"}) as platform:
        api = platform.api()
        assert "Console " in platform.log()
        invoke = api.post("/api/v1/tokens", json={"name": "app", "scopes": ["invoke"], "expires_in_s": 3600}).json()
        with platform.api(invoke["token"]) as as_app:
            me = as_app.get("/api/v1/whoami").json()
            assert me["name"] == "app" and me["scopes"] == ["invoke"] and me["expires_at"] == invoke["expires_at"]
        assert api.get("/api/v1/whoami").json() == {
            "name": "admin",
            "scopes": ["admin"],
            "expires_at": None,
            "deployments": [],
            "rate": None,
        }

        created = api.post("/api/v1/deployments", json={"name": "echo", "source": ECHO, "public": True})
        assert created.status_code == 201 and created.json()["restarts"] == 0, created.text
        wait_for(lambda: api.get("/api/v1/deployments/echo").json()["status"] == "ready", what="the replica")
        [replica] = api.get("/api/v1/deployments/echo/replicas").json()["replicas"]
        started = replica["started_at"]
        assert started.endswith("+00:00") and -5 < time.time() - _epoch(started) < 120, started

        with httpx.Client(base_url=platform.url, timeout=30) as client:
            for _ in range(20):
                assert client.post("/run/echo/predict", json={"text": "hi"}).status_code == 200

        def seen() -> bool:
            points = api.get("/api/v1/deployments/echo/metrics", params={"minutes": 5}).json()["points"]
            return any(p["rps"] > 0 and p["p99_ms"] is not None for p in points)

        wait_for(seen, timeout=15, what="a metrics point with the calls")
        history = api.get("/api/v1/deployments/echo/metrics", params={"minutes": 5}).json()
        assert history["interval_s"] == 1 and isinstance(history["interval_s"], int)
        point = history["points"][-1]
        assert set(point) == {"t", "rps", "errors_per_s", "p50_ms", "p95_ms", "p99_ms", "in_flight", "ready", "desired"}
        assert point["ready"] == 1 and point["desired"] == 1 and point["errors_per_s"] == 0
        overview = api.get("/api/v1/metrics", params={"minutes": 5}).json()["deployments"]
        assert overview["echo"]["rps"] > 0 and overview["echo"]["p99_ms"] is not None and overview["echo"]["errors_per_s"] == 0
        missing = api.get("/api/v1/deployments/ech/metrics")
        assert missing.status_code == 404 and "echo" in missing.json()["message"]

        # kill -9 the replica: it is replaced, and the deployment counts one restart.
        os.kill(replica["pid"], signal.SIGKILL)
        wait_for(lambda: api.get("/api/v1/deployments/echo").json()["restarts"] == 1, what="the restart to be counted")
        wait_for(lambda: api.get("/api/v1/deployments/echo").json()["status"] == "ready", what="the replacement")
        assert api.get("/api/v1/deployments").json()["deployments"][0]["restarts"] == 1

        page = httpx.get(platform.url + "/")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert raw_get(platform.url, "/console/../pyproject.toml") == 404
        assert raw_get(platform.url, "/console/%2e%2e/pyproject.toml") == 404
        assert (ROOT / "pyproject.toml").exists()
        api.close()


def _epoch(iso: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(iso).timestamp()
