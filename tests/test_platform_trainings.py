"""The training queue's limits and turns, against a real `fermion up` (issue 14: one token queued 26 jobs).

One platform for the module, started with small limits (4 jobs in all, 2 per token, budgets up to 2 minutes).
Jobs run one at a time, so all but the first stay queued: the tests fill the queue, cancel, and watch which job
runs next without waiting for a training to finish.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from support import FERMION, ROOT, RunningPlatform, running_platform, wait_for

from fermion.client.platform import Platform, TooManyRequestsError
from fermion.platform.trainings import TrainingJob, next_in_turn

LIMITS = ["--max-training-jobs", "4", "--max-training-jobs-per-token", "2", "--max-training-budget", "2m"]
# Long enough that the running job is still running when a test looks; every job is cancelled at the end.
JOB = {"dataset": "iris", "budget_s": 120}


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningPlatform]:
    with running_platform(tmp_path_factory.mktemp("trainings") / "data", "--gateway", "python", *LIMITS) as running:
        with running.api() as api:
            api.post("/api/v1/datasets/samples", json={"source": "sample:iris"}).raise_for_status()
        yield running


@pytest.fixture(scope="module")
def tokens(platform: RunningPlatform) -> dict[str, str]:
    """Two more deploy tokens besides the admin's: 'ci' and 'alice'."""
    made = {"admin": platform.token}
    with platform.api() as api:
        for name in ("ci", "alice"):
            answer = api.post("/api/v1/tokens", json={"name": name, "scopes": ["deploy"]})
            made[name] = answer.raise_for_status().json()["token"]
    return made


def start(platform: RunningPlatform, token: str, **changes: Any) -> httpx.Response:
    with platform.api(token) as api:
        return api.post("/api/v1/trainings", json={**JOB, **changes})


def jobs(platform: RunningPlatform) -> list[dict[str, Any]]:
    with platform.api() as api:
        return api.get("/api/v1/trainings").raise_for_status().json()["trainings"]


def cancel(platform: RunningPlatform, job_id: str) -> None:
    with platform.api() as api:
        api.delete(f"/api/v1/trainings/{job_id}").raise_for_status()


def test_the_queue_has_limits_per_token_and_in_all_and_takes_turns(platform: RunningPlatform, tokens: dict[str, str]):
    first = start(platform, tokens["admin"])
    second = start(platform, tokens["admin"])
    assert (first.status_code, second.status_code) == (202, 202), second.text
    first_id, second_id = first.json()["id"], second.json()["id"]
    assert first.json()["requested_by"] == "admin" and first.json()["token_id"] is not None

    # a third job of the same token: 429, saying the limit, what it holds and what to do
    third = start(platform, tokens["admin"])
    assert third.status_code == 429
    assert int(third.headers["retry-after"]) >= 1
    body = third.json()
    assert body["error"] == "too_many_requests" and body["retry_after"] == int(third.headers["retry-after"])
    message = body["message"]
    assert message.startswith("token 'admin' already has 2 training jobs queued or running (1 running, 1 queued)")
    assert "the most one token may have (2)" in message
    assert f"wait for one to finish (retry in about {body['retry_after']} s)" in message
    assert f"DELETE /api/v1/trainings/{second_id}" in message
    assert "fermion up --max-training-jobs-per-token" in message

    # other tokens still get in, up to the platform's 4 in all
    ci_jobs = [start(platform, tokens["ci"]) for _ in range(2)]
    assert [a.status_code for a in ci_jobs] == [202, 202]
    full = start(platform, tokens["alice"])
    assert full.status_code == 429 and "retry-after" in full.headers
    assert full.json()["message"].startswith(
        "the platform already has 4 training jobs queued or running (1 running, 3 queued), 0 of them yours, the most it takes (4)"
    )
    assert "fermion up --max-training-jobs`" in full.json()["message"]
    assert "DELETE" not in full.json()["message"]  # alice has nothing to cancel
    assert len(jobs(platform)) == 4  # nothing refused was recorded

    # a cancelled job frees its place at once
    cancel(platform, second_id)
    alice = start(platform, tokens["alice"])
    assert alice.status_code == 202, alice.text

    # turns: admin's job ran first, so the next to run is ci's oldest, not a later one of admin's
    cancel(platform, first_id)
    ci_first = ci_jobs[0].json()["id"]
    wait_for(lambda: any(j["status"] == "running" for j in jobs(platform)), timeout=30, what="the next training")
    running = [j["id"] for j in jobs(platform) if j["status"] == "running"]
    assert running == [ci_first]

    for job in jobs(platform):
        if job["status"] in ("queued", "running"):
            cancel(platform, job["id"])
    wait_for(lambda: all(j["status"] in ("cancelled", "succeeded", "failed") for j in jobs(platform)), timeout=30)


