"""One contract, two buses: the in-process bus must behave as Kafka does where stages rely on it.

Each test runs against the real Kafka broker and against `MemoryBus`.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest

from fedrelay.adapters.devnet.services import Kafka
from fedrelay.adapters.kafka import Bus, BusError, KafkaBus, MemoryBus, Partition, Record
from fedrelay.ports.bus import Consumer

pytestmark = pytest.mark.integration


@pytest.fixture(params=["kafka", "memory"])
async def bus(request: pytest.FixtureRequest) -> AsyncIterator[Bus]:
    if request.param == "kafka":
        broker: Kafka = request.getfixturevalue("kafka")
        real = KafkaBus(broker.bootstrap)
        yield real
        await real.close()
    else:
        memory = MemoryBus()
        yield memory
        await memory.close()


def _name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


async def _read(consumer: Consumer, want: int, rounds: int = 30) -> list[Record]:
    """Poll until `want` records arrived, or `rounds` polls of 0.5 s came back empty-handed."""
    got: list[Record] = []
    for _ in range(rounds):
        got += await consumer.poll(max_wait=0.5)
        if len(got) >= want:
            break
    return got


async def _committed_eventually(
    consumer: Consumer, partition: Partition, expected: int, limit_s: float = 20.0
) -> bool:
    """True once `partition`'s committed offset is `expected`; False after `limit_s` seconds."""
    deadline = asyncio.get_running_loop().time() + limit_s
    while asyncio.get_running_loop().time() < deadline:
        if await consumer.committed(partition) == expected:
            return True
        await asyncio.sleep(0.1)
    return await consumer.committed(partition) == expected


async def test_same_key_keeps_order_across_partitions(bus: Bus) -> None:
    topic = _name("ordered")
    await bus.create_topics([topic], partitions=3)
    producer = bus.producer()
    await producer.start()
    for i in range(10):
        await producer.send(topic, f"a{i}".encode(), key=b"emitter-a", headers=(("n", b"%d" % i),))
        await producer.send(topic, f"b{i}".encode(), key=b"emitter-b")
    await producer.stop()

    consumer = bus.consumer([topic], group_id=_name("g"))
    await consumer.start()
    records = await _read(consumer, 20)
    await consumer.stop()
    assert len(records) == 20
    by_key: dict[bytes | None, list[bytes]] = {}
    for record in records:
        by_key.setdefault(record.key, []).append(record.value)
    assert by_key[b"emitter-a"] == [f"a{i}".encode() for i in range(10)]
    assert by_key[b"emitter-b"] == [f"b{i}".encode() for i in range(10)]
    assert len({r.partition for r in records if r.key == b"emitter-a"}) == 1
    first_a = next(r for r in records if r.key == b"emitter-a")
    assert first_a.header("n") == b"0"


async def test_restart_resumes_from_committed_offset(bus: Bus) -> None:
    topic, group = _name("resume"), _name("g")
    await bus.create_topics([topic])
    producer = bus.producer()
    await producer.start()
    for i in range(4):
        await producer.send(topic, b"%d" % i, key=b"k")
    await producer.stop()

    first = bus.consumer([topic], group_id=group)
    await first.start()
    records = await _read(first, 4)
    assert [r.value for r in records] == [b"0", b"1", b"2", b"3"]
    await first.commit({Partition(topic, 0): 2})  # only two are done
    assert await first.committed(Partition(topic, 0)) == 2
    await first.stop()

    second = bus.consumer([topic], group_id=group)
    await second.start()
    assert [r.value for r in await _read(second, 2)] == [b"2", b"3"]
    await second.stop()


