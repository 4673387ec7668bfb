"""The Python `Platform` client: discovery, requests and answers, errors and waiting, against a fake API.

The real `fermion up` is exercised end to end in test_platform_cli.py.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from support import free_port

import fermion
from fermion.client.platform import (
    AuthError,
    ConflictError,
    Deployment,
    DeploymentFailed,
    ForbiddenError,
    InvalidError,
    NotFoundError,
    Platform,
    PlatformAPIError,
    PlatformConnectionError,
)
from fermion.platform.home import NoPlatform, discover, write_private, write_up_file

URL = "http://platform.test"


def deployment_json(name: str = "echo", **changes: Any) -> dict[str, Any]:
    body = {
        "name": name,
        "source": "examples/echo.py",
        "options": {},
        "env": {"API_KEY": "***"},
        "min_replicas": 1,
        "max_replicas": 1,
        "target_in_flight": 2.0,
        "public": False,
        "revision": 1,
        "state": "active",
        "created_at": "2026-11-27T19:30:00+00:00",
        "updated_at": "2026-11-27T19:31:00+00:00",
        "url": f"{URL}/run/{name}",
        "status": "ready",
        "replicas": {"desired": 1, "ready": 1, "starting": 0},
    }
    return {**body, **changes}


class FakeAPI:
    """Answers by (method, path); records every request. A value may be a callable of the request."""

    def __init__(self, routes: dict[tuple[str, str], Any]) -> None:
        self.routes = routes
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        answer = self.routes.get((request.method, request.url.path))
        if answer is None:
            return httpx.Response(404, json={"error": "not_found", "status": 404, "message": f"no route {request.url.path}"})
        if callable(answer):
            answer = answer(request)
        return answer if isinstance(answer, httpx.Response) else httpx.Response(200, json=answer)

    def body(self, index: int = -1) -> Any:
        return json.loads(self.requests[index].content)


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No platform from the machine running the tests: an empty data dir and no FERMION_URL/TOKEN."""
    home = tmp_path / "home"
    monkeypatch.setenv("FERMION_HOME", str(home))
    monkeypatch.delenv("FERMION_URL", raising=False)
    monkeypatch.delenv("FERMION_TOKEN", raising=False)
    return home


def connect(routes: dict[tuple[str, str], Any], token: str | None = "fmn_test") -> tuple[Platform, FakeAPI]:
    api = FakeAPI(routes)
    return Platform(URL, token, transport=httpx.MockTransport(api)), api


# -- finding the platform ----------------------------------------------------------------------


def test_discover_prefers_options_then_environment_then_the_local_data_dir(monkeypatch, clean_environment):
    home = clean_environment
    with pytest.raises(NoPlatform, match=r"start one with `fermion up`.*--url/--token.*FERMION_URL"):
        discover()
    write_up_file(home, "http://127.0.0.1:9999", 123)
    write_private(home / "admin.token", "fmn_admin\n")
    local = discover()
    assert (local.url, local.token, local.found_by) == ("http://127.0.0.1:9999", "fmn_admin", str(home))
    monkeypatch.setenv("FERMION_URL", "http://elsewhere:8080/")
    monkeypatch.setenv("FERMION_TOKEN", "fmn_env")
    assert discover() == discover(None, None)
    assert (discover().url, discover().token, discover().found_by) == ("http://elsewhere:8080", "fmn_env", "environment")
    assert discover("http://given", "fmn_given").token == "fmn_given"


def test_the_local_admin_token_is_only_sent_to_the_local_platform(clean_environment):
    home = clean_environment
    write_up_file(home, "http://127.0.0.1:9999", 123)
    write_private(home / "admin.token", "fmn_admin")
    assert discover("http://127.0.0.1:9999/").token == "fmn_admin"
    assert discover("http://somewhere-else:9999").token is None


