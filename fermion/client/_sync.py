"""`Client`: call a Fermion service's endpoints as Python methods, over one keep-alive connection pool."""

from __future__ import annotations

import time
from collections.abc import Iterator
from types import TracebackType
from typing import Any

import httpx

from fermion.client._base import OPENAPI_PATH, PROBE_TIMEOUT, ClientBase, ReadyWait, readiness
from fermion.client._errors import APIError, transport_errors
from fermion.client._request import PreparedCall, decode_answer
from fermion.client._schema import EndpointInfo, return_type
from fermion.client._sse import StreamReader, ended_early, is_event_stream


class Client(ClientBase):
    """A blocking client for one service: `Client(url).predict(text="hi")`.

    The endpoint methods come from `{url}/openapi.json`, read once here. Arguments are checked
    before anything is sent; HTTP errors raise `APIError`. Stream endpoints return an iterator.
    """

    def _open(self) -> None:
        self._http = httpx.Client(headers=self._headers, timeout=self.timeout, verify=self._verify)
        try:
            with transport_errors(self.url, self.timeout):
                self._load(self._http.get(self.url + OPENAPI_PATH))
        except BaseException:
            self._http.close()
            raise

    def _answer_type(self, info: EndpointInfo) -> str:
        return f"Iterator[{return_type(info)}]" if info.stream else return_type(info)

    def call(self, endpoint: str, /, *args: Any, **kwargs: Any) -> Any:
        """Call an endpoint by name (works for names that clash with the client's own attributes).

        A stream endpoint returns an iterator, and so does any call the server answers with an
        event stream; other answers are decoded (JSON → Python, text → str, else bytes).
        """
        prepared = self._prepare(endpoint, args, kwargs)
        if prepared.info.stream:
            return self._stream(prepared)
        with transport_errors(self.url, self.timeout):
            response = self._http.send(self._build_request(self._http, prepared), stream=True)
            if is_event_stream(response):
                return self._items(response, prepared.info)
            try:
                response.read()
            finally:
                response.close()
        return decode_answer(response)

    def _stream(self, prepared: PreparedCall) -> Iterator[Any]:
        """Items of a stream endpoint; the request is sent when iteration starts."""
        with transport_errors(self.url, self.timeout):
            response = self._http.send(self._build_request(self._http, prepared), stream=True)
        yield from self._items(response, prepared.info)

    def _items(self, response: httpx.Response, info: EndpointInfo) -> Iterator[Any]:
        """Items of an open answer as they arrive; the answer is closed when they end or the caller stops."""
        with transport_errors(self.url, self.timeout):
            try:
                if not is_event_stream(response):
                    response.read()
                    yield decode_answer(response)  # an error status raises here
                    return
                reader = StreamReader(response.headers.get("x-request-id"))
                for line in response.iter_lines():
                    yield from reader.feed(line)
                    if reader.done:
                        return
            finally:
                response.close()
        if info.stream:  # Fermion always ends a stream endpoint with an end event
            raise ended_early(self.url + info.path)

    # -- health -----------------------------------------------------------------------------

    def _probe(self, path: str, timeout: float = PROBE_TIMEOUT) -> tuple[bool, str]:
        try:
            with transport_errors(self.url, timeout):
                return readiness(self._http.get(self.url + path, timeout=timeout))
        except APIError as exc:
            return False, exc.message

    def health(self) -> bool:
        """Whether the server process answers (`/healthz`)."""
        return self._probe("/healthz")[0]

    def ready(self) -> bool:
        """Whether the service has finished setup() and takes traffic (`/readyz`)."""
        return self._probe("/readyz")[0]

    def wait_ready(self, timeout: float = 30.0, interval: float = 0.1) -> None:
        """Block until the service is ready; `TimeoutError` after `timeout` seconds."""
        wait = ReadyWait(self.url, timeout, interval)
        while not (probe := self._probe("/readyz", wait.probe_timeout()))[0]:
            time.sleep(wait.pause(probe[1]))

    # -- lifetime ---------------------------------------------------------------------------

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()
