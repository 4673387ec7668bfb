"""What `Client` and `AsyncClient` share: configuration, the loaded schema, and endpoint methods."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fermion.client._errors import APIError, error_from_response
from fermion.client._request import PreparedCall, ServiceAPI
from fermion.client._schema import EndpointInfo, SchemaError, docstring_of, signature_of
from fermion.client._tls import tls_verify
from fermion.client._url import http_url

if TYPE_CHECKING:
    import httpx

OPENAPI_PATH = "/openapi.json"
#: Seconds a health or readiness probe waits for its answer.
PROBE_TIMEOUT = 5.0


class ClientBase:
    """Configuration and schema handling common to the sync and async clients."""

    _api: ServiceAPI | None = None

    def __init__(
        self,
        url: str,
        *,
        token: str | None = None,
        timeout: float | None = 60.0,
        headers: dict[str, str] | None = None,
        validate: bool = True,
        ca_cert: str | Path | None = None,
    ) -> None:
        """Point the client at `url` (`localhost:8000` means http://localhost:8000); `token` is sent as a bearer token, `headers` with every request.

        `timeout` is in seconds (None waits forever); `validate=False` skips the client-side schema
        check and leaves validation to the server. An https:// service is verified against `ca_cert`
        (a PEM file; default `$FERMION_CA_CERT`, else the system's CAs).
        """
        from fermion._version import __version__

        #: The service's base URL, without a trailing slash (it may end with a path prefix).
        self.url = http_url(url)
        self.timeout = timeout
        self.validate = validate
        #: What httpx's `verify=` gets (a context trusting `ca_cert`, or True); never False.
        self._verify = tls_verify(ca_cert)
        self._headers = {"user-agent": f"fermion-client/{__version__}", **{k.lower(): v for k, v in (headers or {}).items()}}
        if token:
            self._headers["authorization"] = f"Bearer {token}"
        self._methods: dict[str, Callable[..., Any]] = {}
        self._open()

    def _open(self) -> None:
        """Create the connection pool (and, for the blocking client, load the schema)."""
        raise NotImplementedError

    # -- the schema -------------------------------------------------------------------------

    def _load(self, response: httpx.Response) -> ServiceAPI:
        """Read the answer to GET /openapi.json (already read) into the client's endpoints."""
        where = self.url + OPENAPI_PATH
        if not response.is_success:
            error = error_from_response(response)
            raise APIError(
                error.status,
                f"cannot load {where}: {error.message}; is {self.url} the URL of a Fermion service?",
                request_id=error.request_id,
                body=error.body,
            )
        try:
            api = ServiceAPI(response.json(), self.url)
        except (ValueError, SchemaError) as exc:
            raise APIError(
                response.status_code, f"{where} is not a Fermion OpenAPI document ({exc}); check the URL", body=response.text
            ) from None
        self._api = api
        return api

    def _require_api(self) -> ServiceAPI:
        if self._api is None:
            raise RuntimeError("the client has not loaded the service's schema yet: `await client.connect()` first")
        return self._api

    @property
    def openapi(self) -> dict[str, Any]:
        """The service's OpenAPI document, as fetched from `{url}/openapi.json`."""
        return self._require_api().document

    @property
    def endpoints(self) -> dict[str, EndpointInfo]:
        """The service's endpoints by name."""
        return dict(self._require_api().endpoints)

    def _prepare(self, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> PreparedCall:
        return self._require_api().prepare(name, args, kwargs, validate=self.validate)

    def _build_request(self, http: httpx.Client | httpx.AsyncClient, call: PreparedCall) -> httpx.Request:
        info = call.info
        headers = {"accept": "text/event-stream"} if info.stream else None
        return http.build_request(
            info.method,
            self.url + info.path,
            params=call.query,
            json=call.json,
            data=call.data,
            files=call.files,
            headers=headers,
        )

    # -- endpoint methods -------------------------------------------------------------------

    def _answer_type(self, info: EndpointInfo) -> str:
        """The return annotation shown on an endpoint method."""
        raise NotImplementedError

    def _method(self, name: str) -> Callable[..., Any]:
        """The method for endpoint `name`, with its signature and docs (built once)."""
        method = self._methods.get(name)
        if method is None:
            info = self._require_api().endpoint(name)
            call = self.call  # type: ignore[attr-defined]

            def method(*args: Any, **kwargs: Any) -> Any:
                return call(name, *args, **kwargs)

            method.__name__ = method.__qualname__ = name
            method.__module__ = "fermion.client"
            method.__doc__ = docstring_of(info)
            method.__signature__ = signature_of(info, self._answer_type(info))  # type: ignore[attr-defined]
            self._methods[name] = method
        return method

    def __getattr__(self, name: str) -> Any:
        # Only reached when normal lookup fails, so endpoints never hide the client's own attributes.
        if name.startswith("__") or self.__dict__.get("_api") is None:
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")
        return self._method(name)

    def __dir__(self) -> list[str]:
        names = set(super().__dir__())
        if self._api is not None:
            names.update(n for n in self._api.endpoints if n.isidentifier())
        return sorted(names)

    def __repr__(self) -> str:
        count = "?" if self._api is None else len(self._api.endpoints)
        return f"{type(self).__name__}({self.url!r}, endpoints={count})"


def readiness(response: httpx.Response) -> tuple[bool, str]:
    """Whether a /healthz or /readyz answer says yes, and what it said, for error messages."""
    text = response.text.strip()
    return response.status_code == 200, f"{response.status_code} {text[:200]}".strip()


class ReadyWait:
    """The schedule of `wait_ready()`: how long each probe may take and how long to pause between them."""

    def __init__(self, url: str, timeout: float, interval: float) -> None:
        self.url = url
        self.timeout = timeout
        self.interval = interval
        self.deadline = time.monotonic() + timeout

    def probe_timeout(self) -> float:
        """How long the next probe may wait for its answer."""
        return max(0.1, min(PROBE_TIMEOUT, self.deadline - time.monotonic()))

    def pause(self, last: str) -> float:
        """Seconds to sleep before the next probe; `TimeoutError` (quoting `last`) once time is up."""
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(
                f"{self.url} is not ready after {self.timeout:g} s (last answer from /readyz: {last or 'none'}); "
                "setup() may still be running or may have failed: check the server's log"
            )
        return min(self.interval, remaining)
