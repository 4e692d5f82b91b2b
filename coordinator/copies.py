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

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

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


def find_copies(
    assignments: Sequence[Assignment],
    deltas: Mapping[bytes, Vector],
    tolerance: float = COPY_DISTANCE,
) -> list[Copy]:
    """The copies among the committed ``assignments`` whose deltas are in ``deltas``.

    Args:
        assignments: The round's committed tasks (any order; those without a delta are skipped).
        deltas: Each checked update's delta from the round's model, by worker id.
        tolerance: The largest normalised distance that makes a copy.

    Returns:
        One :class:`Copy` per update that repeats an earlier-committed kept one, in commit order.
    """
    kept: list[Assignment] = []
    copies: list[Copy] = []
    for a in commit_order(assignments):
        delta = deltas.get(a.worker.worker_id)
        if delta is None:
            continue
        match = _first_match(a, delta, kept, deltas, tolerance)
        if match is None:
            kept.append(a)
        else:
            copies.append(Copy(a.worker, match[0].worker, match[1]))
    return copies


def _first_match(
    a: Assignment,
    delta: Vector,
    kept: Sequence[Assignment],
    deltas: Mapping[bytes, Vector],
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
        gap = distance(deltas[earlier.worker.worker_id], delta)
        if gap == 0.0:
            return earlier, f"a copy of {whose}: the same tensors"
        if gap <= tolerance:
            return earlier, (
                f"a copy of {whose}: normalised L2 distance {gap:.3g} of the deltas is at most "
                f"{tolerance:g}"
            )
    return None
