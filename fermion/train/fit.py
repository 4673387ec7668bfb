"""The model a training run keeps: the search's best trial, or an ensemble of its best, fitted within the budget."""

from __future__ import annotations

import time
import warnings
from typing import Any

from fermion.train.ensemble import choose_ensemble
from fermion.train.families import families_for
from fermion.train.problem import Progress, TrainingError
from fermion.train.search import Problem, Search, build_estimator


def fit_within_budget(
    problem: Problem,
    kind: str,
    budget_s: float,
    started: float | None = None,
    progress: Progress | None = None,
    max_trials: int | None = None,
    finishing_s: float = 0.0,
) -> tuple[Any, Search]:
    """Search the families for `kind` ("table" or "images") and fit the best on all of `problem`'s rows.

    The best is the best trial, or a weighted average of the best trials when their out-of-fold
    predictions say it scores better and its fit still fits in the budget (less `finishing_s`).
    Returns the fitted model and the search (its trials, why it stopped, and `chosen`: what was fitted).
    """
    started = time.perf_counter() if started is None else started
    search = Search(problem, families_for(kind, problem.task), budget_s, started, progress, max_trials, finishing_s).run()
    if search.best is None:
        errors = "; ".join(f"{t.family}: {t.error}" for t in search.trials if t.error) or "no trial finished in the budget"
        raise TrainingError(f"no model could be trained ({errors})")
    best = search.best
    chosen: dict[str, Any] = {
        "family": best.family,
        "family_label": search.families[best.family].label,
        "params": best.params,
        "cv_score": best.score,
    }
    fitted = False
    ensemble = choose_ensemble(search) if search.ensembles else None
    if ensemble is not None:
        model, chosen = ensemble
    elif search.seconds_left() - search.finishing_s < search.refit_seconds(best) and search.best_fold_model is not None:
        # No time left to fit on every training row: keep the best trial's model from its last fold.
        model, fitted = search.best_fold_model, True
        share = len(search.splits[-1][0]) / problem.rows
        chosen["note"] = f"the budget left no time for a final fit: the model was fitted on {share:.0%} of the training rows"
    else:
        model = build_estimator(problem, search.families[best.family], best.params)
    search.chosen = chosen
    if progress is not None:
        elapsed = round(time.perf_counter() - started, 2)
        progress({"phase": "refit", "family": chosen["family"], "elapsed": elapsed, "budget": budget_s})
    if not fitted:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model.fit(problem.X, problem.y)
    return model, search
