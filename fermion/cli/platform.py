"""What the platform commands (`fermion deploy`, `ls`, `status`, `token`, ...) share.

Each command finds the platform with `--url`/`--token`, else `FERMION_URL`/`FERMION_TOKEN`, else the
local `fermion up` (see fermion/platform/home.py), verifies an https:// one with `--ca-cert`, else
`FERMION_CA_CERT`, else the system's CAs, talks to it through `fermion.client.platform`,
and turns every failure into one red line: exit code 2 when the input was wrong (the API said 404,
409 or 422, or an option did not parse), 1 for anything else.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from collections.abc import Iterator
from contextvars import ContextVar
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer
from rich.markup import escape
from rich.measure import Measurement
from rich.table import Table

from fermion.cli.app import err, out

if TYPE_CHECKING:
    from fermion.client.platform import Deployment, Platform, PlatformAPIError

NameArgument = Annotated[str, typer.Argument(help="The deployment's name, e.g. 'echo'.", show_default=False)]
UrlOption = Annotated[
    str | None,
    typer.Option("--url", help="The platform's URL. [default: $FERMION_URL, else the local `fermion up`]", show_default=False),
]
TokenOption = Annotated[
    str | None,
    typer.Option("--token", help="An API token. [default: $FERMION_TOKEN, else the local admin token]", show_default=False),
]
#: The `--ca-cert` of the command being run. Its option records it here and `connect()` reads it, so that
#: it need not travel through every helper between a command and `connect()`; every command that
#: reaches `connect()` declares `CaCertOption` (so a value never outlives its command).
_ca_cert_given: ContextVar[str | None] = ContextVar("ca_cert_given", default=None)


def _remember_ca_cert(value: str | None) -> str | None:
    _ca_cert_given.set(value)
    return value


CaCertOption = Annotated[
    str | None,
    typer.Option(
        "--ca-cert",
        help="The PEM file of the CA that signed an https:// server's certificate. [default: $FERMION_CA_CERT, else the system's CAs]",
        show_default=False,
        callback=_remember_ca_cert,
    ),
]
EnvOption = Annotated[
    list[str] | None,
    typer.Option(
        "--env",
        "-e",
        help="NAME=VALUE for the replicas' environment (repeat it); NAME alone passes your own $NAME. Values are secrets: never shown.",
        show_default=False,
    ),
]
NoWaitOption = Annotated[bool, typer.Option("--no-wait", help="Return at once instead of waiting until the replicas are ready.")]
WaitTimeoutOption = Annotated[float, typer.Option("--wait-timeout", help="Seconds to wait for the replicas to be ready.")]
ReplicasOption = Annotated[
    int | None, typer.Option("--replicas", "-r", help="Run exactly N replicas. [default: 1]", show_default=False)
]
MinReplicasOption = Annotated[
    int | None,
    typer.Option("--min-replicas", help="Autoscaling: the fewest replicas (0: none while idle).", show_default=False),
]
MaxReplicasOption = Annotated[
    int | None, typer.Option("--max-replicas", help="Autoscaling: the most replicas.", show_default=False)
]
#: Old spellings the deploy commands still take for one release (see `renamed_options`).
WAIT_RENAMED = {"--timeout": "--wait-timeout"}
SCALE_RENAMED = {**WAIT_RENAMED, "--min": "--min-replicas", "--max": "--max-replicas"}
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON for scripts instead of a table.")]

#: Exit codes: the input was wrong (a bad value, an unknown name, a name taken) vs anything else.
BAD_INPUT, FAILED = 2, 1
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*$", re.IGNORECASE)
_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
STATUS_STYLES = {
    "ready": "green",
    "starting": "yellow",
    "degraded": "yellow",
    "idle": "dim",
    "failing": "bold red",
    "deleting": "dim",
}


def fail_with(message: str, code: int = FAILED) -> NoReturn:
    """Like `fail()`, for messages that may carry detail lines (e.g. a crashed replica's last log lines).

    The first line is the one red error line; the rest follows, dimmed and indented.
    """
    first, _, rest = message.strip().partition("\n")
    err.print(f"[bold red]error:[/] {escape(first)}", markup=True)
    for line in rest.splitlines():
        err.print(f"[dim]  {escape(line)}[/]", markup=True)
    raise typer.Exit(code)


def exit_code(error: PlatformAPIError) -> int:
    """2 for requests the API rejected as wrong input (404, 409, 422), 1 otherwise."""
    return BAD_INPUT if error.status in (404, 409, 422) else FAILED


@contextlib.contextmanager
def connect(url: str | None, token: str | None, timeout: float = 30.0, data_dir: Path | None = None) -> Iterator[Platform]:
    """A `Platform` client for the command (with its `--ca-cert`); any platform error inside the block becomes one red line."""
    from fermion.client.platform import DeploymentFailed, Platform, PlatformAPIError
    from fermion.platform.home import NoPlatform

    try:
        platform = Platform(url, token, timeout=timeout, data_dir=data_dir, ca_cert=_ca_cert_given.get())
    except NoPlatform as exc:
        fail_with(str(exc))
    except ValueError as exc:
        fail_with(str(exc), BAD_INPUT)
    try:
        with platform:
            yield platform
    except PlatformAPIError as exc:
        fail_with(exc.message, exit_code(exc))
    except (DeploymentFailed, TimeoutError) as exc:
        fail_with(str(exc))


def parse_env(items: list[str] | None, environ: dict[str, str] | None = None) -> dict[str, str] | None:
    """`--env NAME=VALUE` (or `--env NAME`: the value of your own $NAME) → a dict; None if none given.

    `ValueError` names the variable but never shows a value: values are secrets.
    """
    if not items:
        return None
    source = os.environ if environ is None else environ
    env: dict[str, str] = {}
    for position, item in enumerate(items, 1):
        name, sep, value = item.partition("=")
        if not _ENV_NAME.match(name):
            shown = repr(name) if sep else f"number {position}"
            raise ValueError(
                f"--env {shown} is not NAME=VALUE with a NAME of letters, digits and '_' (not starting with a digit)"
            )
        if not sep:
            if name not in source:
                raise ValueError(f"--env {name}: ${name} is not set here; give --env {name}=VALUE")
            value = source[name]
        if name in env:
            raise ValueError(f"--env {name} is given twice")
        env[name] = value
    return env


def parse_duration(text: str) -> int:
    """'30d', '12h', '15m', '90s', '2w' or plain seconds ('3600') → whole seconds (at least 1)."""
    found = _DURATION.match(text)
    if not found:
        raise ValueError(f"--expires-in {text!r} is not a duration; use e.g. 30d, 12h, 15m or 3600 (seconds)")
    seconds = round(float(found.group(1)) * _SECONDS[found.group(2).lower()])
    if seconds < 1:
        raise ValueError(f"--expires-in {text!r} is shorter than one second")
    return seconds


def describe(deployment: Deployment, *, with_status: bool = True) -> str:
    """'ready · 2/2 replicas ready' (plus how many are starting)."""
    counts = deployment.replicas
    text = f"{counts.ready}/{counts.desired} replicas ready" + (f", {counts.starting} starting" if counts.starting else "")
    return f"{deployment.status} · {text}" if with_status else text


def print_json(value: Any) -> None:
    """Machine output: plain JSON on stdout, no colours or wrapping."""
    print(json.dumps(value, ensure_ascii=False, indent=2, default=str), flush=True)


def print_table(table: Table) -> None:
    """A table on stdout; piped into a file or another program, it keeps its natural width instead of 80 columns."""
    if out.is_terminal:
        out.print(table)
        return
    from rich.console import Console

    width = Measurement.get(out, out.options.update_width(100_000), table).maximum
    Console(file=out.file, width=max(width, out.width), color_system=None, highlight=False).print(table)


def styled_status(status: str) -> str:
    """The status as rich markup, coloured by how healthy it is."""
    style = STATUS_STYLES.get(status, "")
    return f"[{style}]{escape(status)}[/]" if style else escape(status)


def replica_counts(deployment: Deployment) -> str:
    """'2/3 (1..3)': ready/desired, and the autoscaler's range where it has one."""
    counts = deployment.replicas
    text = f"{counts.ready}/{counts.desired}"
    if deployment.min_replicas != deployment.max_replicas:
        text += f" ({deployment.min_replicas}..{deployment.max_replicas})"
    return text


def wait_until_ready(platform: Platform, name: str, *, revision: int | None = None, timeout: float = 300.0) -> Deployment:
    """`wait_ready` with a spinner on a terminal (one line per change otherwise); Ctrl+C stops waiting only."""
    label = f"revision {revision} of {name}" if revision is not None else name
    try:
        if err.is_terminal:
            with err.status(f"waiting for {escape(label)}…") as spinner:
                return platform.deployments.wait_ready(
                    name,
                    timeout,
                    lambda d: spinner.update(
                        f"waiting for {escape(label)}: {styled_status(d.status)} · {escape(describe(d, with_status=False))}"
                    ),
                    revision=revision,
                )
        shown: list[str] = []

        def progress(deployment: Deployment) -> None:
            text = describe(deployment)
            if not shown or shown[-1] != text:
                shown.append(text)
                err.print(f"waiting for {escape(label)}: {escape(text)}", markup=True)

        return platform.deployments.wait_ready(name, timeout, progress, revision=revision)
    except KeyboardInterrupt:
        err.print(f"stopped waiting; {escape(name)} goes on starting: see `fermion status {escape(name)}`", markup=True)
        raise typer.Exit(130) from None
