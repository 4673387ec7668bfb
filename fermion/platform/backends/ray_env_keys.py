"""The keys that seal deployments' env for Ray: one file per Serve application, 0600, under one folder.

The folder is `<data dir>/ray/keys`, which a head on this machine reads, or `fermion up
--ray-secrets-dir`, a folder every node of a larger cluster mounts at the same path. A key lives
as long as its application: removing the application deletes it, so a sealed env copied out of
the dashboard earlier opens nothing afterwards.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

from fermion.platform.home import write_private
from fermion.replica.sealed_env import seal

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,200}")


class EnvKeys:
    """Per-application Fernet keys in `folder`, made on first use."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def _path(self, app: str) -> Path:
        if not _NAME.fullmatch(app):  # an application name is the platform's own, but it becomes a file name
            raise ValueError(f"{app!r} cannot name a key file")
        return self.folder / f"{app}.key"

    def seal(self, app: str, env: Mapping[str, str]) -> dict[str, str]:
        """The sealed form of `env` for application `app` (its key made if it has none)."""
        from cryptography.fernet import Fernet

        path = self._path(app)
        try:
            key = path.read_bytes().strip()
        except FileNotFoundError:
            key = b""
        if not key:
            key = Fernet.generate_key()
            write_private(path, key.decode())
        return seal(env, key, str(path))

    def forget(self, app: str) -> None:
        """Delete the application's key: what it sealed opens no more."""
        self._path(app).unlink(missing_ok=True)
