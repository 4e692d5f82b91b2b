"""A secure round's malformed message is its sender's rejection, not the round's failure.

Real Participants through the real HTTP API, FakeJobMarket for the chain, the in-memory store
and the SQLite ledger. One worker of three (threshold 2) sends a masked input that is not a
canonical blob, a masked vector of the wrong length, or a reveal that is not JSON: it is slashed
with the reason, saved before the unmasking goes on, the honest two are accepted and paid, the
round settles, and a coordinator restarted on the same store does not judge it again.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Literal

import numpy as np
import pytest
from support.simulated_worker import SimulatedWorker
from test_coordinator_service import (  # the world of the coordinator service tests
    REWARD,
    SLASH,
    WINDOW,
    World,
    make_world,
    phase_of,
    register,
    results_by_worker,
    step_until,
    tiny_config,
)

from fedrelay.coordinator.aggregation import ClientUpdate, ParameterLayout, ServerState, fedavg
from fedrelay.coordinator.phases import aggregate
from fedrelay.coordinator.phases.unmask import Screened, secagg_config
from fedrelay.coordinator.verification import JobWorkbench, delta_of
from fedrelay.ports.coordinator_store import CoordinatorStore
from fedrelay.protocol.rounds import Fault, Phase, RoundState, TaskStatus, WorkerRef
from fedrelay.protocol.secagg import MaskedInput, Participant
from fedrelay.protocol.secagg.messages import SecAggStage
from fedrelay.protocol.secagg.wire import (
    client_id,
    decode_keys,
    decode_shares,
    encode_keys,
    encode_masked,
    encode_shares,
)
from fedrelay.protocol.wormhole import Outcome, keccak256, loss_to_fixed
from fedrelay.training import decode_blob

BadMasked = Literal["not-a-blob", "short-vector"]


@pytest.fixture
async def world(store: CoordinatorStore) -> AsyncIterator[World]:
    config = tiny_config(secure_aggregation=True, secagg_threshold=2, challenge_rate=0.0)
    async for w in make_world(store, config):
        yield w


@pytest.fixture
async def strict_world(store: CoordinatorStore) -> AsyncIterator[World]:
    """Threshold 3 of 3: each secret's shares are held by all three workers (its dealer too), so
    the sum needs every survivor's reveal."""
    config = tiny_config(secure_aggregation=True, secagg_threshold=3, challenge_rate=0.0)
    async for w in make_world(store, config):
        yield w


async def exchange_keys(
    world: World, job_id: int, workers: list[SimulatedWorker]
) -> dict[WorkerRef, Participant]:
    """Every worker advertises and deals its shares through the API; the parties."""
    secagg = secagg_config(world.config, job_id, 0, len(workers))
    parties = {w.worker: Participant(client_id(w.worker.worker_id), secagg) for w in workers}
    for w in workers:
        advert = encode_keys(parties[w.worker].advertise())
        await w.client.send_secagg(job_id, 0, SecAggStage.KEYS, advert)
    for w in workers:
        keys = await w.client.secagg_keys(job_id, 0)
        adverts = [decode_keys(k.hex(), v) for k, v in sorted(keys.items())]
        for sealed in parties[w.worker].share_keys(adverts):
            recipient = bytes.fromhex(sealed.recipient)
            await w.client.send_secagg(
                job_id, 0, SecAggStage.SHARES, encode_shares(sealed), recipient_id=recipient
            )
    for w in workers:
        shares = await w.client.secagg_shares(job_id, 0)
        parties[w.worker].receive_shares(
            [decode_shares(s.hex(), client_id(w.worker.worker_id), c) for s, c in shares.items()]
        )
    return parties


