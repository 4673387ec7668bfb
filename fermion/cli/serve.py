"""`fermion serve SOURCE`: serve a Service (or a model source) over HTTP."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shlex
import sys
from typing import Annotated, Any

import typer

from fermion.cli.app import app, fail, out, renamed_options


def _example_call(service: Any, base: str) -> tuple[str, str] | None:
    """A curl line and a Python line for the service's first endpoint."""
    from fermion.schema import example_value
    from fermion.serving.openapi import build_openapi

    doc = build_openapi(service)
    components = doc["components"]["schemas"]
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            meta = op.get("x-fermion")
            if not meta or meta["files"]:
                continue
            name = meta["endpoint"]
            if method == "get":
                args = {p["name"]: example_value(p["schema"], components) for p in op.get("parameters", []) if p["required"]}
                query = "&".join(f"{k}={v}" for k, v in args.items())
                curl = f"curl {shlex.quote(base + path + ('?' + query if query else ''))}"
            else:
                schema = op["requestBody"]["content"]["application/json"]["schema"]
                args = example_value(schema, components) or {}
                flags = "-N " if meta["stream"] else ""
                curl = f"curl {flags}{base}{path} -H 'content-type: application/json' -d {shlex.quote(json.dumps(args))}"
            py_args = ", ".join(f"{k}={v!r}" for k, v in args.items())
            # One line, so no `for` statement: a stream prints as the list of its items.
            call = f"print(list(client.{name}({py_args})))" if meta["stream"] else f"print(client.{name}({py_args}))"
            return curl, f'from fermion import Client; client = Client("{base}"); {call}'
    return None


def print_banner(service: Any, source: str, base: str, workers: int) -> None:
    """The lines that tell a person where the replica serves and how to call it."""
    from fermion._version import __version__
    from fermion.serving.announce import announce_line

    name = type(service).service_name()
    lines = [
        f"[bold]Fermion {__version__}[/] · serving [bold cyan]{name}[/] from {source}"
        + (f" with {workers} workers" if workers > 1 else ""),
        announce_line(base),
        f"  Docs    {base}/docs",
    ]
    example = _example_call(service, base)
    if example:
        lines.append(f"  Try it  {example[0]}")
        lines.append(f"  Python  {example[1]}")
    lines.append("  Health  " + f"{base}/readyz · metrics {base}/metrics · stop with Ctrl+C")
    for line in lines:
        out.print(line, markup=True)


