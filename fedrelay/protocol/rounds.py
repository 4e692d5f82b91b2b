"""The round state machine of one job: pure, driven by events, with the clock passed in.

::

    POSTED -> ASSIGNING -> COLLECTING -> AGGREGATING -> PROPOSED -> SETTLED -> POSTED (next round)
                                                            |  ^                 \\-> COMPLETED
                                                            +--+ (proposal challenged)

- POSTED: the round is open on the coordinator chain; nobody is assigned yet.
- ASSIGNING: workers are selected and ``assignTasks`` is on its way (:class:`TasksAssigned`).
- COLLECTING: the assignment is on chain (:class:`AssignmentConfirmed`); commitments arrive
  (:class:`CommitmentReceived`). A commitment that arrives while the round is still ASSIGNING
  (some of its batches not yet on chain) is recorded and the round stays ASSIGNING, so that the
  rest of its tasks are still sent; the confirmation then moves it on. When every
  assigned worker has committed, the round moves on at once. At the deadline (:class:`Tick`)
  the missing workers are dropped (not paid; slashed when the policy says so) and the round
  aggregates; with fewer than ``min_updates`` commitments every update is dropped and only the
  unchanged model can be proposed, so the chain still finalizes and settles the round.
- A commitment is COMMITTED whenever it arrives while the round collects: its worker chain
  took it before the task's deadline on its own clock, so the time the relayer delivered it
  says nothing about the worker. One that arrives after collection closed (relayed late) turns
  its task, closed as missing, into DROPPED with no fault (:func:`_commit_late`): not
  aggregated, not paid, never slashed as MISSED.
- AGGREGATING: updates are fetched, checked and replayed; a worker caught cheating is slashed
  (:class:`UpdateRejected`); the aggregate is proposed with ``finalizeRound``
  (:class:`AggregateProposed`).
- A task not yet sent to the coordinator chain whose worker can no longer be assigned (its
  stake fell below the job's minimum after the draw) is withdrawn from the ASSIGNING round
  (:class:`TaskWithdrawn`); a round left with no task is POSTED again and drawn anew.
- A task its worker chain refused (the worker's stake no longer met the job's terms when the
  TASK_ASSIGNED batch arrived, :class:`TaskRefused`) is DROPPED with no fault in any phase up to
  the proposal: the chain accepts only that outcome for it, and the worker is never slashed
  for it.

Every slash names its fault (:class:`Fault`): REJECTED for an update or transcript that failed its
checks, MISSED for a worker that missed the deadline under a policy that slashes for it; the
amount is the job's on-chain policy for that fault, and ``evidence`` is the hash of the
evidence blob the coordinator published for it (set before the proposal).
- PROPOSED: the challenge window is open. A challenge sends the round back to AGGREGATING
  (:class:`ProposalChallenged`); after the window ``settleRound`` confirms it
  (:class:`SettlementConfirmed`).
- SETTLED: :class:`NextRound` opens the next round, or completes the job after the last one.

Every transition is ``apply(state, event) -> state``. An event that does not fit the phase or
the round raises a :class:`RoundError` subclass and the state is left as it was (states are
frozen). No I/O, no wall clock: each event carries its time.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from enum import IntEnum, StrEnum

from fedrelay.protocol.wormhole import Outcome, Settlement, worker_id

_U32 = 0xFFFF_FFFF
_U64 = 0xFFFF_FFFF_FFFF_FFFF


class RoundError(Exception):
    """Base of the round state machine's errors; the state is unchanged when one is raised."""


class InvalidTransition(RoundError):
    """The event does not apply in the round's current phase."""


class WrongRound(RoundError):
    """The event names another job or round than the state's."""


class UnknownWorker(RoundError):
    """The event names a worker that is not assigned in this round."""


class DuplicateCommitment(RoundError):
    """A worker committed twice in one round."""


class LateCommitment(RoundError):
    """A commitment arrived after collection closed, for a task not closed as missing."""


class ChallengeWindowOpen(RoundError):
    """Settlement was attempted before the challenge window closed."""


class InvalidRoundInput(RoundError):
    """A policy, assignment or event field is out of range."""


