"""The Trainer protocol users implement for their own model and data.

A trainer moves a *checkpoint* (named tensors: model parameters, optimizer state, the FedProx
anchor when there is one, and the step counter) forward by a number of steps. Replay
verification needs only this: the same checkpoint, configuration and step range must give the
same next checkpoint.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Protocol

import numpy as np
import numpy.typing as npt

from fedrelay.protocol.training_config import TrainingConfig
from fedrelay.training.errors import TrainingError

Checkpoint = dict[str, npt.NDArray[np.generic]]
ModelTensors = dict[str, npt.NDArray[np.float32]]

MODEL_PREFIX = "model/"
OPTIM_PREFIX = "optim/"
ANCHOR_PREFIX = "anchor/"
STEP_KEY = "step"


class Trainer(Protocol):
    """What a worker plugs in to train its model on its data."""

    @property
    def deterministic(self) -> bool:
        """True when replays are bit-exact (CPU, deterministic algorithms)."""
        ...

    def data_hash(self) -> str:
        """keccak256 (hex) of the training data this trainer uses."""
        ...

    def initial_checkpoint(
        self, model: Mapping[str, npt.NDArray[np.float32]], config: TrainingConfig | None = None
    ) -> Checkpoint:
        """The checkpoint at step 0 for the assigned model (fresh optimizer state for
        ``config``'s recipe; plain SGD when None)."""
        ...

    def advance(self, checkpoint: Checkpoint, steps: int, config: TrainingConfig) -> Checkpoint:
        """Run ``steps`` optimizer steps from ``checkpoint``; return the new checkpoint."""
        ...


def step_of(checkpoint: Mapping[str, npt.NDArray[np.generic]]) -> int:
    """The step counter stored in a checkpoint."""
    if STEP_KEY not in checkpoint or checkpoint[STEP_KEY].shape != (1,):
        raise TrainingError("checkpoint has no step counter")
    return int(checkpoint[STEP_KEY][0])


def model_of(checkpoint: Mapping[str, npt.NDArray[np.generic]]) -> ModelTensors:
    """The model tensors of a checkpoint, with their plain names."""
    return {
        name[len(MODEL_PREFIX) :]: np.asarray(value, dtype=np.float32)
        for name, value in checkpoint.items()
        if name.startswith(MODEL_PREFIX)
    }


def trainable_tensors(
    model: Mapping[str, npt.NDArray[np.float32]], trainable: Callable[[str], bool]
) -> ModelTensors:
    """The tensors of ``model`` that train: what an update carries (a LoRA update holds only its
    adapters; frozen tensors stay the round model's)."""
    return {
        name: np.asarray(value, dtype=np.float32)
        for name, value in model.items()
        if trainable(name)
    }
