"""The POSTED and ASSIGNING phases: draw the round's workers and assign their tasks on chain.

The draw is seeded by the block that opened the round (:mod:`fedrelay.coordinator.selection`),
by its beacon value or its hash as the job's ``randomness`` says
(:mod:`fedrelay.coordinator.phases.seeds`), and draws from the workers' current stakes as the
service followed them on the coordinator chain
(WORKER_REGISTERED, then every STAKE_CHANGED): a worker that unbonded, withdrew or was slashed
below the job's minimum is not drawn. A round with too few eligible workers waits for more.
Tasks already assigned on chain are not sent again, so a restarted coordinator repeats nothing.

The round's deadline is set on the coordinator chain's clock: ``collect_seconds`` after the
newest block's timestamp (:func:`chain_time`), which is what JobMarket's ``assignTasks`` checks
it against; a deadline counted from the service's clock alone is refused for ever by a chain
whose time runs ahead of it. A round still ASSIGNING whose deadline the chain has passed before
all its tasks reached it is planned again (:func:`replanned`) rather than sent with a deadline
the chain can only refuse. A task not yet on chain whose worker's stake fell below the job's
minimum after the draw is withdrawn (``assignTasks`` would refuse its batch on every step); with
nothing of the round on chain yet, the round is drawn anew.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import replace

from fedrelay.coordinator.phases.context import JobContext, RoundKeeper
from fedrelay.coordinator.phases.seeds import seed_value, selection_block
from fedrelay.coordinator.selection import Candidate, NotEnoughWorkers, round_seed, select_workers
from fedrelay.ports.coordinator_chain import CoordinatorChain
from fedrelay.protocol.rounds import (
    Assignment,
    AssignmentConfirmed,
    CommitmentReceived,
    Phase,
    RoundState,
    TaskRefused,
    TasksAssigned,
    TaskStatus,
    TaskWithdrawn,
    apply,
)
from fedrelay.protocol.wormhole import Task

log = logging.getLogger(__name__)


async def assign(
    keeper: RoundKeeper,
    context: JobContext,
    state: RoundState,
    now: int,
    waiting: set[tuple[int, int]],
) -> RoundState:
    """Draw a POSTED round's workers and assign their tasks; the round as it is now.

    Args:
        keeper: The service's collaborators.
        context: The round's job.
        state: The POSTED round.
        now: Unix seconds.
        waiting: Rounds already logged as waiting for workers (updated here).
    """
    job = context.job
    report = await keeper.report(state)
    opening = await keeper.chain.block(report.opening_block)
    block = await selection_block(keeper.chain, context.config, opening)
    if block is None:
        return state  # the block whose beacon seeds the draw does not exist yet
    value = await seed_value(keeper.chain, context.config, block)
    seed = round_seed(value, job.job_id, state.round)
    stakes = await keeper.store.stakes()
    candidates = [Candidate(w, stakes.get(w, 0)) for w in await keeper.store.workers()]
    try:
        selection = select_workers(
            seed,
            candidates,
            job.workers_per_round,
            min_stake=job.min_stake,
            allowed_chains=job.worker_chains,
        )
    except NotEnoughWorkers as exc:
        if (job.job_id, state.round) not in waiting:
            log.info("job %d round %d waits for workers: %s", job.job_id, state.round, exc)
            waiting.add((job.job_id, state.round))
        return state
    waiting.discard((job.job_id, state.round))
    deadline = await chain_time(keeper.chain, now) + context.config.collect_seconds
    assigned = apply(
        state, TasksAssigned(state.round, selection.workers, job.config_hash, deadline, now)
    )
    await keeper.store.save_report(replace(report, seed=seed.hex(), seed_block=block.number))
    await keeper.save_round(assigned)
    log.info(
        "job %d round %d: %d workers drawn from seed %s (%s of block %d)",
        job.job_id,
        state.round,
        len(selection.workers),
        seed.hex(),
        context.config.randomness,
        block.number,
    )
    return await confirm_assignment(keeper, context, assigned, now)


async def chain_time(chain: CoordinatorChain, now: int) -> int:
    """The time a deadline is counted from: the coordinator chain's newest block's timestamp, or
    ``now`` (the service's clock) where that is later.

    JobMarket checks a deadline against the timestamp of the block its transaction lands in,
    never earlier than the newest block's, so a deadline counted from the chain holds however far
    the chain's time runs ahead of the service's. ``now`` counts where it is later: a chain that
    mines only for transactions (a development node) stamps its next block with about the wall
    clock however old its newest block is, and the service closes collection on its own clock.
    """
    return max((await chain.latest()).timestamp, now)


def replanned(state: RoundState, deadline: int, now: int) -> RoundState:
    """The ASSIGNING ``state`` planned again at ``now`` with ``deadline``: the same workers on
    the same shards, through the state machine's own events (``TasksAssigned`` on the round as
    it was POSTED, then ``TaskRefused`` for each task its worker chain refused meanwhile and
    ``CommitmentReceived`` for each commitment that arrived meanwhile).

    In ASSIGNING a task is still ASSIGNED, was refused (DROPPED) or committed (a commitment keeps
    the round ASSIGNING until the confirmation): each is carried over as it was. The shards are
    the tasks' own, so a round some tasks were withdrawn from keeps the others' shards.
    """
    posted = replace(state, phase=Phase.POSTED, assignments=(), deadline=None)
    workers = tuple(a.worker for a in state.assignments)  # assignment order
    again = apply(posted, TasksAssigned(state.round, workers, state.config_hash, deadline, now))
    shards = {a.worker: a.shard for a in state.assignments}
    again = replace(
        again, assignments=tuple(replace(a, shard=shards[a.worker]) for a in again.assignments)
    )
    for a in state.assignments:
        if a.status is TaskStatus.DROPPED:
            again = apply(again, TaskRefused(state.round, a.worker, a.reason, now))
        elif a.status is TaskStatus.COMMITTED:
            assert a.commitment is not None
            again = apply(again, CommitmentReceived(state.round, a.commitment, now))
    return again


async def _withdraw_unassignable(
    keeper: RoundKeeper,
    context: JobContext,
    state: RoundState,
    missing: list[Assignment],
    on_chain: Mapping[int, frozenset[bytes]],
    now: int,
) -> tuple[RoundState, list[Assignment]]:
    """Withdraw the tasks not yet on chain whose worker's stake (as followed from the chain)
    fell below the job's minimum since the draw: ``assignTasks`` refuses a batch holding one
    (``InsufficientStake``), so sending it would fail on every step. When no task of the round
    is on chain yet, every task is withdrawn and the round is drawn anew (a full round instead
    of a short one); otherwise the round goes on without them. The state and the tasks still to
    send."""
    minimum = context.job.min_stake
    stakes = await keeper.store.stakes()
    low = [a for a in missing if stakes.get(a.worker, 0) < minimum]
    if not low:
        return state, missing
    nothing_sent = not any(on_chain.values())
    withdrawn = list(state.assignments) if nothing_sent else low
    for a in withdrawn:
        reason = (
            f"stake {stakes.get(a.worker, 0)} below the job's minimum {minimum} before the task "
            "was sent"
            if a in low
            else "the round is drawn anew: a drawn worker's stake fell below the job's minimum"
        )
        state = apply(state, TaskWithdrawn(state.round, a.worker, reason, now))
    await keeper.save_round(state)
    log.warning(
        "job %d round %d: %d drawn worker(s) fell below the minimum stake %d before their tasks "
        "were sent: %s",
        state.job_id, state.round, len(low), minimum,
        "the round is drawn anew" if nothing_sent else "withdrawn, the others go on",
    )  # fmt: skip
    return state, [a for a in missing if a not in low]


async def confirm_assignment(
    keeper: RoundKeeper, context: JobContext, state: RoundState, now: int
) -> RoundState:
    """Send the tasks not yet assigned on chain, then start collecting.

    Which tasks the chain has is one read of the round's assigned keys. When some are missing
    and the chain's time (:func:`chain_time`) is at or past the round's deadline, ``assignTasks``
    can only be refused (``DeadlinePassed``): the round is planned again first
    (:func:`replanned`), its deadline ``collect_seconds`` after the chain's time now, and only
    the missing tasks are sent, with the new deadline.

    Tasks already on chain keep the deadline they were sent with: JobMarket keeps no deadline
    per round (each TASK_ASSIGNED message carries its own, and WorkerHub keeps it per task), so
    one round's tasks may hold different deadlines, and a task on chain can be neither sent
    again nor moved (the chain takes a worker once per round, in increasing key order per
    worker chain). Their workers could commit until their own deadline; the round's deadline
    becomes the later one, so it stays open until the last task's deadline and a commitment
    made in time but relayed late is still taken. A task on chain that did not commit is
    missed as it would have been without the new plan, while the tasks sent under the new plan
    get the whole ``collect_seconds`` on the chain's clock.
    """
    assert state.deadline is not None
    on_chain = await keeper.chain.assigned_keys(state.job_id, state.round)
    missing = [a for a in state.assignments if a.worker.key not in on_chain.get(a.worker.chain, ())]
    if missing:
        state, missing = await _withdraw_unassignable(
            keeper, context, state, missing, on_chain, now
        )
        if state.phase is Phase.POSTED:
            return state  # drawn anew on the next step
    if missing:
        at = await chain_time(keeper.chain, now)
        assert state.deadline is not None
        if state.deadline <= at:
            deadline = at + context.config.collect_seconds
            log.warning(
                "job %d round %d: deadline %d passed (chain time %d) with %d of %d tasks not "
                "on chain; planned again with deadline %d",
                state.job_id, state.round, state.deadline, at, len(missing),
                len(state.assignments), deadline,
            )  # fmt: skip
            state = replanned(state, deadline, now)
            await keeper.save_round(state)
    assert state.deadline is not None
    by_chain: dict[int, list[Task]] = {}
    for a in missing:
        by_chain.setdefault(a.worker.chain, []).append(Task(a.worker.key, a.shard))
    for worker_chain, tasks in sorted(by_chain.items()):
        # The chain takes a round's workers on one worker chain in increasing key order (its
        # lane's hash chain); those still missing after a restart come after the ones it has.
        tasks.sort(key=lambda t: t.worker_key)
        size = await keeper.chain.max_batch(worker_chain)
        for start in range(0, len(tasks), max(size, 1)):
            batch = tasks[start : start + max(size, 1)]
            await keeper.chain.assign_tasks(state.job_id, worker_chain, state.deadline, batch)
    # Commitments that arrived meanwhile are recorded without moving the round on (the rest of
    # its tasks had to be sent first); the deadline may have closed it meanwhile.
    current = await keeper.store.get_round(state.job_id, state.round) or state
    if current.phase is not Phase.ASSIGNING:
        return current
    confirmed = apply(current, AssignmentConfirmed(state.round, now))
    await keeper.save_round(confirmed)
    return confirmed