class Phase(StrEnum):
    """Where a job's current round stands."""

    POSTED = "posted"
    ASSIGNING = "assigning"
    COLLECTING = "collecting"
    AGGREGATING = "aggregating"
    PROPOSED = "proposed"
    SETTLED = "settled"
    COMPLETED = "completed"


class TaskStatus(StrEnum):
    """What became of one worker's task in the round."""

    ASSIGNED = "assigned"
    COMMITTED = "committed"
    ACCEPTED = "accepted"
    DROPPED = "dropped"
    SLASHED = "slashed"


def _bytes32(name: str, value: bytes) -> None:
    if not isinstance(value, bytes) or len(value) != 32:
        raise InvalidRoundInput(f"{name} must be 32 bytes, got {value!r}")


def _uint(name: str, value: int, maximum: int = _U64) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= maximum:
        raise InvalidRoundInput(f"{name} must be an integer in 0..{maximum}, got {value!r}")


@dataclass(frozen=True)
class WorkerRef:
    """A worker: the Wormhole chain it staked on and its 32-byte key there."""

    chain: int
    key: bytes

    def __post_init__(self) -> None:
        _uint("worker chain", self.chain, 0xFFFF)
        _bytes32("worker key", self.key)

    @property
    def worker_id(self) -> bytes:
        """keccak256(u16 chain || key), the id the coordinator chain knows it by."""
        return worker_id(self.chain, self.key)


@dataclass(frozen=True)
class RoundPolicy:
    """The rules of every round of a job.

    Attributes:
        total_rounds: Rounds in the job; the job completes after the last one settles.
        min_updates: Commitments needed at the deadline to aggregate instead of skipping.
        challenge_window: Seconds between a proposal and the earliest settlement.
        slash_missing: Whether a worker that misses the deadline is slashed (else only dropped).
        missing_slash: The slash for a missing worker (8 decimals) when ``slash_missing``.
    """

    total_rounds: int
    min_updates: int = 1
    challenge_window: int = 0
    slash_missing: bool = False
    missing_slash: int = 0

    def __post_init__(self) -> None:
        _uint("total_rounds", self.total_rounds, _U32)
        if self.total_rounds < 1:
            raise InvalidRoundInput("total_rounds must be at least 1")
        _uint("min_updates", self.min_updates, _U32)
        if self.min_updates < 1:
            raise InvalidRoundInput("min_updates must be at least 1")
        _uint("challenge_window", self.challenge_window)
        _uint("missing_slash", self.missing_slash)


@dataclass(frozen=True)
class Commitment:
    """One worker's UPDATE_COMMITTED, as the coordinator chain received it.

    ``data_root`` is the Merkle root over the hashes of the ``num_samples`` examples the worker
    says it trained on (:mod:`fedrelay.protocol.data_commitment`); a ledger row written before
    data commitments holds 32 zero bytes. ``block`` is the coordinator-chain block it arrived
    in: with the worker id it orders a round's commitments the same way for anyone reading the
    chain (which of two identical updates came first, see :mod:`fedrelay.coordinator.copies`).
    """

    worker: WorkerRef
    update_hash: bytes
    transcript_root: bytes
    data_root: bytes
    num_samples: int
    train_loss: int
    block: int = 0

    def __post_init__(self) -> None:
        _bytes32("update_hash", self.update_hash)
        _bytes32("transcript_root", self.transcript_root)
        _bytes32("data_root", self.data_root)
        _uint("num_samples", self.num_samples, _U32)
        _uint("train_loss", self.train_loss, _U32)
        _uint("block", self.block, _U64)


class Fault(IntEnum):
    """Why a task is slashed (JobMarket's ``Result.fault``); NONE for every other outcome."""

    NONE = 0
    REJECTED = 1
    MISSED = 2


@dataclass(frozen=True)
class Assignment:
    """One worker's task in a round and what became of it.

    Attributes:
        worker: The worker.
        shard: The data shard it trains.
        status: What became of the task.
        commitment: Its UPDATE_COMMITTED, once it arrived.
        slash: The policy's slash for its fault (8 decimals; informative: the chain computes it).
        reason: Why it was dropped or slashed.
        fault: The fault it is slashed for (NONE unless SLASHED).
        evidence: The hash of the published evidence blob of its slash, once published.
    """

    worker: WorkerRef
    shard: int
    status: TaskStatus = TaskStatus.ASSIGNED
    commitment: Commitment | None = None
    slash: int = 0
    reason: str = ""
    fault: Fault = Fault.NONE
    evidence: bytes | None = None


