"""Fermion: turn a Python class or a model into a fast, typed, documented HTTP API.

`import fermion` is kept cheap: the public names below are loaded on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fermion._version import __version__

if TYPE_CHECKING:
    from fermion.client import APIError, AsyncClient, Client
    from fermion.client.platform import Platform
    from fermion.responses import EndpointError, EventStream, InvalidInput, Response
    from fermion.service import Service, endpoint
    from fermion.serving.deadlines import cancelled
    from fermion.types import File

__all__ = [
    "APIError",
    "AsyncClient",
    "Client",
    "EndpointError",
    "EventStream",
    "File",
    "InvalidInput",
    "Platform",
    "Response",
    "Service",
    "__version__",
    "cancelled",
    "endpoint",
]

_LAZY = {
    "Service": "fermion.service",
    "endpoint": "fermion.service",
    "File": "fermion.types",
    "Client": "fermion.client",
    "AsyncClient": "fermion.client",
    "APIError": "fermion.client",
    "Platform": "fermion.client.platform",
    "Response": "fermion.responses",
    "EventStream": "fermion.responses",
    "EndpointError": "fermion.responses",
    "InvalidInput": "fermion.responses",
    "cancelled": "fermion.serving.deadlines",
}


def __getattr__(name: str) -> Any:
    module_name = _LAZY.get(name)
    if module_name is None:
        raise AttributeError(f"module 'fermion' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module_name), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
