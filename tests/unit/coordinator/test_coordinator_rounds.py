"""The round state machine: every phase, deadlines, rejections, challenges and bad events."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedrelay.protocol.rounds import (
    RELAYED_LATE_REASON,
    AggregateProposed,
    AssignmentConfirmed,
    ChallengeWindowOpen,
    Commitment,
    CommitmentReceived,
    DuplicateCommitment,
    EvidencePublished,
    Fault,
    InvalidRoundInput,
    InvalidTransition,
    LateCommitment,
    NextRound,
    Phase,
    ProposalChallenged,
    RoundError,
    RoundEvent,
    RoundPolicy,
    RoundState,
    SettlementConfirmed,
    TaskRefused,
    TasksAssigned,
    TaskStatus,
    TaskWithdrawn,
    Tick,
    UnknownWorker,
    UpdateRejected,
    WorkerRef,
    WrongRound,
    apply,
    apply_all,
    can_settle,
    open_job,
    settlements,
)
from fedrelay.protocol.wormhole import Outcome, Settlement, worker_id

EVM, SOLANA = 4, 1
A = WorkerRef(EVM, bytes(12) + b"\xaa" * 20)
B = WorkerRef(EVM, bytes(12) + b"\xbb" * 20)
C = WorkerRef(SOLANA, b"\xcc" * 32)
MODEL0 = b"\x01" * 32
MODEL1 = b"\x02" * 32
CONFIG = b"\x03" * 32
POLICY = RoundPolicy(total_rounds=2, min_updates=2, challenge_window=100)


def commitment(worker: WorkerRef, update: int = 7) -> Commitment:
    return Commitment(worker, bytes([update]) * 32, b"\x09" * 32, b"\x0a" * 32, 100, 500_000)


def collecting(policy: RoundPolicy = POLICY) -> RoundState:
    state = open_job(5, policy, MODEL0, at=1000)
    return apply_all(
        state,
        [
            TasksAssigned(0, (A, B, C), CONFIG, deadline=2000, at=1010),
            AssignmentConfirmed(0, at=1020),
        ],
    )


def test_a_posted_job_starts_in_its_first_round() -> None:
    state = open_job(5, POLICY, MODEL0, at=1000)
    assert (state.job_id, state.round, state.phase, state.model_hash) == (
        5,
        0,
        Phase.POSTED,
        MODEL0,
    )
    assert state.assignments == ()


def test_assignment_records_workers_shards_and_deadline() -> None:
    state = apply(
        open_job(5, POLICY, MODEL0, at=1000), TasksAssigned(0, (A, B, C), CONFIG, 2000, 1010)
    )
    assert state.phase is Phase.ASSIGNING
    assert [(a.worker, a.shard, a.status) for a in state.assignments] == [
        (A, 0, TaskStatus.ASSIGNED),
        (B, 1, TaskStatus.ASSIGNED),
        (C, 2, TaskStatus.ASSIGNED),
    ]
    assert (state.deadline, state.config_hash) == (2000, CONFIG)
    assert apply(state, AssignmentConfirmed(0, 1020)).phase is Phase.COLLECTING


def test_a_full_round_across_chains_settles_and_opens_the_next() -> None:
    state = collecting()
    state = apply(state, CommitmentReceived(0, commitment(A), at=1100))
    state = apply(state, CommitmentReceived(0, commitment(C), at=1200))
    assert state.phase is Phase.COLLECTING
    state = apply(state, CommitmentReceived(0, commitment(B), at=1300))
    assert state.phase is Phase.AGGREGATING  # everyone committed: no need to wait
    state = apply(state, AggregateProposed(0, MODEL1, at=1400))
    assert state.phase is Phase.PROPOSED
    assert state.challenge_ends == 1500
    assert all(a.status is TaskStatus.ACCEPTED for a in state.assignments)
    assert not can_settle(state, 1499)
    assert can_settle(state, 1500)
    state = apply(state, SettlementConfirmed(0, at=1500))
    assert state.phase is Phase.SETTLED
    assert settlements(state, SOLANA) == (Settlement(C.key, Outcome.ACCEPTED, 0),)
    state = apply(state, NextRound(0, at=1501))
    assert (state.round, state.phase, state.model_hash) == (1, Phase.POSTED, MODEL1)
    assert state.assignments == ()


def test_the_last_round_completes_the_job() -> None:
    policy = RoundPolicy(total_rounds=1, min_updates=1)
    state = apply_all(
        open_job(9, policy, MODEL0, at=0),
        [
            TasksAssigned(0, (A,), CONFIG, 50, 1),
            CommitmentReceived(0, commitment(A), 2),
            AssignmentConfirmed(0, 2),
            AggregateProposed(0, MODEL1, 3),
            SettlementConfirmed(0, 3),
            NextRound(0, 4),
        ],
    )
    assert state.phase is Phase.COMPLETED
    assert state.model_hash == MODEL1
    with pytest.raises(InvalidTransition, match="completed"):
        apply(state, TasksAssigned(0, (A,), CONFIG, 50, 5))


def test_a_commitment_in_assigning_is_kept_and_the_round_waits_for_its_confirmation() -> None:
    # Some of the round's TASK_ASSIGNED may not be on chain yet: the round stays ASSIGNING so
    # that they are still sent, and the confirmation moves it on.
    state = apply(open_job(5, POLICY, MODEL0, at=0), TasksAssigned(0, (A, B), CONFIG, 100, 1))
    state = apply(state, CommitmentReceived(0, commitment(A), 2))
    assert state.phase is Phase.ASSIGNING
    assert state.assignment(A).commitment == commitment(A)
    state = apply(state, AssignmentConfirmed(0, 3))
    assert state.phase is Phase.COLLECTING
    assert state.assignment(A).status is TaskStatus.COMMITTED


def test_a_round_whose_every_task_committed_before_its_confirmation_aggregates() -> None:
    state = apply(open_job(5, POLICY, MODEL0, at=0), TasksAssigned(0, (A, B), CONFIG, 100, 1))
    state = apply(state, CommitmentReceived(0, commitment(A), 2))
    state = apply(state, CommitmentReceived(0, commitment(B), 3))
    assert state.phase is Phase.ASSIGNING
    assert apply(state, AssignmentConfirmed(0, 4)).phase is Phase.AGGREGATING


def test_missing_workers_are_dropped_at_the_deadline() -> None:
    state = apply(collecting(), CommitmentReceived(0, commitment(A), 1100))
    state = apply(state, CommitmentReceived(0, commitment(C), 1200))
    assert apply(state, Tick(2000)) is state  # the deadline itself still accepts commitments
    state = apply(state, Tick(2001))
    assert state.phase is Phase.AGGREGATING
    assert state.assignment(B).status is TaskStatus.DROPPED
    assert state.assignment(B).slash == 0
    state = apply(state, AggregateProposed(0, MODEL1, 2100))
    assert settlements(state, EVM) == (
        Settlement(A.key, Outcome.ACCEPTED, 0),
        Settlement(B.key, Outcome.DROPPED, 0),
    )


def test_missing_workers_are_slashed_when_the_policy_says_so() -> None:
    policy = dataclasses.replace(POLICY, slash_missing=True, missing_slash=10**8)
    state = apply_all(
        collecting(policy),
        [
            CommitmentReceived(0, commitment(A), 1100),
            CommitmentReceived(0, commitment(C), 1100),
            Tick(3000),
        ],
    )
    missing = state.assignment(B)
    assert (missing.status, missing.slash, missing.reason) == (
        TaskStatus.SLASHED,
        10**8,
        "missed the deadline",
    )


def test_a_commitment_delivered_after_the_deadline_while_collecting_counts() -> None:
    # Its worker chain took it before the deadline (it takes none after); the relayer delivered
    # it at 2001, before the coordinator's clock closed collection.
    state = apply(collecting(), CommitmentReceived(0, commitment(B), 2001))
    assert state.assignment(B).status is TaskStatus.COMMITTED
    assert state.phase is Phase.COLLECTING


def test_a_commitment_relayed_after_collection_closed_turns_a_missed_slash_into_a_drop() -> None:
    policy = dataclasses.replace(POLICY, slash_missing=True, missing_slash=10**8)
    state = apply_all(
        collecting(policy),
        [CommitmentReceived(0, commitment(A), 1100), CommitmentReceived(0, commitment(C), 1100)],
    )
    closed = apply(state, Tick(2001))
    assert closed.assignment(B).fault is Fault.MISSED
    closed = apply(closed, EvidencePublished(0, B, b"\x0e" * 32, 2002))
    late = apply(closed, CommitmentReceived(0, commitment(B), 2050))
    task = late.assignment(B)
    assert (task.status, task.fault, task.slash, task.evidence) == (
        TaskStatus.DROPPED,
        Fault.NONE,
        0,
        None,
    )
    assert task.reason == RELAYED_LATE_REASON
    assert task.commitment == commitment(B)
    assert late.phase is Phase.AGGREGATING
    # Not aggregated and not paid: the proposal settles it as DROPPED.
    proposed = apply(late, AggregateProposed(0, MODEL1, 2100))
    assert dict((s.worker_key, s.outcome) for s in settlements(proposed, EVM))[B.key] is (
        Outcome.DROPPED
    )
    # The same commitment read twice, and one for a task that did not miss, are refused.
    with pytest.raises(DuplicateCommitment):
        apply(late, CommitmentReceived(0, commitment(B), 2060))
    with pytest.raises(DuplicateCommitment):
        apply(late, CommitmentReceived(0, commitment(A, update=8), 2060))
    # Without the slashing policy the missing task is DROPPED; the late commitment is kept.
    dropped = apply(apply(state, Tick(2001)), CommitmentReceived(0, commitment(B), 2050))
    assert (dropped.assignment(B).reason, dropped.assignment(B).commitment) == (
        RELAYED_LATE_REASON,
        commitment(B),
    )
    # Refused by its worker chain: it cannot have committed.
    refused = apply(apply(state, TaskRefused(0, B, "stake too low", 1500)), Tick(2001))
    with pytest.raises(LateCommitment, match="not missing"):
        apply(refused, CommitmentReceived(0, commitment(B), 2050))
    # After the proposal, a commitment no longer applies (the chain refuses it too).
    with pytest.raises(InvalidTransition):
        apply(proposed, CommitmentReceived(0, commitment(B), 2200))


def test_too_few_updates_drop_everyone_and_only_the_old_model_can_be_proposed() -> None:
    state = apply_all(collecting(), [CommitmentReceived(0, commitment(A), 1100), Tick(2001)])
    assert state.phase is Phase.AGGREGATING
    assert {a.status for a in state.assignments} == {TaskStatus.DROPPED}
    with pytest.raises(InvalidTransition, match="only the unchanged model"):
        apply(state, AggregateProposed(0, MODEL1, 2100))
    state = apply_all(state, [AggregateProposed(0, MODEL0, 2100), SettlementConfirmed(0, 2200)])
    state = apply(state, NextRound(0, 2201))
    assert (state.round, state.model_hash) == (1, MODEL0)


def test_duplicate_and_unknown_commitments_are_refused() -> None:
    state = apply(collecting(), CommitmentReceived(0, commitment(A), 1100))
    with pytest.raises(DuplicateCommitment, match="already has a committed task"):
        apply(state, CommitmentReceived(0, commitment(A, update=8), 1200))
    stranger = WorkerRef(EVM, bytes(12) + b"\xee" * 20)
    with pytest.raises(UnknownWorker, match="is not assigned in job 5 round 0"):
        apply(state, CommitmentReceived(0, commitment(stranger), 1200))
    with pytest.raises(WrongRound, match="round 3"):
        apply(state, CommitmentReceived(3, commitment(B), 1200))
    assert state.assignment(B).status is TaskStatus.ASSIGNED


def test_a_rejected_update_is_slashed_and_not_accepted() -> None:
    state = apply_all(
        collecting(),
        [CommitmentReceived(0, commitment(w), 1100) for w in (A, B, C)],
    )
    state = apply(state, UpdateRejected(0, C, slash=5 * 10**8, reason="hash mismatch", at=1200))
    state = apply(state, AggregateProposed(0, MODEL1, 1300))
    assert settlements(state, SOLANA) == (Settlement(C.key, Outcome.SLASHED, 5 * 10**8),)
    assert state.assignment(C).reason == "hash mismatch"
    assert state.assignment(A).status is TaskStatus.ACCEPTED


def test_only_committed_updates_can_be_rejected() -> None:
    state = apply_all(collecting(), [CommitmentReceived(0, commitment(A), 1100), Tick(2001)])
    with pytest.raises(InvalidTransition, match="only a committed update"):
        apply(state, UpdateRejected(0, B, 1, "x", 2100))


def test_settlement_inside_the_challenge_window_is_refused() -> None:
    state = apply_all(
        collecting(),
        [
            *(CommitmentReceived(0, commitment(w), 1100) for w in (A, B, C)),
            AggregateProposed(0, MODEL1, 1200),
        ],
    )
    with pytest.raises(ChallengeWindowOpen, match="open until 1300"):
        apply(state, SettlementConfirmed(0, 1299))
    assert state.phase is Phase.PROPOSED


def test_a_challenged_proposal_goes_back_to_aggregation() -> None:
    state = apply_all(
        collecting(),
        [
            *(CommitmentReceived(0, commitment(w), 1100) for w in (A, B, C)),
            AggregateProposed(0, MODEL1, 1200),
        ],
    )
    state = apply(state, ProposalChallenged(0, 1250))
    assert state.phase is Phase.AGGREGATING
    assert state.proposed_model is None
    assert {a.status for a in state.assignments} == {TaskStatus.COMMITTED}
    state = apply(state, AggregateProposed(0, b"\x04" * 32, 1260))
    assert state.challenge_ends == 1360


@pytest.mark.parametrize(
    "event",
    [
        AssignmentConfirmed(0, 1),
        AggregateProposed(0, MODEL1, 1),
        SettlementConfirmed(0, 1),
        NextRound(0, 1),
        ProposalChallenged(0, 1),
        UpdateRejected(0, A, 1, "x", 1),
    ],
)
def test_events_out_of_phase_raise_and_leave_the_state_alone(event: object) -> None:
    state = open_job(5, POLICY, MODEL0, at=0)
    with pytest.raises(InvalidTransition, match="but job 5 round 0 is posted"):
        apply(state, event)  # type: ignore[arg-type]
    assert state.phase is Phase.POSTED


def test_settlements_are_unknown_before_the_proposal() -> None:
    with pytest.raises(InvalidTransition, match="outcomes are known only"):
        settlements(collecting(), EVM)


@pytest.mark.parametrize(
    ("workers", "deadline", "message"),
    [
        ((), 100, "at least one assigned worker"),
        ((A, A), 100, "assigned twice"),
        ((A,), 100, "can never reach min_updates"),
        ((A, B), 1, "is not after"),
    ],
)
def test_bad_assignments_are_refused(
    workers: tuple[WorkerRef, ...], deadline: int, message: str
) -> None:
    with pytest.raises(InvalidRoundInput, match=message):
        apply(open_job(5, POLICY, MODEL0, at=0), TasksAssigned(0, workers, CONFIG, deadline, 10))


def test_bad_inputs_are_refused() -> None:
    with pytest.raises(InvalidRoundInput, match="worker key must be 32 bytes"):
        WorkerRef(EVM, b"\x01" * 20)
    with pytest.raises(InvalidRoundInput, match="total_rounds must be at least 1"):
        RoundPolicy(total_rounds=0)
    with pytest.raises(InvalidRoundInput, match="update_hash must be 32 bytes"):
        Commitment(A, b"short", b"\x00" * 32, b"\x00" * 32, 1, 1)
    with pytest.raises(InvalidRoundInput, match="data_root must be 32 bytes"):
        Commitment(A, b"\x00" * 32, b"\x00" * 32, b"short", 1, 1)
    with pytest.raises(InvalidRoundInput, match="model_hash"):
        open_job(1, POLICY, b"", at=0)


def test_worker_ref_id_matches_the_protocol_derivation() -> None:
    assert A.worker_id == worker_id(EVM, A.key)
    assert A.worker_id != WorkerRef(SOLANA, A.key).worker_id


# --- properties over random event sequences -------------------------------------------------------

WORKERS = (A, B, C)
KINDS = (
    TasksAssigned,
    AssignmentConfirmed,
    CommitmentReceived,
    Tick,
    UpdateRejected,
    AggregateProposed,
    ProposalChallenged,
    SettlementConfirmed,
    NextRound,
)


def draw_event(data: st.DataObject, state: RoundState, clock: int) -> RoundEvent:
    """Mostly plausible events for ``state`` (so sequences get deep), sometimes wrong ones."""
    likely = {
        Phase.POSTED: TasksAssigned,
        Phase.ASSIGNING: CommitmentReceived,
        Phase.COLLECTING: CommitmentReceived,
        Phase.AGGREGATING: AggregateProposed,
        Phase.PROPOSED: SettlementConfirmed,
        Phase.SETTLED: NextRound,
        Phase.COMPLETED: NextRound,
    }[state.phase]
    kind = data.draw(st.sampled_from([*KINDS, likely, likely, likely]))
    rnd = data.draw(st.sampled_from([state.round] * 5 + [state.round + 1]))
    worker = data.draw(st.sampled_from(WORKERS))
    if kind is TasksAssigned:
        workers = data.draw(st.lists(st.sampled_from(WORKERS), max_size=3, unique=True))
        deadline = clock + data.draw(st.integers(-5, 100))
        return TasksAssigned(rnd, tuple(workers), CONFIG, max(deadline, 0), clock)
    if kind is CommitmentReceived:
        return CommitmentReceived(rnd, commitment(worker), clock)
    if kind is Tick:
        return Tick(clock)
    if kind is UpdateRejected:
        reason = data.draw(st.sampled_from(["hash mismatch", ""]))
        return UpdateRejected(rnd, worker, data.draw(st.integers(0, 10)), reason, clock)
    if kind is AggregateProposed:
        return AggregateProposed(rnd, data.draw(st.sampled_from([MODEL0, MODEL1])), clock)
    if kind is AssignmentConfirmed:
        return AssignmentConfirmed(rnd, clock)
    if kind is ProposalChallenged:
        return ProposalChallenged(rnd, clock)
    if kind is SettlementConfirmed:
        return SettlementConfirmed(rnd, clock)
    return NextRound(rnd, clock)


SETTLED_STATUSES = {TaskStatus.ACCEPTED, TaskStatus.DROPPED, TaskStatus.SLASHED}


def check_invariants(state: RoundState) -> None:
    statuses = {a.status for a in state.assignments}
    if state.phase is Phase.POSTED:
        assert state.assignments == ()
    if state.phase in (Phase.PROPOSED, Phase.SETTLED) and state.proposed_model is not None:
        assert statuses <= SETTLED_STATUSES
        assert state.challenge_ends is not None
    for a in state.assignments:
        assert a.slash == 0 or a.status is TaskStatus.SLASHED
        assert (a.commitment is not None) or a.status in (
            TaskStatus.ASSIGNED,
            TaskStatus.DROPPED,
            TaskStatus.SLASHED,
        )
    assert [a.shard for a in state.assignments] == list(range(len(state.assignments)))
    assert 0 <= state.round < state.policy.total_rounds
    if state.phase is Phase.SETTLED and state.challenge_ends is not None:
        assert state.updated_at >= state.challenge_ends
    if state.phase is Phase.COMPLETED:
        assert state.round == state.policy.total_rounds - 1


@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_any_event_sequence_either_applies_or_raises_a_round_error(data: st.DataObject) -> None:
    state = open_job(5, RoundPolicy(total_rounds=2, challenge_window=50), MODEL0, at=0)
    clock = 0
    for _ in range(data.draw(st.integers(0, 60))):
        clock += data.draw(st.integers(0, 40))
        try:
            state = apply(state, draw_event(data, state, clock))
        except RoundError:
            continue  # refused; the previous state stands (states are immutable)
        check_invariants(state)


def test_a_task_not_yet_sent_can_be_withdrawn_and_an_empty_round_is_posted_again() -> None:
    state = apply(
        open_job(5, POLICY, MODEL0, at=1000),
        TasksAssigned(0, (A, B, C), CONFIG, deadline=2000, at=1010),
    )
    state = apply(state, CommitmentReceived(0, commitment(A), 1015))
    with pytest.raises(InvalidTransition, match="only a task still waiting to be sent"):
        apply(state, TaskWithdrawn(0, A, "stake fell", 1020))
    with pytest.raises(InvalidRoundInput, match="needs a reason"):
        apply(state, TaskWithdrawn(0, B, "", 1020))
    fewer = apply(state, TaskWithdrawn(0, B, "stake fell", 1020))
    assert [(a.worker, a.shard) for a in fewer.assignments] == [(A, 0), (C, 2)]
    assert fewer.phase is Phase.ASSIGNING
    with pytest.raises(InvalidTransition):
        apply(collecting(), TaskWithdrawn(0, B, "stake fell", 1030))  # on chain by then

    fresh = apply(
        open_job(5, POLICY, MODEL0, at=1000),
        TasksAssigned(0, (A, B), CONFIG, deadline=2000, at=1010),
    )
    emptied = apply_all(
        fresh, [TaskWithdrawn(0, A, "drawn anew", 1020), TaskWithdrawn(0, B, "drawn anew", 1020)]
    )
    assert (emptied.phase, emptied.assignments, emptied.deadline) == (Phase.POSTED, (), None)
    again = apply(emptied, TasksAssigned(0, (C, B), CONFIG, deadline=3000, at=1030))
    assert [(a.worker, a.shard) for a in again.assignments] == [(C, 0), (B, 1)]
