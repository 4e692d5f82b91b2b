"""commitment offers: the commitments workers signed for a round, offered through the API for
anyone to record on their worker chain in one transaction (one per worker and round)

Revision ID: c009
Revises: 0005
Create Date: 2026-12-05
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "c009"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "coordinator_commitment_offers",
        sa.Column("job_id", sa.Numeric(precision=20, scale=0), nullable=False),
        sa.Column("round", sa.BigInteger(), nullable=False),
        sa.Column("worker_chain", sa.Integer(), nullable=False),
        sa.Column("worker_key", sa.LargeBinary(length=32), nullable=False),
        sa.Column("update_hash", sa.LargeBinary(length=32), nullable=False),
        sa.Column("transcript_root", sa.LargeBinary(length=32), nullable=False),
        sa.Column("data_root", sa.LargeBinary(length=32), nullable=False),
        sa.Column("num_samples", sa.BigInteger(), nullable=False),
        sa.Column("train_loss", sa.BigInteger(), nullable=False),
        sa.Column("signature", sa.LargeBinary(), nullable=False),
        sa.Column("offered_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint(
            "job_id",
            "round",
            "worker_chain",
            "worker_key",
            name=op.f("pk_coordinator_commitment_offers"),
        ),
    )


def downgrade() -> None:
    op.drop_table("coordinator_commitment_offers")
