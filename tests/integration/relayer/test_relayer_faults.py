"""The relayer under faults, on anvil x2, Kafka and PostgreSQL: each ends with every message
delivered exactly once, checked on chain and in the ledger.

- duplicated VAAs, a VAA delivered by someone else first, and a poison VAA (DLQ, the rest flows);
- the deliverer dying right after broadcasting, before its ledger update: in process, and a
  real ``fedrelay relayer run --stage deliver`` process SIGKILLed as its transaction is accepted;
- a reorg on the source chain: the reorged-out message is never signed nor delivered;
- the destination's RPC endpoint down for 10 seconds;
- the Kafka broker restarted, and PostgreSQL crashed (SIGKILL) and restarted, mid-stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import support.wormhole as wormhole_testing
from prometheus_client import CollectorRegistry
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.pool import NullPool
from support.relayer_evm import (
    GUARDIANS,
    delivery_of,
    eventually,
    on_chain,
    register_task_worker,
    task_assigned_vaa,
)
from support.relayer_evm import (
    delivered_once as _delivered_once,
)

from fedrelay.adapters.devnet.forge import Forge
from fedrelay.adapters.devnet.process import free_port
from fedrelay.adapters.devnet.services import Anvil, Kafka, Postgres
from fedrelay.adapters.evm import HubTaskState, Signer, address_to_bytes32
from fedrelay.adapters.evm.artifacts import CONTRACTS_DIR
from fedrelay.adapters.evm.relay import EvmDestination
from fedrelay.adapters.evm.rpc import connect
from fedrelay.adapters.evm.testing import (
    WORKER_CHAIN,
    EvmDeployment,
    deploy_pair,
)
from fedrelay.adapters.kafka import KafkaBus
from fedrelay.adapters.ledger.database import create_engine, upgrade
from fedrelay.adapters.ledger.models import (
    AttemptOutcome,
    DeadLetter,
    Delivery,
    DeliveryStatus,
    ObservationStatus,
    StoredVaa,
)
from fedrelay.adapters.ledger.models import Observation as ObservationRow
from fedrelay.adapters.ledger.relayer_ledger import SqlRelayerLedger
from fedrelay.ports.relay import SignedDelivery
from fedrelay.protocol.wormhole import Vaa
from fedrelay.relayer.chains_file import parse_chains
from fedrelay.relayer.process import RelayerProcess, StageRequest, build_process
from fedrelay.relayer.records import DeliveryRequest, SignedVaa, encode_message, message_key
from fedrelay.relayer.settings import RelayerSettings
from fedrelay.relayer.stage import stage_metrics
from fedrelay.relayer.stages.deliver import Deliverer

pytestmark = pytest.mark.integration

RELAYER_KEY = 6
FEDRELAY = Path(sys.executable).parent / "fedrelay"


@pytest.fixture(scope="module")
def evm(coordinator_chain: Anvil, worker_chain: Anvil) -> EvmDeployment:
    Forge(Path(CONTRACTS_DIR)).build()
    guardians = ["0x" + g.address.hex() for g in wormhole_testing.guardian_signers(GUARDIANS)]
    return deploy_pair(coordinator_chain, worker_chain, guardians)


@pytest.fixture(scope="module")
def ledger_url(postgres: Postgres) -> str:
    url = postgres.create_database("relayer_faults")
    upgrade(url)
    return url


@pytest.fixture
async def sessions(ledger_url: str) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    engine = create_engine(ledger_url)
    yield async_sessionmaker(engine, expire_on_commit=False)
    await engine.dispose()


@pytest.fixture
def keys(tmp_path: Path, evm: EvmDeployment) -> StageRequest:
    """Key files of the guardians and of the relayer's signer, as ``--stage all`` takes them."""
    guardian_files = []
    for index in range(GUARDIANS):
        path = tmp_path / f"guardian-{index}.key"
        path.write_text("0x" + wormhole_testing.guardian_key(index).hex())
        guardian_files.append(path)
    signer = tmp_path / "signer.key"
    signer.write_text(evm.coordinator.private_keys[RELAYER_KEY])
    return StageRequest(stage="all", guardian_keys=tuple(guardian_files), signer_keys={"": signer})


