"""Threshold attestation: guardians and the assembler sign version-2 VAAs on the in-process bus
and a SQLite ledger; a guardian's signing journal never lets one nonce answer two packages."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry
from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from support.relayer import read_topic, sample_observation, signature_messages
from support.wormhole import guardian_set, guardian_signers

from fedrelay.adapters.devnet.guardians import threshold_key
from fedrelay.adapters.kafka import MemoryBus
from fedrelay.adapters.ledger import relayer_ledger
from fedrelay.adapters.ledger.models import (
    StoredVaa,
    ThresholdPackage,
    ThresholdPart,
    decode_identifiers,
)
from fedrelay.adapters.ledger.relayer_ledger import SqlRelayerLedger
from fedrelay.ports.bus import Record
from fedrelay.ports.relay import ChainPosition, EmittedMessage
from fedrelay.protocol.wormhole import (
    GuardianSets,
    MessageId,
    ThresholdVaa,
    Vaa,
    parse_any_vaa,
    verify_vaa,
)
from fedrelay.protocol.wormhole.observation import MalformedMessage, Observation
from fedrelay.protocol.wormhole.threshold import (
    NonceCommitment,
    journaled_nonce,
    package_digest,
    verify_threshold_vaa,
)
from fedrelay.relayer.records import (
    SignedVaa,
    SigningPackageMessage,
    ThresholdCommitmentMessage,
    ThresholdPartialMessage,
    ThresholdRetryMessage,
    ThresholdTick,
    decode_as,
    decode_message,
    encode_message,
    message_key,
)
from fedrelay.relayer.settings import RelayerSettings
from fedrelay.relayer.signing_journal import JournalError, PackageRefused, SigningJournal
from fedrelay.relayer.stage import Output, StageResult, StageRunner, position_of, stage_metrics
from fedrelay.relayer.stages.assemble import Assembler
from fedrelay.relayer.stages.attest import Attester, GuardianKeyError, load_threshold_share
from fedrelay.relayer.stages.threshold import (
    ThresholdConfig,
    ThresholdStepRefused,
    ThresholdTicker,
)

GUARDIANS = 4  # quorum and threshold 3
SIGNERS = guardian_signers(GUARDIANS)
SETS = GuardianSets.of(guardian_set(GUARDIANS))
DEALT = threshold_key(GUARDIANS)
SHARES = {share.guardian_index: share for share in DEALT.shares}
CONFIG = ThresholdConfig(
    tss_index=0,
    group_key=DEALT.group_key,
    threshold=DEALT.threshold,
    verification_shares=DEALT.verification_shares,
)
NOW = 1_767_225_600


def journals(tmp_path: Path, name: str = "j") -> list[SigningJournal]:
    return [SigningJournal(SHARES[i], tmp_path / f"{name}-{i}.sqlite") for i in range(GUARDIANS)]


# --- the signing journal --------------------------------------------------------------------------


def test_a_nonce_answers_one_package_only(tmp_path: Path) -> None:
    j = journals(tmp_path)
    digest = sample_observation(1).digest
    mine, *others = [one.commit(0, digest, 0) for one in j]
    first = [mine, others[0], others[1]]
    second = [mine, others[0], others[2]]

    z = j[0].answer(0, digest, 0, first)
    assert j[0].answer(0, digest, 0, first) == z  # the same package again: the same answer
    with pytest.raises(PackageRefused, match=r"already answered package .* would reveal"):
        j[0].answer(0, digest, 0, second)
    assert j[0].answered(0, digest, 0) == package_digest(digest, first)


def test_the_journal_keeps_its_nonces_and_answers_across_a_restart(tmp_path: Path) -> None:
    digest = sample_observation(2).digest
    j = journals(tmp_path)
    package = [one.commit(0, digest, 0) for one in j[:3]]
    z = j[0].answer(0, digest, 0, package)
    j[0].close()

    reopened = SigningJournal(SHARES[0], tmp_path / "j-0.sqlite")
    assert reopened.commit(0, digest, 0) == package[0]
    assert reopened.answer(0, digest, 0, package) == z
    other = [package[0], package[1], j[3].commit(0, digest, 0)]
    with pytest.raises(PackageRefused, match="already answered"):
        reopened.answer(0, digest, 0, other)


def test_a_package_is_answered_only_for_a_digest_the_guardian_committed_to(
    tmp_path: Path,
) -> None:
    j = journals(tmp_path)
    checked, unchecked = sample_observation(3).digest, sample_observation(4).digest
    j[0].commit(0, checked, 0)
    others = [one.commit(0, unchecked, 0) for one in j[1:3]]
    # Only the guardian itself can make its commitment (the journal's salt is secret); made here
    # from that salt to show that the journal itself refuses a digest it never checked.
    forged = journaled_nonce(SHARES[0], j[0]._salt, b"\0" * 4 + unchecked + b"\0" * 4).commitment
    with pytest.raises(PackageRefused, match="never committed to it"):
        j[0].answer(0, unchecked, 0, [forged, *others])
    stranger = NonceCommitment(1, others[0].hiding, others[0].binding)  # not its commitment
    with pytest.raises(PackageRefused, match="does not hold signer 1's commitment"):
        j[0].answer(0, checked, 0, [stranger, *others])


def test_commitments_journaled_together_are_recorded_in_one_transaction(tmp_path: Path) -> None:
    digests = [sample_observation(n).digest for n in range(20, 25)]
    j = journals(tmp_path)
    statements: list[str] = []
    j[0]._db.set_trace_callback(statements.append)  # what SQLite is asked to run
    batch = j[0].commit_many(0, [(d, 0) for d in digests])
    assert statements.count("BEGIN IMMEDIATE") == 1  # one transaction: one synchronous write
    assert statements.count("COMMIT") == 1
    assert batch == [j[0].commit(0, d, 0) for d in digests]  # the nonces one by one gives
    for digest, commitment in zip(digests, batch, strict=True):
        package = [commitment, j[1].commit(0, digest, 0), j[2].commit(0, digest, 0)]
        assert j[0].answer(0, digest, 0, package).z  # each context was recorded: answerable


def test_a_journal_belongs_to_one_share_and_a_new_one_draws_new_nonces(tmp_path: Path) -> None:
    digest = sample_observation(5).digest
    first = SigningJournal(SHARES[0], tmp_path / "a.sqlite")
    again = SigningJournal(SHARES[0], tmp_path / "b.sqlite")
    assert first.commit(0, digest, 0) != again.commit(0, digest, 0)
    first.close()
    with pytest.raises(JournalError, match=r"belongs to signer 1 .* not signer 2"):
        SigningJournal(SHARES[1], tmp_path / "a.sqlite")


def test_the_journal_file_never_holds_the_share(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite"
    journal = SigningJournal(SHARES[0], path)
    journal.commit(0, sample_observation(6).digest, 0)
    journal.close()
    secret = SHARES[0].secret_bytes()
    stored = b"".join(p.read_bytes() for p in tmp_path.iterdir())
    assert secret not in stored
    assert "secret" not in repr(SHARES[0])
    assert secret.hex() not in repr(SHARES[0])


# --- records --------------------------------------------------------------------------------------


def test_threshold_records_round_trip_and_refuse_malformed_fields(tmp_path: Path) -> None:
    observation = sample_observation(7)
    commitments = tuple(one.commit(0, observation.digest, 0) for one in journals(tmp_path)[:3])
    messages = [
        ThresholdCommitmentMessage(observation, 0, 0, commitment=commitments[0]),
        SigningPackageMessage(observation, 0, 0, commitments=commitments),
        ThresholdPartialMessage(observation, 0, 0, identifier=2, z=bytes(range(32))),
        ThresholdRetryMessage(observation, 0, 1, excluded=(3,)),
    ]
    for message in messages:
        assert decode_message(encode_message(message)) == message
    with pytest.raises(MalformedMessage, match="distinct, in order"):
        SigningPackageMessage(observation, 0, 0, commitments=commitments[::-1])
    with pytest.raises(MalformedMessage, match="a retry names a later attempt"):
        ThresholdRetryMessage(observation, 0, 0, excluded=(3,))
    with pytest.raises(MalformedMessage, match="each once"):
        ThresholdRetryMessage(observation, 0, 1, excluded=(3, 3))
    with pytest.raises(MalformedMessage, match="z must be 32 bytes"):
        ThresholdPartialMessage(observation, 0, 0, identifier=2, z=b"\1")
    bad_point = encode_message(messages[0]).replace(commitments[0].hiding.hex().encode(),
                                                    b"05" + b"00" * 32)  # fmt: skip
    with pytest.raises(MalformedMessage, match="hiding is not a compressed curve point"):
        decode_message(bad_point)


# --- the stages together --------------------------------------------------------------------------


@dataclass
class ChainHolding:
    """A source chain holding fixed messages (all final): what the guardians check against."""

    chain_id: int = 2
    source: str = "fake:2"
    reread: int = 0
    messages: dict[MessageId, Observation] = field(default_factory=dict)

    async def head(self) -> ChainPosition:
        return ChainPosition(10_000, "0x00")

    async def position_hash(self, number: int) -> str | None:
        return None

    async def messages_between(self, first: int, last: int) -> Sequence[EmittedMessage]:
        return []

    async def fetch_message(self, message_id: MessageId, tx_hash: str) -> EmittedMessage | None:
        found = self.messages.get(message_id)
        return None if found is None else EmittedMessage(found)


@pytest.fixture
def sessions(
    sqlite_sessions: async_sessionmaker[AsyncSession],
) -> async_sessionmaker[AsyncSession]:
    return sqlite_sessions


@dataclass
class Clock:
    """The assembler's clock and the ledger's (``opened_at``), moved by hand."""

    now: float = float(NOW)

    def __call__(self) -> float:
        return self.now

    def utc(self) -> datetime:
        return datetime.fromtimestamp(self.now, UTC)


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr(relayer_ledger, "utcnow", fake.utc)
    return fake


def _attester(source: ChainHolding, journal: SigningJournal) -> Attester:
    index = journal.share.guardian_index
    return Attester({2: source}, SIGNERS[index], index, 0, guardian_set(GUARDIANS), journal=journal)


def _runner(bus: MemoryBus, name: str, inputs: list[str], processor: object) -> StageRunner:
    return StageRunner(
        name=name, bus=bus, inputs=inputs, group_id=name, transactional_id=name,
        processor=processor, poll_wait_s=0.02,  # type: ignore[arg-type]
        metrics=stage_metrics(CollectorRegistry()),
    )  # fmt: skip


async def test_guardians_and_the_assembler_sign_version_2_vaas_over_the_bus(
    tmp_path: Path, sessions: async_sessionmaker[AsyncSession]
) -> None:
    observations = [sample_observation(10), sample_observation(11)]
    source = ChainHolding(messages={o.message_id: o for o in observations})
    bus = MemoryBus()
    await bus.create_topics(["observations", "signatures", "signing", "vaas", "dlq"])
    producer = bus.producer()
    await producer.start()
    for observation in observations:
        key = message_key(observation.message_id)
        await producer.send("observations", encode_message(observation), key=key)
    await producer.stop()
    runners = [
        _runner(bus, f"attest-{j.share.guardian_index}", ["observations", "signing"],
                _attester(source, j))
        for j in journals(tmp_path)
    ]  # fmt: skip
    assembler = Assembler(SqlRelayerLedger(sessions), SETS, threshold=CONFIG)
    runners.append(_runner(bus, "assemble", ["signatures"], assembler))
    tasks = [asyncio.create_task(r.run()) for r in runners]
    try:
        records = await read_topic(bus, "vaas", 2, group_id=uuid.uuid4().hex, limit_s=10)
        packages = await read_topic(bus, "signing", 2, group_id=uuid.uuid4().hex, limit_s=10)
    finally:
        for runner in runners:
            runner.stop()
        await asyncio.wait_for(asyncio.gather(*tasks), 5)

    vaas = [decode_as(r.value, SignedVaa).parsed for r in records]
    assert sorted(v.digest for v in vaas) == sorted(o.digest for o in observations)
    for vaa in vaas:
        assert isinstance(vaa, ThresholdVaa)
        verify_threshold_vaa(vaa, CONFIG.keys(), SETS, NOW)
    assert all(len(decode_as(p.value, SigningPackageMessage).commitments) == 3 for p in packages)
    async with sessions() as session:
        stored = (await session.scalars(select(StoredVaa))).all()
        issued = (await session.scalars(select(ThresholdPackage))).all()
    assert sorted(row.vaa[0] for row in stored) == [2, 2]  # no version-1 VAA was assembled
    assert len(issued) == 2
    assert all(row.failure is None for row in issued)


def _record(message: object, offset: int, topic: str = "signatures") -> Record:
    return Record(topic, 0, offset, None, encode_message(message))  # type: ignore[arg-type]


async def _commit_all(
    assembler: Assembler, j: list[SigningJournal], observation: Observation
) -> SigningPackageMessage:
    """Commitments of every guardian, one record each; the package the third one completes."""
    issued: list[SigningPackageMessage] = []
    for offset, journal in enumerate(j):
        commitment = journal.commit(0, observation.digest, 0)
        step = ThresholdCommitmentMessage(observation, 0, 0, commitment=commitment)
        result = await assembler.process(_record(step, offset))
        issued += [decode_as(o.value, SigningPackageMessage) for o in result.outputs]
    [package] = issued
    return package


def _partial(journal: SigningJournal, package: SigningPackageMessage) -> ThresholdPartialMessage:
    z = journal.answer(0, package.digest, package.attempt, package.commitments).z
    return ThresholdPartialMessage(
        package.observation, 0, package.attempt, identifier=journal.share.identifier,
        z=z.to_bytes(32, "big"),
    )  # fmt: skip


def _tampered(partial: ThresholdPartialMessage) -> ThresholdPartialMessage:
    return replace(partial, z=((int.from_bytes(partial.z, "big") + 1) % 2**256).to_bytes(32, "big"))


async def test_a_guardian_journals_a_batchs_commitments_together_with_one_by_ones_outcome(
    tmp_path: Path,
) -> None:
    observations = [sample_observation(n) for n in range(30, 36)]
    source = ChainHolding(messages={o.message_id: o for o in observations})
    records = [_record(o, n, "observations") for n, o in enumerate(observations)]
    batch_journal, alone_journal = journals(tmp_path, "batch")[0], journals(tmp_path, "alone")[0]
    statements: list[str] = []
    batch_journal._db.set_trace_callback(statements.append)

    batched = await _attester(source, batch_journal).process_batch(records)
    alone = [await _attester(source, alone_journal).process(r) for r in records]

    assert statements.count("BEGIN IMMEDIATE") == 1  # the batch's six commitments, one write
    for together, one in zip(batched, alone, strict=True):
        assert isinstance(together, StageResult)
        kinds = [decode_message(o.value).TYPE for o in together.outputs]
        assert kinds == ["guardian_signature", "threshold_commitment"]
        # Another journal draws other nonces; everything else is the same.
        assert together.outputs[0] == one.outputs[0]
        step = decode_as(together.outputs[1].value, ThresholdCommitmentMessage)
        assert step.commitment == batch_journal.commit(0, step.digest, 0)


async def test_a_guardian_answers_a_batchs_packages_in_one_write_refusing_only_the_bad_one(
    tmp_path: Path,
) -> None:
    observations = [sample_observation(n) for n in range(40, 45)]
    j = journals(tmp_path)
    packages = [
        SigningPackageMessage(
            o, 0, 0, commitments=tuple(journal.commit(0, o.digest, 0) for journal in j[:3])
        )
        for o in observations
    ]
    # A package for a digest guardian 0 never committed to (guardian 4 stands in its place).
    stranger = sample_observation(46)
    commitments = tuple(journal.commit(0, stranger.digest, 0) for journal in j[1:4])
    forged = SigningPackageMessage(stranger, 0, 0, commitments=(*commitments,))
    mixed = [*packages[:2], forged, *packages[2:]]
    statements: list[str] = []
    j[0]._db.set_trace_callback(statements.append)

    results = await _attester(ChainHolding(), j[0]).process_batch(
        [_record(p, n, "signing") for n, p in enumerate(mixed)]
    )

    assert statements.count("BEGIN IMMEDIATE") == 1
    assert isinstance(results[2], StageResult)
    assert results[2].outputs == ()  # the forged package does not name guardian 0
    answered = [r for n, r in enumerate(results) if n != 2]
    for package, result in zip(packages, answered, strict=True):
        assert isinstance(result, StageResult)
        (output,) = result.outputs
        assert decode_as(output.value, ThresholdPartialMessage) == _partial(j[0], package)
    # Naming guardian 0 with a commitment it never published: refused, only that record fails.
    named = SigningPackageMessage(
        stranger, 0, 0, commitments=(replace(commitments[2], identifier=1), *commitments[:2])
    )
    again = await _attester(ChainHolding(), j[0]).process_batch(
        [_record(named, 0, "signing"), _record(packages[0], 1, "signing")]
    )
    assert isinstance(again[0], PackageRefused)
    assert isinstance(again[1], StageResult)
    assert len(again[1].outputs) == 1


async def test_the_first_quorum_of_commitments_is_the_package_issued_once(
    tmp_path: Path, sessions: async_sessionmaker[AsyncSession]
) -> None:
    observation = sample_observation(20)
    assembler = Assembler(SqlRelayerLedger(sessions), SETS, threshold=CONFIG)
    j = journals(tmp_path)
    package = await _commit_all(assembler, j, observation)
    assert [c.identifier for c in package.commitments] == [1, 2, 3]

    replayed = await assembler.process(
        _record(ThresholdCommitmentMessage(observation, 0, 0, commitment=package.commitments[2]), 2)
    )  # the record that issued it, after a crash: issued again
    assert [decode_as(o.value, SigningPackageMessage) for o in replayed.outputs] == [package]
    late = await assembler.process(
        _record(ThresholdCommitmentMessage(observation, 0, 0, commitment=package.commitments[2]), 9)
    )
    assert late.outputs == ()

    partials = [_partial(journal, package) for journal in j[:3]]
    results = [await assembler.process(_record(p, 10 + i)) for i, p in enumerate(partials)]
    assert [len(r.outputs) for r in results] == [0, 0, 1]
    vaa = decode_as(results[2].outputs[0].value, SignedVaa).parsed
    assert isinstance(vaa, ThresholdVaa)
    assert vaa.body == observation.body
    verify_threshold_vaa(vaa, CONFIG.keys(), SETS, NOW)
    again = await assembler.process(_record(partials[2], 12))  # its replay emits it again
    assert decode_as(again.outputs[0].value, SignedVaa).parsed == vaa
    assert (await assembler.process(_record(partials[0], 13))).outputs == ()


async def _version_1_and_failure(output: Output, sessions: async_sessionmaker[AsyncSession]) -> str:
    """Check that `output` carries a valid version-1 VAA; the one package's failure."""
    vaa = parse_any_vaa(decode_as(output.value, SignedVaa).vaa)
    assert isinstance(vaa, Vaa)
    verify_vaa(vaa, SETS, NOW)
    async with sessions() as session:
        [row] = (await session.scalars(select(ThresholdPackage))).all()
    assert row.failure is not None
    return row.failure


