"""One secure-aggregation round run in process: every client and the server, with dropouts.

This is how tests and benchmarks drive the protocol; the coordinator service runs the same
phases over its HTTP API.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass

from fedrelay.coordinator.aggregation import (
    ClientUpdate,
    RoundResult,
    ServerState,
    Strategy,
    Vector,
)
from fedrelay.coordinator.aggregation.errors import SecureAggregationUnsupported
from fedrelay.protocol.secagg.errors import SecureAggregationError
from fedrelay.protocol.secagg.protocol import Participant, SecAggConfig, SecureSum, unmask_sum


@dataclass(frozen=True)
class SecureRound:
    """The outcome of :func:`secure_fit`.

    Attributes:
        result: The strategy's new parameters and state.
        secure_sum: What the server learned.
    """

    result: RoundResult
    secure_sum: SecureSum


def run_secure_sum(
    config: SecAggConfig,
    updates: Sequence[ClientUpdate],
    drop_before_input: Collection[str] = (),
    drop_before_unmask: Collection[str] = (),
) -> SecureSum:
    """Run the four phases for ``updates``.

    Args:
        config: The round's parameters.
        updates: Each client's (already clipped) delta.
        drop_before_input: Clients that shared their keys, then vanished before sending input.
        drop_before_unmask: Clients that sent input, then vanished before the unmask phase.

    Raises:
        SecureAggregationError: Unknown client ids in the drop sets, or too many dropouts.
    """
    ids = {u.client_id for u in updates}
    if not set(drop_before_input) <= ids or not set(drop_before_unmask) <= ids:
        raise SecureAggregationError("dropout sets name clients that are not in the round")
    participants = {u.client_id: Participant(u.client_id, config) for u in updates}
    adverts = [participants[c].advertise() for c in sorted(participants)]
    sealed = [s for c in sorted(participants) for s in participants[c].share_keys(adverts)]
    for client, participant in participants.items():
        participant.receive_shares([s for s in sealed if s.recipient == client])
    masked = [
        participants[u.client_id].mask(u.delta, u.num_examples)
        for u in sorted(updates, key=lambda u: u.client_id)
        if u.client_id not in drop_before_input
    ]
    survivors = [m.client_id for m in masked]
    responses = [
        participants[c].unmask(survivors) for c in survivors if c not in drop_before_unmask
    ]
    return unmask_sum(config, adverts, sorted(participants), masked, responses, sealed)


def secure_fit(
    strategy: Strategy,
    params: Vector,
    state: ServerState,
    config: SecAggConfig,
    updates: Sequence[ClientUpdate],
    drop_before_input: Collection[str] = (),
    drop_before_unmask: Collection[str] = (),
) -> SecureRound:
    """Aggregate under secure aggregation: clients clip, mask; the server sees only the sum.

    Raises:
        SecureAggregationUnsupported: The strategy needs individual updates (checked first, so
            no client does any work for a round that cannot finish).
    """
    if not strategy.supports_secure_aggregation:
        raise SecureAggregationUnsupported(
            f"strategy {strategy.name!r} needs individual updates and cannot run under secure "
            "aggregation; use a mean-based strategy with clipping instead"
        )
    prepared = [strategy.prepare_update(u) for u in updates]
    secure = run_secure_sum(config, prepared, drop_before_input, drop_before_unmask)
    weighted = secure.decode(config.fixed_point)
    result = strategy.aggregate_sum(params, weighted, secure.total_weight, state)
    return SecureRound(result, secure)
