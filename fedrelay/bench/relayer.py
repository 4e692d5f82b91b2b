"""The relayer end to end: coordinator chain -> Kafka + PostgreSQL stages -> EVM worker chain.

Two anvils, a Kafka broker and a PostgreSQL cluster are started with the test harness; the
contracts are deployed and linked (:func:`fedrelay.adapters.devnet.evm_pair.deploy_pair`,
3 guardians). The relayer's stages run in this process as ``fedrelay relayer run --stage all``
builds them: watch on both chains, 3 attesting guardians, assemble, route and deliver, on
:class:`KafkaBus` and a PostgreSQL ledger.

One worker is staked and registered on the worker chain first (its WORKER_REGISTERED is relayed
to the coordinator chain). Jobs are posted beforehand. Three phases follow, each waiting until
the ledger has the phase's deliveries confirmed and the worker chain's hub counts its tasks:

- warm-up, not measured: a quarter of the burst's size (at least 20) relayed the same way, so
  that the burst meets warm processes, as a relayer in service does (a broker started for the
  benchmark otherwise spends its first busy seconds compiling its hot paths: its JVM took most
  of a core for two to three seconds during the first burst on this machine);

- burst: one TASK_ASSIGNED per job on the coordinator chain, back to back from the aggregator,
  mined in full blocks; throughput is N divided by the seconds from the first emission to the
  last confirmation;
- steady: more TASK_ASSIGNED offered at half the burst's throughput, a block mined every 0.1 s;
  its latency percentiles are the ones a relayer that keeps up shows
  (``steady_latency_p50_s``, ``..._p99_s``).

The benchmark mines the coordinator chain's blocks itself during a phase
(:func:`fedrelay.bench.relaying.emit`): an anvil mining one block per transaction emitted about
19 assignments a second once a thousand jobs were stored, slower than the relayer carries them.
The worker chain, where the raw capacity is measured, mines each transaction as it arrives.

Latency, per message: from the mining of the coordinator-chain block that holds the emitting
transaction, wall clock, to the deliver stage recording the destination receipt (the ledger's
``deliveries.updated_at`` as the delivery turns ``confirmed``).

Raw capacity, afterwards, on the same worker-chain anvil: ``receiveMessage`` with fresh
TASK_ASSIGNED VAAs signed by the same guardians, from one sender through
:class:`EvmDestination` with the relayer's gas policy: sequential (each sent once the previous
receipt is in: ``sequential_raw_tps``) and pipelined (each signed with the next nonce and sent
at once, receipts collected afterwards: ``pipelined_raw_tps``).

The Solana route (:mod:`fedrelay.bench.relayer_solana`) runs next, on the same coordinator anvil,
broker and cluster; its figures join the same JSON line as the ``solana_*`` keys. What the
routes share (jobs, emissions, phases, percentiles) is in :mod:`fedrelay.bench.relaying`.
"""

from __future__ import annotations

import asyncio
import json
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry
from rich.console import Console
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
from fedrelay.adapters.evm import Signer, address_to_bytes32
from fedrelay.adapters.evm.artifacts import CONTRACTS_DIR
from fedrelay.adapters.evm.relay import EvmDestination
from fedrelay.adapters.evm.rpc import connect
from fedrelay.adapters.kafka import KafkaBus
from fedrelay.adapters.ledger.database import create_engine
from fedrelay.adapters.ledger.models import Delivery, DeliveryStatus
from fedrelay.bench.relayer_processes import chart_layout, stage_processes
from fedrelay.bench.relayer_solana import bench_solana_route
from fedrelay.bench.relaying import (
    AGGREGATOR_KEY,
    GUARDIANS,
    POLL_S,
    POSTER_KEY,
    RECEIPT_POLL_S,
    BenchmarkFailed,
    Route,
    attested,
    guardian_addresses,
    guardian_key_files,
    in_thread,
    new_database,
    percentile,
    post_jobs,
    relayer_settings,
    running,
    stage_figures,
    steady_size,
    threshold_share_files,
    until,
)
from fedrelay.protocol.wormhole import (
    Task,
    TaskAssigned,
    VaaBody,
    parse_vaa,
    sign_vaa,
)
from fedrelay.relayer.chains_file import parse_chains
from fedrelay.relayer.process import StageRequest, build_process
from fedrelay.relayer.records import DeliveryRequest, encode_message, message_key
from fedrelay.relayer.settings import RelayerSettings
from fedrelay.relayer.stage import StageRunner, stage_metrics

#: Where the relayer's stages run: each workload in its own process (as deployed), or all in one.
LAYOUTS = ("processes", "one-process")
RELAYER_KEY = 6  # anvil account that signs deliveries
WORKER_KEY = 3  # the worker, on the worker chain
RAW_SENDER_KEY = 9  # the raw-capacity sender on the worker chain
RAW_JOB_BASE = 1 << 40  # job ids of the raw-capacity VAAs, far from the market's own


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
    settings = relayer_settings(kafka, database_url, window, batch_max)
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


