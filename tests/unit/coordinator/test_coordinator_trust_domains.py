"""Trust domains of blobs and the limits on jobs, with the real service and API.

The service follows a simulated chain (FakeJobMarket) and shares its store and blob store with
the real HTTP API; workers are SimulatedWorkers and signed API clients. A poster may name any
hash on chain, so these tests post jobs naming a worker's uploads and check that nothing of them
is published or served, and that configurations beyond the operator's limits are refused with
their numbers, while an honest job, uploaded through the poster's path, still runs.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import httpx
import pytest
import torch
from prometheus_client import CollectorRegistry
from support.simulated_worker import SimulatedWorker

from fedrelay.adapters.blobstore import MemoryBlobStore, blob_name
from fedrelay.coordinator.api import create_app
from fedrelay.coordinator.memory_store import MemoryCoordinatorStore
from fedrelay.coordinator.metrics import CoordinatorMetrics
from fedrelay.coordinator.service import CoordinatorService
from fedrelay.coordinator.settings import JobLimits
from fedrelay.coordinator.testing import FakeClock, FakeJobMarket
from fedrelay.coordinator.verification import JobWorkbench
from fedrelay.ports.blobs import POSTER, worker_domain
from fedrelay.protocol.api.signing import EvmSigner
from fedrelay.protocol.job_config import DataSpec, JobConfig, MlpSpec
from fedrelay.protocol.rounds import Phase
from fedrelay.protocol.wormhole import Outcome, keccak256
from fedrelay.training import encode_blob
from fedrelay.training.torch_trainer import mlp
from fedrelay.worker.sdk.api_client import CoordinatorClient, CoordinatorRequestError

TOKEN = "admin-token-0123456789"
ADMIN = {"Authorization": f"Bearer {TOKEN}"}
REWARD = 1_000_000
WINDOW = 30
SERVICE_LOG = "fedrelay.coordinator.service"


def tiny_config(**changes: object) -> JobConfig:
    """A job small enough to train, replay and evaluate in milliseconds."""
    fields: dict[str, object] = {
        "model": MlpSpec(hidden=8),
        "data": DataSpec(shards=3, max_examples_per_shard=40),
        "steps": 4,
        "checkpoint_every": 2,
        "batch_size": 8,
        "challenge_rate": 1.0,
    }
    return JobConfig.model_validate({**fields, **changes})


@dataclass
class World:
    """One coordinator (service and API on one store), the simulated chain and the workers."""

    clock: FakeClock
    market: FakeJobMarket
    store: MemoryCoordinatorStore
    blobs: MemoryBlobStore
    admin: httpx.AsyncClient
    transport: httpx.ASGITransport
    service: CoordinatorService
    clients: list[CoordinatorClient] = field(default_factory=list)

    def worker(self, index: int, config: JobConfig) -> SimulatedWorker:
        signer = EvmSigner(bytes([index + 1]) * 32, chain=4)
        client = CoordinatorClient(
            "http://coordinator", signer, clock=self.clock, transport=self.transport
        )
        self.clients.append(client)
        worker = SimulatedWorker(client, signer.worker, config, self.market.commit)
        self.market.register(worker.worker, stake=10**8)
        return worker

    async def upload(self, data: bytes) -> bytes:
        """Upload through the poster's path (the admin endpoint); the 32-byte name."""
        response = await self.admin.post("/v1/admin/blobs", content=data, headers=ADMIN)
        assert response.status_code == 201, response.text
        return bytes.fromhex(response.json()["name"])

    def post(self, model: bytes, config: bytes, *, workers: int = 1) -> int:
        """Post a one-round job on the chain naming ``model`` and ``config`` (as anyone can)."""
        return self.market.post_job(
            model,
            config,
            num_rounds=1,
            workers_per_round=workers,
            reward_per_round=REWARD,
            rejected_slash=5 * 10**8,
        )

    async def phase(self, job_id: int) -> Phase | None:
        state = await self.store.get_round(job_id)
        return None if state is None else state.phase

    async def step_until(self, job_id: int, wanted: Phase) -> None:
        for _ in range(10):
            await self.service.step()
            if await self.phase(job_id) is wanted:
                return
        raise AssertionError(f"job {job_id} is {await self.phase(job_id)}, wanted {wanted}")


def make_service(
    market: FakeJobMarket,
    store: MemoryCoordinatorStore,
    blobs: MemoryBlobStore,
    clock: FakeClock,
    limits: JobLimits | None = None,
) -> CoordinatorService:
    metrics = CoordinatorMetrics(CollectorRegistry())
    return CoordinatorService(market, store, blobs, clock=clock, metrics=metrics, limits=limits)


@pytest.fixture
async def world() -> AsyncIterator[World]:
    clock = FakeClock()
    market = FakeJobMarket(clock, challenge_window=WINDOW)
    store, blobs = MemoryCoordinatorStore(), MemoryBlobStore()
    app = create_app(store, blobs, admin_token=TOKEN, clock=clock)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://coordinator") as admin:
        world = World(
            clock, market, store, blobs, admin, transport, make_service(market, store, blobs, clock)
        )
        yield world
        for client in world.clients:
            await client.aclose()


