"""The coordinator's tables: registered workers, rounds and their tasks, published blobs,
uploaded updates, secure-aggregation messages, signed commitment offers, transcript challenges
and the nonces of accepted signed requests.

Same ``Base`` (and naming convention) as the relayer's models, so one Alembic history covers
both. Table names start with ``coordinator_``. Hashes and keys are raw bytes; u64 values (job
ids, times, slash amounts) are NUMERIC(20) as in the relayer's models, which holds every u64 on
PostgreSQL; SQLite stores them as 64-bit signed integers, so the embedded mode is limited to
values below 2^63 (job ids are sequential and amounts are 8-decimal, far below that).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    ForeignKeyConstraint,
    Integer,
    LargeBinary,
    String,
    Text,
)
from sqlalchemy.orm import Mapped, mapped_column

from fedrelay.adapters.ledger.models import U64, Base, utcnow


class CoordinatorWorker(Base):
    """A worker key registered on its chain (as WORKER_REGISTERED reported it), with the stake
    the coordinator chain last reported for it (``stake_nonce`` 0: from WORKER_REGISTERED, else
    the nonce of the STAKE_CHANGED that set it; NULL stake: none reported yet)."""

    __tablename__ = "coordinator_workers"

    chain: Mapped[int] = mapped_column(Integer, primary_key=True)
    worker_key: Mapped[bytes] = mapped_column(LargeBinary(32), primary_key=True)
    registered_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    stake: Mapped[int | None] = mapped_column(U64)
    stake_nonce: Mapped[int] = mapped_column(U64, default=0, server_default="0")


class CoordinatorRound(Base):
    """The latest state of one round of a job (see ``fedrelay.protocol.rounds.RoundState``)."""

    __tablename__ = "coordinator_rounds"

    job_id: Mapped[int] = mapped_column(U64, primary_key=True)
    round: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    phase: Mapped[str] = mapped_column(String(24))
    total_rounds: Mapped[int] = mapped_column(BigInteger)
    min_updates: Mapped[int] = mapped_column(BigInteger)
    challenge_window: Mapped[int] = mapped_column(U64)
    slash_missing: Mapped[bool] = mapped_column(Boolean)
    missing_slash: Mapped[int] = mapped_column(U64)
    model_hash: Mapped[bytes] = mapped_column(LargeBinary(32))
    config_hash: Mapped[bytes] = mapped_column(LargeBinary(32))
    deadline: Mapped[int | None] = mapped_column(U64)
    proposed_model: Mapped[bytes | None] = mapped_column(LargeBinary(32))
    challenge_ends: Mapped[int | None] = mapped_column(U64)
    updated_at: Mapped[int] = mapped_column(U64)


class CoordinatorTask(Base):
    """One worker's task in a round and what became of it, with its commitment if any."""

    __tablename__ = "coordinator_tasks"
    __table_args__ = (
        ForeignKeyConstraint(
            ["job_id", "round"],
            ["coordinator_rounds.job_id", "coordinator_rounds.round"],
            ondelete="CASCADE",
        ),
    )

    job_id: Mapped[int] = mapped_column(U64, primary_key=True)
    round: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    worker_chain: Mapped[int] = mapped_column(Integer, primary_key=True)
    worker_key: Mapped[bytes] = mapped_column(LargeBinary(32), primary_key=True)
    shard: Mapped[int] = mapped_column(BigInteger)
    status: Mapped[str] = mapped_column(String(24))
    slash: Mapped[int] = mapped_column(U64)
    reason: Mapped[str] = mapped_column(Text)
    fault: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    evidence: Mapped[bytes | None] = mapped_column(LargeBinary(32))
    update_hash: Mapped[bytes | None] = mapped_column(LargeBinary(32))
    transcript_root: Mapped[bytes | None] = mapped_column(LargeBinary(32))
    data_root: Mapped[bytes | None] = mapped_column(LargeBinary(32))
    num_samples: Mapped[int | None] = mapped_column(BigInteger)
    train_loss: Mapped[int | None] = mapped_column(BigInteger)
    committed_block: Mapped[int | None] = mapped_column(BigInteger)


