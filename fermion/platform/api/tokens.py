"""/tokens and /audit: who may call (admins only) and who changed what (docs/platform-api.md)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import FastAPI, Query

from fermion.platform.api.common import PREFIX, Admin
from fermion.platform.api.schemas import AuditView, NewToken, TokenCreate, TokenView
from fermion.platform.store.records import TokenRecord

if TYPE_CHECKING:
    from fermion.platform.controlplane import ControlPlane


def register(api: FastAPI, plane: ControlPlane) -> None:
    """Add /tokens and /audit to the API."""

    @api.post(f"{PREFIX}/tokens", status_code=201, response_model=NewToken, tags=["tokens"])
    def create_token(body: TokenCreate, who: Admin) -> dict[str, Any]:
        """Make a token, maybe narrowed to some deployments and limited to a rate. The answer holds the token
        itself: it is never shown again."""
        expires = datetime.now(UTC) + timedelta(seconds=body.expires_in_s) if body.expires_in_s else None
        record, plaintext = plane.store.create_token(
            body.name, body.scopes, expires_at=expires, deployments=body.deployments, rate=body.rate
        )
        detail = {"scopes": sorted(s.value for s in record.scopes), "token_id": record.id}
        if record.narrowed:
            detail["deployments"] = sorted(record.deployments)
        if record.rate:
            detail["rate"] = record.rate
        plane.store.audit(who.name, "token.create", body.name, detail)
        plane.tokens_changed()
        return {**_token_view(record), "token": plaintext}

    @api.get(f"{PREFIX}/tokens", tags=["tokens"])
    def list_tokens(_who: Admin) -> dict[str, list[TokenView]]:
        """Every token's metadata (never the token)."""
        return {"tokens": [TokenView(**_token_view(t)) for t in plane.store.list_tokens()]}

    @api.delete(f"{PREFIX}/tokens/{{token}}", response_model=TokenView, tags=["tokens"])
    def revoke_token(token: str, who: Admin) -> dict[str, Any]:
        """Revoke a token by id or name; it stops working at once."""
        record = plane.store.revoke_token(token)
        plane.tokens_changed()
        plane.store.audit(who.name, "token.revoke", record.name, {"token_id": record.id})
        return _token_view(record)

    @api.get(f"{PREFIX}/audit", tags=["audit"])
    def audit_log(_who: Admin, limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> dict[str, list[AuditView]]:
        """Who changed what, newest first; secrets never appear."""
        return {"entries": [AuditView(**a.to_public_dict()) for a in plane.store.list_audit(limit)]}


def _token_view(record: TokenRecord) -> dict[str, Any]:
    public = record.to_public_dict()
    return {key: public.get(key) for key in TokenView.model_fields}
