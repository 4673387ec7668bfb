"""Deployment secrets at rest: env values are stored encrypted, with a key the database never holds.

Each value is one Fernet token (AES-128-CBC with HMAC-SHA256, from `cryptography`) in `env_values`
(`fermion.platform.store.env_values`). Older stores kept a whole mapping as `{"$fernet": "<token>"}`, or
in plaintext before encryption; `$` cannot begin an environment variable name, so both are told apart,
read as they are, and moved into `env_values` by `Store.open`.

The key comes from `FERMION_SECRET_KEY` (for several control planes sharing one PostgreSQL), else from
`secret.key` in the data dir, created on first use (mode 0600, atomically). Either may hold several
keys, newest first (comma- or line-separated): the first encrypts, any decrypts; that is how a key is
rotated (`fermion secrets rotate`, docs/security.md).
"""

from __future__ import annotations

import binascii
import json
import os
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path

from fermion.platform.errors import PlatformError

SECRET_KEY_FILE = "secret.key"
KEY_VARIABLE = "FERMION_SECRET_KEY"
SEALED = "$fernet"


class SecretKeyError(PlatformError):
    """The secret key is missing, malformed, or does not decrypt what the database holds."""

    status = 500
    code = "secret_key"


def wrong_key() -> SecretKeyError:
    """The one error for a key that does not open what the database holds, saying what to do."""
    return SecretKeyError(
        "the data dir's secret key does not decrypt the stored secrets: "
        f"restore {SECRET_KEY_FILE} or set {KEY_VARIABLE} (the key they were written with)"
    )


def new_key() -> str:
    """A fresh random key, as `secret.key` and FERMION_SECRET_KEY hold it."""
    from cryptography.fernet import Fernet

    return Fernet.generate_key().decode()


class SecretBox:
    """Seals and opens env mappings with a ring of keys: the first encrypts, any of them decrypts."""

    def __init__(self, keys: Sequence[str], origin: str) -> None:
        from cryptography.fernet import Fernet, MultiFernet

        if not keys:
            raise SecretKeyError(f"{origin} holds no key; give one made by `fermion secrets new-key`")
        try:
            self._fernet = MultiFernet([Fernet(key.encode()) for key in keys])
        except (ValueError, binascii.Error):
            raise SecretKeyError(
                f"{origin} is not a secret key (32 url-safe base64 bytes); restore it, or make one with `fermion secrets new-key`"
            ) from None
        self.origin = origin

    def __repr__(self) -> str:
        return f"SecretBox(from {self.origin})"

    def seal(self, env: Mapping[str, str]) -> dict[str, str]:
        """The stored form of an env mapping; an empty one stays empty (it holds nothing secret)."""
        if not env:
            return {}
        plaintext = json.dumps(dict(env), separators=(",", ":")).encode()
        return {SEALED: self._fernet.encrypt(plaintext).decode()}

    def reveal(self, stored: Mapping[str, str]) -> dict[str, str]:
        """The env mapping a stored one holds; a plaintext one (written before encryption) as it is."""
        if not is_sealed(stored):
            return dict(stored)
        from cryptography.fernet import InvalidToken

        try:
            return json.loads(self._fernet.decrypt(stored[SEALED].encode()))
        except (InvalidToken, ValueError):
            raise wrong_key() from None

    def encrypt(self, value: str) -> str:
        """One value as a Fernet token (how `env_values` keeps each value)."""
        return self._fernet.encrypt(value.encode()).decode()

    def decrypt(self, token: str) -> str:
        """The value a token holds; a key that does not open it → SecretKeyError saying what to do."""
        from cryptography.fernet import InvalidToken

        try:
            return self._fernet.decrypt(token.encode()).decode()
        except InvalidToken:
            raise wrong_key() from None

    def rotate(self, token: str) -> str:
        """The same value, encrypted with the first key (rotation)."""
        from cryptography.fernet import InvalidToken

        try:
            return self._fernet.rotate(token.encode()).decode()
        except InvalidToken:
            raise wrong_key() from None


def is_sealed(stored: Mapping[str, str]) -> bool:
    """Whether a stored env is encrypted (else it is plaintext from before encryption)."""
    return SEALED in stored


def parse_keys(text: str) -> list[str]:
    """Keys from FERMION_SECRET_KEY or secret.key: separated by commas, spaces or new lines."""
    return [part for part in text.replace(",", " ").split() if part]


def load_box(key_dir: Path | None) -> SecretBox:
    """The box for FERMION_SECRET_KEY if set, else for `secret.key` in `key_dir` (made if missing)."""
    text = os.environ.get(KEY_VARIABLE, "").strip()
    if text:
        return SecretBox(parse_keys(text), KEY_VARIABLE)
    if key_dir is None:
        raise SecretKeyError(f"no secret key: set {KEY_VARIABLE} (make one with `fermion secrets new-key`)")
    path = Path(key_dir) / SECRET_KEY_FILE
    if not path.exists():
        create_key_file(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise SecretKeyError(f"cannot read the secret key {path}: {exc.strerror or exc}") from None
    return SecretBox(parse_keys(text), str(path))


def create_key_file(path: Path) -> None:
    """Write a new key to `path` unless one is there: mode 0600, and a racing process never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = _write_temporary(path, [new_key()])
    try:
        os.link(tmp, path)  # fails if another process made the key first: keep theirs
    except FileExistsError:
        pass
    finally:
        tmp.unlink()


def write_key_file(path: Path, keys: Sequence[str]) -> None:
    """Replace the keys in `path` (mode 0600) through a rename, so a reader sees the old file or the new one."""
    _write_temporary(path, keys).replace(path)


def _write_temporary(path: Path, keys: Sequence[str]) -> Path:
    tmp = path.with_name(f"{path.name}.{uuid.uuid4().hex}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write("".join(key + "\n" for key in keys))
        fh.flush()
        os.fsync(fh.fileno())
    return tmp
