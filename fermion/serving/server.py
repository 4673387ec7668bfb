"""Run a replica: uvicorn on a socket we bind ourselves, graceful SIGTERM, optional worker processes.

Exit codes: 0 after a clean or drained shutdown, 2 for a bad source or option, 3 when setup()
raised, 1 for anything else.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Generator, Sequence
from dataclasses import asdict
from typing import Any

from fermion.service import Service
from fermion.serving.app import ReplicaApp
from fermion.serving.config import ServeConfig
from fermion.serving.metrics import SNAPSHOT_DIR_ENV

log = logging.getLogger("fermion.serving")

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_SETUP_FAILED = 0, 1, 2, 3
_COMPUTE_THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS")


class BindError(OSError):
    """The address could not be bound; the message says which and what to do."""


#: How long a replica keeps an idle keep-alive connection open (the gateway's pool closes its own sooner).
KEEP_ALIVE_S = 30


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening TCP socket, or a `BindError` that names the address."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        if exc.errno in (98, 48):  # EADDRINUSE on Linux / macOS
            raise BindError(
                f"port {port} on {host} is already in use; pick another with --port (or --port 0 for any free port)"
            ) from None
        raise BindError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


#: The longest path a Unix socket address holds (sun_path, with its terminating NUL).
_UNIX_PATH_MAX = 107


def bind_unix_socket(path: str | os.PathLike[str]) -> socket.socket:
    """A listening Unix socket at `path` that only this user may connect to (a stale socket file there is replaced),
    or a `BindError`. A path longer than a socket address holds is bound from its folder."""
    target = os.path.abspath(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        if os.path.exists(target):
            os.unlink(target)
        previous = os.umask(0o177)  # created 0600: no window in which others may connect
        try:
            if len(os.fsencode(target)) <= _UNIX_PATH_MAX:
                sock.bind(target)
            else:  # bind relative to the folder, which has no such limit (startup is single-threaded)
                here = os.getcwd()
                os.chdir(os.path.dirname(target))
                try:
                    sock.bind(os.path.basename(target))
                finally:
                    os.chdir(here)
        finally:
            os.umask(previous)
    except OSError as exc:
        sock.close()
        raise BindError(f"cannot listen on the Unix socket {target}: {exc.strerror or exc}") from None
    sock.listen(2048)
    return sock


def limit_compute_threads_env(config: ServeConfig) -> None:
    """Set BLAS/OpenMP thread counts for this process (before any model library loads), unless set."""
    threads = str(config.effective_compute_threads())
    for var in _COMPUTE_THREAD_VARS:
        os.environ.setdefault(var, threads)


def configure_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)-7s %(name)s [%(process)d] %(message)s",
        stream=sys.stderr,
    )


def uvicorn_server(app: Any, config: ServeConfig, on_drain: Callable[[], None] | None = None) -> Any:
    """A uvicorn server for any ASGI app: uvloop + httptools, our logging, SIGTERM → drain → exit 0.

    With `config.drain_delay`, SIGTERM first calls `on_drain` (the replica's /readyz turns 503) and
    keeps serving for that many seconds, so that a load balancer takes the replica out before it
    closes its connections: closing an idle keep-alive connection races with a request the balancer
    is sending on it, and that request fails. A second SIGTERM, or SIGINT, stops at once.
    """
    import uvicorn

    class _Server(uvicorn.Server):
        drain_timer: threading.Timer | None = None

        def handle_exit(self, sig: int, frame: Any) -> None:
            if sig == signal.SIGTERM and config.drain_delay > 0 and self.drain_timer is None and not self.should_exit:
                if on_drain is not None:
                    on_drain()
                log.info("SIGTERM: serving %.1f s more while load balancers take this replica out", config.drain_delay)
                self.drain_timer = threading.Timer(config.drain_delay, self.stop_draining)
                self.drain_timer.daemon = True
                self.drain_timer.start()
                return
            super().handle_exit(sig, frame)

        def stop_draining(self) -> None:
            self.should_exit = True

        @contextlib.contextmanager
        def capture_signals(self) -> Generator[None, None, None]:
            # uvicorn re-raises the signal after a graceful shutdown, so the process would die
            # with -15; a replica that drained cleanly must exit 0 instead.
            if threading.current_thread() is not threading.main_thread():
                yield
                return
            originals = {sig: signal.signal(sig, self.handle_exit) for sig in (signal.SIGINT, signal.SIGTERM)}
            try:
                yield
            finally:
                for sig, handler in originals.items():
                    signal.signal(sig, handler)

    try:
        import uvloop  # noqa: F401

        loop = "uvloop"
    except ImportError:  # pragma: no cover - uvicorn[standard] brings it
        loop = "asyncio"
    uv_config = uvicorn.Config(
        app,
        loop=loop,
        http="httptools",
        lifespan="on",
        access_log=config.access_log,
        log_config=None,
        log_level="debug" if config.log_level.lower() == "debug" else "warning",  # uvicorn's own chatter
        timeout_graceful_shutdown=config.graceful_timeout,  # type: ignore[arg-type]  # uvicorn waits with wait_for: floats work
        timeout_keep_alive=KEEP_ALIVE_S,
        server_header=False,
        date_header=False,
        ssl_certfile=config.tls_cert,
        ssl_keyfile=config.tls_key,
    )
    if config.access_log:
        logging.getLogger("uvicorn.access").setLevel(logging.INFO)
    return _Server(uv_config)


def run_replica(
    service: Service,
    config: ServeConfig,
    sock: socket.socket,
    on_ready: Callable[[], None] | None = None,
    accept_before_ready: bool = True,
    also: Sequence[socket.socket] = (),
) -> int:
    """Serve `service` on `sock` (and the sockets `also` lists: a Unix socket) in this process until SIGTERM/SIGINT;
    returns the exit code."""
    app = ReplicaApp(service, config)
    app.accept_before_ready = accept_before_ready
    server = uvicorn_server(app, config, on_drain=app.drain)
    exit_code = EXIT_OK

    def setup_failed(exc: BaseException) -> None:
        nonlocal exit_code
        exit_code = EXIT_SETUP_FAILED
        server.should_exit = True

    app.on_setup_failed = setup_failed
    app.on_ready = on_ready
    server.run(sockets=[sock, *also])
    if exit_code == EXIT_OK and not server.started:
        exit_code = EXIT_ERROR
    return exit_code


def run_workers(worker_module: str, worker_args: Sequence[str], config: ServeConfig, sock: socket.socket) -> int:
    """Run `config.workers` replica processes sharing `sock`; restart crashed ones; drain on SIGTERM.

    Each is `python -m WORKER_MODULE --fd FD --config JSON WORKER_ARGS...`: the caller names the
    module that loads the Service (`fermion.replica.worker`), so serving never sees a source string.
    """
    metrics_dir = tempfile.mkdtemp(prefix="fermion-metrics-")
    env = dict(os.environ, **{SNAPSHOT_DIR_ENV: metrics_dir})
    threads = str(config.effective_compute_threads())
    for var in _COMPUTE_THREAD_VARS:
        env.setdefault(var, threads)
    worker_config = json.dumps(asdict(config))
    fd = sock.fileno()

    def spawn() -> subprocess.Popen[bytes]:
        cmd = [sys.executable, "-m", worker_module, "--fd", str(fd), "--config", worker_config, *worker_args]
        return subprocess.Popen(cmd, env=env, pass_fds=(fd,))

    stopping = threading.Event()
    received = [signal.SIGTERM]  # what the workers get: SIGTERM drains (after the drain delay), SIGINT at once

    def on_signal(sig: int, frame: Any) -> None:
        received[0] = sig
        stopping.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    workers = [spawn() for _ in range(config.workers)]
    restarts = 0
    exit_code = EXIT_OK
    try:
        while not stopping.wait(0.2):
            for index, proc in enumerate(workers):
                code = proc.poll()
                if code is None:
                    continue
                if code in (EXIT_SETUP_FAILED, EXIT_USAGE):
                    log.error("worker %d exited with code %d; stopping", proc.pid, code)
                    exit_code = code
                    stopping.set()
                    break
                restarts += 1
                delay = min(30.0, 0.5 * 2 ** min(restarts, 6))
                log.warning("worker %d exited with code %s; starting a new one in %.1f s", proc.pid, code, delay)
                if stopping.wait(delay):
                    break
                workers[index] = spawn()
    finally:
        for proc in workers:
            if proc.poll() is None:
                proc.send_signal(received[0])
        deadline = time.monotonic() + config.drain_delay + config.graceful_timeout + 5
        for proc in workers:
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        sock.close()
        _remove_tree(metrics_dir)
    return exit_code


def _remove_tree(path: str) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)
