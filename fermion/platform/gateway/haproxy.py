"""HAProxy as the platform's front door: the gateway's hot path in C, configured by the control plane.

Measured on the reference machine (one core shared by the proxy and an echo replica), the Python
gateway kept 0.26× of the replica's direct throughput and HAProxy 0.57–0.59× (benchmarks/, the
`gateway` benchmark), so `fermion up` puts HAProxy in front when it is installed — as Ray Serve
did. HAProxy reaches a local replica through its Unix socket (0.41–0.48× over TCP loopback): a
u-slot's address is a symlink in `links/` pointing at the serving replica's socket. HAProxy listens on the platform's port and sends `/run/<name>/...` straight to a ready
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
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from fermion.platform.gateway.edge import DEFAULT_MAX_BODY_SIZE
from fermion.platform.gateway.haproxy_config import (
    Grant,
    Settings,
    backend_section,
    config_text,
    slot_link,
    token_maps,
)
from fermion.platform.gateway.haproxy_maps import RuntimeMap
from fermion.platform.gateway.routes import RouteTable, Upstream
from fermion.platform.home import write_private
from fermion.serving.tls import combined_pem

log = logging.getLogger("fermion.gateway")

#: Generic backends (one per deployment) and server slots (one per replica, old and new revision
#: during a rollout) HAProxy starts with; outgrowing either costs one reload.
MIN_BACKENDS = 16
MIN_SLOTS = 8


CONFIG_FILE, PID_FILE = "haproxy.cfg", "haproxy.pid"


def stop_leftover(folder: Path) -> None:
    """Stop an HAProxy that a killed control plane left running from `folder` (it still holds the port)."""
    try:
        pid = int((folder / PID_FILE).read_text().strip())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, ValueError):
        return
    if str(folder / CONFIG_FILE).encode() in cmdline:  # ours, not a reused pid
        log.info("stopping the HAProxy (pid %d) a previous control plane left running", pid)
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
            time.sleep(0.05)


def available() -> str | None:
    """The haproxy binary, if installed."""
    return shutil.which("haproxy")


@dataclass
class _Backend:
    """One of HAProxy's generic backends: which deployment it serves now and its server slots."""

    deployment: str | None = None
    # slot → replica URL (None: free). Slots s1..sN reach a replica over TCP, u1..uN through its Unix socket.
    slots: dict[str, str | None] = field(default_factory=dict)
    draining: dict[str, float] = field(default_factory=dict)  # slot → when it may be reused (in-flight requests finish)
    free_at: float = 0.0  # a released backend is reused only once its last requests are done