async def test_a_batch_of_steps_gives_what_taking_them_one_by_one_gives(
    tmp_path: Path, sessions: async_sessionmaker[AsyncSession]
) -> None:
    observations = [sample_observation(70 + n) for n in range(3)]
    j = journals(tmp_path)
    steps = [
        ThresholdCommitmentMessage(o, 0, 0, commitment=journal.commit(0, o.digest, 0))
        for journal in j  # guardian by guardian: each digest's third commitment comes third
        for o in observations
    ]
    records = [_record(step, offset) for offset, step in enumerate(steps)]
    assembler = Assembler(SqlRelayerLedger(sessions), SETS, threshold=CONFIG)

    results = await assembler.process_batch(records)
    issued = [i for i, r in enumerate(results) if isinstance(r, StageResult) and r.outputs]
    assert issued == [6, 7, 8]  # the third guardian's commitments, one package per digest
    packages = [decode_as(results[i].outputs[0].value, SigningPackageMessage) for i in issued]
    assert all([c.identifier for c in p.commitments] == [1, 2, 3] for p in packages)
    again = await assembler.process_batch(records)  # the batch replayed after a crash
    assert [bool(isinstance(r, StageResult) and r.outputs) for r in again] == [
        bool(isinstance(r, StageResult) and r.outputs) for r in results
    ]

    partials = [_partial(journal, p) for journal in j[:3] for p in packages]
    answers = [_record(partial, 100 + offset) for offset, partial in enumerate(partials)]
    done = await assembler.process_batch(answers)
    emitted = [i for i, r in enumerate(done) if isinstance(r, StageResult) and r.outputs]
    assert emitted == [6, 7, 8]
    for i in emitted:
        vaa = decode_as(done[i].outputs[0].value, SignedVaa).parsed
        assert isinstance(vaa, ThresholdVaa)
        verify_threshold_vaa(vaa, CONFIG.keys(), SETS, NOW)
    replayed = await assembler.process_batch(answers)
    assert [r.outputs for r in replayed if isinstance(r, StageResult)] == [
        r.outputs for r in done if isinstance(r, StageResult)
    ]


