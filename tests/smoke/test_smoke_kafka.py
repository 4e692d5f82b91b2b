"""aiokafka against a real Kafka broker (KRaft): idempotence, manual commits, transactions."""

from __future__ import annotations

import uuid

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from fedrelay.adapters.devnet.services import Kafka

pytestmark = pytest.mark.smoke


async def _create_topic(kafka: Kafka, partitions: int = 1) -> str:
    name = f"smoke-{uuid.uuid4().hex[:8]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka.bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=1)])
    finally:
        await admin.close()
    return name


async def _drain(consumer: AIOKafkaConsumer, want: int, timeout_ms: int = 15_000) -> list[bytes]:
    """Read until `want` records arrived or the broker returns nothing for `timeout_ms`."""
    values: list[bytes] = []
    while len(values) < want:
        batch = await consumer.getmany(timeout_ms=timeout_ms)
        if not batch:
            break
        for records in batch.values():
            values.extend(r.value for r in records if r.value is not None)
    return values


async def test_idempotent_producer_and_manual_commit(kafka: Kafka) -> None:
    topic = await _create_topic(kafka)
    producer = AIOKafkaProducer(bootstrap_servers=kafka.bootstrap, enable_idempotence=True)
    await producer.start()
    try:
        for i in range(5):
            await producer.send_and_wait(topic, f"m{i}".encode(), key=b"emitter-1")
    finally:
        await producer.stop()

    group = f"g-{uuid.uuid4().hex[:6]}"
    tp = TopicPartition(topic, 0)
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=kafka.bootstrap,
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    await consumer.start()
    try:
        got = await _drain(consumer, 5)
        assert got == [f"m{i}".encode() for i in range(5)]
        # Commit an explicit offset: the first three records are done, two are not.
        await consumer.commit({tp: 3})
        assert await consumer.committed(tp) == 3
    finally:
        await consumer.stop()

    # A new member of the same group resumes from the committed offset, not the end.
    again = AIOKafkaConsumer(
        topic,
        bootstrap_servers=kafka.bootstrap,
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    await again.start()
    try:
        assert await _drain(again, 2) == [b"m3", b"m4"]
    finally:
        await again.stop()


async def test_aborted_transaction_invisible_committed_visible(kafka: Kafka) -> None:
    topic = await _create_topic(kafka)
    producer = AIOKafkaProducer(
        bootstrap_servers=kafka.bootstrap, transactional_id=f"tx-{uuid.uuid4().hex[:6]}"
    )
    await producer.start()
    try:
        async with producer.transaction():
            await producer.send_and_wait(topic, b"committed-1")
        await producer.begin_transaction()
        await producer.send_and_wait(topic, b"aborted")
        await producer.abort_transaction()
        async with producer.transaction():
            await producer.send_and_wait(topic, b"committed-2")
    finally:
        await producer.stop()

    committed_reader = AIOKafkaConsumer(
        topic,
        bootstrap_servers=kafka.bootstrap,
        isolation_level="read_committed",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await committed_reader.start()
    try:
        assert await _drain(committed_reader, 2) == [b"committed-1", b"committed-2"]
    finally:
        await committed_reader.stop()

    # The aborted record is in the log: a read_uncommitted reader does see it.
    raw_reader = AIOKafkaConsumer(
        topic,
        bootstrap_servers=kafka.bootstrap,
        isolation_level="read_uncommitted",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await raw_reader.start()
    try:
        assert await _drain(raw_reader, 3) == [b"committed-1", b"aborted", b"committed-2"]
    finally:
        await raw_reader.stop()
