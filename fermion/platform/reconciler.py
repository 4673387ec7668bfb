"""The reconciler: drives what runs (the backend) toward what the store says should run.

Each `tick()` probes every replica, replaces the ones that exited (with exponential backoff
and a recorded reason), starts or stops replicas to match the desired count, rolls a new
revision out only as its replicas become ready (a failing revision never takes traffic), and
publishes the ready replicas to the gateway's route table. It holds no state that cannot be
rebuilt: after a restart, `adopt()` finds running replicas through the backend.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

from fermion.platform.backend import Backend, ReplicaHandle, ReplicaSpec, ReplicaState, ReplicaStatus
from fermion.platform.gateway import RouteTable
from fermion.platform.records import DeploymentRecord
from fermion.platform.store import Store

log = logging.getLogger("fermion.platform")

_MAX_BACKOFF = 60.0
_CRASH_LOG_LINES = 5


@dataclass
class ManagedReplica:
    """A replica the reconciler started or adopted, with its last probe."""

    handle: ReplicaHandle
    status: ReplicaStatus = field(default_factory=lambda: ReplicaStatus(ReplicaState.STARTING))

    @property
    def ready(self) -> bool:
        return self.status.state is ReplicaState.READY


@dataclass
class _Backoff:
    crashes: int = 0
    next_start: float = 0.0


class Reconciler:
    """One control loop over all deployments; call `tick()` periodically (e.g. every 0.5 s)."""

    def __init__(
        self,
        store: Store,
        backend: Backend,
        routes: RouteTable,
        *,
        grace: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.backend = backend
        self.routes = routes
        self.grace = grace
        self.clock = clock
        self.replicas: dict[str, list[ManagedReplica]] = {}
        self._backoff: dict[str, _Backoff] = {}
        self._stopping: list[threading.Thread] = []

    def adopt(self) -> int:
        """Take over replicas that still run (after a restart of the control plane)."""
        adopted = 0
        for handle in self.backend.list():
            self.replicas.setdefault(handle.deployment, []).append(ManagedReplica(handle, self.backend.status(handle)))
            adopted += 1
        return adopted

    def tick(self) -> None:
        """One pass over every deployment."""
        deployments = {d.name: d for d in self.store.list_deployments()}
        for name in list(self.replicas):
            if name not in deployments:  # removed behind our back: stop what is left
                self._retire(name, self.replicas.pop(name))
                self.routes.remove(name)
        for deployment in deployments.values():
            try:
                if deployment.state == "deleting":
                    self._delete(deployment)
                else:
                    self._reconcile(deployment)
            except Exception:  # one broken deployment must not stop the others from being served
                log.exception("reconciling %s failed", deployment.name)

    def wait_stopped(self, timeout: float | None = None) -> None:
        """Wait for replicas being drained in the background (for shutdown and tests)."""
        for thread in self._stopping:
            thread.join(timeout)
        self._stopping = [t for t in self._stopping if t.is_alive()]

    def stop_all(self) -> None:
        """Stop every replica (graceful shutdown of the control plane)."""
        for name, managed in list(self.replicas.items()):
            self.routes.remove(name)
            self._retire(name, managed)
        self.replicas.clear()
        self.wait_stopped()

    # -- one deployment ---------------------------------------------------------------------------

    def _reconcile(self, d: DeploymentRecord) -> None:
        managed = self.replicas.setdefault(d.name, [])
        self._probe(d, managed)
        current = [m for m in managed if m.handle.revision == d.revision]
        old = [m for m in managed if m.handle.revision != d.revision]
        desired = d.min_replicas  # the autoscaler will move this between min and max
        missing = desired - len(current)
        backoff = self._backoff.setdefault(d.name, _Backoff())
        if missing > 0 and self.clock() >= backoff.next_start:
            for _ in range(missing):
                managed.append(ManagedReplica(self.backend.start(self._spec(d))))
            if missing and not old:
                log.info("%s: starting %d replica(s) of revision %d", d.name, missing, d.revision)
        retire: list[ManagedReplica] = []
        if missing < 0:  # too many: drop the ones not ready first, then the newest
            surplus = sorted(current, key=lambda m: (m.ready, -m.handle.data.get("pid", 0)))[: -missing]
            retire += surplus
            self.store.add_event(d.name, "Scaled", f"{desired} replica(s), stopping {len(surplus)}")
        ready_current = sum(1 for m in current if m.ready and m not in retire)
        if old and ready_current >= desired:  # the new revision is up: drain the old one
            retire += old
            self.store.add_event(d.name, "RolledOut", f"revision {d.revision} serves; {len(old)} old replica(s) drained")
        for m in retire:
            managed.remove(m)
        serving = [m for m in managed if m.ready and (m.handle.revision == d.revision or ready_current < desired)]
        self.routes.set(d.name, [m.status.url for m in serving if m.status.url], public=d.public)
        self._retire(d.name, retire)

    def _probe(self, d: DeploymentRecord, managed: list[ManagedReplica]) -> None:
        for m in list(managed):
            was_ready = m.ready
            m.status = self.backend.status(m.handle)
            if m.status.state is ReplicaState.EXITED:
                managed.remove(m)
                self._crashed(d, m)
            elif m.ready and not was_ready:
                self._backoff.setdefault(d.name, _Backoff()).crashes = 0
                self.store.add_event(d.name, "ReplicaReady", f"replica {m.handle.replica_id} (revision {m.handle.revision}) at {m.status.url}")

    def _crashed(self, d: DeploymentRecord, m: ManagedReplica) -> None:
        backoff = self._backoff.setdefault(d.name, _Backoff())
        backoff.crashes += 1
        delay = min(_MAX_BACKOFF, 2.0 ** (backoff.crashes - 1))
        backoff.next_start = self.clock() + delay
        tail = "\n".join(self.backend.logs(m.handle, _CRASH_LOG_LINES))
        kind = "CrashLoop" if backoff.crashes > 1 else "ReplicaExited"
        code = m.status.exit_code
        self.store.add_event(
            d.name,
            kind,
            f"replica {m.handle.replica_id} (revision {m.handle.revision}) exited"
            + (f" with code {code}" if code is not None else "")
            + f"; next start in {delay:g} s; last log lines:\n{tail}",
        )

    def _delete(self, d: DeploymentRecord) -> None:
        self.routes.remove(d.name)
        self._retire(d.name, self.replicas.pop(d.name, []))
        self.store.delete_deployment(d.name, purge=True)

    def _retire(self, name: str, replicas: list[ManagedReplica]) -> None:
        """Stop replicas in the background (each drains for up to `grace` seconds)."""
        for m in replicas:
            thread = threading.Thread(target=self.backend.stop, args=(m.handle, self.grace), name=f"stop-{name}", daemon=True)
            thread.start()
            self._stopping.append(thread)

    def _spec(self, d: DeploymentRecord) -> ReplicaSpec:
        return ReplicaSpec(
            replica_id=f"{d.name}-{d.revision}-{uuid.uuid4().hex[:8]}",
            deployment=d.name,
            revision=d.revision,
            source=d.source,
            options=dict(d.options),
            env=dict(d.env),
        )
