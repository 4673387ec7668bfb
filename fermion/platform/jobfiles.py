"""What the platform's background jobs (trainings, batches) share: their records as JSON files, and times for people.

A job's record is rewritten whole on every change, through a temporary file renamed into place, so a
control plane killed mid-write leaves the last whole record, never half of one.
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any


def save_record(path: Path, record: dict[str, Any]) -> None:
    """Write `record` as JSON to `path` in one step (a temporary file beside it, renamed)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(record))
    os.replace(tmp, path)


def iso(epoch: float | None) -> str | None:
    """Epoch seconds as ISO 8601 in UTC (None stays None)."""
    return None if epoch is None else datetime.fromtimestamp(epoch, UTC).isoformat(timespec="seconds")
