"""The root `fermion` command and the helpers every sub-command shares."""

from __future__ import annotations

import sys
from typing import Annotated, ClassVar, NoReturn

import click
import typer
from rich.console import Console
from rich.markup import escape
from typer.core import TyperCommand

from fermion._version import __version__

app = typer.Typer(
    name="fermion",
    help="Serve a Python class or a model as a fast, typed, documented HTTP API.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)


def fail(message: str, code: int = 1) -> NoReturn:
    """Print one clear line to stderr and exit non-zero."""
    err.print(f"[bold red]error:[/] {escape(message)}", markup=True)
    raise typer.Exit(code)


class RenamedOptions(TyperCommand):
    """A command that still takes the old spellings of renamed options, for one release, with a warning.

    The old spellings are no options of their own, so help and the configuration reference show
    only the new ones; `renamed_options()` makes the class for one command.
    """

    renamed: ClassVar[dict[str, str]] = {}

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        names, context = [], ctx
        while context.parent is not None:  # `fermion data add`, however the program was started (python -m fermion)
            names.append(context.info_name or "")
            context = context.parent
        return super().parse_args(ctx, new_spellings(args, self.renamed, " ".join(["fermion", *reversed(names)])))


def renamed_options(mapping: dict[str, str]) -> type[RenamedOptions]:
    """The command class for `cls=` that accepts each old spelling (key) as the new one (value)."""
    return type("RenamedOptions", (RenamedOptions,), {"renamed": dict(mapping)})


def new_spellings(args: list[str], mapping: dict[str, str], command: str) -> list[str]:
    """`args` with old option spellings (`--old V`, `--old=V`) replaced by new ones; one warning per old spelling."""
    result: list[str] = []
    warned: set[str] = set()
    for position, arg in enumerate(args):
        if arg == "--":  # everything after it is an argument, whatever it looks like
            result.extend(args[position:])
            break
        old, sep, value = arg.partition("=") if arg.startswith("--") else (arg, "", "")
        if old in mapping:
            if old not in warned:
                warned.add(old)
                err.print(
                    f"warning: `{command} {old}` is deprecated: use {mapping[old]} (the old spelling goes away in the next release)",
                    markup=False,
                )
            arg = mapping[old] + sep + value
        result.append(arg)
    return result


def _version(value: bool) -> None:
    if value:
        print(f"fermion {__version__} (Python {sys.version.split()[0]})")
        raise typer.Exit()


@app.callback()
def root(
    version: Annotated[
        bool, typer.Option("--version", "-V", help="Print the version and exit.", callback=_version, is_eager=True)
    ] = False,
) -> None:
    """Serve a Python class or a model as a fast, typed, documented HTTP API."""