@dataclass(frozen=True)
class RoundState:
    """A job's current round. Build the first one with :func:`open_job`.

    Attributes:
        job_id: The job on the coordinator chain.
        round: The round number.
        phase: Where the round stands.
        policy: The job's round rules.
        model_hash: The global model the round starts from.
        config_hash: The training configuration of the round (set when tasks are assigned).
        assignments: One entry per assigned worker, in assignment order.
        deadline: Unix seconds after which commitments are refused (set when assigned).
        proposed_model: The aggregate proposed with ``finalizeRound``, if any.
        challenge_ends: Unix seconds when the challenge window closes (set when proposed).
        updated_at: Unix seconds of the last event that changed the state.
    """

    job_id: int
    round: int
    phase: Phase
    policy: RoundPolicy
    model_hash: bytes
    config_hash: bytes = bytes(32)
    assignments: tuple[Assignment, ...] = ()
    deadline: int | None = None
    proposed_model: bytes | None = None
    challenge_ends: int | None = None
    updated_at: int = 0

    def assignment(self, worker: WorkerRef) -> Assignment:
        """The assignment of ``worker``.

        Raises:
            UnknownWorker: ``worker`` is not assigned in this round.
        """
        for assignment in self.assignments:
            if assignment.worker == worker:
                return assignment
        raise UnknownWorker(
            f"worker {worker.key.hex()} on chain {worker.chain} is not assigned in job "
            f"{self.job_id} round {self.round}"
        )

    def with_status(self, *statuses: TaskStatus) -> tuple[Assignment, ...]:
        """The assignments whose status is one of ``statuses``."""
        return tuple(a for a in self.assignments if a.status in statuses)

    @property
    def is_last_round(self) -> bool:
        """Whether settling this round completes the job."""
        return self.round + 1 >= self.policy.total_rounds


# --- events ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TasksAssigned:
    """Workers were selected and ``assignTasks`` sent (POSTED -> ASSIGNING)."""

    round: int
    workers: tuple[WorkerRef, ...]
    config_hash: bytes
    deadline: int
    at: int


@dataclass(frozen=True)
class AssignmentConfirmed:
    """The assignment is on the coordinator chain (ASSIGNING -> COLLECTING)."""

    round: int
    at: int


@dataclass(frozen=True)
class CommitmentReceived:
    """An UPDATE_COMMITTED for this round arrived (in ASSIGNING or COLLECTING)."""

    round: int
    commitment: Commitment
    at: int


@dataclass(frozen=True)
class Tick:
    """The clock reached ``now``; applies deadlines. Never invalid: a no-op where nothing is due."""

    now: int


@dataclass(frozen=True)
class UpdateRejected:
    """A committed update failed its checks (hash mismatch, failed or unanswered challenge)."""

    round: int
    worker: WorkerRef
    slash: int
    reason: str
    at: int


@dataclass(frozen=True)
class TaskRefused:
    """The worker chain refused the task (TASK_REFUSED): it is DROPPED with no fault."""

    round: int
    worker: WorkerRef
    reason: str
    at: int


@dataclass(frozen=True)
class TaskWithdrawn:
    """A task not yet sent to the coordinator chain is taken out of the ASSIGNING round: its
    worker can no longer be assigned there (its stake fell below the job's minimum after the
    draw), so ``assignTasks`` would refuse its batch. The other tasks keep their shards; a round
    left with no task is POSTED again, to be drawn anew."""

    round: int
    worker: WorkerRef
    reason: str
    at: int


@dataclass(frozen=True)
class EvidencePublished:
    """The evidence blob of a slashed task was published (its hash)."""

    round: int
    worker: WorkerRef
    evidence: bytes
    at: int


@dataclass(frozen=True)
class AggregateProposed:
    """``finalizeRound`` was sent with the aggregate (AGGREGATING -> PROPOSED)."""

    round: int
    model_hash: bytes
    at: int


@dataclass(frozen=True)
class ProposalChallenged:
    """The proposal was challenged inside its window (PROPOSED -> AGGREGATING)."""

    round: int
    at: int


