"""The training queue: jobs wait their token's turn, run one at a time as `fermion train` child processes,
and are watched through the JSON lines those print (see the package's docstring)."""

from __future__ import annotations

import json
import logging
import math
import os
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

from fermion.platform.errors import Invalid, NotFound, TooManyRequests
from fermion.platform.jobfiles import save_record
from fermion.platform.processes import process_start_time
from fermion.platform.trainings.job import ACTIVE, FINISHED, KEEP_JOBS, KEEP_TRIALS, TrainingJob, TrainingLimits

log = logging.getLogger("fermion.platform")


class TrainingJobs:
    """Queues training jobs, within `limits`, and runs them one after another in child processes."""

    def __init__(self, data_dir: Path, limits: TrainingLimits | None = None) -> None:
        self.data_dir = Path(data_dir)
        self.limits = limits or TrainingLimits()
        self.folder = self.data_dir / "trainings"
        self._jobs: dict[str, TrainingJob] = {}
        self._queue: list[str] = []  # in the order they came; `next_in_turn` picks from it
        self._turns: dict[str, int] = {}  # owner → the number of the last job of theirs that started
        self._started = 0
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._process: subprocess.Popen[str] | None = None
        self._running: str | None = None
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._load()

    # -- persistence -------------------------------------------------------------------------------

    def _load(self) -> None:
        if not self.folder.is_dir():
            return
        for path in sorted(self.folder.glob("*.json")):
            try:
                job = TrainingJob(**json.loads(path.read_text()))
            except (OSError, ValueError, TypeError):
                continue
            if job.status not in FINISHED:  # the control plane stopped while it ran or waited
                _stop_leftover(job)
                job.status, job.error = "cancelled", "the platform stopped before this job finished; start it again"
                job.finished_at = job.finished_at or time.time()
                self._save(job)
            self._jobs[job.id] = job

    def _save(self, job: TrainingJob) -> None:
        save_record(self.folder / f"{job.id}.json", job.to_dict())

    # -- the API's side ----------------------------------------------------------------------------

    def check_room(self, job: TrainingJob) -> None:
        """Refuse at once what `submit` would refuse: a budget over the cap (422), a full queue (429)."""
        with self._lock:
            self._check_room(job)

    def submit(self, job: TrainingJob) -> TrainingJob:
        with self._lock:
            if self._stopping:
                raise Invalid("the platform is stopping; start the training again once it runs")
            self._check_room(job)
            self._jobs[job.id] = job
            self._save(job)
            self._queue.append(job.id)
            self._forget_old()
            if self._thread is None:
                self._thread = threading.Thread(target=self._run_queue, name="fermion-trainings", daemon=True)
                self._thread.start()
            self._wake.notify_all()
        return job

    def _check_room(self, job: TrainingJob) -> None:
        limits = self.limits
        if job.budget_s > limits.max_budget_s:
            raise Invalid(
                f"budget_s {job.budget_s:g} is over this platform's cap of {limits.max_budget_s:g} s per training job: "
                f"ask for at most {limits.max_budget_s:g} s, or ask the platform's operator to raise the cap "
                f"(`fermion up --max-training-budget`)"
            )
        active = [j for j in self._jobs.values() if j.status in ACTIVE]
        mine = [j for j in active if j.owner == job.owner]
        if len(mine) >= limits.max_jobs_per_token:
            retry = self._retry_after()
            raise TooManyRequests(
                f"token {job.requested_by!r} already has {_count(mine)}, the most one token may have "
                f"({limits.max_jobs_per_token}); {_what_to_do('--max-training-jobs-per-token', mine, retry)}",
                retry,
            )
        if len(active) >= limits.max_jobs:
            retry = self._retry_after()
            raise TooManyRequests(
                f"the platform already has {_count(active)}, {len(mine)} of them yours, the most it takes "
                f"({limits.max_jobs}); {_what_to_do('--max-training-jobs', mine, retry)}",
                retry,
            )

    def _retry_after(self) -> int:
        """Seconds until the running job's budget ends: the earliest a place in the queue frees, unless one is cancelled."""
        running = self._jobs.get(self._running) if self._running is not None else None
        if running is None or running.started_at is None:
            return 5
        return max(1, math.ceil(running.started_at + running.budget_s - time.time()))

    def list(self) -> list[TrainingJob]:
        with self._lock:
            return sorted(self._jobs.values(), key=lambda j: -j.created_at)

    def get(self, job_id: str) -> TrainingJob:
        with self._lock:
            job = self._jobs.get(job_id)
        if job is None:
            raise NotFound(f"no training job {job_id!r}; list them with GET /api/v1/trainings")
        return job

    def cancel(self, job_id: str) -> TrainingJob:
        job = self.get(job_id)
        with self._lock:
            if job.status == "queued":
                self._queue.remove(job.id)
                self._finish(job, "cancelled", "cancelled before it started")
            elif job.status == "running" and self._process is not None:
                job.error = "cancelled while running"
                job.status = "cancelling"
                _terminate(self._process)
        return job

    def stop(self) -> None:
        """Cancel the queue and the running job (the child is stopped, nothing half-written stays)."""
        with self._lock:
            self._stopping = True
            for job_id in list(self._queue):
                self._finish(self._jobs[job_id], "cancelled", "the platform stopped before this job started")
            self._queue.clear()
            if self._process is not None:
                _terminate(self._process)
            self._wake.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=15)

    # -- running -----------------------------------------------------------------------------------

    def _run_queue(self) -> None:
        while True:
            with self._lock:
                while not self._queue and not self._stopping:
                    self._wake.wait()
                if self._stopping:
                    return
                job = next_in_turn([self._jobs[job_id] for job_id in self._queue], self._turns)
                self._queue.remove(job.id)
                self._started += 1
                self._turns[job.owner] = self._started
                job.status, job.started_at = "running", time.time()
                self._save(job)
            try:
                self._run(job)
            except Exception as exc:  # a job's failure must never stop the queue
                log.exception("training job %s failed to run", job.id)
                with self._lock:
                    self._finish(job, "failed", f"could not run the training: {exc}")

    def _run(self, job: TrainingJob) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        with open(self.folder / f"{job.id}.log", "w") as stderr:
            process = subprocess.Popen(
                job.command(self.data_dir),
                stdout=subprocess.PIPE,
                stderr=stderr,
                stdin=subprocess.DEVNULL,
                text=True,
                env={**os.environ, "FERMION_HOME": str(self.data_dir), "PYTHONUNBUFFERED": "1"},
                start_new_session=True,
            )
            with self._lock:
                self._process, self._running = process, job.id
                job.pid, job.pid_started = process.pid, process_start_time(process.pid)
                self._save(job)  # a control plane killed from here on leaves the next one a process to stop
            assert process.stdout is not None
            for line in process.stdout:
                try:
                    event = json.loads(line)
                except ValueError:
                    continue
                with self._lock:
                    self._update(job, event)
            code = process.wait()
        with self._lock:
            self._process, self._running = None, None
            job.pid = job.pid_started = None
            if job.status == "cancelling" or self._stopping:
                self._finish(job, "cancelled", job.error or "the platform stopped while it ran")
            elif job.model is not None:
                self._finish(job, "succeeded", None)
            else:
                self._finish(job, "failed", job.error or self._last_error_line(job, code))

    def _update(self, job: TrainingJob, event: dict[str, Any]) -> None:
        phase = event.get("phase")
        job.phase = phase if phase in ("prepare", "embed", "search", "refit", "evaluate", "save", "done") else job.phase
        if isinstance(event.get("elapsed"), (int, float)):
            job.elapsed = float(event["elapsed"])
        if "task" in event:
            job.task_kind, job.metric_used = event.get("task"), event.get("metric")
            job.metric_info = event.get("metric_info")
        if "trial" in event:
            trial = event["trial"]
            job.trials.append({k: trial.get(k) for k in ("number", "family", "score", "status", "finished_at")})
            del job.trials[:-KEEP_TRIALS]
            job.best_score, job.best_family = event.get("best_score"), event.get("best_family")
        if phase == "registered":
            job.model = event.get("model")
        elif phase == "error":
            job.error = str(event.get("message"))
        self._save(job)

    def _finish(self, job: TrainingJob, status: str, error: str | None) -> None:
        job.status, job.error, job.finished_at = status, error, time.time()
        self._save(job)

    def _last_error_line(self, job: TrainingJob, code: int) -> str:
        try:
            lines = [line for line in (self.folder / f"{job.id}.log").read_text().splitlines() if line.strip()]
        except OSError:
            lines = []
        return (lines[-1] if lines else "") or f"the training process exited with code {code}"

    def _forget_old(self) -> None:
        finished = sorted((j for j in self._jobs.values() if j.status in FINISHED), key=lambda j: j.created_at)
        for job in finished[: max(0, len(self._jobs) - KEEP_JOBS)]:
            del self._jobs[job.id]
            for suffix in (".json", ".log"):
                (self.folder / f"{job.id}{suffix}").unlink(missing_ok=True)


