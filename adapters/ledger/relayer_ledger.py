"""The relayer's ledger port (:mod:`fedrelay.ports.relayer_ledger`) on SQLAlchemy.

A unit of work is one ``AsyncSession``: :meth:`SqlRelayerLedger.transaction` begins a transaction
that commits when the block ends, :meth:`SqlRelayerLedger.reading` a session that is closed (rolled
back) after it. Within one unit of work every change goes through the session's identity map, so a
query sees what the same unit of work changed before it (autoflush), as the stages expect.

"Insert once" is ``INSERT ... ON CONFLICT DO NOTHING`` (PostgreSQL and SQLite): two writers racing
on the same key, or a replay, leave exactly one row.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Table, bindparam, case, func, insert, select, text, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from fedrelay.adapters.ledger.database import create_engine
from fedrelay.adapters.ledger.models import (
    DeadLetter,
    Delivery,
    DeliveryAttempt,
    DeliveryBatch,
    GuardianSignature,
    SignerNonce,
    SourceCursor,
    StoredVaa,
    ThresholdPackage,
    ThresholdPart,
    decode_identifiers,
    encode_identifiers,
    utcnow,
)
from fedrelay.adapters.ledger.models import Observation as ObservationRow
from fedrelay.ports.relay import SignedDelivery
from fedrelay.ports.relayer_ledger import (
    IN_FLIGHT,
    AttemptOutcome,
    AttemptRecord,
    DeadLetterRecord,
    DeliveryRecord,
    DeliveryStatus,
    NewVaa,
    ObservationStatus,
    SourceCursorRecord,
    StoredObservation,
    StoredVaaRecord,
    ThresholdAttempt,
    ThresholdPackageRecord,
    signed_by,
)
from fedrelay.protocol.wormhole import MessageId, Signature
from fedrelay.protocol.wormhole.observation import Observation


class UnsupportedDialect(RuntimeError):
    """Insert-once needs PostgreSQL or SQLite."""


async def insert_once(
    session: AsyncSession, table: Table, values: Mapping[str, Any], unique: Sequence[str] = ()
) -> bool:
    """Insert a row unless it would repeat a unique key; True when this call inserted it.

    Args:
        session: The session (and transaction) to insert in.
        table: The table.
        values: The row.
        unique: The columns of the one unique key that may conflict; empty for any.
    """
    dialect = session.bind.dialect.name if session.bind is not None else ""
    if dialect == "postgresql":
        statement: Any = postgresql.insert(table).values(**values)
    elif dialect == "sqlite":
        statement = sqlite.insert(table).values(**values)
    else:
        raise UnsupportedDialect(f"insert_once supports postgresql and sqlite, not {dialect!r}")
    conflict = statement.on_conflict_do_nothing(index_elements=list(unique) or None)
    result = await session.execute(conflict)
    return bool(getattr(result, "rowcount", 0) == 1)


_BOUND_VALUES_PER_STATEMENT = 20_000  # under SQLite's and asyncpg's limits (32,766 and 32,767)


async def insert_many_once(
    session: AsyncSession,
    table: Table,
    rows: Sequence[Mapping[str, Any]],
    unique: Sequence[str] = (),
    returning: str | None = None,
) -> list[Any]:
    """Insert rows in one statement (one per 20,000 bound values), each unless it would repeat
    a unique key (of the table's or of a row before it).

    Args:
        session: The session (and transaction) to insert in.
        table: The table.
        rows: The rows, all with the same columns.
        unique: The columns of the one unique key that may conflict; empty for any.
        returning: A column whose value to return for each row this call inserted.

    Returns:
        The `returning` column of the rows inserted (empty without `returning`).
    """
    dialect = session.bind.dialect.name if session.bind is not None else ""
    if dialect not in ("postgresql", "sqlite"):
        raise UnsupportedDialect(
            f"insert_many_once supports postgresql and sqlite, not {dialect!r}"
        )
    make = postgresql.insert if dialect == "postgresql" else sqlite.insert
    inserted: list[Any] = []
    if not rows:
        return inserted
    per_statement = max(1, _BOUND_VALUES_PER_STATEMENT // max(1, len(rows[0])))
    for start in range(0, len(rows), per_statement):
        statement: Any = make(table).values(list(rows[start : start + per_statement]))
        statement = statement.on_conflict_do_nothing(index_elements=list(unique) or None)
        if returning is not None:
            statement = statement.returning(table.c[returning])
        result = await session.execute(statement)
        if returning is not None:
            inserted.extend(result.scalars().all())
    return inserted


def _table(model: type[Any]) -> Table:
    return cast("Table", model.__table__)


def _cursor(row: SourceCursor) -> SourceCursorRecord:
    return SourceCursorRecord(
        row.source, row.chain_id, row.position, row.position_hash, row.updated_at
    )


def _observation(row: ObservationRow) -> StoredObservation:
    return StoredObservation(
        id=row.id, emitter_chain=row.emitter_chain, emitter_address=bytes(row.emitter_address),
        sequence=int(row.sequence), digest=bytes(row.digest), tx_hash=row.tx_hash,
        block_number=row.block_number, block_hash=row.block_hash, status=row.status,
    )  # fmt: skip


def _package(row: ThresholdPackage) -> ThresholdPackageRecord:
    return ThresholdPackageRecord(
        bytes(row.digest), row.tss_index, row.attempt, bytes(row.signers),
        bytes(row.observation), row.issued_from, row.failure, row.blamed, row.failed_from,
        decode_identifiers(None if row.left_out is None else bytes(row.left_out)),
    )  # fmt: skip


def _vaa(row: StoredVaa) -> StoredVaaRecord:
    message_id = MessageId(row.emitter_chain, bytes(row.emitter_address), int(row.sequence))
    return StoredVaaRecord(bytes(row.digest), message_id, bytes(row.vaa), row.assembled_from)


def _delivery(row: Delivery) -> DeliveryRecord:
    return DeliveryRecord(
        id=row.id, digest=bytes(row.digest), destination_chain=row.destination_chain,
        status=row.status, attempt_count=row.attempt_count, tx_hash=row.tx_hash,
        last_error=row.last_error,
    )  # fmt: skip


def _attempt(row: DeliveryAttempt) -> AttemptRecord:
    signed = row.signed_tx if row.batch is None else row.batch.signed_tx
    return AttemptRecord(
        id=row.id, delivery_id=row.delivery_id, attempt=row.attempt, signer=row.signer,
        nonce=row.nonce, tx_hash=row.tx_hash,
        signed_tx=bytes(signed) if signed is not None else None,
        fee_per_gas=int(row.fee_per_gas) if row.fee_per_gas is not None else None,
        outcome=row.outcome, error=row.error, created_at=row.created_at,
        batch_id=row.batch_id, batch_index=row.batch_index,
    )  # fmt: skip


def _dead_letter(row: DeadLetter) -> DeadLetterRecord:
    return DeadLetterRecord(
        row.id, row.stage, row.message_key, row.reason, bytes(row.body), row.created_at,
        row.requeued_at,
    )  # fmt: skip


def _observation_values(
    observation: Observation, status: ObservationStatus, trace_context: str | None
) -> dict[str, object]:
    return {
        "emitter_chain": observation.emitter_chain,
        "emitter_address": observation.emitter_address,
        "sequence": observation.sequence,
        "digest": observation.digest,
        "nonce": observation.nonce,
        "timestamp": observation.timestamp,
        "consistency_level": observation.consistency_level,
        "payload": observation.payload,
        "tx_hash": observation.tx_hash,
        "block_number": observation.block_number,
        "block_hash": observation.block_hash,
        "status": status,
        "trace_context": trace_context,
    }


class SqlRelayerLedgerWork:
    """One unit of work: a :class:`~fedrelay.ports.relayer_ledger.RelayerLedgerWork` on a
    session."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    # -- sources and observations --

    async def cursor(self, source: str) -> SourceCursorRecord | None:
        row = await self.session.get(SourceCursor, source)
        return None if row is None else _cursor(row)

    async def cursors(self) -> list[SourceCursorRecord]:
        rows = await self.session.scalars(select(SourceCursor).order_by(SourceCursor.source))
        return [_cursor(row) for row in rows]

    async def move_cursor(self, source: str, chain_id: int, position: int, hash_: str) -> None:
        cursor = await self.session.get(SourceCursor, source)
        if cursor is None:
            cursor = SourceCursor(source=source, chain_id=chain_id)
            self.session.add(cursor)
        cursor.position = position
        cursor.position_hash = hash_
        cursor.updated_at = utcnow()

    async def record_observation(
        self, observation: Observation, status: ObservationStatus, trace_context: str | None
    ) -> bool:
        values = _observation_values(observation, status, trace_context)
        return await insert_once(self.session, _table(ObservationRow), values)

    async def observation(self, message_id: MessageId) -> StoredObservation | None:
        row = await self._observation_row(message_id)
        return None if row is None else _observation(row)

    async def _observation_row(self, message_id: MessageId) -> ObservationRow | None:
        return await self.session.scalar(
            select(ObservationRow).where(
                ObservationRow.emitter_chain == message_id.emitter_chain,
                ObservationRow.emitter_address == message_id.emitter_address,
                ObservationRow.sequence == message_id.sequence,
            )
        )

    async def rewrite_observation(
        self, observation_id: int, observation: Observation, trace_context: str | None
    ) -> None:
        row = await self.session.get(ObservationRow, observation_id)
        assert row is not None
        values = _observation_values(observation, ObservationStatus.OBSERVED, trace_context)
        for name, value in values.items():
            setattr(row, name, value)

    async def advance_observations(
        self, digest: bytes, status: ObservationStatus, movable: Sequence[ObservationStatus]
    ) -> None:
        await self.session.execute(
            update(ObservationRow)
            .where(ObservationRow.digest == digest, ObservationRow.status.in_(list(movable)))
            .values(status=status)
        )

    async def record_observations(
        self, observations: Sequence[tuple[Observation, ObservationStatus, str | None]]
    ) -> set[bytes]:
        rows = [_observation_values(*observation) for observation in observations]
        table = _table(ObservationRow)
        stored = await insert_many_once(self.session, table, rows, returning="digest")
        return {bytes(digest) for digest in stored}

    async def advance_observations_of(
        self, digests: Sequence[bytes], status: ObservationStatus,
        movable: Sequence[ObservationStatus],
    ) -> None:  # fmt: skip
        if not digests:
            return
        await self.session.execute(
            update(ObservationRow)
            .where(ObservationRow.digest.in_(list(digests)), ObservationRow.status.in_(movable))
            .values(status=status)
            .execution_options(synchronize_session=False)
        )

    async def live_observations(
        self, chain_id: int, above: int, up_to: int
    ) -> list[StoredObservation]:
        rows = await self.session.scalars(
            select(ObservationRow)
            .where(
                ObservationRow.emitter_chain == chain_id,
                ObservationRow.status != ObservationStatus.REORGED,
                ObservationRow.block_number <= up_to,
                ObservationRow.block_number > above,
            )
            .order_by(ObservationRow.block_number.desc(), ObservationRow.sequence.desc())
        )
        return [_observation(row) for row in rows]

    async def relocate_observation(
        self, observation_id: int, block_number: int, block_hash: str, tx_hash: str
    ) -> None:
        row = await self.session.get(ObservationRow, observation_id)
        assert row is not None
        row.block_number = block_number
        row.block_hash = block_hash
        row.tx_hash = tx_hash

    async def mark_reorged(self, observation_id: int) -> None:
        row = await self.session.get(ObservationRow, observation_id)
        assert row is not None
        row.status = ObservationStatus.REORGED

    async def last_known(self, chain_id: int, emitter: bytes) -> tuple[int, int] | None:
        known = (
            await self.session.execute(
                select(
                    func.max(ObservationRow.sequence), func.max(ObservationRow.block_number)
                ).where(
                    ObservationRow.emitter_chain == chain_id,
                    ObservationRow.emitter_address == emitter,
                    ObservationRow.status != ObservationStatus.REORGED,
                )
            )
        ).one()
        sequence, position = cast("tuple[int | None, int | None]", tuple(known))
        if sequence is None or position is None:
            return None
        return int(sequence), int(position)

    async def last_observed_by_chain(self) -> dict[int, Any]:
        observed = await self.session.execute(
            select(ObservationRow.emitter_chain, func.max(ObservationRow.observed_at)).group_by(
                ObservationRow.emitter_chain
            )
        )
        return {int(row[0]): row[1] for row in observed}

    # -- signatures and VAAs --

    async def add_signature(
        self, digest: bytes, guardian_set_index: int, signature: Signature
    ) -> bool:
        return await insert_once(
            self.session,
            _table(GuardianSignature),
            {
                "digest": digest,
                "guardian_set_index": guardian_set_index,
                "guardian_index": signature.guardian_index,
                "signature": signature.r + signature.s + bytes((signature.v,)),
            },
            ("digest", "guardian_set_index", "guardian_index"),
        )

    async def add_signatures(self, signatures: Sequence[tuple[bytes, int, Signature]]) -> None:
        rows = [
            {
                "digest": digest,
                "guardian_set_index": guardian_set_index,
                "guardian_index": signature.guardian_index,
                "signature": signature.r + signature.s + bytes((signature.v,)),
            }
            for digest, guardian_set_index, signature in signatures
        ]
        if rows:
            unique = ("digest", "guardian_set_index", "guardian_index")
            await insert_many_once(self.session, _table(GuardianSignature), rows, unique)

    async def signatures_over(
        self, digests: Sequence[bytes]
    ) -> dict[tuple[bytes, int], list[Signature]]:
        if not digests:
            return {}
        rows = await self.session.execute(
            select(
                GuardianSignature.digest, GuardianSignature.guardian_set_index,
                GuardianSignature.guardian_index, GuardianSignature.signature,
            )
            .where(GuardianSignature.digest.in_(list(digests)))
            .order_by(GuardianSignature.guardian_index)
        )  # fmt: skip
        found: dict[tuple[bytes, int], list[Signature]] = {}
        for digest, set_index, index, raw in rows:
            signature = Signature(index, raw[:32], raw[32:64], raw[64])
            found.setdefault((bytes(digest), set_index), []).append(signature)
        return found

    async def signatures(self, digest: bytes, guardian_set_index: int) -> list[Signature]:
        rows = (
            await self.session.scalars(
                select(GuardianSignature)
                .where(
                    GuardianSignature.digest == digest,
                    GuardianSignature.guardian_set_index == guardian_set_index,
                )
                .order_by(GuardianSignature.guardian_index)
            )
        ).all()
        return [
            Signature(
                row.guardian_index, row.signature[:32], row.signature[32:64], row.signature[64]
            )
            for row in rows
        ]

    async def insert_vaa(
        self,
        vaa: bytes,
        *,
        digest: bytes,
        message_id: MessageId,
        guardian_set_index: int,
        num_signatures: int,
        trace_context: str | None,
        assembled_from: str | None = None,
    ) -> bool:
        values: dict[str, object] = {
            "digest": digest,
            "emitter_chain": message_id.emitter_chain,
            "emitter_address": message_id.emitter_address,
            "sequence": message_id.sequence,
            "guardian_set_index": guardian_set_index,
            "num_signatures": num_signatures,
            "vaa": vaa,
            "trace_context": trace_context,
        }
        if assembled_from is not None:
            values["assembled_from"] = assembled_from
        return await insert_once(self.session, _table(StoredVaa), values)

    async def insert_vaas(self, vaas: Sequence[NewVaa]) -> set[bytes]:
        rows = [
            {
                "digest": new.vaa.digest,
                "emitter_chain": new.vaa.message_id.emitter_chain,
                "emitter_address": new.vaa.message_id.emitter_address,
                "sequence": new.vaa.message_id.sequence,
                "guardian_set_index": signed_by(new.vaa)[0],
                "num_signatures": signed_by(new.vaa)[1],
                "vaa": new.raw if new.raw is not None else new.vaa.to_bytes(),
                "trace_context": new.trace_context,
                "assembled_from": new.assembled_from,
            }
            for new in vaas
        ]
        if not rows:
            return set()
        inserted = await insert_many_once(self.session, _table(StoredVaa), rows, returning="digest")
        return {bytes(digest) for digest in inserted}

    async def vaas_assembled_from(self, position: str) -> list[StoredVaaRecord]:
        rows = await self.session.scalars(
            select(StoredVaa).where(StoredVaa.assembled_from == position)
        )
        return [_vaa(row) for row in rows]

    async def stored_vaa(self, digest: bytes) -> StoredVaaRecord | None:
        row = await self.session.get(StoredVaa, digest)
        return None if row is None else _vaa(row)

    async def add_threshold_parts(
        self, kind: str, parts: Sequence[tuple[ThresholdAttempt, int, bytes]]
    ) -> None:
        rows = [
            {
                "digest": key.digest, "tss_index": key.tss_index, "attempt": key.attempt,
                "identifier": identifier, "kind": kind, "data": data, "added_at": utcnow(),
            }
            for key, identifier, data in parts
        ]  # fmt: skip
        if rows:
            unique = ("digest", "tss_index", "attempt", "identifier", "kind")
            await insert_many_once(self.session, _table(ThresholdPart), rows, unique)

    async def threshold_parts(
        self, kind: str, attempts: Sequence[ThresholdAttempt]
    ) -> dict[ThresholdAttempt, list[tuple[int, bytes]]]:
        if not attempts:
            return {}
        wanted = set(attempts)
        rows = await self.session.execute(
            select(
                ThresholdPart.digest, ThresholdPart.tss_index, ThresholdPart.attempt,
                ThresholdPart.identifier, ThresholdPart.data,
            )
            .where(
                ThresholdPart.digest.in_(list({key.digest for key in wanted})),
                ThresholdPart.kind == kind,
            )
            .order_by(ThresholdPart.id)
        )  # fmt: skip
        found: dict[ThresholdAttempt, list[tuple[int, bytes]]] = {}
        for digest, tss_index, attempt, identifier, data in rows:
            key = ThresholdAttempt(bytes(digest), tss_index, attempt)
            if key in wanted:
                found.setdefault(key, []).append((int(identifier), bytes(data)))
        return found

    async def open_threshold_packages(
        self, packages: Sequence[tuple[ThresholdAttempt, bytes]]
    ) -> None:
        rows = [
            {
                "digest": key.digest, "tss_index": key.tss_index, "attempt": key.attempt,
                "signers": b"", "observation": observation, "opened_at": utcnow(),
            }
            for key, observation in packages
        ]  # fmt: skip
        if rows:
            unique = ("digest", "tss_index", "attempt")
            await insert_many_once(self.session, _table(ThresholdPackage), rows, unique)

    async def issue_threshold_package(
        self, digest: bytes, tss_index: int, attempt: int, signers: bytes, issued_from: str
    ) -> bool:
        result = await self.session.execute(
            update(ThresholdPackage)
            .where(
                ThresholdPackage.digest == digest,
                ThresholdPackage.tss_index == tss_index,
                ThresholdPackage.attempt == attempt,
                ThresholdPackage.issued_from.is_(None),
            )
            .values(signers=signers, issued_from=issued_from)
        )
        return bool(getattr(result, "rowcount", 0) == 1)

    async def threshold_packages(
        self, attempts: Sequence[ThresholdAttempt]
    ) -> dict[ThresholdAttempt, ThresholdPackageRecord]:
        if not attempts:
            return {}
        wanted = set(attempts)
        rows = await self.session.scalars(
            select(ThresholdPackage).where(
                ThresholdPackage.digest.in_(list({key.digest for key in wanted}))
            )
        )
        found = {}
        for row in rows:
            package = _package(row)
            key = ThresholdAttempt(package.digest, package.tss_index, package.attempt)
            if key in wanted:
                found[key] = package
        return found

    async def stale_threshold_packages(
        self, opened_before: datetime, limit: int
    ) -> list[ThresholdPackageRecord]:
        signed = select(StoredVaa.digest).where(StoredVaa.digest == ThresholdPackage.digest)
        rows = await self.session.scalars(
            select(ThresholdPackage)
            .where(
                ThresholdPackage.failure.is_(None),
                ThresholdPackage.opened_at < opened_before,
                ~signed.exists(),
            )
            .order_by(ThresholdPackage.opened_at, ThresholdPackage.id)
            .limit(limit)
        )
        return [_package(row) for row in rows]

    async def fail_threshold_package(
        self,
        digest: bytes,
        tss_index: int,
        attempt: int,
        failure: str,
        failed_from: str,
        *,
        left_out: Sequence[int] = (),
        blamed: int | None = None,
    ) -> bool:
        result = await self.session.execute(
            update(ThresholdPackage)
            .where(
                ThresholdPackage.digest == digest,
                ThresholdPackage.tss_index == tss_index,
                ThresholdPackage.attempt == attempt,
                ThresholdPackage.failure.is_(None),
            )
            .values(
                failure=failure[:500],
                failed_from=failed_from,
                left_out=encode_identifiers(left_out),
                blamed=blamed,
            )
        )
        return bool(getattr(result, "rowcount", 0) == 1)

    async def threshold_packages_failed_from(self, position: str) -> list[ThresholdPackageRecord]:
        rows = await self.session.scalars(
            select(ThresholdPackage)
            .where(ThresholdPackage.failed_from == position)
            .order_by(ThresholdPackage.opened_at, ThresholdPackage.id)
        )
        return [_package(row) for row in rows]

    async def failed_threshold_digests(self, digests: Sequence[bytes]) -> set[bytes]:
        if not digests:
            return set()
        rows = await self.session.execute(
            select(ThresholdPackage.digest, ThresholdPackage.failure).where(
                ThresholdPackage.digest.in_(list(digests))
            )
        )
        failed: set[bytes] = set()
        open_: set[bytes] = set()
        for digest, failure in rows:
            (open_ if failure is None else failed).add(bytes(digest))
        return failed - open_

    async def stored_vaas(self, digests: Sequence[bytes]) -> dict[bytes, StoredVaaRecord]:
        if not digests:
            return {}
        rows = await self.session.scalars(
            select(StoredVaa).where(StoredVaa.digest.in_(list(digests)))
        )
        return {bytes(row.digest): _vaa(row) for row in rows}

    async def vaa_of_message(self, message_id: MessageId) -> StoredVaaRecord | None:
        row = await self.session.scalar(
            select(StoredVaa).where(
                StoredVaa.emitter_chain == message_id.emitter_chain,
                StoredVaa.emitter_address == message_id.emitter_address,
                StoredVaa.sequence == message_id.sequence,
            )
        )
        return None if row is None else _vaa(row)

    async def vaa_of_delivery(self, delivery_id: int) -> bytes | None:
        vaa = await self.session.scalar(
            select(StoredVaa.vaa)
            .join(Delivery, Delivery.digest == StoredVaa.digest)
            .where(Delivery.id == delivery_id)
        )
        return None if vaa is None else bytes(vaa)

    # -- deliveries and attempts --

    async def open_delivery(
        self, digest: bytes, destination_chain: int, trace_context: str | None
    ) -> DeliveryRecord:
        await insert_once(
            self.session,
            _table(Delivery),
            {
                "digest": digest,
                "destination_chain": destination_chain,
                "status": DeliveryStatus.PENDING,
                "attempt_count": 0,
                "trace_context": trace_context,
            },
            ("digest", "destination_chain"),
        )
        row = await self.session.scalar(
            select(Delivery).where(
                Delivery.digest == digest, Delivery.destination_chain == destination_chain
            )
        )
        assert row is not None
        return _delivery(row)

    async def open_deliveries(
        self, opened: Sequence[tuple[bytes, int, str | None]]
    ) -> list[DeliveryRecord]:
        if not opened:
            return []
        rows = [
            {
                "digest": digest,
                "destination_chain": chain,
                "status": DeliveryStatus.PENDING,
                "attempt_count": 0,
                "trace_context": trace_context,
            }
            for digest, chain, trace_context in opened
        ]
        await insert_many_once(
            self.session, _table(Delivery), rows, ("digest", "destination_chain")
        )
        found = await self.session.scalars(
            select(Delivery).where(
                Delivery.digest.in_({digest for digest, _, _ in opened}),
                Delivery.destination_chain.in_({chain for _, chain, _ in opened}),
            )
        )
        by_key = {(bytes(row.digest), row.destination_chain): row for row in found}
        return [_delivery(by_key[(digest, chain)]) for digest, chain, _ in opened]

    async def delivery(self, delivery_id: int) -> DeliveryRecord:
        return _delivery(await self._delivery_row(delivery_id))

    async def _delivery_row(self, delivery_id: int) -> Delivery:
        row = await self.session.get(Delivery, delivery_id)
        assert row is not None
        return row

    async def deliveries_of(
        self, digest: bytes, destination_chain: int | None = None
    ) -> list[DeliveryRecord]:
        query = select(Delivery).where(Delivery.digest == digest)
        if destination_chain is not None:
            query = query.where(Delivery.destination_chain == destination_chain)
        return [_delivery(row) for row in await self.session.scalars(query)]

    async def reopen_delivery(self, digest: bytes, destination_chain: int) -> bool:
        row = await self.session.scalar(
            select(Delivery).where(
                Delivery.digest == digest, Delivery.destination_chain == destination_chain
            )
        )
        if row is None or row.status != DeliveryStatus.DEAD:
            return False
        row.status = DeliveryStatus.PENDING
        row.attempt_count = 0
        return True

    async def update_delivery(
        self,
        delivery_id: int,
        *,
        status: DeliveryStatus | None = None,
        tx_hash: str | None = None,
        last_error: str | None = None,
        clear_next_attempt: bool = False,
    ) -> None:
        row = await self._delivery_row(delivery_id)
        if status is not None:
            row.status = status
        if clear_next_attempt:
            row.next_attempt_at = None
        if tx_hash is not None:
            row.tx_hash = tx_hash
        if last_error is not None:
            row.last_error = last_error

    async def count_failed_attempt(self, delivery_id: int) -> int:
        row = await self._delivery_row(delivery_id)
        row.attempt_count += 1
        return row.attempt_count

    async def delivery_counts(self) -> dict[int, dict[DeliveryStatus, int]]:
        counts: dict[int, dict[DeliveryStatus, int]] = {}
        by_state = await self.session.execute(
            select(Delivery.destination_chain, Delivery.status, func.count()).group_by(
                Delivery.destination_chain, Delivery.status
            )
        )
        for row in by_state:
            counts.setdefault(int(row[0]), {})[row[1]] = int(row[2])
        return counts

    async def attempt(self, attempt_id: int) -> AttemptRecord:
        return _attempt(await self._attempt_row(attempt_id))

    async def _attempt_row(self, attempt_id: int) -> DeliveryAttempt:
        row = await self.session.get(DeliveryAttempt, attempt_id)
        assert row is not None
        return row

    async def attempt_total(self, delivery_id: int) -> int:
        total = await self.session.scalar(
            select(func.count())
            .select_from(DeliveryAttempt)
            .where(DeliveryAttempt.delivery_id == delivery_id)
        )
        return int(total or 0)

    async def _in_flight_rows(self, delivery_id: int) -> list[DeliveryAttempt]:
        rows = await self.session.scalars(
            select(DeliveryAttempt)
            .where(
                DeliveryAttempt.delivery_id == delivery_id,
                DeliveryAttempt.outcome.in_(IN_FLIGHT),
            )
            .order_by(DeliveryAttempt.attempt)
        )
        return list(rows)

    async def in_flight_attempts(self, delivery_id: int) -> list[AttemptRecord]:
        return [_attempt(row) for row in await self._in_flight_rows(delivery_id)]

    async def attempt_counts(self, delivery_ids: Sequence[int]) -> dict[int, tuple[int, int]]:
        counts = dict.fromkeys(delivery_ids, (0, 0))
        if not counts:
            return counts
        in_flight = case((DeliveryAttempt.outcome.in_(IN_FLIGHT), 1), else_=0)
        rows = await self.session.execute(
            select(DeliveryAttempt.delivery_id, func.count(), func.sum(in_flight))
            .where(DeliveryAttempt.delivery_id.in_(list(counts)))
            .group_by(DeliveryAttempt.delivery_id)
        )
        for delivery_id, total, flying in rows:
            counts[int(delivery_id)] = (int(total), int(flying or 0))
        return counts

    async def add_attempt(
        self, delivery_id: int, attempt: int, signer: str, signed: SignedDelivery
    ) -> int:
        row = DeliveryAttempt(
            delivery_id=delivery_id,
            attempt=attempt,
            signer=signer,
            nonce=signed.nonce,
            tx_hash=signed.tx_id,
            signed_tx=signed.raw,
            fee_per_gas=signed.fee_per_gas,
            outcome=AttemptOutcome.PREPARED,
            batch=None,
        )
        self.session.add(row)
        await self.session.flush()
        return row.id

    async def add_attempts(
        self, signer: str, attempts: Sequence[tuple[int, int, SignedDelivery]]
    ) -> list[int]:
        if not attempts:
            return []
        rows = [
            {
                "delivery_id": delivery_id, "attempt": attempt, "signer": signer,
                "nonce": signed.nonce, "tx_hash": signed.tx_id, "signed_tx": signed.raw,
                "fee_per_gas": signed.fee_per_gas, "outcome": AttemptOutcome.PREPARED,
                "batch_id": None,
            }
            for delivery_id, attempt, signed in attempts
        ]  # fmt: skip
        statement = insert(DeliveryAttempt).returning(
            DeliveryAttempt.id, sort_by_parameter_order=True
        )
        return list((await self.session.scalars(statement, rows)).all())

    async def record_broadcasts(self, sent: Sequence[tuple[int, int, str]]) -> None:
        if not sent:
            return
        await self.session.execute(
            update(DeliveryAttempt)
            .where(DeliveryAttempt.id.in_([attempt_id for _, attempt_id, _ in sent]))
            .values(outcome=AttemptOutcome.BROADCAST)
            .execution_options(synchronize_session=False)
        )
        await self._update_deliveries(
            [(delivery_id, tx) for delivery_id, _, tx in sent], DeliveryStatus.SUBMITTED
        )

    async def settle_confirmed(self, landed: Sequence[tuple[int, int, str]]) -> None:
        if not landed:
            return
        confirmed = [attempt_id for _, attempt_id, _ in landed]
        await self.session.execute(
            update(DeliveryAttempt)
            .where(DeliveryAttempt.id.in_(confirmed))
            .values(outcome=AttemptOutcome.CONFIRMED)
            .execution_options(synchronize_session=False)
        )
        await self.session.execute(
            update(DeliveryAttempt)
            .where(
                DeliveryAttempt.delivery_id.in_([delivery_id for delivery_id, _, _ in landed]),
                DeliveryAttempt.outcome.in_(IN_FLIGHT),
                DeliveryAttempt.id.not_in(confirmed),
            )
            .values(outcome=AttemptOutcome.REPLACED)
            .execution_options(synchronize_session=False)
        )
        await self._update_deliveries(
            [(delivery_id, tx) for delivery_id, _, tx in landed],
            DeliveryStatus.CONFIRMED,
            clear_next_attempt=True,
        )

    async def _update_deliveries(
        self,
        rows: Sequence[tuple[int, str]],
        status: DeliveryStatus,
        clear_next_attempt: bool = False,
    ) -> None:
        """Set `status` and each delivery's transaction (id, tx hash), in one round trip."""
        table = _table(Delivery)
        values: dict[str, Any] = {"status": status, "tx_hash": bindparam("new_tx_hash")}
        if clear_next_attempt:
            values["next_attempt_at"] = None
        statement = update(table).where(table.c.id == bindparam("delivery_id")).values(values)
        await self.session.execute(
            statement, [{"delivery_id": d, "new_tx_hash": tx} for d, tx in rows]
        )

    async def add_batch_attempts(
        self, chain_id: int, signer: str, signed: SignedDelivery, members: Sequence[tuple[int, int]]
    ) -> list[int]:
        batch = DeliveryBatch(
            chain_id=chain_id, signer=signer, nonce=signed.nonce, tx_hash=signed.tx_id,
            signed_tx=signed.raw, fee_per_gas=signed.fee_per_gas, size=len(members),
        )  # fmt: skip
        self.session.add(batch)
        await self.session.flush()
        rows = []
        for index, (delivery_id, attempt) in enumerate(members):
            row = DeliveryAttempt(
                delivery_id=delivery_id, attempt=attempt, signer=signer, nonce=signed.nonce,
                tx_hash=signed.tx_id, signed_tx=None, fee_per_gas=signed.fee_per_gas,
                outcome=AttemptOutcome.PREPARED, batch=batch, batch_index=index,
            )  # fmt: skip
            rows.append(row)
        self.session.add_all(rows)
        await self.session.flush()
        return [row.id for row in rows]

    async def batch_vaas(self, batch_id: int) -> list[bytes]:
        found = await self.session.scalars(
            select(StoredVaa.vaa)
            .join(Delivery, Delivery.digest == StoredVaa.digest)
            .join(DeliveryAttempt, DeliveryAttempt.delivery_id == Delivery.id)
            .where(DeliveryAttempt.batch_id == batch_id)
            .order_by(DeliveryAttempt.batch_index)
        )
        return [bytes(vaa) for vaa in found]

    async def set_attempt_outcome(
        self, attempt_id: int, outcome: AttemptOutcome, error: str | None = None
    ) -> None:
        row = await self._attempt_row(attempt_id)
        if error is not None:
            row.error = error
        row.outcome = outcome

    async def record_resent(self, attempt_id: int, delivery_id: int, tx_hash: str | None) -> None:
        await self.session.execute(
            update(DeliveryAttempt)
            .where(DeliveryAttempt.id == attempt_id)
            .where(DeliveryAttempt.outcome == AttemptOutcome.PREPARED)
            .values(outcome=AttemptOutcome.BROADCAST)
        )
        ended = (
            DeliveryStatus.CONFIRMED, DeliveryStatus.ALREADY_DELIVERED, DeliveryStatus.DEAD,
        )  # fmt: skip
        values: dict[str, Any] = {"status": DeliveryStatus.SUBMITTED}
        if tx_hash is not None:
            values["tx_hash"] = tx_hash
        await self.session.execute(
            update(Delivery)
            .where(Delivery.id == delivery_id)
            .where(Delivery.status.not_in(ended))
            .values(**values)
        )

    async def settle_in_flight(self, delivery_id: int, confirmed: int | None) -> None:
        for row in await self._in_flight_rows(delivery_id):
            is_it = row.id == confirmed
            row.outcome = AttemptOutcome.CONFIRMED if is_it else AttemptOutcome.REPLACED

    async def fail_in_flight(self, delivery_id: int, keep: int | None = None) -> None:
        for row in await self._in_flight_rows(delivery_id):
            if row.id != keep:
                row.outcome = AttemptOutcome.FAILED

    async def replace_in_flight(self, delivery_id: int, keep: int) -> None:
        for row in await self._in_flight_rows(delivery_id):
            if row.id != keep:
                row.outcome = AttemptOutcome.REPLACED

    # -- signer nonces --

    async def allocate_nonce(
        self, chain_id: int, signer: str, chain_pending: int, delivery_id: int
    ) -> int:
        held = await self.session.scalar(
            select(func.max(DeliveryAttempt.nonce))
            .join(Delivery, Delivery.id == DeliveryAttempt.delivery_id)
            .where(
                Delivery.destination_chain == chain_id,
                Delivery.id != delivery_id,
                DeliveryAttempt.signer == signer,
                DeliveryAttempt.outcome == AttemptOutcome.PREPARED,
                DeliveryAttempt.nonce >= chain_pending,
            )
        )
        nonce = chain_pending if held is None else int(held) + 1
        row = await self.session.get(SignerNonce, (chain_id, signer))
        if row is None:
            self.session.add(SignerNonce(chain_id=chain_id, signer=signer, next_nonce=nonce + 1))
        else:
            row.next_nonce = max(row.next_nonce, nonce + 1)
        return nonce

    async def signer_next_nonce(self, chain_id: int, signer: str) -> int | None:
        row = await self.session.get(SignerNonce, (chain_id, signer))
        return row.next_nonce if row is not None else None

    async def set_signer_next_nonce(self, chain_id: int, signer: str, next_nonce: int) -> None:
        row = await self.session.get(SignerNonce, (chain_id, signer))
        if row is None:
            self.session.add(SignerNonce(chain_id=chain_id, signer=signer, next_nonce=next_nonce))
        else:
            row.next_nonce = next_nonce
            row.updated_at = utcnow()

    async def open_attempts_of_signer(
        self, chain_id: int, signer: str
    ) -> list[tuple[AttemptRecord, MessageId]]:
        found = await self.session.execute(
            select(DeliveryAttempt, StoredVaa)
            .join(Delivery, Delivery.id == DeliveryAttempt.delivery_id)
            .join(StoredVaa, StoredVaa.digest == Delivery.digest)
            .where(
                Delivery.destination_chain == chain_id,
                DeliveryAttempt.signer == signer,
                DeliveryAttempt.outcome.in_(IN_FLIGHT),
            )
            .order_by(DeliveryAttempt.nonce, DeliveryAttempt.attempt)
        )
        return [(_attempt(attempt), _vaa(vaa).message_id) for attempt, vaa in found.all()]

    # -- dead letters --

    async def record_dead_letter(self, stage: str, position: str, reason: str, body: bytes) -> None:
        existing = await self.session.scalar(
            select(DeadLetter.id).where(
                DeadLetter.stage == stage, DeadLetter.message_key == position
            )
        )
        if existing is None:  # a replay of the same record adds no second entry
            self.session.add(
                DeadLetter(stage=stage, message_key=position, reason=reason, body=body)
            )

    async def open_dead_letter_count(self, stage: str) -> int:
        waiting = await self.session.scalar(
            select(func.count()).where(DeadLetter.stage == stage, DeadLetter.requeued_at.is_(None))
        )
        return int(waiting or 0)

    async def open_dead_letter_counts(self) -> dict[str, int]:
        open_letters = await self.session.execute(
            select(DeadLetter.stage, func.count())
            .where(DeadLetter.requeued_at.is_(None))
            .group_by(DeadLetter.stage)
        )
        return {str(row[0]): int(row[1]) for row in open_letters}

    async def dead_letters(
        self, stage: str | None = None, everything: bool = False, stages: Sequence[str] = ()
    ) -> list[DeadLetterRecord]:
        query = select(DeadLetter).order_by(DeadLetter.id)
        if stage is not None:
            query = query.where(DeadLetter.stage == stage)
        if stages:
            query = query.where(DeadLetter.stage.in_(list(stages)))
        if not everything:
            query = query.where(DeadLetter.requeued_at.is_(None))
        return [_dead_letter(row) for row in await self.session.scalars(query)]

    async def dead_letter(self, entry_id: int) -> DeadLetterRecord | None:
        row = await self.session.get(DeadLetter, entry_id)
        return None if row is None else _dead_letter(row)

    async def mark_requeued(self, entry_id: int) -> None:
        row = await self.session.get(DeadLetter, entry_id)
        assert row is not None
        row.requeued_at = utcnow()


class SqlRelayerLedger:
    """The relayer's ledger (:class:`~fedrelay.ports.relayer_ledger.RelayerLedger`) on a
    session factory."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self.sessions = sessions

    @classmethod
    def on(cls, engine: AsyncEngine) -> SqlRelayerLedger:
        """The ledger on `engine` (objects stay readable after a commit)."""
        return cls(async_sessionmaker(engine, expire_on_commit=False))

    @classmethod
    def open(cls, url: str) -> SqlRelayerLedger:
        """The ledger at `url`, on an engine of its own that replaces a connection the database
        dropped (a restart) instead of handing it out; :meth:`close` disposes of it."""
        return cls.on(create_engine(url, pool_pre_ping=True))

    async def close(self) -> None:
        """Close the connections of the engine the sessions are bound to."""
        bind = self.sessions.kw.get("bind")
        if isinstance(bind, AsyncEngine):
            await bind.dispose()

    async def ping(self) -> bool:
        """A real round trip to the database (``SELECT 1``), for ``/readyz``."""
        async with self.sessions() as session:
            await session.execute(text("SELECT 1"))
        return True

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[SqlRelayerLedgerWork]:
        """See :meth:`~fedrelay.ports.relayer_ledger.RelayerLedger.transaction`."""
        async with self.sessions() as session, session.begin():
            yield SqlRelayerLedgerWork(session)

    @asynccontextmanager
    async def reading(self) -> AsyncIterator[SqlRelayerLedgerWork]:
        """See :meth:`~fedrelay.ports.relayer_ledger.RelayerLedger.reading`."""
        async with self.sessions() as session:
            yield SqlRelayerLedgerWork(session)
