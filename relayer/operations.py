"""What an operator asks of a running relayer: its status, and putting dead work back in line.

- :func:`ledger_status`: per source the watcher's cursor and when a message was last observed;
  per destination chain the deliveries by state; per stage the dead letters not yet requeued.
- :func:`queue_depths`: per consuming stage, the records waiting in its input topic (end
  offsets minus the group's committed offsets), read from the bus.
- :func:`retry_message`: reopen a message's dead (or stuck pending) deliveries and publish each
  again to its chain's delivery topic.
- :func:`dead_letters` and :func:`requeue_dead_letter`: the DLQ entries, and one republished to
  the input topic of the stage that gave up on it (a dead delivery is reopened first), then
  marked requeued, in that order, so a crash in between requeues again rather than losing it.

Stages are idempotent, so requeuing something twice is harmless.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from fedrelay.ports.bus import Bus, BusMonitor
from fedrelay.ports.relayer_ledger import DeliveryStatus, RelayerLedger
from fedrelay.protocol.wormhole import MessageId
from fedrelay.protocol.wormhole.observation import MalformedMessage
from fedrelay.relayer.errors import RelayerError
from fedrelay.relayer.records import (
    DeliveryRequest,
    SignedVaa,
    ThresholdTick,
    decode_message,
    encode_message,
    message_key,
    message_label,
)
from fedrelay.relayer.settings import RelayerSettings
from fedrelay.relayer.stages.deliver import reopen_delivery
from fedrelay.relayer.stages.route import route


class OperationError(RelayerError):
    """An operator's request cannot be carried out (unknown id, nothing to requeue)."""


# --- message ids ----------------------------------------------------------------------------------


def parse_message_id(text: str) -> MessageId:
    """A message id as the relayer writes it: ``chain/emitter_hex/sequence``.

    Raises:
        OperationError: The text is not of that form.
    """
    parts = text.strip().split("/")
    try:
        chain, emitter, sequence = parts
        emitter_bytes = bytes.fromhex(emitter.removeprefix("0x"))
        message_id = MessageId(int(chain), emitter_bytes, int(sequence))
    except ValueError:
        raise OperationError(
            f"{text!r} is not a message id: expected CHAIN/EMITTER_HEX/SEQUENCE, "
            "for example 2/000000000000000000000000c0ffee.../17"
        ) from None
    if len(emitter_bytes) != 32 or not 0 <= message_id.emitter_chain <= 0xFFFF:
        raise OperationError(f"{text!r}: the emitter is 32 bytes (64 hex digits), the chain a u16")
    return message_id


# --- status ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SourceStatus:
    """A watched source: the cursor's position and when it and the last observation moved."""

    source: str
    chain_id: int
    position: int
    cursor_updated_at: datetime
    last_observed_at: datetime | None


@dataclass(frozen=True)
class DeliveryCounts:
    """Deliveries to one chain by state; `pending` counts PENDING and SUBMITTED."""

    chain_id: int
    pending: int
    confirmed: int
    already_delivered: int
    dead: int


@dataclass(frozen=True)
class LedgerStatus:
    """What the ledger says about the relayer."""

    sources: tuple[SourceStatus, ...]
    deliveries: tuple[DeliveryCounts, ...]
    dead_letters: dict[str, int]


async def ledger_status(ledger: RelayerLedger) -> LedgerStatus:
    """Sources, deliveries per destination and open dead letters per stage."""
    async with ledger.reading() as work:
        last_seen = await work.last_observed_by_chain()
        sources = tuple(
            SourceStatus(c.source, c.chain_id, c.position, c.updated_at, last_seen.get(c.chain_id))
            for c in await work.cursors()
        )
        counts = await work.delivery_counts()
        dead = await work.open_dead_letter_counts()
    deliveries = tuple(
        DeliveryCounts(
            chain_id=chain_id,
            pending=by.get(DeliveryStatus.PENDING, 0) + by.get(DeliveryStatus.SUBMITTED, 0),
            confirmed=by.get(DeliveryStatus.CONFIRMED, 0),
            already_delivered=by.get(DeliveryStatus.ALREADY_DELIVERED, 0),
            dead=by.get(DeliveryStatus.DEAD, 0),
        )
        for chain_id, by in sorted(counts.items())
    )
    return LedgerStatus(sources, deliveries, dead)


def stage_inputs(settings: RelayerSettings, chain_ids: Sequence[int]) -> dict[str, str]:
    """Each consuming stage's consumer group -> its input topic (attest groups excepted)."""
    inputs = {
        "assemble": settings.signatures_topic,
        "fetch": settings.observations_topic,
        "route": settings.vaas_topic,
        **{f"deliver-{c}": settings.delivery_topic(c) for c in chain_ids},
    }
    return {stage: topic for stage, topic in inputs.items()}


def input_topic(settings: RelayerSettings, stage: str) -> str:
    """The topic a stage consumes, from the stage's name (``attest-0``, ``deliver-4``...).

    Raises:
        OperationError: The name is not a consuming stage's.
    """
    if stage.startswith(("attest-", "fetch")):
        return settings.observations_topic
    if stage == "assemble":
        return settings.signatures_topic
    if stage == "route":
        return settings.vaas_topic
    if stage.startswith("deliver-") and stage.removeprefix("deliver-").isdigit():
        return settings.delivery_topic(int(stage.removeprefix("deliver-")))
    raise OperationError(f"stage {stage!r} consumes no topic; nothing to requeue to")


