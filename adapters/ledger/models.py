"""The relayer's ledger: every observed message, signature, VAA, delivery and attempt.

One schema for PostgreSQL (production) and SQLite (embedded mode). Unique keys are what make
delivery effects exactly-once together with the on-chain consumed flag: a message is observed
once per id, signed once per guardian, assembled once per digest and delivered once per
destination. Unsigned 64-bit values (sequences, amounts) are stored as NUMERIC(20) because
PostgreSQL's BIGINT is signed.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    BigInteger,
    DateTime,
    Enum,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    Numeric,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.types import TypeDecorator, TypeEngine

from fedrelay.ports.relayer_ledger import AttemptOutcome, DeliveryStatus, ObservationStatus

__all__ = [
    "U64", "AttemptOutcome", "Base", "DeadLetter", "Delivery", "DeliveryAttempt", "DeliveryBatch",
    "DeliveryStatus",
    "GuardianSignature", "Observation", "ObservationStatus", "SignerNonce", "SourceCursor",
    "StoredVaa", "ThresholdPackage", "ThresholdPart", "decode_identifiers", "encode_identifiers",
    "utcnow",
]  # fmt: skip

# Stable constraint names make migrations reproducible on every backend.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

U64_MAX = 2**64 - 1


class U64(TypeDecorator[int]):
    """An unsigned 64-bit integer in a NUMERIC(20) column.

    Values bind as ``Decimal`` on PostgreSQL, and comparisons with plain ints bind with this
    type too: left to itself, asyncpg would cast an int parameter to BIGINT and fail above 2**63.
    SQLite has no unsigned 64-bit integers; there it stores what fits in a signed one.
    """

    impl = Numeric(20, 0)
    cache_ok = True

    def coerce_compared_value(self, op: Any, value: Any) -> TypeEngine[Any]:
        return self

    def process_bind_param(self, value: int | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        if not 0 <= value <= U64_MAX:
            raise ValueError(f"{value} is outside the unsigned 64-bit range")
        return Decimal(value) if dialect.name == "postgresql" else int(value)

    def process_result_value(self, value: Any, dialect: Dialect) -> int | None:
        return None if value is None else int(value)


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


def _enum(kind: type[enum.StrEnum], name: str) -> Enum:
    # Store values as plain strings (no native ENUM type) so adding a state is a code change only.
    return Enum(
        kind,
        name=name,
        native_enum=False,
        length=24,
        values_callable=lambda e: [m.value for m in e],
    )


class SourceCursor(Base):
    """How far a watcher has read one source (a chain, or one emitter on it)."""

    __tablename__ = "source_cursors"

    source: Mapped[str] = mapped_column(String(64), primary_key=True)
    chain_id: Mapped[int] = mapped_column(Integer)
    position: Mapped[int] = mapped_column(BigInteger)  # block number or slot
    position_hash: Mapped[str | None] = mapped_column(String(100))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Observation(Base):
    """A message emitted on a source chain, as the watcher saw it."""

    __tablename__ = "observations"
    __table_args__ = (UniqueConstraint("emitter_chain", "emitter_address", "sequence"),)

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    emitter_chain: Mapped[int] = mapped_column(Integer)
    emitter_address: Mapped[bytes] = mapped_column(LargeBinary(32))
    sequence: Mapped[int] = mapped_column(U64)
    digest: Mapped[bytes] = mapped_column(LargeBinary(32), unique=True)
    nonce: Mapped[int] = mapped_column(BigInteger)
    timestamp: Mapped[int] = mapped_column(BigInteger)
    consistency_level: Mapped[int] = mapped_column(Integer)
    payload: Mapped[bytes] = mapped_column(LargeBinary)
    tx_hash: Mapped[str] = mapped_column(String(100))
    block_number: Mapped[int] = mapped_column(BigInteger)
    block_hash: Mapped[str] = mapped_column(String(100))
    status: Mapped[ObservationStatus] = mapped_column(
        _enum(ObservationStatus, "observation_status"), default=ObservationStatus.OBSERVED
    )
    trace_context: Mapped[str | None] = mapped_column(String(200))
    observed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class GuardianSignature(Base):
    """One guardian's signature over a message digest."""

    __tablename__ = "guardian_signatures"
    __table_args__ = (UniqueConstraint("digest", "guardian_set_index", "guardian_index"),)

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    digest: Mapped[bytes] = mapped_column(LargeBinary(32), index=True)
    guardian_set_index: Mapped[int] = mapped_column(BigInteger)
    guardian_index: Mapped[int] = mapped_column(Integer)
    signature: Mapped[bytes] = mapped_column(LargeBinary(65))
    signed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class ThresholdPart(Base):
    """One guardian's step in threshold-signing a digest: its nonce commitment (round one,
    ``hiding || binding``, 66 bytes) or its partial signature (round two, ``z``, 32 bytes).
    Rows are read in insertion order: the first commitments of a quorum make the package.
    Who an attempt's failure leaves out is kept on its package
    (:attr:`ThresholdPackage.left_out`), not here: a ledger migrated from revision 0004 may
    still hold rows of kinds ``silent`` and ``retried``, which nothing reads any more."""

    __tablename__ = "threshold_parts"
    __table_args__ = (UniqueConstraint("digest", "tss_index", "attempt", "identifier", "kind"),)

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    digest: Mapped[bytes] = mapped_column(LargeBinary(32), index=True)
    tss_index: Mapped[int] = mapped_column(BigInteger)
    attempt: Mapped[int] = mapped_column(BigInteger)
    identifier: Mapped[int] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(String(20))
    data: Mapped[bytes] = mapped_column(LargeBinary(66))
    added_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class ThresholdPackage(Base):
    """One attempt at threshold-signing a digest: opened by its first commitment, issued when a
    quorum of commitments chose its signers, failed (or superseded by a VAA) at its end.

    A failure is kept whole, by the record that made it: why (``failure``), that record's bus
    position (``failed_from``: its replay after a crash finds the packages it failed, and
    publishes the same retries and version-1 VAAs), and the signers it leaves out of the
    digest's later attempts (``left_out``, encoded by :func:`encode_identifiers`)."""

    __tablename__ = "threshold_packages"
    __table_args__ = (UniqueConstraint("digest", "tss_index", "attempt"),)

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    digest: Mapped[bytes] = mapped_column(LargeBinary(32), index=True)
    tss_index: Mapped[int] = mapped_column(BigInteger)
    attempt: Mapped[int] = mapped_column(BigInteger)
    # The signers' commitments, identifier order: (u16 identifier || hiding || binding) each;
    # empty until the package is issued.
    signers: Mapped[bytes] = mapped_column(LargeBinary, default=b"")
    # The observation signed (its relayer record, JSON): what version 1 assembles from after a
    # failure that no record of the digest brings (a timeout).
    observation: Mapped[bytes] = mapped_column(LargeBinary)
    # The bus position of the record that issued the package (its replay publishes it again);
    # None until then.
    issued_from: Mapped[str | None] = mapped_column(String(300))
    # Why the attempt failed (a bad partial signature, a timeout), or None while it stands.
    failure: Mapped[str | None] = mapped_column(String(500))
    # The signer whose partial failed it, if any (also in `left_out`, which is what later
    # attempts read).
    blamed: Mapped[int | None] = mapped_column(Integer)
    opened_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    # The bus position of the record that failed it (a partial that did not check, a tick past
    # the timeout); None while it stands, and for failures recorded before migration 0005.
    failed_from: Mapped[str | None] = mapped_column(String(300), index=True)
    # The signers the failure leaves out of the digest's later attempts (the one blamed for a
    # bad partial, or those a timed-out package named that never answered): u16 identifiers,
    # big-endian, increasing (:func:`encode_identifiers`); b"" for a failure that leaves nobody
    # out, None while the attempt stands.
    left_out: Mapped[bytes | None] = mapped_column(LargeBinary)


