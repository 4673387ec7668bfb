"""Plain, frozen records the store hands out, and the rules a valid record follows.

Callers get these instead of ORM objects, so nobody holds a database session by accident.
Secrets (deployment `env` values) are kept, because replicas need them, but every `repr` and
`to_public_dict()` shows them as "***". This module does not import SQLAlchemy.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields
from datetime import datetime
from enum import Enum
from typing import Any, ClassVar

from fermion.platform.auth import Scope
from fermion.platform.errors import Invalid

MASK = "***"
DEPLOYMENT_STATES = ("active", "deleting")
REPLICA_STATES = ("starting", "ready", "failed", "stopping", "stopped")
#: A sanity ceiling: a typo like --max 10000 should be an error, not thousands of processes.
MAX_REPLICAS = 1000
NAME_RULE = re.compile(r"^[a-z][a-z0-9-]{0,62}$")
ENV_NAME_RULE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
#: Keys whose values audit details never keep (matched case-insensitively, as substrings).
SECRET_KEYS = ("env", "token", "secret", "password", "plaintext", "hash")


def _public(value: Any) -> Any:
    """A JSON-friendly copy: datetimes as ISO 8601, enums as their value, sets as sorted lists."""
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, (set, frozenset)):
        return sorted(_public(item) for item in value)
    if isinstance(value, Mapping):
        return {str(key): _public(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_public(item) for item in value]
    return value


class Record:
    """Shared behaviour: a repr and a public dict with the secret fields masked."""

    _secret_fields: ClassVar[tuple[str, ...]] = ()

    def _masked(self) -> dict[str, Any]:
        values = {f.name: getattr(self, f.name) for f in fields(self)}  # type: ignore[arg-type]
        for name in self._secret_fields:
            values[name] = mask_env(values[name])
        return values

    def __repr__(self) -> str:
        inner = ", ".join(f"{key}={value!r}" for key, value in self._masked().items())
        return f"{type(self).__name__}({inner})"

    def to_public_dict(self) -> dict[str, Any]:
        """JSON-friendly fields, secrets masked: what APIs and listings may show."""
        return _public(self._masked())


def mask_env(env: Mapping[str, str]) -> dict[str, str]:
    """{'HF_TOKEN': 'hf_abc'} → {'HF_TOKEN': '***'}: names stay visible, values never."""
    return {key: MASK for key in env}


@dataclass(frozen=True, repr=False)
class DeploymentRecord(Record):
    """A deployment as it is now: what to run (`source`, `options`, `env`) and how much of it."""

    _secret_fields: ClassVar[tuple[str, ...]] = ("env",)
    id: int
    name: str
    source: str
    options: dict[str, Any]
    env: dict[str, str]
    min_replicas: int
    max_replicas: int
    target_in_flight: float
    public: bool
    revision: int
    state: str
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, repr=False)
class RevisionRecord(Record):
    """One numbered version of a deployment's source, options and env; rollbacks go back to one."""

    _secret_fields: ClassVar[tuple[str, ...]] = ("env",)
    id: int
    deployment: str
    number: int
    source: str
    options: dict[str, Any]
    env: dict[str, str]
    created_at: datetime
    note: str | None
    #: Env names whose values were forgotten (`Store.forget_unused_env`): this revision cannot run again.
    forgotten: frozenset[str] = frozenset()


@dataclass(frozen=True, repr=False)
class ReplicaRecord(Record):
    """One running (or starting, or failed) copy of a deployment at some revision."""

    id: int
    deployment: str
    revision: int
    backend: str
    handle: dict[str, Any]
    state: str
    restarts: int
    last_error: str | None
    started_at: datetime
    updated_at: datetime


@dataclass(frozen=True, repr=False)
class EventRecord(Record):
    """Something that happened, e.g. 'Created' or 'CrashLoop'; `deployment` is None platform-wide."""

    id: int
    deployment: str | None
    kind: str
    message: str
    created_at: datetime


@dataclass(frozen=True, repr=False)
class TokenRecord(Record):
    """An API token's metadata; the token itself is never stored, only its hash (not kept here)."""

    id: int
    name: str
    prefix: str
    scopes: frozenset[Scope]
    created_at: datetime
    expires_at: datetime | None = None
    revoked_at: datetime | None = None
    last_used_at: datetime | None = None
    #: The deployments it may reach; empty: every deployment (not narrowed).
    deployments: frozenset[str] = frozenset()
    #: Calls through the gateway it may make, e.g. '10/s'; None: no limit.
    rate: str | None = None

    def is_active(self, now: datetime) -> bool:
        """Not revoked and not expired at `now` (timezone-aware)."""
        return self.revoked_at is None and (self.expires_at is None or self.expires_at > now)

    @property
    def narrowed(self) -> bool:
        """Whether it reaches only some deployments."""
        return bool(self.deployments)

    def reaches(self, deployment: str) -> bool:
        """Whether it may reach `deployment` (always, when not narrowed)."""
        return not self.deployments or deployment in self.deployments


@dataclass(frozen=True, repr=False)
class AuditRecord(Record):
    """Who did what to which target; `detail` never holds secrets."""

    id: int
    actor: str
    action: str
    target: str
    detail: dict[str, Any] = field(default_factory=dict)
    created_at: datetime | None = None


# Rules. Each raises Invalid naming the rule and the value, so people can fix it in one go.


#: Deployments one token may be narrowed to: a list to read, not a way around scopes.
MAX_REACH = 100


