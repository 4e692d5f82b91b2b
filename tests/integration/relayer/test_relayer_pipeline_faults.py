"""The pipelined deliver stage under faults, on anvil, Kafka and PostgreSQL.

Each test ends with every message applied exactly once, checked on chain (one
``MessageConsumed`` per digest) and in the ledger (every delivery done):

- a full window (32+ transactions in the mempool) with the deliver process SIGKILLed;
- a full window with the broker restarted;
- a transaction dropped from the mempool (``anvil_dropTransaction``);
- two deliver instances on one destination, each with its own key and partitions;
- the deliverer killed between persisting an attempt and broadcasting it, while another
  emitter's delivery waits on a lower partition: no stall, no dead letter;
- a deliver process started while the broker is down, working once it is up;
- with batching on (``FEDRELAY_DELIVER_BATCH_MAX``): a batch holding a VAA consumed meanwhile
  and an invalid one; batches over the gas a batch may take, or that run out of gas when mined,
  split down until they land; a crash between persisting a batch and broadcasting it.

Mining is switched off on the worker chain to hold transactions in the mempool, and back on to
let them land; every signer is a fresh funded account, so no test shares nonces with another.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import support.wormhole as wormhole_testing
from aiokafka.partitioner import DefaultPartitioner
from eth_account import Account
from prometheus_client import CollectorRegistry
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.pool import NullPool
from support.relayer_evm import (
    GUARDIANS,
    delivered_once,
    delivery_of,
    eventually,
    task_assigned_vaa,
)

from fedrelay.adapters.devnet.forge import Forge
from fedrelay.adapters.devnet.process import free_port
from fedrelay.adapters.devnet.services import Anvil, Kafka, Postgres
from fedrelay.adapters.evm.artifacts import CONTRACTS_DIR
from fedrelay.adapters.evm.relay import BatchPolicy, EvmDestination, GasPolicy
from fedrelay.adapters.evm.rpc import connect
from fedrelay.adapters.evm.testing import WORKER_CHAIN, EvmDeployment, deploy_pair
from fedrelay.adapters.kafka import KafkaBus
from fedrelay.adapters.ledger.database import create_engine, upgrade
from fedrelay.adapters.ledger.models import (
    AttemptOutcome,
    DeadLetter,
    DeliveryBatch,
    DeliveryStatus,
)
from fedrelay.adapters.ledger.relayer_ledger import SqlRelayerLedger
from fedrelay.ports.relay import SignedDelivery, TxState
from fedrelay.protocol.wormhole import Vaa, keccak256
from fedrelay.relayer.chains_file import parse_chains
from fedrelay.relayer.process import RelayerProcess, StageRequest, build_process
from fedrelay.relayer.records import DeliveryRequest, encode_message
from fedrelay.relayer.settings import RelayerSettings
from fedrelay.relayer.stage import StageRunner, stage_metrics
from fedrelay.relayer.stages.deliver import Deliverer
from fedrelay.relayer.stages.pipeline import PipelinedDeliverer, SignerLane

pytestmark = pytest.mark.integration

FEDRELAY = Path(sys.executable).parent / "fedrelay"
WINDOW = 32


@pytest.fixture(scope="module")
def evm(coordinator_chain: Anvil, worker_chain: Anvil) -> EvmDeployment:
    Forge(Path(CONTRACTS_DIR)).build()
    guardians = ["0x" + g.address.hex() for g in wormhole_testing.guardian_signers(GUARDIANS)]
    return deploy_pair(coordinator_chain, worker_chain, guardians)


@pytest.fixture(scope="module")
def ledger_url(postgres: Postgres) -> str:
    url = postgres.create_database("relayer_pipeline")
    upgrade(url)
    return url


@pytest.fixture
async def sessions(ledger_url: str) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    engine = create_engine(ledger_url, poolclass=NullPool)
    yield async_sessionmaker(engine, expire_on_commit=False)
    await engine.dispose()


@pytest.fixture
def signer_file(tmp_path: Path, evm: EvmDeployment) -> Path:
    """A fresh funded signer of the worker chain, in a key file."""
    return funded_key(evm, tmp_path / "signer.key")


def funded_key(evm: EvmDeployment, path: Path) -> Path:
    account = Account.create()
    evm.worker_chain.w3.provider.make_request(  # type: ignore[attr-defined]
        "anvil_setBalance", [account.address, hex(10**21)]
    )
    path.write_text("0x" + bytes(account.key).hex())
    return path


@contextlib.contextmanager
def mempool_held(evm: EvmDeployment) -> Iterator[None]:
    """Transactions stay in the worker chain's mempool until the block ends (then all land)."""
    rpc = evm.worker_chain.w3.provider
    rpc.make_request("evm_setAutomine", [False])  # type: ignore[attr-defined]
    try:
        yield
    finally:
        release(evm)