async def test_a_bad_partial_brings_another_attempt_without_its_signer(
    tmp_path: Path, sessions: async_sessionmaker[AsyncSession]
) -> None:
    observation = sample_observation(30)
    assembler = Assembler(SqlRelayerLedger(sessions), SETS, threshold=CONFIG)
    for offset, signature in enumerate(signature_messages(observation, SIGNERS, [0, 1, 2, 3])):
        held = await assembler.process(_record(signature, 100 + offset))
        assert held.outputs == ()  # a quorum of version-1 signatures waits for the threshold
    j = journals(tmp_path)
    package = await _commit_all(assembler, j, observation)
    for offset, journal in enumerate(j[:2]):
        assert (
            await assembler.process(_record(_partial(journal, package), 200 + offset))
        ).outputs == ()
    real = _partial(j[2], package)
    [output] = (await assembler.process(_record(_tampered(real), 210))).outputs

    retry = decode_as(output.value, ThresholdRetryMessage)
    assert (retry.attempt, retry.excluded) == (1, (3,))  # signer 3 is guardian 2
    assert (await assembler.process(_record(real, 211))).outputs == ()  # attempt 0 is over
    answers = [
        _attester(ChainHolding(), journal).process(_record(retry, 0, "signing")) for journal in j
    ]
    commitments = [o for result in await asyncio.gather(*answers) for o in result.outputs]
    assert len(commitments) == 3  # every guardian but the excluded one commits again
    issued = []
    for offset, output in enumerate(commitments):
        result = await assembler.process(Record("signatures", 0, 300 + offset, None, output.value))
        issued += [decode_as(o.value, SigningPackageMessage) for o in result.outputs]
    [second] = issued
    assert (second.attempt, [c.identifier for c in second.commitments]) == (1, [1, 2, 4])
    done = [await assembler.process(_record(_partial(j[i], second), 400 + i)) for i in (0, 1, 3)]
    [final] = done[-1].outputs
    vaa = decode_as(final.value, SignedVaa).parsed
    assert isinstance(vaa, ThresholdVaa)
    verify_threshold_vaa(vaa, CONFIG.keys(), SETS, NOW)


