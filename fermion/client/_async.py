"""`AsyncClient`: the asyncio twin of `Client`; the schema is fetched on first use."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Generator
from types import TracebackType
from typing import Any

import httpx

from fermion.client._base import OPENAPI_PATH, PROBE_TIMEOUT, ClientBase, ReadyWait, readiness
from fermion.client._errors import APIError, transport_errors
from fermion.client._request import PreparedCall, decode_answer
from fermion.client._schema import EndpointInfo, return_type
from fermion.client._sse import StreamReader, ended_early, is_event_stream


class AsyncCall:
    """One pending endpoint call: `await` it for an answer, or `async for` over it for a stream.

    Which of the two fits is known only once the schema is loaded, so both are offered and the
    wrong one raises a `TypeError` that names the right one.
    """

    __slots__ = ("_args", "_client", "_kwargs", "_name")

    def __init__(self, client: AsyncClient, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        self._client = client
        self._name = name
        self._args = args
        self._kwargs = kwargs

    async def _prepare(self) -> PreparedCall:
        await self._client.connect()
        return self._client._prepare(self._name, self._args, self._kwargs)

    def __await__(self) -> Generator[Any, None, Any]:
        return self._answer().__await__()

    async def _answer(self) -> Any:
        prepared = await self._prepare()
        if prepared.info.stream:
            raise TypeError(
                f"{self._name}() streams its answer: iterate it with `async for item in client.{self._name}(...)` "
                "instead of awaiting it"
            )
        client = self._client
        with transport_errors(client.url, client.timeout):
            response = await client._http.send(client._build_request(client._http, prepared), stream=True)
            if is_event_stream(response):  # decided at run time (an EventStream answer): hand over its items
                return client._items(response, prepared.info)
            try:
                await response.aread()
            finally:
                await response.aclose()
        return decode_answer(response)

    def __aiter__(self) -> AsyncIterator[Any]:
        return self._stream()

    async def _stream(self) -> AsyncIterator[Any]:
        prepared = await self._prepare()
        if not prepared.info.stream:
            raise TypeError(
                f"{self._name}() does not stream: `await client.{self._name}(...)` instead of iterating it with `async for`"
            )
        client = self._client
        with transport_errors(client.url, client.timeout):
            response = await client._http.send(client._build_request(client._http, prepared), stream=True)
        async for item in client._items(response, prepared.info):
            yield item

    def __repr__(self) -> str:
        return f"<AsyncCall {self._name}() on {self._client.url}: await it, or async-iterate a stream>"


class AsyncClient(ClientBase):
    """An asyncio client for one service: `await client.predict(text="hi")`.

    Use it as `async with AsyncClient(url) as client:`; the endpoints are read from
    `{url}/openapi.json` on the first call (or by `await client.connect()`).
    """

    def _open(self) -> None:
        self._http = httpx.AsyncClient(headers=self._headers, timeout=self.timeout, verify=self._verify)
        self._connecting: asyncio.Lock | None = None

    async def connect(self) -> AsyncClient:
        """Fetch the service's schema, once; later calls return at once."""
        if self._api is None:
            if self._connecting is None:
                self._connecting = asyncio.Lock()
            async with self._connecting:
                if self._api is None:
                    with transport_errors(self.url, self.timeout):
                        self._load(await self._http.get(self.url + OPENAPI_PATH))
        return self

    def _answer_type(self, info: EndpointInfo) -> str:
        return f"AsyncIterator[{return_type(info)}]" if info.stream else f"Awaitable[{return_type(info)}]"

    def call(self, endpoint: str, /, *args: Any, **kwargs: Any) -> AsyncCall:
        """Call an endpoint by name: `await client.call("predict", text="hi")`, or `async for` a stream."""
        return AsyncCall(self, endpoint, args, kwargs)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_") or self._api is not None:
            return super().__getattr__(name)

        def pending(*args: Any, **kwargs: Any) -> AsyncCall:
            return AsyncCall(self, name, args, kwargs)

        pending.__name__ = pending.__qualname__ = name
        pending.__doc__ = f"Call endpoint {name!r} (its schema is loaded on first use)."
        return pending

    async def _items(self, response: httpx.Response, info: EndpointInfo) -> AsyncIterator[Any]:
        """Items of an open answer as they arrive; the answer is closed when they end or the caller stops."""
        with transport_errors(self.url, self.timeout):
            try:
                if not is_event_stream(response):
                    await response.aread()
                    yield decode_answer(response)  # an error status raises here
                    return
                reader = StreamReader(response.headers.get("x-request-id"))
                async for line in response.aiter_lines():
                    for item in reader.feed(line):
                        yield item
                    if reader.done:
                        return
            finally:
                await response.aclose()
        if info.stream:  # Fermion always ends a stream endpoint with an end event
            raise ended_early(self.url + info.path)

    # -- health -----------------------------------------------------------------------------

    async def _probe(self, path: str, timeout: float = PROBE_TIMEOUT) -> tuple[bool, str]:
        try:
            with transport_errors(self.url, timeout):
                return readiness(await self._http.get(self.url + path, timeout=timeout))
        except APIError as exc:
            return False, exc.message

    async def health(self) -> bool:
        """Whether the server process answers (`/healthz`)."""
        return (await self._probe("/healthz"))[0]

    async def ready(self) -> bool:
        """Whether the service has finished setup() and takes traffic (`/readyz`)."""
        return (await self._probe("/readyz"))[0]

    async def wait_ready(self, timeout: float = 30.0, interval: float = 0.1) -> None:
        """Wait until the service is ready; `TimeoutError` after `timeout` seconds."""
        wait = ReadyWait(self.url, timeout, interval)
        while not (probe := await self._probe("/readyz", wait.probe_timeout()))[0]:
            await asyncio.sleep(wait.pause(probe[1]))

    # -- lifetime ---------------------------------------------------------------------------

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._http.aclose()

    close: Callable[[AsyncClient], Any] = aclose

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        await self.aclose()
