"""Batch jobs: each runs as tasks on the control plane's event loop, sending rows through `InsideCaller`.

A job keeps at most its concurrency in flight, and fewer while interactive calls reach the same deployment
(`Throttle`); every answer is appended to its results file before the next row is counted done. A job
still running when the control plane stops, by SIGTERM or by kill -9, runs on from its results file when
the control plane starts again with the same data dir (see `rows`).
"""

from __future__ import annotations

import asyncio
import logging
import math
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING

import orjson

from fermion.platform.batches.job import FINISHED, KEEP_JOBS, BatchJob, BatchLimits
from fermion.platform.batches.rows import BatchInputs, RequestShape, read_results, request_shape, result_line, write_output
from fermion.platform.errors import Invalid, NotFound, TooManyRequests
from fermion.platform.gateway.inside import InsideCaller
from fermion.platform.jobfiles import save_record

if TYPE_CHECKING:
    from fermion.data import DatasetStore, DatasetVersion

log = logging.getLogger("fermion.platform")

#: How often a job's record is rewritten while it runs (its results file is written on every row).
SAVE_EVERY_S = 1.0
#: Tries for a row whose call reached no replica, or found it full (429) or not ready (503), with a growing pause.
TRIES = 6
#: While interactive calls came within this many seconds, batches on that deployment yield (see `Throttle`).
QUIET_S = 1.0


class Throttle:
    """How many requests a batch job may have in flight now: its concurrency while the deployment has no other
    callers, and one per ready replica while it has (calls in flight that are not a batch's, or arrived lately),
    so an interactive call waits behind at most one batch row on its replica."""

    def __init__(self, caller: InsideCaller) -> None:
        self.caller = caller
        self.in_flight: dict[str, int] = {}  # deployment → batch rows in flight on it, all jobs together
        self._seen: dict[str, tuple[int, float]] = {}  # deployment → (others' arrivals, when they last grew)

    def allowed(self, job: BatchJob, now: float | None = None) -> int:
        """Rows `job` may have in flight at `now` (default: the monotonic clock's now)."""
        route = self.caller.table.get(job.deployment)
        if route is None:
            return job.concurrency
        now = time.monotonic() if now is None else now
        others = route.arrivals + route.external_arrivals - self.caller.arrivals.get(job.deployment, 0)
        seen, since = self._seen.get(job.deployment, (others, -math.inf))
        if others != seen:
            since = now
        self._seen[job.deployment] = (others, since)
        busy = route.load() - self.in_flight.get(job.deployment, 0) > 0
        if busy or now - since < QUIET_S:
            return min(job.concurrency, max(1, len(route.upstreams)))
        return job.concurrency


