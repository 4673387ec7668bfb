# Long on purpose: one reconcile pass (probe, replace, scale, roll out, publish) reads best top to bottom in one place.
"""The reconciler: drives what runs (the backend) toward what the store says should run.

Each `tick()` probes every replica, replaces the ones that exited (with exponential backoff
and a recorded reason), starts or stops replicas to match the desired count, rolls a new
revision out only as its replicas become ready (a failing revision never takes traffic), and
publishes the ready replicas to the gateway's route table. How many replicas a deployment wants
comes from the autoscaler when there is one, else it is `min_replicas`. It holds no state that
cannot be rebuilt: after a restart, `adopt()` finds running replicas through the backend.

Starting is bounded: at most `max_starting` replicas (all deployments together) may be starting at
once, and with a `Capacity` (the local backend) a replica starts only if it fits beside every
replica that runs or is still stopping. A deployment that wants more than fits gets one
"CapacityLimited" event and runs what fits. Each tick reads the desired state afresh, so a newer
scale request wins at once. After `stop_all()` no tick starts anything again.

`tick()` runs in one thread (it probes replicas, so it can take seconds); the read methods
(`replica_views`, `counts`, `logs`) may be called from any other thread at any time: they read
a snapshot published after each deployment's pass and never wait for a tick.
"""

from __future__ import annotations

import functools
import json
import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from fermion.platform.autoscaler import Autoscaler
from fermion.platform.backends.base import Backend, ReplicaHandle, ReplicaSpec, ReplicaState, ReplicaStatus
from fermion.platform.capacity import Ask, Capacity
from fermion.platform.gateway.routes import RouteTable
from fermion.platform.store.database import Store
from fermion.platform.store.records import DeploymentRecord

log = logging.getLogger("fermion.platform")

_MAX_BACKOFF = 60.0
_CRASH_LOG_LINES = 5
#: A hung replica gets this long to go after SIGTERM before SIGKILL: it is not answering anyway.
_UNHEALTHY_GRACE = 2.0
#: Replicas starting at once, all deployments together (each start is a Python process importing
#: its model: more at once only makes every one of them slower).
MAX_STARTING = 4


@dataclass
class ManagedReplica:
    """A replica the reconciler started or adopted, with its last probe."""

    handle: ReplicaHandle
    status: ReplicaStatus = field(default_factory=lambda: ReplicaStatus(ReplicaState.STARTING))
    was_ready: bool = False  # it has passed its readiness probe at least once
    unready_since: float | None = None  # when a replica that was ready started failing its probe

    @property
    def ready(self) -> bool:
        return self.status.state is ReplicaState.READY


@dataclass
class _Backoff:
    crashes: int = 0
    next_start: float = 0.0


