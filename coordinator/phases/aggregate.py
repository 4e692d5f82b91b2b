"""The AGGREGATING phase of a round: check, challenge, replay, unmask, aggregate and score.

:meth:`RoundAggregation.work` is called on every step while a round aggregates. It

1. checks each committed data commitment against the assigned shard (on published data the
   coordinator rebuilds every shard: its size and the root over its example hashes; a count
   a worker wrote never weighs or pays; on the workers' own data the committed count weighs
   the update and the spot reveals of step 2 back it), and each committed update against its
   on-chain commitment (a plain update blob, or the masked input, whose count is checked too, under
   secure aggregation); a mismatch or a missing upload is rejected and slashed;
2. challenges the transcripts drawn from the round's challenge seed and replays
   each answer; the seed is the hash of the first coordinator-chain block after the round's
   commitments closed, so the round waits (it does not fail) until that block exists. The answer
   on a replayed segment of a task on the worker's own data also opens the examples the
   segment consumed, under the worker's data root; they are checked, the segment is replayed on
   them, and they are erased as the verdict is recorded (``settle_reveal``). The answer
   on segment 0 opens checkpoint 0, which must be the round's model at step 0 (the coordinator
   builds it itself); the answer on the last segment opens the final checkpoint, whose model
   must be exactly the committed update; a failed replay, a transcript that starts elsewhere, an
   update that is not the transcript's final model, or no answer by the deadline, is rejected
   and slashed; then every update that copies one committed earlier in the round
   (:mod:`fedrelay.coordinator.copies`) is rejected and slashed;
3. (secure rounds) decodes each worker's keys, masked input (of the model's length) and reveal
   on its own, rejecting and slashing the sender of one that does not decode; waits for the
   unmasking reveals and recovers the sum of the masked inputs, rejecting and slashing a holder
   whose revealed share does not match its dealer's commitment (the others' shares recover the
   sum), a dealer whose committed shares recover another secret (the model is kept), or a
   survivor whose reveal has not come by the reveal deadline when the sum cannot be recovered
   without it (the model is kept); a sum out of the fixed-point range starts the sum audit
   (:meth:`RoundAggregation._audit`): every survivor opens its masks, a corrupter is rejected
   and slashed, and the accepted workers' opened inputs are aggregated;
4. aggregates with the job's strategy a range of coordinates at a time (the updates stay in the
   blob store and are never all held at once: :mod:`.streamed`), evaluates the new model on the
   held-out set, scores the accepted workers and splits the round's reward. Updates hold only
   the model's trainable tensors (``model.trainable``: a LoRA job's adapters), so only those are
   read, aggregated and scored; the round model's frozen tensors go into the new model blob
   unchanged.

It returns the :class:`Proposal` once everything is in, else None (answers or reveals are still
awaited). Every rejection is saved at once, and challenges are issued with deterministic terms,
so a restarted coordinator repeats exactly the same work, and never reads a rejected worker's
bytes again (only committed tasks are read, challenged and replayed).

Whatever is wrong with one worker's bytes (decoding, tensor names, shapes, dtypes, non-finite
values, a checkpoint's optimizer state, an error the replay raises on them) is that worker's
rejection with the reason, never an error of the round: aggregation only sees updates that passed
:func:`~fedrelay.coordinator.phases.streamed.open_update`. Should the aggregation rule still
refuse the inputs, the model is kept unchanged for the round and the report's note says why.

Under secure aggregation a rejected worker is unmasked as one that dropped out where the protocol
allows: one whose only fault is its reveal is a survivor that did not reveal (its committed input
stays in the sum, the others' shares remove its masks). One whose masked input is refused or not
the committed one was already published among the survivors, so the others revealed its self
mask rather than the key its pairwise masks need: the model is kept unchanged for the round, with
a note, and the honest workers are still paid.

Under secure aggregation transcripts are challenged within a privacy cap
(:func:`~fedrelay.coordinator.verification.privacy_capped`): the challenged worker's answer also
opens its masks, and its masked input must be its final checkpoint's update plus them
(:meth:`RoundAggregation._opening_verdict`). A worker rejected with an opening of its advertised
key leaves the sum (what its masked input added is subtracted).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, replace

import numpy as np

from fedrelay.coordinator.aggregation import (
    AggregationError,
    ParameterLayout,
    ServerState,
    StreamedBlob,
    StreamedUpdate,
    Vector,
)
from fedrelay.coordinator.aggregation.configured import build_strategy
from fedrelay.coordinator.copies import find_copies
from fedrelay.coordinator.errors import CoordinatorError, JobUnusable
from fedrelay.coordinator.evidence import publish_evidence, with_evidence
from fedrelay.coordinator.phases.context import JobContext, RoundKeeper
from fedrelay.coordinator.phases.seeds import closing_block, seed_value
from fedrelay.coordinator.phases.streamed import (
    aggregate_streamed,
    measure_gaps,
    open_update,
    read_whole,
)
from fedrelay.coordinator.phases.unmask import (
    Screened,
    check_opened,
    opened,
    opened_contribution,
    reveal_faults,
    screen,
    secagg_config,
    unmask,
)
from fedrelay.coordinator.scoring import loss_reduction, mix_with_samples, split_payout
from fedrelay.coordinator.verification import (
    MALFORMED_INPUT_ERRORS,
    ChallengeDraw,
    UpdateRejection,
    challenge_sample,
    check_final_checkpoint,
    check_start_checkpoint,
    delta_of,
    final_model,
    malformed,
    privacy_capped,
)
from fedrelay.ports.blobs import COORDINATOR, BlobStore, BlobStoreError
from fedrelay.ports.coordinator_chain import ChainRoundPhase, WorkerResult
from fedrelay.ports.coordinator_store import CoordinatorStore, RoundReport
from fedrelay.protocol.challenges import Challenge, challenge_seed
from fedrelay.protocol.job_config import JobConfig
from fedrelay.protocol.merkle import decode_proof
from fedrelay.protocol.rounds import (
    AggregateProposed,
    Assignment,
    Fault,
    RoundState,
    TaskStatus,
    UpdateRejected,
    WorkerRef,
    apply,
)
from fedrelay.protocol.secagg import (
    DealerFault,
    RecoveryFailed,
    SecAggConfig,
    SecureAggregationError,
    SecureSum,
)
from fedrelay.protocol.secagg.messages import SecAggStage
from fedrelay.protocol.secagg.wire import client_id
from fedrelay.protocol.wormhole import Outcome, keccak256
from fedrelay.training import (
    BlobError,
    ModelTensors,
    SegmentOpening,
    TrainingError,
    Verdict,
    decode_blob,
    encode_blob,
    trainable_tensors,
)

log = logging.getLogger(__name__)


AUDIT = "sum audit: "
"""How the reason of a worker rejected by a secure round's sum audit begins."""

