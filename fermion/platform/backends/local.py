"""The local backend: each replica is a `fermion serve` process on this machine.

Replicas run in their own process session, so they outlive a control plane that is killed; a
state file per replica (pid, process start time, log) lets the next control plane adopt them.
The state file is written before the process starts, and every replica carries its id and its
platform's folder in its environment, so a replica whose control plane died between the two
steps is still found: `list()` adopts the replicas it knows and reaps the ones it does not, and
`close()` leaves no replica process of this platform behind.
The port is chosen by the replica itself (`--port 0`) and read from the port file it writes once
it listens (`--port-file`, in its run folder next to its state file), so replicas started together
never race for a port. A replica that asks for GPUs (`resources.gpus`) gets GPUs no other replica
holds, in its CUDA_VISIBLE_DEVICES (`fermion.platform.gpus`); its state file records them. Each
replica runs in the platform's sandbox (`fermion.platform.sandbox`): with bubblewrap the recorded
pid is the sandboxed process's, so signals reach the replica itself.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import httpx

from fermion.platform.backends.base import ReplicaHandle, ReplicaSpec, ReplicaState, ReplicaStatus
from fermion.platform.code_folders import absolute_source
from fermion.platform.gpus import VISIBLE_ENV, machine_gpus, pick_gpus
from fermion.platform.processes import kill_group, process_start_time
from fermion.platform.resources import Resources, serve_flags
from fermion.platform.sandbox import Sandbox, catches, sandboxed_pid
from fermion.serving.announce import read_port_file

log = logging.getLogger("fermion.platform")

_PROBE_TIMEOUT = 2.0
#: Environment variables every replica process carries: which platform folder and which replica.
OWNER_ENV, REPLICA_ENV = "FERMION_REPLICAS_DIR", "FERMION_REPLICA_ID"
#: Seconds a replica keeps serving after SIGTERM before it closes its connections (`fermion serve
#: --drain-delay`): enough for the control plane's next pass (every 0.5 s) to see its /readyz turn
#: 503 and take it out of both gateways. A replica killed by someone else, or retired while a
#: gateway still routes to it, then loses no request on a keep-alive connection it closes.
DRAIN_DELAY_S = 2.0
#: The Unix socket a replica also serves on, in its run folder (`fermion serve --unix-socket`).
UNIX_SOCKET = "http.sock"
#: Logs of stopped replicas kept for `fermion logs` and post-mortems; older ones are deleted.
KEEP_LOGS = 100


class LocalBackend:
    """Replicas as `fermion serve` processes; state files and logs under `<data_dir>/replicas/`."""

    name = "local"

    def __init__(
        self,
        data_dir: str | os.PathLike[str],
        python: str = sys.executable,
        sandbox: Sandbox | None = None,
        gpus: Sequence[str] | None = None,
    ) -> None:
        self.folder = Path(data_dir) / "replicas"
        self.gpus = tuple(gpus) if gpus is not None else machine_gpus()  # the ones replicas may be given
        self.folder.mkdir(parents=True, exist_ok=True)
        self.python = python
        self.sandbox = sandbox if sandbox is not None else Sandbox.probe(data_dir)
        self._children: dict[int, subprocess.Popen[bytes]] = {}  # started by us: exit codes known
        self._exit_codes: dict[int, int] = {}  # of children stopped and reaped
        # One keep-alive client for every probe: a fresh connection per probe costs ~50 ms a replica here.
        self._probe = httpx.Client(timeout=_PROBE_TIMEOUT)

    def _state_file(self, replica_id: str) -> Path:
        return self.folder / f"{replica_id}.json"

    def _run_dir(self, replica_id: str) -> Path:
        """The replica's own writable folder (port file, HOME, TMPDIR): the only one the sandbox lets it write."""
        return self.folder / f"{replica_id}.run"

    def _port_file(self, replica_id: str) -> Path:
        return self._run_dir(replica_id) / "port"

    def _forget(self, replica_id: str) -> None:
        self._state_file(replica_id).unlink(missing_ok=True)
        shutil.rmtree(self._run_dir(replica_id), ignore_errors=True)

    def start(self, spec: ReplicaSpec) -> ReplicaHandle:
        """Start `fermion serve SOURCE --port 0` in its own session; returns before it is ready."""
        log_path, run_dir = self.folder / f"{spec.replica_id}.log", self._run_dir(spec.replica_id)
        self._prune_logs()
        source = absolute_source(spec.source)
        command = [self.python, "-m", "fermion", "serve", source, "--host", "127.0.0.1", "--port", "0"]
        command += ["--drain-delay", str(DRAIN_DELAY_S), "--port-file", str(self._port_file(spec.replica_id))]
        # HAProxy reaches it through this socket in its own folder (about 1.5× the calls a core proxies over TCP: measured).
        command += ["--unix-socket", str(run_dir / UNIX_SOCKET)]
        command += serve_flags(spec.options)
        shutil.rmtree(run_dir, ignore_errors=True)  # a stale port file must not be read as this replica's
        env = self.sandbox.env(spec.env, run_dir)
        env.update({OWNER_ENV: str(self.folder), REPLICA_ENV: spec.replica_id})
        gpus = self.gpu_env(spec)
        env.update(gpus)
        cpus = (spec.options.get("resources") or {}).get("cpus")
        if cpus:  # no reservations on one machine, but the replica's torch/BLAS threads follow its CPUs
            env["FERMION_COMPUTE_THREADS"] = str(max(1, int(cpus)))
        # Recorded before it exists: a control plane killed during the start still finds it (by its env).
        data: dict[str, object] = {"pid": None, "started": None, "started_at": time.time(), "log": str(log_path), "url": None}
        data["gpus"] = [gpu for gpu in gpus.get(VISIBLE_ENV, "").split(",") if gpu]  # held until it stops
        handle = ReplicaHandle(spec.replica_id, self.name, spec.deployment, spec.revision, data)
        self._write(handle)
        info_read, info_write = os.pipe() if self.sandbox.bwrap else (None, None)
        command = self.sandbox.wrap(command, run_dir, info_fd=info_write)
        try:
            with open(log_path, "ab") as log:
                proc = subprocess.Popen(
                    command,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=env,
                    cwd=self.sandbox.workdir(spec.source, spec.options),
                    start_new_session=True,
                    stdin=subprocess.DEVNULL,
                    pass_fds=() if info_write is None else (info_write,),
                )
        except BaseException:
            if info_read is not None:
                os.close(info_read)
            raise
        finally:
            if info_write is not None:
                os.close(info_write)
        pid = (sandboxed_pid(info_read) if info_read is not None else None) or proc.pid
        self._children[pid] = proc
        # "started_at" (epoch seconds) is for uptime; "started" (clock ticks) tells a reused pid apart.
        data.update(pid=pid, started=process_start_time(pid))
        self._write(handle)
        return handle

    def gpu_env(self, spec: ReplicaSpec) -> dict[str, str]:
        """The CUDA_VISIBLE_DEVICES the replica gets: GPUs of its own when it asks for some, none when it does not
        (unless its deployment's env names them); nothing on a machine without GPUs."""
        wanted = Resources.from_options(spec.options).gpus
        if not wanted:
            return {} if not self.gpus or VISIBLE_ENV in spec.env else {VISIBLE_ENV: ""}
        return {VISIBLE_ENV: ",".join(pick_gpus(wanted, self.gpus, self._gpus_in_use()))}

    def _gpus_in_use(self) -> set[str]:
        """The GPUs that replicas alive (or being started) hold, from their state files."""
        held: set[str] = set()
        for path in self.folder.glob("*.json"):
            try:
                record = json.loads(path.read_text())
            except (OSError, ValueError):
                continue
            handle = ReplicaHandle(record["replica_id"], self.name, record["deployment"], record["revision"], record)
            if record.get("pid") is None or self._alive(handle):
                held.update(record.get("gpus") or ())
        return held

    def _prune_logs(self, keep: int = KEEP_LOGS) -> None:
        """Delete the oldest logs of replicas that no longer run (autoscaling makes many), keeping `keep`."""
        running = {path.stem for path in self.folder.glob("*.json")}
        logs = [path for path in self.folder.glob("*.log") if path.stem not in running]
        logs.sort(key=lambda path: path.stat().st_mtime)
        for path in logs[: max(0, len(logs) - keep)]:
            path.unlink(missing_ok=True)

    def _write(self, handle: ReplicaHandle) -> None:
        record = {"replica_id": handle.replica_id, "deployment": handle.deployment, "revision": handle.revision, **handle.data}
        tmp = self._state_file(handle.replica_id).with_suffix(".tmp")
        tmp.write_text(json.dumps(record))
        tmp.replace(self._state_file(handle.replica_id))

    def _alive(self, handle: ReplicaHandle) -> bool:
        pid = handle.data["pid"]
        if pid is None:
            return False
        child = self._children.get(pid)
        if child is not None:
            return child.poll() is None
        started = process_start_time(pid)
        return started is not None and started == handle.data.get("started")

    def _url(self, handle: ReplicaHandle) -> str | None:
        if handle.data.get("url"):
            return handle.data["url"]
        try:
            found = read_port_file(self._port_file(handle.replica_id))
        except (OSError, ValueError):
            return None
        if found is None:
            return None
        handle.data["url"] = found.url  # learnt once; the handle's data is ours to fill
        handle.data["unix_socket"] = found.unix_socket
        self._write(handle)
        return found.url

    def status(self, handle: ReplicaHandle) -> ReplicaStatus:
        """EXITED if the process is gone, READY if /readyz says 200, else STARTING."""
        if not self._alive(handle):
            child = self._children.get(handle.data["pid"])
            code = child.returncode if child is not None else self._exit_codes.get(handle.data["pid"])
            if code is not None and code > 128 and self.sandbox.bwrap:  # bubblewrap's 128+N: killed by signal N
                code = 128 - code
            return ReplicaStatus(ReplicaState.EXITED, handle.data.get("url"), code, self._last_line(handle))
        url = self._url(handle)
        if url is None:
            return ReplicaStatus(ReplicaState.STARTING, None, detail="loading the source")
        try:
            answer = self._probe.get(url + "/readyz")
        except httpx.HTTPError:
            return ReplicaStatus(ReplicaState.STARTING, url, detail="not answering yet")
        if answer.status_code == 200:
            return ReplicaStatus(ReplicaState.READY, url, socket=handle.data.get("unix_socket"))
        return ReplicaStatus(ReplicaState.STARTING, url, detail=answer.json().get("status", "") if answer.content else "")

    def stop(self, handle: ReplicaHandle, grace: float = 30.0, at_once: bool = False) -> None:
        """SIGTERM (the replica drains and exits 0; SIGINT `at_once`, skipping its drain delay), SIGKILL
        after `grace` seconds (plus the drain delay); forget it."""
        pid = handle.data["pid"]
        if self._alive(handle):
            sig = signal.SIGINT if at_once else signal.SIGTERM
            try:
                if self.sandbox.bwrap and not catches(pid, sig):  # still loading: its pid-1 would ignore the signal
                    kill_group(pid)
                else:
                    os.kill(pid, sig)
            except ProcessLookupError:
                pass
            deadline = time.monotonic() + grace + (0 if at_once else DRAIN_DELAY_S)
            while self._alive(handle) and time.monotonic() < deadline:
                time.sleep(0.05)
            if self._alive(handle):
                kill_group(pid)  # the replica and any worker processes it started
                while self._alive(handle):
                    time.sleep(0.02)
        child = self._children.pop(pid, None)
        if child is not None:
            self._exit_codes[pid] = child.wait()
        self._forget(handle.replica_id)

    def list(self) -> list[ReplicaHandle]:
        """Running replicas found in the state files (the ones whose process has gone are dropped).

        A replica process of this platform that no state file accounts for (its control plane died
        as it started it, or its file was lost) is stopped: nothing runs that the platform does not know.
        """
        found = []
        running = self._own_processes()
        for path in sorted(self.folder.glob("*.json")):
            try:
                record = json.loads(path.read_text())
            except (OSError, ValueError):
                continue
            data = {k: v for k, v in record.items() if k not in ("replica_id", "deployment", "revision")}
            handle = ReplicaHandle(record["replica_id"], self.name, record["deployment"], record["revision"], data)
            if data.get("pid") is None and handle.replica_id in running:  # recorded, then the platform died
                data["pid"] = running[handle.replica_id]
                data["started"] = process_start_time(data["pid"])
                self._write(handle)
            if self._alive(handle):
                found.append(handle)
                running.pop(handle.replica_id, None)
            else:
                self._forget(handle.replica_id)
        for replica_id, pid in running.items():
            log.warning("stopping replica process %d (%s): no state file of this platform accounts for it", pid, replica_id)
            kill_group(pid)
            shutil.rmtree(self._run_dir(replica_id), ignore_errors=True)
        return found

    def close(self) -> None:
        """After every replica was stopped: kill any process of this platform's replicas still alive
        (one started as the platform was stopping, or a worker its replica left behind)."""
        for pid, child in list(self._children.items()):
            if child.poll() is None:
                kill_group(pid)
                child.wait()
        for pid in self._own_processes().values():
            kill_group(pid)
        self._probe.close()

    def _own_processes(self) -> dict[str, int]:
        """replica id → pid of every replica process (session leader) that carries this platform's folder."""
        owner = f"{OWNER_ENV}={self.folder}".encode()
        found: dict[str, int] = {}
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit():
                continue
            pid = int(entry.name)
            try:
                environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
                leader = os.getsid(pid) == pid
            except OSError:  # gone, or not ours to read
                continue
            if leader and owner in environ and process_start_time(pid) is not None:
                prefix = f"{REPLICA_ENV}=".encode()
                replica_id = next((v[len(prefix) :].decode() for v in environ if v.startswith(prefix)), None)
                if replica_id:
                    found[replica_id] = _inside_sandbox(pid)
        return found

    def logs(self, handle: ReplicaHandle, lines: int = 100) -> list[str]:
        """The last `lines` lines of the replica's log."""
        try:
            with open(handle.data["log"], "rb") as fh:
                fh.seek(0, os.SEEK_END)
                size = fh.tell()
                fh.seek(max(0, size - 256 * lines))
                text = fh.read().decode("utf-8", "replace")
        except OSError:
            return []
        return text.splitlines()[-lines:]

    def _last_line(self, handle: ReplicaHandle) -> str:
        for line in reversed(self.logs(handle, 20)):
            if line.strip():
                return line.strip()
        return ""


def _inside_sandbox(pid: int) -> int:
    """The sandboxed replica of a bubblewrap process (its only child), else `pid` itself."""
    try:
        if Path(f"/proc/{pid}/comm").read_text().strip() != "bwrap":
            return pid
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return pid
    return int(children[0]) if len(children) == 1 else pid