@dataclass(frozen=True)
class SettlementConfirmed:
    """``settleRound`` confirmed after the window (PROPOSED -> SETTLED)."""

    round: int
    at: int


@dataclass(frozen=True)
class NextRound:
    """Open the next round, or complete the job after the last (SETTLED -> POSTED | COMPLETED)."""

    round: int
    at: int


RoundEvent = (
    TasksAssigned
    | AssignmentConfirmed
    | CommitmentReceived
    | Tick
    | UpdateRejected
    | TaskRefused
    | TaskWithdrawn
    | EvidencePublished
    | AggregateProposed
    | ProposalChallenged
    | SettlementConfirmed
    | NextRound
)


# --- transitions ----------------------------------------------------------------------------------


def open_job(
    job_id: int, policy: RoundPolicy, model_hash: bytes, *, at: int, first_round: int = 0
) -> RoundState:
    """The state of a freshly posted job: its first round, POSTED.

    Args:
        job_id: The job on the coordinator chain.
        policy: The job's round rules.
        model_hash: The initial global model.
        at: Unix seconds when the job was posted.
        first_round: The number of the first round.

    Returns:
        The POSTED state.

    Raises:
        InvalidRoundInput: A field is out of range.
    """
    _uint("job_id", job_id)
    _uint("first_round", first_round, _U32)
    _bytes32("model_hash", model_hash)
    return RoundState(job_id, first_round, Phase.POSTED, policy, model_hash, updated_at=at)


def _expect(state: RoundState, event: RoundEvent, *phases: Phase) -> None:
    if state.phase not in phases:
        allowed = " or ".join(p.value for p in phases)
        raise InvalidTransition(
            f"{type(event).__name__} applies in {allowed}, but job {state.job_id} round "
            f"{state.round} is {state.phase.value}"
        )
    event_round = getattr(event, "round", state.round)
    if event_round != state.round:
        raise WrongRound(
            f"{type(event).__name__} is for round {event_round}, but job {state.job_id} is in "
            f"round {state.round}"
        )


def _replace_assignment(state: RoundState, updated: Assignment) -> tuple[Assignment, ...]:
    return tuple(updated if a.worker == updated.worker else a for a in state.assignments)


def _assign(state: RoundState, event: TasksAssigned) -> RoundState:
    if not event.workers:
        raise InvalidRoundInput("a round needs at least one assigned worker")
    if len(set(event.workers)) != len(event.workers):
        raise InvalidRoundInput("a worker is assigned twice in the same round")
    _bytes32("config_hash", event.config_hash)
    _uint("deadline", event.deadline)
    if len(event.workers) < state.policy.min_updates:
        raise InvalidRoundInput(
            f"{len(event.workers)} assigned workers can never reach min_updates "
            f"{state.policy.min_updates}"
        )
    if event.deadline <= event.at:
        raise InvalidRoundInput(f"deadline {event.deadline} is not after {event.at}")
    assignments = tuple(Assignment(w, shard) for shard, w in enumerate(event.workers))
    return replace(
        state,
        phase=Phase.ASSIGNING,
        assignments=assignments,
        config_hash=event.config_hash,
        deadline=event.deadline,
        updated_at=event.at,
    )


MISSED_REASON = "missed the deadline"
RELAYED_LATE_REASON = (
    "committed on its worker chain before the deadline; reached the coordinator chain after "
    "collection closed"
)


def _closed_as_missing(assignment: Assignment) -> bool:
    """Whether collection closed ``assignment`` because no commitment had arrived."""
    return (
        assignment.commitment is None
        and assignment.status in (TaskStatus.SLASHED, TaskStatus.DROPPED)
        and assignment.reason == MISSED_REASON
    )


def _commit(state: RoundState, event: CommitmentReceived) -> RoundState:
    worker = event.commitment.worker
    assignment = state.assignment(worker)
    if state.phase is Phase.AGGREGATING:
        return _commit_late(state, event, assignment)
    if assignment.status is not TaskStatus.ASSIGNED:
        raise DuplicateCommitment(
            f"worker {worker.key.hex()} already has a {assignment.status.value} task in job "
            f"{state.job_id} round {state.round}"
        )
    # No check of ``event.at`` against the deadline: the worker chain took the commitment only
    # before the task's deadline on its own clock, and ``at`` is when the relayer delivered it.
    committed = replace(assignment, status=TaskStatus.COMMITTED, commitment=event.commitment)
    assignments = _replace_assignment(state, committed)
    # Still ASSIGNING: the tasks not yet on chain must still be sent (the confirmation moves on).
    phase = state.phase if state.phase is Phase.ASSIGNING else _collecting_phase(assignments)
    return replace(state, phase=phase, assignments=assignments, updated_at=event.at)


