"""Challenges a worker cannot foresee, and transcripts that must start from the round's model.

The real coordinator service (on FakeJobMarket) and its HTTP API against simulated workers:

- the challenge draw is seeded by the beacon value (``PREVRANDAO``) of the first block after the
  round's commitments closed, so a worker that computes the draw when it commits, from
  everything public then, cannot tell whether it will be challenged; the round waits for that
  block, records the seed next to the selection seed, and a cheater it happens to challenge is
  slashed while the honest worker is paid the whole reward, as if the cheater were absent;
- a sequencer that grinds the closing block's hash to spare a colluding cheater changes nothing
  under the beacon, and spares it under the older ``block_hash`` randomness (why the beacon is
  the default); a lag makes the seed wait for a block past it; a job that would draw from the
  beacon of a chain that has none is not taken on; the selection draws from the opening
  block's beacon;
- a transcript trained honestly from another model fails checkpoint 0 and is slashed;
- a job whose slash times detection probability is below its reward is not taken on.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import math
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import httpx
import pytest
from support.simulated_worker import SimulatedWorker

from fedrelay.adapters.blobstore import MemoryBlobStore
from fedrelay.coordinator.api import create_app
from fedrelay.coordinator.memory_store import MemoryCoordinatorStore
from fedrelay.coordinator.phases.seeds import seed_value
from fedrelay.coordinator.selection import round_seed
from fedrelay.coordinator.service import CoordinatorService
from fedrelay.coordinator.testing import FakeClock, FakeJobMarket
from fedrelay.coordinator.verification import JobWorkbench, challenge_sample, is_challenged
from fedrelay.ports.blobs import POSTER
from fedrelay.ports.coordinator_chain import BlockRef
from fedrelay.protocol.api.signing import EvmSigner
from fedrelay.protocol.challenges import challenge_seed, detection_probability
from fedrelay.protocol.job_config import DataSpec, JobConfig, MlpSpec
from fedrelay.protocol.rounds import Assignment, Fault, Phase, RoundState, TaskStatus, WorkerRef
from fedrelay.protocol.wormhole import Outcome, keccak256
from fedrelay.training import encode_blob
from fedrelay.worker.sdk.api_client import CoordinatorClient

TOKEN = "admin-token-0123456789"
REWARD = 1_000_000
SLASH = 5 * 10**8
WINDOW = 30


def config_at(rate: float, **fields: object) -> JobConfig:
    return JobConfig.model_validate(
        {
            **fields,
            "model": MlpSpec(hidden=8),
            "data": DataSpec(shards=3, partition="iid", max_examples_per_shard=40),
            "steps": 4,
            "checkpoint_every": 2,
            "batch_size": 8,
            "challenge_rate": rate,
            "collect_seconds": 120,
            "answer_seconds": 60,
        }
    )


@dataclass
class World:
    clock: FakeClock
    market: FakeJobMarket
    store: MemoryCoordinatorStore
    blobs: MemoryBlobStore
    transport: httpx.ASGITransport
    config: JobConfig
    service: CoordinatorService
    clients: list[CoordinatorClient] = field(default_factory=list)

    def worker(self, index: int, **behaviour: bool) -> SimulatedWorker:
        signer = EvmSigner(bytes([0x70 + index]) * 32, chain=4)
        client = CoordinatorClient(
            "http://coordinator", signer, clock=self.clock, transport=self.transport
        )
        self.clients.append(client)
        worker = SimulatedWorker(
            client, signer.worker, self.config, self.market.commit, **behaviour
        )
        self.market.register(worker.worker, stake=10**8)
        return worker

    async def post(self, workers: int, reward: int = REWARD) -> int:
        model = encode_blob(JobWorkbench(self.config).initial_model())
        model_name = await self.blobs.put(model, domain=POSTER)
        config_name = await self.blobs.put(self.config.to_bytes(), domain=POSTER)
        return self.market.post_job(
            bytes.fromhex(model_name),
            bytes.fromhex(config_name),
            num_rounds=1,
            workers_per_round=workers,
            reward_per_round=reward,
            rejected_slash=SLASH,
        )

    async def state(self, job_id: int) -> RoundState:
        state = await self.store.get_round(job_id)
        assert state is not None
        return state

    async def step_until(self, job_id: int, wanted: Phase) -> None:
        for _ in range(10):
            await self.service.step()
            if (await self.state(job_id)).phase is wanted:
                return
        raise AssertionError(f"job {job_id} is {(await self.state(job_id)).phase}, not {wanted}")

    def results(self, job_id: int) -> dict[WorkerRef, tuple[Outcome, int, int]]:
        _, results = self.market.proposals[(job_id, 0)]
        return {r.worker: (r.outcome, r.reward, r.fault) for r in results}


@pytest.fixture
async def make_world() -> AsyncIterator[Callable[..., World]]:
    worlds: list[World] = []

    def make(rate: float, constant_beacon: bytes | None = None, **fields: object) -> World:
        clock = FakeClock()
        market = FakeJobMarket(clock, challenge_window=WINDOW, constant_beacon=constant_beacon)
        store = MemoryCoordinatorStore()
        blobs = MemoryBlobStore()
        app = create_app(store, blobs, admin_token=TOKEN, clock=clock)
        service = CoordinatorService(market, store, blobs, clock=clock)
        world = World(
            clock,
            market,
            store,
            blobs,
            httpx.ASGITransport(app=app),
            config_at(rate, **fields),
            service,
        )
        worlds.append(world)
        return world

    yield make
    for world in worlds:
        for client in world.clients:
            await client.aclose()


def closing_value(
    candidates: list[bytes], job_id: int, worker: WorkerRef, rate: float, challenged: bool = True
) -> bytes:
    """A closing block value (of ``candidates``) under which ``worker`` is challenged (or not)."""
    return next(
        h
        for h in candidates
        if is_challenged(challenge_seed(h, job_id, 0), _task(worker), rate) is challenged
    )


def _task(worker: WorkerRef) -> Assignment:
    return Assignment(worker, 0)


CANDIDATES = [keccak256(b"closing block" + bytes([i])) for i in range(64)]


async def test_a_worker_cannot_foresee_its_challenge_and_a_challenged_cheat_is_slashed(
    make_world: Callable[[float], World],
) -> None:
    rate = 0.5
    world = make_world(rate)
    honest, cheat = world.worker(0), world.worker(1, forge_transcript=True)
    job_id = await world.post(workers=2)
    await world.step_until(job_id, Phase.COLLECTING)
    for w in (honest, cheat):
        await w.train(job_id, 0)

    # Everything public when the cheat committed: the selection seed and every block so far.
    report = await world.store.report(job_id, 0)
    assert report is not None
    assert report.seed is not None
    blocks = world.market.blocks
    known = [bytes.fromhex(report.seed), *(b.hash for b in blocks), *(b.beacon for b in blocks)]
    # The old draw (from the selection seed) was a prediction; the real one is not yet fixed.
    # Over closing blocks yet to be mined, the cheat is challenged under some and not others:
    # nothing it knew at commit time tells which.
    outcomes = {
        is_challenged(challenge_seed(h, job_id, 0), _task(cheat.worker), rate) for h in CANDIDATES
    }
    assert outcomes == {True, False}

    # The closing block does not exist yet: the round waits, nothing is challenged.
    await world.service.step()
    assert (await world.state(job_id)).phase is Phase.AGGREGATING
    assert await world.store.challenges() == []
    report = await world.store.report(job_id, 0)
    assert report is not None
    assert report.challenge_seed is None

    # The next block (a second later) is the closing block; the beacon gave it this value.
    world.clock.advance(1)
    chosen = closing_value(CANDIDATES, job_id, cheat.worker, rate)
    assert chosen not in known
    closing = world.market.mine(beacon=chosen)
    await world.service.step()
    report = await world.store.report(job_id, 0)
    assert report is not None
    seed = challenge_seed(chosen, job_id, 0)
    assert report.challenge_seed == seed.hex()
    assert report.closing_block == closing.number
    assert report.seed != report.challenge_seed  # recorded next to the selection seed
    state = await world.state(job_id)
    expected = challenge_sample(
        seed,
        state.with_status(TaskStatus.COMMITTED),
        rate,
        world.config.training_config().segments,
        world.config.challenge_segments,
    )
    issued = {(c.worker, c.segment) for c in await world.store.challenges()}
    assert issued == {(d.assignment.worker, d.segment) for d in expected}
    assert any(w == cheat.worker for w, _ in issued)

    for w in (honest, cheat):
        await w.answer_challenges()
    await world.step_until(job_id, Phase.PROPOSED)
    results = world.results(job_id)
    assert results[cheat.worker] == (Outcome.SLASHED, 0, Fault.REJECTED)
    assert results[honest.worker] == (Outcome.ACCEPTED, REWARD, 0)  # as if the cheat were absent
    reason = (await world.state(job_id)).assignment(cheat.worker).reason
    assert "failed" in reason


@pytest.mark.parametrize("randomness", ["prevrandao", "block_hash"])
async def test_a_sequencer_that_grinds_the_closing_hash_spares_a_cheat_only_without_the_beacon(
    make_world: Callable[..., World], randomness: str
) -> None:
    rate = 0.5
    world = make_world(rate, randomness=randomness)
    honest, cheat = world.worker(0), world.worker(1, forge_transcript=True)
    job_id = await world.post(workers=2)
    await world.step_until(job_id, Phase.COLLECTING)
    for w in (honest, cheat):
        await w.train(job_id, 0)
    await world.service.step()
    assert (await world.state(job_id)).phase is Phase.AGGREGATING

    # The beacon gives the closing block a value under which the cheat is challenged; the
    # sequencer, colluding with the cheat, orders the block's transactions until its hash
    # is one under which the cheat would not be.
    world.clock.advance(1)
    beacon = closing_value(CANDIDATES, job_id, cheat.worker, rate, challenged=True)
    ground = closing_value(CANDIDATES, job_id, cheat.worker, rate, challenged=False)
    closing = world.market.mine(ground, beacon=beacon)
    await world.service.step()
    report = await world.store.report(job_id, 0)
    assert report is not None
    assert report.closing_block == closing.number
    challenged = {c.worker for c in await world.store.challenges()}
    if randomness == "prevrandao":
        assert report.challenge_seed == challenge_seed(beacon, job_id, 0).hex()
        assert cheat.worker in challenged  # the hash the sequencer ground counts for nothing
    else:
        assert report.challenge_seed == challenge_seed(ground, job_id, 0).hex()
        assert cheat.worker not in challenged  # spared: what the beacon is for
    for w in (honest, cheat):
        await w.answer_challenges()
    await world.step_until(job_id, Phase.PROPOSED)
    outcome = world.results(job_id)[cheat.worker][0]
    assert outcome is (Outcome.SLASHED if randomness == "prevrandao" else Outcome.ACCEPTED)


async def test_a_lagged_beacon_seeds_from_the_first_block_past_the_lag(
    make_world: Callable[..., World],
) -> None:
    lag = 40
    world = make_world(1.0, randomness_lag_seconds=lag)
    workers = [world.worker(0), world.worker(1)]
    job_id = await world.post(workers=2)
    # Selection waits for a block `lag` seconds after the opening one.
    await world.service.step()
    report = await world.store.report(job_id, 0)
    assert report is not None
    opening = world.market.blocks[report.opening_block]
    assert report.seed is None
    world.clock.advance(lag - 1)
    world.market.mine()
    await world.service.step()
    report = await world.store.report(job_id, 0)
    assert report is not None
    assert report.seed is None  # that block's beacon value may have been known at the opening
    world.clock.advance(1)
    drawn = world.market.mine()
    await world.step_until(job_id, Phase.COLLECTING)
    report = await world.store.report(job_id, 0)
    assert report is not None
    assert report.seed_block == drawn.number
    assert drawn.timestamp == opening.timestamp + lag
    assert report.seed == round_seed(drawn.beacon, job_id, 0).hex()

    for w in workers:
        await w.train(job_id, 0)
    await world.service.step()
    closed_at = (await world.state(job_id)).updated_at
    world.clock.advance(lag)
    world.market.mine()  # at closed_at + lag: not past it
    await world.service.step()
    report = await world.store.report(job_id, 0)
    assert report is not None
    assert report.challenge_seed is None
    world.clock.advance(1)
    closing = world.market.mine()
    await world.service.step()
    report = await world.store.report(job_id, 0)
    assert report is not None
    assert closing.timestamp == closed_at + lag + 1
    assert report.closing_block == closing.number
    assert report.challenge_seed == challenge_seed(closing.beacon, job_id, 0).hex()


def test_the_selection_seed_is_the_opening_blocks_beacon_not_its_hash() -> None:
    block = BlockRef(7, keccak256(b"hash"), 1_800_000_000, keccak256(b"beacon"))
    config = config_at(0.5)
    assert config.randomness == "prevrandao"
    chain = FakeJobMarket(FakeClock())
    value = asyncio.run(seed_value(chain, config, block))
    assert value == block.beacon
    legacy = config_at(0.5, randomness="block_hash")
    assert asyncio.run(seed_value(chain, legacy, block)) == block.hash


@pytest.mark.parametrize(
    ("beacon", "problem"),
    [(bytes(32), "has a zero PREVRANDAO"), ((1).to_bytes(32, "big"), "reports a constant")],
)
async def test_a_job_drawing_from_a_chain_without_a_beacon_is_not_taken_on(
    make_world: Callable[..., World],
    caplog: pytest.LogCaptureFixture,
    beacon: bytes,
    problem: str,
) -> None:
    world = make_world(0.5, constant_beacon=beacon)
    world.worker(0)
    for _ in range(3):
        world.market.mine()
    job_id = await world.post(workers=1)
    with caplog.at_level(logging.ERROR, logger="fedrelay.coordinator.service"):
        await world.service.step()
    assert await world.store.get_round(job_id) is None
    (message,) = [r.getMessage() for r in caplog.records if "not taken on" in r.getMessage()]
    assert problem in message
    assert "post the job with randomness block_hash" in message


@pytest.mark.parametrize("rate", [1.0, 0.5])
async def test_a_transcript_trained_from_another_model_is_slashed(
    make_world: Callable[[float], World], rate: float
) -> None:
    world = make_world(rate)
    honest, cheat = world.worker(0), world.worker(1, foreign_start=True)
    job_id = await world.post(workers=2)
    await world.step_until(job_id, Phase.COLLECTING)
    for w in (honest, cheat):
        await w.train(job_id, 0)
    world.clock.advance(1)
    world.market.mine(beacon=closing_value(CANDIDATES, job_id, cheat.worker, rate))
    await world.service.step()
    # The cheat's transcript replays honestly and ends in its update; only its start is wrong.
    assert {c.segment for c in await world.store.challenges() if c.worker == cheat.worker} >= {0}
    for w in (honest, cheat):
        await w.answer_challenges()
    await world.step_until(job_id, Phase.PROPOSED)
    results = world.results(job_id)
    assert results[cheat.worker] == (Outcome.SLASHED, 0, Fault.REJECTED)
    assert results[honest.worker] == (Outcome.ACCEPTED, REWARD, 0)
    reason = (await world.state(job_id)).assignment(cheat.worker).reason
    assert reason.startswith("challenge of segment 0 failed: checkpoint 0 ")
    assert "is not the round's model at step 0" in reason
    assert "the transcript starts from another model: largest difference 0.05" in reason


async def test_a_job_where_cheating_pays_is_not_taken_on(
    make_world: Callable[[float], World], caplog: pytest.LogCaptureFixture
) -> None:
    world = make_world(0.5)
    # S = 2, q = 1, r = 0.5: P = 0.25; slash 5 tokens x 0.25 = 1.25 tokens < 2 ether.
    assert detection_probability(0.5, 2, 1) == 0.25
    job_id = await world.post(workers=1, reward=2 * 10**18)
    with caplog.at_level(logging.ERROR, logger="fedrelay.coordinator.service"):
        await world.service.step()
    assert await world.store.get_round(job_id) is None
    (message,) = [r.getMessage() for r in caplog.records if "not taken on" in r.getMessage()]
    assert "cheating would pay: slash 500000000" in message
    assert "x detection probability 0.25" in message
    assert "= 1.25 tokens is below the reward per round 2000000000000000000" in message


@pytest.mark.parametrize(("segments", "opened"), [(4, 1), (4, 2), (5, 3), (6, 6)])
def test_the_catch_formula_is_the_share_of_subsets_that_hit_a_deviating_segment(
    segments: int, opened: int
) -> None:
    for deviating in range(segments + 1):
        bad = set(range(deviating))
        subsets = list(itertools.combinations(range(segments), opened))
        hit = sum(1 for s in subsets if bad & set(s)) / len(subsets)
        for rate in (0.1, 0.5, 1.0):
            assert math.isclose(
                detection_probability(rate, segments, opened, deviating), rate * hit
            )
    assert math.isclose(detection_probability(0.5, segments, opened), 0.5 * opened / segments)


def test_challenge_segments_is_bounded_by_the_transcript() -> None:
    with pytest.raises(
        ValueError, match="challenge_segments 3 exceeds the transcript's 2 segments"
    ):
        config_at(1.0).model_validate({**config_at(1.0).model_dump(), "challenge_segments": 3})


def test_cheating_pays_compares_whole_tokens_exactly() -> None:
    config = config_at(0.5)  # slash 5 stake tokens x P(m = 1) 0.25 = 1.25 tokens
    assert config.cheating_pays(10**18, 18, SLASH) is None
    assert config.cheating_pays(125 * 10**16, 18, SLASH) is None  # equal: cheating does not pay
    pays = config.cheating_pays(125 * 10**16 + 1, 18, SLASH)
    assert pays is not None
    assert "below the reward per round 1250000000000000001 (base units, 18 decimals" in pays
    assert config.cheating_pays(1_250_000, 6, SLASH) is None  # a 6-decimal token
    assert config.cheating_pays(1_250_001, 6, SLASH) is not None
    unchallenged = config_at(0.0)
    assert unchallenged.cheating_pays(1, 18, SLASH) is not None  # never caught: any reward pays
