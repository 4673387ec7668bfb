"""Python clients for Fermion services: endpoint methods built from the service's OpenAPI document.

`Client(url).predict(text="hi")` calls the `predict` endpoint; `for item in client.count(n=3)` reads
a stream as it arrives; `AsyncClient` does the same with `await` and `async for`. `parse_endpoints` and `form_value` are how
the clients read /openapi.json and write query fields, for other tools that build requests (`fermion bench`).
"""

from __future__ import annotations

from fermion.client._async import AsyncCall, AsyncClient
from fermion.client._errors import APIConnectionError, APIError, APITimeoutError, RequestValidationError
from fermion.client._request import form_value
from fermion.client._schema import EndpointInfo, SchemaError, parse_endpoints
from fermion.client._sync import Client
from fermion.client._tls import CACertError
from fermion.client._url import http_url

__all__ = [
    "APIConnectionError",
    "APIError",
    "APITimeoutError",
    "AsyncCall",
    "AsyncClient",
    "CACertError",
    "Client",
    "EndpointInfo",
    "RequestValidationError",
    "SchemaError",
    "form_value",
    "http_url",
    "parse_endpoints",
]
