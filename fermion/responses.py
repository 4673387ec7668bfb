"""What an endpoint may return besides plain values, and the errors it may raise on purpose.

- `Response`: raw bytes with a media type (an image, audio, a CSV).
- `EventStream`: stream items as server-sent events, decided at run time (for example an
  OpenAI-style endpoint whose `stream` argument picks streaming or a single answer).
- `InvalidInput` / `EndpointError`: answer 422 / another status with a message for people,
  instead of a 500.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, Callable, Iterable
from typing import Any

DEFAULT_STREAM_END = b"event: end\ndata: {}\n\n"


class Response:
    """Raw bytes with a media type and status, sent as they are."""

    __slots__ = ("content", "headers", "media_type", "status")

    def __init__(
        self,
        content: bytes | str,
        media_type: str = "application/octet-stream",
        status: int = 200,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.content = content.encode() if isinstance(content, str) else bytes(content)
        self.media_type = media_type
        self.status = status
        self.headers = headers or {}

    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: Any) -> Any:
        return _opaque_schema()

    @classmethod
    def __get_pydantic_json_schema__(cls, core_schema: Any, handler: Any) -> dict[str, Any]:
        return {"type": "string", "format": "binary", "description": "Raw bytes; the media type is in Content-Type."}


class EventStream:
    """Items sent as server-sent events (`data: <json>` each), then `end` (Fermion's end event by default).

    `encode` turns one item into the bytes after `data: ` (JSON by default); `end` is sent as is
    after the last item (`b"data: [DONE]\\n\\n"` for OpenAI-style streams; `None` for nothing).
    """

    __slots__ = ("encode", "end", "items")

    def __init__(
        self,
        items: Iterable[Any] | AsyncIterable[Any],
        *,
        end: bytes | None = DEFAULT_STREAM_END,
        encode: Callable[[Any], bytes] | None = None,
    ) -> None:
        self.items = items
        self.end = end
        self.encode = encode

    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: Any) -> Any:
        return _opaque_schema()

    @classmethod
    def __get_pydantic_json_schema__(cls, core_schema: Any, handler: Any) -> dict[str, Any]:
        return {"description": "Server-sent events: one `data:` line per item."}


def _opaque_schema() -> Any:
    from pydantic_core import core_schema

    return core_schema.any_schema()


class EndpointError(Exception):
    """Raise from an endpoint to answer `status` with `message` (default 400) instead of a 500."""

    status = 400

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        if status is not None:
            self.status = status


class InvalidInput(EndpointError):
    """The input passed schema validation but the model cannot use it (422): say why and what to send."""

    status = 422