def release(evm: EvmDeployment) -> None:
    """Mining on again, and what waits in the mempool mined."""
    rpc = evm.worker_chain.w3.provider
    rpc.make_request("evm_setAutomine", [True])  # type: ignore[attr-defined]
    rpc.make_request("evm_mine", [])  # type: ignore[attr-defined]


def settings_for(kafka: Kafka, ledger_url: str, **extra: Any) -> RelayerSettings:
    tag = uuid.uuid4().hex[:8]
    options: dict[str, Any] = {
        "database_url": ledger_url, "kafka_bootstrap": kafka.bootstrap, "topic_partitions": 2,
        "deliveries_prefix": f"deliveries-{tag}", "dlq_topic": f"dlq-{tag}",
        "group_prefix": f"pipeline-{tag}", "poll_wait_s": 0.1, "retry_base_s": 0.05,
        "retry_cap_s": 0.3, "retry_max_attempts": 4, "confirm_timeout_s": 8,
        "deliver_window": WINDOW, "lag_interval_s": 60,
    }  # fmt: skip
    return RelayerSettings(**{**options, **extra})


def requests_for(evm: EvmDeployment, count: int) -> list[Vaa]:
    base = 300_000 + uuid.uuid4().int % 10**8
    return [task_assigned_vaa(evm, base + i, base + i) for i in range(count)]


def key_of(index: int) -> bytes:
    return f"emitter-{index % 4}".encode()


async def publish(
    kafka: Kafka, settings: RelayerSettings, vaas: list[Vaa], keys: list[bytes] | None = None
) -> None:
    """Delivery requests for the worker chain straight on its deliveries topic."""
    bus = KafkaBus(kafka.bootstrap)
    topic = settings.delivery_topic(WORKER_CHAIN)
    await bus.create_topics([topic], partitions=settings.topic_partitions)
    producer = bus.producer()
    await producer.start()
    try:
        for index, vaa in enumerate(vaas):
            request = DeliveryRequest(
                vaa=vaa.to_bytes(), destination_chain=WORKER_CHAIN,
                target_address=bytes(32), emitted_at_ms=0,
            )  # fmt: skip
            key = keys[index] if keys is not None else key_of(index)
            await producer.send(topic, encode_message(request), key=key)
    finally:
        await producer.stop()


async def deliver_process(
    evm: EvmDeployment, settings: RelayerSettings, *signer_files: Path
) -> RelayerProcess:
    key_file = signer_files[0]
    if len(signer_files) > 1:  # a key pool: one key per line
        key_file = signer_files[0].with_suffix(".pool")
        key_file.write_text("\n".join(f.read_text().strip() for f in signer_files) + "\n")
    request = StageRequest(stage="deliver", chain="worker-evm", signer_keys={"": key_file})
    return await build_process(
        settings, parse_chains(evm.chains_yaml()), request,
        metrics=stage_metrics(CollectorRegistry()),
    )  # fmt: skip


