"""The end-to-end demo: one training job across three chains, run to completion in one process.

:func:`run_demo` starts the devnet (two anvils and the Solana RPC, everything deployed and
linked), the relayer's stages on the in-process bus with a SQLite ledger (a watcher per chain,
the devnet guardians attesting, assembly, routing, a deliverer per chain), the coordinator
service with its HTTP API on loopback, and the workers: some on the EVM worker chain, some on
Solana, exactly one of them dishonest (it commits a tampered update or transcript). It posts a
job on the digits data with a non-IID (Dirichlet) split, waits until the coordinator reports the
job COMPLETED and every settlement has reached the worker chains, then reads the outcome back
from the chains: each payout address's claimable reward in JobMarket, and each worker's stake
in WorkerHub or in its Solana worker account.

The outcome is a :class:`DemoResult`; :meth:`DemoResult.problems` lists every acceptance
condition that failed (accuracy, honest workers paid, the dishonest one caught and slashed).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

import uvicorn
from prometheus_client import CollectorRegistry
from solana.rpc.async_api import AsyncClient
from solders.pubkey import Pubkey
from sqlalchemy import func, inspect, select
from sqlalchemy import table as sql_table
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker

from fedrelay.adapters.blobstore import FileBlobStore
from fedrelay.adapters.devnet.network import Devnet, DevnetPorts, DevnetSettings
from fedrelay.adapters.devnet.process import free_port
from fedrelay.adapters.devnet.state import COORDINATOR, WORKER_EVM, WORKER_SOLANA, WorkerKey
from fedrelay.adapters.evm import EvmChain, JobMarketContract, JobSpec, Signer, address_to_bytes32
from fedrelay.adapters.evm.coordinator_chain import EvmCoordinatorChain
from fedrelay.adapters.evm.hub import HubTaskState
from fedrelay.adapters.evm.worker_chain import EvmWorkerChain
from fedrelay.adapters.ledger.coordinator_store import LedgerCoordinatorStore
from fedrelay.adapters.ledger.database import create_engine, upgrade
from fedrelay.adapters.ledger.models import Delivery, StoredVaa
from fedrelay.adapters.solana.client import WorkerProgramClient
from fedrelay.adapters.solana.worker_chain import SolanaWorkerChain
from fedrelay.coordinator.api import create_app
from fedrelay.coordinator.service import CoordinatorService
from fedrelay.coordinator.verification import JobWorkbench
from fedrelay.demo_costs import CostError, DemoCosts, devnet_costs, markdown_lines
from fedrelay.demo_plot import plot_accuracy
from fedrelay.ports.coordinator_store import RoundReport
from fedrelay.ports.worker_chain import TaskKey
from fedrelay.protocol.api.signing import EvmSigner, RequestSigner, SolanaSigner
from fedrelay.protocol.job_config import JobConfig
from fedrelay.protocol.rounds import Phase, RoundState, TaskStatus, WorkerRef
from fedrelay.relayer.config import load_chains
from fedrelay.relayer.service import RelayerProcess, StageRequest, build_process
from fedrelay.relayer.settings import RelayerSettings
from fedrelay.relayer.stage import stage_metrics
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
from fedrelay.worker.sdk.testing import TamperedTranscriptWorker, TamperedUpdateWorker

log = logging.getLogger(__name__)

ETHER = 10**18
LAMPORTS_PER_SOL = 10**9
#: Stake of every worker, in its chain's whole units (ETH or SOL).
STAKE_UNITS = 10
#: What a rejected update or transcript costs, 8 decimals (1 ETH or 1 SOL).
REJECTED_SLASH = 10**8

Dishonesty = Literal["update", "transcript"]
ChainKind = Literal["evm", "solana"]


class DemoError(Exception):
    """The demo could not be set up or did not reach its end; the message says why."""


@dataclass(frozen=True)
class DemoSettings:
    """What the demo runs.

    Attributes:
        rounds: Rounds of the job.
        evm_workers: Workers on the EVM worker chain (at least 2).
        solana_workers: Workers on Solana (at least 2).
        dishonest: What the dishonest worker tampers with: ``update`` or ``transcript``.
        dishonest_chain: The chain of the dishonest worker.
        steps: Local optimizer steps per task.
        checkpoint_every: Steps between transcript checkpoints.
        batch_size: Examples per step.
        learning_rate: Local SGD step size.
        alpha: Dirichlet concentration of the non-IID split (smaller: more skewed).
        strategy: Aggregation strategy name (see
        :class:`~fedrelay.protocol.job_config.JobConfig`).
        max_examples_per_shard: At most this many training examples per shard (None: all).
        challenge_window: JobMarket's challenge window in seconds.
        collect_seconds: Time the workers have from assignment to commitment.
        reward_per_round: Reward escrowed per round, in wei.
        min_accuracy: The final test accuracy the demo must reach.
        timeout_s: Longest the job may take from posting to the last settlement.
        restart_coordinator_in_round: Stop the coordinator (service and API) in the middle of
            this round and start a new one on the same ledger, as a crash and restart would
            (None: never).
    """

    rounds: int = 10
    evm_workers: int = 3
    solana_workers: int = 3
    dishonest: Dishonesty = "transcript"
    dishonest_chain: ChainKind = "evm"
    steps: int = 40
    checkpoint_every: int = 20
    batch_size: int = 32
    learning_rate: float = 0.1
    alpha: float = 1.0
    strategy: str = "fedavg"
    max_examples_per_shard: int | None = None
    challenge_window: int = 2
    collect_seconds: int = 240
    reward_per_round: int = ETHER
    min_accuracy: float = 0.90
    timeout_s: float = 840.0
    restart_coordinator_in_round: int | None = None

    def __post_init__(self) -> None:
        if self.rounds < 1:
            raise DemoError(f"rounds must be at least 1, got {self.rounds}")
        restart = self.restart_coordinator_in_round
        if restart is not None and not 0 <= restart < self.rounds:
            raise DemoError(
                f"restart_coordinator_in_round must name one of the rounds 0..{self.rounds - 1}, "
                f"got {restart}"
            )
        if self.evm_workers < 2 or self.solana_workers < 2:
            raise DemoError(
                "the demo needs at least 2 workers on each worker chain, got "
                f"{self.evm_workers} on EVM and {self.solana_workers} on Solana"
            )
        if self.dishonest not in ("update", "transcript"):
            raise DemoError(f"dishonest must be 'update' or 'transcript', got {self.dishonest!r}")
        if self.dishonest_chain not in ("evm", "solana"):
            raise DemoError(
                f"dishonest_chain must be 'evm' or 'solana', got {self.dishonest_chain!r}"
            )
        if self.steps < self.checkpoint_every or self.steps % self.checkpoint_every:
            raise DemoError(
                f"steps ({self.steps}) must be a multiple of checkpoint_every "
                f"({self.checkpoint_every})"
            )
        if not 0 < self.min_accuracy <= 1:
            raise DemoError(f"min_accuracy must be in (0, 1], got {self.min_accuracy}")
        if self.timeout_s <= 0 or self.challenge_window < 1 or self.collect_seconds < 10:
            raise DemoError("timeout_s, challenge_window and collect_seconds must be positive")
        self.job_config()  # the strategy and training fields must make a valid job

    @property
    def workers(self) -> int:
        """Every worker, honest or not."""
        return self.evm_workers + self.solana_workers

    def job_config(self) -> JobConfig:
        """The job's configuration blob: every transcript challenged, a rejection slashed.

        Raises:
            DemoError: The settings do not make a valid job configuration.
        """
        try:
            return JobConfig.model_validate(
                {
                    "seed": 7,
                    "steps": self.steps,
                    "checkpoint_every": self.checkpoint_every,
                    "batch_size": self.batch_size,
                    "learning_rate": self.learning_rate,
                    "strategy": self.strategy,
                    "challenge_rate": 1.0,
                    "answer_seconds": 120,
                    "collect_seconds": self.collect_seconds,
                    "min_updates": 1,
                    "rejected_slash": REJECTED_SLASH,
                    # Unused without secure aggregation, but the worker SDK reads the
                    # configuration blob's secagg_threshold as an integer either way.
                    "secagg_threshold": max(1, self.workers - 1),
                    "data": {
                        "shards": self.workers,
                        "partition": "dirichlet",
                        "alpha": self.alpha,
                        "max_examples_per_shard": self.max_examples_per_shard,
                    },
                }
            )
        except ValueError as exc:
            raise DemoError(f"the demo's job configuration is invalid: {exc}") from None


@dataclass(frozen=True)
class DemoBackends:
    """Where the demo's bus and ledgers live: embedded by default, or real services.

    Attributes:
        kafka_bootstrap: Kafka's bootstrap servers (None: the in-process bus). The demo's
            topics and consumer groups carry a tag of their own, so runs never share them.
        database_url: A PostgreSQL (or SQLite) SQLAlchemy URL holding both ledgers (None: a
            SQLite file each in the state folder). It must hold no fedrelay messages or
            rounds yet: a new devnet restarts every chain's sequences and job ids.
    """

    kafka_bootstrap: str | None = None
    database_url: str | None = None

    def describe(self) -> dict[str, str]:
        """What the report says about the backends (never the URL: it may hold a password)."""
        ledger = "sqlite"
        if self.database_url is not None:
            ledger = self.database_url.split(":", 1)[0].split("+", 1)[0]
        return {"bus": "kafka" if self.kafka_bootstrap else "in-process", "ledger": ledger}


@dataclass(frozen=True)
class CoordinatorRestart:
    """One restart of the coordinator during the job.

    Attributes:
        round: The round it happened in.
        phase: The round's phase when the coordinator was stopped.
        down_s: Seconds from the stop to the new coordinator's API answering.
    """

    round: int
    phase: str
    down_s: float


@dataclass(frozen=True)
class WorkerOutcome:
    """One worker at the end of the demo, from the coordinator's ledger and from the chains.

    Attributes:
        name: ``worker-N``.
        chain: ``worker-evm`` or ``worker-solana``.
        address: Its address on that chain.
        payout_address: Where its rewards go on the coordinator chain.
        dishonest: Whether it tampered (and with what), or empty.
        tasks: Rounds it was assigned.
        accepted: Rounds whose update was accepted.
        slashed_rounds: Rounds in which the coordinator slashed it.
        reason: Why it was slashed (the first reason), or empty.
        reward: Reward the coordinator decided for it, summed over rounds (wei).
        claimable: What its payout address can withdraw from JobMarket now (wei).
        stake_before: Its stake on its chain after registering (wei or lamports).
        stake_after: Its stake on its chain at the end.
    """

    name: str
    chain: str
    address: str
    payout_address: str
    dishonest: str
    tasks: int
    accepted: int
    slashed_rounds: tuple[int, ...]
    reason: str
    reward: int
    claimable: int
    stake_before: int
    stake_after: int

    @property
    def slashed_on_chain(self) -> int:
        """Stake taken on its chain (wei or lamports)."""
        return max(0, self.stake_before - self.stake_after)

    def to_json(self) -> dict[str, Any]:
        """The worker's entry in ``summary.json``."""
        return {**asdict(self), "slashed_on_chain": self.slashed_on_chain}


