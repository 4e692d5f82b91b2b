"""Rules that combine a round's client deltas into one delta.

Every rule visits clients in ``client_id`` order, accumulates in float64 and casts the result
to float32 once, so the same updates give the same bytes on every run.
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


_BLOCK = 65_536
"""Coordinates per block: a block's float64 accumulator and scratch stay in the CPU cache."""


def weighted_sum(updates: Sequence[ClientUpdate]) -> tuple[Float64s, int]:
    """Sum of ``num_examples * delta`` in float64 in the given order, and the total weight.

    Each coordinate is accumulated as ``((0 + w1*x1) + w2*x2) + ...`` in client order; working
    block by block changes the memory traffic, not a single rounding.
    """
    size = updates[0].delta.shape[0]
    total = np.zeros(size, dtype=np.float64)
    scratch = np.empty(min(size, _BLOCK), dtype=np.float64)
    weights = [float(u.num_examples) for u in updates]
    for start in range(0, size, _BLOCK):
        stop = min(start + _BLOCK, size)
        block, part = total[start:stop], scratch[: stop - start]
        for update, weight in zip(updates, weights, strict=True):
            np.multiply(update.delta[start:stop], weight, out=part, dtype=np.float64)
            block += part
    return total, sum(u.num_examples for u in updates)


@dataclass(frozen=True)
class WeightedMean:
    """FedAvg's rule: the mean of deltas weighted by each client's example count."""

    @property
    def needs_individual_updates(self) -> bool:
        return False

    def combine(self, updates: Sequence[ClientUpdate]) -> Vector:
        total, weight = weighted_sum(updates)
        total /= weight
        return total.astype(np.float32)


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
    for i in range(n):
        for j in range(i + 1, n):
            diff = updates[i].delta.astype(np.float64) - updates[j].delta
            distances[i, j] = distances[j, i] = float(np.dot(diff, diff))
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
        if self.keep > len(updates):
            raise AggregationError(f"cannot keep {self.keep} of {len(updates)} updates")
        scores = krum_scores(updates, self.byzantine)
        ranked = sorted(range(len(updates)), key=lambda i: (scores[i], i))
        return [updates[i] for i in sorted(ranked[: self.keep])]

    def combine(self, updates: Sequence[ClientUpdate]) -> Vector:
        return WeightedMean().combine(self.select(updates))