async def train_all(
    world: World, job_id: int, workers: list[SimulatedWorker], state: RoundState
) -> tuple[dict[WorkerRef, Participant], dict[WorkerRef, ClientUpdate], np.ndarray]:
    """Every worker masks its trained update; the parties, the plain updates, the round's params."""
    parties = await exchange_keys(world, job_id, workers)
    start = decode_blob(await world.blobs.get(state.model_hash.hex()))
    layout = ParameterLayout.of(start)
    params = layout.flatten(start)
    bench = JobWorkbench(world.config)
    updates = {}
    for w in workers:
        trained = await w.train(job_id, 0, participant=parties[w.worker])
        samples = len(bench.shard(state.assignment(w.worker).shard))
        delta = layout.flatten(trained) - params
        updates[w.worker] = ClientUpdate(client_id(w.worker.worker_id), delta, samples)
    return parties, updates, params


async def proposed_params(world: World, job_id: int) -> np.ndarray:
    proposed = await round_state(world, job_id)
    assert proposed.proposed_model is not None
    model = decode_blob(await world.blobs.get(proposed.proposed_model.hex()))
    return ParameterLayout.of(model).flatten(model)


async def start_round(world: World) -> tuple[int, list[SimulatedWorker], RoundState]:
    workers = [world.worker(i) for i in range(3)]
    await register(world, workers)
    job_id = await world.post(workers=3)
    await step_until(world, job_id, Phase.COLLECTING)
    state = await world.store.get_round(job_id)
    assert state is not None
    return job_id, workers, state


async def all_but_the_last_trained(
    world: World,
) -> tuple[int, list[SimulatedWorker], RoundState, dict[WorkerRef, Participant], int, int]:
    """A secure round whose keys and shares went round and whose workers but the last trained
    and sent their masked inputs: the job, the workers, the round, the parties, the model's
    length and the last worker's shard size."""
    job_id, workers, state = await start_round(world)
    parties = await exchange_keys(world, job_id, workers)
    for w in workers[:-1]:
        await w.train(job_id, 0, participant=parties[w.worker])
    start = decode_blob(await world.blobs.get(state.model_hash.hex()))
    length = ParameterLayout.of(start).flatten(start).shape[0]
    size = len(JobWorkbench(world.config).shard(state.assignment(workers[-1].worker).shard))
    return job_id, workers, state, parties, length, size


async def round_state(world: World, job_id: int) -> RoundState:
    state = await world.store.get_round(job_id)
    assert state is not None
    return state


async def assert_settled_once(
    world: World, job_id: int, bad: SimulatedWorker, honest: list[SimulatedWorker], reason: str
) -> None:
    """The bad worker slashed with ``reason``, the honest paid; a restart changes nothing."""
    results = results_by_worker(world.market, job_id, 0)
    assert results[bad.worker.key] == (Outcome.SLASHED, 0, Fault.REJECTED)
    assert all(results[w.worker.key][0] is Outcome.ACCEPTED for w in honest)
    assert all(results[w.worker.key][1] > 0 for w in honest)
    assert sum(r for _, r, _ in results.values()) == REWARD
    proposals = dict(world.market.proposals)

    restarted = world.new_service()
    world.clock.advance(WINDOW)
    await step_until(world, job_id, Phase.COMPLETED, restarted)
    assert world.market.settled == [(job_id, 0)]
    assert world.market.proposals == proposals  # nothing proposed again
    slashed = (await round_state(world, job_id)).assignment(bad.worker)
    assert slashed.status is TaskStatus.SLASHED
    assert slashed.reason == reason