@dataclass(frozen=True)
class DemoResult:
    """What the demo did and found."""

    job_id: int
    rounds: int
    accuracy_per_round: tuple[float, ...]
    workers: tuple[WorkerOutcome, ...]
    messages_per_route: dict[str, dict[str, int]]
    wall_time_s: float
    settings: DemoSettings
    timings_s: dict[str, float] = field(default_factory=dict)
    backends: dict[str, str] = field(default_factory=dict)
    restarts: tuple[CoordinatorRestart, ...] = ()
    costs: DemoCosts = field(default_factory=DemoCosts)

    @property
    def final_accuracy(self) -> float:
        """Held-out accuracy of the last round's model (0 when no round finished)."""
        return self.accuracy_per_round[-1] if self.accuracy_per_round else 0.0

    @property
    def dishonest(self) -> WorkerOutcome:
        """The dishonest worker."""
        return next(w for w in self.workers if w.dishonest)

    def problems(self) -> list[str]:
        """Every acceptance condition that failed, in words (empty when the demo passed)."""
        found = []
        if len(self.accuracy_per_round) != self.rounds:
            found.append(f"{len(self.accuracy_per_round)} of {self.rounds} rounds finished")
        wanted = self.settings.restart_coordinator_in_round
        if wanted is not None and [r.round for r in self.restarts] != [wanted]:
            found.append(f"the coordinator was to be restarted in round {wanted}, was not")
        if self.final_accuracy < self.settings.min_accuracy:
            found.append(
                f"final accuracy {self.final_accuracy:.4f} is below {self.settings.min_accuracy}"
            )
        for worker in self.workers:
            if worker.dishonest:
                continue
            if worker.reward <= 0 or worker.claimable <= 0:
                found.append(
                    f"honest {worker.name} ({worker.chain}) was not paid: coordinator reward "
                    f"{worker.reward}, claimable on JobMarket {worker.claimable}"
                )
            if worker.slashed_rounds or worker.slashed_on_chain:
                found.append(f"honest {worker.name} ({worker.chain}) was slashed: {worker.reason}")
        cheat = self.dishonest
        if not cheat.slashed_rounds:
            found.append(f"the dishonest {cheat.name} was never caught by the coordinator")
        if cheat.slashed_on_chain <= 0:
            found.append(
                f"the dishonest {cheat.name}'s stake on {cheat.chain} was not slashed "
                f"({cheat.stake_before} before, {cheat.stake_after} after)"
            )
        return found

    def to_json(self) -> dict[str, Any]:
        """The content of ``summary.json``."""
        cheat = self.dishonest
        return {
            "job_id": self.job_id,
            "rounds": self.rounds,
            "final_accuracy": self.final_accuracy,
            "accuracy_per_round": list(self.accuracy_per_round),
            "workers": [w.to_json() for w in self.workers],
            "dishonest_worker": {
                "name": cheat.name,
                "chain": cheat.chain,
                "tampered": cheat.dishonest,
                "detection_reason": cheat.reason,
                "slashed_rounds": list(cheat.slashed_rounds),
                "slashed_on_chain": cheat.slashed_on_chain,
            },
            "messages_per_route": self.messages_per_route,
            "wall_time_s": round(self.wall_time_s, 1),
            "timings_s": {k: round(v, 1) for k, v in self.timings_s.items()},
            "settings": asdict(self.settings),
            "backends": self.backends,
            "coordinator_restarts": [asdict(r) for r in self.restarts],
            **self.costs.to_json(),
            "problems": self.problems(),
        }


