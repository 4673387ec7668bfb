"""`fermion deploy`, `update`, `scale`, `rollback` and `rm`: change what the platform runs."""

from __future__ import annotations

import json
import os
import shlex
import sys
from typing import TYPE_CHECKING, Annotated, Any
from urllib.parse import urlencode, urlsplit

import typer
from rich.markup import escape

from fermion.cli.app import app, err, fail, out, renamed_options
from fermion.cli.platform import (
    BAD_INPUT,
    SCALE_RENAMED,
    WAIT_RENAMED,
    CaCertOption,
    EnvOption,
    MaxReplicasOption,
    MinReplicasOption,
    NameArgument,
    NoWaitOption,
    ReplicasOption,
    TokenOption,
    UrlOption,
    WaitTimeoutOption,
    connect,
    describe,
    parse_env,
    wait_until_ready,
)

if TYPE_CHECKING:
    from fermion.client.platform import Deployment, Platform

TaskOption = Annotated[str | None, typer.Option(help="hf: sources: the pipeline task, when the model's config does not say.")]
CpusOption = Annotated[
    float | None,
    typer.Option(
        "--cpus",
        help="CPUs each replica reserves on Ray (fractions share one); locally, its compute threads.",
        show_default=False,
    ),
]
GpusOption = Annotated[
    float | None,
    typer.Option(
        "--gpus",
        help="GPUs each replica reserves: on Ray fractions share one; locally each replica gets whole GPUs of its own.",
        show_default=False,
    ),
]
MemoryOption = Annotated[
    str | None, typer.Option("--memory", help="Memory each replica reserves on Ray, e.g. 2GiB.", show_default=False)
]


def _resources(cpus: float | None, gpus: float | None, memory: str | None) -> dict[str, Any] | None:
    given = {"cpus": cpus, "gpus": gpus, "memory": memory}
    return {key: value for key, value in given.items() if value is not None} or None


TargetOption = Annotated[
    float | None, typer.Option("--target-in-flight", help="Autoscaling: requests in flight per replica to aim for.")
]


#: Hosts that mean "this machine": a local platform's replicas see our files, but not our working directory.
LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")


def resolve_source(source: str, platform_url: str) -> str:
    """SOURCE with a file or folder that exists here made absolute, when the platform runs on this machine.

    The replicas start in the platform's working directory, so `examples/echo.py` typed here would
    otherwise mean a file next to wherever `fermion up` was started.
    """
    from fermion.sources import split_source

    if urlsplit(platform_url).hostname not in LOCAL_HOSTS:
        return source
    scheme, rest = split_source(source)
    prefix = source[: len(source) - len(rest)]  # "py:", "hf:", ... or nothing
    location, sep, attr = rest.rpartition(":") if scheme == "py" and ":" in rest else (rest, "", "")
    if not location or not os.path.exists(location):
        return source
    return prefix + os.path.abspath(location) + sep + attr


def _env_or_fail(items: list[str] | None) -> dict[str, str] | None:
    try:
        return parse_env(items)
    except ValueError as exc:
        fail(str(exc), BAD_INPUT)


def example_call(doc: dict[str, Any], base: str, name: str, public: bool) -> tuple[str, str] | None:
    """A curl line and a Python line calling the deployment's first endpoint, from its OpenAPI document."""
    from fermion.schema import example_value

    components = doc.get("components", {}).get("schemas", {})
    auth = "" if public else ' -H "Authorization: Bearer $FERMION_TOKEN"'  # double quotes: the shell fills it in
    for path, operations in doc.get("paths", {}).items():
        for method, op in operations.items():
            meta = op.get("x-fermion") if isinstance(op, dict) else None
            if not meta or meta.get("files"):
                continue
            if method == "get":
                args = {p["name"]: example_value(p["schema"], components) for p in op.get("parameters", []) if p.get("required")}
                query = "?" + urlencode(args) if args else ""
                curl = f"curl {shlex.quote(base + path + query)}{auth}"
            else:
                content = op.get("requestBody", {}).get("content", {}).get("application/json", {})
                args = example_value(content.get("schema", {}), components) or {}
                flags = "-N " if meta.get("stream") else ""
                body = f" -H 'content-type: application/json' -d {shlex.quote(json.dumps(args))}"
                curl = f"curl {flags}-X {method.upper()} {shlex.quote(base + path)}{auth}{body}"
            py_args = ", ".join(f"{key}={value!r}" for key, value in args.items())
            call = f"Platform().client({name!r}).{meta['endpoint']}({py_args})"
            if meta.get("stream"):  # a `for` cannot follow `;`: two lines
                return curl, f"from fermion import Platform\nfor item in {call}: print(item)"
            return curl, f"from fermion import Platform; print({call})"
    return None


