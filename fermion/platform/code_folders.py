"""Who may run code on a platform: sources that execute Python only from folders the operator opens.

A `.py` file or module (`app.py:Echo`, `pkg.mod:Echo`), a pickle (`options.trust_pickle`) and a
model's own code (`options.trust_remote_code`) run whatever their author wrote, so a `deploy` token
may use them only from a folder `fermion up --code-from DIR` opens. Registry models (`model:`),
`st:`, `hf:`, skops and ONNX files run no code of their own and stay deployable everywhere.
Paths are resolved (symlinks, `..`) before the containment check, and a refusal reads the same
whether or not the path exists, so the API is no file-existence oracle.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fermion.platform.errors import Invalid

#: The one answer for a source that runs code outside the opened folders (existing or not).
REFUSED = "sources that run code must be in a folder `fermion up --code-from` opens; ask the operator"
#: The one answer for a model file outside the opened folders that does not load (missing, or not a model).
UNREADABLE = (
    "no model the platform can load at that path (it says no more about paths outside the folders "
    "`fermion up --code-from` opens; `fermion serve SOURCE --check` on its machine tells why)"
)
#: Options that make a model source run code its files carry.
CODE_OPTIONS = ("trust_pickle", "trust_remote_code")


@dataclass(frozen=True)
class CodeFolders:
    """The folders sources that run code may come from (resolved), minus the ones always closed (the data dir)."""

    opened: tuple[Path, ...] = ()
    closed: tuple[Path, ...] = ()

    @classmethod
    def of(cls, opened: Iterable[str | os.PathLike[str]], closed: Iterable[str | os.PathLike[str]] = ()) -> CodeFolders:
        """Resolve the folders once; a folder that is not there is an error for the operator."""
        folders = []
        for folder in opened:
            path = Path(os.path.realpath(os.path.expanduser(folder)))
            if not path.is_dir():
                raise ValueError(f"--code-from {folder}: no such folder")
            folders.append(path)
        return cls(tuple(folders), tuple(Path(os.path.realpath(p)) for p in closed))

    def check(self, source: str, options: Mapping[str, Any]) -> None:
        """Invalid (one message for every case) unless the source runs no code or its code is in an opened folder."""
        if runs_code(source, options) and self.root_of(source, options) is None:
            raise Invalid(REFUSED)

    def outside(self, source: str) -> bool:
        """Whether a model source names a file or folder on this machine that no opened folder holds: a failure
        to load it is then told as `UNREADABLE`, the same whether the path exists or not. Registry models and
        hub ids name no path."""
        from fermion.models.resolve import looks_like_path
        from fermion.sources import split_source

        scheme, rest = split_source(source.strip())
        names_path = scheme in ("onnx", "sklearn") or (scheme in ("st", "hf", "vllm") and looks_like_path(rest))
        return names_path and self._holding(local_path(rest)) is None

    def root_of(self, source: str, options: Mapping[str, Any]) -> Path | None:
        """The opened folder holding the source's code (or its pickle / model folder); None if none does."""
        from fermion.sources import split_source

        scheme, rest = split_source(source.strip())
        if scheme != "py":
            return self._holding(local_path(rest)) if rest else None
        location = rest.rpartition(":")[0] if ":" in rest else rest
        if location.endswith(".py") or os.sep in location:
            return self._holding(Path(os.path.realpath(location)))
        return self._holding_module(location)

    def _holding(self, path: Path) -> Path | None:
        if any(path == c or c in path.parents for c in self.closed):
            return None
        return next((folder for folder in self.opened if path == folder or folder in path.parents), None)

    def _holding_module(self, name: str) -> Path | None:
        """The opened folder where `pkg.mod` is a file (found the way `python -m` would from there), without importing it."""
        parts = name.split(".")
        if not all(part.isidentifier() for part in parts):
            return None
        for folder in self.opened:
            for candidate in (folder.joinpath(*parts).with_suffix(".py"), folder.joinpath(*parts, "__init__.py")):
                if candidate.is_file() and self._holding(Path(os.path.realpath(candidate))) == folder:
                    return folder
        return None


def runs_code(source: str, options: Mapping[str, Any]) -> bool:
    """Whether loading the source executes code its author wrote: Python sources and the code-trusting options."""
    from fermion.sources import split_source

    scheme, _ = split_source(source.strip())
    return scheme == "py" or any(options.get(name) for name in CODE_OPTIONS)


def local_path(rest: str) -> Path:
    """A model source's path, resolved (relative to this process's folder, as a replica resolves it)."""
    return Path(os.path.realpath(os.path.expanduser(rest)))


def absolute_source(source: str) -> str:
    """A Python file source with its path resolved (`app.py:Echo` → `/srv/code/app.py:Echo`), for a replica
    that runs in another folder; every other source as it is."""
    from fermion.sources import split_source

    scheme, rest = split_source(source.strip())
    location, sep, attr = rest.rpartition(":") if ":" in rest else (rest, "", "")
    if scheme != "py" or not (location.endswith(".py") or os.sep in location):
        return source
    return os.path.realpath(location) + sep + attr
