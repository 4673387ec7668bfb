"""The REST API's edge: nobody makes the platform read a body it will refuse.

A request with a body (POST, PUT, PATCH) to `/api/` is answered before a byte of the body is
read when it has no valid token (401) or declares a length over its route's limit (413): every
such route needs a token, so checking one here — scopes are still checked by each route — costs a
stranger nothing but headers. Bodies without a length are counted as they arrive and cut off at
the limit (413). Dataset uploads have the datasets' own limit; every other body is small JSON.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import orjson

from fermion.platform.errors import PayloadTooLarge, PlatformError, Unauthorized
from fermion.platform.gateway.edge import header
from fermion.serving.http import bearer_token

#: The largest JSON body an API route takes (a deployment with its env, a token request, ...).
API_MAX_BODY = 1 << 20
#: Routes that take uploads, whose limit is the platform's upload limit instead.
UPLOAD_PATHS = frozenset({"/api/v1/datasets"})
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})

#: verify(token) → whether it is a valid (known, active) token, of any scope.
Verify = Callable[[str], Awaitable[bool]]


class APIGuard:
    """ASGI middleware in front of the REST API (see the module docstring)."""

    def __init__(self, app: Any, verify: Verify, upload_limit: int) -> None:
        self.app = app
        self.verify = verify
        self.upload_limit = upload_limit

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] not in _BODY_METHODS or not scope["path"].startswith("/api/"):
            await self.app(scope, receive, send)
            return
        limit = (
            self.upload_limit + API_MAX_BODY if scope["path"] in UPLOAD_PATHS else API_MAX_BODY
        )  # + room for multipart framing
        token = bearer_token(header(scope["headers"], b"authorization"))
        if token is None:
            await _refuse(send, Unauthorized("send a token: Authorization: Bearer fmn_..."))
            return
        if not await self.verify(token):
            await _refuse(
                send, Unauthorized("unknown, revoked or expired token; ask an admin for a new one (fermion token create)")
            )
            return
        declared = _content_length(scope["headers"])
        if declared is not None and declared > limit:
            await _refuse(send, _too_large(declared, limit))
            return
        await self._counted(scope, receive, send, limit)

    async def _counted(self, scope: dict[str, Any], receive: Any, send: Any, limit: int) -> None:
        """Run the API, cutting the body off at `limit`: the API then sees the client as gone, its
        answer is dropped, and the caller gets 413."""
        received = 0
        over = False
        answered = False

        async def counted_receive() -> dict[str, Any]:
            nonlocal received, over
            if over:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    over = True
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message: dict[str, Any]) -> None:
            nonlocal answered
            if over:
                return
            answered = answered or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted_receive, guarded_send)
        except Exception:
            if not over:
                raise
        if over and not answered:
            await _refuse(send, _too_large(None, limit))


def _too_large(declared: int | None, limit: int) -> PayloadTooLarge:
    size = f"the body ({declared} bytes)" if declared is not None else "the body"
    return PayloadTooLarge(f"{size} is over this route's limit of {limit} bytes; send less (split a dataset, say)")


def _content_length(headers: list[tuple[bytes, bytes]]) -> int | None:
    for key, value in headers:
        if key == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


async def _refuse(send: Any, error: PlatformError) -> None:
    body = orjson.dumps(error.to_dict())
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if error.status == 401:
        headers.append((b"www-authenticate", b'Bearer realm="fermion"'))
    # The body was not read: the connection cannot carry another request.
    headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": error.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
