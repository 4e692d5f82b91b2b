"""The committed update must be the model of the committed transcript's final checkpoint.

A worker may train and build its transcript honestly, so every replay passes, and still upload
and commit another update. The answer on the last segment opens the final checkpoint ``c_K``;
:func:`fedrelay.coordinator.verification.check_final_checkpoint` ties the update to it. Tested on a
real
training run, through the round's challenge sample, and end to end: the real coordinator
service (on FakeJobMarket) against the worker SDK's :class:`TamperedUpdateWorker`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
import pytest
from support.simulated_worker import SimulatedWorker

from fedrelay.adapters.blobstore import MemoryBlobStore
from fedrelay.coordinator.api import create_app
from fedrelay.coordinator.memory_store import MemoryCoordinatorStore
from fedrelay.coordinator.service import CoordinatorService
from fedrelay.coordinator.testing import FakeClock, FakeJobMarket
from fedrelay.coordinator.verification import (
    JobWorkbench,
    UpdateRejection,
    challenge_sample,
    check_final_checkpoint,
)
from fedrelay.demo.actors import TamperedUpdateWorker
from fedrelay.ports.blobs import POSTER
from fedrelay.protocol.api.signing import EvmSigner
from fedrelay.protocol.job_config import DataSpec, JobConfig, MlpSpec
from fedrelay.protocol.merkle import decode_proof, encode_proof
from fedrelay.protocol.rounds import Assignment, Commitment, Fault, Phase, TaskStatus, WorkerRef
from fedrelay.protocol.training_config import TrainingError
from fedrelay.protocol.wormhole import Outcome, keccak256
from fedrelay.training import (
    MerkleProof,
    ModelTensors,
    TrainingConfig,
    TrainingRun,
    Transcript,
    blob_hash,
    decode_blob,
    encode_blob,
    merkle_proof,
    merkle_root,
    model_of,
    train_with_transcript,
)
from fedrelay.training.models import ModelFactory
from fedrelay.training.torch_trainer import TorchClassificationTrainer, mlp
from fedrelay.worker.sdk import (
    AssignedTask,
    ChainPoll,
    CommitmentOffer,
    CommitReceipt,
    DigitsShards,
    OfferRecording,
    StakeStatus,
    StateStore,
    TaskKey,
    UpdateCommitment,
    WorkerNode,
)
from fedrelay.worker.sdk.api_client import CoordinatorClient
from fedrelay.worker.sdk.progress import SilentProgress

TOKEN = "admin-token-0123456789"
REWARD = 1_000_000
SLASH = 5 * 10**8
CHAIN = 4
HIDDEN = 8


def job_config(**changes: object) -> JobConfig:
    """A job that trains, replays and evaluates in milliseconds; every task is challenged."""
    fields: dict[str, object] = {
        "model": MlpSpec(hidden=HIDDEN),
        "data": DataSpec(shards=3, partition="iid", max_examples_per_shard=40),
        "steps": 4,
        "checkpoint_every": 2,
        "batch_size": 8,
        "challenge_rate": 1.0,
        "collect_seconds": 120,
        "answer_seconds": 60,
    }
    return JobConfig.model_validate({**fields, **changes})


def run_of(training: TrainingConfig) -> TrainingRun:
    """An honest training run with its transcript, on shard 0 of :func:`job_config`."""
    workbench = JobWorkbench(job_config())
    trainer = TorchClassificationTrainer(lambda: mlp(64, HIDDEN, 10), workbench.shard(0))
    return train_with_transcript(trainer, workbench.initial_model(), training)


@dataclass(frozen=True)
class Opened:
    """A finished run as the coordinator sees it: update, transcript and its checkpoints."""

    update: bytes
    transcript: Transcript
    blobs: tuple[bytes, ...]
    config: TrainingConfig

    @property
    def final(self) -> int:
        return len(self.blobs) - 1

    def check(self, update: bytes, blob: bytes, proof: MerkleProof) -> None:
        check_final_checkpoint(update, blob, proof, self.transcript.root, self.config)


@pytest.fixture(scope="module")
def honest() -> Opened:
    config = job_config().training_config()
    run = run_of(config)
    return Opened(encode_blob(model_of(run.final)), run.transcript, run.blobs, config)


def scaled(update: bytes, factor: float) -> bytes:
    """The update's tensors times ``factor`` (what :class:`TamperedUpdateWorker` uploads)."""
    tensors = decode_blob(update)
    return encode_blob(
        {k: np.asarray(v, dtype=np.float32) * np.float32(factor) for k, v in tensors.items()}
    )


