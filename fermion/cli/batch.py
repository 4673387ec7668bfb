"""`fermion batch` and `fermion batches`: run a dataset through a deployment on the platform, and follow the job.

The job runs on the platform (docs/batch.md); this command starts it and shows its progress, rows done,
rows per second and the time left, as the API reports them, until the output dataset is stored.
Ctrl+C stops following; `fermion batches cancel ID` cancels.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from fermion.cli.app import app, err, out
from fermion.cli.platform import (
    FAILED,
    CaCertOption,
    JsonOption,
    TokenOption,
    UrlOption,
    connect,
    fail_with,
    print_json,
    print_table,
    styled_status,
)

if TYPE_CHECKING:
    from fermion.client.platform import Platform

#: Seconds between two looks at a running job.
POLL_S = 0.5

batches_app = typer.Typer(help="List, follow and cancel batch jobs on the platform.", no_args_is_help=True)
app.add_typer(batches_app, name="batches")

JobArgument = Annotated[
    str, typer.Argument(help="The batch job's id (b-...), as `fermion batch` printed it.", show_default=False)
]


@app.command("batch")
def batch(
    deployment: Annotated[str, typer.Argument(help="The deployment that answers each row.", show_default=False)],
    dataset: Annotated[str, typer.Argument(help="NAME or NAME@V of a dataset on the platform.", show_default=False)],
    endpoint: Annotated[str, typer.Option(help="The endpoint each row is sent to.")] = "predict",
    output: Annotated[
        str | None, typer.Option(help="The name of the dataset the results become (default: DATASET-DEPLOYMENT).")
    ] = None,
    concurrency: Annotated[
        int | None, typer.Option(min=1, help="Rows in flight at once (default 4; at most the platform's cap).")
    ] = None,
    detach: Annotated[
        bool, typer.Option("--detach", help="Start the job and return; follow it with `fermion batches watch`.")
    ] = False,
    json_output: JsonOption = False,
    url: UrlOption = None,
    token: TokenOption = None,
    ca_cert: CaCertOption = None,
) -> None:
    """Run every row (or image) of a dataset through a deployment's endpoint; the inputs with their outputs
    (and each row's error) become a new dataset version."""
    with connect(url, token) as platform:
        job = platform.batches.start(deployment, dataset, endpoint=endpoint, output=output, concurrency=concurrency)
        if detach:
            print_json(job) if json_output else out.print(f"started batch job {job['id']}", markup=False)
            return
        if not json_output:
            err.print(
                f"batch job {escape(job['id'])}: {escape(job['dataset'])} through {escape(deployment)}/{escape(endpoint)}",
                markup=True,
            )
        job = follow(platform, job, quiet=json_output)
    finished(job, json_output)


@batches_app.command("ls")
def list_batches(
    json_output: JsonOption = False, url: UrlOption = None, token: TokenOption = None, ca_cert: CaCertOption = None
) -> None:
    """List batch jobs, newest first: status, rows done and failed, and the output dataset."""
    with connect(url, token) as platform:
        jobs = platform.batches.list()
    if json_output:
        print_json(jobs)
        return
    if not jobs:
        out.print("no batch jobs yet: start one with `fermion batch DEPLOYMENT DATASET`")
        return
    table = Table(box=None, pad_edge=False, show_edge=False, header_style="bold")
    for column in ("ID", "STATUS", "DEPLOYMENT", "DATASET", "ROWS", "FAILED", "OUTPUT"):
        table.add_column(column, no_wrap=True)
    for job in jobs:
        table.add_row(
            Text(job["id"], "bold"),
            styled_status(job["status"]),
            Text(f"{job['deployment']}/{job['endpoint']}"),
            Text(job["dataset"]),
            Text(f"{job['rows_done']}/{job['rows_total']}"),
            Text(str(job["rows_failed"])),
            Text(job["result"] or job["error"] or "-"),
        )
    print_table(table)


@batches_app.command("watch")
def watch_batch(
    job_id: JobArgument,
    json_output: JsonOption = False,
    url: UrlOption = None,
    token: TokenOption = None,
    ca_cert: CaCertOption = None,
) -> None:
    """Follow a batch job with a progress bar until it has finished."""
    with connect(url, token) as platform:
        job = follow(platform, platform.batches.get(job_id), quiet=json_output)
    finished(job, json_output)


@batches_app.command("cancel")
def cancel_batch(job_id: JobArgument, url: UrlOption = None, token: TokenOption = None, ca_cert: CaCertOption = None) -> None:
    """Cancel a running batch job: it sends no more rows, and no dataset is stored."""
    with connect(url, token) as platform:
        job = platform.batches.cancel(job_id)
    out.print(
        f"batch job {job['id']} is {job['status']} ({job['rows_done']} of {job['rows_total']} rows were done)", markup=False
    )


def follow(platform: Platform, job: dict[str, Any], quiet: bool = False) -> dict[str, Any]:
    """Poll the job until it has finished, with a bar of rows done, rows/s and the time left (none when `quiet`)."""
    bar = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed:,.0f}/{task.total:,.0f} rows"),
        TextColumn("{task.fields[rate]}"),
        TextColumn("{task.fields[eta]}"),
        TextColumn("[red]{task.fields[failed]}"),
        TimeElapsedColumn(),
        console=err,
        disable=quiet,
        transient=False,
    )
    try:
        with bar:
            task = bar.add_task("batch", total=job["rows_total"] or None, rate="", eta="", failed="")
            while job["status"] == "running":
                time.sleep(POLL_S)
                job = platform.batches.get(job["id"])
                bar.update(task, total=job["rows_total"] or None, completed=job["rows_done"], **progress_fields(job))
    except KeyboardInterrupt:
        err.print(
            f"stopped following; batch job {escape(job['id'])} runs on (cancel it with `fermion batches cancel {escape(job['id'])}`)",
            markup=True,
        )
        raise typer.Exit(130) from None
    return job


def progress_fields(job: dict[str, Any]) -> dict[str, str]:
    """The bar's words for a job: rows/s, the time left, and how many rows failed."""
    rate, eta = job.get("rows_per_s"), job.get("eta_s")
    return {
        "rate": f"{rate:,.1f} rows/s" if rate else "",
        "eta": f"{eta:,.0f} s left" if eta is not None else "",
        "failed": f"{job['rows_failed']:,} failed" if job["rows_failed"] else "",
    }


def finished(job: dict[str, Any], json_output: bool) -> None:
    """Print the finished job (or its JSON); a job that did not succeed exits non-zero with its error."""
    if json_output:
        print_json(job)
    if job["status"] != "succeeded":
        fail_with(f"batch job {job['id']} {job['status']}: {job['error'] or 'no error was recorded'}", FAILED)
    if not json_output:
        failed = f", {job['rows_failed']} with an error (see the 'error' column)" if job["rows_failed"] else ""
        out.print(f"stored {job['result']}: {job['rows_done']} rows{failed}", markup=False)
        out.print(f"  fermion data show {job['result']}", markup=False)