WITHHELD = "did not reveal its unmasking shares by the reveal deadline: "
"""How the reason of a survivor rejected for withholding its reveal begins: the deadline passed
without it and the sum could not be recovered from the reveals that came."""

MAX_REASON = 1000
"""Longest rejection reason recorded (the rest is cut: a reason may quote a worker's input)."""


class ModelUnavailable(CoordinatorError):
    """The round's starting model is not in the blob store, or not a tensor blob."""


@dataclass(frozen=True)
class Proposal:
    """What ``finalizeRound`` proposes, and what the round's report records.

    Attributes:
        model_hash: The aggregated model (its blob is stored and published).
        results: One outcome per assigned worker, in assignment order.
        loss: Held-out loss of the new model.
        accuracy: Held-out accuracy of the new model.
        scores: Contribution score per accepted worker id (hex).
        rewards: Non-zero rewards per worker id (hex).
        server_state: Blob name of the server optimiser state after the round.
        note: Why the model was kept unchanged, if it was.
    """

    model_hash: bytes
    results: tuple[WorkerResult, ...]
    loss: float
    accuracy: float
    scores: dict[str, float]
    rewards: dict[str, int]
    server_state: str
    note: str


def server_state_blob(state: ServerState) -> bytes:
    """The blob of a server optimiser state."""
    tensors = {f"slot/{k}": np.asarray(v, dtype=np.float64) for k, v in state.slots.items()}
    tensors["rounds"] = np.array([state.rounds], dtype=np.int64)
    return encode_blob(tensors)


def server_state_of(blob: bytes) -> ServerState:
    """Parse :func:`server_state_blob`."""
    tensors = decode_blob(blob)
    slots = {
        k.removeprefix("slot/"): np.asarray(v, dtype=np.float64)
        for k, v in tensors.items()
        if k.startswith("slot/")
    }
    return ServerState(int(tensors["rounds"][0]), slots)


def _summable(assignment: Assignment, screened: Screened, sizes: dict[bytes, int]) -> bool:
    """Whether a survivor's masked input can be in the sum: it decoded, its keys did, it counts
    its assigned shard's examples, and it is the committed one (a worker rejected only for its
    reveal, or only for the count it wrote on chain, is summed like a silent one: its input
    carries the checked weight)."""
    worker = assignment.worker
    data = screened.masked_bytes.get(worker)
    masked = screened.masked.get(worker)
    return (
        masked is not None
        and masked.num_examples == sizes.get(worker.worker_id)
        and worker in screened.adverts
        and data is not None
        and assignment.commitment is not None
        and keccak256(data) == assignment.commitment.update_hash
    )


def _secure_scores(state: RoundState, sizes: dict[bytes, int]) -> dict[str, float]:
    """The accepted workers' scores in a secure round: their assigned shard sizes (1 each when
    every size is 0)."""
    committed = state.with_status(TaskStatus.COMMITTED)
    samples = {a.worker.worker_id.hex(): float(sizes[a.worker.worker_id]) for a in committed}
    return samples if any(samples.values()) else dict.fromkeys(samples, 1.0)


def _outcome(status: TaskStatus) -> Outcome:
    if status is TaskStatus.COMMITTED:
        return Outcome.ACCEPTED
    return Outcome.SLASHED if status is TaskStatus.SLASHED else Outcome.DROPPED