# --- the check itself ----------------------------------------------------------------------------


def test_an_honest_update_is_the_model_of_the_final_checkpoint(honest: Opened) -> None:
    k = honest.final
    honest.check(honest.update, honest.blobs[k], honest.transcript.proof(k))


def test_an_update_other_than_the_final_model_is_rejected_with_the_difference(
    honest: Opened,
) -> None:
    k = honest.final
    tampered = scaled(honest.update, TamperedUpdateWorker.UPDATE_FACTOR)
    with pytest.raises(UpdateRejection) as caught:
        honest.check(tampered, honest.blobs[k], honest.transcript.proof(k))
    reason = str(caught.value)
    assert f"the committed update {keccak256(tampered).hex()}" in reason
    assert "is not the model of the transcript's final checkpoint (step 4)" in reason
    assert f"whose model is {keccak256(honest.update).hex()}" in reason
    assert "largest difference" in reason


def test_an_update_of_other_dtype_or_names_is_rejected_and_the_reason_says_so(
    honest: Opened,
) -> None:
    k, proof = honest.final, honest.transcript.proof(honest.final)
    tensors = decode_blob(honest.update)
    as_f64 = encode_blob({n: np.asarray(v, dtype=np.float64) for n, v in tensors.items()})
    with pytest.raises(UpdateRejection, match=r"is float64 .* the checkpoint's float32"):
        honest.check(as_f64, honest.blobs[k], proof)
    renamed = encode_blob({f"x.{n}": v for n, v in tensors.items()})
    with pytest.raises(UpdateRejection, match="their tensor names differ"):
        honest.check(renamed, honest.blobs[k], proof)
    with pytest.raises(UpdateRejection, match="the update is not a tensor blob"):
        honest.check(b"not a blob", honest.blobs[k], proof)


def test_a_forged_proof_is_rejected(honest: Opened) -> None:
    k = honest.final
    proof = honest.transcript.proof(k)
    forged = MerkleProof(k, proof.leaf_count, (bytes(32), *proof.siblings[1:]))
    with pytest.raises(UpdateRejection, match="not in the committed transcript"):
        honest.check(honest.update, honest.blobs[k], forged)


def test_a_checkpoint_other_than_the_last_is_rejected(honest: Opened) -> None:
    k = honest.final
    earlier = honest.blobs[k - 1]
    with pytest.raises(UpdateRejection, match=f"leaf {k - 1} of {k + 1}, the final checkpoint"):
        honest.check(honest.update, earlier, honest.transcript.proof(k - 1))
    # The earlier checkpoint presented as leaf K fails its proof.
    with pytest.raises(UpdateRejection, match="not in the committed transcript"):
        honest.check(honest.update, earlier, honest.transcript.proof(k))
    # A proof into a longer tree is not the final leaf of this task's transcript either.
    longer = merkle_proof([*honest.transcript.leaves, bytes(32)], k)
    with pytest.raises(UpdateRejection, match=f"leaf {k} of {k + 2}"):
        honest.check(honest.update, honest.blobs[k], longer)


