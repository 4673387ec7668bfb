"""What is being learned: the task, the metric, and how each input column is used.

Everything here looks at the data before any model is fit, so bad input fails in seconds with a
message that names the column, the value or the count that is wrong.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from fermion.models.trained.errors import TrainingError

if TYPE_CHECKING:
    import pandas as pd


CLASSIFICATION, REGRESSION = "classification", "regression"
#: A numeric target with at most this many distinct whole values is taken as classes.
MAX_CLASS_VALUES = 20
#: Fewer rows than this leave nothing honest to test on.
MIN_ROWS = 20
#: A string column is text (embedded) rather than a category when its values are this long on average ...
TEXT_MIN_CHARS = 25
#: ... or have at least this many words on average.
TEXT_MIN_WORDS = 4
#: Categories beyond this many per column are folded into "infrequent" by the encoder.
MAX_CATEGORIES = 30
#: Allowed categories are written into the request schema up to this many.
MAX_SCHEMA_CHOICES = 100


@dataclass(frozen=True)
class Metric:
    """A score to select and report models by."""

    name: str
    label: str
    greater_is_better: bool
    task: str
    needs_proba: bool = False
    binary_only: bool = False

    def better(self, a: float, b: float | None) -> bool:
        """Whether score `a` beats `b` (None: nothing yet)."""
        if b is None:
            return True
        return a > b if self.greater_is_better else a < b


METRICS: dict[str, Metric] = {
    m.name: m
    for m in (
        Metric("accuracy", "accuracy", True, CLASSIFICATION),
        Metric("f1_macro", "macro F1", True, CLASSIFICATION),
        Metric("roc_auc", "ROC AUC", True, CLASSIFICATION, needs_proba=True),
        Metric("log_loss", "log loss", False, CLASSIFICATION, needs_proba=True),
        Metric("rmse", "RMSE", False, REGRESSION),
        Metric("mae", "MAE", False, REGRESSION),
        Metric("r2", "R²", True, REGRESSION),
    )
}
#: What each task reports, in order.
REPORTED = {CLASSIFICATION: ("accuracy", "f1_macro", "roc_auc", "log_loss"), REGRESSION: ("rmse", "mae", "r2")}


def default_metric(task: str, classes: int) -> Metric:
    """ROC AUC for two classes, log loss for more, RMSE for numbers (what FLAML and most AutoML tools default to)."""
    if task == REGRESSION:
        return METRICS["rmse"]
    return METRICS["roc_auc"] if classes == 2 else METRICS["log_loss"]


def choose_metric(name: str | None, task: str, classes: int) -> Metric:
    if name is None:
        return default_metric(task, classes)
    key = name.strip().lower().replace("-", "_").replace(" ", "_")
    key = {"auc": "roc_auc", "f1": "f1_macro", "logloss": "log_loss", "acc": "accuracy"}.get(key, key)
    metric = METRICS.get(key)
    fitting = [m.name for m in METRICS.values() if m.task == task]
    if metric is None:
        close = difflib.get_close_matches(key, list(METRICS), n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise TrainingError(f"unknown metric {name!r}; {hint}for {task} use one of: {', '.join(fitting)}")
    if metric.task != task:
        raise TrainingError(f"metric {metric.name!r} is for {metric.task}, but this is {task}; use one of: {', '.join(fitting)}")
    return metric


def score(metric: Metric, y_true: Any, predicted: Any, proba: Any, classes: Any) -> float:
    """`metric` for predictions (labels or numbers) and, for classifiers, class probabilities in `classes` order."""
    import numpy as np
    from sklearn import metrics as m

    if metric.name == "accuracy":
        return float(m.accuracy_score(y_true, predicted))
    if metric.name == "f1_macro":
        return float(m.f1_score(y_true, predicted, average="macro", zero_division=0))
    if metric.name == "roc_auc":
        if len(classes) == 2:
            return float(m.roc_auc_score(y_true, proba[:, 1], labels=None) if set(np.unique(y_true)) == set(classes) else np.nan)
        present = np.isin(classes, np.unique(y_true))
        if present.sum() < 2:
            return float("nan")
        p = proba[:, present]
        p = p / np.clip(p.sum(axis=1, keepdims=True), 1e-12, None)
        return float(m.roc_auc_score(y_true, p, multi_class="ovr", labels=list(np.asarray(classes)[present])))
    if metric.name == "log_loss":
        return float(m.log_loss(y_true, np.clip(proba, 1e-15, 1), labels=list(classes)))
    if metric.name == "rmse":
        return float(np.sqrt(m.mean_squared_error(y_true, predicted)))
    if metric.name == "mae":
        return float(m.mean_absolute_error(y_true, predicted))
    if metric.name == "r2":
        return float(m.r2_score(y_true, predicted))
    raise KeyError(metric.name)


# -- the target ------------------------------------------------------------------------------------


def find_target(columns: list[str], target: str | None, default_label: str | None) -> str:
    """The target column: as given, else the dataset's label column; unknown names get a did-you-mean."""
    if target is None:
        if default_label:
            return default_label
        raise TrainingError(f"say which column to predict with --target COLUMN (columns: {', '.join(columns)})")
    if target in columns:
        return target
    lowered = {c.lower(): c for c in columns}
    if target.lower() in lowered:
        return lowered[target.lower()]
    close = difflib.get_close_matches(target, columns, n=1, cutoff=0.5)
    hint = f"did you mean {close[0]!r}? " if close else ""
    raise TrainingError(f"no column {target!r} in the dataset; {hint}columns: {', '.join(columns)}")


