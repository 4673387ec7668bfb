"""The gateway over real replicas: routing, retries, access, streams and the client through it."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import httpx
import pytest
import uvicorn
from support import ROOT, free_port, running_servers

from fermion import Client
from fermion.platform.gateway import Gateway, RouteTable

APP = ROOT / "tests" / "apps" / "behaviour.py"
TOKEN = "fmn_good"


async def authorize(name: str, token: str | None) -> tuple[int, str] | None:
    if token is None:
        return 401, f"deployment {name!r} is private: send a token (Authorization: Bearer ...)"
    if token != TOKEN:
        return 403, f"this token may not call {name!r}"
    return None


@pytest.fixture(scope="module")
def replicas(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[str]]:
    with running_servers({"a": (str(APP),), "b": (str(APP),)}, tmp_dir=tmp_path_factory.mktemp("gw")) as servers:
        yield [servers["a"].url, servers["b"].url]


@pytest.fixture(scope="module")
def gateway(replicas: list[str]) -> Iterator[tuple[str, RouteTable]]:
    table = RouteTable()
    table.set("echo", replicas, public=True)
    table.set("secret", replicas[:1], public=False)
    table.set("empty", [], public=True)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(Gateway(table, authorize), host="127.0.0.1", port=port, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        if not thread.is_alive():
            raise RuntimeError("the gateway did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}", table
    finally:
        server.should_exit = True
        thread.join(30)


def test_requests_reach_every_ready_replica(gateway):
    url, _ = gateway
    with httpx.Client() as http:
        pids = {http.get(url + "/run/echo/whoami").json() for _ in range(10)}
        assert len(pids) == 2
        assert http.post(url + "/run/echo/predict", json={"text": "ab", "times": 2}).json() == {"output": "abab"}


def test_errors_from_replicas_pass_through_unchanged(gateway):
    url, _ = gateway
    answer = httpx.post(url + "/run/echo/predict", json={})
    assert answer.status_code == 422 and answer.json()["detail"][0]["field"] == "text"


def test_unknown_deployment_lists_the_known_ones(gateway):
    url, _ = gateway
    answer = httpx.get(url + "/run/nope/whoami")
    assert answer.status_code == 404
    assert "deployments: echo, empty, secret" in answer.json()["error"]


def test_private_deployments_need_a_token(gateway):
    url, _ = gateway
    missing = httpx.get(url + "/run/secret/whoami")
    assert missing.status_code == 401 and missing.headers["www-authenticate"].startswith("Bearer")
    wrong = httpx.get(url + "/run/secret/whoami", headers={"authorization": "Bearer fmn_bad"})
    assert wrong.status_code == 403
    right = httpx.get(url + "/run/secret/whoami", headers={"authorization": f"Bearer {TOKEN}"})
    assert right.status_code == 200


def test_an_unreachable_replica_is_skipped_before_anything_is_sent(gateway, replicas):
    url, table = gateway
    dead = f"http://127.0.0.1:{free_port()}"
    table.set("flaky", [dead, replicas[0]], public=True)
    assert all(httpx.get(url + "/run/flaky/whoami").status_code == 200 for _ in range(6))
    table.set("gone", [dead], public=True)
    assert httpx.get(url + "/run/gone/whoami").status_code == 502


def test_no_ready_replica_is_503_with_retry_after(gateway):
    url, _ = gateway
    answer = httpx.get(url + "/run/empty/whoami")
    assert answer.status_code == 503 and answer.headers["retry-after"] == "1"


def test_streams_pass_through_as_they_come(gateway):
    url, _ = gateway
    with httpx.stream("POST", url + "/run/echo/count", json={"n": 3}) as answer:
        assert answer.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in answer.iter_lines() if line]
    assert lines == ["data: 0", "data: 1", "data: 2", "event: end", "data: {}"]


def test_the_python_client_and_docs_work_through_the_gateway(gateway):
    url, _ = gateway
    with Client(url + "/run/echo") as client:
        assert client.predict(text="hi") == {"output": "hi"}
        assert list(client.count(n=2)) == [0, 1]
    docs = httpx.get(url + "/run/echo/docs").text
    assert 'url: "/run/echo/openapi.json"' in docs


def test_a_client_leaving_a_stream_stops_it_on_the_replica(gateway):
    url, _ = gateway
    with httpx.Client() as http:
        with http.stream("POST", url + "/run/secret/ticker", json={"tag": "gw-gone"}, headers={"authorization": f"Bearer {TOKEN}"}) as answer:
            lines = answer.iter_lines()
            assert next(lines) == "data: 0"
        calls = lambda: http.get(url + "/run/secret/calls_of", params={"tag": "gw-gone"}, headers={"authorization": f"Bearer {TOKEN}"}).json()  # noqa: E731
        deadline = time.monotonic() + 10
        before = calls()
        while time.monotonic() < deadline:  # the replica notices within a few ticks
            time.sleep(0.2)
            after = calls()
            if after == before:
                break
            before = after
        time.sleep(0.3)  # the ticker yields every 10 ms: a running one would have moved on
        assert calls() == before
