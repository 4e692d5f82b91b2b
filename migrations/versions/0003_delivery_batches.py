"""delivery_batches: one signed transaction carrying many deliveries (a batch entry point)

Each delivery a batch carries keeps an attempt row of its own, linked to the batch by
``batch_id`` with its place in it (``batch_index``); the batch's signed bytes are stored once.

Revision ID: 0003
Revises: c006
Create Date: 2026-12-03
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "c006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "delivery_batches",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("chain_id", sa.Integer(), nullable=False),
        sa.Column("signer", sa.String(length=100), nullable=False),
        sa.Column("nonce", sa.BigInteger(), nullable=True),
        sa.Column("tx_hash", sa.String(length=100), nullable=False),
        sa.Column("signed_tx", sa.LargeBinary(), nullable=False),
        sa.Column("fee_per_gas", sa.Numeric(precision=20, scale=0), nullable=True),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_delivery_batches")),
    )
    with op.batch_alter_table("delivery_batches", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_delivery_batches_tx_hash"), ["tx_hash"], unique=False)
    with op.batch_alter_table("delivery_attempts", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                "batch_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True
            )
        )
        batch_op.add_column(sa.Column("batch_index", sa.Integer(), nullable=True))
        batch_op.create_index(
            batch_op.f("ix_delivery_attempts_batch_id"), ["batch_id"], unique=False
        )
        batch_op.create_foreign_key(
            batch_op.f("fk_delivery_attempts_batch_id_delivery_batches"),
            "delivery_batches",
            ["batch_id"],
            ["id"],
            ondelete="CASCADE",
        )


def downgrade() -> None:
    with op.batch_alter_table("delivery_attempts", schema=None) as batch_op:
        batch_op.drop_constraint(
            batch_op.f("fk_delivery_attempts_batch_id_delivery_batches"), type_="foreignkey"
        )
        batch_op.drop_index(batch_op.f("ix_delivery_attempts_batch_id"))
        batch_op.drop_column("batch_index")
        batch_op.drop_column("batch_id")
    with op.batch_alter_table("delivery_batches", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_delivery_batches_tx_hash"))
    op.drop_table("delivery_batches")
