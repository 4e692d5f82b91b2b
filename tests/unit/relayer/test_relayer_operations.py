"""Operator actions on an SQLite ledger and the in-process bus: status, retry, DLQ requeue."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from support.relayer import read_topic, sample_observation, signed_vaa_bytes
from support.wormhole import guardian_signers, sample_round_settled

from fedrelay.adapters.kafka import MemoryBus
from fedrelay.adapters.ledger.database import create_engine, upgrade
from fedrelay.adapters.ledger.models import DeadLetter, Delivery, DeliveryStatus, SourceCursor
from fedrelay.adapters.ledger.relayer_ledger import SqlRelayerLedger, SqlRelayerLedgerWork
from fedrelay.protocol.wormhole import decode_payload
from fedrelay.relayer.operations import (
    OperationError,
    dead_letters,
    ledger_status,
    parse_message_id,
    requeue_dead_letter,
    retry_message,
)
from fedrelay.relayer.records import DeliveryRequest, decode_as, encode_message, message_label
from fedrelay.relayer.settings import RelayerSettings
from fedrelay.relayer.stages.deliver import open_delivery

SIGNERS = guardian_signers(3)
SETTINGS = RelayerSettings()


@pytest.fixture
async def sessions(tmp_path: Path) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    url = f"sqlite+aiosqlite:///{tmp_path / 'ledger.db'}"
    await asyncio.to_thread(upgrade, url)
    engine = create_engine(url)
    yield async_sessionmaker(engine, expire_on_commit=False)
    await engine.dispose()


def _request(sequence: int) -> DeliveryRequest:
    observation = sample_observation(sequence, payload=sample_round_settled().to_bytes())
    payload = decode_payload(observation.payload)
    return DeliveryRequest(
        vaa=signed_vaa_bytes(observation, SIGNERS), destination_chain=payload.target_chain,
        target_address=payload.target_address, emitted_at_ms=0,
    )  # fmt: skip


async def seed(
    sessions: async_sessionmaker[AsyncSession], request: DeliveryRequest, status: DeliveryStatus
) -> int:
    """A delivery of `request` in `status`, with a DLQ entry when it is dead; the entry's id."""
    async with sessions() as session, session.begin():
        work = SqlRelayerLedgerWork(session)
        delivery = await open_delivery(work, request)
        await work.update_delivery(delivery.id, status=status)
        if status != DeliveryStatus.DEAD:
            return 0
        entry = DeadLetter(
            stage=f"deliver-{request.destination_chain}",
            message_key=f"deliveries.4:0:{request.message_id.sequence}",
            reason="DeliveryFailed: terminal error: reverted: InvalidVaa(no quorum)",
            body=encode_message(request),
        )
        session.add(entry)
        await session.flush()
        return entry.id


async def _status_of(sessions: async_sessionmaker[AsyncSession], request: DeliveryRequest) -> str:
    async with sessions() as session:
        delivery = await session.scalar(select(Delivery).where(Delivery.digest == request.digest))
        assert delivery is not None
        return delivery.status.value


def test_message_ids_parse_as_the_relayer_writes_them() -> None:
    request = _request(5)
    assert parse_message_id(message_label(request.message_id)) == request.message_id
    for wrong in (
        "2/abc",
        "two/" + "00" * 32 + "/1",
        "2/" + "00" * 31 + "/1",
        "70000/" + "00" * 32 + "/1",
    ):
        with pytest.raises(OperationError, match=r"not a message id|32 bytes"):
            parse_message_id(wrong)


async def test_retry_reopens_a_dead_delivery_and_republishes_it(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    request = _request(1)
    await seed(sessions, request, DeliveryStatus.DEAD)
    bus = MemoryBus()

    assert await retry_message(SqlRelayerLedger(sessions), bus, SETTINGS, request.message_id) == [4]

    assert await _status_of(sessions, request) == "pending"
    [record] = await read_topic(bus, "deliveries.4", 1, group_id=uuid.uuid4().hex)
    again = decode_as(record.value, DeliveryRequest)
    assert (again.digest, again.destination_chain, again.target_address) == (
        request.digest, 4, request.target_address,
    )  # fmt: skip
    assert [
        e.requeued_at is not None
        for e in await dead_letters(SqlRelayerLedger(sessions), everything=True)
    ] == [True]


async def test_retry_refuses_unknown_and_delivered_messages(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    delivered = _request(2)
    await seed(sessions, delivered, DeliveryStatus.CONFIRMED)
    bus = MemoryBus()
    with pytest.raises(OperationError, match="no dead or pending delivery"):
        await retry_message(SqlRelayerLedger(sessions), bus, SETTINGS, delivered.message_id)
    with pytest.raises(OperationError, match="the ledger has no VAA"):
        await retry_message(SqlRelayerLedger(sessions), bus, SETTINGS, _request(3).message_id)
    assert await _status_of(sessions, delivered) == "confirmed"


async def test_a_dead_letter_is_requeued_once_to_its_stage_input(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    request = _request(4)
    entry_id = await seed(sessions, request, DeliveryStatus.DEAD)
    [listed] = await dead_letters(SqlRelayerLedger(sessions), stage="deliver-4")
    assert (listed.id, listed.message) == (entry_id, message_label(request.message_id))
    assert "InvalidVaa" in listed.reason
    bus = MemoryBus()

    assert (
        await requeue_dead_letter(SqlRelayerLedger(sessions), bus, SETTINGS, entry_id)
        == "deliveries.4"
    )

    [record] = await read_topic(bus, "deliveries.4", 1, group_id=uuid.uuid4().hex)
    assert record.value == encode_message(request)
    assert await _status_of(sessions, request) == "pending"  # reopened: the deliverer will try
    assert await dead_letters(SqlRelayerLedger(sessions)) == []
    with pytest.raises(OperationError, match="was requeued at"):
        await requeue_dead_letter(SqlRelayerLedger(sessions), bus, SETTINGS, entry_id)
    with pytest.raises(OperationError, match="no DLQ entry 999"):
        await requeue_dead_letter(SqlRelayerLedger(sessions), bus, SETTINGS, 999)


async def test_status_counts_deliveries_sources_and_dead_letters(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    await seed(sessions, _request(10), DeliveryStatus.DEAD)
    await seed(sessions, _request(11), DeliveryStatus.CONFIRMED)
    await seed(sessions, _request(12), DeliveryStatus.SUBMITTED)
    async with sessions() as session, session.begin():
        session.add(
            SourceCursor(source="evm:2:0xabc", chain_id=2, position=41, position_hash="0x1")
        )

    status = await ledger_status(SqlRelayerLedger(sessions))

    [counts] = status.deliveries
    assert (counts.chain_id, counts.pending, counts.confirmed, counts.dead) == (4, 1, 1, 1)
    [source] = status.sources
    assert (source.source, source.position, source.last_observed_at) == ("evm:2:0xabc", 41, None)
    assert status.dead_letters == {"deliver-4": 1}
