"""Low-level ASGI helpers: bounded body reading, form parsing, JSON and error responses."""

from __future__ import annotations

import base64
import os
import re
from typing import Any
from urllib.parse import parse_qsl

import orjson

from fermion.types import File

Headers = list[tuple[bytes, bytes]]
JSON_TYPE = (b"content-type", b"application/json")


class HTTPError(Exception):
    """An error answer: status, a message for people, optional field details and headers."""

    def __init__(
        self, status: int, message: str, *, detail: list[dict[str, Any]] | None = None, headers: Headers | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.detail = detail
        self.headers = headers or []


def failure_message(exc: BaseException, endpoint: str | None = None) -> str:
    """What a client is told when user code raised: the exception's name only. Its text may describe the
    machine rather than the request (a path, a query, "Unable to allocate 22.0 GiB ..."), so it stays
    in the server log; an endpoint that means to explain raises `EndpointError` or `InvalidInput`."""
    where = f" in endpoint {endpoint!r}" if endpoint is not None else ""
    return f"{type(exc).__name__}{where}; the details are in the server log under this request id"


class ClientDisconnected(Exception):
    """The client went away before its answer was ready."""


_VALID_REQUEST_ID = re.compile(rb"[A-Za-z0-9._:-]{1,64}")
#: The most bytes of request headers a replica or the platform's API takes (HAProxy's default buffer holds 16 KiB for
#: the whole request head); uvicorn's httptools parser sets no limit of its own.
MAX_HEADER_BYTES = 32 * 1024


def oversized_headers(scope: dict[str, Any]) -> HTTPError | None:
    """A 431 if the request's headers are over `MAX_HEADER_BYTES`, else None."""
    size = sum(len(name) + len(value) + 4 for name, value in scope.get("headers", ()))
    if size <= MAX_HEADER_BYTES:
        return None
    return HTTPError(
        431, f"the request's headers are {size} bytes, over the limit of {MAX_HEADER_BYTES}; send fewer or smaller ones"
    )


def bearer_token(value: str | bytes | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` value; None when there is none."""
    text = value.decode("latin-1") if isinstance(value, bytes) else value or ""
    kind, _, token = text.partition(" ")
    return token.strip() if kind.lower() == "bearer" and token.strip() else None


def new_request_id() -> bytes:
    """16 random hex digits: unguessable, because knowing a request's id is enough to cancel it."""
    return os.urandom(8).hex().encode()


def valid_request_id(value: bytes) -> bool:
    """Whether a caller's X-Request-ID can be kept: 1-64 letters, digits or `._:-` (it appears in URLs)."""
    return _VALID_REQUEST_ID.fullmatch(value) is not None


def parse_query(query: bytes, list_params: frozenset[str], json_params: frozenset[str] = frozenset()) -> dict[str, Any]:
    """Query string → fields; repeated keys (and list-typed parameters) become lists; dict/model fields are JSON."""
    fields: dict[str, Any] = {}
    for key, value in parse_qsl(query.decode("latin-1"), keep_blank_values=True):
        _add_field(fields, key, _form_value(value, key in json_params), list_params)
    return fields


def _add_field(fields: dict[str, Any], key: str, value: Any, list_params: frozenset[str]) -> None:
    """Collect one form/query value: list-typed fields gather every value, repeated keys become lists."""
    if key in list_params:
        items = fields.setdefault(key, [])
        if isinstance(value, list):  # one part holding a JSON array
            items.extend(value)
        else:
            items.append(value)
    elif key in fields:
        previous = fields[key]
        fields[key] = [*previous, value] if isinstance(previous, list) else [previous, value]
    else:
        fields[key] = value


def _form_value(raw: str, as_json: bool) -> Any:
    if as_json:
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError:
            return raw
    return raw


def parse_multipart(
    content_type: bytes, body: bytes, json_params: frozenset[str], list_params: frozenset[str] = frozenset()
) -> dict[str, Any]:
    """multipart/form-data → fields: file parts become `File`, other parts strings (JSON where typed)."""
    from python_multipart.multipart import MultipartParser, parse_options_header

    _, options = parse_options_header(content_type)
    boundary = options.get(b"boundary")
    if not boundary:
        raise HTTPError(400, "multipart/form-data without a boundary: let your HTTP client build the form")
    parts: list[dict[str, Any]] = []
    current: dict[str, Any] = {}
    header_field = bytearray()
    header_value = bytearray()

    def on_part_begin() -> None:
        nonlocal current
        current = {"headers": {}, "data": bytearray()}
        parts.append(current)

    def on_header_field(data: bytes, start: int, end: int) -> None:
        header_field.extend(data[start:end])

    def on_header_value(data: bytes, start: int, end: int) -> None:
        header_value.extend(data[start:end])

    def on_header_end() -> None:
        current["headers"][bytes(header_field).lower()] = bytes(header_value)
        header_field.clear()
        header_value.clear()

    def on_part_data(data: bytes, start: int, end: int) -> None:
        current["data"].extend(data[start:end])

    parser = MultipartParser(
        boundary,
        {
            "on_part_begin": on_part_begin,
            "on_header_field": on_header_field,
            "on_header_value": on_header_value,
            "on_header_end": on_header_end,
            "on_part_data": on_part_data,
        },
    )
    try:
        parser.write(body)
        parser.finalize()
    except Exception as exc:
        raise HTTPError(400, f"malformed multipart body: {exc}") from None
    fields: dict[str, Any] = {}
    for part in parts:
        disposition, params = parse_options_header(part["headers"].get(b"content-disposition", b""))
        name = params.get(b"name")
        if disposition != b"form-data" or name is None:
            continue
        key = name.decode("utf-8", "replace")
        filename = params.get(b"filename")
        if filename is not None:
            ctype = part["headers"].get(b"content-type")
            value: Any = File(
                bytes(part["data"]),
                filename=filename.decode("utf-8", "replace"),
                content_type=ctype.decode("latin-1") if ctype else None,
            )
        else:
            value = _form_value(part["data"].decode("utf-8", "replace"), key in json_params)
        _add_field(fields, key, value, list_params)
    return fields


def parse_urlencoded(body: bytes, json_params: frozenset[str]) -> dict[str, Any]:
    """application/x-www-form-urlencoded → fields."""
    return {k: _form_value(v, k in json_params) for k, v in parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True)}


def _json_default(value: Any) -> Any:
    if hasattr(value, "model_dump"):
        return value.model_dump(mode="json")
    if isinstance(value, File):
        return base64.b64encode(value.data).decode("ascii")
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    if isinstance(value, (bytes, bytearray)):
        return base64.b64encode(value).decode("ascii")
    tolist = getattr(value, "tolist", None)  # numpy scalars and arrays of other dtypes, torch tensors
    if tolist is not None:
        if hasattr(value, "detach"):
            value = value.detach().cpu()
            tolist = value.tolist
        return tolist()
    item = getattr(value, "item", None)
    if item is not None:
        return item()
    raise TypeError(f"cannot turn {type(value).__name__} into JSON; return lists, dicts, numbers, strings or pydantic models")


_DUMPS_OPTIONS = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS


def dumps(value: Any) -> bytes:
    """Serialize an endpoint result: orjson with numpy, pydantic, torch and File support."""
    return orjson.dumps(value, default=_json_default, option=_DUMPS_OPTIONS)


async def send_bytes(send: Any, status: int, body: bytes, headers: Headers) -> None:
    await send(
        {"type": "http.response.start", "status": status, "headers": [*headers, (b"content-length", str(len(body)).encode())]}
    )
    await send({"type": "http.response.body", "body": body})


def error_body(
    error: HTTPError | str, request_id: str, detail: list[dict[str, Any]] | None = None, status: int | None = None
) -> bytes:
    """`{"error", "request_id"[, "detail"][, "status"]}` as JSON."""
    if isinstance(error, HTTPError):
        detail = error.detail
        error = error.message
    payload: dict[str, Any] = {"error": error, "request_id": request_id}
    if detail is not None:
        payload["detail"] = detail
    if status is not None:
        payload["status"] = status
    return orjson.dumps(payload)


_OPENAI_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "invalid_request_error",
    415: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
    503: "service_unavailable",
    504: "timeout",
}


def openai_error_body(error: HTTPError, request_id: str) -> bytes:
    """`{"error": {"message", "type", "param", "code"}}`, the shape OpenAI's clients read messages from."""
    param = error.detail[0]["field"] if error.detail else None
    kind = _OPENAI_ERROR_TYPES.get(error.status, "server_error" if error.status >= 500 else "invalid_request_error")
    payload = {"error": {"message": error.message, "type": kind, "param": param, "code": None}, "request_id": request_id}
    if error.detail is not None:
        payload["detail"] = error.detail
    return orjson.dumps(payload)


async def send_error(send: Any, error: HTTPError, request_id: str, style: str = "fermion") -> None:
    """Answer `error` as JSON: Fermion's `{"error": str, ...}` or, with style "openai", OpenAI's shape."""
    headers: Headers = [JSON_TYPE, (b"x-request-id", request_id.encode()), *error.headers]
    body = openai_error_body(error, request_id) if style == "openai" else error_body(error, request_id)
    await send_bytes(send, error.status, body, headers)


def validation_detail(exc: Any) -> list[dict[str, Any]]:
    """pydantic errors → `[{field, message, type}]` with dotted field paths."""
    out = []
    for err in exc.errors(include_url=False, include_context=False, include_input=False):
        loc = ".".join(str(part) for part in err.get("loc", ()))
        out.append({"field": loc, "message": err.get("msg", ""), "type": err.get("type", "")})
    return out


def validation_message(detail: list[dict[str, Any]]) -> str:
    parts = [f"{d['field'] or 'body'}: {d['message']}" for d in detail[:5]]
    more = f" (and {len(detail) - 5} more)" if len(detail) > 5 else ""
    return "invalid request: " + "; ".join(parts) + more
