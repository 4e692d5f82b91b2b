"""The default trainer: any zoo (or bundle) model under the job's recipe, replayable step by step.

Every step depends only on the checkpoint, the configuration and the step number: the batch is
drawn from a per-epoch permutation seeded by ``(seed, epoch)`` (:mod:`fedrelay.protocol.batches`,
which the verifier reads too) and torch's generator is reseeded from ``(seed, step)`` before the
step (dropout draws from it), so any segment can be replayed from its first checkpoint. In
deterministic mode torch's deterministic algorithms are switched on while a trainer runs (the
previous setting and torch's generator state are restored afterwards); on CPU a replay is then
bit-exact, and on CUDA it is with the cuBLAS workspace fixed (see
docs/learning.md, "Determinism on CPU and GPU").

Objectives: ``classification`` (cross-entropy of a :class:`~fedrelay.training.data.Dataset`'s
labels) and ``language_model`` (mean next-token cross-entropy over the windows of a
:class:`~fedrelay.training.data.TokenDataset`).

A checkpoint holds ``model/<name>`` for every tensor of the model (frozen ones included, so
checkpoint 0 is the round's model), ``optim/<param>/<slot>`` for every trainable parameter
(:mod:`fedrelay.training.optim`), ``anchor/<param>`` (the round's model, the FedProx anchor) for
every trainable parameter when ``proximal_mu > 0``, and the task-local ``step``. Keeping the
anchor in every checkpoint lets a replay of any segment recompute the proximal term from the
segment's own opening; the start-checkpoint check ties checkpoint 0's anchor to the round's model
and every replayed segment carries it forward unchanged. Frozen tensors (``trainable(name)``
false: a LoRA model's base, a bundle's ``frozen`` prefixes) get no gradient, no state, and are
copied unchanged into every checkpoint.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

from fedrelay.protocol.batches import batch_indices
from fedrelay.protocol.hashing import keccak256
from fedrelay.protocol.model_spec import Objective
from fedrelay.protocol.training_config import SgdSpec, TrainingConfig
from fedrelay.training.data import DataError, Dataset, OpenedData, TokenDataset
from fedrelay.training.errors import TrainingError
from fedrelay.training.models import ModelFactory, mlp, seeded_tensors
from fedrelay.training.optim import add_proximal, apply_update, clip_global_norm, slot_names
from fedrelay.training.trainer import (
    ANCHOR_PREFIX,
    MODEL_PREFIX,
    OPTIM_PREFIX,
    STEP_KEY,
    Checkpoint,
    ModelTensors,
    model_of,
    step_of,
)

__all__ = [
    "Evaluation",
    "ModelFactory",
    "TorchClassificationTrainer",
    "TorchTrainer",
    "batch_indices",
    "data_hash",
    "default_device",
    "evaluate",
    "initial_model",
    "mlp",
    "start_checkpoint",
]

TrainingData = Dataset | TokenDataset

EVAL_BATCH = 512
"""Examples per forward pass when evaluating."""


def initial_model(factory: ModelFactory, seed: int) -> ModelTensors:
    """Seeded initial parameters of ``factory``'s model as named float32 arrays."""
    return seeded_tensors(factory, seed)


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


def data_hash(data: TrainingData) -> str:
    """keccak256 (hex) of a data set's blob (:func:`fedrelay.training.datasets.dataset_hash`:
    features and labels, or tokens), the hash the coordinator rebuilds a shard's from."""
    from fedrelay.training.datasets import dataset_hash

    return dataset_hash(data)


@dataclass(frozen=True)
class Evaluation:
    """Loss, and accuracy (of labels, or of next tokens) and perplexity where they apply."""

    loss: float
    accuracy: float | None = None
    perplexity: float | None = None


def _all_trainable(name: str) -> bool:
    return True


def _check_objective(objective: Objective, data: TrainingData) -> None:
    wanted = TokenDataset if objective == "language_model" else Dataset
    if not isinstance(data, wanted):
        raise TrainingError(
            f"a {objective} model trains on a {wanted.__name__}, got a {type(data).__name__}"
        )


