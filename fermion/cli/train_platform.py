"""`fermion train` with `--url` or `$FERMION_URL`: the training runs on that platform, followed over its REST API.

A file or sample is added on the platform first (`fermion data add`'s upload); the job's progress is
polled and shown with the same bar (or the same `--progress-json` lines) as a local training; the
model lands in the platform's registry, where `fermion deploy NAME model:NAME@V` finds it.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.markup import escape

from fermion.cli.app import err, out
from fermion.cli.platform import connect, exit_code, fail_with

if TYPE_CHECKING:
    from fermion.cli.place import Place
    from fermion.client.platform import Platform
    from fermion.train import TrainOptions

#: Seconds between two looks at a running job.
POLL_S = 0.5
FINISHED = ("succeeded", "failed", "cancelled")


class TrainingFailed(Exception):
    """The job on the platform failed or was cancelled; the message is its error."""


def train_on_platform(place: Place, dataset: str, options: TrainOptions, emit: Any, *, deploy: str | None, public: bool) -> None:
    """Add `dataset` on the platform if it is a file or sample, train there, print the result; then --deploy."""
    from fermion.cli.train_output import deploy_model, fail_training, print_result, with_progress_bar
    from fermion.client.platform import PlatformAPIError

    with connect(place.url, place.token) as platform:
        try:
            ref = _dataset_ref(platform, dataset, emit)
            job = platform.trainings.start(
                ref,
                options.target,
                budget_s=options.budget_s,
                metric=options.metric,
                name=options.name,
                seed=options.seed,
                max_trials=options.max_trials,
                task=options.task,
            )
        except PlatformAPIError as exc:
            if emit is not None:
                emit({"phase": "error", "message": exc.message})
            fail_with(exc.message, exit_code(exc))
        try:
            if emit is None:
                err.print(f"training {escape(job['dataset'])} on {escape(platform.url)} as job {escape(job['id'])}", markup=True)
                job = with_progress_bar(lambda progress: follow(platform, job["id"], progress), options.budget_s)
            else:
                emit({"phase": "queued", "job": job["id"], "dataset": ref, "platform": platform.url})
                job = follow(platform, job["id"], emit)
        except TrainingFailed as exc:
            fail_training(str(exc), emit)
        except KeyboardInterrupt:
            platform.trainings.cancel(job["id"])
            err.print(f"stopped: training job {escape(job['id'])} on {escape(platform.url)} is cancelled", markup=True)
            raise typer.Exit(130) from None
        model = platform.models.get(job["model"])
    if emit is not None:
        summary = {key: model.get(key) for key in ("ref", "name", "version", "source", "dataset", "target", "task", "family")}
        emit({"phase": "registered", "model": model["ref"], "summary": {**summary, "metrics": model.get("metrics")}})
    else:
        report = f"fermion report {model['ref']} --output {model['ref'].replace('@', '-')}.html"
        print_result(model["ref"], model["source"], model, report, serve=False)
    if deploy:
        deploy_model(deploy, model["source"], public, place.url, place.token, None)


def _dataset_ref(platform: Platform, dataset: str, emit: Any) -> str:
    """NAME or NAME@V as the platform knows it: a file, folder or sample: is uploaded (added) first."""
    from fermion.cli.data import upload

    if not dataset.startswith("sample:") and not Path(dataset).expanduser().exists():
        return dataset  # a stored dataset's name: the platform says if it has none
    with err.status(f"uploading {escape(dataset)} to {escape(platform.url)}…"):
        added = upload(platform, dataset, None)
    if emit is None and added["created"]:
        unit = "images" if added["kind"] == "images" else "rows"
        out.print(f"added dataset {added['ref']} on {platform.url}: {added['rows']} {unit}", markup=False)
    return added["ref"]


def follow(platform: Platform, job_id: str, progress: Any) -> dict[str, Any]:
    """Poll the job until it has finished, calling `progress` with each change; the finished job, or `TrainingFailed`."""
    last: dict[str, Any] | None = None
    while True:
        job = platform.trainings.get(job_id)
        event = {
            "phase": job.get("phase") or job["status"],
            "status": job["status"],
            "elapsed": job.get("elapsed"),
            "metric": job.get("metric_used"),
            "trials": job.get("trial_count", 0),
            "best_score": job.get("best_score"),
            "best_family": job.get("best_family"),
        }
        if event != last:
            progress(event)
            last = event
        if job["status"] == "succeeded":
            return job
        if job["status"] in FINISHED:
            raise TrainingFailed(f"training job {job_id} {job['status']}: {job.get('error') or 'no error was recorded'}")
        time.sleep(POLL_S)
