"""`fermion.train` in-process: the budget is kept, a seed repeats a run, the registry numbers versions and
a failed run leaves nothing behind. The CLI, serving and the platform are in test_train_cli.py."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from train_data import write_reviews

from fermion.cli.train import parse_budget
from fermion.data import DatasetError, DatasetStore
from fermion.train import ModelRegistry, TrainingError, TrainOptions, train
from fermion.train.problem import choose_metric, find_target, infer_task
from fermion.train.run import dataset_for


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One data dir for the module: datasets are added once, each test trains under its own model name."""
    return tmp_path_factory.mktemp("train-home")


@pytest.fixture(scope="module")
def datasets(home: Path) -> DatasetStore:
    return DatasetStore(home / "datasets")


@pytest.fixture(scope="module")
def registry(home: Path) -> ModelRegistry:
    return ModelRegistry(home / "models")


def version_folders(registry: ModelRegistry) -> list[str]:
    """Every NAME/V folder under the registry (published or not), and anything left in .staging."""
    if not registry.root.exists():
        return []
    return sorted(str(p.relative_to(registry.root)) for p in registry.root.glob("*/*"))


# -- what the user types, checked before anything is trained -----------------------------------------


def test_budgets_read_like_durations():
    assert [parse_budget(text) for text in ("30s", "2m", "1h", "90", "1.5min")] == [30, 120, 3600, 90, 90]
    with pytest.raises(ValueError, match="'abc' is not a duration; use e.g. 30s"):
        parse_budget("abc")


def test_targets_and_metrics_are_named_back_when_wrong():
    assert find_target(["age", "Target"], "target", None) == "Target"
    assert find_target(["age", "label"], None, "label") == "label"
    with pytest.raises(TrainingError, match="no column 'targt' in the dataset; did you mean 'target'"):
        find_target(["age", "target"], "targt", None)
    with pytest.raises(TrainingError, match="--target COLUMN"):
        find_target(["age", "y"], None, None)
    assert choose_metric("AUC", "classification", 2).name == "roc_auc"
    with pytest.raises(TrainingError, match="metric 'rmse' is for regression, but this is classification"):
        choose_metric("rmse", "classification", 2)
    with pytest.raises(TrainingError, match="did you mean 'accuracy'"):
        choose_metric("acuracy", "classification", 2)


def test_the_task_follows_the_target():
    import pandas as pd

    assert infer_task(pd.Series(["a", "b"] * 10), "y") == "classification"
    assert infer_task(pd.Series([0, 1, 2] * 10), "y") == "classification"
    assert infer_task(pd.Series([0.5 * i for i in range(30)]), "y") == "regression"
    assert infer_task(pd.Series([0, 1, 2] * 10), "y", "regression") == "regression"
    with pytest.raises(TrainingError, match="'y' holds text labels, so it cannot be a regression target"):
        infer_task(pd.Series(["a", "b"] * 10), "y", "regression")


# -- the budget is wall-clock time, and it is kept --------------------------------------------------


class Timeline:
    """A progress callback that keeps (seconds, phase, trial family, trial seconds): where a budget went, for failures."""

    def __init__(self) -> None:
        self.started = time.perf_counter()
        self.events: list[tuple] = []

    def __call__(self, event: dict) -> None:
        trial = event.get("trial") or {}
        self.events.append(
            (round(time.perf_counter() - self.started, 1), event["phase"], trial.get("family"), trial.get("seconds"))
        )

    def __repr__(self) -> str:
        return repr(self.events)


@pytest.mark.slow
def test_image_training_keeps_a_10s_budget(datasets: DatasetStore, registry: ModelRegistry):
    digits = datasets.add("sample:digits")
    started, phases = time.perf_counter(), Timeline()
    model = train(digits, TrainOptions(budget_s=10, name="digits-budget"), datasets=datasets, registry=registry, progress=phases)
    took = time.perf_counter() - started
    assert took <= 11, f"a 10 s budget took {took:.1f} s: {phases}"
    assert registry.get("digits-budget").ref == model.ref == "digits-budget@1"
    assert model.manifest["metrics"]["accuracy"] > 0.5


@pytest.mark.slow
def test_text_training_keeps_a_10s_budget(datasets: DatasetStore, registry: ModelRegistry, tmp_path: Path):
    reviews = datasets.add(write_reviews(tmp_path / "reviews.csv"))
    started, phases = time.perf_counter(), Timeline()
    options = TrainOptions(target="sentiment", budget_s=10, name="reviews-budget")
    model = train(reviews, options, datasets=datasets, registry=registry, progress=phases)
    took = time.perf_counter() - started
    assert took <= 11, f"a 10 s budget took {took:.1f} s: {phases}"
    assert registry.get("reviews-budget").ref == model.ref == "reviews-budget@1"
    assert model.manifest["embedding"]["columns"] == ["review"]