def settings_for(kafka: Kafka, ledger_url: str, **extra: Any) -> RelayerSettings:
    tag = uuid.uuid4().hex[:8]
    return RelayerSettings(
        database_url=ledger_url, kafka_bootstrap=kafka.bootstrap, topic_partitions=1,
        observations_topic=f"observations-{tag}", signatures_topic=f"signatures-{tag}",
        vaas_topic=f"vaas-{tag}", deliveries_prefix=f"deliveries-{tag}", dlq_topic=f"dlq-{tag}",
        group_prefix=f"fedrelay-{tag}", poll_wait_s=0.1, retry_base_s=0.05, retry_cap_s=0.3,
        retry_max_attempts=4, watch_interval_s=0.1, confirm_timeout_s=10, **extra,
    )  # fmt: skip


@contextlib.asynccontextmanager
async def running(process: RelayerProcess) -> AsyncIterator[RelayerProcess]:
    """The process's stages running in this event loop for the duration of the block."""
    await process.bus.create_topics(process.topics, partitions=1)
    tasks = [asyncio.create_task(stage.run(), name=stage.name) for stage in process.stages]
    try:
        yield process
    finally:
        for stage in process.stages:
            stage.stop()
        await asyncio.wait_for(asyncio.gather(*tasks), 30)
        await process.close()


