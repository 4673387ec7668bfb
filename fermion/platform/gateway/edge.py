"""The edge of the gateway: what it lets through to a replica, and what it adds on the way back.

One pooled connection to a replica carries many callers' requests, so nothing a caller sends may
be read by the replica as more than one request: the target travels percent-encoded as sent, and
control characters in the decoded path (a `%0D%0A` that would end the request line and start a
second request), raw bytes that must be percent-encoded, and CR/LF/NUL in headers are refused
(400). Hop-by-hop headers and any `X-Forwarded-*` a caller sends are dropped; the gateway sets its
own. A body over the limit is refused before it is read when Content-Length says so, and cut off
at the limit otherwise (413). HAProxy's configuration (`fermion.platform.gateway.haproxy`) keeps the same
rules.

Replicas share the console's origin (the same host and port), so their answers carry
`Content-Security-Policy: sandbox allow-scripts ...`: a page a replica serves runs in a unique
origin and cannot read the console's storage (where the console keeps its token). Because that
origin is unique, a replica's own docs page calls its API cross-origin: answers allow any origin
(CORS), which gives nothing away, since a token, never a cookie, is what authorizes a call.
"""

from __future__ import annotations

import re
from typing import Any

import orjson

from fermion.platform.errors import error_body
from fermion.serving.http import oversized_headers

# Hop-by-hop headers (RFC 9110 §7.6.1) and ones the gateway sets itself.
DROP_REQUEST = {
    b"host",
    b"connection",
    b"keep-alive",
    b"transfer-encoding",
    b"te",
    b"upgrade",
    b"proxy-connection",
    b"authorization",
    b"content-length",
    b"x-request-id",  # replaced by the id the gateway tracks (the caller's, if valid)
    # Set by the gateway itself: what a caller claims here is not to be trusted.
    b"x-forwarded-for",
    b"x-forwarded-host",
    b"x-forwarded-proto",
    b"x-forwarded-prefix",
    b"forwarded",
}
#: A request target as it may travel on the wire: visible ASCII only (anything else percent-encoded).
_RAW_TARGET = re.compile(rb"[!-~]*")
#: Control characters, once percent-decoded: a CR/LF in a path is a second request in disguise.
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
#: Header bytes that could end a header line early or hide one in another.
_BAD_HEADER_BYTES = re.compile(rb"[\r\n\x00]")
#: The largest request body the gateway forwards (`fermion up --max-body-size`; replicas default to the same).
DEFAULT_MAX_BODY_SIZE = 16 * 1024 * 1024
#: Added to every answer for `/run/...` (see the module docstring); HAProxy adds the same.
SANDBOX_POLICY = b"sandbox allow-scripts allow-forms allow-popups allow-downloads"
RUN_HEADERS = [(b"content-security-policy", SANDBOX_POLICY), (b"access-control-allow-origin", b"*")]
#: What a CORS preflight may ask to send: header names only (token characters and commas).
_HEADER_LIST = re.compile(rb"[A-Za-z0-9!#$%&'*+.^_`|~, -]{0,1000}")


def header(headers: list[tuple[bytes, bytes]], name: bytes) -> bytes | None:
    return next((value for key, value in headers if key == name), None)


async def preflight(send: Any, headers: list[tuple[bytes, bytes]]) -> None:
    """204 to a CORS preflight: any origin may call with these methods and the headers it asks for."""
    asked = header(headers, b"access-control-request-headers") or b""
    allowed = asked if _HEADER_LIST.fullmatch(asked) and asked.strip() else b"authorization, content-type, x-request-id"
    await send(
        {
            "type": "http.response.start",
            "status": 204,
            "headers": [
                *RUN_HEADERS,
                (b"access-control-allow-methods", b"GET, POST, PUT, PATCH, DELETE"),
                (b"access-control-allow-headers", allowed),
                (b"access-control-max-age", b"600"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": b""})


def malformed(path: str, raw_rest: bytes, query: bytes, headers: list[tuple[bytes, bytes]]) -> tuple[int, str] | None:
    """Why this request must not be forwarded, as (status, message): 400, or 431 for headers over the
    replicas' limit (`MAX_HEADER_BYTES`); None if it may go."""
    if not _RAW_TARGET.fullmatch(raw_rest) or not _RAW_TARGET.fullmatch(query):
        return 400, "the request target has characters that must be percent-encoded"
    if _CONTROL.search(path):
        return 400, "the request path has control characters (a percent-encoded CR, LF or NUL, say); remove them"
    for key, value in headers:
        if _BAD_HEADER_BYTES.search(key) or _BAD_HEADER_BYTES.search(value):
            return 400, f"header {key[:40].decode('latin-1')!r} has a CR, LF or NUL in it"
    too_big = oversized_headers({"headers": headers})
    return (too_big.status, too_big.message) if too_big is not None else None


def forwarded_headers(scope: dict[str, Any], prefix: str) -> list[tuple[bytes, bytes]]:
    """The caller's headers less hop-by-hop ones (also those its Connection header names), with the
    X-Forwarded-* headers set by the gateway from what it saw itself."""
    hop = set(DROP_REQUEST)
    host = b""
    for key, value in scope["headers"]:
        if key == b"connection":
            hop.update(token.strip().lower() for token in value.split(b","))
        elif key == b"host":
            host = value
    headers = [(k, v) for k, v in scope["headers"] if k not in hop]
    client = scope.get("client")
    if client:
        headers.append((b"x-forwarded-for", str(client[0]).encode()))
    headers.append((b"x-forwarded-proto", scope.get("scheme", "http").encode()))
    if host:
        headers.append((b"x-forwarded-host", host))
    headers.append((b"x-forwarded-prefix", prefix.encode()))
    return headers


async def read_body(receive: Any, headers: list[tuple[bytes, bytes]], limit: int) -> bytes | int:
    """The whole request body, or, when it is over `limit`, its declared length (0: none was
    declared; reading stopped as soon as the count passed the limit); -1 if the client left."""
    for key, value in headers:
        if key == b"content-length":
            try:
                declared = int(value)
            except ValueError:
                declared = 0
            if declared > limit:
                return declared  # refused before a byte of it is read
    chunks = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return -1
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return 0
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


# -- the gateway's own answers ----------------------------------------------------------------------


def unknown_deployment(name: str) -> str:
    """The 404 for a deployment that is unknown, or private and called without a valid token (the same words)."""
    return (
        f"no deployment named {name!r} that you can call; `fermion ls` lists the deployments your token sees, "
        "and a private one needs Authorization: Bearer <a token with the 'invoke' scope>"
    )


async def send_error(send: Any, status: int, message: str, headers: list[tuple[bytes, bytes]] | None = None) -> int:
    """Answer with the platform's error body (`errors.error_body`); returns the status (for the metrics)."""
    return await send_json(send, status, orjson.dumps(error_body(status, message)), headers)


async def send_json(send: Any, status: int, body: bytes, headers: list[tuple[bytes, bytes]] | None = None) -> int:
    """Answer with a JSON body of the gateway's own, with what every answer under /run/ carries."""
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *RUN_HEADERS,
                *(headers or []),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
    return status
