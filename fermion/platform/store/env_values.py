"""How a deployment's env values are kept: each value once, encrypted on its own, in `env_values`; the
deployment and every revision hold only references, `{"$refs": {"NAME": <id>}}`.

So a secret used by fifty revisions is stored once; `forget_unused` erases the values the current
revision no longer uses (a rotated API key, say) from the database for good, after which the older
revisions that used them can no longer be rolled back to (`Revealed.forgotten` names what is gone).
Envs stored before references existed (a whole mapping sealed as one token, or plaintext from before
encryption) are still read, and `Store.seal_secrets` rewrites them to references when a store opens.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from fermion.platform.store.secrets import SecretBox
from fermion.platform.store.tables import EnvValueRow

REFS = "$refs"


@dataclass(frozen=True)
class Revealed:
    """A stored env read back: the values still kept, and the names whose values were forgotten."""

    env: dict[str, str]
    forgotten: frozenset[str] = frozenset()


def is_referenced(stored: Mapping[str, Any]) -> bool:
    """Whether a stored env holds references (else it is a sealed mapping or plaintext from before)."""
    return REFS in stored


def keep(session: Session, box: SecretBox, deployment_id: int, env: Mapping[str, str], now: datetime) -> dict[str, Any]:
    """The stored form of `env` for a deployment: references to its value rows, reusing the row that already
    holds the same value under the same name (so an unchanged secret is not copied into a new revision)."""
    if not env:
        return {}
    query = sa.select(EnvValueRow.id, EnvValueRow.name, EnvValueRow.value).where(
        EnvValueRow.deployment_id == deployment_id, EnvValueRow.name.in_(list(env))
    )
    held = {(name, box.decrypt(value)): row_id for row_id, name, value in session.execute(query)}
    refs = {}
    for name, value in sorted(env.items()):
        row_id = held.get((name, value))
        if row_id is None:
            row = EnvValueRow(deployment_id=deployment_id, name=name, value=box.encrypt(value), created_at=now)
            session.add(row)
            session.flush()
            row_id = held[name, value] = row.id
        refs[name] = row_id
    return {REFS: refs}


def reveal(session: Session, box: SecretBox, stored: Iterable[Mapping[str, Any]]) -> list[Revealed]:
    """Each stored env read back, with one query for all the values they refer to."""
    stored = list(stored)
    ids = {row_id for env in stored if is_referenced(env) for row_id in env[REFS].values()}
    values: dict[int, str] = {}
    if ids:
        query = sa.select(EnvValueRow.id, EnvValueRow.value).where(EnvValueRow.id.in_(ids))
        values = {row_id: box.decrypt(value) for row_id, value in session.execute(query)}
    out = []
    for env in stored:
        if not is_referenced(env):
            out.append(Revealed(box.reveal(env)))
            continue
        refs = env[REFS]
        out.append(
            Revealed(
                {name: values[row_id] for name, row_id in refs.items() if row_id in values},
                frozenset(name for name, row_id in refs.items() if row_id not in values),
            )
        )
    return out


def forget_unused(session: Session, deployment_id: int, current: Mapping[str, Any]) -> int:
    """Erase the deployment's values its current env does not refer to; returns how many."""
    kept = set(current.get(REFS, {}).values()) if is_referenced(current) else set()
    query = sa.select(EnvValueRow.id).where(EnvValueRow.deployment_id == deployment_id)
    unused = [row_id for row_id in session.scalars(query) if row_id not in kept]
    if unused:
        session.execute(sa.delete(EnvValueRow).where(EnvValueRow.id.in_(unused)))
    return len(unused)


def rotate(session: Session, box: SecretBox) -> int:
    """Encrypt every kept value again with the key ring's first key (key rotation); returns how many."""
    rows = session.scalars(sa.select(EnvValueRow).with_for_update()).all()
    for row in rows:
        row.value = box.rotate(row.value)
    return len(rows)


def check_key(session: Session, box: SecretBox) -> None:
    """Decrypt every kept value, so a key that does not fit fails when the store opens, not mid-request."""
    for value in session.scalars(sa.select(EnvValueRow.value)):
        box.decrypt(value)
