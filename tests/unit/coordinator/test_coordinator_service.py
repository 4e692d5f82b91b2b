"""The coordinator service on a simulated chain (FakeJobMarket) with the real HTTP API.

FakeJobMarket stands in for the coordinator chain so the service's logic is tested without an
EVM node: it mines one block per transaction and keeps JobMarket's rules that matter here.
Workers are SimulatedWorkers that train a tiny model on their shard, upload through the signed
API client and answer challenges. The clock is a FakeClock: deadlines pass when a test says so.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field

import httpx
import numpy as np
import pytest
from prometheus_client import CollectorRegistry
from support.simulated_worker import SimulatedWorker

from fedrelay.adapters.blobstore import MemoryBlobStore
from fedrelay.coordinator.aggregation import ClientUpdate, ParameterLayout, ServerState, fedavg
from fedrelay.coordinator.api import create_app
from fedrelay.coordinator.memory_store import MemoryCoordinatorStore
from fedrelay.coordinator.metrics import CoordinatorMetrics
from fedrelay.coordinator.phases.aggregate import server_state_of
from fedrelay.coordinator.phases.unmask import secagg_config
from fedrelay.coordinator.service import CoordinatorService
from fedrelay.coordinator.testing import FakeClock, FakeJobMarket
from fedrelay.coordinator.verification import JobWorkbench, delta_of
from fedrelay.ports.blobs import POSTER
from fedrelay.ports.coordinator_chain import ChainEvent, WorkerResult
from fedrelay.ports.coordinator_store import CoordinatorStore
from fedrelay.protocol.api.signing import EvmSigner
from fedrelay.protocol.job_config import DataSpec, InvalidJobConfig, JobConfig, MlpSpec
from fedrelay.protocol.rounds import Fault, Phase
from fedrelay.protocol.secagg import Participant
from fedrelay.protocol.secagg.messages import SecAggStage
from fedrelay.protocol.secagg.wire import (
    client_id,
    decode_keys,
    decode_shares,
    encode_keys,
    encode_shares,
)
from fedrelay.protocol.wormhole import Outcome, keccak256
from fedrelay.training import decode_blob, encode_blob
from fedrelay.worker.sdk.api_client import CoordinatorClient

TOKEN = "admin-token-0123456789"
REWARD = 1_000_000
SLASH = 5 * 10**8
WINDOW = 30


def tiny_config(**changes: object) -> JobConfig:
    """A job small enough to train, replay and evaluate in milliseconds."""
    fields: dict[str, object] = {
        "model": MlpSpec(hidden=8),
        "data": DataSpec(shards=3, partition="iid", max_examples_per_shard=40),
        "steps": 4,
        "checkpoint_every": 2,
        "batch_size": 8,
        "challenge_rate": 1.0,
        "collect_seconds": 120,
        "answer_seconds": 60,
        "reveal_seconds": 60,
    }
    return JobConfig.model_validate({**fields, **changes})


@dataclass
class World:
    """The service, its store, the simulated chain and the workers of one test."""

    clock: FakeClock
    market: FakeJobMarket
    store: CoordinatorStore
    blobs: MemoryBlobStore
    transport: httpx.ASGITransport
    config: JobConfig
    service: CoordinatorService
    clients: list[CoordinatorClient] = field(default_factory=list)

    def new_service(self) -> CoordinatorService:
        """A fresh coordinator process on the same store, blobs and chain (a restart)."""
        return CoordinatorService(self.market, self.store, self.blobs, clock=self.clock)

    def worker(self, index: int, **behaviour: bool) -> SimulatedWorker:
        signer = EvmSigner(bytes([index + 1]) * 32, chain=4)
        client = CoordinatorClient(
            "http://coordinator", signer, clock=self.clock, transport=self.transport
        )
        self.clients.append(client)
        return SimulatedWorker(client, signer.worker, self.config, self.market.commit, **behaviour)

    async def post(self, *, rounds: int = 1, workers: int = 2) -> int:
        model = encode_blob(JobWorkbench(self.config).initial_model())
        model_name = await self.blobs.put(model, domain=POSTER)
        config_name = await self.blobs.put(self.config.to_bytes(), domain=POSTER)
        return self.market.post_job(
            bytes.fromhex(model_name),
            bytes.fromhex(config_name),
            num_rounds=rounds,
            workers_per_round=workers,
            reward_per_round=REWARD,
            rejected_slash=SLASH,
        )


async def make_world(store: CoordinatorStore, config: JobConfig) -> AsyncIterator[World]:
    clock = FakeClock()
    market = FakeJobMarket(clock, challenge_window=WINDOW)
    blobs = MemoryBlobStore()
    app = create_app(store, blobs, admin_token=TOKEN, clock=clock)
    transport = httpx.ASGITransport(app=app)
    service = CoordinatorService(market, store, blobs, clock=clock)
    world = World(clock, market, store, blobs, transport, config, service)
    yield world
    for client in world.clients:
        await client.aclose()


@pytest.fixture
async def world(store: CoordinatorStore) -> AsyncIterator[World]:
    async for w in make_world(store, tiny_config()):
        yield w


async def phase_of(world: World, job_id: int) -> Phase:
    state = await world.store.get_round(job_id)
    assert state is not None
    return state.phase


async def step_until(
    world: World, job_id: int, wanted: Phase, service: CoordinatorService | None = None
) -> None:
    """Step the service until the job reaches ``wanted``; fail after a bounded number of steps."""
    runner = service or world.service
    for _ in range(10):
        await runner.step()
        if await phase_of(world, job_id) is wanted:
            return
    raise AssertionError(f"job {job_id} stuck in {await phase_of(world, job_id)}, wanted {wanted}")


async def register(world: World, workers: Sequence[SimulatedWorker]) -> None:
    for w in workers:
        world.market.register(w.worker, stake=10**8)


async def run_round(
    world: World, job_id: int, workers: Sequence[SimulatedWorker], round_number: int = 0
) -> None:
    """Workers train and commit; the service aggregates, workers answer, the round is proposed."""
    await step_until(world, job_id, Phase.COLLECTING)
    assigned = {a.worker for a in (await world.store.get_round(job_id)).assignments}  # type: ignore[union-attr]
    for w in workers:
        if w.worker in assigned:
            await w.train(job_id, round_number)
    world.clock.advance(1)  # the closing block: one after the last commitment
    await world.service.step()
    for w in workers:
        await w.answer_challenges()
    await step_until(world, job_id, Phase.PROPOSED)


def results_by_worker(
    market: FakeJobMarket, job_id: int, round_number: int
) -> dict[bytes, tuple[Outcome, int, int]]:
    _, results = market.proposals[(job_id, round_number)]
    return {r.worker.key: (r.outcome, r.reward, r.fault) for r in results}


# --- tests ---------------------------------------------------------------------------------------


async def test_one_round_is_assigned_verified_aggregated_finalized_and_settled(
    world: World,
) -> None:
    workers = [world.worker(i) for i in range(2)]
    await register(world, workers)
    job_id = await world.post(rounds=1, workers=2)

    await step_until(world, job_id, Phase.COLLECTING)
    (assign_call,) = world.market.assign_calls
    assert {t.worker_key for t in assign_call[3]} == {w.worker.key for w in workers}
    assert sorted(t.shard for t in assign_call[3]) == [0, 1]

    trained = {w.worker: await w.train(job_id, 0) for w in workers}
    world.clock.advance(1)  # the closing block: one after the last commitment
    await world.service.step()  # commitments followed; every task challenged
    assert await phase_of(world, job_id) is Phase.AGGREGATING
    # Every task is challenged on its drawn segment and on its last one (the final checkpoint).
    answered = sum([await w.answer_challenges() for w in workers])
    challenges = await world.store.challenges()
    assert answered == len(challenges)
    last = world.config.training_config().segments - 1
    assert all(any(c.segment == last for c in challenges if c.worker == w.worker) for w in workers)
    await step_until(world, job_id, Phase.PROPOSED)

    # The proposal is FedAvg of the uploaded models, and the whole reward goes to the two.
    state = await world.store.get_round(job_id)
    assert state is not None
    assert state.proposed_model is not None
    start = decode_blob(await world.blobs.get(state.model_hash.hex()))
    layout = ParameterLayout.of(start)
    params = layout.flatten(start)
    updates = [
        ClientUpdate(
            a.worker.worker_id.hex(),
            delta_of(layout.flatten(trained[a.worker]), params),
            a.commitment.num_samples,  # type: ignore[union-attr]
        )
        for a in state.assignments
    ]
    expected = fedavg().aggregate_fit(params, updates, ServerState())
    proposed = decode_blob(await world.blobs.get(state.proposed_model.hex()))
    assert np.array_equal(layout.flatten(proposed), expected.params)
    results = results_by_worker(world.market, job_id, 0)
    assert {o for o, _, _ in results.values()} == {Outcome.ACCEPTED}
    assert sum(r for _, r, _ in results.values()) == REWARD
    report = await world.store.report(job_id, 0)
    assert report is not None
    assert report.accuracy is not None
    assert 0.0 <= report.accuracy <= 1.0

    # Settlement waits for the challenge window, then the job completes.
    await world.service.step()
    assert world.market.settled == []
    world.clock.advance(WINDOW)
    await step_until(world, job_id, Phase.COMPLETED)
    assert world.market.settled == [(job_id, 0)]
    assert await world.store.active_jobs() == []


async def test_challenged_proposal_is_aggregated_and_proposed_again(world: World) -> None:
    workers = [world.worker(i) for i in range(2)]
    await register(world, workers)
    job_id = await world.post(workers=2)
    await run_round(world, job_id, workers)
    first = world.market.proposals[(job_id, 0)]
    world.market.challenge(job_id, 0)
    await step_until(world, job_id, Phase.PROPOSED)
    assert world.market.finalize_calls == 2
    assert world.market.proposals[(job_id, 0)] == first  # the same work gives the same proposal
    world.clock.advance(WINDOW)
    await step_until(world, job_id, Phase.COMPLETED)


async def test_tampered_update_is_rejected_and_slashed(world: World) -> None:
    honest, cheat = world.worker(0), world.worker(1, tamper_update=True)
    await register(world, [honest, cheat])
    job_id = await world.post(workers=2)
    await run_round(world, job_id, [honest, cheat])

    results = results_by_worker(world.market, job_id, 0)
    assert results[cheat.worker.key] == (Outcome.SLASHED, 0, Fault.REJECTED)
    assert results[honest.worker.key] == (Outcome.ACCEPTED, REWARD, 0)
    state = await world.store.get_round(job_id)
    assert state is not None
    assert "chain commitment" in state.assignment(cheat.worker).reason


async def test_forged_transcript_fails_replay_and_is_slashed(world: World) -> None:
    honest, forger = world.worker(0), world.worker(1, forge_transcript=True)
    await register(world, [honest, forger])
    job_id = await world.post(workers=2)
    await run_round(world, job_id, [honest, forger])

    results = results_by_worker(world.market, job_id, 0)
    assert results[forger.worker.key][0] is Outcome.SLASHED
    assert results[honest.worker.key][0] is Outcome.ACCEPTED
    state = await world.store.get_round(job_id)
    assert state is not None
    assert "failed" in state.assignment(forger.worker).reason


async def test_unanswered_challenge_is_slashed_after_its_deadline(world: World) -> None:
    honest, silent = world.worker(0), world.worker(1, silent=True)
    await register(world, [honest, silent])
    job_id = await world.post(workers=2)
    await step_until(world, job_id, Phase.COLLECTING)
    for w in (honest, silent):
        await w.train(job_id, 0)
    world.clock.advance(1)  # the closing block: one after the last commitment
    await world.service.step()
    await honest.answer_challenges()
    await world.service.step()
    assert await phase_of(world, job_id) is Phase.AGGREGATING  # still waiting for the answer
    world.clock.advance(world.config.answer_seconds + 1)
    await step_until(world, job_id, Phase.PROPOSED)
    results = results_by_worker(world.market, job_id, 0)
    assert results[silent.worker.key] == (Outcome.SLASHED, 0, Fault.REJECTED)
    assert results[honest.worker.key][0] is Outcome.ACCEPTED


async def test_missing_worker_is_dropped_at_the_deadline(world: World) -> None:
    present, absent = world.worker(0), world.worker(1)
    await register(world, [present, absent])
    job_id = await world.post(workers=2)
    await step_until(world, job_id, Phase.COLLECTING)
    await present.train(job_id, 0)
    await world.service.step()
    assert await phase_of(world, job_id) is Phase.COLLECTING
    world.clock.advance(world.config.collect_seconds + 1)
    await world.service.step()
    await present.answer_challenges()
    await step_until(world, job_id, Phase.PROPOSED)
    results = results_by_worker(world.market, job_id, 0)
    assert results[absent.worker.key] == (Outcome.DROPPED, 0, 0)
    assert results[present.worker.key] == (Outcome.ACCEPTED, REWARD, 0)


async def test_rounds_workers_and_payouts_are_counted(world: World) -> None:
    registry = CollectorRegistry()
    world.service = CoordinatorService(
        world.market, world.store, world.blobs, clock=world.clock,
        metrics=CoordinatorMetrics(registry),
    )  # fmt: skip
    present, absent = world.worker(0), world.worker(1)
    await register(world, [present, absent])
    job_id = await world.post(workers=2)

    def value(name: str, **labels: str) -> float | None:
        return registry.get_sample_value(name, {"job_id": str(job_id), **labels})

    def workers() -> dict[str, float | None]:
        states = ("assigned", "committed", "dropped")
        return {s: value("fedrelay_coordinator_round_workers", state=s) for s in states}

    await step_until(world, job_id, Phase.COLLECTING)
    assert workers() == {"assigned": 2, "committed": 0, "dropped": 0}
    await present.train(job_id, 0)
    await world.service.step()
    assert workers() == {"assigned": 2, "committed": 1, "dropped": 0}
    world.clock.advance(world.config.collect_seconds + 1)
    await world.service.step()
    await present.answer_challenges()
    await step_until(world, job_id, Phase.PROPOSED)
    assert value("fedrelay_coordinator_rounds_total", outcome="completed") is None
    world.clock.advance(WINDOW)
    await step_until(world, job_id, Phase.COMPLETED)
    assert value("fedrelay_coordinator_rounds_total", outcome="completed") == 1
    assert value("fedrelay_coordinator_rounds_total", outcome="failed") is None
    assert value("fedrelay_coordinator_payouts_total") == 1  # the absent worker earns nothing
    assert value("fedrelay_coordinator_payout_amount_total") == REWARD


async def test_round_waits_until_enough_workers_registered(world: World) -> None:
    first, second = world.worker(0), world.worker(1)
    await register(world, [first])
    job_id = await world.post(workers=2)
    await world.service.step()
    assert await phase_of(world, job_id) is Phase.POSTED
    assert world.market.assign_calls == []
    await register(world, [second])
    await step_until(world, job_id, Phase.COLLECTING)


async def test_job_with_an_unusable_configuration_is_not_taken_on(world: World) -> None:
    model_name = await world.blobs.put(b"not a model", domain=POSTER)
    bad = await world.blobs.put(b'{"strategy": "nonsense"}', domain=POSTER)
    job_id = world.market.post_job(
        bytes.fromhex(model_name),
        bytes.fromhex(bad),
        num_rounds=1,
        workers_per_round=1,
        reward_per_round=REWARD,
        rejected_slash=SLASH,
    )
    await world.service.step()
    assert await world.store.get_round(job_id) is None
    assert await world.store.cursor("coordinator:job-market") == world.market.blocks[-1].number


async def test_each_event_is_followed_once_across_restarts(world: World) -> None:
    workers = [world.worker(i) for i in range(2)]
    await register(world, workers)
    await world.service.step()
    assert set(await world.store.workers()) == {w.worker for w in workers}
    cursor = await world.store.cursor("coordinator:job-market")
    assert cursor == world.market.blocks[-1].number
    await world.new_service().step()  # nothing new: the cursor stays and nothing is redone
    assert await world.store.cursor("coordinator:job-market") == cursor


async def run_two_rounds(
    world: World, restart_at: Phase | None, restart_round: int = 0
) -> list[tuple[bytes, tuple[WorkerResult, ...]]]:
    """Two rounds with three workers; a new coordinator may take over at ``restart_at`` of
    round ``restart_round``."""
    workers = [world.worker(i) for i in range(3)]
    await register(world, workers)
    job_id = await world.post(rounds=2, workers=2)
    service = world.service
    for round_number in range(2):
        await step_until(world, job_id, Phase.COLLECTING, service)
        state = await world.store.get_round(job_id)
        assert state is not None
        assert state.round == round_number
        chosen = [w for w in workers if w.worker in {a.worker for a in state.assignments}]
        await chosen[0].train(job_id, round_number)
        await service.step()
        if restart_at is Phase.COLLECTING and round_number == restart_round:
            assert await phase_of(world, job_id) is Phase.COLLECTING
            service = world.new_service()
        await chosen[1].train(job_id, round_number)
        world.clock.advance(1)  # the closing block: one after the last commitment
        await service.step()
        if restart_at is Phase.AGGREGATING and round_number == restart_round:
            assert await phase_of(world, job_id) is Phase.AGGREGATING
            service = world.new_service()
        for w in chosen:
            await w.answer_challenges()
        await step_until(world, job_id, Phase.PROPOSED, service)
        world.clock.advance(WINDOW)
        await service.step()
        assert (job_id, round_number) in world.market.settled
    await step_until(world, job_id, Phase.COMPLETED, service)
    return [world.market.proposals[(job_id, r)] for r in range(2)]


@pytest.mark.parametrize(
    ("restart_at", "restart_round", "strategy"),
    [
        (Phase.COLLECTING, 0, "fedavg"),
        (Phase.AGGREGATING, 0, "fedavg"),
        # Server momentum carries state from round 0 into round 1: it must survive the restart.
        (Phase.AGGREGATING, 1, "fedavgm"),
    ],
)
async def test_restarted_coordinator_resumes_with_the_same_outcome(
    store: CoordinatorStore, restart_at: Phase, restart_round: int, strategy: str
) -> None:
    config = tiny_config(strategy=strategy)
    async for reference in make_world(MemoryCoordinatorStore(), config):
        expected = await run_two_rounds(reference, None)
    async for world in make_world(store, config):
        assert await run_two_rounds(world, restart_at, restart_round) == expected
        assert len(world.market.assign_calls) == 2  # no assignment was sent twice
        last = await world.store.report(1, 1)
        assert last is not None
        assert last.server_state is not None
        assert server_state_of(await world.blobs.get(last.server_state)).rounds == 2


async def test_secure_aggregation_sees_only_masked_inputs_and_the_sum() -> None:
    config = tiny_config(secure_aggregation=True, secagg_threshold=2, challenge_rate=0.0)
    async for world in make_world(MemoryCoordinatorStore(), config):
        workers = [world.worker(i) for i in range(3)]
        await register(world, workers)
        job_id = await world.post(workers=3)
        await step_until(world, job_id, Phase.COLLECTING)
        state = await world.store.get_round(job_id)
        assert state is not None
        start = decode_blob(await world.blobs.get(state.model_hash.hex()))
        layout = ParameterLayout.of(start)
        params = layout.flatten(start)
        secagg = secagg_config(config, job_id, 0, 3)
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
        updates = []
        for w in workers:
            shares = await w.client.secagg_shares(job_id, 0)
            parties[w.worker].receive_shares(
                [
                    decode_shares(s.hex(), client_id(w.worker.worker_id), c)
                    for s, c in shares.items()
                ]
            )
            trained = await w.train(job_id, 0, participant=parties[w.worker])
            updates.append(
                ClientUpdate(
                    client_id(w.worker.worker_id),
                    delta_of(layout.flatten(trained), params),
                    len(JobWorkbench(config).shard(state.assignment(w.worker).shard)),
                )
            )
        await world.service.step()
        assert await phase_of(world, job_id) is Phase.AGGREGATING  # waiting for the reveals
        for w in workers:
            await w.reveal(job_id, 0, parties[w.worker])
        await step_until(world, job_id, Phase.PROPOSED)

        assert await world.store.updates(job_id, 0) == {}  # no plain update ever reached it
        proposed_state = await world.store.get_round(job_id)
        assert proposed_state is not None
        assert proposed_state.proposed_model is not None
        proposed = layout.flatten(
            decode_blob(await world.blobs.get(proposed_state.proposed_model.hex()))
        )
        plain = fedavg().aggregate_fit(params, updates, ServerState()).params
        assert np.allclose(proposed, plain, atol=1e-5)
        results = results_by_worker(world.market, job_id, 0)
        assert {o for o, _, _ in results.values()} == {Outcome.ACCEPTED}
        assert sum(r for _, r, _ in results.values()) == REWARD


def test_job_configuration_round_trips_and_refuses_bad_input() -> None:
    config = tiny_config(strategy="median")
    assert JobConfig.from_bytes(config.to_bytes()) == config
    assert config.config_hash() == keccak256(config.to_bytes())
    with pytest.raises(InvalidJobConfig, match="strategy"):
        JobConfig.from_bytes(b'{"strategy": "nonsense"}')
    with pytest.raises(InvalidJobConfig, match="secure aggregation"):
        JobConfig.from_bytes(b'{"strategy": "krum", "secure_aggregation": true}')
    with pytest.raises(InvalidJobConfig, match="challenge_rate"):
        JobConfig.from_bytes(b'{"challenge_rate": 2}')
    with pytest.raises(InvalidJobConfig, match="secagg_threshold"):
        JobConfig.from_bytes(b'{"secure_aggregation": true}')
    training = config.training_config()
    assert (training.steps, training.checkpoint_every, training.batch_size) == (4, 2, 8)


async def test_events_a_node_served_late_are_followed_once(store: CoordinatorStore) -> None:
    """A node that answers for its newest block before it serves that block's logs (the fake
    market leaves them out of one read): the next pass reads the newest blocks again and
    handles what it missed, and an event handled before is passed over."""
    async for w in make_world(store, tiny_config()):
        await _follow_a_lagging_node(w)


async def _follow_a_lagging_node(w: World) -> None:
    late: list[int] = []  # blocks whose events the next read leaves out
    served = w.market.events

    async def lagging(from_block: int, to_block: int) -> Sequence[ChainEvent]:
        found = await served(from_block, to_block)
        hidden = set(late)
        late.clear()
        return [e for e in found if e.block not in hidden]

    w.market.events = lagging  # type: ignore[method-assign]
    handled: list[ChainEvent] = []
    on_event = w.service._on_event

    async def counting(event: ChainEvent) -> None:
        handled.append(event)
        await on_event(event)

    w.service._on_event = counting  # type: ignore[method-assign]
    worker = w.worker(0)
    await register(w, [worker])
    late.append(w.market.blocks[-1].number)
    await w.service.follow()
    assert worker.worker not in await w.store.workers()
    await w.service.follow()  # no new block: the newest are read again
    assert worker.worker in await w.store.workers()
    await w.service.follow()
    other = w.worker(1)
    await register(w, [other])
    await w.service.follow()
    assert [type(e).__name__ for e in handled] == ["WorkerJoined", "WorkerJoined"]
    assert {e.worker for e in handled} == {worker.worker, other.worker}  # type: ignore[union-attr]

    # A restarted process starts at the cursor: it handles nothing a second time.
    restarted = CoordinatorService(w.market, w.store, w.blobs, clock=w.clock)
    restarted._on_event = counting  # type: ignore[method-assign]
    await restarted.follow()
    await restarted.follow()
    assert len(handled) == 2