async def refused_download(client: CoordinatorClient, name: str) -> int:
    with pytest.raises(CoordinatorRequestError) as refused:
        await client.download_blob(name)
    return refused.value.status_code


# --- trust domains -------------------------------------------------------------------------------


async def test_jobs_naming_worker_uploads_are_refused_and_publish_nothing(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    config = tiny_config()
    honest, cheat = world.worker(0, config), world.worker(1, config)
    model = await world.upload(encode_blob(JobWorkbench(config).initial_model()))
    config_name = await world.upload(config.to_bytes())
    job = world.post(model, config_name, workers=2)
    await world.step_until(job, Phase.COLLECTING)
    assert await world.store.is_published(model.hex())  # published once the job was taken on

    # The honest worker's update is private to it; the cheat stores a valid configuration (for a
    # job with a huge batch) as its "update" through the real upload endpoint and commits it.
    await honest.train(job, 0)
    update = (await world.store.updates(job, 0))[honest.worker]
    forged = tiny_config(batch_size=64).to_bytes()
    forged_name = await world.clients[1].upload_update(job, 0, forged)
    world.market.commit(job, 0, cheat.worker, keccak256(forged), bytes(32), bytes(32), 10, 0)
    assert await world.blobs.domains(update) == {worker_domain(job, 0, honest.worker.key)}
    assert await world.blobs.domains(forged_name) == {worker_domain(job, 0, cheat.worker.key)}

    # Anyone may post a job naming those hashes on chain.
    stolen_model = world.post(bytes.fromhex(update), config_name)
    stolen_both = world.post(bytes.fromhex(update), bytes.fromhex(update))
    forged_config = world.post(model, bytes.fromhex(forged_name))
    world.clock.advance(1)  # the closing block: one after the last commitment
    with caplog.at_level(logging.ERROR, logger=SERVICE_LOG):
        await world.service.step()
    for refused in (stolen_model, stolen_both, forged_config):
        assert await world.store.get_round(refused) is None
    reasons = {r.getMessage() for r in caplog.records if "is not taken on" in r.getMessage()}
    assert reasons == {
        f"job {stolen_model} is not taken on: its model blob {update} is a worker's upload: a "
        "job's model and configuration must come through the poster's upload (POST "
        "/v1/admin/blobs or `fedrelay job post`); nothing published",
        f"job {stolen_both} is not taken on: its configuration blob {update} is a worker's "
        "upload: a job's model and configuration must come through the poster's upload (POST "
        "/v1/admin/blobs or `fedrelay job post`); nothing published",
        f"job {forged_config} is not taken on: its configuration blob {forged_name} is a "
        "worker's upload: a job's model and configuration must come through the poster's "
        "upload (POST /v1/admin/blobs or `fedrelay job post`); nothing published",
    }
    # Nothing was published: no other worker can fetch either upload, as a model or config.
    assert not await world.store.is_published(update)
    assert not await world.store.is_published(forged_name)
    assert await refused_download(world.clients[1], update) == 404
    assert await refused_download(world.clients[0], forged_name) == 404

    # The honest job runs on: the forged "update" is rejected and slashed, the honest one paid.
    await honest.answer_challenges()
    await world.step_until(job, Phase.PROPOSED)
    _, results = world.market.proposals[(job, 0)]
    outcomes = {r.worker.key: r.outcome for r in results}
    assert outcomes == {honest.worker.key: Outcome.ACCEPTED, cheat.worker.key: Outcome.SLASHED}
    world.clock.advance(WINDOW)
    await world.step_until(job, Phase.COMPLETED)


async def test_a_blob_stored_outside_the_posters_path_is_not_a_jobs_config(world: World) -> None:
    config = tiny_config()
    # Stored by the coordinator itself (as its server state is) but never published.
    unpublished = await world.blobs.put(config.to_bytes(), domain="coordinator")
    model = await world.upload(encode_blob(JobWorkbench(config).initial_model()))
    job = world.post(model, bytes.fromhex(unpublished))
    await world.service.step()
    assert await world.store.get_round(job) is None
    assert not await world.store.is_published(unpublished)
    assert not await world.store.is_published(model.hex())  # the refused job published nothing


async def test_a_job_may_start_from_a_model_the_coordinator_published(world: World) -> None:
    config = tiny_config()
    worker = world.worker(0, config)
    model = await world.upload(encode_blob(JobWorkbench(config).initial_model()))
    config_name = await world.upload(config.to_bytes())
    first = world.post(model, config_name)
    await world.step_until(first, Phase.COLLECTING)
    await worker.train(first, 0)
    world.clock.advance(1)  # the closing block: one after the last commitment
    await world.service.step()
    await worker.answer_challenges()
    await world.step_until(first, Phase.PROPOSED)
    state = await world.store.get_round(first)
    assert state is not None
    assert state.proposed_model is not None
    aggregated = state.proposed_model
    assert await world.blobs.domains(aggregated.hex()) >= {"coordinator"}

    following = world.post(aggregated, config_name)
    await world.service.step()
    assert await world.phase(following) is not None


# --- limits --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        (
            {"batch_size": 100_000},
            "batch_size 100000 is above this coordinator's limit 4096 "
            "(FEDRELAY_COORDINATOR_MAX_BATCH_SIZE)",
        ),
        (
            {"model": MlpSpec(inputs=64, hidden=100_000, classes=100)},
            "model parameters 16500100 is above this coordinator's limit 10000000 "
            "(FEDRELAY_COORDINATOR_MAX_MODEL_PARAMETERS)",
        ),
        (
            {"steps": 20_000, "checkpoint_every": 1000},
            "steps 20000 is above this coordinator's limit 10000 (FEDRELAY_COORDINATOR_MAX_STEPS)",
        ),
        (
            {"steps": 2000, "checkpoint_every": 1},
            "checkpoints per transcript 2001 is above this coordinator's limit 1025 "
            "(FEDRELAY_COORDINATOR_MAX_CHECKPOINTS)",
        ),
        (
            {"steps": 5000, "checkpoint_every": 2500},
            "replay steps per segment 2500 is above this coordinator's limit 1000 "
            "(FEDRELAY_COORDINATOR_MAX_REPLAY_STEPS)",
        ),
    ],
)
async def test_a_config_beyond_a_limit_is_refused_with_its_numbers(
    world: World, caplog: pytest.LogCaptureFixture, changes: dict[str, object], reason: str
) -> None:
    config = tiny_config(**changes)
    assert JobLimits().problems(config) == [reason]
    model = await world.upload(encode_blob(JobWorkbench(tiny_config()).initial_model()))
    config_name = await world.upload(config.to_bytes())
    job = world.post(model, config_name)
    with caplog.at_level(logging.ERROR, logger=SERVICE_LOG):
        await world.service.step()
    assert await world.store.get_round(job) is None
    assert f"job {job} is not taken on: {reason}" in caplog.messages
    assert not await world.store.is_published(config_name.hex())
    assert not await world.store.is_published(model.hex())


