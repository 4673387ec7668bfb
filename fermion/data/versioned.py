"""Immutable numbered versions on disk, shared by datasets and trained models: root/NAME/V/.

A version is built in a staging folder, its manifest written last, and the whole folder renamed
into place in one step, so a failed or interrupted write leaves no version behind.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

MANIFEST = "manifest.json"


def version_numbers(folder: Path) -> list[int]:
    """The version numbers under `folder` (NAME's folder), oldest first."""
    if not folder.is_dir():
        return []
    return sorted(int(p.name) for p in folder.iterdir() if p.name.isdigit())


def read_manifests(folder: Path) -> list[tuple[Path, dict[str, Any]]]:
    """(path, manifest) of every published version under `folder`; folders without a readable manifest are skipped."""
    found = []
    for number in version_numbers(folder):
        path = folder / str(number)
        try:
            found.append((path, json.loads((path / MANIFEST).read_text())))
        except (OSError, ValueError):
            continue
    return found


def publish(folder: Path, stage: Path, manifest: dict[str, Any]) -> Path:
    """Write `manifest` (with its `version` set) into `stage` last, then rename `stage` to `folder/V` for the next free V."""
    folder.mkdir(parents=True, exist_ok=True)
    version = max(version_numbers(folder), default=0) + 1
    while True:
        manifest["version"] = version
        tmp = stage / (MANIFEST + ".tmp")
        tmp.write_text(json.dumps(manifest, indent=2) + "\n")
        os.replace(tmp, stage / MANIFEST)
        try:
            # A rename onto an existing version fails: another writer took this number first, try the next.
            os.rename(stage, folder / str(version))
        except OSError:
            if not (folder / str(version)).exists():
                raise
            version += 1
            continue
        return folder / str(version)
