"""`fermion train`, `fermion report`, `fermion models ls|show` and the `model:` source as users meet them:
real processes, real HTTP, and at the end the whole path on a running platform — a file or sample in,
a deployed API out, called through the gateway."""

from __future__ import annotations

import json
import os
import subprocess
import zipfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from support import FERMION, ROOT, RunningPlatform, running_platform, running_servers
from train_data import CLEARLY_NEGATIVE, CLEARLY_POSITIVE, write_reviews, write_typed_table

from fermion.data import DatasetStore
from fermion.models._tabular import field_names
from fermion.train import ModelRegistry, TrainOptions, train


def fermion(home: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """`fermion ARGS` with FERMION_HOME=home, as a user on this machine runs it."""
    env = {k: v for k, v in os.environ.items() if k not in ("FERMION_URL", "FERMION_TOKEN")}
    env.update(FERMION_HOME=str(home), COLUMNS="500", HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1")
    return subprocess.run([*FERMION, *args], capture_output=True, text=True, timeout=timeout, cwd=ROOT, env=env)


def one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 2, (result.stdout, result.stderr)
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    return lines[0]


def png(path: Path, shade: int = 128) -> Path:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("L", (8, 8), shade).save(path)
    return path


# -- bad input: one clear line, exit code 2, and no model ----------------------------------------------


def one_class_csv(folder: Path) -> Path:
    rows = "".join(f"{(i * 7) % 13},{i % 3 == 0},yes\n" for i in range(30))
    (folder / "one.csv").write_text("x,flag,target\n" + rows)
    return folder / "one.csv"


def traversing_zip(folder: Path) -> Path:
    image = png(folder / "pixel.png").read_bytes()
    with zipfile.ZipFile(folder / "evil.zip", "w") as archive:
        archive.writestr("pics/cat/1.png", image)
        archive.writestr("pics/dog/2.png", image)
        archive.writestr("../evil.png", image)
    return folder / "evil.zip"


def folder_with_a_broken_image(folder: Path) -> Path:
    png(folder / "pics" / "cat" / "1.png")
    png(folder / "pics" / "dog" / "2.png", 10)
    (folder / "pics" / "dog" / "3.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not really a PNG")
    return folder / "pics"


def malformed_csv(folder: Path) -> Path:
    (folder / "bad.csv").write_text("a,b\n1,2\n3\n4,5,6\n")
    return folder / "bad.csv"


def empty_file(folder: Path) -> Path:
    (folder / "empty.csv").write_bytes(b"")
    return folder / "empty.csv"


def header_only(folder: Path) -> Path:
    (folder / "header.csv").write_text("a,b,target\n")
    return folder / "header.csv"


def typed(folder: Path) -> Path:
    return write_typed_table(folder / "shop.csv")


BAD_INPUT = {
    "a misspelt target": (typed, ["--target", "targt"], "no column 'targt' in the dataset; did you mean 'target'?"),
    "an empty file": (empty_file, [], "empty.csv is empty"),
    "a CSV with no rows": (header_only, [], "header.csv has columns but no rows"),
    "a malformed CSV": (malformed_csv, [], "bad.csv is not valid CSV: Expected 2 fields in line 4, saw 3"),
    "a zip entry outside its folder": (traversing_zip, [], "evil.zip has an entry that escapes its folder ('../evil.png')"),
    "an image that does not decode": (folder_with_a_broken_image, [], "pics/dog/3.png is not an image that can be decoded"),
    "a regression metric for classes": (
        typed,
        ["--metric", "rmse"],
        "metric 'rmse' is for regression, but this is classification",
    ),
    "a budget that is no duration": (typed, ["--budget", "abc"], "--budget 'abc' is not a duration; use e.g. 30s, 2m or 1h"),
    "regression on text labels": (
        typed,
        ["--problem", "regression"],
        "column 'target' holds text labels, so it cannot be a regression target",
    ),
}


@pytest.mark.parametrize("case", list(BAD_INPUT))
def test_bad_input_is_one_line_and_no_model(case: str, tmp_path: Path):
    make, args, expected = BAD_INPUT[case]
    home = tmp_path / "home"
    result = fermion(home, "train", str(make(tmp_path)), "--budget", "20s", *args)
    assert expected in one_error_line(result)
    assert ModelRegistry(home / "models").list() == []
    assert not list((home / "models").glob("*/[0-9]*")), "a version folder was left behind"
    assert not list(tmp_path.rglob("evil.png")), "the zip wrote outside its folder"


def test_a_target_with_one_class_fails_and_models_ls_shows_no_model(tmp_path: Path):
    home = tmp_path / "home"
    failed = fermion(home, "train", str(one_class_csv(tmp_path)), "--target", "target", "--progress-json")
    message = "column 'target' has only one class ('yes' in all 30 rows); a classifier needs at least two"
    assert message in one_error_line(failed)
    events = [json.loads(line) for line in failed.stdout.splitlines()]  # --progress-json: the error is an event too
    assert events[0] == {"phase": "prepare", "dataset": "one@1", "elapsed": 0.0, "budget": 60.0}
    assert events[-1]["phase"] == "error" and message in events[-1]["message"]
    listed = fermion(home, "models", "ls")
    assert listed.returncode == 0 and "no trained models yet" in listed.stdout
    assert not [p for p in (home / "models").rglob("*") if p.name != ".staging"], "the failed run left files behind"


def test_models_lists_the_registry_and_sources_the_families(tmp_path: Path):
    home = tmp_path / "home"
    listed = fermion(home, "models")
    assert listed.returncode == 0 and "no trained models yet" in listed.stdout, listed.stderr
    assert f"local data dir: {home}" in listed.stderr and "fermion sources" in listed.stderr
    families = json.loads(fermion(home, "sources", "--json").stdout)
    assert {"st:", "hf:", "sklearn:", "onnx:"} <= {f["prefix"] for f in families}


# -- the registry from the CLI: train twice, list, show, report ------------------------------------------


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("train-cli-home")


@pytest.fixture(scope="module")
def flowers(home: Path) -> list[subprocess.CompletedProcess[str]]:
    """sample:iris trained twice as 'flowers' through the CLI: the second run prints JSON progress."""
    args = ["train", "sample:iris", "--name", "flowers", "--max-trials", "1", "--budget", "60s"]
    runs = [fermion(home, *args), fermion(home, *args, "--progress-json")]
    for run in runs:
        assert run.returncode == 0, run.stderr
    return runs


def test_train_prints_what_it_made_and_how_to_serve_it(flowers, home: Path):
    first = flowers[0].stdout
    assert "added dataset iris@1: 150 rows" in first
    assert "✓ registered flowers@1:" in first and "classification of target from iris@1" in first
    assert "Test metrics (30 held-out rows)" in first and "accuracy" in first
    assert f"Report  {home / 'models' / 'flowers' / '1' / 'report.html'}" in first
    assert "Serve   fermion serve model:flowers@1" in first and "Deploy  fermion deploy flowers model:flowers@1" in first


def test_progress_json_is_one_event_a_line(flowers):
    events = [json.loads(line) for line in flowers[1].stdout.splitlines()]
    phases = [e["phase"] for e in events]
    assert phases[0] == "prepare" and phases[-2:] == ["done", "registered"]
    assert {"search", "refit", "evaluate", "save"} <= set(phases)
    assert sum(1 for e in events if "trial" in e) == 1
    assert events[-1]["model"] == "flowers@2" and events[-1]["summary"]["dataset"] == "iris@1"


def test_models_ls_and_show_list_every_version(flowers, home: Path):
    listed = fermion(home, "models", "ls")
    assert listed.returncode == 0, listed.stderr
    rows = [line for line in listed.stdout.splitlines() if "flowers@" in line]
    assert [row.split("│")[1].strip() for row in rows] == ["flowers@1", "flowers@2"]
    assert all("iris@1" in row and "classification" in row and "log loss" in row for row in rows)

    shown = json.loads(fermion(home, "models", "show", "flowers", "--json").stdout)
    assert (shown["ref"], shown["source"], shown["version"]) == ("flowers@2", "model:flowers@2", 2)
    assert set(shown["metrics"]) == {"accuracy", "f1_macro", "roc_auc", "log_loss"} and shown["metrics"]["accuracy"] > 0.8
    assert [i["name"] for i in shown["inputs"]][:2] == ["sepal length (cm)", "sepal width (cm)"]
    assert len(shown["trials"]) == 1 and shown["max_trials"] == 1 and "scikit-learn" in shown["libraries"]

    text = fermion(home, "models", "show", "flowers@1")
    assert text.returncode == 0 and "Request fields" in text.stdout and "sepal length (cm)" in text.stdout
    assert "no model named 'flowrs'; did you mean 'flowers'?" in one_error_line(fermion(home, "models", "show", "flowrs"))


def test_report_saves_one_self_contained_html_file(flowers, home: Path, tmp_path: Path):
    saved = tmp_path / "out.html"
    result = fermion(home, "report", "flowers@1", "--output", str(saved))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(saved.resolve())
    page = saved.read_text()
    metrics = json.loads(fermion(home, "models", "show", "flowers@1", "--json").stdout)["metrics"]
    assert "Test metrics" in page and f"{metrics['accuracy']:.4g}" in page and f"{metrics['log_loss']:.4g}" in page
    assert page.count("data:image/png;base64,") >= 2  # the search and the confusion matrix, inline
    assert 'src="http' not in page and "<link" not in page and 'src="plots/' not in page


def test_serve_check_loads_a_version_and_names_unknown_models(flowers, home: Path):
    checked = fermion(home, "serve", "model:flowers@1", "--check")
    assert checked.returncode == 0, checked.stderr
    assert "POST /predict" in checked.stdout and "POST /predict_proba" in checked.stdout
    assert "no model named 'nosuch'" in one_error_line(fermion(home, "serve", "model:nosuch", "--port", "0"))
    assert "model flowers has no version 7" in one_error_line(fermion(home, "serve", "model:flowers@7", "--port", "0"))


# -- the `model:` source over HTTP: a typed schema, validation, a regression ----------------------------


@pytest.fixture(scope="module")
def served(home: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """A classifier of a typed table (category, number, boolean) and a regression on sample:diabetes, served."""
    datasets, registry = DatasetStore(home / "datasets"), ModelRegistry(home / "models")
    table = datasets.add(write_typed_table(tmp_path_factory.mktemp("typed") / "shop.csv"))
    shop = train(table, TrainOptions(target="target", budget_s=60, max_trials=1), datasets=datasets, registry=registry)
    diabetes = train(
        datasets.add("sample:diabetes"), TrainOptions(budget_s=60, max_trials=1), datasets=datasets, registry=registry
    )
    sources = {"shop": (shop.source,), "diabetes": (diabetes.source,)}
    with running_servers(sources, tmp_dir=tmp_path_factory.mktemp("logs"), env={"FERMION_HOME": str(home)}) as servers:
        yield {"shop": (shop, servers["shop"].url), "diabetes": (diabetes, servers["diabetes"].url)}


@pytest.mark.slow
def test_the_schema_has_one_typed_field_per_column(served):
    _, url = served["shop"]
    schemas = httpx.get(url + "/openapi.json").json()["components"]["schemas"]
    fields = schemas["PredictRequest"]["properties"]
    assert list(fields) == ["color", "size", "fresh"]
    assert fields["color"]["enum"] == ["blue", "green", "red"]
    assert fields["size"]["type"] == "number" and fields["fresh"]["type"] == "boolean"
    assert set(schemas["PredictRequest"]["required"]) == {"color", "size", "fresh"}


@pytest.mark.slow
def test_a_served_classifier_answers_and_refuses_what_it_never_saw(served):
    _, url = served["shop"]
    with httpx.Client(base_url=url, timeout=30) as http:
        label = http.post("/predict", json={"color": "red", "size": 2.0, "fresh": True})
        proba = http.post("/predict_proba", json={"color": "blue", "size": 9.5, "fresh": False})
        unknown = http.post("/predict", json={"color": "purple", "size": 2.0, "fresh": True})
        missing = http.post("/predict", json={"color": "red", "fresh": True})
    assert label.status_code == 200 and label.json() in ("yes", "no")
    assert proba.status_code == 200 and set(proba.json()) == {"no", "yes"}
    assert abs(sum(proba.json().values()) - 1) < 1e-6
    assert unknown.status_code == 422, unknown.text
    problem = unknown.json()["detail"][0]
    assert problem["field"] == "color" and all(c in json.dumps(problem) for c in ("'blue'", "'green'", "'red'")), problem
    assert missing.status_code == 422 and missing.json()["detail"][0]["field"] == "size"


@pytest.mark.slow
def test_a_regression_reports_errors_and_predicts_a_number(served):
    model, url = served["diabetes"]
    assert model.manifest["task"] == "regression" and model.manifest["classes"] is None
    assert set(model.manifest["metrics"]) == {"rmse", "mae", "r2"} and model.manifest["metrics"]["rmse"] > 0
    row = {name: 0.01 for name in field_names(["age", "sex", "bmi", "bp", "s1", "s2", "s3", "s4", "s5", "s6"])}
    with httpx.Client(base_url=url, timeout=30) as http:
        answer = http.post("/predict", json=row)
        paths = http.get("/openapi.json").json()["paths"]
    assert answer.status_code == 200 and isinstance(answer.json(), float) and 25 < answer.json() < 346
    assert "/predict_proba" not in paths


# -- end to end: train, deploy, call through the gateway ----------------------------------------------


@pytest.fixture(scope="module")
def up(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningPlatform]:
    with running_platform(tmp_path_factory.mktemp("platform")) as platform:
        yield platform


@pytest.fixture(scope="module")
def elsewhere(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The user's own FERMION_HOME, which holds nothing: commands that pass --data-dir must not need it."""
    return tmp_path_factory.mktemp("elsewhere")


def deploy(up: RunningPlatform, name: str, source: str) -> None:
    """Deploy `source` as a public `name` through the CLI, which waits until it is ready."""
    result = fermion(up.data_dir, "deploy", name, source, "--public")
    assert result.returncode == 0, f"{result.stdout}\n{result.stderr}\n{up.log()}"


@pytest.mark.slow
def test_breast_cancer_from_sample_to_a_public_api(up: RunningPlatform, elsewhere: Path):
    from sklearn.datasets import load_breast_cancer

    trained = fermion(
        elsewhere, "train", "sample:breast_cancer", "--target", "target", "--budget", "30s", "--data-dir", str(up.data_dir)
    )
    assert trained.returncode == 0, trained.stderr
    assert "✓ registered breast-cancer@1" in trained.stdout
    assert not (elsewhere / "models").exists()
    deploy(up, "bc", "model:breast-cancer@1")

    data = load_breast_cancer(as_frame=True)
    names = field_names([str(c) for c in data.feature_names])
    rows = [data.frame.iloc[i] for i in (0, 19)]  # the first malignant and the first benign tumour
    with httpx.Client(base_url=up.url, timeout=60) as http:  # no token: the deployment is public
        for row in rows:
            body = {name: float(row[column]) for name, column in zip(names, data.feature_names, strict=True)}
            label = http.post("/run/bc/predict", json=body)
            proba = http.post("/run/bc/predict_proba", json=body)
            assert label.status_code == 200, label.text
            assert label.json() == data.target_names[int(row["target"])]
            assert proba.status_code == 200 and set(proba.json()) == {"benign", "malignant"}
            assert abs(sum(proba.json().values()) - 1) < 1e-6
            assert max(proba.json(), key=proba.json().get) == label.json()
    # Last, so that the API checks above run either way: the 30 s the user gave were kept.
    model = ModelRegistry(up.data_dir / "models").get("breast-cancer@1").manifest
    assert model["training_seconds"] <= 33, [(t["family"], t["status"], t["seconds"]) for t in model["trials"]]


@pytest.mark.slow
def test_text_reviews_from_a_csv_to_a_public_api(up: RunningPlatform, elsewhere: Path, tmp_path: Path):
    csv = write_reviews(tmp_path / "reviews.csv")
    trained = fermion(elsewhere, "train", str(csv), "--target", "sentiment", "--budget", "15s", "--data-dir", str(up.data_dir))
    assert trained.returncode == 0, trained.stderr
    assert "✓ registered reviews@1" in trained.stdout
    deploy(up, "reviews", "model:reviews@1")
    with httpx.Client(base_url=up.url, timeout=60) as http:
        schema = http.get("/run/reviews/openapi.json").json()["components"]["schemas"]["PredictRequest"]["properties"]
        good = http.post("/run/reviews/predict", json={"review": CLEARLY_POSITIVE, "visits": 3})
        bad = http.post("/run/reviews/predict", json={"review": CLEARLY_NEGATIVE, "visits": 3})
    assert schema["review"]["type"] == "string" and schema["visits"]["type"] == "number"
    assert (good.json(), bad.json()) == ("positive", "negative"), (good.text, bad.text)


@pytest.mark.slow
def test_digit_images_trained_and_deployed_in_one_command(up: RunningPlatform):
    trained = fermion(up.data_dir, "train", "sample:digits", "--budget", "12s", "--deploy", "digits", "--public")
    assert trained.returncode == 0, f"{trained.stdout}\n{trained.stderr}\n{up.log()}"
    assert "✓ registered digits@1" in trained.stdout and "✓ digits is ready" in trained.stdout

    files = DatasetStore(up.data_dir / "datasets").image_files("digits")
    picked = [[(path, label) for path, label in files if label == want][-1] for want in ("1", "3", "5", "7", "9")]
    answers = []
    with httpx.Client(base_url=up.url, timeout=60) as http:
        for path, label in picked:
            answer = http.post("/run/digits/predict", files={"image": (path.name, path.read_bytes(), "image/png")})
            assert answer.status_code == 200, answer.text
            answers.append((label, answer.json()))
    assert sum(label == predicted for label, predicted in answers) >= 4, answers


@pytest.mark.slow
def test_train_deploy_finds_the_platform_of_its_data_dir(up: RunningPlatform, elsewhere: Path, tmp_path: Path):
    """`--data-dir D --deploy NAME` deploys on the `fermion up` that runs in D, whatever FERMION_HOME says."""
    csv = write_typed_table(tmp_path / "shop.csv")
    result = fermion(
        elsewhere,
        "train",
        str(csv),
        "--target",
        "target",
        "--budget",
        "20s",
        "--max-trials",
        "1",
        "--data-dir",
        str(up.data_dir),
        "--deploy",
        "shop",
        "--public",
    )
    assert result.returncode == 0, f"{result.stdout}\n{result.stderr}"
    assert "✓ shop is ready" in result.stdout
    answer = httpx.post(f"{up.url}/run/shop/predict", json={"color": "red", "size": 9.5, "fresh": True}, timeout=60)
    assert answer.status_code == 200 and answer.json() == "yes", answer.text


@pytest.mark.slow
def test_train_deploy_with_progress_json_deploys_too(up: RunningPlatform, tmp_path: Path):
    """Programs that read --progress-json get the same deployment as people who watch the bar."""
    csv = write_typed_table(tmp_path / "shop.csv")
    result = fermion(
        up.data_dir,
        "train",
        str(csv),
        "--target",
        "target",
        "--budget",
        "20s",
        "--max-trials",
        "1",
        "--deploy",
        "shop-json",
        "--public",
        "--progress-json",
    )
    assert result.returncode == 0, f"{result.stdout}\n{result.stderr}"
    assert any(json.loads(line)["phase"] == "registered" for line in result.stdout.splitlines())
    with up.api() as api:
        found = api.get("/api/v1/deployments/shop-json")
    assert found.status_code == 200, f"--deploy shop-json made no deployment: {found.text}\n{result.stdout}"
