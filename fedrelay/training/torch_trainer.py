"""The default trainer: PyTorch classification with SGD, replayable step by step.

Every step depends only on the checkpoint, the configuration and the step number: the batch is
drawn from a per-epoch permutation seeded by ``(seed, epoch)`` and torch's generator is reseeded
from ``(seed, step)`` before the step, so any segment can be replayed from its first checkpoint.
In deterministic mode torch's deterministic algorithms are switched on while a trainer runs
(the previous setting and torch's generator state are restored afterwards); on CPU a replay is
then bit-exact.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

from fedrelay.protocol.blobs import encode_blob
from fedrelay.protocol.hashing import keccak256
from fedrelay.protocol.training_config import TrainingConfig
from fedrelay.training.data import Dataset
from fedrelay.training.errors import TrainingError
from fedrelay.training.trainer import (
    MODEL_PREFIX,
    OPTIM_PREFIX,
    STEP_KEY,
    Checkpoint,
    ModelTensors,
    model_of,
    step_of,
)

ModelFactory = Callable[[], nn.Module]


def mlp(inputs: int = 64, hidden: int = 64, classes: int = 10) -> nn.Module:
    """A two-layer perceptron, the default model for the digits data."""
    return nn.Sequential(nn.Linear(inputs, hidden), nn.ReLU(), nn.Linear(hidden, classes))


def initial_model(factory: ModelFactory, seed: int) -> ModelTensors:
    """Seeded initial parameters of ``factory``'s model as named float32 arrays."""
    generator_state = torch.random.get_rng_state()
    try:
        torch.manual_seed(seed)
        module = factory()
    finally:
        torch.random.set_rng_state(generator_state)
    return {k: v.detach().cpu().numpy().astype(np.float32) for k, v in module.state_dict().items()}


def _build(factory: ModelFactory) -> nn.Module:
    # Building a module draws initial weights from torch's generator; checkpoints overwrite them,
    # so keep the caller's generator state untouched.
    with torch.random.fork_rng(devices=[]):
        return factory()


def default_device() -> str:
    """``"cuda"`` when a CUDA device is present, otherwise ``"cpu"``."""
    return "cuda" if torch.cuda.is_available() else "cpu"


def _step_seed(seed: int, step: int) -> int:
    digest = keccak256(seed.to_bytes(8, "big") + step.to_bytes(8, "big"))
    return int.from_bytes(digest[:8], "big") >> 1