StageFigures = Callable[[], Awaitable[dict[str, dict[str, float]]]]


async def _relayer(
    evm: EvmDeployment,
    kafka: Kafka,
    settings: RelayerSettings,
    layout: str,
    guardian_files: Sequence[Path],
    signer_file: Path,
    share_files: Sequence[Path] = (),
) -> AbstractAsyncContextManager[StageFigures]:
    """The relayer under test, to run for a block that gets a reader of its stage figures:
    every stage in this process (``one-process``, as ``fedrelay relayer run --stage all``
    runs them) or each workload in its own process (``processes``, as the Helm chart deploys
    them; :mod:`fedrelay.bench.relayer_processes`)."""
    if layout == "processes":
        with_set = settings.model_copy(update={"guardian_addresses": tuple(guardian_addresses())})
        topics = [
            settings.observations_topic, settings.signatures_topic, settings.vaas_topic,
            settings.delivery_topic(COORDINATOR_CHAIN), settings.delivery_topic(WORKER_CHAIN),
            settings.dlq_topic,
        ]  # fmt: skip
        if settings.attestation == "threshold":
            topics.append(settings.signing_topic)
        await KafkaBus(kafka.bootstrap).create_topics(topics, settings.topic_partitions)
        commands = chart_layout(
            ["coordinator", "worker-evm"], guardian_files, signer_file, share_files
        )
        return stage_processes(with_set, evm.chains_yaml(), commands, signer_file.parent)
    request = StageRequest(
        stage="all", guardian_keys=tuple(guardian_files), signer_keys={"": signer_file},
        threshold_shares=tuple(share_files),
    )  # fmt: skip
    metrics = stage_metrics(CollectorRegistry())
    process = await build_process(
        settings, parse_chains(evm.chains_yaml()), request, metrics=metrics
    )

    @asynccontextmanager
    async def in_this_process() -> AsyncIterator[StageFigures]:
        async def figures() -> dict[str, dict[str, float]]:
            return stage_figures(metrics)

        async with running(process):
            yield figures

    return in_this_process()


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
    layout: str = "one-process",
    warm_up_messages: int | None = None,
    attestation: str = "guardian",
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
        layout: ``processes`` (each workload its own ``fedrelay`` process, as the Helm chart
            deploys them) or ``one-process`` (every stage in this process).
        warm_up_messages: How many messages the unmeasured warm-up phase relays (default: a
            quarter of `messages`, at least 20).
        attestation: ``guardian`` (version-1 VAAs) or ``threshold`` (the guardians sign
            version-2 VAAs together: two more hops on the bus per message).

    Raises:
        ValueError: `messages` is below 1, `layout` is neither, or `attestation` is unknown.
        BenchmarkFailed: Not every message was confirmed in time.
    """
    steady = steady_size(messages, steady_messages)
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {', '.join(LAYOUTS)}, got {layout!r}")
    threshold = attestation == "threshold"
    warm_up = max(20, messages // 4) if warm_up_messages is None else warm_up_messages
    console = console or Console(stderr=True)
    console.log("deploying the contracts on both chains")
    await asyncio.to_thread(Forge(Path(CONTRACTS_DIR)).build)
    evm = await asyncio.to_thread(
        deploy_pair, coordinator, workers, guardian_addresses(), threshold_key=threshold
    )
    database_url = await new_database(postgres, "bench_relayer")
    console.log(f"posting {warm_up + messages + steady} jobs")
    poster = Signer(evm.coordinator.private_keys[POSTER_KEY])
    jobs = await asyncio.to_thread(
        post_jobs, evm.market, poster, WORKER_CHAIN, warm_up + messages + steady
    )
    warm_up_jobs, jobs = jobs[:warm_up], jobs[warm_up:]
    burst_jobs, steady_jobs = jobs[:messages], jobs[messages:]

    settings = relayer_settings(kafka, database_url, window, batch_max)
    worker = Signer(evm.workers.private_keys[WORKER_KEY])
    worker_key = address_to_bytes32(worker.address)
    aggregator = Signer(evm.coordinator.private_keys[AGGREGATOR_KEY])
    route = Route(evm.market, aggregator, WORKER_CHAIN, database_url, timeout_s, console)

    def tasks_beyond(before: int) -> Callable[[], Awaitable[int]]:
        """How many tasks the worker chain's hub counts for the worker beyond `before`."""
        return in_thread(lambda: evm.hub.staker(worker.address).active_tasks - before)

    with tempfile.TemporaryDirectory(prefix="bench-relayer-") as keys:
        signer_file = Path(keys) / "signer.key"
        signer_file.write_text(evm.coordinator.private_keys[RELAYER_KEY] + "\n")
        guardian_files = guardian_key_files(Path(keys))
        settings = attested(settings, attestation, Path(keys) / "journals")
        shares = threshold_share_files(Path(keys)) if threshold else []
        relayer = await _relayer(evm, kafka, settings, layout, guardian_files, signer_file, shares)
        async with relayer as stage_figures_now:
            console.log("registering the worker")
            await asyncio.to_thread(evm.hub.stake, worker, 10**18)
            payout = address_to_bytes32(evm.coordinator.addresses[5])
            await asyncio.to_thread(evm.hub.register, worker, payout, 1)
            await until(
                in_thread(lambda: evm.market.worker(WORKER_CHAIN, worker_key).registered),
                "the worker's registration on the coordinator chain",
                120.0,
            )
            warm = [(job, worker_key) for job in warm_up_jobs]
            await route.phase("warm-up", warm, tasks_beyond(0))
            burst = [(job, worker_key) for job in burst_jobs]
            latencies = await route.phase("burst ", burst, tasks_beyond(warm_up))
            elapsed = route.elapsed(burst_jobs)
            throughput = messages / elapsed
            steady_rate = throughput / 2
            console.log(f"steady load: {steady} messages at {steady_rate:.2f}/s")
            steady_assignments = [(job, worker_key) for job in steady_jobs]
            steady_latencies = await route.phase(
                "steady", steady_assignments, tasks_beyond(warm_up + messages), steady_rate
            )
            stages = await stage_figures_now()

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
        "confirmed": len(route.confirmed),
        "warm_up_messages": warm_up,
        "window": window,
        "batch_max": settings.deliver_batch_max,
        "elapsed_s": round(elapsed, 3),
        "throughput_msg_per_s": round(throughput, 2),
        "latency_p50_s": round(percentile(latencies, 0.50), 3),
        "latency_p99_s": round(percentile(latencies, 0.99), 3),
        "latency_from": "emitting transaction's block mined on the coordinator chain (wall clock)",
        "latency_to": "deliver stage's destination receipt (ledger deliveries.updated_at)",
        "sequential_raw_tps": round(sequential_raw, 2),
        "pipelined_raw_tps": round(pipelined_raw, 2),
        "ratio_to_sequential_raw": round(throughput / sequential_raw, 4),
        "ratio_to_pipelined_raw": round(throughput / pipelined_raw, 4),
        "deliver_stage_msg_per_s": round(alone, 2),
        "deliver_stage_ratio_to_pipelined_raw": round(alone / pipelined_raw, 4),
        "steady_messages": steady,
        "steady_rate_msg_per_s": round(steady_rate, 2),
        "steady_latency_p50_s": round(percentile(steady_latencies, 0.50), 3),
        "steady_latency_p99_s": round(percentile(steady_latencies, 0.99), 3),
        "destination_block_time_s": block_time_s,
        "layout": layout,
        "attestation": attestation,
        "stages": stages,
        "raw_transactions": messages,
        "guardians": GUARDIANS,
        "partitions": settings.topic_partitions,
    }


