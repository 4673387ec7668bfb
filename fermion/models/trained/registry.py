"""The model registry, as serving reads it: every training run is an immutable MODEL@VERSION under root/NAME/V/.

A version folder holds `manifest.json` (dataset version, task, inputs, metrics, parameters,
training time, library versions), the model in a safe format (`model.skops`, or `model.onnx` for
the image CNN; never a pickle), `report.html` and its plots. Training adds versions through
`fermion.train.registry`, which stages them and publishes each in one rename.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fermion.home import default_data_dir
from fermion.models.trained.errors import TrainingError
from fermion.versioned import NAME_RULE, pick_version, read_manifests

#: Types a registry skops file may hold besides scikit-learn's own: what `fermion train` itself saves.
REGISTRY_TYPES = frozenset(
    {
        "collections.OrderedDict",
        "numpy.dtype",
        "lightgbm.basic.Booster",
        "lightgbm.sklearn.LGBMClassifier",
        "lightgbm.sklearn.LGBMRegressor",
    }
)


@dataclass(frozen=True)
class ModelVersion:
    """One registered model version, as its manifest describes it."""

    name: str
    version: int
    path: Path
    manifest: dict[str, Any] = field(repr=False)

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.version}"

    @property
    def source(self) -> str:
        """The source string that serves this version: `model:NAME@V`."""
        return f"model:{self.ref}"

    @property
    def model_file(self) -> Path:
        return self.path / self.manifest["file"]

    @property
    def report_file(self) -> Path:
        return self.path / "report.html"

    def summary(self) -> dict[str, Any]:
        """The manifest without the bulky parts (trials, predictions), JSON-ready."""
        m = self.manifest
        return {
            "ref": self.ref,
            "name": self.name,
            "version": self.version,
            "source": self.source,
            "created_at": m.get("created_at"),
            "dataset": m.get("dataset"),
            "target": m.get("target"),
            "task": m.get("task"),
            "kind": m.get("kind"),
            "metric": m.get("metric"),
            "family": m.get("family"),
            "metrics": m.get("metrics"),
            "cv_score": m.get("cv_score"),
            "training_seconds": m.get("training_seconds"),
            "trials": len(m.get("trials", [])),
        }


class ModelRegistry:
    """Registered models under `root` (default: the data dir's `models/`): list them, find a version."""

    def __init__(self, root: Path | None = None) -> None:
        if root is None:
            root = default_data_dir() / "models"
        self.root = Path(root)

    def names(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if p.is_dir() and NAME_RULE.match(p.name) and self.versions(p.name))

    def versions(self, name: str) -> list[ModelVersion]:
        """Every version of `name`, oldest first."""
        return [ModelVersion(name, int(m["version"]), p, m) for p, m in read_manifests(self.root / name) if "version" in m]

    def list(self) -> list[ModelVersion]:
        return [v for name in self.names() for v in self.versions(name)]

    def get(self, ref: str) -> ModelVersion:
        """`NAME@V`, or `NAME` for its latest version; unknown names get a did-you-mean."""
        return pick_version(
            ref, self.versions, self.names, "model", "train one with `fermion train DATASET --target COLUMN`", TrainingError
        )