def test_platform_uses_discovery_and_is_exported_lazily(clean_environment):
    write_up_file(clean_environment, "http://127.0.0.1:9999", 123)
    write_private(clean_environment / "admin.token", "fmn_admin")
    with fermion.Platform() as platform:
        assert (platform.url, platform.token) == ("http://127.0.0.1:9999", "fmn_admin")
        assert "fmn_admin" not in repr(platform)
    (clean_environment / "up.json").unlink()
    with pytest.raises(NoPlatform):
        Platform()


def test_a_url_without_scheme_means_http():
    assert Platform("localhost:8080", "t").url == "http://localhost:8080"


# -- requests and answers ----------------------------------------------------------------------


def test_create_sends_the_documented_body_and_returns_a_record():
    platform, api = connect({("POST", "/api/v1/deployments"): httpx.Response(201, json=deployment_json(extra_key="ignored"))})
    made = platform.deployments.create(
        "echo", "examples/echo.py", replicas=2, env={"API_KEY": "s3cret"}, task="fill-mask", trust_pickle=True
    )
    assert api.body() == {
        "name": "echo",
        "source": "examples/echo.py",
        "public": False,
        "min_replicas": 2,
        "max_replicas": 2,
        "options": {"task": "fill-mask", "trust_pickle": True},
        "env": {"API_KEY": "s3cret"},
    }
    assert api.requests[0].headers["authorization"] == "Bearer fmn_test"
    assert isinstance(made, Deployment) and made.env == {"API_KEY": "***"}
    assert made.replicas.ready == 1 and made.created_at == datetime(2026, 11, 27, 19, 30, tzinfo=UTC)
    assert made.to_dict()["created_at"] == "2026-11-27T19:30:00+00:00"
    with pytest.raises(ValueError, match="not both"):
        platform.deployments.create("echo", "x.py", replicas=2, max_replicas=3)


def test_update_scale_and_rollback_send_only_what_changes():
    routes = {
        ("GET", "/api/v1/deployments/echo"): deployment_json(options={"task": "a", "keep": 1}),
        ("PATCH", "/api/v1/deployments/echo"): deployment_json(revision=2),
        ("POST", "/api/v1/deployments/echo/rollback"): deployment_json(revision=3),
    }
    platform, api = connect(routes)
    assert platform.deployments.update("echo", source="v2.py", note="why").revision == 2
    assert api.body() == {"source": "v2.py", "note": "why"}
    platform.deployments.update("echo", task="b")  # changes one option, keeps the others
    assert api.body() == {"options": {"task": "b", "keep": 1}}
    platform.deployments.scale("echo", 3)
    assert api.body() == {"min_replicas": 3, "max_replicas": 3}
    platform.deployments.scale("echo", min_replicas=0, max_replicas=4)
    assert api.body() == {"min_replicas": 0, "max_replicas": 4}
    with pytest.raises(ValueError, match="needs replicas"):
        platform.deployments.scale("echo")
    platform.deployments.rollback("echo")
    assert api.body() == {}
    platform.deployments.rollback("echo", 1)
    assert api.body() == {"revision": 1}


