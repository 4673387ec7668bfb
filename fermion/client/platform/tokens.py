"""`platform.tokens`: create, list and revoke API tokens (needs an admin token)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from fermion.client.platform.transport import Transport
from fermion.client.platform.transport import quote_name as _path
from fermion.client.platform.types import TokenInfo


class Tokens:
    """`platform.tokens`: create, list and revoke API tokens (needs an admin token)."""

    def __init__(self, transport: Transport) -> None:
        self._transport = transport

    def create(
        self,
        name: str,
        scopes: str | Iterable[str] = ("invoke",),
        expires_in_s: float | None = None,
        *,
        deployments: Iterable[str] = (),
        rate: str | None = None,
    ) -> tuple[TokenInfo, str]:
        """A new token (scopes: invoke, deploy and/or admin): its metadata and the token itself, never shown again.

        `deployments` narrows it to those deployments (an invoke or deploy token reaches no other); `rate` limits
        its calls through the gateway, e.g. '10/s' or '600/min' (more get 429 with Retry-After)."""
        body: dict[str, Any] = {"name": name, "scopes": [scopes] if isinstance(scopes, str) else list(scopes)}
        if expires_in_s is not None:
            body["expires_in_s"] = expires_in_s
        if deployments:
            body["deployments"] = [deployments] if isinstance(deployments, str) else list(deployments)
        if rate is not None:
            body["rate"] = rate
        answer = self._transport.request("POST", "/tokens", body=body)
        return TokenInfo.from_json(answer), str(answer["token"])

    def revoke(self, id_or_name: int | str) -> TokenInfo:
        """Revoke a token by id or name; it stops working at once."""
        return TokenInfo.from_json(self._transport.request("DELETE", f"/tokens/{_path(str(id_or_name))}"))

    def list(self) -> list[TokenInfo]:
        """Every token's metadata, revoked and expired ones included."""
        return [TokenInfo.from_json(item) for item in self._transport.request("GET", "/tokens")["tokens"]]
