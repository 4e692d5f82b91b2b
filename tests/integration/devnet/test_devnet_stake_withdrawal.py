"""A worker that takes its stake back after registering is refused its task and not drawn again.

The whole devnet in process: the three chains, the relayer's stages, the coordinator service and
its API, and four honest worker nodes (two on the EVM worker chain, two on Solana). One worker on
each worker chain unbonds its whole stake after registering, while the relayer holds every
message bound for the coordinator chain (its coordinator deliverer is stopped), so JobMarket still
holds their old stake and the coordinator draws them. Their worker chains then refuse those two
entries of the TASK_ASSIGNED batches while the other entries apply; once delivery resumes, the
STAKE_CHANGED messages (the unbonding, the refusal) reach JobMarket, the refused tasks are settled
DROPPED with no fault, the others are accepted and paid, and a second job draws only the two
workers that kept their stake.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry
from solders.pubkey import Pubkey

from fedrelay.adapters.devnet.network import Devnet, DevnetPorts, DevnetSettings
from fedrelay.adapters.devnet.process import free_port
from fedrelay.adapters.devnet.state import COORDINATOR, WORKER_EVM, WorkerKey
from fedrelay.adapters.evm import JobSpec, Signer, address_to_bytes32
from fedrelay.adapters.evm.hub import HubTaskState
from fedrelay.adapters.evm.worker_chain import EvmWorkerChain
from fedrelay.adapters.ledger.coordinator_store import LedgerCoordinatorStore
from fedrelay.adapters.solana.errors import AccountNotFound
from fedrelay.adapters.solana.worker_chain import SolanaWorkerChain
from fedrelay.coordinator.verification import JobWorkbench
from fedrelay.demo.assembly import DemoNetwork
from fedrelay.demo.coordinator import RestartableCoordinator
from fedrelay.demo.progress import QuietProgress
from fedrelay.demo.settings import ETHER, LAMPORTS_PER_SOL, DemoBackends
from fedrelay.demo.waiting import until
from fedrelay.ports.blobs import POSTER
from fedrelay.protocol.api.signing import EvmSigner, RequestSigner, SolanaSigner
from fedrelay.protocol.job_config import JobConfig
from fedrelay.protocol.rounds import Fault, Phase, TaskStatus, WorkerRef
from fedrelay.protocol.wormhole import Outcome
from fedrelay.relayer.chains_file import load_chains
from fedrelay.relayer.process import RelayerProcess, StageRequest, build_process
from fedrelay.relayer.settings import RelayerSettings
from fedrelay.relayer.stage import RunningStage, stage_metrics
from fedrelay.training import encode_blob
from fedrelay.training.data import Dataset
from fedrelay.worker.sdk import (
    StateStore,
    WorkerChain,
    WorkerNode,
    load_evm_key,
    load_solana_keypair,
)
from fedrelay.worker.sdk.api_client import CoordinatorClient
from fedrelay.worker.sdk.progress import SilentProgress

pytestmark = pytest.mark.integration

STAKE_UNITS = 10
MIN_STAKE = 10**8  # one unit, 8 decimals
CONFIG = JobConfig.model_validate(
    {
        "steps": 4,
        "checkpoint_every": 2,
        "batch_size": 16,
        "challenge_rate": 1.0,
        "challenge_segments": 2,  # every segment: a rejection slash of 1 unit deters a 1-ETH reward
        "collect_seconds": 180,
        "data": {"shards": 4, "max_examples_per_shard": 60},
    }
)


@pytest.fixture(scope="module")
def devnet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Devnet]:
    """A devnet on free ports: a 2-second challenge window, 1 ETH / 1 SOL to register."""
    settings = DevnetSettings(
        ports=DevnetPorts(free_port(), free_port(), free_port()),
        challenge_window=2,
        evm_min_stake=ETHER,
        solana_min_stake=LAMPORTS_PER_SOL,
    )
    with Devnet(tmp_path_factory.mktemp("devnet") / "state", settings) as running:
        yield running


class _Shards:
    def __init__(self, workbench: JobWorkbench) -> None:
        self._workbench = workbench

    def dataset(self, shard: int) -> Dataset:
        return self._workbench.shard(shard)


@dataclass
class Worker:
    key: WorkerKey
    chain: WorkerChain
    node: WorkerNode
    task: asyncio.Task[None] | None = None

    @property
    def ref(self) -> WorkerRef:
        return WorkerRef(self.chain.wormhole_chain, self.chain.worker_key)

    @property
    def units(self) -> int:
        return ETHER if self.key.chain == WORKER_EVM else LAMPORTS_PER_SOL


@dataclass
class Network:
    """The services of the test and a relayer whose coordinator deliverer can be held."""

    demo: DemoNetwork
    coordinator: RestartableCoordinator
    store: LedgerCoordinatorStore
    relayer: RelayerProcess
    relayer_url: str
    stages: dict[str, tuple[RunningStage, asyncio.Task[None]]] = field(default_factory=dict)
    workers: list[Worker] = field(default_factory=list)

    @property
    def deliverer(self) -> str:
        return f"deliver-{self.demo.info.chain(COORDINATOR).wormhole_chain_id}"

    async def hold_coordinator_delivery(self) -> None:
        """Stop delivering to the coordinator chain (messages wait on the bus)."""
        stage, task = self.stages.pop(self.deliverer)
        stage.stop()
        await asyncio.wait_for(task, 60)

    async def resume_coordinator_delivery(self) -> None:
        """Deliver to the coordinator chain again, from where the held deliverer stopped."""
        info = self.demo.info
        chains = load_chains(Path(info.chains_file))
        request = StageRequest(
            stage="deliver",
            chain=COORDINATOR,
            signer_keys={COORDINATOR: self.demo.devnet.key_file(f"relayer-{COORDINATOR}")},
        )
        resumed = await build_process(
            self.relayer.settings,
            chains,
            request,
            bus=self.relayer.bus,
            metrics=stage_metrics(CollectorRegistry()),
        )
        self.demo.closers.append(resumed.close)
        (stage,) = resumed.stages
        self.stages[stage.name] = (stage, asyncio.create_task(stage.run()))

    async def stop(self) -> None:
        for worker in self.workers:
            worker.node.request_stop()
        running = [w.task for w in self.workers if w.task is not None]
        if running:
            await asyncio.wait(running, timeout=60)
        for stage, _ in self.stages.values():
            stage.stop()
        tasks = [t for _, t in self.stages.values()]
        if tasks:
            await asyncio.wait(tasks, timeout=60)
        for task in [*running, *tasks]:
            task.cancel()
        await asyncio.gather(*running, *tasks, return_exceptions=True)
        await self.relayer.close()
        await self.demo.close()


async def start_relayer(
    demo: DemoNetwork, database_url: str
) -> tuple[RelayerProcess, dict[str, tuple[RunningStage, asyncio.Task[None]]]]:
    chains = load_chains(Path(demo.info.chains_file))
    topic = f"fedrelay-test-{demo.tag}"
    settings = RelayerSettings(
        database_url=database_url, topic_partitions=1, observations_topic=f"{topic}-observations",
        signatures_topic=f"{topic}-signatures", vaas_topic=f"{topic}-vaas",
        deliveries_prefix=f"{topic}-deliveries", dlq_topic=f"{topic}-dlq", group_prefix=topic,
        guardian_addresses=(), poll_wait_s=0.1, watch_interval_s=0.2, retry_base_s=0.2,
        retry_cap_s=2.0, confirm_timeout_s=20.0, batch_size=50, lag_interval_s=5.0,
    )  # fmt: skip
    request = StageRequest(
        stage="all",
        guardian_keys=tuple(Path(p) for p in demo.info.guardian_key_files),
        signer_keys={c.name: demo.devnet.key_file(f"relayer-{c.name}") for c in chains.chains},
    )
    process = await build_process(
        settings, chains, request, metrics=stage_metrics(CollectorRegistry())
    )
    await process.bus.create_topics(process.topics, partitions=1)
    stages = {s.name: (s, asyncio.create_task(s.run(), name=s.name)) for s in process.stages}
    return process, stages


@pytest.fixture
async def network(devnet: Devnet, tmp_path: Path) -> AsyncIterator[Network]:
    keys = devnet.fund_workers(2, 2)
    demo = DemoNetwork(devnet, keys, tmp_path, QuietProgress(), DemoBackends())
    relayer_url = await demo.ledger("relayer")
    coordinator_url = await demo.ledger("coordinator")
    relayer, stages = await start_relayer(demo, relayer_url)
    coordinator = await demo.start_coordinator(coordinator_url)
    store = demo.observe_coordinator(coordinator_url)
    net = Network(demo, coordinator, store, relayer, relayer_url, stages)
    try:
        await start_workers(net, keys, tmp_path)
        yield net
    finally:
        await net.stop()


async def start_workers(net: Network, keys: tuple[WorkerKey, ...], tmp_path: Path) -> None:
    demo = net.demo
    shards = _Shards(JobWorkbench(CONFIG))
    for number, key in enumerate(keys):
        chain: WorkerChain
        signer: RequestSigner
        if key.chain == WORKER_EVM:
            private = load_evm_key(Path(key.key_file))
            hub = demo.info.chain(WORKER_EVM)
            chain = await asyncio.to_thread(
                EvmWorkerChain, hub.rpc_url, hub.address, private,
                wormhole_chain=hub.wormhole_chain_id,
            )  # fmt: skip
            signer = EvmSigner(private, chain=hub.wormhole_chain_id)
        else:
            keypair = load_solana_keypair(Path(key.key_file))
            chain = await SolanaWorkerChain.connect(
                demo.solana_rpc, demo.devnet.program_id, keypair
            )
            signer = SolanaSigner(keypair)
        api = CoordinatorClient(net.coordinator.url, signer)
        demo.closers.append(api.aclose)
        node = WorkerNode(
            chain, api, shards, StateStore(tmp_path / "workers" / f"w{number}.json"),
            progress=SilentProgress(), poll_interval=0.5,
        )  # fmt: skip
        net.workers.append(Worker(key, chain, node))
    for worker in net.workers:
        payout = address_to_bytes32(worker.key.payout_address)
        await worker.node.register(STAKE_UNITS * worker.units, payout)
    wanted = {w.ref for w in net.workers}

    async def registered() -> bool:
        return wanted <= set(await net.store.workers())

    await until(registered, 120, "every WORKER_REGISTERED to reach the coordinator")
    for worker in net.workers:
        worker.task = asyncio.create_task(worker.node.run())


async def post_job(net: Network, workers: int) -> int:
    demo = net.demo
    model = await net.coordinator.blobs.put(
        encode_blob(JobWorkbench(CONFIG).initial_model()), domain=POSTER
    )
    config = await net.coordinator.blobs.put(CONFIG.to_bytes(), domain=POSTER)
    poster = Signer(demo.devnet.key_file("owner").read_text().strip())
    solana_recipient = bytes(Pubkey.from_string(demo.info.accounts["solana-admin"]))
    chains = (
        demo.info.chain(WORKER_EVM).wormhole_chain_id,
        demo.info.chain("worker-solana").wormhole_chain_id,
    )
    spec = JobSpec(
        model_hash=bytes.fromhex(model),
        config_hash=bytes.fromhex(config),
        num_rounds=1,
        workers_per_round=workers,
        reward_per_round=ETHER,
        min_stake=MIN_STAKE,
        worker_chains=chains,
        rejected_slash=MIN_STAKE,
        slash_recipients=(address_to_bytes32(poster.address), solana_recipient),
    )
    posted = await asyncio.to_thread(demo.market.post_job, poster, spec)
    return posted.job_id


async def has_task(net: Network, worker: Worker, job_id: int) -> bool:
    """Whether ``worker``'s chain created its task of ``job_id`` round 0."""
    demo = net.demo
    if worker.key.chain == WORKER_EVM:
        task = await asyncio.to_thread(demo.hub.task, job_id, 0, worker.chain.worker_key)
        return task.state is not HubTaskState.NONE
    try:
        await demo.program.fetch_task(job_id, 0, worker.chain.worker_key)
    except AccountNotFound:
        return False
    return True


