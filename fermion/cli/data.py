"""`fermion data`: add, list and inspect versioned datasets, on a platform or in a local data dir (see place.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from fermion.cli.app import app, err, fail, out, renamed_options
from fermion.cli.place import resolve_place
from fermion.cli.platform import CaCertOption, JsonOption, TokenOption, UrlOption, print_json

if TYPE_CHECKING:
    from fermion.client.platform import Platform
    from fermion.data import DatasetStore

data_app = typer.Typer(
    help="Datasets: add CSV, JSONL, Parquet, image folders or samples; list and inspect versions.", no_args_is_help=True
)
app.add_typer(data_app, name="data")

DataDir = Annotated[
    Path | None,
    typer.Option(
        "--data-dir",
        help="A local data dir, where datasets and models live. [default: the platform of --url or $FERMION_URL, else $FERMION_HOME or ~/.fermion]",
        show_default=False,
    ),
]


def _store(data_dir: Path | None) -> DatasetStore:
    from fermion.data import DatasetStore
    from fermion.platform.home import default_data_dir

    return DatasetStore((data_dir or default_data_dir()) / "datasets")


@data_app.command("add", cls=renamed_options({"-n": "--name"}))
def add(
    source: Annotated[
        str,
        typer.Argument(
            help="A .csv, .jsonl or .parquet file, an image folder or .zip (one sub-folder per label), or sample:NAME."
        ),
    ],
    name: Annotated[str | None, typer.Option("--name", help="Dataset name (default: the file or folder name).")] = None,
    url: UrlOption = None,
    token: TokenOption = None,
    data_dir: DataDir = None,
    ca_cert: CaCertOption = None,
) -> None:
    """Validate a file, folder or sample and store it as a new immutable version (NAME@V), here or on the platform."""
    place = resolve_place(url, token, data_dir)
    if place.remote:
        from fermion.cli.platform import connect

        with connect(place.url, place.token) as platform:
            # The spinner goes to stderr so stdout stays the result alone.
            with err.status(f"uploading {escape(source)} to {escape(platform.url)}…", spinner="dots"):
                added = upload(platform, source, name)
        _print_added(added, added["created"], [c["name"] for c in added["columns"]], _counts(added["labels"]))
        return
    from fermion.data import DatasetError

    store = _store(place.data_dir)
    before = {v.ref for v in store.list()}
    try:
        with err.status(f"adding {escape(source)} (checking, hashing, copying)…", spinner="dots"):
            version = store.add(source, name=name)
    except DatasetError as exc:
        fail(exc.message, 2)
    except OSError as exc:
        fail(f"could not add {source}: {exc}", 2)
    summary = version.summary()
    _print_added(summary, version.ref not in before, summary["columns"], version.labels)


def upload(platform: Platform, source: str, name: str | None) -> dict[str, Any]:
    """Add SOURCE on the platform: a sample by name, a file as it is, an image folder as a zip; the API's answer."""
    import shutil
    import tempfile

    folder = Path(source).expanduser()
    try:
        if source.startswith("sample:") or not folder.is_dir():
            return platform.datasets.add(source, name=name)
        with tempfile.TemporaryDirectory(prefix="fermion-upload-") as work:
            archive = shutil.make_archive(str(Path(work) / folder.resolve().name), "zip", folder.parent, folder.name)
            return platform.datasets.add(archive, name=name)
    except FileNotFoundError as exc:
        fail(str(exc), 2)


def _counts(labels: dict[str, Any] | None) -> dict[str, int] | None:
    """Label counts from either shape: {label: n} (a version) or {label: {"count": n, ...}} (a description)."""
    if not labels:
        return None
    return {k: v["count"] if isinstance(v, dict) else int(v) for k, v in labels.items()}


