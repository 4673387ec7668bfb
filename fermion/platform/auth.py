"""Who may do what: API tokens and the one place that decides whether a request may go on.

Tokens are random, shown once, stored only as a hash, and scoped admin ⊇ deploy ⊇ invoke. The REST
API (`require`), its body guard (`valid`) and the gateway (`calling`) all ask a `TokenCache`, which
verifies a token against the store and remembers the answer for a few seconds. A token may be
narrowed to some deployments (`reach`, `call_refusal`) and given a rate (`fermion.platform.rates`).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import secrets
import time
from collections.abc import Iterable
from datetime import UTC, datetime
from enum import StrEnum
from typing import TYPE_CHECKING

from fermion.platform.errors import Forbidden, Invalid, NotFound, PlatformError, Unauthorized
from fermion.serving.http import bearer_token

if TYPE_CHECKING:
    from fermion.platform.store.database import Store
    from fermion.platform.store.records import TokenRecord

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


#: How long a verified token is trusted without asking the database again (revocation through
#: this control plane's API takes effect at once; through another one, within this time).
TOKEN_CACHE_S = 5.0
#: Answers remembered at most: random tokens sent by a caller cannot grow the cache without bound.
MAX_CACHED = 10_000
NO_TOKEN = "send a token: Authorization: Bearer fmn_..."
BAD_TOKEN = "unknown, revoked or expired token; ask an admin for a new one (fermion token create)"


def permit(record: TokenRecord | None, needed: Scope, what: str) -> TokenRecord:
    """The record, if it holds `needed`; else 401 for no valid token, 403 for too little scope (`what`: what was asked)."""
    if record is None:
        raise Unauthorized(BAD_TOKEN)
    if not allows(record.scopes, needed):
        have = ", ".join(sorted(s.value for s in record.scopes))
        raise Forbidden(f"token {record.name!r} has scope {have}; {what} needs {needed.value!r}")
    return record


def narrowed_to(record: TokenRecord) -> str:
    """'deployments a, b': the words a 403 for a narrowed token uses."""
    return "deployment" + ("s " if len(record.deployments) > 1 else " ") + ", ".join(sorted(record.deployments))


def reach(record: TokenRecord, deployment: str | None, what: str) -> TokenRecord:
    """The record, if it may reach `deployment` (None: a route about no one deployment, which narrowed
    tokens may not use); else 403. The answer is the same whether the deployment exists or not."""
    if not record.narrowed:
        return record
    if deployment is None:
        raise Forbidden(f"token {record.name!r} is narrowed to {narrowed_to(record)}; {what} needs a token that is not narrowed")
    if not record.reaches(deployment):
        raise Forbidden(f"token {record.name!r} is narrowed to {narrowed_to(record)}; {what} is about {deployment!r}")
    return record


def call_refusal(record: TokenRecord | None, sent: bool, deployment: str) -> PlatformError | None:
    """Why a call of the private `deployment` is refused (None: allowed). Without a valid token, or with one
    narrowed to other deployments, the gateway answers as for an unknown name (`NotFound` and `Unauthorized`
    both become that 404), so nobody learns which private deployments exist."""
    if record is None:
        how = "send Authorization: Bearer <a token with the 'invoke' scope>"
        return Unauthorized(f"deployment {deployment!r} is private: {how}" if not sent else BAD_TOKEN)
    if not record.reaches(deployment):
        return NotFound(f"token {record.name!r} is narrowed to {narrowed_to(record)}")
    try:
        permit(record, Scope.INVOKE, f"calling deployment {deployment!r}")
    except PlatformError as error:
        return error
    return None


def _sent(header: str | None, needed: Scope) -> str:
    """The token of an Authorization header, else 401 naming the scope to send."""
    token = bearer_token(header)
    if token is None:
        raise Unauthorized(f"{NO_TOKEN} (a token with the {needed.value!r} scope)")
    return token


class TokenCache:
    """Verifies tokens against the store, remembering answers for a few seconds (the gateway asks on every call)."""

    def __init__(self, store: Store, ttl: float = TOKEN_CACHE_S) -> None:
        self.store = store
        self.ttl = ttl
        self._cache: dict[str, tuple[float, TokenRecord | None]] = {}

    def cached(self, plaintext: str) -> tuple[bool, TokenRecord | None]:
        """(known, record) without touching the database."""
        hit = self._cache.get(hash_token(plaintext))
        if hit is None or time.monotonic() - hit[0] > self.ttl:
            return False, None
        record = hit[1]
        if record is not None and not record.is_active(datetime.now(UTC)):
            return True, None
        return True, record

    def verify(self, plaintext: str) -> TokenRecord | None:
        """The token's record if it is valid now (may read the database; call off the event loop)."""
        known, record = self.cached(plaintext)
        if known:
            return record
        record = self.store.verify_token(plaintext)
        if len(self._cache) > MAX_CACHED:
            self._cache.clear()
        self._cache[hash_token(plaintext)] = (time.monotonic(), record)
        return record

    async def verify_async(self, plaintext: str) -> TokenRecord | None:
        """`verify` for the event loop: the database is read in a thread, a cached answer is not."""
        known, record = self.cached(plaintext)
        return record if known else await asyncio.to_thread(self.verify, plaintext)

    def forget(self) -> None:
        """Drop every cached answer (after a revocation)."""
        self._cache.clear()

    # The decisions

    def require(self, header: str | None, needed: Scope, what: str = "this") -> TokenRecord:
        """The REST API's check: the record of a valid token holding `needed`, else 401/403 (may read the database)."""
        return permit(self.verify(_sent(header, needed)), needed, what)

    async def require_async(self, header: str | None, needed: Scope, what: str) -> TokenRecord:
        """`require` for the event loop (the control plane's `/metrics`); `what` names what was asked."""
        return permit(await self.verify_async(_sent(header, needed)), needed, what)

    async def valid(self, token: str) -> bool:
        """Whether `token` is a valid token of any scope (the API's guard, before it reads a body)."""
        return await self.verify_async(token) is not None

    async def calling(self, token: str | None) -> TokenRecord | None:
        """The record of the token a gateway call sent (None: no token, or not a valid one)."""
        return None if token is None else await self.verify_async(token)
