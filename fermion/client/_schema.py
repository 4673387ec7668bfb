"""A Fermion OpenAPI document → one `EndpointInfo` per endpoint, plus Python signatures and docs for them.

Every operation with an `x-fermion` object is an endpoint; its parameters come from the request
body schema (POST and friends) or from the query `parameters` (GET).
"""

from __future__ import annotations

import inspect
import re
from dataclasses import dataclass, field
from typing import Any

FILE_MARK = "x-fermion-file"
_ARGS_SECTION = re.compile(r"^\s*(?:Args|Arguments|Parameters):\s*$", re.MULTILINE)
_JSON_TYPES = {"string": "str", "integer": "int", "number": "float", "boolean": "bool", "null": "None", "object": "dict"}


@dataclass(frozen=True)
class EndpointInfo:
    """What the client knows about one endpoint, read from the service's OpenAPI document."""

    name: str
    method: str
    path: str
    stream: bool
    params: tuple[str, ...]
    files: tuple[str, ...]
    required: tuple[str, ...]
    properties: dict[str, Any]
    summary: str
    description: str = ""
    #: JSON schema of one answer (of one item, for a stream).
    response: dict[str, Any] = field(default_factory=dict)


class SchemaError(ValueError):
    """The document at /openapi.json is not one this client can read."""


def _resolve(schema: dict[str, Any], components: dict[str, Any]) -> dict[str, Any]:
    """Follow a local `#/components/schemas/X` reference (one level; nested ones stay as they are)."""
    ref = schema.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/components/schemas/"):
        return components.get(ref.rsplit("/", 1)[-1], {})
    return schema


def _request_fields(op: dict[str, Any], components: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    if "parameters" in op:
        params = [p for p in op["parameters"] if p.get("in") == "query"]
        return {p["name"]: p.get("schema", {}) for p in params}, [p["name"] for p in params if p.get("required")]
    content = op.get("requestBody", {}).get("content", {})
    body = content.get("application/json") or next(iter(content.values()), {})
    schema = _resolve(body.get("schema", {}), components)
    return dict(schema.get("properties", {})), list(schema.get("required", []))


def _response_schema(op: dict[str, Any], components: dict[str, Any]) -> dict[str, Any]:
    content = op.get("responses", {}).get("200", {}).get("content", {})
    for kind, media in content.items():
        schema = media.get("schema", {})
        if kind == "text/event-stream":  # one event's schema: the item is the `data` of the message event
            schema = _stream_item(schema)
        return _resolve(schema, components)
    return {}


def _stream_item(schema: dict[str, Any]) -> dict[str, Any]:
    """The item schema inside a stream's event schema (`oneOf` message / end / error events); a document
    that gives the item directly (an older server) is returned as it is."""
    for event in schema.get("oneOf") or ():
        properties = event.get("properties", {}) if isinstance(event, dict) else {}
        if properties.get("event", {}).get("const") == "message":
            return properties.get("data", {}).get("contentSchema", {})
    return schema


def parse_endpoints(document: dict[str, Any]) -> dict[str, EndpointInfo]:
    """Every endpoint (`x-fermion` operation) of an OpenAPI document, by name."""
    if not isinstance(document, dict) or not isinstance(document.get("paths"), dict):
        raise SchemaError("the document has no 'paths'; is this the /openapi.json of a Fermion service?")
    components = document.get("components", {}).get("schemas", {})
    found: dict[str, EndpointInfo] = {}
    for path, operations in document["paths"].items():
        for method, op in operations.items():
            meta = op.get("x-fermion") if isinstance(op, dict) else None
            if not isinstance(meta, dict):
                continue
            properties, required = _request_fields(op, components)
            params = tuple(meta.get("params") or properties)
            name = meta.get("endpoint") or op.get("operationId") or path.strip("/")
            found[name] = EndpointInfo(
                name=name,
                method=method.upper(),
                path=path,
                stream=bool(meta.get("stream")),
                params=params,
                files=tuple(meta.get("files") or ()),
                required=tuple(p for p in params if p in required),
                properties=properties,
                summary=op.get("summary", ""),
                description=op.get("description", ""),
                response=_response_schema(op, components),
            )
    return found


def type_name(schema: dict[str, Any], depth: int = 0) -> str:
    """A Python-looking type for a JSON schema, for signatures and docs: `list[str] | None`."""
    if depth > 4 or not isinstance(schema, dict):
        return "Any"
    if schema.get(FILE_MARK):
        return "File"
    if schema.get("format") == "binary":
        return "bytes"
    if "$ref" in schema:
        return str(schema["$ref"]).rsplit("/", 1)[-1]
    if "enum" in schema:
        return "Literal[" + ", ".join(repr(v) for v in schema["enum"]) + "]"
    if "const" in schema:
        return f"Literal[{schema['const']!r}]"
    for key in ("anyOf", "oneOf"):
        if key in schema:
            names = dict.fromkeys(type_name(s, depth + 1) for s in schema[key])
            return " | ".join(names)
    kind = schema.get("type")
    if isinstance(kind, list):
        return " | ".join(type_name({**schema, "type": k}, depth + 1) for k in kind)
    if kind == "array":
        items = schema.get("prefixItems")
        if items:
            return "tuple[" + ", ".join(type_name(s, depth + 1) for s in items) + "]"
        return f"list[{type_name(schema.get('items', {}), depth + 1)}]"
    if kind == "object" and isinstance(schema.get("additionalProperties"), dict):
        return f"dict[str, {type_name(schema['additionalProperties'], depth + 1)}]"
    return _JSON_TYPES.get(kind, "Any") if isinstance(kind, str) else "Any"


def signature_of(info: EndpointInfo, returns: str) -> inspect.Signature:
    """The Python signature of an endpoint method: its params in order, with defaults and types."""
    parameters = []
    for name in info.params:
        if not name.isidentifier():
            continue  # reachable through call(**{name: ...}) only
        schema = info.properties.get(name, {})
        default = inspect.Parameter.empty if name in info.required else schema.get("default")
        parameters.append(
            inspect.Parameter(name, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=default, annotation=type_name(schema))
        )
    try:
        return inspect.Signature(parameters, return_annotation=returns)
    except ValueError:  # a required keyword-only parameter after a defaulted one
        return inspect.Signature([p.replace(kind=p.KEYWORD_ONLY) for p in parameters], return_annotation=returns)


def return_type(info: EndpointInfo) -> str:
    """The type of one answer (one item, for a stream)."""
    return type_name(info.response) if info.response else "Any"


def docstring_of(info: EndpointInfo) -> str:
    """Summary, description, arguments with types and defaults, and the route."""
    lines = [info.summary or info.name]
    # the server's description repeats the docstring's Args section; ours below adds types and defaults
    description = _ARGS_SECTION.split(info.description, maxsplit=1)[0].strip()
    if description:
        lines += ["", description]
    if info.params:
        lines += ["", "Args:"]
        for name in info.params:
            schema = info.properties.get(name, {})
            shown = type_name(schema)
            if name in info.files:
                shown = "bytes | Path | binary file | fermion.File"
            if name not in info.required:
                shown += f", default {schema.get('default')!r}"
            text = schema.get("description", "") if name not in info.files else ""
            lines.append(f"    {name} ({shown}){': ' + text if text else ''}")
    kind = "a stream of" if info.stream else "one"
    lines += ["", f"Returns {kind} {return_type(info)}; served at {info.method} {info.path}."]
    return "\n".join(lines)