async def test_duplicates_are_applied_once_and_a_poison_vaa_goes_to_the_dlq(
    evm: EvmDeployment,
    kafka: Kafka,
    ledger_url: str,
    keys: StageRequest,
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    await asyncio.to_thread(register_task_worker, evm)
    base = 10_000 + uuid.uuid4().int % 10**6
    first, second, early = (task_assigned_vaa(evm, base + i, base + i) for i in range(3))
    impostors = wormhole_testing.guardian_signers(GUARDIANS + 1)[1:]  # not the cores' set
    poison = task_assigned_vaa(evm, base + 3, base + 3, impostors)
    other = Signer(evm.workers.private_keys[7])
    await asyncio.to_thread(evm.hub.receive_message, other, early.to_bytes())  # delivered before

    settings = settings_for(kafka, ledger_url)
    chains = parse_chains(evm.chains_yaml())
    process = await build_process(
        settings, chains, keys, metrics=stage_metrics(CollectorRegistry())
    )
    bus = process.bus
    async with running(process):
        producer = bus.producer()
        await producer.start()
        for vaa in (first, poison, first, early, second, second):  # two duplicated
            record = SignedVaa(vaa=vaa.to_bytes(), emitted_at_ms=0)
            await producer.send(
                settings.vaas_topic, encode_message(record), key=message_key(vaa.message_id)
            )
        await producer.stop()

        async def settled() -> bool:
            async with sessions() as session:
                done = await session.scalar(
                    select(func.count())
                    .select_from(Delivery)
                    .where(
                        Delivery.digest.in_([v.digest for v in (first, second, early, poison)]),
                        Delivery.status.not_in([DeliveryStatus.PENDING, DeliveryStatus.SUBMITTED]),
                    )
                )
                return done == 4

        await eventually(settled, "every delivery to settle")

    expected = {
        first: DeliveryStatus.CONFIRMED, second: DeliveryStatus.CONFIRMED,
        early: DeliveryStatus.ALREADY_DELIVERED, poison: DeliveryStatus.DEAD,
    }  # fmt: skip
    for vaa, status in expected.items():
        delivery, attempts = await delivery_of(sessions, vaa.digest)
        assert delivery is not None
        assert delivery.status == status
        assert evm.hub.is_consumed(vaa.message_id) is (vaa is not poison)
        confirmed = [a for a in attempts if a.outcome == AttemptOutcome.CONFIRMED]
        assert len(confirmed) == (1 if status == DeliveryStatus.CONFIRMED else 0)
    for vaa in (first, second):
        task = evm.hub.task(vaa.body.sequence, 0, address_to_bytes32(evm.workers.addresses[9]))
        assert task.state is HubTaskState.ASSIGNED
    async with sessions() as session:
        [entry] = (
            await session.scalars(select(DeadLetter).where(DeadLetter.stage == "deliver-4"))
        ).all()
    assert "InvalidVaa" in entry.reason
    assert entry.body == encode_message(
        DeliveryRequest(
            vaa=poison.to_bytes(), destination_chain=WORKER_CHAIN,
            target_address=address_to_bytes32(evm.hub.address), emitted_at_ms=0,
        )
    )  # fmt: skip


class Killed(BaseException):
    """Stands for SIGKILL: nothing after it runs, no handler sees it."""


class KilledAfterBroadcast(EvmDestination):
    """The real destination, with the process dying right after the broadcast (before the
    ledger records it)."""

    async def broadcast(self, delivery: SignedDelivery) -> None:
        await super().broadcast(delivery)
        raise Killed


async def test_a_deliverer_killed_after_broadcast_resumes_its_attempt(
    evm: EvmDeployment, sessions: async_sessionmaker[AsyncSession]
) -> None:
    vaa = task_assigned_vaa(evm, 70_000 + uuid.uuid4().int % 10**6, 1)
    request = DeliveryRequest(
        vaa=vaa.to_bytes(), destination_chain=WORKER_CHAIN,
        target_address=address_to_bytes32(evm.hub.address), emitted_at_ms=0,
    )  # fmt: skip
    key = evm.workers.private_keys[RELAYER_KEY + 2]
    w3 = connect(evm.workers.rpc_url)
    policy = RelayerSettings().retry_policy()
    try:
        dying = KilledAfterBroadcast(w3, WORKER_CHAIN, evm.hub.address, key, evm.workers.chain_id)
        with pytest.raises(Killed):
            await Deliverer(dying, SqlRelayerLedger(sessions), policy).deliver(request)
        _, [persisted] = await delivery_of(sessions, vaa.digest)
        assert persisted.outcome == AttemptOutcome.PREPARED  # the ledger never heard of the send

        again = EvmDestination(w3, WORKER_CHAIN, evm.hub.address, key, evm.workers.chain_id)
        assert (
            await Deliverer(again, SqlRelayerLedger(sessions), policy).deliver(request)
            == DeliveryStatus.CONFIRMED
        )
    finally:
        await w3.provider.disconnect()

    delivery, [attempt] = await delivery_of(sessions, vaa.digest)
    assert delivery is not None
    assert (
        attempt.outcome == AttemptOutcome.CONFIRMED
    )  # the first signed transaction, not a new one
    assert delivery.tx_hash == attempt.tx_hash == persisted.tx_hash
    receipt = evm.worker_chain.w3.eth.get_transaction_receipt(attempt.tx_hash or "")
    assert receipt["status"] == 1
    assert evm.hub.is_consumed(vaa.message_id)


async def test_a_message_removed_by_a_reorg_is_never_signed_nor_delivered(
    evm: EvmDeployment,
    kafka: Kafka,
    ledger_url: str,
    keys: StageRequest,
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    settings = settings_for(kafka, ledger_url)
    chains = parse_chains(evm.chains_yaml(worker_finality="latest"))
    bus = KafkaBus(kafka.bootstrap)
    watcher = await build_process(
        settings, chains, StageRequest(stage="watch", chain="worker-evm"), bus=bus,
        metrics=stage_metrics(CollectorRegistry()),
    )  # fmt: skip
    hub, market = evm.hub, evm.market
    gone, kept = Signer(evm.workers.private_keys[4]), Signer(evm.workers.private_keys[5])
    payout = address_to_bytes32(evm.coordinator.addresses[5])
    snapshot = evm.workers.rpc("evm_snapshot")
    async with running(watcher):
        await asyncio.to_thread(hub.stake, gone, 10**18)
        receipt = await asyncio.to_thread(hub.register, gone, payout, 1)
        tx_hash = "0x" + bytes(receipt["transactionHash"]).hex()

        seen: list[ObservationRow] = []

        async def observed() -> bool:
            async with sessions() as session:
                row = await session.scalar(
                    select(ObservationRow).where(ObservationRow.tx_hash == tx_hash)
                )
                seen.extend([row] if row is not None else [])
                return row is not None

        await eventually(observed, "the watcher to observe the registration")
        # The chain drops the registration's blocks and grows past them.
        evm.workers.rpc("evm_revert", [snapshot])
        evm.workers.rpc("anvil_mine", [3])

    rest = await build_process(
        settings, chains, keys, bus=bus, metrics=stage_metrics(CollectorRegistry())
    )
    async with running(rest):
        await asyncio.to_thread(hub.stake, kept, 10**18)
        await asyncio.to_thread(hub.register, kept, payout, 1)
        kept_key, gone_key = address_to_bytes32(kept.address), address_to_bytes32(gone.address)
        await eventually(
            on_chain(lambda: market.worker(WORKER_CHAIN, kept_key).registered), "the kept one"
        )

        async def refused_by_every_guardian() -> bool:
            async with sessions() as session:
                stages = set(
                    await session.scalars(
                        select(DeadLetter.stage).where(DeadLetter.reason.contains(tx_hash))
                    )
                )
                return stages == {f"attest-{i}" for i in range(GUARDIANS)}

        await eventually(refused_by_every_guardian, "the guardians to give up on it")

    assert not market.worker(WORKER_CHAIN, gone_key).registered
    [gone_row] = seen
    gone_digest = bytes(gone_row.digest)
    async with sessions() as session:
        now = await session.scalar(
            select(ObservationRow).where(
                ObservationRow.emitter_chain == WORKER_CHAIN,
                ObservationRow.sequence == gone_row.sequence,
            )
        )
        signed = await session.get(StoredVaa, gone_digest)
        deliveries = await session.scalar(
            select(func.count()).select_from(Delivery).where(Delivery.digest == gone_digest)
        )
    # The reorg gave the message id to the kept registration: the ledger row follows the chain.
    assert now is not None
    assert bytes(now.digest) != gone_digest
    assert now.tx_hash != tx_hash
    assert now.status == ObservationStatus.ASSEMBLED
    assert signed is None  # never signed to quorum
    assert deliveries == 0  # never delivered


class RpcProxy:
    """A TCP proxy in front of an RPC endpoint that can be taken down and brought back.

    ``on_send``, when set, runs once the endpoint has answered an ``eth_sendRawTransaction``
    (the transaction is in), in place of passing the answer on: a hook to kill the sender there.
    """

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = free_port()
        self.on_send: Callable[[], None] | None = None
        self._server: asyncio.Server | None = None
        self._open: set[asyncio.StreamWriter] = set()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def up(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)

    async def down(self) -> None:
        """Refuse new connections and cut the open ones."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        for writer in list(self._open):
            writer.transport.abort()
        self._open.clear()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream_reader, upstream_writer = await asyncio.open_connection(
            "127.0.0.1", self.target_port
        )
        self._open |= {writer, upstream_writer}
        sending = False

        async def pipe(
            source: asyncio.StreamReader, sink: asyncio.StreamWriter, requests: bool
        ) -> None:
            nonlocal sending
            with contextlib.suppress(ConnectionError, OSError):
                while data := await source.read(65536):
                    if requests and b"eth_sendRawTransaction" in data:
                        sending = True
                    elif not requests and sending and self.on_send is not None:
                        self.on_send()  # the transaction is in; its sender never hears it
                        break
                    sink.write(data)
                    await sink.drain()
            sink.transport.abort()

        await asyncio.gather(
            pipe(reader, upstream_writer, True), pipe(upstream_reader, writer, False)
        )
        self._open -= {writer, upstream_writer}


async def test_a_destination_down_for_ten_seconds_gets_its_delivery_afterwards(
    evm: EvmDeployment,
    kafka: Kafka,
    ledger_url: str,
    keys: StageRequest,
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    proxy = RpcProxy(evm.workers.port)
    await proxy.up()
    settings = settings_for(kafka, ledger_url)
    chains = parse_chains(evm.chains_yaml(worker_rpc=proxy.url))
    process = await build_process(
        settings, chains, keys, metrics=stage_metrics(CollectorRegistry())
    )
    vaa = task_assigned_vaa(evm, 80_000 + uuid.uuid4().int % 10**6, 2)
    loop = asyncio.get_running_loop()
    async with running(process):
        await proxy.down()
        down_since = loop.time()
        producer = process.bus.producer()
        await producer.start()
        record = SignedVaa(vaa=vaa.to_bytes(), emitted_at_ms=0)
        await producer.send(
            settings.vaas_topic, encode_message(record), key=message_key(vaa.message_id)
        )
        await producer.stop()

        async def tried_while_down() -> bool:
            delivery, _ = await delivery_of(sessions, vaa.digest)
            return delivery is not None and (delivery.last_error or "").startswith("unavailable")

        await eventually(tried_while_down, "a delivery attempt against the dead endpoint")
        # The outage lasts 10 s: the fault's duration, not a wait for anything.
        await asyncio.sleep(max(0.0, 10 - (loop.time() - down_since)))
        delivery, attempts = await delivery_of(sessions, vaa.digest)
        assert delivery is not None
        assert delivery.status == DeliveryStatus.PENDING  # waiting, not given up
        assert attempts == []
        await proxy.up()
        await eventually(on_chain(lambda: evm.hub.is_consumed(vaa.message_id)), "the delivery")

        async def confirmed() -> bool:
            found, _ = await delivery_of(sessions, vaa.digest)
            return found is not None and found.status == DeliveryStatus.CONFIRMED

        await eventually(confirmed, "the ledger to record it")
    await proxy.down()
    _, attempts = await delivery_of(sessions, vaa.digest)
    assert [a.outcome for a in attempts] == [AttemptOutcome.CONFIRMED]


async def _publish(bus: KafkaBus, topic: str, vaas: list[Vaa]) -> None:
    producer = bus.producer()
    await producer.start()
    try:
        for vaa in vaas:
            record = SignedVaa(vaa=vaa.to_bytes(), emitted_at_ms=0)
            await producer.send(topic, encode_message(record), key=message_key(vaa.message_id))
    finally:
        await producer.stop()


async def _restart_mid_stream(
    evm: EvmDeployment,
    kafka: Kafka,
    ledger_url: str,
    keys: StageRequest,
    restart: Callable[[], None],
) -> None:
    """Six VAAs through the pipeline, with `restart` between the first three and the rest."""
    settings = settings_for(kafka, ledger_url)
    process = await build_process(
        settings, parse_chains(evm.chains_yaml()), keys, metrics=stage_metrics(CollectorRegistry())
    )
    base = 200_000 + uuid.uuid4().int % 10**6
    vaas = [task_assigned_vaa(evm, base + i, base + i) for i in range(6)]
    bus = KafkaBus(kafka.bootstrap)
    engine = create_engine(ledger_url, poolclass=NullPool)  # checks survive the restart
    sessions = async_sessionmaker(engine, expire_on_commit=False)
    try:
        async with running(process):
            await _publish(bus, settings.vaas_topic, vaas[:3])
            await _delivered_once(evm, sessions, vaas[:1])  # the stream is flowing
            await asyncio.to_thread(restart)
            await _publish(bus, settings.vaas_topic, vaas[3:])
            await _delivered_once(evm, sessions, vaas)
    finally:
        await engine.dispose()


async def test_a_kafka_restart_mid_stream_loses_and_repeats_nothing(
    evm: EvmDeployment, kafka: Kafka, ledger_url: str, keys: StageRequest
) -> None:
    def restart() -> None:
        kafka.stop()
        kafka.start()

    await _restart_mid_stream(evm, kafka, ledger_url, keys, restart)


async def test_a_postgres_crash_mid_stream_loses_and_repeats_nothing(
    evm: EvmDeployment, kafka: Kafka, keys: StageRequest
) -> None:
    # A cluster of this test's own: it is crashed (SIGKILL) and recovers on restart. It runs
    # with production durability (fsync, synchronous commit): the test cluster default turns
    # both off, and a crash then loses commits the relayer was told had landed.
    own = Postgres(durable=True)
    own.start()
    try:
        await asyncio.to_thread(upgrade, own.async_url)

        def restart() -> None:
            own.kill()
            own.start()

        await _restart_mid_stream(evm, kafka, own.async_url, keys, restart)
    finally:
        own.kill()  # no clean stop needed for a throwaway cluster
        own.close()


def _spawn(argv: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as sink:
        return subprocess.Popen(argv, env=env, stdout=sink, stderr=subprocess.STDOUT)


async def test_a_deliver_process_sigkilled_after_broadcast_resumes_without_resending(
    evm: EvmDeployment, kafka: Kafka, ledger_url: str, tmp_path: Path
) -> None:
    """A real ``fedrelay relayer run --stage deliver`` process, SIGKILLed the moment its
    transaction is accepted (before it can record the broadcast), then started again."""
    proxy = RpcProxy(evm.workers.port)
    await proxy.up()
    chains_file = tmp_path / "chains.yaml"
    chains_file.write_text(evm.chains_yaml(worker_rpc=proxy.url))
    signer = tmp_path / "signer.key"
    signer.write_text(evm.workers.private_keys[RELAYER_KEY + 3])
    tag = uuid.uuid4().hex[:8]
    env = {
        **os.environ, "FEDRELAY_CHAINS_FILE": str(chains_file),
        "FEDRELAY_DATABASE_URL": ledger_url, "FEDRELAY_KAFKA_BOOTSTRAP": kafka.bootstrap,
        "FEDRELAY_GROUP_PREFIX": f"fedrelay-{tag}", "FEDRELAY_DELIVERIES_PREFIX": f"d-{tag}",
        "FEDRELAY_DLQ_TOPIC": f"dlq-{tag}", "FEDRELAY_POLL_WAIT_S": "0.1",
        "FEDRELAY_INSTANCE": "deliver-worker-evm", "OTEL_TRACES_EXPORTER": "none",
    }  # fmt: skip
    argv = [str(FEDRELAY), "relayer", "run", "--stage", "deliver", "--chain", "worker-evm",
            "--signer-key-file", str(signer)]  # fmt: skip
    vaa = task_assigned_vaa(evm, 90_000 + uuid.uuid4().int % 10**6, 3)
    request = DeliveryRequest(
        vaa=vaa.to_bytes(), destination_chain=WORKER_CHAIN,
        target_address=address_to_bytes32(evm.hub.address), emitted_at_ms=0,
    )  # fmt: skip
    bus = KafkaBus(kafka.bootstrap)
    topic = f"d-{tag}.{WORKER_CHAIN}"
    await bus.create_topics([topic])
    producer = bus.producer()
    await producer.start()
    await producer.send(topic, encode_message(request), key=message_key(request.message_id))
    await producer.stop()
    engine = create_engine(ledger_url, poolclass=NullPool)
    sessions = async_sessionmaker(engine, expire_on_commit=False)
    log = tmp_path / "deliver.log"
    try:
        env["FEDRELAY_HEALTH_PORT"] = str(free_port())
        spawned: list[subprocess.Popen[bytes]] = []
        proxy.on_send = lambda: spawned[0].send_signal(signal.SIGKILL)
        first = _spawn(argv, env, log)
        spawned.append(first)
        assert await asyncio.to_thread(first.wait, 60) == -signal.SIGKILL, log.read_text()
        proxy.on_send = None
        await eventually(on_chain(lambda: evm.hub.is_consumed(vaa.message_id)), "the tx to land")
        delivery, [sent] = await delivery_of(sessions, vaa.digest)
        assert delivery is not None
        assert delivery.status == DeliveryStatus.PENDING  # the ledger never heard of the send
        assert sent.outcome == AttemptOutcome.PREPARED

        env["FEDRELAY_HEALTH_PORT"] = str(free_port())
        second = _spawn(argv, env, log)
        try:

            async def confirmed() -> bool:
                found, _ = await delivery_of(sessions, vaa.digest)
                return found is not None and found.status == DeliveryStatus.CONFIRMED

            await eventually(confirmed, "the restarted deliverer to record the delivery")
        finally:
            second.send_signal(signal.SIGTERM)
            assert await asyncio.to_thread(second.wait, 30) == 0, log.read_text()
    finally:
        await engine.dispose()
        await proxy.down()

    delivery, attempts = await delivery_of(sessions, vaa.digest)
    assert [(a.outcome, a.tx_hash) for a in attempts] == [(AttemptOutcome.CONFIRMED, sent.tx_hash)]
    assert delivery is not None
    assert delivery.tx_hash == sent.tx_hash
    consumed = [
        e for e in evm.hub.events(0, evm.worker_chain.w3.eth.block_number)
        if e.name == "MessageConsumed" and e.args["digest"] == vaa.digest
    ]  # fmt: skip
    assert len(consumed) == 1