def test_listings_become_records_and_names_are_quoted():
    routes = {
        ("GET", "/api/v1/deployments"): {"deployments": [deployment_json("a"), deployment_json("b")]},
        ("GET", "/api/v1/deployments/echo/replicas"): {
            "replicas": [{"id": "echo-1-ab", "revision": 1, "state": "ready", "url": "http://x", "pid": 7, "detail": ""}]
        },
        ("GET", "/api/v1/deployments/echo/revisions"): {
            "revisions": [
                {"number": 1, "source": "a.py", "options": {}, "env": {}, "created_at": "2026-11-27T19:30:00+00:00", "note": None}
            ]
        },
        ("GET", "/api/v1/deployments/echo/logs"): {"lines": [{"replica": "echo-1-ab", "line": "started"}]},
        ("GET", "/api/v1/tokens"): {
            "tokens": [
                {
                    "id": 1,
                    "name": "ci",
                    "prefix": "fmn_abcd",
                    "scopes": ["invoke"],
                    "created_at": "2026-11-27T19:30:00Z",
                    "expires_at": None,
                    "revoked_at": None,
                    "last_used_at": None,
                }
            ]
        },
        ("POST", "/api/v1/tokens"): httpx.Response(
            201,
            json={
                "token": "fmn_secret",
                "id": 2,
                "name": "ci",
                "prefix": "fmn_secr",
                "scopes": ["deploy"],
                "created_at": "2026-11-27T19:30:00Z",
                "expires_at": None,
            },
        ),
        ("DELETE", "/api/v1/tokens/a b"): {
            "id": 3,
            "name": "a b",
            "prefix": "fmn_x",
            "scopes": ["invoke"],
            "created_at": None,
            "revoked_at": "2026-11-27T19:30:00Z",
        },
        ("GET", "/api/v1/info"): {"version": "0.1.0", "backend": "local", "database": "sqlite://", "url": URL, "deployments": 2},
    }
    platform, api = connect(routes)
    assert [d.name for d in platform.deployments.list()] == ["a", "b"]
    assert platform.deployments.replicas("echo")[0].pid == 7
    assert platform.deployments.revisions("echo")[0].number == 1
    assert platform.deployments.logs("echo", lines=5) == [("echo-1-ab", "started")]
    assert api.requests[-1].url.params["lines"] == "5"
    assert platform.tokens.list()[0].scopes == ("invoke",)
    info, plaintext = platform.tokens.create("ci", ["deploy"], expires_in_s=3600)
    assert plaintext == "fmn_secret" and info.scopes == ("deploy",) and "token" not in info.to_dict()
    assert api.body() == {"name": "ci", "scopes": ["deploy"], "expires_in_s": 3600}
    assert platform.tokens.revoke("a b").revoked_at is not None
    assert api.requests[-1].url.raw_path == b"/api/v1/tokens/a%20b"
    assert platform.info().deployments == 2


def test_follow_logs_reads_ndjson_and_skips_keepalive_lines():
    stream = b'{"replica": "r1", "line": "one"}\n\n{"replica": "r2", "line": "two"}\n'
    platform, api = connect({("GET", "/api/v1/deployments/echo/logs"): httpx.Response(200, content=stream)})
    assert list(platform.deployments.follow_logs("echo", lines=3)) == [("r1", "one"), ("r2", "two")]
    assert api.requests[0].url.params["follow"] == "true"


# -- errors ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (401, AuthError),
        (403, ForbiddenError),
        (404, NotFoundError),
        (409, ConflictError),
        (422, InvalidError),
        (500, PlatformAPIError),
    ],
)
def test_error_answers_become_typed_errors_with_the_apis_message(status, kind):
    body = {"error": "whatever", "status": status, "message": f"it went wrong ({status})"}
    platform, _ = connect({("GET", "/api/v1/deployments/ech"): httpx.Response(status, json=body)})
    with pytest.raises(kind) as caught:
        platform.deployments.get("ech")
    assert (caught.value.status, caught.value.code, caught.value.message) == (status, "whatever", f"it went wrong ({status})")
    assert str(caught.value) == f"it went wrong ({status})"


def test_gateway_and_non_json_errors_are_readable():
    routes = {
        ("GET", "/api/v1/deployments/a"): httpx.Response(503, json={"error": "deployment 'a' has no ready replica yet"}),
        ("GET", "/api/v1/deployments/b"): httpx.Response(502, text="<html>Bad Gateway</html>"),
        ("GET", "/api/v1/deployments/c"): httpx.Response(200, text="not json"),
    }
    platform, _ = connect(routes)
    with pytest.raises(PlatformAPIError, match="no ready replica yet"):
        platform.deployments.get("a")
    with pytest.raises(PlatformAPIError, match=r"answered 502 <html>Bad Gateway</html>; is that the URL of a Fermion platform"):
        platform.deployments.get("b")
    with pytest.raises(PlatformAPIError, match="did not answer with JSON"):
        platform.deployments.get("c")


