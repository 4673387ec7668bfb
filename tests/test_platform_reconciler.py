"""The reconciler with a real store, real replica processes and the gateway's route table:
create → serve → scale → self-heal → roll out a new revision → survive a restart → delete, and
autoscaling through a real gateway: up under load, back down, to zero and back on a request."""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from support import EXAMPLES, ROOT
from support import serve_asgi as serve

from fermion.platform.autoscaler import Autoscaler
from fermion.platform.backends.base import ReplicaHandle, ReplicaSpec, ReplicaState, ReplicaStatus
from fermion.platform.backends.local import LocalBackend
from fermion.platform.gateway.proxy import Gateway
from fermion.platform.gateway.routes import RouteTable
from fermion.platform.reconciler import Reconciler
from fermion.platform.store.database import Store

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


def test_a_new_revision_takes_traffic_only_once_ready_and_a_broken_one_never(plane, tmp_path_factory):
    store, reconciler, routes = plane
    store.create_deployment("svc", str(EXAMPLES / "echo.py"), public=True)
    settle(reconciler, lambda: len(urls(routes, "svc")) == 1)
    first = urls(routes, "svc")[0]

    store.update_deployment("svc", source=str(EXAMPLES / "echo.py:Ech"))  # revision 2 cannot start
    settle(reconciler, lambda: any(e.kind == "CrashLoop" for e in store.list_events("svc")), timeout=30)
    assert urls(routes, "svc") == [first]  # the old revision kept serving
    crash = [e for e in store.list_events("svc") if e.kind in ("ReplicaExited", "CrashLoop")][-1]
    assert "code 2" in crash.message and "did you mean 'Echo'" in crash.message

    gate = tmp_path_factory.mktemp("gate") / "gate"  # not in the data dir, which the sandbox hides from replicas
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


def test_what_the_reconciler_shows_of_a_crashing_deployment(plane):
    store, reconciler, routes = plane
    assert reconciler.counts("broken") == {"ready": 0, "starting": 0, "crashes": 0}  # not reconciled yet: no "desired"
    store.create_deployment("broken", str(EXAMPLES / "echo.py:Ech"), public=True)
    reconciler.tick()
    [view] = reconciler.replica_views("broken")
    assert view["state"] == "starting" and view["revision"] == 1 and view["pid"] and view["id"].startswith("broken-1-")
    settle(reconciler, lambda: any(e.kind == "ReplicaExited" for e in store.list_events("broken")), timeout=30)
    # No tick since the crash was seen, so there is no replica: the logs are the exited one's.
    assert reconciler.replica_views("broken") == []
    assert reconciler.counts("broken") == {"desired": 1, "ready": 0, "starting": 0, "crashes": 1}
    lines = reconciler.logs("broken")
    assert {rid for rid, _ in lines} == {view["id"]}
    assert any("did you mean 'Echo'" in line for _, line in lines)


# A backend that starts nothing: every replica is ready at once (for decisions, not processes).


