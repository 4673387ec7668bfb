"""Server processes of the suite: start pinned to CPUs, wait until they answer, stop the whole tree by PID.

Every server starts in a session of its own, so stopping it signals its process group and every
descendant found under /proc: nothing that a peer spawned (LitServe workers, Ray's raylet and
actors) outlives the run, and nothing the suite did not start is touched.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def descendants(pid: int) -> list[int]:
    """Every process whose chain of parents leads to `pid` (read from /proc), children first-found order."""
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                ppid = int(stat.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        parents.setdefault(ppid, []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def rss_mb(pid: int) -> float | None:
    """Resident memory of one process in MB (VmRSS), or None when it is gone."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        return None
    return None


@dataclass
class Process:
    """A process tree the suite started: its root, log file and start time."""

    name: str
    proc: subprocess.Popen[bytes]
    log_path: Path
    started: float = field(default_factory=time.monotonic)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log_tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self, grace: float = 10.0) -> None:
        """SIGTERM the process group and all descendants, then SIGKILL whatever is left after `grace` s."""
        tree = [self.pid, *descendants(self.pid)]
        for sig in (signal.SIGTERM, signal.SIGKILL):
            _signal_group(self.pid, sig)
            for pid in tree:
                _signal(pid, sig)
            deadline = time.monotonic() + (grace if sig == signal.SIGTERM else 5.0)
            while time.monotonic() < deadline:
                if self.proc.poll() is not None and not any(_exists(p) for p in tree[1:]):
                    return
                time.sleep(0.05)
        self.proc.poll()


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _exists(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


#: Every process tree started by this run, so that an error or Ctrl+C still stops them all.
STARTED: list[Process] = []


def stop_all() -> None:
    """Stop every process tree this run started that is still running."""
    for proc in reversed(STARTED):
        if proc.alive() or descendants(proc.pid):
            proc.stop()


def start(
    name: str, cmd: list[str], *, cpus: str | None, log_path: Path, cwd: Path, env: dict[str, str] | None = None
) -> Process:
    """Start `cmd` in its own session, pinned to `cpus` (taskset list like "0" or "0,1"), output to `log_path`."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    full = ["taskset", "-c", cpus, *cmd] if cpus else cmd
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            full,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            start_new_session=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
        )
    process = Process(name, proc, log_path)
    STARTED.append(process)
    return process


class NotReady(RuntimeError):
    """A server exited or did not answer in time; the message carries its last log lines."""


def wait_ready(procs: list[Process], check: Callable[[], bool], timeout: float, interval: float = 0.05) -> float:
    """Poll `check` every `interval` s until it is true; seconds waited. NotReady if a process dies or time runs out."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        for proc in procs:
            if not proc.alive():
                raise NotReady(f"{proc.name} exited with {proc.proc.returncode}:\n{proc.log_tail()}")
        try:
            if check():
                return time.monotonic() - start
        except httpx.HTTPError:
            pass
        time.sleep(interval)
    why = f" ({check})" if isinstance(check, Answers) else ""
    raise NotReady(f"{procs[-1].name} not ready after {timeout:.0f} s{why}:\n{procs[-1].log_tail()}")


class Answers:
    """A readiness check: `method url` with `body` answers 200; remembers the last answer for error messages."""

    def __init__(self, url: str, body: bytes | None, method: str = "POST") -> None:
        self.url, self.body, self.method = url, body, method
        self.last = "no answer yet"

    def __call__(self) -> bool:
        response = httpx.request(
            self.method, self.url, content=self.body, headers={"content-type": "application/json"}, timeout=5.0
        )
        self.last = f"{response.status_code} {response.text[:200]}"
        return response.status_code == 200

    def __str__(self) -> str:
        return f"last answer from {self.url}: {self.last}"


def answers(url: str, body: bytes | None, method: str = "POST") -> Answers:
    """A readiness check that the bench request itself answers 200."""
    return Answers(url, body, method)
