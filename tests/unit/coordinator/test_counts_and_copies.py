"""No self-reported count buys weight or pay, a data commitment is the shard's, and copies earn
nothing.

The real coordinator service and HTTP API, FakeJobMarket for the chain, the in-memory store and
the SQLite ledger. Each test ends with the attacker rejected and slashed, and the honest workers
paid exactly what they are paid without it: their scores are computed from their updates alone,
so their rewards must be :func:`split_payout` of the honest scores only, and the aggregate must
be the FedAvg of the honest updates weighted by their assigned shard sizes. On the workers' own
data the committed count is recorded and every update weighs 1.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Sequence

import numpy as np
import pytest
from support.simulated_worker import SimulatedWorker
from test_coordinator_service import (  # the world of the coordinator service tests
    REWARD,
    WINDOW,
    World,
    make_world,
    register,
    results_by_worker,
    step_until,
    tiny_config,
)
from test_secagg_faults import exchange_keys

from fedrelay.coordinator.aggregation import ClientUpdate, ParameterLayout, ServerState, fedavg
from fedrelay.coordinator.copies import COPY_DISTANCE, distance
from fedrelay.coordinator.scoring import split_payout
from fedrelay.coordinator.verification import JobWorkbench, delta_of
from fedrelay.ports.blobs import EVALUATION
from fedrelay.ports.coordinator_store import CoordinatorStore
from fedrelay.protocol.data_spec import EvaluationSpec, TabularSchema, WorkerData
from fedrelay.protocol.job_config import DataSpec, JobConfig
from fedrelay.protocol.rounds import Fault, Phase, RoundState, TaskStatus
from fedrelay.protocol.secagg import MaskedInput
from fedrelay.protocol.secagg.messages import SecAggStage
from fedrelay.protocol.secagg.wire import encode_masked
from fedrelay.protocol.wormhole import Outcome, keccak256, loss_to_fixed
from fedrelay.training import (
    ModelTensors,
    decode_blob,
    encode_blob,
    model_of,
    train_with_transcript,
)
from fedrelay.training.data import Dataset, digits
from fedrelay.training.datasets import data_commitment, dataset_blob
from fedrelay.training.torch_trainer import TorchClassificationTrainer, mlp

INFLATED = 2**32 - 1
OTHER_ROOT = b"\x5a" * 32

Trained = list[tuple[SimulatedWorker, ModelTensors]]
"""The honest workers and the models they trained."""


WorldOf = Callable[[JobConfig], Awaitable[World]]


@pytest.fixture
async def world_with(store: CoordinatorStore) -> AsyncIterator[WorldOf]:
    """A world on ``store`` for a job configuration (its clients closed afterwards)."""
    made: list[AsyncIterator[World]] = []

    async def build(config: JobConfig) -> World:
        made.append(make_world(store, config))
        return await anext(made[-1])

    yield build
    for worlds in made:
        async for _ in worlds:  # runs the teardown after the yield
            pass


async def start(world: World, workers: Sequence[SimulatedWorker]) -> tuple[int, RoundState]:
    await register(world, workers)
    job_id = await world.post(workers=len(workers))
    await step_until(world, job_id, Phase.COLLECTING)
    state = await world.store.get_round(job_id)
    assert state is not None
    return job_id, state


def size_of(world: World, state: RoundState, worker: SimulatedWorker) -> int:
    return len(JobWorkbench(world.config).shard(state.assignment(worker.worker).shard))


def data_root_of(world: World, state: RoundState, worker: SimulatedWorker) -> bytes:
    return JobWorkbench(world.config).shard_commitment(state.assignment(worker.worker).shard).root


async def settled_round(world: World, job_id: int) -> RoundState:
    world.clock.advance(WINDOW)
    await step_until(world, job_id, Phase.COMPLETED)
    assert world.market.settled == [(job_id, 0)]
    state = await world.store.get_round(job_id, 0)
    assert state is not None
    return state


async def assert_rejected(
    world: World, job_id: int, bad: SimulatedWorker, reason: str
) -> dict[bytes, tuple[Outcome, int, int]]:
    """The attacker slashed for ``reason`` on chain and in the store; the round's results."""
    results = results_by_worker(world.market, job_id, 0)
    assert results[bad.worker.key] == (Outcome.SLASHED, 0, Fault.REJECTED)
    state = await world.store.get_round(job_id, 0)
    assert state is not None
    assert state.assignment(bad.worker).status is TaskStatus.SLASHED
    assert state.assignment(bad.worker).reason == reason
    return results


