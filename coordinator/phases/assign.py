"""The POSTED and ASSIGNING phases: draw the round's workers and assign their tasks on chain.

The draw is seeded by the block that opened the round (:mod:`fedrelay.coordinator.selection`),
by its beacon value or its hash as the job's ``randomness`` says
(:mod:`fedrelay.coordinator.phases.seeds`), and draws from the workers' current stakes as the
service followed them on the coordinator chain
(WORKER_REGISTERED, then every STAKE_CHANGED): a worker that unbonded, withdrew or was slashed
below the job's minimum is not drawn. A round with too few eligible workers waits for more.
Tasks already assigned on chain are not sent again, so a restarted coordinator repeats nothing.
"""

from __future__ import annotations

import logging
from dataclasses import replace

from fedrelay.coordinator.phases.context import JobContext, RoundKeeper
from fedrelay.coordinator.phases.seeds import seed_value, selection_block
from fedrelay.coordinator.selection import Candidate, NotEnoughWorkers, round_seed, select_workers
from fedrelay.protocol.rounds import AssignmentConfirmed, Phase, RoundState, TasksAssigned, apply
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
    deadline = now + context.config.collect_seconds
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
    return await confirm_assignment(keeper, assigned, now)


async def confirm_assignment(keeper: RoundKeeper, state: RoundState, now: int) -> RoundState:
    """Send the tasks not yet assigned on chain, then start collecting."""
    assert state.deadline is not None
    by_chain: dict[int, list[Task]] = {}
    for a in state.assignments:
        found = await keeper.chain.commitment(state.job_id, state.round, a.worker)
        if not found.assigned:
            by_chain.setdefault(a.worker.chain, []).append(Task(a.worker.key, a.shard))
    for worker_chain, tasks in sorted(by_chain.items()):
        # The chain takes a round's workers on one worker chain in increasing key order (its
        # lane's hash chain); those still missing after a restart come after the ones it has.
        tasks.sort(key=lambda t: t.worker_key)
        size = await keeper.chain.max_batch(worker_chain)
        for start in range(0, len(tasks), max(size, 1)):
            batch = tasks[start : start + max(size, 1)]
            await keeper.chain.assign_tasks(state.job_id, worker_chain, state.deadline, batch)
    # A commitment may have arrived meanwhile and moved the round on already.
    current = await keeper.store.get_round(state.job_id, state.round) or state
    if current.phase is not Phase.ASSIGNING:
        return current
    confirmed = apply(current, AssignmentConfirmed(state.round, now))
    await keeper.save_round(confirmed)
    return confirmed
