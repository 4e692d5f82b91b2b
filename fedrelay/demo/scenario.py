"""The demo's scenario: post one job, follow it to completion, and read back what happened.

:func:`run_demo` starts the devnet and the demo's network (:mod:`fedrelay.demo.assembly`), posts
a job on the digits data with a non-IID (Dirichlet) split, waits until the coordinator reports
the job COMPLETED and every settlement has reached the worker chains, and reads the outcome
back (:mod:`fedrelay.demo.outcome`). On request it restarts the coordinator in the middle of
one round, as a crash would, to show the job resumes from the ledger.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace
from pathlib import Path

from solders.pubkey import Pubkey

from fedrelay.adapters.devnet.network import Devnet
from fedrelay.adapters.devnet.state import WORKER_EVM, WORKER_SOLANA, WorkerKey
from fedrelay.adapters.evm import JobSpec, Signer, address_to_bytes32
from fedrelay.adapters.evm.hub import HubTaskState
from fedrelay.adapters.ledger.coordinator_store import LedgerCoordinatorStore
from fedrelay.coordinator.verification import JobWorkbench
from fedrelay.demo.assembly import DemoNetwork, check_fresh, start_devnet
from fedrelay.demo.coordinator import RestartableCoordinator
from fedrelay.demo.outcome import job_rounds, read_outcome
from fedrelay.demo.progress import DemoProgress, QuietProgress
from fedrelay.demo.report import CoordinatorRestart, DemoResult
from fedrelay.demo.settings import REJECTED_SLASH, DemoBackends, DemoError, DemoSettings
from fedrelay.demo.waiting import until
from fedrelay.ports.blobs import POSTER
from fedrelay.ports.coordinator_store import RoundReport
from fedrelay.protocol.rounds import Phase, RoundState, TaskStatus
from fedrelay.training import encode_blob

#: The phases of a round in which the coordinator holds work in progress.
_MID_ROUND = frozenset({Phase.ASSIGNING, Phase.COLLECTING, Phase.AGGREGATING})


def run_demo(
    settings: DemoSettings,
    state_dir: Path,
    progress: DemoProgress | None = None,
    backends: DemoBackends | None = None,
) -> DemoResult:
    """Run the whole demo (see :mod:`fedrelay.demo`) and return what it found.

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
        asyncio.run(check_fresh(chosen.database_url))
    started = time.monotonic()
    devnet = start_devnet(settings, state_dir, shown)
    with devnet:
        shown.step("funding the workers")
        keys = devnet.fund_workers(settings.evm_workers, settings.solana_workers)
        devnet_s = time.monotonic() - started
        scenario = _Scenario(settings, devnet, keys, state_dir, shown, chosen)
        result = asyncio.run(scenario.run())
    return replace(
        result,
        wall_time_s=time.monotonic() - started,
        timings_s={"devnet_s": devnet_s, **result.timings_s},
        backends=chosen.describe(),
    )


