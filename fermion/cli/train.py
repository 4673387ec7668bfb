"""`fermion train`: a dataset (or a file) to an evaluated, registered model, and optionally a live API."""

from __future__ import annotations

import json
import re
import sys
import threading
import time
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.markup import escape
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from fermion.cli.app import app, err, fail, out, renamed_options
from fermion.cli.data import DataDir
from fermion.cli.place import resolve_place
from fermion.cli.platform import CaCertOption, TokenOption, UrlOption

_BUDGET = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|sec|m|min|h)?\s*$", re.IGNORECASE)
_UNITS = {"s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600}


def parse_budget(text: str) -> float:
    """'60s', '2m', '1h' or plain seconds ('90') → seconds."""
    found = _BUDGET.match(text)
    if not found:
        raise ValueError(f"--budget {text!r} is not a duration; use e.g. 30s, 2m or 1h")
    return float(found.group(1)) * _UNITS[(found.group(2) or "s").lower()]


def format_score(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, (int, float)) else "—"


@app.command(cls=renamed_options({"-n": "--name", "--task": "--problem"}))
def train(
    dataset: Annotated[
        str, typer.Argument(help="A stored dataset (NAME or NAME@V), or a file, image folder, zip or sample:NAME to add first.")
    ],
    target: Annotated[
        str | None, typer.Option("--target", "-t", help="The column to predict (image sets: leave out, the folder is the label).")
    ] = None,
    budget: Annotated[str, typer.Option(help="Wall-clock time for the search, refit and evaluation: 30s, 2m, 1h.")] = "60s",
    metric: Annotated[
        str | None,
        typer.Option(
            help="Choose models by: accuracy, f1_macro, roc_auc, log_loss, rmse, mae, r2. [default: roc_auc for two classes, log_loss for more, rmse for numbers]",
            show_default=False,
        ),
    ] = None,
    name: Annotated[
        str | None,
        typer.Option("--name", help="The model's name in the registry. [default: the dataset's name]", show_default=False),
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed for the splits, the search and the models.")] = 0,
    max_trials: Annotated[
        int | None,
        typer.Option(
            "--max-trials",
            help="Stop after N trials (with --seed: the same model on every machine that finishes them).",
            show_default=False,
        ),
    ] = None,
    problem: Annotated[
        str | None,
        typer.Option(
            help="classification or regression. [default: inferred from the target] "
            "(--task is the pipeline task of hf: sources on serve and deploy)",
            show_default=False,
        ),
    ] = None,
    deploy: Annotated[
        str | None,
        typer.Option(
            "--deploy",
            help="Then deploy the model as NAME: on the platform it was trained on, or the `fermion up` of the local data dir.",
            show_default=False,
        ),
    ] = None,
    public: Annotated[bool, typer.Option("--public", help="With --deploy: callable without a token.")] = False,
    progress_json: Annotated[
        bool, typer.Option("--progress-json", help="Print progress as JSON lines on stdout (for programs).")
    ] = False,
    url: UrlOption = None,
    token: TokenOption = None,
    data_dir: DataDir = None,
    ca_cert: CaCertOption = None,
) -> None:
    """Train: search model families within the budget, test the best on held-out rows, register it as NAME@V.

    With --url or $FERMION_URL the training runs on that platform (the dataset is uploaded first, if it is a
    file); otherwise here, in the local data dir.
    """
    from fermion.data import DatasetError, DatasetStore
    from fermion.train import ModelRegistry, TrainingError, TrainOptions
    from fermion.train.run import dataset_for
    from fermion.train.run import train as run_training

    emit = _json_printer() if progress_json else None
    try:
        seconds = parse_budget(budget)
    except ValueError as exc:
        _fail(str(exc), emit)
    place = resolve_place(url, token, data_dir)
    options = TrainOptions(target=target, budget_s=seconds, metric=metric, name=name, seed=seed, max_trials=max_trials, task=problem)
    if place.remote:
        from fermion.cli.train_platform import train_on_platform

        train_on_platform(place, dataset, options, emit, deploy=deploy, public=public)
        return
    assert place.data_dir is not None
    folder = place.data_dir
    datasets, registry = DatasetStore(folder / "datasets"), ModelRegistry(folder / "models")
    try:
        version, added = dataset_for(dataset, datasets)
    except DatasetError as exc:
        _fail(exc.message, emit)
    if added and emit is None:
        out.print(f"added dataset {version.ref}: {version.rows} {'images' if version.kind == 'images' else 'rows'}", markup=False)
    try:
        if emit is not None:
            model = run_training(version, options, datasets=datasets, registry=registry, progress=emit)
        else:
            model = _with_progress_bar(
                lambda progress: run_training(version, options, datasets=datasets, registry=registry, progress=progress), seconds
            )
    except (TrainingError, DatasetError) as exc:
        _fail(exc.message, emit)
    if emit is not None:
        emit({"phase": "registered", "model": model.ref, "summary": model.summary()})
    else:
        print_result(model.ref, model.source, model.manifest, str(model.report_file))
    if deploy:
        from fermion.platform.home import read_up_file

        # The `fermion up` of this data dir: it finds the model there.
        up = read_up_file(folder)
        _deploy(deploy, model.source, public, str(up["url"]) if up and up.get("url") else None, token, folder)


def _fail(message: str, emit: Any) -> NoReturn:
    if emit is not None:
        emit({"phase": "error", "message": message})
    fail(message, 2)


def _json_printer() -> Any:
    lock = threading.Lock()

    def emit(event: dict[str, Any]) -> None:
        with lock:
            sys.stdout.write(json.dumps(event, default=str) + "\n")
            sys.stdout.flush()

    return emit


PHASES = {
    "prepare": "preparing the data",
    "embed": "embedding the text columns (all-MiniLM-L6-v2)",
    "search": "searching",
    "refit": "fitting the best model on all training rows",
    "evaluate": "testing on held-out rows",
    "save": "saving to the registry",
    "done": "done",
}


def _with_progress_bar(run: Any, budget_s: float) -> Any:
    """Run `run(progress)` in a thread while a bar shows time used, trials and the best score so far."""
    state: dict[str, Any] = {"phase": "prepare", "trials": 0, "best": None, "family": None, "metric": None}
    result: dict[str, Any] = {}

    def progress(event: dict[str, Any]) -> None:
        state["phase"] = event.get("phase", state["phase"])
        if "metric" in event:
            state["metric"] = event["metric"]
        if "trials" in event:
            state["trials"], state["best"], state["family"] = event["trials"], event["best_score"], event["best_family"]

    def work() -> None:
        try:
            result["model"] = run(progress)
        except BaseException as exc:  # re-raised in the main thread
            result["error"] = exc

    worker = threading.Thread(target=work, daemon=True)
    bar = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TimeElapsedColumn(),
        TextColumn("of {task.total:.0f}s"),
        console=err,
        transient=False,
    )
    started = time.monotonic()
    with bar:
        task = bar.add_task("preparing the data", total=budget_s)
        worker.start()
        while worker.is_alive():
            worker.join(0.2)
            text = PHASES.get(state["phase"], state["phase"])
            if state["trials"]:
                best = (
                    f"best {state['metric']} {format_score(state['best'])} ({state['family']})"
                    if state["best"] is not None
                    else "no score yet"
                )
                text = f"{text} · {state['trials']} trial{'s' if state['trials'] != 1 else ''} · {best}"
            bar.update(task, completed=min(budget_s, time.monotonic() - started), description=escape(text))
        bar.update(task, completed=min(budget_s, time.monotonic() - started))
    if "error" in result:
        raise result["error"]
    return result["model"]


def print_result(ref: str, source: str, m: dict[str, Any], report: str, *, serve: bool = True) -> None:
    """What was trained (manifest `m`) and how good it is, where its `report` is, and how to serve it.

    `serve=False` for a model on a platform: `fermion serve` here would not find it.
    """
    from fermion.train.problem import METRICS

    out.print(
        f"[green]✓[/] registered [bold]{escape(ref)}[/]: {escape(m['family_label'])}, "
        f"{m['task']} of {escape(str(m['target']))!s} from {escape(m['dataset'])}",
        markup=True,
    )
    trials = m["trials"]
    out.print(
        f"  {len(trials)} trial{'s' if len(trials) != 1 else ''} in {m['training_seconds']:.1f}s (budget {m['budget_s']:g}s); "
        f"cross-validated {m['metric']['label']} {format_score(m['cv_score'])}",
        markup=False,
    )
    if m.get("note"):
        out.print(f"  note: {m['note']}", markup=False)
    table = Table(title=f"Test metrics ({m['rows']['test']} held-out rows)")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, value in m["metrics"].items():
        table.add_row(METRICS[key].label if key in METRICS else key, format_score(value))
    out.print(table)
    if m.get("ignored"):
        out.print("  left out: " + escape("; ".join(f"{k} ({v})" for k, v in m["ignored"].items())), markup=True)
    out.print(f"  Report  {report}", markup=False)
    if serve:
        out.print(f"  Serve   fermion serve {source}", markup=False)
    out.print(f"  Deploy  fermion deploy {ref.partition('@')[0]} {source}", markup=False)


def _deploy(name: str, source: str, public: bool, url: str | None, token: str | None, data_dir: Path | None) -> None:
    """Deploy `source` as `name` on that platform (a new deployment, or a new revision of the one there), and wait."""
    from fermion.cli.platform import connect
    from fermion.cli.platform_deploy import _finish
    from fermion.client.platform import NotFoundError

    with connect(url, token, data_dir=data_dir) as platform:
        try:
            platform.deployments.get(name)
        except NotFoundError:
            with err.status(f"checking that {escape(source)} loads…"):
                deployment = platform.deployments.create(name, source, public=public)
            _finish(platform, deployment, f"deployed {name} (revision {deployment.revision})", False, 300.0, None)
            return
        with err.status("checking that the new model loads…"):
            deployment = platform.deployments.update(name, source=source, public=public or None)
        _finish(
            platform,
            deployment,
            f"rolling out {source} to {name} as revision {deployment.revision}",
            False,
            300.0,
            deployment.revision,
        )


@app.command(cls=renamed_options({"--save": "--output"}))
def report(
    model: Annotated[str, typer.Argument(help="NAME@V, or NAME for its latest version.")],
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="Write the report (one self-contained HTML file) to this path.", show_default=False),
    ] = None,
    open_it: Annotated[bool, typer.Option("--open/--no-open", help="Open it in a web browser.")] = False,
    url: UrlOption = None,
    token: TokenOption = None,
    data_dir: DataDir = None,
    ca_cert: CaCertOption = None,
) -> None:
    """The evaluation report of a model version: metrics, confusion matrix, feature importance, the search.

    Prints the path of the HTML file: the registry's own, or where --output wrote it (from a platform,
    without --output: a temporary file).
    """
    import shutil

    place = resolve_place(url, token, data_dir)
    if place.remote:
        import tempfile

        from fermion.cli.platform import connect

        with connect(place.url, place.token) as platform:
            page = platform.models.report(model)
        path = output or Path(tempfile.mkdtemp(prefix="fermion-report-")) / f"{model.replace('@', '-')}.html"
        try:
            path.write_text(page, encoding="utf-8")
        except OSError as exc:
            fail(f"cannot write {path}: {exc.strerror or exc}", 2)
        path = path.resolve()
    else:
        path = local_model(model, place.data_dir).report_file
        if output is not None:
            try:
                shutil.copyfile(path, output)
            except OSError as exc:
                fail(f"cannot write {output}: {exc.strerror or exc}", 2)
            path = output.resolve()
    out.print(str(path), markup=False)
    if open_it:
        import webbrowser

        webbrowser.open(path.as_uri())


def local_model(ref: str, data_dir: Path | None) -> Any:
    """Model version REF of the local data dir's registry, or one red line."""
    from fermion.platform.home import default_data_dir
    from fermion.train import ModelRegistry, TrainingError

    try:
        return ModelRegistry((data_dir or default_data_dir()) / "models").get(ref)
    except TrainingError as exc:
        fail(exc.message, 2)
