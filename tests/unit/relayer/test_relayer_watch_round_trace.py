"""Messages of a round join the round's derived trace when the chain knows no trace context."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from support.relayer import read_topic
from support.wormhole import (
    evm_address,
    filler,
    sample_round_settled,
    sample_task_assigned,
    sample_update_committed,
    sample_worker_registered,
)

from fedrelay.adapters.kafka import MemoryBus
from fedrelay.adapters.ledger.database import create_engine, upgrade
from fedrelay.adapters.ledger.models import Observation as ObservationRow
from fedrelay.adapters.ledger.relayer_ledger import SqlRelayerLedger
from fedrelay.ports.relay import ChainPosition, EmittedMessage
from fedrelay.protocol.tracing import round_span_context
from fedrelay.protocol.wormhole import MessageId, Payload
from fedrelay.protocol.wormhole.observation import Observation
from fedrelay.relayer.stages.watch import RoundOf, Watcher, round_of

COORDINATOR, SOLANA, EVM_WORKER = 2, 1, 4
TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
ROUND = round_span_context(COORDINATOR, 7, 3)  # the samples' job 7, round 3


def emitted(
    chain: int, sequence: int, payload: Payload, traceparent: str | None = None
) -> EmittedMessage:
    observation = Observation(
        emitter_chain=chain, emitter_address=evm_address(f"emitter {chain}"), sequence=sequence,
        nonce=0, timestamp=1_767_225_600, consistency_level=1, payload=payload.to_bytes(),
        tx_hash=f"0x{chain:02x}{sequence:062x}", block_number=0, block_hash=f"0x{0:064x}",
        emitted_at_ms=1_767_225_600_000,
    )  # fmt: skip
    return EmittedMessage(observation, traceparent)


@dataclass
class OneBlockSource:
    """A source chain whose only block holds the given messages."""

    chain_id: int
    messages: list[EmittedMessage] = field(default_factory=list)
    reread: int = 0

    @property
    def source(self) -> str:
        return f"fake:{self.chain_id}"

    async def head(self) -> ChainPosition:
        return ChainPosition(0, f"0x{0:064x}")

    async def position_hash(self, number: int) -> str | None:
        return f"0x{0:064x}" if number == 0 else None

    async def messages_between(self, first: int, last: int) -> Sequence[EmittedMessage]:
        return self.messages if first <= 0 <= last else []

    async def fetch_message(self, message_id: MessageId, tx_hash: str) -> EmittedMessage | None:
        return next((m for m in self.messages if m.observation.message_id == message_id), None)


@pytest.fixture
async def sessions(tmp_path: Path) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    url = f"sqlite+aiosqlite:///{tmp_path / 'ledger.db'}"
    await asyncio.to_thread(upgrade, url)
    engine = create_engine(url)
    yield async_sessionmaker(engine, expire_on_commit=False)
    await engine.dispose()


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


async def watch(
    source: OneBlockSource,
    bus: MemoryBus,
    sessions: async_sessionmaker[AsyncSession],
    exporter: InMemorySpanExporter,
) -> dict[int, ReadableSpan]:
    """Poll once; the producer spans by sequence."""
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    watcher = Watcher(
        source, bus, SqlRelayerLedger(sessions), transactional_id=f"watch-{source.chain_id}"
    )
    watcher.tracer = provider.get_tracer("test")
    await watcher.poll()
    spans = [s for s in exporter.get_finished_spans() if s.kind == SpanKind.PRODUCER]
    exporter.clear()
    return {int(str(s.attributes["fedrelay.message_id"]).split("/")[2]): s for s in spans}  # type: ignore[index]


async def trace_ids_in_ledger(
    sessions: async_sessionmaker[AsyncSession],
) -> dict[tuple[int, int], int | None]:
    async with sessions() as session:
        found = await session.scalars(select(ObservationRow))
        return {
            (int(r.emitter_chain), int(r.sequence)): (
                int(r.trace_context.split("-")[1], 16) if r.trace_context else None
            )
            for r in found
        }


def test_round_of_names_the_coordinator_chain_job_and_round() -> None:
    assert round_of(emitted(COORDINATOR, 0, sample_task_assigned()).observation) == RoundOf(2, 7, 3)
    assert round_of(emitted(COORDINATOR, 0, sample_round_settled()).observation) == RoundOf(2, 7, 3)
    # UPDATE_COMMITTED is emitted on a worker chain and addressed to the coordinator chain.
    assert round_of(emitted(SOLANA, 0, sample_update_committed()).observation) == RoundOf(2, 7, 3)
    assert round_of(emitted(EVM_WORKER, 0, sample_worker_registered()).observation) is None


def test_round_of_ignores_a_payload_that_is_not_fedrelays() -> None:
    message = emitted(COORDINATOR, 0, sample_task_assigned())
    foreign = replace(message.observation, payload=filler("not a payload"))
    assert round_of(foreign) is None


async def test_both_routes_of_a_round_join_its_trace(
    sessions: async_sessionmaker[AsyncSession], exporter: InMemorySpanExporter
) -> None:
    bus = MemoryBus()
    coordinator = OneBlockSource(
        COORDINATOR,
        [
            emitted(COORDINATOR, 0, sample_task_assigned()),
            emitted(COORDINATOR, 1, sample_round_settled()),
            emitted(COORDINATOR, 2, sample_task_assigned(), traceparent=TRACEPARENT),
        ],
    )
    worker = OneBlockSource(
        SOLANA,
        [
            emitted(SOLANA, 0, sample_update_committed()),
            emitted(SOLANA, 1, sample_worker_registered()),
        ],
    )

    outbound = await watch(coordinator, bus, sessions, exporter)
    inbound = await watch(worker, bus, sessions, exporter)

    for span in (outbound[0], outbound[1], inbound[0]):
        assert span.context.trace_id == ROUND.trace_id
        assert span.parent is not None
        assert span.parent.span_id == ROUND.span_id
        assert span.attributes is not None
        assert (span.attributes["fedrelay.job_id"], span.attributes["fedrelay.round"]) == (7, 3)
    # A known emitting trace still wins; a message of no round starts its own trace.
    assert outbound[2].context.trace_id == int(TRACEPARENT.split("-")[1], 16)
    assert inbound[1].context.trace_id != ROUND.trace_id
    assert inbound[1].attributes is not None
    assert "fedrelay.round" not in inbound[1].attributes

    records = await read_topic(bus, "observations", 5, group_id=uuid.uuid4().hex, limit_s=3)
    carried = {
        (r.value, int((r.header("traceparent") or b"").decode().split("-")[1], 16)) for r in records
    }
    assert sum(1 for _, trace_id in carried if trace_id == ROUND.trace_id) == 3
    assert await trace_ids_in_ledger(sessions) == {
        (COORDINATOR, 0): ROUND.trace_id,
        (COORDINATOR, 1): ROUND.trace_id,
        (COORDINATOR, 2): int(TRACEPARENT.split("-")[1], 16),
        (SOLANA, 0): ROUND.trace_id,
        (SOLANA, 1): None,
    }
