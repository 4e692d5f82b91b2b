"""The coordinator's ledger repository on the harness's real PostgreSQL: full u64 job ids,
round states that round-trip, conflicts, commitment offers, reward credits, and state that survives
a restart."""

from __future__ import annotations

import asyncio

import pytest

from fedrelay.adapters.devnet.services import Postgres
from fedrelay.adapters.ledger.coordinator_repository import LedgerCoordinatorRepository
from fedrelay.adapters.ledger.coordinator_store import LedgerCoordinatorStore
from fedrelay.adapters.ledger.database import create_engine, upgrade
from fedrelay.ports.coordinator_store import Conflict
from fedrelay.protocol.challenges import Challenge, ChallengeAnswer
from fedrelay.protocol.offers import CommitmentOffer
from fedrelay.protocol.rounds import (
    AssignmentConfirmed,
    Commitment,
    CommitmentReceived,
    RoundPolicy,
    TasksAssigned,
    Tick,
    WorkerRef,
    apply_all,
    open_job,
)
from fedrelay.protocol.secagg.messages import SecAggMessage, SecAggStage
from fedrelay.protocol.wormhole import Commitment as OfferedCommitment

pytestmark = pytest.mark.integration

JOB = 2**64 - 3  # the whole u64 range fits NUMERIC(20) on PostgreSQL
A = WorkerRef(4, bytes(12) + b"\xa1" * 20)
B = WorkerRef(1, b"\xb1" * 32)
C = WorkerRef(4, bytes(12) + b"\x0c" * 20)  # on A's chain, a smaller key


def an_offer(worker: WorkerRef, job_id: int = JOB, update: bytes = b"\x03" * 32) -> CommitmentOffer:
    commitment = OfferedCommitment(worker.key, update, b"\x04" * 32, b"\x05" * 32, 10, 20)
    return CommitmentOffer(job_id, 0, worker.chain, commitment, b"\x5a" * 64)


async def test_coordinator_state_on_postgres_survives_a_restart(postgres: Postgres) -> None:
    await asyncio.to_thread(upgrade, postgres.async_url)
    state = apply_all(
        open_job(JOB, RoundPolicy(total_rounds=2, missing_slash=2**64 - 1), b"\x01" * 32, at=1),
        [
            TasksAssigned(0, (A, B), b"\x02" * 32, deadline=2**64 - 1, at=2),
            AssignmentConfirmed(0, 2),
            CommitmentReceived(
                0, Commitment(A, b"\x03" * 32, b"\x04" * 32, b"\x05" * 32, 10, 20), 3
            ),
            Tick(4),
        ],
    )
    engine = create_engine(postgres.async_url)
    try:
        first = LedgerCoordinatorRepository(engine)
        await first.register_worker(A)
        await first.save_round(state)
        await first.record_update(JOB, 0, A, "aa" * 32)
        with pytest.raises(Conflict):
            await first.record_update(JOB, 0, A, "bb" * 32)
        await first.put_secagg(SecAggMessage(JOB, 0, SecAggStage.SHARES, A, b"to-b", B))
        answer = ChallengeAnswer("c1" * 32, "c2" * 32, b"p1", b"p2", answered_at=5)
        await first.save_challenge(Challenge(JOB, 0, A, 1, issued_at=4, answer_by=2**64 - 1))
        await first.save_challenge(Challenge(JOB, 0, A, 1, 4, 2**64 - 1, answer))
        for worker in (A, B, C, A):
            await first.put_offer(an_offer(worker))
        with pytest.raises(Conflict, match="already offered a different commitment"):
            await first.put_offer(an_offer(A, update=b"\x06" * 32))
    finally:
        await engine.dispose()

    engine = create_engine(postgres.async_url)
    try:
        restarted = LedgerCoordinatorRepository(engine)
        assert await restarted.is_registered(A)
        assert await restarted.get_round(JOB) == state
        assert await restarted.updates(JOB, 0) == {A: "aa" * 32}
        assert await restarted.secagg(JOB, 0, SecAggStage.SHARES, B) == {A: b"to-b"}
        [challenge] = await restarted.challenges(worker=A)
        assert challenge.answer == answer
        assert await restarted.offers(JOB, 0, 4) == [an_offer(C), an_offer(A)]
        assert await restarted.offers(JOB, 0, 1) == [an_offer(B)]
    finally:
        await engine.dispose()


async def test_concurrent_offers_on_postgres_store_one_and_refuse_a_different_one(
    postgres: Postgres,
) -> None:
    """Replicas sharing the ledger: the same offer sent to both at once is stored once, and a
    different one sent with it loses to whichever was stored first."""
    await asyncio.to_thread(upgrade, postgres.async_url)
    job = JOB - 1
    engines = [create_engine(postgres.async_url) for _ in range(2)]
    try:
        replicas = [LedgerCoordinatorRepository(engine) for engine in engines]
        same = an_offer(A, job)
        await asyncio.gather(*(replica.put_offer(same) for replica in replicas))
        assert await replicas[0].offers(job, 0, 4) == [same]

        first, second = an_offer(B, job), an_offer(B, job, update=b"\x06" * 32)
        outcomes = await asyncio.gather(
            replicas[0].put_offer(first), replicas[1].put_offer(second), return_exceptions=True
        )
        kept, refused = (first, outcomes[1]) if outcomes[0] is None else (second, outcomes[0])
        assert outcomes.count(None) == 1, outcomes
        assert isinstance(refused, Conflict), outcomes
        assert await replicas[1].offers(job, 0, 1) == [kept]
    finally:
        for engine in engines:
            await engine.dispose()


async def test_reward_credits_on_postgres_are_exact_and_recorded_once_by_racing_replicas(
    postgres: Postgres,
) -> None:
    """Two replicas recording the same settled round at once store it once; amounts above
    2**64 come back exact, and a round recorded with other amounts is a conflict."""
    await asyncio.to_thread(upgrade, postgres.async_url)
    engines = [create_engine(postgres.async_url) for _ in range(2)]
    token, big = b"\xee" * 20, 2**200 + 1
    amounts = {b"\x01" * 20: big, b"\x02" * 20: 5}
    try:
        replicas = [LedgerCoordinatorStore(engine) for engine in engines]
        recorded = await asyncio.gather(
            *(replica.credit_rewards(JOB, 3, token, amounts) for replica in replicas)
        )
        assert sorted(recorded) == [False, True]
        assert await replicas[1].credit_rewards(JOB, 4, token, {b"\x01" * 20: 1})
        assert not await replicas[0].credit_rewards(JOB, 5, token, {})
        assert await replicas[0].earnings() == {
            (b"\x01" * 20, token): big + 1,
            (b"\x02" * 20, token): 5,
        }
        with pytest.raises(Conflict, match="already recorded with other amounts"):
            await replicas[0].credit_rewards(JOB, 3, token, {b"\x01" * 20: big})
    finally:
        for engine in engines:
            await engine.dispose()