class DemoProgress(Protocol):
    """Where the demo reports what it is doing; implementations must not raise."""

    def step(self, text: str) -> None:
        """A set-up or tear-down step begins."""
        ...

    def note(self, text: str) -> None:
        """A one-line event (a worker's note, a round's result)."""
        ...

    def round(self, state: RoundState, accuracy: float | None) -> None:
        """The job's current round and the last proposed model's accuracy."""
        ...


class QuietProgress:
    """Reports nothing (tests)."""

    def step(self, text: str) -> None:
        """Ignore the step."""

    def note(self, text: str) -> None:
        """Ignore the note."""

    def round(self, state: RoundState, accuracy: float | None) -> None:
        """Ignore the round."""


@dataclass
class _WorkerNotes:
    """A worker node's progress reporter that passes its notes on, labelled."""

    label: str
    progress: DemoProgress

    def phase(self, key: TaskKey, name: str, total: int | None = None) -> None:
        """Phases are not shown (the round line says where the job is)."""

    def advance(self, key: TaskKey, done: int) -> None:
        """Training steps are not shown."""

    def note(self, text: str) -> None:
        """Show the note with the worker's label."""
        self.progress.note(f"{self.label}: {text}")


@dataclass
class _Worker:
    """A running worker of the demo."""

    name: str
    key: WorkerKey
    node: WorkerNode
    ref: WorkerRef
    dishonest: str
    stake_before: int = 0
    task: asyncio.Task[None] | None = None


