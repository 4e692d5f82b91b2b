"""The worker node: follow assignments on its chain, train, upload, commit, answer challenges.

One :meth:`WorkerNode.step` is one pass over everything there is to do; :meth:`WorkerNode.run`
repeats it until asked to stop. Every finished stage of a task is written to the state file
before the next begins, so a node stopped at any point resumes where it was, and never commits
a task twice (it asks the chain first).

Stopping: a stop request is honoured between training segments (the unfinished run is dropped
and redone after a restart) and between stages; an upload or a commitment in flight completes.

Secure-aggregation secrets stay in memory: a node restarted after masking a round's update does
not take part in that round's unmasking; the other workers' shares (the threshold) cover it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np
from httpx import HTTPError
from opentelemetry import trace

from fedrelay.ports.worker_chain import (
    CAPABILITY_CPU_REPLAY,
    CAPABILITY_CUDA,
    StakeStatus,
    TaskKey,
    UpdateCommitment,
    WorkerChain,
)
from fedrelay.protocol.api.schemas import RoundView
from fedrelay.protocol.logfields import log_fields
from fedrelay.protocol.merkle import encode_proof
from fedrelay.protocol.secagg import Participant, SecureAggregationError, wire
from fedrelay.protocol.secagg.messages import SecAggStage
from fedrelay.protocol.tracing import round_attributes, round_context
from fedrelay.protocol.wormhole import loss_to_fixed, worker_id
from fedrelay.training import (
    BlobError,
    ModelTensors,
    TrainingConfig,
    Transcript,
    TranscriptBuilder,
    blob_hash,
    decode_blob,
    encode_blob,
    model_of,
    open_segment,
)
from fedrelay.training.data import Dataset
from fedrelay.training.torch_trainer import ModelFactory, TorchClassificationTrainer, mlp
from fedrelay.worker.sdk import masking
from fedrelay.worker.sdk.api_client import (
    CoordinatorClient,
    CoordinatorRequestError,
    DownloadMismatch,
)
from fedrelay.worker.sdk.config import JobConfig, parse_job_config
from fedrelay.worker.sdk.errors import (
    ChainRejected,
    SecureAggregationFailed,
    TaskRefused,
    WorkerError,
)
from fedrelay.worker.sdk.progress import ProgressReporter, SilentProgress
from fedrelay.worker.sdk.shards import ShardSource
from fedrelay.worker.sdk.state import StateStore, TaskRecord, TaskStage, WorkerState

log = logging.getLogger(__name__)
_TRACER = trace.get_tracer("fedrelay.worker")

#: The coordinator chain's Wormhole id on the devnet and by default (rounds' traces derive from it).
DEFAULT_COORDINATOR_CHAIN = 2

_OPEN_STAGES = (TaskStage.ASSIGNED, TaskStage.TRAINED, TaskStage.UPLOADED)
# Failures of one pass that the next pass may not meet (a chain or coordinator unreachable).
_RETRYABLE = (WorkerError, CoordinatorRequestError, DownloadMismatch, HTTPError, OSError)


class StopRequested(WorkerError):
    """Training was abandoned because the node was asked to stop."""


@dataclass(frozen=True)
class TrainedUpdate:
    """What a finished local run produces, before upload.

    Attributes:
        update_blob: The bytes uploaded and committed (the trained model, or the masked input).
        checkpoints: Every transcript checkpoint blob, ``c_0`` first.
        transcript_root: The Merkle root over the checkpoint hashes.
        num_samples: Examples in the shard.
        train_loss: Final training loss, x 1e6 (saturating u32).
    """

    update_blob: bytes
    checkpoints: tuple[bytes, ...]
    transcript_root: bytes
    num_samples: int
    train_loss: int


@dataclass(frozen=True)
class StepReport:
    """What one pass did.

    ``committed`` lists the tasks this pass committed; ``recovered`` those it found already
    committed on chain (by an earlier run whose state file was lost).
    """

    assigned: tuple[TaskKey, ...] = ()
    committed: tuple[TaskKey, ...] = ()
    abandoned: tuple[TaskKey, ...] = ()
    answered: tuple[str, ...] = ()
    settled: tuple[TaskKey, ...] = ()
    recovered: tuple[TaskKey, ...] = ()


@dataclass
class _Secure:
    participant: Participant
    revealed: bool = False


class WorkerNode:
    """A GPU owner's worker on one chain, talking to one coordinator."""

    def __init__(
        self,
        chain: WorkerChain,
        api: CoordinatorClient,
        shards: ShardSource,
        store: StateStore,
        *,
        device: str = "cpu",
        model_factory: ModelFactory = mlp,
        progress: ProgressReporter | None = None,
        clock: Callable[[], float] = time.time,
        poll_interval: float = 2.0,
        coordinator_chain: int = DEFAULT_COORDINATOR_CHAIN,
    ) -> None:
        """Wire the node.

        Args:
            chain: The worker's chain backend.
            api: A client of the coordinator's API signed with the worker's key.
            shards: Where the training data of a task's shard comes from.
            store: The local state file and blob directory.
            device: ``"cpu"`` (bit-exact replays) or ``"cuda"``.
            model_factory: Builds the model the job trains (the digits MLP by default).
            progress: Where phases are shown; nothing is shown by default.
            clock: Unix seconds now (deadlines are checked against it).
            poll_interval: Seconds between passes of :meth:`run` and between looks at peers.
            coordinator_chain: The coordinator chain's Wormhole id; the node's spans join the
                round's trace derived from it (see ``fedrelay.protocol.tracing``).
        """
        self.chain = chain
        self.api = api
        self.shards = shards
        self.store = store
        self.device = device
        self.model_factory = model_factory
        self.progress: ProgressReporter = progress or SilentProgress()
        self.clock = clock
        self.poll_interval = poll_interval
        self.coordinator_chain = coordinator_chain
        self.tracer: trace.Tracer = _TRACER
        self.state: WorkerState = store.load()
        self._secure: dict[TaskKey, _Secure] = {}
        self._stop = asyncio.Event()

    # --- stake --------------------------------------------------------------------------------

    @property
    def capabilities(self) -> int:
        """WORKER_REGISTERED capability bits of this node's device."""
        return CAPABILITY_CUDA if self.device.startswith("cuda") else CAPABILITY_CPU_REPLAY

    async def register(self, stake: int, payout: bytes) -> StakeStatus:
        """Stake up to ``stake`` and register with ``payout`` (bytes32 on the coordinator chain)."""
        status = await self.chain.stake_status()
        if not status.registered or status.staked < stake:
            await self.chain.stake_and_register(stake, payout, self.capabilities)
            status = await self.chain.stake_status()
            self.progress.note(f"registered on chain {self.chain.wormhole_chain} with {stake}")
        return status

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
            except (
                WorkerError,
                CoordinatorRequestError,
                DownloadMismatch,
                HTTPError,
                OSError,
            ) as exc:
                log.warning("worker pass failed, retrying: %s", exc)
            await self._pause()

    async def _pause(self) -> None:
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
        self._save(replace(state, cursor=polled.cursor))
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
        await self._reveal_masks()
        answered = await self.answer_challenges()
        return StepReport(
            tuple(t.key for t in assigned),
            tuple(committed),
            tuple(abandoned),
            tuple(answered),
            tuple(settled),
            tuple(recovered),
        )

    def _save(self, state: WorkerState) -> None:
        self.store.save(state)
        self.state = state

    def _stage(self, record: TaskRecord) -> TaskRecord:
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
            return self._stage(replace(record, stage=TaskStage.COMMITTED))
        if self.clock() > record.deadline:
            raise TaskRefused(f"the deadline {record.deadline} of {key} has passed")
        if record.stage is TaskStage.ASSIGNED:
            record = await self._train(record, chain_model, chain_config)
        if record.stage is TaskStage.TRAINED:
            self.progress.phase(key, "uploading")
            blob = self.store.get_blob(record.update_hash)
            with self._span("worker.upload", key):
                await self.api.upload_update(key.job_id, key.round, blob)
            record = self._stage(replace(record, stage=TaskStage.UPLOADED))
        if self.clock() > record.deadline:
            raise TaskRefused(f"the deadline {record.deadline} of {key} passed before the commit")
        self.progress.phase(key, "committing")
        commitment = UpdateCommitment(
            key,
            bytes.fromhex(record.update_hash),
            bytes.fromhex(record.transcript_root),
            record.num_samples,
            record.train_loss,
        )
        try:
            with self._span("worker.commit", key):
                receipt = await self.chain.commit(commitment)
        except ChainRejected as exc:
            raise TaskRefused(f"the chain refused the commitment of {key}: {exc}") from exc
        self.progress.phase(key, "committed")
        return self._stage(
            replace(record, stage=TaskStage.COMMITTED, transaction=receipt.transaction)
        )

    async def _round(
        self, key: TaskKey, chain_model: bytes | None, chain_config: bytes | None
    ) -> RoundView:
        view = await self.api.round_status(key.job_id, key.round)
        for what, chain_value, api_value in (
            ("model", chain_model, view.model_hash),
            ("config", chain_config, view.config_hash),
        ):
            if chain_value is not None and chain_value.hex() != api_value:
                raise TaskRefused(
                    f"the coordinator names {what} {api_value} for {key}, the chain "
                    f"{chain_value.hex()}"
                )
        return view

    async def _train(
        self, record: TaskRecord, chain_model: bytes | None, chain_config: bytes | None
    ) -> TaskRecord:
        key = record.key
        self.progress.phase(key, "downloading")
        with self._span("worker.download", key):
            view = await self._round(key, chain_model, chain_config)
            model_blob = await self.api.download_blob(view.model_hash)
            job = parse_job_config(await self.api.download_blob(view.config_hash))
        model = _model_tensors(key, model_blob)
        data = self.shards.dataset(record.shard)
        with self._span("worker.train", key):
            trained = await self._local_run(key, model, job.training, data)
        if job.secure_aggregation:
            with self._span("worker.mask", key):
                trained = await self._masked(key, view, job, trained, model)
        trained = self._finalise_update(trained)
        for blob in trained.checkpoints:
            self.store.put_blob(blob)
        name = self.store.put_blob(trained.update_blob)
        return self._stage(
            replace(
                record,
                stage=TaskStage.TRAINED,
                update_hash=name,
                transcript_root=trained.transcript_root.hex(),
                checkpoints=tuple(blob_hash(b).hex() for b in trained.checkpoints),
                num_samples=trained.num_samples,
                train_loss=trained.train_loss,
            )
        )

    async def _local_run(
        self,
        key: TaskKey,
        model: ModelTensors,
        config: TrainingConfig,
        data: Dataset,
    ) -> TrainedUpdate:
        trainer = TorchClassificationTrainer(self.model_factory, data, device=self.device)
        if config.data_hash and config.data_hash != trainer.data_hash():
            raise TaskRefused(f"the configuration of {key} names other data than this shard")
        builder = TranscriptBuilder(config)
        checkpoint = trainer.initial_checkpoint(model)
        builder.add(checkpoint)
        self.progress.phase(key, "training", total=config.steps)
        for segment in range(config.segments):
            if self.stopping:
                raise StopRequested(f"training of {key} abandoned at segment {segment}")
            first, count = config.segment_steps(segment)
            checkpoint = await asyncio.to_thread(trainer.advance, checkpoint, count, config)
            builder.add(checkpoint)
            self.progress.advance(key, first + count)
        transcript: Transcript = builder.build()
        final = model_of(checkpoint)
        loss = trainer.evaluate(final, data).loss
        return TrainedUpdate(
            encode_blob(final), builder.blobs, transcript.root, len(data), loss_to_fixed(loss)
        )

    def _finalise_update(self, trained: TrainedUpdate) -> TrainedUpdate:
        """The update as it is kept, uploaded and committed (test subclasses alter it)."""
        return trained

    # --- secure aggregation -------------------------------------------------------------------

    async def _masked(
        self,
        key: TaskKey,
        view: RoundView,
        job: JobConfig,
        trained: TrainedUpdate,
        start: ModelTensors,
    ) -> TrainedUpdate:
        me = self.chain_worker_id()
        peers = sorted(t.worker_id for t in view.tasks)
        try:
            threshold = job.secagg_threshold or 0  # the schema requires it under secure aggregation
            participant = Participant(me, masking.secagg_config(key, threshold))
            self.progress.phase(key, "exchanging keys")
            advert = participant.advertise()
            await self.api.send_secagg(
                key.job_id, key.round, SecAggStage.KEYS, wire.encode_keys(advert)
            )
            keys = await self._await_all(key, "keys", peers)
            adverts = [wire.decode_keys(wid.hex(), data) for wid, data in keys.items()]
            for sealed in participant.share_keys(sorted(adverts, key=lambda a: a.client_id)):
                await self.api.send_secagg(
                    key.job_id,
                    key.round,
                    SecAggStage.SHARES,
                    sealed.ciphertext,
                    recipient_id=bytes.fromhex(sealed.recipient),
                )
            shares = await self._await_all(key, "shares", [p for p in peers if p != me])
            participant.receive_shares(
                [wire.decode_shares(wid.hex(), me, data) for wid, data in shares.items()]
            )
            final = _model_tensors(key, trained.update_blob)
            masked = participant.mask(masking.flat_delta(final, start), trained.num_samples)
        except SecureAggregationError as exc:
            raise SecureAggregationFailed(f"secure aggregation of {key} failed: {exc}") from exc
        blob = wire.encode_masked(masked)
        await self.api.send_secagg(key.job_id, key.round, SecAggStage.MASKED, blob)
        self._secure[key] = _Secure(participant)
        return replace(trained, update_blob=blob)

    # --- tracing ------------------------------------------------------------------------------

    def _span(self, name: str, key: TaskKey) -> contextlib.AbstractContextManager[trace.Span]:
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

    async def _await_all(self, key: TaskKey, which: str, wanted: list[str]) -> dict[bytes, bytes]:
        while True:
            if which == "keys":
                found = await self.api.secagg_keys(key.job_id, key.round)
            else:
                found = await self.api.secagg_shares(key.job_id, key.round)
            if {w.hex() for w in found} >= set(wanted):
                return {w: d for w, d in found.items() if w.hex() in wanted}
            record = self.state.task(key)
            if record is not None and self.clock() > record.deadline:
                raise TaskRefused(f"secure {which} of {key} incomplete at the deadline")
            if self.stopping:
                raise StopRequested(f"stopped while waiting for secure {which} of {key}")
            await self._pause()

    async def _reveal_masks(self) -> None:
        for key, secure in list(self._secure.items()):
            if secure.revealed:
                continue
            view = await self.api.round_status(key.job_id, key.round)
            if view.phase != "aggregating":
                continue
            survivors = await self.api.survivors(key.job_id, key.round)
            try:
                response = secure.participant.unmask([s.hex() for s in survivors])
            except SecureAggregationError as exc:
                self.progress.note(f"{key}: cannot reveal shares: {exc}")
                del self._secure[key]
                continue
            await self.api.send_secagg(
                key.job_id, key.round, SecAggStage.REVEALS, wire.encode_reveal(response)
            )
            secure.revealed = True
            self.progress.note(f"{key}: unmasking shares revealed")

    # --- challenges ---------------------------------------------------------------------------

    async def answer_challenges(self) -> list[str]:
        """Answer every open challenge on a transcript this node kept; returns their ids."""
        answered = []
        for challenge in await self.api.open_challenges():
            record = self.state.task(TaskKey(challenge.job_id, challenge.round))
            if record is None or not record.checkpoints:
                self.progress.note(f"challenge {challenge.challenge_id}: no transcript kept")
                continue
            blobs = [self.store.get_blob(name) for name in record.checkpoints]
            # Only the leaves matter for proofs; the config hash is not part of the root.
            transcript = Transcript(b"", tuple(bytes.fromhex(n) for n in record.checkpoints))
            opening = open_segment(transcript, blobs, challenge.segment)
            with self._span("worker.answer_challenge", record.key):
                await self.api.answer_challenge(
                    challenge.challenge_id,
                    start_checkpoint=opening.start_blob,
                    end_checkpoint=opening.end_blob,
                    start_proof=encode_proof(opening.start_proof),
                    end_proof=encode_proof(opening.end_proof),
                )
            self.progress.note(f"answered challenge on {record.key} segment {challenge.segment}")
            answered.append(challenge.challenge_id)
        return answered


def _model_tensors(key: TaskKey, model_blob: bytes) -> ModelTensors:
    """The round's model from its blob (named float32 tensors)."""
    try:
        tensors = decode_blob(model_blob)
    except BlobError as exc:
        raise TaskRefused(f"the model of {key} is not a tensor blob: {exc}") from exc
    return {name: np.asarray(value, dtype=np.float32) for name, value in tensors.items()}
