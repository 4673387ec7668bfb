"""The model families the search tries, their defaults and how their hyper-parameters are sampled.

Each family builds a scikit-learn compatible estimator. Defaults come first in the search (a
strong, cheap baseline per family); later trials sample around what has worked best.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fermion.train.problem import CLASSIFICATION

Params = dict[str, Any]


@dataclass(frozen=True)
class Family:
    """One kind of model: how to build it from parameters, its defaults, and how to sample new parameters."""

    name: str
    label: str
    scaled: bool  # wants standardised numbers (linear models)
    default: Params
    sample: Callable[[Any], Params]
    build: Callable[[Params, str, int, int], Any]  # (params, task, seed, threads) -> estimator
    kinds: tuple[str, ...] = ("table", "text", "images")
    #: A trial's cost relative to the linear family's, used until the family's own trials are timed.
    relative_cost: float = 1.0


def _log_uniform(rng: Any, low: float, high: float) -> float:
    return float(math.exp(rng.uniform(math.log(low), math.log(high))))


# -- linear ----------------------------------------------------------------------------------------


def _linear(params: Params, task: str, seed: int, threads: int) -> Any:
    if task == CLASSIFICATION:
        from sklearn.linear_model import LogisticRegression

        return LogisticRegression(C=params["C"], max_iter=3000, random_state=seed)
    from sklearn.linear_model import Ridge

    return Ridge(alpha=1.0 / params["C"], random_state=seed)


LINEAR = Family(
    "linear",
    "linear model (logistic / ridge regression)",
    True,
    {"C": 1.0},
    lambda rng: {"C": round(_log_uniform(rng, 1e-3, 1e3), 5)},
    _linear,
)


# -- forests ---------------------------------------------------------------------------------------


def _forest(extra: bool) -> Callable[[Params, str, int, int], Any]:
    def build(params: Params, task: str, seed: int, threads: int) -> Any:
        from sklearn import ensemble

        kind = ("ExtraTrees" if extra else "RandomForest") + ("Classifier" if task == CLASSIFICATION else "Regressor")
        return getattr(ensemble, kind)(random_state=seed, n_jobs=threads, **params)

    return build


def _forest_sample(rng: Any) -> Params:
    return {
        "n_estimators": int(rng.choice([100, 200, 300])),
        "max_features": ["sqrt", 0.3, 0.5, 0.8, 1.0][int(rng.integers(5))],
        "min_samples_leaf": int(rng.choice([1, 1, 2, 4, 8])),
    }


FOREST_DEFAULT: Params = {"n_estimators": 100, "max_features": "sqrt", "min_samples_leaf": 1}


RANDOM_FOREST = Family("random_forest", "random forest", False, FOREST_DEFAULT, _forest_sample, _forest(False), relative_cost=6.0)
EXTRA_TREES = Family("extra_trees", "extra trees", False, FOREST_DEFAULT, _forest_sample, _forest(True), relative_cost=4.0)


# -- LightGBM --------------------------------------------------------------------------------------


def _lightgbm(params: Params, task: str, seed: int, threads: int) -> Any:
    import lightgbm

    kind = lightgbm.LGBMClassifier if task == CLASSIFICATION else lightgbm.LGBMRegressor
    return kind(
        random_state=seed, n_jobs=threads, verbose=-1, subsample_freq=1, deterministic=True, force_col_wise=True, **params
    )


def _lightgbm_sample(rng: Any) -> Params:
    return {
        "n_estimators": int(rng.choice([100, 200, 400, 800])),
        "learning_rate": round(_log_uniform(rng, 0.01, 0.3), 4),
        "num_leaves": int(rng.choice([4, 8, 15, 31, 63])),
        "min_child_samples": int(rng.choice([2, 5, 10, 20, 40])),
        "subsample": round(float(rng.uniform(0.6, 1.0)), 3),
        "colsample_bytree": round(float(rng.uniform(0.5, 1.0)), 3),
        "reg_lambda": round(_log_uniform(rng, 1e-3, 10.0), 4),
    }


LIGHTGBM = Family(
    "lightgbm",
    "LightGBM (gradient-boosted trees)",
    False,
    {
        "n_estimators": 100,
        "learning_rate": 0.1,
        "num_leaves": 31,
        "min_child_samples": 20,
        "subsample": 1.0,
        "colsample_bytree": 1.0,
        "reg_lambda": 0.0,
    },
    _lightgbm_sample,
    _lightgbm,
    relative_cost=3.0,
)


# -- small CNN (images) ----------------------------------------------------------------------------


def _cnn(params: Params, task: str, seed: int, threads: int) -> Any:
    from fermion.train.cnn import CNNClassifier

    return CNNClassifier(seed=seed, **params)


CNN = Family(
    "cnn",
    "small convolutional network (torch)",
    False,
    {"channels": 16, "epochs": 30, "learning_rate": 0.003},
    lambda rng: {
        "channels": int(rng.choice([8, 16, 32])),
        "epochs": int(rng.choice([20, 30, 50])),
        "learning_rate": round(_log_uniform(rng, 5e-4, 1e-2), 5),
    },
    _cnn,
    kinds=("images",),
    relative_cost=20.0,
)


def families_for(kind: str, task: str) -> list[Family]:
    """The families tried for a data kind and task, cheapest first."""
    import importlib.util

    found = [LINEAR]
    if importlib.util.find_spec("lightgbm") is not None:
        found.append(LIGHTGBM)
    found += [RANDOM_FOREST, EXTRA_TREES]
    if kind == "images" and task == CLASSIFICATION and importlib.util.find_spec("torch") is not None:
        found.append(CNN)
    return [f for f in found if kind in f.kinds]
