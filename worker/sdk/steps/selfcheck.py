"""The worker's check of its own work before it commits: is this what the task asked for?

A commitment the coordinator cannot reproduce costs the worker its stake, so before a trained
update goes further the worker checks it against the task, from the job's configuration alone:

* the data: on published data, the examples trained are the task's shard of the job's
  partition (same data hash); the committed data root and count are those of the examples
  trained (the shard's, or the worker's own);
* the transcript: one checkpoint per segment plus checkpoint 0, which holds the round's model at
  step 0; the last one is at the configuration's final step;
* the update: the final checkpoint's trainable tensors (before any masking; a frozen tensor,
  such as a LoRA job's base, is never part of an update).

Anything else refuses the task (it is abandoned, not committed), saying what differed: a missed
task is never worse than a slashed one.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import numpy.typing as npt

from fedrelay.ports.worker_chain import TaskKey
from fedrelay.training import BlobError, decode_blob, model_of, step_of
from fedrelay.training.data import DataError
from fedrelay.training.datasets import data_commitment, dataset_hash
from fedrelay.training.datasets.published import published_shard
from fedrelay.training.trainer import trainable_tensors
from fedrelay.worker.sdk.errors import TaskRefused
from fedrelay.worker.sdk.steps.train import TaskInputs, TrainedUpdate

__all__ = ["check_trained"]


def _same(
    left: Mapping[str, npt.NDArray[np.generic]], right: Mapping[str, npt.NDArray[np.generic]]
) -> bool:
    return left.keys() == right.keys() and all(np.array_equal(left[k], right[k]) for k in left)


def check_trained(key: TaskKey, shard: int, inputs: TaskInputs, trained: TrainedUpdate) -> None:
    """Refuse ``trained`` unless it is exactly what task ``key`` (shard ``shard``) asked for.

    Raises:
        TaskRefused: The data, the weight, the transcript or the update differs from what the
            job's configuration and the round's model prescribe (the message says which).
    """
    job = inputs.job
    try:  # the task's recipe: with local_epochs its steps follow from the data's example count
        config = job.training_config(len(inputs.data))
    except ValueError as exc:
        raise TaskRefused(f"the training configuration of {key} is unusable: {exc}") from None
    published = job.published_data
    if published is not None:
        try:
            expected = published_shard(published, shard)
        except DataError as exc:
            raise TaskRefused(f"{key}: {exc}") from None
        if dataset_hash(inputs.data) != dataset_hash(expected):
            raise TaskRefused(
                f"{key} trained other data than shard {shard} of the job's published partition"
            )
    committed = data_commitment(inputs.data)
    if trained.num_samples != committed.count:
        raise TaskRefused(
            f"{key} would commit {trained.num_samples} examples; it trained on {committed.count}"
        )
    if trained.data_root != committed.root:
        raise TaskRefused(
            f"{key} would commit data root {trained.data_root.hex()}; the examples it trained on "
            f"hash to {committed.root.hex()}"
        )
    if config.data_hash and config.data_hash != dataset_hash(inputs.data):
        raise TaskRefused(f"the configuration of {key} names other data than it trained")
    if len(trained.checkpoints) != config.segments + 1:
        raise TaskRefused(
            f"{key} has {len(trained.checkpoints)} checkpoints; the configuration asks for "
            f"{config.segments + 1}"
        )
    try:
        first = decode_blob(trained.checkpoints[0])
        last = decode_blob(trained.checkpoints[-1])
        update = decode_blob(trained.update_blob)
    except BlobError as exc:
        raise TaskRefused(f"{key}: a kept checkpoint does not decode: {exc}") from None
    if step_of(first) != 0 or not _same(model_of(first), inputs.model):
        raise TaskRefused(f"{key}: checkpoint 0 is not the round's model at step 0")
    if step_of(last) != config.steps:
        raise TaskRefused(
            f"{key}: the last checkpoint is at step {step_of(last)}, not {config.steps}"
        )
    if not _same(update, trainable_tensors(model_of(last), job.model.trainable)):
        raise TaskRefused(f"{key}: the update is not the final checkpoint's trainable tensors")
