"""The coordinator service: follows JobMarket and drives every job's rounds to completion.

Each :meth:`CoordinatorService.step`:

1. **follows** the chain from the stored cursor: ``JobPosted`` opens a job, ``WorkerRegistered``
   registers a worker, ``UpdateReceived`` records a commitment, ``RoundChallenged`` reopens
   aggregation, ``RoundSettled`` closes the round and opens the next (its block seeds the next
   draw); the cursor advances after each batch of blocks;
2. **advances** every active job one phase where it can (:mod:`fedrelay.protocol.rounds`):
   POSTED draws workers (:mod:`fedrelay.coordinator.selection`) and calls ``assignTasks``;
   COLLECTING
   closes at the deadline; AGGREGATING checks every committed update against its commitment,
   challenges a sample of transcripts and replays the answers, unmasks the secure sum when the
   job asks for it, aggregates and scores (:mod:`fedrelay.coordinator.aggregating`), then calls
   ``finalizeRound``; PROPOSED settles once the challenge window is over.

Every decision is saved in the store before the next, and each step is idempotent against
the chain (an assignment or proposal already on chain is not sent again), so a coordinator
started on the same store resumes where the previous one stopped and reaches the same outcome.
Handling an event twice is harmless: the state machine refuses the repeat.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import replace

from opentelemetry import trace
from sqlalchemy.exc import SQLAlchemyError

from fedrelay.coordinator.aggregating import JobContext, ModelUnavailable, RoundAggregation
from fedrelay.coordinator.metrics import CoordinatorMetrics, coordinator_metrics
from fedrelay.coordinator.selection import Candidate, NotEnoughWorkers, round_seed, select_workers
from fedrelay.coordinator.verification import JobWorkbench
from fedrelay.ports.blobs import BlobNotFound, BlobStore, BlobStoreError
from fedrelay.ports.coordinator_chain import (
    ChainError,
    ChainEvent,
    ChainRoundPhase,
    CoordinatorChain,
    JobPosted,
    RoundChallenged,
    RoundSettled,
    UpdateArrived,
    WorkerJoined,
)
from fedrelay.ports.coordinator_store import CoordinatorStore, RoundReport
from fedrelay.protocol.job_config import InvalidJobConfig, JobConfig
from fedrelay.protocol.rounds import (
    AggregateProposed,
    AssignmentConfirmed,
    Commitment,
    CommitmentReceived,
    NextRound,
    Phase,
    ProposalChallenged,
    RoundError,
    RoundEvent,
    RoundState,
    SettlementConfirmed,
    TasksAssigned,
    Tick,
    apply,
    can_settle,
    open_job,
)
from fedrelay.protocol.tracing import round_attributes, round_context
from fedrelay.protocol.wormhole import Task

log = logging.getLogger(__name__)
tracer = trace.get_tracer("fedrelay.coordinator")

DEFAULT_SOURCE = "coordinator:job-market"


class CoordinatorServiceError(Exception):
    """Base of the service's errors."""


class JobUnusable(CoordinatorServiceError):
    """A job's configuration or model cannot be used; the job is left alone."""


