"""What machine a run measured on, so results from different machines are never compared blindly."""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
from typing import Any

from suite.envs import ROOT


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _memory_gib() -> float | None:
    try:
        with open("/proc/meminfo") as info:
            for line in info:
                if line.startswith("MemTotal:"):
                    return round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    return None


def load_average() -> list[float]:
    """The 1, 5 and 15 minute load averages: a busy machine makes every number here doubtful."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


def wrk_version() -> str | None:
    """The wrk version line, if wrk is installed."""
    path = shutil.which("wrk")
    if not path:
        return None
    done = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=10)
    return (done.stdout or done.stderr).splitlines()[0].split(" Copyright")[0].strip()


def checkout_commit(paths: tuple[str, ...] = ("fermion", "benchmarks")) -> str | None:
    """The measured checkout's commit, with "+changes" when `paths` differ from it; None outside git."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", *paths], cwd=ROOT, capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if head.returncode != 0:
        return None
    return head.stdout.strip() + ("+changes" if dirty.stdout.strip() else "")


def machine_info() -> dict[str, Any]:
    """CPU model, cores, memory, OS, Python, wrk and the load average right now."""
    return {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "memory_gib": _memory_gib(),
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "wrk": wrk_version(),
        "load_average": load_average(),
    }