def measure(
    messages: int = 1000,
    timeout_s: float = 1800.0,
    window: int = 32,
    batch_max: int = 1,
    solana_messages: int = 200,
    layout: str = "one-process",
    attestation: str = "guardian",
) -> dict[str, Any]:
    """Start anvil x2, Kafka and PostgreSQL, run :func:`bench_relayer` (the EVM route; skipped
    when `messages` is 0) and :func:`~fedrelay.bench.relayer_solana.bench_solana_route` (the
    Solana route, its figures under ``solana_*``; skipped when `solana_messages` is 0), stop them.

    Raises:
        ValueError: A count is negative, or both are 0.
    """
    if messages < 0 or solana_messages < 0 or messages + solana_messages == 0:
        raise ValueError(
            f"relay at least one message on one route, got {messages} (EVM) and "
            f"{solana_messages} (Solana)"
        )
    console = Console(stderr=True)
    console.log("starting anvil x2, PostgreSQL and Kafka")
    with (
        Anvil(chain_id=31337) as coordinator,
        Anvil(chain_id=31338) as workers,
        Postgres() as postgres,
        Kafka() as kafka,
    ):
        figures: dict[str, Any] = {"benchmark": "relayer"}
        if messages:
            figures |= asyncio.run(
                bench_relayer(
                    coordinator, workers, kafka, postgres, messages,
                    window=window, batch_max=batch_max, timeout_s=timeout_s, console=console,
                    layout=layout, attestation=attestation,
                )
            )  # fmt: skip
        if solana_messages:
            figures |= asyncio.run(
                bench_solana_route(
                    coordinator, kafka, postgres, solana_messages,
                    window=window, timeout_s=timeout_s, console=console,
                    attestation=attestation,
                )
            )  # fmt: skip
        return figures


def run(
    messages: int = 1000,
    timeout_s: float = 1800.0,
    window: int = 32,
    batch_max: int = 1,
    solana_messages: int = 200,
    layout: str = "one-process",
    attestation: str = "guardian",
) -> None:
    """Run the benchmark and print its figures as one JSON line on stdout."""
    figures = measure(messages, timeout_s, window, batch_max, solana_messages, layout, attestation)
    print(json.dumps(figures))
    sys.stdout.flush()
