"""What the platform client returns: frozen records built from the API's JSON (its errors are
`fermion.client._errors`'s; `fermion.client.platform` exports both)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from datetime import datetime
from typing import Any, ClassVar, TypeVar

_M = TypeVar("_M", bound="_Model")


def _time(value: Any) -> datetime | None:
    """ISO 8601 text → datetime; anything unreadable → None (a listing must not fail on a date)."""
    if isinstance(value, str) and value:
        try:
            return datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
    return None


class _Model:
    """Building a frozen record from API JSON: known keys only, `*_at` keys as datetimes."""

    _nested: ClassVar[dict[str, Callable[[Any], Any]]] = {}

    @classmethod
    def from_json(cls: type[_M], data: Mapping[str, Any]) -> _M:
        """The record for one JSON object; keys this client does not know are ignored."""
        values: dict[str, Any] = {}
        for f in fields(cls):  # type: ignore[arg-type]
            if f.name not in data:
                continue
            value = data[f.name]
            if f.name in cls._nested:
                value = cls._nested[f.name](value)
            elif f.name.endswith("_at"):
                value = _time(value)
            values[f.name] = value
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly fields (datetimes as ISO 8601), e.g. for `--json` output."""
        result: dict[str, Any] = {}
        for f in fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            if isinstance(value, datetime):
                value = value.isoformat()
            elif isinstance(value, _Model):
                value = value.to_dict()
            elif isinstance(value, tuple):
                value = list(value)
            result[f.name] = value
        return result


@dataclass(frozen=True)
class ReplicaCounts(_Model):
    """How many replicas a deployment wants, and how many are ready or starting."""

    desired: int = 0
    ready: int = 0
    starting: int = 0


@dataclass(frozen=True)
class Deployment(_Model):
    """A deployment as the API shows it; `env` holds the variables' names, every value masked as ***."""

    name: str
    source: str = ""
    options: dict[str, Any] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    min_replicas: int = 1
    max_replicas: int = 1
    target_in_flight: float = 2.0
    public: bool = False
    revision: int = 0
    state: str = "active"
    created_at: datetime | None = None
    updated_at: datetime | None = None
    url: str = ""
    status: str = ""
    replicas: ReplicaCounts = field(default_factory=ReplicaCounts)
    restarts: int = 0  # replicas replaced after a crash or a hang, since the control plane started

    _nested: ClassVar[dict[str, Callable[[Any], Any]]] = {
        "replicas": lambda value: ReplicaCounts.from_json(value if isinstance(value, Mapping) else {})
    }


@dataclass(frozen=True)
class Revision(_Model):
    """One numbered version of a deployment's source, options and env (values masked)."""

    number: int
    source: str = ""
    options: dict[str, Any] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    created_at: datetime | None = None
    note: str | None = None
    #: Env names whose values were forgotten since (`forget_unused_env`): it cannot be rolled back to.
    forgotten: tuple[str, ...] = ()

    _nested: ClassVar[dict[str, Callable[[Any], Any]]] = {"forgotten": lambda value: tuple(value or ())}


@dataclass(frozen=True)
class Replica(_Model):
    """One running copy of a deployment: its revision, state, address and process id."""

    id: str
    revision: int = 0
    state: str = ""
    url: str | None = None
    pid: int | None = None
    detail: str = ""
    started_at: datetime | None = None


@dataclass(frozen=True)
class Event(_Model):
    """Something that happened to a deployment, e.g. ReplicaReady, CrashLoop or RolledOut."""

    id: int
    deployment: str | None = None
    kind: str = ""
    message: str = ""
    created_at: datetime | None = None


@dataclass(frozen=True)
class TokenInfo(_Model):
    """An API token's metadata (the token itself is shown only when it is created)."""

    id: int
    name: str = ""
    prefix: str = ""
    scopes: tuple[str, ...] = ()
    #: The deployments it is narrowed to; empty: every deployment.
    deployments: tuple[str, ...] = ()
    #: Its calls through the gateway per period, e.g. '10/s'; None: no limit.
    rate: str | None = None
    created_at: datetime | None = None
    expires_at: datetime | None = None
    revoked_at: datetime | None = None
    last_used_at: datetime | None = None

    _nested: ClassVar[dict[str, Callable[[Any], Any]]] = {
        "scopes": lambda value: tuple(value or ()),
        "deployments": lambda value: tuple(value or ()),
    }


@dataclass(frozen=True)
class AuditEntry(_Model):
    """Who (`actor`, a token's name) did what (`action`) to which `target`; never holds secrets."""

    id: int
    actor: str = ""
    action: str = ""
    target: str = ""
    detail: dict[str, Any] = field(default_factory=dict)
    created_at: datetime | None = None


@dataclass(frozen=True)
class PlatformInfo(_Model):
    """The platform's version, backend, database (password hidden), URL, number of deployments and sandbox."""

    version: str = ""
    backend: str = ""
    database: str = ""
    url: str = ""
    deployments: int = 0
    sandbox: str = ""
