"""Test support: the worker program on a devnet, and sample settlements for it.

The deployment and the sample TASK_ASSIGNED are :mod:`fedrelay.adapters.devnet.worker_program`
(``fedrelay bench solana`` uses them too), re-exported here for the Solana integration tests.
"""

from __future__ import annotations

from collections.abc import Sequence

from solders.pubkey import Pubkey

from fedrelay.adapters.devnet.worker_program import (
    COORDINATOR_CHAIN,
    COORDINATOR_EMITTER,
    LAMPORTS_PER_SOL,
    Deployment,
    deploy,
    task_assigned,
)
from fedrelay.adapters.solana.layout import SOLANA_CHAIN
from fedrelay.protocol.wormhole import Outcome, RoundSettled, Settlement
from fedrelay.protocol.wormhole.samples import filler

__all__ = [
    "COORDINATOR_CHAIN",
    "COORDINATOR_EMITTER",
    "LAMPORTS_PER_SOL",
    "Deployment",
    "deploy",
    "round_settled",
    "task_assigned",
]


def round_settled(
    program_id: Pubkey,
    outcomes: Sequence[tuple[bytes, Outcome, int]],
    *,
    job_id: int = 7,
    round_number: int = 1,
) -> RoundSettled:
    """A ROUND_SETTLED for the program from (worker key, outcome, slash) triples."""
    return RoundSettled(
        target_chain=SOLANA_CHAIN,
        target_address=bytes(program_id),
        job_id=job_id,
        round=round_number,
        model_hash=filler(f"model {job_id}/{round_number + 1}"),
        settlements=tuple(Settlement(key, outcome, slash) for key, outcome, slash in outcomes),
    )