@dataclass
class FakeBackend:
    name: str = "fake"
    started: list[ReplicaHandle] = field(default_factory=list)
    stopped: list[ReplicaHandle] = field(default_factory=list)

    def start(self, spec: ReplicaSpec) -> ReplicaHandle:
        handle = ReplicaHandle(spec.replica_id, self.name, spec.deployment, spec.revision, {"pid": len(self.started) + 1})
        self.started.append(handle)
        return handle

    def status(self, handle: ReplicaHandle) -> ReplicaStatus:
        return ReplicaStatus(ReplicaState.READY, f"http://fake/{handle.replica_id}")

    def stop(self, handle: ReplicaHandle, grace: float = 30.0, at_once: bool = False) -> None:
        self.stopped.append(handle)

    def list(self) -> list[ReplicaHandle]:
        return []

    def logs(self, handle: ReplicaHandle, lines: int = 100) -> list[str]:
        return [f"log of {handle.replica_id}"][-lines:]


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_scaled_events_only_when_the_autoscaler_changes_its_mind(tmp_path: Path):
    store, routes, clock, backend = Store.open(tmp_path), RouteTable(), FakeClock(), FakeBackend()
    autoscaler = Autoscaler(routes, clock=clock, scale_down_delay_s=5, window_s=1)
    reconciler = Reconciler(store, backend, routes, clock=clock, autoscaler=autoscaler)
    store.create_deployment("svc", "app.py", min_replicas=1, max_replicas=4, target_in_flight=2, public=True)

    def run(seconds: float, waiting: int) -> None:
        for _ in range(int(seconds / 0.5)):
            route = routes.get("svc")
            if route is not None:
                route.waiting = waiting  # stands for requests in flight
            clock.now += 0.5
            reconciler.tick()
        reconciler.wait_stopped()

    def scaled() -> list[str]:
        return [e.message for e in store.list_events("svc") if e.kind == "Scaled"]

    run(3, waiting=0)
    assert reconciler.counts("svc") == {"desired": 1, "ready": 1, "starting": 0, "crashes": 0}
    run(3, waiting=5)
    assert scaled() == ["autoscaler: 1 → 3 replica(s) (in flight 5.0, target 2 per replica)"]
    assert reconciler.counts("svc")["ready"] == 3 and len(routes.get("svc").upstreams) == 3
    run(4, waiting=5)
    assert len(scaled()) == 1  # the same answer tick after tick: no new event
    run(8, waiting=1)
    assert scaled()[1:] == ["autoscaler: 3 → 1 replica(s) (in flight 1.0, target 2 per replica)"]
    assert len(backend.stopped) == 2 and len(routes.get("svc").upstreams) == 1
    assert reconciler.logs("svc") == [(backend.started[0].replica_id, f"log of {backend.started[0].replica_id}")]

    store.update_deployment("svc", min_replicas=2, max_replicas=4)  # the user's scaling: not the autoscaler's event
    run(1, waiting=1)
    assert len([m for m in scaled() if m.startswith("autoscaler")]) == 2
    assert reconciler.counts("svc")["desired"] == 2

    store.delete_deployment("svc")
    run(1, waiting=0)
    assert reconciler.counts("svc") == {"ready": 0, "starting": 0, "crashes": 0} and autoscaler.load("svc") == 0.0
    store.close()


# Autoscaling with real replicas, through a real gateway.


@dataclass
class Scaling:
    store: Store
    routes: RouteTable
    reconciler: Reconciler
    gateway: Gateway
    url: str

    def scaled(self, name: str) -> list[str]:
        return [e.message for e in self.store.list_events(name) if e.kind == "Scaled"]


@pytest.fixture()
def scaling(tmp_path: Path) -> Iterator[Scaling]:
    store = Store.open(tmp_path)
    routes = RouteTable()
    reconciler = Reconciler(
        store, LocalBackend(tmp_path), routes, grace=10, autoscaler=Autoscaler(routes, scale_down_delay_s=2.0, window_s=1.0)
    )
    gateway = Gateway(routes, cold_start_timeout=120)
    try:
        with serve(gateway) as url:
            yield Scaling(store, routes, reconciler, gateway, url)
    finally:
        reconciler.stop_all()
        for handle in LocalBackend(tmp_path).list():  # replicas a failed test left behind
            LocalBackend(tmp_path).stop(handle, grace=5)
        store.close()


