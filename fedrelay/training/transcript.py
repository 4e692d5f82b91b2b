"""Training transcripts: checkpoints every N steps, committed by the Merkle root of their hashes.

Checkpoints ``c_0`` (the assigned model) .. ``c_K``; leaf ``h_i = keccak256(blob(c_i))``. A
challenge names a segment ``i``; the worker answers with ``c_i`` and ``c_{i+1}`` and their
Merkle proofs (:func:`open_segment`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from fedrelay.protocol.blobs import encode_blob
from fedrelay.protocol.hashing import blob_hash
from fedrelay.protocol.merkle import MerkleProof, merkle_proof, merkle_root
from fedrelay.protocol.training_config import TrainingConfig
from fedrelay.training.errors import TrainingError
from fedrelay.training.trainer import Checkpoint, Trainer, step_of


@dataclass(frozen=True)
class Transcript:
    """The committed record of one training run.

    Attributes:
        config_hash: keccak256 of the training configuration blob.
        leaves: keccak256 of each checkpoint blob, ``c_0`` first.
    """

    config_hash: bytes
    leaves: tuple[bytes, ...]

    @property
    def root(self) -> bytes:
        """The transcript root committed on chain."""
        return merkle_root(self.leaves)

    def proof(self, index: int) -> MerkleProof:
        """The Merkle proof of checkpoint ``index``."""
        return merkle_proof(self.leaves, index)


class TranscriptBuilder:
    """Collects checkpoint blobs in order and produces the :class:`Transcript`."""

    def __init__(self, config: TrainingConfig) -> None:
        """Start an empty transcript for ``config``."""
        self._config = config
        self._blobs: list[bytes] = []

    def add(self, checkpoint: Mapping[str, npt.NDArray[np.generic]]) -> bytes:
        """Append the next checkpoint; return its blob.

        Raises:
            TrainingError: The checkpoint's step is not the next expected one.
        """
        index = len(self._blobs)
        expected = min(index * self._config.checkpoint_every, self._config.steps)
        if index > self._config.segments or step_of(checkpoint) != expected:
            raise TrainingError(
                f"checkpoint {index} is at step {step_of(checkpoint)}, expected {expected}"
            )
        blob = encode_blob(checkpoint)
        self._blobs.append(blob)
        return blob

    @property
    def blobs(self) -> tuple[bytes, ...]:
        """The checkpoint blobs so far."""
        return tuple(self._blobs)

    def build(self) -> Transcript:
        """The transcript, once every checkpoint up to the last step is in."""
        if len(self._blobs) != self._config.segments + 1:
            raise TrainingError(
                f"transcript has {len(self._blobs)} checkpoints, needs {self._config.segments + 1}"
            )
        return Transcript(self._config.config_hash(), tuple(blob_hash(b) for b in self._blobs))


@dataclass(frozen=True)
class TrainingRun:
    """A finished run: the final checkpoint, the transcript and every checkpoint blob."""

    final: Checkpoint
    transcript: Transcript
    blobs: tuple[bytes, ...]


def train_with_transcript(
    trainer: Trainer, model: Mapping[str, npt.NDArray[np.float32]], config: TrainingConfig
) -> TrainingRun:
    """Train ``model`` for ``config.steps`` steps, checkpointing every ``checkpoint_every``."""
    if config.data_hash and config.data_hash != trainer.data_hash():
        raise TrainingError("the configuration names other training data than the trainer holds")
    builder = TranscriptBuilder(config)
    checkpoint = trainer.initial_checkpoint(model, config)
    builder.add(checkpoint)
    for segment in range(config.segments):
        _, count = config.segment_steps(segment)
        checkpoint = trainer.advance(checkpoint, count, config)
        builder.add(checkpoint)
    return TrainingRun(checkpoint, builder.build(), builder.blobs)


@dataclass(frozen=True)
class SegmentOpening:
    """A worker's answer to a challenge on segment ``index``."""

    index: int
    start_blob: bytes
    end_blob: bytes
    start_proof: MerkleProof
    end_proof: MerkleProof


def open_segment(transcript: Transcript, blobs: Sequence[bytes], index: int) -> SegmentOpening:
    """The opening of segment ``index`` from a worker's stored checkpoint blobs."""
    if not 0 <= index < len(transcript.leaves) - 1:
        raise TrainingError(f"segment {index} outside 0..{len(transcript.leaves) - 2}")
    return SegmentOpening(
        index,
        blobs[index],
        blobs[index + 1],
        transcript.proof(index),
        transcript.proof(index + 1),
    )
