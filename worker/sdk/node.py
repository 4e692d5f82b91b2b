"""The worker node: follow assignments on its chain, train, upload, commit, answer challenges.

One :meth:`WorkerNode.step` is one pass over everything there is to do; :meth:`WorkerNode.run`
repeats it until asked to stop. Every finished stage of a task is written to the state file
before the next begins, so a node stopped at any point resumes where it was, and never commits
a task twice (it asks the chain first). The stages' work lives in
:mod:`fedrelay.worker.sdk.steps` (register, train, mask, upload, commit, publish, answer); this
module sequences them per task and keeps the loop and the state file.

Stopping: a stop request is honoured between training segments (the unfinished run is dropped
and redone after a restart) and between stages; an upload or a commitment in flight completes.

Secure-aggregation secrets stay in memory: a node restarted after masking a round's update does
not take part in that round's unmasking; the other workers' shares (the threshold) cover it. Only
the round's masking key and self-mask seed are kept in the state file (a task record's
``mask_opening``), so that a challenge of the round can still be answered after a restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from httpx import HTTPError
from opentelemetry import trace

from fedrelay.ports.worker_chain import StakeStatus, TaskKey, WorkerChain, WorkerChainError
from fedrelay.protocol.logfields import log_fields
from fedrelay.protocol.secagg import MaskedInput
from fedrelay.protocol.tracing import round_attributes, round_context
from fedrelay.protocol.wormhole import worker_id
from fedrelay.training import blob_hash
from fedrelay.training.trust import TrustPolicy
from fedrelay.worker.sdk.api_client import (
    CoordinatorClient,
    CoordinatorRequestError,
    DownloadMismatch,
)
from fedrelay.worker.sdk.errors import StopRequested, TaskRefused, WorkerError
from fedrelay.worker.sdk.progress import ProgressReporter, SilentProgress
from fedrelay.worker.sdk.shards import OwnData
from fedrelay.worker.sdk.state import StateStore, TaskRecord, TaskStage, WorkerState
from fedrelay.worker.sdk.steps import (
    answer,
    commit,
    mask,
    publish,
    register,
    selfcheck,
    train,
    upload,
)
from fedrelay.worker.sdk.steps.mask import KeyExchange, SecureRound
from fedrelay.worker.sdk.steps.record import record_offers
from fedrelay.worker.sdk.steps.train import TrainedUpdate

if TYPE_CHECKING:
    from fedrelay.training.models import BundleLoader


__all__ = [
    "DEFAULT_COORDINATOR_CHAIN",
    "StepReport",
    "StopRequested",
    "TrainedUpdate",
    "WorkerNode",
]

log = logging.getLogger(__name__)
_TRACER = trace.get_tracer("fedrelay.worker")

#: The coordinator chain's Wormhole id on the devnet and by default (rounds' traces derive from it).
DEFAULT_COORDINATOR_CHAIN = 2

_OPEN_STAGES = (TaskStage.ASSIGNED, TaskStage.TRAINED, TaskStage.UPLOADED)
# Failures of one pass that the next pass may not meet (a chain or coordinator unreachable).
_RETRYABLE = (WorkerError, CoordinatorRequestError, DownloadMismatch, HTTPError, OSError)


@dataclass(frozen=True)
class StepReport:
    """What one pass did.

    ``committed`` lists the tasks this pass committed (a signed commitment: when this pass found
    it recorded, by this node or another); ``recovered`` those it found already
    committed on chain (by an earlier run whose state file was lost); ``released`` those it
    released because they were still unsettled after their release time.
    """

    assigned: tuple[TaskKey, ...] = ()
    committed: tuple[TaskKey, ...] = ()
    abandoned: tuple[TaskKey, ...] = ()
    answered: tuple[str, ...] = ()
    settled: tuple[TaskKey, ...] = ()
    recovered: tuple[TaskKey, ...] = ()
    released: tuple[TaskKey, ...] = ()
    published: tuple[str, ...] = ()


class WorkerNode:
    """A GPU owner's worker on one chain, talking to one coordinator."""

    def __init__(
        self,
        chain: WorkerChain,
        api: CoordinatorClient,
        shards: OwnData | None,
        store: StateStore,
        *,
        device: str = "cpu",
        bundle_loader: BundleLoader | None = None,
        progress: ProgressReporter | None = None,
        clock: Callable[[], float] = time.time,
        poll_interval: float = 2.0,
        coordinator_chain: int = DEFAULT_COORDINATOR_CHAIN,
        trust: TrustPolicy | None = None,
        publish_after: float = 2.0,
        offer_commitments: bool = True,
    ) -> None:
        """Wire the node.

        Args:
            chain: The worker's chain backend.
            api: A client of the coordinator's API signed with the worker's key.
            shards: The worker's own data, for jobs that train on it (checked against the
                job's schema); None if it has none. A task on published data always trains
                the shard its task names of the job's partition, whatever this is.
            store: The local state file and blob directory.
            device: ``"cpu"`` (bit-exact replays) or ``"cuda"``.
            bundle_loader: Loads a model bundle for a job whose model is one, in place of the
                node's own trust policy (its ``trust``: a bundle job whose bundle it does not
                trust is refused before anything of it is imported). Zoo models are built
                from the job's spec.
            progress: Where phases are shown; nothing is shown by default.
            clock: Unix seconds now (deadlines are checked against it).
            poll_interval: Seconds between passes of :meth:`run` and between looks at peers.
            coordinator_chain: The coordinator chain's Wormhole id; the node's spans join the
                round's trace derived from it (see ``fedrelay.protocol.tracing``).
            trust: The model bundles this node runs (:mod:`fedrelay.training.trust`); by
                default none: a task of a job with a bundle is refused, built-in models run.
            publish_after: Seconds a commitment waits on its chain for others of its round
                before this node publishes them together (plus a delay of its own up to as
                much again; see :mod:`fedrelay.worker.sdk.steps.publish`).
            offer_commitments: Where the chain takes signed commitments, sign each commitment
                and offer it through the coordinator, so that one transaction records the
                round's (:mod:`fedrelay.worker.sdk.steps.record`); False: commit every task with
                a transaction of this node's own.
        """
        self.chain = chain
        self.api = api
        self.shards = shards
        self.store = store
        self.device = device
        self.bundle_loader: BundleLoader | None = bundle_loader
        self.progress: ProgressReporter = progress or SilentProgress()
        self.clock = clock
        self.poll_interval = poll_interval
        self.coordinator_chain = coordinator_chain
        self.trust = trust if trust is not None else TrustPolicy()
        self.publish_after = publish_after
        self.offer_commitments = offer_commitments
        self.tracer: trace.Tracer = _TRACER
        self.state: WorkerState = store.load()
        #: Masked tasks whose unmasking shares are still to be revealed (in memory only).
        self.secure_rounds: dict[TaskKey, SecureRound] = {}
        #: Secure rounds whose key exchange a failed pass left part-way (resumed, not redone).
        self.key_exchanges: dict[TaskKey, KeyExchange] = {}
        self._stop = asyncio.Event()

    # --- stake --------------------------------------------------------------------------------

    @property
    def capabilities(self) -> int:
        """WORKER_REGISTERED capability bits of this node's device."""
        return register.capabilities(self.device)

    async def register(self, stake: int, payout: bytes) -> StakeStatus:
        """Stake up to ``stake`` and register with ``payout`` (bytes32 on the coordinator chain)."""
        return await register.register(self, stake, payout)

    async def begin_unstake(self, amount: int) -> None:
        """Start unbonding ``amount`` of the stake."""
        await self.chain.begin_unstake(amount)

    async def withdraw_stake(self) -> None:
        """Withdraw the unbonded stake (rewards are paid on the coordinator chain)."""
        await self.chain.withdraw_stake()

    # --- the loop -----------------------------------------------------------------------------

    def request_stop(self) -> None:
        """Ask :meth:`run` (and a training in progress) to stop at the next safe point."""
        self._stop.set()

    @property
    def stopping(self) -> bool:
        """Whether a stop was requested."""
        return self._stop.is_set()

    async def run(self) -> None:
        """Pass after pass until :meth:`request_stop`; a failed pass is logged and retried."""
        while not self.stopping:
            try:
                await self.step()
            except StopRequested:
                break
            except _RETRYABLE as exc:
                log.warning("worker pass failed, retrying: %s", exc)
            await self.pause()

    async def pause(self) -> None:
        """Wait ``poll_interval`` seconds, or less if a stop is requested meanwhile."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), self.poll_interval)

    async def step(self) -> StepReport:
        """One pass: new assignments and settlements, open tasks, secure reveals, challenges."""
        polled = await self.chain.poll(self.state.cursor)
        assigned = [t for t in polled.assigned if self.state.task(t.key) is None]
        state = self.state
        for task in assigned:
            state = state.with_task(TaskRecord.of(task))
            self.progress.note(f"assigned job {task.key.job_id} round {task.key.round}")
        settled = []
        for effect in polled.settled:
            record = state.by_task_id(effect.task_id)
            if record is not None and record.stage is not TaskStage.SETTLED:
                settled.append(record.key)
                self.progress.note(f"{record.key} settled: {effect.outcome.name.lower()}")
            state = state.settle(effect.task_id, effect.outcome)
        for task in polled.assigned:  # a state file written before tasks had a release time
            known = state.task(task.key)
            if known is not None and not known.release_at and task.release_at:
                state = state.with_task(replace(known, release_at=task.release_at))
        self._save(replace(state, cursor=polled.cursor))
        released = await self._release_expired()
        hashes = {t.key: (t.model_hash, t.config_hash) for t in polled.assigned}
        committed: list[TaskKey] = []
        abandoned: list[TaskKey] = []
        recovered: list[TaskKey] = []
        for record in sorted(self.state.tasks.values(), key=lambda r: r.key):
            if record.stage not in _OPEN_STAGES:
                continue
            if self.stopping:
                raise StopRequested("stop requested")
            try:
                with log_fields(job_id=record.key.job_id, round=record.key.round):
                    done = await self.work_on(record, *hashes.get(record.key, (None, None)))
            except TaskRefused as exc:
                self._save(
                    self.state.with_task(
                        replace(record, stage=TaskStage.ABANDONED, reason=str(exc))
                    )
                )
                self.progress.note(f"{record.key} abandoned: {exc}")
                abandoned.append(record.key)
                continue
            if done.stage is TaskStage.COMMITTED:
                (committed if done.transaction else recovered).append(record.key)
        recorded = await record_offers(self)
        committed.extend(recorded.committed)
        abandoned.extend(recorded.refused)
        published = await publish.publish_pending(self)
        await mask.reveal_masks(self)
        answered = await self.answer_challenges()
        return StepReport(
            tuple(t.key for t in assigned),
            tuple(committed),
            tuple(abandoned),
            tuple(answered),
            tuple(settled),
            tuple(recovered),
            tuple(released),
            tuple(published),
        )

    async def _release_expired(self) -> list[TaskKey]:
        """Release every task left unsettled past its release time (its stake lock with it).

        The coordinator should have settled it; a task it never settles would otherwise lock the
        stake for ever. A refusal (settled meanwhile: the next poll records the outcome) or an
        unreachable chain is logged and the release is tried again on a later pass.
        """
        now = self.clock()
        released = []
        for record in sorted(self.state.tasks.values(), key=lambda r: r.key):
            due = record.release_at and now > record.release_at
            if not due or record.stage in (TaskStage.SETTLED, TaskStage.RELEASED):
                continue
            try:
                await self.chain.release_expired_task(record.key)
            except WorkerChainError as exc:
                log.warning("%s: release after %d not done: %s", record.key, record.release_at, exc)
                continue
            reason = f"unsettled after its release time {record.release_at}: released"
            self._save(
                self.state.with_task(replace(record, stage=TaskStage.RELEASED, reason=reason))
            )
            self.progress.note(f"{record.key} released (never settled)")
            released.append(record.key)
        return released

    def _save(self, state: WorkerState) -> None:
        self.store.save(state)
        self.state = state

    def keep(self, record: TaskRecord) -> TaskRecord:
        """Save ``record`` (a task's new stage) to the state file; returns it."""
        self._save(self.state.with_task(record))
        return record

    # --- one task -----------------------------------------------------------------------------

    async def work_on(
        self,
        record: TaskRecord,
        chain_model: bytes | None = None,
        chain_config: bytes | None = None,
    ) -> TaskRecord:
        """Carry one task from its current stage to COMMITTED.

        Raises:
            TaskRefused: The deadline passed before the commitment, or the coordinator's inputs
                disagree with the chain's.
            StopRequested: A stop was requested during training.
        """
        key = record.key
        if await self.chain.is_committed(key):
            # Committed before a restart, or by an earlier run of this key: never again.
            return self.keep(replace(record, stage=TaskStage.COMMITTED))
        if self.clock() > record.deadline:
            raise TaskRefused(f"the deadline {record.deadline} of {key} has passed")
        if record.stage is TaskStage.ASSIGNED:
            record = await self._train(record, chain_model, chain_config)
        if record.stage is TaskStage.TRAINED:
            record = await upload.upload(self, record)
        return await commit.commit(self, record)

    async def _train(
        self, record: TaskRecord, chain_model: bytes | None, chain_config: bytes | None
    ) -> TaskRecord:
        """Download, train, mask (secure rounds) and keep the update: the task becomes TRAINED."""
        key = record.key
        inputs = await train.download(self, record, chain_model, chain_config)
        trained = await self._local_training(key, inputs)
        selfcheck.check_trained(key, record.shard, inputs, trained)
        if inputs.job.secure_aggregation:
            with self.span("worker.mask", key):
                trained = await mask.mask(self, key, inputs.view, inputs.job, trained, inputs.model)
        trained = self._finalise_update(trained)
        for blob in trained.checkpoints:
            self.store.put_blob(blob)
        name = self.store.put_blob(trained.update_blob)
        return self.keep(
            replace(
                record,
                stage=TaskStage.TRAINED,
                update_hash=name,
                transcript_root=trained.transcript_root.hex(),
                data_root=trained.data_root.hex(),
                checkpoints=tuple(blob_hash(b).hex() for b in trained.checkpoints),
                num_samples=trained.num_samples,
                train_loss=trained.train_loss,
                mask_opening=mask.opening_of(self, key),
            )
        )

    async def _local_training(self, key: TaskKey, inputs: train.TaskInputs) -> TrainedUpdate:
        """The local run of ``key`` on its inputs (the demo's dishonest workers alter it)."""
        return await train.train(self, key, inputs)

    def _finalise_update(self, trained: TrainedUpdate) -> TrainedUpdate:
        """The update as it is kept, uploaded and committed (test subclasses alter it)."""
        return trained

    def finalise_masked(self, masked: MaskedInput) -> MaskedInput:
        """A secure round's masked input as it is sent, kept and committed (the demo's dishonest
        workers alter it)."""
        return masked

    # --- challenges ---------------------------------------------------------------------------

    async def answer_challenges(self) -> list[str]:
        """Answer every open challenge on a transcript this node kept; returns their ids."""
        return await answer.answer_challenges(self)

    # --- tracing ------------------------------------------------------------------------------

    def span(self, name: str, key: TaskKey) -> contextlib.AbstractContextManager[trace.Span]:
        """A span of this node's work on ``key``, in the round's trace."""
        return self.tracer.start_as_current_span(
            name,
            context=round_context(self.coordinator_chain, key.job_id, key.round),
            attributes={
                **round_attributes(key.job_id, key.round),
                "fedrelay.worker.chain": self.chain.wormhole_chain,
                "fedrelay.worker.id": self.chain_worker_id(),
            },
        )

    def chain_worker_id(self) -> str:
        """This worker's worker_id (hex), its client id in secure rounds."""
        return worker_id(self.chain.wormhole_chain, self.chain.worker_key).hex()
