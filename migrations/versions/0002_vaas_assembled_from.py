"""vaas.assembled_from: the bus position whose processing produced the VAA

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-21
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("vaas", schema=None) as batch_op:
        batch_op.add_column(sa.Column("assembled_from", sa.String(length=300), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("vaas", schema=None) as batch_op:
        batch_op.drop_column("assembled_from")