@pytest.mark.parametrize("fault", ["not-a-blob", "short-vector"])
async def test_malformed_masked_input_is_slashed_and_the_honest_are_paid(
    world: World, fault: BadMasked
) -> None:
    job_id, workers, state, parties, length, size = await all_but_the_last_trained(world)
    *honest, bad = workers
    bench = JobWorkbench(world.config)
    root = bench.shard_commitment(state.assignment(bad.worker).shard).root
    masked = parties[bad.worker].mask(np.zeros(length, np.float32), size)
    if fault == "not-a-blob":
        sent = b"\x00not a tensor blob" + bytes(64)
        reason_part = "masked input is not a canonical tensor blob"
    else:
        sent = encode_masked(MaskedInput(masked.client_id, size, masked.vector[:-1]))
        reason_part = f"masked input has shape ({length - 1},), the model has {length} parameters"
    await bad.client.send_secagg(job_id, 0, SecAggStage.MASKED, sent)
    world.market.commit(
        job_id, 0, bad.worker, keccak256(sent), bytes(32), root, size, loss_to_fixed(0.5)
    )

    await world.service.step()  # commitments followed: the bad input is rejected, saved at once
    rejected = (await round_state(world, job_id)).assignment(bad.worker)
    assert rejected.status is TaskStatus.SLASHED
    assert rejected.slash == SLASH
    assert rejected.reason is not None
    assert reason_part in rejected.reason
    await step_until(world, job_id, Phase.PROPOSED)

    proposed = await round_state(world, job_id)
    assert proposed.proposed_model == proposed.model_hash  # its masks cannot be removed
    report = await world.store.report(job_id, 0)
    assert report is not None
    assert "rejected masked input is among the survivors" in report.note
    await assert_settled_once(world, job_id, bad, honest, rejected.reason)


async def test_malformed_reveal_is_slashed_and_the_others_unmask_the_sum(world: World) -> None:
    job_id, workers, state = await start_round(world)
    *honest, bad = workers
    parties = await exchange_keys(world, job_id, workers)
    start = decode_blob(await world.blobs.get(state.model_hash.hex()))
    layout = ParameterLayout.of(start)
    params = layout.flatten(start)
    updates = []
    for w in workers:
        trained = await w.train(job_id, 0, participant=parties[w.worker])
        samples = len(JobWorkbench(world.config).shard(state.assignment(w.worker).shard))
        updates.append(
            ClientUpdate(
                client_id(w.worker.worker_id), delta_of(layout.flatten(trained), params), samples
            )
        )
    await world.service.step()
    assert await phase_of(world, job_id) is Phase.AGGREGATING  # waiting for the reveals

    await bad.client.send_secagg(job_id, 0, SecAggStage.REVEALS, b'{"key_shares": [')
    await world.service.step()  # rejected and saved while the honest reveals are awaited
    rejected = (await round_state(world, job_id)).assignment(bad.worker)
    assert rejected.status is TaskStatus.SLASHED
    assert rejected.reason == (
        f"secure aggregation message refused: reveal of {client_id(bad.worker.worker_id)} "
        "is malformed"
    )
    assert await phase_of(world, job_id) is Phase.AGGREGATING

    restarted = world.new_service()  # the rejection is not judged again after a restart
    for w in honest:
        await w.reveal(job_id, 0, parties[w.worker])
    await step_until(world, job_id, Phase.PROPOSED, restarted)

    # The bad worker is a survivor that did not reveal: its committed input stays in the sum.
    proposed = await round_state(world, job_id)
    assert proposed.proposed_model is not None
    model = layout.flatten(decode_blob(await world.blobs.get(proposed.proposed_model.hex())))
    plain = fedavg().aggregate_fit(params, updates, ServerState()).params
    assert np.allclose(model, plain, atol=1e-5)
    report = await world.store.report(job_id, 0)
    assert report is not None
    assert report.note == ""
    await assert_settled_once(world, job_id, bad, honest, rejected.reason)


async def test_a_masked_input_whose_worker_never_committed_is_never_summed_unchecked(
    world: World,
) -> None:
    job_id, workers, _, parties, length, size = await all_but_the_last_trained(world)
    silent = workers[-1]
    # A well-formed masked input of a huge update, with no commitment on chain behind it.
    poisoned = parties[silent.worker].mask(np.full(length, 1e3, np.float32), size)
    await silent.client.send_secagg(job_id, 0, SecAggStage.MASKED, encode_masked(poisoned))
    world.clock.advance(world.config.collect_seconds + 1)
    await world.service.step()
    dropped = (await round_state(world, job_id)).assignment(silent.worker)
    assert dropped.status is TaskStatus.DROPPED  # missed, under a policy that does not slash
    assert dropped.commitment is None
    await step_until(world, job_id, Phase.PROPOSED)  # no reveal awaited: the sum is given up

    proposed = await round_state(world, job_id)
    assert proposed.proposed_model == proposed.model_hash  # not summed: nothing vouches for it
    report = await world.store.report(job_id, 0)
    assert report is not None
    assert "rejected masked input is among the survivors" in report.note


