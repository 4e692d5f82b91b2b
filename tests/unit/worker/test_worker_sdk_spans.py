"""The worker's task work is traced in the round's derived trace."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from support.coordinator import LocalCoordinator

from fedrelay.protocol.api.signing import EvmSigner
from fedrelay.protocol.challenges import Challenge
from fedrelay.protocol.tracing import round_span_context
from fedrelay.training import keccak256
from fedrelay.training.torch_trainer import initial_model, mlp
from fedrelay.worker.sdk import (
    AssignedTask,
    ChainPoll,
    CommitmentOffer,
    CommitReceipt,
    DigitsShards,
    JobConfig,
    OfferRecording,
    StakeStatus,
    StateStore,
    TaskKey,
    UpdateCommitment,
    WorkerNode,
)
from fedrelay.worker.sdk.progress import SilentProgress

JOB, ROUND, CHAIN, COORDINATOR_CHAIN = 11, 2, 4, 2
CONFIG = JobConfig(seed=5, steps=4, checkpoint_every=2, batch_size=16)


@dataclass
class OneTaskChain:
    """A worker chain holding one assignment and the commitments made to it."""

    signer: EvmSigner
    tasks: list[AssignedTask] = field(default_factory=list)
    commitments: list[UpdateCommitment] = field(default_factory=list)

    @property
    def wormhole_chain(self) -> int:
        return CHAIN

    @property
    def worker_key(self) -> bytes:
        return self.signer.worker.key

    async def stake_status(self) -> StakeStatus:
        return StakeStatus(1, True, len(self.tasks))

    async def stake_and_register(self, stake: int, payout: bytes, capabilities: int) -> None:
        raise AssertionError("not used")

    async def poll(self, cursor: int) -> ChainPoll:
        return ChainPoll(tuple(self.tasks[cursor:]), (), len(self.tasks))

    async def is_committed(self, key: TaskKey) -> bool:
        return any(c.key == key for c in self.commitments)

    async def commit(self, commitment: UpdateCommitment) -> CommitReceipt:
        self.commitments.append(commitment)
        return CommitReceipt(f"tx{len(self.commitments)}")

    async def sign_commitment(self, commitment: UpdateCommitment) -> None:
        return None  # this fake records only the worker's own commitments

    async def record_offers(
        self, key: TaskKey, offers: Sequence[CommitmentOffer]
    ) -> OfferRecording:
        raise AssertionError("not used")

    async def commitment_published(self, key: TaskKey) -> bool:
        return True  # this fake sends a commitment on at once

    async def publish_commitments(self, key: TaskKey) -> int:
        return 0

    async def begin_unstake(self, amount: int) -> None:
        raise AssertionError("not used")

    async def withdraw_stake(self) -> None:
        raise AssertionError("not used")

    async def release_expired_task(self, key: TaskKey) -> None:
        raise AssertionError("not used")


async def test_task_work_and_the_challenge_answer_are_spans_of_the_round(tmp_path: Path) -> None:
    coordinator = LocalCoordinator()
    chain = OneTaskChain(EvmSigner(bytes([0x31]) * 32, chain=CHAIN))
    deadline = int(time.time()) + 300
    await coordinator.open_round(
        JOB, [chain.signer.worker], initial_model(mlp, seed=1), CONFIG, deadline, round_number=ROUND
    )
    chain.tasks.append(
        AssignedTask(TaskKey(JOB, ROUND), keccak256(b"task" + chain.worker_key), 0, deadline)
    )
    node = WorkerNode(
        chain,
        coordinator.client(chain.signer),
        DigitsShards(4),
        StateStore(tmp_path / "worker.json"),
        progress=SilentProgress(),
        coordinator_chain=COORDINATOR_CHAIN,
    )
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    node.tracer = provider.get_tracer("test")

    assert (await node.step()).committed == (TaskKey(JOB, ROUND),)
    now = int(time.time())
    challenge = Challenge(
        JOB, ROUND, chain.signer.worker, segment=1, issued_at=now, answer_by=now + 60
    )
    await coordinator.repository.save_challenge(challenge)
    assert await node.answer_challenges() == [challenge.challenge_id]

    root = round_span_context(COORDINATOR_CHAIN, JOB, ROUND)
    spans = exporter.get_finished_spans()
    assert [s.name for s in spans] == [
        "worker.download",
        "worker.train",
        "worker.upload",
        "worker.commit",
        "worker.answer_challenge",
    ]
    for span in spans:
        assert span.context is not None
        assert span.context.trace_id == root.trace_id
        assert span.parent is not None
        assert span.parent.span_id == root.span_id
        assert span.attributes is not None
        assert span.attributes["fedrelay.job_id"] == JOB
        assert span.attributes["fedrelay.round"] == ROUND
        assert span.attributes["fedrelay.worker.chain"] == CHAIN
        assert span.attributes["fedrelay.worker.id"] == node.chain_worker_id()
