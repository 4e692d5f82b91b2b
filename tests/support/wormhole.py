"""Test support for the Wormhole layer: the devnet guardian keys and the example payloads."""

from fedrelay.adapters.devnet.guardians import (
    WORMHOLE_DEVNET_GUARDIAN_KEY,
    guardian_key,
    guardian_set,
    guardian_signers,
)
from fedrelay.protocol.wormhole.samples import (
    evm_address,
    filler,
    sample_commitment,
    sample_round_settled,
    sample_stake_changed,
    sample_task_assigned,
    sample_update_committed,
    sample_worker_registered,
)

__all__ = [
    "WORMHOLE_DEVNET_GUARDIAN_KEY",
    "evm_address",
    "filler",
    "guardian_key",
    "guardian_set",
    "guardian_signers",
    "sample_commitment",
    "sample_round_settled",
    "sample_stake_changed",
    "sample_task_assigned",
    "sample_update_committed",
    "sample_worker_registered",
]
