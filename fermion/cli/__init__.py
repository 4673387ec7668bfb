"""The `fermion` command line: a thin client over the serving core, the build tools and the platform API."""

from __future__ import annotations

from fermion.cli import batch as _batch  # noqa: F401 - registers `fermion batch` and `fermion batches`
from fermion.cli import bench as _bench  # noqa: F401 - registers `fermion bench`
from fermion.cli import call as _call  # noqa: F401 - registers `fermion call`
from fermion.cli import data as _data  # noqa: F401 - registers `fermion data`
from fermion.cli import export as _export  # noqa: F401 - registers `fermion export kuberay`
from fermion.cli import models as _models  # noqa: F401 - registers `fermion models`
from fermion.cli import platform_deploy as _platform_deploy  # noqa: F401 - registers deploy, update, scale, rollback, rm
from fermion.cli import platform_inspect as _platform_inspect  # noqa: F401 - registers ls, status, logs, events
from fermion.cli import platform_secrets as _platform_secrets  # noqa: F401 - registers `fermion secrets`
from fermion.cli import platform_tokens as _platform_tokens  # noqa: F401 - registers `fermion token`
from fermion.cli import serve as _serve  # noqa: F401 - registers `fermion serve`
from fermion.cli import train as _train  # noqa: F401 - registers `fermion train` and `fermion report`
from fermion.cli import up as _up  # noqa: F401 - registers `fermion up`
from fermion.cli.app import app


def main() -> None:
    """Entry point of the `fermion` console script."""
    try:
        app()
    except ModuleNotFoundError as error:  # a command run without its extra: name the extra, not a traceback
        import sys

        from rich.markup import escape

        from fermion.cli.app import err
        from fermion.cli.extras import missing_extra_message

        message = missing_extra_message(error, sys.argv[1:])
        if message is None:
            raise
        err.print(f"[bold red]error:[/] {escape(message)}", markup=True, highlight=False)
        sys.exit(2)