def next_in_turn(queued: list[TrainingJob], turns: dict[str, int]) -> TrainingJob:
    """The job to run next: the oldest of the owner whose last turn is longest ago (never is longest).

    `queued` is in the order the jobs came; `turns` maps an owner to when their last job started.
    """
    return min(enumerate(queued), key=lambda item: (turns.get(item[1].owner, 0), item[0]))[1]


def _what_to_do(option: str, mine: list[TrainingJob], retry: int) -> str:
    queued = [j for j in mine if j.status == "queued"]
    cancel = f"cancel one of yours (DELETE /api/v1/trainings/{(queued or mine)[-1].id}, say), " if mine else ""
    return f"wait for one to finish (retry in about {retry} s), {cancel}or ask the platform's operator to raise `fermion up {option}`"


def _count(jobs: list[TrainingJob]) -> str:
    running = sum(1 for j in jobs if j.status != "queued")
    return f"{len(jobs)} training job{'s' if len(jobs) != 1 else ''} queued or running ({running} running, {len(jobs) - running} queued)"


def _stop_leftover(job: TrainingJob) -> None:
    """Kill the training process a killed control plane left running (if that pid is still that process)."""
    if job.pid is None or job.pid_started is None or process_start_time(job.pid) != job.pid_started:
        return
    log.warning("stopping training job %s (pid %d): its control plane stopped without stopping it", job.id, job.pid)
    try:
        os.killpg(job.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _terminate(process: subprocess.Popen[str]) -> None:
    try:
        os.killpg(process.pid, signal.SIGTERM)
    except (ProcessLookupError, PermissionError):
        pass