def _commit_late(
    state: RoundState, event: CommitmentReceived, assignment: Assignment
) -> RoundState:
    """A commitment that arrived after collection closed: made in time (its worker chain takes
    none past the deadline) but too late to aggregate. A task closed as missing becomes DROPPED
    with no fault, its commitment kept: it is not paid, and never slashed for missing a deadline
    it met (JobMarket refuses a MISSED slash for a task whose commitment its lane received)."""
    worker = event.commitment.worker
    if assignment.commitment is not None:
        raise DuplicateCommitment(
            f"worker {worker.key.hex()} already has a {assignment.status.value} task in job "
            f"{state.job_id} round {state.round}"
        )
    if not _closed_as_missing(assignment):
        raise LateCommitment(
            f"commitment of worker {worker.key.hex()} arrived after collection closed in job "
            f"{state.job_id} round {state.round}, and its task is {assignment.status.value} "
            f"({assignment.reason or 'no reason'}), not missing"
        )
    dropped = replace(
        assignment,
        status=TaskStatus.DROPPED,
        commitment=event.commitment,
        slash=0,
        fault=Fault.NONE,
        evidence=None,
        reason=RELAYED_LATE_REASON,
    )
    return replace(state, assignments=_replace_assignment(state, dropped), updated_at=event.at)


def _collecting_phase(assignments: tuple[Assignment, ...]) -> Phase:
    """COLLECTING while a task may still commit; AGGREGATING once every task committed or was
    refused (and at least one committed)."""
    settled = all(a.status in (TaskStatus.COMMITTED, TaskStatus.DROPPED) for a in assignments)
    anyone = any(a.status is TaskStatus.COMMITTED for a in assignments)
    return Phase.AGGREGATING if settled and anyone else Phase.COLLECTING


def _close_collection(state: RoundState, now: int) -> RoundState:
    policy = state.policy
    missing_status = TaskStatus.SLASHED if policy.slash_missing else TaskStatus.DROPPED
    missing_slash = policy.missing_slash if policy.slash_missing else 0
    missing_fault = Fault.MISSED if policy.slash_missing else Fault.NONE
    assignments = tuple(
        replace(
            a,
            status=missing_status,
            slash=missing_slash,
            fault=missing_fault,
            reason=MISSED_REASON,
        )
        if a.status is TaskStatus.ASSIGNED
        else a
        for a in state.assignments
    )
    committed = sum(a.status is TaskStatus.COMMITTED for a in assignments)
    if committed < policy.min_updates:
        # Too few updates to aggregate: the round still goes through finalizeRound (with the
        # model unchanged) so the chain advances, but no commitment is paid for a model that
        # was never built.
        assignments = tuple(
            replace(a, status=TaskStatus.DROPPED, reason="round skipped: too few updates")
            if a.status is TaskStatus.COMMITTED
            else a
            for a in assignments
        )
    return replace(state, phase=Phase.AGGREGATING, assignments=assignments, updated_at=now)


def _tick(state: RoundState, event: Tick) -> RoundState:
    due = state.deadline is not None and event.now > state.deadline
    if state.phase in (Phase.ASSIGNING, Phase.COLLECTING) and due:
        return _close_collection(state, event.now)
    return state


def _reject(state: RoundState, event: UpdateRejected) -> RoundState:
    assignment = state.assignment(event.worker)
    if assignment.status is not TaskStatus.COMMITTED:
        raise InvalidTransition(
            f"only a committed update can be rejected; worker {event.worker.key.hex()} is "
            f"{assignment.status.value}"
        )
    _uint("slash", event.slash)
    if not event.reason:
        raise InvalidRoundInput("a rejected update needs a reason")
    rejected = replace(
        assignment,
        status=TaskStatus.SLASHED,
        slash=event.slash,
        reason=event.reason,
        fault=Fault.REJECTED,
    )
    return replace(state, assignments=_replace_assignment(state, rejected), updated_at=event.at)