async def test_version_1_takes_over_when_too_few_signers_are_left_to_try_again(
    tmp_path: Path, sessions: async_sessionmaker[AsyncSession]
) -> None:
    observation = sample_observation(31)
    assembler = Assembler(SqlRelayerLedger(sessions), SETS, threshold=CONFIG)
    for offset, signature in enumerate(signature_messages(observation, SIGNERS, [0, 1, 2, 3])):
        await assembler.process(_record(signature, 100 + offset))
    j = journals(tmp_path)
    package = await _commit_all(assembler, j, observation)
    partials = [_partial(journal, package) for journal in j[:3]]
    for offset, partial in enumerate([partials[0], partials[1], _tampered(partials[2])]):
        result = await assembler.process(_record(partial, 200 + offset))
    retry = decode_as(result.outputs[0].value, ThresholdRetryMessage)
    for offset, index in enumerate((0, 1, 3)):
        step = ThresholdCommitmentMessage(
            observation, 0, 1, commitment=j[index].recommit(0, observation.digest, 1)
        )
        result = await assembler.process(_record(step, 300 + offset))
    second = decode_as(result.outputs[0].value, SigningPackageMessage)
    answers = [_partial(j[0], second), _partial(j[1], second), _tampered(_partial(j[3], second))]
    for offset, partial in enumerate(answers):
        result = await assembler.process(_record(partial, 400 + offset))

    [output] = result.outputs  # guardians 2 and 3 are out: two are left, three are needed
    vaa = parse_any_vaa(decode_as(output.value, SignedVaa).vaa)
    assert isinstance(vaa, Vaa)
    verify_vaa(vaa, SETS, NOW)
    assert retry.excluded == (3,)
    async with sessions() as session:
        rows = (
            await session.scalars(select(ThresholdPackage).order_by(ThresholdPackage.attempt))
        ).all()
    assert [(row.attempt, row.blamed) for row in rows] == [(0, 3), (1, 4)]
    assert await _left_out(sessions) == [
        (0, (3,), "signatures:0:202"),
        (1, (4,), "signatures:0:402"),
    ]
    replayed = await assembler.process(_record(answers[2], 402))  # its record, after a crash
    assert replayed.outputs == result.outputs  # the version-1 VAA it stored, again


