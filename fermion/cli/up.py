"""`fermion up`: the self-hosted platform — control plane, gateway and REST API in one process."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from fermion.cli.app import app, fail, out, renamed_options
from fermion.cli.up_ray import RayAddressOption, RaySecretsDirOption, RayServeHostOption, RayServePortOption

if TYPE_CHECKING:
    from fermion.platform.trainings import TrainingLimits


def _running_elsewhere(data_dir: Path) -> str | None:
    """The URL of a live `fermion up` that already uses this data dir, if any."""
    from fermion.platform.home import read_up_file

    up = read_up_file(data_dir)
    if not up or not isinstance(up.get("pid"), int) or up["pid"] == os.getpid():
        return None
    try:
        os.kill(up["pid"], 0)
    except ProcessLookupError:
        return None  # left behind by one that was killed: ours to replace
    except PermissionError:
        pass
    cmdline = Path(f"/proc/{up['pid']}/cmdline")
    if cmdline.exists() and b"fermion" not in cmdline.read_bytes():
        return None  # the pid was reused by something else
    return f"{up.get('url')} (pid {up['pid']})"


@app.command(cls=renamed_options({"--grace": "--graceful-timeout"}))
def up(
    data_dir: Annotated[
        Path | None, typer.Option(help="Where state, logs and the admin token live. [default: $FERMION_HOME or ~/.fermion]")
    ] = None,
    db: Annotated[
        str | None,
        typer.Option(help="Database URL, e.g. postgresql://user:pw@host/db. [default: $FERMION_DB or SQLite in the data dir]"),
    ] = None,
    host: Annotated[str, typer.Option(help="Interface to listen on; 0.0.0.0 for all.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port for the API and the gateway; 0 picks a free one.")] = 8080,
    grace: Annotated[
        float,
        typer.Option("--graceful-timeout", help="Seconds replicas and in-flight requests get to finish on shutdown."),
    ] = 30.0,
    scale_down_delay: Annotated[float, typer.Option(help="Quiet seconds before the autoscaler removes a replica.")] = 30.0,
    gateway: Annotated[
        str,
        typer.Option(
            help="auto: HAProxy in front when it is installed, else the built-in Python gateway; or haproxy, or python."
        ),
    ] = "auto",
    backend: Annotated[
        str, typer.Option(help="local: replicas are processes on this machine; ray: Ray Serve replicas on a Ray cluster.")
    ] = "local",
    ray_address: RayAddressOption = None,
    ray_serve_port: RayServePortOption = None,
    ray_serve_host: RayServeHostOption = None,
    ray_secrets_dir: RaySecretsDirOption = None,
    max_replicas_per_deployment: Annotated[
        int, typer.Option(min=1, max=1000, help="The most replicas one deployment may ask for (its max_replicas).")
    ] = 32,
    max_body_size: Annotated[
        str,
        typer.Option(help="The largest request body a call to a deployment may send, e.g. 16MiB; 413 beyond, unread."),
    ] = "16MiB",
    max_replicas_total: Annotated[
        int | None,
        typer.Option(
            min=1,
            max=1000,
            help="The most replicas that may run at once, all deployments together (local backend). "
            "[default: 8 per CPU, at least 16; replicas must also fit in 80% of the memory]",
            show_default=False,
        ),
    ] = None,
    max_training_jobs: Annotated[
        int, typer.Option(min=1, max=1000, help="The most training jobs queued or running at once, all tokens together.")
    ] = 8,
    max_training_jobs_per_token: Annotated[
        int, typer.Option(min=1, max=1000, help="The most training jobs one token may have queued or running at once.")
    ] = 3,
    max_training_budget: Annotated[
        str, typer.Option(help="The longest budget one training job may ask for: 30s, 2m, 1h (at most 24h).")
    ] = "1h",
    log_level: Annotated[str, typer.Option(help="debug, info, warning or error.")] = "info",
    tls_cert: Annotated[
        Path | None,
        typer.Option(
            help="Serve HTTPS with this PEM certificate (its chain after it); needs --tls-key. "
            "HAProxy terminates TLS when it is in front, the built-in gateway otherwise.",
            show_default=False,
        ),
    ] = None,
    tls_key: Annotated[
        Path | None, typer.Option(help="The PEM private key of --tls-cert (unencrypted).", show_default=False)
    ] = None,
    redirect_http_port: Annotated[
        int | None,
        typer.Option(
            min=1,
            max=65535,
            help="With --tls-cert: also listen for plain HTTP on this port and redirect every request to HTTPS.",
            show_default=False,
        ),
    ] = None,
    code_from: Annotated[
        list[Path] | None,
        typer.Option(exists=True, file_okay=False, help="Python sources may come from this folder; repeatable. [default: none]"),
    ] = None,
) -> None:
    """Start the platform: deployments with replicas, a gateway, autoscaling, tokens and a REST API."""
    from fermion.platform.home import ADMIN_TOKEN_FILE, default_data_dir, make_private, write_private, write_up_file
    from fermion.platform.sandbox import Sandbox
    from fermion.serving.server import BindError, bind_socket, configure_logging
    from fermion.serving.tls import TLSFileError, check_tls_files, redirecting_to_https

    try:
        check_tls_files(tls_cert, tls_key)
    except TLSFileError as exc:
        fail(str(exc), 2)
    if redirect_http_port is not None and tls_cert is None:
        fail("--redirect-http-port redirects to HTTPS: give --tls-cert and --tls-key too", 2)
    if redirect_http_port is not None and redirect_http_port == port:
        fail(f"--redirect-http-port {redirect_http_port} is the HTTPS port too; pick another", 2)
    missing = [name for name in ("sqlalchemy", "fastapi", "alembic", "cryptography") if _absent(name)]
    if missing:
        fail(f"`fermion up` needs {', '.join(missing)}: pip install 'fermion[platform]'", 2)
    metrics_interval = _metrics_interval()
    training_limits = _training_limits(max_training_jobs, max_training_jobs_per_token, max_training_budget)
    folder = (data_dir or default_data_dir()).expanduser().resolve()
    try:
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        # It holds the database, the admin token and the secret key: nobody else may list or read it.
        loose_mode = make_private(folder)
        probe = folder / ".write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        fail(f"cannot use data dir {folder}: {exc.strerror or exc}; pick another with --data-dir", 2)
    # Replicas and training jobs inherit this, so `model:` sources and datasets resolve in this data dir.
    os.environ["FERMION_HOME"] = str(folder)
    # Replicas inherit this: the gateways, HAProxy and every replica refuse the same bodies.
    body_limit = _size(max_body_size, "--max-body-size")
    os.environ["FERMION_MAX_BODY_SIZE"] = str(body_limit)
    sandbox = Sandbox.probe(folder, code_from or [])  # typer checked that each --code-from is a folder
    elsewhere = _running_elsewhere(folder)
    if elsewhere:
        fail(f"a `fermion up` already runs from {folder} at {elsewhere}; stop it first, or use another --data-dir", 2)
    configure_logging(log_level)
    for chatty in ("alembic", "httpx"):  # their INFO lines (migrations run, every probe) are noise here
        logging.getLogger(chatty).setLevel(logging.WARNING)
    if loose_mode is not None:
        logging.getLogger("fermion.platform").warning(
            "data dir %s was readable by others (mode %o); made it 0700 (only its owner)", folder, loose_mode
        )

    from fermion.platform.auth import Scope
    from fermion.platform.backends.local import LocalBackend
    from fermion.platform.controlplane import ControlPlane
    from fermion.platform.errors import PlatformError
    from fermion.platform.store.database import Store

    url_or_dir = db or os.environ.get("FERMION_DB") or str(folder)
    try:
        store = Store.open(url_or_dir, key_dir=folder)
    except PlatformError as exc:
        fail(exc.message, 2)
    except Exception as exc:  # the driver's own error: unreachable server, bad password, ...
        shown = _hide_password(url_or_dir)
        fail(f"cannot open the database {shown}: {str(exc).splitlines()[0]}", 2)
    from fermion.platform.gateway import haproxy

    if gateway not in ("auto", "haproxy", "python"):
        fail(f"unknown --gateway {gateway!r}; use auto, haproxy or python", 2)
    if backend not in ("local", "ray"):
        fail(f"unknown --backend {backend!r}; use local or ray", 2)
    if backend == "ray" and gateway == "haproxy":
        fail("--backend ray routes to Ray Serve's proxy through the built-in gateway: leave out --gateway haproxy", 2)
    use_haproxy = backend == "local" and (gateway == "haproxy" or (gateway == "auto" and haproxy.available() is not None))
    if gateway == "haproxy" and haproxy.available() is None:
        fail(
            "--gateway haproxy needs the haproxy binary: install it (Debian/Ubuntu: apt-get install haproxy), or use --gateway python",
            2,
        )
    front = None
    if use_haproxy:
        haproxy.stop_leftover(folder / "haproxy")  # a killed control plane's HAProxy still holds the port
    try:
        sock = bind_socket(host, port)
    except BindError as exc:
        fail(str(exc), 2)
    if use_haproxy:
        # HAProxy takes the public port; the control plane listens behind it on a private one.
        port = sock.getsockname()[1]
        sock.close()
        sock = bind_socket("127.0.0.1", 0)
        tls = (tls_cert, tls_key) if tls_cert is not None and tls_key is not None else None
        front = haproxy.HAProxyFrontDoor(
            folder / "haproxy", host, port, sock.getsockname()[1], grace=grace, tls=tls, max_body_size=body_limit
        )
    from fermion.serving.announce import connect_host

    shown_host = connect_host(host)
    public_port = port if front is not None else sock.getsockname()[1]
    base = f"{'https' if tls_cert is not None else 'http'}://{shown_host}:{public_port}"
    redirect_sock = None
    if redirect_http_port is not None:
        try:
            redirect_sock = bind_socket(host, redirect_http_port)
        except BindError as exc:
            sock.close()
            fail(str(exc).replace("--port", "--redirect-http-port"), 2)

    new_token = None
    if not any(t.is_active(_now()) and Scope.ADMIN in t.scopes for t in store.list_tokens()):
        name = "admin" if not any(t.name == "admin" and t.revoked_at is None for t in store.list_tokens()) else "admin-2"
        record, new_token = store.create_token(name, [Scope.ADMIN])
        write_private(folder / ADMIN_TOKEN_FILE, new_token + "\n")
        store.audit("fermion up", "token.create", record.name, {"scopes": ["admin"], "token_id": record.id})

    head = None
    if backend == "ray":
        from fermion.cli.up_ray import ray_backend

        address = ray_address or os.environ.get("FERMION_RAY_ADDRESS")
        replicas, head = ray_backend(folder, address, ray_serve_port, grace, ray_serve_host, ray_secrets_dir)
        backend_line = f"ray at {replicas.dashboard}"
        if head is not None:
            backend_line += (
                f" (a head {'an earlier fermion up' if head.adopted else 'this fermion up'} started; it stops with it)"
            )
            if head.haproxy_ingress:
                backend_line += ", Serve's HAProxy ingress"
    else:
        replicas, backend_line = LocalBackend(folder, sandbox=sandbox), "local processes"
    plane = ControlPlane(
        store,
        replicas,
        grace=grace,
        scale_down_delay_s=scale_down_delay,
        front=front,
        metrics_interval_s=metrics_interval,
        data_dir=folder,
        training_limits=training_limits,
        max_replicas=max_replicas_per_deployment,
        max_replicas_total=max_replicas_total,
        max_body_size=body_limit,
        sandbox=sandbox,
    )
    # A new admin token is shown on a terminal only: piped into a service's log, it would stay there.
    shown_token = new_token if new_token is not None and sys.stdout.isatty() else None
    gateway_line = "HAProxy in front" if front is not None else "built-in"
    _banner(base, folder, store, shown_token, new_token is not None, gateway_line, backend_line)
    out.print("\n".join(sandbox.banner_lines(backend)), markup=False)
    if redirect_sock is not None:
        out.print(f"  HTTP    http://{shown_host}:{redirect_http_port}/ redirects to {base}/", markup=False)
    write_up_file(folder, base, os.getpid())
    # Behind HAProxy the control plane speaks plain HTTP on 127.0.0.1: HAProxy terminates TLS.
    tls_files = (str(tls_cert), str(tls_key)) if tls_cert is not None and tls_key is not None and front is None else None
    try:
        with contextlib.ExitStack() as stack:
            if redirect_sock is not None:
                stack.enter_context(redirecting_to_https(redirect_sock, public_port, shown_host, log_level))
            code = _serve(plane, sock, "127.0.0.1" if front is not None else host, grace, log_level, tls_files)
    finally:
        if head is not None:
            head.stop()
    up_file = folder / "up.json"
    if _running_elsewhere(folder) is None:
        up_file.unlink(missing_ok=True)
    store.close()
    logging.shutdown()
    sys.stdout.flush()
    raise typer.Exit(code)


def _serve(plane: object, sock: object, host: str, grace: float, log_level: str, tls: tuple[str, str] | None = None) -> int:
    from fermion.serving.config import ServeConfig
    from fermion.serving.server import uvicorn_server

    tls_cert, tls_key = tls or (None, None)
    config = ServeConfig(host=host, graceful_timeout=grace, log_level=log_level, tls_cert=tls_cert, tls_key=tls_key)
    server = uvicorn_server(plane, config)
    server.run(sockets=[sock])
    return 0 if server.started else 1


def _banner(base: str, folder: Path, store: object, token: str | None, new: bool, gateway: str, backend: str) -> None:
    """The startup lines; `token` is the new admin token to show (only ever on a terminal), `new` whether one was made."""
    from fermion._version import __version__
    from fermion.platform.home import ADMIN_TOKEN_FILE
    from fermion.serving.announce import announce_line

    database = store.url.render_as_string(hide_password=True)  # type: ignore[attr-defined]
    lines = [
        f"[bold]Fermion {__version__}[/] platform · data dir {folder} · database {database}",
        announce_line(base),
        f"  Console {base}/",
        f"  Docs    {base}/api/v1/docs",
        f"  Gateway {base}/run/<deployment>/<endpoint>  ({gateway})",
        f"  Backend {backend}",
        f"  Metrics {base}/metrics  (a token with the deploy scope)",
    ]
    if token:
        lines += [
            f"  Admin token  [bold]{token}[/]",
            f"          shown once; saved to {folder / ADMIN_TOKEN_FILE} (only you can read it)",
        ]
    elif new:
        lines.append(f"  Admin token  new, saved to {folder / ADMIN_TOKEN_FILE} (only you can read it; not printed to a log)")
    else:
        lines.append(f"  Admin token  in {folder / ADMIN_TOKEN_FILE} (the CLI on this machine finds it)")
    lines.append("  Deploy  fermion deploy echo examples/echo.py   ·   fermion ls   ·   stop with Ctrl+C")
    for line in lines:
        out.print(line, markup=True)


def _metrics_interval() -> float:
    """Seconds between the console's metrics samples: $FERMION_METRICS_INTERVAL_S (tests shorten it), else 5."""
    from fermion.platform.controlplane import METRICS_INTERVAL_S

    text = os.environ.get("FERMION_METRICS_INTERVAL_S", "").strip()
    if not text:
        return METRICS_INTERVAL_S
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not 0.1 <= value <= 3600:
        fail(f"FERMION_METRICS_INTERVAL_S={text!r}: give seconds between 0.1 and 3600", 2)
    return value


