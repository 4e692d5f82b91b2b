"""Spot reveals: on the workers' own data a challenged segment is replayed on the examples it
consumed, which the worker opens to the verifier only.

The real coordinator service and HTTP API, FakeJobMarket for the chain, the in-memory store and
the SQLite ledger. Every transcript is challenged on every segment (rate 1, all segments): an
honest worker's opened examples check out under its data root, its segments replay, and its
update weighs its committed count; a worker that trained on data other than what it committed,
or skipped steps, fails the replay and is slashed; an answer without the examples, or with
examples a challenge did not ask for, is refused. Once checked, the examples are gone: the
challenge keeps only the verdict, and no example ever reaches the blob store.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import numpy as np
import pytest
from support.simulated_worker import SimulatedWorker
from test_coordinator_service import (  # the world of the coordinator service tests
    World,
    make_world,
    register,
    results_by_worker,
    step_until,
    tiny_config,
)
from test_counts_and_copies import assert_fedavg_of

from fedrelay.ports.blobs import EVALUATION
from fedrelay.ports.coordinator_store import CoordinatorStore
from fedrelay.protocol.data_spec import EvaluationSpec, TabularSchema, WorkerData
from fedrelay.protocol.rounds import Phase, TaskStatus
from fedrelay.protocol.wormhole import Outcome, keccak256
from fedrelay.training import ModelTensors
from fedrelay.training.data import Dataset, digits
from fedrelay.training.datasets import dataset_blob
from fedrelay.training.datasets.commitment import example_body
from fedrelay.worker.sdk.api_client import CoordinatorRequestError

SCHEMA = TabularSchema(features=(64,), dtype="float32", classes=10)
EVAL = Dataset(digits().features[:60], digits().labels[:60])
CONFIG = tiny_config(
    data=WorkerData(schema=SCHEMA),  # replay "segments": spot reveals
    evaluation=EvaluationSpec(data_hash=keccak256(dataset_blob(EVAL)).hex()),
    steps=6,
    checkpoint_every=2,
    challenge_segments=3,
)


def _own(seed: int, count: int) -> Dataset:
    """``count`` digits of a worker's own (drawn by ``seed``, none of the evaluation set's)."""
    picked = len(EVAL) + np.random.default_rng(seed).choice(
        len(digits()) - len(EVAL), count, replace=False
    )
    return digits().subset(np.sort(picked).astype(np.int64))


@pytest.fixture
async def world(store: CoordinatorStore) -> AsyncIterator[World]:
    async for built in make_world(store, CONFIG):
        await built.blobs.put(dataset_blob(EVAL), domain=EVALUATION)
        yield built


async def _round(
    world: World, workers: list[SimulatedWorker]
) -> tuple[int, dict[bytes, ModelTensors]]:
    """Post a job for ``workers``, train and commit, answer the challenges; the job id and the
    models trained, by worker id, once the round is proposed."""
    await register(world, workers)
    job = await world.post(workers=len(workers))
    await step_until(world, job, Phase.COLLECTING)
    trained = {w.worker.worker_id: await w.train(job, 0) for w in workers}
    world.clock.advance(1)
    await world.service.step()  # commitments followed, challenges issued
    for w in workers:
        await w.answer_challenges(job)
    await step_until(world, job, Phase.PROPOSED)
    return job, trained


def _bodies(data: Dataset) -> list[bytes]:
    return [example_body(data, i)[1] for i in range(len(data))]


async def _assert_nothing_kept(world: World, workers: list[SimulatedWorker]) -> None:
    """Every challenge keeps its verdict only, and no example of any worker is in a blob."""
    for w in workers:
        for challenge in await world.store.challenges(worker=w.worker):
            assert challenge.wants_examples
            assert challenge.answer is not None
            assert challenge.answer.examples == b""
            assert challenge.reveal_verdict is not None
        assert w.own_data is not None
        blobs = list(world.blobs._blobs.values())  # a test may look inside its own store
        for body in _bodies(w.own_data):
            assert not any(body in blob for blob in blobs)


async def test_honest_workers_open_their_examples_and_weigh_their_committed_counts(
    world: World,
) -> None:
    small, large = world.worker(0), world.worker(1)
    small.own_data, large.own_data = _own(1, 30), _own(2, 90)
    job, trained = await _round(world, [small, large])

    state = await world.store.get_round(job)
    assert state is not None
    for w in (small, large):
        assert state.assignment(w.worker).status is TaskStatus.ACCEPTED
        verdicts = [c.reveal_verdict for c in await world.store.challenges(worker=w.worker)]
        assert verdicts == ["ok"] * 3  # every segment replayed on its opened examples
    await _assert_nothing_kept(world, [small, large])

    # FedAvg weighted by the committed counts, 30 and 90.
    weighted = [
        (small, trained[small.worker.worker_id], 30),
        (large, trained[large.worker.worker_id], 90),
    ]
    await assert_fedavg_of(world, state, weighted)


@pytest.mark.parametrize("cheat", ["other data", "skipped steps"])
async def test_a_worker_that_did_not_train_on_what_it_committed_is_slashed(
    world: World, cheat: str
) -> None:
    honest, dishonest = world.worker(0), world.worker(1)
    honest.own_data, dishonest.own_data = _own(1, 40), _own(2, 40)
    if cheat == "other data":
        dishonest.trained_on = _own(3, 40)  # commits the root of its data, trains on other
    else:
        dishonest.skipped_steps = 1  # one step of each two left out
    job, _ = await _round(world, [honest, dishonest])

    state = await world.store.get_round(job)
    assert state is not None
    assert state.assignment(honest.worker).status is TaskStatus.ACCEPTED
    caught = state.assignment(dishonest.worker)
    assert caught.status is TaskStatus.SLASHED
    assert "replay differs from the committed checkpoint" in caught.reason
    await _assert_nothing_kept(world, [honest, dishonest])
    results = results_by_worker(world.market, job, 0)
    assert results[dishonest.worker.key][0] is Outcome.SLASHED
    assert results[dishonest.worker.key][1] == 0
    assert results[honest.worker.key][0] is Outcome.ACCEPTED
    assert results[honest.worker.key][1] > 0


async def test_an_answer_must_open_exactly_what_the_challenge_asks_for(world: World) -> None:
    worker = world.worker(0)
    worker.own_data = _own(1, 30)
    await register(world, [worker])
    job = await world.post(workers=1)
    await step_until(world, job, Phase.COLLECTING)
    await worker.train(job, 0)
    world.clock.advance(1)
    await world.service.step()
    worker.open_examples = False
    with pytest.raises(CoordinatorRequestError, match="asks for the examples segment 0"):
        await worker.answer_challenges(job)
    worker.open_examples = True
    assert await worker.answer_challenges(job) == 3
