"""What the platform client returns and raises: frozen records built from the API's JSON, and its errors.

Split from `fermion.client.platform` (which re-exports all of it); only the client imports httpx.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, fields
from datetime import datetime
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

if TYPE_CHECKING:
    import httpx

_SHOWN_BODY = 300  # characters of a non-JSON answer kept in an error message

# -- errors ------------------------------------------------------------------------------------


class PlatformAPIError(Exception):
    """The platform answered with an error (or, with `status` 0, could not be reached).

    `code` is the API's error code (`not_found`, `conflict`, `invalid`, ...), `message` says what
    went wrong and what to do; `str(error)` is the message.
    """

    def __init__(self, status: int, message: str, code: str = "", body: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.body = body


class PlatformConnectionError(PlatformAPIError):
    """No answer: nothing listens at the URL, the connection broke, or it timed out."""


class AuthError(PlatformAPIError):
    """401: no token, or an unknown, revoked or expired one."""


class ForbiddenError(PlatformAPIError):
    """403: the token is valid but lacks the scope (invoke < deploy < admin)."""


class NotFoundError(PlatformAPIError):
    """404: no such deployment, revision or token; the message lists the known ones."""


class ConflictError(PlatformAPIError):
    """409: e.g. a deployment with that name already exists."""


class InvalidError(PlatformAPIError):
    """422: a value breaks a rule, or the source does not load (the message is `fermion serve`'s error)."""


class TooManyRequestsError(PlatformAPIError):
    """429: a bounded queue is full (e.g. training jobs); `retry_after` is the server's Retry-After in seconds."""

    retry_after: float | None = None


class DeploymentFailed(Exception):
    """`wait_ready()` gave up early: the deployment's replicas keep crashing (the message quotes why)."""


_ERRORS: dict[int, type[PlatformAPIError]] = {
    401: AuthError,
    403: ForbiddenError,
    404: NotFoundError,
    409: ConflictError,
    422: InvalidError,
    429: TooManyRequestsError,
}


def error_from_response(response: httpx.Response) -> PlatformAPIError:
    """The `PlatformAPIError` subclass for an error answer (body already read)."""
    status, body = response.status_code, response.text
    try:
        payload = json.loads(body) if body else None
    except ValueError:
        payload = None
    code, message = "", ""
    if isinstance(payload, dict):
        if isinstance(payload.get("message"), str):  # the API's {"error", "status", "message"}
            code, message = str(payload.get("error", "")), payload["message"]
        elif isinstance(payload.get("error"), str):  # the gateway's {"error": "..."}
            message = payload["error"]
        elif isinstance(payload.get("detail"), str):
            message = payload["detail"]
    if not message:
        text = body.strip()
        shown = text[:_SHOWN_BODY] + ("…" if len(text) > _SHOWN_BODY else "")
        message = f"{response.request.url} answered {status} {shown or '(no body)'}; is that the URL of a Fermion platform (`fermion up`)?"
    error = _ERRORS.get(status, PlatformAPIError)(status, message, code, body)
    if isinstance(error, TooManyRequestsError):
        try:
            error.retry_after = float(response.headers.get("retry-after", ""))
        except ValueError:
            pass
    return error


# -- records -----------------------------------------------------------------------------------

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
    created_at: datetime | None = None
    expires_at: datetime | None = None
    revoked_at: datetime | None = None
    last_used_at: datetime | None = None

    _nested: ClassVar[dict[str, Callable[[Any], Any]]] = {"scopes": lambda value: tuple(value or ())}


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
    """The platform's version, backend, database (password hidden), URL and number of deployments."""

    version: str = ""
    backend: str = ""
    database: str = ""
    url: str = ""
    deployments: int = 0


@contextlib.contextmanager
def transport_errors(url: str, timeout: float) -> Iterator[None]:
    """httpx's transport failures → `PlatformConnectionError` naming the platform's URL and what to do."""
    import httpx

    from fermion.client._tls import certificate_advice, certificate_problem, plain_http_hint

    try:
        yield
    except httpx.TimeoutException as exc:
        raise PlatformConnectionError(
            0, f"no answer from the platform at {url} within {timeout:g} s; it may be overloaded", "timeout"
        ) from exc
    except httpx.ConnectError as exc:
        problem = certificate_problem(exc)
        if problem is not None:
            raise PlatformConnectionError(0, certificate_advice(f"the platform at {url}", problem), "certificate") from exc
        raise PlatformConnectionError(
            0,
            f"cannot reach the platform at {url} ({exc or type(exc).__name__}); start one with `fermion up`, or check --url / FERMION_URL",
            "unreachable",
        ) from exc
    except httpx.TransportError as exc:
        raise PlatformConnectionError(
            0, f"the connection to the platform at {url} failed: {exc or type(exc).__name__}" + plain_http_hint(url), "unreachable"
        ) from exc