def encode_identifiers(identifiers: Iterable[int]) -> bytes:
    """Signer identifiers as ``threshold_packages.left_out`` holds them: each once, increasing,
    as a big-endian u16 (identifiers are 1..256; the same width as in ``signers``).

    Raises:
        ValueError: An identifier is outside 1..65535.
    """
    ordered = sorted(set(identifiers))
    if any(not 1 <= identifier <= 0xFFFF for identifier in ordered):
        raise ValueError(f"signer identifiers {ordered} are not all in 1..65535")
    return b"".join(identifier.to_bytes(2, "big") for identifier in ordered)


def decode_identifiers(data: bytes | None) -> tuple[int, ...]:
    """The inverse of :func:`encode_identifiers` (None, a column not set, is none)."""
    if not data:
        return ()
    return tuple(int.from_bytes(data[at : at + 2], "big") for at in range(0, len(data), 2))


class StoredVaa(Base):
    """A VAA with a quorum of signatures, ready to deliver."""

    __tablename__ = "vaas"
    __table_args__ = (UniqueConstraint("emitter_chain", "emitter_address", "sequence"),)

    digest: Mapped[bytes] = mapped_column(LargeBinary(32), primary_key=True)
    emitter_chain: Mapped[int] = mapped_column(Integer)
    emitter_address: Mapped[bytes] = mapped_column(LargeBinary(32))
    sequence: Mapped[int] = mapped_column(U64)
    guardian_set_index: Mapped[int] = mapped_column(BigInteger)
    num_signatures: Mapped[int] = mapped_column(Integer)
    vaa: Mapped[bytes] = mapped_column(LargeBinary)
    trace_context: Mapped[str | None] = mapped_column(String(200))
    # The bus position (topic:partition:offset) of the record whose processing produced this VAA.
    # A replay of that record after a crash emits the VAA again (its first emission was never
    # committed); any other record naming the same digest is a duplicate and emits nothing.
    assembled_from: Mapped[str | None] = mapped_column(String(300), index=True)
    assembled_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Delivery(Base):
    """Delivering one VAA to one destination chain."""

    __tablename__ = "deliveries"
    __table_args__ = (
        UniqueConstraint("digest", "destination_chain"),
        Index("ix_deliveries_status_next_attempt", "status", "next_attempt_at"),
    )

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    digest: Mapped[bytes] = mapped_column(LargeBinary(32), ForeignKey("vaas.digest"))
    destination_chain: Mapped[int] = mapped_column(Integer)
    status: Mapped[DeliveryStatus] = mapped_column(
        _enum(DeliveryStatus, "delivery_status"), default=DeliveryStatus.PENDING
    )
    attempt_count: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_error: Mapped[str | None] = mapped_column(Text)
    tx_hash: Mapped[str | None] = mapped_column(String(100))
    trace_context: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, onupdate=utcnow
    )
    attempts: Mapped[list[DeliveryAttempt]] = relationship(
        back_populates="delivery", order_by="DeliveryAttempt.attempt", cascade="all, delete-orphan"
    )


