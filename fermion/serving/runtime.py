"""One endpoint at run time: parse and validate a request, admit it, run it, answer it.

Blocking (sync) code runs on the replica's thread pool so the event loop keeps accepting;
async code runs on the loop. A request is cancelled when its client goes away, its deadline
passes, or `DELETE /requests/{id}` names it: waiting (for a slot or a batch) it never runs;
async code gets `CancelledError` where it awaits; a stream's generator is closed; sync code in
a thread cannot be interrupted, so it runs to its end and its result is discarded. The hot path
does no work that can be done once: headers are read in one pass, deadlines and disconnects are
swept by one task, metrics are integers.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
import typing
from collections.abc import AsyncIterator
from concurrent.futures import Executor
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from fermion.responses import DEFAULT_STREAM_END, EndpointError, EventStream, Response
from fermion.schema import accepts_collection, wants_json
from fermion.serving.batching import Batcher
from fermion.serving.deadlines import CANCELLED, TIMEOUT, CancelFlag, Deadlines, InFlight, call_flagged, take_reason
from fermion.serving.http import (
    JSON_TYPE,
    ClientDisconnected,
    HTTPError,
    dumps,
    failure_message,
    new_request_id,
    parse_multipart,
    parse_query,
    parse_urlencoded,
    send_bytes,
    send_error,
    valid_request_id,
    validation_detail,
    validation_message,
)
from fermion.serving.limits import ConcurrencyLimiter, Overloaded
from fermion.serving.streaming import STATUS_CANCELLED, STATUS_CLIENT_GONE, cancelled_message, iterate, send_event_stream

if TYPE_CHECKING:
    from fermion.service import Endpoint, Service
    from fermion.serving.config import ServeConfig
    from fermion.serving.metrics import EndpointMetrics
    from fermion.serving.v2.exchange import InferExchange

log = logging.getLogger("fermion.serving")


def _call_soon(loop: asyncio.AbstractEventLoop, callback: typing.Callable[[], None]) -> None:
    """From a worker thread: run `callback` on the loop, unless the loop is already gone (shutdown)."""
    try:
        loop.call_soon_threadsafe(callback)
    except RuntimeError:
        pass


def _overloaded(name: str) -> HTTPError:
    return HTTPError(
        429,
        f"endpoint {name!r} is busy: its concurrency limit is reached and its queue is full; retry shortly",
        headers=[(b"retry-after", b"1")],
    )


_NOT_READY = HTTPError(503, "the service is starting: setup() has not finished; retry shortly", headers=[(b"retry-after", b"1")])


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
        deadlines: Deadlines,
        in_flight: InFlight,
    ) -> None:
        self.ep = ep
        self.name = ep.name
        self.schema = ep.schema
        self.func = ep.func.__get__(service, type(service))
        self.is_async = ep.is_async
        self.is_get = ep.method == "GET"
        self.timeout = ep.timeout or config.timeout
        self.max_body_size = config.max_body_size
        self.executor = executor
        self.metrics = metrics
        self.is_ready = is_ready
        self.deadlines = deadlines
        self.in_flight = in_flight
        self.active = 0
        self.json_params = frozenset(p.name for p in self.schema.params if wants_json(p.annotation))
        self.list_params = frozenset(p.name for p in self.schema.params if accepts_collection(p.annotation))
        max_queue = ep.max_queue if ep.max_queue is not None else config.max_queue
        #: The most items one Open Inference Protocol request may carry: what the queue can hold.
        self.max_items = max(1, max_queue)
        self.batcher: Batcher | None = None
        if ep.batch is not None:
            self.batcher = Batcher(
                self._run_batch,
                max_batch_size=ep.batch.max_batch_size,
                max_wait_ms=ep.batch.max_wait_ms,
                max_queue=max_queue,
                concurrency=ep.max_concurrency or 1,
                on_batch=metrics.observe_batch,
                adaptive=ep.batch.adaptive,
            )
        default = config.max_concurrency or (256 if self.is_async else config.threads)
        limit = ep.max_concurrency or default
        if not self.is_async:
            limit = min(limit, config.threads)
        self.limiter = ConcurrencyLimiter(limit, max_queue)

    @property
    def waiting(self) -> int:
        return self.batcher.depth if self.batcher is not None else self.limiter.waiting

    # -- request → keyword arguments -------------------------------------------------------

    async def _read_body(self, receive: Any, declared: bytes | None) -> bytes:
        limit = self.max_body_size
        if declared is not None:
            try:
                size = int(declared)
            except ValueError:
                raise HTTPError(400, "invalid Content-Length header") from None
            if size > limit:
                raise HTTPError(413, f"request body is {size} bytes; the limit is {limit} (raise it with --max-body-size)")
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnected
        body = message.get("body", b"")
        if not message.get("more_body", False) and len(body) <= limit:
            return body
        chunks, total = [body], len(body)
        while message.get("more_body", False):
            message = await receive()
            if message["type"] == "http.disconnect":
                raise ClientDisconnected
            chunk = message.get("body", b"")
            total += len(chunk)
            if total > limit:
                break
            chunks.append(chunk)
        if total > limit:
            raise HTTPError(413, f"request body exceeds the limit of {limit} bytes (raise it with --max-body-size)")
        return b"".join(chunks)

    async def parse(self, scope: dict[str, Any], receive: Any, ctype: bytes, declared_length: bytes | None) -> dict[str, Any]:
        """Validate the request into keyword arguments (413/415/422 on bad input)."""
        schema = self.schema
        try:
            if self.is_get:
                query = parse_query(scope.get("query_string", b""), self.list_params, self.json_params - self.list_params)
                return schema.validate_mapping(query)
            body = await self._read_body(receive, declared_length)
            if ctype.startswith(b"application/json") or (not body and not ctype.startswith(b"multipart/")):
                return schema.validate_json(body)
            if ctype.startswith(b"multipart/form-data"):
                return schema.validate_mapping(parse_multipart(ctype, body, self.json_params, self.list_params))
            if ctype.startswith(b"application/x-www-form-urlencoded"):
                if body.lstrip()[:1] in (b"{", b"["):  # `curl -d '{...}'` sends JSON under the form type
                    return schema.validate_json(body)
                return schema.validate_mapping(parse_urlencoded(body, self.json_params))
            raise HTTPError(
                415,
                f"unsupported Content-Type {ctype.decode('latin-1')!r}: send application/json"
                + (" or multipart/form-data" if schema.file_params else ""),
            )
        except ValidationError as exc:
            detail = validation_detail(exc)
            raise HTTPError(422, validation_message(detail), detail=detail) from None

    # -- running ----------------------------------------------------------------------------

    async def _run_batch(self, columns: dict[str, list[Any]]) -> Any:
        if self.is_async:
            return await self.func(**columns)
        return await asyncio.get_running_loop().run_in_executor(self.executor, lambda: self.func(**columns))

    async def _admit(self) -> None:
        if self.limiter.try_acquire():
            return
        try:
            await self.limiter.acquire()
        except Overloaded:
            raise _overloaded(self.name) from None

    async def _call(self, kwargs: dict[str, Any]) -> Any:
        """Run the endpoint; an `EventStream` result keeps its slot until the stream ends."""
        if self.batcher is not None:
            try:
                return await self.batcher.submit(kwargs)
            except Overloaded:
                raise _overloaded(self.name) from None
        await self._admit()
        limiter = self.limiter
        keep_slot = False
        if self.is_async:
            try:
                result = await self.func(**kwargs)
                keep_slot = isinstance(result, EventStream)
                return result
            finally:
                if not keep_slot:
                    limiter.release()
        loop = asyncio.get_running_loop()
        flag = CancelFlag()
        job = self.executor.submit(call_flagged, flag, self.func, kwargs)
        try:
            result = await asyncio.wrap_future(job, loop=loop)
            keep_slot = isinstance(result, EventStream)
            return result
        finally:
            if keep_slot:
                pass
            elif job.done() or job.cancel():  # finished, or never started (so it never will)
                limiter.release()
            else:  # abandoned while running: the code may see `cancelled()`; the slot frees when the thread does
                flag.cancelled = True
                job.add_done_callback(lambda _: _call_soon(loop, limiter.release))

    async def _call_each(self, items: list[dict[str, Any]]) -> list[Any]:
        """Run several items at once (a batched endpoint batches them); the first failure cancels the rest."""
        if len(items) == 1:
            return [await self._call(items[0])]
        calls = [asyncio.ensure_future(self._call(kwargs)) for kwargs in items]
        try:
            return [await call for call in calls]
        finally:
            for call in calls:
                if not call.cancel() and not call.cancelled():
                    call.exception()  # retrieved, so that a second failure is not logged as unhandled

    # -- ASGI entry -------------------------------------------------------------------------

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any, exchange: InferExchange | None = None) -> None:
        """Answer one request: in the endpoint's own JSON, or as `exchange` reads and writes the protocol's tensors."""
        started = time.perf_counter()
        ctype, length, incoming_id = b"application/json", None, None
        for key, value in scope["headers"]:
            if key == b"content-type":
                ctype = value
            elif key == b"content-length":
                length = value
            elif key == b"x-request-id":
                incoming_id = value
        # the caller's id is kept and echoed (a gateway sends its own, to find the request again,
        # and checks the answer carries it) unless it could not appear in a URL
        rid = incoming_id if incoming_id is not None and valid_request_id(incoming_id) else new_request_id()
        task = asyncio.current_task()
        assert task is not None
        status = 500
        self.active += 1
        self.deadlines.add(task, self.timeout)
        self.in_flight.add(rid, task, self.name)
        try:
            if not self.is_ready():
                raise _NOT_READY
            if exchange is not None:
                items = exchange.items(await self._read_body(receive, length))
                self.deadlines.watch(task, receive)
                results = await self._call_each(items)
                self._answering(task, rid)
                headers, body = exchange.answer(results)
                status = 200
                await send_bytes(send, status, body, [*headers, (b"x-request-id", rid)])
                return
            kwargs = await self.parse(scope, receive, ctype, length)
            self.deadlines.watch(task, receive)
            if self.ep.stream:
                await self._admit()
                status = await self._stream(self._produce(kwargs), None, DEFAULT_STREAM_END, send, rid)
                return
            result = await self._call(kwargs)
            if isinstance(result, EventStream):  # the deadline and the disconnect watch keep running over the stream
                status = await self._stream(iterate(result.items, self.executor), result.encode, result.end, send, rid)
                return
            self._answering(task, rid)
            if isinstance(result, Response):
                status = result.status
                headers = [(b"content-type", result.media_type.encode()), (b"x-request-id", rid)]
                headers += [(k.lower().encode(), v.encode()) for k, v in result.headers.items()]
                body = result.content
            else:
                status = 200
                body = dumps(result)
                headers = [JSON_TYPE, (b"x-request-id", rid)]
            headers.append((b"content-length", b"%d" % len(body)))
            await send({"type": "http.response.start", "status": status, "headers": headers})
            await send({"type": "http.response.body", "body": body})
        except HTTPError as exc:
            self._answering(task, rid)
            status = exc.status
            await send_error(send, exc, rid.decode("latin-1"), self.ep.error_style)
        except EndpointError as exc:
            self._answering(task, rid)
            status = exc.status
            await send_error(send, HTTPError(exc.status, exc.message), rid.decode("latin-1"), self.ep.error_style)
        except asyncio.CancelledError:
            reason = take_reason(task)
            if reason is None:  # the server is going away (grace period over): say so, if we still can
                status = 503
                try:
                    await send_error(
                        send, HTTPError(503, "the server is shutting down; retry on another replica"), rid.decode("latin-1")
                    )
                except Exception:  # the answer had already started (a stream): nothing more to say
                    pass
                raise
            task.uncancel()
            self._answering(task, rid)
            if reason == TIMEOUT:
                status = 504
                await send_error(
                    send,
                    HTTPError(504, f"endpoint {self.name!r} did not finish within {self.timeout:g} s"),
                    rid.decode("latin-1"),
                    self.ep.error_style,
                )
            elif reason == CANCELLED:
                status = STATUS_CANCELLED
                request_id = rid.decode("latin-1")
                await send_error(
                    send, HTTPError(STATUS_CANCELLED, cancelled_message(request_id)), request_id, self.ep.error_style
                )
            else:
                status = STATUS_CLIENT_GONE
        except ClientDisconnected:
            status = STATUS_CLIENT_GONE
        except Exception as exc:
            self._answering(task, rid)
            log.exception("endpoint %r failed (request_id=%s)", self.name, rid.decode("latin-1"))
            status = 500
            await send_error(send, HTTPError(500, failure_message(exc, self.name)), rid.decode("latin-1"), self.ep.error_style)
        finally:
            self.deadlines.discard(task)
            self.in_flight.remove(rid, task)
            self.active -= 1
            self.metrics.observe(status, time.perf_counter() - started)

    def _answering(self, task: asyncio.Task[Any], rid: bytes) -> None:
        """The answer is about to go out: no timeout, disconnect or DELETE may cut it short now."""
        self.deadlines.discard(task)
        self.in_flight.remove(rid, task)

    # -- streaming --------------------------------------------------------------------------

    async def _stream(
        self,
        items: AsyncIterator[Any],
        encode: typing.Callable[[Any], bytes] | None,
        end: bytes | None,
        send: Any,
        rid: bytes,
    ) -> int:
        """Send items as SSE; the caller holds a slot, freed here."""
        try:
            return await send_event_stream(
                items,
                send=send,
                request_id=rid.decode("latin-1"),
                endpoint=self.name,
                timeout=self.timeout,
                encode=encode,
                end=end,
            )
        finally:
            self.limiter.release()

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
        async for item in iterate(produced, self.executor):
            yield item
