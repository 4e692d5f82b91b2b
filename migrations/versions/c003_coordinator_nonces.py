"""coordinator nonces: the nonces of accepted signed requests, shared by the API's replicas

Revision ID: c003
Revises: c002
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "c003"
down_revision: str | None = "c002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "coordinator_nonces",
        sa.Column("worker_chain", sa.Integer(), nullable=False),
        sa.Column("worker_key", sa.LargeBinary(length=32), nullable=False),
        sa.Column("nonce", sa.String(length=64), nullable=False),
        sa.Column("expires_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint(
            "worker_chain", "worker_key", "nonce", name=op.f("pk_coordinator_nonces")
        ),
    )
    op.create_index(op.f("ix_coordinator_nonces_expires_at"), "coordinator_nonces", ["expires_at"])


def downgrade() -> None:
    op.drop_index(op.f("ix_coordinator_nonces_expires_at"), table_name="coordinator_nonces")
    op.drop_table("coordinator_nonces")
