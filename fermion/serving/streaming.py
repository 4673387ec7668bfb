"""Server-sent events: send an endpoint's items as they come, end or fail the stream cleanly.

Items of sync iterators are produced on the thread pool, so a slow generator never blocks the
event loop; a generator still running when the stream is abandoned is closed when it yields.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import Executor
from typing import Any

from fermion.responses import EndpointError
from fermion.serving.deadlines import CANCELLED, DISCONNECT, TIMEOUT, take_reason
from fermion.serving.http import HTTPError, dumps, error_body, failure_message

log = logging.getLogger("fermion.serving")

SSE_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
]
STATUS_CLIENT_GONE = 499  # nginx's convention: the client closed the connection first
#: What the caller of a request cancelled by `DELETE /requests/{id}` gets (the request, not the
#: client, was stopped, so 499 would be wrong; 409: it conflicts with the cancellation).
STATUS_CANCELLED = 409
_END_OF_STREAM = object()


def cancelled_message(request_id: str) -> str:
    """What the caller of a cancelled request is told."""
    return f"request {request_id} was cancelled (DELETE /requests/{request_id}) before it finished"


def error_event(message: str, request_id: str, status: int) -> bytes:
    """`event: error` with the error body (and its status) as data."""
    return b"event: error\ndata: " + error_body(message, request_id, status=status) + b"\n\n"


async def send_event_stream(
    items: AsyncIterator[Any],
    *,
    send: Any,
    request_id: str,
    endpoint: str,
    timeout: float,
    encode: Callable[[Any], bytes] | None,
    end: bytes | None,
) -> int:
    """Send `items` as SSE; returns the status to record. Errors after the start become an error event.

    The request's deadline, disconnect watch and `DELETE /requests/{id}` cancel the running task;
    all three are handled here.
    """
    encode = encode or dumps
    started = False
    tail: bytes | None = end
    try:
        # the first item comes before the 200 header, so that input the endpoint refuses at once
        # (InvalidInput, a too-long prompt) still gets a real 4xx answer
        first = await anext(items, _END_OF_STREAM)
        await send(
            {"type": "http.response.start", "status": 200, "headers": [*SSE_HEADERS, (b"x-request-id", request_id.encode())]}
        )
        started = True
        if first is not _END_OF_STREAM:
            await send({"type": "http.response.body", "body": b"data: " + encode(first) + b"\n\n", "more_body": True})
            async for item in items:
                await send({"type": "http.response.body", "body": b"data: " + encode(item) + b"\n\n", "more_body": True})
        status = 200
    except asyncio.CancelledError:
        task = asyncio.current_task()
        reason = take_reason(task)
        if reason not in (DISCONNECT, TIMEOUT, CANCELLED):
            raise
        assert task is not None
        task.uncancel()
        if reason == DISCONNECT:
            return STATUS_CLIENT_GONE
        if reason == CANCELLED:
            status, message = STATUS_CANCELLED, cancelled_message(request_id)
        else:
            status, message = 504, f"endpoint {endpoint!r} did not start streaming within {timeout:g} s"
        if not started:
            raise HTTPError(status, message) from None
        if reason == TIMEOUT:
            message = f"stream of endpoint {endpoint!r} exceeded its timeout of {timeout:g} s"
        tail = error_event(message, request_id, status)
    except EndpointError as exc:
        if not started:
            raise HTTPError(exc.status, exc.message) from None
        tail, status = error_event(exc.message, request_id, exc.status), exc.status
    except Exception as exc:
        log.exception("stream of endpoint %r failed (request_id=%s)", endpoint, request_id)
        if not started:
            raise HTTPError(500, failure_message(exc, endpoint)) from None
        tail, status = error_event(failure_message(exc), request_id, 500), 500
    finally:
        await items.aclose()  # type: ignore[attr-defined]
    await send({"type": "http.response.body", "body": tail or b"", "more_body": False})
    return status


async def iterate(produced: Any, executor: Executor) -> AsyncIterator[Any]:
    """Iterate sync or async iterables; sync ones advance on the thread pool."""
    if hasattr(produced, "__aiter__"):
        try:
            async for item in produced:
                yield item
        finally:
            aclose = getattr(produced, "aclose", None)
            if aclose is not None:
                await aclose()
        return
    iterator: Iterator[Any] = iter(produced)
    loop = asyncio.get_running_loop()
    step: concurrent.futures.Future[Any] | None = None
    try:
        while True:
            step = executor.submit(next, iterator, _END_OF_STREAM)
            item = await asyncio.wrap_future(step, loop=loop)
            if item is _END_OF_STREAM:
                return
            yield item
    finally:
        close = getattr(iterator, "close", None)
        if close is not None:
            if step is not None and not step.done():
                # abandoned while next() still runs in its thread: a generator cannot be closed
                # while it executes, so close it as soon as that step returns
                step.add_done_callback(lambda _: _close_quietly(close))
            else:
                await loop.run_in_executor(executor, _close_quietly, close)


def _close_quietly(close: Callable[[], Any]) -> None:
    try:
        close()
    except Exception:
        log.debug("closing a stream's generator raised", exc_info=True)
