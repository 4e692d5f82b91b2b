"""The stage runner: consume a batch, process each record, hand the outputs on atomically.

One loop serves every relayer stage::

    poll a batch -> for each record: process (ledger effects, idempotent) -> outputs
                 -> one bus transaction: send every output + commit the input offsets

A crash anywhere before the transaction commits replays the batch; the ledger's unique keys (the
insert-once writes of :mod:`fedrelay.ports.relayer_ledger`) make the replayed effects no-ops, and
the outputs of the aborted attempt are never visible to ``read_committed`` consumers. So each
input yields its outputs exactly once.

Failures are sorted by what they say about the record:

- :class:`RetryableError` (the answer is "not yet": a VAA not yet signed, an RPC timeout): the
  record is tried again after a capped, jittered backoff; after the last attempt it goes to the
  dead-letter topic with the reason;
- any other :class:`~fedrelay.relayer.errors.RelayerError` or
  :class:`~fedrelay.protocol.wormhole.WormholeError` (the record itself is bad: malformed, a forged
  signature): straight to the dead-letter topic, and the rest flows on;
- anything else (the ledger or the broker is down): not the record's fault, so it is retried with
  backoff for as long as it takes, never dead-lettered.

Retrying holds the record's partition (the next records of that partition wait), which keeps
per-emitter order. If the hand-off itself fails (the broker restarted), the runner reconnects and
resumes from the committed offsets, so the batch is processed again. ``stop()`` (or SIGTERM, see
:func:`run_until_signalled`) lets the in-flight batch finish, commits it, and returns; a backoff
wait in progress is cut short and its record is left for the next owner of the partition.

Batches in flight (``batches_in_flight`` above 1, the deliver stage's setting): the runner polls
and starts the next batch while earlier ones are still processing (a deliverer waiting for the
receipts of one batch submits the next meanwhile). Hand-offs stay in poll order: a batch hands
on only after the one polled before it has, so committed offsets never pass a record that has
not ended; when one cannot hand on (or stopping cut it short), no later one does, every batch in
flight ends, and the runner replays from the committed offsets. What changes is order under
retries: a record being retried holds back the later records of its partition in its own batch
only, not those already polled into a later batch, so a stage that needs strict per-partition
order keeps the default of 1.

Limit: transactional ids are per instance and the Kafka client sends offsets by group id only (no
generation check as in KIP-447), so an instance that lost its partitions in a rebalance while
still processing can still commit; in that window a batch can be handed on twice. Downstream effects
stay single because deliveries are unique per (digest, chain) and the destination refuses a
consumed digest.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import random
import signal
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Protocol, TypeVar, runtime_checkable

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram

from fedrelay.ports.bus import Bus, Consumer, Headers, Partition, Producer, Record
from fedrelay.ports.relayer_ledger import RelayerLedger, RelayerLedgerWork
from fedrelay.protocol.logfields import log_fields
from fedrelay.protocol.tracing import extract_context, inject_headers
from fedrelay.protocol.wormhole import WormholeError
from fedrelay.relayer.backoff import BackoffPolicy
from fedrelay.relayer.errors import RelayerError, RetryableError
from fedrelay.relayer.records import ThresholdTick, decode_message, message_label

log = logging.getLogger(__name__)
_TRACER = trace.get_tracer("fedrelay.relayer")

_T = TypeVar("_T")
_Item = TypeVar("_Item")

REASON_HEADER = "fedrelay-dlq-reason"
STAGE_HEADER = "fedrelay-dlq-stage"
SOURCE_HEADER = "fedrelay-dlq-source"


@dataclass(frozen=True)
class Output:
    """A record a stage hands to the next one."""

    topic: str
    value: bytes
    key: bytes | None = None


@dataclass(frozen=True)
class StageResult:
    """What processing one record produced.

    Attributes:
        outputs: Records to send, in order, in the same transaction as the input's offset.
        emitted_at_ms: When the message was emitted on its source chain (unix ms), for the
            end-to-end latency histogram; None when unknown.
        source: The source the record came from (for example ``"chain-2"``), for the
            last-seen gauge; None when not meaningful.
    """

    outputs: tuple[Output, ...] = ()
    emitted_at_ms: int | None = None
    source: str | None = None


@runtime_checkable
class RecordProcessor(Protocol):
    """The stage-specific part: turn one input record into outputs (and ledger effects).

    Effects must be idempotent: the same record may be processed again after a crash.
    """

    async def process(self, record: Record) -> StageResult: ...


@runtime_checkable
class BatchProcessor(RecordProcessor, Protocol):
    """A processor that takes a whole polled batch at once (the deliver stage's pipeline).

    ``process_batch`` returns one entry per record, in order: its result, or the exception its
    processing raised. A record that failed then goes through the runner's usual handling (retry
    with backoff, the DLQ) one at a time, starting from that exception, through ``process``.
    """

    async def process_batch(
        self, records: Sequence[Record]
    ) -> Sequence[StageResult | Exception]: ...


EndOffsets = Callable[[frozenset[Partition]], Awaitable[Mapping[Partition, int]]]
"""Where each partition ends now (the offset the next record will get); feeds the lag gauge."""


def position_of(record: Record) -> str:
    """``topic:partition:offset``, a record's unique place on the bus."""
    return f"{record.topic}:{record.partition}:{record.offset}"


