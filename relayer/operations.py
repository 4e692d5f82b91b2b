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

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from fedrelay.adapters.ledger.models import (
    DeadLetter,
    Delivery,
    DeliveryStatus,
    SourceCursor,
    StoredVaa,
    utcnow,
)
from fedrelay.adapters.ledger.models import Observation as ObservationRow
from fedrelay.ports.bus import Bus, BusMonitor
from fedrelay.protocol.wormhole import MessageId
from fedrelay.protocol.wormhole.observation import MalformedMessage
from fedrelay.relayer.deliver import reopen_delivery
from fedrelay.relayer.errors import RelayerError
from fedrelay.relayer.records import (
    DeliveryRequest,
    GuardianSignatureMessage,
    Message,
    SignedVaa,
    decode_message,
    encode_message,
    message_key,
    message_label,
)
from fedrelay.relayer.routing import route
from fedrelay.relayer.settings import RelayerSettings


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


async def ledger_status(sessions: async_sessionmaker[AsyncSession]) -> LedgerStatus:
    """Sources, deliveries per destination and open dead letters per stage."""
    async with sessions() as session:
        observed = await session.execute(
            select(ObservationRow.emitter_chain, func.max(ObservationRow.observed_at)).group_by(
                ObservationRow.emitter_chain
            )
        )
        last_seen = {int(row[0]): row[1] for row in observed}
        sources = tuple(
            SourceStatus(c.source, c.chain_id, c.position, c.updated_at, last_seen.get(c.chain_id))
            for c in await session.scalars(select(SourceCursor).order_by(SourceCursor.source))
        )
        counts: dict[int, dict[DeliveryStatus, int]] = {}
        by_state = await session.execute(
            select(Delivery.destination_chain, Delivery.status, func.count()).group_by(
                Delivery.destination_chain, Delivery.status
            )
        )
        for row in by_state:
            counts.setdefault(int(row[0]), {})[row[1]] = int(row[2])
        open_letters = await session.execute(
            select(DeadLetter.stage, func.count())
            .where(DeadLetter.requeued_at.is_(None))
            .group_by(DeadLetter.stage)
        )
        dead = {str(row[0]): int(row[1]) for row in open_letters}
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
    sessions: async_sessionmaker[AsyncSession],
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
    async with sessions() as session, session.begin():
        stored = await session.scalar(
            select(StoredVaa).where(
                StoredVaa.emitter_chain == message_id.emitter_chain,
                StoredVaa.emitter_address == message_id.emitter_address,
                StoredVaa.sequence == message_id.sequence,
            )
        )
        if stored is None:
            raise OperationError(f"the ledger has no VAA for {label}")
        query = select(Delivery).where(Delivery.digest == stored.digest)
        if destination is not None:
            query = query.where(Delivery.destination_chain == destination)
        undelivered = [
            d for d in await session.scalars(query)
            if d.status in (DeliveryStatus.DEAD, DeliveryStatus.PENDING)
        ]  # fmt: skip
        if not undelivered:
            raise OperationError(f"{label} has no dead or pending delivery to retry")
        for delivery in undelivered:
            await reopen_delivery(session, bytes(stored.digest), delivery.destination_chain)
        vaa, chains = bytes(stored.vaa), sorted(d.destination_chain for d in undelivered)
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
    async with sessions() as session, session.begin():
        for entry in await session.scalars(
            select(DeadLetter).where(DeadLetter.requeued_at.is_(None), DeadLetter.stage.in_(
                [f"deliver-{c}" for c in chains]
            ))
        ):  # fmt: skip
            if _digest_of(bytes(entry.body)) == bytes(stored.digest):
                entry.requeued_at = utcnow()
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
    sessions: async_sessionmaker[AsyncSession], stage: str | None = None, everything: bool = False
) -> list[DeadLetterEntry]:
    """DLQ entries, oldest first: not yet requeued (or `everything`), of `stage` if given."""
    query = select(DeadLetter).order_by(DeadLetter.id)
    if stage is not None:
        query = query.where(DeadLetter.stage == stage)
    if not everything:
        query = query.where(DeadLetter.requeued_at.is_(None))
    async with sessions() as session:
        rows = (await session.scalars(query)).all()
    return [
        DeadLetterEntry(
            row.id, row.stage, row.message_key, row.reason, row.created_at, row.requeued_at,
            _label_of(bytes(row.body)),
        )
        for row in rows
    ]  # fmt: skip


async def requeue_dead_letter(
    sessions: async_sessionmaker[AsyncSession], bus: Bus, settings: RelayerSettings, entry_id: int
) -> str:
    """Republish one DLQ entry to its stage's input topic; the topic.

    Raises:
        OperationError: No such entry, or it was requeued already.
    """
    async with sessions() as session, session.begin():
        entry = await session.get(DeadLetter, entry_id)
        if entry is None:
            raise OperationError(f"no DLQ entry {entry_id}")
        if entry.requeued_at is not None:
            raise OperationError(f"DLQ entry {entry_id} was requeued at {entry.requeued_at}")
        topic = input_topic(settings, entry.stage)
        body = bytes(entry.body)
        if entry.stage.startswith("deliver-"):
            digest = _digest_of(body)
            if digest is not None:
                await reopen_delivery(session, digest, int(entry.stage.removeprefix("deliver-")))
    try:
        message = decode_message(body)
        key: bytes | None = message_key(_message_id(message))
    except MalformedMessage:
        key = None  # a malformed record goes back as it was; the stage will say why again
    producer = bus.producer()
    await producer.start()
    try:
        await producer.send(topic, body, key=key)
    finally:
        await producer.stop()
    async with sessions() as session, session.begin():
        entry = await session.get(DeadLetter, entry_id)
        assert entry is not None
        entry.requeued_at = utcnow()
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
    return message.digest


def _label_of(body: bytes) -> str | None:
    try:
        return message_label(_message_id(decode_message(body)))
    except MalformedMessage:
        return None


def _message_id(message: Message) -> MessageId:
    if isinstance(message, GuardianSignatureMessage):
        return message.observation.message_id
    return message.message_id
