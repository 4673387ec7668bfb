"""Env values kept once each, encrypted, and referred to by deployments and revisions.

The rows' env columns are rewritten to references by `Store.seal_secrets` when a store opens (it holds
the key; a migration does not).

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "env_values",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("deployment_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["deployment_id"], ["deployments.id"], name=op.f("fk_env_values_deployment_id_deployments"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_env_values")),
    )
    op.create_index(op.f("ix_env_values_deployment_id"), "env_values", ["deployment_id"])


def downgrade() -> None:
    op.drop_table("env_values")
