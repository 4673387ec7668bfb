"""One training run: a dataset version in, an evaluated, registered model version out.

version = train("sample:breast_cancer", TrainOptions(target="target", budget_s=30))
"""

from __future__ import annotations

import importlib.metadata
import platform
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fermion.data.store import DatasetStore, DatasetVersion, sanitize_name
from fermion.models.kinds import SourceError
from fermion.models.sklearn_files import read_model
from fermion.models.trained.registry import REGISTRY_TYPES
from fermion.train.fit import fit_within_budget
from fermion.train.problem import (
    CLASSIFICATION,
    Progress,
    TrainingError,
    check_target,
    choose_metric,
    find_target,
    infer_task,
    plan_columns,
)
from fermion.train.registry import ModelRegistry, ModelVersion
from fermion.train.search import EVALUATION_SHARE, SAVE_RESERVE_S, Problem

#: Share of the rows held out for the final test.
TEST_SHARE = 0.2
MIN_BUDGET_S = 2.0
MAX_BUDGET_S = 24 * 3600.0


@dataclass
class TrainOptions:
    """What to learn and how long to search: everything `fermion train` takes besides the dataset."""

    target: str | None = None
    budget_s: float = 60.0
    metric: str | None = None
    name: str | None = None
    seed: int = 0
    max_trials: int | None = None
    task: str | None = None


@dataclass
class _Prepared:
    X: Any
    y: Any
    kind: str
    inputs: list[dict[str, Any]]
    ignored: dict[str, str]
    numeric: list[str]
    categorical: list[str]
    groups: dict[str, list[str]]  # input column → the model columns it became (for feature importance)
    target: str
    dropped: int = 0
    image: dict[str, Any] | None = None
    embedding: dict[str, Any] | None = None
    task: str = CLASSIFICATION
    classes: list[Any] | None = None
    metric: Any = None


def _decide(y: Any, target: str, options: TrainOptions) -> tuple[str, list[Any] | None, Any]:
    """The task, the classes and the metric for target values `y`; a TrainingError when they do not fit."""
    task = infer_task(_series(y), target, options.task)
    check_target(_series(y), target, task)
    classes = _classes(y) if task == CLASSIFICATION else None
    return task, classes, choose_metric(options.metric, task, len(classes or []))