def _refuse(state: RoundState, event: TaskRefused) -> RoundState:
    assignment = state.assignment(event.worker)
    if assignment.status is TaskStatus.DROPPED and assignment.fault is Fault.NONE:
        return state  # refused (or dropped) already: the same refusal read twice
    if assignment.status not in (TaskStatus.ASSIGNED, TaskStatus.SLASHED, TaskStatus.DROPPED):
        raise InvalidTransition(
            f"worker {event.worker.key.hex()}'s task is {assignment.status.value}; only a task "
            "that never committed can have been refused"
        )
    refused = replace(
        assignment,
        status=TaskStatus.DROPPED,
        slash=0,
        fault=Fault.NONE,
        evidence=None,
        reason=event.reason or "refused by the worker chain",
    )
    assignments = _replace_assignment(state, refused)
    phase = state.phase
    if phase in (Phase.ASSIGNING, Phase.COLLECTING):
        phase = _collecting_phase(assignments) if phase is Phase.COLLECTING else phase
    return replace(state, phase=phase, assignments=assignments, updated_at=event.at)


def _withdraw(state: RoundState, event: TaskWithdrawn) -> RoundState:
    assignment = state.assignment(event.worker)
    if assignment.status is not TaskStatus.ASSIGNED:
        raise InvalidTransition(
            f"worker {event.worker.key.hex()}'s task is {assignment.status.value}; only a task "
            "still waiting to be sent can be withdrawn"
        )
    if not event.reason:
        raise InvalidRoundInput("a withdrawn task needs a reason")
    kept = tuple(a for a in state.assignments if a.worker != event.worker)
    if not kept:
        return replace(
            state, phase=Phase.POSTED, assignments=(), deadline=None, updated_at=event.at
        )
    return replace(state, assignments=kept, updated_at=event.at)


def _evidence(state: RoundState, event: EvidencePublished) -> RoundState:
    assignment = state.assignment(event.worker)
    if assignment.status is not TaskStatus.SLASHED:
        raise InvalidTransition(
            f"worker {event.worker.key.hex()}'s task is {assignment.status.value}; evidence is "
            "published for a slash only"
        )
    _bytes32("evidence", event.evidence)
    if event.evidence == bytes(32):
        raise InvalidRoundInput("evidence must be a nonzero blob hash")
    with_evidence = replace(assignment, evidence=event.evidence)
    return replace(state, assignments=_replace_assignment(state, with_evidence))


def _propose(state: RoundState, event: AggregateProposed) -> RoundState:
    _bytes32("model_hash", event.model_hash)
    if not state.with_status(TaskStatus.COMMITTED) and event.model_hash != state.model_hash:
        raise InvalidTransition(
            f"job {state.job_id} round {state.round} has no accepted update; only the unchanged "
            f"model {state.model_hash.hex()} can be proposed"
        )
    assignments = tuple(
        replace(a, status=TaskStatus.ACCEPTED) if a.status is TaskStatus.COMMITTED else a
        for a in state.assignments
    )
    return replace(
        state,
        phase=Phase.PROPOSED,
        assignments=assignments,
        proposed_model=event.model_hash,
        challenge_ends=event.at + state.policy.challenge_window,
        updated_at=event.at,
    )


def _challenged(state: RoundState, event: ProposalChallenged) -> RoundState:
    assignments = tuple(
        replace(a, status=TaskStatus.COMMITTED) if a.status is TaskStatus.ACCEPTED else a
        for a in state.assignments
    )
    return replace(
        state,
        phase=Phase.AGGREGATING,
        assignments=assignments,
        proposed_model=None,
        challenge_ends=None,
        updated_at=event.at,
    )


def _settle(state: RoundState, event: SettlementConfirmed) -> RoundState:
    assert state.challenge_ends is not None
    if event.at < state.challenge_ends:
        raise ChallengeWindowOpen(
            f"job {state.job_id} round {state.round}: the challenge window is open until "
            f"{state.challenge_ends}, settlement came at {event.at}"
        )
    return replace(state, phase=Phase.SETTLED, updated_at=event.at)


