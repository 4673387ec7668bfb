"""The console's build pages (fermion/console/build.js) in a real Chromium against a real `fermion up`.

One platform (Python gateway, its own data dir) and one browser tab for the module; the tests run in
order as a person would: add the iris sample → upload a CSV → a budget the form refuses → train on iris
and watch it live → the model's page (metrics, plots, report) → deploy it → train again and compare the
two versions → a training that fails, one cancelled → the same pages in Chinese and Spanish, and on a phone.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import test_console
from support import RunningPlatform, start_platform, stop_process, stop_replicas
from test_console import PHONE, WIDE, Console, browser_tests, catalog, sync_api

pytestmark = [pytest.mark.slow, browser_tests]

EN = catalog("en")
# A generous budget that the first trials end long before: on a busy machine the imports of the training
# process alone take seconds of the budget, and a test must not depend on how many trials fit.
BUDGET_S = "60"
MAX_TRIALS = "3"


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningPlatform]:
    data = tmp_path_factory.mktemp("console-build") / "data"
    running = start_platform(data, "--gateway", "python")
    try:
        yield running
    finally:
        stop_process(running.proc)
        stop_replicas(data)


# The same module-scoped Chromium as the console's other tests; here it serves this module's platform.
browser = test_console.browser


@pytest.fixture(scope="module")
def console(browser: Any, platform: RunningPlatform) -> Iterator[Console]:
    tab = Console(browser, platform, WIDE)
    try:
        tab.open()
        tab.page.wait_for_selector("main[data-page='signin']")
        tab.sign_in(platform.token)
        yield tab
    finally:
        tab.close()


@pytest.fixture(autouse=True)
def _no_script_errors(console: Console) -> Iterator[None]:
    yield
    errors, console.errors[:] = list(console.errors), []
    assert not errors, f"the console raised: {errors}"


def show(console: Console, route: str, page: str) -> Any:
    console.go(route)
    console.page.wait_for_selector(f"main[data-page='{page}']")
    return console.page


def wait_for_job(platform: RunningPlatform, job_id: str, timeout: float = 240) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    with platform.api() as api:
        while time.monotonic() < deadline:
            job = api.get(f"/api/v1/trainings/{job_id}").json()
            if job["status"] in ("succeeded", "failed", "cancelled"):
                return job
            time.sleep(0.5)
    raise AssertionError(f"training {job_id} did not finish within {timeout} s")


def test_add_the_iris_sample(console: Console) -> None:
    page = show(console, "#/data", "data")
    sync_api.expect(page.get_by_role("heading", level=1)).to_have_text(EN["data.title"])
    sync_api.expect(page.locator("table.datasets tbody")).to_contain_text(EN["data.empty"])
    page.get_by_label(EN["data.sample"], exact=True).select_option("sample:iris")
    page.get_by_role("button", name=EN["data.add_sample"]).click()
    sync_api.expect(page.locator(".added")).to_contain_text("iris@1")
    sync_api.expect(page.locator("tr[data-dataset='iris@1']")).to_contain_text("150")
    page.get_by_role("link", name="Open iris@1").click()
    page.wait_for_selector("table.schema")
    assert page.evaluate("location.hash") == "#/data/iris%401"
    schema = page.locator("table.schema tbody tr")
    sync_api.expect(schema).to_have_count(5)
    sync_api.expect(schema.first).to_contain_text("sepal length (cm)")
    sync_api.expect(schema.first).to_contain_text("float64")
    sync_api.expect(page.locator("table.schema")).to_contain_text(EN["data.label"])  # the label column is marked
    balance = page.locator("table.balance tbody tr")
    sync_api.expect(balance).to_have_count(3)
    for label in ("setosa", "versicolor", "virginica"):
        sync_api.expect(page.locator(f"table.balance tr[data-label='{label}']")).to_contain_text("33.3%")
    sync_api.expect(page.locator("table.preview tbody tr")).to_have_count(5)
    console.shot("data", docs=False)


def test_upload_a_csv_with_progress(console: Console, tmp_path: Path) -> None:
    rows = "\n".join(f"{i},{i * 0.5},{'yes' if i % 3 else 'no'}" for i in range(200))
    upload = tmp_path / "visits.csv"
    upload.write_text(f"days,spend,label\n{rows}\n")
    page = show(console, "#/data", "data")
    page.get_by_label(EN["data.file"], exact=True).set_input_files(str(upload))
    page.get_by_role("button", name=EN["data.upload"], exact=True).click()
    status = page.locator(".upload-status")
    sync_api.expect(status).to_have_attribute("data-state", "done")
    assert page.locator(".upload-status progress").evaluate("bar => bar.value") == 100
    sync_api.expect(status).to_contain_text(EN["data.uploaded"].split(" (")[0])
    sync_api.expect(page.locator(".added")).to_contain_text("visits@1")
    page.get_by_role("link", name="Open visits@1").click()
    preview = page.locator("table.preview")
    sync_api.expect(preview.locator("thead")).to_contain_text("spend")
    sync_api.expect(preview.locator("tbody tr")).to_have_count(5)
    sync_api.expect(preview.locator("tbody tr").nth(1)).to_contain_text("yes")
    # The same file again is the same version: no visits@2.
    page = show(console, "#/data", "data")
    page.get_by_label(EN["data.file"], exact=True).set_input_files(str(upload))
    page.get_by_role("button", name=EN["data.upload"], exact=True).click()
    sync_api.expect(page.locator(".added")).to_contain_text("visits@1")
    sync_api.expect(page.locator("tr[data-dataset='visits@2']")).to_have_count(0)


def test_a_file_the_platform_refuses_shows_why(console: Console, tmp_path: Path) -> None:
    bad = tmp_path / "notes.txt"
    bad.write_text("not a table")
    page = show(console, "#/data", "data")
    page.get_by_label(EN["data.file"], exact=True).set_input_files(str(bad))
    page.get_by_role("button", name=EN["data.upload"], exact=True).click()
    sync_api.expect(page.locator(".upload-status")).to_have_attribute("data-state", "failed")
    sync_api.expect(page.get_by_role("alert")).to_contain_text("unknown format '.txt' for notes.txt")


def test_a_budget_under_two_seconds_is_refused(console: Console, platform: RunningPlatform) -> None:
    page = show(console, "#/train", "train")
    sync_api.expect(page.get_by_label(EN["train.dataset"], exact=True)).to_contain_text("iris@1")
    page.get_by_label(EN["train.budget"], exact=True).fill("1")
    page.get_by_role("button", name=EN["train.start"]).click()
    sync_api.expect(page.get_by_role("alert")).to_have_text(EN["train.bad_budget"])
    assert page.evaluate("location.hash") == "#/train"
    with platform.api() as api:
        assert api.get("/api/v1/trainings").json()["trainings"] == []


def test_train_on_iris_and_follow_it_live(console: Console) -> None:
    page = show(console, "#/data/iris@1", "data")
    page.get_by_role("link", name=EN["data.train_on"]).click()  # the form comes prefilled
    page.wait_for_selector("main[data-page='train']")
    dataset = page.get_by_label(EN["train.dataset"], exact=True)
    sync_api.expect(dataset).to_have_value("iris@1")
    sync_api.expect(page.get_by_label(EN["train.target_column"], exact=True)).to_have_value("target")
    sync_api.expect(page.get_by_label(EN["train.budget"], exact=True)).to_have_value("60")
    page.get_by_text(EN["train.more"]).click()
    page.get_by_label(EN["train.max_trials"], exact=True).fill(MAX_TRIALS)
    page.get_by_label(EN["train.budget"], exact=True).fill(BUDGET_S)
    page.get_by_role("button", name=EN["train.start"]).click()
    page.wait_for_selector("main[data-page='training']")
    assert page.evaluate("location.hash").startswith("#/training/t-")
    # While it runs: the trial count and the best score so far, as they come.
    page.wait_for_function(
        "() => { const live = document.querySelector('section.live');"
        " return live && live.dataset.status === 'running' && Number(live.dataset.trials) > 0; }",
        timeout=180_000,
    )
    sync_api.expect(page.locator("section.live dd.best")).not_to_have_text(EN["common.none"])
    assert page.locator("section.live .trial-chart circle.dot").count() >= 1
    sync_api.expect(page.get_by_role("button", name=EN["training.cancel"])).to_be_visible()
    console.shot("training-live", docs=False)
    sync_api.expect(page.locator("section.live")).to_have_attribute("data-status", "succeeded", timeout=180_000)
    sync_api.expect(page.locator("section.live dd.trials")).to_have_text(MAX_TRIALS)
    sync_api.expect(page.locator("section.live .trial-chart circle.dot")).to_have_count(int(MAX_TRIALS))
    sync_api.expect(page.get_by_role("button", name=EN["training.cancel"])).to_be_hidden()
    sync_api.expect(page.locator(".done")).to_contain_text("iris@1")
    sync_api.expect(page.get_by_role("button", name=EN["deploy.submit"], exact=True)).to_be_visible()
    console.shot("training-done", docs=True)
    show(console, "#/train", "train")  # and in the list of recent jobs
    sync_api.expect(page.locator("table.jobs tbody tr").first).to_contain_text(catalog("en")["status.succeeded"])
    sync_api.expect(page.locator("table.jobs tbody tr").first.get_by_role("link", name="iris@1")).to_be_visible()


def test_the_model_page_shows_metrics_plots_and_the_report(console: Console) -> None:
    page = show(console, "#/models", "models")
    row = page.locator("tr[data-model='iris@1']")
    sync_api.expect(row).to_contain_text(EN["metric.log_loss"])
    row.get_by_role("rowheader").get_by_role("link").click()
    page.wait_for_selector("table.metrics")
    metrics = page.locator("table.metrics")
    for key in ("accuracy", "f1_macro", "roc_auc", "log_loss"):
        sync_api.expect(metrics.locator(f"tr[data-metric='{key}']")).to_contain_text(EN[f"metric.{key}"])
    sync_api.expect(page.locator("table.params")).to_be_visible()
    sync_api.expect(page.locator("table.inputs tbody tr")).to_have_count(4)
    sync_api.expect(page.locator("figure.plot-box")).not_to_have_count(0)
    for stem in ("search", "confusion", "importance"):  # fetched with the token, shown from a blob
        page.wait_for_function(
            f"() => {{ const img = document.querySelector(\"figure[data-plot='{stem}'] img\"); return img && img.complete && img.naturalWidth > 0; }}"
        )
    sync_api.expect(page.locator("figure[data-plot='confusion'] figcaption")).to_have_text(EN["plot.confusion"])
    sync_api.expect(page.get_by_text(EN["compare.none"])).to_be_visible()
    with console.context.expect_page() as opened:
        page.get_by_role("button", name=EN["models.report"]).click()
    report = opened.value
    try:
        report.wait_for_load_state()
        sync_api.expect(report.locator("h1")).to_contain_text("iris@1")
    finally:
        report.close()
    console.shot("model", docs=True)


def test_deploy_the_model_from_its_page(console: Console, platform: RunningPlatform) -> None:
    page = show(console, "#/models/iris@1", "models")
    name = page.get_by_label(EN["deploy.name"], exact=True)
    sync_api.expect(name).to_have_value("iris")
    name.fill("iris-model")
    page.get_by_role("button", name=EN["deploy.submit"], exact=True).click()
    page.wait_for_selector("main[data-page='deployments']")
    assert page.evaluate("location.hash") == "#/deployments/iris-model"
    sync_api.expect(page.locator(".summary")).to_contain_text("model:iris@1")
    sync_api.expect(page.locator(".summary .replicas")).to_have_text("1/1", timeout=120_000)
    with platform.api() as api:
        answer = api.post(
            "/run/iris-model/predict",
            json={"sepal_length_cm": 5.1, "sepal_width_cm": 3.5, "petal_length_cm": 1.4, "petal_width_cm": 0.2},
        )
        assert answer.status_code == 200, answer.text
        assert answer.json() == "setosa"
        assert api.delete("/api/v1/deployments/iris-model").status_code == 202


def test_compare_two_versions(console: Console, platform: RunningPlatform) -> None:
    with platform.api() as api:  # a second version, differently trained
        started = api.post("/api/v1/trainings", json={"dataset": "iris@1", "budget_s": 60, "max_trials": 1, "seed": 1})
        assert started.status_code == 202, started.text
    job = wait_for_job(platform, started.json()["id"])
    assert job["status"] == "succeeded" and job["model"] == "iris@2", job
    with platform.api() as api:
        first, second = (api.get(f"/api/v1/models/iris@{v}").json() for v in (1, 2))
    page = show(console, "#/models/iris@2", "models")
    versions = page.locator("ul.versions")
    sync_api.expect(versions.get_by_role("link", name="iris@1")).to_be_visible()
    page.get_by_label(EN["compare.with"], exact=True).select_option("iris@1")
    table = page.locator("table.compare")
    sync_api.expect(table.locator("thead")).to_contain_text("iris@2")
    sync_api.expect(table.locator("thead")).to_contain_text("iris@1")
    for key, greater in (("accuracy", True), ("f1_macro", True), ("roc_auc", True), ("log_loss", False)):
        mine, theirs = second["metrics"][key], first["metrics"][key]
        cells = table.locator(f"tr[data-metric='{key}'] td")
        sync_api.expect(cells).to_have_count(2)
        if mine == theirs:
            sync_api.expect(table.locator(f"tr[data-metric='{key}'] td.better")).to_have_count(0)
        else:
            better = 0 if (mine > theirs) == greater else 1  # column 0 is this page's version, iris@2
            sync_api.expect(cells.nth(better)).to_have_class("num better")
            sync_api.expect(cells.nth(1 - better)).to_have_class("num")
    console.shot("model-compare", docs=False)


def test_a_metric_for_the_other_task_is_refused_at_once(console: Console, platform: RunningPlatform) -> None:
    page = show(console, "#/train/iris@1", "train")
    sync_api.expect(page.get_by_label(EN["train.dataset"], exact=True)).to_have_value("iris@1")
    with platform.api() as api:
        before = len(api.get("/api/v1/trainings").json()["trainings"])
    page.get_by_text(EN["train.more"]).click()
    page.get_by_label(EN["train.metric"], exact=True).select_option("rmse")  # a regression metric, for classes
    page.get_by_role("button", name=EN["train.start"]).click()
    sync_api.expect(page.get_by_role("alert")).to_contain_text("metric 'rmse' is for regression, but this is classification")
    assert page.evaluate("location.hash") == "#/train/iris@1"
    with platform.api() as api:
        assert len(api.get("/api/v1/trainings").json()["trainings"]) == before


def test_a_training_that_fails_shows_the_reason(console: Console, platform: RunningPlatform, tmp_path: Path) -> None:
    tiny = tmp_path / "tiny.csv"  # 12 rows: fewer than training needs, found only once the job reads the data
    tiny.write_text("x,label\n" + "".join(f"{i},{'a' if i % 2 else 'b'}\n" for i in range(12)))
    with platform.api() as api, open(tiny, "rb") as handle:
        assert api.post("/api/v1/datasets", files={"file": ("tiny.csv", handle)}).status_code == 201
    page = show(console, "#/train/tiny@1", "train")
    sync_api.expect(page.get_by_label(EN["train.dataset"], exact=True)).to_have_value("tiny@1")
    page.get_by_role("button", name=EN["train.start"]).click()
    page.wait_for_selector("main[data-page='training']")
    sync_api.expect(page.locator("section.live")).to_have_attribute("data-status", "failed", timeout=180_000)
    job_id = page.evaluate("decodeURIComponent(location.hash.split('/')[2])")
    with platform.api() as api:
        error = api.get(f"/api/v1/trainings/{job_id}").json()["error"]
    assert "only 12 rows" in error and "at least 20" in error
    sync_api.expect(page.get_by_role("alert")).to_have_text(error)
    sync_api.expect(page.locator("section.live .phase")).to_have_text(EN["training.failed"])
    sync_api.expect(page.locator(".done")).to_have_count(0)


def test_cancel_a_running_training(console: Console) -> None:
    page = show(console, "#/train/visits@1", "train")
    sync_api.expect(page.get_by_label(EN["train.target_column"], exact=True)).to_have_value("label")
    page.get_by_role("button", name=EN["train.start"]).click()
    page.wait_for_selector("main[data-page='training'] section.live[data-status='running']")
    page.get_by_role("button", name=EN["training.cancel"]).click()
    page.locator("#confirm-ok").click()
    sync_api.expect(page.locator("section.live")).to_have_attribute("data-status", "cancelled", timeout=60_000)
    sync_api.expect(page.get_by_role("alert")).to_have_text("cancelled while running")
    sync_api.expect(page.get_by_role("button", name=EN["training.cancel"])).to_be_hidden()


def test_a_batch_from_the_data_page_shows_its_progress_and_output(console: Console, platform: RunningPlatform) -> None:
    scorer = Path(__file__).parent / "apps" / "batch_models.py"
    rows = "x,tag\n" + "".join(f"{-1 if n == 7 else n},t{n}\n" for n in range(50))
    with platform.api() as api:
        api.post("/api/v1/datasets", files={"file": ("scores.csv", rows.encode())}).raise_for_status()
        api.post("/api/v1/deployments", json={"name": "scorer", "source": f"{scorer}:Scorer"}).raise_for_status()
    page = show(console, "#/data", "data")
    page.get_by_label(EN["data.dataset"], exact=True).select_option("scores@1")
    page.get_by_label(EN["batch.deployment"], exact=True).select_option("scorer")
    page.get_by_label(EN["batch.endpoint"], exact=True).fill("nope")
    page.get_by_role("button", name=EN["batch.start"]).click()  # the API's refusal, in the form
    sync_api.expect(page.locator("form.batch-form [role='alert']")).to_contain_text(
        "has no POST endpoint 'nope'", timeout=120_000
    )
    page.get_by_label(EN["batch.endpoint"], exact=True).fill("predict")
    page.get_by_label(EN["batch.output_name"], exact=True).fill("scores-console")
    page.get_by_role("button", name=EN["batch.start"]).click()
    done = page.locator("table.batch-jobs tr[data-status='succeeded']")
    sync_api.expect(done).to_contain_text("scores-console@1", timeout=120_000)
    sync_api.expect(done).to_contain_text("50 of 50 rows")
    sync_api.expect(done).to_contain_text("1 failed")
    done.get_by_role("link", name="scores-console@1").click()
    page.wait_for_selector("table.schema")
    sync_api.expect(page.locator("table.schema")).to_contain_text("double")


def test_the_build_pages_in_chinese_and_spanish(console: Console) -> None:
    page = console.page
    for lang in ("zh-CN", "es"):
        texts = catalog(lang)
        page.locator("#lang").select_option(lang)
        show(console, "#/data", "data")
        sync_api.expect(page.get_by_role("heading", level=1)).to_have_text(texts["data.title"])
        for key in ("nav.data", "nav.train", "nav.models"):
            sync_api.expect(page.locator("#nav").get_by_role("link", name=texts[key], exact=True)).to_be_visible()
        sync_api.expect(page.get_by_role("button", name=texts["data.upload"], exact=True)).to_be_visible()
        show(console, "#/data/iris@1", "data")
        sync_api.expect(page.get_by_role("heading", level=2, name=texts["data.balance"])).to_be_visible()
        show(console, "#/train", "train")
        sync_api.expect(page.get_by_role("heading", level=1)).to_have_text(texts["train.title"])
        sync_api.expect(page.get_by_role("button", name=texts["train.start"])).to_be_visible()
        sync_api.expect(page.locator("table.jobs")).to_contain_text(texts["status.succeeded"])
        show(console, "#/models/iris@1", "models")
        sync_api.expect(page.locator("table.metrics tr[data-metric='accuracy']")).to_contain_text(texts["metric.accuracy"])
        sync_api.expect(page.get_by_role("button", name=texts["models.report"])).to_be_visible()
        for key in ("data.title", "train.title", "train.start", "metric.accuracy", "models.report", "nav.data"):
            assert texts[key] != EN[key], (lang, key)
        console.shot(f"model-{lang}", docs=False)
    page.locator("#lang").select_option("en")
    show(console, "#/models", "models")
    sync_api.expect(page.get_by_role("heading", level=1)).to_have_text(EN["models.title"])


def test_the_build_pages_fit_a_phone(browser: Any, platform: RunningPlatform) -> None:
    with platform.api() as api:
        job = api.get("/api/v1/trainings").json()["trainings"][0]["id"]
    tab = Console(browser, platform, PHONE)
    try:
        tab.open()
        tab.page.wait_for_selector("main[data-page='signin']")
        tab.sign_in(platform.token)
        for route, selector in (
            ("#/data", "table.datasets tbody tr"),
            ("#/data/iris@1", "table.preview"),
            ("#/train", "table.jobs tbody tr"),
            (f"#/training/{job}", "section.live[data-status]"),
            ("#/models", "table.models tbody tr"),
            ("#/models/iris@1", "table.metrics"),
        ):
            tab.go(route)
            tab.page.wait_for_selector(selector)
            width = tab.page.evaluate("document.scrollingElement.scrollWidth")
            assert width <= PHONE["width"], f"{route}: the page scrolls sideways ({width} px)"
        assert not tab.errors, tab.errors
    finally:
        tab.close()