def train(
    dataset: str | DatasetVersion,
    options: TrainOptions,
    *,
    datasets: DatasetStore | None = None,
    registry: ModelRegistry | None = None,
    progress: Progress | None = None,
) -> ModelVersion:
    """Search models for `dataset` within `options.budget_s`, evaluate the best on held-out rows and register it."""
    started = time.perf_counter()
    datasets = datasets or DatasetStore()
    registry = registry or ModelRegistry()
    notify = progress if progress is not None else (lambda event: None)
    if not MIN_BUDGET_S <= options.budget_s <= MAX_BUDGET_S:
        raise TrainingError(
            f"budget {options.budget_s:g}s is out of range; give between {MIN_BUDGET_S:g}s and 24h, e.g. --budget 60s"
        )
    if options.max_trials is not None and options.max_trials < 1:
        raise TrainingError("--max-trials must be at least 1")
    version = datasets.get(dataset) if isinstance(dataset, str) else dataset
    name = sanitize_name(options.name) if options.name else version.name
    if options.name and name != options.name:
        raise TrainingError(f"invalid model name {options.name!r}: use lowercase letters, digits and '-', e.g. {name!r}")
    notify({"phase": "prepare", "dataset": version.ref, "elapsed": 0.0, "budget": options.budget_s})
    # The target, task and metric are checked first, before seconds of imports and embeddings.
    prepared = (
        _prepare_images(version, datasets, options)
        if version.kind == "images"
        else _prepare_table(version, datasets, options, notify)
    )
    task, classes, metric = prepared.task, prepared.classes, prepared.metric
    # Saving needs skops and the report matplotlib, seconds of imports: done now, inside the budget,
    # so that the end of the search is not spent on them.
    _import_savers()
    notify(
        {
            "phase": "search",
            "task": task,
            "metric": metric.name,
            "metric_info": {"name": metric.name, "label": metric.label, "greater_is_better": metric.greater_is_better},
            "elapsed": round(time.perf_counter() - started, 2),
            "budget": options.budget_s,
        }
    )

    X_train, X_test, y_train, y_test = _split(prepared, task, options.seed)
    problem = Problem(
        X=X_train,
        y=y_train,
        task=task,
        metric=metric,
        classes=classes,
        numeric=prepared.numeric,
        categorical=prepared.categorical,
        image_shape=tuple(prepared.image["shape"]) if prepared.image else None,
        seed=options.seed,
    )
    kind = "images" if prepared.kind == "images" else "table"
    try:
        finishing = EVALUATION_SHARE * options.budget_s + SAVE_RESERVE_S
        model, search = fit_within_budget(problem, kind, options.budget_s, started, notify, options.max_trials, finishing)
    except TrainingError as exc:
        raise TrainingError(f"{version.ref}: {exc.message}") from None
    chosen = search.chosen

    notify({"phase": "evaluate", "elapsed": round(time.perf_counter() - started, 2), "budget": options.budget_s})
    from fermion.train.evaluate import permutation_importance, test_metrics

    metrics, details = test_metrics(problem, model, X_test, y_test)
    importance = None
    if prepared.kind == "table":
        left = started + options.budget_s - time.perf_counter()
        importance = permutation_importance(
            problem, model, X_test, y_test, prepared.groups, max(0.2, min(left, EVALUATION_SHARE * options.budget_s))
        )
    training_seconds = time.perf_counter() - started

    notify({"phase": "save", "elapsed": round(training_seconds, 2), "budget": options.budget_s})
    stage = registry.staging()
    try:
        if chosen["family"] == "cnn":
            model.save_onnx(stage / "model.onnx")
            file, fmt = "model.onnx", "onnx"
        else:
            import skops.io as sio

            sio.dump(model, stage / "model.skops")
            _check_servable(stage / "model.skops", name)
            file, fmt = "model.skops", "skops"
        manifest = {
            "name": name,
            "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "dataset": version.ref,
            "dataset_hash": version.hash,
            "target": prepared.target,
            "task": task,
            "kind": prepared.kind,
            "metric": {"name": metric.name, "label": metric.label, "greater_is_better": metric.greater_is_better},
            "family": chosen["family"],
            "family_label": chosen["family_label"],
            "params": chosen["params"],
            "cv_score": chosen["cv_score"],
            "note": chosen.get("note"),
            "metrics": metrics,
            "details": details,
            "importance": importance,
            "inputs": prepared.inputs,
            "ignored": prepared.ignored,
            "classes": classes,
            "file": file,
            "format": fmt,
            "embedding": prepared.embedding,
            "image": prepared.image,
            "rows": {"train": len(y_train), "test": len(y_test), "dropped": prepared.dropped},
            "budget_s": options.budget_s,
            "training_seconds": round(training_seconds, 3),
            "stopped": search.stopped,
            "trials": [t.to_json() for t in search.trials],
            "seed": options.seed,
            "max_trials": options.max_trials,
            "libraries": _libraries(prepared, {t.family for t in search.trials}),
        }
        from fermion.train.report import write_report

        manifest["plots"] = write_report(stage, manifest, registry.next_version(name))
        published = registry.publish(stage, manifest)
    except BaseException:
        registry.discard(stage)
        raise
    notify(
        {"phase": "done", "model": published.ref, "elapsed": round(time.perf_counter() - started, 2), "budget": options.budget_s}
    )
    return published


def _check_servable(path: Path, name: str) -> None:
    """Load the saved file the way `model:` sources do, so a model that could not be served is never registered."""
    try:
        read_model(str(path), name, False, REGISTRY_TYPES, kind="model")
    except SourceError as exc:
        raise TrainingError(f"the trained model could not be saved in a servable form: {exc}") from None


def _import_savers() -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot  # noqa: F401
    import skops.io  # noqa: F401


def _classes(y: Any) -> list[Any]:
    """The classes in the order the estimators put them in (`np.unique`), as plain Python values."""
    import numpy as np

    return np.unique(y).tolist()


def _series(values: Any) -> Any:
    import pandas as pd

    return pd.Series(values)


