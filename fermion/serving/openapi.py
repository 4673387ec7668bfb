"""The OpenAPI 3.1 document of a Service, built from its endpoints' schemas, and the /docs page.

Each endpoint operation carries an `x-fermion` object (endpoint name, stream, batch, files,
parameter order) that the Python client and the console read to build their calls.
"""

from __future__ import annotations

import copy
import html
from typing import TYPE_CHECKING, Any

from fermion._version import __version__
from fermion.types import FILE_SCHEMA_MARK

if TYPE_CHECKING:
    from fermion.service import Endpoint, Service

REF = "#/components/schemas/{model}"

_ERROR_SCHEMA = {
    "type": "object",
    "title": "Error",
    "properties": {
        "error": {"type": "string", "description": "What went wrong, for people."},
        "request_id": {"type": "string"},
        "detail": {
            "type": "array",
            "description": "For 422: one entry per invalid field.",
            "items": {
                "type": "object",
                "properties": {
                    "field": {"type": "string"},
                    "message": {"type": "string"},
                    "type": {"type": "string"},
                },
            },
        },
    },
    "required": ["error"],
}
_ERROR_RESPONSES = {
    "400": "The body could not be read: malformed JSON or multipart, or a bad request line.",
    "409": "The request was cancelled by `DELETE /requests/{request_id}` before it finished.",
    "422": "The request does not match the schema; `detail` names each field and the reason.",
    "413": "The body is larger than the replica's limit (`--max-body-size`).",
    "415": "The body's Content-Type is not JSON, multipart/form-data or a URL-encoded form.",
    "429": "The endpoint is at its concurrency limit and its queue is full; retry after `Retry-After` seconds.",
    "500": "The endpoint raised; the traceback is in the server log under `request_id`.",
    "503": "The replica is still starting (setup() has not finished) or is shutting down.",
    "504": "The endpoint did not finish within its timeout.",
}


def _error_ref() -> dict[str, Any]:
    return {"application/json": {"schema": {"$ref": REF.format(model="Error")}}}


def is_file_schema(schema: dict[str, Any]) -> bool:
    """Whether a JSON schema (a property of a request, say) takes a `File` or `Image`, alone or as one of several types."""
    if schema.get(FILE_SCHEMA_MARK):
        return True
    return any(is_file_schema(s) for key in ("anyOf", "oneOf") for s in schema.get(key, ()))


def _multipart_schema(request_schema: dict[str, Any]) -> dict[str, Any]:
    schema = copy.deepcopy(request_schema)
    binary = {"type": "string", "format": "binary"}
    for name, prop in schema.get("properties", {}).items():
        if is_file_schema(prop):
            schema["properties"][name] = {**binary, "description": prop.get("description", "")}
        elif prop.get("type") == "array" and is_file_schema(prop.get("items", {})):
            schema["properties"][name] = {"type": "array", "items": binary, "description": prop.get("description", "")}
    return schema


def _operation(
    ep: Endpoint, components: dict[str, Any], request_ref: dict[str, Any], response_ref: dict[str, Any]
) -> dict[str, Any]:
    schema = ep.schema
    request_name = request_ref["$ref"].rsplit("/", 1)[-1]
    request_schema = components.get(request_name, {})
    op: dict[str, Any] = {
        "operationId": ep.name,
        "summary": ep.summary,
        "tags": list(ep.tags) or ["endpoints"],
        "x-fermion": {
            "endpoint": ep.name,
            "stream": ep.stream,
            "batch": None
            if ep.batch is None
            else {"max_batch_size": ep.batch.max_batch_size, "max_wait_ms": ep.batch.max_wait_ms},
            "files": list(schema.file_params),
            "params": [p.name for p in schema.params],
        },
    }
    if ep.description:
        op["description"] = ep.description
    if ep.method == "GET":
        required = set(request_schema.get("required", ()))
        op["parameters"] = [
            {"name": name, "in": "query", "required": name in required, "schema": prop}
            for name, prop in request_schema.get("properties", {}).items()
        ]
    else:
        content: dict[str, Any] = {"application/json": {"schema": request_ref}}
        if schema.file_params:
            content["multipart/form-data"] = {"schema": _multipart_schema(request_schema)}
        op["requestBody"] = {"required": bool(request_schema.get("required")), "content": content}
    if ep.stream:
        ok = {
            "description": "Server-sent events: one `data:` event per item (JSON), then `event: end`.",
            "content": {"text/event-stream": {"schema": _event_schema(response_ref)}},
        }
    else:
        ok = {"description": "Success", "content": {"application/json": {"schema": response_ref}}}
    op["responses"] = {
        "200": ok,
        **{code: {"description": text, "content": _error_ref()} for code, text in _ERROR_RESPONSES.items()},
    }
    return op


