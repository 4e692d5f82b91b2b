"""The watch stage against a fake source chain that reorgs and loses messages on demand."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from support.relayer import read_topic
from support.wormhole import evm_address, sample_task_assigned

from fedrelay.adapters.kafka import MemoryBus
from fedrelay.adapters.ledger.database import create_engine, upgrade
from fedrelay.adapters.ledger.models import Observation as ObservationRow
from fedrelay.adapters.ledger.models import ObservationStatus, SourceCursor
from fedrelay.adapters.ledger.relayer_ledger import SqlRelayerLedger
from fedrelay.ports.relay import ChainPosition, EmittedMessage
from fedrelay.protocol.wormhole import MessageId
from fedrelay.protocol.wormhole.observation import Observation
from fedrelay.relayer.records import decode_as, message_key
from fedrelay.relayer.settings import RelayerSettings
from fedrelay.relayer.stages.watch import Watcher, watch_stage

EMITTER = evm_address("job market")
OTHER_EMITTER = evm_address("worker hub")
TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def emitted(
    sequence: int,
    block: int,
    block_hash: str,
    *,
    emitter: bytes = EMITTER,
    job: int = 2,
    traceparent: str | None = None,
) -> EmittedMessage:
    observation = Observation(
        emitter_chain=2, emitter_address=emitter, sequence=sequence, nonce=0,
        timestamp=1_767_225_600 + block, consistency_level=1,
        payload=sample_task_assigned(job).to_bytes(), tx_hash=f"0x{block:02x}{sequence:062x}",
        block_number=block, block_hash=block_hash, emitted_at_ms=1_767_225_600_000,
    )  # fmt: skip
    return EmittedMessage(observation, traceparent)


@dataclass
class FakeSource:
    """A source chain kept in memory, one list of messages per block.

    It simulates what cannot be produced for real here: reorgs that replace blocks below the
    watcher's cursor, and an RPC node whose first answer for a range silently lacks messages.
    """

    chain_id: int = 2
    source: str = "fake:2"
    reread: int = 0
    blocks: list[tuple[str, list[EmittedMessage]]] = field(default_factory=list)
    fork: str = "a"
    lose_once: set[int] = field(default_factory=set)  # sequences the next range read drops
    late: int | None = None  # a block whose messages the next read that reaches it leaves out

    def mine(self, *sequences: int, emitter: bytes = EMITTER, **extra: object) -> int:
        number = len(self.blocks)
        block_hash = f"0x{self.fork}{number:063x}"
        messages = [
            emitted(s, number, block_hash, emitter=emitter, **extra)  # type: ignore[arg-type]
            for s in sequences
        ]
        self.blocks.append((block_hash, messages))
        return number

    def reorg(self, from_block: int) -> None:
        """Drop blocks from `from_block` on; later blocks are mined on a new fork."""
        del self.blocks[from_block:]
        self.fork = chr(ord(self.fork) + 1)

    async def head(self) -> ChainPosition:
        return ChainPosition(len(self.blocks) - 1, self.blocks[-1][0])

    async def position_hash(self, number: int) -> str | None:
        return self.blocks[number][0] if 0 <= number < len(self.blocks) else None

    async def messages_between(self, first: int, last: int) -> Sequence[EmittedMessage]:
        served = self.blocks[first : last + 1]
        if self.late is not None and first <= self.late <= last:
            at = self.late - first
            served = [*served[:at], (served[at][0], []), *served[at + 1 :]]
            self.late = None  # served from now on
        found = [m for _, messages in served for m in messages]
        kept = [m for m in found if m.observation.sequence not in self.lose_once]
        self.lose_once.clear()
        return kept

    async def fetch_message(self, message_id: MessageId, tx_hash: str) -> EmittedMessage | None:
        for _, messages in self.blocks:
            for message in messages:
                if message.observation.message_id == message_id:
                    return message
        return None


@pytest.fixture
async def sessions(tmp_path: Path) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    url = f"sqlite+aiosqlite:///{tmp_path / 'ledger.db'}"
    await asyncio.to_thread(upgrade, url)
    engine = create_engine(url)
    yield async_sessionmaker(engine, expire_on_commit=False)
    await engine.dispose()


def watcher(
    source: FakeSource, bus: MemoryBus, sessions: async_sessionmaker[AsyncSession]
) -> Watcher:
    return Watcher(
        source, bus, SqlRelayerLedger(sessions), transactional_id="watch-2-0", poll_interval_s=0.01
    )


async def observed(bus: MemoryBus, want: int) -> list[Observation]:
    records = await read_topic(bus, "observations", want, group_id=uuid.uuid4().hex, limit_s=3)
    return [decode_as(r.value, Observation) for r in records]


async def rows(sessions: async_sessionmaker[AsyncSession]) -> dict[int, ObservationRow]:
    async with sessions() as session:
        found = await session.scalars(select(ObservationRow))
        return {int(row.sequence): row for row in found}


async def test_new_messages_become_observations_once_keyed_by_emitter(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    source, bus = FakeSource(), MemoryBus()
    source.mine(0)
    source.mine(1, 2)
    first = await watcher(source, bus, sessions).poll()
    assert [m.sequence for m in first.produced] == [0, 1, 2]

    again = await watcher(source, bus, sessions).poll()  # a restart: the cursor is in the ledger
    source.mine(3)
    later = await watcher(source, bus, sessions).poll()

    assert again.produced == ()
    assert [m.sequence for m in later.produced] == [3]
    records = await read_topic(bus, "observations", 4, group_id=uuid.uuid4().hex, limit_s=3)
    assert [decode_as(r.value, Observation).sequence for r in records] == [0, 1, 2, 3]
    assert {r.key for r in records} == {message_key(MessageId(2, EMITTER, 0))}
    async with sessions() as session:
        cursor = await session.get(SourceCursor, source.source)
        assert cursor is not None
        assert (cursor.position, cursor.position_hash) == (2, source.blocks[2][0])
    assert all(row.status == ObservationStatus.OBSERVED for row in (await rows(sessions)).values())


async def test_a_reorged_message_is_marked_and_its_replacement_observed(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    source, bus = FakeSource(), MemoryBus()
    source.mine(0)
    source.mine(1)  # block 1: removed by the reorg below
    await watcher(source, bus, sessions).poll()
    old_digest = (await rows(sessions))[1].digest

    source.reorg(1)
    source.mine()
    source.mine(1, job=9)  # the emitter's sequence 1 now carries another body
    report = await watcher(source, bus, sessions).poll()

    assert report.reorged == (MessageId(2, EMITTER, 1),)
    assert report.produced == (MessageId(2, EMITTER, 1),)
    row = (await rows(sessions))[1]
    assert row.status == ObservationStatus.OBSERVED
    assert row.digest != old_digest
    assert row.block_number == 2
    assert row.block_hash == source.blocks[2][0]
    sent = await observed(bus, 3)
    assert [(o.sequence, o.block_number) for o in sent] == [(0, 0), (1, 1), (1, 2)]


async def test_a_reorged_message_without_replacement_stays_reorged(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    source, bus = FakeSource(), MemoryBus()
    source.mine(0)
    source.mine(1)
    await watcher(source, bus, sessions).poll()

    source.reorg(1)
    source.mine()
    report = await watcher(source, bus, sessions).poll()

    assert report.reorged == (MessageId(2, EMITTER, 1),)
    assert report.produced == ()
    assert (await rows(sessions))[1].status == ObservationStatus.REORGED
    assert len(await observed(bus, 2)) == 2  # nothing new was produced


async def test_a_message_reincluded_by_a_reorg_is_not_produced_again(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    source, bus = FakeSource(), MemoryBus()
    source.mine(0)
    source.mine(1)
    await watcher(source, bus, sessions).poll()

    moved = source.blocks[1][1][0].observation
    source.reorg(1)
    source.mine()
    source.blocks[1][1].append(emitted(1, 1, source.blocks[1][0]))
    assert source.blocks[1][1][0].observation.digest == moved.digest
    report = await watcher(source, bus, sessions).poll()

    assert report.reorged == ()
    assert report.produced == ()
    row = (await rows(sessions))[1]
    assert row.status == ObservationStatus.OBSERVED
    assert row.block_hash == source.blocks[1][0]


async def test_a_sequence_gap_is_backfilled(sessions: async_sessionmaker[AsyncSession]) -> None:
    source, bus = FakeSource(), MemoryBus()
    source.mine(0)
    await watcher(source, bus, sessions).poll()
    source.mine(1)
    source.mine(2, 3)
    source.mine(0, emitter=OTHER_EMITTER)
    source.lose_once = {1, 2}  # the node's first answer lacks them

    report = await watcher(source, bus, sessions).poll()

    assert sorted(m.sequence for m in report.backfilled) == [1, 2]
    assert report.missing == ()
    sent = [o for o in await observed(bus, 5) if o.emitter_address == EMITTER]
    assert [o.sequence for o in sent] == [0, 1, 2, 3]


async def test_a_message_served_late_at_the_head_is_found_by_the_next_poll(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    source, bus = FakeSource(reread=2), MemoryBus()
    source.mine(0)
    await watcher(source, bus, sessions).poll()
    source.late = source.mine(1)  # the node answers for block 1 before it serves its log

    missed = await watcher(source, bus, sessions).poll()
    found = await watcher(source, bus, sessions).poll()  # no block since
    source.mine()
    again = await watcher(source, bus, sessions).poll()

    assert (missed.produced, missed.position) == ((), 1)
    assert found.produced == (MessageId(2, EMITTER, 1),)
    assert again.produced == ()  # what the re-read finds again is not produced twice
    assert [o.sequence for o in await observed(bus, 2)] == [0, 1]
    assert set(await rows(sessions)) == {0, 1}


async def test_a_source_read_in_full_is_not_read_again(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    source, bus = FakeSource(), MemoryBus()  # reread 0: a finality the node answers in full
    source.mine(0)
    await watcher(source, bus, sessions).poll()
    source.late = source.mine(1)

    missed = await watcher(source, bus, sessions).poll()
    still = await watcher(source, bus, sessions).poll()

    assert missed.produced == still.produced == ()  # left to the gap backfill of a later message
    source.mine(2)
    assert [m.sequence for m in (await watcher(source, bus, sessions).poll()).backfilled] == [1]


async def test_an_unrecoverable_gap_is_reported(sessions: async_sessionmaker[AsyncSession]) -> None:
    source, bus = FakeSource(), MemoryBus()
    source.mine(0)
    await watcher(source, bus, sessions).poll()
    source.mine(2)  # sequence 1 never appears

    report = await watcher(source, bus, sessions).poll()

    assert report.missing == ((f"2/{EMITTER.hex()}", 1),)
    assert [m.sequence for m in report.produced] == [2]


async def test_observations_join_the_emitting_transactions_trace(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    source, bus = FakeSource(), MemoryBus()
    source.mine(0, traceparent=TRACEPARENT)
    source.mine(1)
    stage = watcher(source, bus, sessions)
    stage.tracer = provider.get_tracer("test")

    await stage.poll()

    emitting_trace = int(TRACEPARENT.split("-")[1], 16)
    spans = {span.attributes["fedrelay.message_id"]: span for span in exporter.get_finished_spans()}  # type: ignore[index]
    joined = spans[f"2/{EMITTER.hex()}/0"]
    assert joined.kind == SpanKind.PRODUCER
    assert joined.context.trace_id == emitting_trace
    assert joined.parent is not None
    assert joined.parent.span_id == int(TRACEPARENT.split("-")[2], 16)
    assert spans[f"2/{EMITTER.hex()}/1"].context.trace_id != emitting_trace
    records = await read_topic(bus, "observations", 2, group_id=uuid.uuid4().hex, limit_s=3)
    carried = records[0].header("traceparent")
    assert carried is not None
    assert int(carried.decode().split("-")[1], 16) == emitting_trace
    assert (await rows(sessions))[0].trace_context == TRACEPARENT


async def test_a_failed_hand_off_leaves_the_cursor_where_it_was(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    source, bus = FakeSource(), MemoryBus()
    source.mine(0)
    stage = watcher(source, bus, sessions)

    class BrokenBus(MemoryBus):
        def producer(self, *, transactional_id: str | None = None):  # type: ignore[no-untyped-def]
            raise ConnectionError("broker away")

    with pytest.raises(ConnectionError):
        await watcher(source, BrokenBus(), sessions).poll()
    async with sessions() as session:
        assert await session.get(SourceCursor, source.source) is None
    assert await rows(sessions) == {}

    report = await stage.poll()
    assert [m.sequence for m in report.produced] == [0]


async def test_run_polls_until_stopped(sessions: async_sessionmaker[AsyncSession]) -> None:
    source, bus = FakeSource(), MemoryBus()
    source.mine(0)
    stage = watcher(source, bus, sessions)
    task = asyncio.create_task(stage.run())
    try:
        await observed(bus, 1)
        source.mine(1)
        assert [o.sequence for o in await observed(bus, 2)] == [0, 1]
    finally:
        stage.stop()
        await asyncio.wait_for(task, 5)


async def test_a_reorg_of_the_first_block_settles(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    source, bus = FakeSource(), MemoryBus()
    source.mine(0)
    await watcher(source, bus, sessions).poll()
    source.reorg(0)
    source.mine()

    first = await watcher(source, bus, sessions).poll()
    second = await watcher(source, bus, sessions).poll()

    assert first.reorged == (MessageId(2, EMITTER, 0),)
    assert second.reorged == ()
    assert second.produced == ()
    assert (await rows(sessions))[0].status == ObservationStatus.REORGED


def test_the_watch_stage_takes_its_topic_and_identity_from_the_settings(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    settings = RelayerSettings(observations_topic="obs", instance="7")
    stage = watch_stage(settings, FakeSource(), MemoryBus(), SqlRelayerLedger(sessions), start=12)
    assert (stage.topic, stage.transactional_id, stage.start) == ("obs", "fedrelay-watch-2-7", 12)


async def test_a_reorg_during_a_poll_is_not_read_past(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    @dataclass
    class ReorgingSource(FakeSource):
        """Reorgs once between the watcher's check of its cursor block and its head read."""

        armed: bool = False

        async def head(self) -> ChainPosition:
            if self.armed:
                self.armed = False
                self.reorg(1)
                self.mine()
                self.mine()
            return await super().head()

    source, bus = ReorgingSource(), MemoryBus()
    source.mine(0)
    source.mine(1)  # block 1: removed by the reorg below
    await watcher(source, bus, sessions).poll()

    source.armed = True
    moved = await watcher(source, bus, sessions).poll()
    assert moved.produced == ()
    async with sessions() as session:  # the poll's changes were rolled back: nothing skipped
        cursor = await session.get(SourceCursor, source.source)
        assert cursor is not None
        assert cursor.position == 1
    assert (await rows(sessions))[1].status == ObservationStatus.OBSERVED

    detected = await watcher(source, bus, sessions).poll()
    assert detected.reorged == (MessageId(2, EMITTER, 1),)
    source.mine(1, job=9)  # the emitter's sequence 1 again, with another body
    again = await watcher(source, bus, sessions).poll()
    assert again.produced == (MessageId(2, EMITTER, 1),)
    assert (await rows(sessions))[1].status == ObservationStatus.OBSERVED
