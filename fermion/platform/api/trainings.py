"""/trainings: queued, time-budgeted training jobs (docs/platform-api.md, "Build").

A job runs `fermion train` as a child process (`fermion.platform.trainings`); its model lands in
the registry that /models reads.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fastapi import FastAPI
from pydantic import BaseModel, ConfigDict, Field

from fermion.platform.api.common import PREFIX, Deployer
from fermion.platform.api.datasets import dataset_or_404, dataset_store
from fermion.platform.api.schemas import ErrorBody
from fermion.platform.errors import Invalid
from fermion.platform.trainings import TrainingJob, TrainingJobs, new_job_id

if TYPE_CHECKING:
    from fermion.data import DatasetStore
    from fermion.platform.controlplane import ControlPlane


class TrainingCreate(BaseModel):
    """Start a training job; it is queued and runs in the background."""

    model_config = ConfigDict(extra="forbid")
    dataset: str = Field(description="NAME or NAME@V of a stored dataset.", examples=["iris@1"])
    target: str | None = Field(default=None, description="The column to predict (default: the dataset's label column).")
    budget_s: float = Field(
        default=60.0,
        ge=2,
        le=24 * 3600,
        description="Seconds for the search, refit and evaluation; at most the platform's cap "
        "(`fermion up --max-training-budget`, 1 hour by default).",
    )
    metric: str | None = Field(default=None, description="accuracy, f1_macro, roc_auc, log_loss, rmse, mae or r2.")
    name: str | None = Field(default=None, description="The model's name (default: the dataset's).")
    seed: int = Field(default=0, ge=0, le=2**31 - 1)
    max_trials: int | None = Field(default=None, ge=1, le=100000)
    task: str | None = Field(default=None, description="classification or regression (default: inferred).")


def check_training(datasets: DatasetStore, version: Any, body: TrainingCreate) -> str | None:
    """The target column (resolved when left out); 422 at once for a wrong target, metric or task."""
    from fermion.data import DatasetError
    from fermion.train import TrainingError
    from fermion.train.problem import CLASSIFICATION, choose_metric, find_target, infer_task

    if version.kind == "images":
        if body.target not in (None, "label"):
            raise Invalid(f"{version.ref} is an image set: its target is the folder name ('label'); leave target out")
        task, classes = CLASSIFICATION, len(version.labels or {})
        target = "label"
    else:
        try:
            target = find_target([c["name"] for c in version.columns], body.target, version.extra.get("label_column"))
            column = datasets.load_table(version)[target]
            task = infer_task(column, target, body.task)
        except (TrainingError, DatasetError) as exc:
            raise Invalid(exc.message) from None
        classes = int(column.nunique())
    try:
        choose_metric(body.metric, task, classes)
    except TrainingError as exc:
        raise Invalid(exc.message) from None
    return target


def register(api: FastAPI, plane: ControlPlane) -> None:
    """Add /trainings to the API."""
    datasets = dataset_store(plane)
    jobs: TrainingJobs = plane.trainings

    @api.post(f"{PREFIX}/trainings", status_code=202, tags=["trainings"], responses={429: {"model": ErrorBody}})
    def start_training(body: TrainingCreate, who: Deployer) -> dict[str, Any]:
        """Queue a training job; follow it with GET /trainings/{id}. The target and metric are checked at once.

        The queue is bounded: a budget over the platform's cap gets 422; a token with too many jobs queued or
        running, or a full queue, gets 429 with Retry-After.
        """
        job = TrainingJob(
            id=new_job_id(),
            dataset=body.dataset,
            target=body.target,
            budget_s=body.budget_s,
            metric=body.metric,
            name=body.name,
            seed=body.seed,
            max_trials=body.max_trials,
            task=body.task,
            requested_by=who.name,
            token_id=who.id,
        )
        jobs.check_room(job)  # before reading the dataset: a full queue answers at once
        version = dataset_or_404(datasets, body.dataset)
        target = check_training(datasets, version, body)
        job.dataset, job.target = version.ref, target
        jobs.submit(job)
        plane.store.audit(who.name, "training.start", version.ref, {"job": job.id, "target": target, "budget_s": body.budget_s})
        return job.view()

    @api.get(f"{PREFIX}/trainings", tags=["trainings"])
    def list_trainings(_who: Deployer) -> dict[str, Any]:
        """Training jobs, newest first (without their trial lists)."""
        return {"trainings": [j.view(with_trials=False) for j in jobs.list()]}

    @api.get(f"{PREFIX}/trainings/{{job_id}}", tags=["trainings"])
    def get_training(job_id: str, _who: Deployer) -> dict[str, Any]:
        """One job: status, phase, elapsed seconds, every trial so far, the best score, and the model once registered."""
        return jobs.get(job_id).view()

    @api.delete(f"{PREFIX}/trainings/{{job_id}}", tags=["trainings"])
    def cancel_training(job_id: str, who: Deployer) -> dict[str, Any]:
        """Cancel a queued or running job; nothing is registered."""
        job = jobs.cancel(job_id)
        plane.store.audit(who.name, "training.cancel", job.dataset, {"job": job.id})
        return job.view()
