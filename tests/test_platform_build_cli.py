"""`fermion data`, `train`, `models`, `report` pointed at a platform (FERMION_URL/FERMION_TOKEN), as the docs teach:
everything happens on that platform over its REST API, nothing in the user's own data dir; then the model
deploys there by name and answers through the gateway. Without a URL, the commands say which local data dir
they use."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from support import FERMION, ROOT, RunningPlatform, running_platform

pytestmark = pytest.mark.slow  # one `fermion up`, two short trainings and two deployments


@pytest.fixture(scope="module")
def up(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningPlatform]:
    with running_platform(tmp_path_factory.mktemp("platform")) as platform:
        yield platform


@pytest.fixture(scope="module")
def mine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The user's own data dir (FERMION_HOME): with FERMION_URL set, nothing may land here."""
    return tmp_path_factory.mktemp("mine")


def fermion(home: Path, *args: str, url: str | None = None, token: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("FERMION_URL", "FERMION_TOKEN")}
    env.update(FERMION_HOME=str(home), COLUMNS="500", HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1")
    if url:
        env.update(FERMION_URL=url, FERMION_TOKEN=token or "")
    return subprocess.run([*FERMION, *args], capture_output=True, text=True, timeout=300, cwd=ROOT, env=env)


@pytest.fixture(scope="module")
def trained(up: RunningPlatform, mine: Path) -> subprocess.CompletedProcess[str]:
    added = fermion(mine, "data", "add", "sample:iris", url=up.url, token=up.token)
    assert added.returncode == 0, added.stderr
    assert "added iris@1: 150 rows, 5 columns" in added.stdout
    result = fermion(mine, "train", "iris", "--budget", "5s", "--max-trials", "1", url=up.url, token=up.token)
    assert result.returncode == 0, f"{result.stdout}\n{result.stderr}\n{up.log()}"
    return result


def test_data_add_and_train_use_the_platform_not_the_local_data_dir(up: RunningPlatform, mine: Path, trained):
    assert f"training iris@1 on {up.url} as job t-" in trained.stderr
    assert "✓ registered iris@1" in trained.stdout and "Deploy  fermion deploy iris model:iris@1" in trained.stdout
    assert "local data dir" not in trained.stderr
    assert not (mine / "datasets").exists() and not (mine / "models").exists()
    assert (up.data_dir / "models" / "iris" / "1").is_dir()


def test_listings_show_what_the_platform_has(up: RunningPlatform, mine: Path, tmp_path: Path, trained):
    datasets = json.loads(fermion(mine, "data", "ls", "--json", url=up.url, token=up.token).stdout)
    assert [d["ref"] for d in datasets] == ["iris@1"]
    shown = json.loads(fermion(mine, "data", "show", "iris", "--json", url=up.url, token=up.token).stdout)
    assert shown["rows"] == 150 and "path" not in shown
    models = json.loads(fermion(mine, "models", "--json", url=up.url, token=up.token).stdout)
    assert [m["ref"] for m in models] == ["iris@1"]
    model = json.loads(fermion(mine, "models", "show", "iris", "--json", url=up.url, token=up.token).stdout)
    assert model["source"] == "model:iris@1" and model["metrics"]["accuracy"] > 0.8
    page = tmp_path / "iris.html"
    report = fermion(mine, "report", "iris@1", "--output", str(page), url=up.url, token=up.token)
    assert report.returncode == 0 and report.stdout.strip() == str(page.resolve()), report.stderr
    assert "Test metrics" in page.read_text()


def test_an_uploaded_file_trains_there_and_mistakes_are_one_line(up: RunningPlatform, mine: Path, tmp_path: Path):
    csv = tmp_path / "Shop.csv"
    csv.write_text(
        "size,color,bought\n" + "".join(f"{i % 7},{'red' if i % 2 else 'blue'},{'yes' if i % 2 else 'no'}\n" for i in range(60))
    )
    wrong = fermion(mine, "train", str(csv), "--target", "bougth", "--budget", "5s", url=up.url, token=up.token)
    assert wrong.returncode == 2, wrong.stderr
    assert [line for line in wrong.stderr.splitlines() if line.startswith("error:")] == [
        "error: no column 'bougth' in the dataset; did you mean 'bought'? columns: size, color, bought"
    ]
    unknown = fermion(mine, "train", "nosuch", "--budget", "5s", url=up.url, token=up.token)
    assert unknown.returncode == 2 and "no dataset named 'nosuch'" in unknown.stderr
    assert not (mine / "datasets").exists()


def test_the_model_deploys_on_that_platform_and_answers(up: RunningPlatform, mine: Path, trained):
    deployed = fermion(mine, "deploy", "iris", "model:iris@1", "--public", url=up.url, token=up.token)
    assert deployed.returncode == 0, f"{deployed.stdout}\n{deployed.stderr}\n{up.log()}"
    flower = {"sepal_length_cm": 5.1, "sepal_width_cm": 3.5, "petal_length_cm": 1.4, "petal_width_cm": 0.2}
    answer = httpx.post(f"{up.url}/run/iris/predict", json=flower, timeout=60)
    assert answer.status_code == 200 and answer.json() == "setosa", answer.text
    # The column names the model was trained with work too (aliases of the Python names).
    original = {"sepal length (cm)": 5.1, "sepal width (cm)": 3.5, "petal length (cm)": 1.4, "petal width (cm)": 0.2}
    answer = httpx.post(f"{up.url}/run/iris/predict", json=original, timeout=60)
    assert answer.status_code == 200 and answer.json() == "setosa", answer.text


def test_train_deploy_on_the_platform_with_progress_for_programs(up: RunningPlatform, mine: Path):
    """`--progress-json` shows the job's progress as JSON lines; `--deploy` deploys on the platform it trained on."""
    arguments = ["train", "sample:wine", "--budget", "5s", "--max-trials", "1", "--progress-json", "--deploy", "wine", "--public"]
    result = fermion(mine, *arguments, url=up.url, token=up.token)
    assert result.returncode == 0, f"{result.stdout}\n{result.stderr}\n{up.log()}"
    events = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert events[0]["phase"] == "queued" and events[0]["dataset"] == "wine@1"
    assert events[-1] == {**events[-1], "phase": "registered", "model": "wine@1"}
    assert any(e.get("trials") == 1 for e in events)
    assert "✓ wine is ready" in result.stdout
    answer = httpx.post(f"{up.url}/run/wine/predict", json={"alcohol": 13.0}, timeout=60)
    assert answer.status_code == 422 and "malic_acid" in answer.text  # it serves, with the wine columns as fields
    assert not (mine / "models").exists()


def test_without_a_url_the_commands_say_which_local_data_dir(tmp_path: Path, up: RunningPlatform):
    home = tmp_path / "home"
    listed = fermion(home, "data", "ls")
    assert listed.returncode == 0 and f"local data dir: {home}" in listed.stderr
    assert "no datasets yet" in listed.stdout
    both = fermion(home, "data", "ls", "--url", up.url, "--data-dir", str(home))
    assert both.returncode == 2 and "give --url (a platform) or --data-dir (a local data dir), not both" in both.stderr
    # An explicit --data-dir is local even with FERMION_URL set (the platform's own training runs use it).
    local = fermion(home, "data", "add", "sample:iris", "--data-dir", str(home), url=up.url, token=up.token)
    assert local.returncode == 0 and (home / "datasets" / "iris" / "1").is_dir(), local.stderr
