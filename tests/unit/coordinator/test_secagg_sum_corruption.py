"""A worker whose reveal or masked input corrupts a secure round's sum is found and slashed.

Real Participants through the real HTTP API, FakeJobMarket for the chain, the in-memory store
and the SQLite ledger. Three workers (threshold 2), nobody challenged (challenge rate 0):

- one reveals shares of another's self-mask seed other than the ones dealt to it: the shares do
  not match their dealer's commitments, so it is rejected and slashed, the sum is recovered from
  the others' shares (its own input stays in it), and the honest two are paid;
- one adds a large random ring vector to its masked input: the unmasked sum is out of the range
  honest inputs reach, so every survivor is audited (its masks opened with its final
  checkpoint); the corrupter's masked input is not its update plus its masks, so it is rejected
  and slashed, the model is the honest two's aggregate, and the honest two are paid.

Either way a coordinator restarted on the same store judges nothing again.
"""

from __future__ import annotations

import numpy as np
from support.simulated_worker import SimulatedWorker
from test_coordinator_service import World, phase_of, step_until
from test_secagg_faults import (
    assert_settled_once,
    proposed_params,
    round_state,
    start_round,
    train_all,
    world,  # noqa: F401 (the fixture)
)

from fedrelay.coordinator.aggregation import ClientUpdate, ServerState, Vector, fedavg
from fedrelay.protocol.rounds import Phase, TaskStatus, WorkerRef
from fedrelay.protocol.secagg.messages import SecAggStage


async def revealed_round(
    world: World,  # noqa: F811
    **cheats: bool,
) -> tuple[int, list[SimulatedWorker], dict[WorkerRef, ClientUpdate], Vector]:
    """Three workers mask and commit, the last one with ``cheats``; once the round aggregates,
    every one reveals. The job, the workers, their plain updates and the round's parameters."""
    job_id, workers, state = await start_round(world)
    for name, value in cheats.items():
        setattr(workers[-1], name, value)
    parties, updates, params = await train_all(world, job_id, workers, state)
    await world.service.step()
    assert await phase_of(world, job_id) is Phase.AGGREGATING  # waiting for the reveals
    for w in workers:
        await w.reveal(job_id, 0, parties[w.worker])
    return job_id, workers, updates, params


async def test_a_corrupt_reveal_is_slashed_and_the_others_recover_the_sum(
    world: World,  # noqa: F811
) -> None:
    job_id, workers, updates, params = await revealed_round(world, corrupt_reveal=True)
    *honest, bad = workers
    await step_until(world, job_id, Phase.PROPOSED)

    rejected = (await round_state(world, job_id)).assignment(bad.worker)
    assert rejected.status is TaskStatus.SLASHED
    assert rejected.reason is not None
    assert rejected.reason.startswith("unmasking reveal refused: revealed a seed share of ")
    assert "that does not match the commitment" in rejected.reason
    # Its shares are left out; its committed input stays in the sum, as a silent survivor's.
    plain = fedavg().aggregate_fit(params, list(updates.values()), ServerState()).params
    assert np.allclose(await proposed_params(world, job_id), plain, atol=1e-5)
    report = await world.store.report(job_id, 0)
    assert report is not None
    assert report.note == ""
    await assert_settled_once(world, job_id, bad, honest, rejected.reason)


async def test_an_unchallenged_corrupt_masked_input_is_found_by_the_sum_audit(
    world: World,  # noqa: F811
) -> None:
    job_id, workers, updates, params = await revealed_round(world, corrupt_masked=True)
    *honest, bad = workers
    await world.service.step()  # the sum is out of range: every survivor is audited
    issued = await world.store.challenges()
    assert {c.worker for c in issued} == {w.worker for w in workers}
    assert {c.segment for c in issued} == {1}  # the last segment: the final checkpoint
    assert await phase_of(world, job_id) is Phase.AGGREGATING  # the answers are awaited

    restarted = world.new_service()  # the audit is repeated, not issued anew
    for w in workers:
        assert await w.answer_challenges(job_id) == 1
    await step_until(world, job_id, Phase.PROPOSED, restarted)
    assert {c.challenge_id for c in await world.store.challenges()} == {
        c.challenge_id for c in issued
    }

    rejected = (await round_state(world, job_id)).assignment(bad.worker)
    assert rejected.status is TaskStatus.SLASHED
    assert rejected.reason is not None
    assert rejected.reason.startswith(
        "sum audit: challenge of segment 1 failed: mask opening refused: the masked input is not "
        "the final checkpoint's update plus the opened masks"
    )
    # The round aggregates the honest two's opened updates.
    plain = fedavg().aggregate_fit(params, [updates[w.worker] for w in honest], ServerState())
    assert np.allclose(await proposed_params(world, job_id), plain.params, atol=1e-5)
    report = await world.store.report(job_id, 0)
    assert report is not None
    assert report.note == ""
    assert await world.store.secagg(job_id, 0, SecAggStage.OPENING) == {}  # deleted
    await assert_settled_once(world, job_id, bad, honest, rejected.reason)


async def test_a_survivor_silent_in_the_sum_audit_is_slashed(
    world: World,  # noqa: F811
) -> None:
    job_id, workers, updates, params = await revealed_round(world, corrupt_masked=True)
    first, second, bad = workers
    second.silent = True  # never answers a challenge
    await world.service.step()
    for w in workers:
        await w.answer_challenges(job_id)
    world.clock.advance(world.config.answer_seconds + 1)
    await step_until(world, job_id, Phase.PROPOSED)

    final = await round_state(world, job_id)
    assert final.assignment(first.worker).status is TaskStatus.ACCEPTED
    silent = final.assignment(second.worker)
    assert silent.status is TaskStatus.SLASHED
    assert silent.reason == "sum audit: did not answer the challenge of segment 1 in time"
    assert final.assignment(bad.worker).status is TaskStatus.SLASHED
    plain = fedavg().aggregate_fit(params, [updates[first.worker]], ServerState())
    assert np.allclose(await proposed_params(world, job_id), plain.params, atol=1e-5)