def _openapi(platform: Platform, deployment: Deployment) -> dict[str, Any] | None:
    """The deployment's OpenAPI document through the gateway, or None (an example is a nicety, not a must)."""
    from fermion.client.platform import PlatformAPIError

    try:
        return platform.openapi(deployment.name)
    except PlatformAPIError:
        return None


def print_ready(platform: Platform, deployment: Deployment) -> None:
    """Where the deployment serves and how to call it: URL, docs, a curl line and a Python line."""
    counts = deployment.replicas
    out.print(
        f"[green]✓[/] [bold]{escape(deployment.name)}[/] is {escape(deployment.status)}: "
        f"{counts.ready}/{counts.desired} replicas at revision {deployment.revision}",
        markup=True,
    )
    out.print(f"  URL     {deployment.url}", markup=False)
    if deployment.public:  # a browser sends no token, so a private deployment's docs page would answer 401
        out.print(f"  Docs    {deployment.url}/docs", markup=False)
    # The example is built from a replica's OpenAPI document: asking an idle deployment for it would
    # be a call like any other, and wake it (a cold start nobody asked for).
    document = _openapi(platform, deployment) if counts.ready else None
    example = example_call(document, deployment.url, deployment.name, deployment.public) if document else None
    if not counts.ready and deployment.min_replicas == 0:
        out.print("  Idle    no replica runs until the first call, which waits for one to start", markup=False)
    if example:
        out.print(f"  Try it  {example[0]}", markup=False)
        out.print("  Python  " + example[1].replace("\n", "\n          "), markup=False)
    if not deployment.public:
        out.print(
            f"  Token   callers need an invoke token: export FERMION_TOKEN=$(fermion token create {deployment.name}-caller)",
            markup=False,
        )


def _started(deployment: Deployment, what: str) -> None:
    out.print(f"{what}: {describe(deployment)}; follow it with `fermion status {deployment.name}`", markup=False)
    out.print(f"  URL     {deployment.url}", markup=False)


def _finish(
    platform: Platform,
    deployment: Deployment,
    what: str,
    no_wait: bool,
    timeout: float,
    revision: int | None,
    *,
    brief: bool = False,
) -> None:
    """Wait for the deployment (unless --no-wait) and say where it serves; `brief`: one line, no call examples."""
    if no_wait:
        _started(deployment, what)
        return
    err.print(escape(what), markup=True)
    ready = wait_until_ready(platform, deployment.name, revision=revision, timeout=timeout)
    if brief:
        out.print(f"[green]✓[/] [bold]{escape(ready.name)}[/] is {escape(describe(ready))}", markup=True)
    else:
        print_ready(platform, ready)