def test_a_guardian_commits_again_only_to_a_digest_it_committed_to(tmp_path: Path) -> None:
    observation = sample_observation(32)
    journal = journals(tmp_path)[0]
    with pytest.raises(PackageRefused, match="never committed to"):
        journal.recommit(0, observation.digest, 1)
    first = journal.commit(0, observation.digest, 0)
    assert journal.recommit(0, observation.digest, 1) != first


async def test_a_silent_signer_is_left_out_of_another_attempt_on_a_tick_past_the_timeout(
    tmp_path: Path, sessions: async_sessionmaker[AsyncSession], clock: Clock
) -> None:
    observation = sample_observation(50)
    assembler = Assembler(SqlRelayerLedger(sessions), SETS, threshold=CONFIG, clock=clock)
    for offset, signature in enumerate(signature_messages(observation, SIGNERS, [3, 1, 0])):
        assert (await assembler.process(_record(signature, 100 + offset))).outputs == ()
    j = journals(tmp_path)
    package = await _commit_all(assembler, j, observation)
    late = _partial(j[2], package)  # guardian 2 answers only after the timeout
    for offset, journal in enumerate(j[:2]):
        assert (
            await assembler.process(_record(_partial(journal, package), 200 + offset))
        ).outputs == ()

    tick = ThresholdTick(at_ms=0)
    clock.now += 29
    assert (await assembler.process(_record(tick, 300))).outputs == ()  # within the timeout
    clock.now += 2
    [output] = (await assembler.process(_record(tick, 301))).outputs
    assert output.topic == CONFIG.signing_topic
    retry = decode_as(output.value, ThresholdRetryMessage)
    assert (retry.attempt, retry.excluded) == (1, (3,))  # signer 3 is guardian 2
    assert "guardian(s) [2] did not answer within 30 s" in (await _failures(sessions))[0]
    assert await _left_out(sessions) == [(0, (3,), "signatures:0:301")]
    assert (await assembler.process(_record(tick, 302))).outputs == ()  # a later tick
    assert (await assembler.process(_record(late, 303))).outputs == ()  # the late answer

    answers = [
        _attester(ChainHolding(), journal).process(_record(retry, 0, "signing")) for journal in j
    ]
    commitments = [o for result in await asyncio.gather(*answers) for o in result.outputs]
    assert len(commitments) == 3  # every guardian but the silent one commits again
    issued = []
    for offset, commitment in enumerate(commitments):
        result = await assembler.process(
            Record("signatures", 0, 400 + offset, None, commitment.value)
        )
        issued += [decode_as(o.value, SigningPackageMessage) for o in result.outputs]
    [second] = issued
    assert (second.attempt, [c.identifier for c in second.commitments]) == (1, [1, 2, 4])
    done = [await assembler.process(_record(_partial(j[i], second), 500 + i)) for i in (0, 1, 3)]
    [final] = done[-1].outputs
    vaa = decode_as(final.value, SignedVaa).parsed
    assert isinstance(vaa, ThresholdVaa)  # version 2, from the healthy guardians
    verify_threshold_vaa(vaa, CONFIG.keys(), SETS, NOW)
    clock.now += 31
    assert (await assembler.process(_record(tick, 600))).outputs == ()  # signed: nothing is stale