async def assert_paid_as_if_absent(
    world: World,
    job_id: int,
    trained: Trained,
    state: RoundState,
    *,
    by_size: bool,
) -> None:
    """The honest workers' aggregate and pay are what they are without the attacker.

    Args:
        by_size: Pay is by assigned shard size (secure rounds, the fallback), not by the
            scores of loss reduction.
    """
    report = await world.store.report(job_id, 0)
    assert report is not None
    honest = {w.worker.worker_id.hex(): size_of(world, state, w) for w, _ in trained}
    if by_size:
        assert report.scores == {k: float(v) for k, v in honest.items()}
    else:
        assert set(report.scores) == set(honest)
    expected = split_payout(REWARD, report.scores)
    results = results_by_worker(world.market, job_id, 0)
    assert sum(r for _, r, _ in results.values()) == REWARD
    for w, _ in trained:
        assert results[w.worker.key] == (Outcome.ACCEPTED, expected[w.worker.worker_id.hex()], 0)


async def assert_honest_aggregate(world: World, trained: Trained, state: RoundState) -> None:
    """The proposed model is the FedAvg of the honest updates, weighted by shard sizes."""
    await assert_fedavg_of(world, state, [(w, m, size_of(world, state, w)) for w, m in trained])


async def assert_fedavg_of(
    world: World, state: RoundState, weighted: Sequence[tuple[SimulatedWorker, ModelTensors, int]]
) -> None:
    """The proposed model of ``state``'s round is the FedAvg of ``weighted``'s models (each
    worker's trained model and its weight)."""
    start = decode_blob(await world.blobs.get(state.model_hash.hex()))
    layout = ParameterLayout.of(start)
    params = layout.flatten(start)
    updates = [
        ClientUpdate(w.worker.worker_id.hex(), delta_of(layout.flatten(model), params), weight)
        for w, model, weight in weighted
    ]
    expected = fedavg().aggregate_fit(params, updates, ServerState()).params
    proposed = await world.store.get_round(state.job_id, state.round)
    assert proposed is not None
    assert proposed.proposed_model is not None
    model = layout.flatten(decode_blob(await world.blobs.get(proposed.proposed_model.hex())))
    assert np.allclose(model, expected, atol=1e-6)


# --- self-reported counts -----------------------------------------------------------------------


@pytest.mark.parametrize("claim", ["count", "data root"])
async def test_a_false_data_commitment_in_a_plain_round_is_rejected_and_buys_no_weight(
    world_with: WorldOf, claim: str
) -> None:
    """A committed count other than the assigned shard's size, or a committed data root other
    than the root over its examples (the shard trained honestly all the same)."""
    world = await world_with(tiny_config())
    lie = {"claimed_samples": INFLATED} if claim == "count" else {"claimed_data_root": OTHER_ROOT}
    *honest, bad = [world.worker(0), world.worker(1), world.worker(2, **lie)]
    job_id, state = await start(world, [*honest, bad])
    trained = [(w, await w.train(job_id, 0)) for w in honest]
    await bad.train(job_id, 0)
    world.clock.advance(1)  # the closing block: one after the last commitment
    await world.service.step()  # commitments followed: the data is checked before any challenge
    rejected = (await world.store.get_round(job_id, 0)).assignment(bad.worker)  # type: ignore[union-attr]
    if claim == "count":
        reason = (
            f"committed num_samples {INFLATED}, but the assigned shard {rejected.shard} has "
            f"{size_of(world, state, bad)} examples"
        )
    else:
        reason = (
            f"committed data root {OTHER_ROOT.hex()}, but the examples of the assigned shard "
            f"{rejected.shard} hash to {data_root_of(world, state, bad).hex()}"
        )
    assert rejected.status is TaskStatus.SLASHED
    assert rejected.reason == reason
    assert all(c.worker != bad.worker for c in await world.store.challenges())
    for w in honest:
        await w.answer_challenges()
    await step_until(world, job_id, Phase.PROPOSED)

    await assert_rejected(world, job_id, bad, reason)
    await assert_honest_aggregate(world, trained, state)
    await assert_paid_as_if_absent(world, job_id, trained, state, by_size=False)
    kept = await world.store.get_round(job_id, 0)
    assert kept is not None
    for w, _ in trained:  # the honest commitments are kept with their shards' data roots
        commitment = kept.assignment(w.worker).commitment
        assert commitment is not None
        assert commitment.data_root == data_root_of(world, state, w)
    await settled_round(world, job_id)


