"""threshold_parts, threshold_packages: the relayer's side of threshold-signing VAAs (version 2)

Also an index on ``vaas.assembled_from``: a threshold tick finds the VAAs it stored by it.

Revision ID: 0004
Revises: c008
Create Date: 2026-12-05
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "c008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "threshold_parts",
        sa.Column("id", _ID, nullable=False),
        sa.Column("digest", sa.LargeBinary(length=32), nullable=False),
        sa.Column("tss_index", sa.BigInteger(), nullable=False),
        sa.Column("attempt", sa.BigInteger(), nullable=False),
        sa.Column("identifier", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=20), nullable=False),
        sa.Column("data", sa.LargeBinary(length=66), nullable=False),
        sa.Column("added_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_threshold_parts")),
        sa.UniqueConstraint(
            "digest",
            "tss_index",
            "attempt",
            "identifier",
            "kind",
            name=op.f("uq_threshold_parts_digest"),
        ),
    )
    with op.batch_alter_table("threshold_parts", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_threshold_parts_digest"), ["digest"], unique=False)
    op.create_table(
        "threshold_packages",
        sa.Column("id", _ID, nullable=False),
        sa.Column("digest", sa.LargeBinary(length=32), nullable=False),
        sa.Column("tss_index", sa.BigInteger(), nullable=False),
        sa.Column("attempt", sa.BigInteger(), nullable=False),
        sa.Column("signers", sa.LargeBinary(), nullable=False),
        sa.Column("observation", sa.LargeBinary(), nullable=False),
        sa.Column("issued_from", sa.String(length=300), nullable=True),
        sa.Column("failure", sa.String(length=500), nullable=True),
        sa.Column("blamed", sa.Integer(), nullable=True),
        sa.Column("opened_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_threshold_packages")),
        sa.UniqueConstraint(
            "digest",
            "tss_index",
            "attempt",
            name=op.f("uq_threshold_packages_digest"),
        ),
    )
    with op.batch_alter_table("threshold_packages", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_threshold_packages_digest"), ["digest"], unique=False)

    with op.batch_alter_table("vaas", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_vaas_assembled_from"), ["assembled_from"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("vaas", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_vaas_assembled_from"))
    with op.batch_alter_table("threshold_packages", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_threshold_packages_digest"))
    op.drop_table("threshold_packages")
    with op.batch_alter_table("threshold_parts", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_threshold_parts_digest"))
    op.drop_table("threshold_parts")
