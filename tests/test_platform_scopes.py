"""The scope matrix, read from the platform's own OpenAPI document: every route × every kind of caller.

`RULES` names the scope each route needs (docs/security.md writes the same table down). The test
asks a real `fermion up` for /api/v1/openapi.json and calls every path and method in it as no
token, an invoke, deploy and admin token, an invoke and a deploy token narrowed to one deployment,
an expired and a revoked one: 401 for a caller without a valid token, 403 for a scope too low (or a
narrowed token off its deployments), anything else (200, 404 for a dummy name, 422 for a minimal
body) means the check let it through. A route the document has and `RULES` lacks fails.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support import EXAMPLES, FERMION, ROOT, RunningPlatform, running_platform, wait_for

RANK = {"invoke": 1, "deploy": 2, "admin": 3}

#: (method, path as the OpenAPI document spells it) → the scope it needs.
RULES = {
    ("GET", "/api/v1/whoami"): "invoke",
    ("GET", "/api/v1/info"): "invoke",
    ("GET", "/api/v1/deployments"): "invoke",
    ("GET", "/api/v1/deployments/{name}"): "invoke",
    ("POST", "/api/v1/deployments"): "deploy",
    ("PATCH", "/api/v1/deployments/{name}"): "deploy",
    ("DELETE", "/api/v1/deployments/{name}"): "deploy",
    ("GET", "/api/v1/deployments/{name}/revisions"): "deploy",
    ("POST", "/api/v1/deployments/{name}/rollback"): "deploy",
    ("POST", "/api/v1/deployments/{name}/forget-unused-env"): "deploy",
    ("GET", "/api/v1/deployments/{name}/replicas"): "deploy",
    ("GET", "/api/v1/deployments/{name}/events"): "deploy",
    ("GET", "/api/v1/deployments/{name}/logs"): "deploy",
    ("GET", "/api/v1/deployments/{name}/metrics"): "deploy",
    ("GET", "/api/v1/events"): "deploy",
    ("GET", "/api/v1/metrics"): "deploy",
    ("GET", "/api/v1/datasets"): "deploy",
    ("POST", "/api/v1/datasets"): "deploy",
    ("POST", "/api/v1/datasets/samples"): "deploy",
    ("GET", "/api/v1/datasets/{ref}"): "deploy",
    ("GET", "/api/v1/trainings"): "deploy",
    ("POST", "/api/v1/trainings"): "deploy",
    ("GET", "/api/v1/trainings/{job_id}"): "deploy",
    ("DELETE", "/api/v1/trainings/{job_id}"): "deploy",
    ("GET", "/api/v1/batches"): "deploy",
    ("POST", "/api/v1/batches"): "deploy",
    ("GET", "/api/v1/batches/{job_id}"): "deploy",
    ("DELETE", "/api/v1/batches/{job_id}"): "deploy",
    ("GET", "/api/v1/models"): "deploy",
    ("GET", "/api/v1/models/{ref}"): "deploy",
    ("GET", "/api/v1/models/{ref}/report"): "deploy",
    ("GET", "/api/v1/models/{ref}/plots/{plot}"): "deploy",
    ("GET", "/api/v1/tokens"): "admin",
    ("POST", "/api/v1/tokens"): "admin",
    ("DELETE", "/api/v1/tokens/{token}"): "admin",
    ("GET", "/api/v1/audit"): "admin",
}
#: Routes a narrowed token may use without naming a deployment in the path: they keep it to its own.
NARROWABLE = {
    ("GET", "/api/v1/whoami"),
    ("GET", "/api/v1/info"),
    ("GET", "/api/v1/deployments"),
    ("POST", "/api/v1/deployments"),
    ("GET", "/api/v1/metrics"),
    # batches keep a narrowed token to its deployments' jobs, and the POST handler refuses one once the body is
    # valid (a batch reads a dataset): tests/test_platform_batches.py
    ("GET", "/api/v1/batches"),
    ("POST", "/api/v1/batches"),
    ("GET", "/api/v1/batches/{job_id}"),
    ("DELETE", "/api/v1/batches/{job_id}"),
}
CALLERS = ("none", "invoke", "deploy", "admin", "narrowed-invoke", "narrowed-deploy", "expired", "revoked")
#: The one deployment the narrowed callers reach (it need not exist).
MINE = "mine"


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RunningPlatform, dict[str, str | None]]]:
    with running_platform(Path(tmp_path_factory.mktemp("scopes"))) as platform, platform.api() as admin:

        def token(name: str, scope: str, **extra: object) -> str:
            answer = admin.post("/api/v1/tokens", json={"name": name, "scopes": [scope], **extra})
            assert answer.status_code == 201, answer.text
            return str(answer.json()["token"])

        tokens: dict[str, str | None] = {"none": None, "admin": platform.token}
        for scope in ("invoke", "deploy"):
            tokens[scope] = token(scope, scope)
            tokens[f"narrowed-{scope}"] = token(f"narrowed-{scope}", scope, deployments=[MINE])
        tokens["expired"] = token("expired", "admin", expires_in_s=0.5)
        tokens["revoked"] = token("revoked", "admin")
        assert admin.delete("/api/v1/tokens/revoked").status_code == 200
        expired = httpx.Headers({"authorization": f"Bearer {tokens['expired']}"})
        wait_for(lambda: admin.get("/api/v1/whoami", headers=expired).status_code == 401, 10, "the token to expire")
        yield platform, tokens


def expected(caller: str, needed: str, route: tuple[str, str] | None = None, name: str = "nope") -> str:
    """What `caller` gets from a route needing `needed` (`route`, `name`: what a narrowed caller asks about)."""
    if caller in ("none", "expired", "revoked"):
        return "401"
    if RANK[caller.removeprefix("narrowed-")] < RANK[needed]:
        return "403"
    if caller.startswith("narrowed-") and route is not None and route not in NARROWABLE:
        return "allowed" if "{name}" in route[1] and name == MINE else "403"
    return "allowed"


def outcome(answer: httpx.Response) -> str:
    if answer.status_code in (401, 403):
        body = answer.json()
        assert set(body) == {"error", "status", "message"} and body["status"] == answer.status_code, body
        return str(answer.status_code)
    assert answer.status_code < 500, answer.text
    return "allowed"


def test_every_route_of_the_openapi_document_keeps_its_scope(platform: tuple[RunningPlatform, dict[str, str | None]]) -> None:
    running, tokens = platform
    document = httpx.get(f"{running.url}/api/v1/openapi.json", verify=running.verify).json()
    routes = {(method.upper(), path) for path, item in document["paths"].items() for method in item}
    assert routes - RULES.keys() == set(), "a route without a rule: add it to RULES and to docs/security.md"
    assert RULES.keys() - routes == set(), "a rule for a route the API no longer has"
    wrong = []
    with httpx.Client(base_url=running.url, timeout=60, verify=running.verify) as client:
        for method, path in sorted(routes):
            # Dummy names (an allowed caller gets a 404); valid JSON bodies, so that a 422 comes from the
            # route's validation, which FastAPI runs after the scope dependency (a 403 proves the order).
            body = {} if method in ("POST", "PATCH") else None
            # A narrowed token asks about a deployment off its list, then (where the path names one) its own.
            for name in ("nope", MINE) if "{name}" in path else ("nope",):
                url = path.format(name=name, ref="nope@1", job_id="nope", plot="nope.png", token="nope")
                for caller in CALLERS:
                    headers = {"authorization": f"Bearer {tokens[caller]}"} if tokens[caller] else {}
                    got = outcome(client.request(method, url, json=body, headers=headers))
                    want = expected(caller, RULES[method, path], (method, path), name)
                    if got != want:
                        wrong.append(f"{method} {url} as {caller}: {got}, not {want}")
    assert wrong == []


def test_metrics_and_info_tell_strangers_and_invokers_nothing(platform: tuple[RunningPlatform, dict[str, str | None]]) -> None:
    running, tokens = platform
    with httpx.Client(base_url=running.url, timeout=60, verify=running.verify) as client:
        for caller in CALLERS:
            headers = {"authorization": f"Bearer {tokens[caller]}"} if tokens[caller] else {}
            answer = client.get("/metrics", headers=headers)
            assert outcome(answer) == expected(caller, "deploy", ("GET", "/metrics")), (caller, answer.text)
            if answer.status_code == 401:
                assert answer.headers["www-authenticate"] == 'Bearer realm="fermion"'
        for caller in ("invoke", "deploy"):
            info = client.get("/api/v1/info", headers={"authorization": f"Bearer {tokens[caller]}"}).json()
            assert info["database"] is None and str(running.data_dir) not in str(info)
        admin = client.get("/api/v1/info", headers={"authorization": f"Bearer {tokens['admin']}"}).json()
        assert admin["database"].startswith("sqlite")


def test_a_stranger_learns_no_names_from_the_gateway(platform: tuple[RunningPlatform, dict[str, str | None]]) -> None:
    running, tokens = platform
    with running.api() as admin:
        made = admin.post("/api/v1/deployments", json={"name": "hidden", "source": str(EXAMPLES / "echo.py"), "min_replicas": 0})
        assert made.status_code == 201, made.text
        try:
            unknown = httpx.get(f"{running.url}/run/nope/", verify=running.verify)
            for caller in ("none", "expired", "revoked"):
                headers = {"authorization": f"Bearer {tokens[caller]}"} if tokens[caller] else {}
                private = httpx.get(f"{running.url}/run/hidden/", headers=headers, verify=running.verify)
                assert (private.status_code, private.json()["message"].replace("hidden", "nope")) == (
                    unknown.status_code,
                    unknown.json()["message"],
                )
            assert unknown.status_code == 404 and "hidden" not in unknown.text and "fermion ls" in unknown.text
        finally:
            admin.delete("/api/v1/deployments/hidden")


def test_the_cli_prints_the_servers_403_for_a_scope_too_low(platform: tuple[RunningPlatform, dict[str, str | None]]) -> None:
    running, tokens = platform
    env = {k: v for k, v in os.environ.items() if k not in ("FERMION_URL", "FERMION_TOKEN")}
    args = ["events", "--url", running.url, "--token", str(tokens["invoke"])]
    result = subprocess.run([*FERMION, *args], capture_output=True, text=True, timeout=120, cwd=ROOT, env=env)
    assert result.returncode != 0
    assert "token 'invoke' has scope invoke; GET /api/v1/events needs 'deploy'" in result.stdout + result.stderr
