"""`fermion secrets new-key | rotate | forget`: the key that encrypts deployment secrets in the platform's database,
and erasing the values a deployment no longer uses."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from fermion.cli.app import app, fail, out
from fermion.cli.platform import CaCertOption, NameArgument, TokenOption, UrlOption, connect

secrets_app = typer.Typer(
    help="Deployment secrets (env values) in the database: the key that encrypts them, and forgetting old ones (docs/security.md).",
    no_args_is_help=True,
)
app.add_typer(secrets_app, name="secrets")


@secrets_app.command("new-key")
def new_key_command() -> None:
    """Print a new random key, for FERMION_SECRET_KEY (control planes sharing one PostgreSQL give each the same)."""
    from fermion.platform.store.secrets import new_key

    out.print(new_key(), markup=False)


@secrets_app.command("rotate")
def rotate(
    data_dir: Annotated[
        Path | None, typer.Option(help="The platform's data dir. [default: $FERMION_HOME or ~/.fermion]", show_default=False)
    ] = None,
    db: Annotated[
        str | None,
        typer.Option(help="Database URL, as `fermion up --db` takes it. [default: $FERMION_DB or SQLite in the data dir]"),
    ] = None,
) -> None:
    """Re-encrypt every stored secret with a new key, in one transaction; run it while `fermion up` is stopped.

    With FERMION_SECRET_KEY set to "NEW,OLD", seals with NEW (then set it to NEW alone); otherwise makes a
    new key in the data dir's secret.key and drops the old one once every secret is re-encrypted."""
    from fermion.cli.up import _running_elsewhere
    from fermion.platform.errors import PlatformError
    from fermion.platform.home import default_data_dir
    from fermion.platform.store.database import Store
    from fermion.platform.store.secrets import KEY_VARIABLE, SECRET_KEY_FILE, new_key, parse_keys, write_key_file

    folder = (data_dir or default_data_dir()).expanduser().resolve()
    elsewhere = _running_elsewhere(folder)
    if elsewhere:
        fail(f"a `fermion up` runs from {folder} at {elsewhere} with the old key: stop it, rotate, start it again", 2)
    url_or_dir = db or os.environ.get("FERMION_DB") or str(folder)
    key_file = folder / SECRET_KEY_FILE
    from_environment = bool(os.environ.get(KEY_VARIABLE, "").strip())
    if not from_environment and not key_file.is_file():
        fail(f"no secret key to rotate: {key_file} does not exist and {KEY_VARIABLE} is not set", 2)
    try:
        if not from_environment:
            # Both keys first, so an interruption anywhere below leaves a key file that opens every secret.
            fresh = new_key()
            write_key_file(key_file, [fresh, *parse_keys(key_file.read_text())])
        with Store.open(url_or_dir, key_dir=folder) as store:
            count = store.seal_secrets(reseal=True)
        if not from_environment:
            write_key_file(key_file, [fresh])
    except PlatformError as exc:
        fail(exc.message, 2)
    except OSError as exc:
        fail(f"cannot rotate the key in {folder}: {exc.strerror or exc}", 2)
    out.print(f"re-encrypted {count} stored env value(s) with the new key", markup=False)
    if from_environment:
        first = parse_keys(os.environ[KEY_VARIABLE])[0]
        out.print(f"now set {KEY_VARIABLE} to the first key alone ({first[:6]}…) wherever it is set", markup=False)
    else:
        out.print(f"{key_file} holds the new key alone; back it up (docs/security.md)", markup=False)


@secrets_app.command("forget")
def forget(
    name: NameArgument,
    url: UrlOption = None,
    token: TokenOption = None,
    ca_cert: CaCertOption = None,
) -> None:
    """Erase deployment NAME's env values that its current revision no longer uses (a rotated API key, say)
    from the platform's database; the older revisions that used them can no longer be rolled back to."""
    with connect(url, token) as platform:
        count, revisions = platform.deployments.forget_unused_env(name)
    lost = f"; revisions {', '.join(map(str, revisions))} can no longer be rolled back to" if revisions else ""
    out.print(f"forgot {count} env value(s) of {name!r}{lost}", markup=False)