@app.command(cls=renamed_options({"--timeout": "--endpoint-timeout"}))
def serve(
    source: Annotated[str, typer.Argument(help="app.py:MyService, app.py, py:app.py:MyService or package.module:MyService.")],
    host: Annotated[str | None, typer.Option(help="Interface to listen on; 0.0.0.0 for all. [default: 127.0.0.1]")] = None,
    port: Annotated[int | None, typer.Option(help="Port to listen on; 0 picks a free one. [default: 8000]")] = None,
    port_file: Annotated[
        str | None,
        typer.Option(
            help="Once listening, write the server's URL, port and pid to this file as JSON (atomically; removed "
            "on exit), for a program that started it with --port 0."
        ),
    ] = None,
    unix_socket: Annotated[
        str | None,
        typer.Option(
            help="Also listen on this Unix socket (owner-only; one process, not with --workers), named in the port file: "
            "a proxy on the same machine reaches the replica through it faster than through TCP.",
        ),
    ] = None,
    workers: Annotated[
        int | None, typer.Option(help="Worker processes sharing the port; each runs setup(). [default: 1]")
    ] = None,
    timeout: Annotated[
        float | None,
        typer.Option("--endpoint-timeout", help="Seconds an endpoint may run by default before the caller gets 504."),
    ] = None,
    max_body_size: Annotated[str | None, typer.Option(help="Largest request body, e.g. 16MiB (413 beyond).")] = None,
    max_concurrency: Annotated[int | None, typer.Option(help="Default concurrent requests per endpoint.")] = None,
    max_queue: Annotated[int | None, typer.Option(help="Requests that may wait per endpoint before 429.")] = None,
    threads: Annotated[int | None, typer.Option(help="Threads running blocking endpoint code, per worker.")] = None,
    compute_threads: Annotated[int | None, typer.Option(help="torch/BLAS threads per worker (default: cores ÷ workers).")] = None,
    graceful_timeout: Annotated[float | None, typer.Option(help="Seconds in-flight requests get after SIGTERM.")] = None,
    drain_delay: Annotated[
        float | None,
        typer.Option(
            help="Seconds to keep serving after SIGTERM (/readyz says 503) so a load balancer can take the replica out first; SIGINT skips it."
        ),
    ] = None,
    log_level: Annotated[str | None, typer.Option(help="debug, info, warning or error.")] = None,
    access_log: Annotated[bool, typer.Option("--access-log", help="Log every request.")] = False,
    tls_cert: Annotated[
        str | None, typer.Option(help="Serve HTTPS with this PEM certificate (its chain after it); needs --tls-key.")
    ] = None,
    tls_key: Annotated[str | None, typer.Option(help="The PEM private key of --tls-cert (unencrypted).")] = None,
    task: Annotated[
        str | None, typer.Option(help="hf: sources: the pipeline task, when the model's config does not say.")
    ] = None,
    device: Annotated[
        str | None,
        typer.Option(
            help="hf: and st: sources: the torch device the model runs on: cpu, cuda, cuda:N or mps "
            "(default: cpu; text generation: cuda when torch sees a GPU)."
        ),
    ] = None,
    trust_pickle: Annotated[
        bool,
        typer.Option(
            "--trust-pickle",
            help="sklearn: sources: allow .pkl/.joblib files and non-scikit-learn types in .skops files (both can run code).",
        ),
    ] = False,
    check: Annotated[
        bool, typer.Option("--check", help="Only check that SOURCE loads (no setup, no server); exit 0 if it does.")
    ] = False,
) -> None:
    """Serve SOURCE over HTTP with docs, health, metrics, batching and limits."""
    from fermion.replica import worker
    from fermion.serving.announce import PortFile, connect_host, remove_port_file, write_port_file
    from fermion.serving.config import ServeConfig, parse_size
    from fermion.serving.server import (
        BindError,
        bind_socket,
        bind_unix_socket,
        configure_logging,
        limit_compute_threads_env,
        run_replica,
        run_workers,
    )
    from fermion.serving.tls import check_tls_files
    from fermion.sources import SourceError, load_service

    try:
        config = ServeConfig.from_env(
            host=host,
            port=port,
            workers=workers,
            timeout=timeout,
            max_body_size=parse_size(max_body_size) if max_body_size else None,
            max_concurrency=max_concurrency,
            max_queue=max_queue,
            threads=threads,
            compute_threads=compute_threads,
            graceful_timeout=graceful_timeout,
            drain_delay=drain_delay,
            log_level=log_level,
            access_log=access_log or None,
            tls_cert=tls_cert,
            tls_key=tls_key,
        )
        check_tls_files(config.tls_cert, config.tls_key)
    except ValueError as exc:
        fail(str(exc), 2)
    configure_logging(config.log_level)
    limit_compute_threads_env(config)
    options = {"task": task, "device": device, "trust_pickle": trust_pickle}
    try:
        service = load_service(source, options)
    except SourceError as exc:
        fail(str(exc), 2)
    if check:
        routes = sorted(f"{info.method} {info.path}" for info in service.endpoints())
        out.print(f"ok: {source} is {service.service_name()} with {len(routes)} endpoint(s): {', '.join(routes)}")
        raise typer.Exit(0)
    if unix_socket is not None and config.workers > 1:
        fail("--unix-socket serves one process: leave out --workers, or --unix-socket", 2)
    try:
        sock = bind_socket(config.host, config.port)
        also = [bind_unix_socket(unix_socket)] if unix_socket is not None else []
    except BindError as exc:
        fail(str(exc), 2)
    config.port = sock.getsockname()[1]
    scheme = "https" if config.tls_cert else "http"
    base = f"{scheme}://{connect_host(config.host)}:{config.port}"
    print_banner(service, source, base, config.workers)
    if port_file is not None:
        # Listening, not ready: setup() runs next, and /readyz says when it is done.
        try:
            where = os.path.abspath(unix_socket) if unix_socket is not None else None
            write_port_file(port_file, PortFile(url=base, scheme=scheme, port=config.port, pid=os.getpid(), unix_socket=where))
        except OSError as exc:
            fail(f"cannot write --port-file {port_file}: {exc.strerror or exc}; give a path in a folder you can write to", 2)
    if config.workers > 1:
        code = run_workers(worker.__name__, worker.worker_args(source, options), config, sock)
    else:
        code = run_replica(service, config, sock, also=also)
    if port_file is not None:
        remove_port_file(port_file, os.getpid())
    if unix_socket is not None:
        with contextlib.suppress(OSError):
            os.unlink(unix_socket)
    # Drained and torn down: skip the interpreter's teardown, which takes seconds once torch or
    # transformers are loaded and only delays a restart.
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
