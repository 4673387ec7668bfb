"""The Python client against a real `fermion serve` process, and against a tiny stub server for
answers a healthy service never gives (slow, cut-off or odd streams, HTML errors, auth headers)."""

from __future__ import annotations

import asyncio
import inspect
import io
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from apps.client_stub import StubServer, stub_server
from support import ROOT, RunningServer, free_port, running_server

from fermion import File
from fermion.client import (
    APIConnectionError,
    APIError,
    APITimeoutError,
    AsyncClient,
    Client,
    EndpointInfo,
    RequestValidationError,
)

APP = ROOT / "tests" / "apps" / "client_app.py"


@pytest.fixture(scope="module")
def server() -> Iterator[RunningServer]:
    with running_server(f"{APP}:ClientApp") as running:
        yield running


@pytest.fixture(scope="module")
def client(server: RunningServer) -> Iterator[Client]:
    with Client(server.url) as c:
        yield c


@pytest.fixture
def stub() -> Iterator[StubServer]:
    with stub_server() as running:
        yield running


# -- methods from the schema ----------------------------------------------------------------


def test_endpoint_methods_are_built_from_openapi(client: Client) -> None:
    assert {"predict", "search", "count", "size", "square", "boom", "shout", "ticks", "call"} <= set(client.endpoints)
    assert client.openapi["info"]["title"] == "ClientApp"
    search = client.endpoints["search"]
    assert isinstance(search, EndpointInfo)
    assert (search.method, search.path, search.params, search.required) == ("GET", "/search", ("q", "tags", "limit"), ("q",))
    assert client.endpoints["count"].stream and client.endpoints["size"].files == ("upload",)
    assert {"predict", "count", "size"} <= set(dir(client))
    assert str(inspect.signature(client.predict)) == "(text: 'str', times: 'int' = 1) -> 'str'"
    assert str(inspect.signature(client.count)) == "(n: 'int') -> 'Iterator[int]'"
    assert client.predict.__doc__.startswith("Repeat a text.")
    assert "times (int, default 1): How many times." in client.predict.__doc__


def test_positional_arguments_and_defaults(client: Client) -> None:
    assert client.predict("hi", 2) == "hihi"
    assert client.predict(text="ab") == "ab"
    assert client.predict("x", times=3) == "xxx"


def test_get_endpoint_sends_a_query_string(client: Client) -> None:
    assert client.search("cats", tags=["a", "b"], limit=3) == {"q": "cats", "tags": ["a", "b"], "limit": 3}
    assert client.search(q="dogs", tags=["only"]) == {"q": "dogs", "tags": ["only"], "limit": 10}


def test_stream_yields_items(client: Client) -> None:
    assert list(client.count(n=4)) == [0, 1, 2, 3]
    assert list(client.ticks(2)) == ["tick 0", "tick 1"]
    stream = client.count(n=1000)
    assert next(stream) == 0
    stream.close()  # leaving early (break, close) ends the request; the client stays usable
    assert client.predict("ok") == "ok"


def test_error_in_the_middle_of_a_stream(client: Client) -> None:
    seen = []
    with pytest.raises(APIError) as info:
        for item in client.fail_midway(n=2):
            seen.append(item)
    assert seen == [0, 1]
    assert info.value.status == 500 and info.value.request_id
    assert "RuntimeError" in info.value.message and "ran out of numbers" not in info.value.message


@pytest.mark.parametrize("kind", ["bytes", "path", "file object", "File"])
def test_file_upload(client: Client, tmp_path: Path, kind: str) -> None:
    path = tmp_path / "cat.png"
    path.write_bytes(b"\x89PNG-fake")
    value = {
        "bytes": path.read_bytes,
        "path": lambda: path,
        "file object": lambda: path.open("rb"),
        "File": lambda: File(path.read_bytes(), filename="cat.png"),
    }[kind]()
    answer = client.size(upload=value, label="pet", meta={"k": [1]})
    assert answer["size"] == 9 and answer["label"] == "pet" and answer["meta"] == {"k": [1]}
    assert answer["filename"] == ("upload" if kind == "bytes" else "cat.png")
    if isinstance(value, io.IOBase):
        value.close()


def test_file_in_a_get_query(client: Client) -> None:
    assert client.peek(upload=b"hello") == 5


def test_file_param_refuses_a_string_path(client: Client) -> None:
    with pytest.raises(TypeError, match=r"pathlib\.Path\('cat.png'\)"):
        client.size(upload="cat.png")


def test_batched_endpoint_takes_one_item_per_request(client: Client) -> None:
    with ThreadPoolExecutor(8) as pool:
        assert list(pool.map(client.square, range(16))) == [i * i for i in range(16)]


