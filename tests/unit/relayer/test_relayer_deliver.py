"""The deliver stage against a fake destination that can misbehave on demand."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from support.fake_destination import CHAIN, FakeDestination, Killed
from support.relayer import read_topic, sample_observation, signed_vaa_bytes
from support.wormhole import guardian_signers

from fedrelay.adapters.kafka import MemoryBus
from fedrelay.adapters.ledger.database import create_engine, upgrade
from fedrelay.adapters.ledger.models import (
    AttemptOutcome,
    DeadLetter,
    Delivery,
    DeliveryAttempt,
    DeliveryStatus,
    SignerNonce,
)
from fedrelay.adapters.ledger.relayer_ledger import SqlRelayerLedger, SqlRelayerLedgerWork
from fedrelay.ports.relay import Failure, FailureKind, SignedDelivery
from fedrelay.relayer.backoff import BackoffPolicy
from fedrelay.relayer.records import DeliveryRequest, encode_message, message_key
from fedrelay.relayer.settings import RelayerSettings
from fedrelay.relayer.stage import REASON_HEADER, StageRunner, stage_metrics
from fedrelay.relayer.stages.deliver import (
    Deliverer,
    DeliveryFailed,
    DeliveryRetry,
    DestinationUnavailable,
    WrongDestination,
    deliver_stage,
    reopen_delivery,
)

SIGNERS = guardian_signers(1)


def request(sequence: int = 1, chain: int = CHAIN) -> DeliveryRequest:
    observation = sample_observation(sequence)
    return DeliveryRequest(
        vaa=signed_vaa_bytes(observation, SIGNERS),
        destination_chain=chain,
        target_address=bytes(32),
        emitted_at_ms=observation.emitted_at_ms,
    )


@pytest.fixture
async def sessions(tmp_path: Path) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    url = f"sqlite+aiosqlite:///{tmp_path / 'ledger.db'}"
    await asyncio.to_thread(upgrade, url)
    engine = create_engine(url)
    yield async_sessionmaker(engine, expire_on_commit=False)
    await engine.dispose()


def deliverer(
    chain: FakeDestination, sessions: async_sessionmaker[AsyncSession], attempts: int = 4
) -> Deliverer:
    policy = BackoffPolicy(base_s=0.001, cap_s=0.005, max_attempts=attempts)
    return Deliverer(
        chain, SqlRelayerLedger(sessions), policy, confirm_timeout_s=0.05, status_interval_s=0.005
    )


async def ledger_state(
    sessions: async_sessionmaker[AsyncSession], wanted: DeliveryRequest
) -> tuple[Delivery, list[DeliveryAttempt]]:
    async with sessions() as session:
        delivery = await session.scalar(select(Delivery).where(Delivery.digest == wanted.digest))
        assert delivery is not None
        attempts = await session.scalars(
            select(DeliveryAttempt)
            .where(DeliveryAttempt.delivery_id == delivery.id)
            .order_by(DeliveryAttempt.attempt)
        )
        return delivery, list(attempts)


async def test_delivers_once_and_records_the_confirmed_attempt(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    chain, wanted = FakeDestination(nonce=7), request()
    stage = deliverer(chain, sessions)

    assert await stage.deliver(wanted) == DeliveryStatus.CONFIRMED
    assert await stage.deliver(wanted) == DeliveryStatus.CONFIRMED  # a duplicate: no new tx

    assert chain.applied == [wanted.digest]
    assert len(chain.prepared) == 1
    delivery, [attempt] = await ledger_state(sessions, wanted)
    assert delivery.status == DeliveryStatus.CONFIRMED
    assert delivery.tx_hash == attempt.tx_hash == chain.prepared[0].tx_id
    assert attempt.outcome == AttemptOutcome.CONFIRMED
    assert attempt.nonce == 7
    assert bytes(attempt.signed_tx or b"") == chain.prepared[0].raw
    async with sessions() as session:
        row = await session.get(SignerNonce, (CHAIN, chain.signer))
        assert row is not None
        assert row.next_nonce == 8


async def test_a_consumed_digest_is_already_delivered_without_a_transaction(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    wanted = request()
    chain = FakeDestination(consumed={wanted.digest})

    assert await deliverer(chain, sessions).deliver(wanted) == DeliveryStatus.ALREADY_DELIVERED

    assert chain.prepared == []
    assert chain.broadcasts == []
    delivery, attempts = await ledger_state(sessions, wanted)
    assert delivery.status == DeliveryStatus.ALREADY_DELIVERED
    assert attempts == []


async def test_the_signed_transaction_is_persisted_before_broadcast(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    wanted = request()
    seen: list[tuple[AttemptOutcome, bytes]] = []

    class Watching(FakeDestination):
        async def broadcast(self, delivery: SignedDelivery) -> None:
            async with sessions() as session:
                row = await session.scalar(
                    select(DeliveryAttempt).where(DeliveryAttempt.tx_hash == delivery.tx_id)
                )
                assert row is not None, "broadcast before the attempt was persisted"
                seen.append((row.outcome, bytes(row.signed_tx or b"")))
            await super().broadcast(delivery)

    chain = Watching()
    await deliverer(chain, sessions).deliver(wanted)

    assert seen == [(AttemptOutcome.PREPARED, chain.prepared[0].raw)]


async def test_killed_after_broadcast_resumes_without_signing_again(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    wanted = request()
    chain = FakeDestination(kill_after_send=1)
    with pytest.raises(Killed):
        await deliverer(chain, sessions).deliver(wanted)
    delivery, [attempt] = await ledger_state(sessions, wanted)
    assert attempt.outcome == AttemptOutcome.PREPARED  # the ledger update never happened

    assert await deliverer(chain, sessions).deliver(wanted) == DeliveryStatus.CONFIRMED

    assert len(chain.prepared) == 1
    assert chain.applied == [wanted.digest]
    delivery, [attempt] = await ledger_state(sessions, wanted)
    assert delivery.status == DeliveryStatus.CONFIRMED
    assert attempt.outcome == AttemptOutcome.CONFIRMED
    assert delivery.tx_hash == chain.prepared[0].tx_id


async def test_killed_before_broadcast_sends_the_persisted_bytes_on_restart(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    wanted = request()
    chain = FakeDestination(kill_before_send=1)
    with pytest.raises(Killed):
        await deliverer(chain, sessions).deliver(wanted)
    assert chain.broadcasts == []

    assert await deliverer(chain, sessions).deliver(wanted) == DeliveryStatus.CONFIRMED

    assert len(chain.prepared) == 1
    assert chain.broadcasts == [chain.prepared[0].tx_id]
    assert chain.applied == [wanted.digest]


async def test_nonce_too_low_takes_a_fresh_nonce_next_attempt(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    wanted = request()
    chain = FakeDestination(nonce=5, stale_nonce_reads=1)
    stage = deliverer(chain, sessions)

    with pytest.raises(DeliveryRetry, match="nonce_too_low"):
        await stage.deliver(wanted)
    assert await stage.deliver(wanted) == DeliveryStatus.CONFIRMED

    _delivery, attempts = await ledger_state(sessions, wanted)
    assert [(a.nonce, a.outcome) for a in attempts] == [
        (4, AttemptOutcome.FAILED),
        (5, AttemptOutcome.CONFIRMED),
    ]
    assert "nonce too low" in (attempts[0].error or "")


async def test_underpriced_bids_escalate_the_fee_until_accepted(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    wanted = request()
    chain = FakeDestination(min_fee=150)
    stage = deliverer(chain, sessions)

    for _ in range(2):
        with pytest.raises(DeliveryRetry, match="underpriced"):
            await stage.deliver(wanted)
    assert await stage.deliver(wanted) == DeliveryStatus.CONFIRMED

    _, attempts = await ledger_state(sessions, wanted)
    fees = [int(a.fee_per_gas or 0) for a in attempts]
    assert fees == sorted(fees)
    assert len(set(fees)) == 3
    assert fees[-1] >= 150
    assert [a.outcome for a in attempts][-1] == AttemptOutcome.CONFIRMED


async def test_a_stuck_transaction_is_replaced_with_the_same_nonce_and_a_higher_fee(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    wanted = request()
    chain = FakeDestination(mining=False)
    stage = deliverer(chain, sessions)
    with pytest.raises(DeliveryRetry, match="not confirmed"):
        await stage.deliver(wanted)

    chain.mining = True
    assert await stage.deliver(wanted) == DeliveryStatus.CONFIRMED

    _, attempts = await ledger_state(sessions, wanted)
    assert [a.nonce for a in attempts] == [0, 0]
    assert int(attempts[1].fee_per_gas or 0) > int(attempts[0].fee_per_gas or 0)
    assert [a.outcome for a in attempts] == [AttemptOutcome.REPLACED, AttemptOutcome.CONFIRMED]
    assert chain.applied == [wanted.digest]


@pytest.mark.parametrize(
    "failure",
    [
        Failure(FailureKind.OUT_OF_GAS, "out of gas"),
        Failure(FailureKind.REVERTED, "InvalidVaa('no quorum')"),
    ],
)
async def test_terminal_failures_end_the_delivery_at_once(
    sessions: async_sessionmaker[AsyncSession], failure: Failure
) -> None:
    wanted = request()
    chain = FakeDestination(revert={wanted.digest: failure})

    with pytest.raises(DeliveryFailed, match="terminal error") as raised:
        await deliverer(chain, sessions).deliver(wanted)

    assert failure.reason in str(raised.value)
    delivery, [attempt] = await ledger_state(sessions, wanted)
    assert delivery.status == DeliveryStatus.DEAD
    assert failure.reason in (delivery.last_error or "")
    assert attempt.outcome == AttemptOutcome.REVERTED


async def test_retryable_failures_end_after_the_last_attempt(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    wanted = request()
    chain = FakeDestination(min_fee=10**9)
    stage = deliverer(chain, sessions, attempts=3)
    for _ in range(2):
        with pytest.raises(DeliveryRetry):
            await stage.deliver(wanted)

    with pytest.raises(DeliveryFailed, match="gave up after 3 attempts"):
        await stage.deliver(wanted)
    with pytest.raises(DeliveryFailed, match="given up before"):
        await stage.deliver(wanted)  # a duplicate of a dead delivery does not try again

    async with sessions() as session, session.begin():
        assert await reopen_delivery(SqlRelayerLedgerWork(session), wanted.digest, CHAIN)
    chain.min_fee = 0
    assert await stage.deliver(wanted) == DeliveryStatus.CONFIRMED


async def test_an_unavailable_endpoint_does_not_use_up_attempts(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    wanted = request()
    chain = FakeDestination(down=5)
    stage = deliverer(chain, sessions, attempts=2)
    for _ in range(5):
        with pytest.raises(DestinationUnavailable):
            await stage.deliver(wanted)

    assert await stage.deliver(wanted) == DeliveryStatus.CONFIRMED
    delivery, _ = await ledger_state(sessions, wanted)
    assert delivery.attempt_count == 0


async def test_a_request_for_another_chain_is_refused(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    with pytest.raises(WrongDestination, match="addressed to chain 2"):
        await deliverer(FakeDestination(), sessions).deliver(request(chain=2))


async def test_stage_dead_letters_the_poison_and_delivers_the_rest(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    good, poison, duplicate = request(1), request(2), request(1)
    chain = FakeDestination(revert={poison.digest: Failure(FailureKind.REVERTED, "WrongTarget")})
    chain.down = 2  # the endpoint is down at first: retried, not dead-lettered
    bus = MemoryBus()
    await bus.create_topics(["deliveries.4", "dlq"])
    producer = bus.producer()
    await producer.start()
    for item in (good, poison, duplicate):
        await producer.send("deliveries.4", encode_message(item), key=message_key(item.message_id))
    await producer.stop()
    registry = CollectorRegistry()
    stage = deliverer(chain, sessions)
    runner = StageRunner(
        name="deliver-4", bus=bus, inputs=["deliveries.4"], group_id="deliver",
        transactional_id="deliver-4-0", processor=stage, policy=stage.policy,
        poll_wait_s=0.02, metrics=stage_metrics(registry), dead_letters=SqlRelayerLedger(sessions),
    )  # fmt: skip
    task = asyncio.create_task(runner.run())
    try:
        [dead] = await read_topic(bus, "dlq", 1, group_id=uuid.uuid4().hex)
    finally:
        runner.stop()
        await asyncio.wait_for(task, 5)

    assert chain.applied == [good.digest]
    assert b"WrongTarget" in (dead.header(REASON_HEADER) or b"")
    async with sessions() as session:
        [entry] = (await session.scalars(select(DeadLetter))).all()
        assert "WrongTarget" in entry.reason
        assert entry.stage == "deliver-4"
    assert registry.get_sample_value("fedrelay_stage_processed_total", {"stage": "deliver-4"}) == 2
    assert registry.get_sample_value("fedrelay_stage_failed_total", {"stage": "deliver-4"}) == 1


def test_the_deliver_stage_reads_its_chains_topic(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    settings = RelayerSettings(retry_max_attempts=5)
    runner = deliver_stage(settings, FakeDestination(), MemoryBus(), SqlRelayerLedger(sessions))
    assert list(runner.inputs) == ["deliveries.4"]
    assert runner.group_id == "fedrelay-deliver-4"
    assert isinstance(runner.dead_letters, SqlRelayerLedger)
    assert runner.dead_letters.sessions is sessions
    assert isinstance(runner.processor, Deliverer)
    assert runner.processor.policy.max_attempts == 5


async def test_a_stuck_transaction_that_lands_reverted_is_not_replaced(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    wanted = request()
    chain = FakeDestination(
        mining=False, revert={wanted.digest: Failure(FailureKind.REVERTED, "NotPeer")}
    )
    stage = deliverer(chain, sessions)
    with pytest.raises(DeliveryRetry, match="not confirmed"):
        await stage.deliver(wanted)
    chain.mine()  # it lands at last, and reverts

    with pytest.raises(DeliveryFailed, match="NotPeer"):
        await stage.deliver(wanted)

    assert len(chain.prepared) == 1
    _, [attempt] = await ledger_state(sessions, wanted)
    assert attempt.outcome == AttemptOutcome.REVERTED


async def test_an_unsent_persisted_attempt_is_sent_before_a_new_nonce_is_taken(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    first, second = request(1), request(2)
    chain = FakeDestination(kill_before_send=1)
    with pytest.raises(Killed):  # `first` holds nonce 0, signed and persisted, never sent
        await deliverer(chain, sessions).deliver(first)
    stage = deliverer(chain, sessions)
    # no gap to wait out: `first`'s persisted bytes go out before `second` takes nonce 1
    assert await stage.deliver(second) == DeliveryStatus.CONFIRMED
    assert chain.applied == [first.digest, second.digest]

    assert await stage.deliver(first) == DeliveryStatus.CONFIRMED  # its record settles it
    assert [signed.nonce for signed in chain.prepared] == [0, 1]
    delivery, [attempt] = await ledger_state(sessions, first)
    assert delivery.status == DeliveryStatus.CONFIRMED
    assert attempt.outcome == AttemptOutcome.CONFIRMED


async def test_a_message_consumed_while_its_delivery_fails_is_recorded_delivered(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    class LandsAsItIsGivenUp(FakeDestination):
        async def is_consumed(self, vaa: bytes) -> bool:
            self.mine()  # the transaction waiting in the mempool lands now
            return await super().is_consumed(vaa)

    wanted = request()
    chain = LandsAsItIsGivenUp(mining=False)
    # one attempt allowed: its confirm wait runs out, so the deliverer is about to give up
    assert await deliverer(chain, sessions, attempts=1).deliver(wanted) == (
        DeliveryStatus.CONFIRMED
    )
    delivery, [attempt] = await ledger_state(sessions, wanted)
    assert delivery.status == DeliveryStatus.CONFIRMED
    assert attempt.outcome == AttemptOutcome.CONFIRMED
    assert chain.applied == [wanted.digest]


async def test_a_dead_delivery_the_chain_consumed_is_recorded_delivered(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    wanted = request()
    chain = FakeDestination(revert={request().digest: Failure(FailureKind.REVERTED, "no")})
    with pytest.raises(DeliveryFailed):
        await deliverer(chain, sessions).deliver(wanted)
    chain.consumed.add(wanted.digest)  # delivered by someone else meanwhile
    assert await deliverer(chain, sessions).deliver(wanted) == DeliveryStatus.ALREADY_DELIVERED
    delivery, _ = await ledger_state(sessions, wanted)
    assert delivery.status == DeliveryStatus.ALREADY_DELIVERED
