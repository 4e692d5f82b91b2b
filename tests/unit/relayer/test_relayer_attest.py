"""The attest stage: a devnet guardian signs only what its own read of the source shows."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry
from sqlalchemy.ext.asyncio import async_sessionmaker
from support.relayer import read_topic, sample_observation
from support.wormhole import guardian_set, guardian_signers, sample_task_assigned

from fedrelay.adapters.kafka import MemoryBus
from fedrelay.adapters.ledger.database import create_engine, upgrade
from fedrelay.adapters.ledger.relayer_ledger import SqlRelayerLedger
from fedrelay.ports.bus import Record
from fedrelay.ports.relay import ChainPosition, EmittedMessage
from fedrelay.protocol.wormhole import (
    GuardianSets,
    MessageId,
    parse_vaa,
    recover_address,
    verify_vaa,
)
from fedrelay.protocol.wormhole.observation import Observation
from fedrelay.relayer.records import (
    GuardianSignatureMessage,
    SignedVaa,
    decode_as,
    encode_message,
    message_key,
)
from fedrelay.relayer.settings import RelayerSettings
from fedrelay.relayer.stage import REASON_HEADER, StageRunner, stage_metrics
from fedrelay.relayer.stages.assemble import Assembler
from fedrelay.relayer.stages.attest import (
    Attester,
    GuardianKeyError,
    MessageNotFinal,
    ObservationRefused,
    UnknownSource,
    attest_stage,
    load_guardian_signer,
)

SIGNERS = guardian_signers(3)
GUARDIAN_SETS = GuardianSets.of(guardian_set(3))
KEYS = [
    "4f3edf983ac636a65a842ce7c78d9aa706d3b113bce9c46f30d7d21715b23b1d",
    "6cbed15c793ce57650b9877cf6fa156fbef513c4e6134f022a85b1ffdd59b2a1",
]


@dataclass
class FakeSource:
    """A source chain holding a fixed set of messages.

    It simulates what cannot be produced for real here: a message that a reorg replaced after the
    watcher saw it, and one not yet final.
    """

    chain_id: int = 2
    source: str = "fake:2"
    reread: int = 0
    messages: dict[MessageId, Observation] = field(default_factory=dict)
    reads: list[MessageId] = field(default_factory=list)

    async def head(self) -> ChainPosition:
        return ChainPosition(0, "0x00")

    async def position_hash(self, number: int) -> str | None:
        return None

    async def messages_between(self, first: int, last: int) -> Sequence[EmittedMessage]:
        return []

    async def fetch_message(self, message_id: MessageId, tx_hash: str) -> EmittedMessage | None:
        self.reads.append(message_id)
        found = self.messages.get(message_id)
        return None if found is None else EmittedMessage(found)


def record(observation: Observation, offset: int = 0) -> Record:
    return Record("observations", 0, offset, None, encode_message(observation))


def guardian(source: FakeSource, index: int) -> Attester:
    return Attester({2: source}, SIGNERS[index], index, 0, guardian_set(3))


async def test_signs_the_digest_after_reading_the_source() -> None:
    observation = sample_observation(5)
    source = FakeSource(messages={observation.message_id: observation})

    result = await guardian(source, 1).process(record(observation))

    assert source.reads == [observation.message_id]
    [output] = result.outputs
    assert output.topic == "signatures"
    assert output.key == message_key(observation.message_id)
    signed = decode_as(output.value, GuardianSignatureMessage)
    assert signed.digest == observation.digest
    assert signed.signature.guardian_index == 1
    assert recover_address(signed.signature, observation.digest) == SIGNERS[1].address


async def test_refuses_a_body_the_source_does_not_have() -> None:
    seen = sample_observation(5)
    on_chain = replace(seen, payload=sample_task_assigned(3).to_bytes())  # a reorg replaced it
    source = FakeSource(messages={seen.message_id: on_chain})

    with pytest.raises(ObservationRefused, match="not signed"):
        await guardian(source, 0).attest(seen)


async def test_a_message_the_source_does_not_show_is_retried() -> None:
    with pytest.raises(MessageNotFinal, match="does not show it"):
        await guardian(FakeSource(), 0).attest(sample_observation(5))


async def test_an_unwatched_chain_is_refused() -> None:
    observation = replace(sample_observation(5), emitter_chain=9)
    with pytest.raises(UnknownSource, match="not chain 9"):
        await guardian(FakeSource(), 0).attest(observation)


def test_a_key_that_is_not_the_guardians_is_refused() -> None:
    with pytest.raises(GuardianKeyError, match="is not guardian 2"):
        Attester({}, SIGNERS[0], 2, 0, guardian_set(3))


def test_the_key_loads_from_a_file_or_the_environment(tmp_path: Path) -> None:
    key_file = tmp_path / "guardian.key"
    key_file.write_text(f"0x{KEYS[0]}\n")

    from_file = load_guardian_signer(key_file, environ={})
    from_env = load_guardian_signer(environ={"FEDRELAY_GUARDIAN_KEY": KEYS[1]})

    assert from_file.address != from_env.address
    assert KEYS[0] not in repr(from_file)


def test_a_bad_key_is_refused_without_showing_it(tmp_path: Path) -> None:
    key_file = tmp_path / "guardian.key"
    key_file.write_text(KEYS[0][:-2] + "zz")
    with pytest.raises(GuardianKeyError, match="not hex") as raised:
        load_guardian_signer(key_file)
    assert KEYS[0][:20] not in str(raised.value)
    with pytest.raises(GuardianKeyError, match="invalid"):
        load_guardian_signer(environ={"FEDRELAY_GUARDIAN_KEY": "00" * 32})
    with pytest.raises(GuardianKeyError, match="no guardian key"):
        load_guardian_signer(environ={})


async def test_guardians_and_assembler_make_a_vaa_and_dead_letter_a_reorged_observation(
    tmp_path: Path,
) -> None:
    good, gone = sample_observation(1), sample_observation(2)
    replaced = replace(gone, payload=sample_task_assigned(3).to_bytes())  # by a reorg
    source = FakeSource(messages={good.message_id: good, gone.message_id: replaced})
    url = f"sqlite+aiosqlite:///{tmp_path / 'ledger.db'}"
    await asyncio.to_thread(upgrade, url)
    engine = create_engine(url)
    sessions = async_sessionmaker(engine, expire_on_commit=False)
    bus = MemoryBus()
    await bus.create_topics(["observations", "signatures", "vaas", "dlq"])
    producer = bus.producer()
    await producer.start()
    for observation in (gone, good):
        await producer.send(
            "observations", encode_message(observation), key=message_key(observation.message_id)
        )
    await producer.stop()
    metrics = stage_metrics(CollectorRegistry())
    runners = [
        StageRunner(
            name=f"attest-{i}",
            bus=bus,
            inputs=["observations"],
            group_id=f"attest-{i}",
            transactional_id=f"attest-{i}",
            processor=guardian(source, i),
            poll_wait_s=0.02,
            metrics=metrics,
        )
        for i in range(3)
    ]
    runners.append(
        StageRunner(
            name="assemble",
            bus=bus,
            inputs=["signatures"],
            group_id="assemble",
            transactional_id="assemble",
            processor=Assembler(SqlRelayerLedger(sessions), GuardianSets.of(guardian_set(3))),
            poll_wait_s=0.02,
            metrics=metrics,
        )
    )
    tasks = [asyncio.create_task(r.run()) for r in runners]
    try:
        [vaa_record] = await read_topic(bus, "vaas", 1, group_id=uuid.uuid4().hex)
        dead = await read_topic(bus, "dlq", 3, group_id=uuid.uuid4().hex)
    finally:
        for runner in runners:
            runner.stop()
        await asyncio.wait_for(asyncio.gather(*tasks), 5)
        await engine.dispose()

    vaa = parse_vaa(decode_as(vaa_record.value, SignedVaa).vaa)
    assert vaa.digest == good.digest
    verify_vaa(vaa, guardian_set(3), now=vaa.body.timestamp)
    assert sorted(r.header("fedrelay-dlq-stage") or b"" for r in dead) == [
        b"attest-0", b"attest-1", b"attest-2",
    ]  # fmt: skip
    assert all(b"not signed" in (r.header(REASON_HEADER) or b"") for r in dead)


def test_each_guardian_has_its_own_consumer_group() -> None:
    settings = RelayerSettings()
    groups = {
        attest_stage(settings, MemoryBus(), guardian(FakeSource(), i)).group_id for i in range(3)
    }
    assert groups == {"fedrelay-attest-0", "fedrelay-attest-1", "fedrelay-attest-2"}


@dataclass
class GatedSource(FakeSource):
    """A source whose reads all wait until `together` of them are in flight at once."""

    together: int = 1
    in_flight: int = 0
    most_in_flight: int = 0
    _all_in: asyncio.Event = field(default_factory=asyncio.Event)

    async def fetch_message(self, message_id: MessageId, tx_hash: str) -> EmittedMessage | None:
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        if self.in_flight >= self.together:
            self._all_in.set()
        await asyncio.wait_for(self._all_in.wait(), 5)  # one after another would time out here
        self.in_flight -= 1
        return await super().fetch_message(message_id, tx_hash)


async def test_a_batch_is_read_concurrently_and_judged_record_by_record_in_order() -> None:
    good = [sample_observation(60 + i) for i in range(4)]
    unseen = sample_observation(70)  # not on the chain (yet)
    replaced = sample_observation(71)
    on_chain = replace(replaced, payload=sample_task_assigned(3).to_bytes())
    batch = [good[0], unseen, good[1], replaced, good[2], good[3]]
    source = GatedSource(
        messages={o.message_id: o for o in good} | {replaced.message_id: on_chain},
        together=len(batch),
    )

    outcomes = await guardian(source, 2).process_batch(
        [record(o, offset) for offset, o in enumerate(batch)]
    )

    assert source.most_in_flight == len(batch)
    assert isinstance(outcomes[1], MessageNotFinal)
    assert isinstance(outcomes[3], ObservationRefused)
    for index in (0, 2, 4, 5):
        result = outcomes[index]
        assert not isinstance(result, Exception)
        [output] = result.outputs
        signed = decode_as(output.value, GuardianSignatureMessage)
        assert signed.digest == batch[index].digest
        assert recover_address(signed.signature, signed.digest) == SIGNERS[2].address


@dataclass
class RangeSource(FakeSource):
    """A source whose head is far ahead, so a batch can be read with one range read."""

    ranges: list[tuple[int, int]] = field(default_factory=list)
    range_fails: bool = False

    async def head(self) -> ChainPosition:
        return ChainPosition(10_000, "0xff")

    async def messages_between(self, first: int, last: int) -> Sequence[EmittedMessage]:
        self.ranges.append((first, last))
        if self.range_fails:
            raise ConnectionError("the node refused the range read")
        return [
            EmittedMessage(o)
            for o in sorted(self.messages.values(), key=lambda o: o.block_number)
            if first <= o.block_number <= last
        ]


async def test_a_batch_is_confirmed_by_one_range_read_and_the_rest_read_alone() -> None:
    good = [sample_observation(80 + i) for i in range(5)]
    unseen = sample_observation(90)
    replaced = sample_observation(91)
    on_chain = replace(replaced, payload=sample_task_assigned(3).to_bytes())
    batch = [good[0], unseen, good[1], replaced, good[2], good[3], good[4]]
    source = RangeSource(messages={o.message_id: o for o in good} | {replaced.message_id: on_chain})

    outcomes = await guardian(source, 0).process_batch(
        [record(o, offset) for offset, o in enumerate(batch)]
    )

    lowest, highest = good[0].block_number, replaced.block_number
    assert source.ranges == [(lowest, highest)]
    assert sorted(source.reads, key=lambda m: m.sequence) == [
        unseen.message_id,
        replaced.message_id,
    ]  # only what the range read did not confirm is read again, alone
    assert isinstance(outcomes[1], MessageNotFinal)
    assert isinstance(outcomes[3], ObservationRefused)
    signed = [o for o in outcomes if not isinstance(o, Exception)]
    digests = [decode_as(r.outputs[0].value, GuardianSignatureMessage).digest for r in signed]
    assert digests == [o.digest for o in good]


async def test_a_failed_range_read_leaves_each_observation_to_its_own_read() -> None:
    good = [sample_observation(100 + i) for i in range(3)]
    source = RangeSource(messages={o.message_id: o for o in good}, range_fails=True)

    outcomes = await guardian(source, 1).process_batch(
        [record(o, offset) for offset, o in enumerate(good)]
    )

    assert len(source.ranges) == 1
    assert sorted(m.sequence for m in source.reads) == [o.sequence for o in good]
    assert all(not isinstance(o, Exception) for o in outcomes)
