"""The platform client's one way to the API: an httpx client with the token, and errors as exceptions.

Every part of `Platform` (deployments, tokens, datasets, trainings, models) sends through one
`Transport`: `request` for JSON, `send` for anything else (uploads, reports, streams), both raising
the one error model of `fermion.client._errors`.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from fermion.client._errors import AuthError, PlatformAPIError, platform_error, transport_errors

if TYPE_CHECKING:
    import httpx

#: Where the REST API lives on a platform.
API = "/api/v1"


def quote_name(name: str, safe: str = "") -> str:
    """A name (or NAME@V reference with safe="@") as one path segment."""
    return quote(str(name), safe=safe)


class Transport:
    """One platform's URL, token and connection pool."""

    def __init__(
        self,
        url: str,
        token: str | None,
        timeout: float,
        transport: httpx.BaseTransport | None = None,
        ca_cert: str | Any = None,
    ) -> None:
        import httpx

        from fermion._version import __version__
        from fermion.client._tls import tls_verify

        self.url, self.token, self.timeout = url, token, timeout
        headers = {"user-agent": f"fermion-platform-client/{__version__}"}
        if token:
            headers["authorization"] = f"Bearer {token}"
        self.http = httpx.Client(base_url=url, headers=headers, timeout=timeout, transport=transport, verify=tls_verify(ca_cert))

    @contextmanager
    def errors(self) -> Iterator[None]:
        """Transport failures inside become `PlatformConnectionError` naming this platform."""
        with transport_errors(self.url, self.timeout, platform=True):
            yield

    def request(self, method: str, path: str, *, body: Any = None, params: Mapping[str, Any] | None = None) -> Any:
        """Send one API request (`path` under /api/v1) and return its decoded JSON; errors raise `PlatformAPIError`."""
        query = {key: value for key, value in (params or {}).items() if value is not None}
        with self.errors():
            response = self.http.request(method, API + path, json=body, params=query)
        return self.decode(response)

    def send(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        """Any other request (an upload, a page, a document); raises for an error answer, returns the response."""
        with self.errors():
            response = self.http.request(method, url, **kwargs)
        if not response.is_success:
            raise self.explained(platform_error(response))
        return response

    def decode(self, response: httpx.Response) -> Any:
        """The JSON of a successful answer; `PlatformAPIError` for an error or for an answer that is not JSON."""
        if not response.is_success:
            raise self.explained(platform_error(response))
        try:
            return response.json()
        except ValueError:
            raise PlatformAPIError(
                response.status_code,
                f"{response.request.url} did not answer with JSON; is {self.url} the URL of a Fermion platform (`fermion up`)?",
                body=response.text,
            ) from None

    def explained(self, error: PlatformAPIError) -> PlatformAPIError:
        """Add what to do when the client itself had no token to send."""
        if isinstance(error, AuthError) and not self.token:
            error.message = (
                f"{error.message} (no token was sent: give --token or set FERMION_TOKEN; "
                "the local `fermion up` keeps its admin token in its data dir as admin.token)"
            )
            error.args = (error.message,)
        return error

    def close(self) -> None:
        self.http.close()