def _split(prepared: _Prepared, task: str, seed: int) -> tuple[Any, Any, Any, Any]:
    from sklearn.model_selection import train_test_split

    stratify = prepared.y if task == CLASSIFICATION else None
    try:
        return train_test_split(prepared.X, prepared.y, test_size=TEST_SHARE, random_state=seed, stratify=stratify)
    except ValueError as exc:  # too few rows of some class for a stratified test split
        raise TrainingError(
            f"cannot hold out a test split with every class in it: {exc}; add rows for the rare classes"
        ) from None


def _prepare_table(version: DatasetVersion, datasets: DatasetStore, options: TrainOptions, notify: Progress) -> _Prepared:
    from fermion.models.trained.features import TextEmbedder, embedding_columns, encode_frame

    frame = datasets.load_table(version)
    target = find_target([str(c) for c in frame.columns], options.target, version.extra.get("label_column"))
    dropped = int(frame[target].isna().sum())
    frame = frame[frame[target].notna()].reset_index(drop=True)
    plan = plan_columns(frame, target)
    inputs = [i.to_json() for i in plan.inputs]
    y = frame[target].to_numpy()
    if y.dtype.kind == "O":
        y = y.astype(str).astype(object)
    task, classes, metric = _decide(y, target, options)
    texts = plan.of_kind("text")
    embedder, embedding = None, None
    if texts:
        notify({"phase": "embed", "columns": texts, "rows": len(frame)})
        embedder = TextEmbedder()
        from fermion.models.trained.features import EMBEDDING_MODEL

        embedding = {"model": EMBEDDING_MODEL, "columns": texts, "dimensions": embedder.dimensions}
    X = encode_frame(frame, inputs, embedder)
    groups = {}
    numeric, categorical = [], []
    for spec in inputs:
        if spec["kind"] == "text":
            block = embedding_columns(spec["name"], embedder.dimensions)  # type: ignore[union-attr]
            numeric += block
            groups[spec["name"]] = block
        else:
            (categorical if spec["kind"] == "category" else numeric).append(spec["name"])
            groups[spec["name"]] = [spec["name"]]
    return _Prepared(
        X=X,
        y=y,
        kind="table",
        inputs=inputs,
        ignored=plan.ignored,
        numeric=numeric,
        categorical=categorical,
        groups=groups,
        target=target,
        dropped=dropped,
        embedding=embedding,
        task=task,
        classes=classes,
        metric=metric,
    )


def _prepare_images(version: DatasetVersion, datasets: DatasetStore, options: TrainOptions) -> _Prepared:
    from fermion.models.trained.features import load_images

    if options.target not in (None, "label"):
        raise TrainingError(
            f"{version.ref} is an image set: its target is the folder name ('label'), not {options.target!r}; leave out --target"
        )
    pixels, labels, shape, mode = load_images(datasets.image_files(version))
    inputs = [{"name": "image", "kind": "image", "choices": None, "example": None, "nullable": False}]
    image = {"side": shape[1], "mode": mode, "shape": list(shape)}
    task, classes, metric = _decide(labels, "label", options)
    return _Prepared(
        pixels, labels, "images", inputs, {}, [], [], {}, "label", image=image, task=task, classes=classes, metric=metric
    )


def _libraries(prepared: _Prepared, families: set[str]) -> dict[str, str]:
    names = ["fermion", "scikit-learn", "numpy", "pandas", "skops"]
    if "lightgbm" in families:
        names.append("lightgbm")
    if "cnn" in families:
        names += ["torch", "onnx"]
    if prepared.embedding:
        names += ["sentence-transformers", "torch"]
    return {"python": platform.python_version(), **library_versions(names)}


def library_versions(names: list[str]) -> dict[str, str]:
    """The installed version of each package in `names` (those not installed are left out)."""
    found = {}
    for name in names:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return found


def dataset_for(source: str, datasets: DatasetStore, name: str | None = None) -> tuple[DatasetVersion, bool]:
    """A stored dataset version for `source`: NAME[@V] if stored, else a file, folder or sample: added first (→ True)."""

    text = str(source)
    looks_stored = not text.startswith("sample:") and not Path(text).expanduser().exists()
    if looks_stored:
        return datasets.get(text), False
    before = {v.ref for v in datasets.list()}
    version = datasets.add(text, name=name)
    return version, version.ref not in before