async def _failures(sessions: async_sessionmaker[AsyncSession]) -> list[str | None]:
    """Each attempt's failure, by attempt."""
    async with sessions() as session:
        return list(
            await session.scalars(
                select(ThresholdPackage.failure).order_by(ThresholdPackage.attempt)
            )
        )


async def _left_out(
    sessions: async_sessionmaker[AsyncSession],
) -> list[tuple[int, tuple[int, ...], str | None]]:
    """Each failed attempt's left-out signers and the record that failed it, as (attempt,
    identifiers, bus position), by attempt; checks that ``threshold_parts`` holds only
    commitments and partials."""
    async with sessions() as session:
        rows = await session.execute(
            select(
                ThresholdPackage.attempt, ThresholdPackage.left_out, ThresholdPackage.failed_from
            )
            .where(ThresholdPackage.failure.is_not(None))
            .order_by(ThresholdPackage.attempt)
        )
        kinds = set(await session.scalars(select(ThresholdPart.kind)))
    assert kinds <= {"commitment", "partial"}
    return [(attempt, decode_identifiers(left), position) for attempt, left, position in rows]


async def _issue(
    assembler: Assembler,
    j: Sequence[SigningJournal],
    observation: Observation,
    attempt: int,
    offset: int,
) -> SigningPackageMessage:
    """Commitments of the guardians `j` to `attempt` (again, after the first), one record each
    from `offset`; the one package they issue."""
    issued: list[SigningPackageMessage] = []
    for n, journal in enumerate(j):
        make = journal.commit if attempt == 0 else journal.recommit
        commitment = make(0, observation.digest, attempt)
        step = ThresholdCommitmentMessage(observation, 0, attempt, commitment=commitment)
        result = await assembler.process(_record(step, offset + n))
        issued += [decode_as(o.value, SigningPackageMessage) for o in result.outputs]
    [package] = issued
    return package


async def test_signers_silent_in_every_attempt_give_way_to_version_1_after_the_last_attempt(
    tmp_path: Path, sessions: async_sessionmaker[AsyncSession], clock: Clock
) -> None:
    """Ten guardians, a threshold of 7: three attempts, each with one signer silent, leave seven
    guardians, but no attempt follows the third (MAX_ATTEMPTS): version 1 takes over. Every
    attempt leaves out the signers silent in the attempts before it, even when they commit."""
    dealt = threshold_key(10)
    config = ThresholdConfig(0, dealt.group_key, dealt.threshold, dealt.verification_shares)
    sets = GuardianSets.of(guardian_set(10))
    j = [
        SigningJournal(share, tmp_path / f"ten-{share.identifier}.sqlite") for share in dealt.shares
    ]
    observation = sample_observation(51)
    assembler = Assembler(SqlRelayerLedger(sessions), sets, threshold=config, clock=clock)
    signatures = signature_messages(observation, guardian_signers(10), range(10))
    for offset, signature in enumerate(signatures):
        assert (await assembler.process(_record(signature, offset))).outputs == ()

    excluded: list[int] = []  # signer identifiers, as each attempt finds them silent
    for attempt in range(3):
        # The signers left out so far commit first: the package is chosen without them.
        order = sorted(j, key=lambda one: one.share.identifier not in excluded)
        package = await _issue(assembler, order, observation, attempt, 100 * (attempt + 1))
        named = [c.identifier for c in package.commitments]
        assert len(named) == 7
        assert not set(named) & set(excluded)
        silent = named[-1]
        for n, identifier in enumerate(named[:-1]):
            partial = _partial(j[identifier - 1], package)
            result = await assembler.process(_record(partial, 100 * (attempt + 1) + 50 + n))
            assert result.outputs == ()
        excluded.append(silent)
        clock.now += 31
        tick = _record(ThresholdTick(at_ms=0), 1000 + attempt)
        [output] = (await assembler.process(tick)).outputs
        if attempt < 2:
            retry = decode_as(output.value, ThresholdRetryMessage)
            assert (retry.attempt, retry.excluded) == (attempt + 1, tuple(sorted(excluded)))

    vaa = parse_any_vaa(decode_as(output.value, SignedVaa).vaa)
    assert isinstance(vaa, Vaa)
    verify_vaa(vaa, sets, NOW)
    assert len(config.verification_shares) - len(excluded) == config.threshold  # enough left
    failures = await _failures(sessions)
    assert len(failures) == 3  # no fourth attempt was opened
    assert all(f is not None and "did not answer within 30 s" in f for f in failures)
    assert await _left_out(sessions) == [
        (attempt, (identifier,), f"signatures:0:{1000 + attempt}")
        for attempt, identifier in enumerate(excluded)
    ]  # each tick left out the one signer silent in the attempt it failed, and only that one