class _Scenario:
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
        self.progress = progress
        self.network = DemoNetwork(devnet, keys, state_dir, progress, backends)
        self.config = settings.job_config()
        self.workbench = JobWorkbench(self.config)
        self.timings: dict[str, float] = {}
        self.restarts: list[CoordinatorRestart] = []

    async def run(self) -> DemoResult:
        """Start the services and workers, run the job, stop everything, read the outcome."""
        network = self.network
        try:
            relayer_url = await network.ledger("relayer")
            coordinator_url = await network.ledger("coordinator")
            await network.start_relayer(relayer_url)
            self.coordinator = await network.start_coordinator(coordinator_url)
            store = network.observe_coordinator(coordinator_url)
            await network.start_workers(self.settings, self.workbench, self.coordinator.url, store)
            posted = time.monotonic()
            job_id = await self._post_job()
            await self._follow(store, job_id)
            self.timings["job_s"] = time.monotonic() - posted
            await self._await_settlements(store, job_id)
            self.timings["settlements_s"] = time.monotonic() - posted - self.timings["job_s"]
            await network.stop_workers()
            outcome = await read_outcome(network, self.settings, store, job_id, relayer_url)
        finally:
            await network.close()
        return replace(outcome, timings_s=dict(self.timings), restarts=tuple(self.restarts))

    async def _post_job(self) -> int:
        self.progress.step("posting the job on the coordinator chain")
        network = self.network
        model = encode_blob(self.workbench.initial_model())
        model_name = await network.blobs.put(model, domain=POSTER)
        config_name = await network.blobs.put(self.config.to_bytes(), domain=POSTER)
        poster = Signer(network.devnet.key_file("owner").read_text().strip())
        # Slashed stake goes back to the poster: its EVM address, and on Solana the devnet's
        # admin account standing in for the poster's.
        solana_recipient = Pubkey.from_string(network.info.accounts["solana-admin"])
        spec = JobSpec(
            model_hash=bytes.fromhex(model_name),
            config_hash=bytes.fromhex(config_name),
            num_rounds=self.settings.rounds,
            workers_per_round=self.settings.workers,
            reward_per_round=self.settings.reward_per_round,
            min_stake=REJECTED_SLASH,
            worker_chains=(
                network.info.chain(WORKER_EVM).wormhole_chain_id,
                network.info.chain(WORKER_SOLANA).wormhole_chain_id,
            ),
            rejected_slash=REJECTED_SLASH,
            slash_recipients=(address_to_bytes32(poster.address), bytes(solana_recipient)),
            release_after=3600,
            progress_timeout=3600,
        )
        posted = await asyncio.to_thread(network.market.post_job, poster, spec)
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
                await self._restart_coordinator(self.coordinator, state)
            report = await store.report(job_id, state.round)
            accuracy = await self._last_accuracy(store, job_id)
            self.progress.round(state, accuracy)
            if (state.round, state.phase.value) not in shown:
                shown.add((state.round, state.phase.value))
                if state.phase is Phase.PROPOSED and report is not None:
                    self._note_round(state, report)
            return state.phase is Phase.COMPLETED

        await until(completed, self.settings.timeout_s, f"job {job_id} to complete")

    async def _restart_coordinator(
        self, coordinator: RestartableCoordinator, state: RoundState
    ) -> None:
        """Stop the coordinator mid-round and start a new one on the same ledger."""
        self.progress.step(
            f"restarting the coordinator in round {state.round} ({state.phase.value})"
        )
        stopped = time.monotonic()
        await coordinator.stop()
        await coordinator.start()
        down = time.monotonic() - stopped
        self.restarts.append(CoordinatorRestart(state.round, state.phase.value, round(down, 2)))
        self.progress.note(
            f"coordinator restarted after {down:.1f} s down; it resumes from the ledger"
        )

    def _note_round(self, state: RoundState, report: RoundReport) -> None:
        slashed = [a for a in state.assignments if a.status is TaskStatus.SLASHED]
        caught = (
            "; ".join(f"{self.network.name_of(a.worker)} slashed: {a.reason}" for a in slashed)
            or "nobody slashed"
        )
        accuracy = f"{report.accuracy:.4f}" if report.accuracy is not None else "-"
        self.progress.note(f"round {state.round} proposed: accuracy {accuracy}; {caught}")

    async def _last_accuracy(self, store: LedgerCoordinatorStore, job_id: int) -> float | None:
        found = [r.accuracy for r in await store.reports(job_id) if r.accuracy is not None]
        return found[-1] if found else None

    async def _await_settlements(self, store: LedgerCoordinatorStore, job_id: int) -> None:
        """Wait until every task of every round is settled on its worker chain."""
        self.progress.step("relaying the last settlements to the worker chains")
        network = self.network
        tasks = [
            (state.round, a.worker)
            for state in await job_rounds(store, job_id, self.settings.rounds)
            for a in state.assignments
        ]
        evm_chain = network.info.chain(WORKER_EVM).wormhole_chain_id

        async def settled() -> bool:
            for round_number, ref in tasks:
                if ref.chain == evm_chain:
                    task = await asyncio.to_thread(network.hub.task, job_id, round_number, ref.key)
                    if task.state is not HubTaskState.SETTLED:
                        return False
                else:
                    account = await network.program.fetch_task(job_id, round_number, ref.key)
                    if not account.settled:
                        return False
            return True

        await until(settled, 180, "every ROUND_SETTLED to reach the worker chains", interval=1.0)
