"""Challenges in a secure round: the challenged worker opens its masks with its answer.

Real Participants through the real HTTP API, FakeJobMarket for the chain, the in-memory store
and the SQLite ledger. Three workers (threshold 2) at challenge rate 1: the privacy cap lets one
of them be challenged (two must stay hidden). The challenged worker answers with its checkpoints
and its mask opening; one that forged its transcript, or whose masked input is not its update
plus its masks, is slashed with the reason, its input leaves the sum, and the two others are
accepted and their sum recovered. The openings are gone once the round is proposed.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Literal

import numpy as np
import pytest
from test_coordinator_service import (  # the world of the coordinator service tests
    World,
    make_world,
    results_by_worker,
    step_until,
    tiny_config,
)
from test_secagg_faults import proposed_params, round_state, start_round, train_all

from fedrelay.coordinator.aggregation import ServerState, fedavg
from fedrelay.coordinator.verification import challenges
from fedrelay.ports.coordinator_store import CoordinatorStore
from fedrelay.protocol.rounds import Assignment, Phase, TaskStatus, WorkerRef
from fedrelay.protocol.secagg.messages import SecAggStage
from fedrelay.protocol.wormhole import Outcome

Cheat = Literal["honest", "transcript", "masked"]


@pytest.fixture
async def world(store: CoordinatorStore) -> AsyncIterator[World]:
    config = tiny_config(secure_aggregation=True, secagg_threshold=2, challenge_rate=1.0)
    async for w in make_world(store, config):
        yield w


@pytest.mark.parametrize("cheat", ["honest", "transcript", "masked"])
async def test_the_challenged_worker_of_a_secure_round_opens_its_masks(
    world: World, cheat: Cheat, monkeypatch: pytest.MonkeyPatch
) -> None:
    job_id, workers, state = await start_round(world)
    first, *others = workers
    # The challenged worker is the first in draw order: make it `first`, whatever the seed.
    order = challenges.challenge_order
    monkeypatch.setattr(
        challenges,
        "challenge_order",
        lambda seed, a: -1 if a.worker == first.worker else order(seed, a),
    )
    first.forge_transcript = cheat == "transcript"
    first.corrupt_masked = cheat == "masked"
    parties, updates, params = await train_all(world, job_id, workers, state)
    world.clock.advance(1)  # the closing block: one after the last commitment
    await world.service.step()
    assert await round_state(world, job_id) is not None
    issued = await world.store.challenges()
    assert {c.worker for c in issued} == {first.worker}  # the cap: two stay hidden
    for w in workers:
        await w.answer_challenges(job_id)
        await w.reveal(job_id, 0, parties[w.worker])
    await step_until(world, job_id, Phase.PROPOSED)

    proposed = await round_state(world, job_id)
    results = results_by_worker(world.market, job_id, 0)
    assert all(results[w.worker.key][0] is Outcome.ACCEPTED for w in others)
    summed = workers if cheat == "honest" else others
    if cheat == "honest":
        assert results[first.worker.key][0] is Outcome.ACCEPTED
    else:
        slashed = proposed.assignment(first.worker)
        assert slashed.status is TaskStatus.SLASHED
        assert slashed.reason is not None
        assert "failed" in slashed.reason
        if cheat == "masked":
            assert "mask opening refused: the masked input is not" in slashed.reason
    assert proposed.proposed_model is not None
    model = await proposed_params(world, job_id)
    plain = fedavg().aggregate_fit(params, [updates[w.worker] for w in summed], ServerState())
    assert np.allclose(model, plain.params, atol=1e-5)
    report = await world.store.report(job_id, 0)
    assert report is not None
    assert report.note == ""
    assert await world.store.secagg(job_id, 0, SecAggStage.OPENING) == {}  # deleted


def test_the_privacy_cap_keeps_two_hidden_and_a_hidden_neighbour_for_each() -> None:
    seed = b"\x05" * 32
    tasks = [Assignment(WorkerRef(1, bytes([i + 1]) * 32), i) for i in range(6)]
    ids = [a.worker.worker_id for a in tasks]
    draws = [challenges.ChallengeDraw(a, 0) for a in tasks]
    complete = {i: set(ids) - {i} for i in ids}
    kept = challenges.privacy_capped(seed, draws, ids, complete)
    opened = {d.assignment.worker.worker_id for d in kept}
    assert len(opened) == 4  # everyone drawn; all but two opened
    order = sorted(tasks, key=lambda a: challenges.challenge_order(seed, a))
    assert opened == {a.worker.worker_id for a in order[:4]}  # in seed order
    # A ring: each hidden worker must keep a hidden neighbour.
    ring = {ids[i]: {ids[(i - 1) % 6], ids[(i + 1) % 6]} for i in range(6)}
    kept = challenges.privacy_capped(seed, draws, ids, ring)
    opened = {d.assignment.worker.worker_id for d in kept}
    hidden = set(ids) - opened
    assert len(hidden) >= 2
    assert all(ring[h] & hidden for h in hidden)
    # Repeatable: the same seed and draws give the same cap.
    assert challenges.privacy_capped(seed, draws, ids, ring) == kept
    # Two workers in the sum: nobody can be opened.
    assert challenges.privacy_capped(seed, draws[:2], ids[:2], complete) == []