def test_a_final_checkpoint_at_the_wrong_step_is_rejected(honest: Opened) -> None:
    # Six steps in checkpoints of three: as many leaves as the job's 4 steps in twos.
    longer = run_of(TrainingConfig(seed=0, steps=6, checkpoint_every=3, batch_size=8))
    assert len(longer.blobs) == len(honest.blobs)
    k = honest.final
    with pytest.raises(UpdateRejection, match="at step 6, the task trains 4 steps"):
        check_final_checkpoint(
            encode_blob(model_of(longer.final)),
            longer.blobs[k],
            longer.transcript.proof(k),
            longer.transcript.root,
            honest.config,
        )


@pytest.mark.parametrize(
    ("final_blob", "why"),
    [
        (b"\x00\x01 garbage", "not a safetensors blob"),
        (encode_blob({"model/w": np.zeros(2, dtype=np.float32)}), "no step counter"),
    ],
)
def test_a_malformed_final_checkpoint_is_rejected(
    honest: Opened, final_blob: bytes, why: str
) -> None:
    # The malformed blob is committed (its hash is the last leaf), so only its bytes are wrong.
    leaves = [*honest.transcript.leaves[:-1], blob_hash(final_blob)]
    k = honest.final
    with pytest.raises(UpdateRejection, match=f"final checkpoint blob is malformed: .*{why}"):
        check_final_checkpoint(
            honest.update, final_blob, merkle_proof(leaves, k), merkle_root(leaves), honest.config
        )


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (b"\x00\x00", "needs at least 9 bytes, got 2"),
        (
            b"\x00\x00\x00\x02\x00\x00\x00\x03\x02" + bytes(40),
            "64 bytes .* got 40",
        ),
    ],
)
def test_malformed_proof_bytes_are_a_clear_rejection(data: bytes, why: str) -> None:
    with pytest.raises(TrainingError, match=why):
        decode_proof(data)


# --- the challenge sample -------------------------------------------------------------------


def committed(index: int) -> Assignment:
    worker = WorkerRef(CHAIN, bytes([index + 1]) * 32)
    commitment = Commitment(worker, bytes(32), bytes(32), bytes(32), 1, 0)
    return Assignment(worker, index, TaskStatus.COMMITTED, commitment)


def test_every_challenged_task_opens_q_segments_and_both_ends() -> None:
    tasks = [committed(i) for i in range(12)]
    seed = keccak256(b"round seed")
    for segments, opened in ((3, 1), (5, 2), (5, 5), (1, 1)):
        draws = challenge_sample(seed, tasks, 1.0, segments, opened)
        for task in tasks:
            mine = [d for d in draws if d.assignment == task]
            replayed = [d.segment for d in mine if d.replay]
            assert len(set(replayed)) == len(replayed) == opened  # q distinct, replayed
            # Checkpoint 0 (start of segment 0) and c_K (end of the last) are always opened,
            # and a segment asked for only to open them is not replayed.
            assert {0, segments - 1} <= {d.segment for d in mine}
            extra = [d.segment for d in mine if not d.replay]
            assert set(extra) == {0, segments - 1} - set(replayed)
        assert challenge_sample(seed, tasks, 1.0, segments, opened) == draws  # reproducible
    assert challenge_sample(seed, tasks, 0.0, 3) == []
    # The replayed segments vary over tasks: not always the ends.
    assert {d.segment for d in challenge_sample(seed, tasks, 1.0, 5) if d.replay} - {0, 4}


# --- end to end: the coordinator service against the worker SDK -----------------------------


