"""Batch jobs against a real `fermion up` (issue 20): datasets through deployments, stored as new datasets.

The deployments are `tests/apps/batch_models.py`: a batched scorer that doubles `x` and refuses negative
values (so some rows fail, and keep their error), and an image measurer. One platform serves the module;
the kill -9 test starts its own, kills it mid-job and starts it again on the same data dir.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from support import (
    EXAMPLES,
    FERMION,
    ROOT,
    RunningPlatform,
    running_platform,
    start_platform,
    stop_process,
    stop_replicas,
    wait_for,
)
from test_platform_docs import commands, runnable_blocks

from fermion.client.platform import InvalidError, Platform
from fermion.data import DatasetStore

APPS = ROOT / "tests" / "apps" / "batch_models.py"
BIG = 10_000


def negative(row: int) -> bool:
    """The rows whose x is negative: the scorer refuses them, so they end with an error."""
    return row % 97 == 5


def write_rows(path: Path, count: int) -> Path:
    with open(path, "w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["id", "x", "tag", "label"])
        for row in range(count):
            writer.writerow([row, -1.0 if negative(row) else row / 4, f"t{row}", row % 3])
    return path


def write_images(folder: Path, count: int) -> dict[str, tuple[int, int]]:
    """`count` small PNGs of different sizes in two label folders; their sizes by relative path."""
    from PIL import Image

    sizes = {}
    for n in range(count):
        label = "wide" if n % 2 else "tall"
        size = (8 + n % 23, 5 + n % 17)
        target = folder / label / f"img{n:03d}.png"
        target.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", size, (n % 256, 40, 200)).save(target)
        sizes[f"{label}/img{n:03d}.png"] = size
    return sizes


def deploy(platform: RunningPlatform, name: str, service: str) -> None:
    with platform.api() as api:
        made = api.post("/api/v1/deployments", json={"name": name, "source": f"{APPS}:{service}"})
        assert made.status_code == 201, made.text
        wait_for(lambda: api.get(f"/api/v1/deployments/{name}").json()["status"] == "ready", 120, f"{name} to be ready")


def fermion(platform: RunningPlatform, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "FERMION_URL": platform.url, "FERMION_TOKEN": platform.token, "COLUMNS": "200"}
    return subprocess.run([*FERMION, *args], capture_output=True, text=True, timeout=300, cwd=ROOT, env=env)


def output_rows(platform: RunningPlatform, ref: str) -> list[dict[str, Any]]:
    """The rows of an output dataset, read from the platform's data dir."""
    frame = DatasetStore(platform.data_dir / "datasets").load_table(ref)
    return json.loads(frame.to_json(orient="records"))


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningPlatform]:
    folder = tmp_path_factory.mktemp("batches")
    store = DatasetStore(folder / "data" / "datasets")
    store.add(write_rows(folder / "small.csv", 300), name="small")
    store.add(write_rows(folder / "rows.csv", BIG), name="rows")
    write_images(folder / "images", 200)
    store.add(folder / "images", name="pictures")
    store.add("sample:iris", name="iris")
    with running_platform(folder / "data", "--gateway", "python") as running:
        deploy(running, "scorer", "Scorer")
        deploy(running, "measurer", "Measurer")
        yield running


@pytest.fixture(scope="module")
def client(platform: RunningPlatform) -> Iterator[Platform]:
    with Platform(platform.url, platform.token, timeout=60) as client:
        yield client


def test_a_batch_from_the_cli_shows_progress_and_stores_inputs_with_outputs_and_errors(platform: RunningPlatform):
    result = fermion(platform, "batch", "scorer", "small", "--output", "small-scored")
    assert result.returncode == 0, result.stderr
    failed = sum(1 for row in range(300) if negative(row))
    assert f"stored small-scored@1: 300 rows, {failed} with an error" in result.stdout
    assert "rows" in result.stderr and "batch job b-" in result.stderr  # the progress bar's line
    rows = output_rows(platform, "small-scored@1")
    assert [r["id"] for r in rows] == list(range(300))  # in the dataset's order, each once
    for r in rows:
        if negative(r["id"]):
            assert r["double"] is None and r["error"] == "x must be >= 0, got -1.0"
        else:  # the inputs (the label column too, which the endpoint does not take) and the outputs side by side
            assert (r["double"], r["output.tag"], r["error"]) == (r["x"] * 2, r["tag"] + "!", None)
            assert r["label"] == r["id"] % 3

    listed = fermion(platform, "batches", "ls")
    assert listed.returncode == 0 and "small-scored@1" in listed.stdout and "succeeded" in listed.stdout


