"""The demo's scenario: post one job, follow it to completion, and read back what happened.

:func:`run_demo` starts the devnet and the demo's network (:mod:`fedrelay.demo.assembly`), posts
a job on the digits data with a non-IID (Dirichlet) split, waits until the coordinator reports
the job COMPLETED and every settlement has reached the worker chains, and reads the outcome
back (:mod:`fedrelay.demo.outcome`). On request it restarts the coordinator in the middle of
one round, as a crash would, to show the job resumes from the ledger.

With ``private_data`` (:mod:`fedrelay.demo.private`) the digits job trains on each worker's own
shard, written as a Parquet file into the worker's folder, and a challenged worker opens the
examples of the replayed segment. With a workload (:mod:`fedrelay.demo.workloads`) the job
trains on data each worker owns: the workload's data is written into the state folder first
(one folder per worker, each worker's node reading only its own, as ``fedrelay worker run
--data`` would), the poster uploads the evaluation set into the coordinator's evaluation domain
(kept, never served) and, for LoRA, the base weights, and the report gives the workload's
metric per round and the update blobs' sizes. The private digits' evaluation set (their
held-out split) goes to the evaluation domain the same way.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, replace
from pathlib import Path

from solders.pubkey import Pubkey

from fedrelay.adapters.devnet.network import Devnet
from fedrelay.adapters.devnet.state import WORKER_EVM, WORKER_SOLANA, WorkerKey
from fedrelay.adapters.evm import JobSpec, Signer, address_to_bytes32, hub_settlements
from fedrelay.adapters.ledger.coordinator_store import LedgerCoordinatorStore
from fedrelay.coordinator.verification import JobWorkbench
from fedrelay.demo.assembly import DemoNetwork, check_fresh, start_devnet
from fedrelay.demo.coordinator import RestartableCoordinator
from fedrelay.demo.outcome import job_rounds, read_outcome
from fedrelay.demo.private import PrivateDigits, prepare_private_data, privacy_costs
from fedrelay.demo.progress import DemoProgress, QuietProgress
from fedrelay.demo.report import CoordinatorRestart, DemoResult
from fedrelay.demo.settings import REJECTED_SLASH, DemoBackends, DemoError, DemoSettings
from fedrelay.demo.waiting import until
from fedrelay.demo.workloads import PreparedWorkload, workload
from fedrelay.ports.blobs import EVALUATION, POSTER
from fedrelay.ports.coordinator_store import RoundReport
from fedrelay.protocol.job_config import JobConfig
from fedrelay.protocol.rounds import Phase, RoundState, TaskStatus
from fedrelay.protocol.wormhole import task_id
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
    job = demo_job(settings, state_dir, shown)
    devnet = start_devnet(settings, state_dir, shown)
    with devnet:
        shown.step("funding the workers")
        keys = devnet.fund_workers(settings.evm_workers, settings.solana_workers)
        devnet_s = time.monotonic() - started
        scenario = _Scenario(settings, job, devnet, keys, state_dir, shown, chosen)
        result = asyncio.run(scenario.run())
    return replace(
        result,
        wall_time_s=time.monotonic() - started,
        timings_s={"devnet_s": devnet_s, **result.timings_s},
        backends=chosen.describe(),
    )


@dataclass(frozen=True)
class DemoJob:
    """The job the demo posts: its configuration, and the workload or the workers' own digits
    written out (both None for the digits job on published data)."""

    config: JobConfig
    workload: PreparedWorkload | None = None
    private: PrivateDigits | None = None

    @property
    def worker_data(self) -> tuple[Path, ...] | None:
        """Each worker's own data folder (None: the tasks name published shards)."""
        if self.workload is not None:
            return self.workload.worker_data
        return self.private.worker_data if self.private is not None else None

    @property
    def evaluation(self) -> bytes | None:
        """The poster's evaluation blob (None: the digits' own held-out split)."""
        if self.workload is not None:
            return self.workload.evaluation
        return self.private.evaluation if self.private is not None else None

    def privacy_costs(self) -> tuple[float, ...]:
        """Each worker's privacy cost on the private digits (empty for other jobs)."""
        if self.private is None:
            return ()
        return privacy_costs(self.config, self.private.examples)


def demo_job(settings: DemoSettings, state_dir: Path, progress: DemoProgress) -> DemoJob:
    """The demo's job; a workload's data, or the workers' own digits, is written under
    ``state_dir / "data"`` first.

    A workload's configuration gets the demo's fields (:meth:`DemoSettings.workload_fields`)
    and every segment of a transcript opened, so a cheat is caught whatever segment it hides in
    and the slash covers the reward.

    Raises:
        DemoError: The workload cannot be prepared for this many workers.
    """
    if settings.private_data:
        progress.step("writing each worker's digits shard into its own folder (Parquet)")
        try:
            private = prepare_private_data(state_dir / "data", settings.workers)
        except ValueError as exc:
            raise DemoError(f"the private digits: {exc}") from None
        return DemoJob(settings.job_config(), private=private)
    if settings.workload is None:
        return DemoJob(settings.job_config())
    chosen = workload(settings.workload)
    progress.step(f"writing the {chosen.name} workload's data: {chosen.title}")
    try:
        prepared = chosen.prepare(
            state_dir / "data", settings.workers, split=settings.split,  # type: ignore[arg-type]
            job=settings.workload_fields(),
        )  # fmt: skip
    except ValueError as exc:
        raise DemoError(f"the {chosen.name} workload: {exc}") from None
    fields = json.loads(prepared.config.to_bytes())
    config = JobConfig.model_validate(
        {**fields, "challenge_segments": prepared.config.training.segments}
    )
    return DemoJob(config, replace(prepared, config=config))


