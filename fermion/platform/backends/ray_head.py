"""A Ray head node on this machine, started by Fermion and stopped by PID.

`fermion up --backend ray` without `--ray-address` starts one (a laptop's own cluster) and, after
a kill -9, the next `fermion up` adopts it from `head.json` with the replicas it still runs. The
tests start one too. Every port is chosen free, so it never meets another Ray cluster of the user,
and stopping it signals exactly the processes of its own session — never `ray stop`, which stops
every Ray cluster of the user. It runs with Ray's token auth on, its token in `auth_token` in its
folder (`ray_auth`): its dashboard refuses any call, a job submission included, without it.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from fermion.platform.backends.ray_auth import auth_headers, head_env, head_token
from fermion.platform.processes import process_start_time

#: Token auth stays on (`ray_auth.head_env`): without it any local user could submit a job to the
#: dashboard, i.e. run code as the platform.
RAY_ENV = {"RAY_USAGE_STATS_ENABLED": "0"}


#: Serve's feature flag for HAProxy as its HTTP ingress (instead of its Python proxy actor).
HAPROXY_INGRESS_ENV = {"RAY_SERVE_ENABLE_HA_PROXY": "1"}


class RayHeadError(RuntimeError):
    """The head could not be started (the message says why and what to do)."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _session_processes(session: int) -> list[int]:
    """PIDs whose session id is `session` (everything `ray start` spawned keeps its session)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        if fields[0] != "Z" and int(fields[3]) == session:
            found.append(int(entry.name))
    return found


class RayHead:
    """`ray start --head --block` in a session of its own; `stop()` ends that session's processes."""

    def __init__(
        self,
        folder: str | os.PathLike[str],
        num_cpus: int | None = None,
        object_store_mb: int = 100,
        env: dict[str, str] | None = None,
        haproxy_ingress: bool | None = None,
    ) -> None:
        self.folder = Path(folder)
        self.env = dict(env or {})  # extra variables for every process of the cluster (e.g. Serve's feature flags)
        # Serve's HTTP proxy is a Python actor: an echo deployment on one CPU served 33 req/s through it here, and
        # 479 through Serve's HAProxy ingress (a feature flag of Ray 2.60; needs haproxy). None: on when installed.
        binary = shutil.which("haproxy")
        self.haproxy_ingress = bool(binary) if haproxy_ingress is None else haproxy_ingress
        if self.haproxy_ingress:
            if binary is None:
                raise RayHeadError("haproxy_ingress needs the haproxy binary (Debian/Ubuntu: apt-get install haproxy)")
            self.env.update(HAPROXY_INGRESS_ENV, RAY_SERVE_HAPROXY_BINARY_PATH=binary)
        self.num_cpus = num_cpus
        self.object_store_mb = object_store_mb
        self.proc: subprocess.Popen[bytes] | None = None
        self.pid: int | None = None  # of `ray start` (its session's id), also for a head adopted from head.json
        self.adopted = False  # started by an earlier `fermion up`, found again through head.json
        self.dashboard_port = 0
        self.gcs_port = 0
        # Ray's socket paths must stay short (a Unix socket path is at most 107 bytes): not under folder.
        self.temp_dir = ""
        self.haproxy_dir = ""  # HAProxy ingress's config and sockets

    @property
    def dashboard_url(self) -> str:
        return f"http://127.0.0.1:{self.dashboard_port}"

    @property
    def token(self) -> str:
        """Ray's auth token of this head (`ray/auth_token` in its folder): every dashboard call needs it."""
        return head_token(self.folder)

    @property
    def address(self) -> str:
        """The GCS address drivers (`ray.init`) connect to."""
        return f"127.0.0.1:{self.gcs_port}"

    def start(self, timeout: float = 180.0) -> RayHead:
        """Start the head and wait until its dashboard answers; raises RayHeadError with the log's tail."""
        ray = shutil.which("ray", path=os.path.dirname(sys.executable)) or shutil.which("ray")
        if ray is None:
            raise RayHeadError("the `ray` command is not installed: pip install 'fermion[ray]'")
        self.folder.mkdir(parents=True, exist_ok=True)
        self.temp_dir = tempfile.mkdtemp(prefix="fermion-ray-")
        self.gcs_port, self.dashboard_port = free_port(), free_port()
        ports = {
            "--port": self.gcs_port,
            "--dashboard-port": self.dashboard_port,
            "--dashboard-agent-listen-port": free_port(),
            "--dashboard-agent-grpc-port": free_port(),
            "--runtime-env-agent-port": free_port(),
            "--ray-client-server-port": free_port(),
            "--node-manager-port": free_port(),
            "--object-manager-port": free_port(),
            "--metrics-export-port": free_port(),
        }
        command = [ray, "start", "--head", "--block", "--node-ip-address=127.0.0.1", "--dashboard-host=127.0.0.1"]
        command += [f"{flag}={port}" for flag, port in ports.items()]
        command += [f"--temp-dir={self.temp_dir}", "--disable-usage-stats", "--include-dashboard=true"]
        command.append(f"--object-store-memory={self.object_store_mb * 1024 * 1024}")
        if self.num_cpus is not None:
            command.append(f"--num-cpus={self.num_cpus}")
        # Two metrics ports have no flag, only a variable; left at their defaults, a second head collides.
        # $RAY_AUTH_TOKEN would win over the head's own token file in every process of the cluster.
        env = {name: value for name, value in os.environ.items() if name != "RAY_AUTH_TOKEN"}
        env.update(RAY_ENV, **head_env(self.folder))
        env.update(AUTOSCALER_METRIC_PORT=str(free_port()), DASHBOARD_METRIC_PORT=str(free_port()))
        if self.haproxy_ingress:  # its files and fallback port default to fixed ones that a second cluster would share
            # A folder of its own, with a short path: Serve adds the node's id (56 characters) and admin.sock,
            # and a Unix socket's path is at most 107 bytes.
            self.haproxy_dir = tempfile.mkdtemp(prefix="fh-")
            files = Path(self.haproxy_dir)
            env.update(
                RAY_SERVE_HAPROXY_CONFIG_FILE_LOC=str(files / "haproxy.cfg"),
                RAY_SERVE_HAPROXY_SOCKET_PATH=str(files / "admin.sock"),
                RAY_SERVE_HAPROXY_SERVER_STATE_BASE=str(files),
                RAY_SERVE_HAPROXY_SERVER_STATE_FILE=str(files / "server-state"),
                RAY_SERVE_FALLBACK_PROXY_HTTP_PORT=str(free_port()),
                RAY_SERVE_FALLBACK_PROXY_GRPC_PORT=str(free_port()),
                RAY_SERVE_HAPROXY_NBTHREAD=str(min(4, os.cpu_count() or 1)),
            )
        env.update(self.env)
        log = open(self.folder / "ray-head.log", "ab")  # noqa: SIM115 - the child writes to it for its whole life
        with log:
            self.proc = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True, stdin=subprocess.DEVNULL
            )
        self.pid = self.proc.pid
        self._write_state()
        deadline = time.monotonic() + timeout
        with httpx.Client(timeout=2.0, headers=auth_headers(self.token)) as client:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    tail = self.log_tail()
                    self.stop()
                    raise RayHeadError(f"`ray start --head` exited with code {self.proc.returncode}:\n{tail}")
                try:
                    if client.get(self.dashboard_url + "/api/version").status_code == 200:
                        return self
                except httpx.HTTPError:
                    pass
                time.sleep(0.5)
        tail = self.log_tail()
        self.stop()
        raise RayHeadError(f"the Ray head's dashboard did not answer within {timeout:g} s:\n{tail}")

    def _write_state(self) -> None:
        """head.json: how a later `fermion up` finds this head again (after a kill -9 of this one)."""
        assert self.proc is not None
        state = {
            "pid": self.proc.pid,
            "started": process_start_time(self.proc.pid),
            "dashboard_port": self.dashboard_port,
            "gcs_port": self.gcs_port,
            "temp_dir": self.temp_dir,
            "haproxy_ingress": self.haproxy_ingress,
            "haproxy_dir": self.haproxy_dir,
        }
        (self.folder / "head.json").write_text(json.dumps(state))

    @classmethod
    def adopt(cls, folder: str | os.PathLike[str]) -> RayHead | None:
        """The head an earlier `fermion up` started in `folder`, if it still runs and answers; else None."""
        try:
            state = json.loads((Path(folder) / "head.json").read_text())
        except (OSError, ValueError):
            return None
        started = process_start_time(state["pid"])
        if started is None or started != state.get("started"):
            return None
        head = cls(folder, haproxy_ingress=False)
        head.haproxy_ingress, head.haproxy_dir = bool(state.get("haproxy_ingress")), state.get("haproxy_dir", "")
        head.dashboard_port, head.gcs_port, head.temp_dir = state["dashboard_port"], state["gcs_port"], state["temp_dir"]
        head.pid, head.adopted = state["pid"], True
        try:
            answer = httpx.get(head.dashboard_url + "/api/version", timeout=5.0, headers=auth_headers(head.token))
            if answer.status_code == 200:
                return head
        except httpx.HTTPError:
            pass
        head.stop()  # alive but not answering: stop it, a new one is started
        return None

    def log_tail(self, lines: int = 15) -> str:
        try:
            return "\n".join((self.folder / "ray-head.log").read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def pids(self) -> list[int]:
        """The processes of this head (the `ray start` process's session)."""
        return _session_processes(self.pid) if self.pid is not None else []

    def stop(self, grace: float = 2.0) -> None:
        """Like `ray stop`, for this head's session only: SIGTERM to all of it, SIGKILL what is left after `grace`.

        The grace is short: raylet and GCS take 8 s and more to act on SIGTERM, and a head of ours keeps no state
        worth waiting for (its temp dir is deleted). Serve's replicas were drained before, by the control plane.
        """
        if self.pid is None:
            return
        # Workers retitle themselves (`ray::…`) and some outlive `ray start`: the session id still names them.
        members = set(self.pids())
        for pid in sorted(members, key=lambda pid: pid != self.pid):  # `ray start` first
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + grace
        while members and time.monotonic() < deadline:
            if self.proc is not None:
                self.proc.poll()  # reap it as soon as it exits
            members = {pid for pid in members | set(self.pids()) if _exists(pid)}
            time.sleep(0.1)
        for pid in members:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 5.0
        while members and time.monotonic() < deadline:  # SIGKILL is not instant: wait for them to be gone
            members = {pid for pid in members if _exists(pid)}
            time.sleep(0.05)
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.kill()
            self.proc.wait()
        (self.folder / "head.json").unlink(missing_ok=True)
        for folder in (self.temp_dir, self.haproxy_dir):
            if folder:
                shutil.rmtree(folder, ignore_errors=True)
        self.pid = None


def _exists(pid: int) -> bool:
    return process_start_time(pid) is not None
