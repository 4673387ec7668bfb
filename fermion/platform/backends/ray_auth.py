"""Ray's token authentication, as Fermion uses it: the head's token file, and finding a cluster's token.

Ray 2.60 checks a bearer token on its dashboard, job and Serve REST APIs and on its gRPC
channels when the cluster runs with `RAY_AUTH_MODE=token`. Every process of the cluster reads
the token from `RAY_AUTH_TOKEN`, else the file `RAY_AUTH_TOKEN_PATH` names, else
`~/.ray/auth_token`. A head Fermion starts keeps its token in the data dir (`ray/auth_token`,
0600) and names it with `RAY_AUTH_TOKEN_PATH`, so it is neither in the environment of every
process nor shared with the user's other clusters. For a cluster someone else started, Fermion
looks where Ray's own CLI looks.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from fermion.platform.home import write_private

#: The token file of a head Fermion starts, in its folder (`<data dir>/ray/`).
TOKEN_FILE = "auth_token"


def head_token(folder: Path) -> str:
    """The token of the head in `folder`, made on first use (256 random bits, mode 0600, like Ray's own)."""
    path = folder / TOKEN_FILE
    try:
        token = path.read_text().strip()
    except FileNotFoundError:
        token = ""
    if not token:
        token = secrets.token_hex(32)
        write_private(path, token)
    return token


def head_env(folder: Path) -> dict[str, str]:
    """The variables that turn token auth on for every process of a head in `folder`."""
    head_token(folder)
    return {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(folder / TOKEN_FILE)}


def token_from_environment() -> str | None:
    """A cluster's token where Ray's CLI finds it: $RAY_AUTH_TOKEN, the file $RAY_AUTH_TOKEN_PATH, ~/.ray/auth_token.

    None when there is none (a cluster without token auth needs none). A $RAY_AUTH_TOKEN_PATH
    that cannot be read is an error: the user meant it.
    """
    token = os.environ.get("RAY_AUTH_TOKEN", "").strip()
    if token:
        return token
    named = os.environ.get("RAY_AUTH_TOKEN_PATH", "").strip()
    if named:
        try:
            token = Path(named).expanduser().read_text().strip()
        except OSError as exc:
            raise ValueError(f"cannot read RAY_AUTH_TOKEN_PATH={named}: {exc.strerror or exc}") from None
        if not token:
            raise ValueError(f"RAY_AUTH_TOKEN_PATH={named} is empty: put the cluster's token in it (`ray get-auth-token`)")
        return token
    try:
        return (Path.home() / ".ray" / TOKEN_FILE).read_text().strip() or None
    except OSError:
        return None


def auth_headers(token: str | None) -> dict[str, str]:
    """The header Ray's dashboard reads the token from (none without a token)."""
    return {"Authorization": f"Bearer {token}"} if token else {}
