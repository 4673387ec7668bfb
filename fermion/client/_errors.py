"""The client's exceptions, and the mapping from HTTP answers and transport failures onto them."""

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
        request_id: str | None = None,
        detail: list[dict[str, Any]] | None = None,
        body: str = "",
    ) -> None:
        super().__init__(f"{status}: {message}" if status else message)
        self.status = status
        self.message = message
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


def error_from_payload(status: int, payload: Any, body: str, request_id: str | None = None) -> APIError:
    """An `APIError` from a decoded error answer (`{"error", "request_id", "detail"?}`) or raw text."""
    if isinstance(payload, dict) and isinstance(payload.get("error"), dict) and "message" in payload["error"]:
        payload = {**payload, "error": str(payload["error"]["message"])}  # OpenAI-style error body
    if isinstance(payload, dict) and isinstance(payload.get("error"), str):
        detail = payload.get("detail")
        return APIError(
            status,
            payload["error"],
            request_id=payload.get("request_id") or request_id,
            detail=detail if isinstance(detail, list) else None,
            body=body,
        )
    text = body.strip()
    message = text[:_SHOWN_BODY] + ("…" if len(text) > _SHOWN_BODY else "") if text else "no error message in the answer"
    return APIError(status, message, request_id=request_id, body=body)


def error_from_response(response: httpx.Response) -> APIError:
    """An `APIError` for an HTTP error answer whose body has been read."""
    body = response.text
    try:
        payload = json.loads(body) if body else None
    except ValueError:
        payload = None
    return error_from_payload(response.status_code, payload, body, response.headers.get("x-request-id"))


@contextlib.contextmanager
def transport_errors(url: str, timeout: float | None) -> Iterator[None]:
    """Turn httpx's transport exceptions into `APIConnectionError` / `APITimeoutError` naming `url`.

    A plain context manager also serves async code: it only sees the exception raised by `await`.
    """
    import httpx

    from fermion.client._tls import certificate_advice, certificate_problem, plain_http_hint

    try:
        yield
    except httpx.TimeoutException as exc:
        limit = f"within {timeout:g} s" if timeout is not None else "in time"
        raise APITimeoutError(
            f"no answer from {url} {limit} ({type(exc).__name__}); raise the client's timeout= "
            "or check whether the server is overloaded"
        ) from exc
    except httpx.ConnectError as exc:
        problem = certificate_problem(exc)
        if problem is not None:
            raise APIConnectionError(certificate_advice(url, problem)) from exc
        raise APIConnectionError(
            f"cannot connect to {url}: {exc or type(exc).__name__}; check that the server is running "
            "(`fermion serve ...`) and that the URL and port are right"
        ) from exc
    except httpx.TransportError as exc:
        raise APIConnectionError(
            f"the connection to {url} failed: {exc or type(exc).__name__}; the server may have stopped or restarted"
            + plain_http_hint(url)
        ) from exc
