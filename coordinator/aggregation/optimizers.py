"""Server optimisers: how the combined delta moves the global model.

FedAvg, FedAvgM, FedAdam and FedYogi. The combined delta is the step direction (minus the
pseudo-gradient). Optimiser state is an
explicit value passed in and returned, never kept in the optimiser object.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from fedrelay.coordinator.aggregation.errors import AggregationError
from fedrelay.coordinator.aggregation.rules import Float64s
from fedrelay.coordinator.aggregation.updates import Vector


@dataclass(frozen=True)
class ServerState:
    """Optimiser state carried from round to round.

    Attributes:
        rounds: Rounds applied so far.
        slots: Named float64 vectors (momentum, first and second moments), empty at the start.
    """

    rounds: int = 0
    slots: dict[str, Float64s] = field(default_factory=dict)

    def slot(self, name: str, dimension: int) -> Float64s:
        """A copy of slot ``name``, or zeros when the optimiser has not written it yet."""
        if name not in self.slots:
            return np.zeros(dimension, dtype=np.float64)
        value = self.slots[name]
        if value.shape != (dimension,):
            raise AggregationError(
                f"server state slot {name!r} has shape {value.shape}, model has ({dimension},)"
            )
        return value.copy()


class ServerOptimizer(Protocol):
    """Applies a combined delta to the global parameters."""

    def apply(
        self, params: Vector, delta: Vector, state: ServerState
    ) -> tuple[Vector, ServerState]:
        """Return the new global parameters and the new state."""
        ...


def _check(params: Vector, delta: Vector) -> None:
    if params.shape != delta.shape:
        raise AggregationError(f"delta shape {delta.shape} does not match model {params.shape}")


@dataclass(frozen=True)
class ServerSgd:
    """Plain FedAvg: ``x + lr * delta`` in float32 (``lr = 1`` adopts the averaged model)."""

    learning_rate: float = 1.0

    def apply(
        self, params: Vector, delta: Vector, state: ServerState
    ) -> tuple[Vector, ServerState]:
        _check(params, delta)
        # float32 throughout: one rounding per coordinate, and no wide copies of the model.
        step = delta if self.learning_rate == 1.0 else delta * np.float32(self.learning_rate)
        new: Vector = np.add(params, step, dtype=np.float32)
        return new, ServerState(state.rounds + 1, dict(state.slots))


@dataclass(frozen=True)
class ServerMomentum:
    """FedAvgM: ``v = beta * v + delta; x = x + lr * v``."""

    learning_rate: float = 1.0
    momentum: float = 0.9

    def apply(
        self, params: Vector, delta: Vector, state: ServerState
    ) -> tuple[Vector, ServerState]:
        _check(params, delta)
        velocity = self.momentum * state.slot("velocity", params.shape[0]) + delta
        new = params.astype(np.float64) + self.learning_rate * velocity
        return new.astype(np.float32), ServerState(state.rounds + 1, {"velocity": velocity})


@dataclass(frozen=True)
class ServerAdaptive:
    """FedAdam and FedYogi (Reddi et al., "Adaptive Federated Optimization").

    ``m = b1 m + (1 - b1) d``; Adam: ``v = b2 v + (1 - b2) d^2``; Yogi:
    ``v = v - (1 - b2) d^2 sign(v - d^2)``; then ``x = x + lr * m / (sqrt(v) + tau)``.

    Attributes:
        variant: ``"adam"`` or ``"yogi"``.
        learning_rate: Server step size.
        beta1: First-moment decay.
        beta2: Second-moment decay.
        tau: Adaptivity floor added to ``sqrt(v)``.
    """

    variant: str = "adam"
    learning_rate: float = 0.01
    beta1: float = 0.9
    beta2: float = 0.99
    tau: float = 1e-3

    def __post_init__(self) -> None:
        if self.variant not in ("adam", "yogi"):
            raise AggregationError(
                f"adaptive variant must be 'adam' or 'yogi', not {self.variant!r}"
            )

    def apply(
        self, params: Vector, delta: Vector, state: ServerState
    ) -> tuple[Vector, ServerState]:
        _check(params, delta)
        d = delta.astype(np.float64)
        first = self.beta1 * state.slot("m", d.shape[0]) + (1.0 - self.beta1) * d
        second = state.slot("v", d.shape[0])
        squared = d * d
        if self.variant == "adam":
            second = self.beta2 * second + (1.0 - self.beta2) * squared
        else:
            second = second - (1.0 - self.beta2) * squared * np.sign(second - squared)
        step = self.learning_rate * first / (np.sqrt(second) + self.tau)
        new = params.astype(np.float64) + step
        return new.astype(np.float32), ServerState(state.rounds + 1, {"m": first, "v": second})
