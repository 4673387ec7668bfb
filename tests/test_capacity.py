"""Capacity: how many replicas fit on the machine, and the reconciler never starting more."""

from __future__ import annotations

from pathlib import Path

import pytest

from fermion.platform.backends.base import ReplicaHandle, ReplicaSpec, ReplicaState, ReplicaStatus
from fermion.platform.capacity import (
    DEFAULT_MODEL_MEMORY,
    DEFAULT_REPLICA_MEMORY,
    GIB,
    MIB,
    Ask,
    Capacity,
    Machine,
    estimate_memory,
)
from fermion.platform.errors import Invalid
from fermion.platform.gateway.routes import RouteTable
from fermion.platform.reconciler import Reconciler
from fermion.platform.store.database import Store

SMALL = Machine(cpus=2, memory=4 * GIB)  # 3.2 GiB for replicas


def test_room_is_the_tightest_of_count_memory_and_cpus():
    capacity = Capacity(SMALL, max_replicas_total=10)
    assert capacity.total == 10 and capacity.memory == int(4 * GIB * 0.8)
    assert capacity.room(Ask(256 * MIB), []) == 10  # the count binds
    assert capacity.room(Ask(1 * GIB), []) == 3  # memory binds: 3 × 1 GiB ≤ 3.2 GiB
    assert capacity.room(Ask(256 * MIB, cpus=1), [Ask(256 * MIB, cpus=2)]) == 9  # cores are shared, not reserved
    assert capacity.room(Ask(1 * GIB), [Ask(3 * GIB)]) == 0
    assert capacity.room(Ask(256 * MIB), [Ask(256 * MIB)] * 10) == 0


def test_the_default_ceiling_grows_with_the_cpus():
    assert Capacity(Machine(2, 64 * GIB)).total == 16
    assert Capacity(Machine(8, 64 * GIB)).total == 64
    assert Machine.here().cpus >= 1 and Machine.here().memory > 0


def test_a_min_that_cannot_fit_is_refused_with_the_numbers_and_what_to_do():
    capacity = Capacity(SMALL, max_replicas=32, max_replicas_total=16)
    capacity.check_fits("echo", 12, Ask(256 * MIB), [])
    with pytest.raises(Invalid) as refused:
        capacity.check_fits("echo", 1000, Ask(256 * MIB), [Ask(256 * MIB)] * 3)
    message = refused.value.message
    assert "min_replicas 1000 does not fit" in message and "256 MiB" in message and "2 CPU(s)" in message
    assert "3 are taken by other deployments, so at most 9 fit" in message and "--max-replicas-total" in message
    with pytest.raises(Invalid, match="max_replicas is at most 32"):
        capacity.check_ceiling(33)
    capacity.check_ceiling(32)
    with pytest.raises(Invalid, match="asks for 4 CPUs and this machine has 2"):
        capacity.check_fits("echo", 1, Ask(256 * MIB, cpus=4), [])


def test_memory_estimates_follow_the_source(tmp_path: Path):
    model = tmp_path / "model.onnx"
    model.write_bytes(b"\0" * (10 * MIB))
    folder = tmp_path / "bert"
    folder.mkdir()
    (folder / "weights.bin").write_bytes(b"\0" * (4 * MIB))
    assert estimate_memory("app.py:Echo") == DEFAULT_REPLICA_MEMORY
    assert estimate_memory(f"onnx:{model}") == DEFAULT_REPLICA_MEMORY + 20 * MIB
    assert estimate_memory(f"hf:{folder}") == DEFAULT_REPLICA_MEMORY + 8 * MIB
    assert estimate_memory("st:all-MiniLM-L6-v2") == DEFAULT_MODEL_MEMORY
    assert Ask.of("app.py:Echo", {"resources": {"memory": 2 * GIB, "cpus": 1}}) == Ask(2 * GIB, 1.0)


class CountingBackend:
    """A backend whose replicas never get ready: counts what the reconciler starts and stops."""

    name = "local"

    def __init__(self) -> None:
        self.started: list[ReplicaSpec] = []
        self.stopped: list[str] = []

    def start(self, spec: ReplicaSpec) -> ReplicaHandle:
        self.started.append(spec)
        return ReplicaHandle(spec.replica_id, self.name, spec.deployment, spec.revision, {"pid": len(self.started)})

    def status(self, handle: ReplicaHandle) -> ReplicaStatus:
        return ReplicaStatus(ReplicaState.STARTING)

    def stop(self, handle: ReplicaHandle, grace: float = 30.0, at_once: bool = False) -> None:
        self.stopped.append(handle.replica_id)

    def list(self) -> list[ReplicaHandle]:
        return []

    def logs(self, handle: ReplicaHandle, lines: int = 100) -> list[str]:
        return []