def _next(state: RoundState, event: NextRound) -> RoundState:
    model = state.proposed_model if state.proposed_model is not None else state.model_hash
    if state.is_last_round:
        return replace(state, phase=Phase.COMPLETED, model_hash=model, updated_at=event.at)
    return RoundState(
        state.job_id, state.round + 1, Phase.POSTED, state.policy, model, updated_at=event.at
    )


def apply(state: RoundState, event: RoundEvent) -> RoundState:
    """Return the state after ``event``.

    Args:
        state: The current state.
        event: What happened.

    Returns:
        The new state (``state`` itself when a :class:`Tick` has nothing due).

    Raises:
        InvalidTransition: The event does not apply in the current phase.
        WrongRound: The event is for another round.
        UnknownWorker: The event names a worker not assigned in the round.
        DuplicateCommitment: The worker already committed.
        LateCommitment: The commitment arrived after collection closed, for a task that was
            not closed as missing.
        ChallengeWindowOpen: Settlement came before the window closed.
        InvalidRoundInput: A field of the event is out of range.
    """
    match event:
        case Tick():
            return _tick(state, event)
        case TasksAssigned():
            _expect(state, event, Phase.POSTED)
            return _assign(state, event)
        case AssignmentConfirmed():
            _expect(state, event, Phase.ASSIGNING)
            phase = _collecting_phase(state.assignments)
            return replace(state, phase=phase, updated_at=event.at)
        case CommitmentReceived():
            _expect(state, event, Phase.ASSIGNING, Phase.COLLECTING, Phase.AGGREGATING)
            return _commit(state, event)
        case UpdateRejected():
            _expect(state, event, Phase.AGGREGATING)
            return _reject(state, event)
        case TaskRefused():
            _expect(state, event, Phase.ASSIGNING, Phase.COLLECTING, Phase.AGGREGATING)
            return _refuse(state, event)
        case TaskWithdrawn():
            _expect(state, event, Phase.ASSIGNING)
            return _withdraw(state, event)
        case EvidencePublished():
            _expect(state, event, Phase.AGGREGATING)
            return _evidence(state, event)
        case AggregateProposed():
            _expect(state, event, Phase.AGGREGATING)
            return _propose(state, event)
        case ProposalChallenged():
            _expect(state, event, Phase.PROPOSED)
            return _challenged(state, event)
        case SettlementConfirmed():
            _expect(state, event, Phase.PROPOSED)
            return _settle(state, event)
        case NextRound():
            _expect(state, event, Phase.SETTLED)
            return _next(state, event)
    raise InvalidTransition(f"unknown round event {event!r}")


def apply_all(state: RoundState, events: Iterable[RoundEvent]) -> RoundState:
    """Apply ``events`` in order; used to rebuild a state from a recorded event log."""
    for event in events:
        state = apply(state, event)
    return state


def can_settle(state: RoundState, now: int) -> bool:
    """Whether ``settleRound`` may be sent at ``now`` (proposed and the window has closed)."""
    return (
        state.phase is Phase.PROPOSED
        and state.challenge_ends is not None
        and now >= state.challenge_ends
    )


_OUTCOMES = {
    TaskStatus.ACCEPTED: Outcome.ACCEPTED,
    TaskStatus.DROPPED: Outcome.DROPPED,
    TaskStatus.SLASHED: Outcome.SLASHED,
}


def settlements(state: RoundState, chain: int) -> tuple[Settlement, ...]:
    """The ROUND_SETTLED entries for the workers of ``chain``, in assignment order.

    Args:
        state: A PROPOSED, SETTLED or COMPLETED state (every task has its outcome).
        chain: The worker chain the message goes to.

    Raises:
        InvalidTransition: Some task has no outcome yet.
    """
    if state.phase not in (Phase.PROPOSED, Phase.SETTLED, Phase.COMPLETED):
        raise InvalidTransition(
            f"job {state.job_id} round {state.round} is {state.phase.value}; outcomes are known "
            "only once it is proposed or settled"
        )
    result = []
    for a in state.assignments:
        if a.worker.chain != chain:
            continue
        if a.status not in _OUTCOMES:
            raise InvalidTransition(f"worker {a.worker.key.hex()} has no outcome ({a.status})")
        result.append(Settlement(a.worker.key, _OUTCOMES[a.status], a.slash))
    return tuple(result)