class RoundAggregation:
    """The aggregation work of one job's rounds (see the module docstring)."""

    def __init__(self, context: JobContext, store: CoordinatorStore, blobs: BlobStore) -> None:
        """Work for ``context``'s job on ``store`` and ``blobs``."""
        self._context = context
        self._store = store
        self._blobs = blobs
        self._verdicts: dict[str, Verdict] = {}
        self._starts: dict[bytes, bytes] = {}
        self._secure: tuple[Screened, ParameterLayout, Vector] | None = None

    async def work(
        self, state: RoundState, report: RoundReport, now: int
    ) -> tuple[RoundState, Proposal | None]:
        """Do what can be done now; the proposal once the round is fully checked.

        Args:
            state: The AGGREGATING round.
            report: Its report (with ``collection_closed_at`` and ``seed``).
            now: Unix seconds.

        Returns:
            The state with any new rejections, and the proposal or None.

        Raises:
            ModelUnavailable: The round's model blob is missing.
        """
        config = self._context.config
        closed_at = report.collection_closed_at or state.updated_at
        model_blob = await self._blob(state.model_hash.hex())
        if model_blob is None:
            raise ModelUnavailable(
                f"the round's model {state.model_hash.hex()} is not in the blob store"
            )
        try:
            decoded = decode_blob(model_blob)
        except BlobError as exc:
            raise ModelUnavailable(
                f"the round's model {state.model_hash.hex()} is not a tensor blob: {exc}"
            ) from None
        model = {k: np.asarray(v, dtype=np.float32) for k, v in decoded.items()}
        # Updates carry, and aggregation moves, only the trainable tensors (a LoRA job's
        # adapters); the frozen ones pass into the new model unchanged.
        moving = trainable_tensors(model, config.model.trainable)
        frozen = {k: v for k, v in model.items() if k not in moving}
        layout = ParameterLayout.of(moving)
        params = layout.flatten(moving)
        slash = self._context.job.rejected_slash  # the on-chain policy's amount
        sizes = await asyncio.to_thread(self._assigned_sizes, state)
        state = await self._check_counts(state, sizes, slash, now)

        trained: dict[bytes, StreamedBlob] = {}
        screened = Screened()
        if config.secure_aggregation:
            state, screened = await self._check_secure(state, params.shape[0], sizes, slash, now)
            self._secure = (screened, layout, params)  # what the mask openings are checked on
            state, pending = await self._challenge(state, report, closed_at, now, model)
            if pending:
                return state, None
        else:
            uploads = await self._store.updates(state.job_id, state.round)
            for a in state.with_status(TaskStatus.COMMITTED):
                assert a.commitment is not None
                try:
                    trained[a.worker.worker_id] = await open_update(
                        self._blobs, uploads.get(a.worker), a.commitment.update_hash, layout, params
                    )
                except UpdateRejection as exc:
                    state = await self._reject(state, a.worker, str(exc), slash, now)
            state, pending = await self._challenge(state, report, closed_at, now, model)
            if pending:
                return state, None
            state = await self._reject_copies(state, trained, params, slash, now)

        previous = await self._store.report(state.job_id, state.round - 1) if state.round else None
        server_blob = await self._blob(previous.server_state if previous else None)
        server_state = server_state_of(server_blob) if server_blob else ServerState()
        if config.secure_aggregation:
            state, combined = await self._combine_secure(
                state, screened, sizes, params, server_state, model, closed_at, now
            )
            if combined is None:
                return state, None
        else:
            combined = await self._combine_plain(
                state, layout, frozen, params, server_state, trained, sizes
            )
        new_params, server_state, scores, note = combined

        new_model = {**frozen, **layout.unflatten(new_params)}
        new_blob = encode_blob(new_model)
        model_name = await self._blobs.put(new_blob, domain=COORDINATOR)
        await self._store.publish_blob(model_name)
        loss, accuracy = await asyncio.to_thread(self._context.workbench.evaluate, new_model)
        state_name = await self._blobs.put(server_state_blob(server_state), domain=COORDINATOR)
        rewards = split_payout(self._context.job.reward_per_round, scores) if scores else {}
        results = [
            WorkerResult(
                a.worker,
                _outcome(a.status),
                rewards.get(a.worker.worker_id.hex(), 0) if a.status is TaskStatus.COMMITTED else 0,
                a.fault if a.status is TaskStatus.SLASHED else Fault.NONE,
            )
            for a in state.assignments
        ]
        proposal = Proposal(
            model_hash=bytes.fromhex(model_name),
            results=tuple(results),
            loss=loss,
            accuracy=accuracy,
            scores=scores,
            rewards={k: v for k, v in rewards.items() if v},
            server_state=state_name,
            note=note,
        )
        return state, proposal

    async def _combine_plain(
        self,
        state: RoundState,
        layout: ParameterLayout,
        frozen: ModelTensors,
        params: Vector,
        server_state: ServerState,
        trained: dict[bytes, StreamedBlob],
        sizes: dict[bytes, int],
    ) -> tuple[Vector, ServerState, dict[str, float], str]:
        """Aggregate the accepted updates weighted by their assigned shard sizes, a range of
        coordinates at a time (:mod:`.streamed`); score each by held-out loss reduction, one
        update at a time (and, by ``sample_weight``, by those checked sizes)."""
        committed = state.with_status(TaskStatus.COMMITTED)
        if not committed:
            return params, server_state, {}, "no accepted update: the model is kept unchanged"
        config = self._context.config
        updates = [
            StreamedUpdate(
                a.worker.worker_id.hex(),
                max(1, sizes[a.worker.worker_id]),
                trained[a.worker.worker_id],
            )
            for a in committed
        ]
        samples = {u.client_id: u.num_examples for u in updates}
        try:
            new_params, new_state = await aggregate_streamed(
                build_strategy(config), layout, params, updates, server_state
            )
        except AggregationError as exc:
            # The inputs were checked one by one; a rule refusing them together is the round's
            # failure, not a worker's. Verified work is paid by its assigned shard size.
            log.error("job %d round %d: aggregation failed: %s", state.job_id, state.round, exc)
            scores = {k: float(v) for k, v in samples.items()}
            return params, server_state, scores, f"aggregation failed: {exc}"
        loss_of = self._context.workbench.held_out_loss(layout, frozen)
        base = await asyncio.to_thread(loss_of, params)
        raw: dict[str, float] = {}
        for update in sorted(updates, key=lambda u: u.client_id):
            delta = delta_of(await read_whole(update.blob), params)
            raw[update.client_id] = await asyncio.to_thread(
                loss_reduction, loss_of, base, params, delta
            )
            del delta
        scores = mix_with_samples(raw, samples, config.sample_weight)
        if not any(scores.values()):
            # Verified work that happened not to lower the held-out loss is still paid, by its
            # assigned shard size (never by a count the worker wrote).
            scores = {k: float(v) for k, v in samples.items()}
        return new_params, new_state, scores, ""

    async def _combine_secure(
        self,
        state: RoundState,
        screened: Screened,
        sizes: dict[bytes, int],
        params: Vector,
        server_state: ServerState,
        model: ModelTensors,
        closed_at: int,
        now: int,
    ) -> tuple[RoundState, tuple[Vector, ServerState, dict[str, float], str] | None]:
        """Unmask the sum and aggregate it; the state with any new rejections, and None while
        reveals or audit answers are awaited.

        A holder whose revealed share does not match its dealer's commitment is rejected (the
        sum is recovered from the others' shares); a dealer whose committed shares recover a
        secret other than its committed one is rejected and the model kept unchanged; once the
        reveal deadline has passed, a survivor whose reveal never came is rejected when the sum
        cannot be recovered for want of shares (the model kept unchanged); a sum out of the range
        honest inputs can reach starts the sum audit (:meth:`_audit`).

        Individual updates are hidden, so the accepted workers are paid in proportion to their
        assigned shard sizes, the counts their masked inputs were checked against (see
        docs/learning.md, "Pay under secure aggregation").
        """
        if not state.with_status(TaskStatus.COMMITTED):
            return state, (
                params,
                server_state,
                {},
                "no accepted update: the model is kept unchanged",
            )
        config = self._context.config
        slash = self._context.job.rejected_slash
        survivors = set(screened.masked_bytes)
        if any(
            a.worker in survivors and not _summable(a, screened, sizes)
            for a in state.with_status(TaskStatus.SLASHED, TaskStatus.DROPPED)
        ):
            # The survivors were published with it: the others revealed its self-mask, not the
            # key its pairwise masks need, so the sum cannot be had without its input. That
            # holds for a dropped task's input as well (its worker missed the deadline without
            # a slashing policy, or its commitment was relayed after collection closed): it is
            # summed only when it is the committed one and counts its shard, never unchecked.
            note = "a rejected masked input is among the survivors: the model is kept unchanged"
            return state, (params, server_state, _secure_scores(state, sizes), note)
        # The reveals read with the other messages, before the challenges were judged: one
        # stored since is not in ``screened``, so it waits for the next step's screening.
        if not survivors <= screened.revealed and now <= closed_at + config.reveal_seconds:
            return state, None
        workers = {client_id(a.worker.worker_id): a.worker for a in state.assignments}
        try:
            secagg = secagg_config(config, state.job_id, state.round, len(state.assignments))
            for holder, fault in sorted(reveal_faults(secagg, screened).items()):
                state = await self._reject_committed(
                    state, workers[holder], f"unmasking reveal refused: {fault}", slash, now
                )
            secure = unmask(secagg, [a.worker for a in state.assignments], screened)
            secure = await self._without_opened(state, secagg, screened, secure)
            wrong = secagg.fixed_point.out_of_range(secure.total, secure.total_weight)
            if wrong:
                state, audited = await self._audit(state, secagg, screened, model, wrong, now)
                if audited is None:
                    return state, None
                secure = audited
            weighted = secure.decode(secagg.fixed_point)
            strategy = build_strategy(config)
            result = strategy.aggregate_sum(params, weighted, secure.total_weight, server_state)
        except DealerFault as exc:
            state = await self._reject_committed(
                state, workers[exc.dealer], f"secret shares refused: {exc}", slash, now
            )
            note = f"secure aggregation failed: {exc}: the model is kept unchanged"
            return state, (params, server_state, _secure_scores(state, sizes), note)
        except RecoveryFailed as exc:
            # The deadline passed with too few reveals to remove the masks. A survivor that sent
            # none held a share the sum needed: it stalled the round, and is rejected rather
            # than paid for an input nobody could check (each secret is shared with every
            # worker, so withholding takes more reveals than the threshold spares: two under a
            # threshold of all workers but one).
            for a in state.with_status(TaskStatus.COMMITTED):
                if a.worker in survivors and a.worker not in screened.revealed:
                    state = await self._reject(state, a.worker, f"{WITHHELD}{exc}", slash, now)
            note = f"secure aggregation failed: {exc}: the model is kept unchanged"
            return state, (params, server_state, _secure_scores(state, sizes), note)
        except (SecureAggregationError, AggregationError) as exc:
            note = f"secure aggregation failed: {exc}"
            return state, (params, server_state, _secure_scores(state, sizes), note)
        return state, (result.params, result.state, _secure_scores(state, sizes), "")

    async def _audit(
        self,
        state: RoundState,
        secagg: SecAggConfig,
        screened: Screened,
        model: ModelTensors,
        wrong: int,
        now: int,
    ) -> tuple[RoundState, SecureSum | None]:
        """The sum audit of a secure round whose unmasked sum is out of range.

        Every accepted worker whose masked input is in the sum is challenged on its last
        segment (no replay: the answer opens the final checkpoint and the masks, outside the
        privacy cap); one whose masked input is not its final checkpoint's update plus its
        masks, or that does not answer by the deadline, is rejected (reason prefixed
        :data:`AUDIT`). The challenges' terms are saved when first issued, so a restarted
        coordinator repeats them. Returns the sum of the accepted workers' opened inputs once
        every answer is in (None while answers are awaited).
        """
        config = self._context.config
        audited = [
            a
            for a in state.with_status(TaskStatus.COMMITTED)
            if a.worker in screened.masked and a.worker in screened.adverts
        ]
        log.info(
            "job %d round %d: the unmasked sum has %d coordinates out of range: %d workers "
            "audited (their masks opened)",
            state.job_id,
            state.round,
            wrong,
            len(audited),
        )
        pending = False
        for a in audited:
            segment = self._context.workbench.training_config(a.shard).segments - 1
            issued = Challenge(
                state.job_id, state.round, a.worker, segment, now, now + config.answer_seconds
            )
            draw = ChallengeDraw(a, segment, replay=False)
            state, waiting = await self._judge(state, issued, draw, model, now, AUDIT)
            pending = pending or waiting
        if pending:
            return state, None
        kept = [
            a.worker for a in audited if state.assignment(a.worker).status is TaskStatus.COMMITTED
        ]
        if not kept:
            raise SecureAggregationError("the sum audit accepted no masked input")
        total = np.zeros(next(iter(screened.masked.values())).vector.shape, dtype=np.uint64)
        weight = 0
        for worker in kept:
            found = await opened(self._store, state.job_id, state.round, worker, screened)
            total += await asyncio.to_thread(opened_contribution, secagg, found)
            weight += found.masked.num_examples
        clients = tuple(sorted(client_id(w.worker_id) for w in kept))
        return state, SecureSum(total, weight, clients, ())

    async def _without_opened(
        self, state: RoundState, secagg: SecAggConfig, screened: Screened, secure: SecureSum
    ) -> SecureSum:
        """The sum less the input of each rejected worker in it whose mask opening (its
        advertised key) says what it added: a worker rejected on its challenge leaves the sum.
        One rejected by the sum audit stays: the audit rebuilds the sum itself, and the sum that
        started it must read the same after a restart."""
        total, weight = secure.total.copy(), secure.total_weight
        left: list[str] = []
        for a in state.with_status(TaskStatus.SLASHED):
            if client_id(a.worker.worker_id) not in secure.contributors:
                continue
            if (a.reason or "").startswith(AUDIT):
                continue
            try:
                found = await opened(self._store, state.job_id, state.round, a.worker, screened)
                total -= await asyncio.to_thread(opened_contribution, secagg, found)
            except SecureAggregationError:
                continue  # not opened: it stays in the sum, as a silent survivor does
            weight -= found.masked.num_examples
            left.append(found.masked.client_id)
        if not left:
            return secure
        if weight < 1:
            raise SecureAggregationError("every input of the sum was rejected")
        contributors = tuple(c for c in secure.contributors if c not in left)
        return replace(secure, total=total, total_weight=weight, contributors=contributors)

    async def _reject_committed(
        self, state: RoundState, worker: WorkerRef, reason: str, slash: int, now: int
    ) -> RoundState:
        """:meth:`_reject` ``worker`` unless it is rejected already (found again after a
        restart) or has no accepted task."""
        if state.assignment(worker).status is not TaskStatus.COMMITTED:
            return state
        return await self._reject(state, worker, reason, slash, now)

    async def _reject(
        self, state: RoundState, worker: WorkerRef, reason: str, slash: int, now: int
    ) -> RoundState:
        """Reject and slash ``worker``, saving the state before anything else happens."""
        if len(reason) > MAX_REASON:  # the reason quotes worker input: keep the record bounded
            reason = reason[: MAX_REASON - 3] + "..."
        rejected = apply(state, UpdateRejected(state.round, worker, slash, reason, now))
        await self._store.save_round(rejected)
        log.warning(
            "job %d round %d: worker %s rejected and slashed: %s",
            state.job_id,
            state.round,
            worker.key.hex(),
            reason,
        )
        return rejected

    async def _blob(self, name: str | None) -> bytes | None:
        if name is None:
            return None
        try:
            return await self._blobs.get(name)
        except BlobStoreError:
            return None

    def _assigned_sizes(self, state: RoundState) -> dict[bytes, int]:
        """The number of examples of each assigned task's shard, by worker id: the only counts
        that weigh an update or pay for it (published data: the coordinator rebuilds every shard
        exactly as the worker does; the workers' own data: the committed count, which the spot
        reveals check, or 1 each when the poster turned them off; see
        :meth:`~fedrelay.coordinator.verification.JobWorkbench.task_weight`)."""
        workbench = self._context.workbench
        return {a.worker.worker_id: workbench.task_weight(a) for a in state.assignments}

    async def _check_counts(
        self, state: RoundState, sizes: dict[bytes, int], slash: int, now: int
    ) -> RoundState:
        """Reject and slash each committed worker whose data commitment is not its task's: on
        published data, a ``num_samples`` other than the assigned shard's size or a
        ``data_root`` other than the root over its examples (the coordinator rebuilds the
        shard); on the workers' own data, a commitment to no example. A private count is
        backed by the spot reveals: a challenged worker must open, under its committed root,
        the examples at the indices a replayed segment drew from that count."""
        workbench = self._context.workbench
        published = self._context.config.published_data is not None
        for a in state.with_status(TaskStatus.COMMITTED):
            assert a.commitment is not None
            reason = ""
            if not published:
                if a.commitment.num_samples < 1:
                    reason = "committed num_samples 0: a data root commits to at least one example"
            elif a.commitment.num_samples != sizes[a.worker.worker_id]:
                reason = (
                    f"committed num_samples {a.commitment.num_samples}, but the assigned shard "
                    f"{a.shard} has {sizes[a.worker.worker_id]} examples"
                )
            else:
                expected = await asyncio.to_thread(workbench.shard_commitment, a.shard)
                if a.commitment.data_root != expected.root:
                    reason = (
                        f"committed data root {a.commitment.data_root.hex()}, but the examples "
                        f"of the assigned shard {a.shard} hash to {expected.root.hex()}"
                    )
            if reason:
                state = await self._reject(state, a.worker, reason, slash, now)
        return state

    async def _reject_copies(
        self,
        state: RoundState,
        trained: dict[bytes, StreamedBlob],
        params: Vector,
        slash: int,
        now: int,
    ) -> RoundState:
        """Reject and slash every accepted update that copies an earlier-committed one
        (:mod:`fedrelay.coordinator.copies`), its deltas measured a range at a time."""
        committed = state.with_status(TaskStatus.COMMITTED)
        kept = {
            a.worker.worker_id: trained[a.worker.worker_id]
            for a in committed
            if a.worker.worker_id in trained
        }
        gaps = await measure_gaps(params, kept)
        for copy in find_copies(committed, gaps):
            state = await self._reject(state, copy.worker, copy.reason, slash, now)
        return state

    async def _check_secure(
        self, state: RoundState, length: int, sizes: dict[bytes, int], slash: int, now: int
    ) -> tuple[RoundState, Screened]:
        """Reject each committed worker whose masked input is missing or not the committed one,
        whose keys, masked input or reveal do not decode, or whose masked input counts other
        than its assigned shard's examples; the messages, decoded."""
        workers = [a.worker for a in state.assignments]
        screened = await screen(self._store, state.job_id, state.round, workers, length)
        for a in state.with_status(TaskStatus.COMMITTED):
            assert a.commitment is not None
            data = screened.masked_bytes.get(a.worker)
            if data is None:
                reason = "the committed masked input was never uploaded"
            elif keccak256(data) != a.commitment.update_hash:
                reason = (
                    f"masked input hashes to {keccak256(data).hex()}, the chain commitment is "
                    f"{a.commitment.update_hash.hex()}"
                )
            elif a.worker in screened.faults:
                reason = screened.faults[a.worker]
            elif screened.masked[a.worker].num_examples != sizes[a.worker.worker_id]:
                reason = (
                    f"masked input counts {screened.masked[a.worker].num_examples} examples, but "
                    f"the assigned shard {a.shard} has {sizes[a.worker.worker_id]}"
                )
            else:
                continue
            state = await self._reject(state, a.worker, reason, slash, now)
        return state, screened

    async def _challenge(
        self,
        state: RoundState,
        report: RoundReport,
        closed_at: int,
        now: int,
        model: ModelTensors,
    ) -> tuple[RoundState, bool]:
        """Issue the round's challenges, replay the answers; True while answers are awaited."""
        config = self._context.config
        if not challenges_due(config) or report.challenge_seed is None:
            return state, False
        workbench = self._context.workbench
        draws = [
            draw
            # One task at a time: with local_epochs each task's segments follow from its shard.
            for a in state.with_status(TaskStatus.COMMITTED)
            for draw in challenge_sample(
                bytes.fromhex(report.challenge_seed),
                [a],
                config.challenge_rate,
                workbench.task_config(a).segments,
                min(config.challenge_segments, workbench.task_config(a).segments),
            )
        ]
        if config.secure_aggregation:
            draws = self._privacy_capped(state, bytes.fromhex(report.challenge_seed), draws)
        pending = False
        for draw in draws:
            a = state.assignment(draw.assignment.worker)
            if a.status is not TaskStatus.COMMITTED:
                continue  # rejected on its other challenge of this round (examples: below)
            assert a.commitment is not None
            issued = Challenge(
                state.job_id,
                state.round,
                a.worker,
                draw.segment,
                closed_at,
                closed_at + config.answer_seconds,
                # A replayed segment of private data is replayed on the examples it consumed.
                wants_examples=draw.replay and workbench.spot_reveals,
            )
            state, waiting = await self._judge(state, issued, draw, model, now, "")
            pending = pending or waiting
        if not pending:
            await self._erase_unchecked(state)
        return state, pending

    async def _erase_unchecked(self, state: RoundState) -> None:
        """Erase the opened examples of every answer of the round that was never checked (its
        worker was rejected on another challenge first): nothing of a worker's data stays."""
        for a in state.assignments:
            for challenge in await self._store.challenges(worker=a.worker):
                if (
                    (challenge.job_id, challenge.round) == (state.job_id, state.round)
                    and challenge.answer is not None
                    and challenge.answer.examples
                    and challenge.reveal_verdict is None
                ):
                    await self._store.settle_reveal(
                        challenge.challenge_id, "not checked: rejected on another challenge"
                    )

    async def _judge(
        self,
        state: RoundState,
        issued: Challenge,
        draw: ChallengeDraw,
        model: ModelTensors,
        now: int,
        prefix: str,
    ) -> tuple[RoundState, bool]:
        """Issue ``issued`` unless it is stored (then its stored terms hold) and judge its
        answer; the state, and True while the answer is awaited. A failed answer, or none by the
        deadline, is a rejection whose reason begins with ``prefix``."""
        slash = self._context.job.rejected_slash  # the on-chain policy's amount
        stored = await self._store.challenges(challenge_id=issued.challenge_id)
        if not stored:
            await self._store.save_challenge(issued)
            log.info(
                "job %d round %d: challenged worker %s on segment %d",
                state.job_id,
                state.round,
                issued.worker.key.hex(),
                issued.segment,
            )
        challenge = stored[0] if stored else issued
        if challenge.answer is None:
            if now <= challenge.answer_by:
                return state, True
            reason = f"{prefix}did not answer the challenge of segment {draw.segment} in time"
            return await self._reject(state, issued.worker, reason, slash, now), False
        verdict = await self._verdict(state, challenge, draw, model)
        if not verdict.accepted:
            reason = f"{prefix}challenge of segment {draw.segment} failed: {verdict.reason}"
            state = await self._reject(state, issued.worker, reason, slash, now)
        return state, False

    async def _verdict(
        self, state: RoundState, challenge: Challenge, draw: ChallengeDraw, model: ModelTensors
    ) -> Verdict:
        known = self._verdicts.get(challenge.challenge_id)
        if known is not None:
            return known
        if challenge.reveal_verdict is not None:  # checked before, the examples erased since
            settled = challenge.reveal_verdict
            return Verdict(settled == "ok", settled)
        answer = challenge.answer
        assert answer is not None
        start = await self._blob(answer.start_checkpoint)
        end = await self._blob(answer.end_checkpoint)
        if start is None or end is None:
            return Verdict(False, "the answer's checkpoints are not in the blob store")
        try:
            opening = SegmentOpening(
                challenge.segment,
                start,
                end,
                decode_proof(answer.start_proof),
                decode_proof(answer.end_proof),
            )
        except (UpdateRejection, TrainingError) as exc:
            verdict = Verdict(False, f"the answer's proof is malformed: {exc}")
        else:
            verdict = await self._start_verdict(state, challenge, opening, model)
            if verdict.accepted:
                verdict = await self._final_verdict(state, challenge, opening)
            if verdict.accepted and draw.replay:
                verdict = await asyncio.to_thread(
                    self._replay, state, challenge, opening, answer.examples
                )
        if challenge.wants_examples:
            # The opened examples are erased as the verdict is recorded: nothing of the
            # worker's data stays with the coordinator past the check.
            await self._store.settle_reveal(
                challenge.challenge_id, "ok" if verdict.accepted else verdict.reason
            )
        self._verdicts[challenge.challenge_id] = verdict
        return verdict

    def _replay(
        self, state: RoundState, challenge: Challenge, opening: SegmentOpening, examples: bytes
    ) -> Verdict:
        """Replay the challenged segment: on the worker's published shard, or on the examples
        it opened (checked against its data commitment first)."""
        workbench = self._context.workbench
        assignment = state.assignment(challenge.worker)
        opened = None
        if challenge.wants_examples:
            try:
                opened = workbench.opened_examples(assignment, challenge.segment, examples)
            except UpdateRejection as exc:
                return Verdict(False, str(exc))
        return workbench.replay(
            state.job_id, state.round, assignment, challenge.segment, opening, opened
        )

    async def _start_verdict(
        self, state: RoundState, challenge: Challenge, opening: SegmentOpening, model: ModelTensors
    ) -> Verdict:
        """On segment 0, whether checkpoint 0 is the round's model at step 0."""
        if challenge.segment != 0:
            return Verdict(True, "ok")
        commitment = state.assignment(challenge.worker).commitment
        assert commitment is not None
        workbench = self._context.workbench
        expected = self._starts.get(state.model_hash)
        if expected is None:
            expected = await asyncio.to_thread(workbench.start_checkpoint, model)
            self._starts = {state.model_hash: expected}  # one round's model at a time
        try:
            await asyncio.to_thread(
                check_start_checkpoint,
                opening.start_blob,
                opening.start_proof,
                commitment.transcript_root,
                expected,
                model,
                workbench.task_config(state.assignment(challenge.worker)),
            )
        except UpdateRejection as exc:
            return Verdict(False, str(exc))
        except MALFORMED_INPUT_ERRORS as exc:
            return Verdict(False, f"checkpoint 0 cannot be read: {malformed(exc)}")
        return Verdict(True, "ok")

    async def _final_verdict(
        self, state: RoundState, challenge: Challenge, opening: SegmentOpening
    ) -> Verdict:
        """On the last segment, whether the committed update is the final checkpoint's model."""
        assignment = state.assignment(challenge.worker)
        training = self._context.workbench.task_config(assignment)
        if challenge.segment != training.segments - 1:
            return Verdict(True, "ok")
        if self._context.config.secure_aggregation:
            return await self._opening_verdict(state, challenge, opening)
        commitment = state.assignment(challenge.worker).commitment
        assert commitment is not None
        # Uploads are content-addressed and were checked against the commitment already.
        update = await self._blob(commitment.update_hash.hex())
        if update is None:
            return Verdict(False, "the committed update is not in the blob store")
        try:
            await asyncio.to_thread(
                check_final_checkpoint,
                update,
                opening.end_blob,
                opening.end_proof,
                commitment.transcript_root,
                training,
                self._context.config.model.trainable,
            )
        except UpdateRejection as exc:
            return Verdict(False, str(exc))
        except MALFORMED_INPUT_ERRORS as exc:
            return Verdict(False, f"the final checkpoint cannot be read: {malformed(exc)}")
        return Verdict(True, "ok")

    def _privacy_capped(
        self, state: RoundState, seed: bytes, draws: list[ChallengeDraw]
    ) -> list[ChallengeDraw]:
        """The draws of a secure round the privacy cap keeps (none if no graph can be had)."""
        assert self._secure is not None
        screened = self._secure[0]
        summed = [w for w in screened.masked_bytes if w in screened.adverts]
        by_client = {client_id(w.worker_id): w.worker_id for w in summed}
        try:
            secagg = secagg_config(
                self._context.config, state.job_id, state.round, len(state.assignments)
            )
            graph = secagg.graph(by_client) if len(by_client) >= 2 else {}
        except SecureAggregationError:
            return []
        neighbours = {by_client[c]: {by_client[n] for n in peers} for c, peers in graph.items()}
        return privacy_capped(seed, draws, list(by_client.values()), neighbours)

    async def _opening_verdict(
        self, state: RoundState, challenge: Challenge, opening: SegmentOpening
    ) -> Verdict:
        """In a secure round, whether the masked input is the final checkpoint's update plus the
        masks the answer opens (:mod:`fedrelay.protocol.secagg.opening`)."""
        assert self._secure is not None
        screened, layout, params = self._secure
        assignment = state.assignment(challenge.worker)
        assert assignment.commitment is not None
        workbench = self._context.workbench
        try:
            trained = await asyncio.to_thread(
                final_model,
                opening.end_blob,
                opening.end_proof,
                assignment.commitment.transcript_root,
                workbench.training_config(assignment.shard),
                self._context.config.model.trainable,
            )
            delta = layout.flatten(trained) - params  # float32, as the worker SDK masks it
            secagg = secagg_config(
                self._context.config, state.job_id, state.round, len(state.assignments)
            )
            found = await opened(self._store, state.job_id, state.round, challenge.worker, screened)
            await asyncio.to_thread(check_opened, secagg, found, delta)
        except (UpdateRejection, SecureAggregationError, AggregationError) as exc:
            return Verdict(False, f"mask opening refused: {exc}")
        except MALFORMED_INPUT_ERRORS as exc:
            return Verdict(False, f"the final checkpoint cannot be read: {malformed(exc)}")
        return Verdict(True, "ok")


