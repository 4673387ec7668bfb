"""Fuzzing: schemathesis against real replicas and a real `fermion up`, then the malformed requests a schema fuzzer
never sends. A test fails on any 5xx, any answer that does not match the OpenAPI document, or a server that is not
healthy afterwards (docs/security.md, "What is fuzzed").

What the fuzzer may not do, and why:
- `POST /api/v1/deployments` (it would deploy whatever source it makes up: each one a `fermion serve --check`
  process) and `POST /api/v1/trainings` (each one a training job): arbitrary work, not API behaviour.
- `DELETE /api/v1/tokens/{token}`: it may revoke the admin token it is using (by its name, "admin"), after which
  every answer is a 401 and the run tests nothing.
- `GET /api/v1/deployments/{name}/logs`: with `follow=true` it streams until the client leaves (the fuzzer finds the
  real deployment's name in other answers), so every such request would wait out the request timeout.
- Requests the schema calls the wrong type but that convert losslessly (`"2"` for an integer) are accepted on
  purpose (tests/test_schema.py), so the `negative_data_rejection` check is off; on the platform API
  `positive_data_acceptance` is off too, as the API checks names, sample names and files beyond their schema
  (answered 422 with what to change).
The platform runs with `--max-replicas-total 2`; the fuzzer writes only while it has no deployment, then reads one
that has no replica, so nothing it does starts large work.
"""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import httpx
import pytest
from support import RunningPlatform, RunningServer, running_platform, running_servers

pytestmark = pytest.mark.slow
SCHEMATHESIS = [sys.executable, "-m", "schemathesis.cli"]
COMMON = ["--checks", "all", "--workers", "1", "--seed", "1", "--no-color", "--generation-database", "none"]
COMMON += ["--request-timeout", "20", "--suppress-health-check", "all"]
#: Only GET operations on the real deployment "echo": the fuzzer would otherwise almost never name it.
ON_ECHO = """
[[operations]]
include-method = "GET"
include-path-regex = "\\\\{name\\\\}"
parameters = { "path.name" = "echo" }
"""


def fuzz(schema_url: str, *args: str, cwd: Path, token: str | None = None, config: str | None = None) -> None:
    """Run `schemathesis run` in `cwd`; fail with its report unless every check passed."""
    auth = ["-H", f"Authorization: Bearer {token}"] if token else []
    settings = []
    if config is not None:
        (cwd / "schemathesis.toml").write_text(config)
        settings = ["--config-file", str(cwd / "schemathesis.toml")]
    command = [*SCHEMATHESIS, *settings, "run", schema_url, *COMMON, *auth, *args]
    done = subprocess.run(command, capture_output=True, text=True, timeout=240, cwd=cwd)
    report = done.stdout + done.stderr
    assert done.returncode == 0, f"schemathesis found problems at {schema_url}:\n{report[-12000:]}"
    assert " passed" in report and " generated" in report, report[-4000:]


@pytest.fixture(scope="module")
def replicas(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, RunningServer]]:
    sources = {name: (f"examples/{name}.py",) for name in ("echo", "upload")}
    sources["streaming"] = ("tests/apps/fuzz_streams.py",)
    with running_servers(sources, tmp_dir=tmp_path_factory.mktemp("fuzz-replicas")) as running:
        yield running


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningPlatform]:
    with running_platform(tmp_path_factory.mktemp("fuzz-platform") / "data", "--max-replicas-total", "2") as running:
        yield running


@pytest.fixture(scope="module")
def python_gateway_platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningPlatform]:
    """The same platform without HAProxy in front: the API itself refuses what HAProxy would."""
    data = tmp_path_factory.mktemp("fuzz-python-gateway") / "data"
    with running_platform(data, "--gateway", "python", "--max-replicas-total", "2") as running:
        yield running


def assert_replica_healthy(server: RunningServer) -> None:
    assert server.proc.poll() is None, server.log()
    assert httpx.get(f"{server.url}/healthz", timeout=10).status_code == 200
    assert httpx.get(f"{server.url}/readyz", timeout=10).status_code == 200


def assert_platform_healthy(platform: RunningPlatform) -> None:
    assert platform.proc.poll() is None, platform.log()[-4000:]
    assert httpx.get(f"{platform.url}/healthz", timeout=10).status_code == 200
    with platform.api() as api:
        assert api.get("/api/v1/whoami").json()["scopes"] == ["admin"]
        assert api.get("/api/v1/info").status_code == 200
    assert "Traceback" not in platform.log(), platform.log()[-6000:]


# -------------------------------------------------------------------- schemathesis


@pytest.mark.parametrize("name", ["echo", "upload", "streaming"])
def test_fuzz_a_replica(replicas: dict[str, RunningServer], name: str, tmp_path: Path) -> None:
    server = replicas[name]
    fuzz(f"{server.url}/openapi.json", "--max-examples", "200", "--exclude-checks", "negative_data_rejection", cwd=tmp_path)
    assert_replica_healthy(server)
    assert "Traceback" not in server.log(), server.log()[-6000:]
    if name == "echo":  # and it still answers right
        assert httpx.post(f"{server.url}/predict", json={"text": "hi"}).json() == {"output": "echo: hi"}


