"""The headers that keep a browser safe on the API's and the console's answers (docs/security.md, "Browser hardening"),
and the limit on the headers the API reads (431 past `MAX_HEADER_BYTES`, as a replica answers).

The console's token lives in the browser's session storage on this origin, so its pages run only the platform's own
scripts (no inline script, no third-party code), cannot be framed, and leak no URL in a Referer. JSON answers carry
`nosniff` so that no browser runs one as a script or a page. `/run/*` answers are the gateway's (it sets its own).
"""

from __future__ import annotations

from typing import Any

import orjson

from fermion.platform.errors import error_body
from fermion.serving.http import JSON_TYPE, oversized_headers, send_bytes

#: The console: its scripts, styles and translations come from /console/; the playground shows images as blob: URLs.
CONSOLE_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; connect-src 'self'; "
    "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
#: Every answer of the API app; a route that sets its own Content-Security-Policy (the Swagger UI page) keeps it.
HEADERS = (
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"content-security-policy", CONSOLE_CSP.encode()),
)


class SecurityHeaders:
    """ASGI middleware adding `HEADERS` to each HTTP answer that does not set them itself; oversized headers get 431."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        too_large = oversized_headers(scope)
        if too_large is not None:
            body = orjson.dumps(error_body(431, too_large.message))
            await send_bytes(send, 431, body, [JSON_TYPE, *HEADERS])
            return

        async def send_with_headers(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", ()))
                present = {name.lower() for name, _ in headers}
                headers += [(name, value) for name, value in HEADERS if name not in present]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)
