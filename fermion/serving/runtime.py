"""One endpoint at run time: parse and validate a request, admit it, run it, answer it.

Blocking (sync) code runs on the replica's thread pool so the event loop keeps accepting;
async code runs on the loop. Requests that must wait (for a slot or a batch) are watched for
client disconnects and dropped if the client goes away.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import inspect
import logging
import time
import types
import typing
import weakref
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import Executor
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from fermion.responses import DEFAULT_STREAM_END, EndpointError, EventStream, Response
from fermion.serving.batching import Batcher
from fermion.serving.http import (
    JSON_TYPE,
    ClientDisconnected,
    HTTPError,
    dumps,
    error_body,
    header,
    new_request_id,
    parse_multipart,
    parse_query,
    parse_urlencoded,
    read_body,
    send_bytes,
    send_error,
    validation_detail,
    validation_message,
)
from fermion.serving.limits import ConcurrencyLimiter, Overloaded

if TYPE_CHECKING:
    from fermion.service import Endpoint, Service
    from fermion.serving.config import ServeConfig
    from fermion.serving.metrics import EndpointMetrics

log = logging.getLogger("fermion.serving")

_STATUS_CLIENT_GONE = 499  # nginx's convention: the client closed the connection first
_SSE_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
]
_END_OF_STREAM = object()
# Request tasks that a DisconnectWatch cancelled: their CancelledError means "client gone".
_CANCELLED_BY_DISCONNECT: weakref.WeakSet[asyncio.Task[Any]] = weakref.WeakSet()


class DisconnectWatch:
    """Cancels the current request task if the client disconnects while it waits."""

    __slots__ = ("gone", "_task", "_watcher")

    def __init__(self, receive: Any) -> None:
        self.gone = False
        self._task = asyncio.current_task()
        self._watcher = asyncio.create_task(self._watch(receive))

    async def _watch(self, receive: Any) -> None:
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                self.gone = True
                if self._task is not None:
                    _CANCELLED_BY_DISCONNECT.add(self._task)
                    self._task.cancel()
                return

    def stop(self) -> None:
        self._watcher.cancel()


def _overloaded(name: str) -> HTTPError:
    return HTTPError(
        429,
        f"endpoint {name!r} is busy: its concurrency limit is reached and its queue is full; retry shortly",
        headers=[(b"retry-after", b"1")],
    )


def _alternatives(annotation: Any) -> list[Any]:
    """`Annotated[X, ...]` → [X]; `X | Y | None` → [X, Y]."""
    if typing.get_origin(annotation) is typing.Annotated:
        annotation = typing.get_args(annotation)[0]
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return [a for arg in typing.get_args(annotation) if arg is not type(None) for a in _alternatives(arg)]
    return [annotation]


def _is_collection(annotation: Any) -> bool:
    return any((typing.get_origin(a) or a) in (list, tuple, set, frozenset) for a in _alternatives(annotation))


def _needs_json(annotation: Any) -> bool:
    """Whether a form value for this type should be parsed as JSON first (containers, models)."""
    for a in _alternatives(annotation):
        origin = typing.get_origin(a) or a
        if isinstance(origin, type) and (issubclass(origin, (list, dict, tuple, set)) or hasattr(origin, "model_validate")):
            return True
    return False


class EndpointRuntime:
    """Serves one endpoint of one Service instance."""

    def __init__(
        self,
        service: Service,
        ep: Endpoint,
        config: ServeConfig,
        executor: Executor,
        metrics: EndpointMetrics,
        is_ready: typing.Callable[[], bool],
    ) -> None:
        self.ep = ep
        self.name = ep.name
        self.schema = ep.schema
        self.func = ep.func.__get__(service, type(service))
        self.is_async = ep.is_async
        self.timeout = ep.timeout or config.timeout
        self.max_body_size = config.max_body_size
        self.executor = executor
        self.metrics = metrics
        self.is_ready = is_ready
        self.active = 0
        json_params = frozenset(p.name for p in self.schema.params if _needs_json(p.annotation))
        self.json_params = json_params
        self.list_params = frozenset(p.name for p in self.schema.params if _is_collection(p.annotation))
        max_queue = ep.max_queue if ep.max_queue is not None else config.max_queue
        self.batcher: Batcher | None = None
        self.limiter: ConcurrencyLimiter | None = None
        if ep.batch is not None:
            self.batcher = Batcher(
                self._run_batch,
                max_batch_size=ep.batch.max_batch_size,
                max_wait_ms=ep.batch.max_wait_ms,
                max_queue=max_queue,
                concurrency=ep.max_concurrency or 1,
                on_batch=metrics.batch_size.observe,
            )
        else:
            default = config.max_concurrency or (256 if self.is_async else config.threads)
            limit = ep.max_concurrency or default
            if not self.is_async:
                limit = min(limit, config.threads)
            self.limiter = ConcurrencyLimiter(limit, max_queue)

    @property
    def waiting(self) -> int:
        if self.batcher is not None:
            return self.batcher.depth
        assert self.limiter is not None
        return self.limiter.waiting

    # -- request → keyword arguments -------------------------------------------------------

    async def parse(self, scope: dict[str, Any], receive: Any) -> dict[str, Any]:
        """Validate the request into keyword arguments (413/415/422 on bad input)."""
        try:
            if self.ep.method == "GET":
                query = parse_query(scope.get("query_string", b""), self.list_params, self.json_params - self.list_params)
                return self.schema.validate_mapping(query)
            body = await read_body(scope, receive, self.max_body_size)
            ctype = header(scope, b"content-type") or b"application/json"
            if ctype.startswith(b"application/json") or (not body and not ctype.startswith(b"multipart/")):
                return self.schema.validate_json(body)
            if ctype.startswith(b"multipart/form-data"):
                return self.schema.validate_mapping(parse_multipart(ctype, body, self.json_params))
            if ctype.startswith(b"application/x-www-form-urlencoded"):
                if body.lstrip()[:1] in (b"{", b"["):  # `curl -d '{...}'` sends JSON under the form type
                    return self.schema.validate_json(body)
                return self.schema.validate_mapping(parse_urlencoded(body, self.json_params))
            raise HTTPError(
                415,
                f"unsupported Content-Type {ctype.decode('latin-1')!r}: send application/json"
                + (" or multipart/form-data" if self.schema.file_params else ""),
            )
        except ValidationError as exc:
            detail = validation_detail(exc)
            raise HTTPError(422, validation_message(detail), detail=detail) from None

    # -- running ----------------------------------------------------------------------------

    async def _run_batch(self, columns: dict[str, list[Any]]) -> Any:
        if self.is_async:
            return await self.func(**columns)
        return await asyncio.get_running_loop().run_in_executor(self.executor, lambda: self.func(**columns))

    async def _admit(self, receive: Any) -> None:
        assert self.limiter is not None
        if self.limiter.try_acquire():
            return
        watch = DisconnectWatch(receive)
        try:
            await self.limiter.acquire()
        except Overloaded:
            raise _overloaded(self.name) from None
        finally:
            watch.stop()

    async def _call(self, kwargs: dict[str, Any], receive: Any) -> Any:
        if self.batcher is not None:
            watch = DisconnectWatch(receive)
            try:
                return await self.batcher.submit(kwargs)
            except Overloaded:
                raise _overloaded(self.name) from None
            finally:
                watch.stop()
        await self._admit(receive)
        limiter = self.limiter
        assert limiter is not None
        keep_slot = False  # an EventStream result holds its slot until the stream ends
        if self.is_async:
            try:
                result = await self.func(**kwargs)
                keep_slot = isinstance(result, EventStream)
                return result
            finally:
                if not keep_slot:
                    limiter.release()
        loop = asyncio.get_running_loop()
        job = self.executor.submit(self.func, **kwargs)
        try:
            result = await asyncio.wrap_future(job, loop=loop)
            keep_slot = isinstance(result, EventStream)
            return result
        finally:
            if keep_slot:
                pass
            elif job.done():
                limiter.release()
            else:  # timed out or cancelled while running: the slot frees when the thread does
                job.add_done_callback(lambda _: loop.call_soon_threadsafe(limiter.release))

    # -- ASGI entry -------------------------------------------------------------------------

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        started = time.perf_counter()
        request_id = (header(scope, b"x-request-id") or b"").decode("latin-1")[:64] or new_request_id()
        status = 500
        self.active += 1
        try:
            if not self.is_ready():
                raise HTTPError(503, "the service is starting: setup() has not finished; retry shortly", headers=[(b"retry-after", b"1")])
            kwargs = await self.parse(scope, receive)
            if self.ep.stream:
                await self._admit(receive)
                status = await self._send_stream(self._produce(kwargs), None, DEFAULT_STREAM_END, receive, send, request_id)
                return
            try:
                async with asyncio.timeout(self.timeout):
                    result = await self._call(kwargs, receive)
            except TimeoutError:
                raise HTTPError(504, f"endpoint {self.name!r} did not finish within {self.timeout:g} s") from None
            if isinstance(result, EventStream):
                status = await self._send_stream(_iterate(result.items, self.executor), result.encode, result.end, receive, send, request_id)
            elif isinstance(result, Response):
                headers = [(b"content-type", result.media_type.encode()), (b"x-request-id", request_id.encode())]
                headers += [(k.lower().encode(), v.encode()) for k, v in result.headers.items()]
                await send_bytes(send, result.status, result.content, headers)
                status = result.status
            else:
                await send_bytes(send, 200, dumps(result), [JSON_TYPE, (b"x-request-id", request_id.encode())])
                status = 200
        except HTTPError as exc:
            status = exc.status
            await send_error(send, exc, request_id)
        except EndpointError as exc:
            status = exc.status
            await send_error(send, HTTPError(exc.status, exc.message), request_id)
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None and task in _CANCELLED_BY_DISCONNECT:
                _CANCELLED_BY_DISCONNECT.discard(task)
                task.uncancel()
                status = _STATUS_CLIENT_GONE
                return
            raise
        except ClientDisconnected:
            status = _STATUS_CLIENT_GONE
        except Exception as exc:
            log.exception("endpoint %r failed (request_id=%s)", self.name, request_id)
            status = 500
            await send_error(send, HTTPError(500, f"{type(exc).__name__} in endpoint {self.name!r}: {exc}"), request_id)
        finally:
            self.active -= 1
            self.metrics.observe(status, time.perf_counter() - started)

    # -- streaming --------------------------------------------------------------------------

    async def _produce(self, kwargs: dict[str, Any]) -> AsyncIterator[Any]:
        """Items of a declared stream endpoint (generator functions are called directly)."""
        func = self.ep.func
        if inspect.isgeneratorfunction(func) or inspect.isasyncgenfunction(func):
            produced = self.func(**kwargs)
        elif self.is_async:
            produced = await self.func(**kwargs)
        else:
            produced = await asyncio.get_running_loop().run_in_executor(self.executor, lambda: self.func(**kwargs))
        if isinstance(produced, EventStream):
            produced = produced.items
        async for item in _iterate(produced, self.executor):
            yield item

    async def _send_stream(
        self,
        items: AsyncIterator[Any],
        encode: typing.Callable[[Any], bytes] | None,
        end: bytes | None,
        receive: Any,
        send: Any,
        request_id: str,
    ) -> int:
        """Send items as server-sent events; the caller holds a slot, released here."""
        assert self.limiter is not None
        encode = encode or dumps
        watch = DisconnectWatch(receive)
        started = False
        tail: bytes | None = end
        try:
            async with asyncio.timeout(self.timeout):
                await send({"type": "http.response.start", "status": 200, "headers": [*_SSE_HEADERS, (b"x-request-id", request_id.encode())]})
                started = True
                async for item in items:
                    await send({"type": "http.response.body", "body": b"data: " + encode(item) + b"\n\n", "more_body": True})
            status = 200
        except TimeoutError:
            if not started:
                raise HTTPError(504, f"endpoint {self.name!r} did not start streaming within {self.timeout:g} s") from None
            status = 504
            tail = _error_event(f"stream exceeded the endpoint timeout of {self.timeout:g} s", request_id, status)
        except EndpointError as exc:
            if not started:
                raise HTTPError(exc.status, exc.message) from None
            tail, status = _error_event(exc.message, request_id, exc.status), exc.status
        except Exception as exc:
            log.exception("stream of endpoint %r failed (request_id=%s)", self.name, request_id)
            if not started:
                raise HTTPError(500, f"{type(exc).__name__} in endpoint {self.name!r}: {exc}") from None
            tail, status = _error_event(f"{type(exc).__name__}: {exc}", request_id, 500), 500
        finally:
            watch.stop()
            await items.aclose()  # type: ignore[attr-defined]
            self.limiter.release()
        await send({"type": "http.response.body", "body": tail or b"", "more_body": False})
        return status


def _error_event(message: str, request_id: str, status: int) -> bytes:
    return b"event: error\ndata: " + error_body(message, request_id, status=status) + b"\n\n"


async def _iterate(produced: Any, executor: Executor) -> AsyncIterator[Any]:
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
                # cancelled (timeout, disconnect) while next() still runs in its thread: a generator
                # cannot be closed while it executes, so close it as soon as that step returns
                step.add_done_callback(lambda _: _close_quietly(close))
            else:
                await loop.run_in_executor(executor, _close_quietly, close)


def _close_quietly(close: typing.Callable[[], Any]) -> None:
    try:
        close()
    except Exception:
        log.debug("closing a stream's generator raised", exc_info=True)
