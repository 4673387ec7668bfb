"""Ensembles of the best trials: chosen on their out-of-fold predictions, fitted as one soft-voting model.

Greedy forward selection with replacement (Caruana et al., 2004): starting from nothing, add the
trial whose predictions, averaged with those already chosen, score best; stop when nothing improves.
A trial chosen twice weighs twice.
"""

from __future__ import annotations

from typing import Any

from fermion.train.problem import CLASSIFICATION, score
from fermion.train.search import ENSEMBLE_CANDIDATES, Problem, Search, Trial, build_estimator

#: At most this many greedy steps (members, counting repeats).
ENSEMBLE_STEPS = 10


def choose_ensemble(search: Search) -> tuple[Any, dict[str, Any]] | None:
    """An unfitted ensemble estimator and its description, when one beats the best trial and its fits fit in the time
    left; else None."""
    members = select_ensemble(search)
    if members is not None:
        members = _affordable(search, members)
    if members is None:
        return None
    shown = ", ".join(f"{t.family} ×{w}" if w > 1 else t.family for t, w in members)
    chosen = {
        "family": "ensemble",
        "family_label": f"ensemble of {len(members)} models ({shown})",
        "params": {"members": [{"trial": t.number, "family": t.family, "params": t.params, "weight": w} for t, w in members]},
        "cv_score": search.ensemble_score,
    }
    return _ensemble_estimator(search.problem, search, members), chosen


def _oof_score(search: Search, members: list[int]) -> float:
    """The metric of the average of `members`' out-of-fold predictions (a member may repeat: that is its weight)."""
    import numpy as np

    problem = search.problem
    mean = np.mean([search.oof[m] for m in members], axis=0)
    rows = ~np.isnan(mean).any(axis=1) if mean.ndim == 2 else ~np.isnan(mean)
    y = problem.y[rows]
    if problem.task == CLASSIFICATION:
        proba = mean[rows]
        labels = np.asarray(problem.classes, dtype=object)[proba.argmax(axis=1)]
        if np.asarray(y).dtype.kind != "O":
            labels = labels.astype(np.asarray(y).dtype)
        return score(problem.metric, y, labels, proba, problem.classes)
    return score(problem.metric, y, mean[rows], None, None)


def select_ensemble(search: Search) -> list[tuple[Trial, int]] | None:
    """Greedy forward selection with replacement (Caruana et al., 2004) over the best trials' out-of-fold predictions.

    Returns (trial, weight) pairs when an average of two or more trials scores better than the best
    single trial, else None.
    """
    ranked = [t for t in search.ranked() if t.number in search.oof][:ENSEMBLE_CANDIDATES]
    if len(ranked) < 2:
        return None
    metric = search.problem.metric
    chosen: list[int] = []
    current: float | None = None
    for _ in range(ENSEMBLE_STEPS):
        step = [(_oof_score(search, [*chosen, t.number]), t.number) for t in ranked]
        step = [(value, number) for value, number in step if value == value]
        if not step:
            break
        value, number = max(step) if metric.greater_is_better else min(step)
        if current is not None and not metric.better(value, current):
            break
        chosen.append(number)
        current = value
    if len(set(chosen)) < 2 or current is None or not metric.better(current, ranked[0].score):
        return None
    by_number = {t.number: t for t in ranked}
    search.ensemble_score = current
    return [(by_number[n], chosen.count(n)) for n in dict.fromkeys(chosen)]


def _ensemble_estimator(problem: Problem, search: Search, members: list[tuple[Trial, int]]) -> Any:
    from sklearn.ensemble import VotingClassifier, VotingRegressor

    estimators = [(f"{t.family}_{t.number}", build_estimator(problem, search.families[t.family], t.params)) for t, _ in members]
    weights = [w for _, w in members]
    if problem.task == CLASSIFICATION:
        return VotingClassifier(estimators, voting="soft", weights=weights)
    return VotingRegressor(estimators, weights=weights)


def _affordable(search: Search, members: list[tuple[Trial, int]]) -> list[tuple[Trial, int]] | None:
    """The ensemble's members whose fits still fit in the time left, the heaviest weights first; None below two."""
    left = search.seconds_left() - search.finishing_s
    kept, cost = [], 0.0
    for trial, weight in sorted(members, key=lambda m: -m[1]):
        needed = search.refit_seconds(trial)
        if cost + needed <= left:
            kept.append((trial, weight))
            cost += needed
    if len(kept) < 2:
        return None
    if len(kept) < len(members):
        value = _oof_score(search, [t.number for t, w in kept for _ in range(w)])
        if not search.problem.metric.better(value, search.best.score):  # type: ignore[union-attr]
            return None
        search.ensemble_score = value
    return kept
