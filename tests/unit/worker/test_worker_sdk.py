"""The worker SDK's logic against a simulated chain and the real coordinator API in process.

:class:`FakeWorkerChain` simulates a worker chain (assignments, commitments, settlements) in
memory, so the node's logic is tested without a chain; the coordinator side is the real API app
(``create_app`` over a memory repository) reached through an ASGI transport.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import httpx
import numpy as np
import numpy.typing as npt
import pytest
import torch
from solders.keypair import Keypair
from support.coordinator import LocalCoordinator

from fedrelay.demo.actors import TamperedTranscriptWorker, TamperedUpdateWorker
from fedrelay.protocol.api.signing import EvmSigner
from fedrelay.protocol.challenges import Challenge
from fedrelay.protocol.job_config import DataSpec
from fedrelay.protocol.secagg import MaskOpening, check_opening, unmask_sum, wire
from fedrelay.protocol.secagg.messages import SecAggStage
from fedrelay.training import (
    SegmentOpening,
    Transcript,
    blob_hash,
    decode_blob,
    keccak256,
    merkle_proof,
    model_of,
    verify_proof,
    verify_segment,
)
from fedrelay.training.data import (
    Dataset,
    Indices,
    digits,
    partition_dirichlet,
    partition_k_classes,
    split_train_test,
)
from fedrelay.training.datasets.published import published_shard
from fedrelay.training.torch_trainer import TorchClassificationTrainer, initial_model, mlp
from fedrelay.worker.sdk import (
    CAPABILITY_CUDA,
    AssignedTask,
    ChainPoll,
    ChainRejected,
    ChainUnavailable,
    CommitmentOffer,
    CommitReceipt,
    DigitsShards,
    FixedShard,
    JobConfig,
    JobConfigError,
    KeyFileError,
    OfferRecording,
    Outcome,
    SettledTask,
    StakeStatus,
    StateFileError,
    StateStore,
    StopRequested,
    TaskKey,
    TaskStage,
    UpdateCommitment,
    WorkerNode,
    decode_proof,
    encode_proof,
    load_evm_key,
    load_solana_keypair,
    masking,
    parse_job_config,
)
from fedrelay.worker.sdk.api_client import CoordinatorClient
from fedrelay.worker.sdk.progress import SilentProgress
from fedrelay.worker.sdk.steps import publish
from fedrelay.worker.sdk.steps.commit import commitment_of

JOB = 5
CHAIN = 4
CONFIG = JobConfig(seed=3, steps=6, checkpoint_every=2, batch_size=16)


@dataclass
class FakeWorkerChain:
    """Simulates a worker chain in memory: tasks, commitments and settlements.

    The worker key is the EVM signer's (its address left-padded), as on an EVM chain.
    ``fail_commits`` makes the next commits raise (a crash between upload and commit).
    """

    signer: EvmSigner
    tasks: list[AssignedTask] = field(default_factory=list)
    settled: list[SettledTask] = field(default_factory=list)
    commitments: list[UpdateCommitment] = field(default_factory=list)
    staked: int = 0
    registered: bool = False
    fail_commits: int = 0
    reject_commits: bool = False
    committed: asyncio.Event = field(default_factory=asyncio.Event)
    released: list[TaskKey] = field(default_factory=list)
    published: set[TaskKey] = field(default_factory=set)
    publications: list[TaskKey] = field(default_factory=list)
    fail_publications: int = 0
    signs: bool = False
    """Takes signed commitments, as an EVM WorkerHub does (its signatures are fakes: hashes)."""
    refuse_offer: str = ""
    """The reason a recording refuses this worker's offer with (empty: it is taken)."""
    takes_no_offers: bool = False
    """A recording of offers is refused as a whole (a chain without signed commitments)."""
    recordings: list[tuple[TaskKey, tuple[bytes, ...]]] = field(default_factory=list)

    @property
    def wormhole_chain(self) -> int:
        return CHAIN

    @property
    def worker_key(self) -> bytes:
        return self.signer.worker.key

    async def stake_status(self) -> StakeStatus:
        return StakeStatus(self.staked, self.registered, len(self.tasks))

    async def stake_and_register(self, stake: int, payout: bytes, capabilities: int) -> None:
        self.staked, self.registered = max(stake, self.staked), True

    async def poll(self, cursor: int) -> ChainPoll:
        return ChainPoll(tuple(self.tasks[cursor:]), tuple(self.settled), len(self.tasks))

    async def is_committed(self, key: TaskKey) -> bool:
        return any(c.key == key for c in self.commitments)

    async def commit(self, commitment: UpdateCommitment) -> CommitReceipt:
        if self.reject_commits:
            raise ChainRejected("CommitmentTooLate(task, deadline)")
        if self.fail_commits:
            self.fail_commits -= 1
            raise ConnectionError("simulated crash before the commit reached the chain")
        if await self.is_committed(commitment.key):
            raise AssertionError("a task was committed twice")
        self.commitments.append(commitment)
        self.committed.set()
        return CommitReceipt(f"tx{len(self.commitments)}")

    async def sign_commitment(self, commitment: UpdateCommitment) -> bytes | None:
        return fake_signature(self.worker_key, commitment) if self.signs else None

    async def record_offers(
        self, key: TaskKey, offers: Sequence[CommitmentOffer]
    ) -> OfferRecording:
        if self.takes_no_offers:
            raise ChainRejected("this chain records no signed commitments")
        recorded: list[bytes] = []
        refused: dict[bytes, str] = {}
        for offer in offers:
            worker, c = offer.commitment.worker_key, offer.commitment
            commitment = UpdateCommitment(
                key, c.update_hash, c.transcript_root, c.data_root, c.num_samples, c.train_loss
            )
            if offer.signature != fake_signature(worker, commitment):
                refused[worker] = "BAD_SIGNATURE"
                continue
            if worker == self.worker_key:
                if self.refuse_offer:
                    refused[worker] = self.refuse_offer
                    continue
                if await self.is_committed(key):
                    continue
                self.commitments.append(commitment)
                self.committed.set()
            recorded.append(worker)
        self.recordings.append((key, tuple(recorded)))
        return OfferRecording(f"tx-offers{len(self.recordings)}", tuple(recorded), refused)

    async def commitment_published(self, key: TaskKey) -> bool:
        return key in self.published

    async def publish_commitments(self, key: TaskKey) -> int:
        if self.fail_publications:
            self.fail_publications -= 1
            raise ChainUnavailable("simulated outage while publishing")
        pending = [c for c in self.commitments if c.key == key and key not in self.published]
        if pending:
            self.published.add(key)
            self.publications.append(key)
        return len(pending)

    async def begin_unstake(self, amount: int) -> None:
        self.staked -= amount

    async def withdraw_stake(self) -> None:
        self.staked = 0

    async def release_expired_task(self, key: TaskKey) -> None:
        if any(s.task_id == t.task_id for s in self.settled for t in self.tasks if t.key == key):
            raise ChainRejected("TaskSettled(task)")
        self.released.append(key)