def test_the_reconciler_starts_a_few_at_a_time_never_past_capacity_and_nothing_after_stop_all(tmp_path: Path):
    store = Store.open(str(tmp_path))
    backend = CountingBackend()
    capacity = Capacity(SMALL, max_replicas=1000, max_replicas_total=6)
    reconciler = Reconciler(store, backend, RouteTable(), capacity=capacity, max_starting=4, grace=0)
    # Written straight to the store, as a second control plane on the same database could: the
    # reconciler must hold the line itself.
    store.create_deployment("wide", "app.py:Echo", min_replicas=1000, max_replicas=1000)
    reconciler.tick()
    assert len(backend.started) == 4  # at most 4 starting at once
    reconciler.tick()
    assert len(backend.started) == 4  # none got ready: no more starts
    events = [e for e in store.list_events("wide") if e.kind == "CapacityLimited"]
    assert len(events) == 1 and "only 6 fit" in events[0].message
    reconciler.tick()
    assert len([e for e in store.list_events("wide") if e.kind == "CapacityLimited"]) == 1  # said once

    store.update_deployment("wide", min_replicas=1, max_replicas=1)  # a newer desired state wins at once
    reconciler.tick()
    reconciler.wait_stopped(5)
    assert len(backend.stopped) == 3
    reconciler.stop_all()
    store.update_deployment("wide", min_replicas=3, max_replicas=3)
    reconciler.tick()
    assert len(backend.started) == 4  # closed: nothing starts after stop_all
    store.close()


class ReadyBackend(CountingBackend):
    """Replicas are ready as soon as they start; stopping one takes effect at once."""

    def status(self, handle: ReplicaHandle) -> ReplicaStatus:
        if handle.replica_id in self.stopped:
            return ReplicaStatus(ReplicaState.EXITED)
        return ReplicaStatus(ReplicaState.READY, f"http://127.0.0.1:{10000 + handle.data['pid']}")


def test_a_rollout_on_a_full_machine_goes_one_replica_at_a_time_and_never_stops_serving(tmp_path: Path):
    store = Store.open(str(tmp_path))
    backend = ReadyBackend()
    routes = RouteTable()
    reconciler = Reconciler(store, backend, routes, capacity=Capacity(SMALL, max_replicas_total=2), grace=0)
    store.create_deployment("full", "app.py:Echo", min_replicas=2, max_replicas=2)
    for _ in range(3):
        reconciler.tick()
    assert len(backend.started) == 2 and len(routes.get("full").upstreams) == 2
    store.update_deployment("full", source="app.py:EchoV2")  # revision 2: no room for a third replica
    for _ in range(20):
        reconciler.tick()
        reconciler.wait_stopped(5)
        assert routes.get("full").upstreams, "the deployment always has a replica serving"
        assert len(backend.started) - len(backend.stopped) <= 2  # never more than fit
    revisions = {m.handle.revision for m in reconciler.replicas["full"]}
    assert revisions == {2} and len(reconciler.replicas["full"]) == 2
    assert any(e.kind == "RollingOneByOne" for e in store.list_events("full"))
    reconciler.stop_all()
    store.close()


def test_gpus_are_whole_and_not_shared_on_one_machine():
    two = Capacity(Machine(cpus=8, memory=64 * GIB, gpus=("0", "1")))
    assert Ask.of("hf:./m", {"resources": {"gpus": 0.5, "memory": GIB}}) == Ask(GIB, 0.0, 1)  # a fraction takes one
    assert two.room(Ask(GIB, gpus=1), []) == 2  # GPUs bind, not memory
    assert two.room(Ask(GIB, gpus=1), [Ask(GIB, gpus=1)]) == 1
    assert two.room(Ask(GIB, gpus=2), [Ask(GIB, gpus=1)]) == 0
    assert two.room(Ask(GIB), [Ask(GIB, gpus=2)]) == 50  # a replica without GPUs is not held back by them
    with pytest.raises(Invalid, match=r"asks for 3 GPU\(s\) and this machine has 2; ask for at most 2 \(--gpus\)"):
        two.check_fits("chat", 1, Ask(GIB, gpus=3), [])
    with pytest.raises(Invalid, match="1 GPU.s. of its own; this machine has 8 CPU.s., 2 GPU.s. and"):
        two.check_fits("chat", 2, Ask(GIB, gpus=1), [Ask(GIB, gpus=1)])
    with pytest.raises(Invalid, match="has none .nvidia-smi lists no GPU."):
        Capacity(SMALL).check_fits("chat", 0, Ask(GIB, gpus=1), [])  # refused even at min_replicas 0
