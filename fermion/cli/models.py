"""`fermion models`: the model families Fermion serves, and `models ls/show` for the trained models in the registry."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from fermion.cli.app import app, out
from fermion.cli.data import DataDir

models_app = typer.Typer(
    help="Model sources Fermion can serve; `ls` and `show` list the models trained here.",
    invoke_without_command=True,
    no_args_is_help=False,
)
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
        table.add_row(
            family.prefix, family.name, "\n".join(family.tasks), family.example, escape(f"pip install 'fermion[{family.extra}]'")
        )
    out.print(table)
    out.print("Python Services: fermion serve app.py:MyService (see docs/services.md)")


@models_app.command("ls")
def ls(data_dir: DataDir = None) -> None:
    """List the trained models in the registry: every version with its dataset, task, family and test score."""
    from fermion.cli.train import format_score
    from fermion.platform.home import default_data_dir
    from fermion.train import ModelRegistry

    versions = ModelRegistry((data_dir or default_data_dir()) / "models").list()
    if not versions:
        out.print("no trained models yet; train one with: fermion train sample:iris --budget 30s")
        return
    table = Table(title="Models")
    for column in ("model", "dataset", "target", "task", "family", "test score", "trained"):
        table.add_column(column, justify="right" if column == "test score" else "left")
    for v in versions:
        m = v.manifest
        metric = m["metric"]
        table.add_row(
            v.ref,
            m["dataset"],
            escape(str(m["target"])),
            m["task"],
            m["family"],
            f"{metric['label']} {format_score(m['metrics'].get(metric['name']))}",
            m["created_at"][:16].replace("T", " "),
        )
    out.print(table)


@models_app.command("show")
def show(
    ref: Annotated[str, typer.Argument(help="NAME@V, or NAME for its latest version.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the whole manifest as JSON.")] = False,
    data_dir: DataDir = None,
) -> None:
    """Everything about one model version: metrics, parameters, inputs, dataset, libraries, and how to serve it."""
    from fermion.cli.train import _model, print_result

    version = _model(ref, data_dir)
    if as_json:
        print(json.dumps({"ref": version.ref, "source": version.source, **version.manifest}, indent=2, default=str))
        return
    print_result(version)
    m = version.manifest
    inputs = Table(title="Request fields")
    inputs.add_column("column")
    inputs.add_column("kind")
    inputs.add_column("allowed values")
    for spec in m["inputs"]:
        inputs.add_row(escape(str(spec["name"])), spec["kind"], escape(", ".join(map(str, spec.get("choices") or []))[:80]))
    out.print(inputs)
    out.print(f"  Params  {json.dumps(m['params'])}", markup=False)
    out.print("  Libs    " + ", ".join(f"{k} {v}" for k, v in m["libraries"].items()), markup=False)
