"""Where replicas run. A backend starts, probes, lists and stops replicas; the reconciler decides.

The interface is deliberately small so that the local backend (processes on this machine) and
the Ray backend (Ray Serve applications) both fit it without the reconciler knowing which.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(frozen=True)
class ReplicaSpec:
    """What to run: one replica of one revision of a deployment."""

    replica_id: str
    deployment: str
    revision: int
    source: str
    options: dict[str, Any] = field(default_factory=dict)  # source options: task, trust_pickle
    env: dict[str, str] = field(default_factory=dict)  # may hold secrets: never log it


@dataclass(frozen=True)
class ReplicaHandle:
    """How a backend finds a replica again (also after the control plane restarts)."""

    replica_id: str
    backend: str
    deployment: str
    revision: int
    data: dict[str, Any] = field(default_factory=dict)  # backend-specific: pid, log file, ...


class ReplicaState(enum.Enum):
    STARTING = "starting"  # running, not ready yet (loading, or setup() still running)
    READY = "ready"  # /readyz answers 200
    EXITED = "exited"  # the process (or actor) is gone


@dataclass(frozen=True)
class ReplicaStatus:
    """A probe's answer."""

    state: ReplicaState
    url: str | None = None  # where the replica serves, once known
    exit_code: int | None = None  # when EXITED and the backend knows it
    detail: str = ""
    socket: str | None = None  # a Unix socket it also serves on (local replicas): HAProxy's faster way in


class Backend(Protocol):
    """Runs replicas somewhere."""

    name: str

    def start(self, spec: ReplicaSpec) -> ReplicaHandle:
        """Start a replica and return at once; `status` tells when it is ready."""
        ...

    def status(self, handle: ReplicaHandle) -> ReplicaStatus:
        """Probe a replica (cheap: a process check and one short HTTP request)."""
        ...

    def stop(self, handle: ReplicaHandle, grace: float = 30.0, at_once: bool = False) -> None:
        """Ask the replica to drain and stop; force it after `grace` seconds. `at_once`: nothing routes
        to it any more (the platform is shutting down), so it may skip waiting for load balancers."""
        ...

    def list(self) -> list[ReplicaHandle]:
        """Replicas of this backend that still run (to adopt them after a restart)."""
        ...

    def logs(self, handle: ReplicaHandle, lines: int = 100) -> list[str]:
        """The last lines the replica wrote."""
        ...
