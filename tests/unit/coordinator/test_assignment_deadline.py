"""A round's assignment deadline is set on the coordinator chain's clock, and a round whose
deadline the chain passed before its tasks reached it is planned again.

On the simulated chain (FakeJobMarket, which refuses ``assignTasks`` with a deadline not after
its time, as JobMarket does), on both stores:

- the deadline is ``collect_seconds`` after the chain's newest block, however far the chain's
  time runs ahead of the service's clock (the service used to count from its own clock, and
  such a chain refused every assignment for ever);
- an ASSIGNING round whose deadline passed on chain with none of its tasks on chain is planned
  again from the chain's time and assigned;
- one whose deadline passed with part of its tasks on chain sends only the others, with the new
  deadline; a task its worker chain refused meanwhile stays dropped;
- which tasks the chain has is one read of the round's assigned keys, not one read per worker;
- a commitment that arrives while part of the round's tasks are not on chain yet does not stop
  the others from being sent, and is kept when the round is planned again;
- a drawn worker whose stake fell below the job's minimum before its task was sent is
  withdrawn (JobMarket would refuse its batch on every step): with nothing of the round on
  chain the round is drawn anew, otherwise the others go on with their shards.

The chain's clock and the service's are FakeClocks moved by the tests (no sleeps).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence

import pytest
from support.simulated_worker import SimulatedWorker
from test_coordinator_service import (
    WINDOW,
    World,
    make_world,
    phase_of,
    register,
    step_until,
    tiny_config,
)

from fedrelay.coordinator.service import CoordinatorService
from fedrelay.coordinator.testing import FakeClock, FakeJobMarket
from fedrelay.ports.coordinator_chain import ChainError, StakeReason
from fedrelay.ports.coordinator_store import CoordinatorStore
from fedrelay.protocol.rounds import Phase, RoundState, TaskStatus
from fedrelay.protocol.wormhole import Task

DAY = 24 * 3600


@pytest.fixture
async def world(store: CoordinatorStore) -> AsyncIterator[World]:
    async for w in make_world(store, tiny_config()):
        yield w


def service_clock(world: World, behind: int) -> FakeClock:
    """Drive ``world`` with a service whose clock is ``behind`` seconds behind the chain's."""
    clock = FakeClock(world.clock.now - behind)
    world.service = CoordinatorService(world.market, world.store, world.blobs, clock=clock)
    return clock


def one_task_per_batch(world: World) -> None:
    """A chain whose worker chains take one task per TASK_ASSIGNED (one batch per worker)."""
    world.market = FakeJobMarket(world.clock, challenge_window=WINDOW, max_batch=1)
    world.service = CoordinatorService(world.market, world.store, world.blobs, clock=world.clock)


def refuse_assignments(
    monkeypatch: pytest.MonkeyPatch, market: FakeJobMarket, *, after: int
) -> list[int]:
    """Let ``after`` ``assignTasks`` through, then refuse one as an unreachable node would;
    the returned list counts the refusals."""
    send = market.assign_tasks
    refused: list[int] = []

    async def flaky(job_id: int, worker_chain: int, deadline: int, tasks: Sequence[Task]) -> None:
        if len(market.assign_calls) >= after and not refused:
            refused.append(deadline)
            raise ChainError("coordinator chain call failed: connection refused")
        await send(job_id, worker_chain, deadline, tasks)

    monkeypatch.setattr(market, "assign_tasks", flaky)
    return refused


async def round_of(world: World, job_id: int) -> RoundState:
    state = await world.store.get_round(job_id)
    assert state is not None
    return state


async def post_with_workers(world: World, workers: int) -> int:
    await register(world, [world.worker(i) for i in range(workers)])
    return await world.post(workers=workers)