@dataclass(frozen=True)
class _Snapshot:
    """What the read methods show of one deployment, as of its last reconcile pass."""

    views: tuple[dict[str, Any], ...] = ()
    handles: tuple[ReplicaHandle, ...] = ()
    desired: int | None = None
    crashes: int = 0


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
        autoscaler: Autoscaler | None = None,
        unhealthy_after: float = 10.0,
        capacity: Capacity | None = None,
        max_starting: int = MAX_STARTING,
    ) -> None:
        self.store = store
        self.backend = backend
        self.routes = routes
        self.grace = grace
        self.clock = clock
        self.autoscaler = autoscaler
        self.unhealthy_after = unhealthy_after  # seconds a once-ready replica may fail its probe before it is replaced
        self.replicas: dict[str, list[ManagedReplica]] = {}
        self._backoff: dict[str, _Backoff] = {}
        self._desired: dict[str, int] = {}
        self._exited: dict[str, ReplicaHandle] = {}  # the last replica gone, per deployment: its logs say why
        self._stopping: list[threading.Thread] = []
        self._work = threading.RLock()  # one tick (or adopt, or stop_all) at a time
        self._lock = threading.Lock()  # guards the snapshots the read methods use; held only briefly
        self._snapshots: dict[str, _Snapshot] = {}
        self._restarts: dict[str, int] = {}  # replicas that exited or hung and were replaced, since this process began
        self.capacity = capacity
        self.max_starting = max_starting
        self._asks: dict[str, Ask] = {}  # per deployment, of its current revision
        self._draining: dict[str, Ask] = {}  # replica id → what a replica still stopping takes
        self._limited: dict[str, str] = {}  # the last CapacityLimited message per deployment (said once)
        self._closed = False  # set by stop_all(): nothing starts after it

    def adopt(self) -> int:
        """Take over replicas that still run (after a restart of the control plane)."""
        adopted = 0
        with self._work:
            for handle in self.backend.list():
                self.replicas.setdefault(handle.deployment, []).append(ManagedReplica(handle, self.backend.status(handle)))
                adopted += 1
            for name in self.replicas:
                self._publish(name)
        return adopted

    def tick(self) -> None:
        """One pass over every deployment."""
        with self._work:
            if self._closed:
                return
            deployments = {d.name: d for d in self.store.list_deployments()}
            for name in list(self.replicas):
                if name not in deployments:  # removed behind our back: stop what is left
                    self._retire(name, self.replicas.pop(name))
                    self.routes.remove(name)
                    self._forget(name)
            for deployment in deployments.values():
                try:
                    if deployment.state == "deleting":
                        self._delete(deployment)
                    else:
                        try:
                            self._reconcile(deployment)
                        finally:  # even a pass that failed halfway changed what runs
                            self._publish(deployment.name)
                except Exception:  # one broken deployment must not stop the others from being served
                    log.exception("reconciling %s failed", deployment.name)

    # -- reads, from any thread -------------------------------------------------------------------

    def replica_views(self, name: str) -> list[dict[str, Any]]:
        """The deployment's replicas (every revision): {"id", "revision", "state", "url", "pid", "detail",
        "started_at"} ("started_at": epoch seconds, or None when the backend does not say)."""
        with self._lock:
            snapshot = self._snapshots.get(name)
        return [dict(view) for view in snapshot.views] if snapshot else []

    def counts(self, name: str) -> dict[str, int]:
        """{"desired", "ready", "starting", "crashes"}: "crashes" counts the current run of crashes (0 once a
        replica gets ready); "desired" is missing until the deployment's first reconcile pass."""
        with self._lock:
            snapshot = self._snapshots.get(name) or _Snapshot()
        ready = sum(1 for view in snapshot.views if view["state"] == "ready")
        counts = {"ready": ready, "starting": len(snapshot.views) - ready, "crashes": snapshot.crashes}
        if snapshot.desired is not None:
            counts = {"desired": snapshot.desired, **counts}
        return counts

    def restarts(self, name: str) -> int:
        """How many of the deployment's replicas exited or hung and were replaced since this reconciler began."""
        with self._lock:
            return self._restarts.get(name, 0)

    def logs(self, name: str, lines: int = 100) -> list[tuple[str, str]]:
        """(replica id, line) of the last `lines` lines of each replica; with no replica, those of the
        one that exited (or was stopped) last, so a crash can still be read about."""
        with self._lock:
            snapshot = self._snapshots.get(name)
            handles = list(snapshot.handles) if snapshot and snapshot.handles else []
            if not handles and name in self._exited:
                handles = [self._exited[name]]
        return [(handle.replica_id, line) for handle in handles for line in self.backend.logs(handle, lines)]

    def wait_stopped(self, timeout: float | None = None) -> None:
        """Wait for replicas being drained in the background (for shutdown and tests)."""
        with self._lock:
            stopping = list(self._stopping)
        for thread in stopping:
            thread.join(timeout)
        with self._lock:
            self._stopping = [t for t in self._stopping if t.is_alive()]

    def stop_all(self) -> None:
        """Stop every replica (graceful shutdown of the control plane); no tick starts one afterwards."""
        with self._work:
            self._closed = True
            for name, managed in list(self.replicas.items()):
                self.routes.remove(name)
                self._retire(name, managed, at_once=True)
                self._publish(name, replicas=[])
            self.replicas.clear()
        self.wait_stopped()

    # -- one deployment ---------------------------------------------------------------------------

    def _reconcile(self, d: DeploymentRecord) -> None:
        managed = self.replicas.setdefault(d.name, [])
        if self.capacity is not None:
            self._asks[d.name] = _ask(d.source, d.options)
        self._probe(d, managed)
        current = [m for m in managed if m.handle.revision == d.revision]
        old = [m for m in managed if m.handle.revision != d.revision]
        desired, autoscaled = self._desired_count(d, len(current))
        missing = desired - len(current)
        backoff = self._backoff.setdefault(d.name, _Backoff())
        starting = 0
        if missing > 0 and self.clock() >= backoff.next_start:
            starting = self._startable(d, desired, missing)
            for _ in range(starting):
                # The backend records each replica before its process starts: none can be lost.
                managed.append(ManagedReplica(self.backend.start(self._spec(d))))
            if starting and not old:
                log.info("%s: starting %d replica(s) of revision %d", d.name, starting, d.revision)
        retire: list[ManagedReplica] = []
        if missing < 0:  # too many: drop the ones not ready first, then the newest
            surplus = sorted(current, key=lambda m: (m.ready, -m.handle.data.get("pid", 0)))[:-missing]
            retire += surplus
            if not autoscaled:  # the autoscaler's own event already said so
                self.store.add_event(d.name, "Scaled", f"{desired} replica(s), stopping {len(surplus)}")
        ready_current = sum(1 for m in current if m.ready and m not in retire)
        if old and ready_current >= desired:  # the new revision is up: drain the old one
            retire += old
            self.store.add_event(d.name, "RolledOut", f"revision {d.revision} serves; {len(old)} old replica(s) drained")
        elif old:
            retire += self._make_way(d, old, current, desired, ready_current, started=starting)
        for m in retire:
            managed.remove(m)
        serving = [m for m in managed if m.ready and (m.handle.revision == d.revision or ready_current < desired)]
        # Replicas behind one proxy (Ray Serve's) share a URL: one upstream, so its load is not counted twice.
        urls = list(dict.fromkeys(m.status.url for m in serving if m.status.url))
        sockets = {m.status.url: m.status.socket for m in serving if m.status.url and m.status.socket}
        self.routes.set(d.name, urls, public=d.public, cold_start=d.min_replicas == 0, sockets=sockets)
        self._retire(d.name, retire)

    def _make_way(
        self,
        d: DeploymentRecord,
        old: list[ManagedReplica],
        current: list[ManagedReplica],
        desired: int,
        ready: int,
        started: int,
    ) -> list[ManagedReplica]:
        """Old replicas a rollout may drain before it is done: one for each new replica ready beyond
        the desired count (serving never drops below it), and, when the machine has no room for even
        one more replica and none of the new revision is starting, one old replica to make room (the
        rollout then goes one replica at a time)."""
        by_readiness = sorted(old, key=lambda m: (m.ready, m.handle.data.get("started_at") or 0))
        excess = len([m for m in old if m.ready]) + ready - desired
        if excess > 0:
            return by_readiness[:excess]
        stuck = not started and not any(not m.ready for m in current)
        if stuck and d.name in self._limited and self._startable(d, desired, 1) == 0:
            self.store.add_event(
                d.name, "RollingOneByOne", "no room on this machine for an extra replica: replacing old replicas one at a time"
            )
            return by_readiness[:1]
        return []

    def _startable(self, d: DeploymentRecord, desired: int, missing: int) -> int:
        """How many of the `missing` replicas may start now: within the platform's starting limit and,
        with a capacity, what fits beside everything running or still stopping."""
        starting_now = sum(1 for replicas in self.replicas.values() for m in replicas if not m.ready)
        allowed = min(missing, max(0, self.max_starting - starting_now))
        if self.capacity is None:
            return allowed
        ask = self._asks[d.name]
        taken = [self._asks.get(name, ask) for name, replicas in self.replicas.items() for _ in replicas]
        with self._lock:
            taken += list(self._draining.values())
        room = self.capacity.room(ask, taken)
        if room < missing and not self._draining:  # short of room for good, not while replicas drain
            fit = desired - missing + room
            message = (
                f"wants {desired} replica(s) but only {fit} fit on this machine "
                f"(each asks {ask.memory // 2**20} MiB; at most {self.capacity.total} replicas on this platform, "
                "all deployments together); it runs what fits"
            )
            if self._limited.get(d.name) != message:
                self._limited[d.name] = message
                self.store.add_event(d.name, "CapacityLimited", message)
        elif room >= missing:
            self._limited.pop(d.name, None)
        return min(allowed, room)

    def _desired_count(self, d: DeploymentRecord, current: int) -> tuple[int, bool]:
        """How many replicas of the current revision to run, and whether the autoscaler changed that
        count this tick (then a "Scaled" event says so)."""
        previous = self._desired.get(d.name)
        if self.autoscaler is None:
            self._desired[d.name] = d.min_replicas
            return d.min_replicas, False
        desired = self._desired[d.name] = self.autoscaler.desired(d, current)
        # A change that the new min/max alone explain is the user's scaling, not the autoscaler's.
        if previous is None or desired == max(d.min_replicas, min(d.max_replicas, previous)):
            return desired, False
        self.store.add_event(
            d.name,
            "Scaled",
            f"autoscaler: {previous} → {desired} replica(s) "
            f"(in flight {self.autoscaler.load(d.name):.1f}, target {d.target_in_flight:g} per replica)",
        )
        return desired, True

    def _probe(self, d: DeploymentRecord, managed: list[ManagedReplica]) -> None:
        for m in list(managed):
            was_ready = m.ready
            m.status = self.backend.status(m.handle)
            if m.status.state is ReplicaState.EXITED:
                managed.remove(m)
                self._crashed(d, m)
            elif m.ready:
                m.was_ready, m.unready_since = True, None
                if not was_ready:
                    self._backoff.setdefault(d.name, _Backoff()).crashes = 0
                    self.store.add_event(
                        d.name, "ReplicaReady", f"replica {m.handle.replica_id} (revision {m.handle.revision}) at {m.status.url}"
                    )
            elif m.was_ready:  # alive but no longer answering: hung, or overloaded past the probe's timeout
                now = self.clock()
                if m.unready_since is None:
                    m.unready_since = now
                elif now - m.unready_since >= self.unhealthy_after:
                    managed.remove(m)
                    self._count_restart(d.name)
                    self.store.add_event(
                        d.name,
                        "ReplicaUnhealthy",
                        f"replica {m.handle.replica_id} (revision {m.handle.revision}) failed its health probe for "
                        f"{now - m.unready_since:.0f} s ({m.status.detail or 'no answer'}); replacing it",
                    )
                    self._retire(d.name, [m], grace=_UNHEALTHY_GRACE)

    def _count_restart(self, name: str) -> None:
        with self._lock:
            self._restarts[name] = self._restarts.get(name, 0) + 1

    def _crashed(self, d: DeploymentRecord, m: ManagedReplica) -> None:
        self._count_restart(d.name)
        with self._lock:
            self._exited[d.name] = m.handle
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
        self._forget(d.name)

    def _forget(self, name: str) -> None:
        """Drop what was kept about a deployment that is gone."""
        self._backoff.pop(name, None)
        self._desired.pop(name, None)
        self._asks.pop(name, None)
        self._limited.pop(name, None)
        if self.autoscaler is not None:
            self.autoscaler.forget(name)
        with self._lock:
            self._snapshots.pop(name, None)
            self._exited.pop(name, None)
            self._restarts.pop(name, None)

    def _publish(self, name: str, replicas: list[ManagedReplica] | None = None) -> None:
        """Make the deployment's current state visible to the read methods."""
        managed = self.replicas.get(name, []) if replicas is None else replicas
        views = tuple(
            {
                "id": m.handle.replica_id,
                "revision": m.handle.revision,
                "state": "ready" if m.ready else "starting",
                "url": m.status.url,
                "pid": m.handle.data.get("pid"),
                "detail": m.status.detail,
                "started_at": m.handle.data.get("started_at"),
            }
            for m in managed
        )
        backoff = self._backoff.get(name)
        snapshot = _Snapshot(views, tuple(m.handle for m in managed), self._desired.get(name), backoff.crashes if backoff else 0)
        with self._lock:
            self._snapshots[name] = snapshot

    def _retire(self, name: str, replicas: list[ManagedReplica], grace: float | None = None, at_once: bool = False) -> None:
        """Stop replicas in the background (each drains for up to `grace` seconds, default the reconciler's;
        `at_once`: without waiting for the gateways to take them out, when nothing routes to them any more)."""
        if not replicas:
            return
        wait = self.grace if grace is None else grace
        ask = self._asks.get(name)

        def stop(handle: ReplicaHandle) -> None:
            try:
                self.backend.stop(handle, wait, at_once=at_once)
            finally:
                with self._lock:
                    self._draining.pop(handle.replica_id, None)

        if ask is not None:  # a draining replica still holds its memory: count it until it is gone
            with self._lock:
                self._draining.update({m.handle.replica_id: ask for m in replicas})
        threads = [threading.Thread(target=stop, args=(m.handle,), name=f"stop-{name}", daemon=True) for m in replicas]
        for thread in threads:
            thread.start()
        with self._lock:
            self._exited[name] = replicas[-1].handle
            # Finished ones go: the control plane runs for months and the autoscaler retires often.
            self._stopping = [t for t in self._stopping if t.is_alive()] + threads

    def _spec(self, d: DeploymentRecord) -> ReplicaSpec:
        return ReplicaSpec(
            replica_id=f"{d.name}-{d.revision}-{uuid.uuid4().hex[:8]}",
            deployment=d.name,
            revision=d.revision,
            source=d.source,
            options=dict(d.options),
            env=dict(d.env),
        )


@functools.lru_cache(maxsize=256)
def _ask_cached(source: str, resources: str) -> Ask:
    return Ask.of(source, {"resources": json.loads(resources)})


def _ask(source: str, options: dict[str, Any]) -> Ask:
    """What a replica of this source takes (estimates read the model's files: cached, not redone every tick)."""
    return _ask_cached(source, json.dumps(options.get("resources") or {}, sort_keys=True))
