"""Client updates as flat float32 vectors, and the layout that maps named tensors onto them."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from fedrelay.coordinator.aggregation.errors import AggregationError

Vector = npt.NDArray[np.float32]


@dataclass(frozen=True)
class ClientUpdate:
    """One client's contribution to a round.

    Attributes:
        client_id: Stable identifier; aggregation visits clients sorted by it.
        delta: Flat float32 vector, the client's parameters minus the round's global parameters.
        num_examples: Training examples behind the update (the FedAvg weight), at least 1.
    """

    client_id: str
    delta: Vector
    num_examples: int

    def __post_init__(self) -> None:
        if self.delta.dtype != np.float32 or self.delta.ndim != 1:
            raise AggregationError(
                f"update of {self.client_id!r} must be a flat float32 vector, "
                f"got dtype {self.delta.dtype} with shape {self.delta.shape}"
            )
        if self.num_examples < 1:
            raise AggregationError(
                f"update of {self.client_id!r} has num_examples={self.num_examples}; need >= 1"
            )
        if not np.all(np.isfinite(self.delta)):
            raise AggregationError(f"update of {self.client_id!r} contains NaN or infinity")


def delta_between(trained: Vector, params: Vector) -> Vector:
    """``trained - params`` as float32 (computed in float64, as the simulation does)."""
    wide = np.subtract(trained, params, dtype=np.float64)  # one wide temporary, not three
    return wide.astype(np.float32)


def ordered(updates: Sequence[ClientUpdate], dimension: int) -> list[ClientUpdate]:
    """Check a round's updates and return them sorted by client id (the fixed summation order).

    Args:
        updates: The round's updates, in any order.
        dimension: The length every delta must have.

    Returns:
        The updates sorted by ``client_id``.

    Raises:
        AggregationError: No updates, a duplicate client id, or a delta of the wrong length.
    """
    if not updates:
        raise AggregationError("no updates to aggregate")
    seen: set[str] = set()
    for update in updates:
        if update.client_id in seen:
            raise AggregationError(f"client {update.client_id!r} sent more than one update")
        seen.add(update.client_id)
        if update.delta.shape[0] != dimension:
            raise AggregationError(
                f"update of {update.client_id!r} has {update.delta.shape[0]} parameters, "
                f"the model has {dimension}"
            )
    return sorted(updates, key=lambda u: u.client_id)


@dataclass(frozen=True)
class ParameterLayout:
    """Names and shapes of a model's tensors, in sorted-name order, for flattening.

    Attributes:
        entries: ``(name, shape)`` pairs sorted by name.
    """

    entries: tuple[tuple[str, tuple[int, ...]], ...]

    @classmethod
    def of(cls, tensors: Mapping[str, npt.NDArray[np.generic]]) -> ParameterLayout:
        """The layout of a named tensor dict."""
        return cls(tuple((name, tuple(tensors[name].shape)) for name in sorted(tensors)))

    @property
    def size(self) -> int:
        """Total number of scalars."""
        return sum(int(np.prod(shape, dtype=np.int64)) for _, shape in self.entries)

    def flatten(self, tensors: Mapping[str, npt.NDArray[np.generic]]) -> Vector:
        """Concatenate named tensors (cast to float32) into one vector in layout order."""
        if sorted(tensors) != [name for name, _ in self.entries]:
            raise AggregationError(
                f"tensor names {sorted(tensors)} do not match the layout "
                f"{[name for name, _ in self.entries]}"
            )
        parts = []
        for name, shape in self.entries:
            if tuple(tensors[name].shape) != shape:
                raise AggregationError(
                    f"tensor {name!r} has shape {tensors[name].shape}, layout says {shape}"
                )
            parts.append(np.asarray(tensors[name], dtype=np.float32).reshape(-1))
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.float32)

    def unflatten(self, vector: Vector) -> dict[str, Vector]:
        """Split a flat vector back into named float32 tensors."""
        if vector.shape != (self.size,):
            raise AggregationError(f"vector has shape {vector.shape}, layout needs ({self.size},)")
        out: dict[str, Vector] = {}
        offset = 0
        for name, shape in self.entries:
            count = int(np.prod(shape, dtype=np.int64))
            out[name] = vector[offset : offset + count].reshape(shape).astype(np.float32)
            offset += count
        return out
