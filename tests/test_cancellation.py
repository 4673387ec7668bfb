"""Request cancellation, end to end: a client that leaves, and `DELETE /requests/{id}`, on a replica and through the gateway."""

from __future__ import annotations

import json
import re
import shutil
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from support import ROOT, running_platform, running_servers, wait_for
from support import serve_asgi as serve

from fermion.platform.gateway.admission import ADMITTED, Admission
from fermion.platform.gateway.proxy import Gateway
from fermion.platform.gateway.routes import RouteTable

APP = ROOT / "tests" / "apps" / "cancellable.py"
TOKEN = "fmn_good"


async def admit(name: str, public: bool, token: str | None) -> Admission:
    return ADMITTED if public or token == TOKEN else Admission((401, "send a token"))


@pytest.fixture(scope="module")
def replicas(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[str]]:
    with running_servers({"a": (str(APP),), "b": (str(APP),)}, tmp_dir=tmp_path_factory.mktemp("cancel")) as servers:
        yield [servers["a"].url, servers["b"].url]


@pytest.fixture(scope="module")
def replica(replicas: list[str]) -> str:
    return replicas[0]


@pytest.fixture(scope="module")
def gateway(replicas: list[str]) -> Iterator[str]:
    table = RouteTable()
    table.set("both", replicas, public=True)
    table.set("private", replicas, public=False)
    with serve(Gateway(table, admit)) as url:
        yield url


def eventually(condition: Callable[[], bool]) -> None:
    wait_for(condition, timeout=10, what="the request")


def state(url: str, tag: str) -> str:
    return httpx.get(url + "/state_of", params={"tag": tag}).json()["state"]


def in_thread(call: Callable[[], httpx.Response]) -> Callable[[], httpx.Response]:
    """Start `call` in a thread; returns a function that waits for its answer."""
    result: list[Any] = []
    thread = threading.Thread(target=lambda: result.append(_catch(call)), daemon=True)
    thread.start()

    def answer() -> httpx.Response:
        thread.join(15)
        assert result, "no answer within 15 s"
        if isinstance(result[0], Exception):
            raise result[0]
        return result[0]

    return answer


def _catch(call: Callable[[], httpx.Response]) -> Any:
    try:
        return call()
    except Exception as exc:  # handed to the test's thread
        return exc


