"""Test helpers: run real `fermion serve` processes on free ports and always clean them up."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from fermion.serving.announce import read_port_file

#: The platform's two gateways, for `@pytest.mark.parametrize("gateway", GATEWAYS)` (`fermion up --gateway`).
GATEWAYS = [
    "python",
    pytest.param(
        "haproxy",
        marks=pytest.mark.skipif(shutil.which("haproxy") is None, reason="haproxy is not installed (.ci/run installs it)"),
    ),
]

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
FERMION = [sys.executable, "-m", "fermion"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class RunningServer:
    """A `fermion serve` process: its URL, process handle and captured output."""

    url: str
    proc: subprocess.Popen[str]
    log_path: Path
    _closed: bool = field(default=False, repr=False)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        """Signal the process and wait for it; returns its exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()


def wait_ready(
    url: str, proc: subprocess.Popen[str] | None, timeout: float, log_path: Path | None = None, verify: Any = True
) -> None:
    """Poll `url`/readyz until it answers 200 (`verify`: httpx's, e.g. an SSLContext trusting a test CA)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            out = log_path.read_text(errors="replace") if log_path else ""
            raise RuntimeError(f"server exited with {proc.returncode} before it was ready:\n{out}")
        try:
            if httpx.get(url + "/readyz", timeout=2, verify=verify).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    out = log_path.read_text(errors="replace") if log_path else ""
    raise TimeoutError(f"server at {url} not ready after {timeout} s:\n{out}")


def _listening_url(proc: subprocess.Popen[str], find_url: Callable[[], str | None], log_path: Path, timeout: float) -> str:
    """The URL a starting server wrote down for programs (`find_url` reads it) once it listens."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = find_url()
        if found:
            return found
        if proc.poll() is not None:
            raise RuntimeError(
                f"server exited with {proc.returncode} before it listened:\n{log_path.read_text(errors='replace')}"
            )
        time.sleep(0.02)
    proc.kill()
    raise TimeoutError(f"server wrote no URL after {timeout} s:\n{log_path.read_text(errors='replace')}")


@contextlib.contextmanager
def running_server(
    source: str | Path,
    *args: str,
    env: dict[str, str] | None = None,
    ready_timeout: float = 90.0,
    wait: bool = True,
    tmp_dir: Path | None = None,
    verify: Any = True,
) -> Iterator[RunningServer]:
    """Start `fermion serve SOURCE --port 0 ARGS...`, wait for /readyz, stop it afterwards.

    The server picks a free port itself and the URL is read from its `--port-file`, so servers
    started at the same time can never race for one port.
    """
    log_dir = tmp_dir or Path(os.environ.get("FERMION_TEST_LOGS", "/tmp"))
    log_dir.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix="fermion-serve-", suffix=".log", dir=log_dir)
    os.close(fd)
    log_path = Path(name)
    port_file = log_path.with_suffix(".port")
    full_env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1", "COLUMNS": "500", **(env or {})}
    with open(log_path, "w") as log_file:
        proc = subprocess.Popen(
            [*FERMION, "serve", str(source), "--port", "0", "--port-file", str(port_file), *args],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env=full_env,
            text=True,
            cwd=ROOT,
        )

    def port_file_url() -> str | None:
        found = read_port_file(port_file)
        return found.url if found else None

    try:
        server = RunningServer(_listening_url(proc, port_file_url, log_path, ready_timeout), proc, log_path)
        if wait:
            wait_ready(server.url, proc, ready_timeout, log_path, verify)
        yield server
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        port_file.unlink(missing_ok=True)  # a server that exits removes it; a killed one cannot


@contextlib.contextmanager
def running_servers(
    sources: dict[str, tuple[str, ...]],
    *,
    tmp_dir: Path,
    env: dict[str, str] | None = None,
    ready_timeout: float = 240.0,
) -> Iterator[dict[str, RunningServer]]:
    """Start several `fermion serve` processes at once (their loading overlaps), wait for all,
    and stop them all at once afterwards. `sources` maps a name to (SOURCE, *ARGS)."""
    with contextlib.ExitStack() as stack:
        running = {
            name: stack.enter_context(running_server(source, *args, wait=False, tmp_dir=tmp_dir, env=env))
            for name, (source, *args) in sources.items()
        }
        for server in running.values():
            wait_ready(server.url, server.proc, ready_timeout, server.log_path)
        try:
            yield running
        finally:
            for server in running.values():  # signal all first: each may take seconds to exit
                if server.proc.poll() is None:
                    server.proc.send_signal(signal.SIGTERM)


