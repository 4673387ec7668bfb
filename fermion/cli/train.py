"""`fermion train`: a dataset (or a file) to an evaluated, registered model, and optionally a live API."""

from __future__ import annotations

import json
import re
import sys
import threading
from pathlib import Path
from typing import Annotated, Any

import typer

from fermion.cli.app import app, fail, out, renamed_options
from fermion.cli.data import DataDir
from fermion.cli.place import resolve_place
from fermion.cli.platform import CaCertOption, TokenOption, UrlOption
from fermion.cli.train_output import deploy_model, fail_training, local_model, print_result, with_progress_bar

_BUDGET = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|sec|m|min|h)?\s*$", re.IGNORECASE)
_UNITS = {"s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600}


def parse_budget(text: str) -> float:
    """'60s', '2m', '1h' or plain seconds ('90') → seconds."""
    found = _BUDGET.match(text)
    if not found:
        raise ValueError(f"--budget {text!r} is not a duration; use e.g. 30s, 2m or 1h")
    return float(found.group(1)) * _UNITS[(found.group(2) or "s").lower()]


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
        fail_training(str(exc), emit)
    place = resolve_place(url, token, data_dir)
    options = TrainOptions(
        target=target, budget_s=seconds, metric=metric, name=name, seed=seed, max_trials=max_trials, task=problem
    )
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
        fail_training(exc.message, emit)
    if added and emit is None:
        out.print(f"added dataset {version.ref}: {version.rows} {'images' if version.kind == 'images' else 'rows'}", markup=False)
    try:
        if emit is not None:
            model = run_training(version, options, datasets=datasets, registry=registry, progress=emit)
        else:
            model = with_progress_bar(
                lambda progress: run_training(version, options, datasets=datasets, registry=registry, progress=progress), seconds
            )
    except (TrainingError, DatasetError) as exc:
        fail_training(exc.message, emit)
    if emit is not None:
        emit({"phase": "registered", "model": model.ref, "summary": model.summary()})
    else:
        print_result(model.ref, model.source, model.manifest, str(model.report_file))
    if deploy:
        from fermion.platform.home import read_up_file

        # The `fermion up` of this data dir: it finds the model there.
        up = read_up_file(folder)
        deploy_model(deploy, model.source, public, str(up["url"]) if up and up.get("url") else None, token, folder)


def _json_printer() -> Any:
    lock = threading.Lock()

    def emit(event: dict[str, Any]) -> None:
        with lock:
            sys.stdout.write(json.dumps(event, default=str) + "\n")
            sys.stdout.flush()

    return emit


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