def test_fuzz_the_platform_api(platform: RunningPlatform, tmp_path: Path) -> None:
    schema = f"{platform.url}/api/v1/openapi.json"
    excluded = ["create_deployment_api_v1_deployments_post", "start_training_api_v1_trainings_post"]
    excluded.append("revoke_token_api_v1_tokens__token__delete")
    skip = [arg for operation in excluded for arg in ("--exclude-operation-id", operation)]
    skip += ["--exclude-path-regex", "/logs$"]
    checks_off = ["--exclude-checks", "negative_data_rejection,positive_data_acceptance"]
    # First with no deployment, so that no DELETE, PATCH or rollback it makes up can reach one.
    fuzz(schema, "--max-examples", "80", *checks_off, *skip, token=platform.token, cwd=tmp_path)
    assert_platform_healthy(platform)
    # Then reading a real deployment (with no replica: min 0).
    with platform.api() as api:
        made = api.post("/api/v1/deployments", json={"name": "echo", "source": "examples/echo.py", "min_replicas": 0})
        assert made.status_code == 201, made.text
    # (One expression: schemathesis ORs several --include options. No stateful phase: it follows links to DELETE.)
    only = ["--include-name-regex", r"^GET /api/v1/deployments/\{name\}(/(revisions|replicas|events|metrics))?$"]
    only += ["--phases", "examples,coverage,fuzzing"]
    fuzz(schema, "--max-examples", "50", *checks_off, *only, token=platform.token, cwd=tmp_path, config=ON_ECHO)
    assert_platform_healthy(platform)
    with platform.api() as api:
        echo = api.get("/api/v1/deployments/echo")
        assert echo.status_code == 200 and echo.json()["min_replicas"] == 0, echo.text
        assert api.delete("/api/v1/deployments/echo").status_code == 202


# -------------------------------------------------------------------- what a schema fuzzer does not send


class Target(NamedTuple):
    url: str
    json_path: str
    upload_path: str
    upload_field: str
    headers: str  # extra request header lines, CRLF-terminated


def status_of(url: str, head: bytes, body: bytes = b"") -> int:
    """Send raw bytes to the server at `url`; the status code of its answer."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(head + body)
        answer = b""
        while b"\r\n" not in answer:
            chunk = sock.recv(65536)
            if not chunk:
                break
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 "), answer[:200]
    return int(answer.split(b" ", 2)[1])


def request_head(method: str, target: str, headers: str, extra: str = "") -> bytes:
    return f"{method} {target} HTTP/1.1\r\nhost: fuzz\r\nconnection: close\r\n{headers}{extra}\r\n".encode()


def malformed_requests(target: Target) -> dict[str, tuple[bytes, bytes]]:
    """name → (head, body) of each request that must get a 4xx."""
    arrays = b"[" * 10_000 + b"]" * 10_000
    objects = b'{"a":' * 10_000 + b"1" + b"}" * 10_000
    part = f'--AAA\r\ncontent-disposition: form-data; name="{target.upload_field}"; filename="a.txt"\r\n\r\nhello\r\n--AAA--\r\n'
    cases: dict[str, tuple[bytes, bytes]] = {}
    for name, body in (("nested arrays", arrays), ("nested objects", objects)):
        extra = f"content-type: application/json\r\ncontent-length: {len(body)}\r\n"
        head = request_head("POST", target.json_path, target.headers, extra)
        cases[f"JSON {name}, 10,000 levels deep"] = (head, body)
    for name, ctype in (("another boundary", "multipart/form-data; boundary=BBB"), ("no boundary", "multipart/form-data")):
        extra = f"content-type: {ctype}\r\ncontent-length: {len(part)}\r\n"
        cases[f"multipart with {name}"] = (request_head("POST", target.upload_path, target.headers, extra), part.encode())
    cases["a 64 KB header"] = (request_head("GET", target.json_path, target.headers, f"x-big: {'a' * 65536}\r\n"), b"")
    cases["a 100 KB URL"] = (request_head("GET", f"{target.json_path}?q={'a' * 102_400}", target.headers), b"")
    cases["a percent-encoded NUL in the path"] = (request_head("GET", f"{target.json_path}%00x", target.headers), b"")
    cases["a raw NUL in the path"] = (request_head("GET", f"{target.json_path}\x00x", target.headers), b"")
    return cases


CASES = list(malformed_requests(Target("", "/p", "/u", "f", "")))


@pytest.mark.parametrize("case", CASES)
def test_a_replica_refuses_malformed_requests(replicas: dict[str, RunningServer], case: str) -> None:
    echo, upload = replicas["echo"], replicas["upload"]
    url = upload.url if "multipart" in case else echo.url
    head, body = malformed_requests(Target(url, "/predict", "/describe", "upload", ""))[case]
    status = status_of(url, head, body)
    assert 400 <= status < 500, f"{case}: {status}"
    for server in (echo, upload):
        assert_replica_healthy(server)


@pytest.mark.parametrize("front", ["platform", "python_gateway_platform"])
@pytest.mark.parametrize("case", CASES)
def test_the_platform_api_refuses_malformed_requests(request: pytest.FixtureRequest, front: str, case: str) -> None:
    platform: RunningPlatform = request.getfixturevalue(front)
    auth = f"authorization: Bearer {platform.token}\r\n"
    head, body = malformed_requests(Target(platform.url, "/api/v1/tokens", "/api/v1/datasets", "file", auth))[case]
    status = status_of(platform.url, head, body)
    assert 400 <= status < 500, f"{case}: {status}"
    assert_platform_healthy(platform)
