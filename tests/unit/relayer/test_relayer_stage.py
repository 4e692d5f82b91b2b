"""The stage runner on the in-process bus: atomic hand-off, retries, DLQ, shutdown, telemetry."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import uuid
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from prometheus_client import CollectorRegistry
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from support.relayer import read_topic, wait_until

from fedrelay.adapters.kafka import BusError, MemoryBus, Partition, Record
from fedrelay.adapters.ledger.database import create_engine, upgrade
from fedrelay.adapters.ledger.models import DeadLetter, SignerNonce
from fedrelay.adapters.ledger.relayer_ledger import SqlRelayerLedger, insert_once
from fedrelay.ports.bus import Headers
from fedrelay.protocol.tracing import inject_headers
from fedrelay.protocol.wormhole.observation import MalformedMessage
from fedrelay.relayer.backoff import BackoffPolicy
from fedrelay.relayer.errors import RetryableError
from fedrelay.relayer.stage import (
    REASON_HEADER,
    SOURCE_HEADER,
    STAGE_HEADER,
    BatchProcessor,
    Output,
    StageResult,
    StageRunner,
    run_until_signalled,
    stage_metrics,
)

FAST = BackoffPolicy(base_s=0.01, cap_s=0.02, max_attempts=3)


class ScriptedProcessor:
    """Values say what happens: ``ok:N`` -> ``done:N``; ``poison``; ``later`` (always
    retryable); ``flaky:N`` fails with an infrastructure error N times, then succeeds."""

    def __init__(self) -> None:
        self.calls: list[bytes] = []
        self.failures: dict[bytes, int] = {}
        self.gates: dict[bytes, asyncio.Event] = {}
        self.entered: dict[bytes, asyncio.Event] = {}

    def gate(self, value: bytes) -> asyncio.Event:
        """Processing `value` waits for the returned event; `entered[value]` says it started."""
        self.entered[value] = asyncio.Event()
        self.gates[value] = asyncio.Event()
        return self.gates[value]

    async def process(self, record: Record) -> StageResult:
        value = record.value
        self.calls.append(value)
        if value in self.gates:
            self.entered[value].set()
            await self.gates[value].wait()
        if value == b"poison":
            raise MalformedMessage("record is not JSON")
        if value == b"later":
            raise RetryableError("no signed VAA yet")
        if value.startswith(b"flaky:"):
            left = self.failures.setdefault(value, int(value.split(b":")[1]))
            if left:
                self.failures[value] = left - 1
                raise ConnectionError("ledger unreachable")
        number = value.split(b":")[1]
        return StageResult(
            (Output("out", b"done:" + number, key=record.key),),
            emitted_at_ms=1_000,
            source="chain-2",
        )


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
async def bus() -> AsyncIterator[MemoryBus]:
    memory = MemoryBus()
    await memory.create_topics(["in", "out", "dlq"])
    yield memory
    await memory.close()


@pytest.fixture
def ledger(tmp_path: Path) -> str:
    url = f"sqlite+aiosqlite:///{tmp_path / 'ledger.db'}"
    upgrade(url)
    return url


def _runner(
    bus: MemoryBus, processor: ScriptedProcessor, registry: CollectorRegistry, **extra: object
) -> StageRunner:
    return StageRunner(
        name="test",
        bus=bus,
        inputs=["in"],
        group_id="test-group",
        transactional_id="test-0",
        processor=processor,
        policy=FAST,
        poll_wait_s=0.05,
        metrics=stage_metrics(registry),
        **extra,  # type: ignore[arg-type]
    )


async def _send(bus: MemoryBus, *values: bytes, headers: Headers = ()) -> None:
    producer = bus.producer()
    await producer.start()
    for value in values:
        await producer.send("in", value, key=b"emitter", headers=headers)
    await producer.stop()


async def _read(bus: MemoryBus, topic: str, want: int) -> list[Record]:
    return await read_topic(bus, topic, want, group_id=f"reader-{uuid.uuid4().hex}", limit_s=5)


def _metric(registry: CollectorRegistry, name: str, **labels: str) -> float:
    value = registry.get_sample_value(name, {"stage": "test", **labels})
    return 0.0 if value is None else value


async def _committed(bus: MemoryBus) -> int | None:
    consumer = bus.consumer(["in"], group_id="test-group")
    return await consumer.committed(Partition("in", 0))


async def test_outputs_and_input_offsets_commit_together(
    bus: MemoryBus, registry: CollectorRegistry
) -> None:
    await _send(bus, *(b"ok:%d" % i for i in range(5)))
    runner = _runner(bus, ScriptedProcessor(), registry)
    task = asyncio.create_task(runner.run())
    out = await _read(bus, "out", 5)
    runner.stop()
    await asyncio.wait_for(task, 5)

    assert [r.value for r in out] == [b"done:%d" % i for i in range(5)]
    assert await _committed(bus) == 5
    assert _metric(registry, "fedrelay_stage_processed_total") == 5
    assert _metric(registry, "fedrelay_stage_latency_seconds_count") == 5
    assert _metric(registry, "fedrelay_stage_last_seen_timestamp_seconds", source="chain-2") > 0


async def test_poison_record_goes_to_the_dlq_and_the_rest_flows(
    bus: MemoryBus, registry: CollectorRegistry, ledger: str
) -> None:
    engine = create_engine(ledger)
    sessions = async_sessionmaker(engine)
    await _send(bus, b"ok:0", b"poison", b"ok:1")
    runner = _runner(bus, ScriptedProcessor(), registry, dead_letters=SqlRelayerLedger(sessions))
    task = asyncio.create_task(runner.run())
    out = await _read(bus, "out", 2)
    [dead] = await _read(bus, "dlq", 1)
    runner.stop()
    await asyncio.wait_for(task, 5)

    assert [r.value for r in out] == [b"done:0", b"done:1"]
    assert dead.value == b"poison"
    assert dead.header(REASON_HEADER) == b"MalformedMessage: record is not JSON"
    assert dead.header(STAGE_HEADER) == b"test"
    assert dead.header(SOURCE_HEADER) == b"in:0:1"
    assert _metric(registry, "fedrelay_stage_failed_total") == 1
    async with sessions() as session:
        entries = (await session.scalars(select(DeadLetter))).all()
    await engine.dispose()
    assert [(e.stage, e.message_key, e.body) for e in entries] == [("test", "in:0:1", b"poison")]
    assert entries[0].reason == "MalformedMessage: record is not JSON"


async def test_retryable_failure_is_dead_lettered_after_the_last_attempt(
    bus: MemoryBus, registry: CollectorRegistry
) -> None:
    await _send(bus, b"later", b"ok:1")
    processor = ScriptedProcessor()
    runner = _runner(bus, processor, registry)
    task = asyncio.create_task(runner.run())
    [dead] = await _read(bus, "dlq", 1)
    [out] = await _read(bus, "out", 1)
    runner.stop()
    await asyncio.wait_for(task, 5)

    assert dead.header(REASON_HEADER) == b"gave up after 3 attempts: no signed VAA yet"
    assert processor.calls.count(b"later") == FAST.max_attempts
    assert out.value == b"done:1"
    assert _metric(registry, "fedrelay_stage_retried_total") == 2


async def test_infrastructure_failures_are_retried_and_never_dead_lettered(
    bus: MemoryBus, registry: CollectorRegistry
) -> None:
    await _send(bus, b"flaky:5")  # more failures than max_attempts
    processor = ScriptedProcessor()
    runner = _runner(bus, processor, registry)
    task = asyncio.create_task(runner.run())
    [out] = await _read(bus, "out", 1)
    runner.stop()
    await asyncio.wait_for(task, 5)

    assert out.value == b"done:5"
    assert processor.calls.count(b"flaky:5") == 6
    assert await _committed(bus) == 1
    assert _metric(registry, "fedrelay_stage_failed_total") == 0
    assert _metric(registry, "fedrelay_stage_retried_total") == 5


async def test_crash_before_the_hand_off_replays_the_batch_without_duplicates(
    bus: MemoryBus, registry: CollectorRegistry
) -> None:
    await _send(bus, b"ok:0", b"ok:1", b"ok:2")
    crashing = ScriptedProcessor()
    crashing.gate(b"ok:2")  # never opened: the process dies while handling record 2
    first = _runner(bus, crashing, registry)
    task = asyncio.create_task(first.run())
    await asyncio.wait_for(crashing.entered[b"ok:2"].wait(), 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await _committed(bus) is None
    assert bus.end_offset(Partition("out", 0)) == 0  # nothing of the batch became visible

    second = _runner(bus, ScriptedProcessor(), registry)
    task = asyncio.create_task(second.run())
    out = await _read(bus, "out", 3)
    second.stop()
    await asyncio.wait_for(task, 5)
    assert [r.value for r in out] == [b"done:0", b"done:1", b"done:2"]
    assert await _committed(bus) == 3


async def test_stop_drains_the_in_flight_batch(bus: MemoryBus, registry: CollectorRegistry) -> None:
    await _send(bus, b"ok:0", b"ok:1", b"ok:2")
    processor = ScriptedProcessor()
    gate = processor.gate(b"ok:1")
    runner = _runner(bus, processor, registry)
    task = asyncio.create_task(runner.run())
    await asyncio.wait_for(processor.entered[b"ok:1"].wait(), 5)
    runner.stop()
    assert not task.done()
    gate.set()
    await asyncio.wait_for(task, 5)

    assert await _committed(bus) == 3
    assert bus.end_offset(Partition("out", 0)) == 3


async def test_stop_cuts_a_backoff_wait_short_and_leaves_that_record(
    bus: MemoryBus, registry: CollectorRegistry
) -> None:
    await _send(bus, b"ok:0", b"later")
    processor = ScriptedProcessor()
    slow = BackoffPolicy(base_s=30, cap_s=30, jitter=0, max_attempts=5)
    runner = _runner(bus, processor, registry)
    runner.policy = slow
    processor.gate(b"later").set()  # no hold-up; only to learn when it is first tried
    task = asyncio.create_task(runner.run())
    await asyncio.wait_for(processor.entered[b"later"].wait(), 5)
    runner.stop()
    await asyncio.wait_for(task, 5)  # far sooner than the 30 s backoff

    assert await _committed(bus) == 1  # ok:0 is done; "later" waits for the next owner
    assert bus.end_offset(Partition("dlq", 0)) == 0


async def test_sigterm_drains_and_stops(bus: MemoryBus, registry: CollectorRegistry) -> None:
    await _send(bus, b"ok:0", b"ok:1")
    runner = _runner(bus, ScriptedProcessor(), registry)
    task = asyncio.create_task(run_until_signalled([runner]))
    await _read(bus, "out", 2)
    os.kill(os.getpid(), signal.SIGTERM)
    await asyncio.wait_for(task, 5)
    assert runner.stopping
    assert await _committed(bus) == 2


async def test_trace_context_flows_from_input_to_output(
    bus: MemoryBus, registry: CollectorRegistry
) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("test")
    with tracer.start_as_current_span("emit") as emit:
        headers = inject_headers()
    await _send(bus, b"ok:0", headers=headers)

    runner = _runner(bus, ScriptedProcessor(), registry, tracer=tracer)
    task = asyncio.create_task(runner.run())
    [out] = await _read(bus, "out", 1)
    runner.stop()
    await asyncio.wait_for(task, 5)

    [process] = [s for s in exporter.get_finished_spans() if s.name == "process in"]
    assert process.kind == SpanKind.CONSUMER
    assert process.parent is not None
    assert process.parent.span_id == emit.get_span_context().span_id
    assert process.context.trace_id == emit.get_span_context().trace_id
    assert process.attributes is not None
    assert process.attributes["messaging.destination.name"] == "in"
    assert process.attributes["fedrelay.stage"] == "test"
    traceparent = out.header("traceparent")
    assert traceparent is not None
    _, trace_id, span_id, _ = traceparent.decode().split("-")
    assert int(trace_id, 16) == emit.get_span_context().trace_id
    assert int(span_id, 16) == process.context.span_id


class BatchedProcessor(ScriptedProcessor):
    """Processes a polled batch at once (as the pipelined deliverer does)."""

    async def process_batch(self, records: Sequence[Record]) -> Sequence[StageResult | Exception]:
        return [await self.process(record) for record in records]


async def test_records_processed_as_a_batch_keep_their_own_traces(
    bus: MemoryBus, registry: CollectorRegistry
) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("test")
    emitted = []
    for number in range(3):
        with tracer.start_as_current_span(f"emit {number}") as emit:
            await _send(bus, b"ok:%d" % number, headers=inject_headers())
        emitted.append(emit.get_span_context())

    processor = BatchedProcessor()
    assert isinstance(processor, BatchProcessor)
    runner = _runner(bus, processor, registry, tracer=tracer)
    task = asyncio.create_task(runner.run())
    outs = await _read(bus, "out", 3)
    runner.stop()
    await asyncio.wait_for(task, 5)

    processes = [s for s in exporter.get_finished_spans() if s.name == "process in"]
    assert sorted(p.context.trace_id for p in processes) == sorted(e.trace_id for e in emitted)
    for process in processes:
        [emit] = [e for e in emitted if e.trace_id == process.context.trace_id]
        assert process.parent is not None
        assert process.parent.span_id == emit.span_id
    for out in outs:  # what each record handed on continues its own trace
        traceparent = out.header("traceparent")
        assert traceparent is not None
        _, trace_id, span_id, _ = traceparent.decode().split("-")
        [process] = [p for p in processes if p.context.span_id == int(span_id, 16)]
        assert process.context.trace_id == int(trace_id, 16)
        number = out.value.split(b":")[1]
        assert emitted[int(number)].trace_id == int(trace_id, 16)


async def test_queue_depth_reports_the_lag(bus: MemoryBus, registry: CollectorRegistry) -> None:
    await _send(bus, *(b"ok:%d" % i for i in range(5)))
    processor = ScriptedProcessor()
    gate = processor.gate(b"ok:2")
    runner = _runner(
        bus, processor, registry, batch_size=2, end_offsets=bus.end_offsets_reader(),
        lag_interval_s=0.0,
    )  # fmt: skip
    task = asyncio.create_task(runner.run())
    await asyncio.wait_for(processor.entered[b"ok:2"].wait(), 5)
    assert _metric(registry, "fedrelay_stage_queue_depth", topic="in", partition="0") == 3
    gate.set()
    await wait_until(
        lambda: _metric(registry, "fedrelay_stage_queue_depth", topic="in", partition="0") == 0
    )
    runner.stop()
    await asyncio.wait_for(task, 5)


async def test_insert_once_reports_whether_it_inserted(ledger: str) -> None:
    engine: AsyncEngine = create_engine(ledger)
    sessions: async_sessionmaker[AsyncSession] = async_sessionmaker(engine)
    row = {"chain_id": 4, "signer": "0xabc", "next_nonce": 1}
    table = SignerNonce.__table__
    async with sessions() as session, session.begin():
        assert await insert_once(session, table, row) is True  # type: ignore[arg-type]
    async with sessions() as session, session.begin():
        again = {**row, "next_nonce": 9}
        assert await insert_once(session, table, again, ("chain_id", "signer")) is False  # type: ignore[arg-type]
    async with sessions() as session:
        assert (await session.scalars(select(SignerNonce.next_nonce))).all() == [1]
    await engine.dispose()


class _BrokerAwayOnce:
    """A bus whose first transaction fails at commit, as when the broker restarts."""

    def __init__(self, inner: MemoryBus) -> None:
        self.inner = inner
        self.failures_left = 1

    def producer(self, *, transactional_id: str | None = None) -> object:
        return _FailingProducer(self.inner.producer(transactional_id=transactional_id), self)

    def consumer(self, topics: list[str], **options: object) -> object:
        return self.inner.consumer(topics, **options)  # type: ignore[arg-type]


class _FailingProducer:
    def __init__(self, inner: object, bus: _BrokerAwayOnce) -> None:
        self._inner = inner
        self._bus = bus

    def __getattr__(self, name: str) -> object:
        return getattr(self._inner, name)

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[None]:
        async with self._inner.transaction():  # type: ignore[attr-defined]
            yield
            if self._bus.failures_left:
                self._bus.failures_left -= 1
                raise BusError("broker went away during commit")


async def test_failed_hand_off_reconnects_and_delivers_once(
    bus: MemoryBus, registry: CollectorRegistry
) -> None:
    await _send(bus, b"ok:0", b"ok:1")
    processor = ScriptedProcessor()
    runner = _runner(bus, processor, registry)
    runner.bus = _BrokerAwayOnce(bus)  # type: ignore[assignment]
    task = asyncio.create_task(runner.run())
    out = await _read(bus, "out", 2)
    runner.stop()
    await asyncio.wait_for(task, 5)

    assert [r.value for r in out] == [b"done:0", b"done:1"]
    assert processor.calls == [b"ok:0", b"ok:1", b"ok:0", b"ok:1"]  # the batch was replayed
    assert await _committed(bus) == 2
    assert _metric(registry, "fedrelay_stage_processed_total") == 2


class _LedgerAwayOnce:
    """A session factory whose first session after the runner's start-up (which counts the
    DLQ entries) cannot connect: the ledger is restarting when the record is dead-lettered."""

    def __init__(self, inner: async_sessionmaker[AsyncSession]) -> None:
        self.inner = inner
        self.healthy_left = 1
        self.failures_left = 1

    def __call__(self) -> AsyncSession:
        if self.healthy_left:
            self.healthy_left -= 1
        elif self.failures_left:
            self.failures_left -= 1
            raise ConnectionError("ledger restarting")
        return self.inner()


async def test_dead_letter_waits_for_the_ledger(
    bus: MemoryBus, registry: CollectorRegistry, ledger: str
) -> None:
    engine = create_engine(ledger)
    sessions = async_sessionmaker(engine)
    await _send(bus, b"poison")
    away = _LedgerAwayOnce(sessions)
    runner = _runner(bus, ScriptedProcessor(), registry, dead_letters=SqlRelayerLedger(away))
    task = asyncio.create_task(runner.run())
    [dead] = await _read(bus, "dlq", 1)
    runner.stop()
    await asyncio.wait_for(task, 5)
    async with sessions() as session:
        entries = (await session.scalars(select(DeadLetter.message_key))).all()
    await engine.dispose()

    assert dead.value == b"poison"
    assert away.failures_left == 0
    assert entries == ["in:0:0"]
    assert _metric(registry, "fedrelay_stage_retried_total") == 1
    assert _metric(registry, "fedrelay_stage_failed_total") == 1


async def test_dlq_gauge_counts_the_ledger_entries_not_yet_requeued(
    bus: MemoryBus, registry: CollectorRegistry, ledger: str
) -> None:
    engine = create_engine(ledger)
    sessions = async_sessionmaker(engine, expire_on_commit=False)
    async with sessions() as session, session.begin():  # left by an earlier run of the stage
        session.add(DeadLetter(stage="test", message_key="in:0:90", reason="bad", body=b"x"))
        session.add(DeadLetter(stage="other", message_key="in:0:91", reason="bad", body=b"y"))
    runner = _runner(
        bus,
        ScriptedProcessor(),
        registry,
        dead_letters=SqlRelayerLedger(sessions),
        lag_interval_s=0.05,
    )
    task = asyncio.create_task(runner.run())
    try:
        await wait_until(lambda: _metric(registry, "fedrelay_dlq_entries") == 1)
        await _send(bus, b"poison")
        await wait_until(lambda: _metric(registry, "fedrelay_dlq_entries") == 2)
        async with sessions() as session, session.begin():  # an operator requeues both
            for entry in await session.scalars(
                select(DeadLetter).where(DeadLetter.stage == "test")
            ):
                entry.requeued_at = entry.created_at
        await wait_until(lambda: _metric(registry, "fedrelay_dlq_entries") == 0)
    finally:
        runner.stop()
        await asyncio.wait_for(task, 5)
        await engine.dispose()
    assert registry.get_sample_value("fedrelay_dlq_entries", {"stage": "other"}) is None


class _BrokerAwayAtStart:
    """A bus whose first two producers cannot connect (the broker is not up yet)."""

    def __init__(self, inner: MemoryBus) -> None:
        self.inner = inner
        self.refusals_left = 2

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)

    def producer(self, **options: object) -> object:
        producer = self.inner.producer(**options)  # type: ignore[arg-type]
        if self.refusals_left:
            self.refusals_left -= 1

            async def refuse() -> None:
                raise BusError("cannot start producer: connection refused")

            producer.start = refuse  # type: ignore[method-assign]
        return producer


async def test_a_stage_started_before_its_broker_waits_for_it(
    bus: MemoryBus, registry: CollectorRegistry
) -> None:
    await _send(bus, b"ok:0")
    away = _BrokerAwayAtStart(bus)
    runner = _runner(bus, ScriptedProcessor(), registry)
    runner.bus = away  # type: ignore[assignment]
    task = asyncio.create_task(runner.run())
    out = await _read(bus, "out", 1)
    runner.stop()
    await asyncio.wait_for(task, 5)

    assert away.refusals_left == 0
    assert [r.value for r in out] == [b"done:0"]


async def test_batches_in_flight_are_processed_together_and_hand_on_in_poll_order(
    bus: MemoryBus, registry: CollectorRegistry
) -> None:
    await _send(bus, *(b"ok:%d" % i for i in range(4)))
    processor = ScriptedProcessor()
    first = processor.gate(b"ok:0")
    runner = _runner(bus, processor, registry, batch_size=1, batches_in_flight=3)
    task = asyncio.create_task(runner.run())

    await wait_until(lambda: {b"ok:0", b"ok:1", b"ok:2"} <= set(processor.calls))
    # ok:1 and ok:2 ended while ok:0 waits, but none hands on before ok:0 and the runner takes
    # no fourth batch while three are in flight
    assert b"ok:3" not in processor.calls
    assert await _committed(bus) is None
    assert bus.end_offset(Partition("out", 0)) == 0
    first.set()
    out = await _read(bus, "out", 4)
    runner.stop()
    await asyncio.wait_for(task, 5)

    assert [r.value for r in out] == [b"done:%d" % i for i in range(4)]
    assert await _committed(bus) == 4


async def test_a_failed_hand_off_with_batches_in_flight_replays_them_all_once(
    bus: MemoryBus, registry: CollectorRegistry
) -> None:
    await _send(bus, *(b"ok:%d" % i for i in range(3)))
    processor = ScriptedProcessor()
    first = processor.gate(b"ok:0")
    runner = _runner(bus, processor, registry, batch_size=1, batches_in_flight=3)
    runner.bus = _BrokerAwayOnce(bus)  # type: ignore[assignment]
    task = asyncio.create_task(runner.run())
    await wait_until(lambda: {b"ok:0", b"ok:1", b"ok:2"} <= set(processor.calls))
    first.set()  # ok:0's hand-off fails: ok:1 and ok:2 must not hand on past it

    out = await _read(bus, "out", 3)
    runner.stop()
    await asyncio.wait_for(task, 5)

    assert [r.value for r in out] == [b"done:0", b"done:1", b"done:2"]
    assert bus.end_offset(Partition("out", 0)) == 3  # each output once
    assert processor.calls.count(b"ok:0") == 2  # replayed from the committed offsets
    assert await _committed(bus) == 3
    assert _metric(registry, "fedrelay_stage_processed_total") == 3
