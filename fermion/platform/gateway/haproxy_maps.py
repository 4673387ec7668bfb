"""One of HAProxy's maps (deployment → backend, public deployments, tokens, rates), kept in step two ways:
through the runtime API, which changes the running worker without a reload, and as a file, which a
reload or a restart of HAProxy reads."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path


class RuntimeMap:
    """A map's entries as HAProxy holds them now; `private` maps (tokens) are written owner-only."""

    def __init__(self, path: Path, command: Callable[[str], object], private: bool = False) -> None:
        self.path = path
        self._command = command
        self._private = private
        self.entries: dict[str, str] = {}

    def __contains__(self, key: str) -> bool:
        return key in self.entries

    def get(self, key: str) -> str | None:
        return self.entries.get(key)

    def put(self, key: str, value: str = "1") -> None:
        """Add or change one entry in the running HAProxy."""
        if key not in self.entries:
            self._command(f"add map {self.path} {key} {value}")
        elif self.entries[key] != value:
            self._command(f"set map {self.path} {key} {value}")
        self.entries[key] = value

    def drop(self, key: str) -> None:
        """Remove one entry from the running HAProxy (if it is there)."""
        if self.entries.pop(key, None) is not None:
            self._command(f"del map {self.path} {key}")

    def replace(self, wanted: dict[str, str]) -> bool:
        """Make the running HAProxy hold exactly `wanted`, then write the file; False if nothing changed."""
        if wanted == self.entries:
            return False
        for key in self.entries.keys() - wanted.keys():
            self.drop(key)
        for key, value in wanted.items():
            self.put(key, value)
        self.write()
        return True

    def reset(self, entries: dict[str, str] | None = None) -> None:
        """Start over from `entries` (before HAProxy starts or reloads, which read the file): written, not sent."""
        self.entries = dict(entries or {})
        self.write()

    def write(self) -> None:
        """The entries as a file, replaced in one step."""
        tmp = self.path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600 if self._private else 0o644)
        with os.fdopen(fd, "w") as fh:
            fh.write("".join(f"{key} {value}\n" for key, value in sorted(self.entries.items())))
        tmp.replace(self.path)
