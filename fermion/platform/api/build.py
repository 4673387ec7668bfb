"""The REST API for datasets, training jobs and the model registry (docs/platform-api.md, "Build").

Datasets and models live in the platform's data dir (`datasets/`, `models/`), the same folders the
CLI's `fermion data`, `fermion train` and `fermion models` use; training runs as a queued child
process (`fermion.platform.trainings`).
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import FastAPI, File, Form, UploadFile
from fastapi.responses import FileResponse, JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field

from fermion.platform.api.app import PREFIX, Deployer, Invoker
from fermion.platform.api.schemas import ErrorBody
from fermion.platform.errors import Invalid, NotFound
from fermion.platform.trainings import TrainingJob, TrainingJobs, new_job_id

if TYPE_CHECKING:
    from fermion.platform.controlplane import ControlPlane


class DatasetSample(BaseModel):
    """Add a bundled sample (no upload): `{"source": "sample:iris"}`."""

    model_config = ConfigDict(extra="forbid")
    source: str = Field(
        description="sample:iris, sample:wine, sample:breast_cancer, sample:digits or sample:diabetes.",
        examples=["sample:iris"],
        json_schema_extra={"pattern": "^sample:"},  # documented; the API names the samples when one is unknown
    )
    name: str | None = Field(default=None, description="Dataset name (default: the sample's name).")


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


def register_build(api: FastAPI, plane: ControlPlane) -> None:
    """Add /datasets, /trainings and /models to the API."""
    from fermion.data import DatasetError, DatasetStore
    from fermion.train import ModelRegistry, TrainingError

    data_dir: Path = plane.data_dir
    datasets = DatasetStore(data_dir / "datasets")
    registry = ModelRegistry(data_dir / "models")
    jobs: TrainingJobs = plane.trainings

    def dataset_or_404(ref: str) -> Any:
        try:
            return datasets.get(ref)
        except DatasetError as exc:
            raise NotFound(exc.message) from None

    def check_training(version: Any, body: TrainingCreate) -> str | None:
        """The target column (resolved when left out); 422 at once for a wrong target, metric or task."""
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

    def model_or_404(ref: str) -> Any:
        try:
            return registry.get(ref)
        except TrainingError as exc:
            raise NotFound(exc.message) from None

    # -- datasets ----------------------------------------------------------------------------------

    @api.get(f"{PREFIX}/datasets", tags=["datasets"])
    def list_datasets(_who: Invoker) -> dict[str, Any]:
        """Every dataset version, oldest first per name."""
        return {"datasets": [v.summary() for v in datasets.list()]}

    existing = {200: {"description": "The same content was added before: that version"}}

    @api.post(f"{PREFIX}/datasets", status_code=201, tags=["datasets"], responses=existing)
    def add_dataset_upload(
        who: Deployer,
        file: Annotated[
            UploadFile, File(description="A .csv, .jsonl, .parquet file, or a .zip of image folders (one per label).")
        ],
        name: Annotated[str | None, Form(description="Dataset name (default: from the file name).")] = None,
    ) -> JSONResponse:
        """Upload a file as a new dataset version (the same content again returns the existing version, 200)."""
        filename = Path(file.filename or "upload").name
        with tempfile.TemporaryDirectory(prefix="upload-", dir=_staging(datasets.root)) as folder:
            path = Path(folder) / filename
            with open(path, "wb") as target:
                shutil.copyfileobj(file.file, target, 1 << 20)
            return add(path, name, who.name, filename)

    @api.post(f"{PREFIX}/datasets/samples", status_code=201, tags=["datasets"], responses=existing)
    def add_dataset_sample(body: DatasetSample, who: Deployer) -> JSONResponse:
        """Add one of the bundled offline samples as a dataset version."""
        if not body.source.startswith("sample:"):
            raise Invalid(f"source {body.source!r} is not a sample; upload files with multipart POST {PREFIX}/datasets")
        return add(body.source, body.name, who.name, body.source)

    def add(source: Any, name: str | None, actor: str, label: str) -> JSONResponse:
        before = {v.ref for v in datasets.list()}
        try:
            version = datasets.add(source, name=name)
        except DatasetError as exc:
            raise Invalid(exc.message.replace(str(source), label) if label != str(source) else exc.message) from None
        created = version.ref not in before
        if created:
            plane.store.audit(actor, "dataset.add", version.ref, {"source": label, "rows": version.rows})
        described = datasets.describe(version)
        described.pop("path", None)  # the server's file system is not the caller's business
        return JSONResponse({**described, "created": created}, status_code=201 if created else 200)

    @api.get(f"{PREFIX}/datasets/{{ref}}", tags=["datasets"])
    def get_dataset(ref: str, _who: Invoker) -> dict[str, Any]:
        """Schema, rows, missing values, label balance and the first rows of NAME or NAME@V."""
        version = dataset_or_404(ref)
        described = datasets.describe(version)
        described.pop("path", None)
        return described

    # -- trainings ---------------------------------------------------------------------------------

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
        version = dataset_or_404(body.dataset)
        target = check_training(version, body)
        job.dataset, job.target = version.ref, target
        jobs.submit(job)
        plane.store.audit(who.name, "training.start", version.ref, {"job": job.id, "target": target, "budget_s": body.budget_s})
        return job.view()

    @api.get(f"{PREFIX}/trainings", tags=["trainings"])
    def list_trainings(_who: Invoker) -> dict[str, Any]:
        """Training jobs, newest first (without their trial lists)."""
        return {"trainings": [j.view(with_trials=False) for j in jobs.list()]}

    @api.get(f"{PREFIX}/trainings/{{job_id}}", tags=["trainings"])
    def get_training(job_id: str, _who: Invoker) -> dict[str, Any]:
        """One job: status, phase, elapsed seconds, every trial so far, the best score, and the model once registered."""
        return jobs.get(job_id).view()

    @api.delete(f"{PREFIX}/trainings/{{job_id}}", tags=["trainings"])
    def cancel_training(job_id: str, who: Deployer) -> dict[str, Any]:
        """Cancel a queued or running job; nothing is registered."""
        job = jobs.cancel(job_id)
        plane.store.audit(who.name, "training.cancel", job.dataset, {"job": job.id})
        return job.view()

    # -- models ------------------------------------------------------------------------------------

    @api.get(f"{PREFIX}/models", tags=["models"])
    def list_models(_who: Invoker) -> dict[str, Any]:
        """Every registered model version with its dataset, task, family and test metrics."""
        return {"models": [v.summary() for v in registry.list()]}

    @api.get(f"{PREFIX}/models/{{ref}}", tags=["models"])
    def get_model(ref: str, _who: Invoker) -> dict[str, Any]:
        """Everything about NAME or NAME@V: metrics, parameters, inputs, trials, confusion matrix, importance, libraries."""
        version = model_or_404(ref)
        return {
            **version.manifest,
            "ref": version.ref,
            "source": version.source,
            "report_url": f"{PREFIX}/models/{version.ref}/report",
        }

    # Only the 200 is HTML: the errors are JSON like everywhere else (response_class=HTMLResponse would document them as HTML).
    report_ok = {200: {"description": "The report page", "content": {"text/html": {"schema": {"type": "string"}}}}}

    @api.get(f"{PREFIX}/models/{{ref}}/report", tags=["models"], response_class=Response, responses=report_ok)
    def model_report(ref: str, _who: Invoker) -> FileResponse:
        """The evaluation report, one self-contained HTML page."""
        return FileResponse(model_or_404(ref).report_file, media_type="text/html; charset=utf-8")

    @api.get(f"{PREFIX}/models/{{ref}}/plots/{{plot}}", tags=["models"])
    def model_plot(ref: str, plot: str, _who: Invoker) -> FileResponse:
        """One of the report's plots as PNG (search.png, confusion.png, importance.png, predictions.png)."""
        version = model_or_404(ref)
        if plot not in version.manifest.get("plots", []):
            raise NotFound(
                f"{version.ref} has no plot {plot!r}; it has: {', '.join(version.manifest.get('plots', [])) or 'none'}"
            )
        return FileResponse(version.path / "plots" / plot, media_type="image/png")


def _staging(root: Path) -> Path:
    folder = root / ".staging"
    folder.mkdir(parents=True, exist_ok=True)
    return folder

