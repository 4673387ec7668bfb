"""One training job as the platform keeps it (`<data dir>/trainings/<id>.json`), and the limits on how many."""

from __future__ import annotations

import secrets
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from fermion.platform.jobfiles import iso

#: Jobs kept on disk and in the list; older finished jobs are forgotten.
KEEP_JOBS = 200
#: Trials kept per job for the live chart.
KEEP_TRIALS = 500
FINISHED = ("succeeded", "failed", "cancelled")
#: Statuses that hold a place in the queue (a cancelling job's process has not stopped yet).
ACTIVE = ("queued", "running", "cancelling")


@dataclass(frozen=True)
class TrainingLimits:
    """How much training a platform takes on at once (`fermion up --max-training-jobs...`)."""

    max_jobs: int = 8  # queued or running, all tokens together
    max_jobs_per_token: int = 3  # queued or running, for one token
    max_budget_s: float = 3600.0  # the longest budget one job may ask for


@dataclass
class TrainingJob:
    """One `fermion train` run requested through the API."""

    id: str
    dataset: str
    target: str | None
    budget_s: float
    metric: str | None = None
    name: str | None = None
    seed: int = 0
    max_trials: int | None = None
    task: str | None = None
    requested_by: str = ""  # the name of the token that asked for it
    token_id: int | None = None  # and its id: the queue's limits and turns are per token
    status: str = "queued"  # queued, running, cancelling, succeeded, failed, cancelled
    created_at: float = field(default_factory=time.time)
    started_at: float | None = None
    finished_at: float | None = None
    phase: str | None = None
    elapsed: float = 0.0
    trials: list[dict[str, Any]] = field(default_factory=list)
    best_score: float | None = None
    best_family: str | None = None
    task_kind: str | None = None
    metric_used: str | None = None
    metric_info: dict[str, Any] | None = None  # {"name", "label", "greater_is_better"} of the metric in use
    model: str | None = None
    error: str | None = None
    pid: int | None = None  # of the `fermion train` process while it runs (its session's leader)
    pid_started: str | None = None  # that process's start time: tells it apart from a reused pid

    @property
    def owner(self) -> str:
        """Whose job this is, for the limits and turns: the token's id (its name for jobs saved before ids were)."""
        return f"token {self.token_id}" if self.token_id is not None else f"name {self.requested_by}"

    def to_dict(self) -> dict[str, Any]:
        """As saved on disk (times as epoch seconds)."""
        return asdict(self)

    def view(self, with_trials: bool = True) -> dict[str, Any]:
        """As the API shows it: times in ISO 8601; without the trial list, `trial_count` only."""
        shown = self.to_dict()
        del shown["pid"], shown["pid_started"]  # the platform's own bookkeeping
        for key in ("created_at", "started_at", "finished_at"):
            shown[key] = iso(shown[key])
        shown["trial_count"] = len(self.trials)
        if not with_trials:
            del shown["trials"]
        return shown

    def command(self, data_dir: Path) -> list[str]:
        line = [
            sys.executable,
            "-m",
            "fermion",
            "train",
            self.dataset,
            "--budget",
            f"{self.budget_s:g}s",
            "--seed",
            str(self.seed),
        ]
        line += ["--progress-json", "--data-dir", str(data_dir)]
        for flag, value in (
            ("--target", self.target),
            ("--metric", self.metric),
            ("--name", self.name),
            ("--problem", self.task),
        ):
            if value is not None:
                line += [flag, str(value)]
        if self.max_trials is not None:
            line += ["--max-trials", str(self.max_trials)]
        return line


def new_job_id() -> str:
    return "t-" + time.strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(3)
