"""The coordinator service's store on the ledger: the API's tables plus the chain cursor
(``source_cursors``), one report per round (``coordinator_round_reports``) and the rewards
rounds credited through a reward distributor (``coordinator_reward_credits``).

A coordinator started on the same database finds its cursor, its registered workers, every
round state and every report where the previous process left them.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

from sqlalchemy import BigInteger, DateTime, LargeBinary, Text, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from fedrelay.adapters.ledger.coordinator_models import CoordinatorRound, CoordinatorWorker
from fedrelay.adapters.ledger.coordinator_repository import LedgerCoordinatorRepository
from fedrelay.adapters.ledger.models import U64, Base, SourceCursor, utcnow
from fedrelay.ports.coordinator_store import Conflict, RoundReport
from fedrelay.protocol.rounds import Phase, WorkerRef


class CoordinatorRoundReport(Base):
    """The coordinator's report of one round, as JSON (see
    ``fedrelay.ports.coordinator_store.RoundReport``)."""

    __tablename__ = "coordinator_round_reports"

    job_id: Mapped[int] = mapped_column(U64, primary_key=True)
    round: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    report: Mapped[str] = mapped_column(Text)
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, onupdate=utcnow
    )


class CoordinatorRewardCredit(Base):
    """What one round settled through the reward distributor paid one payout address; the
    amount as decimal text, exact whatever its size (uint256 on chain)."""

    __tablename__ = "coordinator_reward_credits"

    job_id: Mapped[int] = mapped_column(U64, primary_key=True)
    round: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    account: Mapped[bytes] = mapped_column(LargeBinary(20), primary_key=True)
    token: Mapped[bytes] = mapped_column(LargeBinary(20))
    amount: Mapped[str] = mapped_column(Text)
    credited_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class LedgerCoordinatorStore(LedgerCoordinatorRepository):
    """A :class:`~fedrelay.ports.coordinator_store.CoordinatorStore` in the ledger's tables."""

    async def cursor(self, source: str) -> int | None:
        """See :meth:`CoordinatorStore.cursor`."""
        async with self._sessions() as session:
            row = await session.get(SourceCursor, source)
            return None if row is None else int(row.position)

    async def save_cursor(self, source: str, chain: int, block: int) -> None:
        """See :meth:`CoordinatorStore.save_cursor`."""
        async with self._sessions() as session, session.begin():
            row = await session.get(SourceCursor, source)
            if row is None:
                session.add(SourceCursor(source=source, chain_id=chain, position=block))
            else:
                row.position = block
                row.updated_at = utcnow()

    async def workers(self) -> list[WorkerRef]:
        """See :meth:`CoordinatorStore.workers`."""
        async with self._sessions() as session:
            rows = await session.scalars(
                select(CoordinatorWorker).order_by(
                    CoordinatorWorker.chain, CoordinatorWorker.worker_key
                )
            )
            return [WorkerRef(r.chain, r.worker_key) for r in rows]

    async def record_stake(self, worker: WorkerRef, stake: int, nonce: int) -> bool:
        """See :meth:`CoordinatorStore.record_stake` (one transaction; the row is locked)."""
        async with self._sessions() as session, session.begin():
            row = await session.get(
                CoordinatorWorker, (worker.chain, worker.key), with_for_update=True
            )
            if row is None:
                session.add(
                    CoordinatorWorker(
                        chain=worker.chain, worker_key=worker.key, stake=stake, stake_nonce=nonce
                    )
                )
                return True
            known = row.stake is not None
            if (known and nonce == 0) or (nonce != 0 and nonce <= int(row.stake_nonce or 0)):
                return False
            row.stake = stake
            row.stake_nonce = nonce
            return True

    async def stakes(self) -> dict[WorkerRef, int]:
        """See :meth:`CoordinatorStore.stakes`."""
        async with self._sessions() as session:
            rows = await session.scalars(
                select(CoordinatorWorker).where(CoordinatorWorker.stake.is_not(None))
            )
            return {WorkerRef(r.chain, r.worker_key): int(r.stake or 0) for r in rows}

    async def active_jobs(self) -> list[int]:
        """See :meth:`CoordinatorStore.active_jobs`."""
        latest = (
            select(CoordinatorRound.job_id, func.max(CoordinatorRound.round).label("round"))
            .group_by(CoordinatorRound.job_id)
            .subquery()
        )
        query = (
            select(CoordinatorRound.job_id)
            .join(
                latest,
                (CoordinatorRound.job_id == latest.c.job_id)
                & (CoordinatorRound.round == latest.c.round),
            )
            .where(CoordinatorRound.phase != Phase.COMPLETED.value)
            .order_by(CoordinatorRound.job_id)
        )
        async with self._sessions() as session:
            return [int(job_id) for job_id in await session.scalars(query)]

    async def save_report(self, report: RoundReport) -> None:
        """See :meth:`CoordinatorStore.save_report`."""
        async with self._sessions() as session, session.begin():
            await session.merge(
                CoordinatorRoundReport(
                    job_id=report.job_id, round=report.round, report=report.to_json()
                )
            )

    async def report(self, job_id: int, round_number: int) -> RoundReport | None:
        """See :meth:`CoordinatorStore.report`."""
        async with self._sessions() as session:
            row = await session.get(CoordinatorRoundReport, (job_id, round_number))
            return None if row is None else RoundReport.from_json(row.report)

    async def reports(self, job_id: int) -> list[RoundReport]:
        """See :meth:`CoordinatorStore.reports`."""
        async with self._sessions() as session:
            rows = await session.scalars(
                select(CoordinatorRoundReport)
                .where(CoordinatorRoundReport.job_id == job_id)
                .order_by(CoordinatorRoundReport.round)
            )
            return [RoundReport.from_json(r.report) for r in rows]

    async def credit_rewards(
        self, job_id: int, round_number: int, token: bytes, amounts: Mapping[bytes, int]
    ) -> bool:
        """See :meth:`CoordinatorStore.credit_rewards` (one transaction; two replicas recording
        the same round at once store it once, and the one that lost compares)."""
        wanted = {account: amount for account, amount in amounts.items() if amount != 0}
        if not wanted:
            return False
        try:
            async with self._sessions() as session, session.begin():
                stored = await self._credited(session, job_id, round_number)
                if stored is None:
                    session.add_all(
                        CoordinatorRewardCredit(
                            job_id=job_id,
                            round=round_number,
                            account=account,
                            token=token,
                            amount=str(amount),
                        )
                        for account, amount in sorted(wanted.items())
                    )
                    return True
        except IntegrityError:
            async with self._sessions() as session:
                stored = await self._credited(session, job_id, round_number)
        if stored != (token, wanted):
            raise Conflict(
                f"job {job_id} round {round_number}: rewards already recorded with other amounts"
            )
        return False

    @staticmethod
    async def _credited(
        session: AsyncSession, job_id: int, round_number: int
    ) -> tuple[bytes, dict[bytes, int]] | None:
        """A round's recorded credits (token, amount per account), or None when it has none."""
        rows = list(
            await session.scalars(
                select(CoordinatorRewardCredit).where(
                    (CoordinatorRewardCredit.job_id == job_id)
                    & (CoordinatorRewardCredit.round == round_number)
                )
            )
        )
        if not rows:
            return None
        tokens = {bytes(r.token) for r in rows}
        token = tokens.pop() if len(tokens) == 1 else b""
        return token, {bytes(r.account): int(r.amount) for r in rows}

    async def earnings(self) -> dict[tuple[bytes, bytes], int]:
        """See :meth:`CoordinatorStore.earnings`."""
        total: dict[tuple[bytes, bytes], int] = {}
        async with self._sessions() as session:
            for row in await session.scalars(select(CoordinatorRewardCredit)):
                key = (bytes(row.account), bytes(row.token))
                total[key] = total.get(key, 0) + int(row.amount)
        return total
