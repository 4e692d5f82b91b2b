"""The stage runner on real Kafka and PostgreSQL: assemble, route and fetch, exactly once."""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import AsyncIterator, Iterator

import pytest
from prometheus_client import CollectorRegistry
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from support.relayer import (
    DiesAfterBatchLedger,
    GuardianApiStub,
    read_topic,
    sample_observation,
    signature_messages,
    signed_vaa_bytes,
    statements_run,
    wait_until,
)
from support.wormhole import guardian_set, guardian_signers

from fedrelay.adapters.devnet.services import Kafka, Postgres
from fedrelay.adapters.kafka import KafkaBus
from fedrelay.adapters.ledger.database import create_engine, upgrade
from fedrelay.adapters.ledger.models import StoredVaa
from fedrelay.adapters.ledger.relayer_ledger import SqlRelayerLedger
from fedrelay.ports.bus import Record
from fedrelay.protocol.wormhole import GuardianSets, verify_vaa
from fedrelay.protocol.wormhole.observation import Observation
from fedrelay.relayer.backoff import BackoffPolicy
from fedrelay.relayer.records import (
    DeliveryRequest,
    GuardianSignatureMessage,
    SignedVaa,
    decode_as,
    encode_message,
)
from fedrelay.relayer.stage import (
    RecordProcessor,
    StageResult,
    StageRunner,
    stage_metrics,
)
from fedrelay.relayer.stages.assemble import Assembler
from fedrelay.relayer.stages.fetch import GuardianApi, VaaFetcher
from fedrelay.relayer.stages.route import Router, delivery_topic

pytestmark = pytest.mark.integration

SIGNERS = guardian_signers(4)
SETS = GuardianSets.of(guardian_set(4))  # quorum 3
FAST = BackoffPolicy(base_s=0.05, cap_s=0.2, max_attempts=50)


@pytest.fixture(scope="module")
def ledger_url(postgres: Postgres) -> str:
    """A database of this module's own on the session's cluster, at the newest migration."""
    url = postgres.create_database("relayer")
    upgrade(url)
    return url


@pytest.fixture
async def sessions(ledger_url: str) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    engine = create_engine(ledger_url)
    yield async_sessionmaker(engine, expire_on_commit=False)
    await engine.dispose()


@pytest.fixture
def bus(kafka: Kafka) -> KafkaBus:
    return KafkaBus(kafka.bootstrap)


@pytest.fixture
def names() -> dict[str, str]:
    """Topic and group names of one test, so tests never see each other's records."""
    tag = uuid.uuid4().hex[:8]
    return {
        "signatures": f"signatures-{tag}", "observations": f"observations-{tag}",
        "vaas": f"vaas-{tag}", "dlq": f"dlq-{tag}", "prefix": f"deliveries-{tag}", "tag": tag,
    }  # fmt: skip


def _observations(count: int) -> list[Observation]:
    # Tests of this module share one ledger: each starts at a fresh sequence.
    base = random.randrange(2**40)
    return [sample_observation(base + i) for i in range(count)]


def _runner(
    bus: KafkaBus,
    name: str,
    inputs: list[str],
    processor: RecordProcessor,
    tag: str,
    **extra: object,
) -> StageRunner:
    return StageRunner(
        name=name, bus=bus, inputs=inputs, group_id=f"{name}-{tag}",
        transactional_id=f"{name}-{tag}-0", processor=processor, dlq_topic=f"dlq-{tag}",
        policy=FAST, poll_wait_s=0.2, **extra,  # type: ignore[arg-type]
    )  # fmt: skip


async def _publish(bus: KafkaBus, topic: str, records: list[tuple[bytes, bytes]]) -> None:
    producer = bus.producer()
    await producer.start()
    for key, value in records:
        await producer.send(topic, value, key=key)
    await producer.stop()


def _count(registry: CollectorRegistry, stage: str) -> float:
    return registry.get_sample_value("fedrelay_stage_processed_total", {"stage": stage}) or 0


async def _stop(runners: list[StageRunner], tasks: list[asyncio.Task[None]]) -> None:
    for runner in runners:
        runner.stop()
    await asyncio.wait_for(asyncio.gather(*tasks), 30)


