"""The relayer end to end: coordinator chain -> Kafka + PostgreSQL stages -> EVM worker chain.

Two anvils, a Kafka broker and a PostgreSQL cluster are started with the test harness; the
contracts are deployed and linked (:func:`fedrelay.adapters.devnet.evm_pair.deploy_pair`,
3 guardians). The relayer's stages run in this process as ``fedrelay relayer run --stage all``
builds them: watch on both chains, 3 attesting guardians, assemble, route and deliver, on
:class:`KafkaBus` and a PostgreSQL ledger.

One worker is staked and registered on the worker chain first (its WORKER_REGISTERED is relayed
to the coordinator chain: this also warms the pipeline up). Jobs are posted beforehand. Two
phases follow, each waiting until the worker chain's hub counts the phase's tasks:

- burst: one TASK_ASSIGNED per job on the coordinator chain, back to back from the aggregator;
  throughput is N divided by the seconds from the first emission to the last confirmation;
- steady: more TASK_ASSIGNED offered at half the burst's throughput; its latency percentiles
  are the ones a relayer that keeps up shows (``steady_latency_p50_s``, ``..._p99_s``).

Latency, per message: from the emitting transaction's acceptance by the (automining) coordinator
anvil, wall clock, to the deliver stage recording the destination receipt (the ledger's
``deliveries.updated_at`` as the delivery turns ``confirmed``).

Raw capacity, afterwards, on the same worker-chain anvil: ``receiveMessage`` with fresh
TASK_ASSIGNED VAAs signed by the same guardians, from one sender through
:class:`EvmDestination` with the relayer's gas policy: sequential (each sent once the previous
receipt is in: ``sequential_raw_tps``) and pipelined (each signed with the next nonce and sent
at once, receipts collected afterwards: ``pipelined_raw_tps``).
"""

from __future__ import annotations

import asyncio
import json
import math
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hexbytes import HexBytes
from prometheus_client import CollectorRegistry
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import async_sessionmaker

from fedrelay.adapters.devnet import guardians as wormhole_testing
from fedrelay.adapters.devnet.evm_pair import (
    COORDINATOR_CHAIN,
    WORKER_CHAIN,
    EvmDeployment,
    deploy_pair,
)
from fedrelay.adapters.devnet.forge import Forge
from fedrelay.adapters.devnet.services import Anvil, Kafka, Postgres
from fedrelay.adapters.evm import EvmChain, Signer, address_to_bytes32
from fedrelay.adapters.evm.artifacts import CONTRACTS_DIR, load_artifact
from fedrelay.adapters.evm.relay import EvmDestination
from fedrelay.adapters.evm.rpc import connect
from fedrelay.adapters.kafka import KafkaBus
from fedrelay.adapters.ledger.database import create_engine, upgrade
from fedrelay.adapters.ledger.models import Delivery, DeliveryStatus, StoredVaa
from fedrelay.protocol.wormhole import (
    Task,
    TaskAssigned,
    VaaBody,
    decode_payload,
    parse_vaa,
    sign_vaa,
)
from fedrelay.relayer.chains_file import parse_chains
from fedrelay.relayer.process import StageRequest, build_process
from fedrelay.relayer.records import DeliveryRequest, encode_message, message_key
from fedrelay.relayer.settings import RelayerSettings
from fedrelay.relayer.stage import StageMetrics, StageRunner, stage_metrics

GUARDIANS = 3
RELAYER_KEY = 6  # anvil account that signs deliveries
AGGREGATOR_KEY = 1  # the coordinator chain's aggregator (deploy_pair)
POSTER_KEY = 4
WORKER_KEY = 3  # the worker, on the worker chain
RAW_SENDER_KEY = 9  # the raw-capacity sender on the worker chain
RAW_JOB_BASE = 1 << 40  # job ids of the raw-capacity VAAs, far from the market's own
POLL_S = 0.1  # how often the chain is asked whether the condition holds
#: How long the ledger may lag behind the chain: the deliverer records receipts after they land.
LEDGER_LAG_S = 30.0
RECEIPT_POLL_S = 0.005


