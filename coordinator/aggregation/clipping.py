"""Norm clipping of client deltas: works with every rule, secure aggregation included."""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from fedrelay.coordinator.aggregation.errors import AggregationError
from fedrelay.coordinator.aggregation.updates import ClientUpdate, Vector


@dataclass(frozen=True)
class NormClip:
    """Scale a delta down so its L2 norm is at most ``max_norm``.

    Attributes:
        max_norm: The largest L2 norm an update may have, > 0.
    """

    max_norm: float

    def __post_init__(self) -> None:
        if not self.max_norm > 0:
            raise AggregationError(f"clipping norm must be > 0, got {self.max_norm}")

    def clip_vector(self, delta: Vector) -> Vector:
        """The clipped copy of ``delta`` (unchanged when already within the norm)."""
        wide = delta.astype(np.float64)
        return self.scaled(delta, float(np.sqrt(np.dot(wide, wide))))

    def scaled(self, delta: Vector, norm: float) -> Vector:
        """``delta`` (a whole delta or a slice of one) clipped as a delta of L2 norm ``norm``."""
        if norm <= self.max_norm:
            return delta.copy()
        return (delta.astype(np.float64) * (self.max_norm / norm)).astype(np.float32)

    def clip(self, update: ClientUpdate) -> ClientUpdate:
        """The update with its delta clipped."""
        return replace(update, delta=self.clip_vector(update.delta))
