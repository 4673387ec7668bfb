"""The edge: the gateway never mixes two callers' answers, and nobody makes the platform read a body
it will refuse. Real sockets throughout: raw HTTP/1.1 where a client library would refuse (or fix)
what an attacker sends.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from support import EXAMPLES, running_platform, running_server, wait_for
from support import serve_asgi as serve

from fermion.platform.gateway.admission import ADMITTED, Admission
from fermion.platform.gateway.edge import forwarded_headers
from fermion.platform.gateway.proxy import Gateway
from fermion.platform.gateway.routes import RouteTable

ECHO = str(EXAMPLES / "echo.py")
SMUGGLE = "/run/echo/healthz%20HTTP/1.1%0D%0Ahost:%20x%0D%0A%0D%0AGET%20/readyz"
GATEWAYS = ["python"] + (["haproxy"] if shutil.which("haproxy") else [])


def raw_exchange(url: str, request: bytes, timeout: float = 10.0) -> bytes:
    """Send `request` as is on a fresh connection; what came back until the server closed or went quiet."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=timeout) as sock:
        sock.sendall(request)
        chunks = []
        try:
            while chunk := sock.recv(65536):
                chunks.append(chunk)
                if b"\r\n\r\n" in b"".join(chunks):
                    head, _, rest = b"".join(chunks).partition(b"\r\n\r\n")
                    length = next(
                        (int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")),
                        None,
                    )
                    if length is not None and len(rest) >= length:
                        break
        except TimeoutError:
            pass
    return b"".join(chunks)


def status_of(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1]) if answer else 0


