"""The bus on Apache Kafka, through aiokafka.

Producers are idempotent (``enable_idempotence``; ``acks=all``); a producer given a
``transactional_id`` runs Kafka transactions, so a stage's output records and its input offsets
commit together. Consumers have auto-commit off and commit explicit offsets.

Inside a transaction a send does not wait for the broker's acknowledgement: the record is handed
to the client's accumulator and the transaction waits for every acknowledgement once, just before
it commits. A batch of records then costs a few produce requests instead of one round trip per
record, which is what bounded a stage's hand-off; exactly-once is unchanged, since a record whose
send failed fails the whole transaction, which is aborted and replayed.

A transactional producer retries after :data:`TRANSACTION_RETRY_BACKOFF_MS`, not aiokafka's
100 ms. A stage starts its next transaction as soon as the last one commits, while the
coordinator may still be writing the last one's markers: the broker then answers the next
``AddOffsetsToTxn`` with ``CONCURRENT_TRANSACTIONS``, and aiokafka waits its whole retry backoff
before asking again (it shortens the wait to 20 ms for ``AddPartitionsToTxn`` only). Measured
on this machine's broker, one hand-off then became visible to a read-committed consumer after
at most 297 ms with 100 ms and at most 60 ms with 20 ms (median 35 and 29 ms).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager, suppress
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError

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


def _tp(partition: Partition) -> TopicPartition:
    return TopicPartition(partition.topic, partition.index)


def _partition(tp: Any) -> Partition:
    return Partition(str(tp.topic), int(tp.partition))


#: How long a transactional producer waits before retrying a refused request (milliseconds).
TRANSACTION_RETRY_BACKOFF_MS = 20


class KafkaBus:
    """Factory for producers and consumers against one Kafka cluster."""

    def __init__(self, bootstrap: str, *, client_id: str = "fedrelay") -> None:
        self.bootstrap = bootstrap
        self.client_id = client_id

    async def create_topics(self, topics: Sequence[str], partitions: int = 1) -> None:
        admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap, client_id=self.client_id)
        try:
            await admin.start()
            for topic in topics:
                with suppress(TopicAlreadyExistsError):
                    await admin.create_topics(
                        [NewTopic(topic, num_partitions=partitions, replication_factor=1)]
                    )
        finally:
            await admin.close()

    def producer(self, *, transactional_id: str | None = None) -> KafkaProducer:
        return KafkaProducer(self.bootstrap, self.client_id, transactional_id)

    def consumer(
        self,
        topics: Sequence[str],
        *,
        group_id: str,
        isolation_level: IsolationLevel = "read_committed",
        on_assigned: RebalanceCallback | None = None,
        on_revoked: RebalanceCallback | None = None,
    ) -> KafkaConsumer:
        return KafkaConsumer(
            self.bootstrap, list(topics), group_id, isolation_level, on_assigned, on_revoked
        )

    def readiness_probe(self) -> ReadinessProbe:
        """See :meth:`~fedrelay.ports.bus.BusMonitor.readiness_probe`."""
        return KafkaReadiness(self.bootstrap)

    def end_offsets_reader(self) -> EndOffsetsReader:
        """See :meth:`~fedrelay.ports.bus.BusMonitor.end_offsets_reader`."""
        return KafkaEndOffsets(self.bootstrap)

    async def group_lags(
        self, groups: Mapping[str, str], *, discover: tuple[str, str] | None = None
    ) -> dict[str, int]:
        """See :meth:`~fedrelay.ports.bus.BusMonitor.group_lags`."""
        admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap, request_timeout_ms=5000)
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap, isolation_level="read_committed"
        )
        await admin.start()
        await consumer.start()
        try:
            wanted = dict(groups)
            if discover is not None:
                prefix, topic = discover
                for entry in await admin.list_consumer_groups():
                    if str(entry[0]).startswith(prefix):
                        wanted[str(entry[0])] = topic
            described = await admin.describe_topics(sorted(set(wanted.values())))
            indices = {
                str(t["topic"]): sorted(int(p["partition"]) for p in t["partitions"])
                for t in described
                if not t.get("error_code")
            }
            lags: dict[str, int] = {}
            for group, topic in sorted(wanted.items()):
                partitions = [TopicPartition(topic, i) for i in indices.get(topic, [])]
                if not partitions:
                    continue
                ends: dict[Any, int] = await consumer.end_offsets(partitions)
                committed = await admin.list_consumer_group_offsets(group, partitions=partitions)
                lags[group] = sum(
                    max(
                        0,
                        ends[p]
                        - (
                            committed[p].offset
                            if p in committed and committed[p].offset >= 0
                            else 0
                        ),
                    )
                    for p in partitions
                )
            return lags
        finally:
            await consumer.stop()
            await admin.close()

    async def close(self) -> None:
        """Nothing to release: producers and consumers are stopped by their owners."""


class KafkaProducer:
    def __init__(self, bootstrap: str, client_id: str, transactional_id: str | None) -> None:
        self._transactional_id = transactional_id
        self._in_transaction = False
        self._pending: list[asyncio.Future[Any]] = []  # sends of the open transaction
        self._producer = AIOKafkaProducer(
            bootstrap_servers=bootstrap,
            client_id=client_id,
            enable_idempotence=True,
            acks="all",
            transactional_id=transactional_id,
            **({"retry_backoff_ms": TRANSACTION_RETRY_BACKOFF_MS} if transactional_id else {}),
        )

    async def start(self) -> None:
        try:
            await self._producer.start()
        except KafkaError as exc:
            raise BusError(f"cannot start Kafka producer: {exc}") from exc

    async def stop(self) -> None:
        await self._producer.stop()

    async def send(
        self, topic: str, value: bytes, *, key: bytes | None = None, headers: Headers = ()
    ) -> None:
        if self._transactional_id is not None and not self._in_transaction:
            raise BusError("a transactional producer sends only inside transaction()")
        if not self._in_transaction:
            await self._producer.send_and_wait(topic, value, key=key, headers=list(headers))
            return
        # Buffered: acknowledged together before the transaction commits (see the module).
        self._pending.append(
            await self._producer.send(topic, value, key=key, headers=list(headers))
        )

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[None]:
        if self._transactional_id is None:
            raise BusError("transaction() needs a producer made with a transactional_id")
        async with self._producer.transaction():
            self._in_transaction = True
            try:
                yield
                await self._acknowledged()
            finally:
                self._in_transaction = False
                self._drop_pending()

    async def _acknowledged(self) -> None:
        """Wait until the broker has acknowledged every send of the open transaction; raise the
        first failure (the transaction then aborts)."""
        pending, self._pending = self._pending, []
        if pending:
            await asyncio.gather(*pending)

    def _drop_pending(self) -> None:
        """Forget the sends of an aborted transaction (their outcome no longer matters)."""
        pending, self._pending = self._pending, []
        for future in pending:
            if future.done():
                if not future.cancelled():
                    future.exception()  # retrieved, so asyncio does not report it as lost
            else:
                future.add_done_callback(_retrieve)

    async def send_offsets(self, offsets: Mapping[Partition, int], group_id: str) -> None:
        if not self._in_transaction:
            raise BusError("send_offsets() belongs inside transaction()")
        await self._producer.send_offsets_to_transaction(
            {_tp(p): o for p, o in offsets.items()}, group_id
        )


def _retrieve(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(
        self, assigned: RebalanceCallback | None, revoked: RebalanceCallback | None
    ) -> None:
        self._assigned = assigned
        self._revoked = revoked

    async def on_partitions_revoked(self, revoked: Any) -> None:
        if self._revoked and revoked:
            await self._revoked(frozenset(_partition(tp) for tp in revoked))

    async def on_partitions_assigned(self, assigned: Any) -> None:
        if self._assigned and assigned:
            await self._assigned(frozenset(_partition(tp) for tp in assigned))


class KafkaConsumer:
    def __init__(
        self,
        bootstrap: str,
        topics: list[str],
        group_id: str,
        isolation_level: IsolationLevel,
        on_assigned: RebalanceCallback | None,
        on_revoked: RebalanceCallback | None,
    ) -> None:
        self._topics = topics
        self._on_revoked = on_revoked
        self._listener = _Listener(on_assigned, on_revoked)
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap,
            group_id=group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            isolation_level=isolation_level,
        )

    async def start(self) -> None:
        self._consumer.subscribe(self._topics, listener=self._listener)
        try:
            await self._consumer.start()
        except KafkaError as exc:
            raise BusError(f"cannot start Kafka consumer: {exc}") from exc

    async def stop(self) -> None:
        # aiokafka leaves the group without telling the listener; stages rely on hearing about
        # every partition they give up (to flush and commit), so report them here.
        held = self.assignment()
        if held and self._on_revoked:
            await self._on_revoked(held)
        await self._consumer.stop()

    async def poll(self, max_wait: float = 1.0, max_records: int = 500) -> list[Record]:
        batches = await self._consumer.getmany(
            timeout_ms=int(max_wait * 1000), max_records=max_records
        )
        records: list[Record] = []
        for tp in sorted(batches, key=lambda t: (t.topic, t.partition)):
            for msg in batches[tp]:
                records.append(
                    Record(
                        topic=msg.topic,
                        partition=msg.partition,
                        offset=msg.offset,
                        key=msg.key,
                        value=msg.value if msg.value is not None else b"",
                        headers=tuple((k, bytes(v)) for k, v in (msg.headers or ())),
                        timestamp_ms=msg.timestamp,
                    )
                )
        return records

    async def commit(self, offsets: Mapping[Partition, int]) -> None:
        try:
            await self._consumer.commit({_tp(p): o for p, o in offsets.items()})
        except KafkaError as exc:
            raise BusError(f"offset commit failed: {exc}") from exc

    async def committed(self, partition: Partition) -> int | None:
        value = await self._consumer.committed(_tp(partition))
        return None if value is None else int(value)

    def assignment(self) -> frozenset[Partition]:
        return frozenset(_partition(tp) for tp in self._consumer.assignment())


class KafkaReadiness:
    """A readiness probe that asks the broker for its metadata (a real round trip)."""

    def __init__(self, bootstrap: str) -> None:
        self.bootstrap = bootstrap
        self._consumer: Any = None

    async def __call__(self) -> bool:
        """Ask for the topic list; connect first (again, after a failure)."""
        if self._consumer is None:
            consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, request_timeout_ms=2000)
            try:
                await consumer.start()
            except Exception:
                with suppress(Exception):
                    await consumer.stop()
                raise
            self._consumer = consumer
        try:
            await self._consumer.topics()
        except Exception:
            await self.close()
            raise
        return True

    async def close(self) -> None:
        """Drop the connection."""
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            with suppress(Exception):
                await consumer.stop()


class KafkaEndOffsets:
    """End offsets (last stable offsets, so open transactions do not count) from Kafka.

    A consumer with no group, used only to ask the broker. It connects on first use (or
    ``start()``) and again after a failure: a consumer that could not start is closed, never
    left half open, and the broker being away at start only delays the lag gauge.
    """

    def __init__(self, bootstrap: str) -> None:
        self._bootstrap = bootstrap
        self._consumer: AIOKafkaConsumer | None = None
        self._connecting: asyncio.Lock | None = None

    async def start(self) -> None:
        """Connect to the broker (closing what a failed attempt opened). Every stage of a
        process shares one reader: callers arriving together wait for one connection rather
        than each opening its own (all but the last would be left open, never closed)."""
        if self._consumer is not None:
            return
        if self._connecting is None:
            self._connecting = asyncio.Lock()
        async with self._connecting:
            if self._connected():
                return  # connected while this caller waited
            consumer = AIOKafkaConsumer(
                bootstrap_servers=self._bootstrap,
                isolation_level="read_committed",
                enable_auto_commit=False,
            )
            try:
                await consumer.start()
            except BaseException:
                with suppress(Exception):
                    await consumer.stop()
                raise
            self._consumer = consumer

    def _connected(self) -> bool:
        return self._consumer is not None

    async def stop(self) -> None:
        """Disconnect."""
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            await consumer.stop()

    async def __call__(self, partitions: frozenset[Partition]) -> Mapping[Partition, int]:
        """The end offset of each partition (connecting first when needed)."""
        await self.start()
        assert self._consumer is not None
        try:
            ends = await self._consumer.end_offsets([_tp(p) for p in partitions])
        except BaseException:
            with suppress(Exception):
                await self.stop()  # connect afresh next time
            raise
        return {_partition(tp): int(o) for tp, o in ends.items()}