async def test_too_few_guardians_left_after_a_timeout_give_way_to_version_1_at_once(
    tmp_path: Path, sessions: async_sessionmaker[AsyncSession], clock: Clock
) -> None:
    observation = sample_observation(52)
    assembler = Assembler(SqlRelayerLedger(sessions), SETS, threshold=CONFIG, clock=clock)
    for offset, signature in enumerate(signature_messages(observation, SIGNERS, [0, 1, 2, 3])):
        await assembler.process(_record(signature, 100 + offset))
    j = journals(tmp_path)
    package = await _commit_all(assembler, j, observation)
    assert (await assembler.process(_record(_partial(j[0], package), 200))).outputs == ()

    clock.now += 31
    [output] = (await assembler.process(_record(ThresholdTick(at_ms=0), 300))).outputs
    # Guardians 1 and 2 are silent: two are left, three are needed.
    failure = await _version_1_and_failure(output, sessions)  # the one package: none opened
    assert "guardian(s) [1, 2] did not answer within 30 s" in failure
    assert await _left_out(sessions) == [(0, (2, 3), "signatures:0:300")]  # both are recorded


async def test_a_replay_of_a_tick_or_a_bad_partial_publishes_the_same_retries_and_vaas_again(
    tmp_path: Path, sessions: async_sessionmaker[AsyncSession], clock: Clock
) -> None:
    """A tick and a partial that does not check, each replayed after a crash (alone, in a batch,
    together): the same retries and VAAs as the first time, found by the packages the record
    failed (``failed_from``); nothing opened, failed or stored again."""
    silent, uncommitted, bad = (sample_observation(n) for n in (53, 54, 55))
    ledger = SqlRelayerLedger(sessions)
    assembler = Assembler(ledger, SETS, threshold=CONFIG, clock=clock)
    for n, observation in enumerate((silent, uncommitted)):
        signatures = signature_messages(observation, SIGNERS, [0, 1, 2, 3])
        for offset, signature in enumerate(signatures):
            await assembler.process(_record(signature, 10 * n + offset))
    j = journals(tmp_path)
    package = await _commit_all(assembler, j, silent)
    for offset, journal in enumerate(j[:2]):
        await assembler.process(_record(_partial(journal, package), 200 + offset))
    for offset, journal in enumerate(j[:2]):  # two of three commitments: never issued
        step = ThresholdCommitmentMessage(
            uncommitted, 0, 0, commitment=journal.commit(0, uncommitted.digest, 0)
        )
        await assembler.process(_record(step, 300 + offset))

    clock.now += 31
    tick = _record(ThresholdTick(at_ms=0), 400)
    first = (await assembler.process(tick)).outputs
    assert [o.topic for o in first] == [CONFIG.signing_topic, "vaas"]
    retry = decode_as(first[0].value, ThresholdRetryMessage)
    assert (retry.digest, retry.attempt, retry.excluded) == (silent.digest, 1, (3,))
    vaa = parse_any_vaa(decode_as(first[1].value, SignedVaa).vaa)
    assert isinstance(vaa, Vaa)
    assert vaa.digest == uncommitted.digest

    # After the tick (its timeout would fail the attempt otherwise), a partial that does not
    # check fails attempt 0 of another digest, leaving its signer out of the retry.
    for offset, signature in enumerate(signature_messages(bad, SIGNERS, [0, 1, 2, 3])):
        await assembler.process(_record(signature, 500 + offset))
    package = await _issue(assembler, j, bad, 0, 600)
    for offset, journal in enumerate(j[:2]):
        await assembler.process(_record(_partial(journal, package), 700 + offset))
    tampered = _record(_tampered(_partial(j[2], package)), 710)
    failed = (await assembler.process(tampered)).outputs
    [output] = failed
    bad_retry = decode_as(output.value, ThresholdRetryMessage)
    assert (bad_retry.digest, bad_retry.attempt, bad_retry.excluded) == (bad.digest, 1, (3,))
    async with ledger.reading() as work:
        by_tick = await work.threshold_packages_failed_from(position_of(tick))
        by_partial = await work.threshold_packages_failed_from(position_of(tampered))
    assert [(p.digest, p.attempt, p.left_out) for p in by_tick] == [
        (silent.digest, 0, (3,)),  # the package issued, signer 3 silent
        (uncommitted.digest, 0, ()),  # never issued: nobody to leave out
    ]
    assert [(p.digest, p.attempt, p.left_out, p.blamed) for p in by_partial] == [
        (bad.digest, 0, (3,), 3)
    ]
    stored = await _ledger_rows(sessions)

    clock.now += 5  # the assembler restarted, within the new attempts' timeout
    assert (await assembler.process(tick)).outputs == first  # the same tick after a crash
    assert (await assembler.process(tampered)).outputs == failed  # the same partial
    for batch, expected in (([tick], [first]), ([tampered], [failed]),
                            ([tampered, tick], [failed, first])):  # fmt: skip
        again = await assembler.process_batch(batch)
        assert [r.outputs if isinstance(r, StageResult) else r for r in again] == expected
    assert await _ledger_rows(sessions) == stored  # nothing opened, failed or stored again
    assert (await assembler.process(_record(ThresholdTick(at_ms=0), 401))).outputs == ()
    assert (await assembler.process(_record(_partial(j[2], package), 711))).outputs == ()


async def _ledger_rows(sessions: async_sessionmaker[AsyncSession]) -> list[tuple[object, ...]]:
    """Every threshold package, part and VAA row, column by column, as stored."""
    rows = []
    async with sessions() as session:
        for model in (ThresholdPackage, ThresholdPart, StoredVaa):
            rows += [tuple(row) for row in await session.execute(select(model.__table__))]
    return rows