class _JobShards:
    """The job's own shards (shard ``i`` is the data of the worker drawn ``i``-th)."""

    def __init__(self, workbench: JobWorkbench) -> None:
        self._workbench = workbench

    def dataset(self, shard: int) -> Dataset:
        """The data of shard ``shard``."""
        return self._workbench.shard(shard)


class _ApiServer(uvicorn.Server):
    """uvicorn without its own signal handling: the demo owns SIGINT."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


async def _until(
    check: Callable[[], Awaitable[bool]], timeout_s: float, what: str, interval: float = 0.5
) -> None:
    """Return once ``check()`` holds; :class:`DemoError` naming ``what`` after ``timeout_s``."""
    try:
        async with asyncio.timeout(timeout_s):
            while not await check():  # noqa: ASYNC110 - chains have no event to wait on
                await asyncio.sleep(interval)
    except TimeoutError:
        raise DemoError(f"timed out after {timeout_s:.0f}s waiting for {what}") from None


#: Tables whose rows tie a ledger to one set of chains: a new devnet must not meet old ones.
_RUN_TABLES = ("observations", "vaas", "deliveries", "coordinator_rounds")


async def _check_fresh(database_url: str) -> None:
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


#: The phases of a round in which the coordinator holds work in progress.
_MID_ROUND = frozenset({Phase.ASSIGNING, Phase.COLLECTING, Phase.AGGREGATING})


class _Coordinator:
    """The coordinator as a restartable unit: its service loop and HTTP API on a fixed port.

    Each :meth:`start` builds everything anew from the ledger URL, the chain and the blob
    store, as a restarted process would: nothing carries over in memory.
    """

    def __init__(self, database_url: str, blobs: FileBlobStore, chain: EvmCoordinatorChain,
                 chain_id: int, start_block: int) -> None:  # fmt: skip
        self.database_url = database_url
        self.blobs = blobs
        self.chain = chain
        self.chain_id = chain_id
        self.start_block = start_block
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._stop = asyncio.Event()
        self._tasks: tuple[asyncio.Task[None], ...] = ()
        self._server: _ApiServer | None = None
        self._engine: AsyncEngine | None = None

    @property
    def failure(self) -> BaseException | None:
        """Why the service loop or the API ended by itself, if it did."""
        for task in self._tasks:
            if task.done() and not task.cancelled() and task.exception() is not None:
                return task.exception()
        return None

    async def start(self) -> None:
        """Build the service and its API and wait until the API answers."""
        self._engine = create_engine(self.database_url)
        store = LedgerCoordinatorStore(self._engine)
        service = CoordinatorService(
            self.chain, store, self.blobs, chain_id=self.chain_id, start_block=self.start_block,
            poll_interval=0.5,
        )  # fmt: skip
        app = create_app(store, self.blobs, admin_token=secrets.token_urlsafe(24))
        server = _ApiServer(
            uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning",
                           lifespan="off")
        )  # fmt: skip
        self._stop = asyncio.Event()
        self._server = server
        self._tasks = (
            asyncio.create_task(service.run(self._stop), name="coordinator"),
            asyncio.create_task(server.serve(), name="coordinator-api"),
        )

        async def started() -> bool:
            if self.failure is not None:
                raise DemoError(f"the coordinator did not start: {self.failure}")
            return bool(server.started)

        await _until(started, 30, "the coordinator API to listen", interval=0.05)

    async def stop(self) -> None:
        """Stop the loop (a step in progress finishes) and the API; close the ledger."""
        self._stop.set()
        if self._server is not None:
            self._server.should_exit = True
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=30)
            for task in self._tasks:
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = ()
        if self._engine is not None:
            await self._engine.dispose()
            self._engine = None


def run_demo(
    settings: DemoSettings,
    state_dir: Path,
    progress: DemoProgress | None = None,
    backends: DemoBackends | None = None,
) -> DemoResult:
    """Run the whole demo (see the module docstring) and return what it found.

    Args:
        settings: What to run.
        state_dir: Where the devnet's state, the ledgers, blobs and worker state go.
        progress: Where steps and events are reported.
        backends: Kafka and PostgreSQL to run on instead of the embedded defaults.

    Raises:
        DemoError: Something could not start, or the job did not finish in time.
    """
    shown = progress or QuietProgress()
    chosen = backends or DemoBackends()
    if chosen.database_url is not None:  # before anything starts
        asyncio.run(_check_fresh(chosen.database_url))
    started = time.monotonic()
    devnet_settings = DevnetSettings(
        ports=DevnetPorts(coordinator=0, worker_evm=0, solana=0),
        challenge_window=settings.challenge_window,
        evm_min_stake=ETHER,
        solana_min_stake=LAMPORTS_PER_SOL,
    )
    devnet = Devnet(state_dir / "devnet", devnet_settings, progress=shown.step)
    with devnet:
        shown.step("funding the workers")
        keys = devnet.fund_workers(settings.evm_workers, settings.solana_workers)
        devnet_s = time.monotonic() - started
        demo = _Demo(settings, devnet, keys, state_dir, shown, chosen)
        result = asyncio.run(demo.run())
    timings = {"devnet_s": devnet_s, **result.timings_s}
    wall = time.monotonic() - started
    return DemoResult(
        job_id=result.job_id,
        rounds=result.rounds,
        accuracy_per_round=result.accuracy_per_round,
        workers=result.workers,
        messages_per_route=result.messages_per_route,
        wall_time_s=wall,
        settings=settings,
        timings_s=timings,
        backends=chosen.describe(),
        restarts=result.restarts,
        costs=result.costs,
    )


class _Demo:
    """The asynchronous part of the demo, over a started devnet."""

    def __init__(
        self,
        settings: DemoSettings,
        devnet: Devnet,
        keys: tuple[WorkerKey, ...],
        state_dir: Path,
        progress: DemoProgress,
        backends: DemoBackends,
    ) -> None:
        self.settings = settings
        self.backends = backends
        self.tag = secrets.token_hex(4)  # names this run's topics and consumer groups
        self.devnet = devnet
        self.keys = keys
        self.state_dir = state_dir
        self.progress = progress
        self.info = devnet.info
        self.market = devnet.job_market()
        self.hub = devnet.worker_hub()
        self.config = settings.job_config()
        self.workbench = JobWorkbench(self.config)
        self.solana_rpc = AsyncClient(self.info.chain(WORKER_SOLANA).rpc_url)
        self.program = WorkerProgramClient(self.solana_rpc, devnet.program_id)
        self.workers: list[_Worker] = []
        self.closers: list[Callable[[], Awaitable[None]]] = []
        self.timings: dict[str, float] = {}
        self.restarts: list[CoordinatorRestart] = []

    async def run(self) -> DemoResult:
        """Start the services and workers, run the job, stop everything, read the outcome."""
        try:
            relayer_url = await self._ledger("relayer")
            coordinator_url = await self._ledger("coordinator")
            await self._start_relayer(relayer_url)
            api_url = await self._start_coordinator(coordinator_url)
            # The demo's own view of the coordinator's ledger: it outlives coordinator restarts.
            observer = create_engine(coordinator_url)
            self.closers.append(observer.dispose)
            store = LedgerCoordinatorStore(observer)
            await self._start_workers(api_url, store)
            posted = time.monotonic()
            job_id = await self._post_job()
            await self._follow(store, job_id)
            self.timings["job_s"] = time.monotonic() - posted
            await self._await_settlements(store, job_id)
            self.timings["settlements_s"] = time.monotonic() - posted - self.timings["job_s"]
            await self._stop_workers()
            outcome = await self._outcome(store, job_id, relayer_url)
        finally:
            await self._stop_workers()
            for close in reversed(self.closers):
                try:
                    await close()
                except Exception as exc:  # tear-down goes on; each failure is logged
                    log.warning("demo: stopping a service failed: %s", exc)
            await self.solana_rpc.close()
        return outcome

    # --- services -----------------------------------------------------------------------------

    async def _ledger(self, name: str) -> str:
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

    async def _start_relayer(self, database_url: str) -> None:
        self.progress.step("starting the relayer: watchers, 3 guardians, assembly, deliverers")
        chains = load_chains(Path(self.info.chains_file))
        topic = f"fedrelay-demo-{self.tag}"
        settings = RelayerSettings(
            database_url=database_url, kafka_bootstrap=self.backends.kafka_bootstrap,
            topic_partitions=1, observations_topic=f"{topic}-observations",
            signatures_topic=f"{topic}-signatures", vaas_topic=f"{topic}-vaas",
            deliveries_prefix=f"{topic}-deliveries", dlq_topic=f"{topic}-dlq", group_prefix=topic,
            guardian_addresses=(), poll_wait_s=0.1, watch_interval_s=0.2, retry_base_s=0.2,
            retry_cap_s=2.0, confirm_timeout_s=20.0, batch_size=50, lag_interval_s=5.0,
        )  # fmt: skip
        request = StageRequest(
            stage="all",
            guardian_keys=tuple(Path(p) for p in self.info.guardian_key_files),
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

    async def _start_coordinator(self, database_url: str) -> str:
        """Start the coordinator; returns its API's URL."""
        self.progress.step("starting the coordinator and its API")
        self.blobs = FileBlobStore(self.state_dir / "blobs")
        coordinator_chain = self.info.chain(COORDINATOR)
        aggregator = Signer(self.devnet.key_file("aggregator").read_text().strip())
        chain = EvmCoordinatorChain(
            JobMarketContract(EvmChain(coordinator_chain.rpc_url), coordinator_chain.address),
            aggregator,
        )
        start_block = int(await asyncio.to_thread(lambda: self.market.chain.w3.eth.block_number))
        self.coordinator = _Coordinator(
            database_url, self.blobs, chain, coordinator_chain.wormhole_chain_id, start_block
        )
        await self.coordinator.start()
        self.closers.append(self.coordinator.stop)
        return self.coordinator.url

    async def _restart_coordinator(self, state: RoundState) -> None:
        """Stop the coordinator mid-round and start a new one on the same ledger."""
        self.progress.step(
            f"restarting the coordinator in round {state.round} ({state.phase.value})"
        )
        stopped = time.monotonic()
        await self.coordinator.stop()
        await self.coordinator.start()
        down = time.monotonic() - stopped
        self.restarts.append(CoordinatorRestart(state.round, state.phase.value, round(down, 2)))
        self.progress.note(
            f"coordinator restarted after {down:.1f} s down; it resumes from the ledger"
        )

    # --- workers ------------------------------------------------------------------------------

    async def _start_workers(self, api_url: str, store: LedgerCoordinatorStore) -> None:
        self.progress.step(f"starting {len(self.keys)} workers and staking")
        cheat_chain = WORKER_EVM if self.settings.dishonest_chain == "evm" else WORKER_SOLANA
        cheat = next(k for k in self.keys if k.chain == cheat_chain)
        shards = _JobShards(self.workbench)
        for number, key in enumerate(self.keys):
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
            dishonest = self.settings.dishonest if key is cheat else ""
            node_class: type[WorkerNode] = WorkerNode
            if dishonest == "update":
                node_class = TamperedUpdateWorker
            elif dishonest == "transcript":
                node_class = TamperedTranscriptWorker
            label = f"{name} ({key.chain}{', dishonest' if dishonest else ''})"
            node = node_class(
                chain, api, shards, StateStore(self.state_dir / "workers" / f"{name}.json"),
                progress=_WorkerNotes(label, self.progress), poll_interval=0.5,
            )  # fmt: skip
            ref = WorkerRef(chain.wormhole_chain, chain.worker_key)
            self.workers.append(_Worker(name, key, node, ref, dishonest))
        for worker in self.workers:
            units = ETHER if worker.key.chain == WORKER_EVM else LAMPORTS_PER_SOL
            payout = address_to_bytes32(worker.key.payout_address)
            await worker.node.register(STAKE_UNITS * units, payout)
            worker.stake_before = await self._stake(worker)
        wanted = {w.ref for w in self.workers}

        async def registered() -> bool:
            return wanted <= set(await store.workers())

        self.progress.step("relaying the registrations to the coordinator chain")
        await _until(registered, 120, "every WORKER_REGISTERED to reach the coordinator")
        for worker in self.workers:
            worker.task = asyncio.create_task(worker.node.run(), name=worker.name)

    async def _stop_workers(self) -> None:
        running = [w.task for w in self.workers if w.task is not None]
        for worker in self.workers:
            worker.node.request_stop()
            worker.task = None
        if running:
            _, pending = await asyncio.wait(running, timeout=60)
            for task in pending:
                task.cancel()
            await asyncio.gather(*running, return_exceptions=True)

    async def _stake(self, worker: _Worker) -> int:
        if worker.key.chain == WORKER_EVM:
            staker = await asyncio.to_thread(self.hub.staker, worker.key.address)
            return staker.staked
        account = await self.program.fetch_worker(Pubkey.from_string(worker.key.address))
        return account.stake

    # --- the job ------------------------------------------------------------------------------

    async def _post_job(self) -> int:
        self.progress.step("posting the job on the coordinator chain")
        model = encode_blob(self.workbench.initial_model())
        model_name = await self.blobs.put(model)
        config_name = await self.blobs.put(self.config.to_bytes())
        spec = JobSpec(
            model_hash=bytes.fromhex(model_name),
            config_hash=bytes.fromhex(config_name),
            num_rounds=self.settings.rounds,
            workers_per_round=self.settings.workers,
            reward_per_round=self.settings.reward_per_round,
            min_stake=0,
            worker_chains=(
                self.info.chain(WORKER_EVM).wormhole_chain_id,
                self.info.chain(WORKER_SOLANA).wormhole_chain_id,
            ),
        )
        poster = Signer(self.devnet.key_file("owner").read_text().strip())
        posted = await asyncio.to_thread(self.market.post_job, poster, spec)
        self.progress.note(
            f"job {posted.job_id} posted: {self.settings.rounds} rounds x "
            f"{self.settings.workers} workers, {self.config.strategy}, every transcript challenged"
        )
        return posted.job_id

    async def _follow(self, store: LedgerCoordinatorStore, job_id: int) -> None:
        shown: set[tuple[int, str]] = set()

        restart = self.settings.restart_coordinator_in_round

        async def completed() -> bool:
            if self.coordinator.failure is not None:
                raise DemoError(f"the coordinator stopped: {self.coordinator.failure}")
            state = await store.get_round(job_id)
            if state is None:
                return False
            if state.round == restart and state.phase in _MID_ROUND and not self.restarts:
                await self._restart_coordinator(state)
            report = await store.report(job_id, state.round)
            accuracy = await self._last_accuracy(store, job_id)
            self.progress.round(state, accuracy)
            if (state.round, state.phase.value) not in shown:
                shown.add((state.round, state.phase.value))
                if state.phase is Phase.PROPOSED and report is not None:
                    self._note_round(state, report)
            return state.phase is Phase.COMPLETED

        await _until(completed, self.settings.timeout_s, f"job {job_id} to complete")

    def _note_round(self, state: RoundState, report: RoundReport) -> None:
        slashed = [a for a in state.assignments if a.status is TaskStatus.SLASHED]
        caught = (
            "; ".join(f"{self._name_of(a.worker)} slashed: {a.reason}" for a in slashed)
            or "nobody slashed"
        )
        accuracy = f"{report.accuracy:.4f}" if report.accuracy is not None else "-"
        self.progress.note(f"round {state.round} proposed: accuracy {accuracy}; {caught}")

    async def _last_accuracy(self, store: LedgerCoordinatorStore, job_id: int) -> float | None:
        found = [r.accuracy for r in await store.reports(job_id) if r.accuracy is not None]
        return found[-1] if found else None

    def _name_of(self, ref: WorkerRef) -> str:
        return next((w.name for w in self.workers if w.ref == ref), ref.key.hex()[:12])

    async def _rounds(self, store: LedgerCoordinatorStore, job_id: int) -> list[RoundState]:
        rounds = []
        for number in range(self.settings.rounds):
            state = await store.get_round(job_id, number)
            if state is not None:
                rounds.append(state)
        return rounds

    async def _await_settlements(self, store: LedgerCoordinatorStore, job_id: int) -> None:
        """Wait until every task of every round is settled on its worker chain."""
        self.progress.step("relaying the last settlements to the worker chains")
        tasks = [
            (state.round, a.worker) for state in await self._rounds(store, job_id)
            for a in state.assignments
        ]  # fmt: skip
        evm_chain = self.info.chain(WORKER_EVM).wormhole_chain_id

        async def settled() -> bool:
            for round_number, ref in tasks:
                if ref.chain == evm_chain:
                    task = await asyncio.to_thread(self.hub.task, job_id, round_number, ref.key)
                    if task.state is not HubTaskState.SETTLED:
                        return False
                else:
                    account = await self.program.fetch_task(job_id, round_number, ref.key)
                    if not account.settled:
                        return False
            return True

        await _until(settled, 180, "every ROUND_SETTLED to reach the worker chains", interval=1.0)

    # --- the outcome --------------------------------------------------------------------------

    async def _outcome(
        self, store: LedgerCoordinatorStore, job_id: int, relayer_url: str
    ) -> DemoResult:
        self.progress.step("reading the outcome back from the chains")
        rounds = await self._rounds(store, job_id)
        reports = {r.round: r for r in await store.reports(job_id)}
        accuracy = tuple(
            float(reports[s.round].accuracy or 0.0)
            for s in rounds
            if s.round in reports and reports[s.round].accuracy is not None
        )
        outcomes = []
        for worker in self.workers:
            mine = [(s.round, a) for s in rounds for a in s.assignments if a.worker == worker.ref]
            worker_id = worker.ref.worker_id.hex()
            reward = sum(r.rewards.get(worker_id, 0) for r in reports.values())
            slashed = tuple(n for n, a in mine if a.status is TaskStatus.SLASHED)
            reason = next((a.reason for _, a in mine if a.status is TaskStatus.SLASHED), "")
            claimable = await asyncio.to_thread(self.market.claimable, worker.key.payout_address)
            outcomes.append(
                WorkerOutcome(
                    name=worker.name,
                    chain=worker.key.chain,
                    address=worker.key.address,
                    payout_address=worker.key.payout_address,
                    dishonest=worker.dishonest,
                    tasks=len(mine),
                    accepted=sum(1 for _, a in mine if a.status is TaskStatus.ACCEPTED),
                    slashed_rounds=slashed,
                    reason=reason,
                    reward=reward,
                    claimable=claimable,
                    stake_before=worker.stake_before,
                    stake_after=await self._stake(worker),
                )
            )
        # What every chain spent since the devnet started, deployment included.
        try:
            costs = await devnet_costs(self.info, self.keys)
        except CostError as exc:  # the report goes on without them; the reason is logged
            log.warning("demo: could not read what the chains spent: %s", exc)
            costs = DemoCosts()
        return DemoResult(
            job_id=job_id,
            rounds=self.settings.rounds,
            accuracy_per_round=accuracy,
            workers=tuple(outcomes),
            messages_per_route=await self._routes(relayer_url),
            wall_time_s=0.0,
            settings=self.settings,
            timings_s=dict(self.timings),
            restarts=tuple(self.restarts),
            costs=costs,
        )

    async def _routes(self, database_url: str) -> dict[str, dict[str, int]]:
        """Deliveries per route (``source -> destination``) and status, from the relayer ledger."""
        names = {c.wormhole_chain_id: c.name for c in self.info.chains}
        engine = create_engine(database_url)
        try:
            async with async_sessionmaker(engine)() as session:
                rows = await session.execute(
                    select(
                        StoredVaa.emitter_chain,
                        Delivery.destination_chain,
                        Delivery.status,
                        func.count(),
                    )
                    .join(StoredVaa, Delivery.digest == StoredVaa.digest)
                    .group_by(StoredVaa.emitter_chain, Delivery.destination_chain, Delivery.status)
                )
                routes: dict[str, dict[str, int]] = {}
                for source, destination, status, count in rows.all():
                    route = f"{names.get(source, source)} -> {names.get(destination, destination)}"
                    routes.setdefault(route, {})[str(status.value)] = int(count)
        finally:
            await engine.dispose()
        return dict(sorted(routes.items()))


