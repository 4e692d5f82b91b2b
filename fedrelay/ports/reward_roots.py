"""The reward distributor as the coordinator sees it: the roots it pays from, and proposing one.

A JobMarket whose rewards account is a RewardDistributor credits each settled round's total to
it; the coordinator (the distributor's updater) keeps every worker's cumulative earnings and
proposes their root (:mod:`fedrelay.protocol.rewards`). The implementation is
:class:`fedrelay.adapters.evm.coordinator_chain.EvmRewardRoots`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from fedrelay.protocol.rewards import RewardClaim, RewardTree


@dataclass(frozen=True)
class ProposedRoot:
    """A root the distributor holds: live or waiting for its dispute window to end."""

    root: bytes
    count: int
    epoch: int
    live_at: int
    content: bytes


@dataclass(frozen=True)
class DistributorState:
    """The distributor's address and chain (what its leaves are bound to) and its roots."""

    address: bytes
    chain_id: int
    live: ProposedRoot | None
    pending: ProposedRoot | None


class RewardRoots(Protocol):
    """The coordinator's side of a RewardDistributor."""

    async def state(self) -> DistributorState:
        """Its address, chain and roots now."""
        ...

    async def vetoed(self) -> frozenset[bytes]:
        """Every root the disputer has vetoed (the chain's record, so a restarted or another
        replica of the coordinator knows them too).

        Raises:
            ChainError: The chain could not be read.
        """
        ...

    async def propose(self, tree: RewardTree) -> None:
        """Propose ``tree``'s root (live after the dispute window unless vetoed).

        Raises:
            ChainError: The chain refused it (not the updater, ...) or could not be reached.
        """
        ...

    async def claimed(self, account: bytes, token: bytes) -> int:
        """How much ``account`` has been paid in ``token`` (a cumulative amount).

        Raises:
            ChainError: The chain could not be read.
        """
        ...

    async def claim(self, claims: Sequence[RewardClaim]) -> None:
        """Pay ``claims`` (of the live root) in one transaction; those paid up to their amount
        already are passed over.

        Raises:
            ChainError: The chain refused it or could not be reached.
        """
        ...