class BenchmarkFailed(RuntimeError):
    """The pipeline did not deliver every message in time, or delivered something else."""


@dataclass
class _Emissions:
    """Wall-clock receipt time of each job's TASK_ASSIGNED emission (written by the emitter)."""

    at: dict[int, float] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    stop: threading.Event = field(default_factory=threading.Event)

    def record(self, job_id: int, when: float) -> None:
        with self.lock:
            self.at[job_id] = when

    def count(self) -> int:
        with self.lock:
            return len(self.at)


class _FastSender:
    """Sends one signer's transactions with locally counted nonces and fixed gas and fees."""

    def __init__(self, chain: EvmChain, signer: Signer) -> None:
        self.chain, self.signer = chain, signer
        self.nonce = int(chain.w3.eth.get_transaction_count(signer.address, "pending"))
        self.fees: dict[str, Any] | None = None

    def send(self, function: Any, value: int = 0) -> bytes:
        """Broadcast `function`; gas and fees are estimated for the first call only (+30% gas)."""
        params: dict[str, Any] = {"from": self.signer.address, "value": value}
        if self.fees is None:
            built = dict(function.build_transaction(params))
            self.fees = {
                "gas": int(built["gas"] * 13 // 10),
                "maxFeePerGas": built["maxFeePerGas"],
                "maxPriorityFeePerGas": built["maxPriorityFeePerGas"],
                "chainId": self.chain.chain_id,
            }
        params |= self.fees | {"nonce": self.nonce}
        transaction = dict(function.build_transaction(params))
        self.nonce += 1
        return bytes(self.chain.w3.eth.send_raw_transaction(self.signer.sign(transaction)))

    def wait(self, tx_hash: bytes) -> None:
        """Wait for `tx_hash`'s receipt; raise when it reverted."""
        receipt = self.chain.w3.eth.wait_for_transaction_receipt(
            HexBytes(tx_hash), timeout=60, poll_latency=RECEIPT_POLL_S
        )
        if receipt["status"] != 1:
            raise BenchmarkFailed(f"transaction 0x{tx_hash.hex()} reverted")


def _post_jobs(evm: EvmDeployment, count: int) -> list[int]:
    """Post `count` one-round, one-worker jobs for the worker chain; their ids in order."""
    market = evm.market
    first = int(market.chain.call(market.contract.functions.nextJobId()))
    sender = _FastSender(market.chain, Signer(evm.coordinator.private_keys[POSTER_KEY]))
    spec = (
        "0x0000000000000000000000000000000000000000", b"\x11" * 32, b"\x22" * 32, 1, 1, 1, 1,
        [WORKER_CHAIN], 0, 0, 0, [address_to_bytes32(sender.signer.address)], 3600, 7 * 86_400,
    )  # fmt: skip
    hashes = [sender.send(market.contract.functions.postJob(spec), value=1) for _ in range(count)]
    for tx_hash in hashes:
        sender.wait(tx_hash)
    return list(range(first, first + count))


def _emit(
    evm: EvmDeployment,
    jobs: Sequence[int],
    worker_key: bytes,
    emissions: _Emissions,
    rate: float | None = None,
) -> None:
    """One TASK_ASSIGNED per job: back to back (a burst), or `rate` per second (steady load).

    Each emission's wall-clock time is taken as the automining anvil accepts its transaction
    (it is mined on arrival); every receipt is checked at the end.
    """
    market = evm.market
    sender = _FastSender(market.chain, Signer(evm.coordinator.private_keys[AGGREGATOR_KEY]))
    core = market.chain.w3.eth.contract(
        address=market.chain.call(market.contract.functions.core()),
        abi=list(load_artifact("MessageCore").abi),
    )
    fee = int(market.chain.call(core.functions.messageFee()))
    deadline = int(evm.coordinator_chain.w3.eth.get_block("latest")["timestamp"]) + 86_400
    started = time.monotonic()
    hashes = []
    for index, job_id in enumerate(jobs):
        if emissions.stop.is_set():
            return
        if rate is not None:
            pause = started + index / rate - time.monotonic()
            if pause > 0:
                time.sleep(pause)  # pacing the offered load, not synchronising
        function = market.contract.functions.assignTasks(
            job_id, WORKER_CHAIN, deadline, [(worker_key, 0)]
        )
        hashes.append(sender.send(function, value=fee))
        emissions.record(job_id, time.time())
    for tx_hash in hashes:
        sender.wait(tx_hash)


def _settings(kafka: Kafka, database_url: str, window: int, batch_max: int = 1) -> RelayerSettings:
    tag = uuid.uuid4().hex[:8]
    return RelayerSettings(
        deliver_window=window, deliver_batch_max=batch_max,
        database_url=database_url, kafka_bootstrap=kafka.bootstrap, topic_partitions=2,
        observations_topic=f"observations-{tag}", signatures_topic=f"signatures-{tag}",
        vaas_topic=f"vaas-{tag}", deliveries_prefix=f"deliveries-{tag}", dlq_topic=f"dlq-{tag}",
        group_prefix=f"bench-{tag}", poll_wait_s=0.1, retry_base_s=0.05, retry_cap_s=0.5,
        watch_interval_s=0.1,
    )  # fmt: skip


async def _until(
    check: Callable[[], bool], what: str, limit_s: float, tick: Callable[[], None] = lambda: None
) -> None:
    """Return once `check()` (run in a thread: it may ask a chain) holds; fail after `limit_s`."""
    try:
        async with asyncio.timeout(limit_s):
            while not await asyncio.to_thread(check):  # chains have no event to wait on
                tick()
                await asyncio.sleep(POLL_S)
    except TimeoutError:
        raise BenchmarkFailed(f"timed out after {limit_s:.0f} s waiting for {what}") from None
    tick()


async def _confirmation_times(database_url: str) -> dict[int, float]:
    """Job id -> wall-clock time the deliver stage confirmed its TASK_ASSIGNED (worker chain)."""
    engine = create_engine(database_url)
    try:
        async with async_sessionmaker(engine)() as session:
            rows = await session.execute(
                select(Delivery.updated_at, StoredVaa.vaa)
                .join(StoredVaa, StoredVaa.digest == Delivery.digest)
                .where(Delivery.destination_chain == WORKER_CHAIN)
                .where(Delivery.status == DeliveryStatus.CONFIRMED)
            )
            times: dict[int, float] = {}
            for updated_at, vaa in rows:
                payload = decode_payload(parse_vaa(bytes(vaa)).body.payload)
                if isinstance(payload, TaskAssigned):
                    times[payload.job_id] = updated_at.timestamp()
            return times
    finally:
        await engine.dispose()


def _percentile(values: Sequence[float], fraction: float) -> float:
    """The nearest-rank percentile of `values` (non-empty)."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), math.ceil(fraction * len(ordered))))
    return ordered[rank - 1]


def _stage_figures(metrics: StageMetrics) -> dict[str, dict[str, float]]:
    """Per stage, over the burst and steady phases: records handed on, bus transactions, and
    the wall-clock seconds spent processing records and handing them off (where the time goes)."""
    figures: dict[str, dict[str, float]] = {}

    def add(stage: str, key: str, value: float) -> None:
        figures.setdefault(stage, {})[key] = round(value, 3)

    for family in (metrics.processed, metrics.batches, metrics.step_seconds):
        for collected in family.collect():
            for sample in collected.samples:
                if not sample.name.endswith("_total"):
                    continue
                stage = sample.labels["stage"]
                if family is metrics.processed:
                    add(stage, "records", sample.value)
                elif family is metrics.batches:
                    add(stage, "batches", sample.value)
                else:
                    add(stage, f"{sample.labels['step']}_s", sample.value)
    return dict(sorted(figures.items()))


def _raw_vaas(evm: EvmDeployment, first: int, count: int) -> list[bytes]:
    """`count` fresh TASK_ASSIGNED VAAs for the hub (job ids from RAW_JOB_BASE + `first`),
    signed by the deployment's guardians, as the relayer would deliver them."""
    signers = list(enumerate(wormhole_testing.guardian_signers(GUARDIANS)))
    worker = address_to_bytes32(evm.workers.addresses[RAW_SENDER_KEY])
    deadline = int(evm.worker_chain.w3.eth.get_block("latest")["timestamp"]) + 86_400
    vaas = []
    for index in range(first, first + count):
        payload = TaskAssigned(
            target_chain=WORKER_CHAIN, target_address=address_to_bytes32(evm.hub.address),
            job_id=RAW_JOB_BASE + index, round=0, deadline=deadline, model_hash=b"\x11" * 32,
            config_hash=b"\x22" * 32, min_stake=0, stake_lock=0, release_at=deadline + 86_400,
            tasks=(Task(worker, 0),),
        )  # fmt: skip
        body = VaaBody(
            timestamp=deadline, nonce=0, emitter_chain=COORDINATOR_CHAIN,
            emitter_address=address_to_bytes32(evm.market.address), sequence=RAW_JOB_BASE + index,
            consistency_level=1, payload=payload.to_bytes(),
        )  # fmt: skip
        vaas.append(sign_vaa(body, 0, signers).to_bytes())
    return vaas


async def _raw_capacity(evm: EvmDeployment, count: int, pipelined: bool) -> float:
    """Transactions per second the worker chain accepts from one sender.

    Each is a ``receiveMessage`` of a fresh TASK_ASSIGNED VAA, prepared and broadcast by
    :class:`EvmDestination` with the relayer's gas policy. Sequential: each sent once the
    previous receipt is in. Pipelined: every one signed with the next nonce and sent at once,
    the receipts collected afterwards (the most a single-message deliverer could reach).
    """
    vaas = await asyncio.to_thread(_raw_vaas, evm, count if pipelined else 0, count)
    w3 = connect(evm.workers.rpc_url)
    destination = EvmDestination(
        w3, WORKER_CHAIN, evm.hub.address, evm.workers.private_keys[RAW_SENDER_KEY],
        evm.workers.chain_id,
    )  # fmt: skip

    async def receipt(tx_id: str) -> None:
        found = await w3.eth.wait_for_transaction_receipt(
            tx_id,  # type: ignore[arg-type]
            timeout=120,
            poll_latency=RECEIPT_POLL_S,
        )
        if found["status"] != 1:
            raise BenchmarkFailed(f"raw receiveMessage {tx_id} reverted")

    try:
        started = time.perf_counter()
        nonce = await destination.pending_nonce()
        sent = []
        for index, vaa in enumerate(vaas):
            signed = await destination.prepare(vaa, nonce + index if pipelined else None, 0)
            await destination.broadcast(signed)
            if pipelined:
                sent.append(signed.tx_id)
            else:
                await receipt(signed.tx_id)
        for tx_id in sent:
            await receipt(tx_id)
        return count / (time.perf_counter() - started)
    finally:
        await w3.provider.disconnect()


DELIVER_ONLY_KEY = 8  # the deliver-stage-alone phase's signer on the worker chain


async def _deliver_stage_alone(
    evm: EvmDeployment,
    kafka: Kafka,
    database_url: str,
    window: int,
    count: int,
    timeout_s: float,
    batch_max: int = 1,
) -> float:
    """Deliveries per second of the deliver stage alone: one deliver stage (`window`) that holds
    its partitions already, `count` delivery requests (fresh VAAs) sent to its topic, timed from
    the first send until the ledger has them all confirmed. This is the figure to set against the
    raw capacities: the stages before it are not in the way."""
    vaas = await asyncio.to_thread(_raw_vaas, evm, 2 * count, count)
    digests = [parse_vaa(vaa).digest for vaa in vaas]
    settings = _settings(kafka, database_url, window, batch_max)
    bus = KafkaBus(kafka.bootstrap)
    topic = settings.delivery_topic(WORKER_CHAIN)
    await bus.create_topics([topic], partitions=settings.topic_partitions)
    with tempfile.TemporaryDirectory(prefix="bench-deliver-") as keys:
        signer_file = Path(keys) / "signer.key"
        signer_file.write_text(evm.workers.private_keys[DELIVER_ONLY_KEY] + "\n")
        stage = StageRequest(stage="deliver", chain="worker-evm", signer_keys={"": signer_file})
        process = await build_process(
            settings, parse_chains(evm.chains_yaml()), stage,
            metrics=stage_metrics(CollectorRegistry()),
        )  # fmt: skip
    engine = create_engine(database_url)
    sessions = async_sessionmaker(engine)

    async def confirmed() -> int:
        async with sessions() as session:
            found = await session.scalar(
                select(func.count()).select_from(Delivery).where(
                    Delivery.digest.in_(digests), Delivery.status == DeliveryStatus.CONFIRMED
                )
            )  # fmt: skip
        return int(found or 0)

    runners = [one for one in process.stages if isinstance(one, StageRunner)]
    tasks = [asyncio.create_task(one.run(), name=one.name) for one in process.stages]
    producer = bus.producer()
    try:
        async with asyncio.timeout(timeout_s):
            while not all(one.assignment() for one in runners):  # noqa: ASYNC110 - joining
                await asyncio.sleep(POLL_S)
            await producer.start()
            started = time.perf_counter()
            for vaa in vaas:
                request = DeliveryRequest(
                    vaa=vaa, destination_chain=WORKER_CHAIN,
                    target_address=address_to_bytes32(evm.hub.address), emitted_at_ms=0,
                )  # fmt: skip
                key = message_key(parse_vaa(vaa).message_id)
                await producer.send(topic, encode_message(request), key=key)
            await producer.stop()
            while await confirmed() < count:  # noqa: ASYNC110 - the ledger has no event
                await asyncio.sleep(POLL_S)
        return count / (time.perf_counter() - started)
    finally:
        for one in process.stages:
            one.stop()
        await asyncio.wait_for(asyncio.gather(*tasks), 60)
        await process.close()
        await engine.dispose()


async def bench_relayer(
    coordinator: Anvil,
    workers: Anvil,
    kafka: Kafka,
    postgres: Postgres,
    messages: int,
    *,
    window: int = 32,
    batch_max: int = 1,
    steady_messages: int | None = None,
    timeout_s: float = 1800.0,
    console: Console | None = None,
) -> dict[str, Any]:
    """Relay `messages` TASK_ASSIGNED messages on running services; return the figures.

    Args:
        coordinator: The coordinator chain's anvil (contracts are deployed afresh).
        workers: The worker chain's anvil.
        kafka: The broker (the run's topics and groups carry a fresh tag).
        postgres: The cluster (the run gets a database of its own).
        messages: How many messages to emit in the burst (at least 1).
        window: The deliverer's window (``FEDRELAY_DELIVER_WINDOW``; 1: no pipelining).
        batch_max: The most VAAs in one delivery transaction (``FEDRELAY_DELIVER_BATCH_MAX``;
            1: no batching).
        steady_messages: How many messages the steady phase offers, at half the burst's
            throughput (default: a quarter of `messages`, at least 10).
        timeout_s: The most seconds to wait for every message of a phase to be confirmed.
        console: Where progress goes (stderr by default).

    Raises:
        ValueError: `messages` is below 1.
        BenchmarkFailed: Not every message was confirmed in time.
    """
    if messages < 1:
        raise ValueError(f"messages must be at least 1, got {messages}")
    steady = steady_messages if steady_messages is not None else max(10, messages // 4)
    console = console or Console(stderr=True)
    console.log("deploying the contracts on both chains")
    await asyncio.to_thread(Forge(Path(CONTRACTS_DIR)).build)
    guardians = ["0x" + g.address.hex() for g in wormhole_testing.guardian_signers(GUARDIANS)]
    evm = await asyncio.to_thread(deploy_pair, coordinator, workers, guardians)
    database = f"bench_relayer_{uuid.uuid4().hex[:8]}"
    await asyncio.to_thread(postgres.psql, f'CREATE DATABASE "{database}"', "postgres")
    database_url = postgres.async_url.rsplit("/", 1)[0] + "/" + database
    await asyncio.to_thread(upgrade, database_url)
    console.log(f"posting {messages + steady} jobs")
    jobs = await asyncio.to_thread(_post_jobs, evm, messages + steady)
    burst_jobs, steady_jobs = jobs[:messages], jobs[messages:]

    settings = _settings(kafka, database_url, window, batch_max)
    emissions = _Emissions()
    with tempfile.TemporaryDirectory(prefix="bench-relayer-") as keys:
        guardian_files = []
        for index in range(GUARDIANS):
            path = Path(keys) / f"guardian-{index}.key"
            path.write_text("0x" + wormhole_testing.guardian_key(index).hex() + "\n")
            guardian_files.append(path)
        signer_file = Path(keys) / "signer.key"
        signer_file.write_text(evm.coordinator.private_keys[RELAYER_KEY] + "\n")
        request = StageRequest(
            stage="all", guardian_keys=guardian_files, signer_keys={"": signer_file}
        )
        metrics = stage_metrics(CollectorRegistry())
        process = await build_process(
            settings, parse_chains(evm.chains_yaml()), request, metrics=metrics
        )
    await process.bus.create_topics(process.topics, partitions=settings.topic_partitions)
    tasks = [asyncio.create_task(stage.run(), name=stage.name) for stage in process.stages]
    worker = Signer(evm.workers.private_keys[WORKER_KEY])
    worker_key = address_to_bytes32(worker.address)

    async def phase(
        name: str, phase_jobs: Sequence[int], rate: float | None, before: int
    ) -> list[float]:
        """Emit `phase_jobs`, wait for them on the worker chain; their latencies."""
        delivered = 0

        def all_delivered() -> bool:
            nonlocal delivered
            delivered = evm.hub.staker(worker.address).active_tasks - before
            return delivered >= len(phase_jobs)

        with Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
            TimeElapsedColumn(), console=console,
        ) as progress:  # fmt: skip
            emitted_bar = progress.add_task(f"{name} emitted  ", total=len(phase_jobs))
            delivered_bar = progress.add_task(f"{name} delivered", total=len(phase_jobs))

            def tick() -> None:
                progress.update(emitted_bar, completed=emissions.count() - before)
                progress.update(delivered_bar, completed=delivered)

            emitter = asyncio.create_task(
                asyncio.to_thread(_emit, evm, phase_jobs, worker_key, emissions, rate)
            )
            await _until(all_delivered, f"{len(phase_jobs)} deliveries", timeout_s, tick)
            await emitter
        confirmed = await _confirmation_times(database_url)
        missing = [job for job in phase_jobs if job not in confirmed]
        deadline = asyncio.get_running_loop().time() + LEDGER_LAG_S
        while missing and asyncio.get_running_loop().time() < deadline:
            # on chain already; the deliverer records the last receipts a moment later
            await asyncio.sleep(POLL_S)
            confirmed = await _confirmation_times(database_url)
            missing = [job for job in phase_jobs if job not in confirmed]
        if missing:
            raise BenchmarkFailed(
                f"{len(phase_jobs) - len(missing)} confirmed deliveries in the ledger for "
                f"{len(phase_jobs)} messages (missing jobs: {missing[:5]})"
            )
        phase_confirmed.update({job: confirmed[job] for job in phase_jobs})
        return [confirmed[job] - emissions.at[job] for job in phase_jobs]

    phase_confirmed: dict[int, float] = {}
    try:
        console.log("registering the worker (warms the pipeline up)")
        await asyncio.to_thread(evm.hub.stake, worker, 10**18)
        payout = address_to_bytes32(evm.coordinator.addresses[5])
        await asyncio.to_thread(evm.hub.register, worker, payout, 1)
        await _until(
            lambda: evm.market.worker(WORKER_CHAIN, worker_key).registered,
            "the worker's registration on the coordinator chain",
            120.0,
        )
        latencies = await phase("burst ", burst_jobs, None, 0)
        elapsed = max(phase_confirmed[j] for j in burst_jobs) - min(
            emissions.at[j] for j in burst_jobs
        )
        throughput = messages / elapsed
        steady_rate = throughput / 2
        console.log(f"steady load: {steady} messages at {steady_rate:.2f}/s")
        steady_latencies = await phase("steady", steady_jobs, steady_rate, messages)
    finally:
        emissions.stop.set()
        for stage in process.stages:
            stage.stop()
        await asyncio.wait_for(asyncio.gather(*tasks), 60)
        await process.close()

    console.log(f"raw capacity: {messages} receiveMessage transactions from one sender, twice")
    sequential_raw = await _raw_capacity(evm, messages, pipelined=False)
    pipelined_raw = await _raw_capacity(evm, messages, pipelined=True)
    console.log(f"the deliver stage alone: {messages} delivery requests queued on its topic")
    alone = await _deliver_stage_alone(
        evm, kafka, database_url, window, messages, timeout_s, batch_max
    )
    block_time_s = 0.0  # the benchmark's anvils mine each transaction as it arrives
    return {
        "benchmark": "relayer",
        "messages": messages,
        "confirmed": len(phase_confirmed),
        "window": window,
        "batch_max": settings.deliver_batch_max,
        "elapsed_s": round(elapsed, 3),
        "throughput_msg_per_s": round(throughput, 2),
        "latency_p50_s": round(_percentile(latencies, 0.50), 3),
        "latency_p99_s": round(_percentile(latencies, 0.99), 3),
        "latency_from": "emitting transaction accepted by the coordinator chain (wall clock)",
        "latency_to": "deliver stage's destination receipt (ledger deliveries.updated_at)",
        "sequential_raw_tps": round(sequential_raw, 2),
        "pipelined_raw_tps": round(pipelined_raw, 2),
        "ratio_to_sequential_raw": round(throughput / sequential_raw, 4),
        "ratio_to_pipelined_raw": round(throughput / pipelined_raw, 4),
        "deliver_stage_msg_per_s": round(alone, 2),
        "deliver_stage_ratio_to_pipelined_raw": round(alone / pipelined_raw, 4),
        "steady_messages": steady,
        "steady_rate_msg_per_s": round(steady_rate, 2),
        "steady_latency_p50_s": round(_percentile(steady_latencies, 0.50), 3),
        "steady_latency_p99_s": round(_percentile(steady_latencies, 0.99), 3),
        "destination_block_time_s": block_time_s,
        "stages": _stage_figures(metrics),
        "raw_transactions": messages,
        "guardians": GUARDIANS,
        "partitions": settings.topic_partitions,
    }


def measure(
    messages: int = 1000, timeout_s: float = 1800.0, window: int = 32, batch_max: int = 1
) -> dict[str, Any]:
    """Start anvil x2, Kafka and PostgreSQL, run :func:`bench_relayer`, stop them all."""
    console = Console(stderr=True)
    console.log("starting anvil x2, PostgreSQL and Kafka")
    with (
        Anvil(chain_id=31337) as coordinator,
        Anvil(chain_id=31338) as workers,
        Postgres() as postgres,
        Kafka() as kafka,
    ):
        return asyncio.run(
            bench_relayer(
                coordinator, workers, kafka, postgres, messages,
                window=window, batch_max=batch_max, timeout_s=timeout_s, console=console,
            )
        )  # fmt: skip


def run(
    messages: int = 1000, timeout_s: float = 1800.0, window: int = 32, batch_max: int = 1
) -> None:
    """Run the benchmark and print its figures as one JSON line on stdout."""
    figures = measure(messages, timeout_s, window, batch_max)
    print(json.dumps(figures))
    sys.stdout.flush()
