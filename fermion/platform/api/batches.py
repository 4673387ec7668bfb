"""/batches: every row (or image) of a dataset through a deployment, stored as a new dataset (docs/batch.md).

The handlers are `async`: they run on the event loop that also runs the jobs (`fermion.platform.batches`)
and the gateway, so starting, reading and cancelling a job needs no lock; what blocks (reading a dataset's
manifest, the audit log) goes to a thread. A token narrowed to deployments sees and cancels only their
batches, and starts none: a batch reads a dataset, and datasets belong to no one deployment.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI
from pydantic import BaseModel, ConfigDict, Field

from fermion.platform.api.common import PREFIX, NarrowableDeployer
from fermion.platform.api.datasets import dataset_or_404, dataset_store
from fermion.platform.api.schemas import ErrorBody
from fermion.platform.auth import reach
from fermion.platform.batches import BatchJob, new_job_id
from fermion.platform.errors import Invalid, NotFound

if TYPE_CHECKING:
    from fermion.platform.controlplane import ControlPlane
    from fermion.platform.store.records import TokenRecord


class BatchCreate(BaseModel):
    """Start a batch job: it runs at once, in the background."""

    model_config = ConfigDict(extra="forbid")
    deployment: str = Field(description="The deployment to call.", examples=["churn"])
    dataset: str = Field(description="NAME or NAME@V of a stored dataset (a table, or an image set).", examples=["iris@1"])
    endpoint: str = Field(default="predict", max_length=200, description="The endpoint each row is sent to (a POST).")
    output: str | None = Field(
        default=None, description="The name of the dataset the results become (default: DATASET-DEPLOYMENT)."
    )
    concurrency: int | None = Field(
        default=None,
        ge=1,
        le=10_000,
        description="Rows in flight at once (default 4; at most the platform's cap, 32 by default).",
    )


def register(api: FastAPI, plane: ControlPlane) -> None:
    """Add /batches to the API."""
    from fermion.data import DatasetError
    from fermion.data.store import check_name, sanitize_name

    datasets = dataset_store(plane)
    jobs = plane.batches

    def mine(job_id: str, who: TokenRecord) -> BatchJob:
        job = jobs.get(job_id)
        if not who.reaches(job.deployment):  # as if it did not exist: a narrowed token learns no other deployment's jobs
            raise NotFound(f"no batch job {job_id!r}; list them with GET /api/v1/batches")
        return job

    @api.post(f"{PREFIX}/batches", status_code=202, tags=["batches"], responses={429: {"model": ErrorBody}})
    async def start_batch(body: BatchCreate, who: NarrowableDeployer) -> dict[str, Any]:
        """Run every row (or image) of a dataset through a deployment's endpoint; follow it with GET /batches/{id}.

        Checked at once: the deployment's endpoint takes the dataset's columns (422 naming what is missing), the rows
        and the concurrency are within the platform's caps (422), and the token and the platform have room for
        another job (429 with Retry-After).
        """
        reach(who, None, "starting a batch (it reads a dataset, and datasets belong to no one deployment)")
        if body.output is not None:
            try:
                check_name(body.output)
            except DatasetError as exc:
                raise Invalid(exc.message.replace("dataset name", "output name")) from None
        job = BatchJob(
            id=new_job_id(),
            deployment=body.deployment,
            dataset=body.dataset,
            endpoint=body.endpoint.strip("/"),
            output=body.output or "",
            concurrency=body.concurrency or jobs.limits.default_concurrency,
            requested_by=who.name,
            token_id=who.id,
        )
        jobs.check_room(job)  # before anything is read: a full platform answers at once
        if plane.routes.get(body.deployment) is None or not who.reaches(body.deployment):
            raise NotFound(f"no deployment named {body.deployment!r}; `fermion ls` lists them")
        try:
            version = await asyncio.to_thread(dataset_or_404, datasets, body.dataset)
        except NotFound:
            if who.narrowed:  # it may not list datasets, so the 404 names none
                raise NotFound(f"no dataset {body.dataset!r}") from None
            raise
        jobs.check_rows(version)
        shape = await jobs.shape(body.deployment, job.endpoint, version)
        job.dataset, job.kind, job.rows_total = version.ref, version.kind, version.rows
        job.output = job.output or sanitize_name(f"{version.name}-{body.deployment}")
        jobs.start(job, shape)
        details = {"job": job.id, "dataset": version.ref, "endpoint": job.endpoint, "output": job.output}
        await asyncio.to_thread(plane.store.audit, who.name, "batch.start", body.deployment, details)
        return job.view()

    @api.get(f"{PREFIX}/batches", tags=["batches"])
    async def list_batches(who: NarrowableDeployer) -> dict[str, Any]:
        """Batch jobs, newest first (a narrowed token's: of its deployments only)."""
        return {"batches": [j.view() for j in jobs.list() if who.reaches(j.deployment)]}

    @api.get(f"{PREFIX}/batches/{{job_id}}", tags=["batches"])
    async def get_batch(job_id: str, who: NarrowableDeployer) -> dict[str, Any]:
        """One job: status, rows done and failed, rows per second, seconds left, and the output dataset once stored."""
        return mine(job_id, who).view()

    @api.delete(f"{PREFIX}/batches/{{job_id}}", tags=["batches"])
    async def cancel_batch(job_id: str, who: NarrowableDeployer) -> dict[str, Any]:
        """Cancel a running job: it stops sending rows, and no dataset is stored."""
        job = jobs.cancel(mine(job_id, who).id)
        await asyncio.to_thread(plane.store.audit, who.name, "batch.cancel", job.deployment, {"job": job.id})
        return job.view()
