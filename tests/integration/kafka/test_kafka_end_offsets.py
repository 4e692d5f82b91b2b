"""The end-offsets reader every stage of a process shares (the lag gauge), on the real broker."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest

from fedrelay.adapters.devnet.services import Kafka
from fedrelay.adapters.kafka import KafkaBus, Partition
from fedrelay.adapters.kafka import kafka as kafka_adapter

pytestmark = pytest.mark.integration


async def test_stages_asking_together_share_one_connection_and_it_is_closed(
    kafka: Kafka, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Nine stages ask for end offsets at once before the reader has connected: one consumer
    is opened (not one per caller, all but one of which were never closed), and stop() closes
    it."""
    opened: list[Any] = []
    real = kafka_adapter.AIOKafkaConsumer

    class Counted(real):  # type: ignore[misc,valid-type]  # the real consumer, counted
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            opened.append(self)

    monkeypatch.setattr(kafka_adapter, "AIOKafkaConsumer", Counted)
    bus = KafkaBus(kafka.bootstrap)
    topic = f"lag-{uuid.uuid4().hex[:8]}"
    await bus.create_topics([topic], partitions=2)
    producer = bus.producer()
    await producer.start()
    for index in range(3):
        await producer.send(topic, b"x", key=bytes([index]))
    await producer.stop()
    reader = bus.end_offsets_reader()
    partitions = frozenset({Partition(topic, 0), Partition(topic, 1)})

    ends = await asyncio.gather(*(reader(partitions) for _ in range(9)))

    assert len(opened) == 1
    assert all(one == ends[0] for one in ends)
    assert sum(ends[0].values()) == 3
    await reader.stop()
    assert opened[0]._closed  # aiokafka's own flag: the connection is closed
