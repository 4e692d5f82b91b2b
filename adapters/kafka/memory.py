"""An in-process bus with Kafka's semantics, for the embedded one-command mode.

Topics are lists of records per partition; consumer groups keep committed offsets and split
partitions among their members; transactional producers buffer records and offsets and apply
them atomically at commit. Nothing survives the process: durability is the ledger's job in this
mode.
"""

from __future__ import annotations

import asyncio
import time
import zlib
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from fedrelay.ports.bus import (
    BusError,
    EndOffsetsReader,
    Headers,
    IsolationLevel,
    Partition,
    ReadinessProbe,
    RebalanceCallback,
    Record,
)


def partition_for(key: bytes | None, partitions: int, counter: int) -> int:
    """Keyed records go to crc32(key) mod n; unkeyed ones round-robin."""
    if key is None:
        return counter % partitions
    return zlib.crc32(key) % partitions


@dataclass
class _Group:
    members: list[MemoryConsumer] = field(default_factory=list)
    committed: dict[Partition, int] = field(default_factory=dict)


class MemoryBus:
    """The whole in-process broker."""

    def __init__(self, default_partitions: int = 1) -> None:
        self.default_partitions = default_partitions
        self._logs: dict[str, list[list[Record]]] = {}
        self._groups: dict[str, _Group] = {}
        self._changed = asyncio.Condition()
        self._round_robin = 0

    async def create_topics(self, topics: Sequence[str], partitions: int = 1) -> None:
        for topic in topics:
            self._ensure(topic, partitions)

    def _ensure(self, topic: str, partitions: int | None = None) -> list[list[Record]]:
        if topic not in self._logs:
            self._logs[topic] = [[] for _ in range(partitions or self.default_partitions)]
        return self._logs[topic]

    def partitions(self, topic: str) -> list[Partition]:
        return [Partition(topic, i) for i in range(len(self._ensure(topic)))]

    def end_offset(self, partition: Partition) -> int:
        return len(self._ensure(partition.topic)[partition.index])

    async def _append(self, pending: list[tuple[str, bytes | None, bytes, Headers]]) -> None:
        async with self._changed:
            for topic, key, value, headers in pending:
                log = self._ensure(topic)
                self._round_robin += 1
                index = partition_for(key, len(log), self._round_robin)
                log[index].append(
                    Record(
                        topic, index, len(log[index]), key, value, headers,
                        int(time.time() * 1000),
                    )
                )  # fmt: skip
            self._changed.notify_all()

    async def _commit(self, group_id: str, offsets: Mapping[Partition, int]) -> None:
        group = self._groups.setdefault(group_id, _Group())
        for partition, offset in offsets.items():
            if offset < 0 or offset > self.end_offset(partition):
                raise BusError(f"offset {offset} is outside {partition} (0..end)")
            group.committed[partition] = offset

    def producer(self, *, transactional_id: str | None = None) -> MemoryProducer:
        return MemoryProducer(self, transactional_id)

    def consumer(
        self,
        topics: Sequence[str],
        *,
        group_id: str,
        isolation_level: IsolationLevel = "read_committed",
        on_assigned: RebalanceCallback | None = None,
        on_revoked: RebalanceCallback | None = None,
    ) -> MemoryConsumer:
        del isolation_level  # uncommitted records are never visible in memory
        return MemoryConsumer(self, list(topics), group_id, on_assigned, on_revoked)

    async def _join(self, consumer: MemoryConsumer) -> None:
        group = self._groups.setdefault(consumer.group_id, _Group())
        group.members.append(consumer)
        await self._rebalance(group)

    async def _leave(self, consumer: MemoryConsumer) -> None:
        group = self._groups.get(consumer.group_id)
        if group and consumer in group.members:
            group.members.remove(consumer)
            await consumer._assign(frozenset())
            await self._rebalance(group)

    async def _rebalance(self, group: _Group) -> None:
        # Round-robin over the sorted partitions of all subscribed topics, members in join order.
        topics = sorted({t for member in group.members for t in member.topics})
        every = [p for t in topics for p in self.partitions(t)]
        plan: dict[int, set[Partition]] = {id(m): set() for m in group.members}
        for i, partition in enumerate(every):
            candidates = [m for m in group.members if partition.topic in m.topics]
            if candidates:
                plan[id(candidates[i % len(candidates)])].add(partition)
        for member in group.members:
            await member._assign(frozenset(plan[id(member)]))

    def readiness_probe(self) -> ReadinessProbe:
        """See :meth:`~fedrelay.ports.bus.BusMonitor.readiness_probe`: always ready."""
        return _Always()

    def end_offsets_reader(self) -> EndOffsetsReader:
        """See :meth:`~fedrelay.ports.bus.BusMonitor.end_offsets_reader`."""
        return _MemoryEndOffsets(self)

    async def group_lags(
        self, groups: Mapping[str, str], *, discover: tuple[str, str] | None = None
    ) -> dict[str, int]:
        """See :meth:`~fedrelay.ports.bus.BusMonitor.group_lags`."""
        wanted = dict(groups)
        if discover is not None:
            prefix, topic = discover
            wanted.update({g: topic for g in self._groups if g.startswith(prefix)})
        lags: dict[str, int] = {}
        for group_id, topic in sorted(wanted.items()):
            if topic not in self._logs:
                continue
            group = self._groups.get(group_id, _Group())
            lags[group_id] = sum(
                max(0, self.end_offset(p) - group.committed.get(p, 0))
                for p in self.partitions(topic)
            )
        return lags

    async def close(self) -> None:
        for group in self._groups.values():
            for member in list(group.members):
                await member.stop()


