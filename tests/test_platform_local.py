"""The local backend with real `fermion serve` processes: start, probe, adopt after a restart, stop."""

from __future__ import annotations

import os
import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from support import EXAMPLES, ROOT

from fermion.platform.backends.base import ReplicaHandle, ReplicaSpec, ReplicaState, ReplicaStatus
from fermion.platform.backends.local import LocalBackend
from fermion.serving.announce import read_port_file

APPS = ROOT / "tests" / "apps"


def spec(source: str | Path, **changes: object) -> ReplicaSpec:
    values: dict[str, object] = {
        "replica_id": uuid.uuid4().hex[:12],
        "deployment": "echo",
        "revision": 1,
        "source": str(source),
    }
    values.update(changes)
    return ReplicaSpec(**values)  # type: ignore[arg-type]


def wait_for(backend: LocalBackend, handle: ReplicaHandle, state: ReplicaState, timeout: float = 60.0) -> ReplicaStatus:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = backend.status(handle)
        if status.state == state:
            return status
        time.sleep(0.05)
    raise AssertionError(f"replica never became {state}: {backend.status(handle)}; log: {backend.logs(handle)}")


@pytest.fixture()
def backend(tmp_path: Path) -> Iterator[LocalBackend]:
    local = LocalBackend(tmp_path / "data")  # not tmp_path itself: the sandbox hides the data dir from replicas
    yield local
    for handle in local.list():  # whatever a failing test left running
        local.stop(handle, grace=5)


def test_a_replica_starts_serves_and_drains_on_stop(backend: LocalBackend):
    handle = backend.start(spec(EXAMPLES / "echo.py", env={"FERMION_MAX_QUEUE": "7"}))
    status = wait_for(backend, handle, ReplicaState.READY)
    assert status.url and status.url.startswith("http://127.0.0.1:")
    port_file = read_port_file(backend.folder / f"{handle.replica_id}.run" / "port")  # how the backend learnt the URL
    assert port_file is not None and port_file.url == status.url
    # Its pid as it sees it: 1 in bubblewrap's process namespace, where it sees no other process.
    assert port_file.pid == (1 if backend.sandbox.bwrap else handle.data["pid"])
    assert httpx.post(status.url + "/predict", json={"text": "hi"}).json() == {"output": "echo: hi"}
    assert [h.replica_id for h in backend.list()] == [handle.replica_id]
    backend.stop(handle, grace=10)
    assert backend.status(handle).state == ReplicaState.EXITED
    assert backend.status(handle).exit_code == 0  # drained, not killed
    assert backend.list() == []


def test_a_replica_that_cannot_start_exits_with_its_reason(backend: LocalBackend):
    handle = backend.start(spec(EXAMPLES / "echo.py:Ech"))
    status = wait_for(backend, handle, ReplicaState.EXITED)
    assert status.exit_code == 2
    assert "did you mean 'Echo'" in status.detail
    assert any("no class 'Ech'" in line for line in backend.logs(handle))


def test_setup_failure_is_exit_code_3(backend: LocalBackend):
    handle = backend.start(spec(APPS / "behaviour.py", env={"FERMION_TEST_SETUP_FAIL": "1"}))
    status = wait_for(backend, handle, ReplicaState.EXITED)
    assert status.exit_code == 3
    assert "model file missing" in status.detail


def test_replicas_are_not_ready_while_setup_runs(backend: LocalBackend, tmp_path: Path):
    gate = tmp_path / "gate"
    handle = backend.start(spec(APPS / "behaviour.py", env={"FERMION_TEST_GATE": str(gate)}))
    status = wait_for(backend, handle, ReplicaState.STARTING)
    deadline = time.monotonic() + 30
    while status.url is None and time.monotonic() < deadline:  # listening, setup() still waiting on the gate
        time.sleep(0.05)
        status = backend.status(handle)
    assert status.state == ReplicaState.STARTING and status.url is not None
    gate.write_text("open")
    wait_for(backend, handle, ReplicaState.READY)
    backend.stop(handle, grace=10)


def test_a_new_control_plane_adopts_running_replicas(tmp_path: Path):
    first = LocalBackend(tmp_path)
    handle = first.start(spec(EXAMPLES / "echo.py"))
    url = wait_for(first, handle, ReplicaState.READY).url
    second = LocalBackend(tmp_path)  # as after a control-plane restart: no child handles, only state files
    try:
        [adopted] = second.list()
        assert adopted.replica_id == handle.replica_id and adopted.deployment == "echo"
        status = second.status(adopted)
        assert status.state == ReplicaState.READY and status.url == url
        second.stop(adopted, grace=10)
        assert second.status(adopted).state == ReplicaState.EXITED
        assert second.list() == []
    finally:
        for leftover in second.list():
            second.stop(leftover, grace=5)
        first.stop(handle, grace=5)


def test_a_killed_replica_is_seen_as_exited(backend: LocalBackend):
    handle = backend.start(spec(EXAMPLES / "echo.py"))
    wait_for(backend, handle, ReplicaState.READY)
    os.kill(handle.data["pid"], signal.SIGKILL)
    status = wait_for(backend, handle, ReplicaState.EXITED, timeout=10)
    assert status.exit_code == -signal.SIGKILL
    assert backend.list() == []
    assert sorted(path.name for path in backend.folder.iterdir()) == [f"{handle.replica_id}.log"]  # state and port file gone
