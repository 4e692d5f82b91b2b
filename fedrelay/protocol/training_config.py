"""The training configuration a worker commits to, its recipe, and its hash.

A task's :class:`TrainingConfig` is everything that decides its run besides the starting model
and the data: the seed, the step count, the batch size and the recipe (optimizer, learning-rate
schedule, gradient clipping, FedProx's proximal term). The coordinator replays a challenged
segment with the very same configuration, so its canonical bytes (:meth:`TrainingConfig.to_bytes`)
cover every field, the recipe's included, and a change of any of them changes the transcript's
``config_hash``.

The recipe parts are pydantic models (the job configuration embeds them as they are); the
learning-rate schedule is a pure function of the step within the task and the task's step count
(:meth:`TrainingConfig.learning_rate_at`), so a replay from any checkpoint knows it.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, fields
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from fedrelay.protocol.hashing import keccak256


class TrainingError(ValueError):
    """Training input (model, checkpoint, configuration) is unusable; the message says why.

    The root of the training package's errors (:mod:`fedrelay.training.errors`).
    """


class _Recipe(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SgdSpec(_Recipe):
    """Stochastic gradient descent: ``buf = momentum * buf + g``; ``w -= lr * buf`` (Nesterov:
    ``w -= lr * (g + momentum * buf)``); weight decay adds ``weight_decay * w`` to ``g``."""

    name: Literal["sgd"] = "sgd"
    momentum: float = Field(default=0.0, ge=0, lt=1)
    weight_decay: float = Field(default=0.0, ge=0)
    nesterov: bool = False

    def slots(self) -> tuple[str, ...]:
        """Optimizer state tensors kept per trainable parameter."""
        return ("momentum",) if self.momentum > 0 else ()


class AdamSpec(_Recipe):
    """Adam (L2 weight decay added to the gradient) or AdamW (decoupled decay:
    ``w -= lr * weight_decay * w`` before the Adam step)."""

    name: Literal["adam", "adamw"] = "adam"
    beta1: float = Field(default=0.9, ge=0, lt=1)
    beta2: float = Field(default=0.999, ge=0, lt=1)
    eps: float = Field(default=1e-8, gt=0)
    weight_decay: float = Field(default=0.0, ge=0)

    def slots(self) -> tuple[str, ...]:
        """Optimizer state tensors kept per trainable parameter."""
        return ("exp_avg", "exp_avg_sq")


OptimizerSpec = Annotated[SgdSpec | AdamSpec, Field(discriminator="name")]


class ConstantSchedule(_Recipe):
    """The learning rate as configured at every step."""

    kind: Literal["constant"] = "constant"

    def factor(self, step: int, total: int) -> float:
        """The multiplier of the learning rate at ``step`` of ``total``."""
        return 1.0


def _warmup(step: int, warmup_steps: int) -> float | None:
    return (step + 1) / warmup_steps if step < warmup_steps else None


def _progress(step: int, warmup_steps: int, total: int) -> float:
    return min(1.0, (step - warmup_steps) / max(1, total - warmup_steps))


class CosineSchedule(_Recipe):
    """Linear warmup over ``warmup_steps``, then a cosine from 1 down to ``min_factor`` at the
    task's last step."""

    kind: Literal["cosine"] = "cosine"
    warmup_steps: int = Field(default=0, ge=0)
    min_factor: float = Field(default=0.0, ge=0, le=1)

    def factor(self, step: int, total: int) -> float:
        """The multiplier of the learning rate at ``step`` of ``total``."""
        warm = _warmup(step, self.warmup_steps)
        if warm is not None:
            return warm
        cosine = 0.5 * (1.0 + math.cos(math.pi * _progress(step, self.warmup_steps, total)))
        return self.min_factor + (1.0 - self.min_factor) * cosine