async def test_signatures_become_one_delivery_per_message(
    bus: KafkaBus, sessions: async_sessionmaker[AsyncSession], names: dict[str, str]
) -> None:
    tag = names["tag"]
    destination = delivery_topic(4, names["prefix"])
    await bus.create_topics([names["signatures"], names["vaas"], names["dlq"]], partitions=3)
    await bus.create_topics([destination])
    observations = _observations(6)
    messages: list[GuardianSignatureMessage] = []
    for observation in observations:
        # Every guardian signs; guardian 1's signature arrives twice.
        messages += signature_messages(observation, SIGNERS, [2, 1, 0, 1, 3])
    await _publish(bus, names["signatures"], [(m.digest, encode_message(m)) for m in messages])

    registry = CollectorRegistry()
    lag = bus.end_offsets_reader()
    await lag.start()
    assemble = _runner(
        bus, "assemble", [names["signatures"]],
        Assembler(SqlRelayerLedger(sessions), SETS, names["vaas"]), tag,
        metrics=stage_metrics(registry), end_offsets=lag, lag_interval_s=0.0,
    )  # fmt: skip
    route = _runner(
        bus, "route", [names["vaas"]], Router(prefix=names["prefix"]), tag,
        metrics=stage_metrics(registry),
    )  # fmt: skip
    tasks = [asyncio.create_task(r.run()) for r in (assemble, route)]

    def settled() -> bool:
        depth = sum(
            registry.get_sample_value(
                "fedrelay_stage_queue_depth",
                {"stage": "assemble", "topic": names["signatures"], "partition": str(p)},
            )
            or 0
            for p in range(3)
        )
        return (
            _count(registry, "assemble") == len(messages)
            and _count(registry, "route") == 6
            and depth == 0
        )

    try:
        await wait_until(settled, limit_s=60)
        got = await read_topic(bus, destination, 6, group_id=f"reader-{tag}", limit_s=60)
    finally:
        await _stop([assemble, route], tasks)
        await lag.stop()

    assert len(got) == 6
    requests = [decode_as(r.value, DeliveryRequest) for r in got]
    assert sorted(r.digest for r in requests) == sorted(o.digest for o in observations)
    for request in requests:
        verify_vaa(request.parsed, SETS, 1_800_000_000)
        assert len(request.parsed.signatures) == 3
    async with sessions() as session:
        stored = await session.scalar(
            select(func.count())
            .select_from(StoredVaa)
            .where(StoredVaa.digest.in_([o.digest for o in observations]))
        )
    assert stored == 6


class _DiesAfterLedger:
    """Runs the assembler, then hangs (until cancelled) once it produced a VAA: a crash after
    the ledger commit and before the bus transaction."""

    def __init__(self, inner: Assembler) -> None:
        self.inner = inner
        self.ledger_done = asyncio.Event()

    async def process(self, record: Record) -> StageResult:
        result = await self.inner.process(record)
        if result.outputs:
            self.ledger_done.set()
            await asyncio.Event().wait()
        return result


@pytest.mark.parametrize("batched", [False, True], ids=["record", "batch"])
async def test_crash_between_ledger_and_kafka_commit_emits_exactly_once(
    bus: KafkaBus, sessions: async_sessionmaker[AsyncSession], names: dict[str, str], batched: bool
) -> None:
    tag = names["tag"]
    await bus.create_topics([names["signatures"], names["vaas"], names["dlq"]])
    observations = _observations(4)
    messages = [m for o in observations for m in signature_messages(o, SIGNERS, [0, 1, 2, 3])]
    await _publish(bus, names["signatures"], [(m.digest, encode_message(m)) for m in messages])
    registry = CollectorRegistry()
    metrics = stage_metrics(registry)

    inner = Assembler(SqlRelayerLedger(sessions), SETS, names["vaas"])
    dying = DiesAfterBatchLedger(inner) if batched else _DiesAfterLedger(inner)
    task = asyncio.create_task(
        _runner(bus, "assemble", [names["signatures"]], dying, tag, metrics=metrics).run()
    )
    await asyncio.wait_for(dying.ledger_done.wait(), 60)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    if isinstance(dying, DiesAfterBatchLedger):
        assert max(dying.batch_sizes) > 1  # the crash hit a batch, not a lone record
    async with sessions() as session:
        stored = await session.scalar(
            select(func.count())
            .select_from(StoredVaa)
            .where(StoredVaa.digest.in_([o.digest for o in observations]))
        )
    assert stored >= 1  # the ledger has what the dead hand-off stored; the bus has none of it

    again = _runner(
        bus, "assemble", [names["signatures"]],
        Assembler(SqlRelayerLedger(sessions), SETS, names["vaas"]), tag,
        metrics=metrics,
    )  # fmt: skip
    task = asyncio.create_task(again.run())
    try:
        await wait_until(lambda: _count(registry, "assemble") == len(messages), limit_s=60)
        got = await read_topic(bus, names["vaas"], 4, group_id=f"reader-{tag}", limit_s=60)
    finally:
        await _stop([again], [task])
    assert sorted(decode_as(r.value, SignedVaa).digest for r in got) == sorted(
        o.digest for o in observations
    )  # each once: read_topic reads on after the fourth to catch a duplicate


