"""Honest numbers about a fitted model, measured on the held-out test split it never saw."""

from __future__ import annotations

import time
import warnings
from typing import Any

from fermion.train.problem import CLASSIFICATION, METRICS, REPORTED, Metric, score
from fermion.train.search import Problem, class_probabilities, evaluate_on

#: Permutation importance: how often each column is shuffled, and at most how many test rows are used.
IMPORTANCE_REPEATS = 5
IMPORTANCE_MAX_ROWS = 2000


def test_metrics(problem: Problem, model: Any, X: Any, y: Any) -> tuple[dict[str, float], dict[str, Any]]:
    """Every metric of the task on (X, y), and the raw material for plots (confusion matrix or predictions)."""
    import numpy as np

    predicted = model.predict(X)
    results: dict[str, float] = {}
    if problem.task == CLASSIFICATION:
        from sklearn.metrics import confusion_matrix

        proba = class_probabilities(model, X, problem.classes)
        for name in REPORTED[problem.task]:
            if METRICS[name].name == "roc_auc" and len(np.unique(y)) < 2:
                continue
            value = score(METRICS[name], y, predicted, proba, problem.classes)
            if value == value:
                results[name] = round(value, 6)
        matrix = confusion_matrix(y, predicted, labels=problem.classes)
        details = {"confusion": {"labels": [str(c) for c in problem.classes], "matrix": matrix.tolist()}}
    else:
        for name in REPORTED[problem.task]:
            results[name] = round(score(METRICS[name], y, predicted, None, None), 6)
        keep = np.random.default_rng(problem.seed).permutation(len(y))[:1000]
        details = {"predictions": {"actual": np.asarray(y)[keep].tolist(), "predicted": np.asarray(predicted)[keep].tolist()}}
    return results, details


def permutation_importance(
    problem: Problem, model: Any, X: Any, y: Any, groups: dict[str, list[str]], time_limit_s: float
) -> list[dict[str, Any]]:
    """How much the metric worsens when one input column (or a text column's embedding block) is shuffled.

    Positive numbers mean the model relies on the column. Columns not reached within `time_limit_s`
    are left out (the list says how many were measured).
    """
    import numpy as np

    metric: Metric = problem.metric
    rng = np.random.default_rng(problem.seed)
    if len(y) > IMPORTANCE_MAX_ROWS:
        keep = rng.permutation(len(y))[:IMPORTANCE_MAX_ROWS]
        X, y = X.iloc[keep], np.asarray(y)[keep]
    X = X.reset_index(drop=True)
    sign = 1.0 if metric.greater_is_better else -1.0

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        baseline = evaluate_on(problem, model, X, y)
        stop = time.perf_counter() + time_limit_s
        found = []
        for name, columns in groups.items():
            if time.perf_counter() > stop:
                break
            drops = []
            for _ in range(IMPORTANCE_REPEATS):
                shuffled = X.copy()
                order = rng.permutation(len(X))
                shuffled[columns] = X[columns].to_numpy()[order]
                drops.append(sign * (baseline - evaluate_on(problem, model, shuffled, y)))
            found.append({"feature": name, "importance": round(float(np.mean(drops)), 6), "std": round(float(np.std(drops)), 6)})
    return sorted(found, key=lambda f: -f["importance"])