def _loaded(factory: ModelFactory, model: Mapping[str, npt.NDArray[np.float32]]) -> nn.Module:
    module = _build(factory)
    expected = module.state_dict()
    if sorted(expected) != sorted(model):
        raise TrainingError(f"model tensors {sorted(model)} do not fit {sorted(expected)}")
    for name, value in expected.items():
        if tuple(value.shape) != tuple(model[name].shape):
            raise TrainingError(f"tensor {name!r} has shape {model[name].shape}")
    module.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in model.items()})
    return module


def _trained_parameters(
    module: nn.Module, trainable: Callable[[str], bool]
) -> dict[str, nn.Parameter]:
    params = {}
    for name, param in module.named_parameters():
        if trainable(name):
            params[name] = param
        else:
            param.requires_grad_(False)
    if not params:
        raise TrainingError("the model has no trainable parameter")
    return params


def start_checkpoint(
    factory: ModelFactory,
    trainable: Callable[[str], bool],
    model: Mapping[str, npt.NDArray[np.float32]],
    config: TrainingConfig | None = None,
) -> Checkpoint:
    """Step 0 of a task on ``model`` under ``config``'s recipe (plain SGD when None): the model,
    zero optimizer state for every trainable parameter and, with a proximal term, the anchor
    (the model's trainable tensors). It depends on no data, so the coordinator builds it alone.

    Raises:
        TrainingError: ``model`` does not fit the factory's module.
    """
    module = _loaded(factory, model)
    optimizer = config.optimizer if config is not None else SgdSpec()
    checkpoint: Checkpoint = {
        MODEL_PREFIX + k: np.asarray(v, dtype=np.float32) for k, v in model.items()
    }
    for name, param in _trained_parameters(module, trainable).items():
        for slot in slot_names(optimizer):
            checkpoint[f"{OPTIM_PREFIX}{name}/{slot}"] = np.zeros(
                tuple(param.shape), dtype=np.float32
            )
        if config is not None and config.proximal_mu > 0:
            checkpoint[ANCHOR_PREFIX + name] = np.asarray(model[name], dtype=np.float32)
    checkpoint[STEP_KEY] = np.array([0], dtype=np.int64)
    return checkpoint


