"""Round proposals as an auditor sees them: which were made, whether each keeps the market's
rules, and voiding one that breaks a rule.

JobMarket takes a round's proposal optimistically (docs/contracts.md, "JobMarket"): its rules bind
a proposal only when somebody checks it inside its challenge window and disproves it if it breaks
one. :class:`ProposalBoard` is what the proposal watch
(:mod:`fedrelay.worker.proposal_watch`) needs for that; the EVM implementation is
:class:`fedrelay.adapters.evm.proposals.EvmProposalBoard`. Its methods raise the worker-chain
port's :class:`~fedrelay.ports.worker_chain.ChainUnavailable` (the chain does not answer: try
again) and :class:`~fedrelay.ports.worker_chain.ChainRejected` (the chain refused, or could not
give what a check needs; the message says why).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class ProposalMade:
    """A proposal of a round, as its ``ResultsProposed`` and ``RoundFinalized`` events name it.

    Attributes:
        proposal: Its number in the round (1 for the first; a round proposes again after a
            challenge or a disproof).
        block: The block it was made in.
        deadline: When its challenge window closes (unix seconds, chain time): a disproof must
            land in a block before.
    """

    job_id: int
    round: int
    proposal: int
    block: int
    deadline: int


@dataclass(frozen=True)
class ProposalCheck:
    """What checking a proposal against the market's rules found, now.

    Attributes:
        pending: Whether it is still its round's pending proposal (not settled, challenged,
            voided or proposed anew). When it is not, nothing else is checked and ``broken``
            is None.
        broken: The rule it breaks, as the checker names it (``AcceptedWithoutCommitment(0x..)``),
            or None when it keeps every rule.
    """

    pending: bool
    broken: str | None = None


@dataclass(frozen=True)
class ChainTime:
    """The newest block an auditor reads and its timestamp (unix seconds)."""

    block: int
    timestamp: int


class ProposalBoard(Protocol):
    """A JobMarket's proposals, for anyone who audits them."""

    async def now(self) -> ChainTime:
        """The newest block and its timestamp: the clock challenge windows are counted on."""
        ...

    async def challenge_window(self) -> int:
        """Seconds a proposal stays open to a disproof."""
        ...

    async def first_block_since(self, timestamp: int) -> int:
        """The first block whose timestamp is at or after ``timestamp`` (the block after the
        newest when there is none yet)."""
        ...

    async def proposals(self, from_block: int, to_block: int) -> Sequence[ProposalMade]:
        """The proposals made in blocks ``from_block..to_block`` (inclusive), in order."""
        ...

    async def check(self, made: ProposalMade) -> ProposalCheck:
        """Check ``made`` against every rule, as a disproof would."""
        ...

    async def disprove(self, made: ProposalMade) -> None:
        """Void ``made``, which breaks a rule; the disproof's sender pays its gas.

        Raises:
            ChainRejected: The market refused (the proposal keeps every rule, is no longer
                pending, or its window closed).
        """
        ...