async def test_a_reveal_stored_while_a_step_runs_is_awaited_not_given_up(
    strict_world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The last reveal is stored after the step read the round's messages and before it judged
    whether the reveals are in (on a loaded machine a step spends minutes replaying challenges
    in between). A fake stands for that timing: it wraps the real screening and stores the
    reveal through the API once the messages are read. The step must not unmask from messages
    that lack the reveal it counted as in (every reveal is needed: without it the round would
    fail); the next step reads it and recovers the sum."""
    world = strict_world
    job_id, workers, state = await start_round(world)
    parties, updates, params = await train_all(world, job_id, workers, state)
    await world.service.step()
    assert await phase_of(world, job_id) is Phase.AGGREGATING  # waiting for the reveals
    *early, late = workers
    for w in early:
        await w.reveal(job_id, 0, parties[w.worker])

    real_screen = aggregate.screen
    stored: list[WorkerRef] = []

    async def screen_then_store_the_last_reveal(*args: object, **kwargs: object) -> Screened:
        screened = await real_screen(*args, **kwargs)  # type: ignore[arg-type]
        if not stored:
            await late.reveal(job_id, 0, parties[late.worker])
            stored.append(late.worker)
        return screened

    monkeypatch.setattr(aggregate, "screen", screen_then_store_the_last_reveal)
    await world.service.step()
    assert stored == [late.worker]
    assert await phase_of(world, job_id) is Phase.AGGREGATING  # the reveal is awaited
    await step_until(world, job_id, Phase.PROPOSED)

    report = await world.store.report(job_id, 0)
    assert report is not None
    assert report.note == ""  # unmasked, not "secure aggregation failed"
    plain = fedavg().aggregate_fit(params, list(updates.values()), ServerState()).params
    assert np.allclose(await proposed_params(world, job_id), plain, atol=1e-5)
    results = results_by_worker(world.market, job_id, 0)
    assert all(results[w.worker.key][0] is Outcome.ACCEPTED for w in workers)


async def test_a_survivor_withholding_its_reveal_past_the_deadline_is_slashed_not_paid(
    strict_world: World,
) -> None:
    """Every reveal is needed, so one withheld reveal leaves the sum unrecoverable (under a
    threshold of all workers but one it takes two). Without the rule the withholders would stall
    the round at no cost (the model kept, every committed worker paid); with it the withholder
    is rejected and slashed once the reveal deadline passes, the revealers are paid, and a
    restarted coordinator proposes nothing again."""
    world = strict_world
    job_id, workers, state = await start_round(world)
    parties, _, _ = await train_all(world, job_id, workers, state)
    *revealers, withholder = workers
    await world.service.step()
    for w in revealers:
        await w.reveal(job_id, 0, parties[w.worker])
    await world.service.step()
    assert await phase_of(world, job_id) is Phase.AGGREGATING  # the deadline is not past
    world.clock.advance(world.config.reveal_seconds + 1)
    await step_until(world, job_id, Phase.PROPOSED)

    proposed = await round_state(world, job_id)
    assert proposed.proposed_model == proposed.model_hash  # the sum could not be had
    report = await world.store.report(job_id, 0)
    assert report is not None
    assert report.note.startswith("secure aggregation failed: ")
    assert "need 3 shares" in report.note
    rejected = proposed.assignment(withholder.worker)
    assert rejected.status is TaskStatus.SLASHED
    assert rejected.reason is not None
    assert rejected.reason.startswith(aggregate.WITHHELD)
    assert all(proposed.assignment(w.worker).status is TaskStatus.ACCEPTED for w in revealers)
    await assert_settled_once(world, job_id, withholder, revealers, rejected.reason)