@pytest.fixture(scope="module")
def replica(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with running_server(ECHO, tmp_dir=tmp_path_factory.mktemp("edge")) as server:
        yield server.url


@pytest.fixture(scope="module")
def gateway(replica: str) -> Iterator[str]:
    table = RouteTable()
    table.set("echo", [replica], public=True)
    with serve(Gateway(table, max_body_size=1 << 20)) as url:
        yield url


def test_a_smuggled_request_is_refused_and_every_caller_keeps_its_own_answer(gateway):
    """The percent-encoded CR/LF must not become a second request on a pooled connection: 400, and
    the next unrelated request (on the same pooled upstream connection) gets its own answer."""
    with httpx.Client(base_url=gateway, timeout=10) as client:
        for _ in range(30):
            smuggled = client.get(SMUGGLE)
            assert smuggled.status_code == 400 and "control characters" in smuggled.json()["message"]
            document = client.get("/run/echo/openapi.json")
            assert document.status_code == 200 and "openapi" in document.json(), document.text
            assert client.post("/run/echo/predict", json={"text": "mine"}).json() == {"output": "echo: mine"}


def test_the_target_is_forwarded_as_sent_and_raw_bytes_are_refused(gateway):
    with httpx.Client(base_url=gateway, timeout=10) as client:
        # %2F stays encoded on its way to the replica: it is part of a segment, not a separator.
        assert client.get("/run/echo/openapi.json?x=%2F%0A").status_code == 200  # encoded in the query: harmless
        assert client.get("/run/echo/nope%2Fopenapi.json").status_code == 404
    answer = raw_exchange(gateway, b"GET /run/echo/openapi.json\xff HTTP/1.1\r\nhost: x\r\n\r\n")
    assert status_of(answer) == 400


def test_a_nul_in_the_path_is_400_and_oversized_headers_431(gateway):
    assert httpx.get(f"{gateway}/run/echo/openapi.json%00", timeout=10).status_code == 400
    answer = httpx.get(f"{gateway}/run/echo/openapi.json", headers={"x-big": "a" * 40_000}, timeout=10)
    assert answer.status_code == 431 and "over the limit of 32768" in answer.json()["message"]


def test_an_oversized_body_is_413_before_it_is_read(gateway):
    """Content-Length over the limit: answered with no body byte sent."""
    answer = raw_exchange(
        gateway,
        b"POST /run/echo/predict HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 209715200\r\n\r\n",
    )
    assert status_of(answer) == 413 and b"limit of 1048576 bytes" in answer


def test_a_chunked_body_is_cut_off_at_the_limit(gateway):
    def chunks() -> Iterator[bytes]:
        for _ in range(40):  # 2.5 MiB in all, over the 1 MiB limit
            yield b"x" * 65536

    answer = httpx.post(f"{gateway}/run/echo/predict", content=chunks(), timeout=30)
    assert answer.status_code == 413


def test_forwarded_headers_are_the_gateways_own():
    scope = {
        "headers": [
            (b"host", b"api.example"),
            (b"x-forwarded-for", b"6.6.6.6"),
            (b"x-forwarded-prefix", b"/api/v1"),
            (b"forwarded", b"for=6.6.6.6"),
            (b"connection", b"keep-alive, x-secret-hop"),
            (b"x-secret-hop", b"1"),
            (b"x-kept", b"yes"),
        ],
        "client": ("10.1.2.3", 5555),
        "scheme": "https",
    }
    headers = dict(forwarded_headers(scope, "/run/echo"))
    assert headers[b"x-forwarded-for"] == b"10.1.2.3" and headers[b"x-forwarded-prefix"] == b"/run/echo"
    assert headers[b"x-forwarded-proto"] == b"https" and headers[b"x-forwarded-host"] == b"api.example"
    assert b"forwarded" not in headers and b"x-secret-hop" not in headers and headers[b"x-kept"] == b"yes"


def test_an_answer_to_another_request_is_dropped_not_delivered():
    """An upstream that answers with another request's id (a connection out of step) gets 502 and
    its connection closed, never its answer delivered."""

    async def scenario() -> tuple[int, str, int]:
        connections = 0

        async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            nonlocal connections
            connections += 1
            try:
                while await reader.readuntil(b"\r\n\r\n"):
                    body = b'{"someone": "else"}'
                    writer.write(
                        b"HTTP/1.1 200 OK\r\nx-request-id: not-yours\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body)
                    )
                    await writer.drain()
            except (asyncio.IncompleteReadError, ConnectionError):
                pass
            writer.close()

        server = await asyncio.start_server(handler, "127.0.0.1", 0)
        table = RouteTable()
        table.set("liar", [f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"], public=True)
        gateway = Gateway(table)
        try:
            import threading

            result: dict[str, object] = {}

            def call() -> None:
                with serve(gateway) as url:
                    answer = httpx.get(f"{url}/run/liar/x", timeout=10)
                    second = httpx.get(f"{url}/run/liar/x", timeout=10)
                    result.update(status=answer.status_code, text=answer.text, second=second.status_code)

            thread = threading.Thread(target=call)
            thread.start()
            while thread.is_alive():
                await asyncio.sleep(0.05)
            return int(result["status"]), str(result["text"]), connections  # type: ignore[arg-type]
        finally:
            server.close()

    status, text, connections = asyncio.run(scenario())
    assert status == 502 and "someone" not in text and "out of step" in text
    assert connections == 2  # the first connection was dropped, not reused


@pytest.mark.parametrize("gateway_kind", GATEWAYS)
def test_through_fermion_up_smuggling_is_400_and_unauthenticated_uploads_are_not_read(tmp_path: Path, gateway_kind: str):
    with running_platform(tmp_path / "data", "--gateway", gateway_kind) as platform, platform.api() as api:
        assert api.post("/api/v1/deployments", json={"name": "echo", "source": ECHO, "public": True}).status_code == 201
        wait_for(lambda: api.get("/api/v1/deployments/echo").json()["status"] == "ready", what="echo")
        with httpx.Client(base_url=platform.url, timeout=10) as client:
            for _ in range(20):
                assert client.get(SMUGGLE).status_code == 400
                document = client.get("/run/echo/openapi.json")
                assert document.status_code == 200 and "openapi" in document.json()
        # 200 MB declared, nothing sent: answered at once from the headers alone (a server that
        # read the body would wait here until the timeout).
        head = (
            b"POST /api/v1/datasets HTTP/1.1\r\nhost: x\r\ncontent-type: multipart/form-data; boundary=b\r\n"
            b"content-length: 209715200\r\n\r\n"
        )
        started = time.monotonic()
        answer = raw_exchange(platform.url, head, timeout=10)
        assert status_of(answer) == 401 and time.monotonic() - started < 5
        as_admin = head.replace(b"host: x\r\n", f"host: x\r\nauthorization: Bearer {platform.token}\r\n".encode())
        answer = raw_exchange(platform.url, as_admin.replace(b"209715200", str(2**31).encode()), timeout=10)
        assert status_of(answer) == 413 and json.loads(answer.partition(b"\r\n\r\n")[2])["error"] == "payload_too_large"
        answer = raw_exchange(
            platform.url,
            b"POST /api/v1/deployments HTTP/1.1\r\nhost: x\r\ncontent-length: 5000000\r\n"
            + f"authorization: Bearer {platform.token}\r\n\r\n".encode(),
            timeout=10,
        )
        assert status_of(answer) == 413
        # The gateway too, for a deployment: over the limit → 413 without reading.
        answer = raw_exchange(platform.url, b"POST /run/echo/predict HTTP/1.1\r\nhost: x\r\ncontent-length: 209715200\r\n\r\n")
        assert status_of(answer) == 413
        assert api.get("/api/v1/deployments").status_code == 200  # still answering


def test_replica_answers_are_sandboxed_and_open_to_any_origin(gateway):
    answer = httpx.get(f"{gateway}/run/echo/docs", timeout=10)
    assert answer.status_code == 200
    # Added to whatever policy the replica sets itself: a browser enforces every policy it gets.
    assert any(p.startswith("sandbox allow-scripts") for p in answer.headers.get_list("content-security-policy"))
    assert answer.headers["access-control-allow-origin"] == "*"
    missing = httpx.get(f"{gateway}/run/nope/x", timeout=10)  # the gateway's own answers too
    assert missing.status_code == 404 and missing.headers["access-control-allow-origin"] == "*"


def test_a_cors_preflight_is_answered_without_a_token(replica):
    table = RouteTable()
    table.set("secret", [replica], public=False)

    async def tokens_only(name: str, public: bool, token: str | None) -> Admission:
        return ADMITTED if public or token == "good" else Admission((401, "send a token"))

    with serve(Gateway(table, admit=tokens_only)) as url:
        asked = {
            "origin": "https://app.example",
            "access-control-request-method": "POST",
            "access-control-request-headers": "authorization, content-type",
        }
        preflight = httpx.options(f"{url}/run/secret/predict", headers=asked, timeout=10)
        assert preflight.status_code == 204 and preflight.headers["access-control-allow-origin"] == "*"
        assert preflight.headers["access-control-allow-headers"] == "authorization, content-type"
        assert "POST" in preflight.headers["access-control-allow-methods"]
        # An unknown name is answered alike, so a preflight tells nobody which private deployments exist.
        unknown = httpx.options(f"{url}/run/terces/predict", headers=asked, timeout=10)
        assert unknown.status_code == 204 and unknown.headers.keys() == preflight.headers.keys()
        # The call itself needs one (without, it is answered as an unknown name is).
        assert httpx.post(f"{url}/run/secret/predict", json={"text": "x"}, timeout=10).status_code == 404


CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


@pytest.mark.parametrize("gateway_kind", GATEWAYS)
def test_a_replica_page_runs_in_its_own_origin_and_its_docs_still_work(tmp_path: Path, gateway_kind: str):
    """In a real browser: the replica's Swagger UI, served under the console's host and port, renders
    and calls its API, yet it cannot read the console's storage (where the console keeps its token)."""
    sync_api = pytest.importorskip("playwright.sync_api")
    if not Path(CHROMIUM).exists():
        pytest.skip("chromium is not installed (.ci/run installs it)")
    with running_platform(tmp_path / "data", "--gateway", gateway_kind) as platform, platform.api() as api:
        assert api.post("/api/v1/deployments", json={"name": "echo", "source": ECHO, "public": True}).status_code == 201
        wait_for(lambda: api.get("/api/v1/deployments/echo").json()["status"] == "ready", what="echo")
        with sync_api.sync_playwright() as playwright:
            browser = playwright.chromium.launch(
                executable_path=CHROMIUM, args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
            )
            try:
                page = browser.new_page()
                page.goto(f"{platform.url}/")  # the console's origin: it may keep a token here
                page.evaluate("() => localStorage.setItem('probe', 'console-secret')")
                page.goto(f"{platform.url}/run/echo/docs")
                page.wait_for_selector(".opblock", timeout=20000)  # Swagger UI loaded the OpenAPI document
                assert page.evaluate("() => self.origin") == "null"
                stolen = page.evaluate("() => { try { return localStorage.getItem('probe') } catch (e) { return 'blocked' } }")
                assert stolen == "blocked"
                answer = page.evaluate(
                    """async () => (await fetch('/run/echo/predict', {method: 'POST', headers: {'content-type': 'application/json'},
                                                               body: JSON.stringify({text: 'cors'})})).json()"""
                )
                assert answer == {"output": "echo: cors"}
            finally:
                browser.close()
