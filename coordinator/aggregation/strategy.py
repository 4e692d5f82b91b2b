"""Strategies: a combine rule, a server optimiser and optional clipping, one method per phase.

A strategy is a frozen value. ``prepare_update`` is the client-side phase (clipping, applied before
masking under secure aggregation); ``aggregate_fit`` is the server phase over individual updates;
``aggregate_sum`` is the server phase when only the masked sum is visible.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from fedrelay.coordinator.aggregation.clipping import NormClip
from fedrelay.coordinator.aggregation.errors import AggregationError, SecureAggregationUnsupported
from fedrelay.coordinator.aggregation.optimizers import (
    ServerAdaptive,
    ServerMomentum,
    ServerOptimizer,
    ServerSgd,
    ServerState,
)
from fedrelay.coordinator.aggregation.rules import (
    CombineRule,
    CoordinateMedian,
    MultiKrum,
    TrimmedMean,
    WeightedMean,
)
from fedrelay.coordinator.aggregation.updates import ClientUpdate, Vector, ordered


@dataclass(frozen=True)
class RoundResult:
    """What one aggregation produced.

    Attributes:
        params: The new global parameters (float32).
        delta: The combined delta the optimiser applied.
        state: The server state for the next round.
    """

    params: Vector
    delta: Vector
    state: ServerState


@dataclass(frozen=True)
class Strategy:
    """A federated aggregation strategy.

    Attributes:
        name: Short name for logs and benchmarks.
        rule: Combines deltas.
        optimizer: Applies the combined delta.
        clip: Optional norm clipping applied to each delta.
    """

    name: str
    rule: CombineRule
    optimizer: ServerOptimizer
    clip: NormClip | None = None

    @property
    def supports_secure_aggregation(self) -> bool:
        """True when the rule needs only the sum of the updates."""
        return not self.rule.needs_individual_updates

    def prepare_update(self, update: ClientUpdate) -> ClientUpdate:
        """Client phase: clip the update when the strategy clips, otherwise return it unchanged."""
        return self.clip.clip(update) if self.clip is not None else update

    def aggregate_fit(
        self, params: Vector, updates: Sequence[ClientUpdate], state: ServerState
    ) -> RoundResult:
        """Server phase over individual updates.

        Args:
            params: The round's global parameters (flat float32).
            updates: Each client's delta; any order, one per client.
            state: The server state returned by the previous round (``ServerState()`` at first).

        Raises:
            AggregationError: The updates are empty, duplicated or of the wrong size.
        """
        prepared = [self.prepare_update(u) for u in ordered(updates, params.shape[0])]
        delta = self.rule.combine(prepared)
        new, new_state = self.optimizer.apply(params, delta, state)
        return RoundResult(new, delta, new_state)

    def aggregate_sum(
        self, params: Vector, weighted_sum: Vector, total_weight: int, state: ServerState
    ) -> RoundResult:
        """Server phase under secure aggregation, from the sum of weighted deltas only.

        Args:
            params: The round's global parameters.
            weighted_sum: ``sum(num_examples_i * delta_i)`` as revealed by secure aggregation.
            total_weight: ``sum(num_examples_i)`` over the clients in the sum.
            state: The previous server state.

        Raises:
            SecureAggregationUnsupported: The rule needs individual updates.
            AggregationError: The sum does not fit the model or the weight is not positive.
        """
        if not self.supports_secure_aggregation:
            raise SecureAggregationUnsupported(
                f"strategy {self.name!r} uses {type(self.rule).__name__}, which needs every "
                "individual update; secure aggregation reveals only their sum. Use FedAvg, "
                "FedAvgM, FedAdam or FedYogi (with clipping) under secure aggregation."
            )
        if weighted_sum.shape != params.shape:
            raise AggregationError(
                f"secure sum has shape {weighted_sum.shape}, model has {params.shape}"
            )
        if total_weight < 1:
            raise AggregationError(f"total weight must be >= 1, got {total_weight}")
        delta = (weighted_sum.astype(np.float64) / total_weight).astype(np.float32)
        new, new_state = self.optimizer.apply(params, delta, state)
        return RoundResult(new, delta, new_state)


def fedavg(clip: NormClip | None = None) -> Strategy:
    """FedAvg: sample-weighted mean, adopted as is."""
    return Strategy("fedavg", WeightedMean(), ServerSgd(), clip)


def fedavgm(
    learning_rate: float = 1.0, momentum: float = 0.9, clip: NormClip | None = None
) -> Strategy:
    """FedAvgM: sample-weighted mean with server momentum."""
    return Strategy("fedavgm", WeightedMean(), ServerMomentum(learning_rate, momentum), clip)


def fedadam(
    learning_rate: float = 0.01, tau: float = 1e-3, clip: NormClip | None = None
) -> Strategy:
    """FedAdam: sample-weighted mean with a server Adam step."""
    return Strategy("fedadam", WeightedMean(), ServerAdaptive("adam", learning_rate, tau=tau), clip)


def fedyogi(
    learning_rate: float = 0.01, tau: float = 1e-3, clip: NormClip | None = None
) -> Strategy:
    """FedYogi: sample-weighted mean with a server Yogi step."""
    return Strategy("fedyogi", WeightedMean(), ServerAdaptive("yogi", learning_rate, tau=tau), clip)


def median(clip: NormClip | None = None) -> Strategy:
    """Coordinate-wise median."""
    return Strategy("median", CoordinateMedian(), ServerSgd(), clip)


def trimmed_mean(beta: float = 0.2, clip: NormClip | None = None) -> Strategy:
    """Coordinate-wise trimmed mean dropping ``beta`` of the values at each end."""
    return Strategy("trimmed_mean", TrimmedMean(beta), ServerSgd(), clip)


def krum(byzantine: int, clip: NormClip | None = None) -> Strategy:
    """Krum: adopt the single most central update."""
    return Strategy("krum", MultiKrum(byzantine, 1), ServerSgd(), clip)


def multi_krum(byzantine: int, keep: int, clip: NormClip | None = None) -> Strategy:
    """Multi-Krum: weighted mean of the ``keep`` most central updates."""
    return Strategy("multi_krum", MultiKrum(byzantine, keep), ServerSgd(), clip)
