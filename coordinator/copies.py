"""Copied updates: which of a round's plain updates repeat an earlier one, so they earn nothing.

Honest workers of a round train the same model on disjoint shards, so two of their updates are
never identical and never nearly so. An update that is (the same update hash, the same decoded
tensors, or within :data:`COPY_DISTANCE` of another in normalised L2 distance of the deltas) is
a copy: every one but the first committed is rejected and slashed, and is never in the
aggregate, so a duplicate is never counted twice.

"First" is the order anyone can recompute from the coordinator chain: the block each commitment
arrived in, ties by worker (chain, then key). Why the first one keeps its update and not none, and
what a copier that races the original can do, is in docs/learning.md ("Copies").

Under secure aggregation the coordinator never sees an update (only masked inputs, which differ
even for equal updates), so nothing here applies there.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from fedrelay.coordinator.aggregation import Vector
from fedrelay.protocol.rounds import Assignment, WorkerRef

COPY_DISTANCE = 1e-3
"""Largest normalised L2 distance ``|a - b| / max(|a|, |b|)`` of two deltas that makes the later
one a copy. Honest deltas of disjoint shards are far apart (of the order of 1); a copy moved by
less than a thousandth of its size changes nothing its scoring or the aggregate would notice."""


@dataclass(frozen=True)
class Copy:
    """A rejected copy and the earlier update it repeats.

    Attributes:
        worker: The worker whose update is a copy.
        original: The worker whose earlier-committed update it repeats.
        reason: The rejection reason (names both and how they matched).
    """

    worker: WorkerRef
    original: WorkerRef
    reason: str


def commit_order(assignments: Sequence[Assignment]) -> list[Assignment]:
    """Committed ``assignments`` in chain commit order: block, then worker chain, then key."""

    def key(a: Assignment) -> tuple[int, int, bytes]:
        assert a.commitment is not None
        return (a.commitment.block, a.worker.chain, a.worker.key)

    return sorted((a for a in assignments if a.commitment is not None), key=key)


def distance(a: Vector, b: Vector) -> float:
    """Normalised L2 distance ``|a - b| / max(|a|, |b|)`` (0 when both are zero)."""
    x = np.asarray(a, dtype=np.float64)
    y = np.asarray(b, dtype=np.float64)
    scale = max(float(np.linalg.norm(x)), float(np.linalg.norm(y)))
    gap = float(np.linalg.norm(x - y))
    if scale == 0.0:
        return 0.0
    return gap / scale


@dataclass
class Gaps:
    """The normalised L2 distances between a round's deltas, from sums that add up piece by piece.

    ``|a - b| / max(|a|, |b|)`` needs each delta's squared norm and each pair's squared distance;
    both are sums over coordinates, so a streamed round adds them up one range of coordinates at
    a time (:meth:`add`) and never holds two whole deltas. :func:`distance` is the same quantity
    of two whole vectors (it may differ in the last bits: the sums are taken in another order).

    Attributes:
        ids: The worker ids, in the order of the rows.
        squares: Each delta's squared L2 norm so far.
        pairs: The pairwise squared distances so far (symmetric).
    """

    ids: tuple[bytes, ...]
    squares: npt.NDArray[np.float64]
    pairs: npt.NDArray[np.float64]

    @classmethod
    def empty(cls, ids: Sequence[bytes]) -> Gaps:
        """Nothing added yet for the workers ``ids``."""
        count = len(ids)
        return cls(tuple(ids), np.zeros(count), np.zeros((count, count)))

    @classmethod
    def of(cls, deltas: Mapping[bytes, Vector]) -> Gaps:
        """The gaps between whole deltas, by worker id."""
        gaps = cls.empty(list(deltas))
        gaps.add([deltas[worker] for worker in gaps.ids])
        return gaps

    def add(self, pieces: Sequence[Vector]) -> None:
        """Add the same range of coordinates of every delta (in :attr:`ids` order)."""
        wide = [np.asarray(piece, dtype=np.float64) for piece in pieces]
        for i, row in enumerate(wide):
            self.squares[i] += float(np.dot(row, row))
            for j in range(i + 1, len(wide)):
                diff = row - wide[j]
                self.pairs[i, j] += float(np.dot(diff, diff))
                self.pairs[j, i] = self.pairs[i, j]

    def between(self, a: bytes, b: bytes) -> float:
        """The normalised distance of the deltas of workers ``a`` and ``b`` (0 when both are 0)."""
        i, j = self.ids.index(a), self.ids.index(b)
        scale = math.sqrt(max(self.squares[i], self.squares[j]))
        if scale == 0.0:
            return 0.0
        return math.sqrt(self.pairs[i, j]) / scale


def find_copies(
    assignments: Sequence[Assignment],
    gaps: Gaps,
    tolerance: float = COPY_DISTANCE,
) -> list[Copy]:
    """The copies among the committed ``assignments`` whose deltas ``gaps`` measured.

    Args:
        assignments: The round's committed tasks (any order; those ``gaps`` lacks are skipped).
        gaps: The distances between the checked updates' deltas from the round's model.
        tolerance: The largest normalised distance that makes a copy.

    Returns:
        One :class:`Copy` per update that repeats an earlier-committed kept one, in commit order.
    """
    kept: list[Assignment] = []
    copies: list[Copy] = []
    for a in commit_order(assignments):
        if a.worker.worker_id not in gaps.ids:
            continue
        match = _first_match(a, kept, gaps, tolerance)
        if match is None:
            kept.append(a)
        else:
            copies.append(Copy(a.worker, match[0].worker, match[1]))
    return copies


def _first_match(
    a: Assignment,
    kept: Sequence[Assignment],
    gaps: Gaps,
    tolerance: float,
) -> tuple[Assignment, str] | None:
    assert a.commitment is not None
    for earlier in kept:
        assert earlier.commitment is not None
        whose = (
            f"worker {earlier.worker.key.hex()}'s update, committed earlier "
            f"(block {earlier.commitment.block})"
        )
        if earlier.commitment.update_hash == a.commitment.update_hash:
            return earlier, f"a copy of {whose}: the same update hash"
        gap = gaps.between(earlier.worker.worker_id, a.worker.worker_id)
        if gap == 0.0:
            return earlier, f"a copy of {whose}: the same tensors"
        if gap <= tolerance:
            return earlier, (
                f"a copy of {whose}: normalised L2 distance {gap:.3g} of the deltas is at most "
                f"{tolerance:g}"
            )
    return None
