"""The coordinator service: follows JobMarket and drives every job's rounds to completion.

Each :meth:`CoordinatorService.step`:

1. **follows** the chain from the stored cursor: ``JobPosted`` opens a job, ``WorkerRegistered``
   registers a worker (and records its stake if none is known yet), ``StakeUpdated`` records
   the worker's current stake (newer nonces only), ``TaskRefused`` drops the refused task with no
   fault, ``UpdatesReceived`` records commitments, ``RoundChallenged`` reopens
   aggregation, ``RoundSettled`` closes the round and opens the next (its block seeds the next
   draw), ``SlashDisputed`` is answered with the slash's evidence
   (:mod:`fedrelay.coordinator.evidence`); the cursor advances after each batch of blocks;
2. **advances** every active job one phase where it can (:mod:`fedrelay.protocol.rounds`):
   POSTED draws workers (:mod:`fedrelay.coordinator.selection`) and calls ``assignTasks``;
   COLLECTING
   closes at the deadline; AGGREGATING checks every committed update against its commitment,
   challenges a sample of transcripts and replays the answers, unmasks the secure sum when the
   job asks for it, aggregates and scores (:mod:`fedrelay.coordinator.phases.aggregate`), then
   calls ``finalizeRound``; PROPOSED settles once the challenge window is over.

Each phase is a module of :mod:`fedrelay.coordinator.phases` (``assign``, ``collect``,
``aggregate`` with ``unmask``, ``settle``); this module keeps the loop, the chain events and the
dispatch.

Every decision is saved in the store before the next, and each step is idempotent against
the chain (an assignment or proposal already on chain is not sent again), so a coordinator
started on the same store resumes where the previous one stopped and reaches the same outcome.
Handling an event twice is harmless: the state machine refuses the repeat.

Faults stay where they arise. Whatever is wrong with one worker's bytes is that worker's rejection,
saved at once (:mod:`fedrelay.coordinator.phases.aggregate`), so no restart reads them again. Each
job's step is isolated: an exception in one job's step is logged with the job and round, counted
(``fedrelay_coordinator_job_step_failures_total``) and puts that job alone on a backoff (doubling
from the poll interval up to ``max_backoff``, reset by its next successful step), so a job that
fails on the same saved state does not hot-loop and every other job keeps its pace. A job step that
failed because the chain, the ledger or the blob store is away or refused a call is counted too, and
tried again on the next step. A chain event whose handling fails for a reason other than the chain,
ledger or blob store being away is logged, counted and passed over (the cursor moves on), so one
event cannot stop the coordinator following the chain. :meth:`CoordinatorService.run` survives any
exception of a step.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from opentelemetry import trace
from sqlalchemy.exc import SQLAlchemyError

from fedrelay.coordinator.errors import CoordinatorServiceError, JobUnusable
from fedrelay.coordinator.evidence import answer_dispute
from fedrelay.coordinator.metrics import CoordinatorMetrics, coordinator_metrics
from fedrelay.coordinator.phases.aggregate import RoundAggregation, aggregate
from fedrelay.coordinator.phases.assign import assign, confirm_assignment
from fedrelay.coordinator.phases.collect import collect
from fedrelay.coordinator.phases.context import JobContext, RoundKeeper
from fedrelay.coordinator.phases.seeds import seed_value
from fedrelay.coordinator.phases.settle import settle
from fedrelay.coordinator.publishing import admit_job, evaluation_set, publish_job
from fedrelay.coordinator.rewards import RewardPublisher
from fedrelay.coordinator.settings import JobLimits
from fedrelay.coordinator.verification import JobWorkbench
from fedrelay.ports.blobs import BlobStore, BlobStoreError
from fedrelay.ports.coordinator_chain import (
    ChainError,
    ChainEvent,
    CoordinatorChain,
    JobPosted,
    RoundChallenged,
    RoundSettled,
    SlashDisputed,
    StakeChanged,
    TaskRefused,
    UpdateArrived,
    WorkerJoined,
)
from fedrelay.ports.coordinator_store import CoordinatorStore, RoundReport
from fedrelay.protocol.logfields import log_fields
from fedrelay.protocol.rounds import (
    Commitment,
    CommitmentReceived,
    NextRound,
    Phase,
    ProposalChallenged,
    RoundError,
    RoundEvent,
    RoundState,
    SettlementConfirmed,
    TaskStatus,
    WorkerRef,
    apply,
    open_job,
)
from fedrelay.protocol.rounds import TaskRefused as RefusedByWorkerChain
from fedrelay.protocol.tracing import round_attributes, round_context
from fedrelay.protocol.wormhole import task_id
from fedrelay.training.bundles import bundle_ref, loader_for_model
from fedrelay.training.trust import TrustPolicy

if TYPE_CHECKING:
    from fedrelay.protocol.job_config import JobConfig
    from fedrelay.training.torch_trainer import ModelFactory

log = logging.getLogger(__name__)
tracer = trace.get_tracer("fedrelay.coordinator")

DEFAULT_SOURCE = "coordinator:job-market"
DEFAULT_MAX_BACKOFF = 300.0
"""Seconds: the longest a job whose step keeps failing waits between tries."""

INFRASTRUCTURE_ERRORS = (ChainError, SQLAlchemyError, BlobStoreError, OSError)
"""The chain, the ledger or the blob store is away (or refused a call): retried, not a fault
of the job."""

__all__ = [
    "DEFAULT_MAX_BACKOFF",
    "DEFAULT_SOURCE",
    "CoordinatorService",
    "CoordinatorServiceError",
    "JobBackoff",
    "JobUnusable",
]


@dataclass(frozen=True)
class JobBackoff:
    """A job whose step failed: how many times in a row, and when it is stepped again.

    Attributes:
        failures: Failed steps in a row.
        retry_at: Unix seconds (the service's clock) before which the job is not stepped.
    """

    failures: int
    retry_at: float


class CoordinatorService:
    """Follows one JobMarket and drives its jobs (see the module docstring)."""

    #: The newest blocks already followed that each pass reads again (:meth:`follow`).
    REREAD_BLOCKS = 2

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
        max_backoff: float = DEFAULT_MAX_BACKOFF,
        limits: JobLimits | None = None,
        trust: TrustPolicy | None = None,
        rewards: RewardPublisher | None = None,
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
            max_backoff: Longest wait, in seconds, before a job whose step failed is stepped
                again (the wait doubles from ``poll_interval`` with each failure in a row).
            limits: The largest job taken on (default: ``FEDRELAY_COORDINATOR_MAX_*`` from the
                environment).
            trust: The model bundles (posters' code) this coordinator takes jobs of, replays
                and evaluates (default: none; built-in models need no trust).
            rewards: With a RewardDistributor as the market's rewards account: records the
                pooled rounds' rewards and proposes the cumulative roots (coordinator/rewards.py);
                None: rewards are credited to each worker's payout address.
        """
        self._chain = chain
        self._store = store
        self._blobs = blobs
        self._rewards = rewards
        self._chain_id = chain_id
        self._source = source
        self._start_block = start_block
        self._batch = batch_blocks
        self._followed: set[ChainEvent] = set()  # handled events of the blocks read again
        self._read_to: int | None = None  # the newest block this process has read
        self._floor: int | None = None  # the first block this process read (re-reads stop there)
        self._poll = poll_interval
        self._clock = clock
        self._metrics = metrics or coordinator_metrics()
        self._limits = limits if limits is not None else JobLimits()
        self._trust = trust if trust is not None else TrustPolicy()
        #: Admitted jobs' model bundle blobs by hash, read by the trusted bundle loader.
        self._bundles: dict[str, bytes] = {}
        self._keeper = RoundKeeper(chain, store, blobs, self._metrics)
        self._contexts: dict[int, JobContext] = {}
        self._aggregations: dict[int, RoundAggregation] = {}
        self._waiting: set[tuple[int, int]] = set()
        self._max_backoff = max_backoff
        self._backoffs: dict[int, JobBackoff] = {}

    # --- running ------------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Step until ``stop`` is set; a step in progress finishes first (drain).

        A step that failed because the chain, the ledger or the blob store is away is logged
        and tried again after the poll interval: every step is idempotent, and the round's
        state is in the ledger, not in this process. Any other exception escaping a step is
        logged with its traceback and the loop goes on as well.
        """
        while not stop.is_set():
            try:
                await self.step()
            except INFRASTRUCTURE_ERRORS as exc:
                log.warning("coordinator step failed, retrying: %s: %s", type(exc).__name__, exc)
            except Exception:
                log.exception("coordinator step failed, retrying")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self._poll)

    async def step(self) -> None:
        """Follow the chain, then advance every active job by what is due now.

        Each job's advance is isolated (see the module docstring): its failure is logged,
        counted and backed off, and the other jobs are advanced all the same.
        """
        await self.follow()
        for job_id in await self._store.active_jobs():
            now = self._clock()
            backoff = self._backoffs.get(job_id)
            if backoff is not None and now < backoff.retry_at:
                continue
            round_number: int | None = None
            try:
                state = await self._store.get_round(job_id)
                round_number = state.round if state is not None else None
                await self._advance(job_id, state)
            except Exception as exc:
                self._job_failed(job_id, round_number, exc, now)
            else:
                self._backoffs.pop(job_id, None)
        if self._rewards is not None:
            await self._publish_rewards()

    async def _publish_rewards(self) -> None:
        """Propose the cumulative reward root when it is due; a failure is logged and tried
        again next step (the earnings are in the ledger)."""
        assert self._rewards is not None
        try:
            await self._rewards.publish()
        except Exception as exc:
            log.warning("reward root not proposed, tried again next step: %s", exc)
        try:
            await self._rewards.pay()
        except Exception as exc:
            log.warning("the workers' claims not sent, tried again next step: %s", exc)

    def _job_failed(
        self, job_id: int, round_number: int | None, exc: Exception, now: float
    ) -> None:
        self._metrics.job_step_failed(job_id, type(exc).__name__)
        with log_fields(job_id=job_id, round=round_number):
            if isinstance(exc, INFRASTRUCTURE_ERRORS):
                # A refused chain call or an absent ledger or blob store is not the job's fault:
                # it is retried on the next step, as the run loop retries a failed step.
                log.warning(
                    "job %d round %s: step failed, retried next step: %s: %s",
                    job_id, round_number, type(exc).__name__, exc,
                )  # fmt: skip
                return
            previous = self._backoffs.get(job_id)
            failures = previous.failures + 1 if previous is not None else 1
            delay = min(self._max_backoff, self._poll * 2.0 ** min(failures - 1, 30))
            self._backoffs[job_id] = JobBackoff(failures, now + delay)
            if isinstance(exc, JobUnusable):
                log.error("job %d cannot be driven (next try in %gs): %s", job_id, delay, exc)
            else:
                log.error(
                    "job %d round %s: step failed (%d in a row, next try in %gs)",
                    job_id, round_number, failures, delay, exc_info=exc,
                )  # fmt: skip

    def _now(self) -> int:
        return int(self._clock())

    async def _save_round(self, state: RoundState) -> None:
        await self._keeper.save_round(state)

    # --- following the chain ------------------------------------------------------------------

    async def follow(self) -> None:
        """Process the chain's new events up to its head, saving the cursor after each batch.

        The last :attr:`REREAD_BLOCKS` blocks this process followed before are read again: a
        node may answer ``eth_getLogs`` for its newest block before it serves that block's logs,
        and an event left out then would be lost (a commitment never seen, a settlement never
        recorded). An event handled in a pass before is passed over. A process's first pass
        reads from the cursor on, as before: it has handled nothing it could tell apart, and a
        challenge handled twice would reopen a round proposed since.
        """
        head = await self._chain.head()
        last = await self._store.cursor(self._source)
        if self._floor is None:  # this process's first pass: what it reads starts here
            self._floor = self._start_block if last is None else last + 1
        start = self._floor
        if last is not None and self._read_to is not None:
            start = max(start, min(last, self._read_to) + 1 - self.REREAD_BLOCKS)
        while start <= head.number:
            end = min(head.number, start + self._batch - 1)
            for event in await self._chain.events(start, end):
                if event in self._followed:
                    continue
                await self._follow_event(event)
                self._followed.add(event)
            if last is None or end > last:
                await self._store.save_cursor(self._source, self._chain_id, end)
                last = end
            start = end + 1
        self._read_to = max(head.number, self._read_to or 0)
        oldest = self._read_to - self.REREAD_BLOCKS  # events above it may be read again
        self._followed = {e for e in self._followed if e.block > oldest}

    async def _follow_event(self, event: ChainEvent) -> None:
        """Handle one event; a failure that is not the infrastructure's passes the event over."""
        try:
            await self._on_event(event)
        except INFRASTRUCTURE_ERRORS:
            raise  # the batch is read again once they are back (handling is idempotent)
        except Exception as exc:
            job_id = getattr(event, "job_id", None)
            round_number = getattr(event, "round", None)
            self._metrics.event_failed(type(event).__name__, type(exc).__name__)
            with log_fields(job_id=job_id, round=round_number):
                log.error("chain event %s passed over: it failed", event, exc_info=exc)

    async def _on_event(self, event: ChainEvent) -> None:
        match event:
            case WorkerJoined():
                await self._store.register_worker(event.worker)
                await self._store.record_stake(event.worker, event.stake, 0)
            case StakeChanged():
                await self._stake_changed(event)
            case TaskRefused():
                await self._task_refused(event)
            case SlashDisputed():
                await answer_dispute(self._keeper, event)
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
                if self._rewards is not None:
                    await self._rewards.settled(event)

    async def _worker(self, wanted: bytes) -> WorkerRef | None:
        """The registered worker whose id is ``wanted``."""
        return next((w for w in await self._store.workers() if w.worker_id == wanted), None)

    async def _stake_changed(self, event: StakeChanged) -> None:
        worker = await self._worker(event.worker_id)
        if worker is None:
            log.warning("stake change of unregistered worker %s ignored", event.worker_id.hex())
            return
        if await self._store.record_stake(worker, event.stake, event.nonce):
            log.info(
                "worker %s on chain %d: stake %d (%s, nonce %d)",
                worker.key.hex(),
                worker.chain,
                event.stake,
                event.reason.name,
                event.nonce,
            )

    async def _task_refused(self, event: TaskRefused) -> None:
        worker = await self._worker(event.worker_id)
        found = None if worker is None else await self._task_of(worker, event.task_id)
        if worker is None or found is None:
            log.info("refusal of task %s (no open task of ours) ignored", event.task_id.hex())
            return
        await self._refused(*found, worker, event.timestamp)

    async def _task_of(self, worker: WorkerRef, task: bytes) -> tuple[int, int] | None:
        """The (job, round) of ``worker``'s task ``task`` among the active rounds."""
        for job_id in await self._store.active_jobs():
            state = await self._store.get_round(job_id)
            if state is None:
                continue
            if task_id(job_id, state.round, worker.chain, worker.key) == task:
                return job_id, state.round
        return None

    async def _refused(self, job_id: int, round_number: int, worker: WorkerRef, at: int) -> None:
        """The worker chain refused ``worker``'s task: DROPPED with no fault (never slashed)."""
        state = await self._store.get_round(job_id, round_number)
        if state is None or all(a.worker != worker for a in state.assignments):
            return
        if state.assignment(worker).status is TaskStatus.DROPPED:
            return
        reason = "refused by its worker chain: the worker's stake no longer met the job's terms"
        await self._transition(
            job_id, round_number, RefusedByWorkerChain(round_number, worker, reason, at)
        )
        log.info(
            "job %d round %d: worker %s's task refused by its chain; dropped, not slashed",
            job_id,
            round_number,
            worker.key.hex(),
        )

    async def _open(self, event: JobPosted) -> None:
        if await self._store.get_round(event.job_id) is not None:
            return
        try:
            context = await self._context(event.job_id)
            # A job that draws from the beacon is refused here, on a chain that has none.
            await seed_value(self._chain, context.config, await self._chain.block(event.block))
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
            context.config.policy(job.num_rounds, window, job.missed_slash),
            job.model_hash,
            at=event.timestamp,
            first_round=job.current_round,
        )
        # Published before the round is saved: a crash in between replays this event.
        await publish_job(job, self._store, context.config)
        await self._store.save_report(RoundReport(job.job_id, state.round, event.block))
        await self._save_round(state)
        log.info("job %d opened: %d rounds from block %d", job.job_id, job.num_rounds, event.block)

    async def _commitment(self, event: UpdateArrived) -> None:
        state = await self._store.get_round(event.job_id, event.round)
        # AGGREGATING too: a commitment relayed after collection closed still clears its
        # worker of missing the deadline (see ``fedrelay.protocol.rounds``).
        if state is None or state.phase not in (
            Phase.ASSIGNING,
            Phase.COLLECTING,
            Phase.AGGREGATING,
        ):
            log.info(
                "commitment of %s for job %d round %d ignored (round past aggregation)",
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
            found.data_root,
            found.num_samples,
            found.train_loss,
            event.block,
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
        # The poster's blobs only, within this coordinator's limits (see publishing.py).
        config = await admit_job(job, self._blobs, self._store, self._limits, self._trust)
        ref = bundle_ref(config.model)
        if ref is not None and ref.bundle not in self._bundles:
            try:  # checked by admit_job; kept for the loader, which reads synchronously
                self._bundles[ref.bundle] = await self._blobs.get(ref.bundle)
            except BlobStoreError as exc:
                raise JobUnusable(f"its model bundle {ref.bundle}: {exc}") from None
        evaluation = await evaluation_set(config, self._blobs)
        workbench = JobWorkbench(config, evaluation, bundle_loader=self.bundle_loader(config))
        context = JobContext(job, config, workbench)
        self._contexts[job_id] = context
        return context

    def bundle_loader(self, config: JobConfig) -> Callable[[str], ModelFactory]:
        """The trusted ``bundle_loader`` of ``config``'s model (its bundle kept at admission)."""
        return loader_for_model(config.model, self._trust, self._bundles.__getitem__)

    async def advance(self, job_id: int) -> RoundState | None:
        """Do what is due for ``job_id``'s current round now; returns the new state."""
        return await self._advance(job_id, await self._store.get_round(job_id))

    async def _advance(self, job_id: int, state: RoundState | None) -> RoundState | None:
        if state is None or state.phase is Phase.COMPLETED:
            return state
        context = await self._context(job_id)
        now = self._now()
        with (
            log_fields(job_id=job_id, round=state.round),
            tracer.start_as_current_span(  # in the round's trace (derived, see tracing.py)
                f"coordinator.{state.phase.value}",
                context=round_context(self._chain_id, job_id, state.round),
                attributes=round_attributes(job_id, state.round),
            ),
        ):
            match state.phase:
                case Phase.POSTED:
                    return await assign(self._keeper, context, state, now, self._waiting)
                case Phase.ASSIGNING:
                    return await confirm_assignment(self._keeper, context, state, now)
                case Phase.COLLECTING:
                    collected = await collect(self._keeper, state, now)
                    if collected.phase is Phase.AGGREGATING:
                        return await self._aggregate(context, collected, now)
                    return collected
                case Phase.AGGREGATING:
                    return await self._aggregate(context, state, now)
                case Phase.PROPOSED:
                    return await settle(self._keeper, state, now)
                case Phase.SETTLED:
                    following = apply(state, NextRound(state.round, now))
                    await self._save_round(following)
                    return following

    async def _aggregate(self, context: JobContext, state: RoundState, now: int) -> RoundState:
        return await aggregate(self._keeper, context, state, now, self._aggregations)
