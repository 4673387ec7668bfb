"""The budgeted search: cross-validated trials over model families until the time is spent.

The budget covers the search, the final fit on the whole training split and the evaluation, so
before each trial (and after each fold) the search checks that the trial, a refit of the best
model and the evaluation still fit in what is left; when they don't, it stops and keeps the best
so far. Trials are drawn from a seeded generator: the same seed gives the same sequence of trials.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field
from typing import Any

from fermion.train.families import Family, Params
from fermion.train.problem import CLASSIFICATION, Metric, Progress, score

#: Share of the budget kept for evaluating the final model (test metrics, feature importance).
EVALUATION_SHARE = 0.06
#: Seconds kept for saving the model and drawing the report.
SAVE_RESERVE_S = 1.5
#: Ensembles: chosen among this many best trials; the search keeps time
#: to fit this many of its best trials at the end.
ENSEMBLE_CANDIDATES = 8
ENSEMBLE_RESERVE_TOP = 3
#: Models use every core only from this many rows on.
PARALLEL_MIN_ROWS = 20000
#: Below this many rows the cross-validation folds are repeated twice.
REPEAT_BELOW_ROWS = 500
#: Data above this many rows is validated on one held-out part instead of k folds.
CV_MAX_ROWS = 20000


@dataclass
class Problem:
    """The training split and what the search needs to know about it."""

    X: Any  # a DataFrame (tables, text) or a 2-D array of pixels (images)
    y: Any
    task: str
    metric: Metric
    classes: list[Any] | None
    numeric: list[str] = field(default_factory=list)
    categorical: list[str] = field(default_factory=list)
    image_shape: tuple[int, int, int] | None = None
    seed: int = 0

    @property
    def rows(self) -> int:
        return len(self.y)

    @property
    def threads(self) -> int:
        """Threads per model: one for small data, where more threads cost more in waiting than they save
        (LightGBM's OpenMP threads on a busy 2-core machine made one small fit 10-100 times slower)."""
        import os

        return 1 if self.rows < PARALLEL_MIN_ROWS else max(1, os.cpu_count() or 1)


@dataclass
class Trial:
    """One family with one set of parameters, scored by cross-validation."""

    number: int
    family: str
    params: Params
    score: float | None = None
    seconds: float = 0.0
    fit_seconds: float = 0.0  # mean time of one fold's fit
    status: str = "ok"  # "ok", "failed" or "cut" (stopped by the budget part-way)
    error: str | None = None
    finished_at: float = 0.0  # seconds since training started

    def to_json(self) -> dict[str, Any]:
        return {
            "number": self.number,
            "family": self.family,
            "params": self.params,
            "score": self.score,
            "seconds": round(self.seconds, 3),
            "status": self.status,
            "error": self.error,
            "finished_at": round(self.finished_at, 3),
        }


def build_estimator(problem: Problem, family: Family, params: Params) -> Any:
    """The family's estimator behind the preprocessing its data needs (imputing, one-hot encoding, scaling)."""
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    from fermion.train.problem import MAX_CATEGORIES

    model = family.build(params, problem.task, problem.seed, problem.threads)
    if problem.image_shape is not None:
        if hasattr(model, "set_image_shape"):
            return model.set_image_shape(problem.image_shape)
        return Pipeline([("scale", StandardScaler()), ("model", model)]) if family.scaled else model
    numeric_steps: list[tuple[str, Any]] = [("impute", SimpleImputer(strategy="median"))]
    if family.scaled:
        numeric_steps.append(("scale", StandardScaler()))
    parts: list[tuple[str, Any, list[str]]] = []
    if problem.numeric:
        parts.append(("numbers", Pipeline(numeric_steps), problem.numeric))
    if problem.categorical:
        categories = Pipeline(
            [
                ("impute", SimpleImputer(strategy="most_frequent")),
                (
                    "encode",
                    OneHotEncoder(handle_unknown="infrequent_if_exist", max_categories=MAX_CATEGORIES, sparse_output=False),
                ),
            ]
        )
        parts.append(("categories", categories, problem.categorical))
    prepare = ColumnTransformer(parts, remainder="drop", verbose_feature_names_out=False)
    return Pipeline([("prepare", prepare), ("model", model)])


def class_probabilities(model: Any, X: Any, classes: list[Any]) -> Any:
    """`predict_proba` with one column per class of the whole problem (a fold may not have seen every class)."""
    import numpy as np

    proba = model.predict_proba(X)
    seen = list(model.classes_)
    if seen == list(classes):
        return proba
    full = np.zeros((proba.shape[0], len(classes)))
    for i, label in enumerate(seen):
        full[:, classes.index(label)] = proba[:, i]
    return full


def evaluate_on(problem: Problem, model: Any, X: Any, y: Any) -> float:
    """The problem's metric for a fitted model on (X, y)."""
    predicted = model.predict(X)
    proba = (
        class_probabilities(model, X, problem.classes) if problem.task == CLASSIFICATION and problem.metric.needs_proba else None
    )
    return score(problem.metric, y, predicted, proba, problem.classes)


def _splits(problem: Problem) -> list[tuple[Any, Any]]:
    import numpy as np
    from sklearn.model_selection import KFold, StratifiedKFold, train_test_split

    index = np.arange(problem.rows)
    if problem.rows > CV_MAX_ROWS:
        stratify = problem.y if problem.task == CLASSIFICATION else None
        train, valid = train_test_split(index, test_size=0.2, random_state=problem.seed, stratify=stratify)
        return [(train, valid)]
    folds = 5 if problem.rows < 1000 else 3
    # Small data: the folds are repeated with another shuffle, so that choosing among close trials is less
    # a matter of which rows fell in which fold.
    repeats = 2 if problem.rows < REPEAT_BELOW_ROWS else 1
    splits: list[tuple[Any, Any]] = []
    for repeat in range(repeats):
        seed = problem.seed + 7919 * repeat
        if problem.task == CLASSIFICATION:
            smallest = int(min(np.unique(problem.y, return_counts=True)[1]))
            splitter: Any = StratifiedKFold(n_splits=max(2, min(folds, smallest)), shuffle=True, random_state=seed)
            splits += list(splitter.split(index, problem.y))
        else:
            splits += list(KFold(n_splits=folds, shuffle=True, random_state=seed).split(index))
    return splits


def _take(X: Any, rows: Any) -> Any:
    return X.iloc[rows] if hasattr(X, "iloc") else X[rows]


class Search:
    """Runs trials until the budget (counted from `started`) or `max_trials` says stop."""

    def __init__(
        self,
        problem: Problem,
        families: list[Family],
        budget_s: float,
        started: float,
        progress: Progress | None = None,
        max_trials: int | None = None,
        finishing_s: float = 0.0,
    ) -> None:
        import numpy as np

        self.problem = problem
        self.finishing_s = finishing_s  # kept after the final fit: evaluating and saving, for train()
        self.families = {f.name: f for f in families}
        self.order = [f.name for f in families]
        self.budget_s = budget_s
        self.started = started
        self.deadline = started + budget_s
        self.progress = progress
        self.max_trials = max_trials
        self.rng = np.random.default_rng(problem.seed)
        self.splits = _splits(problem)
        self.trials: list[Trial] = []
        self.best: Trial | None = None
        self.stopped = "budget"
        # A final fit sees every training row; a fold's fit saw only its training part.
        self.refit_factor = problem.rows / len(self.splits[0][0])
        #: Out-of-fold predictions (class probabilities, or numbers) of the best trials, for ensembles.
        self.oof: dict[int, Any] = {}
        self.ensembles = problem.image_shape is None  # the image CNN is saved as ONNX, outside any ensemble
        #: What fermion.train.fit.fit_within_budget fitted: family, label, params and cross-validated score.
        self.chosen: dict[str, Any] = {}
        self.ensemble_score: float | None = None
        #: The best trial's model from its last fold: the final model when the budget leaves no time to refit.
        self.best_fold_model: Any = None

    # -- time --------------------------------------------------------------------------------------

    def seconds_left(self) -> float:
        """Seconds until the budget's deadline."""
        return self.deadline - time.perf_counter()

    def refit_seconds(self, trial: Trial) -> float:
        """The expected time to fit `trial` on every training row (its folds' mean fit time, scaled up, with a margin)."""
        return trial.fit_seconds * self.refit_factor * 1.2

    def _reserve(self) -> float:
        """Time to keep for the final fit (of the best trials, should they make an ensemble) and what comes after."""
        top = self.ranked()[:ENSEMBLE_RESERVE_TOP] if self.ensembles else self.ranked()[:1]
        return sum(self.refit_seconds(t) for t in top) + self.finishing_s

    def _fold_estimate(self, family: str) -> float | None:
        done = [t.fit_seconds for t in self.trials if t.family == family and t.status == "ok"]
        return max(done) if done else None

    def _fits(self, family: str) -> bool:
        """Whether a trial of `family` (all folds, and its own refit should it win) fits in the time left."""
        fold = self._fold_estimate(family)
        if (
            fold is None
        ):  # not timed yet: scale the cheapest family's time by the family's usual cost (folds are checked as they go)
            cheapest = self.families[self.order[0]]
            fold = (self._fold_estimate(cheapest.name) or 0.0) * self.families[family].relative_cost / cheapest.relative_cost
        trial = fold * len(self.splits)
        own_refit = fold * self.refit_factor * 1.2
        return trial + max(self._reserve(), own_refit + self.finishing_s) <= self.seconds_left()

    # -- the candidates ----------------------------------------------------------------------------

    def _candidates(self) -> Any:
        """Each family's defaults first (cheapest family first), then samples biased toward the best families."""
        for name in self.order:
            yield name, dict(self.families[name].default)
        while True:
            name = self._pick_family()
            family = self.families[name]
            best_of_family = min(
                (t for t in self.trials if t.family == name and t.status == "ok" and t.score is not None),
                key=lambda t: -t.score if self.problem.metric.greater_is_better else t.score,  # type: ignore[operator]
                default=None,
            )
            fresh = family.sample(self.rng)
            if best_of_family is not None and self.rng.random() < 0.5:
                # Perturb the family's best: keep each of its parameters with probability 1/2.
                params = {k: (v if self.rng.random() < 0.5 else fresh[k]) for k, v in best_of_family.params.items() if k in fresh}
                yield name, params
            else:
                yield name, fresh

    def _pick_family(self) -> str:
        """Families ranked by their best score; the best is drawn most often, every family sometimes."""
        scored = []
        for name in self.order:
            scores = [t.score for t in self.trials if t.family == name and t.status == "ok" and t.score is not None]
            if scores:
                best = max(scores) if self.problem.metric.greater_is_better else -min(scores)
                scored.append((best, name))
        if not scored:
            return self.order[int(self.rng.integers(len(self.order)))]
        ranked = [name for _, name in sorted(scored, reverse=True)]
        weights = [0.5**rank for rank in range(len(ranked))]
        total = sum(weights)
        return ranked[int(self.rng.choice(len(ranked), p=[w / total for w in weights]))]

    # -- running -----------------------------------------------------------------------------------

    def run(self) -> Search:
        seen: set[str] = set()
        skipped_in_a_row = 0
        for name, params in self._candidates():
            # The first trial always runs (the cheapest family's defaults): a model past the budget beats no model.
            if self.trials and self.seconds_left() <= (self._reserve() if self.best is not None else 0.0):
                break
            if self.max_trials is not None and len(self.trials) >= self.max_trials:
                self.stopped = "max_trials"
                break
            key = f"{name}:{sorted(params.items())}"
            if key in seen:
                skipped_in_a_row += 1
                if skipped_in_a_row > 200:  # the space is exhausted (tiny grids)
                    self.stopped = "exhausted"
                    break
                continue
            if self.best is not None and not self._fits(name):
                skipped_in_a_row += 1
                if skipped_in_a_row > 3 * len(self.order) or self.seconds_left() <= self._reserve():
                    break
                continue
            skipped_in_a_row = 0
            seen.add(key)
            self._trial(name, params)
        return self

    def ranked(self) -> list[Trial]:
        """Finished trials, best first."""
        done = [t for t in self.trials if t.status == "ok" and t.score is not None]
        return sorted(done, key=lambda t: -t.score if self.problem.metric.greater_is_better else t.score)  # type: ignore[operator]

    def _trial(self, name: str, params: Params) -> None:
        import numpy as np

        family = self.families[name]
        trial = Trial(len(self.trials) + 1, name, params)
        begin = time.perf_counter()
        scores, fits = [], []
        classification = self.problem.task == CLASSIFICATION
        width = (len(self.problem.classes),) if classification else ()  # type: ignore[arg-type]
        oof = np.zeros((self.problem.rows, *width))
        seen = np.zeros(self.problem.rows)
        try:
            for fold, (train, valid) in enumerate(self.splits):
                model = build_estimator(self.problem, family, params)
                t0 = time.perf_counter()
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    model.fit(_take(self.problem.X, train), self.problem.y[train])
                    fits.append(time.perf_counter() - t0)
                    X_valid = _take(self.problem.X, valid)
                    scores.append(evaluate_on(self.problem, model, X_valid, self.problem.y[valid]))
                    if self.ensembles:
                        predicted = (
                            class_probabilities(model, X_valid, self.problem.classes)
                            if classification
                            else model.predict(X_valid)
                        )
                        oof[valid] += predicted
                        seen[valid] += 1
                remaining = len(self.splits) - fold - 1
                if self.best is not None and remaining and np.mean(fits) * remaining + self._reserve() > self.seconds_left():
                    trial.status = "cut"
                    break
        except Exception as exc:  # a family that cannot fit this data is skipped, not fatal
            trial.status, trial.error = "failed", f"{type(exc).__name__}: {str(exc)[:300]}"
        trial.seconds = time.perf_counter() - begin
        trial.fit_seconds = float(np.mean(fits)) if fits else trial.seconds
        trial.finished_at = time.perf_counter() - self.started
        if trial.status == "ok":
            value = float(np.mean(scores))
            if value != value:  # NaN: the metric is undefined for these folds
                trial.status, trial.error = "failed", "the metric is undefined on these folds"
            else:
                trial.score = value
                if self.problem.metric.better(value, self.best.score if self.best else None):
                    self.best = trial
                    self.best_fold_model = model
                if self.ensembles:
                    with np.errstate(invalid="ignore", divide="ignore"):  # rows no fold validated stay NaN
                        self.oof[trial.number] = (oof.T / np.where(seen > 0, seen, np.nan)).T
        self.trials.append(trial)
        if self.oof:  # only the best trials' predictions are kept
            keep = {t.number for t in self.ranked()[:ENSEMBLE_CANDIDATES]}
            self.oof = {k: v for k, v in self.oof.items() if k in keep}
        if self.progress is not None:
            self.progress(
                {
                    "phase": "search",
                    "trials": len(self.trials),
                    "trial": trial.to_json(),
                    "best_score": self.best.score if self.best else None,
                    "best_family": self.best.family if self.best else None,
                    "elapsed": round(time.perf_counter() - self.started, 2),
                    "budget": self.budget_s,
                }
            )
