"""The reconciler with a real store, real replica processes and the gateway's route table:
create → serve → scale → self-heal → roll out a new revision → survive a restart → delete."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from support import EXAMPLES, ROOT

from fermion.platform.gateway import RouteTable
from fermion.platform.local import LocalBackend
from fermion.platform.reconciler import Reconciler
from fermion.platform.store import Store

APP = ROOT / "tests" / "apps" / "behaviour.py"


@pytest.fixture()
def plane(tmp_path: Path) -> Iterator[tuple[Store, Reconciler, RouteTable]]:
    store = Store.open(tmp_path)
    routes = RouteTable()
    reconciler = Reconciler(store, LocalBackend(tmp_path), routes, grace=10)
    try:
        yield store, reconciler, routes
    finally:
        reconciler.stop_all()
        for handle in LocalBackend(tmp_path).list():  # replicas a failed test left behind
            LocalBackend(tmp_path).stop(handle, grace=5)
        store.close()


def settle(reconciler: Reconciler, condition: Callable[[], bool], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        reconciler.tick()
        if condition():
            return
        time.sleep(0.1)
    raise AssertionError("the platform did not get there in time")


def urls(routes: RouteTable, name: str) -> list[str]:
    route = routes.get(name)
    return [u.url for u in route.upstreams] if route else []


def test_create_serve_scale_heal_and_delete(plane):
    store, reconciler, routes = plane
    store.create_deployment("echo", str(EXAMPLES / "echo.py"), public=True)
    settle(reconciler, lambda: len(urls(routes, "echo")) == 1)
    assert httpx.post(urls(routes, "echo")[0] + "/predict", json={"text": "hi"}).json() == {"output": "echo: hi"}

    store.update_deployment("echo", min_replicas=2, max_replicas=2)
    settle(reconciler, lambda: len(urls(routes, "echo")) == 2)

    victim = reconciler.replicas["echo"][0]
    os.kill(victim.handle.data["pid"], signal.SIGKILL)
    settle(reconciler, lambda: len(urls(routes, "echo")) == 2 and victim.status.url not in urls(routes, "echo"))
    exited = [e for e in store.list_events("echo") if e.kind == "ReplicaExited"]
    assert exited and "exited with code -9" in exited[-1].message

    store.update_deployment("echo", min_replicas=1, max_replicas=1)
    settle(reconciler, lambda: len(urls(routes, "echo")) == 1)

    store.delete_deployment("echo")
    settle(reconciler, lambda: routes.get("echo") is None and "echo" not in reconciler.replicas)
    reconciler.wait_stopped()
    assert [d.name for d in store.list_deployments()] == []
    assert LocalBackend(Path(store.url.database).parent).list() == []


def test_a_new_revision_takes_traffic_only_once_ready_and_a_broken_one_never(plane, tmp_path):
    store, reconciler, routes = plane
    store.create_deployment("svc", str(EXAMPLES / "echo.py"), public=True)
    settle(reconciler, lambda: len(urls(routes, "svc")) == 1)
    first = urls(routes, "svc")[0]

    store.update_deployment("svc", source=str(EXAMPLES / "echo.py:Ech"))  # revision 2 cannot start
    settle(reconciler, lambda: any(e.kind == "CrashLoop" for e in store.list_events("svc")), timeout=30)
    assert urls(routes, "svc") == [first]  # the old revision kept serving
    crash = [e for e in store.list_events("svc") if e.kind in ("ReplicaExited", "CrashLoop")][-1]
    assert "code 2" in crash.message and "did you mean 'Echo'" in crash.message

    gate = tmp_path / "gate"
    store.update_deployment("svc", source=str(APP), env={"FERMION_TEST_GATE": str(gate)})  # revision 3: slow to be ready
    for _ in range(10):  # while revision 3 loads, revision 1 serves every request
        reconciler.tick()
        assert urls(routes, "svc") == [first]
        assert httpx.post(first + "/predict", json={"text": "x"}).status_code == 200
    gate.write_text("open")
    settle(reconciler, lambda: urls(routes, "svc") and urls(routes, "svc") != [first])
    assert httpx.get(urls(routes, "svc")[0] + "/whoami").status_code == 200  # the new revision's endpoint
    assert any(e.kind == "RolledOut" for e in store.list_events("svc"))


def test_a_restarted_control_plane_adopts_its_replicas(tmp_path: Path):
    store = Store.open(tmp_path)
    routes = RouteTable()
    first = Reconciler(store, LocalBackend(tmp_path), routes)
    store.create_deployment("echo", str(EXAMPLES / "echo.py"), public=True)
    settle(first, lambda: len(urls(routes, "echo")) == 1)
    url = urls(routes, "echo")[0]

    fresh_routes = RouteTable()  # a new control plane: new memory, same data dir
    second = Reconciler(Store.open(tmp_path), LocalBackend(tmp_path), fresh_routes, grace=10)
    try:
        assert second.adopt() == 1
        second.tick()
        assert urls(fresh_routes, "echo") == [url]  # the same replica, not a new one
    finally:
        second.stop_all()
        store.close()
