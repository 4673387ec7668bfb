"""Where `fermion data`, `train`, `models` and `report` work: a platform over its REST API, or a local data dir.

One rule for every build command: `--url` (else `FERMION_URL`) means the platform at that URL, reached
through its REST API with `--token` (else `FERMION_TOKEN`); `--data-dir` means that local data dir;
with neither, the default data dir (`$FERMION_HOME` or `~/.fermion`). A command that works on a local
data dir says which on stderr, so that nobody trains into `~/.fermion` thinking it went to a platform.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from fermion.cli.app import err, fail
from fermion.cli.platform import BAD_INPUT


@dataclass(frozen=True)
class Place:
    """A platform (`url` set) or a local data dir (`data_dir` set), and the token to send a platform."""

    url: str | None
    token: str | None
    data_dir: Path | None

    @property
    def remote(self) -> bool:
        """True for a platform reached over HTTP."""
        return self.url is not None


def resolve_place(url: str | None, token: str | None, data_dir: Path | None) -> Place:
    """The place a build command works on (see the module docstring); a local one is named on stderr."""
    if url and data_dir is not None:
        fail("give --url (a platform) or --data-dir (a local data dir), not both", BAD_INPUT)
    if url:
        return Place(url, token, None)
    if data_dir is None and os.environ.get("FERMION_URL"):
        return Place(os.environ["FERMION_URL"], token, None)
    if data_dir is None:
        from fermion.platform.home import default_data_dir

        data_dir = default_data_dir()
    err.print(f"local data dir: {data_dir} (give --url or set FERMION_URL to use a platform)", markup=False)
    return Place(None, token, data_dir)
