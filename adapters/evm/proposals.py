"""A proposed round audited from anyone's seat: checked against the market's rules, and voided
when it breaks one (``ProposalChecker.disprove``).

JobMarket takes a round's proposal optimistically (docs/contracts.md, "JobMarket"): the rules
bind it only if somebody checks inside the challenge window. A worker, the job's poster or any
auditor runs this with ``fedrelay worker check-proposal`` (one round), or follows every proposal
with ``fedrelay worker watch-proposals`` (:class:`EvmProposalBoard` under
:mod:`fedrelay.worker.proposal_watch`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from requests.exceptions import RequestException
from web3.exceptions import Web3Exception

from fedrelay.adapters.evm.chain import EvmChain, Signer, first_block_reaching
from fedrelay.adapters.evm.errors import ContractRevert, EvmError
from fedrelay.adapters.evm.market import JobMarketContract, RoundPhase
from fedrelay.ports.proposals import ChainTime, ProposalCheck, ProposalMade
from fedrelay.ports.worker_chain import ChainRejected, ChainUnavailable

_T = TypeVar("_T")


@dataclass(frozen=True)
class ProposalAudit:
    """What a check of a pending proposal found.

    Attributes:
        proposal: The proposal's number in its round (1 for the first).
        broken: The rule it breaks, as the checker names it (``AcceptedWithoutCommitment(0x..)``),
            or None when it keeps every rule.
        voided: Whether this audit's disproof voided it.
    """

    job_id: int
    round: int
    proposal: int
    broken: str | None
    voided: bool


async def audit_proposal(
    rpc_url: str,
    market_address: str,
    job_id: int,
    round_number: int,
    disprover_key: str | None = None,
) -> ProposalAudit:
    """Check the round's pending proposal; with ``disprover_key``, void it when it breaks a rule.

    Raises:
        ChainUnavailable: The coordinator chain does not answer.
        ChainRejected: The round has no pending proposal, the chain's logs do not rebuild its
            lanes, or the market refused the disproof (its window closed); the message says why.
    """

    def run() -> ProposalAudit:
        market = JobMarketContract(EvmChain(rpc_url), market_address)
        proposal = market.round(job_id, round_number).proposal
        broken = market.audit_proposal(job_id, round_number)
        voided = False
        if broken is not None and disprover_key is not None:
            market.disprove_proposal(Signer(disprover_key), job_id, round_number)
            voided = True
        shown = None if broken is None else _rule(broken)
        return ProposalAudit(job_id, round_number, proposal, shown, voided)

    return await _on_chain(run, "the market refused the disproof")


def _rule(broken: ContractRevert) -> str:
    return str(broken).removeprefix("contract reverted with ")


async def _on_chain(work: Callable[[], _T], refused: str = "the market refused") -> _T:
    """Run ``work`` (blocking web3 calls) in a thread; its failures as the port's errors."""
    try:
        return await asyncio.to_thread(work)
    except (RequestException, OSError) as exc:
        raise ChainUnavailable(f"the coordinator chain does not answer: {exc}") from exc
    except ContractRevert as exc:
        raise ChainRejected(f"{refused}: {_rule(exc)}") from exc
    except (EvmError, Web3Exception) as exc:
        raise ChainRejected(str(exc)) from exc


class EvmProposalBoard:
    """A JobMarket's proposals on an EVM chain (the :class:`~fedrelay.ports.proposals.ProposalBoard`
    port), with the key that sends disproofs when one is given."""

    def __init__(self, rpc_url: str, market_address: str, disprover_key: str | None = None) -> None:
        self._market = JobMarketContract(EvmChain(rpc_url), market_address)
        self._signer = None if disprover_key is None else Signer(disprover_key)

    @property
    def disprover(self) -> str | None:
        """The address that sends disproofs (None: this board only checks)."""
        return None if self._signer is None else str(self._signer.address)

    async def now(self) -> ChainTime:
        """See :meth:`ProposalBoard.now`."""

        def read() -> ChainTime:
            block = self._market.chain.w3.eth.get_block("latest")
            return ChainTime(int(block["number"]), int(block["timestamp"]))

        return await _on_chain(read)

    async def challenge_window(self) -> int:
        """See :meth:`ProposalBoard.challenge_window`."""
        function = self._market.contract.functions.challengeWindow()
        return int(await _on_chain(lambda: self._market.chain.call(function)))

    async def first_block_since(self, timestamp: int) -> int:
        """See :meth:`ProposalBoard.first_block_since` (a binary search: timestamps never
        decrease along a chain)."""
        eth = self._market.chain.w3.eth

        def timestamp_of(number: int) -> int:
            return int(eth.get_block(number)["timestamp"])

        def search() -> int:  # one past the newest block when none has reached it yet
            return first_block_reaching(timestamp_of, timestamp, 0, int(eth.block_number) + 1)

        return await _on_chain(search)

    async def proposals(self, from_block: int, to_block: int) -> Sequence[ProposalMade]:
        """See :meth:`ProposalBoard.proposals`: each ``ResultsProposed`` with the deadline the
        ``RoundFinalized`` of the same call names."""
        events = self._market.contract.events

        def read() -> list[ProposalMade]:
            proposed = events.ResultsProposed().get_logs(from_block=from_block, to_block=to_block)
            finalized = events.RoundFinalized().get_logs(from_block=from_block, to_block=to_block)
            deadlines = {
                (
                    bytes(g["transactionHash"]),
                    int(g["args"]["jobId"]),
                    int(g["args"]["round"]),
                ): int(g["args"]["challengeDeadline"])
                for g in finalized
            }
            made = []
            for log in sorted(proposed, key=lambda g: (g["blockNumber"], g["logIndex"])):
                job_id, round_number = int(log["args"]["jobId"]), int(log["args"]["round"])
                deadline = deadlines.get((bytes(log["transactionHash"]), job_id, round_number))
                if deadline is None:
                    raise ChainRejected(
                        f"job {job_id} round {round_number}: a ResultsProposed without its "
                        f"RoundFinalized in transaction {bytes(log['transactionHash']).hex()}"
                    )
                proposal = int(log["args"]["proposal"])
                made.append(
                    ProposalMade(job_id, round_number, proposal, int(log["blockNumber"]), deadline)
                )
            return made

        return await _on_chain(read)

    async def check(self, made: ProposalMade) -> ProposalCheck:
        """See :meth:`ProposalBoard.check`."""

        def check() -> ProposalCheck:
            stored = self._market.round(made.job_id, made.round)
            if stored.phase is not RoundPhase.PROPOSED or stored.proposal != made.proposal:
                return ProposalCheck(pending=False)
            broken = self._market.audit_proposal(made.job_id, made.round)
            return ProposalCheck(True, None if broken is None else _rule(broken))

        return await _on_chain(check)

    async def disprove(self, made: ProposalMade) -> None:
        """See :meth:`ProposalBoard.disprove`.

        Raises:
            ChainRejected: Also when this board has no disproof key.
        """
        signer = self._signer
        if signer is None:
            raise ChainRejected("no disproof key: this board only checks proposals")

        def send() -> None:
            stored = self._market.round(made.job_id, made.round)
            if stored.phase is not RoundPhase.PROPOSED or stored.proposal != made.proposal:
                raise ChainRejected(
                    f"job {made.job_id} round {made.round} proposal {made.proposal} is no "
                    "longer pending"
                )
            self._market.disprove_proposal(signer, made.job_id, made.round)

        await _on_chain(send)
