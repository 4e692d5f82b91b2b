"""challenge reveals: whether a challenge asks the worker to open the examples its segment
consumed (a task on the worker's own data), the opened examples until they are checked, and the
verdict that replaces them once they are

Rows from before ask for no example.

Revision ID: c008
Revises: c007
Create Date: 2026-12-03
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "c008"
down_revision: str | None = "c007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("coordinator_challenges", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("wants_examples", sa.Boolean(), nullable=False, server_default=sa.false())
        )
        batch_op.add_column(sa.Column("examples", sa.LargeBinary(), nullable=True))
        batch_op.add_column(sa.Column("reveal_verdict", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("coordinator_challenges", schema=None) as batch_op:
        batch_op.drop_column("reveal_verdict")
        batch_op.drop_column("examples")
        batch_op.drop_column("wants_examples")
