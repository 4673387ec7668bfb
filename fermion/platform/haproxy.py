"""HAProxy as the platform's front door: the gateway's hot path in C, configured by the control plane.

Measured on the reference machine (one core shared by the proxy and an echo replica), the Python
gateway kept 0.26× of the replica's direct throughput and HAProxy 0.6–0.7× (benchmarks/, the
`gateway` benchmark), so `fermion up` puts HAProxy in front when it is installed — as Ray Serve
did. HAProxy listens on the platform's port and sends `/run/<name>/...` straight to a ready
replica when the deployment is public or the request carries a valid token (a SHA-256 map of the
active tokens); everything else — the REST API, `/metrics`, a 401/403 with its explanation, an
unknown name, a deployment scaled to zero — goes to the control plane behind it, whose own
(Python) gateway answers exactly as it does without HAProxy.

Replicas come and go through HAProxy's runtime API (no reload, so no connection is dropped);
only a new or deleted deployment, or a changed `public` flag, rewrites the config and reloads
(master-worker mode: the old worker finishes its requests). Each request's deployment, status and
time arrive on a Unix datagram socket as a log line, for `/metrics`; in-flight counts for the
autoscaler come from `show stat`.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from fermion.platform.gateway import PREFIX, RouteTable

log = logging.getLogger("fermion.gateway")

#: How a proxied request is logged to the control plane: deployment, status, total time in ms.
LOG_FORMAT = "%[var(txn.dep)] %ST %Ta"
#: Server slots per deployment at least; a deployment with more replicas gets more (with a reload).
MIN_SLOTS = 8
_LOG_LINE = re.compile(rb"(?:<\d+>)?(?:.*?\s)?(?P<dep>[a-z][a-z0-9-]*) (?P<status>\d{3}) (?P<ms>-?\d+)\s*$")


def available() -> str | None:
    """The haproxy binary, if installed."""
    return shutil.which("haproxy")


def backend_name(deployment: str) -> str:
    return f"d_{deployment}"


def parse_log(datagram: bytes) -> tuple[str, int, float] | None:
    """(deployment, status, seconds) from one log datagram, or None for other lines."""
    found = _LOG_LINE.search(datagram.strip())
    if not found or int(found["ms"]) < 0:
        return None
    return found["dep"].decode(), int(found["status"]), int(found["ms"]) / 1000.0


@dataclass
class _Deployment:
    """A backend's server slots as HAProxy has them: slot name → replica URL (None: free)."""

    public: bool
    slots: dict[str, str | None] = field(default_factory=dict)
    draining: dict[str, float] = field(default_factory=dict)  # slot → when it may be reused (in-flight requests finish)


