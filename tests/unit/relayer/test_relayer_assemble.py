"""Assemble: signatures to one quorum VAA per digest, on the in-process bus and a SQLite ledger."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import cast

import pytest
from prometheus_client import CollectorRegistry
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from support.relayer import (
    CountingLedger,
    DiesAfterBatchLedger,
    read_topic,
    sample_observation,
    signature_messages,
    statements_run,
)
from support.wormhole import guardian_set, guardian_signers

from fedrelay.adapters.kafka import MemoryBus, Record
from fedrelay.adapters.ledger.database import create_engine, upgrade
from fedrelay.adapters.ledger.models import GuardianSignature, ObservationStatus, StoredVaa
from fedrelay.adapters.ledger.models import Observation as ObservationRow
from fedrelay.adapters.ledger.relayer_ledger import SqlRelayerLedger
from fedrelay.protocol.wormhole import (
    GuardianIndexOutOfRange,
    GuardianSets,
    SignerMismatch,
    UnknownGuardianSet,
    parse_vaa,
    verify_vaa,
)
from fedrelay.relayer.backoff import BackoffPolicy
from fedrelay.relayer.records import (
    GuardianSignatureMessage,
    SignedVaa,
    decode_as,
    encode_message,
    message_key,
)
from fedrelay.relayer.stage import REASON_HEADER, StageResult, StageRunner, stage_metrics
from fedrelay.relayer.stages.assemble import Assembler, ConflictingVaa, check_signature

SIGNERS = guardian_signers(5)
SETS = GuardianSets.of(guardian_set(5))  # quorum 4
NOW = 1_800_000_000


@pytest.fixture
async def sessions(tmp_path: Path) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    url = f"sqlite+aiosqlite:///{tmp_path / 'ledger.db'}"
    await asyncio.to_thread(upgrade, url)
    engine = create_engine(url)
    yield async_sessionmaker(engine, expire_on_commit=False)
    await engine.dispose()


@pytest.fixture
async def bus() -> AsyncIterator[MemoryBus]:
    memory = MemoryBus()
    await memory.create_topics(["signatures", "vaas", "dlq"])
    yield memory
    await memory.close()


def _record(message: GuardianSignatureMessage, offset: int) -> Record:
    return Record("signatures", 0, offset, message.digest, encode_message(message))


async def _publish(bus: MemoryBus, messages: list[GuardianSignatureMessage]) -> None:
    producer = bus.producer()
    await producer.start()
    for message in messages:
        await producer.send("signatures", encode_message(message), key=message.digest)
    await producer.stop()


def _runner(bus: MemoryBus, processor: object) -> StageRunner:
    return StageRunner(
        name="assemble", bus=bus, inputs=["signatures"], group_id="assemble",
        transactional_id="assemble-0", processor=processor,  # type: ignore[arg-type]
        policy=BackoffPolicy(base_s=0.01, cap_s=0.02, max_attempts=3), poll_wait_s=0.05,
        metrics=stage_metrics(CollectorRegistry()),
    )  # fmt: skip


def test_check_signature_accepts_the_guardians_own() -> None:
    [message] = signature_messages(sample_observation(1), SIGNERS, [2])
    assert check_signature(message, SETS).index == 0


def test_check_signature_rejects_a_signature_by_another_key() -> None:
    observation = sample_observation(1)
    forged = GuardianSignatureMessage(observation, 0, SIGNERS[1].sign(observation.digest, 0))
    with pytest.raises(SignerMismatch, match="claimed by guardian 0 of set 0 was made by 0x"):
        check_signature(forged, SETS)


def test_check_signature_rejects_unknown_set_and_index() -> None:
    observation = sample_observation(1)
    outside = GuardianSignatureMessage(observation, 0, SIGNERS[0].sign(observation.digest, 7))
    with pytest.raises(GuardianIndexOutOfRange, match="guardian index 7 is outside"):
        check_signature(outside, SETS)
    [other_set] = signature_messages(observation, SIGNERS, [0], guardian_set_index=3)
    with pytest.raises(UnknownGuardianSet, match="guardian set 3 is unknown"):
        check_signature(other_set, SETS)


async def test_one_vaa_per_digest_whatever_duplicates_and_late_signatures(
    bus: MemoryBus, sessions: async_sessionmaker[AsyncSession]
) -> None:
    first, second = sample_observation(1), sample_observation(2)
    forged = GuardianSignatureMessage(first, 0, SIGNERS[1].sign(first.digest, 0))
    messages = [
        *signature_messages(first, SIGNERS, [0, 1, 1, 2]),
        forged,
        *signature_messages(second, SIGNERS, [4, 2, 0]),
        *signature_messages(first, SIGNERS, [3, 3, 4]),  # 3 completes the quorum; 4 is late
        *signature_messages(second, SIGNERS, [1, 3, 1]),  # 1 completes; 3 is late
    ]
    await _publish(bus, messages)
    runner = _runner(bus, Assembler(SqlRelayerLedger(sessions), SETS))
    task = asyncio.create_task(runner.run())
    vaas = await read_topic(bus, "vaas", 2, group_id=f"r-{uuid.uuid4().hex}", limit_s=10)
    [dead] = await read_topic(bus, "dlq", 1, group_id=f"r-{uuid.uuid4().hex}", limit_s=10)
    runner.stop()
    await asyncio.wait_for(task, 5)

    assert len(vaas) == 2
    by_sequence = {}
    for record in vaas:
        signed = decode_as(record.value, SignedVaa)
        verify_vaa(signed.parsed, SETS, NOW)
        assert record.key == message_key(signed.message_id)
        by_sequence[signed.message_id.sequence] = signed.parsed
    assert [s.guardian_index for s in by_sequence[1].signatures] == [0, 1, 2, 3]
    assert [s.guardian_index for s in by_sequence[2].signatures] == [0, 1, 2, 4]
    assert by_sequence[1].body == first.body
    assert b"SignerMismatch" in (dead.header(REASON_HEADER) or b"")

    async with sessions() as session:
        stored = (await session.scalars(select(StoredVaa).order_by(StoredVaa.sequence))).all()
        grouped = select(GuardianSignature.digest, func.count()).group_by(GuardianSignature.digest)
        counts = {bytes(digest): n for digest, n in (await session.execute(grouped)).all()}
        statuses = (await session.scalars(select(ObservationRow.status))).all()
    assert [row.num_signatures for row in stored] == [4, 4]
    assert parse_vaa(stored[0].vaa) == by_sequence[1]
    assert counts == {first.digest: 5, second.digest: 5}  # duplicates stored once, forgery never
    assert statuses == [ObservationStatus.ASSEMBLED, ObservationStatus.ASSEMBLED]


async def test_replay_of_the_completing_record_emits_again_a_duplicate_does_not(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    observation = sample_observation(9)
    assembler = Assembler(SqlRelayerLedger(sessions), SETS)
    messages = signature_messages(observation, SIGNERS, [0, 1, 2, 3])
    for offset, message in enumerate(messages[:3]):
        assert (await assembler.process(_record(message, offset))).outputs == ()

    completing = _record(messages[3], 3)
    first = await assembler.process(completing)
    replay = await assembler.process(completing)  # the hand-off of `first` never committed
    duplicate = await assembler.process(_record(messages[3], 4))
    late = await assembler.process(_record(signature_messages(observation, SIGNERS, [4])[0], 5))

    assert len(first.outputs) == 1
    assert replay.outputs == first.outputs
    assert duplicate.outputs == ()
    assert late.outputs == ()


class _DiesAfterLedger:
    """Runs the assembler, then "dies" (hangs until cancelled) once it produced a VAA."""

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
async def test_crash_after_the_ledger_commit_still_emits_exactly_once(
    bus: MemoryBus, sessions: async_sessionmaker[AsyncSession], batched: bool
) -> None:
    observations = [sample_observation(50 + i) for i in range(3)]
    await _publish(
        bus, [m for o in observations for m in signature_messages(o, SIGNERS, [0, 1, 2, 3, 1])]
    )
    inner = Assembler(SqlRelayerLedger(sessions), SETS)
    dying = DiesAfterBatchLedger(inner) if batched else _DiesAfterLedger(inner)
    task = asyncio.create_task(_runner(bus, dying).run())
    await asyncio.wait_for(dying.ledger_done.wait(), 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    if isinstance(dying, DiesAfterBatchLedger):  # the whole batch in one ledger transaction
        assert dying.batch_sizes == [15]
    async with sessions() as session:
        stored = await session.scalar(select(func.count()).select_from(StoredVaa))
    assert stored == (3 if batched else 1)  # in the ledger; on the bus, nothing yet

    runner = _runner(bus, Assembler(SqlRelayerLedger(sessions), SETS))
    task = asyncio.create_task(runner.run())
    vaas = await read_topic(bus, "vaas", 3, group_id="reader", limit_s=10)
    runner.stop()
    await asyncio.wait_for(task, 5)
    assert sorted(decode_as(v.value, SignedVaa).digest for v in vaas) == sorted(
        o.digest for o in observations
    )  # each exactly once: read_topic reads on after the third to catch a duplicate


async def test_a_second_body_for_one_message_id_is_refused_and_changes_nothing(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    assembler = Assembler(SqlRelayerLedger(sessions), SETS)
    original = sample_observation(20)
    rival = sample_observation(20, payload=b"\x02\x01" + bytes(42))  # same id, another body
    for offset, message in enumerate(signature_messages(original, SIGNERS, [0, 1, 2, 3])):
        await assembler.process(_record(message, offset))
    rivals = signature_messages(rival, SIGNERS, [0, 1, 2, 3])
    for offset, message in enumerate(rivals[:3], start=10):
        assert (await assembler.process(_record(message, offset))).outputs == ()
    with pytest.raises(ConflictingVaa, match=r"another body is stored for 2/.*/20"):
        await assembler.process(_record(rivals[3], 13))
    async with sessions() as session:
        digests = (await session.scalars(select(StoredVaa.digest))).all()
        rival_signatures = await session.scalar(
            select(func.count())
            .select_from(GuardianSignature)
            .where(GuardianSignature.digest == rival.digest)
        )
    assert digests == [original.digest]
    assert rival_signatures == 3  # the refused record's own signature was rolled back


# --- a polled batch in one ledger transaction -------------------------------------------------


async def test_a_batch_is_stored_in_one_ledger_transaction_as_one_by_one_would(
    sessions: async_sessionmaker[AsyncSession], tmp_path: Path
) -> None:
    first, second = sample_observation(31), sample_observation(32)
    forged = GuardianSignatureMessage(first, 0, SIGNERS[1].sign(first.digest, 0))
    messages = [
        *signature_messages(first, SIGNERS, [0, 1, 1]),
        forged,
        *signature_messages(second, SIGNERS, [4, 2, 0, 1]),  # 1 completes the quorum
        *signature_messages(first, SIGNERS, [2, 3, 4]),  # 3 completes; 4 is late
    ]
    records = [_record(message, offset) for offset, message in enumerate(messages)]
    ledger = CountingLedger(sessions)
    batched = await Assembler(ledger, SETS).process_batch(records)

    url = f"sqlite+aiosqlite:///{tmp_path / 'one-by-one.db'}"
    await asyncio.to_thread(upgrade, url)
    engine = create_engine(url)
    alone = Assembler(SqlRelayerLedger(async_sessionmaker(engine, expire_on_commit=False)), SETS)
    one_by_one: list[StageResult | Exception] = []
    for record in records:
        try:
            one_by_one.append(await alone.process(record))
        except Exception as exc:
            one_by_one.append(exc)
    await engine.dispose()

    assert ledger.opened == 1
    assert isinstance(batched[3], SignerMismatch)
    assert isinstance(one_by_one[3], SignerMismatch)
    kept = [i for i in range(len(records)) if i != 3]
    assert [batched[i] for i in kept] == [one_by_one[i] for i in kept]
    emitting = [i for i in kept if cast("StageResult", batched[i]).outputs]
    assert emitting == [7, 9]  # second's 1, first's 3
    async with sessions() as session:
        assert await session.scalar(select(func.count()).select_from(StoredVaa)) == 2


async def test_a_batch_whose_transaction_fails_is_judged_record_by_record(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    original = sample_observation(40)
    rival = sample_observation(40, payload=b"\x02\x01" + bytes(42))  # same id, another body
    other = sample_observation(41)
    messages = [
        *signature_messages(original, SIGNERS, [0, 1, 2, 3]),
        *signature_messages(rival, SIGNERS, [0, 1, 2, 3]),  # its 3 completes a second body
        *signature_messages(other, SIGNERS, [0, 1, 2, 3]),
    ]
    ledger = CountingLedger(sessions)
    records = [_record(message, offset) for offset, message in enumerate(messages)]
    outcomes = await Assembler(ledger, SETS).process_batch(records)

    assert ledger.opened == 1 + len(records)  # the batch's, rolled back; then one per record
    assert isinstance(outcomes[7], ConflictingVaa)
    emitting = [i for i, o in enumerate(outcomes) if isinstance(o, StageResult) and o.outputs]
    assert emitting == [3, 11]
    async with sessions() as session:
        digests = set((await session.scalars(select(StoredVaa.digest))).all())
    assert digests == {original.digest, other.digest}


async def test_a_batch_costs_the_same_ledger_statements_whatever_its_size(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    assembler = Assembler(SqlRelayerLedger(sessions), SETS)
    offset = 0

    async def statements_of_a_batch(observations: int, first_sequence: int) -> int:
        nonlocal offset
        messages = [
            message
            for sequence in range(first_sequence, first_sequence + observations)
            # 3 completes the quorum, the second 3 is a duplicate, 4 comes late
            for message in signature_messages(
                sample_observation(sequence), SIGNERS, [0, 1, 2, 3, 3, 4]
            )
        ]
        records = [_record(message, offset + i) for i, message in enumerate(messages)]
        offset += len(records)
        with statements_run(sessions) as statements:
            outcomes = await assembler.process_batch(records)
        emitting = [i for i, o in enumerate(outcomes) if isinstance(o, StageResult) and o.outputs]
        assert emitting == [6 * n + 3 for n in range(observations)]
        return len(statements)

    small = await statements_of_a_batch(1, 50)
    large = await statements_of_a_batch(16, 60)
    assert small == large
    async with sessions() as session:
        assert await session.scalar(select(func.count()).select_from(StoredVaa)) == 17
        statuses = set((await session.scalars(select(ObservationRow.status))).all())
    assert statuses == {ObservationStatus.ASSEMBLED}