@contextlib.asynccontextmanager
async def running(process: RelayerProcess) -> AsyncIterator[RelayerProcess]:
    tasks = [asyncio.create_task(stage.run(), name=stage.name) for stage in process.stages]
    try:
        yield process
    finally:
        for stage in process.stages:
            stage.stop()
        await asyncio.wait_for(asyncio.gather(*tasks), 60)
        await process.close()


async def attempts_with(
    sessions: async_sessionmaker[AsyncSession], vaas: list[Vaa], outcome: AttemptOutcome
) -> int:
    total = 0
    for vaa in vaas:
        _, attempts = await delivery_of(sessions, vaa.digest)
        total += sum(1 for a in attempts if a.outcome == outcome)
    return total


async def confirming_signers(
    sessions: async_sessionmaker[AsyncSession], vaas: list[Vaa]
) -> set[str]:
    """The signers of the transactions that delivered `vaas`."""
    signers: set[str] = set()
    for vaa in vaas:
        _, attempts = await delivery_of(sessions, vaa.digest)
        signers |= {a.signer for a in attempts if a.outcome == AttemptOutcome.CONFIRMED}
    return signers


async def window_full(sessions: async_sessionmaker[AsyncSession], vaas: list[Vaa]) -> None:
    async def full() -> bool:
        return await attempts_with(sessions, vaas, AttemptOutcome.BROADCAST) >= WINDOW

    await eventually(full, f"{WINDOW} transactions in flight", limit_s=90)


async def dead_letters(
    sessions: async_sessionmaker[AsyncSession], settings: RelayerSettings
) -> int:
    async with sessions() as session:
        count = await session.scalar(
            select(func.count()).select_from(DeadLetter).where(
                DeadLetter.message_key.like(f"{settings.deliveries_prefix}.%")
            )
        )  # fmt: skip
    return int(count or 0)


# --- the tests ------------------------------------------------------------------------------------


async def test_a_deliver_process_sigkilled_with_a_full_window_lands_every_message_once(
    evm: EvmDeployment, kafka: Kafka, ledger_url: str, signer_file: Path, tmp_path: Path,
    sessions: async_sessionmaker[AsyncSession],
) -> None:  # fmt: skip
    settings = settings_for(kafka, ledger_url)
    chains_file = tmp_path / "chains.yaml"
    chains_file.write_text(evm.chains_yaml())
    env = {
        **os.environ, "FEDRELAY_CHAINS_FILE": str(chains_file),
        "FEDRELAY_DATABASE_URL": ledger_url, "FEDRELAY_KAFKA_BOOTSTRAP": kafka.bootstrap,
        "FEDRELAY_GROUP_PREFIX": settings.group_prefix,
        "FEDRELAY_DELIVERIES_PREFIX": settings.deliveries_prefix,
        "FEDRELAY_DLQ_TOPIC": settings.dlq_topic, "FEDRELAY_POLL_WAIT_S": "0.1",
        "FEDRELAY_TOPIC_PARTITIONS": "2", "FEDRELAY_DELIVER_WINDOW": str(WINDOW),
        "OTEL_TRACES_EXPORTER": "none",
    }  # fmt: skip
    argv = [str(FEDRELAY), "relayer", "run", "--stage", "deliver", "--chain", "worker-evm",
            "--signer-key-file", str(signer_file)]  # fmt: skip
    vaas = requests_for(evm, WINDOW + 8)
    await publish(kafka, settings, vaas)
    log = tmp_path / "deliver.log"
    with mempool_held(evm):
        env["FEDRELAY_HEALTH_PORT"] = str(free_port())
        first = spawn(argv, env, log)
        try:
            await window_full(sessions, vaas)
        finally:
            first.send_signal(signal.SIGKILL)
            await asyncio.to_thread(first.wait, 30)
    env["FEDRELAY_HEALTH_PORT"] = str(free_port())
    second = spawn(argv, env, log)
    try:
        await delivered_once(evm, sessions, vaas)
    finally:
        second.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(second.wait, 60) == 0, log.read_text()[-4000:]
    assert await dead_letters(sessions, settings) == 0


