"""Tokens narrowed to deployments, and per-token request rates.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("tokens") as batch:
        # The deployment names a token may reach (a JSON list); NULL: every deployment.
        batch.add_column(sa.Column("deployments", sa.JSON(), nullable=True))
        # Calls through the gateway per period, e.g. '10/s'; NULL: no limit.
        batch.add_column(sa.Column("rate", sa.String(32), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("tokens") as batch:
        batch.drop_column("rate")
        batch.drop_column("deployments")