# -- a seed repeats a run; the registry numbers the runs ---------------------------------------------


@pytest.fixture(scope="module")
def twice(datasets: DatasetStore, registry: ModelRegistry):
    """sample:iris trained twice with seed 1 and 6 trials: flowers@1 and flowers@2."""
    iris = datasets.add("sample:iris")
    options = TrainOptions(budget_s=300, seed=1, max_trials=6, name="flowers")  # a budget that never stops it first
    return [train(iris, options, datasets=datasets, registry=registry) for _ in range(2)]


def test_the_same_seed_and_trials_give_the_same_model(twice):
    first, second = (m.manifest for m in twice)
    assert first["stopped"] == second["stopped"] == "max_trials"
    assert [(t["family"], t["params"]) for t in first["trials"]] == [(t["family"], t["params"]) for t in second["trials"]]
    assert [t["score"] for t in first["trials"]] == [t["score"] for t in second["trials"]]
    assert (first["family"], first["params"], first["metrics"]) == (second["family"], second["params"], second["metrics"])


def test_versions_count_up_and_misspelt_names_get_a_did_you_mean(twice, registry: ModelRegistry):
    assert [m.ref for m in twice] == ["flowers@1", "flowers@2"]
    assert registry.get("flowers").ref == "flowers@2"  # the latest
    assert registry.get("flowers@1").manifest["dataset"] == "iris@1"
    assert twice[1].source == "model:flowers@2" and twice[1].model_file.is_file() and twice[1].report_file.is_file()
    with pytest.raises(TrainingError, match="no model named 'flowrs'; did you mean 'flowers'"):
        registry.get("flowrs")
    with pytest.raises(TrainingError, match=r"model flowers has no version 9 \(versions: 1, 2\)"):
        registry.get("flowers@9")


# -- a failed run leaves nothing behind ---------------------------------------------------------------


def test_a_run_stopped_during_the_search_leaves_no_version(datasets: DatasetStore, tmp_path: Path):
    registry = ModelRegistry(tmp_path / "models")
    iris = datasets.add("sample:iris")

    def interrupt(event: dict) -> None:
        if "trial" in event:  # Ctrl-C after the first trial
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(iris, TrainOptions(budget_s=60, name="stopped"), datasets=datasets, registry=registry, progress=interrupt)
    assert registry.list() == [] and version_folders(registry) == []


def test_a_run_that_cannot_be_saved_leaves_no_version_and_no_staging_litter(datasets: DatasetStore, tmp_path: Path):
    registry = ModelRegistry(tmp_path / "models")
    registry.root.mkdir(parents=True)
    (registry.root / "blocked").write_text("a file where the model's folder would go")
    iris = datasets.add("sample:iris")
    with pytest.raises(OSError):
        train(iris, TrainOptions(budget_s=60, max_trials=1, name="blocked"), datasets=datasets, registry=registry)
    assert registry.list() == []
    assert sorted(p.name for p in registry.root.iterdir()) == [".staging", "blocked"]
    assert list((registry.root / ".staging").iterdir()) == []


def test_a_run_refused_for_its_metric_leaves_no_version(datasets: DatasetStore, tmp_path: Path):
    registry = ModelRegistry(tmp_path / "models")
    with pytest.raises(TrainingError, match="metric 'r2' is for regression"):
        train(datasets.add("sample:iris"), TrainOptions(budget_s=30, metric="r2"), datasets=datasets, registry=registry)
    assert registry.list() == [] and version_folders(registry) == []


def test_a_file_over_the_size_limit_is_refused_before_training(tmp_path: Path):
    big = tmp_path / "big.csv"
    big.write_text("x,target\n" + "".join(f"{i},{i % 2}\n" for i in range(400)))
    store = DatasetStore(tmp_path / "datasets", max_bytes=1024)
    with pytest.raises(DatasetError, match=r"big.csv is 2\.\d KiB, over the limit of 1\.0 KiB; split it or raise the limit"):
        dataset_for(str(big), store)
    assert store.list() == []
    assert dataset_for(str(big), DatasetStore(tmp_path / "datasets"))[0].ref == "big@1"  # under the default limit