async def test_a_worker_that_unbonded_is_refused_dropped_and_not_drawn_again(
    network: Network,
) -> None:
    net = network
    evm_gone, evm_kept, solana_gone, solana_kept = net.workers
    gone, kept = (evm_gone, solana_gone), (evm_kept, solana_kept)
    market = net.demo.market

    # Messages to the coordinator chain wait; both leaving workers unbond everything.
    await net.hold_coordinator_delivery()
    for worker in gone:
        await worker.node.begin_unstake(STAKE_UNITS * worker.units)
        assert (await worker.chain.stake_status()).staked == 0
    for worker in gone:  # JobMarket still holds the registration's stake
        known = await asyncio.to_thread(market.worker, worker.ref.chain, worker.ref.key)
        assert known.stake == STAKE_UNITS * 10**8

    # The coordinator draws all four on the stake it knows; each worker chain applies its batch
    # for the staked worker and refuses the entry of the one that unbonded.
    job_id = await post_job(net, workers=4)

    async def batches_applied() -> bool:
        return all([await has_task(net, w, job_id) for w in kept])

    await until(batches_applied, 120, "both TASK_ASSIGNED batches to reach the worker chains")
    for worker in gone:
        assert not await has_task(net, worker, job_id)
    state = await net.store.get_round(job_id)
    assert state is not None
    assert {a.worker for a in state.assignments} == {w.ref for w in net.workers}

    # Delivery resumes: the stake changes and refusals reach JobMarket; the round completes
    # with the refused tasks DROPPED (no fault) and the staked workers' updates accepted.
    await net.resume_coordinator_delivery()

    async def completed() -> bool:
        current = await net.store.get_round(job_id)
        return current is not None and current.phase is Phase.COMPLETED

    await until(completed, 300, f"job {job_id} to complete")
    stakes = await net.store.stakes()
    for worker in gone:
        assert stakes[worker.ref] == 0
        known = await asyncio.to_thread(market.worker, worker.ref.chain, worker.ref.key)
        assert known.stake == 0
    final = await net.store.get_round(job_id, 0)
    assert final is not None
    for worker in gone:
        dropped = final.assignment(worker.ref)
        assert (dropped.status, dropped.fault) == (TaskStatus.DROPPED, Fault.NONE)
        assert "refused" in dropped.reason
    raw = [r.entry() for r in market.proposal(job_id, 0)]
    results = {(int(r[1]), bytes(r[0])): (int(r[2]), int(r[3])) for r in raw}
    for worker in gone:
        assert results[(worker.ref.chain, worker.ref.key)] == (int(Outcome.DROPPED), 0)
    for worker in kept:
        why = final.assignment(worker.ref).reason
        assert results[(worker.ref.chain, worker.ref.key)] == (int(Outcome.ACCEPTED), 0), why

    # A later job draws only the workers that kept their stake.
    second = await post_job(net, workers=2)

    async def drawn() -> bool:
        current = await net.store.get_round(second)
        return current is not None and bool(current.assignments)

    await until(drawn, 120, f"job {second}'s workers to be drawn")
    state = await net.store.get_round(second)
    assert state is not None
    assert {a.worker for a in state.assignments} == {w.ref for w in kept}