async def test_transaction_commits_records_and_offsets_together(bus: Bus) -> None:
    source, sink, group = _name("in"), _name("out"), _name("stage")
    await bus.create_topics([source, sink])
    plain = bus.producer()
    await plain.start()
    await plain.send(source, b"observation-1", key=b"e")
    await plain.stop()

    consumer = bus.consumer([source], group_id=group)
    await consumer.start()
    [record] = await _read(consumer, 1)
    stage = bus.producer(transactional_id=_name("tx"))
    await stage.start()

    # An aborted hand-off leaves neither the output record nor the input offset behind.
    async def crashing_hand_off() -> None:
        async with stage.transaction():
            await stage.send(sink, b"signature-aborted", key=b"e")
            await stage.send_offsets({record.position: record.offset + 1}, group)
            raise RuntimeError("crash mid-hand-off")

    with pytest.raises(RuntimeError, match="crash mid-hand-off"):
        await crashing_hand_off()
    assert await consumer.committed(record.position) in (None, 0)

    async with stage.transaction():
        await stage.send(sink, b"signature-1", key=b"e")
        await stage.send_offsets({record.position: record.offset + 1}, group)
    await stage.stop()
    # Kafka applies offsets committed in a transaction once the group coordinator has seen the
    # commit marker, a moment after commit returns: wait for it, with a limit.
    assert await _committed_eventually(consumer, record.position, record.offset + 1)
    await consumer.stop()

    reader = bus.consumer([sink], group_id=_name("reader"), isolation_level="read_committed")
    await reader.start()
    assert [r.value for r in await _read(reader, 1)] == [b"signature-1"]
    await reader.stop()


async def test_a_transaction_of_many_records_shows_all_in_key_order_or_none(bus: Bus) -> None:
    sink = _name("many")
    await bus.create_topics([sink], partitions=3)
    stage = bus.producer(transactional_id=_name("tx"))
    await stage.start()
    keys = [b"emitter-%d" % k for k in range(5)]

    async def hand_off(tag: bytes, crash: bool) -> None:
        async with stage.transaction():
            for i in range(60):
                for key in keys:
                    await stage.send(sink, tag + b"-%d" % i, key=key)
            if crash:
                raise RuntimeError("crash after the sends, before the commit")

    with pytest.raises(RuntimeError, match="crash after the sends"):
        await hand_off(b"aborted", crash=True)
    await hand_off(b"kept", crash=False)
    await stage.stop()

    reader = bus.consumer([sink], group_id=_name("reader"), isolation_level="read_committed")
    await reader.start()
    records = await _read(reader, 300)
    records += await reader.poll(max_wait=0.5)  # nothing more may follow
    await reader.stop()
    by_key: dict[bytes | None, list[bytes]] = {}
    for record in records:
        by_key.setdefault(record.key, []).append(record.value)
    assert by_key == {key: [b"kept-%d" % i for i in range(60)] for key in keys}


async def test_misuse_is_refused(bus: Bus) -> None:
    topic = _name("misuse")
    await bus.create_topics([topic])
    transactional = bus.producer(transactional_id=_name("tx"))
    await transactional.start()
    with pytest.raises(BusError, match="only inside transaction"):
        await transactional.send(topic, b"x")
    with pytest.raises(BusError, match="inside transaction"):
        await transactional.send_offsets({Partition(topic, 0): 0}, "g")
    await transactional.stop()

    plain = bus.producer()
    await plain.start()
    with pytest.raises(BusError, match="needs a producer made with a transactional_id"):
        async with plain.transaction():
            pass
    await plain.stop()


async def test_group_members_split_partitions_and_hand_over(bus: Bus) -> None:
    topic, group = _name("split"), _name("g")
    await bus.create_topics([topic], partitions=2)
    events: list[tuple[str, frozenset[Partition]]] = []

    async def assigned(parts: frozenset[Partition]) -> None:
        events.append(("assigned", parts))

    async def revoked(parts: frozenset[Partition]) -> None:
        events.append(("revoked", parts))

    first = bus.consumer([topic], group_id=group, on_assigned=assigned, on_revoked=revoked)
    await first.start()
    await first.poll(max_wait=0.5)  # Kafka assigns partitions during the first polls
    for _ in range(20):
        if first.assignment():
            break
        await first.poll(max_wait=0.5)
    assert first.assignment() == {Partition(topic, 0), Partition(topic, 1)}
    assert events
    assert events[0][0] == "assigned"
    await first.stop()
    assert ("revoked", frozenset({Partition(topic, 0), Partition(topic, 1)})) in events
