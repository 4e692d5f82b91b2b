"""The demo's devnet assembled: chains, the relayer, the coordinator and the workers, in process.

:func:`start_devnet` starts the chains (two anvils and the Solana RPC, everything deployed and
linked) and funds the workers. :class:`DemoNetwork` then brings up, on that devnet and inside
one event loop, what a deployment runs as separate processes:

- a ledger per service (SQLite files in the state folder, or one given database, migrated);
- the relayer's stages on the in-process bus or Kafka (a watcher per chain, the devnet
  guardians attesting, assembly, routing, a deliverer per chain);
- the coordinator service with its HTTP API on loopback (:class:`RestartableCoordinator`);
- the workers, some on the EVM worker chain, some on Solana, one or more of them dishonest
  (:mod:`fedrelay.demo.actors`, :func:`cheat_roles`), each staked and registered.

Everything it starts it also stops (:meth:`DemoNetwork.close`), in reverse order, logging what
fails to stop rather than hiding the run's own error.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from prometheus_client import CollectorRegistry
from solana.rpc.async_api import AsyncClient
from solders.pubkey import Pubkey
from sqlalchemy import func, inspect, select
from sqlalchemy import table as sql_table
from sqlalchemy.exc import SQLAlchemyError

from fedrelay.adapters.blobstore import FileBlobStore
from fedrelay.adapters.devnet.network import Devnet, DevnetPorts, DevnetSettings
from fedrelay.adapters.devnet.state import COORDINATOR, WORKER_EVM, WORKER_SOLANA, WorkerKey
from fedrelay.adapters.evm import (
    EvmChain,
    JobMarketContract,
    RewardDistributorContract,
    Signer,
    address_to_bytes32,
    deploy_reward_distributor,
)
from fedrelay.adapters.evm.coordinator_chain import EvmCoordinatorChain
from fedrelay.adapters.evm.proposals import EvmProposalBoard
from fedrelay.adapters.evm.worker_chain import EvmWorkerChain
from fedrelay.adapters.ledger.coordinator_store import LedgerCoordinatorStore
from fedrelay.adapters.ledger.database import create_engine, upgrade
from fedrelay.adapters.solana.client import WorkerProgramClient
from fedrelay.adapters.solana.worker_chain import SolanaWorkerChain
from fedrelay.demo.actors import DISHONEST_WORKERS
from fedrelay.demo.coordinator import RestartableCoordinator
from fedrelay.demo.progress import DemoProgress, WorkerNotes
from fedrelay.demo.settings import (
    ETHER,
    LAMPORTS_PER_SOL,
    STAKE_UNITS,
    Attestation,
    Cheat,
    DemoBackends,
    DemoError,
    DemoSettings,
    Rewards,
)
from fedrelay.demo.waiting import until
from fedrelay.protocol.api.signing import EvmSigner, RequestSigner, SolanaSigner
from fedrelay.protocol.rounds import WorkerRef
from fedrelay.relayer.chains_file import load_chains
from fedrelay.relayer.process import RelayerProcess, StageRequest, build_process
from fedrelay.relayer.settings import RelayerSettings
from fedrelay.relayer.stage import stage_metrics
from fedrelay.worker.proposal_watch import Finding, ProposalWatch
from fedrelay.worker.sdk import (
    FileSource,
    StateStore,
    WorkerChain,
    WorkerNode,
    load_evm_key,
    load_solana_keypair,
)
from fedrelay.worker.sdk.api_client import CoordinatorClient

log = logging.getLogger(__name__)

#: Tables whose rows tie a ledger to one set of chains: a new devnet must not meet old ones.
#: Seconds a proposed reward root waits before it goes live (the distributor's dispute window).
REWARD_ROOT_WINDOW_S = 3
_RUN_TABLES = ("observations", "vaas", "deliveries", "coordinator_rounds")


async def check_fresh(database_url: str) -> None:
    """Refuse a ledger that already holds messages or rounds (of an earlier devnet).

    Raises:
        DemoError: The database cannot be reached, or it is not fresh.
    """
    engine = create_engine(database_url)
    try:
        async with engine.connect() as connection:
            tables = set(await connection.run_sync(lambda c: inspect(c).get_table_names()))
            held = {}
            for table in _RUN_TABLES:
                if table in tables:
                    count = await connection.scalar(
                        select(func.count()).select_from(sql_table(table))
                    )
                    if count:
                        held[table] = int(count)
    except (SQLAlchemyError, OSError) as exc:
        raise DemoError(f"cannot reach the demo's database: {type(exc).__name__}: {exc}") from None
    finally:
        await engine.dispose()
    if held:
        rows = ", ".join(f"{n} in {t}" for t, n in held.items())
        raise DemoError(
            f"the database already holds a fedrelay ledger ({rows}); the demo starts new chains "
            "whose message sequences and job ids would collide with it: give it an empty "
            "database (e.g. createdb fedrelay_demo)"
        )


def start_devnet(settings: DemoSettings, state_dir: Path, progress: DemoProgress) -> Devnet:
    """The demo's devnet, not yet entered: on free ports, with the demo's stakes and window.

    Entering it (``with devnet:``) starts and deploys the chains.
    """
    devnet_settings = DevnetSettings(
        ports=DevnetPorts(coordinator=0, worker_evm=0, solana=0),
        challenge_window=settings.challenge_window,
        evm_min_stake=ETHER,
        solana_min_stake=LAMPORTS_PER_SOL,
    )
    return Devnet(state_dir / "devnet", devnet_settings, progress=progress.step)


def cheat_roles(cheats: Sequence[Cheat], keys: Sequence[WorkerKey]) -> dict[int, str]:
    """Which workers cheat, and how: the index in ``keys`` of each dishonest worker, with its
    mode. Each cheat takes the first worker of its chain not taken by an earlier one.

    Raises:
        DemoError: A chain has fewer workers than cheats.
    """
    taken: dict[int, str] = {}
    for cheat in cheats:
        chain = WORKER_EVM if cheat.chain == "evm" else WORKER_SOLANA
        free = [i for i, k in enumerate(keys) if k.chain == chain and i not in taken]
        if not free:
            raise DemoError(f"no worker left on {chain} for the dishonest {cheat.mode!r}")
        taken[free[0]] = cheat.mode
    return taken


@dataclass
class DemoWorker:
    """A running worker of the demo."""

    name: str
    key: WorkerKey
    node: WorkerNode
    ref: WorkerRef
    dishonest: str
    stake_before: int = 0
    task: asyncio.Task[None] | None = None


class DemoNetwork:
    """The services and workers of one demo run over a started devnet.

    Construct it with the devnet running, then start the parts in order inside one event loop:
    :meth:`ledger` for each service, :meth:`start_relayer`, :meth:`start_coordinator`,
    :meth:`start_workers`; :meth:`close` stops whatever was started.
    """

    def __init__(
        self,
        devnet: Devnet,
        keys: tuple[WorkerKey, ...],
        state_dir: Path,
        progress: DemoProgress,
        backends: DemoBackends,
    ) -> None:
        self.backends = backends
        self.tag = secrets.token_hex(4)  # names this run's topics and consumer groups
        self.devnet = devnet
        self.keys = keys
        self.state_dir = state_dir
        self.progress = progress
        self.info = devnet.info
        self.market = devnet.job_market()
        self.hub = devnet.worker_hub()
        self.solana_rpc = AsyncClient(self.info.chain(WORKER_SOLANA).rpc_url)
        self.program = WorkerProgramClient(self.solana_rpc, devnet.program_id)
        self.workers: list[DemoWorker] = []
        #: The RewardDistributor the market credits (None: each worker's payout is).
        self.distributor: RewardDistributorContract | None = None
        self.closers: list[Callable[[], Awaitable[None]]] = []
        #: What the proposal watch found, in order (:meth:`start_proposal_watch`).
        self.proposal_findings: list[Finding] = []

    async def close(self) -> None:
        """Stop the workers, then every service in reverse order of starting."""
        await self.stop_workers()
        for close in reversed(self.closers):
            try:
                await close()
            except Exception as exc:  # tear-down goes on; each failure is logged
                log.warning("demo: stopping a service failed: %s", exc)
        await self.solana_rpc.close()

    # --- ledgers ------------------------------------------------------------------------------

    async def ledger(self, name: str) -> str:
        """The URL of the ledger `name` (relayer or coordinator), created and migrated."""
        url = self.backends.database_url
        if url is None:
            url = f"sqlite+aiosqlite:///{self.state_dir / f'{name}.db'}"
            (self.state_dir / f"{name}.db").unlink(missing_ok=True)
            self.progress.step(f"creating the {name}'s SQLite ledger")
        else:
            self.progress.step(
                f"migrating the {name}'s ledger on {self.backends.describe()['ledger']}"
            )
        await asyncio.to_thread(upgrade, url)
        return url

    def observe_coordinator(self, database_url: str) -> LedgerCoordinatorStore:
        """The demo's own view of the coordinator's ledger: it outlives coordinator restarts."""
        observer = create_engine(database_url)
        self.closers.append(observer.dispose)
        return LedgerCoordinatorStore(observer)

    # --- the relayer --------------------------------------------------------------------------

    async def start_relayer(
        self, database_url: str, attestation: Attestation = "threshold"
    ) -> None:
        """Build every relayer stage on the chosen bus and ledger and run each as a task; under
        ``threshold`` attestation the guardians sign version-2 VAAs with the devnet threshold
        key (their signing journals in the state folder)."""
        self.progress.step(
            f"starting the relayer: watchers, 3 guardians ({attestation} attestation), "
            "assembly, deliverers"
        )
        chains = load_chains(Path(self.info.chains_file))
        topic = f"fedrelay-demo-{self.tag}"
        settings = RelayerSettings(
            database_url=database_url, kafka_bootstrap=self.backends.kafka_bootstrap,
            topic_partitions=1, observations_topic=f"{topic}-observations",
            signatures_topic=f"{topic}-signatures", vaas_topic=f"{topic}-vaas",
            deliveries_prefix=f"{topic}-deliveries", dlq_topic=f"{topic}-dlq", group_prefix=topic,
            guardian_addresses=(), poll_wait_s=0.1, watch_interval_s=0.2, retry_base_s=0.2,
            retry_cap_s=2.0, confirm_timeout_s=20.0, batch_size=50, lag_interval_s=5.0,
            signing_topic=f"{topic}-signing", attestation=attestation,
            threshold_group_key=self.info.threshold_group_key,
            threshold_verification_shares=self.info.threshold_verification_shares,
            signing_journal_dir=self.state_dir / "signing-journals",
        )  # fmt: skip
        request = StageRequest(
            stage="all",
            guardian_keys=tuple(Path(p) for p in self.info.guardian_key_files),
            threshold_shares=tuple(Path(p) for p in self.info.threshold_share_files),
            signer_keys={c.name: self.devnet.key_file(f"relayer-{c.name}") for c in chains.chains},
        )
        process = await build_process(
            settings, chains, request, metrics=stage_metrics(CollectorRegistry())
        )
        await process.bus.create_topics(process.topics, partitions=settings.topic_partitions)
        tasks = [asyncio.create_task(s.run(), name=f"relayer-{s.name}") for s in process.stages]
        self.closers.append(lambda: self._stop_relayer(process, tasks))
        self.progress.note("relayer stages: " + ", ".join(s.name for s in process.stages))

    async def _stop_relayer(self, process: RelayerProcess, tasks: list[asyncio.Task[None]]) -> None:
        for stage in process.stages:
            stage.stop()
        _, pending = await asyncio.wait(tasks, timeout=30)
        for task in pending:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await process.close()

    # --- the coordinator ----------------------------------------------------------------------

    async def start_coordinator(
        self, database_url: str, rewards: Rewards = "distributor"
    ) -> RestartableCoordinator:
        """Start the coordinator and its API on the blob store in the state folder; with
        ``distributor`` rewards, first a RewardDistributor the market credits its rounds to."""
        if rewards == "distributor":
            self.distributor = await asyncio.to_thread(self._deploy_distributor)
        self.progress.step("starting the coordinator and its API")
        self.blobs = FileBlobStore(self.state_dir / "blobs")
        coordinator_chain = self.info.chain(COORDINATOR)
        aggregator = Signer(self.devnet.key_file("aggregator").read_text().strip())
        chain = EvmCoordinatorChain(
            JobMarketContract(EvmChain(coordinator_chain.rpc_url), coordinator_chain.address),
            aggregator,
        )
        start_block = int(await asyncio.to_thread(lambda: self.market.chain.w3.eth.block_number))
        coordinator = RestartableCoordinator(
            database_url, self.blobs, chain, coordinator_chain.wormhole_chain_id, start_block,
            distributor=None if self.distributor is None else self.distributor.address,
        )  # fmt: skip
        await coordinator.start()
        self.closers.append(coordinator.stop)
        return coordinator

    async def start_proposal_watch(self) -> None:
        """Watch every proposal of the market as an independent auditor would (the
        challenger's key sends disproofs): each is checked inside its challenge window."""
        self.progress.step("starting a proposal watch (every proposal checked in its window)")
        coordinator_chain = self.info.chain(COORDINATOR)
        key = self.devnet.key_file("challenger").read_text().strip()
        board = EvmProposalBoard(coordinator_chain.rpc_url, coordinator_chain.address, key)
        watch = ProposalWatch(
            board, disprove=True, poll_interval=0.2, recheck_interval=1.0,
            report=self.proposal_findings.append,
        )  # fmt: skip
        await watch.start(
            int(await asyncio.to_thread(lambda: self.market.chain.w3.eth.block_number))
        )
        task = asyncio.create_task(watch.run(), name="proposal-watch")

        async def stop() -> None:
            watch.request_stop()
            await asyncio.wait_for(task, 30)

        self.closers.append(stop)

    def _deploy_distributor(self) -> RewardDistributorContract:
        """A RewardDistributor drawing on the market (the aggregator its updater, the challenger
        its disputer), which the market credits every round settled from now on."""
        self.progress.step(
            f"deploying a RewardDistributor (dispute window {REWARD_ROOT_WINDOW_S} s) and "
            "pointing the JobMarket's rewards at it"
        )
        owner = Signer(self.devnet.key_file("owner").read_text().strip())
        accounts = self.info.accounts
        distributor = deploy_reward_distributor(
            self.market.chain, owner, self.market.address, accounts["aggregator"],
            accounts["challenger"], REWARD_ROOT_WINDOW_S,
        )  # fmt: skip
        self.market.set_rewards_account(owner, distributor.address)
        return distributor

    # --- the workers --------------------------------------------------------------------------

    async def start_workers(
        self,
        settings: DemoSettings,
        api_url: str,
        store: LedgerCoordinatorStore,
        data: Sequence[Path] | None = None,
    ) -> None:
        """Build a node per funded key (the settings' cheats dishonest), stake, await
        registration, run them.

        Args:
            settings: The demo's settings.
            api_url: The coordinator API's URL.
            store: The demo's view of the coordinator's ledger (to see registrations).
            data: Worker ``i``'s own data folder at index ``i`` (a workload's, read as
                ``fedrelay worker run --data`` reads it); None for the digits job, whose
                tasks name their published shard.
        """
        self.progress.step(f"starting {len(self.keys)} workers and staking")
        cheats = cheat_roles(settings.cheats, self.keys)
        if data is not None and len(data) < len(self.keys):
            raise DemoError(f"{len(data)} data folders for {len(self.keys)} workers")
        for number, key in enumerate(self.keys):
            shards = FileSource(data[number]) if data is not None else None
            name = f"worker-{number}"
            chain: WorkerChain
            signer: RequestSigner
            if key.chain == WORKER_EVM:
                private = load_evm_key(Path(key.key_file))
                hub = self.info.chain(WORKER_EVM)
                chain = await asyncio.to_thread(
                    EvmWorkerChain, hub.rpc_url, hub.address, private,
                    wormhole_chain=hub.wormhole_chain_id,
                )  # fmt: skip
                signer = EvmSigner(private, chain=hub.wormhole_chain_id)
            else:
                keypair = load_solana_keypair(Path(key.key_file))
                solana = await SolanaWorkerChain.connect(
                    self.solana_rpc, self.devnet.program_id, keypair
                )
                chain = solana
                signer = SolanaSigner(keypair)
            api = CoordinatorClient(api_url, signer)
            self.closers.append(api.aclose)
            dishonest = cheats.get(number, "")
            node_class = DISHONEST_WORKERS[dishonest] if dishonest else WorkerNode
            label = f"{name} ({key.chain}{', dishonest' if dishonest else ''})"
            node = node_class(
                chain, api, shards, StateStore(self.state_dir / "workers" / f"{name}.json"),
                progress=WorkerNotes(label, self.progress), poll_interval=0.5,
            )  # fmt: skip
            ref = WorkerRef(chain.wormhole_chain, chain.worker_key)
            self.workers.append(DemoWorker(name, key, node, ref, dishonest))
        for worker in self.workers:
            units = ETHER if worker.key.chain == WORKER_EVM else LAMPORTS_PER_SOL
            payout = address_to_bytes32(worker.key.payout_address)
            await worker.node.register(STAKE_UNITS * units, payout)
            worker.stake_before = await self.stake(worker)
        wanted = {w.ref for w in self.workers}

        async def registered() -> bool:
            return wanted <= set(await store.workers())

        self.progress.step("relaying the registrations to the coordinator chain")
        await until(registered, 120, "every WORKER_REGISTERED to reach the coordinator")
        for worker in self.workers:
            worker.task = asyncio.create_task(worker.node.run(), name=worker.name)

    async def stop_workers(self) -> None:
        """Ask every running worker to stop; cancel those still running after a minute."""
        running = [w.task for w in self.workers if w.task is not None]
        for worker in self.workers:
            worker.node.request_stop()
            worker.task = None
        if running:
            _, pending = await asyncio.wait(running, timeout=60)
            for task in pending:
                task.cancel()
            await asyncio.gather(*running, return_exceptions=True)

    async def stake(self, worker: DemoWorker) -> int:
        """The worker's stake on its own chain now (wei or lamports)."""
        if worker.key.chain == WORKER_EVM:
            staker = await asyncio.to_thread(self.hub.staker, worker.key.address)
            return staker.staked
        account = await self.program.fetch_worker(Pubkey.from_string(worker.key.address))
        return account.stake

    def name_of(self, ref: WorkerRef) -> str:
        """The demo's name of the worker ``ref`` (a key prefix for a worker it did not start)."""
        return next((w.name for w in self.workers if w.ref == ref), ref.key.hex()[:12])
