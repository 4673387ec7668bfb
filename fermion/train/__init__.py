"""No-code training: a dataset version in, an evaluated model version in the registry out.

from fermion.train import TrainOptions, train
version = train("sample:breast_cancer", TrainOptions(target="target", budget_s=30))
version.source  # 'model:breast-cancer@1', ready for `fermion serve` or `fermion deploy`
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fermion.train.problem import METRICS, TrainingError
from fermion.train.registry import ModelRegistry, ModelVersion

if TYPE_CHECKING:
    from fermion.train.run import TrainOptions


def __getattr__(name: str) -> Any:
    # run.py pulls in the data layer and scikit-learn helpers: load it only when used.
    if name in ("train", "TrainOptions"):
        from fermion.train import run

        return getattr(run, name)
    raise AttributeError(name)


__all__ = ["METRICS", "ModelRegistry", "ModelVersion", "TrainOptions", "TrainingError", "train"]
