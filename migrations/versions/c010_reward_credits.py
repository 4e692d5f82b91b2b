"""reward credits: what each round settled through a reward distributor paid each payout
address, from which the coordinator builds the cumulative reward roots

Revision ID: c010
Revises: c009
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "c010"
down_revision: str | None = "c009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "coordinator_reward_credits",
        sa.Column("job_id", sa.Numeric(precision=20, scale=0), nullable=False),
        sa.Column("round", sa.BigInteger(), nullable=False),
        sa.Column("account", sa.LargeBinary(length=20), nullable=False),
        sa.Column("token", sa.LargeBinary(length=20), nullable=False),
        sa.Column("amount", sa.Text(), nullable=False),
        sa.Column("credited_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint(
            "job_id", "round", "account", name=op.f("pk_coordinator_reward_credits")
        ),
    )


def downgrade() -> None:
    op.drop_table("coordinator_reward_credits")
