"""The coordinator's :class:`~fedrelay.ports.coordinator_store.CoordinatorRepository` on the ledger.

State written here survives a restart: a coordinator (or its API) opened on the same database
sees the same registrations, rounds, uploads, secure-aggregation messages, commitment offers and
challenges.
Each method is one transaction; unique keys settle races between concurrent writers (a signed
request's nonce is claimed with one ``INSERT ... ON CONFLICT``, so replicas sharing the ledger
accept a request once in all).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from sqlalchemy import BindParameter, delete, func, literal, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker

from fedrelay.adapters.ledger.coordinator_models import (
    CoordinatorBlob,
    CoordinatorChallenge,
    CoordinatorCommitmentOffer,
    CoordinatorNonce,
    CoordinatorRound,
    CoordinatorSecAggMessage,
    CoordinatorTask,
    CoordinatorUpdate,
    CoordinatorWorker,
)
from fedrelay.adapters.ledger.models import U64
from fedrelay.ports.coordinator_store import Conflict
from fedrelay.protocol.challenges import Challenge, ChallengeAnswer
from fedrelay.protocol.offers import CommitmentOffer
from fedrelay.protocol.rounds import (
    Assignment,
    Commitment,
    Fault,
    Phase,
    RoundPolicy,
    RoundState,
    TaskStatus,
    WorkerRef,
)
from fedrelay.protocol.secagg.messages import SecAggMessage, SecAggStage
from fedrelay.protocol.wormhole import Commitment as OfferedCommitment

#: How often (seconds) one process deletes the expired nonces.
NONCE_SWEEP_SECONDS = 60


def _u64(value: int) -> BindParameter[int]:
    # A bare int compared with a NUMERIC(20) column is bound as a 64-bit signed integer;
    # bind it with the column's type so the whole u64 range works on PostgreSQL.
    return literal(value, U64)


def _optional_int(value: int | None) -> int | None:
    # NUMERIC(20) columns come back as Decimal
    return None if value is None else int(value)


def _task_row(state: RoundState, assignment: Assignment) -> CoordinatorTask:
    commitment = assignment.commitment
    return CoordinatorTask(
        job_id=state.job_id,
        round=state.round,
        worker_chain=assignment.worker.chain,
        worker_key=assignment.worker.key,
        shard=assignment.shard,
        status=assignment.status.value,
        slash=assignment.slash,
        reason=assignment.reason,
        fault=int(assignment.fault),
        evidence=assignment.evidence,
        update_hash=commitment.update_hash if commitment else None,
        transcript_root=commitment.transcript_root if commitment else None,
        data_root=commitment.data_root if commitment else None,
        num_samples=commitment.num_samples if commitment else None,
        train_loss=commitment.train_loss if commitment else None,
        committed_block=commitment.block if commitment else None,
    )


def _assignment(row: CoordinatorTask) -> Assignment:
    worker = WorkerRef(row.worker_chain, row.worker_key)
    commitment = None
    if row.update_hash is not None and row.transcript_root is not None:
        commitment = Commitment(
            worker,
            row.update_hash,
            row.transcript_root,
            row.data_root or bytes(32),  # committed before data commitments
            int(row.num_samples or 0),
            int(row.train_loss or 0),
            int(row.committed_block or 0),
        )
    return Assignment(
        worker,
        int(row.shard),
        TaskStatus(row.status),
        commitment,
        int(row.slash),
        row.reason,
        Fault(int(row.fault or 0)),
        row.evidence,
    )


def _state(row: CoordinatorRound, tasks: list[CoordinatorTask]) -> RoundState:
    policy = RoundPolicy(
        total_rounds=int(row.total_rounds),
        min_updates=int(row.min_updates),
        challenge_window=int(row.challenge_window),
        slash_missing=bool(row.slash_missing),
        missing_slash=int(row.missing_slash),
    )
    return RoundState(
        job_id=int(row.job_id),
        round=int(row.round),
        phase=Phase(row.phase),
        policy=policy,
        model_hash=row.model_hash,
        config_hash=row.config_hash,
        assignments=tuple(_assignment(t) for t in sorted(tasks, key=lambda t: int(t.shard))),
        deadline=_optional_int(row.deadline),
        proposed_model=row.proposed_model,
        challenge_ends=_optional_int(row.challenge_ends),
        updated_at=int(row.updated_at),
    )


def _offer(row: CoordinatorCommitmentOffer) -> CommitmentOffer:
    return CommitmentOffer(
        int(row.job_id),
        int(row.round),
        int(row.worker_chain),
        OfferedCommitment(
            bytes(row.worker_key),
            bytes(row.update_hash),
            bytes(row.transcript_root),
            bytes(row.data_root),
            int(row.num_samples),
            int(row.train_loss),
        ),
        bytes(row.signature),
    )


def _challenge(row: CoordinatorChallenge) -> Challenge:
    answer = None
    if row.answered_at is not None:
        answer = ChallengeAnswer(
            start_checkpoint=row.start_checkpoint or "",
            end_checkpoint=row.end_checkpoint or "",
            start_proof=row.start_proof or b"",
            end_proof=row.end_proof or b"",
            answered_at=int(row.answered_at),
            examples=row.examples or b"",
        )
    return Challenge(
        job_id=int(row.job_id),
        round=int(row.round),
        worker=WorkerRef(row.worker_chain, row.worker_key),
        segment=int(row.segment),
        issued_at=int(row.issued_at),
        answer_by=int(row.answer_by),
        answer=answer,
        wants_examples=bool(row.wants_examples),
        reveal_verdict=row.reveal_verdict,
    )


class LedgerCoordinatorRepository:
    """A :class:`~fedrelay.ports.coordinator_store.CoordinatorRepository` in the ledger's tables."""

    def __init__(self, engine: AsyncEngine) -> None:
        """Use ``engine`` (a ledger migrated to the head revision).

        Args:
            engine: From :func:`fedrelay.adapters.ledger.create_engine`.
        """
        self._sessions = async_sessionmaker(engine, expire_on_commit=False)
        self._next_nonce_sweep = 0

    async def is_registered(self, worker: WorkerRef) -> bool:
        """See :meth:`CoordinatorRepository.is_registered`."""
        async with self._sessions() as session:
            return await session.get(CoordinatorWorker, (worker.chain, worker.key)) is not None

    async def register_worker(self, worker: WorkerRef) -> None:
        """See :meth:`CoordinatorRepository.register_worker`."""
        try:
            async with self._sessions() as session, session.begin():
                if await session.get(CoordinatorWorker, (worker.chain, worker.key)) is None:
                    session.add(CoordinatorWorker(chain=worker.chain, worker_key=worker.key))
        except IntegrityError:
            pass  # registered concurrently: the same outcome

    async def save_round(self, state: RoundState) -> None:
        """See :meth:`CoordinatorRepository.save_round`."""
        policy = state.policy
        async with self._sessions() as session, session.begin():
            await session.merge(
                CoordinatorRound(
                    job_id=state.job_id,
                    round=state.round,
                    phase=state.phase.value,
                    total_rounds=policy.total_rounds,
                    min_updates=policy.min_updates,
                    challenge_window=policy.challenge_window,
                    slash_missing=policy.slash_missing,
                    missing_slash=policy.missing_slash,
                    model_hash=state.model_hash,
                    config_hash=state.config_hash,
                    deadline=state.deadline,
                    proposed_model=state.proposed_model,
                    challenge_ends=state.challenge_ends,
                    updated_at=state.updated_at,
                )
            )
            await session.execute(
                delete(CoordinatorTask).where(
                    CoordinatorTask.job_id == _u64(state.job_id),
                    CoordinatorTask.round == state.round,
                )
            )
            session.add_all(_task_row(state, a) for a in state.assignments)

    async def get_round(self, job_id: int, round_number: int | None = None) -> RoundState | None:
        """See :meth:`CoordinatorRepository.get_round`."""
        async with self._sessions() as session:
            if round_number is None:
                latest = await session.scalar(
                    select(func.max(CoordinatorRound.round)).where(
                        CoordinatorRound.job_id == _u64(job_id)
                    )
                )
                if latest is None:
                    return None
                round_number = int(latest)
            row = await session.get(CoordinatorRound, (job_id, round_number))
            if row is None:
                return None
            tasks = await session.scalars(
                select(CoordinatorTask).where(
                    CoordinatorTask.job_id == _u64(job_id), CoordinatorTask.round == round_number
                )
            )
            return _state(row, list(tasks))

    async def publish_blob(self, name: str) -> None:
        """See :meth:`CoordinatorRepository.publish_blob`."""
        try:
            async with self._sessions() as session, session.begin():
                if await session.get(CoordinatorBlob, name) is None:
                    session.add(CoordinatorBlob(name=name))
        except IntegrityError:
            pass  # published concurrently: the same outcome

    async def is_published(self, name: str) -> bool:
        """See :meth:`CoordinatorRepository.is_published`."""
        async with self._sessions() as session:
            return await session.get(CoordinatorBlob, name) is not None

    async def record_update(
        self, job_id: int, round_number: int, worker: WorkerRef, name: str
    ) -> None:
        """See :meth:`CoordinatorRepository.record_update`."""
        key = (job_id, round_number, worker.chain, worker.key)
        try:
            async with self._sessions() as session, session.begin():
                stored = await session.get(CoordinatorUpdate, key)
                if stored is None:
                    session.add(
                        CoordinatorUpdate(
                            job_id=job_id,
                            round=round_number,
                            worker_chain=worker.chain,
                            worker_key=worker.key,
                            name=name,
                        )
                    )
                    return
                existing = stored.name
        except IntegrityError:
            async with self._sessions() as session:
                stored = await session.get(CoordinatorUpdate, key)
                existing = stored.name if stored is not None else name
        if existing != name:
            raise Conflict(
                f"worker {worker.key.hex()} already uploaded update {existing} for job "
                f"{job_id} round {round_number}; an update cannot be replaced"
            )

    async def updates(self, job_id: int, round_number: int) -> Mapping[WorkerRef, str]:
        """See :meth:`CoordinatorRepository.updates`."""
        async with self._sessions() as session:
            rows = await session.scalars(
                select(CoordinatorUpdate).where(
                    CoordinatorUpdate.job_id == _u64(job_id),
                    CoordinatorUpdate.round == round_number,
                )
            )
            return {WorkerRef(r.worker_chain, r.worker_key): r.name for r in rows}

    async def put_secagg(self, message: SecAggMessage) -> None:
        """See :meth:`CoordinatorRepository.put_secagg`."""
        recipient = message.recipient
        key = (
            message.job_id,
            message.round,
            message.stage.value,
            recipient.worker_id if recipient else b"",
            message.sender.chain,
            message.sender.key,
        )
        try:
            async with self._sessions() as session, session.begin():
                stored = await session.get(CoordinatorSecAggMessage, key)
                if stored is None:
                    session.add(
                        CoordinatorSecAggMessage(
                            job_id=message.job_id,
                            round=message.round,
                            stage=message.stage.value,
                            recipient_id=recipient.worker_id if recipient else b"",
                            sender_chain=message.sender.chain,
                            sender_key=message.sender.key,
                            recipient_chain=recipient.chain if recipient else None,
                            recipient_key=recipient.key if recipient else None,
                            data=message.data,
                        )
                    )
                    return
                existing = stored.data
        except IntegrityError:
            async with self._sessions() as session:
                stored = await session.get(CoordinatorSecAggMessage, key)
                existing = stored.data if stored is not None else message.data
        if existing != message.data:
            raise Conflict(
                f"worker {message.sender.key.hex()} already sent a different {message.stage.value} "
                f"message for job {message.job_id} round {message.round}"
            )

    async def secagg(
        self,
        job_id: int,
        round_number: int,
        stage: SecAggStage,
        recipient: WorkerRef | None = None,
    ) -> Mapping[WorkerRef, bytes]:
        """See :meth:`CoordinatorRepository.secagg`."""
        async with self._sessions() as session:
            rows = await session.scalars(
                select(CoordinatorSecAggMessage).where(
                    CoordinatorSecAggMessage.job_id == _u64(job_id),
                    CoordinatorSecAggMessage.round == round_number,
                    CoordinatorSecAggMessage.stage == stage.value,
                    CoordinatorSecAggMessage.recipient_id
                    == (recipient.worker_id if recipient else b""),
                )
            )
            return {WorkerRef(r.sender_chain, r.sender_key): r.data for r in rows}

    async def delete_secagg(self, job_id: int, round_number: int, stage: SecAggStage) -> None:
        """See :meth:`CoordinatorRepository.delete_secagg`."""
        async with self._sessions() as session, session.begin():
            await session.execute(
                delete(CoordinatorSecAggMessage).where(
                    CoordinatorSecAggMessage.job_id == _u64(job_id),
                    CoordinatorSecAggMessage.round == round_number,
                    CoordinatorSecAggMessage.stage == stage.value,
                )
            )

    async def put_offer(self, offer: CommitmentOffer) -> None:
        """See :meth:`CoordinatorRepository.put_offer`."""
        worker, fields = offer.worker, offer.commitment
        key = (offer.job_id, offer.round, worker.chain, worker.key)
        try:
            async with self._sessions() as session, session.begin():
                stored = await session.get(CoordinatorCommitmentOffer, key)
                if stored is None:
                    session.add(
                        CoordinatorCommitmentOffer(
                            job_id=offer.job_id,
                            round=offer.round,
                            worker_chain=worker.chain,
                            worker_key=worker.key,
                            update_hash=fields.update_hash,
                            transcript_root=fields.transcript_root,
                            data_root=fields.data_root,
                            num_samples=fields.num_samples,
                            train_loss=fields.train_loss,
                            signature=offer.signature,
                        )
                    )
                    return
                existing = _offer(stored)
        except IntegrityError:
            async with self._sessions() as session:
                stored = await session.get(CoordinatorCommitmentOffer, key)
                existing = _offer(stored) if stored is not None else offer
        if existing != offer:
            raise Conflict(
                f"worker {worker.key.hex()} already offered a different commitment for job "
                f"{offer.job_id} round {offer.round}; an offer cannot be replaced"
            )

    async def offers(self, job_id: int, round_number: int, chain: int) -> list[CommitmentOffer]:
        """See :meth:`CoordinatorRepository.offers`."""
        async with self._sessions() as session:
            rows = await session.scalars(
                select(CoordinatorCommitmentOffer)
                .where(
                    CoordinatorCommitmentOffer.job_id == _u64(job_id),
                    CoordinatorCommitmentOffer.round == round_number,
                    CoordinatorCommitmentOffer.worker_chain == chain,
                )
                .order_by(CoordinatorCommitmentOffer.worker_key)
            )
            return [_offer(row) for row in rows]

    async def save_challenge(self, challenge: Challenge) -> None:
        """See :meth:`CoordinatorRepository.save_challenge`."""
        async with self._sessions() as session, session.begin():
            row = await session.get(CoordinatorChallenge, challenge.challenge_id)
            if row is not None:
                stored = _challenge(row)
                if stored == challenge:
                    return
                if stored.answer is not None:
                    raise Conflict(f"challenge {challenge.challenge_id} is already answered")
                if replace(stored, answer=challenge.answer) != challenge:
                    raise Conflict(f"challenge {challenge.challenge_id} exists with other terms")
            else:
                row = CoordinatorChallenge(
                    challenge_id=challenge.challenge_id,
                    job_id=challenge.job_id,
                    round=challenge.round,
                    worker_chain=challenge.worker.chain,
                    worker_key=challenge.worker.key,
                    segment=challenge.segment,
                    issued_at=challenge.issued_at,
                    answer_by=challenge.answer_by,
                    wants_examples=challenge.wants_examples,
                )
                session.add(row)
            answer = challenge.answer
            if answer is not None:
                row.start_checkpoint = answer.start_checkpoint
                row.end_checkpoint = answer.end_checkpoint
                row.start_proof = answer.start_proof
                row.end_proof = answer.end_proof
                row.answered_at = answer.answered_at
                row.examples = answer.examples or None

    async def settle_reveal(self, challenge_id: str, verdict: str) -> None:
        """See :meth:`CoordinatorRepository.settle_reveal`."""
        async with self._sessions() as session, session.begin():
            row = await session.get(CoordinatorChallenge, challenge_id, with_for_update=True)
            if row is None or row.answered_at is None:
                raise Conflict(f"challenge {challenge_id} is not answered")
            if row.reveal_verdict not in (None, verdict):
                raise Conflict(f"challenge {challenge_id} was settled: {row.reveal_verdict}")
            row.reveal_verdict = verdict
            row.examples = None

    async def challenges(
        self, *, worker: WorkerRef | None = None, challenge_id: str | None = None
    ) -> list[Challenge]:
        """See :meth:`CoordinatorRepository.challenges`."""
        query = select(CoordinatorChallenge).order_by(
            CoordinatorChallenge.issued_at, CoordinatorChallenge.challenge_id
        )
        if worker is not None:
            query = query.where(
                CoordinatorChallenge.worker_chain == worker.chain,
                CoordinatorChallenge.worker_key == worker.key,
            )
        if challenge_id is not None:
            query = query.where(CoordinatorChallenge.challenge_id == challenge_id)
        async with self._sessions() as session:
            return [_challenge(row) for row in await session.scalars(query)]

    async def claim_nonce(
        self, worker: WorkerRef, nonce: str, expires_at: int, *, now: int
    ) -> bool:
        """See :meth:`CoordinatorRepository.claim_nonce`.

        One upsert on the primary key: a new nonce is inserted; an expired one is taken over;
        a live one is left alone and the claim fails. Expired rows are swept at most once per
        :data:`NONCE_SWEEP_SECONDS` per process, by their indexed expiry.
        """
        async with self._sessions() as session, session.begin():
            dialect = session.bind.dialect.name if session.bind is not None else ""
            statement: Any
            if dialect == "postgresql":
                statement = postgresql.insert(CoordinatorNonce)
            elif dialect == "sqlite":
                statement = sqlite.insert(CoordinatorNonce)
            else:
                raise RuntimeError(f"nonce claims need PostgreSQL or SQLite, not {dialect!r}")
            statement = statement.values(
                worker_chain=worker.chain, worker_key=worker.key, nonce=nonce, expires_at=expires_at
            )
            statement = statement.on_conflict_do_update(
                index_elements=["worker_chain", "worker_key", "nonce"],
                set_={"expires_at": statement.excluded.expires_at},
                where=CoordinatorNonce.expires_at < now,
            )
            claimed = getattr(await session.execute(statement), "rowcount", 0) == 1
            if now >= self._next_nonce_sweep:
                self._next_nonce_sweep = now + NONCE_SWEEP_SECONDS
                await session.execute(
                    delete(CoordinatorNonce).where(CoordinatorNonce.expires_at < now)
                )
            return bool(claimed)
