"""The platform commands (`fermion deploy`, `ls`, `status`, `logs`, `token`, ...) and the `Platform` client,
run as a user runs them: against a real `fermion up`, through real processes, with real exit codes.

The unit tests at the top need no platform; the rest share one `fermion up` for the module.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import select
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from support import FERMION, ROOT, RunningPlatform, free_port, start_platform, stop_process, stop_replicas
from typer.testing import CliRunner

from fermion.cli import app
from fermion.cli.platform import parse_duration, parse_env
from fermion.cli.platform_deploy import example_call, resolve_source
from fermion.client import APIError
from fermion.client.platform import AuthError, ForbiddenError, Platform

APPS = ROOT / "tests" / "apps"


def error_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("error:")]


# -- no platform needed ------------------------------------------------------------------------


def test_env_options_parse_and_never_echo_values():
    assert parse_env(None) is None
    assert parse_env(["A=1", "B_2=x=y", "EMPTY="]) == {"A": "1", "B_2": "x=y", "EMPTY": ""}
    assert parse_env(["HF_TOKEN"], environ={"HF_TOKEN": "hf_secret"}) == {"HF_TOKEN": "hf_secret"}
    with pytest.raises(ValueError, match=r"\$HF_TOKEN is not set here; give --env HF_TOKEN=VALUE"):
        parse_env(["HF_TOKEN"], environ={})
    with pytest.raises(ValueError, match="given twice"):
        parse_env(["A=1", "A=2"])
    for bad in ("1A=hunter2", "A-B=hunter2", "=hunter2", "no spaces=hunter2"):
        with pytest.raises(ValueError, match="is not NAME=VALUE") as caught:
            parse_env([bad])
        assert "hunter2" not in str(caught.value)
    with pytest.raises(ValueError, match="--env number 2 is not NAME=VALUE") as caught:
        parse_env(["A=1", "hunter2 as a typo"])  # no '=': it may be a value, so it is not shown
    assert "hunter2" not in str(caught.value)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("30d", 30 * 86400), ("12h", 43200), ("15m", 900), ("90s", 90), ("3600", 3600), ("1.5h", 5400), ("2W", 1209600)],
)
def test_expires_in_takes_durations(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["soon", "0", "-1d", "12 hours", "", "0.1s"])
def test_expires_in_rejects_what_is_not_a_duration(text):
    with pytest.raises(ValueError, match="--expires-in"):
        parse_duration(text)


def test_example_call_comes_from_the_deployments_openapi():
    from fermion.serving.openapi import build_openapi
    from fermion.sources import load_service

    document = build_openapi(load_service(str(ROOT / "examples" / "echo.py")))
    curl, python = example_call(document, "http://h:1/run/echo", "echo", public=False)
    assert curl == (
        'curl -X POST http://h:1/run/echo/predict -H "Authorization: Bearer $FERMION_TOKEN" '
        "-H 'content-type: application/json' -d '{\"text\": \"hello\"}'"
    )
    assert python == "from fermion import Platform; print(Platform().client('echo').predict(text='hello'))"
    public_curl, _ = example_call(document, "http://h:1/run/echo", "echo", public=True)
    assert "Authorization" not in public_curl
    streams = build_openapi(load_service(str(ROOT / "examples" / "streaming.py")))
    curl, python = example_call(streams, "http://h:1/run/s", "s", public=True)
    assert curl.startswith("curl -N -X POST http://h:1/run/s/count")
    assert python == "from fermion import Platform\nfor item in Platform().client('s').count(n=1): print(item)"
    compile(python, "snippet", "exec")


def test_local_file_sources_are_sent_as_absolute_paths(monkeypatch):
    monkeypatch.chdir(ROOT)
    echo = str(ROOT / "examples" / "echo.py")
    assert resolve_source("examples/echo.py", "http://127.0.0.1:8080") == echo
    assert resolve_source("py:examples/echo.py:Echo", "http://localhost:8080") == f"py:{echo}:Echo"
    assert resolve_source("st:all-MiniLM-L6-v2", "http://127.0.0.1:8080") == "st:all-MiniLM-L6-v2"
    assert resolve_source("fermion.service:Service", "http://127.0.0.1:8080") == "fermion.service:Service"
    assert resolve_source("examples/echo.py", "https://platform.example.com") == "examples/echo.py"  # its files are not ours


@pytest.fixture
def no_platform(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    monkeypatch.setenv("FERMION_HOME", str(tmp_path / "empty"))
    monkeypatch.delenv("FERMION_URL", raising=False)
    monkeypatch.delenv("FERMION_TOKEN", raising=False)
    return tmp_path / "empty"


@pytest.mark.parametrize(
    "args", [["ls"], ["status", "echo"], ["token", "ls"], ["logs", "echo"], ["deploy", "echo", "examples/echo.py"]]
)
def test_without_a_platform_every_command_says_how_to_start_one(no_platform, args):
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 1
    assert error_lines(result.stderr) == [
        f"error: no platform to talk to: start one with `fermion up` (data dir {no_platform}), "
        "or give --url/--token (or set FERMION_URL and FERMION_TOKEN)"
    ]


def test_a_platform_that_does_not_answer_is_one_clear_line(no_platform):
    url = f"http://127.0.0.1:{free_port()}"
    result = CliRunner().invoke(app, ["ls", "--url", url])
    assert result.exit_code == 1
    (line,) = error_lines(result.stderr)
    assert line.startswith(f"error: cannot reach the platform at {url}") and "start one with `fermion up`" in line


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["deploy", "echo", "examples/echo.py", "--env", "1X=secret"], "--env '1X' is not NAME=VALUE"),
        (
            ["deploy", "echo", "examples/echo.py", "--replicas", "2", "--max-replicas", "3"],
            "give --replicas N, or --min-replicas/--max-replicas",
        ),
        (["scale", "echo"], "give --replicas N, or --min-replicas/--max-replicas"),
        (["update", "echo"], "nothing to change"),
        (["token", "create", "ci", "--expires-in", "soon"], "--expires-in 'soon' is not a duration"),
    ],
)
def test_bad_input_exits_2_before_asking_the_platform(no_platform, args, expected):
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2
    (line,) = error_lines(result.stderr)
    assert expected in line and "secret" not in result.stderr


# -- against a real `fermion up` -----------------------------------------------------------------


@pytest.fixture(scope="module")
def up(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningPlatform]:
    """One `fermion up` for the module, on a free port; it and its replicas always stop afterwards."""
    data_dir = tmp_path_factory.mktemp("platform")
    running = start_platform(data_dir, port=free_port())
    try:
        yield running
    finally:
        stop_process(running.proc, timeout=30)  # SIGTERM, then SIGKILL after 30 s
        stop_replicas(data_dir)


def fermion(up: RunningPlatform, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """`fermion ARGS` as a user on this machine runs it: it finds the platform through FERMION_HOME."""
    env = {k: v for k, v in os.environ.items() if k not in ("FERMION_URL", "FERMION_TOKEN")}
    env.update(FERMION_HOME=str(up.data_dir), COLUMNS="500", PYTHONUNBUFFERED="1")
    return subprocess.run([*FERMION, *args], capture_output=True, text=True, timeout=timeout, cwd=ROOT, env=env)


@pytest.fixture(scope="module")
def platform(up: RunningPlatform) -> Iterator[Platform]:
    with Platform(up.url, up.token) as client:
        yield client


@pytest.fixture(scope="module")
def echo(up: RunningPlatform) -> subprocess.CompletedProcess[str]:
    """examples/echo.py deployed as 'echo' through the CLI, which waited until it was ready."""
    result = fermion(up, "deploy", "echo", "examples/echo.py")
    assert result.returncode == 0, f"{result.stdout}\n{result.stderr}\n{up.log()}"
    return result


@pytest.mark.slow
def test_deploy_waits_until_ready_and_prints_lines_that_work(up, echo, monkeypatch):
    assert "✓ echo is ready: 1/1 replicas at revision 1" in echo.stdout
    assert f"URL     {up.url}/run/echo" in echo.stdout
    curl = re.search(r"Try it  (curl .*)", echo.stdout).group(1)
    assert curl.startswith(f'curl -X POST {up.url}/run/echo/predict -H "Authorization: Bearer $FERMION_TOKEN"')
    if shutil.which("curl"):
        ran = subprocess.run(
            curl, shell=True, capture_output=True, text=True, timeout=30, env={**os.environ, "FERMION_TOKEN": up.token}
        )
        assert json.loads(ran.stdout) == {"output": "echo: hello"}, ran.stderr
    python = re.search(r"Python  (.*)", echo.stdout).group(1)
    monkeypatch.setenv("FERMION_HOME", str(up.data_dir))
    monkeypatch.delenv("FERMION_URL", raising=False)
    monkeypatch.delenv("FERMION_TOKEN", raising=False)
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(python, {})  # noqa: S102 - the line the CLI printed
    assert printed.getvalue().strip() == "{'output': 'echo: hello'}"


@pytest.mark.slow
def test_platform_client_calls_a_deployment_through_the_gateway(up, platform, echo):
    deployment = platform.deployments.get("echo")
    assert (deployment.status, deployment.url, deployment.replicas.ready) == ("ready", f"{up.url}/run/echo", 1)
    with platform.client("echo") as client:
        assert client.predict(text="hi", times=2) == {"output": "echo: hihi"}
    assert platform.info().deployments >= 1


@pytest.mark.slow
def test_ls_and_status_show_the_deployment(up, echo):
    listing = fermion(up, "ls")
    assert listing.returncode == 0, listing.stderr
    row = next(line for line in listing.stdout.splitlines() if line.startswith("echo"))
    assert re.search(
        rf"echo\s+ready\s+1/1\s+1\s+{re.escape(str(ROOT))}/examples/echo\.py\s+private\s+{re.escape(up.url)}/run/echo", row
    ), row
    as_json = json.loads(fermion(up, "ls", "--json").stdout)
    assert [(d["name"], d["status"], d["replicas"]["ready"]) for d in as_json] == [("echo", "ready", 1)]
    status = fermion(up, "status", "echo")
    assert status.returncode == 0 and "Replicas" in status.stdout and "ReplicaReady" in status.stdout
    details = json.loads(fermion(up, "status", "echo", "--json").stdout)
    (replica,) = details["replicas"]
    assert replica["state"] == "ready" and isinstance(replica["pid"], int) and replica["id"] in status.stdout
    assert any(e["kind"] == "ReplicaReady" for e in details["events"])
    events = fermion(up, "events", "echo")
    assert events.returncode == 0 and "ReplicaReady" in events.stdout


@pytest.mark.slow
def test_scale_update_and_rollback(up, platform, echo):
    platform.deployments.scale("echo", 2)
    platform.deployments.wait_ready("echo", timeout=120)
    assert sum(r.state == "ready" for r in platform.deployments.replicas("echo")) == 2

    update = fermion(up, "update", "echo", "tests/apps/echo_v2.py", "--env", "API_KEY=hunter2", "--note", "v2")
    assert update.returncode == 0, update.stderr
    assert "✓ echo is ready: 2/2 replicas at revision 2" in update.stdout
    assert "hunter2" not in update.stdout + update.stderr
    with platform.client("echo") as client:
        assert client.predict(text="x") == {"output": "echo v2: x"}
    assert platform.deployments.get("echo").env == {"API_KEY": "***"}
    assert [(r.number, r.note) for r in platform.deployments.revisions("echo")][-1] == (2, "v2")
    assert "hunter2" not in json.dumps([entry.to_dict() for entry in platform.audit()])

    rollback = fermion(up, "rollback", "echo")
    assert rollback.returncode == 0, rollback.stderr
    assert "revision 3" in rollback.stdout
    with platform.client("echo") as client:
        assert client.predict(text="x") == {"output": "echo: x"}
    assert platform.deployments.get("echo").env == {}

    scale = fermion(up, "scale", "echo", "--replicas", "1")
    assert scale.returncode == 0, scale.stderr
    assert platform.deployments.get("echo").replicas.desired == 1
    old_spelling = fermion(up, "scale", "echo", "1", "--timeout", "60")  # deprecated for a release: still works, says so
    assert old_spelling.returncode == 0 and old_spelling.stderr.count("is deprecated") == 2, old_spelling.stderr

    revisions = json.loads(fermion(up, "revisions", "echo", "--json").stdout)
    assert [(r["number"], r["note"], r["current"]) for r in revisions] == [
        (1, None, False),
        (2, "v2", False),
        (3, "rollback to revision 1", True),
    ]
    assert revisions[1]["env"] == {"API_KEY": "***"}
    table = fermion(up, "revisions", "echo")
    assert re.search(r"^3 \*\s", table.stdout, re.MULTILINE) and "fermion rollback echo N" in table.stderr
    audit = json.loads(fermion(up, "audit", "-n", "3", "--json").stdout)
    assert len(audit) == 3 and (audit[0]["action"], audit[0]["detail"]) == (
        "deployment.update",
        {"min_replicas": 1, "max_replicas": 1},
    )
    me = fermion(up, "whoami")
    assert me.returncode == 0 and me.stdout.startswith(f"admin on {up.url}: scopes admin"), me.stderr


@pytest.mark.slow
def test_logs_print_lines_after_their_replica_and_follow_until_ctrl_c(up, platform, echo):
    result = fermion(up, "logs", "echo", "-n", "20")
    assert result.returncode == 0, result.stderr
    as_json = [json.loads(line) for line in fermion(up, "logs", "echo", "-n", "5", "--json").stdout.splitlines()]
    assert as_json and all(set(item) == {"replica", "line"} and item["replica"].startswith("echo-") for item in as_json)
    assert re.search(r"^echo-\d+-\w+ .*API\s+http://", result.stdout, re.MULTILINE), result.stdout
    replica, line = next(iter(platform.deployments.follow_logs("echo", lines=5)))
    assert replica.startswith("echo-") and line
    # PYTHONFAULTHANDLER: should it ever hang after Ctrl+C, SIGABRT makes it print where it is stuck.
    env = {**os.environ, "FERMION_HOME": str(up.data_dir), "PYTHONUNBUFFERED": "1", "PYTHONFAULTHANDLER": "1"}
    env.pop("FERMION_URL", None)
    env.pop("FERMION_TOKEN", None)
    # A test run started in the background (`make test &`) inherits SIGINT ignored, and Python then never turns
    # Ctrl+C into KeyboardInterrupt: give the CLI the default disposition a terminal would.
    follow = subprocess.Popen(
        [*FERMION, "logs", "echo", "-f"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env=env,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        ready, _, _ = select.select([follow.stdout], [], [], 60)
        assert ready, "fermion logs -f printed nothing in 60 s"
        assert follow.stdout.readline().startswith("echo-")
        rest: list[str] = []  # keep reading, so that a full pipe can never be what holds it up
        drain = threading.Thread(target=lambda: rest.append(follow.stdout.read()), daemon=True)
        drain.start()
        follow.send_signal(signal.SIGINT)
        try:
            code = follow.wait(60)
        except subprocess.TimeoutExpired:
            follow.send_signal(signal.SIGABRT)
            follow.wait(10)
            raise AssertionError(f"fermion logs -f did not stop on Ctrl+C:\n{follow.stderr.read()[-4000:]}") from None
        assert code == 0
        assert "Traceback" not in follow.stderr.read()
    finally:
        stop_process(follow, timeout=10)


@pytest.mark.slow
def test_tokens_scope_what_callers_may_do_and_revoking_stops_them(up, echo):
    created = fermion(up, "token", "create", "caller", "--scope", "invoke", "--expires-in", "1d")
    assert created.returncode == 0, created.stderr
    token = created.stdout.strip()
    assert token.startswith("fmn_") and "will not be shown again" in created.stderr
    with Platform(up.url, token) as caller:
        with caller.client("echo") as client:
            assert client.predict(text="ok") == {"output": "echo: ok"}
        with pytest.raises(ForbiddenError) as denied:
            caller.deployments.create("sneaky", "examples/echo.py")
        assert denied.value.status == 403
    cli_denied = fermion(up, "deploy", "sneaky", "examples/echo.py", "--token", token)
    assert cli_denied.returncode == 1
    (line,) = error_lines(cli_denied.stderr)
    assert "'deploy'" in line
    status = fermion(up, "status", "echo", "--token", token)  # the description, and why not the replicas
    assert status.returncode == 0 and "echo" in status.stdout and "need the 'deploy' scope" in status.stdout, status.stderr
    listing = fermion(up, "token", "ls")
    assert re.search(r"caller\s+fmn_\S*\s+invoke\s+all\s+-\s+active", listing.stdout), listing.stdout

    revoked = fermion(up, "token", "revoke", "caller")
    assert revoked.returncode == 0 and "revoked token 'caller'" in revoked.stdout
    with pytest.raises(APIError) as gateway:
        Platform(up.url, token).client("echo")
    # A revoked token is no token: the private deployment answers as an unknown name would.
    assert gateway.value.status == 404 and "no deployment named 'echo' that you can call" in str(gateway.value)
    with Platform(up.url, token) as caller, pytest.raises(AuthError):
        caller.deployments.list()
    assert re.search(r"caller\s+\S+\s+invoke\s+all\s+-\s+revoked", fermion(up, "token", "ls").stdout)


@pytest.mark.slow
def test_mistakes_get_one_line_and_exit_code_2(up, echo):
    bad = fermion(up, "deploy", "broken", str(APPS / "cli_syntax_error.py"))
    assert bad.returncode == 2
    (line,) = error_lines(bad.stderr)
    assert "does not load" in line and "syntax error" in line and "Traceback" not in bad.stderr
    taken = fermion(up, "deploy", "echo", "examples/echo.py")
    assert taken.returncode == 2
    assert error_lines(taken.stderr) == [
        "error: a deployment named 'echo' already exists; change it with `fermion update echo SOURCE`, or pick another name"
    ]
    typo = fermion(up, "status", "ech")
    assert typo.returncode == 2
    assert "did you mean 'echo'?" in error_lines(typo.stderr)[0]
    bad_name = fermion(up, "deploy", "Not_A_Name", "examples/echo.py")
    assert bad_name.returncode == 2 and "invalid deployment name" in error_lines(bad_name.stderr)[0]


CRASHING_APP = """
from fermion import Service, endpoint


