"""Rules that combine a round's client deltas into one delta.

Every rule visits clients in ``client_id`` order, so the same updates give the same bytes on every
run whatever order they arrived in. The weighted mean (FedAvg and the rules built on it)
accumulates in float32, block by block, like numpy's own float32 sum: one pass over the updates'
bytes with the block's accumulator in the CPU cache (float64 accumulation was a quarter of
numpy's throughput). The robust rules work per coordinate in float64. Every rule is elementwise
per coordinate (Krum's selection aside), so the same arithmetic runs on a whole vector or on one
slice of it at a time (:mod:`fedrelay.coordinator.aggregation.streaming`) with the same result.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import numpy.typing as npt

from fedrelay.coordinator.aggregation.errors import AggregationError
from fedrelay.coordinator.aggregation.updates import ClientUpdate, Vector

Float64s = npt.NDArray[np.float64]


class CombineRule(Protocol):
    """How a round's deltas become one delta."""

    @property
    def needs_individual_updates(self) -> bool:
        """True when the rule must see each update (so it cannot run under secure aggregation)."""
        ...

    def combine(self, updates: Sequence[ClientUpdate]) -> Vector:
        """Combine updates already sorted by client id into one float32 delta."""
        ...


_BLOCK = 16_384
"""Coordinates per block when updates are copied into one matrix (it stays in the CPU cache)."""


def _matrix_of(deltas: Sequence[Vector]) -> npt.NDArray[np.float32] | None:
    """The deltas as one ``(clients, size)`` matrix without a copy, when they are consecutive
    rows of one C-contiguous array in this order (as the streamed aggregation reads them)."""
    base = deltas[0].base
    if not isinstance(base, np.ndarray) or base.ndim != 2 or not base.flags.c_contiguous:
        return None
    if base.dtype != np.float32 or base.shape[1] != deltas[0].shape[0]:
        return None
    row = base.strides[0]
    origin = base.__array_interface__["data"][0]
    first = deltas[0].__array_interface__["data"][0]
    if (first - origin) % row:
        return None
    top = (first - origin) // row
    if top + len(deltas) > base.shape[0]:
        return None
    for offset, delta in enumerate(deltas):
        if delta.base is not base or delta.__array_interface__["data"][0] != first + offset * row:
            return None
    matrix: npt.NDArray[np.float32] = base[top : top + len(deltas)]
    return matrix


def weighted_mean(updates: Sequence[ClientUpdate]) -> Vector:
    """The mean of the deltas weighted by ``num_examples``, in float32 in the given order.

    With ``p_i = float32(num_examples_i / total)``, each coordinate is
    ``((0 + p1*x1) + p2*x2) + ...`` in client order, every product and sum rounded to float32,
    computed by one ``einsum`` over the updates as a matrix: one pass over
    their bytes, like numpy's own float32 sum. Updates that are rows of one matrix already are
    summed in place; others are copied into a matrix one block of coordinates at a time. A
    coordinate's result depends only on its own column, so both ways, and any slicing of the
    coordinates, give the same bytes.
    """
    size = updates[0].delta.shape[0]
    counts = np.array([u.num_examples for u in updates], dtype=np.float64)
    weights = (counts / counts.sum()).astype(np.float32)
    matrix = _matrix_of([u.delta for u in updates])
    total = np.empty(size, dtype=np.float32)
    if matrix is not None:
        _sum_rows(weights, matrix, total)
    else:
        buffer = np.empty((len(updates), min(size, _BLOCK)), dtype=np.float32)
        for start in range(0, size, _BLOCK):
            stop = min(start + _BLOCK, size)
            block = buffer[:, : stop - start]
            for row, update in zip(block, updates, strict=True):
                row[:] = update.delta[start:stop]
            _sum_rows(weights, block, total[start:stop])
    return total


_NARROW = 16
"""Below this many coordinates ``einsum`` may reduce along the clients' axis with partial sums,
which would round differently; such narrow matrices are summed row by row instead."""


def _sum_rows(weights: Vector, matrix: npt.NDArray[np.float32], out: Vector) -> None:
    """``out[j] = ((0 + w0*m[0,j]) + w1*m[1,j]) + ...``, each step rounded to float32."""
    if matrix.shape[1] >= _NARROW:
        np.einsum("i,ij->j", weights, matrix, out=out, optimize=False)
        return
    out[:] = 0
    for weight, row in zip(weights, matrix, strict=True):
        np.add(out, np.multiply(row, weight), out=out)


@dataclass(frozen=True)
class WeightedMean:
    """FedAvg's rule: the mean of deltas weighted by each client's example count."""

    @property
    def needs_individual_updates(self) -> bool:
        return False

    def combine(self, updates: Sequence[ClientUpdate]) -> Vector:
        return weighted_mean(updates)


