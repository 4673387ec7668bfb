"""A deployment's env on Ray, sealed: ciphertext in the Serve config, its key in a file on the nodes.

A Serve config is readable by anyone who may read the cluster's dashboard (`GET
/api/serve/applications/`), and so is a `runtime_env`. The Ray backend therefore never puts env
values there: the config's args carry `{"key_file": PATH, "token": FERNET_TOKEN}`, the env mapping
as one Fernet token, and PATH names a file the control plane wrote (mode 0600) that the replica's
node reads. Only the Serve replica's own process opens it, into its own `os.environ`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

#: The builder argument that holds the sealed env.
SEALED_ENV_ARG = "sealed_env"


class SealedEnvError(RuntimeError):
    """The replica cannot open its deployment's env (the message says which file and what to do)."""


def seal(env: Mapping[str, str], key: bytes, key_file: str) -> dict[str, str]:
    """The builder argument for `env`: encrypted with `key`, which the replica reads from `key_file`."""
    from cryptography.fernet import Fernet

    token = Fernet(key).encrypt(json.dumps(dict(env), separators=(",", ":")).encode()).decode()
    return {"key_file": key_file, "token": token}


def open_sealed(sealed: Mapping[str, Any] | None) -> dict[str, str]:
    """The env a sealed argument holds (empty for none); SealedEnvError when its key is missing or wrong."""
    if not sealed:
        return {}
    from cryptography.fernet import Fernet, InvalidToken

    key_file = str(sealed.get("key_file", ""))
    try:
        with open(key_file, "rb") as fh:
            key = fh.read().strip()
    except OSError as exc:
        raise SealedEnvError(
            f"cannot read the key of this deployment's env at {key_file} on this node ({exc.strerror or exc}): "
            "the control plane writes it under its data dir; on a cluster of several machines give "
            "`fermion up --ray-secrets-dir` a folder every node mounts at the same path (docs/security.md)"
        ) from None
    try:
        plaintext = Fernet(key).decrypt(str(sealed.get("token", "")).encode())
    except (InvalidToken, ValueError):
        raise SealedEnvError(
            f"the key at {key_file} does not open this deployment's env: it was replaced after the deploy; "
            "deploy the deployment again (`fermion deploy NAME --env ...` writes a new key)"
        ) from None
    return dict(json.loads(plaintext))


@contextmanager
def exposed(sealed: Mapping[str, Any] | None) -> Iterator[dict[str, str]]:
    """The sealed env in `os.environ` for the block only: for a process that serves other applications too."""
    env = open_sealed(sealed)
    before = {name: os.environ.get(name) for name in env}
    os.environ.update(env)
    try:
        yield env
    finally:
        for name, value in before.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
