"""The clients' exceptions, and the mapping from HTTP answers and transport failures onto them.

One error model for both clients: every exception a `Client`, an `AsyncClient` or a `Platform`
raises for an answer or a failed connection is an `APIError` (the platform's are `PlatformAPIError`,
a subclass). One function reads every error body Fermion answers with — a replica's
`{"error", "request_id", "detail"}`, the platform API's `{"error": code, "status", "message"}` and
a gateway's `{"error"}` — and one turns httpx's transport failures into exceptions.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import httpx

_SHOWN_BODY = 500  # characters of a non-JSON error body kept in the message


class APIError(Exception):
    """The server answered with an error, or could not be reached (then `status` is 0).

    `message` is the server's `error` text (or the raw body), `request_id` finds the traceback in
    the server log, `detail` lists invalid fields for a 422, and `body` is the raw answer.
    """

    def __init__(
        self,
        status: int,
        message: str,
        *,
        code: str = "",
        request_id: str | None = None,
        detail: list[dict[str, Any]] | None = None,
        body: str = "",
    ) -> None:
        super().__init__(f"{status}: {message}" if status else message)
        self.status = status
        self.message = message
        #: The platform API's error code (`not_found`, `conflict`, `invalid`, ...); "" from a replica.
        self.code = code
        self.request_id = request_id
        self.detail = detail
        self.body = body


class APIConnectionError(APIError):
    """No answer from the server: it is down, the URL is wrong, or the connection broke."""

    def __init__(self, message: str) -> None:
        super().__init__(0, message)


class APITimeoutError(APIError):
    """The server did not answer within the client's timeout."""

    def __init__(self, message: str) -> None:
        super().__init__(0, message)


class RequestValidationError(ValueError):
    """Arguments that do not match the endpoint's request schema; nothing was sent.

    `detail` has one `{field, message, type}` entry per problem, like the server's 422 answer.
    """

    def __init__(self, endpoint: str, detail: list[dict[str, str]]) -> None:
        shown = "; ".join(f"{d['field'] or 'request'}: {d['message']}" for d in detail[:5])
        more = f" (and {len(detail) - 5} more)" if len(detail) > 5 else ""
        super().__init__(f"{endpoint}(): invalid arguments: {shown}{more}")
        self.endpoint = endpoint
        self.detail = detail


def read_error(payload: Any, body: str) -> tuple[str, str, str | None, list[dict[str, Any]] | None] | None:
    """(message, code, request_id, detail) from any error body Fermion answers with; None if it is none of them."""
    if not isinstance(payload, dict):
        return None
    error = payload.get("error")
    if isinstance(error, dict) and "message" in error:  # OpenAI-style
        return str(error["message"]), str(error.get("code") or error.get("type") or ""), None, None
    if isinstance(payload.get("message"), str):  # the platform API's {"error": code, "status", "message"}
        return payload["message"], str(error or ""), None, None
    if isinstance(error, str):  # a replica's {"error", "request_id", "detail"?}, a gateway's {"error"}
        detail = payload.get("detail")
        return error, "", payload.get("request_id"), detail if isinstance(detail, list) else None
    if isinstance(payload.get("detail"), str):  # a framework's own {"detail": "..."}
        return payload["detail"], "", None, None
    return None


def shown(body: str) -> str:
    """A raw body as it appears in a message: stripped, and cut after a few hundred characters."""
    text = body.strip()
    return text[:_SHOWN_BODY] + ("…" if len(text) > _SHOWN_BODY else "")


def error_from_payload(status: int, payload: Any, body: str, request_id: str | None = None) -> APIError:
    """An `APIError` from a decoded error answer, or from its raw text."""
    found = read_error(payload, body)
    if found is None:
        return APIError(status, shown(body) or "no error message in the answer", request_id=request_id, body=body)
    message, code, sent_id, detail = found
    return APIError(status, message, code=code, request_id=sent_id or request_id, detail=detail, body=body)


def error_from_response(response: httpx.Response) -> APIError:
    """An `APIError` for an HTTP error answer whose body has been read."""
    body = response.text
    try:
        payload = json.loads(body) if body else None
    except ValueError:
        payload = None
    return error_from_payload(response.status_code, payload, body, response.headers.get("x-request-id"))