class BatchJobs:
    """The platform's batch jobs: on disk under `<data dir>/batches/`, run on the gateway's event loop."""

    def __init__(self, data_dir: Path, datasets: DatasetStore, caller: InsideCaller, limits: BatchLimits | None = None) -> None:
        self.folder = Path(data_dir) / "batches"
        self.datasets = datasets
        self.caller = caller
        self.limits = limits or BatchLimits()
        self.throttle = Throttle(caller)
        self._jobs: dict[str, BatchJob] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._load()

    # -- persistence -------------------------------------------------------------------------------

    def _load(self) -> None:
        if not self.folder.is_dir():
            return
        for path in sorted(self.folder.glob("*/job.json")):
            try:
                job = BatchJob.from_dict(orjson.loads(path.read_bytes()))
            except (OSError, ValueError, TypeError):
                continue
            self._jobs[job.id] = job

    def _save(self, job: BatchJob) -> None:
        save_record(self.folder / job.id / "job.json", job.to_dict())

    def _results(self, job: BatchJob) -> Path:
        return self.folder / job.id / "results.jsonl"

    # -- the API's side ----------------------------------------------------------------------------

    def check_room(self, job: BatchJob) -> None:
        """Refuse a concurrency over the cap (422), or a token or platform with its most jobs running (429)."""
        limits = self.limits
        if not 1 <= job.concurrency <= limits.max_concurrency:
            raise Invalid(f"concurrency {job.concurrency} is out of range: give between 1 and {limits.max_concurrency}")
        running = [j for j in self._jobs.values() if j.status == "running"]
        mine = [j for j in running if j.owner == job.owner]
        for jobs, most, whose in (
            (mine, limits.max_jobs_per_token, f"token {job.requested_by!r}"),
            (running, limits.max_jobs, "the platform"),
        ):
            if len(jobs) >= most:
                raise TooManyRequests(
                    f"{whose} already has {len(jobs)} batch job{'s' if len(jobs) != 1 else ''} running, the most it may have "
                    f"({most}); wait for one to finish, or cancel one (DELETE /api/v1/batches/{jobs[-1].id})",
                    self._retry_after(jobs),
                )

    def _retry_after(self, jobs: list[BatchJob]) -> int:
        """Seconds until the first of `jobs` should finish, by its rate (30 while none has a rate yet)."""
        etas = [(j.rows_total - j.rows_done) / rate for j in jobs if (rate := j.rate())]
        return max(1, min(3600, math.ceil(min(etas)))) if etas else 30

    def check_rows(self, version: DatasetVersion) -> None:
        if version.rows > self.limits.max_rows:
            raise Invalid(
                f"{version.ref} has {version.rows} rows, over the limit of {self.limits.max_rows} per batch job; "
                "split the dataset into smaller ones"
            )

    async def shape(self, deployment: str, endpoint: str, version: DatasetVersion) -> RequestShape:
        """The endpoint's request fields, from a replica's OpenAPI document (a scaled-to-zero deployment starts one)."""
        answer = await self.caller.call(deployment, "GET", "/openapi.json")
        if answer.status == 404 and not answer.reached:
            raise NotFound(f"no deployment named {deployment!r}; `fermion ls` lists them")
        if answer.status != 200:
            raise Invalid(
                f"could not read the endpoints of {deployment!r} (its replica answered {answer.status}: "
                f"{answer.body[:200].decode('utf-8', 'replace')}); retry once it is ready"
            )
        return request_shape(orjson.loads(answer.body), deployment, endpoint, version)

    def start(self, job: BatchJob, shape: RequestShape) -> BatchJob:
        """Record the job and start running it (call on the event loop)."""
        job.fields, job.file_field = shape.fields, shape.file_field
        self.check_room(job)  # again: another request may have taken the room while this one read the schema
        self._jobs[job.id] = job
        self._save(job)
        self._forget_old()
        self._tasks[job.id] = asyncio.get_running_loop().create_task(self._run(job), name=f"batch {job.id}")
        return job

    def list(self) -> list[BatchJob]:
        return sorted(self._jobs.values(), key=lambda j: -j.created_at)

    def get(self, job_id: str) -> BatchJob:
        job = self._jobs.get(job_id)
        if job is None:
            raise NotFound(f"no batch job {job_id!r}; list them with GET /api/v1/batches")
        return job

    def cancel(self, job_id: str) -> BatchJob:
        """Stop a running job; its rows done so far stay in its results file, and no dataset is made."""
        job = self.get(job_id)
        task = self._tasks.pop(job.id, None)
        if job.status == "running":
            self._finish(job, "cancelled", "cancelled while running")
        if task is not None:
            task.cancel()
        return job

    def resume(self) -> int:
        """Run on the jobs a stopped control plane left running (call on the event loop); how many."""
        loop = asyncio.get_running_loop()
        waiting = [j for j in self._jobs.values() if j.status == "running" and j.id not in self._tasks]
        for job in waiting:
            job.resumed += 1
            log.info("resuming batch job %s (%d of %d rows done)", job.id, job.rows_done, job.rows_total)
            self._tasks[job.id] = loop.create_task(self._run(job), name=f"batch {job.id}")
        return len(waiting)

    async def stop(self) -> None:
        """Stop every job's tasks, leaving them `running` on disk: the next start resumes them."""
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for job in self._jobs.values():
            if job.status == "running":
                self._save(job)

    # -- running -----------------------------------------------------------------------------------

    async def _run(self, job: BatchJob) -> None:
        try:
            await self._run_rows(job)
        except asyncio.CancelledError:
            raise
        except Invalid as exc:
            self._finish(job, "failed", exc.message)
        except Exception as exc:  # a job's failure must never take the loop's other work with it
            log.exception("batch job %s failed", job.id)
            self._finish(job, "failed", f"the batch stopped: {exc}")
        finally:
            self._tasks.pop(job.id, None)

    async def _run_rows(self, job: BatchJob) -> None:
        version = await asyncio.to_thread(self.datasets.get, job.dataset)
        shape = RequestShape(job.fields, job.file_field)
        inputs = await asyncio.to_thread(BatchInputs, self.datasets, version, shape)
        path = self._results(job)
        results = await asyncio.to_thread(read_results, path)
        job.rows_total, job.rows_done = len(inputs), len(results)
        job.rows_failed = sum(1 for r in results.values() if "error" in r)
        written = path.stat().st_size if path.exists() else 0
        todo = iter([row for row in range(len(inputs)) if row not in results])
        saved_at = 0.0
        job.progressed()
        with open(path, "ab") as file:

            async def work() -> None:
                nonlocal written, saved_at
                for row in todo:
                    status, answer = await self._send(job, inputs, row)
                    line = result_line(row, status, answer, self.limits.max_answer_bytes)
                    written += len(line)
                    if written > self.limits.max_output_bytes:
                        raise Invalid(
                            f"the answers are over {self.limits.max_output_bytes} bytes, the most one batch may write; "
                            "run it on a smaller dataset"
                        )
                    file.write(line)
                    file.flush()  # in the operating system before the row counts as done: a kill -9 cannot lose it
                    job.rows_done += 1
                    job.rows_failed += status >= 400
                    job.progressed()
                    if time.monotonic() - saved_at > SAVE_EVERY_S:
                        saved_at = time.monotonic()
                        self._save(job)

            await asyncio.gather(*(work() for _ in range(job.concurrency)))
        await asyncio.to_thread(self._publish, job, inputs)

    async def _send(self, job: BatchJob, inputs: BatchInputs, row: int) -> tuple[int, bytes]:
        """One row's call, waiting for room under the throttle and retrying calls that reached no replica."""
        body = inputs.body(row) if job.file_field is None else await asyncio.to_thread(inputs.body, row)
        name = job.deployment
        for attempt in range(TRIES):
            while self.throttle.in_flight.get(name, 0) >= self.throttle.allowed(job):
                await asyncio.sleep(0.005)
            self.throttle.in_flight[name] = self.throttle.in_flight.get(name, 0) + 1
            try:
                answer = await self.caller.call(name, "POST", f"/{job.endpoint}", body)
            finally:
                self.throttle.in_flight[name] -= 1
            if not answer.retryable:
                return answer.status, answer.body
            if answer.status == 404 and not answer.reached:
                raise Invalid(f"deployment {name!r} was deleted while the batch ran; {job.rows_done} rows were done")
            if attempt == TRIES - 1:
                raise Invalid(
                    f"deployment {name!r} could not take row {row} after {TRIES} tries "
                    f"({answer.body[:200].decode('utf-8', 'replace')}); the {job.rows_done} rows done are kept: "
                    "restart the platform to resume, or start the batch again"
                )
            await asyncio.sleep(min(5.0, 0.2 * 2**attempt))
        raise AssertionError("unreachable")  # pragma: no cover

    def _publish(self, job: BatchJob, inputs: BatchInputs) -> None:
        """Build the output dataset from the results file (the same content again is the same version)."""
        from fermion.data import DatasetError

        results = read_results(self._results(job))
        if job.status != "running":  # cancelled after its last row: nothing is stored
            return
        target = self.folder / job.id / "output.jsonl"
        write_output(inputs, results, target)
        try:
            version = self.datasets.add(target, name=job.output)
        except DatasetError as exc:
            raise Invalid(f"could not store the results as dataset {job.output!r}: {exc.message}") from None
        finally:
            target.unlink(missing_ok=True)
        job.result = version.ref
        self._finish(job, "succeeded", None)

    def _finish(self, job: BatchJob, status: str, error: str | None) -> None:
        job.status, job.error, job.finished_at = status, error, time.time()
        self._save(job)

    def _forget_old(self) -> None:
        finished = sorted((j for j in self._jobs.values() if j.status in FINISHED), key=lambda j: j.created_at)
        for job in finished[: max(0, len(self._jobs) - KEEP_JOBS)]:
            del self._jobs[job.id]
            shutil.rmtree(self.folder / job.id, ignore_errors=True)