@app.command(cls=renamed_options(SCALE_RENAMED))
def deploy(
    name: NameArgument,
    source: Annotated[
        str, typer.Argument(help="What `fermion serve` takes: app.py:MyService, st:..., hf:..., sklearn:...", show_default=False)
    ],
    replicas: ReplicasOption = None,
    min_replicas: MinReplicasOption = None,
    max_replicas: MaxReplicasOption = None,
    target_in_flight: TargetOption = None,
    env: EnvOption = None,
    public: Annotated[bool, typer.Option("--public", help="Anyone may call it through the gateway, without a token.")] = False,
    task: TaskOption = None,
    trust_pickle: Annotated[
        bool, typer.Option("--trust-pickle", help="sklearn: sources: allow pickles (they can run code).")
    ] = False,
    cpus: CpusOption = None,
    gpus: GpusOption = None,
    memory: MemoryOption = None,
    note: Annotated[str | None, typer.Option(help="Why, kept with revision 1.")] = None,
    no_wait: NoWaitOption = False,
    timeout: WaitTimeoutOption = 300.0,
    url: UrlOption = None,
    token: TokenOption = None,
    ca_cert: CaCertOption = None,
) -> None:
    """Deploy SOURCE as NAME on the platform, wait until its replicas are ready and show how to call it."""
    from fermion.client.platform import ConflictError

    if replicas is not None and (min_replicas is not None or max_replicas is not None):
        fail("give --replicas N, or --min-replicas/--max-replicas for autoscaling, not both", BAD_INPUT)
    variables = _env_or_fail(env)
    with connect(url, token) as platform:
        try:
            with err.status(f"checking that {escape(source)} loads…"):
                deployment = platform.deployments.create(
                    name,
                    resolve_source(source, platform.url),
                    replicas=replicas,
                    min_replicas=min_replicas,
                    max_replicas=max_replicas,
                    target_in_flight=target_in_flight,
                    env=variables,
                    public=public,
                    task=task,
                    trust_pickle=trust_pickle,
                    resources=_resources(cpus, gpus, memory),
                    note=note,
                )
        except ConflictError as exc:
            fail(f"{exc.message.split(';')[0]}; change it with `fermion update {name} SOURCE`, or pick another name", BAD_INPUT)
        _finish(platform, deployment, f"deployed {name} (revision {deployment.revision})", no_wait, timeout, None)


@app.command(cls=renamed_options(WAIT_RENAMED))
def update(
    name: NameArgument,
    source: Annotated[
        str | None, typer.Argument(help="A new source to roll out (default: keep the current one).", show_default=False)
    ] = None,
    env: Annotated[
        list[str] | None,
        typer.Option(
            "--env",
            "-e",
            help="NAME=VALUE (repeat it): REPLACES the whole environment; NAME alone passes your $NAME.",
            show_default=False,
        ),
    ] = None,
    task: TaskOption = None,
    trust_pickle: Annotated[
        bool | None, typer.Option("--trust-pickle/--no-trust-pickle", help="sklearn: sources: allow pickles.", show_default=False)
    ] = None,
    cpus: CpusOption = None,
    gpus: GpusOption = None,
    memory: MemoryOption = None,
    public: Annotated[
        bool | None, typer.Option("--public/--private", help="Callable without a token, or only with one.", show_default=False)
    ] = None,
    target_in_flight: TargetOption = None,
    note: Annotated[str | None, typer.Option(help="Why: kept with the new revision.")] = None,
    no_wait: NoWaitOption = False,
    timeout: WaitTimeoutOption = 300.0,
    url: UrlOption = None,
    token: TokenOption = None,
    ca_cert: CaCertOption = None,
) -> None:
    """Change a deployment: a new SOURCE, env or options roll out as a new revision without dropping requests."""
    variables = _env_or_fail(env)
    resources = _resources(cpus, gpus, memory)
    if (
        source is None
        and variables is None
        and task is None
        and trust_pickle is None
        and resources is None
        and public is None
        and target_in_flight is None
    ):
        fail(
            "nothing to change: give a SOURCE, --env, --task, --cpus/--gpus/--memory, --public/--private or --target-in-flight",
            BAD_INPUT,
        )
    with connect(url, token) as platform:
        before = platform.deployments.get(name)
        with err.status("checking that the new revision loads…"):
            after = platform.deployments.update(
                name,
                source=resolve_source(source, platform.url) if source is not None else None,
                env=variables,
                task=task,
                trust_pickle=trust_pickle,
                resources=resources,
                public=public,
                target_in_flight=target_in_flight,
                note=note,
            )
        if after.revision == before.revision:
            out.print(f"updated {escape(name)}: still revision {after.revision} ({escape(describe(after))})", markup=True)
            return
        what = f"rolling out revision {after.revision} of {name} (was {before.revision})"
        _finish(platform, after, what, no_wait, timeout, after.revision)


