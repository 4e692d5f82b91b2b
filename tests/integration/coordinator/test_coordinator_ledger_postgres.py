"""The coordinator's ledger repository on the harness's real PostgreSQL: full u64 job ids,
round states that round-trip, conflicts, and state that survives a restart."""

from __future__ import annotations

import asyncio

import pytest

from fedrelay.adapters.devnet.services import Postgres
from fedrelay.adapters.ledger.coordinator_repository import LedgerCoordinatorRepository
from fedrelay.adapters.ledger.database import create_engine, upgrade
from fedrelay.ports.coordinator_store import Conflict
from fedrelay.protocol.challenges import Challenge, ChallengeAnswer
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

pytestmark = pytest.mark.integration

JOB = 2**64 - 3  # the whole u64 range fits NUMERIC(20) on PostgreSQL
A = WorkerRef(4, bytes(12) + b"\xa1" * 20)
B = WorkerRef(1, b"\xb1" * 32)


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
    finally:
        await engine.dispose()