@dataclass
class World:
    coordinator: LocalCoordinator
    tmp: Path
    model_hash: bytes = b""
    config_hash: bytes = b""

    def node(
        self,
        chain: FakeWorkerChain,
        kind: type[WorkerNode] = WorkerNode,
        *,
        name: str = "worker",
        shard: Dataset | None = None,
        clock_ahead: float = 0.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> WorkerNode:
        """A node on ``chain``; its API requests go through ``transport`` when one is given
        (wrapping the coordinator's)."""
        source = FixedShard(shard) if shard is not None else DigitsShards(4)
        api = self.coordinator.client(chain.signer)
        if transport is not None:
            api = CoordinatorClient("http://coordinator", chain.signer, transport=transport)
        return kind(
            chain,
            api,
            source,
            StateStore(self.tmp / f"{name}.json"),
            progress=SilentProgress(),
            poll_interval=0.01,
            clock=lambda: time.time() + clock_ahead,
        )

    async def assign(
        self, chains: list[FakeWorkerChain], config: JobConfig = CONFIG, deadline_in: int = 300
    ) -> None:
        deadline = int(time.time()) + deadline_in
        workers = [c.signer.worker for c in chains]
        self.model_hash, self.config_hash = await self.coordinator.open_round(
            JOB, workers, initial_model(mlp, seed=1), config, deadline
        )
        for shard, chain in enumerate(chains):
            task_id = keccak256(b"task" + chain.worker_key)
            chain.tasks.append(AssignedTask(TaskKey(JOB, 0), task_id, shard, deadline))


def fake_signature(worker_key: bytes, commitment: UpdateCommitment) -> bytes:
    """The fake chain's signature of a commitment: a hash of the worker and the fields (fake)."""
    fields = (
        commitment.update_hash
        + commitment.transcript_root
        + commitment.data_root
        + commitment.num_samples.to_bytes(4, "big")
        + commitment.train_loss.to_bytes(4, "big")
    )
    return keccak256(b"fake signature" + worker_key + fields) * 2


def fake_chain(key_byte: int) -> FakeWorkerChain:
    """A fake chain for the worker whose private key is ``key_byte`` repeated."""
    return FakeWorkerChain(EvmSigner(bytes([key_byte]) * 32, chain=CHAIN))


@pytest.fixture
def world(tmp_path: Path) -> World:
    return World(LocalCoordinator(), tmp_path)


async def test_a_task_is_trained_uploaded_and_committed(world: World) -> None:
    chain = fake_chain(0x21)
    await world.assign([chain])
    node = world.node(chain)
    status = await node.register(stake=10**18, payout=bytes(32))
    assert status.registered
    assert status.staked == 10**18

    report = await node.step()

    assert report.assigned == (TaskKey(JOB, 0),)
    assert report.committed == (TaskKey(JOB, 0),)
    [commitment] = chain.commitments
    uploads = await world.coordinator.repository.updates(JOB, 0)
    assert list(uploads.values()) == [commitment.update_hash.hex()]
    shard = DigitsShards(4).dataset(0)
    assert commitment.num_samples == len(shard)
    # The committed update is what the transcript's last checkpoint holds, and the root is
    # the Merkle root over the kept checkpoints.
    record = node.state.task(TaskKey(JOB, 0))
    assert record is not None
    assert record.stage is TaskStage.COMMITTED
    assert len(record.checkpoints) == CONFIG.training.segments + 1
    final = decode_blob(node.store.get_blob(record.checkpoints[-1]))
    update = decode_blob(node.store.get_blob(commitment.update_hash.hex()))
    assert all(np.array_equal(update[k], v) for k, v in model_of(final).items())
    leaves = tuple(bytes.fromhex(h) for h in record.checkpoints)
    assert Transcript(b"", leaves).root == commitment.transcript_root
    trainer = TorchClassificationTrainer(mlp, shard)
    loss = trainer.evaluate(model_of(final), shard).loss
    assert commitment.train_loss == round(loss * 1e6)
    # A second pass has nothing to do.
    assert (await node.step()).committed == ()
    assert len(chain.commitments) == 1


async def test_a_commitment_is_published_once_it_waited_its_turn(world: World) -> None:
    chain = fake_chain(0x27)
    await world.assign([chain])
    now = [time.time()]
    node = world.node(chain)
    node.clock = lambda: now[0]
    node.publish_after = 10.0
    report = await node.step()
    assert report.committed == (TaskKey(JOB, 0),)
    assert report.published == ()
    assert chain.publications == [], "a fresh commitment waits for others of its round"
    record = node.state.task(TaskKey(JOB, 0))
    assert record is not None
    assert not record.published
    wait = publish.own_delay(chain.worker_key, record, 10.0)
    assert 0.0 <= wait <= 10.0
    now[0] = record.committed_at + 10.0 + wait - 0.5
    await node.step()
    assert chain.publications == [], "not before its own turn"
    now[0] += 1.0
    report = await node.step()
    assert chain.publications == [TaskKey(JOB, 0)]
    assert report.published == (f"{TaskKey(JOB, 0)}: 1",)
    record = node.state.task(TaskKey(JOB, 0))
    assert record is not None
    assert record.published
    await node.step()
    assert chain.publications == [TaskKey(JOB, 0)], "published once"


async def test_a_commitment_published_by_another_worker_is_not_published_again(
    world: World,
) -> None:
    chain = fake_chain(0x28)
    await world.assign([chain])
    node = world.node(chain)
    node.publish_after = 100.0  # the deadline is 300 s away: not due for 100 s or more
    await node.step()
    assert chain.publications == []
    chain.published.add(TaskKey(JOB, 0))  # a peer of the round published it
    await node.step()
    assert chain.publications == []
    record = node.state.task(TaskKey(JOB, 0))
    assert record is not None
    assert record.published


async def test_a_commitment_near_its_deadline_is_published_at_once(world: World) -> None:
    chain = fake_chain(0x29)
    await world.assign([chain], deadline_in=60)
    node = world.node(chain)
    node.publish_after = 100.0  # only the deadline, 60 s away, makes it due
    report = await node.step()
    assert report.committed == (TaskKey(JOB, 0),)
    assert chain.publications == [TaskKey(JOB, 0)], "published in the pass that committed"


async def test_a_failed_publication_is_tried_again(world: World) -> None:
    chain = fake_chain(0x2A)
    chain.fail_publications = 1
    await world.assign([chain], deadline_in=60)
    node = world.node(chain)
    node.publish_after = 100.0  # due at once: the deadline is 60 s away
    await node.step()  # commits; publishing meets the unreachable chain
    record = node.state.task(TaskKey(JOB, 0))
    assert record is not None
    assert not record.published
    assert chain.publications == []
    await node.step()
    assert chain.publications == [TaskKey(JOB, 0)]
    record = node.state.task(TaskKey(JOB, 0))
    assert record is not None
    assert record.published


def signing_chain(key_byte: int) -> FakeWorkerChain:
    """A fake chain that takes signed commitments (as an EVM WorkerHub does)."""
    chain = fake_chain(key_byte)
    chain.signs = True
    return chain


async def test_signed_commitments_are_offered_and_recorded_together(world: World) -> None:
    first, second = signing_chain(0x31), signing_chain(0x32)
    await world.assign([first, second])
    now = [time.time()]
    nodes = [world.node(c, name=f"worker-{i}") for i, c in enumerate((first, second))]
    for node in nodes:
        node.clock = lambda: now[0]
        node.publish_after = 100.0  # the deadline is 300 s away: not due for 100 s or more
    key = TaskKey(JOB, 0)
    for node in nodes:
        report = await node.step()
        assert report.committed == (), "signed and offered, not yet on chain"
        record = node.state.task(key)
        assert record is not None
        assert record.stage is TaskStage.SIGNED
        assert record.signature
    assert first.commitments == second.commitments == [], "no transaction of their own"
    offers = await world.coordinator.repository.offers(JOB, 0, CHAIN)
    assert {o.commitment.worker_key for o in offers} == {first.worker_key, second.worker_key}

    now[0] += 250.0  # the deadline is near: the first worker records at once
    report = await nodes[0].step()

    assert report.committed == (key,)
    assert first.recordings == [(key, (first.worker_key, second.worker_key))], (
        "its own offer and the round's other offer, in one recording"
    )
    [commitment] = first.commitments
    record = nodes[0].state.task(key)
    assert record is not None
    assert record.stage is TaskStage.COMMITTED
    assert record.transaction == "tx-offers1"
    assert commitment.update_hash.hex() == record.update_hash
    assert first.publications == [key], "published in the pass that recorded"
    assert (await nodes[0].step()).committed == ()
    assert len(first.recordings) == 1


async def test_a_signed_commitment_recorded_by_another_worker_is_not_recorded_again(
    world: World,
) -> None:
    chain = signing_chain(0x33)
    await world.assign([chain])
    node = world.node(chain)
    node.publish_after = 100.0
    await node.step()
    record = node.state.task(TaskKey(JOB, 0))
    assert record is not None
    assert record.stage is TaskStage.SIGNED
    chain.commitments.append(commitment_of(record))  # a peer recorded the round

    report = await node.step()

    assert report.committed == (TaskKey(JOB, 0),)
    assert chain.recordings == []
    record = node.state.task(TaskKey(JOB, 0))
    assert record is not None
    assert record.stage is TaskStage.COMMITTED
    assert record.transaction == ""


class RefusesOffers(httpx.AsyncBaseTransport):
    """Fake fault: passes requests to ``inner`` but answers every commitment offer, and every
    read of the round's offers, with a server error (a coordinator that does not carry offers)."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self.inner = inner
        self.refused: list[str] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith(("/commitment", "/commitments")):
            self.refused.append(request.method)
            return httpx.Response(500, json={"error": "internal", "detail": "simulated"})
        return await self.inner.handle_async_request(request)


async def test_an_offer_the_coordinator_does_not_carry_is_recorded_by_its_worker(
    world: World,
) -> None:
    chain = signing_chain(0x34)
    await world.assign([chain], deadline_in=60)  # due at once
    transport = RefusesOffers(world.coordinator.transport)
    node = world.node(chain, transport=transport)
    node.publish_after = 100.0

    report = await node.step()

    assert transport.refused == ["PUT", "GET"]
    assert report.committed == (TaskKey(JOB, 0),)
    assert chain.recordings == [(TaskKey(JOB, 0), (chain.worker_key,))]
    assert len(chain.commitments) == 1
    assert await world.coordinator.repository.offers(JOB, 0, CHAIN) == []


async def test_a_signed_commitment_the_chain_refuses_abandons_the_task(world: World) -> None:
    chain = signing_chain(0x35)
    chain.refuse_offer = "TOO_LATE"
    await world.assign([chain], deadline_in=60)
    node = world.node(chain)
    node.publish_after = 100.0

    report = await node.step()

    assert report.abandoned == (TaskKey(JOB, 0),)
    assert report.committed == ()
    assert chain.commitments == []
    record = node.state.task(TaskKey(JOB, 0))
    assert record is not None
    assert record.stage is TaskStage.ABANDONED
    assert "TOO_LATE" in record.reason
    assert (await node.step()).abandoned == ()  # not retried


async def test_a_chain_that_records_no_offers_gets_the_workers_own_commitment(
    world: World,
) -> None:
    chain = signing_chain(0x36)
    chain.takes_no_offers = True
    await world.assign([chain], deadline_in=60)
    node = world.node(chain)
    node.publish_after = 100.0

    report = await node.step()

    assert report.committed == (TaskKey(JOB, 0),)
    assert len(chain.commitments) == 1
    record = node.state.task(TaskKey(JOB, 0))
    assert record is not None
    assert record.stage is TaskStage.COMMITTED
    assert record.transaction == "tx1"


async def test_a_node_told_not_to_offer_commits_with_its_own_transaction(world: World) -> None:
    chain = signing_chain(0x37)
    await world.assign([chain])
    node = world.node(chain)
    node.offer_commitments = False

    report = await node.step()

    assert report.committed == (TaskKey(JOB, 0),)
    assert chain.recordings == []
    assert await world.coordinator.repository.offers(JOB, 0, CHAIN) == []
    record = node.state.task(TaskKey(JOB, 0))
    assert record is not None
    assert record.transaction == "tx1"
    assert record.signature == ""


async def test_a_restart_while_signed_records_the_kept_offer(world: World) -> None:
    chain = signing_chain(0x38)
    await world.assign([chain])
    first = world.node(chain)
    first.publish_after = 100.0
    await first.step()
    signed = first.store.load().task(TaskKey(JOB, 0))
    assert signed is not None
    assert signed.stage is TaskStage.SIGNED

    restarted = world.node(chain, clock_ahead=250.0)  # the deadline is near: due at once
    restarted.publish_after = 100.0
    report = await restarted.step()

    assert report.committed == (TaskKey(JOB, 0),)
    assert [c.update_hash.hex() for c in chain.commitments] == [signed.update_hash]
    assert chain.recordings == [(TaskKey(JOB, 0), (chain.worker_key,))]


async def test_a_restart_after_upload_commits_once(world: World) -> None:
    chain = fake_chain(0x22)
    chain.fail_commits = 1
    await world.assign([chain])
    first = world.node(chain)
    with pytest.raises(ConnectionError):
        await first.step()
    stored = first.store.load().task(TaskKey(JOB, 0))
    assert stored is not None
    assert stored.stage is TaskStage.UPLOADED

    restarted = world.node(chain)
    report = await restarted.step()
    assert report.committed == (TaskKey(JOB, 0),)
    assert [c.update_hash.hex() for c in chain.commitments] == [stored.update_hash]

    # A state file lost after the commit: the chain says committed, nothing is sent again.
    (world.tmp / "worker.json").unlink()
    fresh = world.node(chain)
    assert (await fresh.step()).recovered == (TaskKey(JOB, 0),)
    assert len(chain.commitments) == 1
    record = fresh.state.task(TaskKey(JOB, 0))
    assert record is not None
    assert record.stage is TaskStage.COMMITTED


async def test_a_challenge_is_answered_with_checkpoints_and_proofs(world: World) -> None:
    chain = fake_chain(0x23)
    await world.assign([chain])
    node = world.node(chain)
    await node.step()
    signer = chain.signer
    now = int(time.time())
    challenge = Challenge(JOB, 0, signer.worker, segment=1, issued_at=now, answer_by=now + 60)
    await world.coordinator.repository.save_challenge(challenge)

    report = await node.step()

    assert report.answered == (challenge.challenge_id,)
    [stored] = await world.coordinator.repository.challenges(challenge_id=challenge.challenge_id)
    assert stored.answer is not None
    [commitment] = chain.commitments
    start = await world.coordinator.blobs.get(stored.answer.start_checkpoint)
    end = await world.coordinator.blobs.get(stored.answer.end_checkpoint)
    start_proof = decode_proof(stored.answer.start_proof)
    end_proof = decode_proof(stored.answer.end_proof)
    assert verify_proof(blob_hash(start), start_proof, commitment.transcript_root)
    assert verify_proof(blob_hash(end), end_proof, commitment.transcript_root)
    # The coordinator's replay of the answered segment accepts it.
    opening = SegmentOpening(1, start, end, start_proof, end_proof)
    trainer = TorchClassificationTrainer(mlp, DigitsShards(4).dataset(0))
    verdict = verify_segment(trainer, CONFIG.training, commitment.transcript_root, 1, opening)
    assert verdict.accepted, verdict.reason


async def test_a_task_past_its_deadline_is_abandoned_without_upload(world: World) -> None:
    chain = fake_chain(0x24)
    await world.assign([chain], deadline_in=60)
    node = world.node(chain, clock_ahead=120)  # the node's clock is past the deadline
    report = await node.step()
    assert report.abandoned == (TaskKey(JOB, 0),)
    assert chain.commitments == []
    assert await world.coordinator.repository.updates(JOB, 0) == {}
    record = node.state.task(TaskKey(JOB, 0))
    assert record is not None
    assert "deadline" in record.reason


async def test_a_commitment_the_chain_refuses_abandons_the_task(world: World) -> None:
    chain = fake_chain(0x2A)
    chain.reject_commits = True
    await world.assign([chain])
    node = world.node(chain)
    report = await node.step()
    assert report.abandoned == (TaskKey(JOB, 0),)
    record = node.state.task(TaskKey(JOB, 0))
    assert record is not None
    assert "CommitmentTooLate" in record.reason
    assert (await node.step()).abandoned == ()  # not retried


async def test_run_works_until_stopped(world: World) -> None:
    chain = fake_chain(0x2B)
    await world.assign([chain])
    node = world.node(chain)
    running = asyncio.create_task(node.run())
    await asyncio.wait_for(chain.committed.wait(), timeout=60)
    node.request_stop()
    async with asyncio.timeout(10):
        await running
    assert [c.key for c in chain.commitments] == [TaskKey(JOB, 0)]


async def test_a_model_that_disagrees_with_the_chain_is_refused(world: World) -> None:
    chain = fake_chain(0x25)
    await world.assign([chain])
    task = chain.tasks[0]
    chain.tasks[0] = AssignedTask(task.key, task.task_id, 0, task.deadline, b"\x99" * 32, None)
    node = world.node(chain)
    report = await node.step()
    assert report.abandoned == (TaskKey(JOB, 0),)
    record = node.state.task(TaskKey(JOB, 0))
    assert record is not None
    assert "the chain" in record.reason
    assert chain.commitments == []


async def test_settlements_are_recorded(world: World) -> None:
    chain = fake_chain(0x26)
    await world.assign([chain])
    node = world.node(chain)
    await node.step()
    chain.settled.append(SettledTask(chain.tasks[0].task_id, Outcome.ACCEPTED))
    report = await node.step()
    assert report.settled == (TaskKey(JOB, 0),)
    record = StateStore(world.tmp / "worker.json").load().task(TaskKey(JOB, 0))
    assert record is not None
    assert (record.stage, record.outcome) == (TaskStage.SETTLED, Outcome.ACCEPTED)
    await node.begin_unstake(10)
    await node.withdraw_stake()
    assert chain.staked == 0


async def test_a_task_never_settled_is_released_after_its_release_time(world: World) -> None:
    chain = fake_chain(0x27)
    await world.assign([chain])
    task = chain.tasks[0]
    release_at = task.deadline + 600
    chain.tasks[0] = replace(task, release_at=release_at)
    node = world.node(chain)
    report = await node.step()
    assert report.committed == (TaskKey(JOB, 0),)
    assert report.released == ()
    assert chain.released == []  # not before its release time
    late = world.node(chain, clock_ahead=release_at - time.time() + 1)
    assert (await late.step()).released == (TaskKey(JOB, 0),)
    assert chain.released == [TaskKey(JOB, 0)]
    record = StateStore(world.tmp / "worker.json").load().task(TaskKey(JOB, 0))
    assert record is not None
    assert record.stage is TaskStage.RELEASED
    assert (await late.step()).released == ()  # released once


async def test_a_settled_task_is_not_released(world: World) -> None:
    chain = fake_chain(0x28)
    await world.assign([chain])
    chain.tasks[0] = replace(chain.tasks[0], release_at=int(time.time()) + 1)
    chain.settled.append(SettledTask(chain.tasks[0].task_id, Outcome.DROPPED))
    node = world.node(chain, clock_ahead=10)
    assert (await node.step()).released == ()
    assert chain.released == []


async def test_a_stop_during_training_abandons_the_run_and_keeps_the_task(world: World) -> None:
    chain = fake_chain(0x27)
    await world.assign([chain])
    node = world.node(chain)

    class StopAfterFirstSegment(SilentProgress):
        def advance(self, key: TaskKey, done: int) -> None:
            node.request_stop()

    node.progress = StopAfterFirstSegment()
    with pytest.raises(StopRequested):
        await node.step()
    record = StateStore(world.tmp / "worker.json").load().task(TaskKey(JOB, 0))
    assert record is not None
    assert record.stage is TaskStage.ASSIGNED
    assert await world.coordinator.repository.updates(JOB, 0) == {}
    await node.run()  # returns at once: the stop request stands
    assert chain.commitments == []


async def test_a_tampered_update_is_not_what_the_transcript_ends_in(world: World) -> None:
    chain = fake_chain(0x28)
    await world.assign([chain])
    node = world.node(chain, TamperedUpdateWorker)
    await node.step()
    [commitment] = chain.commitments
    record = node.state.task(TaskKey(JOB, 0))
    assert record is not None
    final = model_of(decode_blob(node.store.get_blob(record.checkpoints[-1])))
    update = decode_blob(node.store.get_blob(commitment.update_hash.hex()))
    assert not all(np.array_equal(update[k], v) for k, v in final.items())


async def test_a_tampered_transcript_fails_the_replay_of_its_segment(world: World) -> None:
    chain = fake_chain(0x29)
    await world.assign([chain])
    node = world.node(chain, TamperedTranscriptWorker)
    await node.step()
    [commitment] = chain.commitments
    record = node.state.task(TaskKey(JOB, 0))
    assert record is not None
    blobs = [node.store.get_blob(h) for h in record.checkpoints]
    leaves = [blob_hash(b) for b in blobs]
    tampered = len(blobs) // 2
    opening = SegmentOpening(
        tampered - 1,
        blobs[tampered - 1],
        blobs[tampered],
        merkle_proof(leaves, tampered - 1),
        merkle_proof(leaves, tampered),
    )
    trainer = TorchClassificationTrainer(mlp, DigitsShards(4).dataset(0))
    verdict = verify_segment(
        trainer, CONFIG.training, commitment.transcript_root, tampered - 1, opening
    )
    assert not verdict.accepted


async def test_secure_aggregation_reveals_only_the_sum(world: World) -> None:
    chains = [fake_chain(0x31), fake_chain(0x32)]
    secure = CONFIG.model_copy(update={"secure_aggregation": True, "secagg_threshold": 2})
    await world.assign(chains, secure)
    nodes = [world.node(c, name=f"w{i}") for i, c in enumerate(chains)]
    reports = await asyncio.gather(*(n.step() for n in nodes))
    assert all(r.committed == (TaskKey(JOB, 0),) for r in reports)

    await world.coordinator.close_collection(JOB)
    for node in nodes:
        await node.step()

    repository, key = world.coordinator.repository, TaskKey(JOB, 0)
    adverts = [
        wire.decode_keys(w.worker_id.hex(), d)
        for w, d in (await repository.secagg(JOB, 0, SecAggStage.KEYS)).items()
    ]
    masked_messages = await repository.secagg(JOB, 0, SecAggStage.MASKED)
    uploads = await repository.updates(JOB, 0)
    masked = []
    for worker, data in masked_messages.items():
        assert uploads[worker] == blob_hash(data).hex()  # the committed blob is the masked one
        masked.append(wire.decode_masked(worker.worker_id.hex(), data))
    reveals = [
        wire.decode_reveal(w.worker_id.hex(), d)
        for w, d in (await repository.secagg(JOB, 0, SecAggStage.REVEALS)).items()
    ]
    sealed = [
        wire.decode_shares(sender.worker_id.hex(), recipient.worker_id.hex(), data)
        for recipient in masked_messages
        for sender, data in (await repository.secagg(JOB, 0, SecAggStage.SHARES, recipient)).items()
    ]
    config = masking.secagg_config(key, 2)
    total = unmask_sum(config, adverts, [a.client_id for a in adverts], masked, reveals, sealed)

    start = initial_model(mlp, seed=1)
    expected = np.zeros_like(masking.flat_delta(start, start))
    for node in nodes:
        record = node.state.task(key)
        assert record is not None
        final = model_of(decode_blob(node.store.get_blob(record.checkpoints[-1])))
        expected += masking.flat_delta(final, start) * record.num_samples
    decoded = total.decode(config.fixed_point)
    assert total.total_weight == sum(n.state.tasks[str(key)].num_samples for n in nodes)
    np.testing.assert_allclose(decoded, expected, atol=1e-4)

    # Each node keeps its round's mask opening on disk, so a challenge can still be answered
    # after a restart, and the opening shows its masked input honest.
    roster = {a.client_id: a for a in adverts}
    for node in nodes:
        kept = StateStore(node.store.path).load().task(key)
        assert kept is not None
        assert kept.mask_opening not in repr(kept)
        opening = MaskOpening.decode(bytes.fromhex(kept.mask_opening))
        me = node.chain_worker_id()
        mine = next(m for m in masked if m.client_id == me)
        final = model_of(decode_blob(node.store.get_blob(kept.checkpoints[-1])))
        delta = masking.flat_delta(final, start)
        check_opening(config, roster, set(roster) - {me}, mine, opening, delta)
    # A sum audit's challenge (the last segment, issued after the reveals) reaches each node as
    # any challenge does, and the answer opens the round's masks.
    now = int(time.time())
    for chain, node in zip(chains, nodes, strict=True):
        kept = node.state.task(key)
        assert kept is not None
        last = len(kept.checkpoints) - 2
        audit = Challenge(JOB, 0, chain.signer.worker, last, issued_at=now, answer_by=now + 60)
        await repository.save_challenge(audit)
        assert (await node.step()).answered == (audit.challenge_id,)
        opened = await repository.secagg(JOB, 0, SecAggStage.OPENING)
        assert opened[chain.signer.worker].hex() == kept.mask_opening
    # Each masked input alone says nothing useful: it is far from the worker's own update.
    assert not np.allclose(masked[0].vector.view(np.int64).astype(np.float64), 0, atol=1e6)


class DropsOneShare(httpx.AsyncBaseTransport):
    """Fake fault: passes requests to ``inner`` but fails the ``nth`` share a worker sends with
    a connection error, once (a connection that drops mid-exchange cannot be produced on
    demand through the in-process API). Records every share sent and every keys advert."""

    def __init__(self, inner: httpx.AsyncBaseTransport, nth: int) -> None:
        self.inner = inner
        self.nth = nth
        self.shares: list[str] = []
        self.adverts = 0
        self.dropped = False

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if request.method == "PUT" and "/secagg/keys" in path:
            self.adverts += 1
        if request.method == "PUT" and "/secagg/shares/" in path:
            self.shares.append(path.rsplit("/", 1)[1])
            if len(self.shares) == self.nth and not self.dropped:
                self.dropped = True
                raise httpx.ConnectError("simulated drop while dealing shares", request=request)
        return await self.inner.handle_async_request(request)


async def test_a_secure_exchange_interrupted_by_a_failed_pass_resumes(world: World) -> None:
    """One of three workers loses its connection after dealing one of its two shares: its
    next pass sends the same keys no more and only the share still owed, and every worker
    completes the round (with fresh keys the coordinator would refuse its advert as a
    conflict and the other two would wait for its shares until the deadline)."""
    chains = [fake_chain(0x41), fake_chain(0x42), fake_chain(0x43)]
    secure = CONFIG.model_copy(update={"secure_aggregation": True, "secagg_threshold": 2})
    await world.assign(chains, secure)
    flaky = DropsOneShare(world.coordinator.transport, nth=2)
    nodes = [world.node(chains[0], name="w0", transport=flaky)]
    nodes += [world.node(c, name=f"w{i}") for i, c in enumerate(chains[1:], start=1)]
    running = [asyncio.create_task(n.run()) for n in nodes]
    try:
        async with asyncio.timeout(120):
            await asyncio.gather(*(c.committed.wait() for c in chains))
    finally:
        for node in nodes:
            node.request_stop()
        await asyncio.gather(*running)
    assert flaky.dropped
    assert flaky.adverts == 1
    peers = sorted(c.signer.worker.worker_id.hex() for c in chains[1:])
    assert flaky.shares == [peers[0], peers[1], peers[1]]  # the dropped one, and only it, again
    key = TaskKey(JOB, 0)
    assert all([c.key for c in chain.commitments] == [key] for chain in chains)
    assert nodes[0].key_exchanges == {}
    received = await world.coordinator.repository.secagg(
        JOB, 0, SecAggStage.SHARES, chains[2].signer.worker
    )
    assert chains[0].signer.worker in received


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device; none is present")
async def test_a_cuda_worker_commits_and_registers_its_capability(world: World) -> None:
    chain = fake_chain(0x2C)
    await world.assign([chain])
    node = world.node(chain)
    node.device = "cuda"
    assert node.capabilities == CAPABILITY_CUDA
    assert (await node.step()).committed == (TaskKey(JOB, 0),)
    [commitment] = chain.commitments
    record = node.state.task(TaskKey(JOB, 0))
    assert record is not None
    assert Transcript(b"", tuple(bytes.fromhex(h) for h in record.checkpoints)).root == (
        commitment.transcript_root
    )


def test_state_file_errors_and_round_trip(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "state.json")
    assert store.load().tasks == {}
    store.path.write_text("{not json")
    with pytest.raises(StateFileError, match="cannot read worker state"):
        store.load()
    store.path.write_text(json.dumps({"version": 99, "cursor": 0, "tasks": {}}))
    with pytest.raises(StateFileError, match="state version 99"):
        store.load()
    name = store.put_blob(b"blob bytes")
    assert store.get_blob(name) == b"blob bytes"
    (store.blob_dir / name).write_bytes(b"other bytes")
    with pytest.raises(StateFileError, match="corrupt"):
        store.get_blob(name)


def test_proofs_round_trip_and_reject_bad_bytes() -> None:
    leaves = [keccak256(bytes([i])) for i in range(5)]
    for index in range(5):
        proof = merkle_proof(leaves, index)
        assert decode_proof(encode_proof(proof)) == proof
    with pytest.raises(ValueError, match="at least 9 bytes"):
        decode_proof(b"\x00")
    with pytest.raises(ValueError, match="3 siblings needs 96 bytes"):
        decode_proof(encode_proof(merkle_proof(leaves, 0))[:-1])


def test_job_config_parsing() -> None:
    assert parse_job_config(CONFIG.to_bytes()) == CONFIG
    secure = CONFIG.model_copy(update={"secure_aggregation": True, "secagg_threshold": 3})
    assert parse_job_config(secure.to_bytes()) == secure
    document = json.loads(CONFIG.to_bytes())
    # A worker does not train under a field it does not understand.
    with pytest.raises(JobConfigError, match="future_field"):
        parse_job_config(json.dumps({**document, "future_field": 1}).encode())
    with pytest.raises(JobConfigError, match="invalid job configuration"):
        parse_job_config(b"\xff")
    with pytest.raises(JobConfigError, match="steps"):
        parse_job_config(json.dumps({**document, "steps": 0}).encode())
    with pytest.raises(JobConfigError, match="secagg_threshold"):
        parse_job_config(json.dumps({**document, "secure_aggregation": True}).encode())


def test_the_worker_reads_the_job_configuration_the_coordinator_writes() -> None:
    from fedrelay.protocol.job_config import JobConfig as ProtocolJobConfig

    assert JobConfig is ProtocolJobConfig  # one definition, shared
    written = ProtocolJobConfig(seed=3, steps=6, checkpoint_every=2, batch_size=16)
    parsed = parse_job_config(written.to_bytes())
    assert parsed.secure_aggregation is False
    assert parsed.secagg_threshold is None
    assert parsed.training == CONFIG.training


def test_key_files(tmp_path: Path) -> None:
    evm = tmp_path / "evm.key"
    evm.write_text("0x" + "ab" * 32 + "\n")
    assert load_evm_key(evm) == "ab" * 32
    keypair = Keypair()
    sol = tmp_path / "sol.json"
    sol.write_text(json.dumps(list(bytes(keypair))))
    assert load_solana_keypair(sol).pubkey() == keypair.pubkey()
    with pytest.raises(KeyFileError, match="does not exist"):
        load_evm_key(tmp_path / "missing.key")
    secret = tmp_path / "secret.key"
    secret.write_text("cd" * 31)
    with pytest.raises(KeyFileError) as wrong:
        load_evm_key(secret)
    assert "cd" * 31 not in str(wrong.value)
    with pytest.raises(KeyFileError, match="Solana keypair"):
        load_solana_keypair(evm)


def test_published_shards_match_the_partitioners() -> None:
    train, _ = split_train_test(digits(), seed=3)
    spec = DataSpec(shards=5, partition="k_classes", seed=3, max_examples_per_shard=40)
    expected = partition_k_classes(train.labels, 5, 2, seed=3)[4][:40]
    shard = published_shard(spec, 4)
    assert np.array_equal(shard.labels, train.labels[expected])
    assert len(set(shard.labels.tolist())) <= 2
    dirichlet = published_shard(DataSpec(shards=3, partition="dirichlet", alpha=0.5), 1)
    assert np.array_equal(dirichlet.labels, train_labels(partition_dirichlet, 3, 0.5)[1])
    assert len(published_shard(DataSpec(), 2)) == len(DigitsShards(4).dataset(2))


def train_labels(
    partitioner: Callable[..., list[Indices]], *args: object
) -> list[npt.NDArray[np.int64]]:
    train, _ = split_train_test(digits(), seed=0)
    return [train.labels[p] for p in partitioner(train.labels, *args, seed=0)]