@app.command(cls=renamed_options(SCALE_RENAMED))
def scale(
    name: NameArgument,
    count: Annotated[int | None, typer.Argument(hidden=True, show_default=False)] = None,
    replicas: Annotated[int | None, typer.Option("--replicas", "-r", help="Run exactly N replicas.", show_default=False)] = None,
    min_replicas: MinReplicasOption = None,
    max_replicas: MaxReplicasOption = None,
    no_wait: NoWaitOption = False,
    timeout: WaitTimeoutOption = 300.0,
    url: UrlOption = None,
    token: TokenOption = None,
    ca_cert: CaCertOption = None,
) -> None:
    """Run --replicas N of NAME, or let the autoscaler keep between --min-replicas and --max-replicas."""
    if count is not None:  # `fermion scale NAME 3`, the old spelling of --replicas 3
        if replicas is not None:
            fail(f"give the number of replicas once: --replicas {replicas}", BAD_INPUT)
        err.print(
            f"warning: `fermion scale {name} {count}` is deprecated: use --replicas {count} (the old spelling goes away in the next release)",
            markup=False,
        )
        replicas = count
    if (replicas is None) == (min_replicas is None and max_replicas is None):
        fail("give --replicas N, or --min-replicas/--max-replicas for autoscaling (not both, and not neither)", BAD_INPUT)
    with connect(url, token) as platform:
        deployment = platform.deployments.scale(name, replicas, min_replicas=min_replicas, max_replicas=max_replicas)
        span = (
            f"{deployment.min_replicas}"
            if deployment.min_replicas == deployment.max_replicas
            else f"{deployment.min_replicas}..{deployment.max_replicas}"
        )
        _finish(platform, deployment, f"scaling {name} to {span} replicas", no_wait, timeout, None, brief=True)


@app.command(cls=renamed_options(WAIT_RENAMED))
def rollback(
    name: NameArgument,
    revision: Annotated[
        int | None,
        typer.Argument(
            help="The revision to go back to (`fermion revisions NAME` lists them). [default: the one before the current]",
            show_default=False,
        ),
    ] = None,
    no_wait: NoWaitOption = False,
    timeout: WaitTimeoutOption = 300.0,
    url: UrlOption = None,
    token: TokenOption = None,
    ca_cert: CaCertOption = None,
) -> None:
    """Roll out an earlier revision's source, options and env again (as a new revision)."""
    with connect(url, token) as platform:
        before = platform.deployments.get(name)
        deployment = platform.deployments.rollback(name, revision)
        back_to = revision if revision is not None else before.revision - 1
        what = f"rolling {name} back to revision {back_to}'s source as revision {deployment.revision}"
        _finish(platform, deployment, what, no_wait, timeout, deployment.revision)


@app.command("rm")
def remove(
    name: NameArgument,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Delete without asking (needed when not at a terminal).")] = False,
    url: UrlOption = None,
    token: TokenOption = None,
    ca_cert: CaCertOption = None,
) -> None:
    """Delete deployment NAME: its replicas drain and stop. Asks first, unless --yes."""
    with connect(url, token) as platform:
        deployment = platform.deployments.get(name)  # an unknown name fails here, before any question
        if not yes:
            if not sys.stdin.isatty():
                fail(f"not deleting {name!r} without confirmation: add --yes", BAD_INPUT)
            replicas = deployment.replicas.desired
            if not typer.confirm(f"Delete deployment {name!r} and stop its {replicas} replica(s)?", default=False):
                fail(f"{name!r} was not deleted")
        platform.deployments.delete(name)
        out.print(f"deleting {escape(name)}: its replicas drain and stop; `fermion ls` shows it until they have", markup=True)