def _stack(updates: Sequence[ClientUpdate]) -> Float64s:
    return np.stack([u.delta for u in updates]).astype(np.float64)


@dataclass(frozen=True)
class CoordinateMedian:
    """Per-coordinate median of the deltas (unweighted)."""

    @property
    def needs_individual_updates(self) -> bool:
        return True

    def combine(self, updates: Sequence[ClientUpdate]) -> Vector:
        result: Vector = np.median(_stack(updates), axis=0).astype(np.float32)
        return result


@dataclass(frozen=True)
class TrimmedMean:
    """Per-coordinate mean after dropping the ``beta`` fraction largest and smallest values.

    Attributes:
        beta: Fraction trimmed from each end, in [0, 0.5).
    """

    beta: float = 0.2

    def __post_init__(self) -> None:
        if not 0.0 <= self.beta < 0.5:
            raise AggregationError(f"trimmed mean needs 0 <= beta < 0.5, got {self.beta}")

    @property
    def needs_individual_updates(self) -> bool:
        return True

    def combine(self, updates: Sequence[ClientUpdate]) -> Vector:
        trim = math.floor(self.beta * len(updates))
        ranked = np.sort(_stack(updates), axis=0)
        kept = ranked[trim : len(updates) - trim]
        result: Vector = kept.mean(axis=0).astype(np.float32)
        return result


def krum_scores(updates: Sequence[ClientUpdate], byzantine: int) -> list[float]:
    """Krum score of each update: summed squared distance to its ``n - f - 2`` nearest others.

    Raises:
        AggregationError: Fewer than ``2f + 3`` updates, where Krum gives no guarantee.
    """
    n = len(updates)
    if byzantine < 0 or n < 2 * byzantine + 3:
        raise AggregationError(
            f"Krum with f={byzantine} needs at least {2 * byzantine + 3} updates, got {n}"
        )
    distances = np.zeros((n, n), dtype=np.float64)
    add_distances(distances, [u.delta for u in updates])
    return scores_of(distances, byzantine)


def add_distances(distances: Float64s, deltas: Sequence[Vector]) -> None:
    """Add the squared distances between ``deltas`` (whole, or one slice of each) to the
    symmetric ``distances`` matrix: summed over slices, they are the whole deltas' distances."""
    n = len(deltas)
    for i in range(n):
        for j in range(i + 1, n):
            diff = deltas[i].astype(np.float64) - deltas[j]
            distances[i, j] += float(np.dot(diff, diff))
            distances[j, i] = distances[i, j]


def scores_of(distances: Float64s, byzantine: int) -> list[float]:
    """Krum scores from the pairwise squared distances of ``n`` updates.

    Raises:
        AggregationError: Fewer than ``2f + 3`` updates.
    """
    n = distances.shape[0]
    if byzantine < 0 or n < 2 * byzantine + 3:
        raise AggregationError(
            f"Krum with f={byzantine} needs at least {2 * byzantine + 3} updates, got {n}"
        )
    neighbours = n - byzantine - 2
    scores = []
    for i in range(n):
        others = np.sort(np.delete(distances[i], i))
        scores.append(float(others[:neighbours].sum()))
    return scores


@dataclass(frozen=True)
class MultiKrum:
    """Multi-Krum: the weighted mean of the ``keep`` updates with the lowest Krum scores.

    ``keep=1`` is plain Krum. Ties go to the lower client id.

    Attributes:
        byzantine: The number f of faulty clients tolerated.
        keep: How many updates are averaged.
    """

    byzantine: int
    keep: int = 1

    def __post_init__(self) -> None:
        if self.keep < 1:
            raise AggregationError(f"Multi-Krum must keep at least one update, got {self.keep}")

    @property
    def needs_individual_updates(self) -> bool:
        return True

    def select(self, updates: Sequence[ClientUpdate]) -> list[ClientUpdate]:
        """The updates Multi-Krum keeps, in client id order."""
        self.kept([0.0] * len(updates))  # the count is refused before any distance is taken
        return [updates[i] for i in self.kept(krum_scores(updates, self.byzantine))]

    def kept(self, scores: Sequence[float]) -> list[int]:
        """The positions (sorted) of the ``keep`` lowest scores; ties go to the lower position."""
        if self.keep > len(scores):
            raise AggregationError(f"cannot keep {self.keep} of {len(scores)} updates")
        ranked = sorted(range(len(scores)), key=lambda i: (scores[i], i))
        return sorted(ranked[: self.keep])

    def combine(self, updates: Sequence[ClientUpdate]) -> Vector:
        return WeightedMean().combine(self.select(updates))
