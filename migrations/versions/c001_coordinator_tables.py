"""coordinator tables: workers, rounds, tasks, published blobs, updates, secagg messages, challenges

Revision ID: c001
Revises: 0002
Create Date: 2026-11-21
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "c001"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "coordinator_blobs",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("published_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_coordinator_blobs")),
    )
    op.create_table(
        "coordinator_challenges",
        sa.Column("challenge_id", sa.String(length=64), nullable=False),
        sa.Column("job_id", sa.Numeric(precision=20, scale=0), nullable=False),
        sa.Column("round", sa.BigInteger(), nullable=False),
        sa.Column("worker_chain", sa.Integer(), nullable=False),
        sa.Column("worker_key", sa.LargeBinary(length=32), nullable=False),
        sa.Column("segment", sa.BigInteger(), nullable=False),
        sa.Column("issued_at", sa.Numeric(precision=20, scale=0), nullable=False),
        sa.Column("answer_by", sa.Numeric(precision=20, scale=0), nullable=False),
        sa.Column("start_checkpoint", sa.String(length=64), nullable=True),
        sa.Column("end_checkpoint", sa.String(length=64), nullable=True),
        sa.Column("start_proof", sa.LargeBinary(), nullable=True),
        sa.Column("end_proof", sa.LargeBinary(), nullable=True),
        sa.Column("answered_at", sa.Numeric(precision=20, scale=0), nullable=True),
        sa.PrimaryKeyConstraint("challenge_id", name=op.f("pk_coordinator_challenges")),
    )
    with op.batch_alter_table("coordinator_challenges", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_coordinator_challenges_job_id"), ["job_id"], unique=False
        )

    op.create_table(
        "coordinator_rounds",
        sa.Column("job_id", sa.Numeric(precision=20, scale=0), nullable=False),
        sa.Column("round", sa.BigInteger(), nullable=False),
        sa.Column("phase", sa.String(length=24), nullable=False),
        sa.Column("total_rounds", sa.BigInteger(), nullable=False),
        sa.Column("min_updates", sa.BigInteger(), nullable=False),
        sa.Column("challenge_window", sa.Numeric(precision=20, scale=0), nullable=False),
        sa.Column("slash_missing", sa.Boolean(), nullable=False),
        sa.Column("missing_slash", sa.Numeric(precision=20, scale=0), nullable=False),
        sa.Column("model_hash", sa.LargeBinary(length=32), nullable=False),
        sa.Column("config_hash", sa.LargeBinary(length=32), nullable=False),
        sa.Column("deadline", sa.Numeric(precision=20, scale=0), nullable=True),
        sa.Column("proposed_model", sa.LargeBinary(length=32), nullable=True),
        sa.Column("challenge_ends", sa.Numeric(precision=20, scale=0), nullable=True),
        sa.Column("updated_at", sa.Numeric(precision=20, scale=0), nullable=False),
        sa.PrimaryKeyConstraint("job_id", "round", name=op.f("pk_coordinator_rounds")),
    )
    op.create_table(
        "coordinator_secagg_messages",
        sa.Column("job_id", sa.Numeric(precision=20, scale=0), nullable=False),
        sa.Column("round", sa.BigInteger(), nullable=False),
        sa.Column("stage", sa.String(length=16), nullable=False),
        sa.Column("recipient_id", sa.LargeBinary(length=32), nullable=False),
        sa.Column("sender_chain", sa.Integer(), nullable=False),
        sa.Column("sender_key", sa.LargeBinary(length=32), nullable=False),
        sa.Column("recipient_chain", sa.Integer(), nullable=True),
        sa.Column("recipient_key", sa.LargeBinary(length=32), nullable=True),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint(
            "job_id",
            "round",
            "stage",
            "recipient_id",
            "sender_chain",
            "sender_key",
            name=op.f("pk_coordinator_secagg_messages"),
        ),
    )
    op.create_table(
        "coordinator_updates",
        sa.Column("job_id", sa.Numeric(precision=20, scale=0), nullable=False),
        sa.Column("round", sa.BigInteger(), nullable=False),
        sa.Column("worker_chain", sa.Integer(), nullable=False),
        sa.Column("worker_key", sa.LargeBinary(length=32), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("uploaded_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint(
            "job_id", "round", "worker_chain", "worker_key", name=op.f("pk_coordinator_updates")
        ),
    )
    op.create_table(
        "coordinator_workers",
        sa.Column("chain", sa.Integer(), nullable=False),
        sa.Column("worker_key", sa.LargeBinary(length=32), nullable=False),
        sa.Column("registered_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("chain", "worker_key", name=op.f("pk_coordinator_workers")),
    )
    op.create_table(
        "coordinator_tasks",
        sa.Column("job_id", sa.Numeric(precision=20, scale=0), nullable=False),
        sa.Column("round", sa.BigInteger(), nullable=False),
        sa.Column("worker_chain", sa.Integer(), nullable=False),
        sa.Column("worker_key", sa.LargeBinary(length=32), nullable=False),
        sa.Column("shard", sa.BigInteger(), nullable=False),
        sa.Column("status", sa.String(length=24), nullable=False),
        sa.Column("slash", sa.Numeric(precision=20, scale=0), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("update_hash", sa.LargeBinary(length=32), nullable=True),
        sa.Column("transcript_root", sa.LargeBinary(length=32), nullable=True),
        sa.Column("num_samples", sa.BigInteger(), nullable=True),
        sa.Column("train_loss", sa.BigInteger(), nullable=True),
        sa.ForeignKeyConstraint(
            ["job_id", "round"],
            ["coordinator_rounds.job_id", "coordinator_rounds.round"],
            name=op.f("fk_coordinator_tasks_job_id_coordinator_rounds"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint(
            "job_id", "round", "worker_chain", "worker_key", name=op.f("pk_coordinator_tasks")
        ),
    )


def downgrade() -> None:
    op.drop_table("coordinator_tasks")
    op.drop_table("coordinator_workers")
    op.drop_table("coordinator_updates")
    op.drop_table("coordinator_secagg_messages")
    op.drop_table("coordinator_rounds")
    with op.batch_alter_table("coordinator_challenges", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_coordinator_challenges_job_id"))

    op.drop_table("coordinator_challenges")
    op.drop_table("coordinator_blobs")
