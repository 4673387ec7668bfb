"""One batch job as the platform keeps it (`<data dir>/batches/<id>/job.json`), and the limits on batches."""

from __future__ import annotations

import secrets
import time
from collections import deque
from dataclasses import asdict, dataclass, field
from typing import Any

from fermion.platform.jobfiles import iso

#: Jobs kept on disk and in the list; older finished jobs (and their result files) are forgotten.
KEEP_JOBS = 100
FINISHED = ("succeeded", "failed", "cancelled")
#: Seconds of progress the rate (rows/s) is measured over.
RATE_WINDOW_S = 10.0


@dataclass(frozen=True)
class BatchLimits:
    """How much batch work a platform takes on: each bound is checked before a job starts."""

    max_jobs: int = 4  # running, all tokens together
    max_jobs_per_token: int = 2  # running, for one token
    max_rows: int = 1_000_000  # rows (or images) in one job's dataset
    default_concurrency: int = 4  # requests one job keeps in flight, unless it asks for another number
    max_concurrency: int = 32
    max_answer_bytes: int = 1 << 20  # one row's answer; a longer one is kept as that row's error
    max_output_bytes: int = 1 << 30  # all of a job's answers together (a dataset's own limit)


@dataclass
class BatchJob:
    """Every row (or image) of one dataset version through one endpoint of one deployment."""

    id: str
    deployment: str
    dataset: str  # NAME@V: a version never changes, so a resumed job reads the same rows
    endpoint: str
    output: str  # the name of the dataset the results become
    concurrency: int
    requested_by: str = ""  # the name of the token that asked for it
    token_id: int | None = None  # and its id: the limits are per token
    kind: str = "table"  # the dataset's kind: "table" or "images"
    fields: list[str] = field(default_factory=list)  # the request's fields, filled from the columns of the same name
    file_field: str | None = None  # for an image set: the field that gets the image
    status: str = "running"  # running, succeeded, failed, cancelled
    rows_total: int = 0
    rows_done: int = 0  # answered, with an output or an error
    rows_failed: int = 0  # answered with an error
    created_at: float = field(default_factory=time.time)
    finished_at: float | None = None
    resumed: int = 0  # how often a restarted control plane took it up again
    result: str | None = None  # the output dataset's NAME@V, once published
    error: str | None = None
    _marks: deque[tuple[float, int]] = field(default_factory=deque, repr=False)  # (time, rows done): the rate

    @property
    def owner(self) -> str:
        """Whose job this is, for the limits: the token's id."""
        return f"token {self.token_id}" if self.token_id is not None else f"name {self.requested_by}"

    def to_dict(self) -> dict[str, Any]:
        """As saved on disk (times as epoch seconds)."""
        saved = asdict(self)
        del saved["_marks"]
        return saved

    @classmethod
    def from_dict(cls, saved: dict[str, Any]) -> BatchJob:
        return cls(**{k: v for k, v in saved.items() if k in cls.__dataclass_fields__ and not k.startswith("_")})

    def progressed(self, now: float | None = None) -> None:
        """Note the rows done now, for the rate."""
        now = time.monotonic() if now is None else now
        self._marks.append((now, self.rows_done))
        while len(self._marks) > 2 and now - self._marks[1][0] > RATE_WINDOW_S:
            self._marks.popleft()

    def rate(self) -> float | None:
        """Rows per second over the last few seconds (None before there is a measure)."""
        if self.status != "running" or len(self._marks) < 2:
            return None
        (t0, n0), (t1, n1) = self._marks[0], self._marks[-1]
        return (n1 - n0) / (t1 - t0) if t1 > t0 else None

    def view(self) -> dict[str, Any]:
        """As the API shows it: times in ISO 8601, with the rate and the time left."""
        shown = self.to_dict()
        for key in ("created_at", "finished_at"):
            shown[key] = iso(shown[key])
        rate = self.rate()
        left = self.rows_total - self.rows_done
        shown["rows_per_s"] = None if rate is None else round(rate, 2)
        shown["eta_s"] = None if not rate else round(left / rate, 1)
        return shown


def new_job_id() -> str:
    return "b-" + time.strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(3)