class DeliveryBatch(Base):
    """One signed transaction that delivers many VAAs (a receiver's batch entry point).

    Each delivery it carries has an attempt row pointing here (with its place in the batch);
    the signed bytes are kept once, here, so a resumed attempt re-broadcasts the same batch.
    """

    __tablename__ = "delivery_batches"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    chain_id: Mapped[int] = mapped_column(Integer)
    signer: Mapped[str] = mapped_column(String(100))
    nonce: Mapped[int | None] = mapped_column(BigInteger)
    tx_hash: Mapped[str] = mapped_column(String(100), index=True)
    signed_tx: Mapped[bytes] = mapped_column(LargeBinary)
    fee_per_gas: Mapped[int | None] = mapped_column(U64)
    size: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class DeliveryAttempt(Base):
    """One signed transaction for a delivery, persisted before it is broadcast.

    An attempt carried by a batch transaction has ``batch_id`` and ``batch_index`` set and no
    ``signed_tx`` of its own (the batch row holds the bytes).
    """

    __tablename__ = "delivery_attempts"
    __table_args__ = (UniqueConstraint("delivery_id", "attempt"),)

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    delivery_id: Mapped[int] = mapped_column(ForeignKey("deliveries.id", ondelete="CASCADE"))
    attempt: Mapped[int] = mapped_column(Integer)
    signer: Mapped[str] = mapped_column(String(100))
    nonce: Mapped[int | None] = mapped_column(BigInteger)
    tx_hash: Mapped[str | None] = mapped_column(String(100), index=True)
    signed_tx: Mapped[bytes | None] = mapped_column(LargeBinary)
    fee_per_gas: Mapped[int | None] = mapped_column(U64)
    outcome: Mapped[AttemptOutcome] = mapped_column(
        _enum(AttemptOutcome, "attempt_outcome"), default=AttemptOutcome.PREPARED
    )
    error: Mapped[str | None] = mapped_column(Text)
    batch_id: Mapped[int | None] = mapped_column(
        ForeignKey("delivery_batches.id", ondelete="CASCADE"), index=True
    )
    batch_index: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    delivery: Mapped[Delivery] = relationship(back_populates="attempts")
    batch: Mapped[DeliveryBatch | None] = relationship(lazy="joined")


class SignerNonce(Base):
    """The next nonce a relayer signer will use on one chain."""

    __tablename__ = "signer_nonces"

    chain_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    signer: Mapped[str] = mapped_column(String(100), primary_key=True)
    next_nonce: Mapped[int] = mapped_column(BigInteger)
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, onupdate=utcnow
    )


class DeadLetter(Base):
    """A message a stage gave up on, with the reason; requeued by an operator."""

    __tablename__ = "dlq_entries"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    stage: Mapped[str] = mapped_column(String(32))
    message_key: Mapped[str] = mapped_column(String(200), index=True)
    destination_chain: Mapped[int | None] = mapped_column(Integer)
    reason: Mapped[str] = mapped_column(Text)
    body: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    requeued_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
