"""coordinator data root: each committed task's data commitment (the Merkle root over the hashes
of the examples it trained on; num_samples is their count)

Rows committed before are left NULL and read back as 32 zero bytes.

Revision ID: c007
Revises: 0003
Create Date: 2026-12-03
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "c007"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("coordinator_tasks", schema=None) as batch_op:
        batch_op.add_column(sa.Column("data_root", sa.LargeBinary(length=32), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("coordinator_tasks", schema=None) as batch_op:
        batch_op.drop_column("data_root")