class Crashy(Service):
    def setup(self) -> None:
        raise RuntimeError("the model file is missing")

    @endpoint
    def predict(self, text: str) -> str:
        return text
"""


@pytest.mark.slow
def test_a_service_that_keeps_crashing_fails_the_deploy_with_its_error(up, tmp_path):
    source = tmp_path / "crashy.py"
    source.write_text(CRASHING_APP)
    result = fermion(up, "deploy", "crashy", str(source), "--wait-timeout", "120")
    try:
        assert result.returncode == 1, result.stdout
        (line,) = error_lines(result.stderr)
        assert line.startswith("error: deployment 'crashy' is failing: replica crashy-1-")
        assert "the model file is missing" in result.stderr
    finally:
        fermion(up, "rm", "crashy", "--yes")


@pytest.mark.slow
def test_rm_asks_unless_yes_and_the_deployment_goes_away(up, platform):
    made = fermion(up, "deploy", "short-lived", "examples/echo.py", "--no-wait", "--public")
    assert made.returncode == 0, made.stderr
    refused = fermion(up, "rm", "short-lived")  # not at a terminal and no --yes
    assert refused.returncode == 2 and "add --yes" in error_lines(refused.stderr)[0]
    removed = fermion(up, "rm", "short-lived", "--yes")
    assert removed.returncode == 0, removed.stderr
    deadline = time.monotonic() + 60
    while "short-lived" in {d.name for d in platform.deployments.list()}:
        assert time.monotonic() < deadline, "short-lived was still listed 60 s after `fermion rm`"
        time.sleep(0.2)
    gone = fermion(up, "status", "short-lived")
    assert gone.returncode == 2


@pytest.mark.slow
def test_deploying_with_min_0_starts_no_replica_until_the_first_call(up, platform):
    """The deploy command itself must not count as traffic: it used to fetch the OpenAPI document through
    the gateway for its example, which woke the idle deployment."""
    made = fermion(up, "deploy", "sleepy", "examples/echo.py", "--min-replicas", "0", "--max-replicas", "2", "--public")
    assert made.returncode == 0, made.stderr
    assert "Idle    no replica runs until the first call" in made.stdout
    time.sleep(3)  # several reconcile ticks, each one an autoscaler sample
    sleepy = platform.deployments.get("sleepy")
    assert (sleepy.replicas.ready, sleepy.replicas.starting, sleepy.status) == (0, 0, "idle")
    assert not [e for e in platform.deployments.events("sleepy") if e.kind == "Scaled"]
    assert fermion(up, "rm", "sleepy", "--yes").returncode == 0
