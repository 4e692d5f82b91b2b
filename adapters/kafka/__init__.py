"""The bus between relayer stages: Kafka in production, in-process in the embedded mode."""

from fedrelay.adapters.kafka.kafka import KafkaBus
from fedrelay.adapters.kafka.memory import MemoryBus
from fedrelay.ports.bus import Bus, BusError, Consumer, Partition, Producer, Record

__all__ = [
    "Bus", "BusError", "Consumer", "KafkaBus", "MemoryBus", "Partition", "Producer", "Record",
]  # fmt: skip
