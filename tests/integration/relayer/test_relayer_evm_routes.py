"""The relayer's EVM routes on anvil x2, Kafka and PostgreSQL, built as ``--stage all`` builds them.

Coordinator chain (anvil 31337, Wormhole chain 2): MessageCore + JobMarket. Worker chain (anvil
31338, Wormhole chain 4): MessageCore + WorkerHub. Three devnet guardians attest. One round of a
job carries every payload type on its route, each through watch -> attest (3 guardians, each
re-reading the source) -> assemble -> route -> deliver, and is checked on the destination chain
and in the ledger:

- WORKER_REGISTERED: worker chain -> coordinator chain;
- TASK_ASSIGNED: coordinator chain -> worker chain;
- UPDATE_COMMITTED: worker chain -> coordinator chain;
- ROUND_SETTLED: coordinator chain -> worker chain.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest
import support.wormhole as wormhole_testing
from prometheus_client import CollectorRegistry
from solana.rpc.async_api import AsyncClient
from solders.keypair import Keypair
from solders.pubkey import Pubkey
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from support.relayer_evm import mined

from fedrelay.adapters.devnet.forge import Forge
from fedrelay.adapters.devnet.process import free_port
from fedrelay.adapters.devnet.services import Anvil, Kafka, Postgres
from fedrelay.adapters.devnet.solana_rpc import SolanaDevnet
from fedrelay.adapters.evm import (
    HubTaskState,
    JobSpec,
    RoundResult,
    Signer,
    TaskState,
    address_to_bytes32,
)
from fedrelay.adapters.evm.artifacts import CONTRACTS_DIR
from fedrelay.adapters.evm.relay import EvmDestination, EvmSource, GasPolicy
from fedrelay.adapters.evm.rpc import connect
from fedrelay.adapters.evm.testing import EvmDeployment, deploy_pair
from fedrelay.adapters.ledger.database import create_engine, upgrade
from fedrelay.adapters.ledger.models import (
    AttemptOutcome,
    Delivery,
    DeliveryAttempt,
    DeliveryStatus,
    ObservationStatus,
)
from fedrelay.adapters.ledger.models import Observation as ObservationRow
from fedrelay.adapters.solana import instructions as ix
from fedrelay.adapters.solana.client import WorkerProgramClient
from fedrelay.adapters.solana.errors import AccountNotFound
from fedrelay.adapters.solana.layout import SOLANA_CHAIN, TaskAccount
from fedrelay.adapters.solana.program import program_bytes
from fedrelay.adapters.solana.testing import LAMPORTS_PER_SOL, Deployment
from fedrelay.ports.relay import FailureKind
from fedrelay.protocol.wormhole import (
    Outcome,
    RoundSettled,
    Task,
    TaskAssigned,
    UpdateCommitted,
    VaaBody,
    WorkerRegistered,
    decode_payload,
    parse_vaa,
    sign_vaa,
)
from fedrelay.relayer.chains_file import parse_chains
from fedrelay.relayer.process import StageRequest, build_process
from fedrelay.relayer.settings import RelayerSettings
from fedrelay.relayer.stage import StageRunner, stage_metrics

pytestmark = pytest.mark.integration

COORDINATOR, WORKERS = 2, 4
GUARDIANS = 3
CHALLENGE_WINDOW = 60
RELAYER_KEY = 6  # the anvil account that signs deliveries on both chains
FEDRELAY = Path(sys.executable).parent / "fedrelay"


@pytest.fixture(scope="module")
def evm(coordinator_chain: Anvil, worker_chain: Anvil) -> EvmDeployment:
    """Fresh contracts on both chains (the contracts are compiled first; forge caches)."""
    Forge(Path(CONTRACTS_DIR)).build()
    guardians = ["0x" + g.address.hex() for g in wormhole_testing.guardian_signers(GUARDIANS)]
    return deploy_pair(coordinator_chain, worker_chain, guardians, CHALLENGE_WINDOW)


@pytest.fixture(scope="module")
def ledger_url(postgres: Postgres) -> str:
    """A database of this module's own on the session's cluster, at the newest migration."""
    url = postgres.create_database("relayer_evm")
    upgrade(url)
    return url


@pytest.fixture
def key_files(tmp_path: Path, evm: EvmDeployment) -> tuple[list[Path], Path]:
    guardian_files = []
    for index in range(GUARDIANS):
        path = tmp_path / f"guardian-{index}.key"
        path.write_text("0x" + wormhole_testing.guardian_key(index).hex() + "\n")
        guardian_files.append(path)
    signer = tmp_path / "signer.key"
    signer.write_text(evm.coordinator.private_keys[RELAYER_KEY] + "\n")
    return guardian_files, signer


def block_time(w3: Any) -> int:
    """The timestamp of the latest block of the chain ``w3`` talks to."""
    return int(w3.eth.get_block("latest")["timestamp"])


def _settings(kafka: Kafka, ledger_url: str) -> RelayerSettings:
    tag = uuid.uuid4().hex[:8]
    return RelayerSettings(
        database_url=ledger_url, kafka_bootstrap=kafka.bootstrap, topic_partitions=2,
        observations_topic=f"observations-{tag}", signatures_topic=f"signatures-{tag}",
        vaas_topic=f"vaas-{tag}", deliveries_prefix=f"deliveries-{tag}", dlq_topic=f"dlq-{tag}",
        group_prefix=f"fedrelay-{tag}", poll_wait_s=0.1, retry_base_s=0.05, retry_cap_s=0.5,
        watch_interval_s=0.1, confirm_timeout_s=10,
    )  # fmt: skip


async def eventually(
    check: Callable[[], Any],
    what: str,
    explain: Callable[[], str] = lambda: "",
    limit_s: float = 60.0,
) -> None:
    """Return once `check()` (run in a thread: it may call a chain) is true."""
    try:
        async with asyncio.timeout(limit_s):
            while not await asyncio.to_thread(check):  # noqa: ASYNC110 - chains have no event
                await asyncio.sleep(0.1)
    except TimeoutError:
        raise AssertionError(f"timed out waiting for {what}\n{explain()}") from None


@pytest.fixture
async def sessions(ledger_url: str) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    engine = create_engine(ledger_url)
    yield async_sessionmaker(engine, expire_on_commit=False)
    await engine.dispose()


async def test_one_round_carries_every_payload_type_on_both_evm_routes(
    evm: EvmDeployment,
    kafka: Kafka,
    ledger_url: str,
    key_files: tuple[list[Path], Path],
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    guardian_files, signer_file = key_files
    settings = _settings(kafka, ledger_url)
    chains = parse_chains(evm.chains_yaml())
    request = StageRequest(stage="all", guardian_keys=guardian_files, signer_keys={"": signer_file})
    registry = CollectorRegistry()
    process = await build_process(settings, chains, request, metrics=stage_metrics(registry))
    names = sorted(stage.name for stage in process.stages)
    assert names == [
        "assemble", "attest-0", "attest-1", "attest-2", "deliver-2", "deliver-4", "route",
        "watch-2", "watch-4",
    ]  # fmt: skip
    in_flight = {
        stage.name: stage.batches_in_flight
        for stage in process.stages
        if isinstance(stage, StageRunner) and not stage.name.startswith("deliver")
    }
    # signing and routing keep no state: several batches at once; assembling counts a quorum
    # across batches in the ledger: one at a time
    assert in_flight == {
        "assemble": 1, "attest-0": settings.batches_in_flight,
        "attest-1": settings.batches_in_flight, "attest-2": settings.batches_in_flight,
        "route": settings.batches_in_flight,
    }  # fmt: skip
    assert settings.batches_in_flight > 1
    await process.bus.create_topics(process.topics, partitions=settings.topic_partitions)
    for name, check in process.checks.items():
        assert await check(), name
    tasks = [asyncio.create_task(stage.run(), name=stage.name) for stage in process.stages]
    market, hub = evm.market, evm.hub
    worker = Signer(evm.workers.private_keys[3])
    worker_key = address_to_bytes32(worker.address)
    payout = evm.coordinator.addresses[5]
    aggregator = Signer(evm.coordinator.private_keys[1])
    try:
        # WORKER_REGISTERED: worker chain -> coordinator chain.
        await asyncio.to_thread(hub.stake, worker, 2 * 10**18)
        await asyncio.to_thread(hub.register, worker, address_to_bytes32(payout), 2)
        await eventually(lambda: market.worker(WORKERS, worker_key).registered, "registration")

        # TASK_ASSIGNED: coordinator chain -> worker chain.
        spec = JobSpec(
            model_hash=b"\x11" * 32, config_hash=b"\x22" * 32, num_rounds=1,
            workers_per_round=1, reward_per_round=10**18, min_stake=10**8,
            worker_chains=(WORKERS,), slash_recipients=(bytes(12) + b"\x44" * 20,),
        )  # fmt: skip
        poster = Signer(evm.coordinator.private_keys[4])
        job_id = (await asyncio.to_thread(market.post_job, poster, spec)).job_id
        # Other tests move the shared chains' clocks: be ahead of both (JobMarket and WorkerHub).
        deadline = max(block_time(market.chain.w3), block_time(evm.worker_chain.w3)) + 3600
        await asyncio.to_thread(
            market.assign_tasks, aggregator, job_id, WORKERS, deadline, [Task(worker_key, 0)]
        )
        await eventually(
            lambda: hub.task(job_id, 0, worker_key).state is HubTaskState.ASSIGNED, "assignment"
        )

        # UPDATE_COMMITTED: worker chain -> coordinator chain, once the round's pending
        # commitments are published.
        update_hash, root, data_root = b"\x33" * 32, b"\x44" * 32, b"\x45" * 32
        await asyncio.to_thread(
            hub.commit_update, worker, job_id, 0, update_hash, root, data_root, 1797, 412_000
        )
        pending = await asyncio.to_thread(hub.pending_commitments, job_id, 0)
        await asyncio.to_thread(hub.publish_commitments, worker, job_id, 0, pending)
        await eventually(
            lambda: market.commitment(job_id, 0, WORKERS, worker_key).state is TaskState.COMMITTED,
            "commitment",
        )
        assert market.commitment(job_id, 0, WORKERS, worker_key).data_root == data_root

        # ROUND_SETTLED: coordinator chain -> worker chain.
        result = RoundResult(WORKERS, worker_key, Outcome.ACCEPTED, reward=6 * 10**17)
        await asyncio.to_thread(
            market.finalize_round, aggregator, job_id, 0, b"\x55" * 32, [result]
        )
        evm.coordinator.rpc("evm_increaseTime", [CHALLENGE_WINDOW])
        evm.coordinator.rpc("evm_mine")
        settler = Signer(evm.coordinator.private_keys[7])
        await asyncio.to_thread(market.settle_round, settler, job_id, 0)
        await eventually(
            lambda: hub.task(job_id, 0, worker_key).state is HubTaskState.SETTLED, "settlement"
        )
    finally:
        for stage in process.stages:
            stage.stop()
        await asyncio.wait_for(asyncio.gather(*tasks), 30)
        await process.close()

    commitment = market.commitment(job_id, 0, WORKERS, worker_key)
    assert (commitment.update_hash, commitment.transcript_root) == (update_hash, root)
    # Settled without a slash: the lock waits for the job's next task in its slot, or anyone.
    assert hub.staker(worker.address).active_tasks == 1
    await asyncio.to_thread(hub.release_settled, worker, job_id, [worker.address])
    assert hub.staker(worker.address).active_tasks == 0
    assert market.claimable(payout) == 6 * 10**17

    async with sessions() as session:
        deliveries = (await session.scalars(select(Delivery))).all()
        attempts = (await session.scalars(select(DeliveryAttempt))).all()
        observations = (await session.scalars(select(ObservationRow))).all()
        vaas = {bytes(d.digest): d for d in deliveries}
    kinds: dict[type, int] = {}
    for delivery in deliveries:
        assert delivery.status == DeliveryStatus.CONFIRMED
        stored = await _vaa(sessions, bytes(delivery.digest))
        payload = decode_payload(parse_vaa(stored).body.payload)
        kinds[type(payload)] = delivery.destination_chain
        consumed = market if delivery.destination_chain == COORDINATOR else hub
        assert consumed.is_consumed(parse_vaa(stored).message_id)
    assert kinds == {
        WorkerRegistered: COORDINATOR, TaskAssigned: WORKERS,
        UpdateCommitted: COORDINATOR, RoundSettled: WORKERS,
    }  # fmt: skip
    assert len(vaas) == 4
    confirmed = [a for a in attempts if a.outcome == AttemptOutcome.CONFIRMED]
    assert len(confirmed) == 4  # one signed transaction per delivery, nothing sent twice
    signer = Signer(evm.coordinator.private_keys[RELAYER_KEY]).address
    assert {a.signer for a in attempts} == {signer}
    assert sorted(o.status for o in observations) == [ObservationStatus.ASSEMBLED] * 4
    for stage in ("watch-2", "watch-4", "assemble", "route", "deliver-2", "deliver-4"):
        processed = registry.get_sample_value("fedrelay_stage_processed_total", {"stage": stage})
        assert processed is not None
        assert processed >= 2, stage
    for stage in ("attest-0", "attest-1", "attest-2"):
        assert registry.get_sample_value("fedrelay_stage_processed_total", {"stage": stage}) == 4


async def _vaa(sessions: async_sessionmaker[AsyncSession], digest: bytes) -> bytes:
    from fedrelay.adapters.ledger.models import StoredVaa

    async with sessions() as session:
        row = await session.get(StoredVaa, digest)
        assert row is not None
        return bytes(row.vaa)


async def test_evm_destination_classifies_what_the_chain_answers(evm: EvmDeployment) -> None:
    """Consumed flag, AlreadyConsumed, decoded reverts and node errors, against the real chain."""
    guardians = wormhole_testing.guardian_signers(GUARDIANS)
    key = evm.workers.private_keys[8]
    w3 = connect(evm.workers.rpc_url)
    destination = EvmDestination(w3, WORKERS, evm.hub.address, key, evm.workers.chain_id)
    assert key not in repr(destination)
    worker = address_to_bytes32(evm.workers.addresses[8])
    deadline = int(evm.worker_chain.w3.eth.get_block("latest")["timestamp"]) + 3600
    assigned = TaskAssigned(
        target_chain=WORKERS, target_address=address_to_bytes32(evm.hub.address),
        job_id=900, round=0, deadline=deadline, model_hash=bytes(32), config_hash=bytes(32),
        min_stake=0, stake_lock=0, release_at=deadline + 86_400, tasks=(Task(worker, 0),),
    )  # fmt: skip
    body = VaaBody(
        timestamp=deadline, nonce=0, emitter_chain=COORDINATOR,
        emitter_address=address_to_bytes32(evm.market.address), sequence=90_000,
        consistency_level=1, payload=assigned.to_bytes(),
    )  # fmt: skip
    good = sign_vaa(body, 0, list(enumerate(guardians))).to_bytes()
    try:
        assert not await destination.is_consumed(good)
        signed = await destination.prepare(good, None, 0)
        await destination.broadcast(signed)
        await destination.broadcast(signed)  # again: harmless
        status = await mined(destination, signed.tx_id)
        assert status.state.value == "confirmed"
        assert await destination.is_consumed(good)
        with pytest.raises(Exception) as again:  # noqa: PT011 - classified below
            await destination.prepare(good, None, 0)
        assert destination.classify(again.value).kind is FailureKind.ALREADY_CONSUMED

        too_few = sign_vaa(body, 0, list(enumerate(guardians))[:1]).to_bytes()
        with pytest.raises(Exception) as refused:  # noqa: PT011
            await destination.prepare(too_few, None, 0)
        failure = destination.classify(refused.value)
        assert failure.kind is FailureKind.REVERTED
        assert "InvalidVaa" in failure.reason

        # Without the estimate (which would refuse a consumed VAA), a used nonce is refused.
        fixed = EvmDestination(
            w3, WORKERS, evm.hub.address, key, evm.workers.chain_id, GasPolicy(gas_limit=300_000)
        )
        stale = await fixed.prepare(good, signed.nonce, 1)
        with pytest.raises(Exception) as low:  # noqa: PT011
            await destination.broadcast(stale)
        assert destination.classify(low.value).kind is FailureKind.NONCE_TOO_LOW

        # Mined and reverted: the status says why (replayed revert reason, or out of gas).
        refused_on_chain = await fixed.prepare(too_few, None, 0)
        await fixed.broadcast(refused_on_chain)
        status = await mined(fixed, refused_on_chain.tx_id)
        assert status.state.value == "failed"
        assert status.failure is not None
        assert status.failure.kind is FailureKind.REVERTED
        assert "InvalidVaa" in status.failure.reason
        starved = EvmDestination(
            w3, WORKERS, evm.hub.address, key, evm.workers.chain_id, GasPolicy(gas_limit=60_000)
        )
        next_round = replace(assigned, round=1).to_bytes()
        fresh_body = replace(body, sequence=90_001, payload=next_round)
        fresh = sign_vaa(fresh_body, 0, list(enumerate(guardians))).to_bytes()
        out_of_gas = await starved.prepare(fresh, None, 0)
        await starved.broadcast(out_of_gas)
        status = await mined(starved, out_of_gas.tx_id)
        assert status.failure is not None
        assert status.failure.kind is FailureKind.OUT_OF_GAS
        assert not await destination.is_consumed(fresh)
    finally:
        await w3.provider.disconnect()

    nowhere = connect("http://127.0.0.1:9")
    down = EvmDestination(nowhere, WORKERS, evm.hub.address, key, 31338)
    with pytest.raises(Exception) as unreachable:  # noqa: PT011
        await down.is_consumed(good)
    await nowhere.provider.disconnect()
    assert down.classify(unreachable.value).kind is FailureKind.UNAVAILABLE


async def test_evm_source_reads_final_messages_and_sees_a_reorg(evm: EvmDeployment) -> None:
    w3 = connect(evm.workers.rpc_url)
    source = await EvmSource.of_receiver(w3, WORKERS, evm.hub.address, 2)  # 2 confirmations
    staker = Signer(evm.workers.private_keys[9])
    try:
        snapshot = evm.workers.rpc("evm_snapshot")
        await asyncio.to_thread(evm.hub.stake, staker, 10**18)
        receipt = await asyncio.to_thread(evm.hub.register, staker, bytes(32), 1)
        block = int(receipt["blockNumber"])
        [message] = await source.messages_between(block, block)
        observation = message.observation
        assert decode_payload(observation.payload).__class__ is WorkerRegistered
        assert observation.block_hash == await source.position_hash(block)
        assert (await source.head()).number < block  # not 2 confirmations deep yet
        assert await source.fetch_message(observation.message_id, observation.tx_hash) is None
        evm.workers.rpc("anvil_mine", [2])
        again = await source.fetch_message(observation.message_id, observation.tx_hash)
        assert again is not None
        assert again.observation == observation

        evm.workers.rpc("evm_revert", [snapshot])  # the message's block is gone
        evm.workers.rpc("anvil_mine", [4])
        assert await source.position_hash(block) != observation.block_hash
        assert await source.fetch_message(observation.message_id, observation.tx_hash) is None
    finally:
        await w3.provider.disconnect()


# --- the process ----------------------------------------------------------------------------------


def _process_env(
    evm: EvmDeployment, tmp_path: Path, kafka: Kafka, database_url: str, port: int
) -> dict[str, str]:
    chains_file = tmp_path / "chains.yaml"
    chains_file.write_text(evm.chains_yaml())
    tag = uuid.uuid4().hex[:8]
    return {
        **os.environ,
        "FEDRELAY_CHAINS_FILE": str(chains_file),
        "FEDRELAY_DATABASE_URL": database_url,
        "FEDRELAY_KAFKA_BOOTSTRAP": kafka.bootstrap,
        "FEDRELAY_HEALTH_PORT": str(port),
        "FEDRELAY_GROUP_PREFIX": f"fedrelay-{tag}",
        "FEDRELAY_OBSERVATIONS_TOPIC": f"observations-{tag}",
        "FEDRELAY_SIGNATURES_TOPIC": f"signatures-{tag}",
        "FEDRELAY_VAAS_TOPIC": f"vaas-{tag}",
        "FEDRELAY_DELIVERIES_PREFIX": f"deliveries-{tag}",
        "FEDRELAY_DLQ_TOPIC": f"dlq-{tag}",
        "FEDRELAY_POLL_WAIT_S": "0.1",
        "FEDRELAY_WATCH_INTERVAL_S": "0.1",
        "FEDRELAY_LAG_INTERVAL_S": "0.5",
        "OTEL_TRACES_EXPORTER": "none",
    }


def _start(
    env: dict[str, str], key_files: tuple[list[Path], Path], log: Path
) -> subprocess.Popen[bytes]:
    guardian_files, signer_file = key_files
    argv = [
        str(FEDRELAY),
        "relayer",
        "run",
        "--stage",
        "all",
        "--signer-key-file",
        str(signer_file),
    ]
    for path in guardian_files:
        argv += ["--guardian-key-file", str(path)]
    with log.open("wb") as sink:
        return subprocess.Popen(argv, env=env, stdout=sink, stderr=subprocess.STDOUT)


def _get(port: int, path: str) -> httpx.Response | None:
    try:
        return httpx.get(f"http://127.0.0.1:{port}{path}", timeout=5)
    except httpx.TransportError:
        return None


async def _stop(process: subprocess.Popen[bytes]) -> int:
    process.send_signal(signal.SIGTERM)
    return await asyncio.to_thread(process.wait, 30)


@pytest.mark.parametrize(
    ("mode", "worker_index"), [("kafka-postgres", 2), ("embedded", 8)], ids=lambda v: str(v)
)
async def test_the_relayer_process_is_ready_relays_drains_and_exits_on_sigterm(
    mode: str,
    worker_index: int,
    evm: EvmDeployment,
    kafka: Kafka,
    ledger_url: str,
    key_files: tuple[list[Path], Path],
    tmp_path: Path,
) -> None:
    port = free_port()
    log = tmp_path / "relayer.log"
    env = _process_env(evm, tmp_path, kafka, ledger_url, port)
    if mode == "embedded":  # the one-command default: in-process bus, SQLite ledger
        del env["FEDRELAY_KAFKA_BOOTSTRAP"]
        env["FEDRELAY_DATABASE_URL"] = f"sqlite+aiosqlite:///{tmp_path / 'ledger.db'}"
    process = _start(env, key_files, log)
    try:

        def ready() -> bool:
            assert process.poll() is None, log.read_text()
            answer = _get(port, "/readyz")
            return answer is not None and answer.status_code == 200

        await eventually(ready, "/readyz to answer 200")
        worker = Signer(evm.workers.private_keys[worker_index])
        await asyncio.to_thread(evm.hub.stake, worker, 10**18)
        payout = address_to_bytes32(evm.coordinator.addresses[5])
        await asyncio.to_thread(evm.hub.register, worker, payout, 1)
        key = address_to_bytes32(worker.address)
        await eventually(
            lambda: evm.market.worker(WORKERS, key).registered,
            "the registration",
            lambda: log.read_text()[-6000:],
        )

        def delivered_count() -> float:
            metrics = _get(port, "/metrics")
            assert metrics is not None
            assert metrics.status_code == 200
            found = re.search(
                r'^fedrelay_stage_processed_total\{stage="deliver-2"\} (\S+)$', metrics.text, re.M
            )
            return float(found.group(1)) if found else 0.0

        # The deliverer counts a delivery once its hand-off commits, after the chain's receipt.
        await eventually(lambda: delivered_count() >= 1, "deliver-2 to count the delivery")
        metrics = _get(port, "/metrics")
        assert metrics is not None
        for name in ("processed_total", "failed_total", "retried_total", "queue_depth",
                     "latency_seconds_bucket", "last_seen_timestamp_seconds"):  # fmt: skip
            assert f"fedrelay_stage_{name}" in metrics.text, name
        if mode == "kafka-postgres":  # `relayer status` reads the ledger and the broker
            status = await asyncio.to_thread(
                subprocess.run, [str(FEDRELAY), "relayer", "status", "--json"], env=env,
                capture_output=True, text=True, timeout=60, check=False,
            )  # fmt: skip
            assert status.returncode == 0, status.stderr
            report = json.loads(status.stdout)
            assert {"route", "deliver-2", "deliver-4", "attest-0"} <= set(report["queue_depth"])
            assert report["watch_lag"]["coordinator"] is not None
            counts = {d["chain_id"]: d for d in report["deliveries"]}
            assert counts[COORDINATOR]["confirmed"] >= 1  # this test's registration at least
    finally:
        code = await _stop(process)
    output = log.read_text()
    assert code == 0, output
    assert "every stage drained" in output
    secret = evm.coordinator.private_keys[RELAYER_KEY].removeprefix("0x")
    assert secret not in output  # keys never reach the log
    for index in range(GUARDIANS):
        assert wormhole_testing.guardian_key(index).hex() not in output


async def test_the_relayer_process_is_not_ready_without_its_database(
    evm: EvmDeployment, kafka: Kafka, key_files: tuple[list[Path], Path], tmp_path: Path
) -> None:
    port = free_port()
    nowhere = f"postgresql+asyncpg://fedrelay:x@127.0.0.1:{free_port()}/fedrelay"
    log = tmp_path / "relayer.log"
    process = _start(_process_env(evm, tmp_path, kafka, nowhere, port), key_files, log)
    try:
        answers: list[httpx.Response] = []

        def answered() -> bool:
            assert process.poll() is None, log.read_text()
            answer = _get(port, "/readyz")
            if answer is not None:
                answers.append(answer)
            return answer is not None

        await eventually(answered, "/readyz to answer")
        readiness = answers[-1]
        assert readiness.status_code == 503
        checks = readiness.json()["checks"]
        assert checks["database"]["ready"] is False
        assert checks["kafka"]["ready"] is True
        assert checks["chain:coordinator"]["ready"] is True
        assert (await asyncio.to_thread(_get, port, "/healthz")).status_code == 200  # type: ignore[union-attr]
    finally:
        code = await _stop(process)
    assert code == 0, log.read_text()


# --- coordinator chain <-> Solana ---------------------------------------------------------------


async def _solana_program(devnet: SolanaDevnet, rpc: AsyncClient, market: str) -> Deployment:
    """A worker program whose coordinator peer is `market` (chain 2), guarded by the 3 guardians."""
    client = WorkerProgramClient(rpc, Pubkey.new_unique())
    devnet.add_program(client.program_id, program_bytes())
    admin = Keypair()
    await client.airdrop(admin.pubkey(), 1000 * LAMPORTS_PER_SOL)
    guardians = wormhole_testing.guardian_signers(GUARDIANS)
    await client.initialize(
        admin,
        ix.InitializeArgs(
            peer_chain=COORDINATOR, peer_emitter=address_to_bytes32(market),
            guardian_set_index=0, guardian_addresses=tuple(g.address for g in guardians),
            unbonding_delay=3600, guardian_set_ttl=86400, min_stake=LAMPORTS_PER_SOL,
            consistency_level=1,
        ),
    )  # fmt: skip
    return Deployment(devnet, client, admin, guardians)


async def test_one_round_carries_every_payload_type_between_coordinator_and_solana(
    evm: EvmDeployment,
    solana_devnet: SolanaDevnet,
    kafka: Kafka,
    ledger_url: str,
    key_files: tuple[list[Path], Path],
    tmp_path: Path,
) -> None:
    async with AsyncClient(solana_devnet.url) as rpc:
        program = await _solana_program(solana_devnet, rpc, evm.market.address)
        owner = Signer(evm.coordinator.private_keys[0])
        market = evm.market
        await asyncio.to_thread(market.set_peer, owner, SOLANA_CHAIN, bytes(program.program_id))
        await asyncio.to_thread(market.set_max_batch, owner, SOLANA_CHAIN, 8)
        payer = await program.funded_keypair()
        payer_file = tmp_path / "solana-payer.json"
        payer_file.write_text(json.dumps(list(bytes(payer))))
        chains = parse_chains(
            evm.chains_yaml()
            + f"  - name: worker-solana\n    wormhole_chain_id: {SOLANA_CHAIN}\n    kind: solana\n"
            f'    rpc_url: "{solana_devnet.url}"\n    address: "{program.program_id}"\n'
            "    finality: finalized\n"
        )
        guardian_files, signer_file = key_files
        request = StageRequest(
            stage="all", guardian_keys=guardian_files,
            signer_keys={"": signer_file, "worker-solana": payer_file},
        )  # fmt: skip
        process = await build_process(
            _settings(kafka, ledger_url),
            chains,
            request,
            metrics=stage_metrics(CollectorRegistry()),
        )
        assert {"watch-1", "deliver-1"} <= {stage.name for stage in process.stages}
        await process.bus.create_topics(process.topics, partitions=2)
        tasks = [asyncio.create_task(stage.run(), name=stage.name) for stage in process.stages]
        worker = await program.funded_keypair()
        key = bytes(worker.pubkey())
        payout = address_to_bytes32(evm.coordinator.addresses[5])
        aggregator = Signer(evm.coordinator.private_keys[1])

        async def solana_task() -> TaskAccount | None:
            try:
                return await program.client.fetch_task(job_id, 0, key)
            except AccountNotFound:
                return None

        try:
            # WORKER_REGISTERED: Solana -> coordinator chain.
            await program.client.register(
                worker, stake_lamports=2 * LAMPORTS_PER_SOL, payout=payout, capabilities=1
            )
            await eventually(lambda: market.worker(SOLANA_CHAIN, key).registered, "registration")

            # TASK_ASSIGNED: coordinator chain -> Solana.
            spec = JobSpec(
                model_hash=b"\x61" * 32, config_hash=b"\x62" * 32, num_rounds=1,
                workers_per_round=1, reward_per_round=10**18, min_stake=1,
                worker_chains=(SOLANA_CHAIN,), slash_recipients=(b"\x45" * 32,),
            )  # fmt: skip
            poster = Signer(evm.coordinator.private_keys[4])
            job_id = (await asyncio.to_thread(market.post_job, poster, spec)).job_id
            # JobMarket wants it ahead of the coordinator chain's clock, the program of its own.
            now = max(solana_devnet.chain.unix_time(), block_time(market.chain.w3))
            deadline = now + 3600
            await asyncio.to_thread(
                market.assign_tasks, aggregator, job_id, SOLANA_CHAIN, deadline, [Task(key, 0)]
            )
            async with asyncio.timeout(60):
                while await solana_task() is None:  # noqa: ASYNC110 - polling the chain
                    await asyncio.sleep(0.1)

            # UPDATE_COMMITTED: Solana -> coordinator chain, once the round's commitments are
            # published.
            commitment = ix.Commitment(
                job_id=job_id, round=0, update_hash=b"\x63" * 32, transcript_root=b"\x64" * 32,
                data_root=b"\x65" * 32, num_samples=600, train_loss=4_000,
            )  # fmt: skip
            await program.client.commit_update(worker, commitment)
            await program.client.publish_commitments(worker, job_id, 0, [key])
            await eventually(
                lambda: (
                    market.commitment(job_id, 0, SOLANA_CHAIN, key).state is TaskState.COMMITTED
                ),
                "commitment",
            )

            # ROUND_SETTLED: coordinator chain -> Solana.
            result = RoundResult(SOLANA_CHAIN, key, Outcome.ACCEPTED, reward=10**17)
            await asyncio.to_thread(
                market.finalize_round, aggregator, job_id, 0, b"\x65" * 32, [result]
            )
            evm.coordinator.rpc("evm_increaseTime", [CHALLENGE_WINDOW])
            evm.coordinator.rpc("evm_mine")
            settler = Signer(evm.coordinator.private_keys[7])
            await asyncio.to_thread(market.settle_round, settler, job_id, 0)
            async with asyncio.timeout(60):
                while not ((task := await solana_task()) and task.settled):  # noqa: ASYNC110
                    await asyncio.sleep(0.1)
        finally:
            for stage in process.stages:
                stage.stop()
            await asyncio.wait_for(asyncio.gather(*tasks), 30)
            await process.close()

        settled = await solana_task()
        assert settled is not None
        assert (settled.shard, settled.committed, settled.settled) == (0, True, True)
        assert market.commitment(job_id, 0, SOLANA_CHAIN, key).update_hash == b"\x63" * 32
        engine = create_engine(ledger_url)
        async with async_sessionmaker(engine)() as session:
            to_solana = (
                await session.scalars(
                    select(Delivery).where(Delivery.destination_chain == SOLANA_CHAIN)
                )
            ).all()
        await engine.dispose()
        assert [d.status for d in to_solana] == [DeliveryStatus.CONFIRMED] * 2
        for delivery in to_solana:
            assert await program.client.is_consumed(bytes(delivery.digest))
