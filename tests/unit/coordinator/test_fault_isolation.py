"""Fault isolation: one worker's malformed bytes are its rejection, and one job's failure stops
nothing else.

The real service and HTTP API on FakeJobMarket (the chain port's fake), with the in-memory store
and the SQLite ledger; workers are SimulatedWorkers that send malformed bytes on request. A
malformed worker is rejected with the reason and slashed, saved before the next step, so a
coordinator restarted on the same store never reads or replays its bytes again; the other job's
round settles all the while. A job whose step raises is logged with its job and round, counted
and backed off, and the service's loop keeps running.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx
import numpy as np
import pytest
from prometheus_client import CollectorRegistry
from support.simulated_worker import Malformation, SimulatedWorker

from fedrelay.adapters.blobstore import MemoryBlobStore
from fedrelay.coordinator.aggregation import ParameterLayout
from fedrelay.coordinator.api import create_app
from fedrelay.coordinator.metrics import CoordinatorMetrics, coordinator_metrics
from fedrelay.coordinator.phases import aggregate as aggregate_phase
from fedrelay.coordinator.phases.aggregate import RoundAggregation
from fedrelay.coordinator.service import CoordinatorService
from fedrelay.coordinator.testing import FakeClock, FakeJobMarket
from fedrelay.coordinator.verification import JobWorkbench, UpdateRejection, read_update
from fedrelay.ports.blobs import POSTER
from fedrelay.ports.coordinator_store import CoordinatorStore
from fedrelay.protocol.api.signing import EvmSigner
from fedrelay.protocol.job_config import DataSpec, JobConfig, MlpSpec
from fedrelay.protocol.logfields import bound_log_fields
from fedrelay.protocol.rounds import Fault, Phase, RoundState, TaskStatus, WorkerRef
from fedrelay.protocol.wormhole import Outcome, keccak256
from fedrelay.training import encode_blob
from fedrelay.worker.sdk.api_client import CoordinatorClient

TOKEN = "admin-token-0123456789"
REWARD = 1_000_000
SLASH = 5 * 10**8
WINDOW = 30


def tiny_config() -> JobConfig:
    """A job that trains, replays and evaluates in milliseconds; every task is challenged."""
    return JobConfig.model_validate(
        {
            "model": MlpSpec(hidden=8),
            "data": DataSpec(shards=3, partition="iid", max_examples_per_shard=40),
            "optimizer": {"name": "sgd", "momentum": 0.5},  # checkpoints carry optimizer state
            "steps": 4,
            "checkpoint_every": 2,
            "batch_size": 8,
            "challenge_rate": 1.0,
            "collect_seconds": 120,
            "answer_seconds": 60,
        }
    )


@dataclass
class World:
    """The service, its store, the simulated chain and the workers' clients of one test."""

    clock: FakeClock
    market: FakeJobMarket
    store: CoordinatorStore
    blobs: MemoryBlobStore
    transport: httpx.ASGITransport
    config: JobConfig
    registry: CollectorRegistry
    service: CoordinatorService
    clients: list[CoordinatorClient] = field(default_factory=list)

    def new_service(self) -> CoordinatorService:
        """A fresh coordinator process on the same store, blobs and chain (a restart)."""
        return CoordinatorService(
            self.market,
            self.store,
            self.blobs,
            clock=self.clock,
            metrics=CoordinatorMetrics(CollectorRegistry()),
        )

    def worker(self, index: int, malformed: Malformation | None = None) -> SimulatedWorker:
        """Worker ``index`` (the same key for the same index, whatever its behaviour)."""
        signer = EvmSigner(bytes([index + 1]) * 32, chain=4)
        client = CoordinatorClient(
            "http://coordinator", signer, clock=self.clock, transport=self.transport
        )
        self.clients.append(client)
        return SimulatedWorker(
            client, signer.worker, self.config, self.market.commit, malformed=malformed
        )

    async def post(self, workers: int) -> int:
        model = await self.blobs.put(
            encode_blob(JobWorkbench(self.config).initial_model()), domain=POSTER
        )
        config = await self.blobs.put(self.config.to_bytes(), domain=POSTER)
        return self.market.post_job(
            bytes.fromhex(model),
            bytes.fromhex(config),
            num_rounds=1,
            workers_per_round=workers,
            reward_per_round=REWARD,
            rejected_slash=SLASH,
        )

    async def phase(self, job_id: int) -> Phase:
        state = await self.store.get_round(job_id)
        assert state is not None
        return state.phase

    async def assigned(self, job_id: int) -> set[WorkerRef]:
        state = await self.store.get_round(job_id)
        assert state is not None
        return {a.worker for a in state.assignments}

    async def step_until(
        self, wanted: Mapping[int, Phase], service: CoordinatorService | None = None
    ) -> None:
        """Step until every job is in its wanted phase; fail after a bounded number of steps."""
        runner = service or self.service
        for _ in range(10):
            await runner.step()
            if all([await self.phase(j) is p for j, p in wanted.items()]):
                return
        now = {j: await self.phase(j) for j in wanted}
        raise AssertionError(f"jobs stuck in {now}, wanted {dict(wanted)}")

    def outcome(self, job_id: int, worker: WorkerRef) -> tuple[Outcome, int, int]:
        _, results = self.market.proposals[(job_id, 0)]
        return next((r.outcome, r.reward, r.fault) for r in results if r.worker == worker)


