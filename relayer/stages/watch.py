"""The watch stage: messages emitted on one source chain become observations on the bus.

The watcher is the pipeline's source, so it has no input topic; it polls its chain. Each poll::

    cursor (ledger)  -> still on the canonical chain? (hash at the cursor's position)
                        no: unwind -- observations whose block left the chain are marked REORGED
                            (never produced again, so never attested), re-included ones keep on,
                            and reading resumes after the last position still canonical
    read positions after the cursor up to the head at the configured finality (and, where the
                        source follows the chain's newest block, its last `reread` positions
                        before the cursor again: a node may answer for its newest block before
                        it serves that block's messages)
    sequence gaps per emitter -> backfill: read again from the emitter's last known position
    new observations -> ledger rows (unique per message id) and bus records keyed by emitter,
                        then the cursor moves to the last position read

One poll is one ledger transaction wrapped around one bus transaction: the records are committed
on the bus first and the ledger after, so a crash in between re-reads the same positions and
produces the records again (downstream stages are idempotent) instead of losing them.

Each record carries the trace context of the emitting transaction when the source knows it, so
the observation joins that trace. When it does not (chains keep no trace context), a message of a
round (TASK_ASSIGNED, UPDATE_COMMITTED, ROUND_SETTLED) joins the round's derived trace
(:func:`~fedrelay.protocol.tracing.round_context`); other messages start a trace of their
own.
The ledger row keeps the context the record was produced under.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import SpanKind

from fedrelay.ports.bus import Bus, Headers, Producer
from fedrelay.ports.relay import EmittedMessage, SourceChain
from fedrelay.ports.relayer_ledger import ObservationStatus, RelayerLedger, RelayerLedgerWork
from fedrelay.protocol.tracing import (
    context_from_traceparent,
    inject_headers,
    round_attributes,
    round_context,
    traceparent,
)
from fedrelay.protocol.wormhole import (
    MessageId,
    PayloadError,
    RoundSettled,
    TaskAssigned,
    UpdateCommitted,
    decode_payload,
)
from fedrelay.protocol.wormhole.observation import Observation
from fedrelay.relayer.backoff import BackoffPolicy
from fedrelay.relayer.records import encode_message, message_key, message_label
from fedrelay.relayer.settings import RelayerSettings
from fedrelay.relayer.stage import StageMetrics, stage_metrics

log = logging.getLogger(__name__)
_TRACER = trace.get_tracer("fedrelay.relayer")


class _ChainMoved(Exception):
    """The chain reorganised under a poll while it read; the poll is made again."""

    def __init__(self, position: int | None, reason: str) -> None:
        super().__init__(reason)
        self.position = position


@dataclass(frozen=True)
class WatchReport:
    """What one poll did.

    Attributes:
        produced: Observations handed on (message ids).
        reorged: Observations marked REORGED by this poll.
        backfilled: Messages found by re-reading after a sequence gap.
        missing: Sequences still missing after the backfill (emitter label, sequence).
        position: The cursor after the poll (None before anything was read).
    """

    produced: tuple[MessageId, ...] = ()
    reorged: tuple[MessageId, ...] = ()
    backfilled: tuple[MessageId, ...] = ()
    missing: tuple[tuple[str, int], ...] = ()
    position: int | None = None


@dataclass
class Watcher:
    """Watches one source chain (see the module docstring); ``run()`` until ``stop()``.

    Attributes:
        source: The chain adapter.
        bus: Where observations go.
        ledger: The ledger.
        transactional_id: This watcher's transactional id (stable across restarts).
        topic: The observations topic.
        start: The first position to read when the ledger has no cursor yet.
        max_span: The most positions one poll reads.
        reorg_depth: How far back an unwind looks for the last canonical observation.
        poll_interval_s: The pause between polls that found nothing new.
        policy: Backoff after a failed poll (the chain or the broker is away).
        metrics: Where the stage's metrics go (label `name`).
        name: The stage's name (metrics label, span attribute).
        rng: Random source of the backoff jitter.
        tracer: Where the producer spans go (default: the process's tracer provider).
    """

    source: SourceChain
    bus: Bus
    ledger: RelayerLedger
    transactional_id: str
    topic: str = "observations"
    start: int = 0
    max_span: int = 1000
    reorg_depth: int = 128
    poll_interval_s: float = 1.0
    policy: BackoffPolicy = field(default_factory=BackoffPolicy)
    metrics: StageMetrics = field(default_factory=stage_metrics)
    name: str = "watch"
    rng: random.Random = field(default_factory=random.Random)
    tracer: trace.Tracer = field(default_factory=lambda: _TRACER)

    _stopping: asyncio.Event = field(init=False, default_factory=asyncio.Event)
    _producer: Producer | None = field(init=False, default=None)

    def stop(self) -> None:
        """Finish the poll in progress and return from ``run()``."""
        self._stopping.set()

    async def run(self) -> None:
        """Poll until ``stop()``; a failed poll is retried after a backoff."""
        failures = 0
        try:
            while not self._stopping.is_set():
                try:
                    report = await self.poll()
                except Exception as exc:  # the chain or the broker is away: try again later
                    failures += 1
                    log.warning("watch %s: poll failed (%s: %s)", self.source.source,
                                type(exc).__name__, exc)  # fmt: skip
                    await self._close()
                    delay = self.policy.delay(min(failures, self.policy.max_attempts), self.rng)
                    await self._pause(delay)
                    continue
                failures = 0
                if not report.produced and not report.reorged:
                    await self._pause(self.poll_interval_s)
        finally:
            await self._close()

    async def poll(self) -> WatchReport:
        """Read what is new on the chain and hand it on; see the module docstring.

        A reorg that happens while the poll reads (after the cursor's block was checked) is
        caught before anything is stored: the block the read continues from is checked again
        once the range and its last hash are read, and if it is gone the poll's changes are
        rolled back, to be made again by the next poll, which sees the reorg.
        """
        try:
            return await self._poll()
        except _ChainMoved as moved:
            log.info("watch %s: %s; reading again", self.source.source, moved)
            return WatchReport(position=moved.position)

    async def _poll(self) -> WatchReport:
        producer = await self._open()
        clock = time.perf_counter()
        async with self.ledger.transaction() as work:
            cursor = await work.cursor(self.source.source)
            reorged: list[MessageId] = []
            first = self.start
            read_before = -1  # positions up to this one were read by an earlier poll
            anchor: tuple[int, str] | None = None  # the block this read continues from
            stored = cursor.position if cursor is not None else None
            if cursor is not None and cursor.position >= self.start:
                # the source's newest positions read before are read again (`SourceChain.reread`);
                # what was stored then is not produced twice (`_record`)
                first = max(cursor.position + 1 - self.source.reread, self.start)
                read_before = cursor.position
                anchor = (cursor.position, cursor.position_hash or "")
                canonical = await self.source.position_hash(cursor.position)
                if (canonical or "") != (cursor.position_hash or ""):
                    fork = await self._unwind(work, cursor.position, reorged)
                    fork_hash = await self.source.position_hash(fork) or ""
                    await self._move_cursor(work, fork, fork_hash)
                    first = fork + 1
                    read_before = -1
                    anchor = (fork, fork_hash) if fork_hash else None
            head = await self.source.head()
            if first > head.number:
                return WatchReport(reorged=tuple(reorged), position=head.number)
            last = min(head.number, first + self.max_span - 1)
            last_hash = head.hash if last == head.number else await self.source.position_hash(last)
            emitted = list(await self.source.messages_between(first, last))
            backfilled, missing = await self._backfill(work, emitted, last)
            ordered = sorted([*emitted, *backfilled], key=_order)
            produced = await self._record(work, ordered, read_before)
            if anchor is not None:
                now = await self.source.position_hash(anchor[0])
                if (now or "") != anchor[1]:  # raised inside the transaction: rolled back
                    raise _ChainMoved(stored, f"block {anchor[0]} changed during the read")
            await self._move_cursor(work, last, last_hash or "")
            handing_off = time.perf_counter()
            self.metrics.step_seconds.labels(self.name, "process").inc(handing_off - clock)
            if produced:
                await self._produce(producer, produced)
        if produced:  # the bus transaction, then the ledger's commit
            self.metrics.step_seconds.labels(self.name, "handoff").inc(
                time.perf_counter() - handing_off
            )
            self.metrics.batches.labels(self.name).inc()
        self._count(produced)
        return WatchReport(
            produced=tuple(m.observation.message_id for m in produced),
            reorged=tuple(reorged),
            backfilled=tuple(m.observation.message_id for m in backfilled),
            missing=tuple(missing),
            position=last,
        )

    # -- reorgs --

    async def _unwind(
        self, work: RelayerLedgerWork, position: int, reorged: list[MessageId]
    ) -> int:
        """Mark observations a reorg removed; the last position still on the canonical chain."""
        floor = max(self.start - 1, position - self.reorg_depth)
        rows = await work.live_observations(self.source.chain_id, floor, position)
        fork = floor
        for row in rows:
            if await self.source.position_hash(row.block_number) == row.block_hash:
                fork = row.block_number  # hashes chain: everything up to here is intact
                break
            message_id = row.message_id
            again = await self.source.fetch_message(message_id, row.tx_hash)
            if again is not None and again.observation.digest == row.digest:
                found = again.observation  # re-included elsewhere
                await work.relocate_observation(
                    row.id, found.block_number, found.block_hash, found.tx_hash
                )
                continue
            if row.status != ObservationStatus.OBSERVED:
                log.error("watch %s: %s was %s before a reorg removed it", self.source.source,
                          message_label(message_id), row.status.value)  # fmt: skip
            await work.mark_reorged(row.id)
            reorged.append(message_id)
        log.warning("watch %s: reorg below position %d; %d message(s) removed, resuming after %d",
                    self.source.source, position, len(reorged), fork)  # fmt: skip
        return fork

    # -- gaps --

    async def _backfill(
        self, work: RelayerLedgerWork, emitted: Sequence[EmittedMessage], last: int
    ) -> tuple[list[EmittedMessage], list[tuple[str, int]]]:
        """Messages missing between each emitter's last known sequence and what was read."""
        by_emitter: dict[bytes, set[int]] = {}
        for message in emitted:
            by_emitter.setdefault(message.observation.emitter_address, set()).add(
                message.observation.sequence
            )
        found: list[EmittedMessage] = []
        missing: list[tuple[str, int]] = []
        for emitter, sequences in by_emitter.items():
            known = await work.last_known(self.source.chain_id, emitter)
            if known is None:
                continue  # the first messages this ledger sees of this emitter
            known_sequence, known_position = known
            wanted = set(range(int(known_sequence) + 1, max(sequences))) - sequences
            if not wanted:
                continue
            label = f"{self.source.chain_id}/{emitter.hex()}"
            log.warning("watch %s: sequence gap for %s: %s; reading again from position %d",
                        self.source.source, label, sorted(wanted), known_position)  # fmt: skip
            again = await self.source.messages_between(int(known_position), last)
            for message in again:
                observation = message.observation
                if observation.emitter_address == emitter and observation.sequence in wanted:
                    wanted.discard(observation.sequence)
                    found.append(message)
            missing += [(label, sequence) for sequence in sorted(wanted)]
        if missing:
            log.error("watch %s: still missing after backfill: %s", self.source.source, missing)
        return found, missing

    # -- ledger and bus --

    async def _record(
        self, work: RelayerLedgerWork, messages: Sequence[EmittedMessage], read_before: int
    ) -> list[EmittedMessage]:
        """Store the read observations (new ones in one statement); those to be produced (new,
        or back after a reorg), in order. One read twice in a poll counts once. A message at a
        position up to `read_before` (read again after an earlier poll, with no reorg since) is
        produced only if it is new: one stored before was produced then."""
        unique = list({m.observation.message_id: m for m in reversed(messages)}.values())[::-1]
        contexts = [m.traceparent or traceparent(_parent_context(m)) for m in unique]
        pairs = list(zip(unique, contexts, strict=True))
        stored = await work.record_observations(
            [(m.observation, ObservationStatus.OBSERVED, context) for m, context in pairs]
        )
        return [
            message
            for message, context in pairs
            if message.observation.digest in stored
            or (
                message.observation.block_number > read_before
                and await self._known(work, message, context)
            )
        ]

    async def _known(
        self, work: RelayerLedgerWork, message: EmittedMessage, trace_context: str | None
    ) -> bool:
        """Whether an observation already stored is to be produced again (back on the canonical
        chain after a reorg; rewritten then)."""
        observation = message.observation
        row = await work.observation(observation.message_id)
        label = message_label(observation.message_id)
        if row is None:  # the digest is known under another id: a forged or broken source
            log.error(
                "watch %s: %s repeats a known digest; not produced", self.source.source, label
            )
            return False
        if row.status != ObservationStatus.REORGED:
            if row.digest != observation.digest:
                log.error("watch %s: %s changed body without a detected reorg; not produced",
                          self.source.source, label)  # fmt: skip
            return False  # read before (a rewind re-reads): produced then
        # back on the canonical chain, maybe with a new body
        await work.rewrite_observation(row.id, observation, trace_context)
        return True

    async def _move_cursor(
        self, work: RelayerLedgerWork, position: int, position_hash: str
    ) -> None:
        await work.move_cursor(self.source.source, self.source.chain_id, position, position_hash)

    async def _produce(self, producer: Producer, messages: Sequence[EmittedMessage]) -> None:
        async with producer.transaction():
            for message in messages:
                observation = message.observation
                await producer.send(
                    self.topic,
                    encode_message(observation),
                    key=message_key(observation.message_id),
                    headers=self._headers(message),
                )

    def _headers(self, message: EmittedMessage) -> Headers:
        """Trace headers: a producer span under the emitting transaction's trace if known, else
        under the round's trace for a message of a round."""
        attributes: dict[str, str | int] = {
            "messaging.system": "kafka",
            "messaging.operation.type": "send",
            "messaging.destination.name": self.topic,
            "fedrelay.stage": self.name,
            "fedrelay.message_id": message_label(message.observation.message_id),
        }
        coordinates = round_of(message.observation)
        if coordinates is not None:
            attributes.update(round_attributes(coordinates.job_id, coordinates.round))
        with self.tracer.start_as_current_span(
            f"send {self.topic}",
            context=_parent_context(message),
            kind=SpanKind.PRODUCER,
            attributes=attributes,
        ):
            return inject_headers()

    def _count(self, produced: Sequence[EmittedMessage]) -> None:
        if not produced:
            return
        self.metrics.processed.labels(self.name).inc(len(produced))
        self.metrics.last_seen.labels(self.name, f"chain-{self.source.chain_id}").set(time.time())

    # -- connections --

    async def _open(self) -> Producer:
        if self._producer is None:
            producer = self.bus.producer(transactional_id=self.transactional_id)
            await producer.start()
            self._producer = producer
        return self._producer

    async def _close(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            try:
                await producer.stop()
            except Exception as exc:  # a broken connection may fail to close too
                log.debug("watch %s: closing the producer failed: %s", self.source.source, exc)

    async def _pause(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)


@dataclass(frozen=True)
class RoundOf:
    """The round a message belongs to.

    Attributes:
        coordinator_chain: The Wormhole chain id of the coordinator chain.
        job_id: The job on JobMarket.
        round: The round.
    """

    coordinator_chain: int
    job_id: int
    round: int


def round_of(observation: Observation) -> RoundOf | None:
    """The round an observed message belongs to, or None (not a round's message, or undecodable).

    TASK_ASSIGNED and ROUND_SETTLED are emitted on the coordinator chain; UPDATE_COMMITTED is
    addressed to it.
    """
    try:
        payload = decode_payload(observation.payload)
    except PayloadError:
        return None
    if isinstance(payload, TaskAssigned | RoundSettled):
        return RoundOf(observation.emitter_chain, payload.job_id, payload.round)
    if isinstance(payload, UpdateCommitted):
        return RoundOf(payload.target_chain, payload.job_id, payload.round)
    return None


def _parent_context(message: EmittedMessage) -> otel_context.Context:
    """The emitting transaction's trace if known, else the round's, else none (a new trace)."""
    if message.traceparent is not None:
        return context_from_traceparent(message.traceparent)
    coordinates = round_of(message.observation)
    if coordinates is None:
        return otel_context.Context()
    return round_context(coordinates.coordinator_chain, coordinates.job_id, coordinates.round)


def _order(message: EmittedMessage) -> tuple[int, int, bytes, int]:
    observation = message.observation
    return (
        observation.block_number,
        observation.emitter_chain,
        observation.emitter_address,
        observation.sequence,
    )


def watch_stage(
    settings: RelayerSettings,
    source: SourceChain,
    bus: Bus,
    ledger: RelayerLedger,
    **options: Any,
) -> Watcher:
    """The watcher of `source` as `settings` configure it (``fedrelay relayer run --stage watch``).

    Args:
        settings: The relayer's settings (topic, instance, retry policy).
        source: The chain adapter.
        bus: The bus.
        ledger: The ledger.
        options: Further :class:`Watcher` fields (``start``, ``poll_interval_s``, ...).
    """
    name = f"watch-{source.chain_id}"
    return Watcher(
        source,
        bus,
        ledger,
        transactional_id=settings.transactional_id(name),
        topic=settings.observations_topic,
        policy=settings.retry_policy(),
        **options,
    )