class HAProxyFrontDoor:
    """Runs and configures one HAProxy (master-worker) for a `fermion up`; files under `folder`."""

    def __init__(
        self,
        folder: Path,
        host: str,
        port: int,
        control_port: int,
        *,
        timeout: float = 300.0,
        grace: float = 30.0,
        binary: str | None = None,
        tls: tuple[Path, Path] | None = None,
        max_body_size: int = DEFAULT_MAX_BODY_SIZE,
    ) -> None:
        """`tls`: (certificate, key) files; HAProxy then terminates TLS on the platform's port.
        `max_body_size`: the largest body a call to a deployment may declare (413 beyond, unread)."""
        self.folder = folder
        self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.host, self.port, self.control_port = host, port, control_port
        self.timeout, self.grace = timeout, grace
        self.binary = binary or available() or "haproxy"
        self.config = folder / CONFIG_FILE
        self.master_socket = folder / "master.sock"
        self.log_socket = folder / "log.sock"
        self.pid_file = folder / PID_FILE
        self.tls = tls
        self.max_body_size = max_body_size
        #: The certificate and key in one file, as HAProxy's `crt` takes them (written at start, owner-only).
        self.tls_pem = folder / "tls.pem"
        self._proc: subprocess.Popen[bytes] | None = None
        self._backends: dict[str, _Backend] = {}
        self.routed = RuntimeMap(folder / "deployments.map", self._command)  # deployment → backend, while it has a ready replica
        self.public = RuntimeMap(folder / "public.map", self._command)  # deployments callable without a token → 1
        # A token's hash (or hash:deployment, for each deployment of a narrowed one) → 1.
        self.tokens = RuntimeMap(folder / "tokens.map", self._command, private=True)
        self.rates = RuntimeMap(folder / "rates.map", self._command, private=True)  # a token's hash → limit:unit:seconds
        self._tokens_lock = threading.Lock()

    # Lifecycle

    def start(self, routes: RouteTable, grants: Iterable[Grant]) -> None:
        """Write the config for the current routes and tokens, start HAProxy, wait until it listens."""
        tokens, rates = token_maps(grants)
        self.tokens.reset(tokens)
        self.rates.reset(rates)
        if self.tls is not None:
            write_private(self.tls_pem, combined_pem(*self.tls))
        else:
            self.tls_pem.unlink(missing_ok=True)
        (self.folder / "links").mkdir(mode=0o700, exist_ok=True)  # the Unix-socket slots' symlinks
        self._render(MIN_BACKENDS, MIN_SLOTS)
        self.routed.reset()
        self.public.reset()
        self.master_socket.unlink(missing_ok=True)  # (the log socket is the control plane's: it binds it first)
        log_file = open(self.folder / "haproxy.log", "ab")  # noqa: SIM115 - kept open by the child
        # Its own session: a Ctrl+C meant for `fermion up` must not hard-stop the proxy mid-drain.
        self._proc = subprocess.Popen(
            [self.binary, "-W", "-S", f"{self.master_socket},mode,600", "-f", str(self.config), "-p", str(self.pid_file)],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=self.folder,  # the Unix-socket slots' addresses are relative to it (`slot_link`)
            start_new_session=True,
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

    def sync(self, routes: RouteTable, grants: Iterable[Grant]) -> None:
        """Apply the route table and the active tokens through the runtime API (maps and server slots).

        Nothing here reloads HAProxy — a reload closes idle client connections, which a client may be
        about to reuse — except when the deployments outgrow the backends or slots it was started with.
        """
        now = time.monotonic()
        wanted = {name: route for name in routes.names() if (route := routes.get(name)) is not None}
        assigned = {b.deployment: name for name, b in self._backends.items() if b.deployment is not None}
        for deployment, backend in list(assigned.items()):
            if deployment not in wanted:  # deleted: stop routing to it, drain its servers, free the backend later
                self.routed.drop(deployment)
                self.public.drop(deployment)
                self._sync_servers(backend, [])
                self._backends[backend].deployment = None
                self._backends[backend].free_at = now + self.grace + 1
                del assigned[deployment]
        for name, route in wanted.items():
            backend = assigned.get(name) or self._assign(name, now)
            urls = [u.url for u in route.upstreams]
            if backend is None or not self._sync_servers(backend, route.upstreams):
                self._grow(wanted)
                return self.sync(routes, grants)
            if route.public:
                self.public.put(name)
            else:
                self.public.drop(name)
            if urls and self.routed.get(name) != backend:
                self.routed.drop(name)
                self.routed.put(name, backend)
            elif not urls:  # no ready replica: the control plane answers (503, or a cold start)
                self.routed.drop(name)
        self.routed.write()
        self.public.write()
        self.sync_tokens(grants)

    def _assign(self, name: str, now: float) -> str | None:
        """A free backend for a new deployment (None: all in use; HAProxy needs more)."""
        for backend, state in self._backends.items():
            if state.deployment is None and now >= state.free_at and not state.draining:
                state.deployment = name
                return backend
        return None

    def _grow(self, wanted: dict[str, object]) -> None:
        """Restart HAProxy's config with more backends or slots (a reload: rare, logged)."""
        backends = max(MIN_BACKENDS, 2 * len(wanted), len(self._backends))
        slots = max(len(b.slots) for b in self._backends.values()) if self._backends else MIN_SLOTS  # per kind, doubled
        log.info("haproxy: growing to %d backends of %d server slots (a reload)", backends, slots)
        self._render(backends, slots)
        self.routed.reset()
        self.public.reset()
        self._reload()

    def sync_tokens(self, grants: Iterable[Grant]) -> None:
        """Make HAProxy accept exactly these tokens (by hash), each for its deployments and at its rate; safe
        to call from any thread."""
        with self._tokens_lock:
            tokens, rates = token_maps(grants)
            self.tokens.replace(tokens)
            self.rates.replace(rates)

    def _sync_servers(self, backend: str, upstreams: list[Upstream]) -> bool:
        """Point free slots at new replicas and put retired ones in maintenance; False if out of slots.

        A replica with a Unix socket gets a u-slot, whose server address is a symlink in `links/` that now
        points at that socket (the runtime API changes only IP addresses); one without, an s-slot over TCP."""
        urls = [u.url for u in upstreams]
        state = self._backends[backend]
        now = time.monotonic()
        for slot, until in list(state.draining.items()):
            if now >= until:
                del state.draining[slot]
                state.slots[slot] = None
        serving = {url: slot for slot, url in state.slots.items() if url is not None and slot not in state.draining}
        # New replicas first, then the retired ones out: the other way round, a rollout that swaps the
        # only replica leaves the backend without a server for a moment, and a request then gets 503.
        for upstream in upstreams:
            url = upstream.url
            if url in serving:
                continue
            kind = "u" if upstream.socket else "s"
            free = next((slot for slot, used in state.slots.items() if used is None and slot[0] == kind), None)
            if free is None:
                return False
            if upstream.socket:
                link = self.folder / slot_link(backend, free)
                tmp = link.with_name(f".{link.name}.tmp")
                tmp.unlink(missing_ok=True)
                tmp.symlink_to(upstream.socket)
                tmp.replace(link)  # new connections of this slot reach the new replica from now on
            else:
                host, port = url.removeprefix("http://").rsplit(":", 1)
                self._command(f"set server {backend}/{free} addr {host} port {port}")
            self._command(f"set server {backend}/{free} state ready")
            state.slots[free] = url
        for url, slot in serving.items():
            if url not in urls:  # no new requests; those in flight finish (the replica drains too)
                self._command(f"set server {backend}/{slot} state maint")
                state.draining[slot] = now + self.grace + 1
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
            if len(fields) < len(header) or fields[column["svname"]] != "BACKEND" or fields[0] not in self._backends:
                continue
            name = self._backends[fields[0]].deployment
            if name is None:
                continue
            in_flight = _int(fields[column["scur"]]) + _int(fields[column["qcur"]])
            result[name] = (in_flight, _int(fields[column["stot"]]))
        return result

    # Files and commands

    def _render(self, backend_count: int, slot_count: int) -> None:
        """Write haproxy.cfg (`haproxy_config`) with generic backends b1..bN of server slots, keeping the
        deployment and the replicas each backend had."""
        previous = self._backends
        self._backends = {}
        backends = []
        for index in range(1, backend_count + 1):
            name = f"b{index}"
            state = self._backends[name] = _Backend()
            old = previous.get(name)
            for slot_index in range(1, slot_count + 1):
                for slot in (f"s{slot_index}", f"u{slot_index}"):
                    state.slots[slot] = old.slots.get(slot) if old is not None and slot not in old.draining else None
            if old is not None:
                state.deployment = old.deployment
            backends.append(backend_section(name, state.slots))
        settings = Settings(
            self.host,
            self.port,
            self.control_port,
            self.folder / "admin.sock",
            self.log_socket,
            self.grace,
            self.timeout,
            self.max_body_size,
            self.tls_pem if self.tls is not None else None,
            self.routed.path,
            self.public.path,
            self.tokens.path,
            self.rates.path,
        )
        tmp = self.config.with_suffix(".tmp")
        tmp.write_text(config_text(settings, backends))
        tmp.replace(self.config)

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