def message_of(record: Record) -> str | None:
    """The id of the message a record carries (``chain/emitter/sequence``), for log lines.

    None when the record is not a relayer message (a dead letter's own record, a malformed one).
    """
    try:
        message = decode_message(record.value)
    except Exception:  # unreadable records are the stage's to judge; the log line goes on
        return None
    if isinstance(message, ThresholdTick):
        return None
    return message_label(message.message_id)


@contextlib.contextmanager
def record_context(record: Record) -> Iterator[None]:
    """Run the block in the trace a record carries (for work done on a batch's records, whose
    own spans open only after the batch: the ledger rows written keep the record's trace)."""
    token = otel_context.attach(extract_context(record.headers))
    try:
        yield
    finally:
        otel_context.detach(token)


async def each_concurrently(
    records: Sequence[Record], work: Callable[[Record], Awaitable[_T]], limit: int
) -> list[_T | Exception]:
    """Run `work` on every record, at most `limit` at once, each in its record's trace.

    Returns:
        Per record, in order: what `work` returned, or the exception it raised.
    """
    gate = asyncio.Semaphore(limit)

    async def one(record: Record) -> _T | Exception:
        async with gate:
            with record_context(record):
                try:
                    return await work(record)
                except Exception as exc:  # the runner judges it (retry or DLQ) on its own
                    return exc

    return list(await asyncio.gather(*(one(record) for record in records)))


async def store_batch(
    ledger: RelayerLedger,
    items: Sequence[_Item],
    store: Callable[[RelayerLedgerWork, Sequence[_Item]], Awaitable[Sequence[_T]]],
) -> list[_T | Exception]:
    """Store a batch's items in one ledger transaction; if it fails, each in one of its own.

    `store` applies items in order within the transaction it is given and returns one outcome
    per item. When the batch's transaction raises, nothing of it is kept and every item is
    stored again alone, so a failure that is one item's (a conflicting row) stays with that
    item, and the others' outcomes are the ones one-by-one processing gives.

    Returns:
        Per item, in order: its outcome, or the exception storing it alone raised.
    """
    try:
        async with ledger.transaction() as work:
            return list(await store(work, items))
    except Exception:  # nothing of the batch was stored: each item on its own
        outcomes: list[_T | Exception] = []
        for item in items:
            try:
                async with ledger.transaction() as work:
                    [outcome] = await store(work, [item])
            except Exception as exc:
                outcomes.append(exc)
            else:
                outcomes.append(outcome)
        return outcomes


# --- metrics --------------------------------------------------------------------------------------


