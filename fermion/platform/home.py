"""Where a local `fermion up` keeps its state, and how clients find it.

The data dir (default `~/.fermion`, or `FERMION_HOME`) holds the embedded database, replica logs,
`up.json` (the URL of the `fermion up` that runs there, and its pid), `admin.token` (the first
admin token) and `secret.key` (the key of the deployment secrets in the database); `fermion up` keeps
the folder readable by its owner only. Clients find the platform the same way everywhere:
`--url`/`--token`, else `FERMION_URL`/`FERMION_TOKEN`, else the local data dir.
"""

from __future__ import annotations

import json
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from fermion.home import default_data_dir

UP_FILE = "up.json"
ADMIN_TOKEN_FILE = "admin.token"


def write_private(path: Path, text: str) -> None:
    """Write a file only its owner can read, atomically (a reader never sees half of it)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    os.chmod(tmp, 0o600)
    tmp.replace(path)


def make_private(folder: Path) -> int | None:
    """Make the data dir readable by its owner only (0700); the mode it had when it was not, else None."""
    mode = stat.S_IMODE(folder.stat().st_mode)
    if mode & 0o077 == 0:
        return None
    folder.chmod(0o700)
    return mode


def write_up_file(data_dir: Path, url: str, pid: int) -> None:
    """Record that a `fermion up` serves `url` from this data dir."""
    write_private(data_dir / UP_FILE, json.dumps({"url": url, "pid": pid}))


def read_up_file(data_dir: Path) -> dict[str, object] | None:
    try:
        return json.loads((data_dir / UP_FILE).read_text())
    except (OSError, ValueError):
        return None


def read_admin_token(data_dir: Path) -> str | None:
    try:
        return (data_dir / ADMIN_TOKEN_FILE).read_text().strip() or None
    except OSError:
        return None


@dataclass(frozen=True)
class Target:
    """A platform to talk to: its base URL and the token to send (None: none found)."""

    url: str
    token: str | None
    found_by: str  # "option", "environment" or the data dir it came from


class NoPlatform(Exception):
    """No URL given and no local `fermion up` found; the message says what to do."""


def discover(url: str | None = None, token: str | None = None, data_dir: Path | None = None) -> Target:
    """The platform a CLI command or client should talk to (see the module docstring)."""
    env_url, env_token = os.environ.get("FERMION_URL"), os.environ.get("FERMION_TOKEN")
    folder = data_dir or default_data_dir()
    if url:
        return Target(url.rstrip("/"), token or env_token or _local_token_for(url, folder), "option")
    if env_url:
        return Target(env_url.rstrip("/"), token or env_token or _local_token_for(env_url, folder), "environment")
    up = read_up_file(folder)
    if up is None or not isinstance(up.get("url"), str):
        raise NoPlatform(
            f"no platform to talk to: start one with `fermion up` (data dir {folder}), "
            "or give --url/--token (or set FERMION_URL and FERMION_TOKEN)"
        )
    return Target(str(up["url"]).rstrip("/"), token or env_token or read_admin_token(folder), str(folder))


def _local_token_for(url: str, folder: Path) -> str | None:
    """The local admin token, but only for the local platform's own URL (never sent elsewhere)."""
    up = read_up_file(folder)
    if up is not None and str(up.get("url", "")).rstrip("/") == url.rstrip("/"):
        return read_admin_token(folder)
    return None