def test_a_budget_over_the_cap_is_422_naming_the_cap(platform: RunningPlatform, tokens: dict[str, str]):
    over = start(platform, tokens["ci"], budget_s=121)
    assert over.status_code == 422
    assert over.json()["message"] == (
        "budget_s 121 is over this platform's cap of 120 s per training job: ask for at most 120 s, "
        "or ask the platform's operator to raise the cap (`fermion up --max-training-budget`)"
    )
    assert all(j["budget_s"] != 121 for j in jobs(platform))


def test_the_python_client_raises_too_many_requests_with_retry_after(platform: RunningPlatform, tokens: dict[str, str]):
    with Platform(platform.url, token=tokens["alice"]) as alice:
        started = [alice.trainings.start("iris", budget_s=120) for _ in range(2)]
        with pytest.raises(TooManyRequestsError) as refused:
            alice.trainings.start("iris", budget_s=120)
        assert refused.value.status == 429 and refused.value.retry_after is not None and refused.value.retry_after >= 1
        assert "the most one token may have (2)" in str(refused.value)
        for job in started:
            alice.trainings.cancel(job["id"])


def test_up_refuses_a_budget_cap_that_is_no_duration(tmp_path):
    command = [*FERMION, "up", "--data-dir", str(tmp_path), "--port", "0", "--max-training-budget", "soon"]
    result = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert result.returncode == 2
    assert "--max-training-budget 'soon' is not a duration; use e.g. 30s, 2m or 1h" in result.stderr + result.stdout


def _job(number: int, token: int) -> TrainingJob:
    return TrainingJob(id=f"t-{number}", dataset="iris@1", target=None, budget_s=60, token_id=token, created_at=number)


def test_turns_go_round_the_tokens_oldest_job_first():
    queue = [_job(1, token=7), _job(2, token=7), _job(3, token=7), _job(4, token=8), _job(5, token=9)]
    turns: dict[str, int] = {}
    order = []
    for started in range(1, len(queue) + 1):
        job = next_in_turn(queue, turns)
        queue.remove(job)
        turns[job.owner] = started
        order.append(job.id)
    # token 7 came first with three jobs; 8 and 9 each get their turn before 7's second and third
    assert order == ["t-1", "t-4", "t-5", "t-2", "t-3"]


def test_a_restart_stops_the_training_process_a_killed_platform_left_running(tmp_path):
    """The job file records the process (pid and start time); the next control plane stops it and
    marks the job cancelled. A pid that now belongs to another process is left alone."""
    import json
    import os
    import time

    from fermion.platform.processes import process_start_time
    from fermion.platform.trainings import TrainingJobs

    orphan = subprocess.Popen(["sleep", "60"], start_new_session=True)
    bystander = subprocess.Popen(["sleep", "60"], start_new_session=True)
    try:
        folder = tmp_path / "trainings"
        folder.mkdir()
        for job_id, proc, started in (("t-orphan", orphan, process_start_time(orphan.pid)), ("t-reused", bystander, "1")):
            job = TrainingJob(
                id=job_id, dataset="iris@1", target=None, budget_s=60, status="running", pid=proc.pid, pid_started=started
            )
            (folder / f"{job_id}.json").write_text(json.dumps(job.to_dict()))
        jobs = TrainingJobs(tmp_path)
        deadline = time.monotonic() + 10
        while orphan.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert orphan.poll() is not None  # stopped
        assert bystander.poll() is None  # its start time does not match: not ours
        assert jobs.get("t-orphan").status == "cancelled" and "pid" not in jobs.get("t-orphan").view()
    finally:
        for proc in (orphan, bystander):
            if proc.poll() is None:
                os.kill(proc.pid, 9)
            proc.wait()
