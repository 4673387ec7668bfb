"""Immutable numbered versions on disk, shared by datasets and trained models: root/NAME/V/.

A version is built in a staging folder, its manifest written last, and the whole folder renamed
into place in one step, so a failed or interrupted write leaves no version behind. This module sits
below the data, model and training layers so that each of them can read versions.
"""

from __future__ import annotations

import difflib
import json
import os
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol, TypeVar

MANIFEST = "manifest.json"
#: What a dataset or model NAME may be: the folder under root.
NAME_RULE = re.compile(r"^[a-z][a-z0-9-]{0,62}$")


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


class _Numbered(Protocol):
    version: int


V = TypeVar("V", bound=_Numbered)


def pick_version(
    ref: str,
    versions: Callable[[str], Sequence[V]],
    names: Callable[[], list[str]],
    what: str,
    when_empty: str,
    error: Callable[[str], Exception],
) -> V:
    """`NAME@V`, or `NAME` for its latest version, among `versions(NAME)`; an unknown name gets a did-you-mean.

    `what` names the kind ("dataset", "model"); `when_empty` says what to do when there is none at all.
    """
    name, _, number = ref.partition("@")
    found = versions(name) if NAME_RULE.match(name) else []
    if not found:
        known = names()
        if not known:
            raise error(f"no {what} named {name!r}: there are no {what}s yet; {when_empty}")
        close = difflib.get_close_matches(name, known, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise error(f"no {what} named {name!r}{hint} (known {what}s: {', '.join(known)})")
    if not number:
        return found[-1]
    if not number.isdigit():
        raise error(f"bad version in {ref!r}: write NAME@V with V a number, e.g. {name}@1")
    match = next((v for v in found if v.version == int(number)), None)
    if match is None:
        raise error(f"{what} {name} has no version {number} (versions: {', '.join(str(v.version) for v in found)})")
    return match
