"""The demo's cheats on the workers' own data commit well-formed work that only a replay exposes.

A worker that skips steps (:class:`SkipStepsWorker`) and one that trains on other data than it
commits (:class:`OtherDataWorker`) both pass the worker's own check before committing: the
committed data root and count are those of its own examples, the transcript has a checkpoint
per segment at the step the configuration puts it at, checkpoint 0 is the round's model and the
update is the last checkpoint's model. Replaying any segment on the worker's own examples (what
a spot reveal opens) ends elsewhere than the committed checkpoint.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from support.coordinator import LocalCoordinator
from test_worker_task_data import PRIVATE, _assign

from fedrelay.demo.actors import OtherDataWorker, SkipStepsWorker
from fedrelay.training import Transcript, decode_blob, open_segment, step_of, verify_segment
from fedrelay.training.data import Dataset
from fedrelay.training.datasets import FileSource, data_commitment
from fedrelay.training.torch_trainer import TorchClassificationTrainer, mlp
from fedrelay.worker.sdk import StateStore, TaskKey, WorkerNode
from fedrelay.worker.sdk.progress import SilentProgress

JOB_KEY = TaskKey(5, 0)


@pytest.mark.parametrize("actor", [SkipStepsWorker, OtherDataWorker])
async def test_a_private_data_cheat_commits_well_formed_work_a_replay_rejects(
    tmp_path: Path, actor: type[WorkerNode]
) -> None:
    rng = np.random.default_rng(9)
    data = Dataset(rng.random((40, 64)).astype(np.float32), rng.integers(0, 10, 40))
    np.savez(tmp_path / "mine.npz", features=data.features, labels=data.labels)
    coordinator = LocalCoordinator()
    chain = await _assign(coordinator, 0x41, PRIVATE, shard=0)
    node = actor(chain, coordinator.client(chain.signer), FileSource(tmp_path / "mine.npz"),
                 StateStore(tmp_path / "w.json"), progress=SilentProgress(),
                 poll_interval=0.01)  # fmt: skip

    assert (await node.step()).committed == (JOB_KEY,), node.state
    [commitment] = chain.commitments
    committed = data_commitment(data)
    assert (commitment.data_root, commitment.num_samples) == (committed.root, 40)
    record = node.state.task(JOB_KEY)
    assert record is not None
    config = PRIVATE.training
    blobs = [node.store.get_blob(h) for h in record.checkpoints]
    assert len(blobs) == config.segments + 1
    assert [step_of(decode_blob(b)) for b in blobs] == [
        s * config.checkpoint_every for s in range(config.segments + 1)
    ]
    transcript = Transcript(b"", tuple(bytes.fromhex(h) for h in record.checkpoints))
    assert transcript.root == commitment.transcript_root
    trainer = TorchClassificationTrainer(mlp, data)
    for segment in range(config.segments):
        opening = open_segment(transcript, blobs, segment)
        verdict = verify_segment(trainer, config, commitment.transcript_root, segment, opening)
        assert not verdict.accepted, segment