class TorchTrainer:
    """Trains a model under a job's recipe on one client's data (see the module docstring)."""

    def __init__(
        self,
        factory: ModelFactory,
        objective: Objective,
        data: TrainingData | OpenedData,
        *,
        trainable: Callable[[str], bool] = _all_trainable,
        device: str = "cpu",
        deterministic: bool = True,
    ) -> None:
        """Bind a model factory to a client's data.

        Args:
            factory: Builds the (uninitialised) model; parameters come from checkpoints.
            objective: ``classification`` or ``language_model``.
            data: The client's training examples (a TokenDataset for a language model), or
                the examples a client opened of its own data (:class:`OpenedData`: batches are
                drawn over its committed size, from the opened examples only).
            trainable: Whether the tensor of a name trains (the job's ``model.trainable``).
            device: ``"cpu"`` or ``"cuda"``.
            deterministic: Use torch's deterministic algorithms while training.

        Raises:
            TrainingError: No examples, data of the other objective, or CUDA asked for and
                absent.
        """
        if len(data) == 0:
            raise TrainingError("a trainer needs at least one training example")
        self._size = len(data)
        self._opened = data if isinstance(data, OpenedData) else None
        data = data.data if isinstance(data, OpenedData) else data
        _check_objective(objective, data)
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise TrainingError(f"device {device!r} requested but CUDA is not available")
        if deterministic and device.startswith("cuda"):
            # cuBLAS needs a fixed workspace for deterministic results; set before first use.
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        self._factory = factory
        self._objective = objective
        self._data = data
        self._trainable = trainable
        self._device = torch.device(device)
        self._deterministic = deterministic
        if isinstance(data, Dataset):
            # Arrays a loader maps read-only (Parquet, CSV) are copied: torch needs writable ones.
            self._features = torch.from_numpy(np.require(data.features, requirements="W"))
            self._features = self._features.to(self._device)
            self._labels = torch.from_numpy(np.require(data.labels, requirements="W"))
            self._labels = self._labels.to(self._device)
        self._data_hash = data_hash(data)

    @property
    def deterministic(self) -> bool:
        """True when replays are bit-exact: deterministic mode on the CPU."""
        return self._deterministic and self._device.type == "cpu"

    @property
    def objective(self) -> Objective:
        """What the model is trained for."""
        return self._objective

    def data_hash(self) -> str:
        """keccak256 (hex) of this client's data blob."""
        return self._data_hash

    def trainable(self, name: str) -> bool:
        """Whether the tensor ``name`` trains."""
        return self._trainable(name)

    def _module(self, model: Mapping[str, npt.NDArray[np.float32]]) -> nn.Module:
        return _loaded(self._factory, model).to(self._device)

    def _trained_parameters(self, module: nn.Module) -> dict[str, nn.Parameter]:
        return _trained_parameters(module, self._trainable)

    def initial_checkpoint(
        self, model: Mapping[str, npt.NDArray[np.float32]], config: TrainingConfig | None = None
    ) -> Checkpoint:
        """Step 0 of a task on ``model`` under ``config``'s recipe (plain SGD when None): the
        model, zero optimizer state and, with a proximal term, the anchor (the model)."""
        return start_checkpoint(self._factory, self._trainable, model, config)

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
        """Run ``steps`` optimizer steps from ``checkpoint`` (see the module docstring)."""
        with self._isolated():
            return self._advance(checkpoint, steps, config)

    def _tensor(self, checkpoint: Checkpoint, key: str, shape: tuple[int, ...]) -> torch.Tensor:
        if key not in checkpoint:
            raise TrainingError(f"checkpoint lacks {key!r}")
        value = checkpoint[key]
        if tuple(value.shape) != shape:
            raise TrainingError(
                f"checkpoint tensor {key!r} has shape {tuple(value.shape)}, the parameter {shape}"
            )
        return torch.from_numpy(np.array(value, dtype=np.float32)).to(self._device)

    def _loss(self, module: nn.Module, rows: npt.NDArray[np.int64]) -> torch.Tensor:
        if isinstance(self._data, TokenDataset):
            inputs, targets = self._data.windows(rows)
            logits = module(torch.from_numpy(inputs).to(self._device))
            target = torch.from_numpy(targets).to(self._device)
            return nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.ravel())
        index = torch.from_numpy(rows).to(self._device)
        return nn.functional.cross_entropy(module(self._features[index]), self._labels[index])

    def _advance(self, checkpoint: Checkpoint, steps: int, config: TrainingConfig) -> Checkpoint:
        if steps < 0:
            raise TrainingError(f"steps must be >= 0, got {steps}")
        start = step_of(checkpoint)
        model = model_of(checkpoint)
        module = self._module(model)
        params = self._trained_parameters(module)
        names = sorted(params)
        state = {
            name: {
                slot: self._tensor(checkpoint, f"{OPTIM_PREFIX}{name}/{slot}", tuple(p.shape))
                for slot in slot_names(config.optimizer)
            }
            for name, p in params.items()
        }
        anchors = (
            {
                n: self._tensor(checkpoint, ANCHOR_PREFIX + n, tuple(p.shape))
                for n, p in params.items()
            }
            if config.proximal_mu > 0
            else {}
        )
        module.train()
        for step in range(start, start + steps):
            torch.manual_seed(_step_seed(config.seed, step))
            rows = batch_indices(config.seed, step, self._size, config.batch_size)
            if self._opened is not None:
                try:
                    rows = self._opened.locate(rows)
                except DataError as exc:
                    raise TrainingError(str(exc)) from None
            loss = self._loss(module, rows)
            grads = dict(
                zip(names, torch.autograd.grad(loss, [params[n] for n in names]), strict=True)
            )
            with torch.no_grad():
                add_proximal(grads, params, anchors, config.proximal_mu)
                clip_global_norm(grads, config.grad_clip_norm)
            apply_update(
                config.optimizer, params, grads, state, config.learning_rate_at(step), step
            )
        trained = module.state_dict()
        result: Checkpoint = {
            # Frozen tensors are the checkpoint's, whatever the forward pass did to buffers.
            MODEL_PREFIX + k: (
                trained[k].detach().cpu().numpy().astype(np.float32)
                if self._trainable(k)
                else np.asarray(v, dtype=np.float32)
            )
            for k, v in model.items()
        }
        for name, slots in state.items():
            for slot, value in slots.items():
                result[f"{OPTIM_PREFIX}{name}/{slot}"] = value.cpu().numpy().astype(np.float32)
        for name in anchors:
            result[ANCHOR_PREFIX + name] = np.asarray(checkpoint[ANCHOR_PREFIX + name], np.float32)
        result[STEP_KEY] = np.array([start + steps], dtype=np.int64)
        return result

    def train(
        self, model: Mapping[str, npt.NDArray[np.float32]], config: TrainingConfig
    ) -> ModelTensors:
        """Train from ``model`` for ``config.steps`` steps without keeping a transcript."""
        start = self.initial_checkpoint(model, config)
        return model_of(self.advance(start, config.steps, config))

    def evaluate(
        self, model: Mapping[str, npt.NDArray[np.float32]], data: TrainingData
    ) -> Evaluation:
        """Loss, accuracy and (language models) perplexity of ``model`` on ``data``."""
        return evaluate(self._factory, model, data, str(self._device), objective=self._objective)