class CoordinatorBlob(Base):
    """A blob workers may download (a model or a training configuration)."""

    __tablename__ = "coordinator_blobs"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    published_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class CoordinatorUpdate(Base):
    """The update blob a worker uploaded for a round (one per worker and round)."""

    __tablename__ = "coordinator_updates"

    job_id: Mapped[int] = mapped_column(U64, primary_key=True)
    round: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    worker_chain: Mapped[int] = mapped_column(Integer, primary_key=True)
    worker_key: Mapped[bytes] = mapped_column(LargeBinary(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(64))
    uploaded_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class CoordinatorSecAggMessage(Base):
    """One opaque secure-aggregation message (``recipient_id`` empty unless it is a share)."""

    __tablename__ = "coordinator_secagg_messages"

    job_id: Mapped[int] = mapped_column(U64, primary_key=True)
    round: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    stage: Mapped[str] = mapped_column(String(16), primary_key=True)
    recipient_id: Mapped[bytes] = mapped_column(LargeBinary(32), primary_key=True)
    sender_chain: Mapped[int] = mapped_column(Integer, primary_key=True)
    sender_key: Mapped[bytes] = mapped_column(LargeBinary(32), primary_key=True)
    recipient_chain: Mapped[int | None] = mapped_column(Integer)
    recipient_key: Mapped[bytes | None] = mapped_column(LargeBinary(32))
    data: Mapped[bytes] = mapped_column(LargeBinary)


class CoordinatorCommitmentOffer(Base):
    """A worker's signed commitment for a round, offered for anyone to record on its worker
    chain (one per worker and round; see ``fedrelay.protocol.offers``)."""

    __tablename__ = "coordinator_commitment_offers"

    job_id: Mapped[int] = mapped_column(U64, primary_key=True)
    round: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    worker_chain: Mapped[int] = mapped_column(Integer, primary_key=True)
    worker_key: Mapped[bytes] = mapped_column(LargeBinary(32), primary_key=True)
    update_hash: Mapped[bytes] = mapped_column(LargeBinary(32))
    transcript_root: Mapped[bytes] = mapped_column(LargeBinary(32))
    data_root: Mapped[bytes] = mapped_column(LargeBinary(32))
    num_samples: Mapped[int] = mapped_column(BigInteger)
    train_loss: Mapped[int] = mapped_column(BigInteger)
    signature: Mapped[bytes] = mapped_column(LargeBinary)
    offered_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class CoordinatorChallenge(Base):
    """A transcript challenge (a verification) and, once given, the worker's answer."""

    __tablename__ = "coordinator_challenges"

    challenge_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    job_id: Mapped[int] = mapped_column(U64, index=True)
    round: Mapped[int] = mapped_column(BigInteger)
    worker_chain: Mapped[int] = mapped_column(Integer)
    worker_key: Mapped[bytes] = mapped_column(LargeBinary(32))
    segment: Mapped[int] = mapped_column(BigInteger)
    issued_at: Mapped[int] = mapped_column(U64)
    answer_by: Mapped[int] = mapped_column(U64)
    start_checkpoint: Mapped[str | None] = mapped_column(String(64))
    end_checkpoint: Mapped[str | None] = mapped_column(String(64))
    start_proof: Mapped[bytes | None] = mapped_column(LargeBinary)
    end_proof: Mapped[bytes | None] = mapped_column(LargeBinary)
    answered_at: Mapped[int | None] = mapped_column(U64)
    wants_examples: Mapped[bool] = mapped_column(Boolean, default=False)
    examples: Mapped[bytes | None] = mapped_column(LargeBinary)
    reveal_verdict: Mapped[str | None] = mapped_column(Text)


class CoordinatorNonce(Base):
    """A signed request's nonce, claimed by its worker until ``expires_at`` (unix seconds).

    The primary key makes a claim atomic across every replica of the API that shares the
    ledger: the second insert of the same key conflicts and the request is a replay.
    """

    __tablename__ = "coordinator_nonces"

    worker_chain: Mapped[int] = mapped_column(Integer, primary_key=True)
    worker_key: Mapped[bytes] = mapped_column(LargeBinary(32), primary_key=True)
    nonce: Mapped[str] = mapped_column(String(64), primary_key=True)
    expires_at: Mapped[int] = mapped_column(BigInteger, index=True)


class CoordinatorLease(Base):
    """The leader lease of a coordinator deployment (see ``fedrelay.ports.leader_lease``).

    ``token`` is the fencing token: it grows by one each time the lease changes hands.
    ``expires_at`` is in Unix milliseconds.
    """

    __tablename__ = "coordinator_leases"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    holder: Mapped[str] = mapped_column(String(128))
    token: Mapped[int] = mapped_column(BigInteger)
    expires_at: Mapped[int] = mapped_column(BigInteger)