def infer_task(y: pd.Series, target: str, forced: str | None = None) -> str:
    """Classification for labels and few whole numbers, regression for other numbers."""
    import pandas as pd

    values = y.dropna()
    if forced is not None:
        if forced not in (CLASSIFICATION, REGRESSION):
            raise TrainingError(f"unknown task {forced!r}; use classification or regression")
        if forced == REGRESSION and not pd.api.types.is_numeric_dtype(values):
            raise TrainingError(
                f"column {target!r} holds text labels, so it cannot be a regression target; drop --problem regression"
            )
        return forced
    if not pd.api.types.is_numeric_dtype(values) or pd.api.types.is_bool_dtype(values):
        return CLASSIFICATION
    whole = bool((values == values.round()).all())
    return CLASSIFICATION if whole and values.nunique() <= MAX_CLASS_VALUES else REGRESSION


def check_target(y: pd.Series, target: str, task: str) -> None:
    """Enough rows, and for classes: at least two, each with at least two rows (one to train on, one to test)."""
    missing = int(y.isna().sum())
    rows = len(y) - missing
    if rows < MIN_ROWS:
        extra = f" ({missing} more have no {target!r})" if missing else ""
        raise TrainingError(f"only {rows} rows have a value in {target!r}{extra}; training needs at least {MIN_ROWS}")
    if task != CLASSIFICATION:
        return
    counts = y.dropna().astype(str).value_counts()
    if len(counts) < 2:
        raise TrainingError(
            f"column {target!r} has only one class ({counts.index[0]!r} in all {rows} rows); "
            "a classifier needs at least two: add rows of another class, or choose another --target"
        )
    rare = [f"{label!r} ({n})" for label, n in counts.items() if n < 2]
    if rare:
        raise TrainingError(
            f"in {target!r}, these classes have a single row, too few to both train and test: {', '.join(rare[:10])}; "
            "add rows for them or remove those rows"
        )


# -- the inputs ------------------------------------------------------------------------------------


@dataclass
class Input:
    """One input column and how the model uses it; written into the registry to build the request schema."""

    name: str
    kind: str  # "number", "boolean", "category", "text" or "image"
    choices: list[Any] | None = None
    example: Any = None
    nullable: bool = False

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "choices": self.choices, "example": self.example, "nullable": self.nullable}


@dataclass
class ColumnPlan:
    """Which columns are used and how, and which are left out (with the reason, for the report)."""

    inputs: list[Input] = field(default_factory=list)
    ignored: dict[str, str] = field(default_factory=dict)

    def of_kind(self, kind: str) -> list[str]:
        return [i.name for i in self.inputs if i.kind == kind]


def plan_columns(frame: pd.DataFrame, target: str) -> ColumnPlan:
    """Decide per column: a number, a category, text to embed, or left out (empty, constant, a row number, an identifier)."""
    import pandas as pd

    plan = ColumnPlan()
    rows = len(frame)
    for column in frame.columns:
        if column == target:
            continue
        values = frame[column]
        present = values.dropna()
        nullable = len(present) < rows
        if present.empty:
            plan.ignored[str(column)] = "empty"
            continue
        if present.nunique() == 1:
            plan.ignored[str(column)] = "the same value in every row"
            continue
        if pd.api.types.is_bool_dtype(present):
            plan.inputs.append(Input(str(column), "boolean", None, bool(present.iloc[0]), nullable))
        elif pd.api.types.is_numeric_dtype(present):
            if _is_row_number(present, rows):
                plan.ignored[str(column)] = "a row number (1, 2, 3, …), which tells nothing about the target"
                continue
            plan.inputs.append(Input(str(column), "number", None, _round(float(present.median())), nullable))
        else:
            text = present.astype(str)
            unique = text.nunique()
            mean_chars = float(text.str.len().mean())
            mean_words = float(text.str.split().str.len().mean())
            if mean_chars >= TEXT_MIN_CHARS or mean_words >= TEXT_MIN_WORDS:
                plan.inputs.append(Input(str(column), "text", None, str(text.iloc[0])[:200], nullable))
            elif unique > 0.9 * len(text) and len(text) > 50:
                plan.ignored[str(column)] = "a different short value in almost every row (an identifier)"
            else:
                counts = text.value_counts()
                choices = sorted(counts.index.tolist()) if unique <= MAX_SCHEMA_CHOICES else None
                plan.inputs.append(Input(str(column), "category", choices, str(counts.index[0]), nullable))
    if not plan.inputs:
        why = "; ".join(f"{k}: {v}" for k, v in plan.ignored.items()) or "the target is the only column"
        raise TrainingError(f"no column is left to learn from ({why}); add feature columns to the dataset")
    return plan


def _is_row_number(values: pd.Series, rows: int) -> bool:
    import numpy as np

    if len(values) != rows or rows < 20 or not (values == values.round()).all():
        return False
    steps = np.diff(values.to_numpy(dtype=float))
    return bool(len(steps) and (steps == 1).all())


def _round(value: float) -> float | int:
    return int(value) if value == int(value) else round(value, 4)


Progress = Callable[[dict[str, Any]], None]
