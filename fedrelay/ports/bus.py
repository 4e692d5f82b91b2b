"""The bus between relayer stages: the interface both implementations provide.

Two implementations share it: `KafkaBus` (Apache Kafka through aiokafka; production) and
`MemoryBus` (in-process; the embedded one-command mode). Stages are written against `Bus` only.

Semantics both honour:
- records with the same key go to the same partition, so per-key order holds;
- producers are idempotent; a transactional producer's records (and the consumer offsets sent
  with them) become visible together at commit, or never;
- consumers never commit on their own: a stage commits explicit offsets after its effects are
  durable, so a crash replays, never skips (at-least-once; effects are made idempotent by the
  ledger's unique keys and the destination's consumed flag).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Literal, Protocol

Headers = tuple[tuple[str, bytes], ...]
IsolationLevel = Literal["read_committed", "read_uncommitted"]


class BusError(RuntimeError):
    """The bus refused an operation (misuse, or the broker said no)."""


@dataclass(frozen=True, order=True)
class Partition:
    """One partition of a topic."""

    topic: str
    index: int


@dataclass(frozen=True)
class Record:
    """A record as a consumer receives it."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    headers: Headers = field(default=())
    timestamp_ms: int = 0

    @property
    def position(self) -> Partition:
        return Partition(self.topic, self.partition)

    def header(self, name: str) -> bytes | None:
        for key, value in self.headers:
            if key == name:
                return value
        return None


RebalanceCallback = Callable[[frozenset[Partition]], Awaitable[None]]


class Producer(Protocol):
    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def send(
        self, topic: str, value: bytes, *, key: bytes | None = None, headers: Headers = ()
    ) -> None:
        """Send one record; returns once the bus has accepted it (or buffered it in a
        transaction)."""
        ...

    def transaction(self) -> AbstractAsyncContextManager[None]:
        """Records sent inside become visible at exit, or are discarded if the block raises.
        Only for producers made with a ``transactional_id``."""
        ...

    async def send_offsets(self, offsets: Mapping[Partition, int], group_id: str) -> None:
        """Commit consumer offsets as part of the open transaction (consume-transform-produce)."""
        ...


class Consumer(Protocol):
    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def poll(self, max_wait: float = 1.0, max_records: int = 500) -> list[Record]:
        """Records not yet returned to this consumer, waiting up to `max_wait` seconds for one."""
        ...

    async def commit(self, offsets: Mapping[Partition, int]) -> None:
        """Commit explicit offsets (the offset of the next record to read, per partition)."""
        ...

    async def committed(self, partition: Partition) -> int | None: ...

    def assignment(self) -> frozenset[Partition]: ...


class Bus(Protocol):
    async def create_topics(self, topics: Sequence[str], partitions: int = 1) -> None: ...

    def producer(self, *, transactional_id: str | None = None) -> Producer: ...

    def consumer(
        self,
        topics: Sequence[str],
        *,
        group_id: str,
        isolation_level: IsolationLevel = "read_committed",
        on_assigned: RebalanceCallback | None = None,
        on_revoked: RebalanceCallback | None = None,
    ) -> Consumer: ...

    async def close(self) -> None: ...


# --- watching the bus -----------------------------------------------------------------------------


class ReadinessProbe(Protocol):
    """A real round trip to the bus for ``/readyz``; ``close()`` releases its connection."""

    async def __call__(self) -> bool:
        """True when the bus answered; raises (or returns False) when it did not."""
        ...

    async def close(self) -> None: ...


class EndOffsetsReader(Protocol):
    """Where partitions end now (the offset the next record will get), for the lag gauge.

    ``start()`` before use (a reader may also connect on first use, and again after a
    failure), ``stop()`` after; open transactions do not count.
    """

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def __call__(self, partitions: frozenset[Partition]) -> Mapping[Partition, int]: ...


class BusMonitor(Protocol):
    """What a process and its operator ask the bus about, besides moving records.

    Both implementations of :class:`Bus` provide it; fakes of :class:`Bus` need not.
    """

    def readiness_probe(self) -> ReadinessProbe:
        """A probe of the bus for ``/readyz``."""
        ...

    def end_offsets_reader(self) -> EndOffsetsReader:
        """A reader of partition end offsets (not started)."""
        ...

    async def group_lags(
        self, groups: Mapping[str, str], *, discover: tuple[str, str] | None = None
    ) -> dict[str, int]:
        """Records waiting per consumer group: end offsets minus the group's committed offsets,
        summed over every partition of the group's input topic.

        Args:
            groups: Consumer group -> the topic it consumes.
            discover: ``(prefix, topic)``: every existing group whose id starts with `prefix`
                consumes `topic` too (groups named per instance, such as one per guardian).

        Returns:
            The lag of each group whose topic exists.
        """
        ...