def test_raw_bytes_answer(client: Client) -> None:
    assert client.thumbnail(width=7) == b"\x89PNG\x07"
    assert str(inspect.signature(client.thumbnail)) == "(width: 'int') -> 'bytes'"


def test_event_stream_chosen_at_run_time(client: Client) -> None:
    assert client.chat("hello there") == "hello there"
    words = client.chat("hello there", stream=True)  # the server answers with events: an iterator
    assert not isinstance(words, str) and list(words) == ["hello", "there"]  # `data: [DONE]` ends it


def test_async_endpoint_and_generic_call(client: Client) -> None:
    assert client.shout("hey") == "HEY"
    assert client.call("call", value=1) == 2  # an endpoint named like a client method
    assert client.call("predict", "a", 2) == "aa"


# -- errors -------------------------------------------------------------------------------


def test_422_from_the_server(client: Client) -> None:
    with pytest.raises(APIError) as info:
        client.schedule(when="not a date")  # a string to JSON schema; only pydantic knows better
    err = info.value
    assert err.status == 422 and err.request_id
    assert err.message.startswith("invalid request: when:") and str(err).startswith("422: invalid request: when:")
    assert err.detail and err.detail[0]["field"] == "when"


def test_validate_false_leaves_checking_to_the_server(server: RunningServer) -> None:
    with Client(server.url, validate=False) as raw, pytest.raises(APIError) as info:
        raw.predict(text=3)
    assert info.value.status == 422 and info.value.detail[0]["field"] == "text"


def test_500_when_the_endpoint_raises(client: Client) -> None:
    with pytest.raises(APIError) as info:
        client.boom(message="kaput")
    assert info.value.status == 500 and "ValueError" in info.value.message and "kaput" not in info.value.message
    assert info.value.request_id and '"request_id"' in info.value.body


def test_error_raised_on_purpose_by_the_endpoint(client: Client) -> None:
    assert client.sqrt(9) == 3
    with pytest.raises(APIError) as info:
        client.sqrt(-1)
    assert info.value.status == 422 and info.value.message == "x must be zero or more, got -1.0" and info.value.detail is None


def test_404_for_a_wrong_url_prefix(server: RunningServer) -> None:
    with pytest.raises(APIError) as info:
        Client(server.url + "/run/nothing")
    assert info.value.status == 404 and "openapi.json" in info.value.message


def test_unknown_endpoint_suggests_a_name(client: Client) -> None:
    with pytest.raises(AttributeError, match="did you mean 'predict'"):
        client.predikt("x")


def test_bad_arguments_are_refused_before_sending(stub: StubServer) -> None:
    with Client(stub.url) as c:
        sent = len(stub.requests)
        with pytest.raises(TypeError, match=r"whoami\(\) got an unexpected argument 'nota'; it takes: note"):
            c.whoami(nota="x")
        with pytest.raises(TypeError, match=r"slow\(\) missing required argument: 'seconds'"):
            c.slow()
        with pytest.raises(TypeError, match="at most 1 positional argument"):
            c.whoami("a", "b")
        with pytest.raises(RequestValidationError, match="note: 5 is not of type 'string'") as info:
            c.whoami(note=5)
        assert isinstance(info.value, ValueError) and info.value.detail[0]["field"] == "note"
        assert len(stub.requests) == sent


def test_validation_names_the_field(client: Client) -> None:
    with pytest.raises(RequestValidationError, match="limit: 'many' is not of type 'integer'"):
        client.search(q="x", limit="many")
    with pytest.raises(RequestValidationError, match=r"tags: 7 is not a valid list\[str\] \| None"):
        client.search(q="x", tags=7)


def test_connection_error_names_the_url() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(APIConnectionError) as info:
        Client(url)
    assert info.value.status == 0 and url in info.value.message and "running" in info.value.message


def test_timeout(stub: StubServer) -> None:
    with Client(stub.url, timeout=0.3) as c, pytest.raises(APITimeoutError) as info:
        c.slow(seconds=2)
    assert info.value.status == 0 and "timeout" in info.value.message


def test_non_json_error_body(stub: StubServer) -> None:
    with Client(stub.url) as c, pytest.raises(APIError) as info:
        c.broken()
    assert info.value.status == 502 and "Bad Gateway" in info.value.message and info.value.detail is None


# -- headers, prefixes and streams against the stub -----------------------------------------