async def test_the_deadline_is_counted_from_the_chain_when_its_time_runs_ahead(
    world: World,
) -> None:
    # The chain's time is a day ahead of the service's (as after evm_increaseTime on a shared
    # node): a deadline counted from the service's clock would be refused for ever.
    service_clock(world, behind=DAY)
    workers = [world.worker(i) for i in range(2)]
    await register(world, workers)
    job_id = await world.post(workers=2)

    await step_until(world, job_id, Phase.COLLECTING)

    head = world.market.blocks[-1].timestamp  # the chain's clock stands still in this test
    expected = head + world.config.collect_seconds
    ((_, _, deadline, _),) = world.market.assign_calls
    assert deadline == expected
    assert (await round_of(world, job_id)).deadline == expected
    # The workers commit on the chain's clock, before the deadline: the round goes on.
    for w in workers:
        await w.train(job_id, 0)
    await world.service.step()
    state = await round_of(world, job_id)
    assert state.phase is Phase.AGGREGATING
    assert {a.status for a in state.assignments} == {TaskStatus.COMMITTED}


async def test_a_round_whose_deadline_passed_before_any_task_is_planned_again_and_assigned(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    service_clock(world, behind=0)
    refused = refuse_assignments(monkeypatch, world.market, after=0)
    job_id = await post_with_workers(world, 2)
    await world.service.step()  # drawn and planned; assignTasks did not get through
    planned = await round_of(world, job_id)
    assert planned.phase is Phase.ASSIGNING
    assert refused == [planned.deadline]
    assert world.market.assign_calls == []

    # The chain's time jumps past the deadline (the service's clock does not move).
    world.clock.advance(DAY)
    head = world.market.mine().timestamp
    await world.service.step()

    state = await round_of(world, job_id)
    assert state.phase is Phase.COLLECTING
    assert state.deadline == head + world.config.collect_seconds
    assert [(a.worker, a.shard, a.status) for a in state.assignments] == [
        (a.worker, a.shard, a.status) for a in planned.assignments
    ]
    ((_, _, deadline, tasks),) = world.market.assign_calls
    assert deadline == state.deadline
    assert {(t.worker_key, t.shard) for t in tasks} == {
        (a.worker.key, a.shard) for a in planned.assignments
    }


async def test_a_round_whose_deadline_passed_midway_sends_the_rest_with_a_new_deadline(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    one_task_per_batch(world)
    refuse_assignments(monkeypatch, world.market, after=1)
    job_id = await post_with_workers(world, 3)
    await world.service.step()  # the first worker's batch went through, the second did not
    planned = await round_of(world, job_id)
    assert planned.phase is Phase.ASSIGNING
    assert planned.deadline is not None
    ((_, _, first_deadline, (first,)),) = world.market.assign_calls
    assert first_deadline == planned.deadline
    on_chain = next(a for a in planned.assignments if a.worker.key == first.worker_key)

    # Its worker chain refuses the task on chain; then the deadline passes on both clocks.
    world.market.change_stake(
        on_chain.worker, 0, StakeReason.TASK_REFUSED, refused=(job_id, planned.round)
    )
    world.clock.advance(world.config.collect_seconds + 1)
    await world.service.step()

    state = await round_of(world, job_id)
    assert state.phase is Phase.COLLECTING
    assert state.deadline == world.clock.now + world.config.collect_seconds
    # The task on chain is not sent again and stays dropped; the two others go out, each in
    # its own batch, in increasing key order, with the new deadline.
    later = world.market.assign_calls[1:]
    assert [d for _, _, d, _ in later] == [state.deadline, state.deadline]
    sent = [t.worker_key for _, _, _, batch in later for t in batch]
    assert sent == sorted(a.worker.key for a in planned.assignments if a != on_chain)
    assert state.assignment(on_chain.worker).status is TaskStatus.DROPPED
    assert [(a.worker, a.shard) for a in state.assignments] == [
        (a.worker, a.shard) for a in planned.assignments
    ]


async def test_the_tasks_on_chain_are_read_once_per_confirmation(world: World) -> None:
    one_task_per_batch(world)
    job_id = await post_with_workers(world, 3)
    await step_until(world, job_id, Phase.COLLECTING)
    assert len(world.market.assign_calls) == 3
    assert world.market.assigned_reads == [(job_id, 0)]
    assert world.market.commitment_reads == []  # no read per worker
    assert await phase_of(world, job_id) is Phase.COLLECTING


async def first_batch_only(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> tuple[int, list[SimulatedWorker], SimulatedWorker]:
    """A three-worker round, one task per batch, whose first batch reached the chain and whose
    second was refused: the job, its workers and the one whose task is on chain."""
    one_task_per_batch(world)
    refuse_assignments(monkeypatch, world.market, after=1)
    workers = [world.worker(i) for i in range(3)]
    await register(world, workers)
    job_id = await world.post(workers=3)
    await world.service.step()
    ((_, _, _, (first,)),) = world.market.assign_calls
    early = next(w for w in workers if w.worker.key == first.worker_key)
    return job_id, workers, early


async def test_a_commitment_before_the_last_batch_does_not_stop_the_rest_being_sent(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    job_id, workers, early = await first_batch_only(world, monkeypatch)

    # The first worker commits before the others' tasks reach the chain.
    await early.train(job_id, 0)
    await world.service.step()

    state = await round_of(world, job_id)
    assert state.phase is Phase.COLLECTING
    assert state.assignment(early.worker).status is TaskStatus.COMMITTED
    sent = sorted(t.worker_key for _, _, _, batch in world.market.assign_calls for t in batch)
    assert sent == sorted(w.worker.key for w in workers), "every task reached the chain"


async def test_a_commitment_that_arrived_before_a_new_plan_is_kept(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    job_id, _, early = await first_batch_only(world, monkeypatch)
    await early.train(job_id, 0)
    # The deadline passes on both clocks before the service steps again: the round is planned
    # again with the first worker's commitment already read.
    world.clock.advance(world.config.collect_seconds + 1)
    await world.service.step()

    state = await round_of(world, job_id)
    assert state.phase is Phase.COLLECTING
    assert state.deadline == world.clock.now + world.config.collect_seconds
    kept = state.assignment(early.worker)
    assert kept.status is TaskStatus.COMMITTED
    assert kept.commitment is not None
    assert kept.commitment.update_hash == world.market.tasks[(job_id, 0, early.worker)].update_hash


async def test_a_round_whose_drawn_worker_lost_its_stake_before_any_task_was_sent_is_drawn_anew(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    refused = refuse_assignments(monkeypatch, world.market, after=0)
    workers = [world.worker(i) for i in range(3)]
    await register(world, workers)
    job_id = await world.post(workers=2)
    await world.service.step()  # drawn and planned; assignTasks did not get through
    planned = await round_of(world, job_id)
    assert planned.phase is Phase.ASSIGNING
    assert len(refused) == 1
    fallen = planned.assignments[0].worker
    # The drawn worker unbonds before its task was sent: JobMarket would refuse the batch.
    world.market.change_stake(fallen, 0, StakeReason.UNBONDING)
    await world.service.step()
    assert await phase_of(world, job_id) is Phase.POSTED  # every task withdrawn

    await step_until(world, job_id, Phase.COLLECTING)
    state = await round_of(world, job_id)
    drawn = {a.worker for a in state.assignments}
    assert fallen not in drawn
    assert drawn == {w.worker for w in workers} - {fallen}
    sent = {t.worker_key for _, _, _, batch in world.market.assign_calls for t in batch}
    assert sent == {w.key for w in drawn}


async def test_a_drawn_worker_that_lost_its_stake_midway_is_withdrawn_and_the_rest_go_on(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    job_id, _, early = await first_batch_only(world, monkeypatch)
    planned = await round_of(world, job_id)
    unsent = sorted(
        (a for a in planned.assignments if a.worker != early.worker),
        key=lambda a: a.worker.key,
    )
    fallen, rest = unsent[0], unsent[1]
    world.market.change_stake(fallen.worker, 0, StakeReason.WITHDRAWN)
    await world.service.step()

    state = await round_of(world, job_id)
    assert state.phase is Phase.COLLECTING
    assert fallen.worker not in {a.worker for a in state.assignments}
    # The two tasks left keep their shards; only the one still eligible was sent now.
    assert sorted((a.worker.key, a.shard) for a in state.assignments) == sorted(
        (a.worker.key, a.shard) for a in planned.assignments if a != fallen
    )
    later = [t.worker_key for _, _, _, batch in world.market.assign_calls[1:] for t in batch]
    assert later == [rest.worker.key]
    assert (await world.market.round(job_id, 0)).assigned == 2
