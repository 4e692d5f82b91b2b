"""The pipelined deliverer against in-memory destinations: window, nonces, stuck and dropped
transactions, a crash mid-window, a key pool, and the stage runner's handling of failures; and
batched delivery (a destination with a batch entry point): packing, each entry's result
(applied, consumed, invalid, failed), splits, and a crash between persisting a batch and
broadcasting it."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from support.fake_destination import CHAIN, FakeChainError, FakeDestination, Killed, _Tx
from support.relayer import read_topic, sample_observation, signed_vaa_bytes, statements_run
from support.wormhole import guardian_signers

from fedrelay.adapters.kafka import MemoryBus
from fedrelay.adapters.ledger.database import create_engine, upgrade
from fedrelay.adapters.ledger.models import (
    AttemptOutcome,
    DeadLetter,
    Delivery,
    DeliveryAttempt,
    DeliveryBatch,
    DeliveryStatus,
)
from fedrelay.adapters.ledger.relayer_ledger import SqlRelayerLedger
from fedrelay.ports.bus import Record
from fedrelay.ports.relay import (
    BatchDestination,
    BatchOutcome,
    BatchPreflightDestination,
    Failure,
    FailureKind,
    SignedDelivery,
    TxState,
)
from fedrelay.protocol.wormhole import parse_vaa
from fedrelay.relayer.backoff import BackoffPolicy
from fedrelay.relayer.records import DeliveryRequest, encode_message, message_key
from fedrelay.relayer.stage import StageResult, StageRunner, stage_metrics
from fedrelay.relayer.stages.deliver import (
    ConflictingDelivery,
    Deliverer,
    DeliveryFailed,
    DeliveryRetry,
    WrongDestination,
)
from fedrelay.relayer.stages.pipeline import PipelinedDeliverer, SignerLane

SIGNERS = guardian_signers(1)
POLICY = BackoffPolicy(base_s=0.001, cap_s=0.005, max_attempts=4)


def request(sequence: int, emitter: int = 0) -> DeliveryRequest:
    observation = sample_observation(sequence)
    if emitter:
        observation = dataclasses.replace(observation, emitter_address=bytes([emitter]) * 32)
    return DeliveryRequest(
        vaa=signed_vaa_bytes(observation, SIGNERS), destination_chain=CHAIN,
        target_address=bytes(32), emitted_at_ms=observation.emitted_at_ms,
    )  # fmt: skip


def records(requests: Sequence[DeliveryRequest]) -> list[Record]:
    return [
        Record(f"deliveries.{CHAIN}", 0, offset, message_key(item.message_id),
               encode_message(item), ())
        for offset, item in enumerate(requests)
    ]  # fmt: skip


@pytest.fixture
async def sessions(tmp_path: Path) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    url = f"sqlite+aiosqlite:///{tmp_path / 'ledger.db'}"
    await asyncio.to_thread(upgrade, url)
    engine = create_engine(url)
    yield async_sessionmaker(engine, expire_on_commit=False)
    await engine.dispose()


def pipeline(
    sessions: async_sessionmaker[AsyncSession],
    *chains: FakeDestination,
    window: int = 8,
    confirm_timeout_s: float = 0.05,
) -> PipelinedDeliverer:
    ledger = SqlRelayerLedger(sessions)
    return PipelinedDeliverer([
        SignerLane(Deliverer(chain, ledger, POLICY, confirm_timeout_s=confirm_timeout_s,
                             status_interval_s=0.005), window=window)
        for chain in chains
    ])  # fmt: skip


async def statuses(sessions: async_sessionmaker[AsyncSession]) -> list[DeliveryStatus]:
    async with sessions() as session:
        return list((await session.scalars(select(Delivery.status).order_by(Delivery.id))).all())


async def attempts_by_outcome(
    sessions: async_sessionmaker[AsyncSession],
) -> dict[AttemptOutcome, int]:
    async with sessions() as session:
        rows = await session.execute(
            select(DeliveryAttempt.outcome, func.count()).group_by(DeliveryAttempt.outcome)
        )
        return {outcome: count for outcome, count in rows.all()}


def pending(chain: FakeDestination) -> int:
    return sum(1 for tx in chain.txs.values() if tx.state == TxState.PENDING)


@dataclass
class Watched(FakeDestination):
    """A destination that says when `full_at` transactions are waiting in its mempool."""

    full_at: int = 0
    full: asyncio.Event = field(default_factory=asyncio.Event)
    most_pending: int = 0

    async def broadcast(self, delivery: SignedDelivery) -> None:
        await super().broadcast(delivery)
        self.most_pending = max(self.most_pending, pending(self))
        if pending(self) >= self.full_at:
            self.full.set()


async def test_a_batch_goes_out_with_a_full_window_in_flight_and_consecutive_nonces(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    wanted = [request(n) for n in range(1, 21)]
    chain = Watched(nonce=5, mining=False, full_at=8)
    stage = pipeline(sessions, chain, window=8, confirm_timeout_s=30)
    task = asyncio.create_task(stage.process_batch(records(wanted)))
    await asyncio.wait_for(chain.full.wait(), 60)  # the window is full: the rest wait for slots
    assert len(chain.broadcasts) == 8
    chain.mining = True
    chain.mine()
    results = await asyncio.wait_for(task, 60)

    assert all(isinstance(result, StageResult) for result in results)
    assert chain.applied == [item.digest for item in wanted]  # in record order
    assert chain.most_pending == 8  # never more than the window
    assert sorted(signed.nonce for signed in chain.prepared) == list(range(5, 25))
    assert await statuses(sessions) == [DeliveryStatus.CONFIRMED] * 20
    assert await attempts_by_outcome(sessions) == {AttemptOutcome.CONFIRMED: 20}
    await stage.close()


@dataclass
class StuckAt(FakeDestination):
    """A destination that leaves the first transaction at some nonces in the mempool."""

    stuck: set[int] = field(default_factory=set)
    first_fee: int = 100

    def mine(self) -> None:
        bids = [tx.fee for tx in self.txs.values()
                if tx.nonce == self.nonce and tx.state == TxState.PENDING]  # fmt: skip
        if self.nonce in self.stuck and bids and max(bids) <= self.first_fee:
            return  # the market moved above this bid: it blocks the nonces after it
        super().mine()


async def test_a_stuck_transaction_is_replaced_at_its_nonce_and_the_rest_go_on(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    wanted = [request(n) for n in range(1, 11)]
    chain = StuckAt(stuck={3})
    stage = pipeline(sessions, chain, window=32)
    results = await asyncio.wait_for(stage.process_batch(records(wanted)), 60)

    assert all(isinstance(result, StageResult) for result in results)
    assert sorted(chain.applied) == sorted(item.digest for item in wanted)
    nonces = [signed.nonce for signed in chain.prepared]
    assert nonces.count(3) >= 2  # replaced at the same nonce
    assert sorted(set(nonces)) == list(range(10))
    outcomes = await attempts_by_outcome(sessions)
    assert outcomes[AttemptOutcome.CONFIRMED] == 10
    assert outcomes[AttemptOutcome.REPLACED] == nonces.count(3) - 1
    assert await statuses(sessions) == [DeliveryStatus.CONFIRMED] * 10
    await stage.close()


@dataclass
class Drops(FakeDestination):
    """A destination whose mempool drops the first broadcast of one nonce."""

    drop_nonce: int = 2
    dropped: int = 0

    async def broadcast(self, delivery: SignedDelivery) -> None:
        if delivery.nonce == self.drop_nonce and not self.dropped:
            self.dropped += 1
            return  # accepted, then dropped: the node no longer knows it
        await super().broadcast(delivery)


async def test_a_dropped_transaction_is_sent_again_with_the_same_bytes(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    wanted = [request(n) for n in range(1, 7)]
    chain = Drops()
    stage = pipeline(sessions, chain)
    results = await asyncio.wait_for(stage.process_batch(records(wanted)), 60)

    assert all(isinstance(result, StageResult) for result in results)
    assert chain.applied == [item.digest for item in wanted]
    assert len(chain.prepared) == 6  # nothing signed anew: the same bytes went out again
    assert await attempts_by_outcome(sessions) == {AttemptOutcome.CONFIRMED: 6}
    await stage.close()


@dataclass
class KilledAt(FakeDestination):
    """A destination whose deliverer is killed before its n-th broadcast reaches the node."""

    kill_at: int = 0
    seen: int = 0

    async def broadcast(self, delivery: SignedDelivery) -> None:
        self.seen += 1
        if self.seen == self.kill_at:
            raise Killed
        await super().broadcast(delivery)


async def test_killed_with_a_full_window_in_flight_every_message_lands_once(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    wanted = [request(n) for n in range(1, 41)]
    chain = KilledAt(mining=False, kill_at=32)
    killed = pipeline(sessions, chain, window=32, confirm_timeout_s=30)
    with pytest.raises(Killed):
        await asyncio.wait_for(killed.process_batch(records(wanted)), 60)
    assert pending(chain) == 31  # a full window: 31 sent, the 32nd persisted, not sent
    chain.mining = True
    chain.mine()
    restarted = pipeline(sessions, chain, window=32)
    results = await asyncio.wait_for(restarted.process_batch(records(wanted)), 60)

    assert all(isinstance(result, StageResult) for result in results)
    assert sorted(chain.applied) == sorted(item.digest for item in wanted)
    assert len(chain.applied) == 40
    assert await statuses(sessions) == [DeliveryStatus.CONFIRMED] * 40
    await restarted.close()


@dataclass
class RefusesOnce(FakeDestination):
    """A destination that refuses the broadcast at one nonce, once (an underpriced bid)."""

    refuse_nonce: int = 0
    refused: bool = False

    async def broadcast(self, delivery: SignedDelivery) -> None:
        if delivery.nonce == self.refuse_nonce and not self.refused:
            self.refused = True
            raise FakeChainError(FailureKind.UNDERPRICED, "transaction underpriced")
        await super().broadcast(delivery)


async def test_a_broadcast_refused_inside_a_group_leaves_no_gap_and_each_lands_once(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    wanted = [request(n) for n in range(1, 25)]
    chain = RefusesOnce(nonce=3, refuse_nonce=6)
    stage = pipeline(sessions, chain, window=8)
    results = await asyncio.wait_for(stage.process_batch(records(wanted)), 60)
    assert chain.refused
    failed = [n for n, result in enumerate(results) if not isinstance(result, StageResult)]
    assert failed  # the refused one (and any signed after it in its group) go back
    for index in failed:  # as the stage runner retries them: alone
        await asyncio.wait_for(stage.process(records(wanted)[index]), 60)

    assert sorted(chain.applied) == sorted(item.digest for item in wanted)  # each once
    assert chain.nonce == 3 + len(wanted)  # every nonce used: no gap was left behind
    assert not [tx for tx in chain.txs.values() if tx.state == TxState.PENDING]
    # delivered, every one; a handed-back one sent again before its retry reads as consumed
    delivered = {DeliveryStatus.CONFIRMED, DeliveryStatus.ALREADY_DELIVERED}
    assert set(await statuses(sessions)) <= delivered
    await stage.close()


async def test_a_key_pool_splits_emitters_among_keys_and_keeps_each_emitters_order(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    first, second = FakeDestination(signer="0xa"), FakeDestination(signer="0xb")
    second.consumed = first.consumed  # one receiver contract, two signer accounts
    wanted = [request(n, emitter=e) for n in range(1, 9) for e in (1, 2, 3, 4)]
    stage = pipeline(sessions, first, second)
    results = await asyncio.wait_for(stage.process_batch(records(wanted)), 60)

    assert all(isinstance(result, StageResult) for result in results)
    assert first.applied  # both keys carried messages
    assert second.applied
    assert sorted(first.applied + second.applied) == sorted(item.digest for item in wanted)
    for chain in (first, second):
        order = [d for d in (item.digest for item in wanted) if d in chain.applied]
        assert chain.applied == order
    await stage.close()


async def test_the_runner_retries_pipeline_failures_alone_and_dead_letters_the_poison(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    good = [request(n) for n in range(1, 6)]
    poison = request(9)
    chain = FakeDestination(revert={poison.digest: Failure(FailureKind.REVERTED, "WrongTarget")})
    bus = MemoryBus()
    await bus.create_topics([f"deliveries.{CHAIN}", "dlq"])
    producer = bus.producer()
    await producer.start()
    for item in (*good[:2], poison, *good[2:]):
        await producer.send(f"deliveries.{CHAIN}", encode_message(item),
                            key=message_key(item.message_id))  # fmt: skip
    await producer.stop()
    registry = CollectorRegistry()
    stage = pipeline(sessions, chain)
    runner = StageRunner(
        name="deliver-4", bus=bus, inputs=[f"deliveries.{CHAIN}"], group_id="deliver",
        transactional_id="deliver-4-0", processor=stage, policy=POLICY,
        poll_wait_s=0.02, metrics=stage_metrics(registry), dead_letters=SqlRelayerLedger(sessions),
    )  # fmt: skip
    task = asyncio.create_task(runner.run())
    try:
        [dead] = await read_topic(bus, "dlq", 1, group_id=uuid.uuid4().hex)
    finally:
        runner.stop()
        await asyncio.wait_for(task, 60)
        await stage.close()

    assert dead.value == encode_message(poison)
    assert sorted(chain.applied) == sorted(item.digest for item in good)
    async with sessions() as session:
        [entry] = (await session.scalars(select(DeadLetter))).all()
        assert "WrongTarget" in entry.reason
    assert registry.get_sample_value("fedrelay_stage_processed_total", {"stage": "deliver-4"}) == 5


async def test_a_message_twice_in_one_batch_gets_one_transaction(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    first, second = request(1), request(2)
    chain = FakeDestination()
    stage = pipeline(sessions, chain)
    results = await asyncio.wait_for(
        stage.process_batch(records([first, second, first, second, first])), 60
    )

    assert all(isinstance(result, StageResult) for result in results)
    # Each once, in whatever order the two groups' broadcasts reached the chain.
    assert sorted(chain.applied) == sorted([first.digest, second.digest])
    assert len(chain.prepared) == 2  # the duplicates waited and found their delivery done
    assert await statuses(sessions) == [DeliveryStatus.CONFIRMED] * 2
    await stage.close()


async def test_a_batchs_deliveries_are_opened_in_the_same_statements_whatever_its_size(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    stage = pipeline(sessions, FakeDestination())

    async def statements_to_open(first: int, count: int) -> int:
        batch = records([request(first + n) for n in range(count)])
        with statements_run(sessions) as statements:
            opened = await stage.open_together(batch, range(count))
        assert sorted(opened) == list(range(count))
        for index, one in opened.items():
            assert not isinstance(one, Exception)
            delivery, attempts, in_flight = one
            assert delivery.status == DeliveryStatus.PENDING
            assert (attempts, in_flight) == (0, 0)
            assert delivery.digest == request(first + index).digest
        return len(statements)

    assert await statements_to_open(100, 2) == await statements_to_open(200, 16)
    assert await statuses(sessions) == [DeliveryStatus.PENDING] * 18
    await stage.close()


async def test_opening_together_reads_what_one_by_one_reads(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    """A delivered message, one never seen, one whose message id has another body stored, a
    record for another chain and one that does not decode: each as its own path would see it."""
    delivered, fresh = request(1), request(2)
    rival_observation = sample_observation(1, payload=b"\x02\x01" + bytes(42))  # id of 1
    rival = dataclasses.replace(delivered, vaa=signed_vaa_bytes(rival_observation, SIGNERS))
    elsewhere = dataclasses.replace(fresh, destination_chain=CHAIN + 1)
    chain = FakeDestination()
    stage = pipeline(sessions, chain)
    assert isinstance((await stage.process_batch(records([delivered])))[0], StageResult)

    batch = records([delivered, fresh, rival, elsewhere])
    batch.append(Record(f"deliveries.{CHAIN}", 0, 9, b"k", b"not a request", ()))
    opened = await stage.open_together(batch, range(len(batch)))

    assert sorted(opened) == [0, 1, 2]  # the other chain's and the broken record fail alone
    done, attempts, in_flight = opened[0]  # type: ignore[misc]
    assert (done.status, attempts, in_flight) == (DeliveryStatus.CONFIRMED, 1, 0)
    new, attempts, in_flight = opened[1]  # type: ignore[misc]
    assert (new.status, attempts, in_flight) == (DeliveryStatus.PENDING, 0, 0)
    assert isinstance(opened[2], ConflictingDelivery)
    results = await stage.process_batch(batch)
    assert isinstance(results[0], StageResult)
    assert isinstance(results[1], StageResult)
    assert isinstance(results[2], ConflictingDelivery)
    assert isinstance(results[3], WrongDestination)
    assert isinstance(results[4], Exception)
    assert sorted(chain.applied) == sorted([delivered.digest, fresh.digest])  # each once
    await stage.close()


# --- batches -------------------------------------------------------------------------------------


@dataclass
class Batches(FakeDestination):
    """A destination whose receiver also takes many VAAs in one transaction, each on its own.

    Attributes:
        fits: What :meth:`max_batch` says.
        refuse_over: Batches larger than this are refused when signed (over the gas share).
        gas_for: Batches larger than this revert as a whole when mined (out of gas).
        invalid: Digests the receiver refuses as no message for it.
        failing: Digests whose application fails inside a batch (alone they are applied).
        rival: Digests another relayer delivers while the batch is being signed.
    """

    fits: int = 32
    refuse_over: int = 32
    gas_for: int = 32
    invalid: set[bytes] = field(default_factory=set)
    failing: set[bytes] = field(default_factory=set)
    rival: set[bytes] = field(default_factory=set)
    batches: dict[str, list[bytes]] = field(default_factory=dict)
    outcomes: dict[str, BatchOutcome] = field(default_factory=dict)

    def max_batch(self) -> int:
        return self.fits

    async def prepare_batch(
        self, vaas: Sequence[bytes], nonce: int | None, fee_level: int
    ) -> SignedDelivery:
        digests = [parse_vaa(vaa).digest for vaa in vaas]
        if len(vaas) > self.refuse_over:
            raise FakeChainError(FailureKind.OTHER, f"a batch of {len(vaas)} is over the gas")
        self.consumed |= self.rival & set(digests)  # delivered by someone else meanwhile
        signed = await self.prepare(vaas[0], nonce, fee_level)
        raw = json.dumps({**json.loads(signed.raw), "batch": [d.hex() for d in digests]})
        batch = SignedDelivery(signed.tx_id + "b", raw.encode(), signed.nonce, signed.fee_per_gas)
        self.prepared[-1] = batch
        self.batches[batch.tx_id] = digests
        return batch

    def _apply(self, tx_id: str, tx: _Tx) -> None:
        digests = self.batches.get(tx_id)
        if digests is None:
            return super()._apply(tx_id, tx)
        if len(digests) > self.gas_for:
            tx.state = TxState.FAILED
            tx.failure = Failure(FailureKind.OUT_OF_GAS, "BatchOutOfGas(1)")
            return None
        applied, reasons, invalid = [], [], []
        for digest in digests:
            done = digest not in self.consumed and not {digest} & (self.invalid | self.failing)
            applied.append(done)
            invalid.append(digest in self.invalid)
            reasons.append(None if done else ("InvalidVaa(no quorum)" if digest in self.invalid
                                              else "consumed" if digest in self.consumed
                                              else "Paused()"))  # fmt: skip
            if done:
                self.consumed.add(digest)
                self.applied.append(digest)
        tx.state = TxState.CONFIRMED
        self.outcomes[tx_id] = BatchOutcome(tuple(applied), tuple(reasons), tuple(invalid))
        return None

    async def batch_outcome(self, tx_id: str, vaas: Sequence[bytes]) -> BatchOutcome:
        assert len(vaas) == len(self.batches[tx_id])
        return self.outcomes[tx_id]


def batching(
    sessions: async_sessionmaker[AsyncSession], chain: Batches, batch_max: int = 8
) -> PipelinedDeliverer:
    deliverer = Deliverer(chain, SqlRelayerLedger(sessions), POLICY, confirm_timeout_s=5,
                          status_interval_s=0.005)  # fmt: skip
    return PipelinedDeliverer([SignerLane(deliverer, window=4, batch_max=batch_max)])


async def statuses_of(
    sessions: async_sessionmaker[AsyncSession], wanted: Sequence[DeliveryRequest]
) -> list[DeliveryStatus]:
    """The deliveries' statuses, in the order of `wanted`."""
    async with sessions() as session:
        rows = (await session.execute(select(Delivery.digest, Delivery.status))).all()
    found = {bytes(digest): status for digest, status in rows}
    return [found[item.digest] for item in wanted]


