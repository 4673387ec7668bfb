"""API tokens: random, shown once, stored only as a hash, scoped admin ⊇ deploy ⊇ invoke."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Iterable
from enum import StrEnum

from fermion.platform.errors import Invalid

TOKEN_PREFIX = "fmn_"
#: How many leading characters of a token listings show, so people can tell tokens apart.
DISPLAY_PREFIX_LENGTH = 8


class Scope(StrEnum):
    """What a token may do. Each scope includes the ones below it: admin ⊇ deploy ⊇ invoke."""

    ADMIN = "admin"
    DEPLOY = "deploy"
    INVOKE = "invoke"


_RANK = {Scope.INVOKE: 1, Scope.DEPLOY: 2, Scope.ADMIN: 3}


def allows(granted: Iterable[Scope], needed: Scope) -> bool:
    """Whether a token holding `granted` scopes may do something that needs `needed`."""
    return any(_RANK[Scope(scope)] >= _RANK[Scope(needed)] for scope in granted)


def parse_scopes(scopes: str | Iterable[str | Scope]) -> frozenset[Scope]:
    """'deploy,invoke' or ['deploy', Scope.INVOKE] → frozenset of Scope; unknown or empty → Invalid."""
    items = scopes.split(",") if isinstance(scopes, str) else list(scopes)
    names = [str(item).strip().lower() for item in items if str(item).strip()]
    valid = ", ".join(scope.value for scope in Scope)
    if not names:
        raise Invalid(f"a token needs at least one scope; choose from: {valid}")
    unknown = [name for name in names if name not in Scope.__members__.values()]
    if unknown:
        raise Invalid(f"unknown token scope {unknown[0]!r}; choose from: {valid}")
    return frozenset(Scope(name) for name in names)


def format_scopes(scopes: Iterable[Scope]) -> str:
    """Scopes as stored: comma-separated, strongest first, e.g. 'deploy,invoke'."""
    return ",".join(scope.value for scope in sorted(set(scopes), key=lambda s: -_RANK[s]))


def new_token() -> str:
    """A fresh token: 'fmn_' + 32 random bytes, URL-safe base64 (about 43 characters)."""
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def hash_token(plaintext: str) -> str:
    """The SHA-256 hex digest we store instead of the token.

    A fast hash is right here (unlike for passwords): a token carries 256 random bits, so no
    amount of hashing speed makes guessing it feasible, and every API request must verify one.
    """
    return hashlib.sha256(plaintext.encode("utf-8")).hexdigest()


def token_matches(plaintext: str, stored_hash: str) -> bool:
    """Whether `plaintext` hashes to `stored_hash`, compared in constant time."""
    return hmac.compare_digest(hash_token(plaintext), stored_hash)