class StageMetrics:
    """Prometheus metrics of every stage in one registry (label ``stage``)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.processed = Counter(
            "fedrelay_stage_processed", "Records a stage processed and committed.", ["stage"],
            registry=registry,
        )  # fmt: skip
        self.failed = Counter(
            "fedrelay_stage_failed", "Records a stage gave up on (sent to the DLQ).", ["stage"],
            registry=registry,
        )  # fmt: skip
        self.retried = Counter(
            "fedrelay_stage_retried", "Attempts a stage repeated after a failure.", ["stage"],
            registry=registry,
        )  # fmt: skip
        self.queue_depth = Gauge(
            "fedrelay_stage_queue_depth", "Records waiting in a stage's input partition (lag).",
            ["stage", "topic", "partition"], registry=registry,
        )  # fmt: skip
        self.latency = Histogram(
            "fedrelay_stage_latency_seconds",
            "From emission on the source chain to the end of this stage.",
            ["stage"], registry=registry,
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600),
        )  # fmt: skip
        self.last_seen = Gauge(
            "fedrelay_stage_last_seen_timestamp_seconds",
            "When a stage last processed a record from a source (unix seconds).",
            ["stage", "source"], registry=registry,
        )  # fmt: skip
        self.step_seconds = Counter(
            "fedrelay_stage_step_seconds",
            "Wall-clock seconds a stage spent per step of its batches: process (the records' "
            "work: ledger, chain reads, signatures; retry waits included) and handoff (the bus "
            "transaction).",
            ["stage", "step"], registry=registry,
        )  # fmt: skip
        self.batches = Counter(
            "fedrelay_stage_batches", "Batches (bus transactions) a stage handed on.", ["stage"],
            registry=registry,
        )  # fmt: skip
        self.dlq_entries = Gauge(
            "fedrelay_dlq_entries", "Dead letters of a stage in the ledger not yet requeued.",
            ["stage"], registry=registry,
        )  # fmt: skip


_METRICS: dict[int, tuple[CollectorRegistry, StageMetrics]] = {}


def stage_metrics(registry: CollectorRegistry = REGISTRY) -> StageMetrics:
    """The stage metrics registered in `registry` (created on first use)."""
    held = _METRICS.get(id(registry))
    if held is None or held[0] is not registry:
        held = (registry, StageMetrics(registry))
        _METRICS[id(registry)] = held
    return held[1]


# --- the runner -----------------------------------------------------------------------------------


@dataclass
class _Done:
    """One record's fate inside a batch, applied to the metrics once the batch commits."""

    outputs: list[tuple[Output, Headers]]
    result: StageResult | None = None
    dead_reason: str | None = None
    retries: int = 0


