"""`Platform`: the Python client of a `fermion up` platform's REST API (docs/platform-api.md).

    from fermion import Platform
    platform = Platform()                                  # the local `fermion up`, or $FERMION_URL
    platform.deployments.create("echo", "examples/echo.py")
    platform.deployments.wait_ready("echo")
    print(platform.client("echo").predict(text="hi"))       # through the gateway

The CLI's platform commands are built on this client, so both behave the same.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from fermion.client._errors import (
    AuthError,
    ConflictError,
    DeploymentFailed,
    ForbiddenError,
    InvalidError,
    NotFoundError,
    PlatformAPIError,
    PlatformConnectionError,
    TooManyRequestsError,
)
from fermion.client.platform.build import Batches, Datasets, Models, Trainings
from fermion.client.platform.deployments import EVENT_PAGE, Deployments, latest
from fermion.client.platform.tokens import Tokens
from fermion.client.platform.transport import Transport
from fermion.client.platform.transport import quote_name as _path
from fermion.client.platform.types import (
    AuditEntry,
    Deployment,
    Event,
    PlatformInfo,
    Replica,
    ReplicaCounts,
    Revision,
    TokenInfo,
)
from fermion.platform.home import NoPlatform, discover

if TYPE_CHECKING:
    import httpx

    from fermion.client import Client

__all__ = [
    "AuditEntry",
    "AuthError",
    "ConflictError",
    "Deployment",
    "DeploymentFailed",
    "Deployments",
    "Event",
    "ForbiddenError",
    "InvalidError",
    "NoPlatform",
    "NotFoundError",
    "Platform",
    "PlatformAPIError",
    "PlatformConnectionError",
    "PlatformInfo",
    "Replica",
    "ReplicaCounts",
    "Revision",
    "TokenInfo",
    "Tokens",
    "TooManyRequestsError",
]


class Platform:
    """A blocking client for one platform: `platform.deployments`, `platform.tokens`, events, audit and info.

    With no `url`, it finds the platform like the CLI does (`FERMION_URL`/`FERMION_TOKEN`, else the
    local `fermion up` and its admin token); `fermion.platform.home.NoPlatform` if there is none.
    An https:// platform is verified against `ca_cert` (a PEM file; default `$FERMION_CA_CERT`, else
    the system's CAs).
    """

    def __init__(
        self,
        url: str | None = None,
        token: str | None = None,
        *,
        timeout: float = 30.0,
        transport: httpx.BaseTransport | None = None,
        data_dir: Path | None = None,
        ca_cert: str | Path | None = None,
    ) -> None:
        """Find the platform (see the class docstring; `data_dir`: the local one of that data dir); `transport` replaces
        httpx's, e.g. `httpx.MockTransport` in tests."""
        from fermion.client._url import http_url

        target = discover(url, token, data_dir)
        #: The platform's base URL, without a trailing slash (`--url localhost:8080` means plain HTTP).
        self.url = http_url(target.url, "the platform")
        self.token = target.token
        #: Where the URL came from: "option", "environment" or the local data dir.
        self.found_by = target.found_by
        self.timeout = timeout
        #: The CA file https:// answers are verified with (None: `$FERMION_CA_CERT`, else the system's CAs).
        self.ca_cert = ca_cert
        #: The one connection pool and error mapping every part below sends through.
        self.transport = Transport(self.url, self.token, timeout, transport, ca_cert)
        self.deployments = Deployments(self.transport)
        self.tokens = Tokens(self.transport)
        self.datasets = Datasets(self.transport)
        self.trainings = Trainings(self.transport)
        self.batches = Batches(self.transport)
        self.models = Models(self.transport)

    # -- HTTP ------------------------------------------------------------------------------------

    def request(self, method: str, path: str, *, body: Any = None, params: Mapping[str, Any] | None = None) -> Any:
        """Send one API request (`path` under /api/v1) and return its decoded JSON; errors raise `PlatformAPIError`."""
        return self.transport.request(method, path, body=body, params=params)

    # -- platform-wide -------------------------------------------------------------------------

    def events(self, deployment: str | None = None, after: int | None = None, limit: int = 100) -> list[Event]:
        """Events, oldest first, of every deployment or one; poll with `after` = the last id seen."""
        answer = self.request("GET", "/events", params={"deployment": deployment, "after": after, "limit": limit})
        return [Event.from_json(item) for item in answer["events"]]

    def latest_events(self, count: int = 20, deployment: str | None = None) -> list[Event]:
        """The last `count` events (of every deployment, or of one), oldest first."""
        return latest(lambda after: self.events(deployment, after=after, limit=EVENT_PAGE), count)

    def audit(self, limit: int = 100) -> list[AuditEntry]:
        """The audit log, newest first (needs an admin token)."""
        return [AuditEntry.from_json(item) for item in self.request("GET", "/audit", params={"limit": limit})["entries"]]

    def info(self) -> PlatformInfo:
        """The platform's version, backend, database and number of deployments."""
        return PlatformInfo.from_json(self.request("GET", "/info"))

    def openapi(self, name: str) -> dict[str, Any]:
        """Deployment `name`'s OpenAPI document, fetched through the gateway (a replica must be ready)."""
        response = self.transport.send("GET", f"/run/{_path(name)}/openapi.json")
        document = self.transport.decode(response)
        if not isinstance(document, dict):
            raise PlatformAPIError(response.status_code, f"{response.request.url} is not an OpenAPI document", body=response.text)
        return document

    def client(self, name: str, *, timeout: float | None = 60.0) -> Client:
        """A `fermion.Client` calling deployment `name` through the gateway, with this client's token."""
        from fermion.client import Client

        return Client(f"{self.url}/run/{_path(name)}", token=self.token, timeout=timeout, ca_cert=self.ca_cert)

    # -- lifetime ----------------------------------------------------------------------------------

    def close(self) -> None:
        """Close the connection pool."""
        self.transport.close()

    def __enter__(self) -> Platform:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Platform({self.url!r})"