async def batch_sizes(sessions: async_sessionmaker[AsyncSession]) -> list[int]:
    async with sessions() as session:
        return list(await session.scalars(select(DeliveryBatch.size).order_by(DeliveryBatch.id)))


async def test_deliveries_are_packed_into_batches_each_with_one_nonce(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    wanted = [request(n) for n in range(1, 21)]
    chain = Batches(nonce=3)
    assert isinstance(chain, BatchDestination)
    stage = batching(sessions, chain, batch_max=8)
    results = await asyncio.wait_for(stage.process_batch(records(wanted)), 60)

    assert all(isinstance(result, StageResult) for result in results)
    assert chain.applied == [item.digest for item in wanted]  # once each, in record order
    assert [signed.nonce for signed in chain.prepared] == [3, 4, 5]
    assert await batch_sizes(sessions) == [8, 8, 4]
    assert await statuses_of(sessions, wanted) == [DeliveryStatus.CONFIRMED] * 20
    async with sessions() as session:
        attempts = list(await session.scalars(select(DeliveryAttempt)))
    assert {a.outcome for a in attempts} == {AttemptOutcome.CONFIRMED}
    assert len(attempts) == 20
    assert all(a.signed_tx is None and a.batch_id is not None for a in attempts)  # bytes once
    await stage.close()


@dataclass
class MeasuredBatches(Batches):
    """Batches whose gas can be measured ahead (``preflight_batch``); the preflights, in order,
    and how many preflights had happened when each batch was prepared."""

    preflights: list[list[bytes]] = field(default_factory=list)
    preflights_at_prepare: list[int] = field(default_factory=list)

    async def preflight_batch(self, vaas: Sequence[bytes]) -> None:
        self.preflights.append([parse_vaa(vaa).digest for vaa in vaas])
        if len(self.preflights) == 2:
            raise FakeChainError(FailureKind.UNAVAILABLE, "the node did not answer")

    async def prepare_batch(
        self, vaas: Sequence[bytes], nonce: int | None, fee_level: int
    ) -> SignedDelivery:
        self.preflights_at_prepare.append(len(self.preflights))
        return await super().prepare_batch(vaas, nonce, fee_level)


async def test_each_batch_is_measured_ahead_of_its_turn_and_a_failed_measure_is_not_final(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    wanted = [request(n) for n in range(1, 21)]
    chain = MeasuredBatches(nonce=3)
    assert isinstance(chain, BatchPreflightDestination)
    stage = batching(sessions, chain, batch_max=8)
    results = await asyncio.wait_for(stage.process_batch(records(wanted)), 60)

    assert all(isinstance(result, StageResult) for result in results)
    digests = [item.digest for item in wanted]
    assert sorted(map(tuple, chain.preflights)) == sorted(
        [tuple(digests[0:8]), tuple(digests[8:16]), tuple(digests[16:20])]
    )
    at = chain.preflights_at_prepare
    assert all(count >= turn + 1 for turn, count in enumerate(at)), "measured before its turn"
    assert chain.applied == digests  # the failed measure did not stop its batch
    assert [signed.nonce for signed in chain.prepared] == [3, 4, 5]
    await stage.close()


async def test_a_batch_with_consumed_invalid_and_failing_entries_ends_each_delivery_right(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    wanted = [request(n) for n in range(1, 7)]
    consumed, invalid, failing = wanted[1].digest, wanted[2].digest, wanted[3].digest
    chain = Batches(rival={consumed}, invalid={invalid}, failing={failing})
    stage = batching(sessions, chain)
    results = await asyncio.wait_for(stage.process_batch(records(wanted)), 60)

    assert isinstance(results[2], DeliveryFailed)
    assert "no quorum" in str(results[2])
    assert isinstance(results[3], DeliveryRetry)  # the stage runner tries it alone
    assert [isinstance(r, StageResult) for i, r in enumerate(results) if i not in (2, 3)] == [
        True
    ] * 4
    assert await statuses_of(sessions, wanted) == [
        DeliveryStatus.CONFIRMED, DeliveryStatus.ALREADY_DELIVERED, DeliveryStatus.DEAD,
        DeliveryStatus.SUBMITTED, DeliveryStatus.CONFIRMED, DeliveryStatus.CONFIRMED,
    ]  # fmt: skip
    chain.failing.clear()
    await stage.process(records(wanted)[3])  # alone, through receiveMessage
    assert sorted(chain.applied) == sorted(
        item.digest for item in wanted if item.digest not in (consumed, invalid)
    )
    assert (await statuses_of(sessions, wanted))[3] == DeliveryStatus.CONFIRMED
    async with sessions() as session:
        row = await session.scalar(select(Delivery).where(Delivery.digest == failing))
        assert row is not None
        outcomes = list(await session.scalars(
            select(DeliveryAttempt.outcome).where(DeliveryAttempt.delivery_id == row.id)
            .order_by(DeliveryAttempt.attempt)
        ))  # fmt: skip
    assert outcomes == [AttemptOutcome.REVERTED, AttemptOutcome.CONFIRMED]
    await stage.close()


@pytest.mark.parametrize("where", ["refused when signed", "reverted when mined"])
async def test_a_batch_that_does_not_fit_is_split_down_until_everything_lands_once(
    where: str, sessions: async_sessionmaker[AsyncSession]
) -> None:
    wanted = [request(n) for n in range(1, 11)]
    chain = Batches(refuse_over=3) if where == "refused when signed" else Batches(gas_for=3)
    stage = batching(sessions, chain, batch_max=16)
    results = await asyncio.wait_for(stage.process_batch(records(wanted)), 60)

    assert all(isinstance(result, StageResult) for result in results)
    assert sorted(chain.applied) == sorted(item.digest for item in wanted)
    assert len(chain.applied) == 10
    sizes = await batch_sizes(sessions)
    if where == "refused when signed":
        assert max(sizes) <= 3  # nothing over the limit was persisted
    else:
        assert sizes[0] == 10  # sent, reverted, split: 10 -> 5 + 5 -> 2 + 3 ...
        assert sum(size for size in sizes if size <= 3) == 10
    assert await statuses_of(sessions, wanted) == [DeliveryStatus.CONFIRMED] * 10
    await stage.close()


async def test_a_crash_before_a_batch_is_broadcast_resumes_the_same_bytes(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    wanted = [request(n) for n in range(1, 7)]
    chain = Batches(kill_before_send=1)
    with pytest.raises(Killed):
        await asyncio.wait_for(batching(sessions, chain).process_batch(records(wanted)), 60)
    [persisted] = chain.prepared
    assert chain.txs == {}  # nothing reached the chain
    restarted = batching(sessions, chain)
    results = await asyncio.wait_for(restarted.process_batch(records(wanted)), 60)

    assert all(isinstance(result, StageResult) for result in results)
    assert chain.prepared == [persisted]  # nothing signed anew
    assert chain.broadcasts == [persisted.tx_id]
    assert chain.applied == [item.digest for item in wanted]
    async with sessions() as session:
        attempts = list(await session.scalars(select(DeliveryAttempt)))
    assert {(a.outcome, a.tx_hash) for a in attempts} == {
        (AttemptOutcome.CONFIRMED, persisted.tx_id)
    }
    await restarted.close()


@pytest.mark.parametrize("packed", [False, True], ids=["one-per-transaction", "batched"])
async def test_each_delivery_of_a_batch_keeps_its_records_trace_in_the_ledger(
    sessions: async_sessionmaker[AsyncSession], packed: bool
) -> None:
    wanted = [request(n) for n in range(1, 4)]
    parents = [f"00-{n:032x}-{n:016x}-01" for n in range(1, 4)]
    batch = [
        dataclasses.replace(record, headers=(("traceparent", parent.encode()),))
        for record, parent in zip(records(wanted), parents, strict=True)
    ]
    stage = batching(sessions, Batches()) if packed else pipeline(sessions, FakeDestination())
    results = await asyncio.wait_for(stage.process_batch(batch), 60)
    await stage.close()

    assert all(isinstance(result, StageResult) for result in results)
    async with sessions() as session:
        rows = (await session.execute(select(Delivery.digest, Delivery.trace_context))).all()
    by_digest = {bytes(digest): context for digest, context in rows}
    for item, parent in zip(wanted, parents, strict=True):
        trace_id = by_digest[item.digest].split("-")[1]
        assert trace_id == parent.split("-")[1]
