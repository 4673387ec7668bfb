"""What the platform says about one call through the gateway (`Gateway.admit`): let through or refused,
with headers for the answer. The gateway asks; the control plane's rules (`auth`, `rates`) answer, so
the gateway itself knows nothing of tokens or the store."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Admission:
    """The platform's word on one call: refused with (status, message), or let through; either way with
    headers for the answer (a token's rate: `X-RateLimit-*`). A refusal of 401 or 404 is answered as an
    unknown deployment, so that nobody learns which private deployments exist."""

    refused: tuple[int, str] | None = None
    headers: tuple[tuple[bytes, bytes], ...] = ()


ADMITTED = Admission()
#: admit(deployment, whether it is public, bearer token or None) → the Admission.
Admit = Callable[[str, bool, str | None], Awaitable[Admission]]


async def admit_all(name: str, public: bool, token: str | None) -> Admission:
    return ADMITTED