def spawn(argv: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as sink:
        return subprocess.Popen(argv, env=env, stdout=sink, stderr=subprocess.STDOUT)


async def test_a_broker_restart_with_a_full_window_lands_every_message_once(
    evm: EvmDeployment, kafka: Kafka, ledger_url: str, signer_file: Path,
    sessions: async_sessionmaker[AsyncSession],
) -> None:  # fmt: skip
    settings = settings_for(kafka, ledger_url)
    vaas = requests_for(evm, WINDOW + 4)
    await publish(kafka, settings, vaas)
    process = await deliver_process(evm, settings, signer_file)
    async with running(process):
        with mempool_held(evm):
            await window_full(sessions, vaas)
            await asyncio.to_thread(kafka.stop)
            await asyncio.to_thread(kafka.start)
        await delivered_once(evm, sessions, vaas)
    assert await dead_letters(sessions, settings) == 0


async def test_a_transaction_dropped_from_the_mempool_is_sent_again_unchanged(
    evm: EvmDeployment, kafka: Kafka, ledger_url: str, signer_file: Path,
    sessions: async_sessionmaker[AsyncSession],
) -> None:  # fmt: skip
    settings = settings_for(kafka, ledger_url)
    vaas = requests_for(evm, 8)
    await publish(kafka, settings, vaas, keys=[b"one emitter"] * len(vaas))
    process = await deliver_process(evm, settings, signer_file)
    rpc = evm.worker_chain.w3.provider
    async with running(process):
        with mempool_held(evm):

            async def all_sent() -> bool:
                return await attempts_with(sessions, vaas, AttemptOutcome.BROADCAST) == len(vaas)

            await eventually(all_sent, "every transaction in the mempool")
            _, [victim] = await delivery_of(sessions, vaas[2].digest)
            rpc.make_request("anvil_dropTransaction", [victim.tx_hash])  # type: ignore[attr-defined]
        await delivered_once(evm, sessions, vaas)
    _, attempts = await delivery_of(sessions, vaas[2].digest)
    assert [(a.outcome, a.tx_hash) for a in attempts] == [
        (AttemptOutcome.CONFIRMED, victim.tx_hash)  # the same signed bytes, sent again
    ]


async def test_two_deliver_instances_on_one_destination_deliver_every_message_once(
    evm: EvmDeployment, kafka: Kafka, ledger_url: str, tmp_path: Path,
    sessions: async_sessionmaker[AsyncSession],
) -> None:  # fmt: skip
    settings = settings_for(kafka, ledger_url, instance="a")
    other = settings.model_copy(update={"instance": "b"})
    first = await deliver_process(evm, settings, funded_key(evm, tmp_path / "a.key"))
    second = await deliver_process(evm, other, funded_key(evm, tmp_path / "b.key"))
    vaas = requests_for(evm, 24)
    runners = [s for s in (*first.stages, *second.stages) if isinstance(s, StageRunner)]
    await KafkaBus(kafka.bootstrap).create_topics(
        [settings.delivery_topic(WORKER_CHAIN)], partitions=2
    )
    async with running(first), running(second):

        async def split() -> bool:
            return all(len(runner.assignment()) == 1 for runner in runners)

        await eventually(split, "each instance to hold one partition")
        await publish(kafka, settings, vaas, keys=[f"emitter-{i}".encode() for i in range(24)])
        await delivered_once(evm, sessions, vaas)
    signers = await confirming_signers(sessions, vaas)
    assert len(signers) == 2  # both instances delivered, each with its own key


async def test_a_key_pool_delivers_every_message_once_with_each_of_its_keys(
    evm: EvmDeployment, kafka: Kafka, ledger_url: str, tmp_path: Path,
    sessions: async_sessionmaker[AsyncSession],
) -> None:  # fmt: skip
    settings = settings_for(kafka, ledger_url)
    keys = [funded_key(evm, tmp_path / f"{name}.key") for name in ("one", "two")]
    vaas = requests_for(evm, 16)
    await publish(kafka, settings, vaas, keys=[f"emitter-{i}".encode() for i in range(16)])
    async with running(await deliver_process(evm, settings, *keys)):
        await delivered_once(evm, sessions, vaas)
    signers = await confirming_signers(sessions, vaas)
    assert len(signers) == 2  # one key file, two keys, both at work


def deliver_runner(
    kafka: Kafka, settings: RelayerSettings, sessions: async_sessionmaker[AsyncSession],
    destination: EvmDestination,
) -> StageRunner:  # fmt: skip
    """A deliver stage (pipelined, batching as `settings` say) around the test's destination."""
    ledger = SqlRelayerLedger(sessions)
    deliverer = Deliverer(destination, ledger, settings.retry_policy(), confirm_timeout_s=8)
    lane = SignerLane(
        deliverer, window=settings.deliver_window, batch_max=settings.deliver_batch_max
    )
    return StageRunner(
        name=f"deliver-{WORKER_CHAIN}", bus=KafkaBus(kafka.bootstrap),
        inputs=[settings.delivery_topic(WORKER_CHAIN)], processor=PipelinedDeliverer([lane]),
        dead_letters=ledger, **settings.runner_options(f"deliver-{WORKER_CHAIN}"),
    )  # fmt: skip


class Killed(BaseException):
    """Stands for SIGKILL: nothing after it runs."""


class KilledBeforeBroadcast(EvmDestination):
    """Dies after the attempt is persisted, before its transaction reaches the node."""

    async def broadcast(self, delivery: SignedDelivery) -> None:
        raise Killed


def partition_keys(partitions: int) -> tuple[bytes, bytes]:
    """Two emitter keys: the first on the last partition, the second on partition 0."""
    partitioner = DefaultPartitioner()
    every = list(range(partitions))
    by_partition: dict[int, bytes] = {}
    for index in range(1000):
        key = f"emitter-{index}".encode()
        by_partition.setdefault(partitioner(key, every, every), key)
    return by_partition[partitions - 1], by_partition[0]


@pytest.mark.parametrize("window", [1, WINDOW])
async def test_a_crash_between_persisting_and_broadcasting_stalls_no_other_emitter(
    window: int, evm: EvmDeployment, kafka: Kafka, ledger_url: str, signer_file: Path,
    sessions: async_sessionmaker[AsyncSession],
) -> None:  # fmt: skip
    settings = settings_for(kafka, ledger_url, deliver_window=window)
    late, early = partition_keys(settings.topic_partitions)
    first_vaa, second_vaa = requests_for(evm, 2)
    await publish(kafka, settings, [first_vaa], keys=[late])
    w3 = connect(evm.workers.rpc_url)
    key = await asyncio.to_thread(signer_file.read_text)
    dying = KilledBeforeBroadcast(
        w3, WORKER_CHAIN, evm.hub.address, key.strip(), evm.workers.chain_id
    )
    runner = deliver_runner(kafka, settings, sessions, dying)
    with pytest.raises(Killed):
        await asyncio.wait_for(runner.run(), 60)
    await w3.provider.disconnect()
    _, [unsent] = await delivery_of(sessions, first_vaa.digest)
    assert unsent.outcome == AttemptOutcome.PREPARED  # persisted, never sent: it holds a nonce

    await publish(kafka, settings, [second_vaa], keys=[early])  # waits on a lower partition
    process = await deliver_process(evm, settings, signer_file)
    async with running(process):
        started = time.monotonic()
        await delivered_once(evm, sessions, [first_vaa, second_vaa])
        elapsed = time.monotonic() - started
    assert elapsed < settings.confirm_timeout_s  # no stall behind a gap of our own
    assert await dead_letters(sessions, settings) == 0
    _, [sent] = await delivery_of(sessions, first_vaa.digest)
    assert (sent.outcome, sent.tx_hash) == (AttemptOutcome.CONFIRMED, unsent.tx_hash)
    _, [other] = await delivery_of(sessions, second_vaa.digest)
    assert other.nonce == unsent.nonce + 1  # type: ignore[operator]


async def test_a_stage_started_with_the_broker_down_works_once_it_is_up(
    evm: EvmDeployment, ledger_url: str, signer_file: Path, tmp_path: Path,
    sessions: async_sessionmaker[AsyncSession],
) -> None:  # fmt: skip
    broker = Kafka()  # a broker of this test's own, not started yet
    settings = settings_for(broker, ledger_url)
    chains_file = tmp_path / "chains.yaml"
    chains_file.write_text(evm.chains_yaml())
    env = {
        **os.environ, "FEDRELAY_CHAINS_FILE": str(chains_file),
        "FEDRELAY_DATABASE_URL": ledger_url, "FEDRELAY_KAFKA_BOOTSTRAP": broker.bootstrap,
        "FEDRELAY_GROUP_PREFIX": settings.group_prefix,
        "FEDRELAY_DELIVERIES_PREFIX": settings.deliveries_prefix,
        "FEDRELAY_DLQ_TOPIC": settings.dlq_topic, "FEDRELAY_POLL_WAIT_S": "0.1",
        "FEDRELAY_RETRY_CAP_S": "1", "FEDRELAY_HEALTH_PORT": str(free_port()),
        "OTEL_TRACES_EXPORTER": "none",
    }  # fmt: skip
    argv = [str(FEDRELAY), "relayer", "run", "--stage", "deliver", "--chain", "worker-evm",
            "--signer-key-file", str(signer_file)]  # fmt: skip
    log = tmp_path / "deliver.log"
    process = spawn(argv, env, log)
    try:

        async def waiting_for_the_broker() -> bool:
            assert process.poll() is None, log.read_text()[-4000:]  # still running
            return "waiting for the broker" in log.read_text()

        await eventually(waiting_for_the_broker, "the stage to wait for the broker")
        await asyncio.to_thread(broker.start)
        vaas = requests_for(evm, 3)
        await publish(broker, settings, vaas)
        await delivered_once(evm, sessions, vaas)
    finally:
        process.send_signal(signal.SIGTERM)
        code = await asyncio.to_thread(process.wait, 60)
        await asyncio.to_thread(broker.close)
    assert code == 0, log.read_text()[-4000:]


# --- batched delivery -----------------------------------------------------------------------------

BATCH = 32


@contextlib.asynccontextmanager
async def destination_of(
    evm: EvmDeployment, signer_file: Path, kind: type[EvmDestination] = EvmDestination,
    **options: Any,
) -> AsyncIterator[EvmDestination]:  # fmt: skip
    """A destination adapter of the worker chain's hub signing with the key in `signer_file`."""
    w3 = connect(evm.workers.rpc_url)
    key = (await asyncio.to_thread(signer_file.read_text)).strip()
    try:
        yield kind(w3, WORKER_CHAIN, evm.hub.address, key, evm.workers.chain_id, **options)
    finally:
        await w3.provider.disconnect()


@contextlib.asynccontextmanager
async def stage_running(runner: StageRunner) -> AsyncIterator[None]:
    task = asyncio.create_task(runner.run())
    try:
        yield
    finally:
        runner.stop()
        await asyncio.wait_for(task, 60)


async def batches_of(
    sessions: async_sessionmaker[AsyncSession], vaas: list[Vaa]
) -> dict[str, list[bytes]]:
    """The batch transactions that carried `vaas` (by hash), with the digests each carried."""
    carried: dict[str, list[bytes]] = {}
    for vaa in vaas:
        _, attempts = await delivery_of(sessions, vaa.digest)
        for attempt in attempts:
            if attempt.batch_id is not None and attempt.tx_hash is not None:
                carried.setdefault(attempt.tx_hash, []).append(vaa.digest)
    return carried


class Contested(EvmDestination):
    """Another relayer delivers `contested` after the deliverer's check, before its batch."""

    contested: bytes = b""
    rival: str = ""

    async def prepare_batch(
        self, vaas: Sequence[bytes], nonce: int | None, fee_level: int
    ) -> SignedDelivery:
        if self.contested in vaas:
            rival = EvmDestination(self.w3, self.chain_id, self.receiver, self.rival,
                                   self.evm_chain_id)  # fmt: skip
            if not await rival.is_consumed(self.contested):
                signed = await rival.prepare(self.contested, None, 0)
                await rival.broadcast(signed)

                async def mined() -> bool:
                    return (await rival.status(signed.tx_id)).state == TxState.CONFIRMED

                await eventually(mined, "the rival's delivery to be mined")
        return await super().prepare_batch(vaas, nonce, fee_level)


async def test_a_batch_with_a_consumed_and_an_invalid_vaa_applies_every_valid_message_once(
    evm: EvmDeployment, kafka: Kafka, ledger_url: str, signer_file: Path, tmp_path: Path,
    sessions: async_sessionmaker[AsyncSession],
) -> None:  # fmt: skip
    settings = settings_for(kafka, ledger_url, deliver_batch_max=BATCH)
    vaas = requests_for(evm, 12)
    contested = vaas[4]
    base = 500_000 + uuid.uuid4().int % 10**8
    below_quorum = wormhole_testing.guardian_signers(GUARDIANS)[:1]
    invalid = task_assigned_vaa(evm, base, base, signers=below_quorum)
    await publish(kafka, settings, [*vaas, invalid], keys=[b"one emitter"] * (len(vaas) + 1))
    Contested.contested = contested.to_bytes()
    Contested.rival = Account.from_key(
        funded_key(evm, tmp_path / "rival.key").read_text()
    ).key.hex()

    async def dead() -> bool:
        found, _ = await delivery_of(sessions, invalid.digest)
        return found is not None and found.status == DeliveryStatus.DEAD

    async with destination_of(evm, signer_file, Contested) as destination:
        runner = deliver_runner(kafka, settings, sessions, destination)
        async with stage_running(runner):
            await delivered_once(evm, sessions, vaas)
            await eventually(dead, "the invalid VAA's delivery to be given up")
    carried = await batches_of(sessions, [*vaas, invalid])
    assert any(contested.digest in digests and len(digests) > 2 for digests in carried.values())
    assert any(invalid.digest in digests for digests in carried.values())
    other, _ = await delivery_of(sessions, contested.digest)
    assert other is not None
    assert other.status == DeliveryStatus.ALREADY_DELIVERED
    for vaa in vaas:
        if vaa is not contested:
            found, attempts = await delivery_of(sessions, vaa.digest)
            assert found is not None
            assert found.status == DeliveryStatus.CONFIRMED
            confirmed = [a for a in attempts if a.outcome == AttemptOutcome.CONFIRMED]
            assert [a.batch_id is not None for a in confirmed] == [True]  # in a batch
    refused, attempts = await delivery_of(sessions, invalid.digest)
    assert refused is not None
    assert "no quorum" in (refused.last_error or "")
    assert [a.outcome for a in attempts] == [AttemptOutcome.REVERTED]
    assert not await asyncio.to_thread(evm.hub.is_consumed, invalid.message_id)
    async with sessions() as session:
        reasons = list(await session.scalars(
            select(DeadLetter.reason).where(
                DeadLetter.message_key.like(f"{settings.deliveries_prefix}.%")
            )
        ))  # fmt: skip
    assert len(reasons) == 1
    assert "no quorum" in reasons[0]


class Starved(EvmDestination):
    """Signs batches of more than two VAAs with half the gas they need: they revert when mined
    (``BatchOutOfGas``, or out of gas outright); smaller ones get what they need."""

    async def prepare_batch(
        self, vaas: Sequence[bytes], nonce: int | None, fee_level: int
    ) -> SignedDelivery:
        self.gas = GasPolicy(gas_margin=0.5 if len(vaas) > 2 else 1.25)
        return await super().prepare_batch(vaas, nonce, fee_level)


@pytest.mark.parametrize("cause", ["over the gas a batch may take", "out of gas when mined"])
async def test_a_batch_that_does_not_fit_its_gas_is_split_and_every_message_lands_once(
    cause: str, evm: EvmDeployment, kafka: Kafka, ledger_url: str, signer_file: Path,
    sessions: async_sessionmaker[AsyncSession],
) -> None:  # fmt: skip
    settings = settings_for(kafka, ledger_url, deliver_batch_max=BATCH)
    vaas = requests_for(evm, 12)
    await publish(kafka, settings, vaas, keys=[b"one emitter"] * len(vaas))
    if cause == "over the gas a batch may take":
        limit = int(evm.worker_chain.w3.eth.get_block("latest")["gasLimit"])
        # a few messages' worth, while the policy's first guess says 32 fit
        policy = BatchPolicy(block_gas_share=800_000 / limit, initial_gas_per_message=20_000)
        opened = destination_of(evm, signer_file, batch=policy)
    else:
        opened = destination_of(evm, signer_file, Starved)
    async with opened as destination:
        assert destination.max_batch() == BATCH
        async with stage_running(deliver_runner(kafka, settings, sessions, destination)):
            await delivered_once(evm, sessions, vaas)
    carried = await batches_of(sessions, vaas)
    landed = set()
    for vaa in vaas:
        _, attempts = await delivery_of(sessions, vaa.digest)
        landed |= {a.tx_hash for a in attempts if a.outcome == AttemptOutcome.CONFIRMED}
    assert 1 < len(landed) < len(vaas)  # split, and still batched
    if cause == "out of gas when mined":
        reverted = [tx for tx, digests in carried.items() if len(digests) > 2]
        assert reverted, "a batch of more than two was sent and reverted"
        for tx in reverted:
            receipt = evm.worker_chain.w3.eth.get_transaction_receipt(tx)  # type: ignore[arg-type]
            assert receipt["status"] == 0
    assert await dead_letters(sessions, settings) == 0


async def test_a_crash_between_persisting_a_batch_and_broadcasting_it_resumes_the_same_bytes(
    evm: EvmDeployment, kafka: Kafka, ledger_url: str, signer_file: Path,
    sessions: async_sessionmaker[AsyncSession],
) -> None:  # fmt: skip
    settings = settings_for(kafka, ledger_url, deliver_batch_max=BATCH)
    vaas = requests_for(evm, 10)
    await publish(kafka, settings, vaas, keys=[b"one emitter"] * len(vaas))
    async with destination_of(evm, signer_file, KilledBeforeBroadcast) as dying:
        with pytest.raises(Killed):
            await asyncio.wait_for(deliver_runner(kafka, settings, sessions, dying).run(), 60)
    unsent = []
    for vaa in vaas:
        _, [attempt] = await delivery_of(sessions, vaa.digest)
        assert attempt.outcome == AttemptOutcome.PREPARED
        unsent.append(attempt)
    assert len({(a.batch_id, a.tx_hash) for a in unsent}) == 1  # one batch, persisted unsent
    assert sorted(a.batch_index for a in unsent) == list(range(len(vaas)))
    tx_hash = unsent[0].tx_hash
    assert tx_hash is not None
    async with sessions() as session:
        stored = await session.get(DeliveryBatch, unsent[0].batch_id)
        assert stored is not None
        assert stored.size == len(vaas)
        signed = bytes(stored.signed_tx)

    async with running(await deliver_process(evm, settings, signer_file)):
        await delivered_once(evm, sessions, vaas)
    for vaa in vaas:
        _, attempts = await delivery_of(sessions, vaa.digest)
        assert [(a.outcome, a.tx_hash) for a in attempts] == [(AttemptOutcome.CONFIRMED, tx_hash)]
    mined = evm.worker_chain.w3.eth.get_transaction(tx_hash)
    assert bytes(mined["hash"]) == keccak256(signed)  # the very bytes persisted before the crash
    assert await dead_letters(sessions, settings) == 0