def challenges_due(config: JobConfig) -> bool:
    """Whether the job's rounds challenge transcripts: at a positive rate (under secure
    aggregation, within the privacy cap of
    :func:`~fedrelay.coordinator.verification.privacy_capped`)."""
    return config.challenge_rate > 0


async def seal_challenge_seed(
    keeper: RoundKeeper, config: JobConfig, state: RoundState, report: RoundReport
) -> RoundReport:
    """Record the round's challenge seed once its closing block exists; the report as it is.

    The commitments closed at the round's deadline, or, when every task committed before it, at
    the timestamp of the block holding the last commitment (the state's ``updated_at`` when it
    entered AGGREGATING, which ``collection_closed_at`` keeps). The closing block is the first
    coordinator-chain block whose timestamp is past that moment (plus the job's
    ``randomness_lag_seconds`` under ``prevrandao``), and the seed takes its beacon value or
    its hash (:func:`~fedrelay.protocol.challenges.challenge_seed`,
    :mod:`fedrelay.coordinator.phases.seeds`).

    Raises:
        JobUnusable: The job draws from the beacon and the chain has none.
    """
    assert state.deadline is not None
    assert report.collection_closed_at is not None
    closes_at = min(state.deadline, report.collection_closed_at)
    block = await closing_block(keeper.chain, config, closes_at, report.opening_block)
    if block is None:
        return report
    value = await seed_value(keeper.chain, config, block)
    seed = challenge_seed(value, state.job_id, state.round)
    sealed = replace(report, challenge_seed=seed.hex(), closing_block=block.number)
    await keeper.store.save_report(sealed)
    log.info(
        "job %d round %d: challenge seed %s from the %s of block %d (commitments closed at %d)",
        state.job_id,
        state.round,
        seed.hex(),
        config.randomness,
        block.number,
        closes_at,
    )
    return sealed