async def test_too_few_commitments_give_way_to_version_1_on_a_tick_past_the_timeout(
    tmp_path: Path, sessions: async_sessionmaker[AsyncSession]
) -> None:
    observation = sample_observation(60)
    ledger = SqlRelayerLedger(sessions)
    assembler = Assembler(ledger, SETS, threshold=CONFIG)
    for offset, signature in enumerate(signature_messages(observation, SIGNERS, [0, 1, 2, 3])):
        assert (await assembler.process(_record(signature, offset))).outputs == ()
    for offset, journal in enumerate(journals(tmp_path)[:2]):  # the others hold no share
        step = ThresholdCommitmentMessage(
            observation, 0, 0, commitment=journal.commit(0, observation.digest, 0)
        )
        assert (await assembler.process(_record(step, 10 + offset))).outputs == ()

    after = Assembler(ledger, SETS, threshold=CONFIG, clock=lambda: time.time() + 31)
    [output] = (await after.process(_record(ThresholdTick(at_ms=0), 20))).outputs
    failure = await _version_1_and_failure(output, sessions)
    assert "2 guardian(s) committed within 30 s, 3 are needed" in failure


async def test_signatures_without_any_commitment_give_way_to_version_1_on_a_tick(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    """Guardians that hold no share (a misconfiguration) commit nothing: their version-1
    signatures are held, then assembled once a tick finds the attempt past the timeout."""
    observation = sample_observation(80)
    ledger = SqlRelayerLedger(sessions)
    assembler = Assembler(ledger, SETS, threshold=CONFIG)
    signatures = signature_messages(observation, SIGNERS, [0, 1, 2, 3])
    held = await assembler.process_batch([_record(m, n) for n, m in enumerate(signatures)])
    assert all(isinstance(r, StageResult) and r.outputs == () for r in held)
    after = Assembler(ledger, SETS, threshold=CONFIG, clock=lambda: time.time() + 31)
    [output] = (await after.process(_record(ThresholdTick(at_ms=0), 10))).outputs
    failure = await _version_1_and_failure(output, sessions)
    assert "0 guardian(s) committed within 30 s, 3 are needed" in failure


async def test_the_ticker_publishes_ticks_until_stopped() -> None:
    bus = MemoryBus()
    await bus.create_topics(["signatures"])
    ticker = ThresholdTicker(bus, "signatures", every_s=0.01)
    task = asyncio.create_task(ticker.run())
    ticks = await read_topic(bus, "signatures", 3, group_id=uuid.uuid4().hex, limit_s=5)
    ticker.stop()
    await asyncio.wait_for(task, 5)
    assert all(isinstance(decode_message(r.value), ThresholdTick) for r in ticks)


async def test_steps_for_another_key_or_signer_are_refused(
    tmp_path: Path, sessions: async_sessionmaker[AsyncSession]
) -> None:
    observation = sample_observation(40)
    assembler = Assembler(SqlRelayerLedger(sessions), SETS, threshold=CONFIG)
    commitment = journals(tmp_path)[0].commit(0, observation.digest, 0)
    other_key = ThresholdCommitmentMessage(observation, 7, 0, commitment=commitment)
    with pytest.raises(ThresholdStepRefused, match="key 7; this assembler signs under key 0"):
        await assembler.process(_record(other_key, 0))
    stranger = ThresholdCommitmentMessage(
        observation, 0, 0, commitment=replace(commitment, identifier=9)
    )
    with pytest.raises(ThresholdStepRefused, match="signer 9 holds no share"):
        await assembler.process(_record(stranger, 1))
    orphan = ThresholdPartialMessage(observation, 0, 0, identifier=1, z=bytes(32))
    with pytest.raises(ThresholdStepRefused, match="no signing package was issued"):
        await assembler.process(_record(orphan, 2))
    plain = Assembler(SqlRelayerLedger(sessions), SETS)
    step = ThresholdCommitmentMessage(observation, 0, 0, commitment=commitment)
    with pytest.raises(ThresholdStepRefused, match="without threshold attestation"):
        await plain.process(_record(step, 3))


# --- configuration --------------------------------------------------------------------------------


def test_a_share_loads_only_as_its_guardians_share_of_the_key(tmp_path: Path) -> None:
    path = tmp_path / "share"
    path.write_text("0x" + SHARES[1].secret_bytes().hex() + "\n")
    shares = DEALT.verification_shares
    loaded = load_threshold_share(1, DEALT.group_key, shares[2], path)
    assert loaded.verification_share == shares[2]
    with pytest.raises(GuardianKeyError, match="not guardian 2's share of key"):
        load_threshold_share(2, DEALT.group_key, shares[3], path)
    environ = {"FEDRELAY_THRESHOLD_SHARE": SHARES[3].secret_bytes().hex()}
    assert load_threshold_share(3, DEALT.group_key, shares[4], None, environ).identifier == 4
    with pytest.raises(GuardianKeyError, match="threshold share"):
        load_threshold_share(3, DEALT.group_key, shares[4], None, {})


def test_threshold_attestation_needs_its_key_in_the_settings() -> None:
    with pytest.raises(ValidationError, match="needs FEDRELAY_THRESHOLD_GROUP_KEY"):
        RelayerSettings(attestation="threshold")
    with pytest.raises(ValidationError, match=r"threshold_verification_shares\[1\] must be"):
        RelayerSettings(threshold_verification_shares=(DEALT.group_key.hex(), "0x1234"))
    settings = RelayerSettings(
        attestation="threshold",
        threshold_group_key=DEALT.group_key.hex(),
        threshold_verification_shares=tuple(
            DEALT.verification_shares[i + 1].hex() for i in range(GUARDIANS)
        ),
    )
    assert settings.threshold_points() == (DEALT.group_key, dict(DEALT.verification_shares))
