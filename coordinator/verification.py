"""Checking a round's work: committed update blobs, sampled transcript challenges and replays.

- :func:`read_update` checks an uploaded update against its on-chain commitment.
- :func:`challenge_sample` draws, from the round's public seed, which transcripts are
  challenged and which segment of each, so anyone can recompute the sample. A challenged task is
  also asked for its last segment, whose end is the final checkpoint ``c_K``.
- :func:`check_final_checkpoint` checks that an update is exactly the model of the final
  checkpoint of the committed transcript (leaf ``K`` under the root, at the last step).
- :class:`JobWorkbench` rebuilds a job's model, held-out set and data shards from its
  configuration, evaluates models and replays challenged segments with
  :func:`fedrelay.training.verify_segment`.
- a challenge answer's Merkle proofs are read with :func:`fedrelay.protocol.merkle.decode_proof`,
  the one codec the worker SDK writes with.

An update blob is the canonical safetensors blob of the worker's trained model tensors (the
model part of its final checkpoint, plain names); the coordinator computes the delta itself.
Replaying a segment only shows that the transcript is honest; the final-checkpoint check ties
the committed update to it, so an honest transcript next to another update is caught too. Both
need an answer, so they cover the challenged tasks only (``challenge_rate`` is the sample).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING

import numpy as np

from fedrelay.coordinator.aggregation import ParameterLayout, Vector
from fedrelay.protocol.job_config import JobConfig
from fedrelay.protocol.rounds import Assignment
from fedrelay.protocol.wormhole import keccak256
from fedrelay.training import (
    BlobError,
    MerkleProof,
    ModelTensors,
    SegmentOpening,
    TrainingConfig,
    TrainingError,
    Verdict,
    blob_hash,
    decode_blob,
    encode_blob,
    model_of,
    step_of,
    verify_proof,
    verify_segment,
)

if TYPE_CHECKING:
    from torch import nn

    from fedrelay.training.data import Dataset


class UpdateRejection(Exception):
    """A committed update or transcript failed a check; the message is the recorded reason."""


@dataclass(frozen=True)
class ChallengeDraw:
    """One sampled challenge: the task and the transcript segment asked for.

    Attributes:
        assignment: The challenged task.
        segment: The segment asked for.
        replay: Whether the answer is replayed. False for the extra challenge of the last
            segment, asked only to open the final checkpoint (see :func:`challenge_sample`).
    """

    assignment: Assignment
    segment: int
    replay: bool = True


def read_update(blob: bytes | None, expected_hash: bytes, layout: ParameterLayout) -> Vector:
    """The flat parameters of an uploaded update, checked against its commitment.

    Args:
        blob: The uploaded bytes, or None when nothing was uploaded.
        expected_hash: The ``update_hash`` committed on chain.
        layout: The global model's layout.

    Raises:
        UpdateRejection: Missing, hash mismatch, not a canonical blob, or not this model.
    """
    if blob is None:
        raise UpdateRejection("the committed update was never uploaded")
    actual = keccak256(blob)
    if actual != expected_hash:
        raise UpdateRejection(
            f"uploaded update hashes to {actual.hex()}, the chain commitment is "
            f"{expected_hash.hex()}"
        )
    try:
        tensors = decode_blob(blob)
        return layout.flatten(tensors)
    except (BlobError, ValueError) as exc:
        raise UpdateRejection(f"the update does not fit the job's model: {exc}") from None


def challenge_sample(
    seed: bytes, committed: Sequence[Assignment], rate: float, segments: int
) -> list[ChallengeDraw]:
    """The challenges of a round, drawn from its public seed.

    Each committed task is challenged when ``keccak256(seed || "challenge" || worker_id)``, read
    as a fraction, falls below ``rate``; the segment is the next 4 bytes modulo ``segments``.
    The answer on the last segment (``segments - 1``) opens the final checkpoint, which
    :func:`check_final_checkpoint` compares with the update; when another segment was drawn, the
    last one is challenged as well, right after it, with ``replay=False``.
    """
    draws = []
    last = segments - 1
    for assignment in committed:
        digest = keccak256(seed + b"challenge" + assignment.worker.worker_id)
        if int.from_bytes(digest[:8], "big") / 2**64 < rate:
            segment = int.from_bytes(digest[8:12], "big") % segments
            draws.append(ChallengeDraw(assignment, segment))
            if segment != last:
                draws.append(ChallengeDraw(assignment, last, replay=False))
    return draws


def check_final_checkpoint(
    update: bytes, blob: bytes, proof: MerkleProof, root: bytes, config: TrainingConfig
) -> None:
    """Check that ``update`` is the model of the committed transcript's final checkpoint.

    The final checkpoint ``c_K`` (``K = config.segments``) must be leaf ``K`` of the ``K + 1``
    leaves under ``root``, stand at step ``config.steps``, and its model tensors
    (:func:`~fedrelay.training.model_of`: plain names, float32) must encode to exactly the
    update's canonical bytes.

    Args:
        update: The uploaded update blob (already checked against its commitment).
        blob: The checkpoint blob the worker opened as ``c_K``.
        proof: Its Merkle proof.
        root: The committed transcript root.
        config: The job's training configuration.

    Raises:
        UpdateRejection: The opening is not the final checkpoint of the committed transcript,
            or the update is not its model; the message says which.
    """
    final = config.segments
    if (proof.index, proof.leaf_count) != (final, final + 1):
        raise UpdateRejection(
            f"the opened checkpoint is leaf {proof.index} of {proof.leaf_count}, the final "
            f"checkpoint is leaf {final} of {final + 1}"
        )
    if not verify_proof(blob_hash(blob), proof, root):
        raise UpdateRejection("the final checkpoint is not in the committed transcript")
    try:
        checkpoint = decode_blob(blob)
        step = step_of(checkpoint)
        model = encode_blob(model_of(checkpoint))
    except (BlobError, TrainingError) as exc:
        raise UpdateRejection(f"the final checkpoint blob is malformed: {exc}") from None
    if step != config.steps:
        raise UpdateRejection(
            f"the final checkpoint is at step {step}, the task trains {config.steps} steps"
        )
    if model != update:
        raise UpdateRejection(
            f"the committed update {keccak256(update).hex()} is not the model of the "
            f"transcript's final checkpoint (step {step}), whose model is "
            f"{keccak256(model).hex()}: {_difference(update, model_of(checkpoint))}"
        )


def _difference(update: bytes, model: ModelTensors) -> str:
    try:
        tensors = decode_blob(update)
    except BlobError as exc:
        return f"the update is not a tensor blob ({exc})"
    if sorted(tensors) != sorted(model):
        return "their tensor names differ"
    worst = 0.0
    for name, value in model.items():
        other = np.asarray(tensors[name])
        if (other.dtype, other.shape) != (value.dtype, value.shape):
            return (
                f"tensor {name!r} is {other.dtype} {other.shape}, the checkpoint's "
                f"{value.dtype} {value.shape}"
            )
        gap = np.abs(other.astype(np.float64) - value.astype(np.float64))
        worst = max(worst, float(gap.max()) if gap.size else 0.0)
    return f"largest difference {worst:g}"


class JobWorkbench:
    """A job's model, held-out set and shards, rebuilt from its configuration (torch inside)."""

    def __init__(self, config: JobConfig) -> None:
        """Prepare (data and torch load lazily, on first use)."""
        self.config = config

    def initial_model(self) -> ModelTensors:
        """The seeded initial model of the job (what ``fedrelay job post`` uploads)."""
        from fedrelay.training.torch_trainer import initial_model

        return initial_model(self._factory_fn(), self.config.model.init_seed)

    def _factory_fn(self) -> Callable[[], nn.Module]:
        from fedrelay.training.torch_trainer import mlp

        spec = self.config.model
        return lambda: mlp(spec.inputs, spec.hidden, spec.classes)

    @cached_property
    def _split(self) -> tuple[Dataset, Dataset]:
        # scikit-learn (the digits data) loads on first use, not with the coordinator.
        from fedrelay.training.data import digits, split_train_test

        data = self.config.data
        return split_train_test(digits(), data.test_fraction, data.seed)

    @property
    def held_out(self) -> Dataset:
        """The held-out set models are scored and evaluated on."""
        return self._split[1]

    @cached_property
    def _shards(self) -> list[Dataset]:
        from fedrelay.training.data import partition_dirichlet, partition_iid, partition_k_classes

        data = self.config.data
        train = self._split[0]
        if data.partition == "iid":
            parts = partition_iid(train.labels, data.shards, data.seed)
        elif data.partition == "k_classes":
            parts = partition_k_classes(
                train.labels, data.shards, data.classes_per_client, data.seed
            )
        else:
            parts = partition_dirichlet(train.labels, data.shards, data.alpha, data.seed)
        limit = data.max_examples_per_shard
        return [train.subset(p[:limit] if limit else p) for p in parts]

    def shard(self, index: int) -> Dataset:
        """The data of shard ``index``.

        Raises:
            UpdateRejection: The job has no such shard.
        """
        if not 0 <= index < len(self._shards):
            raise UpdateRejection(f"shard {index} outside 0..{len(self._shards) - 1}")
        return self._shards[index]

    def shard_hash(self, index: int) -> str:
        """keccak256 (hex) of shard ``index``'s data blob, as a worker's trainer computes it."""
        shard = self.shard(index)
        return keccak256(encode_blob({"features": shard.features, "labels": shard.labels})).hex()

    def training_config(self) -> TrainingConfig:
        """The training configuration every task of the job uses."""
        return self.config.training_config()

    def evaluate(self, model: ModelTensors) -> tuple[float, float]:
        """``(loss, accuracy)`` of ``model`` on the held-out set."""
        from fedrelay.training.torch_trainer import evaluate

        result = evaluate(self._factory_fn(), model, self.held_out)
        return result.loss, result.accuracy

    def held_out_loss(self, layout: ParameterLayout) -> Callable[[Vector], float]:
        """Loss of a flat parameter vector on the held-out set (for scoring)."""

        def loss(params: Vector) -> float:
            return self.evaluate(layout.unflatten(params))[0]

        return loss

    def replay(
        self,
        job_id: int,
        round_number: int,
        assignment: Assignment,
        segment: int,
        opening: SegmentOpening,
    ) -> Verdict:
        """Replay a challenged segment of ``assignment``'s transcript.

        Returns:
            The verdict; a malformed answer is a rejection, not an error.
        """
        from fedrelay.training.torch_trainer import TorchClassificationTrainer

        commitment = assignment.commitment
        if commitment is None:
            return Verdict(False, "the task has no commitment")
        trainer = TorchClassificationTrainer(
            self._factory_fn(),
            self.shard(assignment.shard),
        )
        config = self.training_config()
        try:
            return verify_segment(
                trainer,
                config,
                commitment.transcript_root,
                segment,
                opening,
                self.config.replay_tolerance,
            )
        except TrainingError as exc:
            return Verdict(False, f"replay failed: {exc}")


def delta_of(trained: Vector, params: Vector) -> Vector:
    """``trained - params`` as float32 (computed in float64, as the simulation does)."""
    return (trained.astype(np.float64) - params.astype(np.float64)).astype(np.float32)