def _event_schema(item_ref: dict[str, Any]) -> dict[str, Any]:
    """One server-sent event, as OpenAPI tools read a `text/event-stream` schema (each event's fields, its `data` a
    JSON document): an item, the closing `end`, or an `error` with the error body."""

    def event(name: str, data: dict[str, Any]) -> dict[str, Any]:
        return {
            "type": "object",
            "properties": {
                "event": {"const": name},
                "data": {"type": "string", "contentMediaType": "application/json", "contentSchema": data},
            },
            "required": ["event", "data"],
        }

    return {
        "oneOf": [
            event("message", item_ref),
            event("end", {"type": "object"}),
            event("error", {"$ref": REF.format(model="Error")}),
        ],
        "description": "An item of the stream (`data:` without an event name), then `event: end`; a failure after the "
        "stream started is `event: error` with the error body.",
    }


def _system_paths() -> dict[str, Any]:
    def op(summary: str, content_type: str) -> dict[str, Any]:
        return {
            "get": {
                "summary": summary,
                "tags": ["system"],
                "responses": {"200": {"description": "OK", "content": {content_type: {}}}},
            }
        }

    paths = {
        "/healthz": op("Liveness: 200 while the process serves", "application/json"),
        "/readyz": op("Readiness: 503 until setup() has finished, then 200", "application/json"),
        "/metrics": op("Prometheus metrics", "text/plain"),
    }
    paths["/readyz"]["get"]["responses"]["503"] = {"description": "Still starting, or shutting down"}
    paths["/requests/{request_id}"] = {"delete": _cancel_operation()}
    return paths


def _cancel_operation() -> dict[str, Any]:
    """`DELETE /requests/{request_id}`, served by every replica (see `ReplicaApp._cancel_request`)."""
    return {
        "summary": "Cancel one request in flight",
        "description": (
            "Cancels the queued, running or streaming request with this id (the `X-Request-ID` header of its answer, "
            "or the one its caller sent). Its caller gets 409 (a stream that already started ends with an `error` "
            "event); async code gets `CancelledError`, a stream's generator is closed, and sync code that is already "
            "running in a thread finishes but its result is discarded. An operator endpoint: a replica listens on "
            "127.0.0.1 behind the platform's gateway, which checks the caller's token for `DELETE /run/<deployment>/requests/{request_id}`."
        ),
        "tags": ["system"],
        "parameters": [{"name": "request_id", "in": "path", "required": True, "schema": {"type": "string"}}],
        "responses": {
            "202": {
                "description": "Cancelled: the request's caller is answered 409 at once.",
                "content": {
                    "application/json": {
                        "schema": {
                            "type": "object",
                            "properties": {
                                "request_id": {"type": "string"},
                                "endpoint": {"type": "string"},
                                "cancelled": {"type": "boolean", "const": True},
                            },
                            "required": ["request_id", "endpoint", "cancelled"],
                        }
                    }
                },
            },
            "404": {
                "description": "No request with this id is in flight here (it finished, or never came here).",
                "content": _error_ref(),
            },
        },
    }


