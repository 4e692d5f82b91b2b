"""Batched delivery in the pipeline against an in-memory destination with a batch entry point:
packing, each entry's result (applied, consumed, invalid, failed), splits, and a crash between
persisting a batch and broadcasting it."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from support.fake_destination import CHAIN, FakeChainError, FakeDestination, Killed, _Tx
from support.relayer import sample_observation, signed_vaa_bytes
from support.wormhole import guardian_signers

from fedrelay.adapters.ledger.database import create_engine, upgrade
from fedrelay.adapters.ledger.models import (
    AttemptOutcome,
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
    Failure,
    FailureKind,
    SignedDelivery,
    TxState,
)
from fedrelay.relayer.backoff import BackoffPolicy
from fedrelay.relayer.records import DeliveryRequest, encode_message
from fedrelay.relayer.stage import StageResult
from fedrelay.relayer.stages.deliver import Deliverer, DeliveryFailed, DeliveryRetry
from fedrelay.relayer.stages.pipeline import PipelinedDeliverer, SignerLane

SIGNERS = guardian_signers(1)
POLICY = BackoffPolicy(base_s=0.001, cap_s=0.005, max_attempts=4)


def request(sequence: int) -> DeliveryRequest:
    observation = sample_observation(sequence)
    return DeliveryRequest(
        vaa=signed_vaa_bytes(observation, SIGNERS), destination_chain=CHAIN,
        target_address=bytes(32), emitted_at_ms=observation.emitted_at_ms,
    )  # fmt: skip


def records(requests: Sequence[DeliveryRequest]) -> list[Record]:
    return [
        Record(f"deliveries.{CHAIN}", 0, offset, b"one emitter", encode_message(item), ())
        for offset, item in enumerate(requests)
    ]


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
        digests = [(await self._digest(vaa)) for vaa in vaas]
        if len(vaas) > self.refuse_over:
            raise FakeChainError(FailureKind.OTHER, f"a batch of {len(vaas)} is over the gas")
        self.consumed |= self.rival & set(digests)  # delivered by someone else meanwhile
        signed = await self.prepare(vaas[0], nonce, fee_level)
        raw = json.dumps({**json.loads(signed.raw), "batch": [d.hex() for d in digests]})
        batch = SignedDelivery(signed.tx_id + "b", raw.encode(), signed.nonce, signed.fee_per_gas)
        self.prepared[-1] = batch
        self.batches[batch.tx_id] = digests
        return batch

    async def _digest(self, vaa: bytes) -> bytes:
        from fedrelay.protocol.wormhole import parse_vaa

        return parse_vaa(vaa).digest

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


@pytest.fixture
async def sessions(tmp_path: Path) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    url = f"sqlite+aiosqlite:///{tmp_path / 'ledger.db'}"
    await asyncio.to_thread(upgrade, url)
    engine = create_engine(url)
    yield async_sessionmaker(engine, expire_on_commit=False)
    await engine.dispose()


def pipeline(
    sessions: async_sessionmaker[AsyncSession], chain: Batches, batch_max: int = 8
) -> PipelinedDeliverer:
    deliverer = Deliverer(chain, SqlRelayerLedger(sessions), POLICY, confirm_timeout_s=5,
                          status_interval_s=0.005)  # fmt: skip
    return PipelinedDeliverer([SignerLane(deliverer, window=4, batch_max=batch_max)])


async def statuses(
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
    stage = pipeline(sessions, chain, batch_max=8)
    results = await asyncio.wait_for(stage.process_batch(records(wanted)), 10)

    assert all(isinstance(result, StageResult) for result in results)
    assert chain.applied == [item.digest for item in wanted]  # once each, in record order
    assert [signed.nonce for signed in chain.prepared] == [3, 4, 5]
    assert await batch_sizes(sessions) == [8, 8, 4]
    assert await statuses(sessions, wanted) == [DeliveryStatus.CONFIRMED] * 20
    async with sessions() as session:
        attempts = list(await session.scalars(select(DeliveryAttempt)))
    assert {a.outcome for a in attempts} == {AttemptOutcome.CONFIRMED}
    assert len(attempts) == 20
    assert all(a.signed_tx is None and a.batch_id is not None for a in attempts)  # bytes once
    await stage.close()


async def test_a_batch_with_consumed_invalid_and_failing_entries_ends_each_delivery_right(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    wanted = [request(n) for n in range(1, 7)]
    consumed, invalid, failing = wanted[1].digest, wanted[2].digest, wanted[3].digest
    chain = Batches(rival={consumed}, invalid={invalid}, failing={failing})
    stage = pipeline(sessions, chain)
    results = await asyncio.wait_for(stage.process_batch(records(wanted)), 10)

    assert isinstance(results[2], DeliveryFailed)
    assert "no quorum" in str(results[2])
    assert isinstance(results[3], DeliveryRetry)  # the stage runner tries it alone
    assert [isinstance(r, StageResult) for i, r in enumerate(results) if i not in (2, 3)] == [
        True
    ] * 4
    assert await statuses(sessions, wanted) == [
        DeliveryStatus.CONFIRMED, DeliveryStatus.ALREADY_DELIVERED, DeliveryStatus.DEAD,
        DeliveryStatus.SUBMITTED, DeliveryStatus.CONFIRMED, DeliveryStatus.CONFIRMED,
    ]  # fmt: skip
    chain.failing.clear()
    await stage.process(records(wanted)[3])  # alone, through receiveMessage
    assert sorted(chain.applied) == sorted(
        item.digest for item in wanted if item.digest not in (consumed, invalid)
    )
    assert (await statuses(sessions, wanted))[3] == DeliveryStatus.CONFIRMED
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
    stage = pipeline(sessions, chain, batch_max=16)
    results = await asyncio.wait_for(stage.process_batch(records(wanted)), 10)

    assert all(isinstance(result, StageResult) for result in results)
    assert sorted(chain.applied) == sorted(item.digest for item in wanted)
    assert len(chain.applied) == 10
    sizes = await batch_sizes(sessions)
    if where == "refused when signed":
        assert max(sizes) <= 3  # nothing over the limit was persisted
    else:
        assert sizes[0] == 10  # sent, reverted, split: 10 -> 5 + 5 -> 2 + 3 ...
        assert sum(size for size in sizes if size <= 3) == 10
    assert await statuses(sessions, wanted) == [DeliveryStatus.CONFIRMED] * 10
    await stage.close()


async def test_a_crash_before_a_batch_is_broadcast_resumes_the_same_bytes(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    wanted = [request(n) for n in range(1, 7)]
    chain = Batches(kill_before_send=1)
    with pytest.raises(Killed):
        await asyncio.wait_for(pipeline(sessions, chain).process_batch(records(wanted)), 10)
    [persisted] = chain.prepared
    assert chain.txs == {}  # nothing reached the chain
    restarted = pipeline(sessions, chain)
    results = await asyncio.wait_for(restarted.process_batch(records(wanted)), 10)

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
