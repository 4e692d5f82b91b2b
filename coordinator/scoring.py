"""Contribution scores and payout splits.

Scores are non-negative: an update that does not lower the held-out loss (a zero update, noise,
an attack) scores zero. The loss function is supplied by the caller, so this module needs no
model framework.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from fractions import Fraction

import numpy as np

from fedrelay.coordinator.aggregation import ClientUpdate, ServerState, Strategy, Vector, fedavg
from fedrelay.coordinator.aggregation.updates import ordered
from fedrelay.coordinator.errors import CoordinatorError

HeldOutLoss = Callable[[Vector], float]
"""Loss of a flat parameter vector on the coordinator's held-out set."""


class ScoringError(CoordinatorError, ValueError):
    """Scores or payout inputs are unusable; the message says why."""


def loss_reduction_scores(
    held_out_loss: HeldOutLoss, params: Vector, updates: Sequence[ClientUpdate]
) -> dict[str, float]:
    """Each client's score: how much applying its delta alone lowers the held-out loss.

    Returns:
        ``max(0, L(params) - L(params + delta_i))`` by client id.
    """
    base = held_out_loss(params)
    return {
        update.client_id: loss_reduction(held_out_loss, base, params, update.delta)
        for update in ordered(updates, params.shape[0])
    }


def loss_reduction(held_out_loss: HeldOutLoss, base: float, params: Vector, delta: Vector) -> float:
    """One client's loss-reduction score: ``max(0, base - L(params + delta))``, ``base`` being
    ``L(params)`` (a streamed round scores its updates one at a time with it)."""
    moved = (params.astype(np.float64) + delta).astype(np.float32)
    return max(0.0, base - held_out_loss(moved))


def leave_one_out_scores(
    held_out_loss: HeldOutLoss,
    params: Vector,
    updates: Sequence[ClientUpdate],
    strategy: Strategy | None = None,
) -> dict[str, float]:
    """Each client's score: how much worse the aggregate is without it.

    Returns:
        ``max(0, L(aggregate without i) - L(aggregate of all))`` by client id.

    Raises:
        ScoringError: Fewer than two updates (nothing to leave out from).
    """
    if len(updates) < 2:
        raise ScoringError("leave-one-out needs at least two updates")
    chosen = strategy or fedavg()
    every = ordered(updates, params.shape[0])
    full = held_out_loss(chosen.aggregate_fit(params, every, ServerState()).params)
    scores = {}
    for left_out in every:
        rest = [u for u in every if u.client_id != left_out.client_id]
        without = held_out_loss(chosen.aggregate_fit(params, rest, ServerState()).params)
        scores[left_out.client_id] = max(0.0, without - full)
    return scores


def mix_with_samples(
    scores: Mapping[str, float], sample_counts: Mapping[str, int], sample_weight: float
) -> dict[str, float]:
    """Blend normalised scores with normalised sample counts: ``(1-w)*score + w*samples``.

    A client with a zero score keeps a zero score, so sample counts alone never pay.
    """
    if not 0.0 <= sample_weight <= 1.0:
        raise ScoringError(f"sample_weight must be in [0, 1], got {sample_weight}")
    if set(scores) != set(sample_counts):
        raise ScoringError("scores and sample counts name different clients")
    score_total = sum(scores.values())
    sample_total = sum(sample_counts[c] for c in scores if scores[c] > 0)
    if score_total <= 0 or sample_total <= 0:
        return dict.fromkeys(scores, 0.0)
    return {
        c: (1 - sample_weight) * scores[c] / score_total
        + (sample_weight * sample_counts[c] / sample_total if scores[c] > 0 else 0.0)
        for c in sorted(scores)
    }


def split_payout(total: int, scores: Mapping[str, float]) -> dict[str, int]:
    """Split ``total`` indivisible units in proportion to scores (largest remainder method).

    Exact rational arithmetic makes the split identical on every machine; leftover units go to
    the largest remainders, ties to the lower client id. When every score is zero nobody is paid.

    Raises:
        ScoringError: A negative total, or a score that is negative or not finite.
    """
    if total < 0:
        raise ScoringError(f"payout total must be >= 0, got {total}")
    for client, score in scores.items():
        if not np.isfinite(score) or score < 0:
            raise ScoringError(f"score of {client!r} must be finite and >= 0, got {score}")
    exact = {c: Fraction(s) for c, s in scores.items()}
    denominator = sum(exact.values(), Fraction(0))
    if denominator == 0:
        return dict.fromkeys(sorted(scores), 0)
    quotas = {c: total * exact[c] / denominator for c in sorted(exact)}
    payout = {c: int(q) for c, q in quotas.items()}
    leftover = total - sum(payout.values())
    by_remainder = sorted(quotas, key=lambda c: (-(quotas[c] - payout[c]), c))
    for client in by_remainder[:leftover]:
        payout[client] += 1
    return payout