async def test_limits_come_from_the_environment(
    world: World, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FEDRELAY_COORDINATOR_MAX_BATCH_SIZE", "4")
    service = CoordinatorService(
        world.market,
        world.store,
        world.blobs,
        clock=world.clock,
        metrics=CoordinatorMetrics(CollectorRegistry()),
    )
    model = await world.upload(encode_blob(JobWorkbench(tiny_config()).initial_model()))
    job = world.post(model, await world.upload(tiny_config().to_bytes()))
    with caplog.at_level(logging.ERROR, logger=SERVICE_LOG):
        await service.step()
    assert await world.store.get_round(job) is None
    assert (
        f"job {job} is not taken on: batch_size 8 is above this coordinator's limit 4 "
        "(FEDRELAY_COORDINATOR_MAX_BATCH_SIZE)"
    ) in caplog.messages


def test_several_limits_are_all_named() -> None:
    config = tiny_config(batch_size=9, steps=12, checkpoint_every=3)
    limits = JobLimits(max_batch_size=8, max_steps=10, max_replay_steps=2)
    assert limits.problems(config) == [
        "steps 12 is above this coordinator's limit 10 (FEDRELAY_COORDINATOR_MAX_STEPS)",
        "batch_size 9 is above this coordinator's limit 8 (FEDRELAY_COORDINATOR_MAX_BATCH_SIZE)",
        "replay steps per segment 3 is above this coordinator's limit 2 "
        "(FEDRELAY_COORDINATOR_MAX_REPLAY_STEPS)",
    ]
    assert JobLimits().problems(tiny_config()) == []


@pytest.mark.parametrize(("inputs", "hidden", "classes"), [(64, 8, 10), (3, 5, 2), (64, 64, 10)])
def test_parameter_count_is_the_built_models(inputs: int, hidden: int, classes: int) -> None:
    spec = MlpSpec(inputs=inputs, hidden=hidden, classes=classes)
    built = mlp(inputs, hidden, classes)
    assert spec.parameter_count() == sum(p.numel() for p in built.parameters())
    assert isinstance(built, torch.nn.Module)


async def test_the_posters_upload_is_not_served_until_a_job_names_it(world: World) -> None:
    config = tiny_config()
    worker = world.worker(0, config)
    await world.service.step()  # the registration is followed: the worker may download
    name = (await world.upload(config.to_bytes())).hex()
    assert await world.blobs.domains(name) == {POSTER}
    assert await refused_download(world.clients[0], name) == 404
    model = await world.upload(encode_blob(JobWorkbench(config).initial_model()))
    job = world.post(model, bytes.fromhex(name))
    await world.step_until(job, Phase.COLLECTING)
    assert await world.clients[0].download_blob(name) == config.to_bytes()
    assert blob_name(await world.clients[0].download_blob(model.hex())) == model.hex()
    assert worker.worker in {a.worker for a in (await world.store.get_round(job)).assignments}  # type: ignore[union-attr]