def test_the_autoscaler_scales_up_under_load_and_back_down(scaling):
    s = scaling
    s.store.create_deployment("busy", str(APP), min_replicas=1, max_replicas=3, target_in_flight=1, public=True)
    settle(s.reconciler, lambda: len(urls(s.routes, "busy")) == 1)

    stop, statuses = threading.Event(), []

    def client() -> None:
        with httpx.Client(timeout=60) as http:
            while not stop.is_set():
                statuses.append(http.post(s.url + "/run/busy/sleepy", json={"seconds": 0.5}).status_code)

    clients = [threading.Thread(target=client, daemon=True) for _ in range(4)]
    for thread in clients:
        thread.start()
    try:
        settle(s.reconciler, lambda: len(urls(s.routes, "busy")) == 3, timeout=120)  # 4 in flight, 1 per replica, max 3
        assert s.reconciler.counts("busy") == {"desired": 3, "ready": 3, "starting": 0, "crashes": 0}
        assert any(m.startswith("autoscaler: 1 → ") for m in s.scaled("busy"))
    finally:
        stop.set()
        for thread in clients:
            thread.join(60)
    assert statuses and set(statuses) == {200}  # nothing failed while replicas came

    settle(s.reconciler, lambda: len(s.reconciler.replicas["busy"]) == 1 and len(urls(s.routes, "busy")) == 1, timeout=60)
    assert s.scaled("busy")[-1].startswith("autoscaler: 3 → 1 replica(s)")
    assert len(s.scaled("busy")) <= 4  # one event per change, not one per tick
    assert httpx.post(s.url + "/run/busy/predict", json={"text": "still"}, timeout=30).json() == {"output": "still"}


def test_scale_to_zero_and_back_on_the_first_request(scaling):
    s = scaling
    stop = threading.Event()

    def ticker() -> None:  # the control plane's loop: the request below waits in the gateway meanwhile
        while not stop.is_set():
            s.reconciler.tick()
            time.sleep(0.2)

    s.store.create_deployment("lazy", str(EXAMPLES / "echo.py"), min_replicas=0, max_replicas=1, public=True)
    loop = threading.Thread(target=ticker, daemon=True)
    loop.start()
    try:
        deadline = time.monotonic() + 30
        while s.routes.get("lazy") is None and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(1.0)
        assert s.routes.get("lazy").cold_start and urls(s.routes, "lazy") == []
        assert s.reconciler.counts("lazy") == {"desired": 0, "ready": 0, "starting": 0, "crashes": 0}  # idle: nothing started

        answer = httpx.post(s.url + "/run/lazy/predict", json={"text": "wake"}, timeout=120)
        assert answer.status_code == 200 and answer.json() == {"output": "echo: wake"}
        assert s.scaled("lazy")[0].startswith("autoscaler: 0 → 1 replica(s)")
        assert s.gateway.metrics.cold_starts["lazy"] == 1
        [woken] = s.reconciler.replica_views("lazy")

        deadline = time.monotonic() + 60  # no traffic for the delay (2 s): back to zero
        while s.reconciler.counts("lazy") != {"desired": 0, "ready": 0, "starting": 0, "crashes": 0}:
            assert time.monotonic() < deadline, s.reconciler.counts("lazy")
            time.sleep(0.1)
        assert s.scaled("lazy")[-1].startswith("autoscaler: 1 → 0 replica(s)")
        assert urls(s.routes, "lazy") == []
        logs = s.reconciler.logs("lazy")  # no replica now: the log of the one that was stopped
        assert logs and {rid for rid, _ in logs} == {woken["id"]}
    finally:
        stop.set()
        loop.join(30)


def test_a_replica_that_stops_answering_is_replaced(plane):
    store, reconciler, routes = plane
    reconciler.unhealthy_after = 2.0
    store.create_deployment("echo", str(EXAMPLES / "echo.py"), public=True)
    settle(reconciler, lambda: len(urls(routes, "echo")) == 1)
    hung = reconciler.replica_views("echo")[0]
    os.kill(hung["pid"], signal.SIGSTOP)  # alive, but answers nothing: what a hung model looks like
    try:
        settle(
            reconciler,
            lambda: [v["id"] for v in reconciler.replica_views("echo") if v["state"] == "ready"] not in ([], [hung["id"]]),
        )
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(hung["pid"], signal.SIGCONT)
    assert httpx.post(urls(routes, "echo")[0] + "/predict", json={"text": "hi"}).json() == {"output": "echo: hi"}
    unhealthy = [e for e in store.list_events("echo") if e.kind == "ReplicaUnhealthy"]
    assert len(unhealthy) == 1 and hung["id"] in unhealthy[0].message
    reconciler.wait_stopped(30)
    assert not Path(f"/proc/{hung['pid']}").exists() or "Z" in Path(f"/proc/{hung['pid']}/stat").read_text().split(") ")[1][:1]
