"""The one small protocol both worker-chain backends implement."""

from __future__ import annotations

from typing import Protocol

from fedrelay.worker.sdk.tasks import (
    ChainPoll,
    CommitReceipt,
    StakeStatus,
    TaskKey,
    UpdateCommitment,
)

#: Capability bits of WORKER_REGISTERED.
CAPABILITY_CUDA = 1
CAPABILITY_CPU_REPLAY = 2


class WorkerChain(Protocol):
    """A worker's own chain: stake, registration, assignments, commitments, settlements."""

    @property
    def wormhole_chain(self) -> int:
        """The chain's Wormhole id (4 for the devnet EVM worker chain, 1 for Solana)."""
        ...

    @property
    def worker_key(self) -> bytes:
        """The worker's 32-byte key as the protocol writes it."""
        ...

    async def stake_status(self) -> StakeStatus:
        """The worker's stake record."""
        ...

    async def stake_and_register(self, stake: int, payout: bytes, capabilities: int) -> None:
        """Bring the bonded stake up to ``stake`` and register (publishes WORKER_REGISTERED)."""
        ...

    async def poll(self, cursor: int) -> ChainPoll:
        """Tasks assigned to and settled for this worker since ``cursor``."""
        ...

    async def is_committed(self, key: TaskKey) -> bool:
        """Whether the chain already holds this worker's commitment for ``key``."""
        ...

    async def commit(self, commitment: UpdateCommitment) -> CommitReceipt:
        """Commit an update (publishes UPDATE_COMMITTED)."""
        ...

    async def begin_unstake(self, amount: int) -> None:
        """Start unbonding ``amount`` (the Solana program unbonds the whole stake)."""
        ...

    async def withdraw_stake(self) -> None:
        """Take the unbonded stake back once the delay passed and no task is open."""
        ...