def send_and_leave_open(url: str, path: str, body: dict[str, Any], token: str | None = None) -> socket.socket:
    """Send a request on a raw connection and return it unread (close it to leave)."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    data = json.dumps(body).encode()
    auth = f"Authorization: Bearer {token}\r\n" if token else ""
    sock = socket.create_connection((host, int(port)))
    sock.sendall(
        f"POST {path} HTTP/1.1\r\nHost: x\r\n{auth}Content-Type: application/json\r\nContent-Length: {len(data)}\r\n\r\n".encode()
        + data
    )
    return sock


# -- on a replica --------------------------------------------------------------------------------


def test_a_client_that_leaves_cancels_a_running_async_endpoint(replica):
    sock = send_and_leave_open(replica, "/wait", {"tag": "left"})
    eventually(lambda: state(replica, "left") == "running")
    sock.close()
    eventually(lambda: state(replica, "left") == "cancelled")


@pytest.mark.parametrize("endpoint", ["ticks", "sync_ticks"])
def test_a_client_that_leaves_a_stream_closes_its_generator(replica, endpoint):
    tag = f"left-{endpoint}"
    with httpx.stream("POST", f"{replica}/{endpoint}", json={"tag": tag}) as answer:
        assert next(answer.iter_lines()) == "data: 0"
    eventually(lambda: state(replica, tag) == "closed")  # a closed generator yields no more


def test_delete_cancels_a_running_request_and_its_caller_gets_409(replica):
    caller = in_thread(
        lambda: httpx.post(replica + "/wait", json={"tag": "deleted"}, headers={"x-request-id": "job-42"}, timeout=30)
    )
    eventually(lambda: state(replica, "deleted") == "running")
    cancelled = httpx.delete(replica + "/requests/job-42")
    assert cancelled.status_code == 202
    assert cancelled.json() == {"request_id": "job-42", "endpoint": "wait", "cancelled": True}
    answer = caller()
    assert answer.status_code == 409 and answer.headers["x-request-id"] == "job-42"
    assert answer.json() == {
        "error": "request job-42 was cancelled (DELETE /requests/job-42) before it finished",
        "request_id": "job-42",
    }
    assert state(replica, "deleted") == "cancelled"
    again = httpx.delete(replica + "/requests/job-42")
    assert again.status_code == 404 and "'job-42'" in again.json()["error"]


def test_delete_ends_a_stream_with_an_error_event_and_closes_its_generator(replica):
    with httpx.stream("POST", replica + "/ticks", json={"tag": "deleted-stream"}) as answer:
        lines = answer.iter_lines()
        assert next(lines) == "data: 0"
        request_id = answer.headers["x-request-id"]
        assert httpx.delete(f"{replica}/requests/{request_id}").status_code == 202
        rest = [line for line in lines if line]
    assert rest[-2] == "event: error"
    assert json.loads(rest[-1].removeprefix("data: "))["status"] == 409
    eventually(lambda: state(replica, "deleted-stream") == "closed")


def test_delete_answers_a_sync_endpoint_at_once_and_discards_its_result(replica):
    started = time.monotonic()
    caller = in_thread(
        lambda: httpx.post(replica + "/hold", json={"tag": "sync", "seconds": 1.5}, headers={"x-request-id": "sync-1"})
    )
    eventually(lambda: state(replica, "sync") == "running")
    assert httpx.delete(replica + "/requests/sync-1").status_code == 202
    assert caller().status_code == 409
    assert time.monotonic() - started < 1.5  # the caller did not wait for the thread
    eventually(lambda: state(replica, "sync") == "finished")  # a thread cannot be interrupted: it ran on


def test_sync_code_that_checks_cancelled_stops_early(replica):
    caller = in_thread(
        lambda: httpx.post(replica + "/steps", json={"tag": "steps"}, headers={"x-request-id": "steps-1"}, timeout=30)
    )
    eventually(lambda: state(replica, "steps") == "running")
    assert httpx.delete(replica + "/requests/steps-1").status_code == 202
    assert caller().status_code == 409
    eventually(lambda: state(replica, "steps") == "stopped")


def test_a_valid_caller_id_is_kept_and_others_are_replaced(replica):
    kept = httpx.post(replica + "/wait", json={"tag": "id", "seconds": 0}, headers={"x-request-id": "mine.1:a-b_c"})
    assert kept.headers["x-request-id"] == "mine.1:a-b_c"
    first = in_thread(
        lambda: httpx.post(replica + "/wait", json={"tag": "twice-1"}, headers={"x-request-id": "twice"}, timeout=30)
    )
    eventually(lambda: state(replica, "twice-1") == "running")
    second = httpx.post(replica + "/wait", json={"tag": "twice-2", "seconds": 0}, headers={"x-request-id": "twice"})
    assert second.status_code == 200 and second.headers["x-request-id"] == "twice"  # echoed, though in use
    assert httpx.delete(replica + "/requests/twice").status_code == 202  # the first one keeps the id
    assert first().status_code == 409
    for bad in ("has space", "a/b", "x" * 65):
        replaced = httpx.post(replica + "/wait", json={"tag": "id", "seconds": 0}, headers={"x-request-id": bad})
        assert re.fullmatch(r"[0-9a-f]{16}", replaced.headers["x-request-id"])


@pytest.mark.parametrize(
    ("method", "path"), [("GET", "/nope"), ("GET", "/wait"), ("GET", "/requests/x"), ("GET", "/docs/static/x.js")]
)
def test_every_error_answer_carries_the_callers_id(replica, method, path):
    # the gateway checks that an answer carries the id it sent (else the connection is out of step)
    answer = httpx.request(method, replica + path, headers={"x-request-id": "caller-7"})
    assert answer.status_code in (404, 405) and answer.headers["x-request-id"] == "caller-7" == answer.json()["request_id"]


def test_the_cancel_endpoint_is_in_the_openapi_document_and_only_takes_delete(replica):
    doc = httpx.get(replica + "/openapi.json").json()
    operation = doc["paths"]["/requests/{request_id}"]["delete"]
    assert set(operation["responses"]) == {"202", "404"} and "x-fermion" not in operation
    assert "409" in doc["paths"]["/wait"]["post"]["responses"]
    wrong = httpx.get(replica + "/requests/job-1")
    assert wrong.status_code == 405 and wrong.headers["allow"] == "DELETE"


# -- through the gateway -------------------------------------------------------------------------


def replica_state(replicas: list[str], tag: str) -> set[str]:
    return {state(url, tag) for url in replicas} - {""}


def test_a_client_that_leaves_the_gateway_cancels_a_running_async_endpoint(gateway, replicas):
    sock = send_and_leave_open(gateway, "/run/both/wait", {"tag": "gw-left"})
    eventually(lambda: replica_state(replicas, "gw-left") == {"running"})
    sock.close()
    eventually(lambda: replica_state(replicas, "gw-left") == {"cancelled"})


def test_a_client_that_leaves_a_sync_stream_at_the_gateway_closes_its_generator(gateway, replicas):
    with httpx.stream("POST", gateway + "/run/both/sync_ticks", json={"tag": "gw-stream"}) as answer:
        assert next(answer.iter_lines()) == "data: 0"
    eventually(lambda: replica_state(replicas, "gw-stream") == {"closed"})


def test_a_request_the_gateway_gives_up_on_is_cancelled_on_the_replica(replicas):
    table = RouteTable()
    table.set("slow", replicas[:1], public=True)
    with serve(Gateway(table, timeout=0.5)) as url:
        answer = httpx.post(url + "/run/slow/wait", json={"tag": "gw-timeout"})
        assert answer.status_code == 504
    eventually(lambda: state(replicas[0], "gw-timeout") == "cancelled")


def test_delete_through_the_gateway_reaches_the_replica_serving_the_request(gateway, replicas):
    callers = {
        tag: in_thread(
            lambda tag=tag: httpx.post(gateway + "/run/both/wait", json={"tag": tag}, headers={"x-request-id": tag}, timeout=30)
        )
        for tag in ("gw-a", "gw-b")
    }
    for tag in callers:
        eventually(lambda tag=tag: replica_state(replicas, tag) == {"running"})
    assert {state(replicas[0], "gw-a"), state(replicas[0], "gw-b")} == {"running", ""}  # one on each replica
    cancelled = httpx.delete(gateway + "/run/both/requests/gw-b")
    assert cancelled.status_code == 202 and cancelled.json()["request_id"] == "gw-b"
    assert callers["gw-b"]().status_code == 409
    assert replica_state(replicas, "gw-b") == {"cancelled"} and replica_state(replicas, "gw-a") == {"running"}
    assert httpx.delete(gateway + "/run/both/requests/gw-a").status_code == 202
    assert callers["gw-a"]().status_code == 409


def test_the_gateway_asks_every_replica_for_an_id_it_did_not_route(gateway, replicas):
    # as when HAProxy sent the request straight to a replica
    caller = in_thread(
        lambda: httpx.post(replicas[1] + "/wait", json={"tag": "direct"}, headers={"x-request-id": "direct-1"}, timeout=30)
    )
    eventually(lambda: state(replicas[1], "direct") == "running")
    assert httpx.delete(gateway + "/run/both/requests/direct-1").status_code == 202
    assert caller().status_code == 409
    unknown = httpx.delete(gateway + "/run/both/requests/nobody")
    assert unknown.status_code == 404 and "'nobody'" in unknown.json()["message"]


def test_cancelling_through_the_gateway_follows_the_deployments_access_rules(gateway):
    hidden = httpx.delete(gateway + "/run/private/requests/job-1")  # no token: as if there were no such deployment
    assert hidden.status_code == 404 and "no deployment named 'private' that you can call" in hidden.json()["message"]
    answer = httpx.delete(gateway + "/run/private/requests/job-1", headers={"authorization": f"Bearer {TOKEN}"})
    assert answer.status_code == 404


# -- through `fermion up` ------------------------------------------------------------------------

GATEWAYS = [
    "python",
    pytest.param(
        "haproxy",
        marks=[
            pytest.mark.skipif(shutil.which("haproxy") is None, reason="haproxy is not installed (.ci/run installs it)"),
        ],
    ),
]


@pytest.mark.parametrize("gateway", GATEWAYS)
def test_cancelling_through_fermion_up(tmp_path: Path, gateway: str):
    with running_platform(tmp_path / "data", "--gateway", gateway) as platform, platform.api() as api:
        created = api.post("/api/v1/deployments", json={"name": "jobs", "source": str(APP), "min_replicas": 2})
        assert created.status_code == 201, created.text

        def ready() -> bool:
            found = api.get("/api/v1/deployments/jobs").json()
            return found["status"] == "ready" and found["replicas"]["ready"] == 2

        wait_for(ready, timeout=60, what="two replicas")
        replicas = tmp_path / "data" / "replicas"

        def recorded(tag: str) -> str | None:
            """What the replica that ran `tag` recorded, in its own TMPDIR (the only place a sandboxed replica writes)."""
            found = [path.read_text() for path in replicas.glob(f"*.run/tmp/{tag}")]
            return found[0] if found else None

        sock = send_and_leave_open(platform.url, "/run/jobs/wait", {"tag": "left", "record": "left"}, platform.token)
        eventually(lambda: recorded("left") == "running")
        sock.close()
        eventually(lambda: recorded("left") == "cancelled")

        callers = {
            tag: in_thread(
                lambda tag=tag: api.post("/run/jobs/wait", json={"tag": tag, "record": tag}, headers={"x-request-id": tag})
            )
            for tag in ("job-a", "job-b")
        }
        for tag in callers:
            eventually(lambda tag=tag: recorded(tag) is not None)
        assert api.delete("/run/jobs/requests/job-b").status_code == 202
        assert callers["job-b"]().status_code == 409
        assert recorded("job-b") == "cancelled" and recorded("job-a") == "running"
        assert api.delete("/run/jobs/requests/job-a").status_code == 202
        assert callers["job-a"]().status_code == 409
        assert api.delete("/run/jobs/requests/job-a").status_code == 404
        stranger = httpx.delete(platform.url + "/run/jobs/requests/job-a")  # private: a token is needed, else 404
        assert stranger.status_code == 404 and "that you can call" in stranger.json()["message"]
