"""Tokens narrowed to deployments and limited to a rate, through a real `fermion up` and both gateways.

`fermion token create ci --scope invoke --deployment a` reaches deployment a and nothing else: b
answers as an unknown name does, the API lists only a, and a 404 names no other deployment. A
narrowed deploy token changes only its own deployments. `--rate 3/h` lets three calls through and
refuses the fourth with 429, `Retry-After` and the `X-RateLimit-*` headers, in both gateways.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from fermion.platform.errors import Invalid
from fermion.platform.rates import RateLimiter, parse_rate, retry_after
from fermion.platform.store.database import Store
from tests.support import EXAMPLES, GATEWAYS, RunningPlatform, running_platform, wait_for

ECHO = str(EXAMPLES / "echo.py")


# The rules, without a platform


def test_rates_are_written_as_calls_per_second_minute_or_hour():
    assert str(parse_rate("10/s")) == "10/s" and parse_rate("600 / minute").period == 60 and parse_rate("5/H").unit == "h"
    for bad in ("10", "10/day", "0/s", "-1/s", "1e3/s", "10000000/s", "", None, 5):
        with pytest.raises(Invalid, match="rate"):
            parse_rate(bad)


def test_the_counter_slides_as_haproxys_does():
    now = [1000.0]
    limiter, rate = RateLimiter(clock=lambda: now[0]), parse_rate("4/s")
    verdicts = [limiter.take("t", rate) for _ in range(5)]
    assert [v.allowed for v in verdicts] == [True, True, True, True, False]
    assert [v.remaining for v in verdicts[:4]] == [3, 2, 1, 0]
    assert verdicts[4].retry_after == retry_after(rate, 5) == 1
    assert limiter.take("other", rate).allowed  # counted per key
    now[0] += 1.5  # half of the previous second still counts: 5 calls (the refused one too) × 0.5, so two more fit
    assert [limiter.take("t", rate).allowed for _ in range(3)] == [True, True, False]
    now[0] += 10  # quiet for long: a fresh window
    assert limiter.take("t", rate).remaining == 3
    assert retry_after(parse_rate("10/h"), 20) == 1980  # ⌈3600 × 11 / 20⌉


def test_a_narrowed_token_is_stored_with_its_reach_and_rate(tmp_path: Path):
    store = Store.open(f"sqlite:///{tmp_path / 'db.sqlite'}")
    record, plaintext = store.create_token("ci", "invoke", deployments=["b", "a"], rate="600/minute")
    assert record.deployments == {"a", "b"} and record.rate == "600/min" and record.narrowed
    verified = store.verify_token(plaintext)
    assert verified is not None and (verified.deployments, verified.rate) == ({"a", "b"}, "600/min")
    assert record.reaches("a") and not record.reaches("c")
    assert store.active_token_grants()[0][1:] == (("a", "b"), "600/min")
    with pytest.raises(Invalid, match="admin token cannot be narrowed"):
        store.create_token("boss", "admin", deployments=["a"])
    with pytest.raises(Invalid, match="invalid deployment name"):
        store.create_token("bad", "invoke", deployments=["Not A Name"])
    with pytest.raises(Invalid, match="at most 100"):
        store.create_token("many", "invoke", deployments=[f"d{i}" for i in range(101)])
    assert [t.name for t in store.list_tokens()] == ["ci"]  # nothing half-made


# Through `fermion up`


@pytest.fixture(scope="module", params=GATEWAYS)
def platform(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningPlatform]:
    data = Path(tmp_path_factory.mktemp(f"narrowed-{request.param}"))
    with running_platform(data, "--gateway", request.param) as running, running.api() as admin:
        for name in ("a", "b"):
            made = admin.post("/api/v1/deployments", json={"name": name, "source": ECHO})
            assert made.status_code == 201, made.text
        for name in ("a", "b"):
            wait_for(lambda name=name: admin.get(f"/api/v1/deployments/{name}").json()["status"] == "ready", what=name)
        yield running


def make_token(platform: RunningPlatform, name: str, scope: str, **extra: object) -> str:
    with platform.api() as admin:
        answer = admin.post("/api/v1/tokens", json={"name": name, "scopes": [scope], **extra})
    assert answer.status_code == 201, answer.text
    return str(answer.json()["token"])


def test_an_invoke_token_narrowed_to_a_calls_a_and_learns_nothing_of_b(platform: RunningPlatform):
    token = make_token(platform, "only-a", "invoke", deployments=["a"])
    with platform.api(token) as client:
        assert client.post("/run/a/predict", json={"text": "hi"}).json() == {"output": "echo: hi"}
        unknown = client.post("/run/nope/predict", json={"text": "hi"})
        other = client.post("/run/b/predict", json={"text": "hi"})
        assert other.status_code == unknown.status_code == 404
        assert other.json()["message"] == unknown.json()["message"].replace("'nope'", "'b'")
        assert [d["name"] for d in client.get("/api/v1/deployments").json()["deployments"]] == ["a"]
        assert client.get("/api/v1/deployments/a").status_code == 200
        refused = client.get("/api/v1/deployments/b")
        assert refused.status_code == 403 and "narrowed to deployment a" in refused.json()["message"]
        assert client.get("/api/v1/deployments/nope").status_code == 403  # the same, known or not
        me = client.get("/api/v1/whoami").json()
        assert me["deployments"] == ["a"] and me["rate"] is None and me["scopes"] == ["invoke"]
        assert client.get("/api/v1/info").json()["deployments"] == 1


def test_a_narrowed_deploy_token_changes_only_its_own_deployments(platform: RunningPlatform):
    token = make_token(platform, "ci-a", "deploy", deployments=["a", "a-next"])
    with platform.api(token) as client:
        assert client.patch("/api/v1/deployments/b", json={"source": ECHO, "env": {"X": "1"}}).status_code == 403
        assert client.delete("/api/v1/deployments/b").status_code == 403
        assert client.get("/api/v1/deployments/b/events").status_code == 403
        assert client.post("/api/v1/deployments", json={"name": "c", "source": ECHO}).status_code == 403
        assert client.get("/api/v1/events").status_code == 403  # every deployment's: not for it
        assert client.get("/api/v1/events", params={"deployment": "b"}).status_code == 403
        assert client.get("/api/v1/events", params={"deployment": "a"}).status_code == 200
        for path in ("/api/v1/datasets", "/api/v1/models", "/api/v1/trainings", "/metrics", "/api/v1/tokens"):
            assert client.get(path).status_code == 403, path
        assert set(client.get("/api/v1/metrics").json()["deployments"]) <= {"a", "a-next"}
        missing = client.get("/api/v1/deployments/a-next")
        assert missing.status_code == 404 and "'b'" not in missing.json()["message"]  # lists only what it reaches
        assert client.patch("/api/v1/deployments/a", json={"max_replicas": 2}).status_code == 200
        made = client.post("/api/v1/deployments", json={"name": "a-next", "source": ECHO, "min_replicas": 0})
        assert made.status_code == 201, made.text
        assert client.delete("/api/v1/deployments/a-next").status_code == 202
    with platform.api() as admin:
        b = admin.get("/api/v1/deployments/b").json()
        assert b["revision"] == 1 and b["env"] == {}
        audit = admin.get("/api/v1/audit").json()["entries"]
        created = next(e for e in audit if e["action"] == "token.create" and e["target"] == "ci-a")
        assert created["detail"]["deployments"] == ["a", "a-next"]


def test_a_rate_is_kept_by_the_gateway_with_429_and_its_headers(platform: RunningPlatform):
    token = make_token(platform, "metered", "invoke", rate="3/h")
    with platform.api(token) as client:
        answers = [client.post("/run/a/predict", json={"text": str(i)}) for i in range(4)]
        assert [a.status_code for a in answers] == [200, 200, 200, 429]
        assert [a.headers["x-ratelimit-remaining"] for a in answers] == ["2", "1", "0", "0"]
        assert {a.headers["x-ratelimit-limit"] for a in answers} == {"3"}
        refused = answers[3]
        assert refused.json()["error"] == "too_many_requests" and "3/h" in refused.json()["message"]
        assert (
            int(refused.headers["retry-after"]) == int(refused.headers["x-ratelimit-reset"]) == retry_after(parse_rate("3/h"), 4)
        )
        assert client.get("/api/v1/deployments/a").status_code == 200  # the API is not metered
    with platform.api(make_token(platform, "unmetered", "invoke")) as client:
        for _ in range(5):
            answer = client.post("/run/a/predict", json={"text": "x"})
            assert answer.status_code == 200 and "x-ratelimit-limit" not in answer.headers


def test_narrowing_and_rates_are_checked_before_anything_is_made(platform: RunningPlatform):
    with platform.api() as admin:
        for body, words in (
            ({"scopes": ["admin"], "deployments": ["a"]}, "cannot be narrowed"),
            ({"scopes": ["invoke"], "rate": "lots"}, "invalid rate"),
            ({"scopes": ["invoke"], "deployments": ["../etc"]}, "invalid deployment name"),
        ):
            answer = admin.post("/api/v1/tokens", json={"name": "broken", **body})
            assert answer.status_code == 422 and words in answer.json()["message"], answer.text
        assert "broken" not in {t["name"] for t in admin.get("/api/v1/tokens").json()["tokens"]}


def test_the_cli_makes_and_lists_narrowed_tokens(platform: RunningPlatform):
    import subprocess

    from tests.support import FERMION

    env = {"FERMION_URL": platform.url, "FERMION_TOKEN": platform.token, "COLUMNS": "200", "PATH": "/usr/bin:/bin"}
    made = subprocess.run(
        [*FERMION, "token", "create", "cli-ci", "--scope", "deploy", "--deployment", "a", "--rate", "10/s"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert made.returncode == 0, made.stderr
    assert "only a" in made.stderr and "at most 10/s" in made.stderr and made.stdout.strip().startswith("fmn_")
    listed = subprocess.run([*FERMION, "token", "ls"], capture_output=True, text=True, env=env, timeout=60)
    row = next(line for line in listed.stdout.splitlines() if "cli-ci" in line)
    assert " a " in f" {row} " and "10/s" in row
    with httpx.Client(base_url=platform.url, headers={"authorization": f"Bearer {made.stdout.strip()}"}) as client:
        assert client.get("/api/v1/deployments/b").status_code == 403
