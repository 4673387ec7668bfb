"""The data dir: where Fermion keeps datasets, trained models and a local platform's state.

`$FERMION_HOME`, else `~/.fermion`. The data and training layers read it here, below the platform,
which adds what a local `fermion up` keeps there (`fermion.platform.home`).
"""

from __future__ import annotations

import os
from pathlib import Path


def default_data_dir() -> Path:
    """`$FERMION_HOME`, else `~/.fermion`."""
    return Path(os.environ.get("FERMION_HOME") or Path.home() / ".fermion").expanduser()