def _print_added(summary: dict[str, Any], created: bool, columns: list[str], labels: dict[str, int] | None) -> None:
    unit = "images" if summary["kind"] == "images" else "rows"
    if not created:
        out.print(f"already there: {summary['ref']} ({summary['rows']} {unit}, hash {summary['hash'][:12]})", markup=False)
        return
    out.print(f"added {summary['ref']}: {summary['rows']} {unit}, {len(columns)} columns ({', '.join(columns)})", markup=False)
    if labels:
        out.print(f"labels: {_labels_line(labels)}", markup=False)


def _labels_line(labels: dict[str, int], limit: int = 12) -> str:
    items = [f"{k}={n}" for k, n in labels.items()]
    return ", ".join(items[:limit]) + (f" and {len(items) - limit} more" if len(items) > limit else "")


@data_app.command("ls")
def ls(
    json_output: JsonOption = False,
    url: UrlOption = None,
    token: TokenOption = None,
    data_dir: DataDir = None,
    ca_cert: CaCertOption = None,
) -> None:
    """List every dataset version: name, version, kind, rows, columns, hash prefix and when it was added."""
    place = resolve_place(url, token, data_dir)
    if place.remote:
        from fermion.cli.platform import connect

        with connect(place.url, place.token) as platform:
            versions = platform.datasets.list()
    else:
        versions = [v.summary() for v in _store(place.data_dir).list()]
    if json_output:
        print_json(versions)
        return
    if not versions:
        out.print("no datasets yet; add one with: fermion data add FILE (or sample:iris)")
        return
    table = Table(title="Datasets")
    for column in ("name", "version", "kind", "rows", "columns", "hash", "created"):
        table.add_column(column, justify="right" if column in ("version", "rows", "columns") else "left")
    for v in versions:
        table.add_row(
            escape(v["name"]),
            str(v["version"]),
            v["kind"],
            str(v["rows"]),
            str(len(v["columns"])),
            v["hash"][:12],
            v["created_at"][:16].replace("T", " "),
        )
    out.print(table)


@data_app.command("show")
def show(
    ref: Annotated[str, typer.Argument(help="NAME@V, or NAME for its latest version.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the description as JSON.")] = False,
    url: UrlOption = None,
    token: TokenOption = None,
    data_dir: DataDir = None,
    ca_cert: CaCertOption = None,
) -> None:
    """Describe a dataset version: schema with dtypes and missing values, label balance and the first rows."""
    from fermion.data import DatasetError

    place = resolve_place(url, token, data_dir)
    if place.remote:
        from fermion.cli.platform import connect

        with connect(place.url, place.token) as platform:
            info = platform.datasets.get(ref)
    else:
        try:
            info = _store(place.data_dir).describe(ref)
        except DatasetError as exc:
            fail(exc.message, 2)
    if as_json:
        print(json.dumps(info, indent=2, default=str))
        return
    unit = "images" if info["kind"] == "images" else "rows"
    out.print(f"[bold]{info['ref']}[/]  {info['kind']} ({info['format']}), {info['rows']} {unit}, hash {info['hash'][:12]}")
    out.print(f"source {escape(info['source'])}, added {info['created_at']}", markup=True)
    schema = Table(title="Schema")
    schema.add_column("column")
    schema.add_column("dtype")
    schema.add_column("missing", justify="right")
    for column in info["columns"]:
        schema.add_row(escape(column["name"]), column["dtype"], str(column["missing"]))
    out.print(schema)
    if info["labels"]:
        balance = Table(title=f"Label balance ({escape(str(info['label_column']))})")
        balance.add_column("label")
        balance.add_column("count", justify="right")
        balance.add_column("share", justify="right")
        for label, entry in info["labels"].items():
            balance.add_row(escape(label), str(entry["count"]), f"{entry['share']:.1%}")
        out.print(balance)
    if info["preview"]:
        preview = Table(title=f"First {len(info['preview'])} rows")
        keys = list(info["preview"][0])
        for key in keys:
            preview.add_column(escape(key))
        for row in info["preview"]:
            preview.add_row(*(escape(_cell(row.get(k))) for k in keys))
        out.print(preview)


def _cell(value: Any) -> str:
    return "" if value is None else str(value)
