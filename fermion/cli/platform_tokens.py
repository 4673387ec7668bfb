"""`fermion token create | ls | revoke`: the platform's API tokens (needs an admin token)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from fermion.cli.app import app, err, fail, out
from fermion.cli.platform import (
    BAD_INPUT,
    CaCertOption,
    JsonOption,
    TokenOption,
    UrlOption,
    connect,
    parse_duration,
    print_json,
    print_table,
)
from fermion.cli.platform_inspect import when

if TYPE_CHECKING:
    from fermion.client.platform import TokenInfo

token_app = typer.Typer(help="Create, list and revoke API tokens (needs an admin token).", no_args_is_help=True)
app.add_typer(token_app, name="token")


def token_state(info: TokenInfo, now: datetime | None = None) -> str:
    """'active', 'revoked' or 'expired'."""
    now = now or datetime.now(UTC)
    if info.revoked_at is not None:
        return "revoked"
    if info.expires_at is not None and info.expires_at <= now:
        return "expired"
    return "active"


@token_app.command("create")
def create_token(
    name: Annotated[str, typer.Argument(help="A name to tell it apart, e.g. 'ci' or 'alice-laptop'.", show_default=False)],
    scopes: Annotated[
        list[str] | None,
        typer.Option(
            "--scope",
            "-s",
            help="invoke (call deployments), deploy (change them) or admin (tokens too); repeat it. [default: invoke]",
            show_default=False,
        ),
    ] = None,
    expires_in: Annotated[
        str | None,
        typer.Option("--expires-in", help="e.g. 30d, 12h, 15m or 3600 (seconds). [default: never]", show_default=False),
    ] = None,
    deployments: Annotated[
        list[str] | None,
        typer.Option(
            "--deployment",
            "-d",
            help="Narrow it to this deployment (invoke or deploy tokens); repeat it. [default: every deployment]",
            show_default=False,
        ),
    ] = None,
    rate: Annotated[
        str | None,
        typer.Option(
            "--rate",
            help="At most this many calls through the gateway, e.g. 10/s, 600/min. [default: no limit]",
            show_default=False,
        ),
    ] = None,
    url: UrlOption = None,
    token: TokenOption = None,
    ca_cert: CaCertOption = None,
) -> None:
    """Create a token and print it, once: it is stored only as a hash and never shown again."""
    try:
        seconds = parse_duration(expires_in) if expires_in is not None else None
    except ValueError as exc:
        fail(str(exc), BAD_INPUT)
    with connect(url, token) as platform:
        info, plaintext = platform.tokens.create(
            name, scopes or ["invoke"], expires_in_s=seconds, deployments=deployments or (), rate=rate
        )
    facts = [f"id {info.id}", f"scopes {', '.join(info.scopes)}"]
    if info.deployments:
        facts.append(f"only {', '.join(info.deployments)}")
    if info.rate:
        facts.append(f"at most {info.rate}")
    facts.append(f"expires {when(info.expires_at)}" if info.expires_at else "never expires")
    err.print(f"created token {escape(info.name)!r} ({escape(', '.join(facts))}):", markup=True)
    out.print(plaintext, markup=False)  # alone on stdout, so `export FERMION_TOKEN=$(fermion token create ...)` works
    err.print(
        "[yellow]copy it now: it will not be shown again.[/] Callers send it as: Authorization: Bearer <token>", markup=True
    )


@token_app.command("ls")
def list_tokens(
    json_output: JsonOption = False, url: UrlOption = None, token: TokenOption = None, ca_cert: CaCertOption = None
) -> None:
    """List the tokens: name, id, prefix, scopes, the deployments they reach, their rate, and when they were made,
    last used and expire."""
    with connect(url, token) as platform:
        tokens = platform.tokens.list()
    if json_output:
        print_json([t.to_dict() for t in tokens])
        return
    table = Table(box=None, pad_edge=False, show_edge=False, header_style="bold")
    for column in ("ID", "NAME", "PREFIX", "SCOPES", "REACHES", "RATE", "STATE", "CREATED", "LAST USED", "EXPIRES"):
        table.add_column(column, no_wrap=True)
    styles = {"active": "green", "revoked": "dim", "expired": "dim"}
    for t in tokens:
        state = token_state(t)
        table.add_row(
            str(t.id),
            Text(t.name, "bold"),
            Text(t.prefix + "…"),
            ",".join(t.scopes),
            ",".join(t.deployments) or "all",
            t.rate or "-",
            Text(state, styles[state]),
            when(t.created_at),
            when(t.last_used_at),
            when(t.expires_at) if t.expires_at else "never",
        )
    print_table(table)


@token_app.command("revoke")
def revoke_token(
    id_or_name: Annotated[str, typer.Argument(help="The token's id or name (see `fermion token ls`).", show_default=False)],
    url: UrlOption = None,
    token: TokenOption = None,
    ca_cert: CaCertOption = None,
) -> None:
    """Revoke a token: it stops working at once."""
    with connect(url, token) as platform:
        info = platform.tokens.revoke(id_or_name)
    out.print(f"revoked token {escape(info.name)!r} (id {info.id}): it no longer works", markup=True)
