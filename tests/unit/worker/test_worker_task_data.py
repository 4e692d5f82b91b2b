"""What a task trains on is the job's decision: the published shard its task names, or the
worker's own data checked against the job's schema; and the worker checks its work before it
commits, so an honest worker with defaults is never slashed.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import numpy as np
import pytest
from support.coordinator import LocalCoordinator
from test_worker_sdk import JOB, FakeWorkerChain, fake_chain

from fedrelay.coordinator.verification import JobWorkbench
from fedrelay.protocol.batches import segment_indices
from fedrelay.protocol.data_commitment import DataCommitment, check_openings, decode_openings
from fedrelay.protocol.data_spec import EvaluationSpec, TabularSchema, WorkerData
from fedrelay.protocol.job_config import DataSpec, JobConfig
from fedrelay.protocol.wormhole import keccak256
from fedrelay.training import (
    SegmentOpening,
    TrainingConfig,
    Transcript,
    open_segment,
    verify_segment,
)
from fedrelay.training.data import Dataset
from fedrelay.training.datasets import FileSource, data_commitment, dataset_hash, example_layout
from fedrelay.training.datasets.published import published_shard
from fedrelay.training.torch_trainer import TorchClassificationTrainer, initial_model, mlp
from fedrelay.worker.sdk import (
    AssignedTask,
    DigitsShards,
    StateStore,
    TaskKey,
    TaskStage,
    WorkerNode,
)
from fedrelay.worker.sdk.progress import SilentProgress
from fedrelay.worker.sdk.shards import OwnData
from fedrelay.worker.sdk.steps import train as train_step
from fedrelay.worker.sdk.steps.answer import ExamplesUnavailable, opened_examples

PUBLISHED = JobConfig(
    seed=2,
    steps=4,
    checkpoint_every=2,
    batch_size=8,
    data=DataSpec(shards=3, partition="k_classes", classes_per_client=2, seed=5),
)
SPEC = DataSpec(shards=3, partition="k_classes", classes_per_client=2, seed=5)
PRIVATE = JobConfig(
    seed=2,
    steps=4,
    checkpoint_every=2,
    batch_size=8,
    data=WorkerData(
        schema=TabularSchema(features=(64,), dtype="float32", classes=10), replay="none"
    ),
    evaluation=EvaluationSpec(data_hash="ab" * 32),
)


async def _assign(
    coordinator: LocalCoordinator, chain_key: int, config: JobConfig, shard: int
) -> FakeWorkerChain:
    """Open a round of ``config`` and assign its task of ``shard`` to a fresh worker chain."""
    chain = fake_chain(chain_key)
    deadline = int(time.time()) + 300
    await coordinator.open_round(JOB, [chain.signer.worker], initial_model(mlp, 1), config,
                                 deadline)  # fmt: skip
    task_id = keccak256(b"t" + chain.worker_key)
    chain.tasks.append(AssignedTask(TaskKey(JOB, 0), task_id, shard, deadline))
    return chain


def _node(
    coordinator: LocalCoordinator, chain: FakeWorkerChain, data: OwnData | None, tmp: Path
) -> WorkerNode:
    return WorkerNode(chain, coordinator.client(chain.signer), data, StateStore(tmp / "w.json"),
                      progress=SilentProgress(), poll_interval=0.01)  # fmt: skip


@pytest.mark.parametrize("given", [None, DigitsShards(8)])
async def test_a_worker_with_defaults_trains_the_tasks_shard_of_the_jobs_partition(
    tmp_path: Path, given: DigitsShards | None
) -> None:
    """Whatever the worker was started with, shard 2 of the job's 3-shard partition is trained:
    the data root and count committed are that shard's, and the coordinator's replay of the
    committed transcript accepts it."""
    coordinator = LocalCoordinator()
    chain = await _assign(coordinator, 0x31, PUBLISHED, shard=2)
    node = _node(coordinator, chain, given, tmp_path)

    report = await node.step()

    assert report.committed == (TaskKey(JOB, 0),), node.state
    [commitment] = chain.commitments
    expected = published_shard(SPEC, 2)
    assert commitment.num_samples == len(expected)
    assert commitment.num_samples != len(DigitsShards(8).dataset(2))
    workbench = JobWorkbench(PUBLISHED)
    assert (
        commitment.data_root == workbench.shard_commitment(2).root == data_commitment(expected).root
    )
    assert workbench.shard_hash(2) == dataset_hash(expected)
    record = node.state.task(TaskKey(JOB, 0))
    assert record is not None
    blobs = [node.store.get_blob(h) for h in record.checkpoints]
    transcript = Transcript(b"", tuple(bytes.fromhex(h) for h in record.checkpoints))
    assert transcript.root == commitment.transcript_root
    trainer = TorchClassificationTrainer(mlp, workbench.shard(2))
    config: TrainingConfig = PUBLISHED.training
    for segment in range(config.segments):
        opening: SegmentOpening = open_segment(transcript, blobs, segment)
        verdict = verify_segment(trainer, config, commitment.transcript_root, segment, opening)
        assert verdict.accepted, verdict.reason


async def test_a_shard_outside_the_jobs_partition_is_refused(tmp_path: Path) -> None:
    coordinator = LocalCoordinator()
    chain = await _assign(coordinator, 0x32, PUBLISHED, shard=3)
    node = _node(coordinator, chain, None, tmp_path)
    report = await node.step()
    assert report.abandoned == (TaskKey(JOB, 0),)
    record = node.state.task(TaskKey(JOB, 0))
    assert record is not None
    assert "shard 3 outside the job's 0..2" in record.reason
    assert chain.commitments == []


async def test_the_worker_refuses_before_committing_what_its_task_did_not_ask_for(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker whose data disagrees with the job's shard (a bug, a stale cache) abandons the
    task instead of committing what the coordinator would reject and slash."""
    coordinator = LocalCoordinator()
    chain = await _assign(coordinator, 0x33, PUBLISHED, shard=1)
    wrong = published_shard(SPEC, 0)
    monkeypatch.setattr(train_step, "published_shard", lambda spec, index: wrong)
    node = _node(coordinator, chain, None, tmp_path)
    report = await node.step()
    assert report.abandoned == (TaskKey(JOB, 0),)
    record = node.state.task(TaskKey(JOB, 0))
    assert record is not None
    assert record.stage is TaskStage.ABANDONED
    assert "trained other data than shard 1 of the job's published partition" in record.reason
    assert chain.commitments == []


