"""`fermion ls`, `status`, `revisions`, `logs`, `events`, `audit` and `whoami`: look at what the platform runs."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from fermion.cli.app import app, err, out
from fermion.cli.platform import (
    CaCertOption,
    JsonOption,
    NameArgument,
    TokenOption,
    UrlOption,
    connect,
    describe,
    print_json,
    print_table,
    replica_counts,
    styled_status,
)

if TYPE_CHECKING:
    from fermion.client.platform import Deployment, Event

#: Event kinds worth a colour: trouble in red or yellow, progress in green.
EVENT_STYLES = {"CrashLoop": "bold red", "ReplicaExited": "yellow", "ReplicaReady": "green", "RolledOut": "green"}


def when(moment: datetime | None) -> str:
    """A timestamp in local time: the time alone for today, else the date too."""
    if moment is None:
        return "-"
    local = (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).astimezone()
    same_day = local.date() == datetime.now().astimezone().date()
    return local.strftime("%H:%M:%S" if same_day else "%Y-%m-%d %H:%M")


def events_table(events: list[Event], *, with_deployment: bool, header: bool = True) -> Table:
    """Events as a borderless table; a multi-line message (a crash's last log lines) stays whole."""
    table = Table(box=None, pad_edge=False, show_edge=False, header_style="bold", show_header=header)
    table.add_column("TIME", no_wrap=True)
    if with_deployment:
        table.add_column("DEPLOYMENT", no_wrap=True)
    table.add_column("KIND", no_wrap=True)
    table.add_column("MESSAGE", overflow="fold")
    for event in events:
        row = [when(event.created_at)] + ([event.deployment or "-"] if with_deployment else [])
        table.add_row(*(Text(cell) for cell in row), Text(event.kind, EVENT_STYLES.get(event.kind, "")), Text(event.message))
    return table


@app.command("ls")
def list_deployments(
    json_output: JsonOption = False, url: UrlOption = None, token: TokenOption = None, ca_cert: CaCertOption = None
) -> None:
    """List the deployments: status, replicas ready/desired, revision, source, access and URL."""
    with connect(url, token) as platform:
        deployments = platform.deployments.list()
    if json_output:
        print_json([d.to_dict() for d in deployments])
        return
    if not deployments:
        out.print("no deployments yet: create one with `fermion deploy NAME SOURCE`")
        return
    table = Table(box=None, pad_edge=False, show_edge=False, header_style="bold")
    for column in ("NAME", "STATUS", "REPLICAS", "REV", "SOURCE", "ACCESS"):
        table.add_column(column, no_wrap=True)
    table.add_column("URL", overflow="fold")
    for d in deployments:
        table.add_row(
            Text(d.name, "bold"),
            styled_status(d.status),
            replica_counts(d),
            str(d.revision),
            Text(d.source),
            "public" if d.public else "private",
            Text(d.url),
        )
    print_table(table)


def _details(d: Deployment) -> list[tuple[str, str]]:
    options = ", ".join(f"{key}={value}" for key, value in d.options.items())
    scaling = (
        f"runs {d.min_replicas}"
        if d.min_replicas == d.max_replicas
        else f"autoscaled between {d.min_replicas} and {d.max_replicas}, aiming at {d.target_in_flight:g} requests in flight per replica"
    )
    rows = [
        ("Source", d.source + (f"  ({options})" if options else "")),
        ("Revision", str(d.revision)),
        ("Replicas", f"{d.replicas.ready}/{d.replicas.desired} ready; {scaling}"),
        ("Access", "public: no token needed" if d.public else "private: callers need a token with the invoke scope"),
        ("URL", d.url),
    ]
    if d.public:  # a browser sends no token: a private deployment's docs page answers 401
        rows.append(("Docs", f"{d.url}/docs"))
    if d.env:
        rows.append(("Env", ", ".join(sorted(d.env)) + "  (values hidden)"))
    rows.append(("Created", f"{when(d.created_at)} · updated {when(d.updated_at)}"))
    return rows


@app.command()
def status(
    name: NameArgument,
    json_output: JsonOption = False,
    url: UrlOption = None,
    token: TokenOption = None,
    ca_cert: CaCertOption = None,
) -> None:
    """Show deployment NAME: its settings, replicas and last 10 events (replicas and events need a deploy token;
    with an invoke token, the settings alone)."""
    from fermion.client.platform import ForbiddenError

    with connect(url, token) as platform:
        deployment = platform.deployments.get(name)
        try:
            replicas, events = platform.deployments.replicas(name), platform.deployments.latest_events(name, 10)
        except ForbiddenError:  # an invoke token reads a deployment's description, not its insides
            replicas = events = None
    if json_output:
        print_json(
            {
                "deployment": deployment.to_dict(),
                "replicas": None if replicas is None else [r.to_dict() for r in replicas],
                "events": None if events is None else [e.to_dict() for e in events],
            }
        )
        return
    out.print(
        f"[bold]{escape(deployment.name)}[/]  {styled_status(deployment.status)} · {escape(describe(deployment, with_status=False))}",
        markup=True,
    )
    for label, value in _details(deployment):
        out.print(Text.assemble(f"  {label:<9} ", value))
    out.print()
    if replicas is None:
        out.print("[dim]replicas and events: this token may not read them (they need the 'deploy' scope)[/]", markup=True)
    elif replicas:
        table = Table(box=None, pad_edge=False, show_edge=False, header_style="bold", title="Replicas", title_justify="left")
        for column in ("ID", "REVISION", "STATE", "URL", "PID", "DETAIL"):
            table.add_column(column, no_wrap=column != "DETAIL", overflow="fold")
        for r in replicas:
            table.add_row(
                Text(r.id), str(r.revision), styled_status(r.state), Text(r.url or "-"), str(r.pid or "-"), Text(r.detail)
            )
        print_table(table)
    else:
        out.print("[dim]no replicas running[/]", markup=True)
    out.print()
    if events:
        out.print("[bold]Last events[/]", markup=True)
        print_table(events_table(events, with_deployment=False))


@app.command()
def logs(
    name: NameArgument,
    lines: Annotated[int, typer.Option("--lines", "-n", help="How many of the last lines to show, per replica.")] = 100,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing new lines until Ctrl+C.")] = False,
    json_output: Annotated[
        bool, typer.Option("--json", help='One JSON object a line, {"replica": ..., "line": ...}, for scripts.')
    ] = False,
    url: UrlOption = None,
    token: TokenOption = None,
    ca_cert: CaCertOption = None,
) -> None:
    """Print the replicas' log lines, each after its replica's id; -f follows them (needs a deploy token)."""

    def show(replica: str, line: str) -> None:
        if json_output:
            print(json.dumps({"replica": replica, "line": line}, ensure_ascii=False), flush=True)
        else:
            out.print(Text.assemble((replica, "dim"), " ", line))

    with connect(url, token) as platform:
        if not follow:
            found = platform.deployments.logs(name, lines)
            if not found:
                err.print(f"no log lines from {escape(name)} yet", markup=True)
            for replica, line in found:
                show(replica, line)
            return
        try:
            for replica, line in platform.deployments.follow_logs(name, lines):
                show(replica, line)
            err.print(f"the log stream of {escape(name)} ended: the platform stopped, or the deployment was deleted", markup=True)
        except KeyboardInterrupt:
            raise typer.Exit(0) from None


@app.command()
def events(
    name: Annotated[str | None, typer.Argument(help="Only this deployment's events. [default: all]", show_default=False)] = None,
    last: Annotated[int, typer.Option("--lines", "-n", help="How many of the latest events to show.")] = 20,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing new events until Ctrl+C.")] = False,
    json_output: JsonOption = False,
    url: UrlOption = None,
    token: TokenOption = None,
    ca_cert: CaCertOption = None,
) -> None:
    """Print the latest events (replicas ready, crashes, roll-outs, scaling) of every deployment or of NAME."""
    with connect(url, token) as platform:
        found = platform.deployments.latest_events(name, last) if name else platform.latest_events(last)
        if json_output and follow:  # one JSON object per line, as the events come
            for event in found:
                print(json.dumps(event.to_dict(), ensure_ascii=False), flush=True)
        elif json_output:
            print_json([e.to_dict() for e in found])
        elif found:
            print_table(events_table(found, with_deployment=name is None))
        else:
            err.print("no events yet")
        if not follow:
            return
        after = found[-1].id if found else None
        try:
            while True:
                time.sleep(1.0)
                new = platform.events(name, after=after, limit=1000)
                if not new:
                    continue
                after = new[-1].id
                if json_output:
                    for event in new:
                        print(json.dumps(event.to_dict(), ensure_ascii=False), flush=True)
                else:
                    print_table(events_table(new, with_deployment=name is None, header=False))
        except KeyboardInterrupt:
            raise typer.Exit(0) from None


@app.command()
def revisions(
    name: NameArgument,
    json_output: JsonOption = False,
    url: UrlOption = None,
    token: TokenOption = None,
    ca_cert: CaCertOption = None,
) -> None:
    """List the revisions of deployment NAME: source, options, env names and note; `fermion rollback NAME N` goes back."""
    with connect(url, token) as platform:
        current = platform.deployments.get(name).revision
        found = platform.deployments.revisions(name)
    if json_output:
        print_json([{**r.to_dict(), "current": r.number == current} for r in found])
        return
    table = Table(box=None, pad_edge=False, show_edge=False, header_style="bold")
    for column in ("REV", "CREATED", "SOURCE", "OPTIONS", "ENV", "NOTE"):
        table.add_column(column, no_wrap=column in ("REV", "CREATED"), overflow="fold")
    for r in found:
        options = ", ".join(f"{key}={value}" for key, value in r.options.items())
        table.add_row(
            Text(f"{r.number} *" if r.number == current else str(r.number), "bold" if r.number == current else ""),
            when(r.created_at),
            Text(r.source),
            Text(options or "-"),
            Text(", ".join(sorted(r.env)) or "-"),
            Text(r.note or ""),
        )
    print_table(table)
    err.print(f"* the current revision; go back with `fermion rollback {escape(name)} N`", markup=True)


@app.command()
def audit(
    last: Annotated[int, typer.Option("--lines", "-n", help="How many of the latest entries to show (at most 1000).")] = 50,
    json_output: JsonOption = False,
    url: UrlOption = None,
    token: TokenOption = None,
    ca_cert: CaCertOption = None,
) -> None:
    """Print the audit log, newest first: who (a token's name) did what to which deployment, token or dataset (needs an admin token)."""
    with connect(url, token) as platform:
        entries = platform.audit(last)
    if json_output:
        print_json([e.to_dict() for e in entries])
        return
    if not entries:
        err.print("the audit log is empty")
        return
    table = Table(box=None, pad_edge=False, show_edge=False, header_style="bold")
    for column in ("TIME", "WHO", "ACTION", "TARGET"):
        table.add_column(column, no_wrap=True)
    table.add_column("DETAIL", overflow="fold")
    for e in entries:
        detail = json.dumps(e.detail, ensure_ascii=False, default=str) if e.detail else ""
        table.add_row(when(e.created_at), Text(e.actor), Text(e.action), Text(e.target), Text(detail))
    print_table(table)


@app.command()
def whoami(
    json_output: JsonOption = False, url: UrlOption = None, token: TokenOption = None, ca_cert: CaCertOption = None
) -> None:
    """Which platform this talks to, and the token's name, scopes and expiry there."""
    with connect(url, token) as platform:
        me = platform.request("GET", "/whoami")
        where = {"url": platform.url, "found_by": platform.found_by}
    if json_output:
        print_json({**me, **where})
        return
    expires = f"expires {me['expires_at']}" if me.get("expires_at") else "never expires"
    out.print(f"{escape(me['name'])} on {escape(where['url'])}: scopes {escape(', '.join(me['scopes']))}; {expires}", markup=True)
    found = where["found_by"]
    source = {"option": "--url", "environment": "$FERMION_URL"}.get(found, f"the local `fermion up` of {found}")
    err.print(f"(the platform comes from {escape(source)})", markup=True)