async def test_inflated_count_in_a_secure_round_is_rejected_and_buys_no_pay(
    world_with: WorldOf,
) -> None:
    config = tiny_config(secure_aggregation=True, secagg_threshold=2, challenge_rate=0.0)
    world = await world_with(config)
    *honest, bad = [world.worker(0), world.worker(1), world.worker(2, claimed_samples=INFLATED)]
    job_id, state = await start(world, [*honest, bad])
    parties = await exchange_keys(world, job_id, [*honest, bad])
    trained = [(w, await w.train(job_id, 0, participant=parties[w.worker])) for w in honest]
    await bad.train(job_id, 0, participant=parties[bad.worker])
    world.clock.advance(1)  # the closing block: one after the last commitment
    await world.service.step()
    await step_until(world, job_id, Phase.PROPOSED)

    reason = (
        f"committed num_samples {INFLATED}, but the assigned shard "
        f"{state.assignment(bad.worker).shard} has {size_of(world, state, bad)} examples"
    )
    await assert_rejected(world, job_id, bad, reason)
    # Its masked input is in the survivors' sum with its masks: the model is kept unchanged.
    proposed = await world.store.get_round(job_id, 0)
    assert proposed is not None
    assert proposed.proposed_model == proposed.model_hash
    await assert_paid_as_if_absent(world, job_id, trained, state, by_size=True)
    # The tiny job's shards are equal: without the attacker each honest worker gets half.
    results = results_by_worker(world.market, job_id, 0)
    assert {results[w.worker.key][1] for w in honest} == {REWARD // 2}
    await settled_round(world, job_id)


async def test_a_masked_input_counting_other_than_its_shard_is_rejected(
    world_with: WorldOf,
) -> None:
    config = tiny_config(secure_aggregation=True, secagg_threshold=2, challenge_rate=0.0)
    world = await world_with(config)
    workers = [world.worker(i) for i in range(3)]
    *honest, bad = workers
    job_id, state = await start(world, workers)
    parties = await exchange_keys(world, job_id, workers)
    trained = [(w, await w.train(job_id, 0, participant=parties[w.worker])) for w in honest]
    # The chain count is the shard's, the masked input claims more: the weight inside the sum.
    start_model = decode_blob(await world.blobs.get(state.model_hash.hex()))
    length = ParameterLayout.of(start_model).flatten(start_model).shape[0]
    honest_mask = parties[bad.worker].mask(np.zeros(length, np.float32), 1)
    sent = encode_masked(MaskedInput(honest_mask.client_id, INFLATED, honest_mask.vector))
    await bad.client.send_secagg(job_id, 0, SecAggStage.MASKED, sent)
    size = size_of(world, state, bad)
    root = data_root_of(world, state, bad)
    world.market.commit(job_id, 0, bad.worker, keccak256(sent), bytes(32), root, size, 0)
    world.clock.advance(1)  # the closing block: one after the last commitment
    await world.service.step()
    await step_until(world, job_id, Phase.PROPOSED)

    reason = (
        f"masked input counts {INFLATED} examples, but the assigned shard "
        f"{state.assignment(bad.worker).shard} has {size}"
    )
    await assert_rejected(world, job_id, bad, reason)
    await assert_paid_as_if_absent(world, job_id, trained, state, by_size=True)
    await settled_round(world, job_id)


async def test_when_no_update_lowers_the_loss_pay_is_by_checked_counts_only(
    world_with: WorldOf,
) -> None:
    # One class per shard and a large step: each update alone makes the held-out loss worse.
    config = tiny_config(
        data=DataSpec(shards=3, partition="k_classes", classes_per_client=1),
        learning_rate=5.0,
        challenge_rate=0.001,  # never drawn here, and enough for cheating not to pay
    )
    world = await world_with(config)
    *honest, bad = [world.worker(0), world.worker(1), world.worker(2, claimed_samples=INFLATED)]
    job_id, state = await start(world, [*honest, bad])
    assert len({size_of(world, state, w) for w in honest}) == 2  # unequal shards
    trained = [(w, await w.train(job_id, 0)) for w in honest]
    await bad.train(job_id, 0)
    world.clock.advance(1)  # the closing block: one after the last commitment
    await step_until(world, job_id, Phase.PROPOSED)

    reason = (
        f"committed num_samples {INFLATED}, but the assigned shard "
        f"{state.assignment(bad.worker).shard} has {size_of(world, state, bad)} examples"
    )
    await assert_rejected(world, job_id, bad, reason)
    await assert_honest_aggregate(world, trained, state)
    await assert_paid_as_if_absent(world, job_id, trained, state, by_size=True)
    await settled_round(world, job_id)


# --- copies -------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["identical", "nudged"])
async def test_a_copied_update_is_rejected_and_never_counted_twice(
    world_with: WorldOf, kind: str
) -> None:
    world = await world_with(tiny_config(challenge_rate=0.001))
    workers = [world.worker(i) for i in range(3)]
    *honest, copier = workers
    job_id, state = await start(world, workers)
    trained = [(w, await w.train(job_id, 0)) for w in honest]
    original = honest[0]
    copied = trained[0][1]
    if kind == "nudged":  # moved by far less than the copy distance
        start_model = decode_blob(await world.blobs.get(state.model_hash.hex()))
        copied = {
            k: (v + np.float32(1e-7) * (v - start_model[k])).astype(np.float32)
            for k, v in copied.items()
        }
    blob = encode_blob(copied)
    await copier.client.upload_update(job_id, 0, blob)
    size = size_of(world, state, copier)
    root = data_root_of(world, state, copier)
    world.market.commit(
        job_id, 0, copier.worker, keccak256(blob), bytes(32), root, size, loss_to_fixed(0.5)
    )
    world.clock.advance(1)  # the closing block: one after the last commitment
    await step_until(world, job_id, Phase.PROPOSED)

    proposed = await world.store.get_round(job_id, 0)
    assert proposed is not None
    first = proposed.assignment(original.worker).commitment
    assert first is not None
    whose = (
        f"a copy of worker {original.worker.key.hex()}'s update, committed earlier "
        f"(block {first.block})"
    )
    reason = proposed.assignment(copier.worker).reason
    if kind == "identical":
        assert reason == f"{whose}: the same update hash"
    else:
        assert reason.startswith(f"{whose}: normalised L2 distance ")
        assert reason.endswith(f"of the deltas is at most {COPY_DISTANCE:g}")
    await assert_rejected(world, job_id, copier, reason)
    await assert_honest_aggregate(world, trained, state)
    await assert_paid_as_if_absent(world, job_id, trained, state, by_size=False)
    await settled_round(world, job_id)


def test_honest_updates_of_different_shards_are_far_from_copies() -> None:
    config = tiny_config()
    workbench = JobWorkbench(config)
    spec = config.model
    start = workbench.initial_model()
    layout = ParameterLayout.of(start)
    deltas = []
    for shard in range(config.data.shards):
        trainer = TorchClassificationTrainer(
            lambda: mlp(spec.inputs, spec.hidden, spec.classes), workbench.shard(shard)
        )
        run = train_with_transcript(trainer, start, workbench.training_config())
        final = model_of(decode_blob(run.blobs[-1]))
        deltas.append(delta_of(layout.flatten(final), layout.flatten(start)))
    gaps = [distance(a, b) for i, a in enumerate(deltas) for b in deltas[i + 1 :]]
    assert min(gaps) > 100 * COPY_DISTANCE


# --- the workers' own data ------------------------------------------------------------------------

SCHEMA = TabularSchema(features=(64,), dtype="float32", classes=10)
EVAL = Dataset(digits().features[:60], digits().labels[:60])


def _own(seed: int, count: int) -> Dataset:
    """``count`` digits of a worker's own (examples drawn by ``seed``)."""
    picked = np.random.default_rng(seed).choice(len(digits()), count, replace=False)
    return digits().subset(np.sort(picked).astype(np.int64))


async def test_on_private_data_the_count_is_recorded_and_every_update_weighs_one(
    world_with: WorldOf,
) -> None:
    """Two workers commit their own data (30 and 90 examples): both accepted with their data
    roots and counts recorded, the aggregate the FedAvg of weight 1 each (nothing checks a
    private count yet); a worker committing to no example is rejected and slashed."""
    config = tiny_config(
        data=WorkerData(schema=SCHEMA, replay="none"),
        evaluation=EvaluationSpec(data_hash=keccak256(dataset_blob(EVAL)).hex()),
    )
    world = await world_with(config)
    await world.blobs.put(dataset_blob(EVAL), domain=EVALUATION)
    small, large, empty = (world.worker(i) for i in range(3))
    small.own_data, large.own_data, empty.own_data = _own(1, 30), _own(2, 90), _own(3, 10)
    empty.claimed_samples = 0
    await register(world, [small, large, empty])
    job = await world.post(workers=3)
    await step_until(world, job, Phase.COLLECTING)

    trained = {w.worker.worker_id: await w.train(job, 0) for w in (small, large)}
    await empty.train(job, 0)
    world.clock.advance(1)
    await world.service.step()  # commitments followed: the empty one rejected at once
    for w in (small, large):
        await w.answer_challenges()
    await step_until(world, job, Phase.PROPOSED)

    state = await world.store.get_round(job)
    assert state is not None
    refused = state.assignment(empty.worker)
    assert refused.status is TaskStatus.SLASHED
    assert refused.reason == "committed num_samples 0: a data root commits to at least one example"
    for w in (small, large):
        accepted = state.assignment(w.worker)
        assert accepted.status is TaskStatus.ACCEPTED
        assert accepted.commitment is not None
        assert w.own_data is not None
        assert accepted.commitment.data_root == data_commitment(w.own_data).root
        assert accepted.commitment.num_samples == len(w.own_data)
    results = results_by_worker(world.market, job, 0)
    assert results[empty.worker.key][0] is Outcome.SLASHED

    # FedAvg with weight 1 each (not 30 and 90).
    start_model = decode_blob(await world.blobs.get(state.model_hash.hex()))
    layout = ParameterLayout.of(start_model)
    params = layout.flatten(start_model)
    updates = [
        ClientUpdate(w.hex(), delta_of(layout.flatten(m), params), 1) for w, m in trained.items()
    ]
    expected = fedavg().aggregate_fit(params, updates, ServerState()).params
    assert state.proposed_model is not None
    proposed = layout.flatten(decode_blob(await world.blobs.get(state.proposed_model.hex())))
    assert np.allclose(proposed, expected, atol=1e-6)
    by_count = [
        ClientUpdate(u.client_id, u.delta, n) for u, n in zip(updates, (30, 90), strict=True)
    ]
    assert not np.allclose(
        proposed, fedavg().aggregate_fit(params, by_count, ServerState()).params, atol=1e-6
    )
    world.clock.advance(WINDOW)
    await step_until(world, job, Phase.COMPLETED)
