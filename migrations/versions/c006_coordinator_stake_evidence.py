"""coordinator stake and evidence: each worker's followed stake (and the nonce of the change that
set it), each task's fault and the hash of its slash's evidence blob

Revision ID: c006
Revises: c005
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "c006"
down_revision: str | None = "c005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("coordinator_workers", schema=None) as batch_op:
        batch_op.add_column(sa.Column("stake", sa.Numeric(precision=20, scale=0), nullable=True))
        batch_op.add_column(
            sa.Column(
                "stake_nonce",
                sa.Numeric(precision=20, scale=0),
                server_default="0",
                nullable=False,
            )
        )
    with op.batch_alter_table("coordinator_tasks", schema=None) as batch_op:
        batch_op.add_column(sa.Column("fault", sa.Integer(), server_default="0", nullable=False))
        batch_op.add_column(sa.Column("evidence", sa.LargeBinary(length=32), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("coordinator_tasks", schema=None) as batch_op:
        batch_op.drop_column("evidence")
        batch_op.drop_column("fault")
    with op.batch_alter_table("coordinator_workers", schema=None) as batch_op:
        batch_op.drop_column("stake_nonce")
        batch_op.drop_column("stake")