def batch_indices(seed: int, step: int, size: int, batch_size: int) -> npt.NDArray[np.int64]:
    """The example indices of ``step``: a slice of the seeded permutation of its epoch."""
    per_epoch = -(-size // batch_size)
    epoch, position = divmod(step, per_epoch)
    order = np.random.default_rng(np.random.SeedSequence([seed, epoch])).permutation(size)
    return order[position * batch_size : (position + 1) * batch_size].astype(np.int64)


@dataclass(frozen=True)
class Evaluation:
    """Loss and accuracy of a model on a data set."""

    loss: float
    accuracy: float


class TorchClassificationTrainer:
    """Trains a classifier with cross-entropy and (momentum) SGD on one client's data."""

    def __init__(
        self,
        factory: ModelFactory,
        data: Dataset,
        device: str = "cpu",
        deterministic: bool = True,
    ) -> None:
        """Bind a model factory to a client's data.

        Args:
            factory: Builds the (uninitialised) model; parameters come from checkpoints.
            data: The client's training examples.
            device: ``"cpu"`` or ``"cuda"``.
            deterministic: Use torch's deterministic algorithms while training.
        """
        if len(data) == 0:
            raise TrainingError("a trainer needs at least one training example")
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise TrainingError(f"device {device!r} requested but CUDA is not available")
        if deterministic and device.startswith("cuda"):
            # cuBLAS needs a fixed workspace for deterministic results; set before first use.
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        self._factory = factory
        self._data = data
        self._device = torch.device(device)
        self._deterministic = deterministic
        self._features = torch.from_numpy(data.features).to(self._device)
        self._labels = torch.from_numpy(data.labels).to(self._device)
        self._data_hash = keccak256(
            encode_blob({"features": data.features, "labels": data.labels})
        ).hex()

    @property
    def deterministic(self) -> bool:
        """True when replays are bit-exact: deterministic mode on the CPU."""
        return self._deterministic and self._device.type == "cpu"

    def data_hash(self) -> str:
        """keccak256 (hex) of this client's data blob."""
        return self._data_hash

    def _module(self, model: Mapping[str, npt.NDArray[np.float32]]) -> nn.Module:
        module = _build(self._factory)
        expected = module.state_dict()
        if sorted(expected) != sorted(model):
            raise TrainingError(f"model tensors {sorted(model)} do not fit {sorted(expected)}")
        for name, value in expected.items():
            if tuple(value.shape) != tuple(model[name].shape):
                raise TrainingError(f"tensor {name!r} has shape {model[name].shape}")
        module.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in model.items()})
        return module.to(self._device)

    def initial_checkpoint(self, model: Mapping[str, npt.NDArray[np.float32]]) -> Checkpoint:
        """Step 0: the model, zero momentum buffers for every trainable parameter."""
        module = self._module(model)
        checkpoint: Checkpoint = {
            MODEL_PREFIX + k: np.asarray(v, dtype=np.float32) for k, v in model.items()
        }
        for name, param in module.named_parameters():
            checkpoint[OPTIM_PREFIX + name] = np.zeros(tuple(param.shape), dtype=np.float32)
        checkpoint[STEP_KEY] = np.array([0], dtype=np.int64)
        return checkpoint

    @contextmanager
    def _isolated(self) -> Iterator[None]:
        """Deterministic algorithms on and a private generator state, both restored after."""
        was_on = torch.are_deterministic_algorithms_enabled()
        warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
        devices = [self._device.index or 0] if self._device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            if self._deterministic:
                torch.use_deterministic_algorithms(True)
            try:
                yield
            finally:
                torch.use_deterministic_algorithms(was_on, warn_only=warn_only)

    def advance(self, checkpoint: Checkpoint, steps: int, config: TrainingConfig) -> Checkpoint:
        """Run ``steps`` SGD steps from ``checkpoint`` (see the module docstring for seeding)."""
        with self._isolated():
            return self._advance(checkpoint, steps, config)

    def _advance(self, checkpoint: Checkpoint, steps: int, config: TrainingConfig) -> Checkpoint:
        if steps < 0:
            raise TrainingError(f"steps must be >= 0, got {steps}")
        start = step_of(checkpoint)
        module = self._module(model_of(checkpoint))
        params = dict(module.named_parameters())
        buffers = {}
        for name, param in params.items():
            if OPTIM_PREFIX + name not in checkpoint:
                raise TrainingError(f"checkpoint lacks optimizer state for {name!r}")
            state = checkpoint[OPTIM_PREFIX + name]
            if tuple(state.shape) != tuple(param.shape):
                raise TrainingError(
                    f"optimizer state for {name!r} has shape {tuple(state.shape)}, the parameter "
                    f"{tuple(param.shape)}"
                )
            buffers[name] = torch.from_numpy(np.array(checkpoint[OPTIM_PREFIX + name])).to(
                self._device
            )
        module.train()
        for step in range(start, start + steps):
            torch.manual_seed(_step_seed(config.seed, step))
            rows = torch.from_numpy(
                batch_indices(config.seed, step, len(self._data), config.batch_size)
            ).to(self._device)
            loss = nn.functional.cross_entropy(module(self._features[rows]), self._labels[rows])
            grads = torch.autograd.grad(loss, list(params.values()))
            with torch.no_grad():
                for (name, param), grad in zip(params.items(), grads, strict=True):
                    buffers[name].mul_(config.momentum).add_(grad)
                    param.sub_(buffers[name], alpha=config.learning_rate)
        result: Checkpoint = {
            MODEL_PREFIX + k: v.detach().cpu().numpy().astype(np.float32)
            for k, v in module.state_dict().items()
        }
        for name, buffer in buffers.items():
            result[OPTIM_PREFIX + name] = buffer.cpu().numpy().astype(np.float32)
        result[STEP_KEY] = np.array([start + steps], dtype=np.int64)
        return result

    def train(
        self, model: Mapping[str, npt.NDArray[np.float32]], config: TrainingConfig
    ) -> ModelTensors:
        """Train from ``model`` for ``config.steps`` steps without keeping a transcript."""
        return model_of(self.advance(self.initial_checkpoint(model), config.steps, config))

    def evaluate(self, model: Mapping[str, npt.NDArray[np.float32]], data: Dataset) -> Evaluation:
        """Mean cross-entropy and accuracy of ``model`` on ``data``."""
        return evaluate(self._factory, model, data, str(self._device))


def evaluate(
    factory: ModelFactory,
    model: Mapping[str, npt.NDArray[np.float32]],
    data: Dataset,
    device: str = "cpu",
) -> Evaluation:
    """Mean cross-entropy and accuracy of ``model`` on ``data``."""
    module = _build(factory)
    module.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in model.items()})
    module.to(device).eval()
    with torch.no_grad():
        logits = module(torch.from_numpy(data.features).to(device))
        labels = torch.from_numpy(data.labels).to(device)
        loss = float(nn.functional.cross_entropy(logits, labels))
        accuracy = float((logits.argmax(dim=1) == labels).float().mean())
    return Evaluation(loss, accuracy)
