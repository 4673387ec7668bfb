"""Which request to send: an endpoint name and a base URL → method, full URL and body, from /openapi.json."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode


class TargetError(ValueError):
    """The service cannot be reached, or has no such endpoint, or the payload is unusable."""


class UnknownEndpoint(TargetError):
    """The service answers, but has no endpoint of that name."""


@dataclass(frozen=True)
class Target:
    """One request, ready to be sent over and over."""

    endpoint: str
    method: str
    url: str
    body: bytes | None
    headers: dict[str, str] = field(default_factory=dict)
    #: The arguments sent (the body's or the query's), for reports.
    arguments: dict[str, Any] = field(default_factory=dict)


def example_arguments(document: dict[str, Any], endpoint: str) -> dict[str, Any]:
    """Example values for the endpoint's required parameters, built from its schema."""
    from fermion.client import parse_endpoints
    from fermion.schema import example_value

    info = parse_endpoints(document)[endpoint]
    components = document.get("components", {}).get("schemas", {})
    return {name: example_value(info.properties.get(name, {}), components) for name in info.required}


def resolve_target(
    url: str, endpoint: str, arguments: dict[str, Any] | None = None, token: str | None = None, timeout: float = 10.0
) -> Target:
    """Read `url`/openapi.json and build the request for `endpoint` (example arguments when none are given)."""
    import httpx

    from fermion.client import SchemaError, form_value, parse_endpoints

    base = url.rstrip("/")
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        response = httpx.get(base + "/openapi.json", headers=headers, timeout=timeout)
    except httpx.HTTPError as exc:
        raise TargetError(f"cannot reach {base}: {exc or type(exc).__name__}; is the service running?") from exc
    if response.status_code in (401, 403):
        raise TargetError(f"{base} refused the request ({response.status_code}); pass a token with --token")
    if response.status_code != 200:
        raise TargetError(f"{base}/openapi.json answered {response.status_code}; is {base} a Fermion service?")
    try:
        document = response.json()
        endpoints = parse_endpoints(document)
    except (ValueError, SchemaError) as exc:
        raise TargetError(f"{base}/openapi.json is not a Fermion OpenAPI document: {exc}") from exc
    info = endpoints.get(endpoint)
    if info is None:
        raise UnknownEndpoint(f"{base} has no endpoint {endpoint!r}; it has: {', '.join(endpoints) or 'none'}")
    args = example_arguments(document, endpoint) if arguments is None else arguments
    if info.method in ("GET", "HEAD", "DELETE"):
        pairs = [(k, form_value(item)) for k, v in args.items() for item in (v if isinstance(v, list) else [v])]
        query = ("?" + urlencode(pairs)) if pairs else ""
        return Target(endpoint, info.method, base + info.path + query, None, headers, args)
    body = json.dumps(args, ensure_ascii=False, separators=(",", ":")).encode()
    return Target(endpoint, info.method, base + info.path, body, {**headers, "Content-Type": "application/json"}, args)