class HAProxyFrontDoor:
    """Runs and configures one HAProxy (master-worker) for a `fermion up`; files under `folder`."""

    def __init__(self, folder: Path, host: str, port: int, control_port: int, *, timeout: float = 300.0,
                 grace: float = 30.0, binary: str | None = None) -> None:
        self.folder = folder
        self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.host, self.port, self.control_port = host, port, control_port
        self.timeout, self.grace = timeout, grace
        self.binary = binary or available() or "haproxy"
        self.config = folder / "haproxy.cfg"
        self.tokens_map = folder / "tokens.map"
        self.master_socket = folder / "master.sock"
        self.log_socket = folder / "log.sock"
        self.pid_file = folder / "haproxy.pid"
        self._proc: subprocess.Popen[bytes] | None = None
        self._deployments: dict[str, _Deployment] = {}
        self._slots_seen: dict[str, tuple[str, ...]] = {}
        self._tokens: set[str] = set()
        self._tokens_lock = threading.Lock()

    # Lifecycle

    def stop_leftover(self) -> None:
        """Stop an HAProxy a killed control plane left running from this folder (it holds the port)."""
        try:
            pid = int(self.pid_file.read_text().strip())
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except (OSError, ValueError):
            return
        if str(self.config).encode() in cmdline:
            log.info("stopping the HAProxy (pid %d) a previous control plane left running", pid)
            os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + 10
            while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
                time.sleep(0.05)

    def start(self, routes: RouteTable, token_hashes: Iterable[str]) -> None:
        """Write the config for the current routes and tokens, start HAProxy, wait until it listens."""
        self._tokens = set(token_hashes)
        self._write_tokens()
        self._render(routes)
        self.master_socket.unlink(missing_ok=True)  # (the log socket is the control plane's: it binds it first)
        log_file = open(self.folder / "haproxy.log", "ab")  # noqa: SIM115 - kept open by the child
        # Its own session: a Ctrl+C meant for `fermion up` must not hard-stop the proxy mid-drain.
        self._proc = subprocess.Popen(
            [self.binary, "-W", "-S", f"{self.master_socket},mode,600", "-f", str(self.config), "-p", str(self.pid_file)],
            stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
        )
        log_file.close()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                tail = (self.folder / "haproxy.log").read_text(errors="replace").strip().splitlines()[-3:]
                raise RuntimeError(f"haproxy exited with {self._proc.returncode}: {' / '.join(tail)}")
            if self._listening():
                return
            time.sleep(0.02)
        raise RuntimeError(f"haproxy did not listen on {self.host}:{self.port} within 10 s")

    def _listening(self) -> bool:
        try:
            with socket.create_connection((self.host if self.host not in ("0.0.0.0", "") else "127.0.0.1", self.port), 0.2):
                return True
        except OSError:
            return False

    def stop(self) -> None:
        """Soft-stop: stop listening, let in-flight requests finish (up to the grace period), exit."""
        proc = self._proc
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGUSR1)
        try:
            proc.wait(self.grace + 5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        self.pid_file.unlink(missing_ok=True)

    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    # Keeping HAProxy in step with the route table (called from the reconciler's thread)

    def sync(self, routes: RouteTable, token_hashes: Iterable[str]) -> None:
        """Apply the route table and the active tokens: servers and tokens at run time, a reload for the rest."""
        wanted = {name: route for name in routes.names() if (route := routes.get(name)) is not None}
        shape = {name: route.public for name, route in wanted.items()}
        if shape != {name: d.public for name, d in self._deployments.items()}:
            self._render(routes)
            self._reload()
        else:
            for name, route in wanted.items():
                if not self._sync_servers(name, [u.url for u in route.upstreams]):
                    self._render(routes, grow=frozenset({name}))  # more replicas than slots: a bigger backend
                    self._reload()
                    break
        self.sync_tokens(token_hashes)

    def sync_tokens(self, token_hashes: Iterable[str]) -> None:
        """Make HAProxy accept exactly these tokens (by hash); safe to call from any thread."""
        with self._tokens_lock:
            tokens = set(token_hashes)
            if tokens == self._tokens:
                return
            for digest in self._tokens - tokens:
                self._command(f"del map {self.tokens_map} {digest}")
            for digest in tokens - self._tokens:
                self._command(f"add map {self.tokens_map} {digest} 1")
            self._tokens = tokens
            self._write_tokens()

    def _sync_servers(self, name: str, urls: list[str]) -> bool:
        """Point free slots at new replicas and put retired ones in maintenance; False if out of slots."""
        state = self._deployments[name]
        backend = backend_name(name)
        now = time.monotonic()
        for slot, until in list(state.draining.items()):
            if now >= until:
                del state.draining[slot]
                state.slots[slot] = None
        serving = {url: slot for slot, url in state.slots.items() if url is not None and slot not in state.draining}
        for url, slot in serving.items():
            if url not in urls:  # no new requests; those in flight finish (the replica drains too)
                self._command(f"set server {backend}/{slot} state maint")
                state.draining[slot] = now + self.grace + 1
        for url in urls:
            if url in serving:
                continue
            free = next((slot for slot, used in state.slots.items() if used is None), None)
            if free is None:
                return False
            host, port = url.removeprefix("http://").rsplit(":", 1)
            self._command(f"set server {backend}/{free} addr {host} port {port}")
            self._command(f"set server {backend}/{free} state ready")
            state.slots[free] = url
        return True

    def load(self) -> dict[str, tuple[int, int]]:
        """Per deployment: (requests in flight or queued, requests so far), from `show stat`."""
        answer = self._command("show stat", quiet=True)
        result: dict[str, tuple[int, int]] = {}
        if not answer:
            return result
        lines = answer.splitlines()
        if not lines or not lines[0].startswith("# "):
            return result
        header = lines[0][2:].split(",")
        column = {name: i for i, name in enumerate(header)}
        for line in lines[1:]:
            fields = line.split(",")
            if len(fields) < len(header) or fields[column["svname"]] != "BACKEND" or not fields[0].startswith("d_"):
                continue
            name = fields[0][2:]
            in_flight = _int(fields[column["scur"]]) + _int(fields[column["qcur"]])
            result[name] = (in_flight, _int(fields[column["stot"]]))
        return result

    # Files and commands

    def _render(self, routes: RouteTable, grow: frozenset[str] = frozenset()) -> None:
        """Write haproxy.cfg for these routes (servers included, so a reload keeps them); the
        deployments in `grow` ran out of server slots and get twice as many."""
        self._deployments = {}
        frontend, backends = [], []
        for name in routes.names():
            route = routes.get(name)
            if route is None:
                continue
            backend = backend_name(name)
            state = self._deployments[name] = _Deployment(route.public)
            allowed = "" if route.public else " token_ok"
            frontend.append(f"    use_backend {backend} if {{ var(txn.dep) -m str {name} }} {{ nbsrv({backend}) gt 0 }}{allowed}")
            lines = [
                f"backend {backend}",
                "    balance leastconn",
                "    http-reuse always",
                f"    http-request set-header x-forwarded-prefix {PREFIX}{name}",
                "    http-request del-header authorization",
                f"    http-request set-path /%[path,regsub(^{PREFIX}{name}/?,)]",
            ]
            # Fixed server slots, re-pointed at run time: HAProxy 2.6 serves static servers about twice
            # as fast as ones added with `add server` (measured), and slots need no reload to change.
            previous = len(self._slots_seen.get(name, ()))
            count = max(MIN_SLOTS, 2 * len(route.upstreams) + 2, previous * (2 if name in grow else 1))
            for index in range(1, count + 1):
                slot = f"s{index}"
                if index <= len(route.upstreams):
                    host, port = route.upstreams[index - 1].url.removeprefix("http://").rsplit(":", 1)
                    lines.append(f"    server {slot} {host}:{port}")
                    state.slots[slot] = route.upstreams[index - 1].url
                else:
                    lines.append(f"    server {slot} 127.0.0.1:1 disabled")
                    state.slots[slot] = None
            self._slots_seen[name] = tuple(state.slots)
            backends.append("\n".join(lines))
        listen = f"{self.host}:{self.port}" if ":" not in self.host else f"[{self.host}]:{self.port}"
        text = f"""# Written by `fermion up`; changes are overwritten.
global
    stats socket {self.folder / 'admin.sock'} mode 600 level admin
    log {self.log_socket} len 512 format raw local0
    hard-stop-after {int(self.grace) + 1}s

defaults
    mode http
    log global
    option dontlognull
    log-format "{LOG_FORMAT}"
    timeout connect 5s
    timeout client {int(self.timeout)}s
    timeout server {int(self.timeout)}s
    timeout http-request 60s
    timeout http-keep-alive 60s
    retries 2
    retry-on conn-failure
    option redispatch 1

frontend fermion
    bind {listen}
    http-request set-var(txn.dep) path,field(3,/) if {{ path_beg {PREFIX} }}
    acl token_ok req.hdr(authorization),word(2,' '),sha2(256),hex,map({self.tokens_map}) -m found
{chr(10).join(frontend)}
    default_backend control

backend control
    http-request set-log-level silent  # the control plane counts what it answers itself
    server control 127.0.0.1:{self.control_port}

{(chr(10) * 2).join(backends)}
"""
        tmp = self.config.with_suffix(".tmp")
        tmp.write_text(text)
        tmp.replace(self.config)

    def _write_tokens(self) -> None:
        tmp = self.tokens_map.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write("".join(f"{digest} 1\n" for digest in sorted(self._tokens)))
        tmp.replace(self.tokens_map)

    def _reload(self) -> None:
        """Re-read the config: the master starts a new worker; the old one finishes its requests."""
        if self._proc is None or self._proc.poll() is not None:
            return
        self._proc.send_signal(signal.SIGUSR2)
        deadline = time.monotonic() + 5
        time.sleep(0.05)
        while time.monotonic() < deadline:  # the new worker answers commands once it is up
            answer = self._command("show info", quiet=True)
            if answer and "Pid:" in answer:
                return
            time.sleep(0.05)

    def _command(self, command: str, quiet: bool = False) -> str | None:
        """One runtime-API command to the current worker, through the master socket."""
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.settimeout(5)
                sock.connect(str(self.master_socket))
                # `@1`: the current worker (also right after a reload); `quit`: the master keeps
                # the connection open for more commands otherwise.
                sock.sendall(f"@1 {command}; quit\n".encode())
                chunks = []
                while chunk := sock.recv(65536):
                    chunks.append(chunk)
        except OSError as exc:
            if not quiet:
                log.warning("haproxy command %r failed: %s", command, exc)
            return None
        answer = b"".join(chunks).decode(errors="replace")
        if not quiet and answer.strip() and not answer.lower().startswith(("new server", "done")) and "\n" in answer.strip():
            log.debug("haproxy %r: %s", command, answer.strip())
        return answer


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        return 0