class _Scenario:
    """The asynchronous part of the demo, over a started devnet."""

    def __init__(
        self,
        settings: DemoSettings,
        job: DemoJob,
        devnet: Devnet,
        keys: tuple[WorkerKey, ...],
        state_dir: Path,
        progress: DemoProgress,
        backends: DemoBackends,
    ) -> None:
        self.settings = settings
        self.progress = progress
        self.network = DemoNetwork(devnet, keys, state_dir, progress, backends)
        self.job = job
        self.config = job.config
        self.workbench = JobWorkbench(self.config, job.evaluation)
        self.timings: dict[str, float] = {}
        self.restarts: list[CoordinatorRestart] = []
        self.initial_metric: float | None = None

    async def run(self) -> DemoResult:
        """Start the services and workers, run the job, stop everything, read the outcome."""
        network = self.network
        try:
            relayer_url = await network.ledger("relayer")
            coordinator_url = await network.ledger("coordinator")
            await network.start_relayer(relayer_url, self.settings.attestation)
            self.coordinator = await network.start_coordinator(
                coordinator_url, self.settings.rewards
            )
            await network.start_proposal_watch()
            store = network.observe_coordinator(coordinator_url)
            await network.start_workers(
                self.settings, self.coordinator.url, store, self.job.worker_data
            )
            posted = time.monotonic()
            job_id = await self._post_job()
            await self._follow(store, job_id)
            self.timings["job_s"] = time.monotonic() - posted
            await self._await_settlements(store, job_id)
            self.timings["settlements_s"] = time.monotonic() - posted - self.timings["job_s"]
            await network.stop_workers()
            outcome = await read_outcome(
                network, self.settings, store, job_id, relayer_url, self.job.workload,
                self.job.privacy_costs(),
            )  # fmt: skip
        finally:
            await network.close()
        verdicts: dict[str, int] = {}
        for finding in network.proposal_findings:
            verdicts[finding.verdict.value] = verdicts.get(finding.verdict.value, 0) + 1
        return replace(
            outcome,
            proposal_watch=verdicts,
            timings_s=dict(self.timings),
            restarts=tuple(self.restarts),
            initial_metric=self.initial_metric,
        )

    async def _post_job(self) -> int:
        self.progress.step("posting the job on the coordinator chain")
        network = self.network
        prepared = self.job.workload
        fetch = prepared.fetch_blob if prepared is not None else None
        if prepared is not None:
            for blob in prepared.poster_blobs.values():
                await network.blobs.put(blob, domain=POSTER)
        if self.job.evaluation is not None:
            # The coordinator keeps the evaluation set and never serves it to a worker.
            await network.blobs.put(self.job.evaluation, domain=EVALUATION)
        initial = self.workbench.initial_model(fetch)
        if prepared is not None:  # what a workload's perplexity factor counts from
            self.initial_metric = (await asyncio.to_thread(self.workbench.evaluate, initial))[1]
        model = encode_blob(initial)
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
            reward_per_round=self.settings.posted_reward,
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
        kind = {"private": "on the workers' own digits", "secure": "secure aggregation"}
        extra = kind.get(self.settings.mode)
        self.progress.note(
            f"job {posted.job_id} posted: {self.settings.rounds} rounds x "
            f"{self.settings.workers} workers, {self.config.strategy}"
            f"{f', {extra}' if extra else ''}, every transcript challenged"
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

        def settled_on_hub() -> set[bytes]:
            # A WorkerHub task is rewritten by its job's round two on once settled, so what
            # shows a task settled is its entry in a TasksSettled event (ROUND_SETTLED applied),
            # not its slot.
            latest = network.hub.chain.w3.eth.block_number
            found = network.hub.events(0, latest)
            return {s.task_id for s in hub_settlements(found, evm_chain)}

        async def settled() -> bool:
            on_hub = await asyncio.to_thread(settled_on_hub)
            for round_number, ref in tasks:
                if ref.chain == evm_chain:
                    if task_id(job_id, round_number, evm_chain, ref.key) not in on_hub:
                        return False
                else:
                    account = await network.program.fetch_task(job_id, round_number, ref.key)
                    if not account.settled:
                        return False
            return True

        await until(settled, 180, "every ROUND_SETTLED to reach the worker chains", interval=1.0)
