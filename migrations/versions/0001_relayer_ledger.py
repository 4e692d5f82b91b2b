"""relayer ledger

Revision ID: 0001
Revises:
Create Date: 2026-11-21
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:

    op.create_table(
        "dlq_entries",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("stage", sa.String(length=32), nullable=False),
        sa.Column("message_key", sa.String(length=200), nullable=False),
        sa.Column("destination_chain", sa.Integer(), nullable=True),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("body", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("requeued_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_dlq_entries")),
    )
    with op.batch_alter_table("dlq_entries", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_dlq_entries_message_key"), ["message_key"], unique=False
        )

    op.create_table(
        "guardian_signatures",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("digest", sa.LargeBinary(length=32), nullable=False),
        sa.Column("guardian_set_index", sa.BigInteger(), nullable=False),
        sa.Column("guardian_index", sa.Integer(), nullable=False),
        sa.Column("signature", sa.LargeBinary(length=65), nullable=False),
        sa.Column("signed_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_guardian_signatures")),
        sa.UniqueConstraint(
            "digest",
            "guardian_set_index",
            "guardian_index",
            name=op.f("uq_guardian_signatures_digest"),
        ),
    )
    with op.batch_alter_table("guardian_signatures", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_guardian_signatures_digest"), ["digest"], unique=False)

    op.create_table(
        "observations",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("emitter_chain", sa.Integer(), nullable=False),
        sa.Column("emitter_address", sa.LargeBinary(length=32), nullable=False),
        sa.Column("sequence", sa.Numeric(precision=20, scale=0), nullable=False),
        sa.Column("digest", sa.LargeBinary(length=32), nullable=False),
        sa.Column("nonce", sa.BigInteger(), nullable=False),
        sa.Column("timestamp", sa.BigInteger(), nullable=False),
        sa.Column("consistency_level", sa.Integer(), nullable=False),
        sa.Column("payload", sa.LargeBinary(), nullable=False),
        sa.Column("tx_hash", sa.String(length=100), nullable=False),
        sa.Column("block_number", sa.BigInteger(), nullable=False),
        sa.Column("block_hash", sa.String(length=100), nullable=False),
        sa.Column(
            "status",
            sa.Enum(
                "observed",
                "reorged",
                "attested",
                "assembled",
                name="observation_status",
                native_enum=False,
                length=24,
            ),
            nullable=False,
        ),
        sa.Column("trace_context", sa.String(length=200), nullable=True),
        sa.Column("observed_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_observations")),
        sa.UniqueConstraint("digest", name=op.f("uq_observations_digest")),
        sa.UniqueConstraint(
            "emitter_chain",
            "emitter_address",
            "sequence",
            name=op.f("uq_observations_emitter_chain"),
        ),
    )
    op.create_table(
        "signer_nonces",
        sa.Column("chain_id", sa.Integer(), nullable=False),
        sa.Column("signer", sa.String(length=100), nullable=False),
        sa.Column("next_nonce", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("chain_id", "signer", name=op.f("pk_signer_nonces")),
    )
    op.create_table(
        "source_cursors",
        sa.Column("source", sa.String(length=64), nullable=False),
        sa.Column("chain_id", sa.Integer(), nullable=False),
        sa.Column("position", sa.BigInteger(), nullable=False),
        sa.Column("position_hash", sa.String(length=100), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("source", name=op.f("pk_source_cursors")),
    )
    op.create_table(
        "vaas",
        sa.Column("digest", sa.LargeBinary(length=32), nullable=False),
        sa.Column("emitter_chain", sa.Integer(), nullable=False),
        sa.Column("emitter_address", sa.LargeBinary(length=32), nullable=False),
        sa.Column("sequence", sa.Numeric(precision=20, scale=0), nullable=False),
        sa.Column("guardian_set_index", sa.BigInteger(), nullable=False),
        sa.Column("num_signatures", sa.Integer(), nullable=False),
        sa.Column("vaa", sa.LargeBinary(), nullable=False),
        sa.Column("trace_context", sa.String(length=200), nullable=True),
        sa.Column("assembled_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("digest", name=op.f("pk_vaas")),
        sa.UniqueConstraint(
            "emitter_chain", "emitter_address", "sequence", name=op.f("uq_vaas_emitter_chain")
        ),
    )
    op.create_table(
        "deliveries",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("digest", sa.LargeBinary(length=32), nullable=False),
        sa.Column("destination_chain", sa.Integer(), nullable=False),
        sa.Column(
            "status",
            sa.Enum(
                "pending",
                "submitted",
                "confirmed",
                "already_delivered",
                "dead",
                name="delivery_status",
                native_enum=False,
                length=24,
            ),
            nullable=False,
        ),
        sa.Column("attempt_count", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("tx_hash", sa.String(length=100), nullable=True),
        sa.Column("trace_context", sa.String(length=200), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["digest"], ["vaas.digest"], name=op.f("fk_deliveries_digest_vaas")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_deliveries")),
        sa.UniqueConstraint("digest", "destination_chain", name=op.f("uq_deliveries_digest")),
    )
    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        batch_op.create_index(
            "ix_deliveries_status_next_attempt", ["status", "next_attempt_at"], unique=False
        )

    op.create_table(
        "delivery_attempts",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column(
            "delivery_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("signer", sa.String(length=100), nullable=False),
        sa.Column("nonce", sa.BigInteger(), nullable=True),
        sa.Column("tx_hash", sa.String(length=100), nullable=True),
        sa.Column("signed_tx", sa.LargeBinary(), nullable=True),
        sa.Column("fee_per_gas", sa.Numeric(precision=20, scale=0), nullable=True),
        sa.Column(
            "outcome",
            sa.Enum(
                "prepared",
                "broadcast",
                "confirmed",
                "reverted",
                "replaced",
                "failed",
                name="attempt_outcome",
                native_enum=False,
                length=24,
            ),
            nullable=False,
        ),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["delivery_id"],
            ["deliveries.id"],
            name=op.f("fk_delivery_attempts_delivery_id_deliveries"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_delivery_attempts")),
        sa.UniqueConstraint(
            "delivery_id", "attempt", name=op.f("uq_delivery_attempts_delivery_id")
        ),
    )
    with op.batch_alter_table("delivery_attempts", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_delivery_attempts_tx_hash"), ["tx_hash"], unique=False)


def downgrade() -> None:

    with op.batch_alter_table("delivery_attempts", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_delivery_attempts_tx_hash"))

    op.drop_table("delivery_attempts")
    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        batch_op.drop_index("ix_deliveries_status_next_attempt")

    op.drop_table("deliveries")
    op.drop_table("vaas")
    op.drop_table("source_cursors")
    op.drop_table("signer_nonces")
    op.drop_table("observations")
    with op.batch_alter_table("guardian_signatures", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_guardian_signatures_digest"))

    op.drop_table("guardian_signatures")
    with op.batch_alter_table("dlq_entries", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_dlq_entries_message_key"))

    op.drop_table("dlq_entries")