async def aggregate(
    keeper: RoundKeeper,
    context: JobContext,
    state: RoundState,
    now: int,
    aggregations: dict[int, RoundAggregation],
) -> RoundState:
    """Work on an AGGREGATING round; once it is fully checked, propose its model on chain.

    Args:
        keeper: The service's collaborators.
        context: The round's job.
        state: The AGGREGATING round.
        now: Unix seconds.
        aggregations: The aggregation work in progress per job (updated here).

    Raises:
        JobUnusable: The round's model is not in the blob store.
    """
    report = await keeper.report(state)
    if report.collection_closed_at is None:
        report = replace(report, collection_closed_at=state.updated_at)
        await keeper.store.save_report(report)
    if challenges_due(context.config) and report.challenge_seed is None:
        report = await seal_challenge_seed(keeper, context.config, state, report)
        if report.challenge_seed is None:
            return state  # the closing block does not exist yet
    work = aggregations.get(state.job_id)
    if work is None:
        work = aggregations[state.job_id] = RoundAggregation(context, keeper.store, keeper.blobs)
    try:
        state, proposal = await work.work(state, report, now)
    except ModelUnavailable as exc:
        raise JobUnusable(str(exc)) from None
    if proposal is None:
        return state
    state = await publish_evidence(keeper, state, now)
    model_hash = proposal.model_hash
    on_chain = await keeper.chain.round(state.job_id, state.round)
    if on_chain.phase is ChainRoundPhase.COLLECTING:
        results = with_evidence(proposal.results, state)
        await keeper.chain.finalize_round(state.job_id, state.round, model_hash, results)
    elif on_chain.phase is ChainRoundPhase.PROPOSED:
        model_hash = on_chain.proposed_model_hash  # proposed before a restart
    proposed = apply(state, AggregateProposed(state.round, model_hash, now))
    await keeper.store.save_report(
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
    await keeper.save_round(proposed)
    # The verdicts are recorded: the challenged workers' mask openings are no longer needed.
    await keeper.store.delete_secagg(state.job_id, state.round, SecAggStage.OPENING)
    log.info(
        "job %d round %d proposed model %s (accuracy %.4f)",
        state.job_id,
        state.round,
        model_hash.hex(),
        proposal.accuracy,
    )
    return proposed