def test_401_without_a_token_says_how_to_give_one():
    body = {"error": "unauthorized", "status": 401, "message": "send a token"}
    platform, _ = connect({("GET", "/api/v1/deployments"): httpx.Response(401, json=body)}, token=None)
    with pytest.raises(AuthError, match=r"send a token \(no token was sent: give --token or set FERMION_TOKEN"):
        platform.deployments.list()


def test_nothing_listening_names_the_url_and_fermion_up():
    url = f"http://127.0.0.1:{free_port()}"
    with Platform(url, "t", timeout=5) as platform, pytest.raises(PlatformConnectionError) as caught:
        platform.deployments.list()
    assert caught.value.status == 0
    assert f"cannot reach the platform at {url}" in caught.value.message and "`fermion up`" in caught.value.message


# -- waiting -----------------------------------------------------------------------------------


def sequence(*answers: dict[str, Any]) -> Callable[[httpx.Request], dict[str, Any]]:
    """Each request gets the next answer; the last one repeats."""
    queue = list(answers)
    return lambda _request: queue.pop(0) if len(queue) > 1 else queue[0]


def event(id: int, kind: str, message: str) -> dict[str, Any]:
    return {"id": id, "deployment": "echo", "kind": kind, "message": message, "created_at": "2026-11-27T19:30:00+00:00"}


def test_wait_ready_polls_and_reports_progress():
    starting = deployment_json(status="starting", replicas={"desired": 1, "ready": 0, "starting": 1})
    routes = {
        ("GET", "/api/v1/deployments/echo"): sequence(starting, starting, deployment_json()),
        ("GET", "/api/v1/deployments/echo/events"): {"events": []},
    }
    platform, _ = connect(routes)
    seen: list[str] = []
    ready = platform.deployments.wait_ready("echo", timeout=10, progress=lambda d: seen.append(d.status), interval=0.01)
    assert ready.status == "ready" and seen == ["starting", "starting", "ready"]


def test_wait_ready_for_a_revision_waits_until_that_revision_serves():
    replicas = sequence(
        {"replicas": [{"id": "echo-1-a", "revision": 1, "state": "ready", "url": "u", "pid": 1, "detail": ""}]},
        {"replicas": [{"id": "echo-2-b", "revision": 2, "state": "ready", "url": "u", "pid": 2, "detail": ""}]},
    )
    routes = {
        ("GET", "/api/v1/deployments/echo"): deployment_json(revision=2),
        ("GET", "/api/v1/deployments/echo/events"): {"events": []},
        ("GET", "/api/v1/deployments/echo/replicas"): replicas,
    }
    platform, api = connect(routes)
    assert platform.deployments.wait_ready("echo", timeout=10, revision=2, interval=0.01).revision == 2
    assert sum(r.url.path.endswith("/replicas") for r in api.requests) == 2


def test_wait_ready_gives_up_early_on_a_crash_loop_quoting_it():
    crash = event(
        2,
        "CrashLoop",
        "replica echo-1-a (revision 1) exited with code 1; next start in 2 s; last log lines:\nRuntimeError: no model",
    )
    routes = {
        ("GET", "/api/v1/deployments/echo"): deployment_json(
            status="failing", replicas={"desired": 1, "ready": 0, "starting": 0}
        ),
        ("GET", "/api/v1/deployments/echo/events"): {"events": [event(1, "Created", "made"), crash]},
    }
    platform, _ = connect(routes)
    with pytest.raises(DeploymentFailed, match=r"deployment 'echo' is failing: replica echo-1-a .*exited with code 1") as caught:
        platform.deployments.wait_ready("echo", timeout=10, interval=0.01)
    assert "RuntimeError: no model" in str(caught.value)


