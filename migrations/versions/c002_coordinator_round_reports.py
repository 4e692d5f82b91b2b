"""coordinator round reports: the service's record of each round (seed, accuracy, rewards)

Revision ID: c002
Revises: c001
Create Date: 2026-11-21
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "c002"
down_revision: str | None = "c001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "coordinator_round_reports",
        sa.Column("job_id", sa.Numeric(precision=20, scale=0), nullable=False),
        sa.Column("round", sa.BigInteger(), nullable=False),
        sa.Column("report", sa.Text(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("job_id", "round", name=op.f("pk_coordinator_round_reports")),
    )


def downgrade() -> None:
    op.drop_table("coordinator_round_reports")