@pytest.fixture
async def world(store: CoordinatorStore) -> AsyncIterator[World]:
    clock = FakeClock()
    market = FakeJobMarket(clock, challenge_window=WINDOW)
    blobs = MemoryBlobStore()
    app = create_app(store, blobs, admin_token=TOKEN, clock=clock)
    transport = httpx.ASGITransport(app=app)
    registry = CollectorRegistry()
    service = CoordinatorService(
        market, store, blobs, clock=clock, metrics=coordinator_metrics(registry)
    )
    w = World(clock, market, store, blobs, transport, tiny_config(), registry, service)
    yield w
    for client in w.clients:
        await client.aclose()


@dataclass
class Spy:
    """Which workers' update bytes were read and which workers' answers were replayed."""

    read: list[bytes] = field(default_factory=list)
    replayed: list[WorkerRef] = field(default_factory=list)

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        real_open = aggregate_phase.open_update
        real_replay = JobWorkbench.replay

        async def read(blobs: Any, name: str | None, *args: Any, **kwargs: Any) -> Any:
            if name is not None:
                self.read.append(bytes.fromhex(name))
            return await real_open(blobs, name, *args, **kwargs)

        def replay(bench: JobWorkbench, *args: Any, **kwargs: Any) -> Any:
            self.replayed.append(args[2].worker)
            return real_replay(bench, *args, **kwargs)

        monkeypatch.setattr(aggregate_phase, "open_update", read)
        monkeypatch.setattr(JobWorkbench, "replay", replay)


REASONS: dict[Malformation, str] = {
    "optimizer-shape": (
        r"^challenge of segment \d failed: start checkpoint optimizer state "
        r"'optim/0\.weight/momentum' "
        r"has shape \(64, 8\), the trainer's \(8, 64\)$"
    ),
    "nan-update": r"^update tensor '0\.bias' holds NaN or infinite values$",
    "float64-update": r"^update tensor '0\.bias' is float64, the model's float32$",
    "truncated-update": (
        r"^the update is not a tensor blob: the header describes \d+ bytes, the blob has \d+$"
    ),
}


@pytest.mark.parametrize("malformation", list(REASONS))
async def test_malformed_bytes_are_the_workers_rejection_and_nothing_else_stops(
    world: World, monkeypatch: pytest.MonkeyPatch, malformation: Malformation
) -> None:
    honest, bad = world.worker(0), world.worker(1, malformation)
    for w in (honest, bad):
        world.market.register(w.worker, stake=10**8)
    job = await world.post(workers=2)  # the malformed worker's job comes first in every step
    other = await world.post(workers=1)
    await world.step_until({job: Phase.COLLECTING, other: Phase.COLLECTING})
    # The other job's worker behaves, whichever of the two keys was drawn for it.
    (drawn,) = await world.assigned(other)
    other_worker = world.worker(0 if drawn == honest.worker else 1)
    await other_worker.train(other, 0)
    await honest.train(job, 0)
    await bad.train(job, 0)

    world.clock.advance(1)  # the closing block: one after the last commitment
    await world.service.step()  # commitments followed; updates read; every task challenged
    assert await world.phase(job) is Phase.AGGREGATING
    await other_worker.answer_challenges(other)
    if malformation == "optimizer-shape":
        # Its update is its final checkpoint's model: the transcript's replay finds it out.
        assert await bad.answer_challenges(job) > 0
    await world.service.step()  # the malformed worker is rejected; the other job is proposed
    assert await world.phase(job) is Phase.AGGREGATING  # the honest answer is awaited
    assert await world.phase(other) is Phase.PROPOSED
    state = await world.store.get_round(job)
    assert state is not None
    rejected = state.assignment(bad.worker)
    assert rejected.status is TaskStatus.SLASHED
    assert rejected.slash == SLASH
    saved_reason = rejected.reason
    assert saved_reason
    assert re.search(REASONS[malformation], saved_reason), saved_reason

    # A restarted coordinator finds the rejection saved and never touches those bytes again.
    spy = Spy()
    spy.install(monkeypatch)
    restarted = world.new_service()
    world.clock.advance(WINDOW)
    await honest.answer_challenges(job)
    await world.step_until({job: Phase.PROPOSED, other: Phase.COMPLETED}, restarted)
    assert world.market.settled == [(other, 0)]  # the other job's round settled meanwhile
    bad_commitment = rejected.commitment
    assert bad_commitment is not None
    assert bad_commitment.update_hash not in spy.read
    assert bad.worker not in spy.replayed
    assert honest.worker in spy.replayed  # the restart did replay what was still due
    assert world.outcome(job, bad.worker) == (Outcome.SLASHED, 0, Fault.REJECTED)
    assert world.outcome(job, honest.worker) == (Outcome.ACCEPTED, REWARD, 0)
    final = await world.store.get_round(job)
    assert final is not None
    assert final.assignment(bad.worker).reason == saved_reason  # one verdict, not two