def test_wait_ready_times_out_with_the_latest_events():
    starting = deployment_json(status="starting", replicas={"desired": 1, "ready": 0, "starting": 1})
    events = sequence(
        {"events": []},
        {"events": [event(5, "ReplicaExited", "replica echo-1-a (revision 1) exited with code 3")]},
        {"events": []},
    )
    routes = {("GET", "/api/v1/deployments/echo"): starting, ("GET", "/api/v1/deployments/echo/events"): events}
    platform, _ = connect(routes)
    with pytest.raises(TimeoutError) as caught:
        platform.deployments.wait_ready("echo", timeout=0.2, interval=0.01)
    message = str(caught.value)
    assert message.startswith("deployment 'echo' is not ready after 0.2 s (status starting, 0/1 replicas ready, 1 starting)")
    assert "ReplicaExited: replica echo-1-a (revision 1) exited with code 3" in message


def test_one_error_model_for_both_clients_and_every_error_body():
    """A platform's errors are `fermion.APIError`s too, and the one reader takes the API's, a gateway's and a
    replica's error bodies alike."""
    from fermion import APIError
    from fermion.client._errors import error_from_payload, read_error

    assert issubclass(PlatformAPIError, APIError) and issubclass(PlatformConnectionError, APIError)
    api = {"error": "not_found", "status": 404, "message": "no deployment 'x'; deployments: echo"}
    assert read_error(api, "") == ("no deployment 'x'; deployments: echo", "not_found", None, None)
    assert read_error({"error": "deployment 'x' is private"}, "") == ("deployment 'x' is private", "", None, None)
    replica = {"error": "invalid input", "request_id": "r1", "detail": [{"field": "text", "message": "required"}]}
    assert read_error(replica, "") == ("invalid input", "", "r1", replica["detail"])
    assert read_error("not a dict", "x") is None
    error = error_from_payload(404, api, "")
    assert (error.status, error.code, error.message) == (404, "not_found", api["message"])

    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(404, json=api)

    with Platform(URL, "t", transport=httpx.MockTransport(answer)) as platform:
        with pytest.raises(NotFoundError) as caught:
            platform.deployments.get("x")
    assert isinstance(caught.value, APIError) and caught.value.code == "not_found" and str(caught.value) == api["message"]


def test_the_client_the_api_and_the_store_agree_on_every_record_shape():
    """The store's records, the API's answers (its OpenAPI) and the client's records name the same fields:
    a field added to one and not the others fails here, before a user sees it missing."""
    from dataclasses import fields

    from fermion.client.platform import types
    from fermion.platform.api import schemas
    from fermion.platform.store import records

    def names(cls: type) -> set[str]:
        return (
            set(cls.model_fields) if hasattr(cls, "model_fields") else {f.name for f in fields(cls) if not f.name.startswith("_")}
        )

    answers = [
        (schemas.DeploymentView, types.Deployment, records.DeploymentRecord),
        (schemas.RevisionView, types.Revision, records.RevisionRecord),  # listed under its deployment's path
        (schemas.EventView, types.Event, records.EventRecord),
        (schemas.TokenView, types.TokenInfo, records.TokenRecord),
        (schemas.AuditView, types.AuditEntry, records.AuditRecord),
        (schemas.ReplicaView, types.Replica, None),
        (schemas.ReplicaCounts, types.ReplicaCounts, None),
        (schemas.Info, types.PlatformInfo, None),
    ]
    for view, client_record, store_record in answers:
        assert names(client_record) == names(view), (view.__name__, names(client_record) ^ names(view))
        if store_record is not None:  # what the store keeps and shows (secrets and internals aside) is answered
            empty = {f.name: {} if "dict" in str(f.type) or "Mapping" in str(f.type) else None for f in fields(store_record)}
            implied = {"deployment"} if view is schemas.RevisionView else set()
            kept = set(store_record(**empty).to_public_dict()) - {"id"} - implied
            assert kept <= names(view), (view.__name__, kept - names(view))
