"""The repository contract, on memory and on the SQLite ledger (which also survives a restart)."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from fedrelay.adapters.ledger import create_engine
from fedrelay.adapters.ledger.coordinator_repository import LedgerCoordinatorRepository
from fedrelay.coordinator.memory_store import MemoryCoordinatorStore
from fedrelay.ports.coordinator_store import Conflict, CoordinatorRepository
from fedrelay.protocol.challenges import Challenge, ChallengeAnswer
from fedrelay.protocol.offers import CommitmentOffer
from fedrelay.protocol.rounds import (
    AggregateProposed,
    Commitment,
    CommitmentReceived,
    RoundPolicy,
    RoundState,
    TasksAssigned,
    Tick,
    UpdateRejected,
    WorkerRef,
    apply_all,
    open_job,
)
from fedrelay.protocol.secagg.messages import SecAggMessage, SecAggStage
from fedrelay.protocol.wormhole import Commitment as OfferedCommitment

A = WorkerRef(4, bytes(12) + b"\xaa" * 20)
B = WorkerRef(1, b"\xbb" * 32)
C = WorkerRef(4, bytes(12) + b"\x11" * 20)  # on A's chain, a smaller key
POLICY = RoundPolicy(total_rounds=3, min_updates=1, challenge_window=60, slash_missing=True)
JOB = 2**40 + 5


@pytest.fixture
def ledger_url(migrated_ledger: Path, tmp_path: Path) -> str:
    path = tmp_path / "ledger.db"
    shutil.copyfile(migrated_ledger, path)
    return f"sqlite+aiosqlite:///{path}"


@pytest.fixture(params=["memory", "ledger"])
async def repository(
    request: pytest.FixtureRequest, ledger_url: str
) -> AsyncIterator[CoordinatorRepository]:
    if request.param == "memory":
        yield MemoryCoordinatorStore()
        return
    engine = create_engine(ledger_url)
    yield LedgerCoordinatorRepository(engine)
    await engine.dispose()


def a_round() -> RoundState:
    return apply_all(
        open_job(JOB, POLICY, b"\x01" * 32, at=100),
        [
            TasksAssigned(0, (A, B), b"\x02" * 32, deadline=200, at=110),
            CommitmentReceived(
                0, Commitment(A, b"\x03" * 32, b"\x04" * 32, b"\x05" * 32, 600, 123_456), 150
            ),
            Tick(201),
        ],
    )


async def test_workers_register_once(repository: CoordinatorRepository) -> None:
    assert not await repository.is_registered(A)
    await repository.register_worker(A)
    await repository.register_worker(A)
    assert await repository.is_registered(A)
    assert not await repository.is_registered(WorkerRef(1, A.key))


async def test_round_states_round_trip_and_the_latest_round_is_current(
    repository: CoordinatorRepository,
) -> None:
    state = a_round()
    await repository.save_round(state)
    assert await repository.get_round(JOB, 0) == state
    assert await repository.get_round(JOB) == state
    later = apply_all(
        state,
        [
            UpdateRejected(0, A, slash=7, reason="transcript replay diverged", at=210),
            AggregateProposed(0, b"\x01" * 32, at=220),
        ],
    )
    await repository.save_round(later)
    assert await repository.get_round(JOB, 0) == later
    assert await repository.get_round(JOB, 1) is None
    assert await repository.get_round(JOB + 1) is None


async def test_published_blobs(repository: CoordinatorRepository) -> None:
    name = "ab" * 32
    assert not await repository.is_published(name)
    await repository.publish_blob(name)
    await repository.publish_blob(name)
    assert await repository.is_published(name)


async def test_an_update_is_recorded_once_and_never_replaced(
    repository: CoordinatorRepository,
) -> None:
    await repository.record_update(JOB, 0, A, "11" * 32)
    await repository.record_update(JOB, 0, A, "11" * 32)
    with pytest.raises(Conflict, match="cannot be replaced"):
        await repository.record_update(JOB, 0, A, "22" * 32)
    await repository.record_update(JOB, 1, A, "22" * 32)
    assert await repository.updates(JOB, 0) == {A: "11" * 32}
    assert await repository.updates(JOB, 1) == {A: "22" * 32}


async def test_secagg_messages_broadcast_and_addressed(repository: CoordinatorRepository) -> None:
    await repository.put_secagg(SecAggMessage(JOB, 0, SecAggStage.KEYS, A, b"ka"))
    await repository.put_secagg(SecAggMessage(JOB, 0, SecAggStage.KEYS, B, b"kb"))
    await repository.put_secagg(SecAggMessage(JOB, 0, SecAggStage.SHARES, A, b"a->b", B))
    await repository.put_secagg(SecAggMessage(JOB, 0, SecAggStage.KEYS, A, b"ka"))
    with pytest.raises(Conflict, match="different keys message"):
        await repository.put_secagg(SecAggMessage(JOB, 0, SecAggStage.KEYS, A, b"other"))
    assert await repository.secagg(JOB, 0, SecAggStage.KEYS) == {A: b"ka", B: b"kb"}
    assert await repository.secagg(JOB, 0, SecAggStage.SHARES, B) == {A: b"a->b"}
    assert await repository.secagg(JOB, 0, SecAggStage.SHARES, A) == {}
    assert await repository.secagg(JOB, 0, SecAggStage.MASKED) == {}


def an_offer(
    worker: WorkerRef,
    round_number: int = 0,
    *,
    update: bytes = b"\x03" * 32,
    signature: bytes = b"\x5a" * 64,
) -> CommitmentOffer:
    commitment = OfferedCommitment(worker.key, update, b"\x04" * 32, b"\x05" * 32, 600, 123_456)
    return CommitmentOffer(JOB, round_number, worker.chain, commitment, signature)


async def test_an_offer_is_stored_once_and_never_replaced(
    repository: CoordinatorRepository,
) -> None:
    offer = an_offer(A)
    await repository.put_offer(offer)
    await repository.put_offer(offer)  # the same again: nothing changes
    with pytest.raises(Conflict, match="already offered a different commitment"):
        await repository.put_offer(an_offer(A, update=b"\x06" * 32))
    with pytest.raises(Conflict, match="already offered a different commitment"):
        await repository.put_offer(an_offer(A, signature=b"\x5b" * 64))
    assert await repository.offers(JOB, 0, A.chain) == [offer]
    await repository.put_offer(an_offer(A, 1, update=b"\x06" * 32))  # another round
    assert await repository.offers(JOB, 1, A.chain) == [an_offer(A, 1, update=b"\x06" * 32)]
    assert await repository.offers(JOB, 0, A.chain) == [offer]


async def test_offers_are_those_of_one_chain_in_worker_key_order(
    repository: CoordinatorRepository,
) -> None:
    for worker in (A, B, C):
        await repository.put_offer(an_offer(worker))
    assert C.key < A.key
    assert await repository.offers(JOB, 0, 4) == [an_offer(C), an_offer(A)]
    assert await repository.offers(JOB, 0, 1) == [an_offer(B)]
    assert await repository.offers(JOB, 0, 2) == []
    assert await repository.offers(JOB, 1, 4) == []
    assert await repository.offers(JOB + 1, 0, 4) == []


async def test_challenges_are_answered_once(repository: CoordinatorRepository) -> None:
    challenge = Challenge(JOB, 0, A, segment=3, issued_at=300, answer_by=400)
    other = Challenge(JOB, 0, B, segment=1, issued_at=301, answer_by=400)
    await repository.save_challenge(challenge)
    await repository.save_challenge(challenge)
    await repository.save_challenge(other)
    assert await repository.challenges(worker=A) == [challenge]
    assert await repository.challenges() == [challenge, other]
    with pytest.raises(Conflict, match="other terms"):
        await repository.save_challenge(Challenge(JOB, 0, A, 3, issued_at=300, answer_by=999))

    answer = ChallengeAnswer("c3" * 32, "c4" * 32, b"proof3", b"proof4", answered_at=350)
    answered = Challenge(JOB, 0, A, 3, 300, 400, answer)
    await repository.save_challenge(answered)
    assert await repository.challenges(challenge_id=challenge.challenge_id) == [answered]
    with pytest.raises(Conflict, match="already answered"):
        await repository.save_challenge(Challenge(JOB, 0, A, 3, 300, 400, None))


async def test_the_ledger_keeps_everything_across_a_restart(ledger_url: str) -> None:
    state = a_round()
    engine = create_engine(ledger_url)
    first = LedgerCoordinatorRepository(engine)
    await first.register_worker(B)
    await first.save_round(state)
    await first.record_update(JOB, 0, A, "11" * 32)
    await first.save_challenge(Challenge(JOB, 0, A, 3, 300, 400))
    await first.put_offer(an_offer(A))
    await engine.dispose()

    engine = create_engine(ledger_url)
    restarted = LedgerCoordinatorRepository(engine)
    assert await restarted.is_registered(B)
    assert await restarted.get_round(JOB) == state
    assert await restarted.updates(JOB, 0) == {A: "11" * 32}
    assert [c.segment for c in await restarted.challenges(worker=A)] == [3]
    assert await restarted.offers(JOB, 0, A.chain) == [an_offer(A)]
    await engine.dispose()