@contextlib.contextmanager
def transport_errors(url: str, timeout: float | None, *, platform: bool = False) -> Iterator[None]:
    """Turn httpx's transport exceptions into `APIConnectionError` / `APITimeoutError` naming `url`
    (with `platform`: into `PlatformConnectionError`, saying how to start or find a platform).

    A plain context manager also serves async code: it only sees the exception raised by `await`.
    """
    import httpx

    from fermion.client._tls import certificate_advice, certificate_problem, plain_http_hint

    try:
        yield
    except httpx.TimeoutException as exc:
        limit = f"within {timeout:g} s" if timeout is not None else "in time"
        if platform:
            raise PlatformConnectionError(
                0, f"no answer from the platform at {url} {limit}; it may be overloaded", "timeout"
            ) from exc
        raise APITimeoutError(
            f"no answer from {url} {limit} ({type(exc).__name__}); raise the client's timeout= "
            "or check whether the server is overloaded"
        ) from exc
    except httpx.ConnectError as exc:
        problem = certificate_problem(exc)
        if problem is not None:
            if platform:
                raise PlatformConnectionError(0, certificate_advice(f"the platform at {url}", problem), "certificate") from exc
            raise APIConnectionError(certificate_advice(url, problem)) from exc
        if platform:
            raise PlatformConnectionError(
                0,
                f"cannot reach the platform at {url} ({exc or type(exc).__name__}); start one with `fermion up`, or check --url / FERMION_URL",
                "unreachable",
            ) from exc
        raise APIConnectionError(
            f"cannot connect to {url}: {exc or type(exc).__name__}; check that the server is running "
            "(`fermion serve ...`) and that the URL and port are right"
        ) from exc
    except httpx.TransportError as exc:
        where = f"the platform at {url}" if platform else url
        message = f"the connection to {where} failed: {exc or type(exc).__name__}"
        if platform:
            raise PlatformConnectionError(0, message + plain_http_hint(url), "unreachable") from exc
        raise APIConnectionError(message + "; the server may have stopped or restarted" + plain_http_hint(url)) from exc


# -- the platform's errors ----------------------------------------------------------------------


class PlatformAPIError(APIError):
    """The platform answered with an error (or, with `status` 0, could not be reached).

    `code` is the API's error code (`not_found`, `conflict`, `invalid`, ...), `message` says what
    went wrong and what to do; `str(error)` is the message.
    """

    def __init__(self, status: int, message: str, code: str = "", body: str = "") -> None:
        super().__init__(status, message, code=code, body=body)
        self.args = (message,)


class PlatformConnectionError(PlatformAPIError):
    """No answer: nothing listens at the URL, the connection broke, or it timed out."""


class AuthError(PlatformAPIError):
    """401: no token, or an unknown, revoked or expired one."""


class ForbiddenError(PlatformAPIError):
    """403: the token is valid but lacks the scope (invoke < deploy < admin)."""


class NotFoundError(PlatformAPIError):
    """404: no such deployment, revision or token; the message lists the known ones."""


class ConflictError(PlatformAPIError):
    """409: e.g. a deployment with that name already exists."""


class InvalidError(PlatformAPIError):
    """422: a value breaks a rule, or the source does not load (the message is `fermion serve`'s error)."""


class TooManyRequestsError(PlatformAPIError):
    """429: a bounded queue is full (e.g. training jobs); `retry_after` is the server's Retry-After in seconds."""

    retry_after: float | None = None


class DeploymentFailed(Exception):
    """`wait_ready()` gave up early: the deployment's replicas keep crashing (the message quotes why)."""


_PLATFORM_ERRORS: dict[int, type[PlatformAPIError]] = {
    401: AuthError,
    403: ForbiddenError,
    404: NotFoundError,
    409: ConflictError,
    422: InvalidError,
    429: TooManyRequestsError,
}


def platform_error(response: httpx.Response) -> PlatformAPIError:
    """The `PlatformAPIError` subclass for an error answer of the platform (body already read)."""
    status, body = response.status_code, response.text
    try:
        payload = json.loads(body) if body else None
    except ValueError:
        payload = None
    found = read_error(payload, body)
    code, message = (found[1], found[0]) if found else ("", "")
    if not message:
        message = (
            f"{response.request.url} answered {status} {shown(body) or '(no body)'}; "
            "is that the URL of a Fermion platform (`fermion up`)?"
        )
    error = _PLATFORM_ERRORS.get(status, PlatformAPIError)(status, message, code, body)
    if isinstance(error, TooManyRequestsError):
        try:
            error.retry_after = float(response.headers.get("retry-after", ""))
        except ValueError:
            pass
    return error