@dataclass
class MarketChain:
    """One worker's chain, read from and written to FakeJobMarket (one round per job)."""

    market: FakeJobMarket
    signer: EvmSigner
    staked: int = 0

    @property
    def wormhole_chain(self) -> int:
        return CHAIN

    @property
    def worker_key(self) -> bytes:
        return self.signer.worker.key

    @property
    def worker(self) -> WorkerRef:
        return self.signer.worker

    async def stake_status(self) -> StakeStatus:
        return StakeStatus(self.staked, self.staked > 0, 0)

    async def stake_and_register(self, stake: int, payout: bytes, capabilities: int) -> None:
        self.staked = stake
        self.market.register(self.worker, stake)

    async def poll(self, cursor: int) -> ChainPoll:
        assigned = []
        for job_id, _, deadline, tasks in self.market.assign_calls:
            for task in tasks:
                if task.worker_key == self.worker_key:
                    key = TaskKey(job_id, 0)
                    task_id = keccak256(b"task" + self.worker_key)
                    assigned.append(AssignedTask(key, task_id, task.shard, deadline))
        return ChainPoll(tuple(assigned[cursor:]), (), len(assigned))

    async def is_committed(self, key: TaskKey) -> bool:
        found = await self.market.commitment(key.job_id, key.round, self.worker)
        return found.committed

    async def commit(self, commitment: UpdateCommitment) -> CommitReceipt:
        key = commitment.key
        self.market.commit(
            key.job_id,
            key.round,
            self.worker,
            commitment.update_hash,
            commitment.transcript_root,
            commitment.data_root,
            commitment.num_samples,
            commitment.train_loss,
        )
        return CommitReceipt(f"tx-{self.worker_key.hex()[:8]}")

    async def sign_commitment(self, commitment: UpdateCommitment) -> None:
        return None  # this fake records only the worker's own commitments

    async def record_offers(
        self, key: TaskKey, offers: Sequence[CommitmentOffer]
    ) -> OfferRecording:
        raise AssertionError("not used")

    async def commitment_published(self, key: TaskKey) -> bool:
        return True  # a commitment reaches the market as it is made

    async def publish_commitments(self, key: TaskKey) -> int:
        return 0

    async def begin_unstake(self, amount: int) -> None:
        self.staked -= amount

    async def withdraw_stake(self) -> None:
        self.staked = 0

    async def release_expired_task(self, key: TaskKey) -> None:
        raise AssertionError("not used")


@dataclass
class World:
    clock: FakeClock
    market: FakeJobMarket
    store: MemoryCoordinatorStore
    blobs: MemoryBlobStore
    transport: httpx.ASGITransport
    config: JobConfig
    service: CoordinatorService
    tmp: Path
    clients: list[CoordinatorClient] = field(default_factory=list)

    def client(self, signer: EvmSigner) -> CoordinatorClient:
        client = CoordinatorClient(
            "http://coordinator", signer, clock=self.clock, transport=self.transport
        )
        self.clients.append(client)
        return client

    def node(self, index: int, kind: type[WorkerNode]) -> WorkerNode:
        signer = EvmSigner(bytes([0x40 + index]) * 32, chain=CHAIN)
        data = self.config.data
        return kind(
            MarketChain(self.market, signer),
            self.client(signer),
            DigitsShards(data.shards, seed=data.seed, limit=data.max_examples_per_shard),
            StateStore(self.tmp / f"worker{index}.json"),
            progress=SilentProgress(),
            clock=self.clock,
            poll_interval=0.01,
        )

    async def post(self, workers: int, initial: ModelTensors | None = None) -> int:
        initial = initial or JobWorkbench(self.config).initial_model()
        model = await self.blobs.put(encode_blob(initial), domain=POSTER)
        config = await self.blobs.put(self.config.to_bytes(), domain=POSTER)
        return self.market.post_job(
            bytes.fromhex(model),
            bytes.fromhex(config),
            num_rounds=1,
            workers_per_round=workers,
            reward_per_round=REWARD,
            rejected_slash=SLASH,
        )

    async def step_until(self, job_id: int, wanted: Phase) -> None:
        for _ in range(10):
            await self.service.step()
            state = await self.store.get_round(job_id)
            assert state is not None
            if state.phase is wanted:
                return
        raise AssertionError(f"job {job_id} stuck in {state.phase}, wanted {wanted}")

    def results(self, job_id: int) -> dict[WorkerRef, tuple[Outcome, int, int]]:
        _, results = self.market.proposals[(job_id, 0)]
        return {r.worker: (r.outcome, r.reward, r.fault) for r in results}


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    clock = FakeClock()
    market = FakeJobMarket(clock, challenge_window=30)
    store = MemoryCoordinatorStore()
    blobs = MemoryBlobStore()
    transport = httpx.ASGITransport(app=create_app(store, blobs, admin_token=TOKEN, clock=clock))
    service = CoordinatorService(market, store, blobs, clock=clock)
    w = World(clock, market, store, blobs, transport, job_config(), service, tmp_path)
    yield w
    for client in w.clients:
        await client.aclose()


