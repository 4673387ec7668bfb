"""The model registry as training writes it: a version is staged in a private folder, then published in one rename.

A failed run leaves nothing half-written. Reading versions (and their on-disk format) is
`fermion.models.trained.registry`, which serving uses without the trainer.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

from fermion.data.store import check_name
from fermion.models.trained import registry
from fermion.models.trained.registry import ModelVersion
from fermion.versioned import publish, version_numbers

__all__ = ["ModelRegistry", "ModelVersion"]


class ModelRegistry(registry.ModelRegistry):
    """Registered models under `root` (default: the data dir's `models/`), with the writing side training needs."""

    def staging(self) -> Path:
        """A fresh private folder to build a version in; hand it to `publish` or remove it."""
        (self.root / ".staging").mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix="train-", dir=self.root / ".staging"))

    def publish(self, stage: Path, manifest: dict[str, Any]) -> ModelVersion:
        check_name(manifest["name"])
        path = publish(self.root / manifest["name"], stage, manifest)
        return ModelVersion(manifest["name"], manifest["version"], path, manifest)

    def discard(self, stage: Path) -> None:
        shutil.rmtree(stage, ignore_errors=True)

    def next_version(self, name: str) -> int:
        return max(version_numbers(self.root / name), default=0) + 1