def test_token_and_headers_under_a_path_prefix(stub: StubServer) -> None:
    with Client(stub.url + "/", token="s3cret", headers={"x-team": "blue"}) as c:
        assert c.whoami(note="hi") == {"authorization": "Bearer s3cret", "x-team": "blue", "note": "hi"}
    assert [r["path"] for r in stub.requests] == ["/run/demo/openapi.json", "/run/demo/whoami"]
    assert all(r["headers"].get("authorization") == "Bearer s3cret" for r in stub.requests)


def test_stream_items_arrive_as_they_are_sent(stub: StubServer) -> None:
    with Client(stub.url) as c:
        items = c.gated()
        assert next(items) == 1  # the stub holds item 2 back until the gate opens
        stub.gate.set()
        assert list(items) == [2]
    assert stub.gate_opened_in_time == [True]


def test_stream_parsing_and_error_event_status(stub: StubServer) -> None:
    seen = []
    with Client(stub.url) as c, pytest.raises(APIError) as info:
        for item in c.odd():
            seen.append(item)
    assert seen == [{"a": 1}, "two"]
    assert (info.value.status, info.value.message, info.value.request_id) == (503, "model unloaded", "r-42")


def test_stream_cut_before_its_end(stub: StubServer) -> None:
    with Client(stub.url) as c, pytest.raises(APIConnectionError, match="closed before its end event"):
        list(c.cut())


def test_health_and_readiness(client: Client, stub: StubServer) -> None:
    assert client.health() and client.ready()
    client.wait_ready(timeout=5)
    with Client(stub.url) as c:
        assert not c.ready()
        with pytest.raises(TimeoutError, match="starting"):
            c.wait_ready(timeout=0.3)
        stub.ready = True
        c.wait_ready(timeout=5)


# -- AsyncClient --------------------------------------------------------------------------


def test_async_client(server: RunningServer, tmp_path: Path) -> None:
    upload = tmp_path / "notes.txt"
    upload.write_bytes(b"hello")

    async def main() -> None:
        async with AsyncClient(server.url) as c:
            with pytest.raises(RuntimeError, match="connect"):
                c.endpoints  # noqa: B018 - the schema is loaded on first use
            assert await c.predict("hi", 2) == "hihi"
            assert "predict" in dir(c) and c.endpoints["count"].stream
            assert [x async for x in c.count(n=3)] == [0, 1, 2]
            assert [x async for x in c.ticks(n=2)] == ["tick 0", "tick 1"]
            assert await asyncio.gather(*(c.square(i) for i in range(10))) == [i * i for i in range(10)]
            assert (await c.size(upload=upload))["filename"] == "notes.txt"
            assert await c.call("call", value=41) == 42
            assert await c.thumbnail(1) == b"\x89PNG\x01"
            assert [w async for w in await c.chat("a b c", stream=True)] == ["a", "b", "c"]
            assert await c.search("q", tags=["t"]) == {"q": "q", "tags": ["t"], "limit": 10}
            assert await c.health() and await c.ready()
            await c.wait_ready(timeout=5)

    asyncio.run(main())


def test_async_errors(server: RunningServer) -> None:
    async def main() -> None:
        async with AsyncClient(server.url) as c:
            await c.connect()
            with pytest.raises(TypeError, match=r"count\(\) streams its answer"):
                await c.count(n=2)
            with pytest.raises(TypeError, match=r"predict\(\) does not stream"):
                async for _ in c.predict("x"):
                    pass
            with pytest.raises(TypeError, match="unexpected argument 'txt'"):
                await c.predict(txt="x")
            with pytest.raises(RequestValidationError):
                await c.predict(text=1)
            with pytest.raises(APIError) as info:
                await c.schedule(when="soon")
            assert info.value.status == 422 and info.value.request_id
            with pytest.raises(APIError) as info:
                async for _ in c.fail_midway(n=1):
                    pass
            assert info.value.status == 500
        async with AsyncClient(f"http://127.0.0.1:{free_port()}") as down:
            assert not await down.health()
            with pytest.raises(APIConnectionError):
                await down.predict("x")

    asyncio.run(main())


def test_async_token_prefix_and_incremental_stream(stub: StubServer) -> None:
    async def main() -> None:
        async with AsyncClient(stub.url, token="t0k") as c:
            assert (await c.whoami())["authorization"] == "Bearer t0k"
            items = c.gated().__aiter__()
            assert await items.__anext__() == 1
            stub.gate.set()
            assert [x async for x in items] == [2]
        async with AsyncClient(stub.url, timeout=0.3) as impatient:
            with pytest.raises(APITimeoutError):
                await impatient.slow(seconds=2)

    asyncio.run(main())
    assert stub.gate_opened_in_time == [True]
