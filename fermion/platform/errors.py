"""Errors the control plane raises, each with an HTTP-like status and a message for people, and the
one error body every HTTP surface of the platform answers with (docs/platform-api.md, "Errors").

`{"error": <code>, "status": <int>, "message": <what went wrong and what to do>}` comes from the REST
API, the gateways (Python and HAProxy) and the console's routes alike; only a replica's own answers
pass through as the replica wrote them. The REST API maps `status` straight onto the response; the
CLI prints `message` as one line.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable
from typing import Any, ClassVar


class PlatformError(Exception):
    """Base class: something the caller asked for cannot be done; `message` says why and what to do."""

    status: ClassVar[int] = 500
    code: ClassVar[str] = "platform_error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def to_dict(self) -> dict[str, Any]:
        """The JSON body an API returns for this error."""
        return {"error": self.code, "status": self.status, "message": self.message}

    def headers(self) -> dict[str, str]:
        """HTTP headers the answer carries besides the body (e.g. Retry-After)."""
        return {}


class NotFound(PlatformError):
    """The named thing does not exist (404)."""

    status = 404
    code = "not_found"

    @classmethod
    def named(cls, kind: str, name: object, known: Iterable[str]) -> NotFound:
        """'no deployment named 'ech'; did you mean 'echo'? known deployments: echo, web'."""
        known = sorted(known)
        if not known:
            error = cls(f"no {kind} named {name!r}: there are no {kind}s yet")
        else:
            hint = ""
            close = difflib.get_close_matches(str(name), known, n=1)
            if close:
                hint = f"; did you mean {close[0]!r}?"
            shown = ", ".join(known[:20]) + (f" and {len(known) - 20} more" if len(known) > 20 else "")
            error = cls(f"no {kind} named {name!r}{hint} (known {kind}s: {shown})")
        error.listed = (kind, name, known)
        return error

    #: (kind, name, the names the message lists), when made by `named`: a caller who may see only some
    #: of them gets the message made again from those (`seen_by`).
    listed: tuple[str, object, list[str]] | None = None

    def seen_by(self, visible: Callable[[str], bool]) -> NotFound:
        """This error as told to someone who may see only the names `visible` accepts."""
        if self.listed is None:
            return self
        kind, name, known = self.listed
        return NotFound.named(kind, name, [item for item in known if visible(item)])


class Conflict(PlatformError):
    """The request clashes with what already exists, e.g. a duplicate name (409)."""

    status = 409
    code = "conflict"


class Invalid(PlatformError):
    """A value breaks a rule; the message states the rule and the value (422)."""

    status = 422
    code = "invalid"


class Unauthorized(PlatformError):
    """No token, or one that is unknown, revoked or expired (401)."""

    status = 401
    code = "unauthorized"


class Forbidden(PlatformError):
    """A valid token without the scope this needs (403)."""

    status = 403
    code = "forbidden"


class PayloadTooLarge(PlatformError):
    """A request body over the route's limit, refused before (or while) it is read (413)."""

    status = 413
    code = "payload_too_large"


class TooManyRequests(PlatformError):
    """A bounded queue is full (429); `retry_after` is when trying again may succeed, in seconds."""

    status = 429
    code = "too_many_requests"

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "retry_after": self.retry_after}

    def headers(self) -> dict[str, str]:
        return {"retry-after": str(self.retry_after)}


#: The code of each status the platform answers with, whoever answers (the API, a gateway, HAProxy).
CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    422: "invalid",
    429: "too_many_requests",
    431: "headers_too_large",
    500: "platform_error",
    501: "not_installed",
    502: "bad_gateway",
    503: "unavailable",
    504: "timeout",
}


def error_body(status: int, message: str, code: str | None = None) -> dict[str, Any]:
    """The platform's one error body: `{"error": code, "status": status, "message": message}`."""
    return {"error": code or CODES.get(status, "error"), "status": status, "message": message}