async def test_the_worker_refuses_to_commit_a_data_root_other_than_its_examples(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A data root that is not the one of the examples trained (a bug) is caught by the
    worker's own check before anything is committed."""
    coordinator = LocalCoordinator()
    chain = await _assign(coordinator, 0x36, PUBLISHED, shard=1)
    honest = train_step.data_commitment
    monkeypatch.setattr(
        train_step, "data_commitment", lambda data: DataCommitment(b"\x07" * 32, len(data))
    )
    node = _node(coordinator, chain, None, tmp_path)
    report = await node.step()
    assert report.abandoned == (TaskKey(JOB, 0),)
    record = node.state.task(TaskKey(JOB, 0))
    assert record is not None
    expected = honest(published_shard(SPEC, 1)).root.hex()
    assert f"would commit data root {'07' * 32}; the examples it trained on hash to {expected}" in (
        record.reason
    )
    assert chain.commitments == []


async def test_a_worker_data_job_trains_the_workers_own_files_and_commits_to_them(
    tmp_path: Path,
) -> None:
    """The commitment holds the root over the worker's own examples and their count; the
    update still weighs 1 (the job's rule: nothing checks a private count yet)."""
    rng = np.random.default_rng(4)
    own = tmp_path / "mine.npz"
    np.savez(own, features=rng.random((30, 64)).astype(np.float32),
             labels=rng.integers(0, 10, 30))  # fmt: skip
    coordinator = LocalCoordinator()
    chain = await _assign(coordinator, 0x34, PRIVATE, shard=0)
    node = _node(coordinator, chain, FileSource(own), tmp_path)
    report = await node.step()
    assert report.committed == (TaskKey(JOB, 0),), node.state
    [commitment] = chain.commitments
    record = node.state.task(TaskKey(JOB, 0))
    assert record is not None
    with np.load(own) as arrays:
        data = Dataset(arrays["features"], arrays["labels"].astype(np.int64))
    assert (commitment.data_root, commitment.num_samples) == (
        data_commitment(data).root,
        30,
    )
    assert record.data_root == commitment.data_root.hex()
    assert PRIVATE.update_weight(commitment.num_samples) == 1
    # The update was trained on the worker's file: the trainer bound to that data agrees.
    trainer = TorchClassificationTrainer(mlp, data)
    blobs = [node.store.get_blob(h) for h in record.checkpoints]
    transcript = Transcript(b"", tuple(bytes.fromhex(h) for h in record.checkpoints))
    opening = open_segment(transcript, blobs, 0)
    verdict = verify_segment(trainer, PRIVATE.training, commitment.transcript_root, 0, opening)
    assert verdict.accepted, verdict.reason


async def test_a_worker_opens_the_examples_a_segment_consumed_and_refuses_changed_data(
    tmp_path: Path,
) -> None:
    """Asked for a spot reveal, the worker reloads its own file, opens exactly the examples the
    segment drew under its committed root (what the coordinator checks), and opens nothing once
    its data changed since it committed."""
    rng = np.random.default_rng(5)
    own = tmp_path / "mine.npz"
    np.savez(own, features=rng.random((30, 64)).astype(np.float32),
             labels=rng.integers(0, 10, 30))  # fmt: skip
    revealed = PRIVATE.model_copy(
        update={"data": PRIVATE.data.model_copy(update={"replay": "segments"})}
    )
    coordinator = LocalCoordinator()
    chain = await _assign(coordinator, 0x37, revealed, shard=0)
    node = _node(coordinator, chain, FileSource(own), tmp_path)
    assert (await node.step()).committed == (TaskKey(JOB, 0),), node.state
    [commitment] = chain.commitments
    record = node.state.task(TaskKey(JOB, 0))
    assert record is not None

    wire = await opened_examples(node, record, 1)
    wanted = segment_indices(revealed.training, 1, 30).tolist()
    openings = decode_openings(wire)
    layout = example_layout(TabularSchema(features=(64,), dtype="float32", classes=10))
    committed = DataCommitment(commitment.data_root, commitment.num_samples)
    check_openings(committed, layout.kind, wanted, openings, layout.body_length)
    assert len(openings) == len(wanted) < 30  # only what the segment drew

    np.savez(own, features=rng.random((30, 64)).astype(np.float32),
             labels=rng.integers(0, 10, 30))  # fmt: skip
    with pytest.raises(ExamplesUnavailable, match="changed since it was committed"):
        await opened_examples(node, record, 1)


@pytest.mark.parametrize(
    ("source", "reason"),
    [
        (None, "trains on the workers' own data: start the worker with --data PATH"),
        ("wide", r"features of shape \(65,\) per example, the job's schema says \(64,\)"),
        ("missing", "no such file or folder"),
    ],
)
async def test_a_worker_data_job_is_refused_without_matching_data(
    tmp_path: Path, source: str | None, reason: str
) -> None:
    coordinator = LocalCoordinator()
    chain = await _assign(coordinator, 0x35, PRIVATE, shard=0)
    data: FileSource | None = None
    if source is not None:
        path = tmp_path / f"{source}.npz"
        if source == "wide":
            np.savez(path, features=np.zeros((4, 65), np.float32), labels=np.zeros(4, np.int64))
        data = FileSource(path)
    node = _node(coordinator, chain, data, tmp_path)
    report = await node.step()
    assert report.abandoned == (TaskKey(JOB, 0),)
    record = node.state.task(TaskKey(JOB, 0))
    assert record is not None
    assert record.reason is not None
    assert re.search(reason, record.reason), record.reason
    assert chain.commitments == []