async def test_a_failing_job_step_is_logged_counted_and_backed_off_while_others_settle(
    world: World, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    workers = [world.worker(0), world.worker(1)]
    for w in workers:
        world.market.register(w.worker, stake=10**8)
    failing = await world.post(workers=1)
    healthy = await world.post(workers=1)
    await world.step_until({failing: Phase.COLLECTING, healthy: Phase.COLLECTING})
    for job in (failing, healthy):
        (drawn,) = await world.assigned(job)
        await next(w for w in workers if w.worker == drawn).train(job, 0)
    world.clock.advance(1)  # the closing block: one after the last commitment
    await world.service.step()
    for w in workers:
        await w.answer_challenges()

    # The coordinator's own aggregation breaks for one job's round (a fault of the coordinator,
    # not of a worker's bytes): that job's step raises on every try.
    attempts: list[int] = []
    real_work = RoundAggregation.work

    async def work(aggregation: RoundAggregation, state: RoundState, *args: Any) -> Any:
        if state.job_id == failing:
            attempts.append(failing)
            raise RuntimeError("aggregation broke")
        return await real_work(aggregation, state, *args)

    monkeypatch.setattr(RoundAggregation, "work", work)
    fields: list[Mapping[str, str | int]] = []

    class Fields(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if "step failed" in record.getMessage():
                fields.append(dict(bound_log_fields()))

    handler = Fields()
    logging.getLogger("fedrelay.coordinator.service").addHandler(handler)
    try:
        await world.service.step()
    finally:
        logging.getLogger("fedrelay.coordinator.service").removeHandler(handler)
    assert attempts == [failing]
    assert await world.phase(failing) is Phase.AGGREGATING
    assert await world.phase(healthy) is Phase.PROPOSED
    assert fields == [{"job_id": failing, "round": 0}]
    assert "aggregation broke" in caplog.text

    def failures() -> float | None:
        return world.registry.get_sample_value(
            "fedrelay_coordinator_job_step_failures_total",
            {"job_id": str(failing), "error": "RuntimeError"},
        )

    assert failures() == 1
    # Backed off: the next steps leave the failing job alone until its wait is over.
    await world.service.step()
    await world.service.step()
    assert attempts == [failing]
    world.clock.advance(1)  # the first wait: one poll interval
    await world.service.step()
    assert attempts == [failing, failing]
    assert failures() == 2
    world.clock.advance(1)  # the wait doubled to 2 s
    await world.service.step()
    assert attempts == [failing, failing]
    # Meanwhile the other job settles and completes.
    world.clock.advance(WINDOW)
    await world.step_until({healthy: Phase.COMPLETED})
    assert (healthy, 0) in world.market.settled
    # Once the fault is gone, the job's next try succeeds and its backoff is forgotten.
    monkeypatch.setattr(RoundAggregation, "work", real_work)
    world.clock.advance(60)
    await world.service.step()
    assert await world.phase(failing) is Phase.PROPOSED


async def test_the_run_loop_survives_a_job_that_always_fails(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    workers = [world.worker(0), world.worker(1)]
    for w in workers:
        world.market.register(w.worker, stake=10**8)
    failing = await world.post(workers=1)
    healthy = await world.post(workers=1)
    world.service = CoordinatorService(
        world.market,
        world.store,
        world.blobs,
        clock=world.clock,
        metrics=coordinator_metrics(world.registry),
        poll_interval=0.001,
    )
    real_advance = CoordinatorService._advance

    async def advance(service: CoordinatorService, job_id: int, state: Any) -> Any:
        if job_id == failing:
            raise KeyError("a bug in the coordinator")
        return await real_advance(service, job_id, state)

    monkeypatch.setattr(CoordinatorService, "_advance", advance)
    stop = asyncio.Event()
    running = asyncio.create_task(world.service.run(stop))
    try:
        await wait_for(lambda: world.market.assign_calls != [], running)
        (drawn,) = await world.assigned(healthy)
        worker = next(w for w in workers if w.worker == drawn)
        await worker.train(healthy, 0)
        world.clock.advance(1)  # the closing block: one after the last commitment
        await wait_for(lambda: bool(world.market.proposals), running, worker)
        world.clock.advance(WINDOW)
        await wait_for(lambda: (healthy, 0) in world.market.settled, running)
    finally:
        stop.set()
        await asyncio.wait_for(running, 10)
    assert await world.store.get_round(failing) is not None  # followed, never advanced
    assert (await world.phase(failing)) is Phase.POSTED
    failed = world.registry.get_sample_value(
        "fedrelay_coordinator_job_step_failures_total",
        {"job_id": str(failing), "error": "KeyError"},
    )
    assert failed is not None
    assert failed >= 1


async def wait_for(
    condition: Callable[[], bool],
    running: asyncio.Task[None],
    answering: SimulatedWorker | None = None,
) -> None:
    """Let the running loop work until ``condition`` holds (a worker may answer meanwhile)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 30.0
    while not condition():
        assert not running.done(), "the service loop stopped"
        assert loop.time() < deadline, "condition not met in time"
        if answering is not None:
            await answering.answer_challenges()
        await asyncio.sleep(0)


async def test_an_event_that_fails_is_passed_over_and_counted(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    first, second = world.worker(0), world.worker(1)
    real_register = world.store.register_worker

    async def register(worker: WorkerRef) -> None:
        if worker == first.worker:
            raise ValueError("a registration the store cannot take")
        await real_register(worker)

    monkeypatch.setattr(world.store, "register_worker", register)
    for w in (first, second):
        world.market.register(w.worker, stake=10**8)
    await world.service.step()
    assert set(await world.store.workers()) == {second.worker}
    assert await world.store.cursor("coordinator:job-market") == world.market.blocks[-1].number
    assert (
        world.registry.get_sample_value(
            "fedrelay_coordinator_event_failures_total",
            {"event": "WorkerJoined", "error": "ValueError"},
        )
        == 1
    )


# --- the checks on their own ---------------------------------------------------------------------


def model_and_layout() -> tuple[dict[str, np.ndarray], ParameterLayout]:
    model = JobWorkbench(tiny_config()).initial_model()
    return model, ParameterLayout.of(model)


@pytest.mark.parametrize(
    ("change", "why"),
    [
        (lambda m: {**m, "0.bias": np.full_like(m["0.bias"], np.inf)}, "NaN or infinite"),
        (lambda m: {k: v.astype(np.float16) for k, v in m.items()}, "is float16, the model's"),
        (lambda m: {**m, "extra": np.zeros(1, np.float32)}, r"unexpected \['extra'\]"),
        (lambda m: {k: v for k, v in m.items() if k != "2.bias"}, r"missing \['2.bias'\]"),
        (lambda m: {**m, "2.bias": np.zeros(3, np.float32)}, r"has shape \(3,\), the model's"),
        (
            lambda m: {k: np.full_like(v, np.finfo(np.float32).max) for k, v in m.items()},
            "overflows float32",
        ),
    ],
)
def test_read_update_refuses_what_does_not_fit_the_model(
    change: Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]], why: str
) -> None:
    model, layout = model_and_layout()
    base = layout.flatten(model)
    if "overflow" in why:  # a model at float32's lowest: the largest update is out of reach
        base = np.full(layout.size, np.finfo(np.float32).min, dtype=np.float32)
    blob = encode_blob(change(model))
    with pytest.raises(UpdateRejection, match=why):
        read_update(blob, keccak256(blob), layout, base)
    read_update(encode_blob(model), keccak256(encode_blob(model)), layout, layout.flatten(model))
