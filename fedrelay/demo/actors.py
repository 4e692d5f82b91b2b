"""The demo's dishonest workers: each lies in one way for the coordinator's checks to catch.

They are actors of the demo's scenario (``fedrelay demo --dishonest MODE``), not test doubles,
and not part of the worker SDK's public surface. Each subclass of
:class:`~fedrelay.worker.sdk.node.WorkerNode` lies in one specific way, and otherwise behaves
as an honest node (it uploads, commits and answers challenges), so the coordinator's checks
have something to catch (:data:`DISHONEST_WORKERS` maps the modes to them):

- ``update``, :class:`TamperedUpdateWorker`: trains and builds its transcript honestly but
  uploads and commits another update (the trained weights scaled), so the model of the
  transcript's final checkpoint, opened in the answer on the last segment, is not the
  committed update.
- ``transcript``, :class:`TamperedTranscriptWorker`: commits a transcript with one checkpoint
  altered (and the root recomputed over it), so replaying the segment that ends there fails.
- ``skip``, :class:`SkipStepsWorker` (a job on the workers' own data): trains only half of each
  segment's steps but commits a transcript of full length, every checkpoint stamped with the
  step the configuration puts it at, so only a replay of a segment (on the examples it opens)
  shows the missing steps.
- ``otherdata``, :class:`OtherDataWorker` (a job on the workers' own data): commits the data
  root and count of its own examples but trains on other data (the same examples with noise
  added), so its transcript is well formed and its revealed examples are the committed ones,
  and only the replay on them differs.
- ``sum``, :class:`CorruptSumWorker` (secure aggregation): sends and commits its honest masked
  input plus a large random ring vector, so the unmasked sum is out of range; the coordinator's
  sum audit (or a challenge) opens its masks and finds it. In a plain round it is honest.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace

import numpy as np

from fedrelay.ports.worker_chain import TaskKey
from fedrelay.protocol.secagg import MaskedInput
from fedrelay.training import blob_hash, decode_blob, encode_blob, merkle_root
from fedrelay.training.data import Dataset
from fedrelay.training.datasets import data_commitment
from fedrelay.training.trainer import STEP_KEY
from fedrelay.worker.sdk.errors import TaskRefused
from fedrelay.worker.sdk.node import TrainedUpdate, WorkerNode
from fedrelay.worker.sdk.steps.train import TaskInputs, train


class TamperedUpdateWorker(WorkerNode):
    """Uploads and commits the honest update multiplied by ``UPDATE_FACTOR``.

    Its transcript and checkpoints stay honest, so every replay passes; the coordinator catches
    it by comparing the update with the final checkpoint's model.
    """

    UPDATE_FACTOR = -3.0

    def _finalise_update(self, trained: TrainedUpdate) -> TrainedUpdate:
        tensors = decode_blob(trained.update_blob)
        if "masked" in tensors:  # a masked input: corrupt the ring vector instead
            tensors = {**tensors, "masked": np.asarray(tensors["masked"]) ^ np.int64(1 << 40)}
        else:
            tensors = {
                name: (np.asarray(value, dtype=np.float32) * np.float32(self.UPDATE_FACTOR))
                for name, value in tensors.items()
            }
        return replace(trained, update_blob=encode_blob(tensors))


class TamperedTranscriptWorker(WorkerNode):
    """Commits a transcript whose middle checkpoint's model weights are perturbed."""

    PERTURBATION = 0.5

    def _finalise_update(self, trained: TrainedUpdate) -> TrainedUpdate:
        blobs = list(trained.checkpoints)
        index = max(1, len(blobs) // 2)
        tensors = decode_blob(blobs[index])
        tensors = {
            name: (
                np.asarray(value) + np.asarray(self.PERTURBATION, dtype=value.dtype)
                if name.startswith("model/")
                else value
            )
            for name, value in tensors.items()
        }
        blobs[index] = encode_blob(tensors)
        return _with_checkpoints(trained, blobs)


def _with_checkpoints(trained: TrainedUpdate, blobs: list[bytes]) -> TrainedUpdate:
    """``trained`` with these checkpoints and the transcript root recomputed over them."""
    root = merkle_root([blob_hash(b) for b in blobs])
    return replace(trained, checkpoints=tuple(blobs), transcript_root=root)


class SkipStepsWorker(WorkerNode):
    """Trains half of each segment's steps and stamps every checkpoint with the full step.

    It runs the job's recipe with every segment shortened to ``checkpoint_every // 2`` steps,
    then rewrites each checkpoint's step to the one the job's configuration puts it at: the
    transcript has the right number of checkpoints, checkpoint 0 is the round's model, the last
    one is at the final step and the update is its model, so every check short of a replay
    passes. Replaying any segment from its opening checkpoint runs the full segment and ends
    elsewhere.
    """

    async def _local_training(self, key: TaskKey, inputs: TaskInputs) -> TrainedUpdate:
        job = inputs.job
        config = job.training_config(len(inputs.data))
        if config.checkpoint_every < 2:
            raise TaskRefused(f"{key}: a segment of one step has no step to skip")
        half = config.checkpoint_every // 2
        shortened = job.model_copy(
            update={"steps": config.segments * half, "checkpoint_every": half}
        )
        trained = await train(self, key, replace(inputs, job=shortened))
        blobs = [trained.checkpoints[0]]
        for segment, blob in enumerate(trained.checkpoints[1:]):
            first, count = config.segment_steps(segment)
            tensors = decode_blob(blob)
            tensors[STEP_KEY] = np.array([first + count], dtype=np.int64)
            blobs.append(encode_blob(tensors))
        return _with_checkpoints(trained, blobs)


class OtherDataWorker(WorkerNode):
    """Commits its own examples' data root and count but trains on them with noise added.

    ``NOISE`` is the standard deviation of the Gaussian noise added to every feature (seeded,
    so the same on every run).
    """

    NOISE = 0.3
    NOISE_SEED = 13

    async def _local_training(self, key: TaskKey, inputs: TaskInputs) -> TrainedUpdate:
        own = inputs.data
        if not isinstance(own, Dataset):
            raise TaskRefused(f"{key}: noise is added to features; this job's data is text")
        rng = np.random.default_rng(self.NOISE_SEED)
        noise = rng.normal(0.0, self.NOISE, own.features.shape).astype(np.float32)
        other = Dataset(own.features + noise, own.labels)
        trained = await train(self, key, replace(inputs, data=other))
        committed = await asyncio.to_thread(data_commitment, own)
        return replace(trained, data_root=committed.root, num_samples=committed.count)


class CorruptSumWorker(WorkerNode):
    """Adds a large random ring vector to its masked input (secure rounds only).

    Its transcript, its reveals and its mask opening stay honest; what breaks is the sum: the
    unmasked total carries the random vector, out of the range honest inputs can reach, so the
    coordinator audits the round's survivors and finds that its masked input is not its final
    checkpoint's update plus its masks (as a challenge of its task would).
    """

    def finalise_masked(self, masked: MaskedInput) -> MaskedInput:
        noise = np.random.default_rng().integers(0, 2**64, masked.vector.shape, dtype=np.uint64)
        return MaskedInput(masked.client_id, masked.num_examples, masked.vector + noise)


#: The demo's dishonest workers by mode (``--dishonest``).
DISHONEST_WORKERS: dict[str, type[WorkerNode]] = {
    "update": TamperedUpdateWorker,
    "transcript": TamperedTranscriptWorker,
    "skip": SkipStepsWorker,
    "otherdata": OtherDataWorker,
    "sum": CorruptSumWorker,
}