def evaluate(
    factory: ModelFactory,
    model: Mapping[str, npt.NDArray[np.float32]],
    data: TrainingData,
    device: str = "cpu",
    *,
    objective: Objective | None = None,
) -> Evaluation:
    """Mean cross-entropy and accuracy of ``model`` on ``data``; for a language model (a
    TokenDataset) next-token accuracy and the perplexity ``exp(loss)`` too.

    Raises:
        TrainingError: ``data`` is not of ``objective`` (when given), or empty.
    """
    objective = objective or (
        "language_model" if isinstance(data, TokenDataset) else "classification"
    )
    _check_objective(objective, data)
    if len(data) == 0:
        raise TrainingError("evaluation needs at least one example")
    module = _build(factory)
    module.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in model.items()})
    module.to(device).eval()
    total_loss, correct, count = 0.0, 0, 0
    with torch.no_grad():
        for first in range(0, len(data), EVAL_BATCH):
            rows = np.arange(first, min(first + EVAL_BATCH, len(data)), dtype=np.int64)
            if isinstance(data, TokenDataset):
                inputs, targets = data.windows(rows)
                logits = module(torch.from_numpy(inputs).to(device))
                logits = logits.reshape(-1, logits.shape[-1])
                labels = torch.from_numpy(targets).to(device).ravel()
            else:
                logits = module(torch.from_numpy(data.features[rows]).to(device))
                labels = torch.from_numpy(data.labels[rows]).to(device)
            total_loss += float(nn.functional.cross_entropy(logits, labels, reduction="sum"))
            correct += int((logits.argmax(dim=1) == labels).sum())
            count += int(labels.shape[0])
    loss = total_loss / count
    accuracy = correct / count
    if objective == "language_model":
        return Evaluation(loss, accuracy, math.exp(min(loss, 700.0)))
    return Evaluation(loss, accuracy)


class TorchClassificationTrainer(TorchTrainer):
    """A classifier's :class:`TorchTrainer` (every tensor trains): the older call shape."""

    def __init__(
        self,
        factory: ModelFactory,
        data: Dataset,
        device: str = "cpu",
        deterministic: bool = True,
    ) -> None:
        """Bind a classifier's factory to a client's data (see :class:`TorchTrainer`)."""
        super().__init__(
            factory, "classification", data, device=device, deterministic=deterministic
        )
