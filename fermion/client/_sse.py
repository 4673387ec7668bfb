"""Server-sent events, decoded line by line as they arrive, and their meaning in Fermion streams.

A Fermion stream is `data: <json>` events, then `event: end`; a failure midway is `event: error`
with the usual error object as its data.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from fermion.client._errors import APIConnectionError, error_from_payload

if TYPE_CHECKING:
    import httpx


@dataclass(frozen=True)
class Event:
    """One server-sent event: its type (`message` unless named) and its data lines joined."""

    event: str
    data: str


class EventDecoder:
    """Builds events from lines fed one at a time (without their line endings)."""

    def __init__(self) -> None:
        self._event = ""
        self._data: list[str] = []

    def feed(self, line: str) -> Event | None:
        """Take one line; returns the event it completes, if any."""
        if not line:
            if not self._data and not self._event:
                return None
            event = Event(self._event or "message", "\n".join(self._data))
            self._event, self._data = "", []
            return event
        if line.startswith(":"):  # a comment, e.g. a keep-alive
            return None
        name, _, value = line.partition(":")
        if value.startswith(" "):
            value = value[1:]
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        return None


class StreamReader:
    """Turns the lines of a stream into items; `done` once the `end` event (or `data: [DONE]`) has come."""

    def __init__(self, request_id: str | None = None) -> None:
        self.request_id = request_id
        self.done = False
        self._decoder = EventDecoder()

    def feed(self, line: str) -> tuple[Any, ...]:
        """The items (none or one) completed by this line; raises `APIError` for an `error` event."""
        event = self._decoder.feed(line)
        if event is None or self.done:
            return ()
        if event.event == "end" or (event.event == "message" and event.data == "[DONE]"):  # Fermion's end, OpenAI's end
            self.done = True
            return ()
        if event.event == "error":
            payload = _json_or_none(event.data)
            status = payload.get("status") if isinstance(payload, dict) else None
            status = status if isinstance(status, int) and status >= 400 else 500
            raise error_from_payload(status, payload, event.data, self.request_id)
        if event.event != "message":
            return ()  # an event type this client does not know: skip it, as browsers do
        try:
            return (json.loads(event.data),)
        except ValueError:
            return (event.data,)  # a non-JSON item: hand over the text rather than lose it


def _json_or_none(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return None


def is_event_stream(response: httpx.Response) -> bool:
    """Whether a successful answer is a stream of server-sent events."""
    return response.is_success and response.headers.get("content-type", "").startswith("text/event-stream")


def ended_early(url: str) -> APIConnectionError:
    """The error for a stream whose connection closed before its `end` event."""
    return APIConnectionError(f"the stream from {url} closed before its end event; the server may have stopped or restarted")