def test_the_batch_page_runs(platform: RunningPlatform, tmp_path: Path):
    """docs/batch.md's marked blocks, in a folder of their own (its CSV file is written there)."""
    blocks = runnable_blocks((ROOT / "docs" / "batch.md").read_text())
    assert [lang for lang, _ in blocks] == ["bash"]
    env = {**os.environ, "FERMION_HOME": str(platform.data_dir), "FERMION_TOKEN": platform.token, "COLUMNS": "200"}
    env["PATH"] = f"{Path(FERMION[0]).parent}:{env['PATH']}"
    env.pop("FERMION_URL", None)
    said = []
    for command in commands(blocks[0][1].replace("examples/echo.py", str(EXAMPLES / "echo.py"))):
        done = subprocess.run(["bash", "-c", command], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
        assert done.returncode == 0, f"$ {command}\n{done.stdout}\n{done.stderr}"
        said.append(done.stdout)
    assert "stored greetings-echo@1: 3 rows" in said[3]
    rows = output_rows(platform, "greeted@1")
    assert [(r["text"], r["times"], r["output"], r["error"]) for r in rows][1] == ("batch", 2, "echo: batchbatch", None)


def test_200_images_through_an_image_endpoint(platform: RunningPlatform, client: Platform, tmp_path: Path):
    sizes = write_images(tmp_path, 200)
    job = client.batches.start("measurer", "pictures", concurrency=6)
    assert (job["kind"], job["rows_total"], job["file_field"]) == ("images", 200, "image")
    done = client.batches.wait(job["id"], timeout=240, poll_s=0.3)
    assert (done["rows_done"], done["rows_failed"], done["result"]) == (200, 0, "pictures-measurer@1")
    rows = output_rows(platform, done["result"])
    assert sorted(r["image"] for r in rows) == sorted(sizes)
    for r in rows:
        assert (r["width"], r["height"]) == sizes[r["image"]] and r["label"] == r["image"].split("/")[0]


def test_what_is_refused_before_a_job_starts(platform: RunningPlatform, client: Platform):
    with platform.api() as api:

        def refused(**body: Any) -> str:
            answer = api.post("/api/v1/batches", json={"deployment": "scorer", "dataset": "small", **body})
            assert answer.status_code in (404, 422), answer.text
            return str(answer.json()["message"])

        assert refused(endpoint="nope") == "deployment 'scorer' has no POST endpoint 'nope'; its endpoints: predict"
        assert "needs 'x', 'tag', which iris@1 does not have" in refused(dataset="iris")
        assert "needs exactly one file or image field; it has 0" in refused(dataset="pictures")
        assert refused(concurrency=33) == "concurrency 33 is out of range: give between 1 and 32"
        assert "invalid output name 'Bad Name'" in refused(output="Bad Name")
        assert refused(deployment="nope") == "no deployment named 'nope'; `fermion ls` lists them"
        assert "no dataset named 'nothing'" in refused(dataset="nothing")
    with pytest.raises(InvalidError, match="no POST endpoint"):
        client.batches.start("scorer", "small", endpoint="nope")
    assert not any(j["endpoint"] == "nope" for j in client.batches.list())  # nothing was started


def test_jobs_per_token_are_bounded_and_a_cancelled_job_stores_nothing(platform: RunningPlatform, client: Platform):
    first = client.batches.start("scorer", "rows", concurrency=1, output="slow-one")
    second = client.batches.start("scorer", "rows", concurrency=1, output="slow-two")
    try:
        with platform.api() as api:
            third = api.post("/api/v1/batches", json={"deployment": "scorer", "dataset": "rows"})
        assert third.status_code == 429 and int(third.headers["retry-after"]) >= 1
        assert third.json()["message"].startswith("token 'admin' already has 2 batch jobs running, the most it may have (2)")
        assert f"DELETE /api/v1/batches/{second['id']}" in third.json()["message"]
    finally:
        cancelled = fermion(platform, "batches", "cancel", first["id"])
        client.batches.cancel(second["id"])
    assert cancelled.returncode == 0 and "is cancelled" in cancelled.stdout
    job = client.batches.get(first["id"])
    assert job["status"] == "cancelled" and job["rows_done"] < BIG and job["result"] is None
    assert not (platform.data_dir / "datasets" / "slow-one").exists()


def test_a_narrowed_token_sees_only_its_deployments_batches_and_starts_none(platform: RunningPlatform, client: Platform):
    with platform.api() as api:
        made = api.post("/api/v1/tokens", json={"name": "measuring", "scopes": ["deploy"], "deployments": ["measurer"]})
        narrowed = made.raise_for_status().json()["token"]
    theirs = client.batches.start("scorer", "small", output="small-again")
    job = client.batches.start("measurer", "pictures", output="pictures-again")
    with Platform(platform.url, narrowed) as mine:
        with httpx.Client(base_url=platform.url, headers={"authorization": f"Bearer {narrowed}"}) as api:
            # A batch reads a dataset, which no narrowed token may: refused alike for its own deployment, another's,
            # and a dataset that does not exist (so it learns no dataset's name either).
            for body in (
                {"deployment": "measurer", "dataset": "pictures"},
                {"deployment": "scorer", "dataset": "small"},
                {"deployment": "measurer", "dataset": "secret-data"},
            ):
                refused = api.post("/api/v1/batches", json=body)
                assert refused.status_code == 403 and "needs a token that is not narrowed" in refused.json()["message"]
            assert api.get(f"/api/v1/batches/{job['id']}").status_code == 200
            assert api.get(f"/api/v1/batches/{theirs['id']}").status_code == 404
            assert api.delete(f"/api/v1/batches/{theirs['id']}").status_code == 404
        assert {j["deployment"] for j in mine.batches.list()} == {"measurer"}
        assert mine.batches.wait(job["id"], timeout=240, poll_s=0.3)["result"] == "pictures-again@1"
    assert client.batches.wait(theirs["id"], timeout=240, poll_s=0.3)["status"] == "succeeded"


def test_a_batch_yields_to_interactive_calls_on_its_deployment():
    """The throttle: a job's full concurrency while only batches call, one row per ready replica while others do."""
    from fermion.platform.batches import BatchJob
    from fermion.platform.batches.runner import QUIET_S, Throttle
    from fermion.platform.gateway.inside import InsideCaller
    from fermion.platform.gateway.metrics import GatewayMetrics
    from fermion.platform.gateway.routes import RouteTable
    from fermion.platform.gateway.upstream import UpstreamPool

    table = RouteTable()
    table.set("scorer", ["http://127.0.0.1:1", "http://127.0.0.1:2"])
    caller = InsideCaller(table, UpstreamPool(), GatewayMetrics(), timeout=5, wait_s=1)
    throttle = Throttle(caller)
    job = BatchJob(id="b-1", deployment="scorer", dataset="rows@1", endpoint="predict", output="out", concurrency=8)
    route = table.get("scorer")
    assert route is not None and throttle.allowed(job) == 8
    route.arrivals += 5  # five of our own rows reached it: still only batches
    caller.arrivals["scorer"] = 5
    throttle.in_flight["scorer"] = 5
    route.upstreams[0].outstanding = 5
    assert throttle.allowed(job) == 8
    route.upstreams[1].outstanding = 1  # an interactive call in flight
    assert throttle.allowed(job) == 2
    route.upstreams[1].outstanding = 0
    route.arrivals += 1  # it has been answered, but came just now
    assert throttle.allowed(job) == 2
    assert throttle.allowed(job, time.monotonic() + QUIET_S) == 8  # a quiet second later


def test_a_killed_control_plane_resumes_a_10000_row_batch_without_duplicates_or_gaps(tmp_path: Path):
    data = tmp_path / "data"
    DatasetStore(data / "datasets").add(write_rows(tmp_path / "rows.csv", BIG), name="rows")
    first = start_platform(data, "--gateway", "python")
    try:
        deploy(first, "scorer", "Scorer")
        started = fermion(first, "batch", "scorer", "rows", "--concurrency", "8", "--detach", "--json")
        assert started.returncode == 0, started.stderr
        job_id = json.loads(started.stdout)["id"]
        with first.api() as api:
            wait_for(lambda: api.get(f"/api/v1/batches/{job_id}").json()["rows_done"] >= 1500, 120, "1500 rows")
        first.proc.send_signal(signal.SIGKILL)
        first.proc.wait(30)
        done_before = sum(1 for _ in open(data / "batches" / job_id / "results.jsonl", "rb"))
        assert 1500 <= done_before < BIG  # killed mid-job

        second = start_platform(data, "--gateway", "python")
        try:
            with Platform(second.url, second.token) as client:
                job = client.batches.wait(job_id, timeout=240, poll_s=0.3)
            assert (job["resumed"], job["rows_done"], job["result"]) == (1, BIG, "rows-scorer@1")
            assert job["rows_failed"] == sum(1 for row in range(BIG) if negative(row))
        finally:
            stop_process(second.proc)
    finally:
        stop_process(first.proc)
        stop_replicas(data)
    results = [json.loads(line)["row"] for line in open(data / "batches" / job_id / "results.jsonl", "rb")]
    assert sorted(results) == list(range(BIG))  # each row answered once: none again, none skipped
    rows = output_rows(second, "rows-scorer@1")
    assert [r["id"] for r in rows] == list(range(BIG))
    assert all((r["error"] is not None) == negative(r["id"]) for r in rows)