def write_summary(result: DemoResult, out_dir: Path) -> Path:
    """Write ``summary.json``, ``summary.md`` and ``accuracy.png`` into ``out_dir``.

    Returns:
        The path of ``summary.json``.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "summary.json"
    path.write_text(json.dumps(result.to_json(), indent=2, sort_keys=True) + "\n")
    plot = plot_accuracy(
        result.accuracy_per_round, result.settings.min_accuracy, out_dir / "accuracy.png",
        title=f"job {result.job_id}: test accuracy per round",
    )  # fmt: skip
    lines = [
        f"# fedrelay demo: job {result.job_id}",
        "",
        f"- rounds: {result.rounds}; final test accuracy: {result.final_accuracy:.4f}",
        f"- wall time: {result.wall_time_s:.0f} s",
        f"- bus: {result.backends.get('bus', 'in-process')}; "
        f"ledger: {result.backends.get('ledger', 'sqlite')}",
        *(
            f"- coordinator restarted in round {r.round} ({r.phase}), down {r.down_s:.1f} s"
            for r in result.restarts
        ),
        f"- dishonest worker: {result.dishonest.name} ({result.dishonest.chain}), tampered "
        f"{result.dishonest.dishonest}; caught: {result.dishonest.reason or 'no'}",
        "",
        f"![test accuracy per round]({plot.name})",
        "",
        "| round | accuracy |",
        "| --- | --- |",
        *(f"| {n} | {a:.4f} |" for n, a in enumerate(result.accuracy_per_round)),
        "",
        "| worker | chain | reward (wei) | claimable (wei) | slashed on chain |",
        "| --- | --- | --- | --- | --- |",
        *(
            f"| {w.name} | {w.chain} | {w.reward} | {w.claimable} | {w.slashed_on_chain} |"
            for w in result.workers
        ),
        "",
        "| route | deliveries |",
        "| --- | --- |",
        *(
            f"| {route} | {', '.join(f'{k}: {v}' for k, v in counts.items())} |"
            for route, counts in result.messages_per_route.items()
        ),
        "",
        *markdown_lines(result.costs),
    ]
    problems = result.problems()
    lines += ["## Acceptance", ""] + (
        [f"- FAILED: {p}" for p in problems] if problems else ["- every condition holds"]
    )
    (out_dir / "summary.md").write_text("\n".join(lines) + "\n")
    return path