async def test_a_worker_committing_an_update_its_transcript_does_not_end_in_is_slashed(
    world: World,
) -> None:
    honest, cheat = world.node(0, WorkerNode), world.node(1, TamperedUpdateWorker)
    for node in (honest, cheat):
        await node.register(stake=10**8, payout=bytes(32))
    job_id = await world.post(workers=2)
    await world.step_until(job_id, Phase.COLLECTING)
    for node in (honest, cheat):
        assert len((await node.step()).committed) == 1
    world.clock.advance(1)  # the closing block: one after the last commitment
    await world.service.step()  # commitments followed, every task challenged
    for node in (honest, cheat):
        assert (await node.step()).answered  # both answer: their transcripts are honest
    await world.step_until(job_id, Phase.PROPOSED)

    results = world.results(job_id)
    cheat_ref, honest_ref = (WorkerRef(CHAIN, n.chain.worker_key) for n in (cheat, honest))
    assert results[cheat_ref] == (Outcome.SLASHED, 0, Fault.REJECTED)
    assert results[honest_ref] == (Outcome.ACCEPTED, REWARD, 0)
    state = await world.store.get_round(job_id)
    assert state is not None
    reason = state.assignment(cheat_ref).reason
    last = world.config.training_config().segments - 1
    assert reason.startswith(f"challenge of segment {last} failed: the committed update ")
    assert "is not the model of the transcript's final checkpoint" in reason


async def test_malformed_answer_bytes_slash_with_the_reason(world: World) -> None:
    signer = EvmSigner(bytes([0x51]) * 32, chain=CHAIN)
    worker = SimulatedWorker(world.client(signer), signer.worker, world.config, world.market.commit)
    world.market.register(worker.worker, stake=10**8)
    job_id = await world.post(workers=1)
    await world.step_until(job_id, Phase.COLLECTING)
    await worker.train(job_id, 0)
    world.clock.advance(1)  # the closing block: one after the last commitment
    await world.service.step()
    _, blobs = worker.runs[(job_id, 0)]
    leaves = [blob_hash(b) for b in blobs]
    for challenge in await worker.client.open_challenges():
        await worker.client.answer_challenge(
            challenge.challenge_id,
            start_checkpoint=blobs[challenge.segment],
            end_checkpoint=blobs[challenge.segment + 1],
            start_proof=b"\x00\x01",  # truncated: not a proof
            end_proof=encode_proof(merkle_proof(leaves, challenge.segment + 1)),
        )
    await world.step_until(job_id, Phase.PROPOSED)
    assert world.results(job_id)[worker.worker] == (Outcome.SLASHED, 0, Fault.REJECTED)
    state = await world.store.get_round(job_id)
    assert state is not None
    assert "a Merkle proof needs at least 9 bytes, got 2" in state.assignment(worker.worker).reason


RECIPES: dict[str, dict[str, object]] = {
    "adam-fedprox": {
        "optimizer": {"name": "adam", "weight_decay": 0.01},
        "learning_rate": 0.01,
        "schedule": {"kind": "cosine", "warmup_steps": 1},
        "grad_clip_norm": 1.0,
        "proximal_mu": 0.1,
    },
    "sgd-local-epochs": {
        "optimizer": {"name": "sgd", "momentum": 0.9, "nesterov": True},
        "steps": 10,  # the default: local_epochs decides
        "local_epochs": 1,
        "checkpoint_every": 2,
    },
}