def build_openapi(service: type[Service] | Service) -> dict[str, Any]:
    """The OpenAPI document for every endpoint of `service`."""
    from pydantic.json_schema import models_json_schema

    from fermion.service import Service

    cls = service if isinstance(service, type) else type(service)
    endpoints = cls.endpoints()
    models: list[tuple[Any, Any]] = []
    for ep in endpoints:
        models.append((ep.schema.request_model, "validation"))
        models.append((ep.schema.response_model, "serialization"))
    refs, defs = models_json_schema(models, ref_template=REF) if models else ({}, {})
    components: dict[str, Any] = dict(defs.get("$defs", {}))
    components["Error"] = _ERROR_SCHEMA
    paths: dict[str, Any] = {}
    for ep in endpoints:
        request_ref = refs[(ep.schema.request_model, "validation")]
        response_ref = refs[(ep.schema.response_model, "serialization")]
        paths.setdefault(ep.path, {})[ep.method.lower()] = _operation(ep, components, request_ref, response_ref)
    paths.update(_system_paths())
    info: dict[str, Any] = {"title": cls.service_name(), "version": cls.version}
    if cls.__doc__ and cls.__doc__ is not Service.__doc__:
        info["description"] = cls.__doc__.strip()
    return {
        "openapi": "3.1.0",
        "info": info,
        "paths": paths,
        "components": {"schemas": components},
        "x-fermion": {"version": __version__, "service": cls.service_name()},
    }


#: Without the docs extra, Swagger UI comes from this CDN at this exact version, checked by Subresource Integrity.
#: The hashes are of the files in the npm package swagger-ui-dist@5.31.0 (what jsDelivr's /npm/ serves unchanged),
#: byte-identical to those in swagger-ui-bundle-v2 5.31.0; tests/test_browser_headers.py checks them against the
#: installed package when its version is this one. Change the version and the hashes together.
SWAGGER_UI_VERSION = "5.31.0"
SWAGGER_CDN = f"https://cdn.jsdelivr.net/npm/swagger-ui-dist@{SWAGGER_UI_VERSION}"
SWAGGER_SRI = {
    "swagger-ui-bundle.js": "sha384-cxafBeQ+zYROeFafGFxtFbnp1ICqeS9mG7+f0WWSHzhnrUvwg9Za5CCw6wgrHA7K",
    "swagger-ui.css": "sha384-KX9Rx9vM1AmUNAn07bPAiZhFD4C8jdNgG6f5MRNvR+EfAxs2PmMFtUUazui7ryZQ",
}
#: The docs page's one script of its own, served as a file (`<docs>/init.js`) so that the page needs no inline script.
DOCS_INIT_JS = b"""window.ui = SwaggerUIBundle({
  url: document.getElementById("swagger-ui").dataset.openapiUrl,
  dom_id: "#swagger-ui",
  deepLinking: true,
});
"""


def docs_page(openapi_url: str, title: str, assets_url: str | None, init_url: str) -> str:
    """Swagger UI for the service: its assets from `assets_url` (the `swagger-ui-bundle-v2` package's files) or,
    when None, from the CDN with integrity hashes; `init_url` serves `DOCS_INIT_JS`."""
    if assets_url:
        base, checks = assets_url, {name: "" for name in SWAGGER_SRI}
    else:
        base = SWAGGER_CDN
        checks = {name: f' integrity="{sri}" crossorigin="anonymous"' for name, sri in SWAGGER_SRI.items()}
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{html.escape(title)} · API docs</title>
<link rel="stylesheet" href="{base}/swagger-ui.css"{checks["swagger-ui.css"]}></head>
<body><div id="swagger-ui" data-openapi-url="{html.escape(openapi_url)}"></div>
<script src="{base}/swagger-ui-bundle.js"{checks["swagger-ui-bundle.js"]}></script>
<script src="{html.escape(init_url)}"></script>
</body></html>"""


def docs_csp(local_assets: bool) -> str:
    """The Content-Security-Policy of the docs page: scripts only from here (and the pinned CDN without the docs
    extra). Swagger UI sets style attributes, so styles may be inline; nothing may frame the page."""
    cdn = "" if local_assets else " https://cdn.jsdelivr.net"
    return (
        f"default-src 'self'; script-src 'self'{cdn}; style-src 'self' 'unsafe-inline'{cdn}; img-src 'self' data:; "
        "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    )


def swagger_assets_dir() -> str | None:
    """Folder of the installed Swagger UI assets, if the optional package is present."""
    try:
        import swagger_ui_bundle  # type: ignore[import-not-found]
    except ImportError:
        return None
    return str(swagger_ui_bundle.swagger_ui_path)