def check_reach(deployments: Iterable[str], scopes: frozenset[Scope]) -> frozenset[str]:
    """The deployment names a token is narrowed to, checked: valid names, at most MAX_REACH, and never
    on an admin token (tokens and the audit log belong to no deployment)."""
    names = [deployments] if isinstance(deployments, str) else list(deployments)
    if not names:
        return frozenset()
    if Scope.ADMIN in scopes:
        raise Invalid("an admin token cannot be narrowed to deployments; narrow a deploy or invoke token instead")
    if len(names) > MAX_REACH:
        raise Invalid(f"a token can be narrowed to at most {MAX_REACH} deployments, got {len(names)}")
    return frozenset(check_name(name) for name in names)


def check_name(name: object, kind: str = "deployment") -> str:
    """A deployment name: lowercase letter first, then letters, digits or '-', at most 63."""
    if not isinstance(name, str) or not NAME_RULE.match(name):
        raise Invalid(
            f"invalid {kind} name {name!r}: use a lowercase letter followed by up to 62 lowercase "
            f"letters, digits or '-' (pattern {NAME_RULE.pattern}), e.g. 'my-model'"
        )
    return name


def check_source(source: object) -> str:
    """A non-empty source string, e.g. 'app.py:Echo' or 'st:all-MiniLM-L6-v2'."""
    if not isinstance(source, str) or not source.strip():
        raise Invalid(f"invalid source {source!r}: give what `fermion serve` takes, e.g. 'app.py:Echo'")
    return source.strip()


#: Bounds on a deployment's env: variables, a name's length, a value's size (a certificate fits; a dataset does not).
MAX_ENV_VARIABLES = 200
MAX_ENV_NAME = 255
MAX_ENV_VALUE = 64 * 1024


def check_env(env: Mapping[str, object] | None) -> dict[str, str]:
    """Environment variables for replicas: valid names, string values, within the bounds above."""
    result: dict[str, str] = {}
    if len(env or {}) > MAX_ENV_VARIABLES:
        raise Invalid(f"a deployment may have at most {MAX_ENV_VARIABLES} environment variables, got {len(env or {})}")
    for key, value in (env or {}).items():
        if not isinstance(key, str) or not ENV_NAME_RULE.match(key) or len(key) > MAX_ENV_NAME:
            raise Invalid(
                f"invalid environment variable name {str(key)[:80]!r}: use letters, digits and '_', not starting with a "
                f"digit, at most {MAX_ENV_NAME} characters"
            )
        if not isinstance(value, str):
            raise Invalid(f"environment variable {key!r} must be a string, got {type(value).__name__}")
        if len(value.encode()) > MAX_ENV_VALUE:
            raise Invalid(f"environment variable {key!r} is over {MAX_ENV_VALUE // 1024} KiB; mount large files instead")
        result[key] = value
    return result


def check_options(options: Mapping[str, Any] | None) -> dict[str, Any]:
    """Deployment options (task, trust_pickle, resources, …): a mapping with string keys."""
    if options is None:
        return {}
    if not isinstance(options, Mapping) or not all(isinstance(key, str) for key in options):
        raise Invalid(f"options must be a mapping with string keys, got {options!r}")
    result = dict(options)
    if "resources" in result:  # per-replica CPUs, GPUs and memory (the Ray backend reserves them)
        from fermion.platform.resources import check_resources

        result["resources"] = check_resources(result["resources"])
        if not result["resources"]:
            del result["resources"]
    return result


def check_scaling(min_replicas: int, max_replicas: int, target_in_flight: float) -> None:
    """0 ≤ min ≤ max, max ≥ 1, and a positive, finite target of in-flight requests per replica."""
    for label, value in (("min_replicas", min_replicas), ("max_replicas", max_replicas)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise Invalid(f"{label} must be a whole number ≥ 0, got {value!r}")
    if max_replicas < 1 or min_replicas > max_replicas:
        raise Invalid(f"need 0 ≤ min_replicas ≤ max_replicas and max_replicas ≥ 1, got min={min_replicas}, max={max_replicas}")
    if max_replicas > MAX_REPLICAS:
        raise Invalid(f"max_replicas is at most {MAX_REPLICAS}, got {max_replicas}")
    if isinstance(target_in_flight, bool) or not isinstance(target_in_flight, (int, float)):
        raise Invalid(f"target_in_flight must be a number > 0, got {target_in_flight!r}")
    if not math.isfinite(target_in_flight) or target_in_flight <= 0:
        raise Invalid(f"target_in_flight must be a number > 0, got {target_in_flight!r}")


def check_replica_state(state: str) -> str:
    """One of starting, ready, failed, stopping, stopped."""
    if state not in REPLICA_STATES:
        raise Invalid(f"invalid replica state {state!r}; use one of: {', '.join(REPLICA_STATES)}")
    return state


def scrub(detail: Mapping[str, Any] | None) -> dict[str, Any]:
    """A copy of an audit detail with secret-looking keys masked, at any depth."""

    def clean(value: Any) -> Any:
        if isinstance(value, Mapping):
            return {str(key): _mask_secret(item) if _is_secret(key) else clean(item) for key, item in value.items()}
        if isinstance(value, (list, tuple)):
            return [clean(item) for item in value]
        return _public(value)

    return clean(dict(detail or {}))


def _is_secret(key: object) -> bool:
    return any(word in str(key).lower() for word in SECRET_KEYS)


def _mask_secret(value: Any) -> Any:
    # Keep the names of an env mapping (useful in an audit trail), never the values.
    return mask_env(value) if isinstance(value, Mapping) else MASK