class CoordinatorService:
    """Follows one JobMarket and drives its jobs (see the module docstring)."""

    def __init__(
        self,
        chain: CoordinatorChain,
        store: CoordinatorStore,
        blobs: BlobStore,
        *,
        chain_id: int = 2,
        source: str = DEFAULT_SOURCE,
        start_block: int = 0,
        batch_blocks: int = 1000,
        poll_interval: float = 1.0,
        clock: Callable[[], float] = time.time,
        metrics: CoordinatorMetrics | None = None,
    ) -> None:
        """Wire the service.

        Args:
            chain: The coordinator chain.
            store: Round states, registrations, uploads, challenges, cursor and reports (shared
                with the HTTP API).
            blobs: Models, configurations, updates and checkpoints.
            chain_id: The coordinator chain's Wormhole chain id (for the cursor record).
            source: The cursor's name.
            start_block: Where to start following when there is no cursor yet.
            batch_blocks: Blocks read per event query.
            poll_interval: Seconds between steps in :meth:`run`.
            clock: Unix seconds now.
            metrics: Where rounds, workers and payouts are counted (default: the process
                registry).
        """
        self._chain = chain
        self._store = store
        self._blobs = blobs
        self._chain_id = chain_id
        self._source = source
        self._start_block = start_block
        self._batch = batch_blocks
        self._poll = poll_interval
        self._clock = clock
        self._metrics = metrics or coordinator_metrics()
        self._contexts: dict[int, JobContext] = {}
        self._aggregations: dict[int, RoundAggregation] = {}
        self._waiting: set[tuple[int, int]] = set()

    # --- running ------------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Step until ``stop`` is set; a step in progress finishes first (drain).

        A step that failed because the chain, the ledger or the blob store is away is logged
        and tried again after the poll interval: every step is idempotent, and the round's
        state is in the ledger, not in this process.
        """
        while not stop.is_set():
            try:
                await self.step()
            except (ChainError, SQLAlchemyError, BlobStoreError, OSError) as exc:
                log.warning("coordinator step failed, retrying: %s: %s", type(exc).__name__, exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self._poll)

    async def step(self) -> None:
        """Follow the chain, then advance every active job by what is due now."""
        await self.follow()
        for job_id in await self._store.active_jobs():
            try:
                await self.advance(job_id)
            except JobUnusable as exc:
                log.error("job %d cannot be driven: %s", job_id, exc)
            except ChainError as exc:
                # One job's refused call must not hold up the others; it is retried next step.
                log.warning("job %d: %s", job_id, exc)

    def _now(self) -> int:
        return int(self._clock())

    async def _save_round(self, state: RoundState) -> None:
        await self._store.save_round(state)
        self._metrics.observe_round(state)

    # --- following the chain ------------------------------------------------------------------

    async def follow(self) -> None:
        """Process the chain's new events up to its head, saving the cursor after each batch."""
        head = await self._chain.head()
        last = await self._store.cursor(self._source)
        start = self._start_block if last is None else last + 1
        while start <= head.number:
            end = min(head.number, start + self._batch - 1)
            for event in await self._chain.events(start, end):
                await self._on_event(event)
            await self._store.save_cursor(self._source, self._chain_id, end)
            start = end + 1

    async def _on_event(self, event: ChainEvent) -> None:
        match event:
            case WorkerJoined():
                await self._store.register_worker(event.worker)
            case JobPosted():
                await self._open(event)
            case UpdateArrived():
                await self._commitment(event)
            case RoundChallenged():
                await self._transition(
                    event.job_id, event.round, ProposalChallenged(event.round, event.timestamp)
                )
            case RoundSettled():
                await self._settled(event)

    async def _open(self, event: JobPosted) -> None:
        if await self._store.get_round(event.job_id) is not None:
            return
        try:
            context = await self._context(event.job_id)
        except JobUnusable as exc:
            log.error("job %d is not taken on: %s", event.job_id, exc)
            return
        job = context.job
        if not job.open:
            log.info("job %d is no longer open on chain; not taken on", job.job_id)
            return
        window = await self._chain.challenge_window()
        state = open_job(
            job.job_id,
            context.config.policy(job.num_rounds, window),
            job.model_hash,
            at=event.timestamp,
            first_round=job.current_round,
        )
        await self._store.save_report(RoundReport(job.job_id, state.round, event.block))
        await self._save_round(state)
        for name in (job.model_hash.hex(), job.config_hash.hex()):
            await self._store.publish_blob(name)
        log.info("job %d opened: %d rounds from block %d", job.job_id, job.num_rounds, event.block)

    async def _commitment(self, event: UpdateArrived) -> None:
        state = await self._store.get_round(event.job_id, event.round)
        if state is None or state.phase not in (Phase.ASSIGNING, Phase.COLLECTING):
            log.info(
                "commitment of %s for job %d round %d ignored (round not collecting)",
                event.worker.key.hex(),
                event.job_id,
                event.round,
            )
            return
        found = await self._chain.commitment(event.job_id, event.round, event.worker)
        commitment = Commitment(
            event.worker,
            found.update_hash,
            found.transcript_root,
            found.num_samples,
            found.train_loss,
        )
        await self._transition(
            event.job_id, event.round, CommitmentReceived(event.round, commitment, event.timestamp)
        )

    async def _transition(self, job_id: int, round_number: int, event: RoundEvent) -> None:
        state = await self._store.get_round(job_id, round_number)
        if state is None:
            return
        try:
            await self._save_round(apply(state, event))
        except RoundError as exc:
            log.info("job %d round %d: %s ignored: %s", job_id, round_number, event, exc)

    async def _settled(self, event: RoundSettled) -> None:
        state = await self._store.get_round(event.job_id, event.round)
        if state is None or state.phase is not Phase.PROPOSED:
            return
        # The chain's clock decided the window was over; ours may lag it by a little.
        at = max(event.timestamp, state.challenge_ends or 0)
        settled = apply(state, SettlementConfirmed(event.round, at))
        if not settled.is_last_round:
            report = RoundReport(event.job_id, event.round + 1, event.block)
            await self._store.save_report(report)
        await self._save_round(settled)
        closing = await self._store.report(event.job_id, event.round)
        self._metrics.round_settled(settled, closing.rewards if closing is not None else {})
        await self._save_round(apply(settled, NextRound(event.round, at)))
        log.info("job %d round %d settled in block %d", event.job_id, event.round, event.block)

    # --- jobs ---------------------------------------------------------------------------------

    async def _context(self, job_id: int) -> JobContext:
        if job_id in self._contexts:
            return self._contexts[job_id]
        job = await self._chain.job(job_id)
        try:
            config = JobConfig.from_bytes(await self._blobs.get(job.config_hash.hex()))
        except BlobNotFound:
            raise JobUnusable(
                f"its configuration blob {job.config_hash.hex()} is not in the blob store"
            ) from None
        except (InvalidJobConfig, BlobStoreError) as exc:
            raise JobUnusable(str(exc)) from None
        if job.workers_per_round > config.data.shards:
            raise JobUnusable(
                f"{job.workers_per_round} workers per round but only {config.data.shards} data "
                "shards in its configuration"
            )
        context = JobContext(job, config, JobWorkbench(config))
        self._contexts[job_id] = context
        return context

    async def advance(self, job_id: int) -> RoundState | None:
        """Do what is due for ``job_id``'s current round now; returns the new state."""
        state = await self._store.get_round(job_id)
        if state is None or state.phase is Phase.COMPLETED:
            return state
        context = await self._context(job_id)
        now = self._now()
        with tracer.start_as_current_span(  # in the round's trace (derived, see tracing.py)
            f"coordinator.{state.phase.value}",
            context=round_context(self._chain_id, job_id, state.round),
            attributes=round_attributes(job_id, state.round),
        ):
            match state.phase:
                case Phase.POSTED:
                    return await self._assign(context, state, now)
                case Phase.ASSIGNING:
                    return await self._confirm_assignment(state, now)
                case Phase.COLLECTING:
                    collected = await self._collect(state, now)
                    if collected.phase is Phase.AGGREGATING:
                        return await self._aggregate(context, collected, now)
                    return collected
                case Phase.AGGREGATING:
                    return await self._aggregate(context, state, now)
                case Phase.PROPOSED:
                    return await self._settle(state, now)
                case Phase.SETTLED:
                    following = apply(state, NextRound(state.round, now))
                    await self._save_round(following)
                    return following

    async def _report(self, state: RoundState) -> RoundReport:
        report = await self._store.report(state.job_id, state.round)
        if report is None:
            # Opened by a coordinator that kept no report (should not happen): seed from the head.
            head = await self._chain.head()
            report = RoundReport(state.job_id, state.round, head.number)
            await self._store.save_report(report)
        return report

    async def _assign(self, context: JobContext, state: RoundState, now: int) -> RoundState:
        job = context.job
        report = await self._report(state)
        opening = await self._chain.block(report.opening_block)
        seed = round_seed(opening.hash, job.job_id, state.round)
        candidates = [Candidate(w, await self._chain.stake(w)) for w in await self._store.workers()]
        try:
            selection = select_workers(
                seed,
                candidates,
                job.workers_per_round,
                min_stake=job.min_stake,
                allowed_chains=job.worker_chains,
            )
        except NotEnoughWorkers as exc:
            if (job.job_id, state.round) not in self._waiting:
                log.info("job %d round %d waits for workers: %s", job.job_id, state.round, exc)
                self._waiting.add((job.job_id, state.round))
            return state
        self._waiting.discard((job.job_id, state.round))
        deadline = now + context.config.collect_seconds
        assigned = apply(
            state, TasksAssigned(state.round, selection.workers, job.config_hash, deadline, now)
        )
        await self._store.save_report(replace(report, seed=seed.hex()))
        await self._save_round(assigned)
        log.info(
            "job %d round %d: %d workers drawn from seed %s",
            job.job_id,
            state.round,
            len(selection.workers),
            seed.hex(),
        )
        return await self._confirm_assignment(assigned, now)

    async def _confirm_assignment(self, state: RoundState, now: int) -> RoundState:
        assert state.deadline is not None
        by_chain: dict[int, list[Task]] = {}
        for a in state.assignments:
            found = await self._chain.commitment(state.job_id, state.round, a.worker)
            if not found.assigned:
                by_chain.setdefault(a.worker.chain, []).append(Task(a.worker.key, a.shard))
        for worker_chain, tasks in sorted(by_chain.items()):
            size = await self._chain.max_batch(worker_chain)
            for start in range(0, len(tasks), max(size, 1)):
                batch = tasks[start : start + max(size, 1)]
                await self._chain.assign_tasks(state.job_id, worker_chain, state.deadline, batch)
        # A commitment may have arrived meanwhile and moved the round on already.
        current = await self._store.get_round(state.job_id, state.round) or state
        if current.phase is not Phase.ASSIGNING:
            return current
        confirmed = apply(current, AssignmentConfirmed(state.round, now))
        await self._save_round(confirmed)
        return confirmed

    async def _collect(self, state: RoundState, now: int) -> RoundState:
        ticked = apply(state, Tick(now))
        if ticked is not state:
            await self._save_round(ticked)
        return ticked

    async def _settle(self, state: RoundState, now: int) -> RoundState:
        if not can_settle(state, now):
            return state
        on_chain = await self._chain.round(state.job_id, state.round)
        if on_chain.phase is ChainRoundPhase.PROPOSED and now >= on_chain.challenge_deadline:
            await self._chain.settle_round(state.job_id, state.round)
            log.info("job %d round %d: settleRound sent", state.job_id, state.round)
        return state

    # --- aggregation --------------------------------------------------------------------------

    async def _aggregate(self, context: JobContext, state: RoundState, now: int) -> RoundState:
        report = await self._report(state)
        if report.collection_closed_at is None:
            report = replace(report, collection_closed_at=state.updated_at)
            await self._store.save_report(report)
        work = self._aggregations.get(state.job_id)
        if work is None:
            work = self._aggregations[state.job_id] = RoundAggregation(
                context, self._store, self._blobs
            )
        try:
            state, proposal = await work.work(state, report, now)
        except ModelUnavailable as exc:
            raise JobUnusable(str(exc)) from None
        if proposal is None:
            return state
        model_hash = proposal.model_hash
        on_chain = await self._chain.round(state.job_id, state.round)
        if on_chain.phase is ChainRoundPhase.COLLECTING:
            await self._chain.finalize_round(
                state.job_id, state.round, model_hash, proposal.results
            )
        elif on_chain.phase is ChainRoundPhase.PROPOSED:
            model_hash = on_chain.proposed_model_hash  # proposed before a restart
        proposed = apply(state, AggregateProposed(state.round, model_hash, now))
        await self._store.save_report(
            replace(
                report,
                model_hash=model_hash.hex(),
                loss=proposal.loss,
                accuracy=proposal.accuracy,
                scores=proposal.scores,
                rewards=proposal.rewards,
                server_state=proposal.server_state,
                note=proposal.note,
            )
        )
        await self._save_round(proposed)
        log.info(
            "job %d round %d proposed model %s (accuracy %.4f)",
            state.job_id,
            state.round,
            model_hash.hex(),
            proposal.accuracy,
        )
        return proposed