@dataclass
class StageRunner:
    """Runs one stage: ``run()`` until ``stop()``.

    Attributes:
        name: The stage's name (metrics label, span attribute, DLQ header).
        bus: The bus to consume from and produce to.
        inputs: The topics consumed.
        group_id: The consumer group (every instance of the stage shares it).
        transactional_id: This instance's transactional id (stable across restarts).
        processor: The stage-specific part.
        dlq_topic: Where records the stage gives up on go, with the reason in a header.
        policy: Backoff between attempts and how many a retryable failure gets.
        batch_size: The most records processed per transaction.
        poll_wait_s: How long one poll waits for records.
        batches_in_flight: How many polled batches may be processed at once (1: each batch is
            processed and handed on before the next poll). Above 1, the next batch is polled and
            processed while earlier ones are still processing; hand-offs stay in poll order.
        metrics: Where the stage's metrics go.
        end_offsets: Tells where input partitions end, for the lag gauge (optional).
        lag_interval_s: How often the lag and DLQ gauges are refreshed.
        dead_letters: The ledger, to record each DLQ entry (optional).
        rng: Random source of the backoff jitter.
        tracer: Where the per-record spans go (default: the process's tracer provider).
    """

    name: str
    bus: Bus
    inputs: Sequence[str]
    group_id: str
    transactional_id: str
    processor: RecordProcessor
    dlq_topic: str = "dlq"
    policy: BackoffPolicy = field(default_factory=BackoffPolicy)
    batch_size: int = 100
    poll_wait_s: float = 0.5
    batches_in_flight: int = 1
    metrics: StageMetrics = field(default_factory=stage_metrics)
    end_offsets: EndOffsets | None = None
    lag_interval_s: float = 5.0
    dead_letters: RelayerLedger | None = None
    rng: random.Random = field(default_factory=random.Random)
    tracer: trace.Tracer = field(default_factory=lambda: _TRACER)

    _stopping: asyncio.Event = field(init=False, default_factory=asyncio.Event)
    _consumer: Consumer | None = field(init=False, default=None)
    _producer: Producer | None = field(init=False, default=None)
    _next_offsets: dict[Partition, int] = field(init=False, default_factory=dict)
    _lag_measured_at: float = field(init=False, default=0.0)

    def stop(self) -> None:
        """Ask the runner to finish its in-flight batch, commit it and return from ``run()``."""
        self._stopping.set()

    def assignment(self) -> frozenset[Partition]:
        """The input partitions this instance holds now (empty while it is not connected)."""
        return self._consumer.assignment() if self._consumer is not None else frozenset()

    @property
    def stopping(self) -> bool:
        """Whether ``stop()`` was called."""
        return self._stopping.is_set()

    async def run(self) -> None:
        """Consume, process and hand on batches until ``stop()``."""
        if self.batches_in_flight < 1:
            raise ValueError(f"batches_in_flight must be at least 1, got {self.batches_in_flight}")
        try:
            await self._open()
        except Exception as exc:  # the broker is away at start: wait for it as after a drop
            log.warning("stage %s: cannot connect (%s); retrying", self.name, exc)
            await self._reconnect()
        await self._count_dead_letters()
        in_flight: collections.deque[asyncio.Task[bool]] = collections.deque()
        try:
            while not self._stopping.is_set():
                assert self._consumer is not None
                try:
                    records = await self._consumer.poll(self.poll_wait_s, self.batch_size)
                except Exception as exc:  # the broker is away: start over when it is back
                    log.warning("stage %s: poll failed (%s); reconnecting", self.name, exc)
                    await self._finish(in_flight)
                    await self._reconnect()
                    continue
                if records:
                    previous = in_flight[-1] if in_flight else None
                    in_flight.append(asyncio.create_task(self._handle_batch(records, previous)))
                if not await self._room_for_a_batch(in_flight):  # with 1: this batch has ended
                    await self._reconnect()  # a hand-off failed: replay from the committed offsets
                    continue
                await self._measure_lag()
            await self._finish(in_flight)
        finally:
            for task in in_flight:
                task.cancel()
            await asyncio.gather(*in_flight, return_exceptions=True)
            await self._close()

    async def _room_for_a_batch(self, in_flight: collections.deque[asyncio.Task[bool]]) -> bool:
        """Wait until another batch may start (finished batches are collected); False when one
        did not hand on, after every batch in flight has ended (no later one hands on then)."""
        while in_flight and (len(in_flight) >= self.batches_in_flight or in_flight[0].done()):
            if not await in_flight.popleft():
                await self._finish(in_flight)
                return False
        return True

    async def _finish(self, in_flight: collections.deque[asyncio.Task[bool]]) -> None:
        """Let every batch in flight end (each hands on in turn unless an earlier one failed)."""
        while in_flight:
            await in_flight.popleft()

    # -- connections --

    async def _open(self) -> None:
        self._producer = self.bus.producer(transactional_id=self.transactional_id)
        await self._producer.start()
        self._consumer = self.bus.consumer(
            list(self.inputs), group_id=self.group_id, on_assigned=self._assigned
        )
        await self._consumer.start()

    async def _close(self) -> None:
        consumer, producer = self._consumer, self._producer
        self._consumer = self._producer = None
        if consumer is not None:
            await consumer.stop()
        if producer is not None:
            await producer.stop()

    async def _reconnect(self) -> None:
        """Start over from the committed offsets: the failed batch comes back and is processed
        again (idempotently)."""
        with contextlib.suppress(Exception):  # tearing down a broken connection may fail too
            await self._close()
        failures = 0
        while not await self._wait(self.policy.delay(min(failures + 1, 30), self.rng)):
            try:
                await self._open()
                return
            except Exception as exc:
                failures += 1
                log.warning("stage %s: cannot reconnect yet (%s)", self.name, exc)
                with contextlib.suppress(Exception):
                    await self._close()

    # -- one batch --

    async def _handle_batch(
        self, records: list[Record], previous: asyncio.Task[bool] | None = None
    ) -> bool:
        """Process a batch and hand it on (its outputs and input offsets in one bus
        transaction) once `previous`, the batch polled before it, has; False when this batch or
        an earlier one could not hand on (nothing of this batch became visible then), or when
        stopping cut this batch short (what ended is handed on; later batches are not)."""
        done: list[_Done] = []
        offsets: dict[Partition, int] = {}
        firsts: Sequence[StageResult | Exception | None] = [None] * len(records)
        started = time.time_ns()
        clock = time.perf_counter()
        if isinstance(self.processor, BatchProcessor) and len(records) > 1:
            firsts = await self.processor.process_batch(records)
        whole = True  # every record of the batch ended (none left for a later owner)
        for record, first in zip(records, firsts, strict=True):
            if isinstance(first, StageResult):
                # Processed together with the batch: its span covers the batch's time, in the
                # record's own trace, so that what it hands on stays in that trace.
                with self._process_span(record, start_time=started):
                    headers = inject_headers()
                done.append(_Done([(output, headers) for output in first.outputs], result=first))
                offsets[record.position] = record.offset + 1
                continue
            with log_fields(message_id=message_of(record)):
                fate = await self._handle_record(record, first)
            if fate is None:  # stopping during a backoff wait: leave this record and the rest
                whole = False
                break
            done.append(fate)
            offsets[record.position] = record.offset + 1
        self.metrics.step_seconds.labels(self.name, "process").inc(time.perf_counter() - clock)
        if previous is not None and not await asyncio.shield(previous):
            return False  # an earlier batch did not hand on: this one is replayed after it
        if not offsets:
            return whole
        handing_off = time.perf_counter()
        try:
            await self._commit([pair for fate in done for pair in fate.outputs], offsets)
        except Exception as exc:  # the broker refused or is away: nothing became visible
            log.warning(
                "stage %s: hand-off failed (%s: %s); reconnecting to replay the batch",
                self.name, type(exc).__name__, exc,
            )  # fmt: skip
            self.metrics.retried.labels(self.name).inc()
            return False
        self.metrics.step_seconds.labels(self.name, "handoff").inc(
            time.perf_counter() - handing_off
        )
        self.metrics.batches.labels(self.name).inc()
        self._next_offsets.update(offsets)
        self._count(done)
        return whole  # a batch cut short keeps later ones from handing on past its records

    async def _commit(
        self, outputs: list[tuple[Output, Headers]], offsets: dict[Partition, int]
    ) -> None:
        assert self._producer is not None
        async with self._producer.transaction():
            for output, headers in outputs:
                await self._producer.send(
                    output.topic, output.value, key=output.key, headers=headers
                )
            await self._producer.send_offsets(offsets, self.group_id)

    def _count(self, done: list[_Done]) -> None:
        now = time.time()
        for fate in done:
            if fate.retries:
                self.metrics.retried.labels(self.name).inc(fate.retries)
            if fate.dead_reason is not None:
                self.metrics.failed.labels(self.name).inc()
                continue
            self.metrics.processed.labels(self.name).inc()
            result = fate.result
            if result is not None and result.emitted_at_ms is not None:
                latency = max(0.0, now - result.emitted_at_ms / 1000)
                self.metrics.latency.labels(self.name).observe(latency)
            if result is not None and result.source is not None:
                self.metrics.last_seen.labels(self.name, result.source).set(now)

    # -- one record --

    def _process_span(
        self, record: Record, start_time: int | None = None
    ) -> AbstractContextManager[Span]:
        """The consumer span of one record's processing, in the record's trace."""
        return self.tracer.start_as_current_span(
            f"process {record.topic}",  # messaging conventions: "{operation} {destination}"
            context=extract_context(record.headers),
            kind=SpanKind.CONSUMER,
            start_time=start_time,
            attributes={
                "messaging.system": "kafka",
                "messaging.operation.type": "process",
                "messaging.operation.name": "process",
                "messaging.destination.name": record.topic,
                "messaging.destination.partition.id": str(record.partition),
                "messaging.kafka.offset": record.offset,
                "messaging.consumer.group.name": self.group_id,
                "fedrelay.stage": self.name,
            },
        )

    async def _handle_record(self, record: Record, first: Exception | None = None) -> _Done | None:
        """Process one record until it succeeds or goes to the DLQ; None when stopping.

        `first` is the failure of an attempt already made (in a batch), handled as if
        ``process`` had just raised it.
        """
        failures = 0  # attempts that failed (and did not dead-letter the record)
        waits = 0  # backoff waits done, i.e. attempts repeated
        while True:
            with self._process_span(record) as span:
                dead_reason: str | None = None
                try:
                    if first is not None:
                        failed, first = first, None
                        raise failed
                    result = await self.processor.process(record)
                except RetryableError as exc:
                    failures += 1
                    cause: Exception = exc
                    if self.policy.exhausted(failures):
                        dead_reason = f"gave up after {failures} attempts: {exc}"
                except (RelayerError, WormholeError) as exc:  # the record itself is bad
                    cause = exc
                    dead_reason = f"{type(exc).__name__}: {exc}"
                except Exception as exc:  # infrastructure, not the record: retry, never DLQ
                    failures += 1
                    cause = exc
                else:
                    headers = inject_headers()
                    pairs = [(output, headers) for output in result.outputs]
                    return _Done(pairs, result=result, retries=waits)
                span.record_exception(cause)
                span.set_status(Status(StatusCode.ERROR, str(cause)))
                if dead_reason is not None:
                    try:
                        return await self._dead(record, dead_reason, waits)
                    except Exception as exc:  # the ledger is away: try the record again later
                        failures += 1
                        cause = exc
                # Logged inside the span, so the line carries the message's trace id.
                log.info(
                    "stage %s: %s failed (%s: %s); attempt %d again later",
                    self.name, position_of(record), type(cause).__name__, cause, failures + 1,
                )  # fmt: skip
            delay = self.policy.delay(min(failures, self.policy.max_attempts), self.rng)
            if await self._wait(delay):
                return None
            waits += 1

    async def _dead(self, record: Record, reason: str, retries: int) -> _Done:
        log.warning("stage %s: %s goes to the DLQ: %s", self.name, position_of(record), reason)
        if self.dead_letters is not None:
            await self._record_dead_letter(record, reason)
        headers = (
            *inject_headers(),
            (REASON_HEADER, reason.encode()),
            (STAGE_HEADER, self.name.encode()),
            (SOURCE_HEADER, position_of(record).encode()),
        )
        output = Output(self.dlq_topic, record.value, key=record.key)
        return _Done([(output, headers)], dead_reason=reason, retries=retries)

    async def _record_dead_letter(self, record: Record, reason: str) -> None:
        assert self.dead_letters is not None
        key = position_of(record)
        async with self.dead_letters.transaction() as work:
            # a replay of the same record adds no second entry
            await work.record_dead_letter(self.name, key, reason, record.value)
        await self._count_dead_letters()

    async def _count_dead_letters(self) -> None:
        """Set the DLQ gauge to this stage's ledger entries not yet requeued (by anyone)."""
        if self.dead_letters is None:
            return
        try:
            async with self.dead_letters.reading() as work:
                waiting = await work.open_dead_letter_count(self.name)
        except Exception as exc:  # a stale gauge is no reason to stop relaying
            log.debug("stage %s: cannot count dead letters: %s", self.name, exc)
            return
        self.metrics.dlq_entries.labels(self.name).set(waiting or 0)

    async def _wait(self, seconds: float) -> bool:
        """Sleep `seconds` unless asked to stop first; True when stopping."""
        try:
            await asyncio.wait_for(self._stopping.wait(), seconds)
        except TimeoutError:
            return False
        return True

    # -- lag --

    async def _measure_lag(self) -> None:
        now = time.monotonic()
        if now - self._lag_measured_at < self.lag_interval_s:
            return
        self._lag_measured_at = now
        await self._count_dead_letters()  # an operator may have requeued entries meanwhile
        if self.end_offsets is None or self._consumer is None:
            return
        assigned = self._consumer.assignment()
        if not assigned:
            return
        try:
            ends = await self.end_offsets(assigned)
            for partition in assigned:
                if partition not in self._next_offsets:
                    committed = await self._consumer.committed(partition)
                    self._next_offsets[partition] = committed or 0
                lag = max(0, ends.get(partition, 0) - self._next_offsets[partition])
                gauge = self.metrics.queue_depth.labels(
                    self.name, partition.topic, str(partition.index)
                )
                gauge.set(lag)
        except Exception as exc:  # a missing gauge update is no reason to stop relaying
            log.debug("stage %s: cannot measure lag: %s", self.name, exc)

    async def _assigned(self, partitions: frozenset[Partition]) -> None:
        # Another instance may have moved these partitions on since this one last held them.
        for partition in partitions:
            self._next_offsets.pop(partition, None)


class RunningStage(Protocol):
    """What :func:`run_until_signalled` runs: a :class:`StageRunner`, or a watcher."""

    name: str

    async def run(self) -> None:
        """Work until ``stop()``."""
        ...

    def stop(self) -> None:
        """Finish what is in flight and return from ``run()``."""
        ...


async def run_until_signalled(
    runners: Sequence[RunningStage],
    signals: Sequence[signal.Signals] = (signal.SIGTERM, signal.SIGINT),
) -> None:
    """Run stages together; SIGTERM or SIGINT stops each after its in-flight batch.

    If one stage fails, the others are stopped too and the failure is raised.
    """
    loop = asyncio.get_running_loop()

    def stop_all() -> None:
        log.info("signal received: draining in-flight batches")
        for runner in runners:
            runner.stop()

    for sig in signals:
        loop.add_signal_handler(sig, stop_all)
    try:
        tasks = [asyncio.create_task(runner.run(), name=runner.name) for runner in runners]
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        if any(task.exception() for task in done):
            stop_all()
        await asyncio.gather(*tasks)
    finally:
        for sig in signals:
            loop.remove_signal_handler(sig)
