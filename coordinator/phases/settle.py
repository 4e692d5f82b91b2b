"""The PROPOSED phase: once the challenge window is over, ask the chain to settle the round.

The round moves on when the chain's ``RoundSettled`` event arrives (the service follows it).
"""

from __future__ import annotations

import logging

from fedrelay.coordinator.phases.context import RoundKeeper
from fedrelay.ports.coordinator_chain import ChainRoundPhase
from fedrelay.protocol.rounds import RoundState, can_settle

log = logging.getLogger(__name__)


async def settle(keeper: RoundKeeper, state: RoundState, now: int) -> RoundState:
    """Send ``settleRound`` when the window is over on chain; the round is unchanged."""
    if not can_settle(state, now):
        return state
    on_chain = await keeper.chain.round(state.job_id, state.round)
    if on_chain.phase is ChainRoundPhase.PROPOSED and now >= on_chain.challenge_deadline:
        await keeper.chain.settle_round(state.job_id, state.round)
        log.info("job %d round %d: settleRound sent", state.job_id, state.round)
    return state
