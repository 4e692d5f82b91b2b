"""The training configuration a worker commits to, and its hash."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

from fedrelay.protocol.hashing import keccak256


class TrainingError(ValueError):
    """Training input (model, checkpoint, configuration) is unusable; the message says why.

    The root of the training package's errors (:mod:`fedrelay.training.errors`).
    """


@dataclass(frozen=True)
class TrainingConfig:
    """Everything that decides a training run besides the starting model and the data.

    Attributes:
        seed: Seeds data order and any randomness in the model, per step.
        steps: Optimizer steps in the run.
        checkpoint_every: Steps between transcript checkpoints.
        batch_size: Examples per step.
        learning_rate: SGD step size.
        momentum: SGD momentum (0 disables it).
        data_hash: keccak256 of the training data blob, hex (binds the run to its data).
    """

    seed: int
    steps: int
    checkpoint_every: int
    batch_size: int = 16
    learning_rate: float = 0.1
    momentum: float = 0.0
    data_hash: str = ""

    def __post_init__(self) -> None:
        if self.steps < 1 or self.checkpoint_every < 1 or self.batch_size < 1:
            raise TrainingError(
                "steps, checkpoint_every and batch_size must all be >= 1 "
                f"(got {self.steps}, {self.checkpoint_every}, {self.batch_size})"
            )
        if not self.learning_rate > 0 or not 0.0 <= self.momentum < 1.0:
            raise TrainingError(
                f"need learning_rate > 0 and 0 <= momentum < 1, got {self.learning_rate}, "
                f"{self.momentum}"
            )
        if not 0 <= self.seed < 2**63:
            raise TrainingError(f"seed must be in 0..2^63-1, got {self.seed}")

    @property
    def segments(self) -> int:
        """Segments in the transcript (the last one may be shorter)."""
        return -(-self.steps // self.checkpoint_every)

    def segment_steps(self, segment: int) -> tuple[int, int]:
        """``(first_step, step_count)`` of ``segment``."""
        if not 0 <= segment < self.segments:
            raise TrainingError(f"segment {segment} outside 0..{self.segments - 1}")
        first = segment * self.checkpoint_every
        return first, min(self.checkpoint_every, self.steps - first)

    def to_bytes(self) -> bytes:
        """The configuration blob: canonical JSON with sorted keys."""
        return json.dumps(asdict(self), sort_keys=True, separators=(",", ":")).encode()

    def config_hash(self) -> bytes:
        """keccak256 of :meth:`to_bytes` (the ``config_hash`` of a task)."""
        return keccak256(self.to_bytes())