@pytest.fixture
def stub() -> Iterator[GuardianApiStub]:
    with GuardianApiStub().running() as server:
        yield server


async def test_fetch_stage_on_kafka_waits_for_the_guardians(
    bus: KafkaBus,
    sessions: async_sessionmaker[AsyncSession],
    names: dict[str, str],
    stub: GuardianApiStub,
) -> None:
    tag = names["tag"]
    await bus.create_topics([names["observations"], names["vaas"], names["dlq"]])
    first, second = _observations(2)
    stub.publish(second.message_id, signed_vaa_bytes(second, SIGNERS))
    records = [(b"emitter", encode_message(o)) for o in (first, second, first)]
    await _publish(bus, names["observations"], records)

    api = GuardianApi(stub.url, timeout_s=5)
    registry = CollectorRegistry()
    fetch = _runner(
        bus, "fetch", [names["observations"]],
        VaaFetcher(api, SqlRelayerLedger(sessions), SETS, names["vaas"]),
        tag, metrics=stage_metrics(registry),
    )  # fmt: skip
    task = asyncio.create_task(fetch.run())
    try:
        await wait_until(lambda: stub.hits(first.message_id) >= 2, limit_s=60)  # 404: not yet
        stub.publish(first.message_id, signed_vaa_bytes(first, SIGNERS))
        await wait_until(lambda: _count(registry, "fetch") == 3, limit_s=60)
        got = await read_topic(bus, names["vaas"], 2, group_id=f"reader-{tag}", limit_s=60)
    finally:
        await _stop([fetch], [task])
        await api.aclose()
    sequences = [decode_as(r.value, SignedVaa).message_id.sequence for r in got]
    assert sequences == [first.sequence, second.sequence]  # the repeated observation adds none


async def test_an_assemble_batch_on_postgresql_is_a_few_statements_judged_as_one_by_one(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    assembler = Assembler(SqlRelayerLedger(sessions), SETS)
    statements: list[str] = []

    async def assemble(messages: list[GuardianSignatureMessage]) -> list[StageResult | Exception]:
        records = [
            Record("signatures", 0, offset, message.digest, encode_message(message))
            for offset, message in enumerate(messages, start=random.randrange(1 << 40))
        ]
        with statements_run(sessions) as run:
            outcomes = list(await assembler.process_batch(records))
        statements[:] = run
        return outcomes

    def emitting(outcomes: list[StageResult | Exception]) -> list[int]:
        return [i for i, o in enumerate(outcomes) if isinstance(o, StageResult) and o.outputs]

    # 2 completes each quorum, the second 2 is a duplicate and 3 comes late
    small, large = _observations(1), _observations(8)
    outcomes = await assemble(
        [m for o in small for m in signature_messages(o, SIGNERS, [0, 1, 2, 2, 3])]
    )
    assert emitting(outcomes) == [2]
    few = len(statements)
    outcomes = await assemble(
        [m for o in large for m in signature_messages(o, SIGNERS, [0, 1, 2, 2, 3])]
    )
    assert emitting(outcomes) == [5 * i + 2 for i in range(8)]
    assert len(statements) == few

    # a second body for a message id fails the batch's transaction: each record alone then
    original = _observations(1)[0]
    rival = sample_observation(original.sequence, payload=b"\x02\x01" + bytes(42))
    other = _observations(1)[0]
    outcomes = await assemble(
        [
            *signature_messages(original, SIGNERS, [0, 1, 2]),
            *signature_messages(rival, SIGNERS, [0, 1, 2]),
            *signature_messages(other, SIGNERS, [0, 1, 2]),
        ]
    )
    assert emitting(outcomes) == [2, 8]
    assert [type(o).__name__ for o in outcomes if isinstance(o, Exception)] == ["ConflictingVaa"]
    async with sessions() as session:
        stored = set(
            (
                await session.scalars(
                    select(StoredVaa.digest).where(
                        StoredVaa.digest.in_([original.digest, rival.digest, other.digest])
                    )
                )
            ).all()
        )
    assert stored == {original.digest, other.digest}
