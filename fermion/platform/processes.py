"""Processes the platform starts and finds again (replicas, training jobs, a Ray head): telling a
pid apart from a reused one, and stopping a whole process session."""

from __future__ import annotations

import os
import signal
from pathlib import Path


def process_start_time(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (tells a pid apart from a reused one)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()
    if fields[0] == "Z":  # a zombie has exited
        return None
    return fields[19]


def kill_group(pid: int) -> None:
    """SIGKILL a whole process session (`pid` is its leader, so also the group's id)."""
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        try:
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