def _training_limits(jobs: int, per_token: int, budget: str) -> TrainingLimits:
    """The training queue's limits from `fermion up`'s options; a budget that is no duration, or out of range, fails."""
    from fermion.cli.train import parse_budget
    from fermion.platform.trainings import TrainingLimits

    try:
        seconds = parse_budget(budget)
    except ValueError:
        fail(f"--max-training-budget {budget!r} is not a duration; use e.g. 30s, 2m or 1h", 2)
    if not 2 <= seconds <= 24 * 3600:
        fail(f"--max-training-budget {budget!r} is out of range: give between 2s and 24h", 2)
    return TrainingLimits(max_jobs=jobs, max_jobs_per_token=per_token, max_budget_s=seconds)


def _absent(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is None


def _hide_password(url: str) -> str:
    if "://" not in url:
        return url
    import sqlalchemy as sa

    try:
        return sa.make_url(url).render_as_string(hide_password=True)
    except Exception:
        return url.split("://")[0] + "://..."


def _now() -> object:
    from datetime import UTC, datetime

    return datetime.now(UTC)


def _size(text: str, option: str) -> int:
    from fermion.serving.config import parse_size

    try:
        size = parse_size(text)
    except ValueError as exc:
        fail(f"{option}: {exc}", 2)
    if size < 1024:
        fail(f"{option} {text!r} is under 1 KiB: no request would fit; give e.g. 16MiB", 2)
    return size
