"""`fermion models`: the model families Fermion serves, with a runnable line each."""

from __future__ import annotations

import typer
from rich.markup import escape
from rich.table import Table

from fermion.cli.app import app, out

models_app = typer.Typer(help="Model sources Fermion can serve.", invoke_without_command=True, no_args_is_help=False)
app.add_typer(models_app, name="models")


@models_app.callback()
def models(ctx: typer.Context) -> None:
    """List the model families and tasks `fermion serve` accepts, with one example line each."""
    if ctx.invoked_subcommand is not None:
        return
    from fermion.models.catalog import FAMILIES

    table = Table(title="Model sources", show_lines=True)
    table.add_column("source")
    table.add_column("family")
    table.add_column("serves")
    table.add_column("example")
    table.add_column("install")
    for family in FAMILIES:
        table.add_row(family.prefix, family.name, "\n".join(family.tasks), family.example, escape(f"pip install 'fermion[{family.extra}]'"))
    out.print(table)
    out.print("Python Services: fermion serve app.py:MyService (see docs/services.md)")