class StepSchedule(_Recipe):
    """The learning rate times ``gamma`` every ``every`` steps."""

    kind: Literal["step"] = "step"
    every: int = Field(ge=1)
    gamma: float = Field(gt=0, le=1)

    def factor(self, step: int, total: int) -> float:
        """The multiplier of the learning rate at ``step`` of ``total``."""
        return float(self.gamma ** (step // self.every))


class LinearSchedule(_Recipe):
    """Linear warmup over ``warmup_steps``, then linear from 1 to ``end_factor`` at the task's
    last step."""

    kind: Literal["linear"] = "linear"
    warmup_steps: int = Field(default=0, ge=0)
    end_factor: float = Field(default=0.0, ge=0, le=1)

    def factor(self, step: int, total: int) -> float:
        """The multiplier of the learning rate at ``step`` of ``total``."""
        warm = _warmup(step, self.warmup_steps)
        if warm is not None:
            return warm
        return 1.0 + (self.end_factor - 1.0) * _progress(step, self.warmup_steps, total)


ScheduleSpec = Annotated[
    ConstantSchedule | CosineSchedule | StepSchedule | LinearSchedule,
    Field(discriminator="kind"),
]


_PLAIN_SGD = SgdSpec()
_CONSTANT = ConstantSchedule()


@dataclass(frozen=True)
class TrainingConfig:
    """Everything that decides a training run besides the starting model and the data.

    Attributes:
        seed: Seeds data order and any randomness in the model, per step.
        steps: Optimizer steps in the run.
        checkpoint_every: Steps between transcript checkpoints.
        batch_size: Examples per step.
        learning_rate: Base step size (the schedule multiplies it).
        data_hash: keccak256 of the training data blob, hex (binds the run to its data).
        optimizer: SGD (momentum, weight decay, Nesterov) or Adam / AdamW.
        schedule: The learning-rate schedule over the task's steps.
        grad_clip_norm: Largest global L2 norm of the gradient (None: no clipping).
        proximal_mu: FedProx's ``mu``: ``mu/2 * ||w - w_round||^2`` is added to the loss.
    """

    seed: int
    steps: int
    checkpoint_every: int
    batch_size: int = 16
    learning_rate: float = 0.1
    data_hash: str = ""
    optimizer: SgdSpec | AdamSpec = _PLAIN_SGD
    schedule: ConstantSchedule | CosineSchedule | StepSchedule | LinearSchedule = _CONSTANT
    grad_clip_norm: float | None = None
    proximal_mu: float = 0.0

    def __post_init__(self) -> None:
        if self.steps < 1 or self.checkpoint_every < 1 or self.batch_size < 1:
            raise TrainingError(
                "steps, checkpoint_every and batch_size must all be >= 1 "
                f"(got {self.steps}, {self.checkpoint_every}, {self.batch_size})"
            )
        if not self.learning_rate > 0:
            raise TrainingError(f"need learning_rate > 0, got {self.learning_rate}")
        if not 0 <= self.seed < 2**63:
            raise TrainingError(f"seed must be in 0..2^63-1, got {self.seed}")
        if self.grad_clip_norm is not None and not self.grad_clip_norm > 0:
            raise TrainingError(f"grad_clip_norm must be > 0 or None, got {self.grad_clip_norm}")
        if not self.proximal_mu >= 0 or not math.isfinite(self.proximal_mu):
            raise TrainingError(f"proximal_mu must be a finite number >= 0, got {self.proximal_mu}")

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

    def learning_rate_at(self, step: int) -> float:
        """The learning rate of ``step`` (0-based, within the task) under the schedule."""
        return self.learning_rate * self.schedule.factor(step, self.steps)

    def as_dict(self) -> dict[str, object]:
        """Every field as JSON values (the recipe parts as their JSON objects)."""
        out: dict[str, object] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            out[f.name] = value.model_dump(mode="json") if isinstance(value, BaseModel) else value
        return out

    def to_bytes(self) -> bytes:
        """The configuration blob: canonical JSON of every field, keys sorted."""
        return json.dumps(self.as_dict(), sort_keys=True, separators=(",", ":")).encode()

    def config_hash(self) -> bytes:
        """keccak256 of :meth:`to_bytes` (the ``config_hash`` of a task)."""
        return keccak256(self.to_bytes())
