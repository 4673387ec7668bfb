"""`platform.datasets`, `platform.trainings`, `platform.batches` and `platform.models`: the build side of the Python client.

    from fermion import Platform
    with Platform() as platform:
        data = platform.datasets.add("churn.csv")
        job = platform.trainings.start(data["ref"], target="churned", budget_s=60)
        job = platform.trainings.wait(job["id"])
        platform.deployments.create("churn", f"model:{job['model']}")
        batch = platform.batches.wait(platform.batches.start("churn", data["ref"])["id"])
        print(batch["result"])                          # the inputs with their predictions: a new dataset

Answers are the API's JSON objects (docs/platform-api.md, "Build").
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from fermion.client._errors import PlatformAPIError
from fermion.client.platform.transport import API, Transport, quote_name


def _path(text: str) -> str:
    return quote_name(text, safe="@")


class Datasets:
    """Upload files or add samples as dataset versions; list and describe them."""

    def __init__(self, transport: Transport) -> None:
        self._transport = transport

    def add(self, source: str | Path, name: str | None = None) -> dict[str, Any]:
        """Upload a CSV/JSONL/Parquet file or a zip of image folders, or add `sample:NAME`; `created` says if it is new."""
        text = str(source)
        if text.startswith("sample:"):
            return self._transport.request("POST", "/datasets/samples", body={"source": text, "name": name})
        path = Path(source).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"no file {text!r} to upload; give a .csv, .jsonl, .parquet or .zip file, or sample:NAME")
        with open(path, "rb") as handle:
            response = self._transport.send(
                "POST",
                API + "/datasets",
                files={"file": (path.name, handle)},
                data={"name": name} if name else None,
                timeout=None,
            )
        return self._transport.decode(response)

    def list(self) -> list[dict[str, Any]]:
        return self._transport.request("GET", "/datasets")["datasets"]

    def get(self, ref: str) -> dict[str, Any]:
        """Schema, rows, missing values, label balance and a preview of NAME or NAME@V."""
        return self._transport.request("GET", f"/datasets/{_path(ref)}")


class _Jobs:
    """What training and batch jobs share: get, list, cancel, and waiting until one has finished."""

    #: The collection under /api/v1, and the word for one job in errors.
    _resource = ""
    _what = ""

    def __init__(self, transport: Transport) -> None:
        self._transport = transport

    def get(self, job_id: str) -> dict[str, Any]:
        return self._transport.request("GET", f"/{self._resource}/{_path(job_id)}")

    def list(self) -> list[dict[str, Any]]:
        return self._transport.request("GET", f"/{self._resource}")[self._resource]

    def cancel(self, job_id: str) -> dict[str, Any]:
        return self._transport.request("DELETE", f"/{self._resource}/{_path(job_id)}")

    def wait(self, job_id: str, timeout: float | None = None, poll_s: float = 1.0) -> dict[str, Any]:
        """Poll until the job has finished; a failed or cancelled job raises `PlatformAPIError` with its error."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            job = self.get(job_id)
            if job["status"] == "succeeded":
                return job
            if job["status"] in ("failed", "cancelled"):
                code = f"{self._what}_{job['status']}"
                raise PlatformAPIError(422, f"{self._what} {job_id} {job['status']}: {job['error']}", code)
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"{self._what} {job_id} is still {job['status']} after {timeout:g}s")
            time.sleep(poll_s)


class Trainings(_Jobs):
    """Start training jobs on the platform and follow them."""

    _resource, _what = "trainings", "training"

    def start(self, dataset: str, target: str | None = None, *, budget_s: float = 60.0, **options: Any) -> dict[str, Any]:
        """Queue a job (options: metric, name, seed, max_trials, task); returns it with its `id`.

        A full queue raises `TooManyRequestsError` (its `retry_after` says when to try again); a budget over
        the platform's cap, `InvalidError`.
        """
        body = {"dataset": dataset, "target": target, "budget_s": budget_s, **options}
        return self._transport.request("POST", "/trainings", body=body)


class Batches(_Jobs):
    """Run every row (or image) of a dataset through a deployment, and follow the job (docs/batch.md)."""

    _resource, _what = "batches", "batch"

    def start(
        self,
        deployment: str,
        dataset: str,
        *,
        endpoint: str = "predict",
        output: str | None = None,
        concurrency: int | None = None,
    ) -> dict[str, Any]:
        """Start a job; returns it with its `id`. Once it has `succeeded`, `result` names the output dataset (NAME@V).

        An endpoint that does not take the dataset's columns, or too many rows, raises `InvalidError`; a token or
        platform with its most jobs running, `TooManyRequestsError`.
        """
        body = {"deployment": deployment, "dataset": dataset, "endpoint": endpoint, "output": output, "concurrency": concurrency}
        return self._transport.request("POST", "/batches", body=body)


class Models:
    """The registry: trained model versions, their metrics and reports."""

    def __init__(self, transport: Transport) -> None:
        self._transport = transport

    def list(self) -> list[dict[str, Any]]:
        return self._transport.request("GET", "/models")["models"]

    def get(self, ref: str) -> dict[str, Any]:
        """Everything about NAME or NAME@V (the registry's manifest)."""
        return self._transport.request("GET", f"/models/{_path(ref)}")

    def report(self, ref: str) -> str:
        """The evaluation report as one self-contained HTML page."""
        return self._transport.send("GET", f"{API}/models/{_path(ref)}/report").text
