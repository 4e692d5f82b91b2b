"""The COLLECTING phase: commitments arrive as chain events; the round closes at its deadline."""

from __future__ import annotations

from fedrelay.coordinator.phases.context import RoundKeeper
from fedrelay.protocol.rounds import RoundState, Tick, apply


async def collect(keeper: RoundKeeper, state: RoundState, now: int) -> RoundState:
    """Close collection once the deadline passed (or every worker committed)."""
    ticked = apply(state, Tick(now))
    if ticked is not state:
        await keeper.save_round(ticked)
    return ticked
