"""The coordinator follows stakes, drops refused tasks, publishes slash evidence, answers disputes.

On the simulated chain (FakeJobMarket, which refuses a refused task's result unless it is DROPPED
and a slash without fault and evidence), with the real API and simulated workers, on both stores:

- a worker whose followed stake fell below the job's minimum (STAKE_CHANGED) is not drawn; an
  older STAKE_CHANGED read late does not undo a newer one;
- a task its worker chain refused (TASK_REFUSED) is DROPPED with no fault and the other workers'
  tasks proceed to the proposal;
- a missed deadline under a policy that slashes for it is SLASHED with fault MISSED, and its
  evidence blob is published (named by the result) and says why; a commitment relayed after
  collection closed turns it into a DROPPED task without fault (the chain refuses a MISSED
  slash for a task whose commitment arrived);
- a dispute of a slash is answered with that evidence hash; the store's stake rules hold.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import pytest
from support.simulated_worker import SimulatedWorker
from test_coordinator_service import (
    REWARD,
    World,
    make_world,
    phase_of,
    register,
    run_round,
    step_until,
    tiny_config,
)

from fedrelay.adapters.blobstore import MemoryBlobStore
from fedrelay.coordinator.verification import JobWorkbench
from fedrelay.ports.blobs import POSTER
from fedrelay.ports.coordinator_chain import StakeReason
from fedrelay.ports.coordinator_store import CoordinatorStore
from fedrelay.protocol.job_config import InvalidJobConfig, JobConfig
from fedrelay.protocol.rounds import RELAYED_LATE_REASON, Fault, Phase, TaskStatus, WorkerRef
from fedrelay.protocol.wormhole import Outcome
from fedrelay.training import encode_blob

MIN_STAKE = 10**8
MISSED = 3 * 10**7


@pytest.fixture
async def world(store: CoordinatorStore) -> AsyncIterator[World]:
    async for w in make_world(store, tiny_config()):
        yield w


async def post(world: World, *, workers: int, missed_slash: int = 0) -> int:
    blobs: MemoryBlobStore = world.blobs
    model = await blobs.put(encode_blob(JobWorkbench(world.config).initial_model()), domain=POSTER)
    config = await blobs.put(world.config.to_bytes(), domain=POSTER)
    return world.market.post_job(
        bytes.fromhex(model),
        bytes.fromhex(config),
        num_rounds=1,
        workers_per_round=workers,
        reward_per_round=REWARD,
        min_stake=MIN_STAKE,
        rejected_slash=MIN_STAKE // 2,
        missed_slash=missed_slash,
    )


async def test_a_worker_that_withdrew_is_not_drawn(world: World) -> None:
    workers = [world.worker(i) for i in range(3)]
    await register(world, workers)
    gone = workers[0].worker
    world.market.change_stake(gone, 0, StakeReason.WITHDRAWN)
    # An older change (nonce 1 again) read late does not bring the stake back.
    world.market.change_stake(gone, MIN_STAKE, StakeReason.STAKED, nonce=1)
    job_id = await post(world, workers=2)
    await step_until(world, job_id, Phase.COLLECTING)
    assert (await world.store.stakes())[gone] == 0
    (call,) = world.market.assign_calls
    assert {t.worker_key for t in call[3]} == {w.worker.key for w in workers[1:]}


async def test_too_few_staked_workers_wait(world: World) -> None:
    workers = [world.worker(i) for i in range(2)]
    await register(world, workers)
    world.market.change_stake(workers[1].worker, MIN_STAKE - 1, StakeReason.UNBONDING)
    job_id = await post(world, workers=2)
    await world.service.step()
    assert await phase_of(world, job_id) is Phase.POSTED
    world.market.change_stake(workers[1].worker, MIN_STAKE, StakeReason.STAKED)
    await step_until(world, job_id, Phase.COLLECTING)


async def test_a_refused_task_is_dropped_without_fault_and_the_others_proceed(
    world: World,
) -> None:
    workers = [world.worker(i) for i in range(3)]
    await register(world, workers)
    job_id = await post(world, workers=3, missed_slash=MISSED)
    await step_until(world, job_id, Phase.COLLECTING)
    refused = workers[0].worker
    # Its worker chain refused the task (the worker withdrew before the batch arrived).
    world.market.change_stake(refused, 0, StakeReason.TASK_REFUSED, refused=(job_id, 0))
    await world.service.step()
    state = await world.store.get_round(job_id)
    assert state is not None
    dropped = state.assignment(refused)
    assert (dropped.status, dropped.fault) == (TaskStatus.DROPPED, Fault.NONE)
    # The others commit; the round aggregates at once (nobody else is awaited) and is proposed.
    await run_round(world, job_id, workers[1:])
    _, results = world.market.proposals[(job_id, 0)]
    outcomes = {r.worker: (r.outcome, r.fault) for r in results}
    assert outcomes[refused] == (Outcome.DROPPED, Fault.NONE)
    assert {outcomes[w.worker][0] for w in workers[1:]} == {Outcome.ACCEPTED}
    assert sum(r.reward for r in results) == REWARD


async def one_missed(world: World) -> tuple[int, list[SimulatedWorker]]:
    """A two-worker job under a slashing policy whose round closed with worker 0 missing (SLASHED,
    fault MISSED) and worker 1 committed."""
    workers = [world.worker(i) for i in range(2)]
    await register(world, workers)
    job_id = await post(world, workers=2, missed_slash=MISSED)
    await step_until(world, job_id, Phase.COLLECTING)
    await workers[1].train(job_id, 0)
    world.clock.advance(world.config.collect_seconds + 1)
    await world.service.step()
    state = await world.store.get_round(job_id)
    assert state is not None
    assert state.assignment(workers[0].worker).fault is Fault.MISSED
    return job_id, workers


async def test_a_refusal_read_after_the_deadline_turns_a_missed_slash_into_a_drop(
    world: World,
) -> None:
    job_id, workers = await one_missed(world)
    late = workers[0].worker
    world.market.change_stake(late, 0, StakeReason.TASK_REFUSED, refused=(job_id, 0))
    await workers[1].answer_challenges()
    await step_until(world, job_id, Phase.PROPOSED)
    _, results = world.market.proposals[(job_id, 0)]
    assert {r.worker: r.outcome for r in results}[late] is Outcome.DROPPED


async def test_a_commitment_relayed_after_collection_closed_is_dropped_not_slashed(
    world: World,
) -> None:
    job_id, workers = await one_missed(world)
    late = workers[0].worker
    # Its worker chain took the commitment before the deadline; the relayer delivers it only now.
    world.market.commit(job_id, 0, late, b"\x01" * 32, b"\x02" * 32, b"\x03" * 32, 10, 0)
    await workers[1].answer_challenges()
    await step_until(world, job_id, Phase.PROPOSED)
    _, results = world.market.proposals[(job_id, 0)]
    result = next(r for r in results if r.worker == late)
    assert (result.outcome, result.fault, result.reward) == (Outcome.DROPPED, Fault.NONE, 0)
    state = await world.store.get_round(job_id)
    assert state is not None
    task = state.assignment(late)
    assert task.reason == RELAYED_LATE_REASON
    assert task.commitment is not None
    assert task.commitment.update_hash == b"\x01" * 32
    assert {r.worker: r.outcome for r in results}[workers[1].worker] is Outcome.ACCEPTED


async def test_a_missed_deadline_is_slashed_with_published_evidence_and_disputes_answered(
    world: World,
) -> None:
    workers = [world.worker(i) for i in range(2)]
    await register(world, workers)
    job_id = await post(world, workers=2, missed_slash=MISSED)
    await step_until(world, job_id, Phase.COLLECTING)
    await workers[1].train(job_id, 0)
    world.clock.advance(world.config.collect_seconds + 1)
    await world.service.step()
    await workers[1].answer_challenges()
    await step_until(world, job_id, Phase.PROPOSED)

    missing = workers[0].worker
    _, results = world.market.proposals[(job_id, 0)]
    slashed = next(r for r in results if r.worker == missing)
    assert (slashed.outcome, slashed.fault) == (Outcome.SLASHED, Fault.MISSED)
    name = slashed.evidence.hex()
    assert await world.store.is_published(name)
    evidence = json.loads(await world.blobs.get(name))
    assert evidence["fault"] == "MISSED"
    assert evidence["reason"] == "missed the deadline"
    assert evidence["worker_key"] == missing.key.hex()
    state = await world.store.get_round(job_id)
    assert state is not None
    assert state.assignment(missing).slash == MISSED

    world.market.dispute(job_id, 0, missing)
    await world.service.step()
    assert world.market.disputes[(job_id, 0, missing)] == slashed.evidence
    # Read again (a restart before the cursor moved): answered once only.
    await world.new_service().step()
    assert world.market.disputes[(job_id, 0, missing)] == slashed.evidence


async def test_the_store_keeps_the_newest_stake(store: CoordinatorStore) -> None:
    worker = WorkerRef(4, b"\x07" * 32)
    assert await store.record_stake(worker, 5, 0)
    assert not await store.record_stake(worker, 9, 0)  # registering again keeps the stake
    assert await store.record_stake(worker, 3, 2)
    assert not await store.record_stake(worker, 8, 1)  # older change, read late
    assert not await store.record_stake(worker, 8, 2)  # the same change twice
    assert await store.stakes() == {worker: 3}


def test_a_configuration_with_slash_amounts_says_they_moved_on_chain() -> None:
    blob = JobConfig().to_bytes()[:-1] + b',"rejected_slash":1}'
    with pytest.raises(InvalidJobConfig, match=r"rejected_slash.*on chain.*--rejected-slash"):
        JobConfig.from_bytes(blob)