class MemoryProducer:
    def __init__(self, bus: MemoryBus, transactional_id: str | None) -> None:
        self._bus = bus
        self._transactional_id = transactional_id
        self._pending: list[tuple[str, bytes | None, bytes, Headers]] | None = None
        self._pending_offsets: list[tuple[str, dict[Partition, int]]] = []
        self._started = False

    async def start(self) -> None:
        self._started = True

    async def stop(self) -> None:
        self._started = False

    async def send(
        self, topic: str, value: bytes, *, key: bytes | None = None, headers: Headers = ()
    ) -> None:
        if not self._started:
            raise BusError("producer not started")
        if self._transactional_id is not None and self._pending is None:
            raise BusError("a transactional producer sends only inside transaction()")
        record = (topic, key, value, tuple(headers))
        if self._pending is not None:
            self._pending.append(record)
        else:
            await self._bus._append([record])

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[None]:
        if self._transactional_id is None:
            raise BusError("transaction() needs a producer made with a transactional_id")
        if self._pending is not None:
            raise BusError("a transaction is already open")
        self._pending, self._pending_offsets = [], []
        try:
            yield
        except BaseException:
            self._pending, self._pending_offsets = None, []
            raise
        pending, offsets = self._pending, self._pending_offsets
        self._pending, self._pending_offsets = None, []
        for group_id, group_offsets in offsets:
            await self._bus._commit(group_id, group_offsets)
        await self._bus._append(pending)

    async def send_offsets(self, offsets: Mapping[Partition, int], group_id: str) -> None:
        if self._pending is None:
            raise BusError("send_offsets() belongs inside transaction()")
        self._pending_offsets.append((group_id, dict(offsets)))


class MemoryConsumer:
    def __init__(
        self,
        bus: MemoryBus,
        topics: list[str],
        group_id: str,
        on_assigned: RebalanceCallback | None,
        on_revoked: RebalanceCallback | None,
    ) -> None:
        self._bus = bus
        self.topics = topics
        self.group_id = group_id
        self._on_assigned = on_assigned
        self._on_revoked = on_revoked
        self._assignment: frozenset[Partition] = frozenset()
        self._positions: dict[Partition, int] = {}
        self._started = False

    async def start(self) -> None:
        if not self._started:
            self._started = True
            await self._bus._join(self)

    async def stop(self) -> None:
        if self._started:
            self._started = False
            await self._bus._leave(self)

    def assignment(self) -> frozenset[Partition]:
        return self._assignment

    async def _assign(self, partitions: frozenset[Partition]) -> None:
        revoked = self._assignment - partitions
        added = partitions - self._assignment
        if revoked and self._on_revoked:
            await self._on_revoked(revoked)
        self._assignment = partitions
        committed = self._bus._groups[self.group_id].committed
        for partition in revoked:
            self._positions.pop(partition, None)
        for partition in added:
            self._positions[partition] = committed.get(partition, 0)
        if added and self._on_assigned:
            await self._on_assigned(added)

    def _available(self, max_records: int) -> list[Record]:
        out: list[Record] = []
        for partition in sorted(self._assignment):
            log = self._bus._ensure(partition.topic)[partition.index]
            start = self._positions.get(partition, 0)
            chunk = log[start : start + max_records - len(out)]
            if chunk:
                out.extend(chunk)
                self._positions[partition] = start + len(chunk)
            if len(out) >= max_records:
                break
        return out

    async def poll(self, max_wait: float = 1.0, max_records: int = 500) -> list[Record]:
        if not self._started:
            raise BusError("consumer not started")
        deadline = asyncio.get_running_loop().time() + max_wait
        async with self._bus._changed:
            while True:
                records = self._available(max_records)
                remaining = deadline - asyncio.get_running_loop().time()
                if records or remaining <= 0:
                    return records
                try:
                    await asyncio.wait_for(self._bus._changed.wait(), remaining)
                except TimeoutError:
                    return self._available(max_records)

    async def commit(self, offsets: Mapping[Partition, int]) -> None:
        foreign = set(offsets) - self._assignment
        if foreign:
            raise BusError(f"cannot commit partitions not assigned to this consumer: {foreign}")
        await self._bus._commit(self.group_id, offsets)

    async def committed(self, partition: Partition) -> int | None:
        return self._bus._groups.setdefault(self.group_id, _Group()).committed.get(partition)


class _Always:
    """The in-process bus is ready as long as the process runs."""

    async def __call__(self) -> bool:
        return True

    async def close(self) -> None:
        return None


class _MemoryEndOffsets:
    """End offsets of a :class:`MemoryBus` (nothing to connect to)."""

    def __init__(self, bus: MemoryBus) -> None:
        self._bus = bus

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    async def __call__(self, partitions: frozenset[Partition]) -> Mapping[Partition, int]:
        return {p: self._bus.end_offset(p) for p in partitions}
