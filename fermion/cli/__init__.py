"""The `fermion` command line: a thin client over the serving core and, later, the platform API."""

from __future__ import annotations

from fermion.cli import bench as _bench  # noqa: F401 - registers `fermion bench`
from fermion.cli import call as _call  # noqa: F401 - registers `fermion call`
from fermion.cli import models as _models  # noqa: F401 - registers `fermion models`
from fermion.cli import serve as _serve  # noqa: F401 - registers `fermion serve`
from fermion.cli.app import app


def main() -> None:
    """Entry point of the `fermion` console script."""
    app()