@dataclass
class RunningPlatform:
    """A `fermion up` process: its URL, admin token, data dir and process handle."""

    url: str
    token: str
    data_dir: Path
    proc: subprocess.Popen[str]
    log_path: Path
    #: What httpx's `verify=` gets for this platform (an SSLContext trusting the test's CA when it serves TLS).
    verify: Any = True

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def api(self, token: str | None = None) -> httpx.Client:
        """An httpx client for the REST API and the gateway, sending `token` (default: admin)."""
        headers = {"authorization": f"Bearer {token or self.token}"}
        return httpx.Client(base_url=self.url, headers=headers, timeout=60, verify=self.verify)


def start_platform(
    data_dir: Path,
    *args: str,
    port: int = 0,
    env: dict[str, str] | None = None,
    timeout: float = 60.0,
    verify: Any = True,
    code_from: tuple[Path, ...] | None = None,
) -> RunningPlatform:
    """Start `fermion up --data-dir DATA_DIR --port PORT ARGS...` and wait for /healthz (over https:// when it says so).

    Sources that run code may come from `code_from` (`--code-from`; default: this repository, for its
    examples, and the folder around the data dir, where tests write theirs; the data dir stays closed).
    """
    data_dir.mkdir(parents=True, exist_ok=True)
    for folder in (ROOT, data_dir.resolve().parent) if code_from is None else code_from:
        args = (*args, "--code-from", str(folder))
    log_path = data_dir / f"up-{time.monotonic_ns()}.log"
    full_env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "PYTHONUNBUFFERED": "1",
        "COLUMNS": "500",
        "FERMION_HOME": str(data_dir),
        **(env or {}),
    }
    with open(log_path, "w") as log_file:
        proc = subprocess.Popen(
            [*FERMION, "up", "--data-dir", str(data_dir), "--port", str(port), *args],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env=full_env,
            text=True,
            cwd=ROOT,
        )

    def up_file_url() -> str | None:
        """Where `fermion up` serves, from the up.json it writes in its data dir once it listens."""
        try:
            found = json.loads((data_dir / "up.json").read_text())
        except (OSError, ValueError):  # none yet (it is written atomically: never half of one)
            return None
        return str(found["url"]) if found.get("pid") == proc.pid else None  # not a killed platform's

    try:
        url = _listening_url(proc, up_file_url, log_path, timeout)
        deadline = time.monotonic() + timeout
        while True:
            try:
                if httpx.get(url + "/healthz", timeout=2, verify=verify).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"fermion up did not come up (exit {proc.poll()}):\n{log_path.read_text(errors='replace')}")
            time.sleep(0.05)
    except BaseException:
        stop_process(proc)
        raise
    token = (data_dir / "admin.token").read_text().strip()
    return RunningPlatform(url, token, data_dir, proc, log_path, verify)


def stop_process(proc: subprocess.Popen[str], sig: int = signal.SIGTERM, timeout: float = 60.0) -> int:
    """Signal a process we started and wait for it (SIGKILL after `timeout`); its exit code."""
    if proc.poll() is None:
        proc.send_signal(sig)
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait()


def stop_replicas(data_dir: Path) -> None:
    """Stop replica processes a platform in `data_dir` left behind (e.g. after a kill -9 in a test)."""
    from fermion.platform.backends.local import LocalBackend

    backend = LocalBackend(data_dir)
    for handle in backend.list():
        backend.stop(handle, grace=10)


@contextlib.contextmanager
def running_platform(
    data_dir: Path, *args: str, env: dict[str, str] | None = None, verify: Any = True
) -> Iterator[RunningPlatform]:
    """`fermion up` for the length of a `with` block; it and every replica are stopped afterwards."""
    platform = start_platform(data_dir, *args, env=env, verify=verify)
    try:
        yield platform
    finally:
        stop_process(platform.proc)
        stop_replicas(data_dir)


@contextlib.contextmanager
def serve_asgi(app: Any) -> Iterator[str]:
    """Run an ASGI app (a gateway, say) in uvicorn on a free port in a thread; yields its URL."""
    import threading

    import uvicorn

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        if not thread.is_alive():
            raise RuntimeError("the app did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(30)


def wait_for(condition: Callable[[], bool], timeout: float = 90.0, what: str = "the platform") -> None:
    """Poll `condition` until it holds; an AssertionError naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    raise AssertionError(f"{what} did not get there within {timeout} s")