async def queue_depths(
    monitor: BusMonitor, settings: RelayerSettings, chain_ids: Sequence[int]
) -> dict[str, int]:
    """Records waiting per consuming stage (every partition of its input topic), from the bus."""
    stages = stage_inputs(settings, chain_ids)
    lags = await monitor.group_lags(
        {settings.group(stage): topic for stage, topic in stages.items()},
        discover=(settings.group("attest-"), settings.observations_topic),
    )
    prefix = settings.group("")
    return {group.removeprefix(prefix): lag for group, lag in sorted(lags.items())}


# --- retry and the DLQ ----------------------------------------------------------------------------


async def retry_message(
    ledger: RelayerLedger,
    bus: Bus,
    settings: RelayerSettings,
    message_id: MessageId,
    destination: int | None = None,
) -> list[int]:
    """Reopen the message's dead deliveries (and requeue stuck pending ones); the chains requeued.

    Raises:
        OperationError: The ledger has no VAA for the message, or nothing undelivered.
    """
    label = message_label(message_id)
    async with ledger.transaction() as work:
        stored = await work.vaa_of_message(message_id)
        if stored is None:
            raise OperationError(f"the ledger has no VAA for {label}")
        undelivered = [
            d for d in await work.deliveries_of(stored.digest, destination)
            if d.status in (DeliveryStatus.DEAD, DeliveryStatus.PENDING)
        ]  # fmt: skip
        if not undelivered:
            raise OperationError(f"{label} has no dead or pending delivery to retry")
        for delivery in undelivered:
            await reopen_delivery(work, stored.digest, delivery.destination_chain)
        vaa, chains = stored.vaa, sorted(d.destination_chain for d in undelivered)
    request = route(SignedVaa(vaa=vaa, emitted_at_ms=0))
    await _publish(
        bus,
        [
            (settings.delivery_topic(chain), DeliveryRequest(
                vaa=vaa, destination_chain=chain, target_address=request.target_address,
                emitted_at_ms=0,
            ))
            for chain in chains
        ],
    )  # fmt: skip
    async with ledger.transaction() as work:
        for entry in await work.dead_letters(stages=[f"deliver-{c}" for c in chains]):
            if _digest_of(entry.body) == stored.digest:
                await work.mark_requeued(entry.id)
    return chains


@dataclass(frozen=True)
class DeadLetterEntry:
    """One row of ``dlq_entries`` with the message it holds, when it decodes."""

    id: int
    stage: str
    position: str
    reason: str
    created_at: datetime
    requeued_at: datetime | None
    message: str | None


async def dead_letters(
    ledger: RelayerLedger, stage: str | None = None, everything: bool = False
) -> list[DeadLetterEntry]:
    """DLQ entries, oldest first: not yet requeued (or `everything`), of `stage` if given."""
    async with ledger.reading() as work:
        rows = await work.dead_letters(stage, everything)
    return [
        DeadLetterEntry(
            row.id, row.stage, row.position, row.reason, row.created_at, row.requeued_at,
            _label_of(row.body),
        )
        for row in rows
    ]  # fmt: skip


async def requeue_dead_letter(
    ledger: RelayerLedger, bus: Bus, settings: RelayerSettings, entry_id: int
) -> str:
    """Republish one DLQ entry to its stage's input topic; the topic.

    Raises:
        OperationError: No such entry, or it was requeued already.
    """
    async with ledger.transaction() as work:
        entry = await work.dead_letter(entry_id)
        if entry is None:
            raise OperationError(f"no DLQ entry {entry_id}")
        if entry.requeued_at is not None:
            raise OperationError(f"DLQ entry {entry_id} was requeued at {entry.requeued_at}")
        topic = input_topic(settings, entry.stage)
        body = entry.body
        if entry.stage.startswith("deliver-"):
            digest = _digest_of(body)
            if digest is not None:
                await reopen_delivery(work, digest, int(entry.stage.removeprefix("deliver-")))
    try:
        message = decode_message(body)
        key = None if isinstance(message, ThresholdTick) else message_key(message.message_id)
    except MalformedMessage:
        key = None  # a malformed record goes back as it was; the stage will say why again
    producer = bus.producer()
    await producer.start()
    try:
        await producer.send(topic, body, key=key)
    finally:
        await producer.stop()
    async with ledger.transaction() as work:
        await work.mark_requeued(entry_id)
    return topic


async def _publish(bus: Bus, requests: Sequence[tuple[str, DeliveryRequest]]) -> None:
    producer = bus.producer()
    await producer.start()
    try:
        for topic, request in requests:
            await producer.send(topic, encode_message(request), key=message_key(request.message_id))
    finally:
        await producer.stop()


def _digest_of(body: bytes) -> bytes | None:
    try:
        message = decode_message(body)
    except MalformedMessage:
        return None
    return None if isinstance(message, ThresholdTick) else message.digest


def _label_of(body: bytes) -> str | None:
    try:
        message = decode_message(body)
    except MalformedMessage:
        return None
    return None if isinstance(message, ThresholdTick) else message_label(message.message_id)