@pytest.mark.parametrize("recipe", sorted(RECIPES))
async def test_honest_workers_pass_every_challenge_under_the_recipe(
    world: World, recipe: str
) -> None:
    world.config = job_config(**RECIPES[recipe])
    nodes = [world.node(i, WorkerNode) for i in range(2)]
    for node in nodes:
        await node.register(stake=10**8, payout=bytes(32))
    job_id = await world.post(workers=2)
    await world.step_until(job_id, Phase.COLLECTING)
    for node in nodes:
        assert len((await node.step()).committed) == 1
    world.clock.advance(1)
    await world.service.step()  # every task challenged
    for node in nodes:
        assert (await node.step()).answered
    await world.step_until(job_id, Phase.PROPOSED)
    results = world.results(job_id)
    for node in nodes:
        ref = WorkerRef(CHAIN, node.chain.worker_key)
        assert results[ref][0] is Outcome.ACCEPTED, results[ref]
    if recipe == "sgd-local-epochs":  # 40 examples, batches of 8: 5 steps in 3 segments
        assert world.config.training_config(40).segments == 3


async def test_frozen_tensors_stay_out_of_updates_and_aggregation(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A model whose first layer is frozen (a bundle with ``frozen: ["0."]``): updates carry only
    the trainable layer, every challenge passes, and the round's new model keeps the frozen layer
    bit for bit while the trainable one moves."""
    import fedrelay.coordinator.service as service_module
    from fedrelay.protocol.model_spec import BundleSpec

    def loader(bundle: str) -> ModelFactory:
        return lambda: mlp(64, HIDDEN, 10)

    class TrustingWorkbench(JobWorkbench):
        def __init__(self, config: JobConfig, evaluation: bytes | None = None, **_: object) -> None:
            super().__init__(config, evaluation, bundle_loader=loader)

    async def no_bundle_check(*_: object) -> None:
        return None  # a stand-in: this test is about frozen tensors, not about bundle trust

    import fedrelay.coordinator.publishing as publishing_module
    import fedrelay.worker.sdk.steps.bundle as bundle_steps

    monkeypatch.setattr(service_module, "JobWorkbench", TrustingWorkbench)
    monkeypatch.setattr(publishing_module, "admit_bundle", no_bundle_check)
    monkeypatch.setattr(bundle_steps, "admit_bundle", no_bundle_check)
    world.config = job_config(model=BundleSpec(bundle="cd" * 32, frozen=("0.",)))
    world.service._bundles["cd" * 32] = b""  # the loader above never reads it
    nodes = [world.node(i, WorkerNode) for i in range(2)]
    for node in nodes:
        node.bundle_loader = loader
        await node.register(stake=10**8, payout=bytes(32))
    initial = TrustingWorkbench(world.config).initial_model()
    job_id = await world.post(workers=2, initial=initial)
    await world.step_until(job_id, Phase.COLLECTING)
    for node in nodes:
        report = await node.step()
        reasons = [t.reason for t in node.state.tasks.values()]
        assert len(report.committed) == 1, reasons
    for name in (await world.store.updates(job_id, 0)).values():
        assert sorted(decode_blob(await world.blobs.get(name))) == ["2.bias", "2.weight"]
    world.clock.advance(1)
    await world.service.step()
    for node in nodes:
        assert (await node.step()).answered
    await world.step_until(job_id, Phase.PROPOSED)
    assert {r[0] for r in world.results(job_id).values()} == {Outcome.ACCEPTED}
    proposed, _ = world.market.proposals[(job_id, 0)]
    new_model = decode_blob(await world.blobs.get(proposed.hex()))
    assert sorted(new_model) == sorted(initial)
    for name in ("0.weight", "0.bias"):
        assert np.array_equal(new_model[name], initial[name])
    assert not np.array_equal(new_model["2.weight"], initial["2.weight"])
