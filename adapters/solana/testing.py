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
from fedrelay.protocol.wormhole import Outcome, RoundSettled, Settlement, SlashMode
from fedrelay.protocol.wormhole.samples import filler

__all__ = [
    "COORDINATOR_CHAIN",
    "COORDINATOR_EMITTER",
    "LAMPORTS_PER_SOL",
    "SLASH_RECIPIENT",
    "Deployment",
    "deploy",
    "round_settled",
    "task_assigned",
]

#: A slash recipient nobody signs for (claims need no signature: they only pay out to it).
SLASH_RECIPIENT = bytes(
    Pubkey.create_with_seed(Pubkey.default(), "slash recipient", Pubkey.default())
)


def round_settled(
    program_id: Pubkey,
    outcomes: Sequence[tuple[bytes, Outcome, int]],
    *,
    job_id: int = 7,
    round_number: int = 1,
    slash_mode: SlashMode = SlashMode.TO_RECIPIENT,
    slash_recipient: bytes = SLASH_RECIPIENT,
) -> RoundSettled:
    """A ROUND_SETTLED for the program from (worker key, outcome, slash) triples."""
    return RoundSettled(
        target_chain=SOLANA_CHAIN,
        target_address=bytes(program_id),
        job_id=job_id,
        round=round_number,
        model_hash=filler(f"model {job_id}/{round_number + 1}"),
        slash_mode=slash_mode,
        slash_recipient=slash_recipient,
        settlements=tuple(Settlement(key, outcome, slash) for key, outcome, slash in outcomes),
    )
