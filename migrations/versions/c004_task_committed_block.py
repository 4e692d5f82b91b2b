"""coordinator tasks: the coordinator-chain block each commitment arrived in

The block orders a round's commitments for everyone (which of two identical updates came
first); rows written before this revision read as block 0.

Revision ID: c004
Revises: c003
Create Date: 2026-12-09
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "c004"
down_revision: str | None = "c003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("coordinator_tasks", sa.Column("committed_block", sa.BigInteger(), nullable=True))


def downgrade() -> None:
    op.drop_column("coordinator_tasks", "committed_block")
