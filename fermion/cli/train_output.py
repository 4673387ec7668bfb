"""What `fermion train` and `fermion models` show: the progress bar, the result, and the deploy that follows.

Shared by training here (`train`) and on a platform (`train_platform`), and by `fermion models`.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any, NoReturn

from rich.markup import escape
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from fermion.cli.app import err, fail, out


def format_score(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, (int, float)) else "—"


def fail_training(message: str, emit: Any) -> NoReturn:
    if emit is not None:
        emit({"phase": "error", "message": message})
    fail(message, 2)


PHASES = {
    "prepare": "preparing the data",
    "embed": "embedding the text columns (all-MiniLM-L6-v2)",
    "search": "searching",
    "refit": "fitting the best model on all training rows",
    "evaluate": "testing on held-out rows",
    "save": "saving to the registry",
    "done": "done",
}


def with_progress_bar(run: Any, budget_s: float) -> Any:
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


def deploy_model(name: str, source: str, public: bool, url: str | None, token: str | None, data_dir: Path | None) -> None:
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


def local_model(ref: str, data_dir: Path | None) -> Any:
    """Model version REF of the local data dir's registry, or one red line."""
    from fermion.platform.home import default_data_dir
    from fermion.train import ModelRegistry, TrainingError

    try:
        return ModelRegistry((data_dir or default_data_dir()) / "models").get(ref)
    except TrainingError as exc:
        fail(exc.message, 2)
