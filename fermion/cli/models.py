"""`fermion models [ls|show]`: the trained models in the registry; `fermion sources`: the model families Fermion serves."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from fermion.cli.app import app, err, out
from fermion.cli.data import DataDir
from fermion.cli.place import resolve_place
from fermion.cli.platform import CaCertOption, JsonOption, TokenOption, UrlOption, connect, print_json

models_app = typer.Typer(
    help="The trained models in the registry, on the platform or in the local data dir: `ls` (the default) and `show`.",
    invoke_without_command=True,
    no_args_is_help=False,
)
app.add_typer(models_app, name="models")


@models_app.callback()
def models(
    ctx: typer.Context,
    json_output: JsonOption = False,
    url: UrlOption = None,
    token: TokenOption = None,
    data_dir: DataDir = None,
    ca_cert: CaCertOption = None,
) -> None:
    """List the trained models (as `fermion models ls`); `fermion sources` lists what `fermion serve` accepts."""
    if ctx.invoked_subcommand is None:
        ls(json_output, url, token, data_dir)


@app.command()
def sources(json_output: JsonOption = False) -> None:
    """List the model families and tasks `fermion serve` and `fermion deploy` accept, with one example line each."""
    from fermion.models.catalog import FAMILIES

    if json_output:
        print_json(
            [
                {"prefix": f.prefix, "family": f.name, "tasks": list(f.tasks), "example": f.example, "extra": f.extra}
                for f in FAMILIES
            ]
        )
        return
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
def ls(
    json_output: JsonOption = False,
    url: UrlOption = None,
    token: TokenOption = None,
    data_dir: DataDir = None,
    ca_cert: CaCertOption = None,
) -> None:
    """List the trained models in the registry: every version with its dataset, task, family and test score."""
    from fermion.cli.train_output import format_score

    versions = _summaries(url, token, data_dir)
    if json_output:
        print_json(versions)
        return
    if not versions:
        out.print("no trained models yet; train one with: fermion train sample:iris --budget 30s")
        err.print("(the model families `fermion serve` takes: fermion sources)", markup=False)
        return
    table = Table(title="Models")
    for column in ("model", "dataset", "target", "task", "family", "test score", "trained"):
        table.add_column(column, justify="right" if column == "test score" else "left")
    for m in versions:
        metric = m["metric"]
        table.add_row(
            m["ref"],
            m["dataset"],
            escape(str(m["target"])),
            m["task"],
            m["family"],
            f"{metric['label']} {format_score(m['metrics'].get(metric['name']))}",
            m["created_at"][:16].replace("T", " "),
        )
    out.print(table)


def _summaries(url: str | None, token: str | None, data_dir: Path | None) -> list[dict[str, Any]]:
    place = resolve_place(url, token, data_dir)
    if place.remote:
        with connect(place.url, place.token) as platform:
            return platform.models.list()
    from fermion.train import ModelRegistry

    assert place.data_dir is not None
    return [v.summary() for v in ModelRegistry(place.data_dir / "models").list()]


@models_app.command("show")
def show(
    ref: Annotated[str, typer.Argument(help="NAME@V, or NAME for its latest version.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the whole manifest as JSON.")] = False,
    url: UrlOption = None,
    token: TokenOption = None,
    data_dir: DataDir = None,
    ca_cert: CaCertOption = None,
) -> None:
    """Everything about one model version: metrics, parameters, inputs, dataset, libraries, and how to serve it."""
    from fermion.cli.train_output import local_model, print_result

    place = resolve_place(url, token, data_dir)
    if place.remote:
        with connect(place.url, place.token) as platform:
            m = platform.models.get(ref)
        report = f"fermion report {m['ref']} --output {m['ref'].replace('@', '-')}.html"
    else:
        version = local_model(ref, place.data_dir)
        m = {"ref": version.ref, "source": version.source, **version.manifest}
        report = str(version.report_file)
    if as_json:
        print(json.dumps(m, indent=2, default=str))
        return
    print_result(m["ref"], m["source"], m, report, serve=not place.remote)
    inputs = Table(title="Request fields")
    inputs.add_column("column")
    inputs.add_column("kind")
    inputs.add_column("allowed values")
    for spec in m["inputs"]:
        inputs.add_row(escape(str(spec["name"])), spec["kind"], escape(", ".join(map(str, spec.get("choices") or []))[:80]))
    out.print(inputs)
    out.print(f"  Params  {json.dumps(m['params'])}", markup=False)
    out.print("  Libs    " + ", ".join(f"{k} {v}" for k, v in m["libraries"].items()), markup=False)
